"""IR -> a native ONNX model (opset 18), from each registry entry's `onnx` emitter.

The backend walks the IR in order: inputs become graph inputs (run-time sizes
become named dynamic dims: `B`, `T`), each op node asks its registry entry to
emit real ONNX nodes, and a block call is inlined under its attribute name so
every initializer is named exactly like the PyTorch state dict
(`residual1.conv_bn_relu.conv.weight`). torch.onnx.export is never called: the
only thing taken from torch is the weights, by state-dict name.

The exported graph is the model in inference mode (eval): dropout is the
identity, batch norm uses its running statistics, `reparameterize` is `mu`.

An emitter is `onnx(g: OnnxBuilder, n: OnnxNode) -> [output value names]`.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ..ir.dims import FloorDiv, Poly, Sym, Var, plain
from ..ir.graph import Graph, Node
from ..ir.nesting import SEP
from ..ir.scan import is_scan
from ..ir.types import TensorType
from ..ir.values import Ref, TensorValue, plain_args

OPSET = 18
_NP = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "int64": np.int64,
       "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_}


def onnx_dtype(dtype: str) -> int:
    from onnx import TensorProto
    return {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE, "float16": TensorProto.FLOAT16,
            "bfloat16": TensorProto.BFLOAT16, "int64": TensorProto.INT64, "int32": TensorProto.INT32,
            "int16": TensorProto.INT16, "int8": TensorProto.INT8, "uint8": TensorProto.UINT8,
            "bool": TensorProto.BOOL}[dtype]


class OnnxBuilder:
    """Collects nodes, constants and initializers; names stay unique and readable."""

    def __init__(self, symbols: dict, atom_values: dict | None = None):
        self.nodes: list = []
        self.initializers: dict = {}   # name -> numpy array
        self._names: set = set()
        self._symbols = symbols        # run-time size name -> (graph input name, dim index)
        self._symbol_values: dict = {}  # run-time size expressions already computed (by Poly)
        self._atom_values = atom_values or {}  # the model's parameter values (`T * (c // 4)` has c)
        self.scope = ""                # node name prefix: the block path being emitted

    def fresh(self, hint: str) -> str:
        base = f"{self.scope}{hint}"
        name, n = base, 1
        while name in self._names:
            n += 1
            name = f"{base}_{n}"
        self._names.add(name)
        return name

    # Ops' ONNX emitters reach ONNX's dtypes and errors through the builder they are handed,
    # so that `ops` never imports a backend.
    @staticmethod
    def elem_type(dtype: str) -> int:
        """ONNX's element type for one of our dtypes."""
        return onnx_dtype(dtype)

    def cast(self, x: str, want: str, have: str | None = None) -> str:
        """`x` as dtype `want` (no node when `have` says it already is)."""
        return x if have == want else self.op("Cast", [x], to=onnx_dtype(want))

    @staticmethod
    def unsupported(message: str):
        """Refuse the export: this op, with these settings, has no ONNX form."""
        raise OnnxExportError(message)

    def op(self, op_type: str, inputs: list, n_out: int = 1, hint: str | None = None, **attrs):
        """Add a node; returns its output name (or names when n_out > 1). `None` inputs stay empty."""
        from onnx import helper
        base = hint or op_type
        outs = [self.fresh(base if n_out == 1 else f"{base}_{i}") for i in range(n_out)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        inputs = list(inputs)
        while inputs and inputs[-1] is None:  # trailing optional inputs are left off (an empty name crashes
            inputs.pop()                      # onnxruntime 1.32's LayerNormalization)
        self.nodes.append(helper.make_node(op_type, ["" if i is None else i for i in inputs], outs,
                                           name=self.fresh(f"{base}_node"), **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, value, dtype: str | None = None, hint: str = "const") -> str:
        """A Constant node holding `value` (a number, list or array)."""
        from onnx import numpy_helper
        arr = np.asarray(value, dtype=_NP[dtype] if dtype else None)
        if arr.dtype == np.float64 and dtype is None:
            arr = arr.astype(np.float32)
        return self.op("Constant", [], hint=hint, value=numpy_helper.from_array(arr))

    def ints(self, values, hint: str = "ints") -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), hint=hint)

    @contextmanager
    def subgraph(self):
        """Build the body of a Scan, Loop or If: `with g.subgraph() as nodes:` collects its nodes
        apart, and a run-time size read inside is computed inside (never reused outside)."""
        saved = self.nodes, self._symbol_values
        self.nodes, self._symbol_values = [], {}
        try:
            yield self.nodes
        finally:
            self.nodes, self._symbol_values = saved

    @contextmanager
    def block(self, scope: str, atom_values: dict):
        """Emit a block's nodes: named under `scope`, its sizes read with its own parameter values."""
        saved = self.scope, self._atom_values
        self.scope, self._atom_values = scope, atom_values
        try:
            yield
        finally:
            self.scope, self._atom_values = saved

    def initializer(self, name: str, array) -> str:
        if name not in self.initializers:
            self.initializers[name] = np.ascontiguousarray(array)
            self._names.add(name)
        return name

    # ---- sizes known only at run time

    def symbol(self, name: str) -> str:
        """A 1-element int64 tensor holding the run-time size `name` (read off a graph input)."""
        if name not in self._symbol_values:
            source, index = self._symbols[name]
            scope, self.scope = self.scope, ""
            shape = self.op("Shape", [source], hint=f"{name}_shape", start=index, end=index + 1)
            self.scope = scope
            self._symbol_values[name] = shape
        return self._symbol_values[name]

    def dim(self, d) -> str:
        """A 1-element int64 tensor holding a size: a constant, or computed from run-time sizes
        (once: the same expression asked for again reuses its value)."""
        if not isinstance(d, Sym):
            return self.ints([plain(d)])
        # keyed by the size with this block's parameter values in: the same `upsample * H` is
        # another size in a block called with another upsample
        poly = d.poly.subst(self._known)
        if poly not in self._symbol_values:
            scope, self.scope = self.scope, ""  # computed at the top, so every block can reuse it
            self._symbol_values[poly] = self._poly(poly)
            self.scope = scope
        return self._symbol_values[poly]

    def shape(self, dims) -> str:
        """A 1-d int64 tensor of a whole shape (for Reshape, Expand, ConstantOfShape)."""
        if all(not isinstance(d, Sym) for d in dims):
            return self.ints([plain(d) for d in dims], hint="shape")
        return self.op("Concat", [self.dim(d) for d in dims], axis=0, hint="shape")

    def _known(self, a):
        """A parameter's value, folded into a run-time size (`T * max(1, c // 4)` is `T * 1` at c=2)."""
        v = self._atom_values.get(a)
        return None if v is None else Poly.const(v)

    def _poly(self, p) -> str:
        total = None
        for mono, coef in p.terms.items():
            term = self.ints([coef]) if not mono or coef != 1 else None
            for atom, power in mono:
                for _ in range(power):
                    factor = self._atom(atom)
                    term = factor if term is None else self.op("Mul", [term, factor])
            total = term if total is None else self.op("Add", [total, term])
        return total if total is not None else self.ints([0])

    def _atom(self, a) -> str:
        if isinstance(a, Var):
            return self.symbol(a.name)
        if isinstance(a, FloorDiv):
            return self.op("Div", [self._poly(a.num), self._poly(a.den)])  # int64 Div floors for sizes ≥ 0
        raise ValueError(f"the size atom {a} has no run-time value")


