"""Loops kept as module lists: `repeat depth { h = h -> Block(dim) }` is
`nn.ModuleList([Block(dim) for _ in range(depth)])` and a loop in forward, keyed
0, 1, 2, ... as PyTorch keys it (`blocks.3.attn.weight`).

A loop (`repeat` or `for`) qualifies when each pass applies one layer with weights
or one block (made in that pass, used once) to the value the pass before made,
with the same other inputs, and nothing but the next pass reads a pass's result.
Then:
- its elements are alike (same class, same arguments, the output typed as the
  input), so the count stays a constructor argument: no guard `depth == 12`;
- or all but the first are alike (torchvision's `_make_layer`: a first block with a
  stride or a projection), and the count stays an argument too:
  `[Block(64, 128, 2), *[Block(128, 128, 1) for _ in range(1, blocks)]]`;
- or they differ otherwise, and the list is written out, its count fixed as any
  unrolled loop's.
"Alike" is about every count, not only the passes that ran: the passes from that
element on must start from the same values (frontend/loopvars.py).

A loop whose every pass concatenates to the running value what one block makes of it
(DenseNet's dense block: `x = concat([x, x -> DenseLayer(growth)], dim=1)`) is a list too,
a dense one, when the blocks are made with the same arguments and nothing else reads a
pass's values: its elements differ only in the input they are made for, which grows by
the same size each pass, so the count stays an argument and the constructor makes the
elements in a loop over the index (`DenseLayer(in_channels + i * growth, growth) for i in
range(layers)`), torchvision's `_DenseBlock`.

Which qualifying loops become lists:
- a named one, `repeat depth as h { ... }` or `for i in range(n) as layers { ... }`
  (a named loop that does not qualify is E0212, saying why);
- an unnamed `repeat` whose elements are all alike, named after its element (`blocks`);
- an unnamed loop that is the whole body of a block (input -> the list -> output):
  the block is then an `nn.Sequential` of the elements, keyed `0, 1, ...` directly
  (`layer1.0.conv1.weight`, as torchvision's ResNet stages).
Others unroll, their layers numbered (`fc1`, `fc2`), as an unnamed `for` always did.

A model or block that is a chain of two or more unnamed layers or blocks and nothing
else, one input through them to one output, is an `nn.Sequential` of them too, keyed by
position as PyTorch keys one: the layers without weights are modules there
(`nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), ...)` keys its linear
layers `1` and `3`; torchvision's `downsample = nn.Sequential(conv1x1(...),
nn.BatchNorm2d(...))` is one as well, and UNet's `Down`, `nn.Sequential(nn.MaxPool2d(2),
DoubleConv(...))`). A layer or block named with `as` keeps its name, and its model or
block the class form; so does a chain with neither a layer with weights nor a block.

The decision waits for the end of the body, when every use of a pass's result is known.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..diagnostics import Label
from ..ir.dims import Poly, Size, record, record_count
from ..ir.graph import Container, Graph
from ..ir.keys import value_key
from ..ir.naming import attribute_problem
from ..ir.nesting import SEP
from ..ir.values import Ref
from . import ast
from .context import Ctx
from .errors import EvalError
from .loopvars import names_in


@dataclass
class Loop:
    """A loop as it ran: `repeat` or `for`, its count, the nodes each pass made, the name it was given,
    and `settled`, the first pass from which every pass starts from the same values (loopvars.py;
    None when the loop variable is used in ways that may differ for any pass)."""
    kind: str
    count: object
    passes: list            # [[node id, ...] per pass]
    name: str | None
    name_span: object
    span: object
    settled: int | None = 0
    stmt: object = None      # its statement; a `for`'s items its passes ran with
    items: tuple = ()
    guard: object = None     # unrolled: the guard of its count (ir/dims.py LoopCount)

    @property
    def word(self) -> str:
        return "repeat" if self.kind == "repeat" else "for"


def split_name(head: ast.Expr) -> tuple:
    """`repeat depth as h`, `for i in range(n) as layers`: the count's or the iterable's expression,
    and the list's name and its span (or None)."""
    if isinstance(head, ast.AsName):
        if head.template:
            raise EvalError("E0211", "a list has one name: a template names the layers made in the loop",
                            head.name_span, label="a template", help='name the list (`as layers`), and each '
                            'layer in it with the template (`x -> Block(dim) as "layer{i}"`)')
        return head.value, head.name, head.name_span
    return head, None, None


