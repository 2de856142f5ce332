"""A stable text form of the IR, for golden tests and `--dump-ir`.

    model MnistMLP(hidden=128, classes=10)
      %image: [B, 1, 28, 28] = input
      %1: [B, 784] = Flatten(start_dim=1, end_dim=-1)(%image)
      %2: [B, 128] = fc1 = Linear(out_features=hidden:128, bias=true, in_features=784)(%1)
      ...
      return out=%4

Sizes that carry a parameter expression print as `expr:value`. Block
specializations print once each, after the graph that uses them.
"""
from __future__ import annotations

from .dims import Real, Size, Sym, is_requirement, plain, plain_float, to_python
from .graph import Graph
from .values import Ref, TensorValue


def print_graph(graph: Graph) -> str:
    out: list[str] = []
    seen: dict = {}
    _print(graph, out, seen)
    return "\n".join(out) + "\n"


def _print(graph: Graph, out: list, seen: dict) -> None:
    seen[id(graph)] = len(seen)
    names: dict = {}
    params = ", ".join(f"{k}={_value(v, names)}" for k, v in graph.params.items())
    out.append(f"{graph.kind} {graph.name}({params})")
    counter = 0
    for node in graph:
        refs = []
        for i, name in enumerate(node.names):
            if node.kind == "input":
                label = f"%{name}"
            else:
                counter += 1
                label = f"%{counter}" + (f"/{name}" if name else "")
            names[Ref(node.id, i)] = label
            refs.append(label)
        types = ", ".join(str(t) for t in node.outputs)
        lhs = ", ".join(f"{r}: {t}" for r, t in zip(refs, node.outputs)) if len(refs) > 1 else \
            f"{refs[0]}: {types}"
        out.append(f"  {lhs} = {_rhs(graph, node, names)}")
    outs = ", ".join(f"{n}={names[r]}" for n, r in graph.outputs)
    out.append(f"  return {outs}")
    for g in graph.guards:
        out.append(f"  {'requires' if is_requirement(g) else 'guard'} {g.to_python()}")
    if graph.dropped:
        out.append(f"  dropped {', '.join(graph.dropped)}")
    if graph.inference:
        out.append("  inference only")
    if graph.memory_format:
        out.append(f"  memory_format {graph.memory_format}")
    for inst in graph.instances.values():
        if inst.graph is not None and id(inst.graph) not in seen:
            _print(inst.graph, out, seen)
    for node in graph:
        sub = node.args.get("graph") if node.kind == "call" else None
        if sub is not None and id(sub) not in seen:
            _print(sub, out, seen)


def _rhs(graph: Graph, node, names: dict) -> str:
    inputs = ", ".join(names[r] for r in node.inputs)
    inst = graph.instances.get(node.instance) if node.instance else None
    if node.kind == "input":
        return "input"
    if node.kind == "param":
        return f"param {inst.name} = {inst.init.init.name}"
    if node.kind == "weight":
        return f"{inst.name}.{node.attr}"
    if node.kind == "buffer":
        return f"buffer {inst.name}" + ("" if inst.args["persistent"] else " (not persistent)")
    if node.kind == "call":
        return f"{inst.name} = {node.args['graph'].name}({inputs})"
    op = node.op
    args = ", ".join(f"{k}={_value(v, names)}" for k, v in node.args.items()
                     if not isinstance(v, TensorValue) and not _is_tensors(v) and op.keyword_input(k) is None)
    head = f"{inst.name} = " if inst is not None else ""
    tensor_args = [f"{k}={_value(v, names)}" for k, v in node.args.items() if _is_tensors(v)]
    call_args = ", ".join(tensor_args) if tensor_args and not op.is_layer else inputs
    if op.keyword_inputs:   # `(%1, key_padding_mask=%4, need_weights=true)`: given at the application
        given = [f"{p.name}={_value(node.args[p.name], names)}" for p in op.keyword_inputs
                 if node.args[p.name] != p.default or p.is_tensor and node.args[p.name] is not None]
        call_args = ", ".join([names[r] for r in op.positional(node.args, node.inputs)] + given)
    folded = ""
    if inst is not None and inst.folded is not None:
        norm = inst.folded.norm
        norm_args = ", ".join(f"{k}={_value(v, names)}" for k, v in norm.args.items())
        folded = f" folding {norm.name} = {norm.op.name}({norm_args})"
    if inst is not None and inst.inits:
        folded += " init " + ", ".join(f"{w}={spec.init.name}" for w, spec in inst.inits.items())
    return f"{head}{node.op.name}({args})({call_args}){folded}"


def _is_tensors(v) -> bool:
    return isinstance(v, tuple) and bool(v) and all(isinstance(x, TensorValue) for x in v)


def _value(v, names: dict) -> str:
    if isinstance(v, TensorValue):
        return names.get(v.ref, "?")
    if isinstance(v, Size):
        return f"{to_python(v.expr)}:{plain(v)}"
    if isinstance(v, Real):
        return f"{to_python(v.expr)}:{plain_float(v)!r}"
    if isinstance(v, Sym):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, (list, tuple)):
        inner = ", ".join(_value(x, names) for x in v)
        return f"[{inner}]"
    return repr(v)