@dataclass
class OnnxNode:
    """What an op's emitter sees: its arguments, input value names and types, and its weights."""
    op: object
    args: dict
    inputs: list
    types: list
    outputs: list
    weight_prefix: str = ""
    values: dict = field(default_factory=dict)
    use: object = None  # registers an initializer on first use

    def __getitem__(self, name: str):
        return self.args[name]

    @property
    def x(self) -> TensorType:
        return self.types[0]

    def weight(self, name: str) -> str:
        """The initializer holding one of the layer's weights or buffers (state-dict name)."""
        return self.use(f"{self.weight_prefix}{name}")

    def tensor(self, name: str) -> str | None:
        """The value name of a tensor argument of a function."""
        v = self.args[name]
        return self.values[v.ref] if isinstance(v, TensorValue) else None

    def tensors(self, name: str) -> list:
        return [self.values[v.ref] for v in self.args[name]]

    def type_of(self, name: str) -> TensorType | None:
        v = self.args[name]
        return v.type if isinstance(v, TensorValue) else None


# ---------------------------------------------------------------- the walk

class OnnxExportError(Exception):
    """The graph cannot be exported (an op without an ONNX form, a missing weight)."""


def emit_model(graph: Graph, state: dict, doc: str = ""):
    """The ONNX ModelProto of a model graph, with `state` (state-dict name -> array) as initializers."""
    import onnx
    from onnx import helper
    symbols = _symbol_sources(graph)
    b = OnnxBuilder(symbols, graph.atom_env)
    values: dict = {}
    graph_inputs = []
    for name, ref in graph.inputs:
        t = graph.type_of(ref)
        values[ref] = name
        b._names.add(name)
        graph_inputs.append(helper.make_tensor_value_info(name, onnx_dtype(t.dtype), _dims(t.shape)))
    out_names = _output_names(graph, set(values.values()))
    b._names |= set(out_names)  # no inner value may take an output's name
    _emit_graph(b, graph, values, state, "")
    outputs = []
    for out_name, (_, ref) in zip(out_names, graph.outputs):
        b.nodes.append(helper.make_node("Identity", [values[ref]], [out_name], name=b.fresh(f"{out_name}_output")))
        t = graph.type_of(ref)
        outputs.append(helper.make_tensor_value_info(out_name, onnx_dtype(t.dtype), _dims(t.shape)))
    inits = [onnx.numpy_helper.from_array(arr, name) for name, arr in sorted(b.initializers.items())]
    g = helper.make_graph(b.nodes, graph.name, graph_inputs, outputs, inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dslc",
                              doc_string=doc)
    model.ir_version = 9  # readable by onnxruntime 1.16 and later
    return model