def check_name(name: str, span, ctx: Ctx) -> None:
    problem = attribute_problem(name)
    if problem:
        raise EvalError("E0211", f"`{name}` cannot name a list of layers: {problem}", span)
    if name in ctx.layer_names or name in ctx.graph.containers or any(r.name == name for r in ctx.loops):
        raise EvalError("E0210", f"`{name}` already names a layer of `{ctx.graph.name}`", span,
                        label="a second use of the name")


def finish_loops(ctx: Ctx) -> None:
    """Decide, for each loop of the body, whether it is a module list, and whether the block is an
    `nn.Sequential` (see the module's doc)."""
    if ctx.loops:
        consumers = _consumers(ctx.graph)
        for loop in ctx.loops:   # inner loops first: they finished first
            _finish(loop, ctx, consumers)
            _note_list_loop(loop, ctx.graph)
        ctx.loops.clear()
    if ctx.kind in ("model", "block") and not ctx.graph.containers:
        _layer_chain(ctx.graph)


@dataclass(frozen=True)
class ListLoop:
    """A `for` over a list parameter (`for width in widths`) as it ran: its statement, the items of
    each pass and the nodes each pass made. The generated PyTorch may build its layers in a Python
    loop over the list, the list a constructor argument (backends/loops.py). An unnamed `repeat`
    over a parameter that unrolled (its passes are no module list) is one too, its items empty:
    `for _ in range(depth):` with the layers it makes, so `depth` stays an argument."""
    stmt: object           # ast.ForStmt, or ast.RepeatStmt
    items: tuple
    passes: tuple
    guard: object = None   # a repeat's count's guard (`depth == 30`): gone where it is written as a loop


def _note_list_loop(loop: Loop, graph: Graph) -> None:
    if loop.kind == "repeat":
        if loop.name is None and isinstance(loop.stmt, ast.RepeatStmt) and loop.guard is not None:
            graph.list_loops.append(ListLoop(loop.stmt, ((),) * len(loop.passes),
                                             tuple(tuple(p) for p in loop.passes), loop.guard))
        return
    if loop.kind != "for" or loop.stmt is None or loop.stmt.iterable is not _iterable(loop.stmt):
        return   # a named loop (`for ... as layers`) is a module list or an error
    lists = {p for p, v in graph.params.items() if isinstance(v, (list, tuple))}
    if lists & names_in(loop.stmt.iterable):
        graph.list_loops.append(ListLoop(loop.stmt, tuple(loop.items), tuple(tuple(p) for p in loop.passes)))


def _iterable(stmt: ast.ForStmt):
    return split_name(stmt.iterable)[0]


