"""Model summaries: a row per layer (blocks nested), parameters, MACs and totals.

Parameters are counted once per instance, so a shared layer (`wte` used twice)
counts once; buffers (batch norm's running statistics, a `buffer` statement's
tensor) are not parameters, as in `sum(p.numel() for p in model.parameters())`:
they are counted apart, as `sum(b.numel() for b in model.buffers())`, and a
declared buffer has a row of its own. MACs are counted at batch 1 as
torchvision's tables and fvcore count them: multiply-accumulates of
convolutions, linear layers, matrix products (attention's included),
recurrent cells and normalization affine maps, from each op's registry entry.
Other run-time sizes (a sequence length `T`) can be given; without a value,
MACs that depend on them are left as expressions.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.dims import Poly, plain, to_python
from ..ir.graph import Graph, Node
from ..ir.scan import is_scan
from ..ir.types import format_shape
from ..ops.cost import node_macs, scan_steps, times, total_macs


@dataclass
class Row:
    name: str            # dotted path: layer1.conv
    type: str            # Conv2d, Residual, matmul
    output_shape: str
    params: int
    macs: object         # int, or a Poly in the run-time sizes that have no value
    depth: int = 0
    trainable: object = True   # True, False, or "partly" for a block with frozen and trainable layers
    shared: bool = False
    own: str = ""        # as the table shows it under its parent: `h.0` for an element of the list `h`

    def as_json(self) -> dict:
        return {"name": self.name, "type": self.type, "output_shape": self.output_shape,
                "params": self.params, "macs": macs_value(self.macs)}


@dataclass
class Summary:
    model: str
    inputs: dict
    layers: list = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    macs: object = 0
    sizes: dict = field(default_factory=dict)   # run-time sizes used for MACs (B = 1, ...)
    buffers: int = 0    # elements of every buffer, persistent or not (the table's totals; not in the JSON,
                        # whose keys are INTERFACES.md's)

    def as_json(self) -> dict:
        return {"model": self.model, "inputs": self.inputs, "total_params": self.total_params,
                "trainable_params": self.trainable_params, "macs": macs_value(self.macs),
                "layers": [r.as_json() for r in self.layers]}


def summarize(graph: Graph, sizes: dict | None = None, frozen: list | None = None) -> Summary:
    """The summary of a model graph. `frozen` is a list of (dotted layer path, freeze?) rules,
    as a plan's `freeze`/`unfreeze` statements give them: the longest matching path decides."""
    sizes = {"B": 1, **(sizes or {})}
    s = Summary(graph.name, {n: _shape_str(t.shape) for n, t in graph.input_types().items()}, sizes=sizes)
    seen: set = set()
    rules = list(frozen or [])
    _walk(graph, "", 0, s, sizes, rules, seen)
    s.total_params = count_params(graph)
    s.trainable_params = s.total_params - _frozen_params(graph, rules)
    s.buffers = count_buffers(graph)
    s.macs = total_macs(r.macs for r in s.layers if not r.type.startswith("block "))
    return s


def _walk(graph: Graph, prefix: str, depth: int, s: Summary, sizes: dict, frozen: set, seen: set) -> None:
    for node in graph:
        if node.kind in ("input", "weight"):
            continue
        inst = graph.instances.get(node.instance) if node.instance else None
        path = f"{prefix}{inst.name}" if inst is not None else ""
        if node.kind == "call":
            sub = node.args["graph"]
            first = (prefix, inst.id) not in seen  # a block graph may serve several call sites
            seen.add((prefix, inst.id))
            row = Row(path, f"block {sub.name}", _out(node), count_params(sub) if first else 0, 0, depth,
                      not _is_frozen(path, frozen), shared=not first, own=inst.name)
            s.layers.append(row)
            start = len(s.layers)
            _walk(sub, f"{path}.", depth + 1, s, sizes, frozen, seen)
            if is_scan(node):   # a scan runs its step block once per step: T + future times
                steps = scan_steps(graph, node, sizes)
                for r in s.layers[start:]:
                    r.macs = times(r.macs, steps)
            row.macs = total_macs(r.macs for r in s.layers[start:] if not r.type.startswith("block "))
            states = {r.trainable for r in s.layers[start:] if r.params}
            row.trainable = states.pop() if len(states) == 1 else ("partly" if states else row.trainable)
            continue
        if node.kind == "param":
            n = _numel(inst.shape)
            s.layers.append(Row(path, "param", _out(node), n, 0, depth, not _is_frozen(path, frozen)))
            continue
        if node.kind == "buffer":
            kind = "buffer" if inst.args["persistent"] else "buffer (not persistent)"
            s.layers.append(Row(path, kind, _out(node), 0, 0, depth))
            continue
        macs = node_macs(graph, node, sizes)
        if inst is None and not macs:
            continue  # stateless functions without arithmetic to count: not a layer
        first = inst is None or (prefix, inst.id) not in seen
        if inst is not None:
            seen.add((prefix, inst.id))
        params = sum(_numel(shape) for shape in inst.weights().values()) if inst is not None and first else 0
        s.layers.append(Row(path or node.op.name, node.op.name, _out(node), params, macs, depth,
                            not _is_frozen(path, frozen), shared=not first, own=inst.name if inst else ""))