def _output_names(graph: Graph, taken: set) -> list:
    """The model's output names (`recon`, `mu`; a tuple's `hidden.0`, `hidden.1`), `_out` after the name
    an input already has (`hidden_out.0` for a state returned beside its input `hidden`)."""
    inputs = {name.split(SEP)[0] for name in taken}
    out = []
    for name, _ in graph.outputs:
        top, dot, rest = name.partition(SEP)
        out.append(f"{top}_out{dot}{rest}" if top in inputs else name)
    return out


def _symbol_sources(graph: Graph) -> dict:
    out = {}
    for name, ref in graph.inputs:
        for i, d in enumerate(graph.type_of(ref).shape):
            if isinstance(d, Sym):
                atom = d.poly.single_atom()
                if isinstance(atom, Var) and atom.name not in out:
                    out[atom.name] = (name, i)
    return out


def _dims(shape) -> list:
    return [str(d) if isinstance(d, Sym) else plain(d) for d in shape]


def _emit_graph(b: OnnxBuilder, graph: Graph, values: dict, state: dict, prefix: str) -> None:
    for node in graph:
        if node.kind == "input":
            continue
        inst = graph.instances.get(node.instance) if node.instance else None
        if node.kind in ("param", "buffer"):   # a buffer, persistent or not, is an initializer
            values[Ref(node.id)] = _init(b, state, f"{prefix}{inst.name}")
        elif node.kind == "weight":
            rewrites = inst.op.rewrites_weights(inst.args) if inst.kind == "layer" and inst.op.rewrites_weights else None
            if rewrites:
                # torch changes the weight during forward; an ONNX initializer cannot change
                raise OnnxExportError(f"`{inst.name}` {rewrites} while its weight `{inst.name}.{node.attr}` is read "
                                      "elsewhere: ONNX cannot follow that")
            values[Ref(node.id)] = _init(b, state, f"{prefix}{inst.name}.{node.attr}")
        elif is_scan(node):
            _emit_scan(b, graph, node, inst, values, state, prefix)
        elif node.kind == "call":
            _emit_call(b, node, inst, values, state, prefix)
        else:
            _emit_op(b, graph, node, inst, values, state, prefix)


def _emit_call(b: OnnxBuilder, node: Node, inst, values: dict, state: dict, prefix: str) -> None:
    sub: Graph = node.args["graph"]
    inner = {ref: values[outer] for (_, ref), outer in zip(sub.inputs, node.inputs)}
    with b.block(f"{prefix}{inst.name}/", sub.atom_env):
        _emit_graph(b, sub, inner, state, f"{prefix}{inst.name}.")
    for i, (_, ref) in enumerate(sub.outputs):
        values[Ref(node.id, i)] = inner[ref]


def _emit_scan(b: OnnxBuilder, graph: Graph, node: Node, inst, values: dict, state: dict, prefix: str) -> None:
    """A scan: a Scan over the sequence's steps along `dim`, then, with `future`, a Loop that feeds each
    step its last y. The step block is each one's body, its weights the outer graph's initializers."""
    scan = node.args["scan"]
    dim, future = scan["dim"], plain(scan["future"])
    elem = [onnx_dtype(graph.type_of(r).dtype) for r in node.inputs]
    inits = [values[r] for r in node.inputs[1:]]
    body = _scan_body(b, node, inst, state, prefix, elem, loop=False)
    *finals, ys = b.op("Scan", inits + [values[node.inputs[0]]], n_out=len(inits) + 1, hint=f"{inst.name}_scan",
                       body=body, num_scan_inputs=1, scan_input_axes=[dim], scan_output_axes=[dim])
    if future:
        last = b.op("Slice", [ys, b.ints([-1]), b.ints([2 ** 63 - 1]), b.ints([dim])], hint="last_step") \
            if scan["keepdim"] else b.op("Gather", [ys, b.const(-1, dtype="int64")], axis=dim, hint="last_step")
        body = _scan_body(b, node, inst, state, prefix, [elem[0]] + elem[1:], loop=True)
        outs = b.op("Loop", [b.const(future, dtype="int64", hint="future"), None, last] + finals,
                    n_out=len(inits) + 2, hint=f"{inst.name}_future", body=body)
        finals, generated = outs[1:-1], outs[-1]   # generated steps, stacked on a new first axis
        rank = node.outputs[0].rank + (0 if scan["keepdim"] else -1)  # one step's rank, as scanned
        perm = list(range(1, dim + 1)) + [0] + list(range(dim + 1, rank + 1))
        generated = b.op("Transpose", [generated], perm=perm, hint="future_steps")
        if scan["keepdim"]:
            generated = b.op("Reshape", [generated, b.shape(_with_steps(node, future))], hint="future_steps")
        ys = b.op("Concat", [ys, generated], axis=dim, hint="steps")
    elif scan["keepdim"]:
        ys = b.op("Identity", [ys], hint="steps")
    for k, v in enumerate([ys] + finals):
        values[Ref(node.id, k)] = v