def _finish(loop: Loop, ctx: Ctx, consumers: dict) -> None:
    graph = ctx.graph
    if not loop.passes:   # no pass: nothing to keep, and nothing that says what one pass would make
        _lose(loop)
        return
    why, elements = _qualifies(loop, graph, consumers)
    dense = _dense(loop, graph, consumers) if why is not None else None
    if dense is not None and _keep_dense(loop, dense, graph):
        return
    if why is not None and loop.name is not None:
        raise EvalError("E0212", f"`{loop.word} ... as {loop.name}` keeps one layer or block per pass in a list, "
                        f"but {why}", loop.name_span, label="names the list",
                        labels=(Label(loop.span, f"this {'repeat' if loop.kind == 'repeat' else 'loop'}"),),
                        help="apply one layer or block per pass to the running value (`h = h -> Block(dim)`), "
                             f"or leave the {'repeat' if loop.kind == 'repeat' else 'loop'} unnamed to unroll it")
    if why is not None:
        _lose(loop)
        return
    first = _alike_from(loop, elements, graph)
    keys, pattern = _templated(elements, graph)
    if keys and pattern is None:
        first = None   # no template of the index writes these names for every count: list them
    whole = loop.name is None and _chain(graph) == elements and ctx.kind == "block" and \
        all(_sequential_element(graph, n) for n in elements)
    if not (loop.name is not None or whole or loop.kind == "repeat" and first == 0):
        _lose(loop)
        return
    if first is None:
        _lose(loop)
    elif first == 1 and isinstance(loop.count, Size):
        record(loop.count.expr, ">=", Poly.const(1), True)   # the list always holds its first element
    _keep(loop, elements, first, whole, graph, keys=keys, pattern=pattern)


def _keep_dense(loop: Loop, dense: list, graph: Graph) -> bool:
    """Keep a dense list (its count stays an argument, so names from a template must follow one of the
    index); named by a template and not by the loop, the list is its block (torchvision's _DenseBlock)."""
    elements = [e for e, _ in dense]
    keys, pattern = _templated(elements, graph)
    if keys and pattern is None:
        return False
    container = _keep(loop, elements, 0, bool(keys) and loop.name is None, graph,
                      concat_dim=graph.nodes[dense[0][1]].args["dim"], keys=keys, pattern=pattern)
    container.result = _grown_result(graph, dense, loop.count)
    return True


def _templated(elements: list, graph: Graph) -> tuple:
    """(the elements' names, the template of the index that writes them for any count) when a template
    named each one (`as "layer{i}"`); (None, None) when not; the template is None when the names
    follow none."""
    insts = [graph.instances[graph.nodes[n].instance] for n in elements]
    if not all(i.key for i in insts):
        return None, None
    return [i.user_name for i in insts], _key_pattern([i.key for i in insts])


def _key_pattern(keys: list) -> tuple | None:
    """The template that gives element i its key for any count: the text that every key shares, and
    for a value that grows by one a pass, the int c of `i + c`; None when the keys follow none (or
    there is one key, which cannot tell `i` from a constant)."""
    if len(keys) < 2 or len({len(k) for k in keys}) != 1:
        return None
    out = []
    for parts in zip(*keys):
        if len(set(parts)) == 1 and len({type(p) for p in parts}) == 1:
            out.append(str(parts[0]))
        elif all(type(p) is int and p - j == parts[0] for j, p in enumerate(parts)):
            out.append(parts[0])
        else:
            return None
    return tuple(out) if any(type(p) is int for p in out) else None


def _lose(loop: Loop) -> None:
    """The loop unrolls: its count is fixed (a guard of its own, which a Python loop may drop)."""
    loop.guard = record_count(loop.count, loop.span)


def _keep(loop: Loop, elements: list, first: int | None, whole: bool, graph: Graph,
          concat_dim: int | None = None, keys: list | None = None, pattern: tuple | None = None) -> Container:
    # named by ir/naming.py with the other instances; the elements of a Sequential block by position
    name = loop.name or ("" if whole else f"__auto{len(graph.containers)}")
    ids = [graph.nodes[n].instance for n in elements]
    graph.containers[name] = Container(name, ids, loop.count, first, user_name=loop.name, sequential=whole,
                                       concat_dim=concat_dim, keys=keys, key_pattern=pattern)
    for i, inst_id in enumerate(ids):
        inst = graph.instances[inst_id]
        inst.container, inst.index = name, i
    return graph.containers[name]