def _out(node: Node) -> str:
    return ", ".join(_shape_str(t.shape) for t in node.outputs)


def _shape_str(shape) -> str:
    return format_shape(shape)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= plain(d)
    return n


def macs_value(m):
    """MACs as JSON has them: an int, or the expression (`589824 * T + 512`) when a size is unknown."""
    return to_python(m) if isinstance(m, Poly) else m


def count_params(graph: Graph) -> int:
    """Parameters of a graph: each instance once, blocks through their own graphs."""
    total = 0
    for inst in graph.instances.values():
        if inst.kind == "block":
            total += count_params(inst.graph)
        else:
            total += sum(_numel(shape) for shape in inst.weights().values())
    return total


def count_buffers(graph: Graph) -> int:
    """Elements of a graph's buffers, persistent or not, each instance once (as torch's `buffers()`)."""
    total = 0
    for inst in graph.instances.values():
        if inst.kind == "block":
            total += count_buffers(inst.graph)
        else:
            total += sum(_numel(shape) for shape, _dtype in inst.buffers().values())
    return total


def _is_frozen(path: str, rules: list) -> bool:
    """The status the most specific matching rule gives (the later one among equals); else trainable."""
    best, frozen = -1, False
    for rule_path, freeze in rules:
        if path == rule_path or path.startswith(rule_path + ".") or rule_path == "":
            if len(rule_path) >= best:
                best, frozen = len(rule_path), freeze
    return frozen


def _frozen_params(graph: Graph, rules: list, prefix: str = "") -> int:
    total = 0
    for inst in graph.instances.values():
        path = f"{prefix}{inst.name}"
        if inst.kind == "block":
            total += _frozen_params(inst.graph, rules, f"{path}.")
        elif _is_frozen(path, rules):
            total += sum(_numel(s) for s in inst.weights().values())
    return total


# ---------------------------------------------------------------- rendering

def format_count(n) -> str:
    if isinstance(n, Poly):
        return to_python(n)
    for unit, size in (("G", 10 ** 9), ("M", 10 ** 6), ("K", 10 ** 3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def render_table(s: Summary, console=None) -> None:
    """A rich table on the terminal (plain text when stdout is not one)."""
    import sys

    from rich.console import Console
    from rich.table import Table
    # a pipe or file gets the whole table rather than rich's 80-column default
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    if len(s.layers) > RICH_ROWS:
        _plain_table(s, console)
        return _totals(s, console)
    table = Table(title=f"{s.model}  (inputs: " + ", ".join(f"{k} {v}" for k, v in s.inputs.items()) + ")",
                  title_justify="left", show_lines=False)
    table.add_column("layer", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("output shape", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("MACs", justify="right", no_wrap=True)
    for r in s.layers:
        style = "bold" if r.type.startswith("block ") else None
        table.add_row(*_cells(r), style=style)
    console.print(table)
    _totals(s, console)


RICH_ROWS = 2000  # rich lays out about 1,000 rows a second: a longer table is printed as plain columns


def _cells(r) -> tuple:
    own = r.own or r.name.rsplit(".", 1)[-1]  # the nesting shows the rest of the path
    status = {True: "", False: " (frozen)", "partly": " (partly frozen)"}[r.trainable]
    name = "  " * r.depth + own + (" (shared)" if r.shared else "") + status
    return (name, r.type, r.output_shape, f"{r.params:,}" if r.params else "",
            format_count(r.macs) if r.macs else "")


def _plain_table(s: Summary, console) -> None:
    rows = [("layer", "type", "output shape", "params", "MACs")] + [_cells(r) for r in s.layers]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    console.print(f"{s.model}  (inputs: " + ", ".join(f"{k} {v}" for k, v in s.inputs.items()) + ")",
                  markup=False, highlight=False)
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in rows]
    console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)


def _totals(s: Summary, console) -> None:
    frozen = s.total_params - s.trainable_params
    sizes = ", ".join(f"{k}={v}" for k, v in s.sizes.items())
    buffers = f"   buffers: {s.buffers:,}" if s.buffers else ""
    console.print(f"total params: {s.total_params:,}   trainable: {s.trainable_params:,}   frozen: {frozen:,}{buffers}")
    console.print(f"MACs ({sizes}): {format_count(s.macs)}" + (f" ({s.macs:,})" if isinstance(s.macs, int) else
                                                              "   (give sizes with --size)"))