def _with_steps(node: Node, future: int) -> tuple:
    """The generated part of a keepdim scan's output: `future` steps along dim."""
    shape = list(node.outputs[0].shape)
    shape[node.args["scan"]["dim"]] = future
    return tuple(shape)


def _scan_body(b: OnnxBuilder, node: Node, inst, state: dict, prefix: str, elem: list, loop: bool):
    """The step block as a Scan body (state..., x_t) -> (state'..., y), or a Loop body
    (i, cond, y, state...) -> (cond, y', state'..., y'): one step, the block's nodes inlined."""
    from onnx import helper
    scan = node.args["scan"]
    dim, keepdim = scan["dim"], scan["keepdim"]
    sub: Graph = node.args["graph"]
    with b.subgraph() as nodes:
        states = [b.fresh("state_in") for _ in node.inputs[1:]]
        x_in = b.fresh("step_in")
        head = [b.fresh("i"), b.fresh("cond_in")] if loop else []
        x_t = b.op("Unsqueeze", [x_in, b.ints([dim])], hint="x_t") if keepdim and not loop else x_in
        inner = {ref: v for (_, ref), v in zip(sub.inputs, [x_t] + states)}
        with b.block(f"{prefix}{inst.name}/", sub.atom_env):
            _emit_graph(b, sub, inner, state, f"{prefix}{inst.name}.")
        y, *after = [inner[ref] for _, ref in sub.outputs]
        after = [b.op("Identity", [v], hint="state_out") for v in after]
        collected = b.op("Squeeze", [y, b.ints([dim])], hint="y") if keepdim and not loop else \
            b.op("Identity", [y], hint="y")
        outs = ([b.op("Identity", [head[1]], hint="cond_out"), b.op("Identity", [y], hint="y_next")] + after
                if loop else after) + [collected]
    from onnx import TensorProto
    info = lambda name, t: helper.make_tensor_value_info(name, t, None)  # noqa: E731
    scalar = lambda name, t: helper.make_tensor_value_info(name, t, [])  # noqa: E731
    ins = ([scalar(head[0], TensorProto.INT64), scalar(head[1], TensorProto.BOOL), info(x_in, elem[0])] +
           [info(v, e) for v, e in zip(states, elem[1:])]) if loop else \
        [info(v, e) for v, e in zip(states, elem[1:])] + [info(x_in, elem[0])]
    out_elems = ([TensorProto.BOOL, elem[0]] if loop else []) + elem[1:] + [onnx_dtype(node.outputs[0].dtype)]
    info_out = [scalar(outs[0], TensorProto.BOOL)] if loop else []
    info_out += [info(v, e) for v, e in zip(outs[len(info_out):], out_elems[len(info_out):])]
    return helper.make_graph(nodes, b.fresh(f"{inst.name}_step"), ins, info_out)


def _emit_op(b: OnnxBuilder, graph: Graph, node: Node, inst, values: dict, state: dict, prefix: str) -> None:
    op = node.op
    if op.onnx is None:
        raise OnnxExportError(f"`{op.name}` has no ONNX form yet")
    weight_prefix = f"{prefix}{inst.name}." if inst is not None else ""
    inputs = op.positional(node.args, node.inputs)   # keyword inputs are read from the args by name
    n = OnnxNode(op, plain_args(node.args), [values[r] for r in inputs],
                 [graph.type_of(r) for r in inputs], list(node.outputs), weight_prefix, values,
                 use=lambda name: _init(b, state, name))
    scope = b.scope
    b.scope = f"{scope}{inst.name}/" if inst is not None else scope
    outs = op.onnx(b, n)
    b.scope = scope
    if len(outs) != len(node.outputs):
        raise OnnxExportError(f"`{op.name}`'s ONNX form gave {len(outs)} outputs, not {len(node.outputs)}")
    for i, name in enumerate(outs):
        values[Ref(node.id, i)] = name


def _init(b: OnnxBuilder, state: dict, name: str) -> str:
    if name not in b.initializers:
        if name not in state:
            raise OnnxExportError(f"no weight `{name}` in the state dict")
        b.initializer(name, state[name])
    return name