def _qualifies(loop: Loop, graph: Graph, consumers: dict) -> tuple:
    """(None, the element nodes in order) when the loop can be a module list, else (why, [])."""
    elements = []
    for i, made in enumerate(loop.passes):
        applied = [n for n in made if graph.nodes[n].instance is not None and graph.nodes[n].kind in ("op", "call")]
        if len(applied) != 1 or len(made) != 1:
            return f"pass {i + 1} makes {len(made)} operations, not one layer or block", []
        node = graph.nodes[applied[0]]
        inst = graph.instances[node.instance]
        if inst.kind == "layer" and (not inst.op.has_state or inst.inits or inst.op.keyword_inputs):
            return f"pass {i + 1} applies `{inst.op.name}`, a layer without weights of its own or with `init=`", []
        if len(node.outputs) != 1 or not node.inputs:
            return f"pass {i + 1}'s layer or block does not map one tensor to one tensor", []
        if sum(1 for m in graph.nodes.values() if m.instance == inst.id) != 1:
            return f"pass {i + 1} applies a layer that is applied elsewhere too (a shared, named layer)", []
        if inst.container is not None:
            return f"pass {i + 1}'s layer or block is already an element of an inner loop's list", []
        if elements:
            first, prev = graph.nodes[elements[0]], graph.nodes[elements[-1]]
            if node.inputs[0] != Ref(prev.id) or node.inputs[1:] != first.inputs[1:]:
                return f"pass {i + 1} is not applied to the result of pass {i}", []
        elements.append(node.id)
    for n in elements[:-1]:
        if consumers.get(Ref(n), 0) != 1:
            return "a pass's result is read by more than the next pass", []
    return None, elements


def _dense(loop: Loop, graph: Graph, consumers: dict) -> list | None:
    """(element node, concat node) per pass when the loop is a dense list (see the module's doc), else None."""
    chain = _chain_of_passes(graph, loop)
    if loop.settled != 0 or chain is None:
        return None
    out, running, key = [], None, None
    for made in loop.passes:
        if len(made) != 2:
            return None
        element, join = graph.nodes[made[0]], graph.nodes[made[1]]
        if element.kind != "call" or len(element.inputs) != 1 or not _sequential_element(graph, element.id):
            return None
        if running is not None and element.inputs[0] != running:
            return None
        running = element.inputs[0]
        inst = graph.instances[element.instance]
        if sum(1 for m in graph.nodes.values() if m.instance == inst.id) != 1 or inst.container is not None:
            return None
        if join.kind != "op" or join.op.name != "concat" or join.inputs != [running, Ref(element.id)] \
                or len(join.outputs) != 1:
            return None
        # made alike, and each adding as much to the running value: its size grows by one step a pass
        this = (id(inst.graph.decl), value_key(inst.args), value_key(join.args["dim"]),
                _type_key(element.outputs[0]))
        if key is not None and this != key:
            return None
        if consumers.get(Ref(element.id), 0) != 1 or (out and consumers.get(running, 0) != 2):
            return None
        key, running = this, Ref(join.id)
        out.append((element.id, join.id))
    return out or None


def _chain_of_passes(graph: Graph, loop: Loop) -> list | None:
    """The loop's nodes when they are the block's whole body (input -> the passes -> output), else None:
    what the block returns then depends on the count in a way its type can say (_grown_output)."""
    made = [n for p in loop.passes for n in p]
    body = [n for n, node in graph.nodes.items() if node.kind != "input"]
    if body != made or len(graph.inputs) != 1 or len(graph.outputs) != 1 or not made:
        return None
    if graph.outputs[0][1] != Ref(made[-1]) or graph.nodes[made[0]].inputs[:1] != [graph.inputs[0][1]]:
        return None
    return made


def _grown_result(graph: Graph, dense: list, count) -> tuple:
    """The block's result and its type for any count: the input's size, and one element's for each
    pass (`in_channels + layers * growth`), as the list's count stays an argument."""
    first, last = graph.nodes[dense[0][0]], dense[-1][1]
    t = graph.type_of(Ref(last))
    dim = graph.nodes[dense[0][1]].args["dim"] % t.rank
    shape = list(t.shape)
    shape[dim] = graph.type_of(first.inputs[0]).shape[dim] + count * first.outputs[0].shape[dim]
    return Ref(last), replace(t, shape=tuple(shape))


