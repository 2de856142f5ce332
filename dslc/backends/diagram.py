"""IR -> a Graphviz diagram (DOT, and SVG/PNG/PDF through the system's `dot`).

Layers are boxes coloured by op family, labelled with the user's name, the
registry's label and the parameter count; edges carry tensor shapes; inputs
and outputs are distinct shapes. Blocks are nested, labelled clusters down to
`depth`; deeper blocks are single boxes. A run of identical blocks, each
feeding the next (ViT's 12 encoders), collapses into one box marked ×N. A
partial graph (a spec with a shape error) ends in a red box at the failing
call. The DOT text is deterministic: ids are counters in graph order.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..ir.dims import plain, to_python
from ..ir.graph import Graph, Node
from ..ir.pyliteral import literal
from ..ir.scan import is_scan
from ..ir.types import TensorType, format_shape
from ..ir.values import Ref, TensorValue, plain_args
from .output import write_output
from .pyformat import is_default
from .summary import count_params

FAMILY_COLOURS = {
    "linear": "#cfe2f3", "conv": "#d9ead3", "pooling": "#d0e0e3", "norm": "#fff2cc", "activation": "#f4cccc",
    "dropout": "#eeeeee", "embedding": "#fce5cd", "recurrent": "#d9d2e9", "attention": "#ead1dc",
    "tensor": "#f3f3f3", "arith": "#ffffff", "reduce": "#f3f3f3", "loss": "#e6b8af", "random": "#f3f3f3",
}
CLUSTER_COLOURS = ["#f7f9fc", "#eef3fa", "#e4ecf7", "#dae5f4"]
SHARED = " (shared)"  # after the name of a shared layer's or block's later applications
COLLAPSE_MIN = 2  # runs of at least this many identical blocks become one ×N box
AUTO_BOXES = 60   # without --depth: the deepest level whose diagram has at most this many boxes


@dataclass
class _Dot:
    lines: list = field(default_factory=list)
    edges: list = field(default_factory=list)  # written last, at the top level: an edge inside a
    counter: int = 0                           # cluster would pull its endpoints into that cluster
    drawn: set = field(default_factory=set)    # (block path, instance id) of the layers drawn so far
    expand: frozenset = frozenset()            # block paths drawn open whatever the depth (`layer1.0`)
    source: str | None = None                  # with a file name: tooltips, ids and links to its lines

    def first_drawing(self, path: str, inst) -> bool:
        """Whether this is the first box of `inst` (a shared layer's later ones are marked shared)."""
        if inst is None or inst.kind in ("param", "buffer"):
            return True
        key = (path, inst.id)
        first = key not in self.drawn
        self.drawn.add(key)
        return first

    def node_id(self) -> str:
        self.counter += 1
        return f"n{self.counter}"

    def add(self, text: str, indent: int) -> None:
        self.lines.append("  " * indent + text)


def auto_depth(graph: Graph, collapse: bool = True, limit: int = AUTO_BOXES) -> int:
    """The deepest nesting whose diagram stays legible (at most `limit` boxes), at least 0."""
    best = 0
    for depth in range(1, 8):
        boxes = to_dot(graph, depth, collapse).count(" [label=")
        if boxes > limit:
            break
        best = depth
        if boxes == to_dot(graph, depth + 1, collapse).count(" [label="):
            break  # nothing deeper to show
    return best


def to_dot(graph: Graph, depth: int | None = None, collapse: bool = True, expand: frozenset = frozenset(),
           source: str | None = None) -> str:
    """The DOT source of a model graph (`depth` None: chosen by `auto_depth`). `expand`: blocks
    (by path) drawn open as well; `source`: the spec's file name, for a report's interactive SVG
    (each box's tooltip, its spec line as a link `#L12`, and `block:PATH` ids on closed blocks)."""
    if depth is None:
        depth = auto_depth(graph, collapse)
    dot = _Dot(expand=frozenset(expand), source=source)
    dot.add(f"digraph {_q(graph.name)} {{", 0)
    dot.add('graph [rankdir=TB, fontname="Helvetica", fontsize=11, nodesep=0.25, ranksep=0.35, '
            'newrank=true, labelloc=t, label=' + _q(f"{graph.name}  ({_param_text(count_params(graph))})") + '];', 1)
    dot.add('node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10, margin="0.12,0.05", '
            'penwidth=0.8];', 1)
    dot.add('edge [fontname="Helvetica", fontsize=8, color="#555555", arrowsize=0.6];', 1)
    producers: dict = {}
    for name, ref in graph.inputs:
        nid = dot.node_id()
        t = graph.type_of(ref)
        label = _q(f"{name}\n{t}")
        dot.add(f'{nid} [label={label}, shape=invhouse, fillcolor="#ffffff"];', 1)
        producers[ref] = (nid, t)
    _emit(dot, graph, producers, depth, collapse, level=0, path="")
    for name, ref in graph.outputs:
        nid = dot.node_id()
        src, t = producers[ref]
        dot.add(f'{nid} [label={_q(name)}, shape=house, fillcolor="#ffffff"];', 1)
        dot.edges.append(f"{src} -> {nid} [label={_q(_shape(t))}];")
    for f in graph.failures:
        _failure(dot, f, producers)
    for edge in dot.edges:
        dot.add(edge, 1)
    dot.add("}", 0)
    return "\n".join(dot.lines) + "\n"


def _emit(dot: _Dot, graph: Graph, producers: dict, depth: int, collapse: bool, level: int, path: str,
          nodes: list | None = None) -> None:
    nodes = [n for n in graph if n.kind != "input"] if nodes is None else nodes
    runs = _collapsible_runs(graph, nodes) if collapse else {}
    loops = _collapsible_loops(nodes) if collapse else {}
    skip: set = set()
    for node in nodes:
        if node.id in skip:
            continue
        indent = level + 1
        if node.id in loops:
            iterations = loops[node.id]
            skip |= {n.id for it in iterations for n in it}
            _loop_cluster(dot, graph, iterations, producers, depth, collapse, level, path)
            continue
        inst = graph.instances.get(node.instance) if node.instance else None
        if node.kind in ("param", "weight", "buffer"):
            nid = dot.node_id()
            name = f"{inst.name}.{node.attr}" if node.kind == "weight" else inst.name
            what = "buffer\n" if node.kind == "buffer" else ""   # state, not learned: another colour
            label = _q(f"{name}\n{what}{node.outputs[0]}")
            fill = "#eceff1" if node.kind == "buffer" else "#fff8e1"
            dot.add(f'{nid} [label={label}, shape=cylinder, fillcolor="{fill}"];', indent)
            producers[Ref(node.id)] = (nid, node.outputs[0])
            continue
        if node.id in runs:
            run = runs[node.id]
            skip |= {n.id for n in run[1:]}
            _collapsed(dot, graph, run, producers, indent)
            continue
        first = dot.first_drawing(path, inst)
        if node.kind == "call" and (level < depth or f"{path}{inst.name}" in dot.expand):
            _cluster(dot, graph, node, inst, producers, depth, collapse, level, path, first)
            continue
        nid = dot.node_id()
        dot.add(f"{nid} [{_node_attrs(graph, node, inst, first)}{_linked(dot, node, inst, path)}];", indent)
        _edges(dot, node, producers, nid, indent)
        for i, t in enumerate(node.outputs):
            producers[Ref(node.id, i)] = (nid, t)


def _node_attrs(graph: Graph, node: Node, inst, first: bool = True) -> str:
    """A box's attributes; a shared layer's or block's later applications say `(shared)` and count
    no parameters again."""
    if node.kind == "call":
        n = count_params(inst.graph) if first else 0
        label = f"{inst.name}{'' if first else SHARED}\\n{inst.graph.name}{_scan_text(graph, node)}" + \
            (f"\\n{_param_text(n)}" if n else "")
        return f'label={_q(label)}, shape=box3d, style="filled", fillcolor="#e4ecf7"'
    op = node.op
    colour = FAMILY_COLOURS.get(op.family, "#ffffff")
    if op.kind != "layer":
        text = op.label_text(plain_args(node.args)) if op.label else _call_text(op, node.args)
        if op.family == "arith":
            return f'label={_q(text)}, shape=circle, fillcolor="{colour}", width=0.3, fixedsize=false'
        return f'label={_q(text)}, fillcolor="{colour}"'
    label = op.label_text(plain_args(node.args))
    n = _layer_params(inst) if first else 0
    name = inst.name if inst.user_name or op.has_state else None
    if name and not first:
        name += SHARED
    parts = ([name] if name else []) + [label] + ([_param_text(n)] if n else [])
    return f'label={_q(chr(10).join(parts))}, fillcolor="{colour}"'


def _linked(dot: _Dot, node: Node, inst, path: str) -> str:
    """A report's attributes of a box: its tooltip (shape, parameters, spec line), a link to that
    line, and for a closed block the id the page opens it by."""
    if dot.source is None:
        return ""
    lines = [f"{inst.name}" if inst is not None and inst.name else (node.op.name if node.op else node.kind)]
    lines.append("output " + ", ".join(_shape(t) for t in node.outputs))
    if node.kind == "call":
        lines.append(f"{inst.graph.name}: {count_params(inst.graph):,} parameters")
    elif inst is not None and node.kind == "op" and inst.weights():
        lines.append(f"{_layer_params(inst):,} parameters")
    span = node.span
    out = ""
    if span is not None and getattr(span.file, "name", None) == dot.source:
        lines.append(f"{os.path.basename(dot.source)}:{span.line}")
        out += f", URL={_q(f'#L-{span.line}')}"
    out += f", tooltip={_q(chr(10).join(lines))}"
    if node.kind == "call":
        out += f", id={_q('block:' + path + inst.name)}, class=\"block\""
    return out


def _cluster(dot: _Dot, graph: Graph, node: Node, inst, producers: dict, depth: int, collapse: bool,
             level: int, path: str, first: bool = True) -> None:
    sub: Graph = node.args["graph"]
    indent = level + 1
    full = f"{path}{inst.name}"
    # a shared block's later applications are clusters of their own (one name would merge them)
    dot.add(f"subgraph cluster_{_ident(full)}{'' if first else '_' + node.id} {{", indent)
    colour = CLUSTER_COLOURS[min(level, len(CLUSTER_COLOURS) - 1)]
    title = f"{inst.name}{'' if first else SHARED}: {sub.name}" + _scan_text(graph, node)
    n = count_params(sub) if first else 0
    style = "rounded,filled,dashed" if is_scan(node) else "rounded,filled"   # a loop's body, as `repeat`'s box
    dot.add(f'label={_q(title + (f"  ({_param_text(n)})" if n else ""))}; style="{style}"; '
            f'fillcolor="{colour}"; color="#9aaccc"; fontsize=10;', indent + 1)
    inner = dict(producers)
    for (_, ref), outer in zip(sub.inputs, node.inputs):
        inner[ref] = producers[outer]
    _emit(dot, sub, inner, depth, collapse, level + 1, f"{full}.")
    for f in sub.failures:
        _failure(dot, f, inner)
    dot.add("}", indent)
    for i, (_, ref) in enumerate(sub.outputs):
        # a scan's results are all its steps and the last state: their own shapes on the edges out
        producers[Ref(node.id, i)] = (inner[ref][0], node.outputs[i]) if is_scan(node) else inner[ref]


def _scan_text(graph: Graph, node: Node) -> str:
    """`, per step of T (+ future)`: what a scan's body box says."""
    if not is_scan(node):
        return ""
    scan = node.args["scan"]
    length = graph.type_of(node.inputs[0]).shape[scan["dim"]]
    future = scan["future"]
    more = f" + {to_python(future.expr) if hasattr(future, 'expr') else future}" if hasattr(future, "expr") or future else ""
    return f", each of {format_shape((length,))[1:-1]}{more} steps"


def _collapsible_loops(nodes: list) -> dict:
    """First node id -> the iterations of a loop whose iterations are all alike (drawn once, ×N)."""
    out, i = {}, 0
    while i < len(nodes):
        region = nodes[i].region
        if region is None:
            i += 1
            continue
        j = i
        while j < len(nodes) and nodes[j].region is not None and nodes[j].region[0] == region[0]:
            j += 1
        iterations: dict = {}
        for n in nodes[i:j]:
            iterations.setdefault(n.region[1], []).append(n)
        its = [iterations[k] for k in sorted(iterations)]
        single_calls = all(len(it) == 1 and it[0].kind == "call" for it in its)  # a run says it better
        if len(its) >= COLLAPSE_MIN and not single_calls and len({_signature(it) for it in its}) == 1:
            out[nodes[i].id] = its
        i = j
    return out


def _signature(iteration: list) -> tuple:
    """What must match for two iterations to be drawn as one: ops, blocks' contents, shapes."""
    def one(n):
        if n.kind == "call":
            what = (n.args["graph"].name, count_params(n.args["graph"]), _structure(n.args["graph"]))
        else:
            what = n.op.name if n.op is not None else ""
        return (n.kind, what, tuple(str(t) for t in n.outputs))
    return tuple(one(n) for n in iteration)


def _structure(graph: Graph) -> tuple:
    return tuple((n.kind, n.op.name if n.op is not None else "", len(n.inputs)) for n in graph)


def _loop_cluster(dot: _Dot, graph: Graph, iterations: list, producers: dict, depth: int, collapse: bool,
                  level: int, path: str) -> None:
    """One iteration drawn in a cluster marked ×N; the other iterations' values map onto it."""
    first = iterations[0]
    indent = level + 1
    dot.add(f"subgraph cluster_loop_{_ident(path)}{first[0].id} {{", indent)
    kind = first[0].region[2]
    n = _instances_params(graph, [m for it in iterations for m in it])
    label = f"{kind} ×{len(iterations)}" + (f"  ({_param_text(n)})" if n else "")
    dot.add(f'label={_q(label)}; style="rounded,dashed"; color="#7f8fa6"; fontsize=10;', indent + 1)
    _emit(dot, graph, producers, depth, collapse, level + 1, path, nodes=first)
    dot.add("}", indent)
    for it in iterations[1:]:
        for a, b in zip(first, it):
            for k in range(len(b.outputs)):
                if Ref(a.id, k) in producers:
                    producers[Ref(b.id, k)] = producers[Ref(a.id, k)]


def _collapsible_runs(graph: Graph, nodes: list) -> dict:
    """First node id -> the run of identical block calls, each feeding only the next."""
    runs, i = {}, 0
    while i < len(nodes):
        run = [nodes[i]]
        while i + len(run) < len(nodes) and _continues(graph, run[-1], nodes[i + len(run)]):
            run.append(nodes[i + len(run)])
        if len(run) >= COLLAPSE_MIN:
            runs[run[0].id] = run
            i += len(run)
        else:
            i += 1
    return runs


def _continues(graph: Graph, prev: Node, node: Node) -> bool:
    if prev.kind != "call" or node.kind != "call" or len(node.inputs) != 1 or len(prev.outputs) != 1:
        return False
    a, b = prev.args["graph"], node.args["graph"]
    return (node.inputs[0] == Ref(prev.id) and a.name == b.name and count_params(a) == count_params(b)
            and graph.users(prev.id) == [node.id])


def _instances_params(graph: Graph, nodes: list) -> int:
    """The parameters of the layers and blocks these nodes apply, each counted once."""
    insts = {graph.instances[m.instance].id: graph.instances[m.instance] for m in nodes if m.instance}
    return sum(count_params(i.graph) if i.kind == "block" else _layer_params(i)
               for i in insts.values() if i.kind != "param")


def _collapsed(dot: _Dot, graph: Graph, run: list, producers: dict, indent: int) -> None:
    first, last = graph.instances[run[0].instance], graph.instances[run[-1].instance]
    sub = first.graph
    n = _instances_params(graph, run)
    names = f"{first.name} … {last.name}" if first is not last else f"{first.name}{SHARED}"
    label = f"{names}\\n{sub.name} ×{len(run)}" + (f"\\n{_param_text(n)}" if n else "")
    nid = dot.node_id()
    dot.add(f'{nid} [label={_q(label)}, shape=box3d, style="filled", fillcolor="#dae5f4", penwidth=1.2];', indent)
    _edges(dot, run[0], producers, nid, indent)
    producers[Ref(run[-1].id)] = (nid, run[-1].outputs[0])


def _edges(dot: _Dot, node: Node, producers: dict, nid: str, indent: int) -> None:
    for ref in dict.fromkeys(node.inputs):
        if ref not in producers:
            continue  # made by a loop iteration drawn as its first one
        src, t = producers[ref]
        edge = f"{src} -> {nid} [label={_q(_shape(t))}];"
        if edge not in dot.edges[-4:]:
            dot.edges.append(edge)


def _failure(dot: _Dot, f, producers: dict) -> None:
    nid = dot.node_id()
    label = _q(f.label + "\n" + _wrap(f.message))
    dot.add(f'{nid} [label={label}, color="#cc0000", fontcolor="#cc0000", fillcolor="#fde8e8", penwidth=2];', 1)
    for ref in f.inputs:
        if ref in producers:
            src, t = producers[ref]
            dot.edges.append(f'{src} -> {nid} [label={_q(_shape(t))}, color="#cc0000"];')


# ---------------------------------------------------------------- helpers

def _call_text(op, args: dict) -> str:
    """A function as written, for one without a label: `flatten(start_dim=2)`, `chunk(3, dim=-1)`."""
    shown = []
    for p in op.params:
        v = args.get(p.name)
        if p.is_tensor or isinstance(v, TensorValue) or is_default(v, p.default):
            continue
        try:
            shown.append(f"{p.name}={literal(v)}")
        except TypeError:
            shown.append(f"{p.name}=…")
    text = f"{op.name}({', '.join(shown)})"
    return text if len(text) <= 40 else text[:38] + "…)"


def _layer_params(inst) -> int:
    """The elements of a layer's weights."""
    return sum(_numel(s) for s in inst.weights().values())


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= plain(d)
    return n


def _param_text(n: int) -> str:
    for unit, size in (("M", 10 ** 6), ("K", 10 ** 3)):
        if n >= size:
            return f"{n / size:.1f}{unit} params"
    return f"{n} params"


def _shape(t: TensorType) -> str:
    return t.shape_str() if t.dtype == "float32" else f"{t.shape_str()} {t.dtype}"


def _wrap(text: str, width: int = 40) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width and line:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return "\n".join(lines)


def _ident(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text)


def _q(text: str) -> str:
    """A DOT string literal (the backslash-n line breaks are kept; quotes escaped)."""
    return '"' + text.replace("\\", "\\\\").replace("\\\\n", "\\n").replace('"', '\\"').replace("\n", "\\n") + '"'


MAX_LABELS = 10_000  # boxes and edges handed to Graphviz: past that, `dot` takes minutes and gigabytes


class DiagramError(RuntimeError):
    """Graphviz cannot, or should not be asked to, draw this diagram."""


def _graphviz(dot_source: str, ext: str) -> bytes:
    import subprocess

    import graphviz
    labels = dot_source.count(" [label=")
    if labels > MAX_LABELS:
        raise DiagramError(f"the diagram has {labels:,} boxes and edges, too many for Graphviz to lay out "
                           f"(at most {MAX_LABELS:,}): write it as .dot, or draw fewer levels with --depth")
    if ext == "png":
        dot_source = dot_source.replace("graph [", "graph [dpi=110, ", 1)
    try:
        return graphviz.Source(dot_source).pipe(format=ext, engine="dot")
    except subprocess.CalledProcessError as e:  # dot crashed or refused (out of memory, a bad label)
        said = (e.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise DiagramError(f"Graphviz's dot failed: {said[-1] if said else f'exit status {e.returncode}'}") \
            from None


def render(dot_source: str, path: str) -> None:
    """Write DOT (.dot), or have Graphviz draw it (.svg, .png, .pdf) through the graphviz package."""
    import os
    import shutil

    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext == "dot":
        data = dot_source.encode("utf-8")
    elif ext in ("svg", "png", "pdf"):
        if shutil.which("dot") is None:
            raise FileNotFoundError("Graphviz's `dot` is not installed (Debian: apt-get install graphviz)")
        data = _graphviz(dot_source, ext)
    else:
        raise ValueError(f"unknown diagram format .{ext} (use .svg, .png, .pdf or .dot)")
    write_output(path, data)