def _alike_from(loop: Loop, elements: list, graph: Graph) -> int | None:
    """0 when every element is made alike for any count, 1 when every one but the first is, else None."""
    for start in (0, 1):
        if loop.settled is not None and loop.settled <= start < len(elements) and _alike(elements[start:], graph):
            return start
    return None


def _alike(elements: list, graph: Graph) -> bool:
    """Every element made with the same class and arguments, and the value's type unchanged by
    one (so that any count of them chains)."""
    first = graph.nodes[elements[0]]
    if _type_key(first.outputs[0]) != _type_key(graph.type_of(first.inputs[0])):
        return False
    key = _instance_key(graph.instances[first.instance])
    return all(_instance_key(graph.instances[graph.nodes[n].instance]) == key for n in elements[1:])


def _instance_key(inst) -> tuple:
    if inst.kind == "block":
        return ("block", id(inst.graph), value_key(inst.args))
    return ("layer", inst.op.name, value_key(inst.args))


def _type_key(t) -> tuple:
    return (value_key(t.shape), t.dtype)


def _layer_chain(graph: Graph) -> None:
    """A model or block that is only a chain of two or more unnamed layers or blocks (or one a list
    loop made), one of them a block or a layer with weights: an nn.Sequential of them."""
    chain = _chain(graph)
    # one element is a chain where a list loop made it: the same loop keys its elements 0, 1, ... for
    # every longer list, and the generated class (a loop over the list) keys this one `0` too
    if chain is None or (len(chain) < 2 and not _of_list_loop(graph, chain)):
        return
    layers = []
    for n in chain:
        node = graph.nodes[n]
        inst = graph.instances.get(node.instance) if node.instance else None
        if inst is None or inst.user_name or not _sequential_element(graph, n):
            return
        if inst.kind == "layer" and (node.kind != "op" or inst.inits or inst.op.keyword_inputs):
            return
        if inst.kind not in ("layer", "block"):
            return
        layers.append(inst)
    if len({inst.id for inst in layers}) != len(chain):
        return   # a layer applied twice
    if not any(inst.kind == "block" or inst.op.has_state for inst in layers):
        return   # nothing to key: functions in forward read better
    loop = Loop("chain", len(chain), [[n] for n in chain], None, None, None, settled=None)
    _keep(loop, chain, None, True, graph)


def _of_list_loop(graph: Graph, chain: list) -> bool:
    return any(n in p for n in chain for loop in graph.list_loops if loop.items for p in loop.passes)


def _chain(graph: Graph) -> list | None:
    """The nodes of a graph that applies one thing after another to its one input, each to the result
    of the one before, and returns the last result; None when it is more than that."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1 or SEP in graph.inputs[0][0]:
        return None
    running, chain = graph.inputs[0][1], []
    for node in graph.nodes.values():
        if node.kind == "input":
            continue
        if node.inputs != [running] or len(node.outputs) != 1:
            return None
        running = Ref(node.id)
        chain.append(node.id)
    return chain if chain and graph.outputs[0][1] == running else None


def _sequential_element(graph: Graph, node_id: str) -> bool:
    """An nn.Sequential calls each element on the running value alone and takes its one result."""
    node = graph.nodes[node_id]
    if node.kind == "call":
        g = node.args["graph"]
        return len(g.inputs) == 1 and len(g.outputs) == 1 and SEP not in g.inputs[0][0] + g.outputs[0][0]
    return node.kind == "op" and node.op.torch is not None and getattr(node.op.torch, "call", None) is None


def _consumers(graph: Graph) -> dict:
    """How many times each value is read: by nodes, and by the graph's outputs."""
    out: dict = {}
    for node in graph.nodes.values():
        for r in node.inputs:
            out[r] = out.get(r, 0) + 1
    for _, r in graph.outputs:
        out[r] = out.get(r, 0) + 1
    return out
