"""Loops over a list parameter written as Python loops, as torchvision's `make_layers` writes VGG:

    layers = []
    for width, convs in config:
        for _ in range(convs):
            layers.append(nn.Conv2d(in_channels, width, 3, padding=1))
            in_channels = width
            ...
    super().__init__(*layers)

An nn.Sequential model or block whose body has a `for` over a list parameter (frontend/containers.py
ListLoop) is written from its statements: each layer or block call is an `append` of its constructor,
`repeat`, `for` and `if` inside the loop are Python's, the list and what the body tests stay
constructor arguments. The evaluator ran the loop with the list's values; each pass is written
from the layers it made and must come out as the same text as every other pass (and every
specialization of the block: a branch one did not take, another may have), else the class keeps
its unrolled form. Every dimension of the running value is followed as Python (backends/loopsizes.py):
running variables (`in_channels`, and `size` or `height, width` where a later line reads them) are set
where the loop changes them, and an inferred argument (`in_channels`, a Linear's `in_features` after
`Flatten`) is written from them; what its shape rules cannot follow leaves the class unrolled
(NotLoopable says why).
"""
from __future__ import annotations

import operator
import re
import typing
from dataclasses import dataclass, fields

from ..frontend import ast
from ..ir.dims import InDim, Param, Size, Sym, plain
from ..ir.pyliteral import Source, top_level
from ..ir.types import TensorType
from .loopsizes import (
    SIMPLE,
    SPATIAL,
    SPELLINGS,
    SQUARE,
    VAR,
    Assign,
    NotLoopable,
    NotSquare,
    Sizes,
    atom,
    block_result,
    infer_layer,
    poison,
    poisoned,
)
from .pyformat import is_default
from .variants import WIDTH  # the generated code's line length (120, torchvision's)


@dataclass
class Compound:
    """`for ...:` / `if ...:` / `else:` and its body; body None where no pass ran it."""
    header: str
    body: list | None


@dataclass
class State:
    """The running value's dimensions from 1 on: the IR's sizes until `dependent` (set once they may
    differ for other values of a list), then polynomials over the atoms of loopsizes.Sizes; `values`:
    the numbers they are in the pass being read (None for a run-time size)."""
    dims: list
    values: list
    dependent: bool = False


def merge(a: list | None, b: list | None) -> list | None:
    """One template from two passes' (holes filled), or NotLoopable where they differ."""
    if a is None or b is None:
        return a if b is None else b
    if len(a) != len(b):
        raise NotLoopable("its passes make different layers")
    out = []
    for x, y in zip(a, b):
        if isinstance(x, Compound) and isinstance(y, Compound) and x.header == y.header:
            out.append(Compound(x.header, merge(x.body, y.body)))
        elif x == y and isinstance(x, str):
            out.append(x)
        elif isinstance(x, Assign) and isinstance(y, Assign):
            out.append(x.merged(y))
        else:
            raise NotLoopable("its passes make different layers")
    return out


def render(tree: list, indent: str = "    ", depth: int = 0) -> list[str]:
    out = []
    for item in _joined(tree, len(indent) * (depth + 2)):   # the constructor's body is indented twice
        if isinstance(item, Compound):
            if item.body is None:
                raise NotLoopable(f"no pass of this file ran the body of `{item.header}`")
            out.append(indent * depth + item.header)
            out += render(item.body, indent, depth + 1) or [indent * (depth + 1) + "pass"]
        else:
            out.append(indent * depth + item)
    return out


def constructor(body: list[str], running: set) -> list[str]:
    """The constructor's lines around the rendered loop: the shorter of torchvision's `layers = [...]`
    ... `super().__init__(*layers, last)` and nn.Sequential's own `super().__init__(first)` ...
    `self.append(x)` (the same modules, keyed 0, 1, 2, ... either way); the first on a tie. `running`:
    the running variables, whose first values join `layers = []` (`layers, in_channels = [], 3`)."""
    listed, own = _listed(body, running), _own(body)
    return own if len(own) < len(listed) else listed


def reuse_argument(body: list[str], carried: str | None, arguments) -> tuple[list[str], str | None]:
    """`in_channels = 32` rather than a second `in_channels2 = 32`: the running variable takes the name
    of the constructor argument it was numbered after when no line from its first value on reads that
    argument (torchvision's make_layers reassigns its `in_channels` so)."""
    for name in arguments:
        if not carried or not carried.startswith(name) or not carried[len(name):].isdigit():
            continue
        start = next((i for i, line in enumerate(body) if carried in _targets(line)), None)
        word = re.compile(rf"\b{re.escape(name)}\b")
        if start is not None and not any(word.search(line) for line in body[start:]):
            own = re.compile(rf"\b{re.escape(carried)}\b")
            return [own.sub(name, line) for line in body], name
    return body, carried


_ASSIGNED = re.compile(r"([A-Za-z_]\w*(?:, [A-Za-z_]\w*)*) = (.*)")


def _targets(line: str) -> list[str]:
    """The names a top-level `in_channels, size = width, size // 2` sets, else []."""
    m = _ASSIGNED.fullmatch(line)
    return m.group(1).split(", ") if m else []


def _listed(body: list[str], running: set) -> list[str]:
    head = _run(body[:1])
    lines = body[1:] if head is not None else body
    first = f"[{', '.join(head)}]" if head is not None else "[]"
    targets = _targets(lines[0]) if lines else []
    if targets and set(targets) <= running:
        out = [f"layers, {', '.join(targets)} = {first}, {_ASSIGNED.fullmatch(lines[0]).group(2)}"]
        lines = lines[1:]
    else:
        out = [f"layers = {first}"]
    k = len(lines)
    while k > 0 and _run(lines[k - 1:k]) is not None:   # the layers after the loop: super()'s arguments
        k -= 1
    rest = [x for line in lines[k:] for joined in _run([line]) or [] for x in _split(joined)]
    if k < len(lines) and rest:
        return out + lines[:k] + _packed("super().__init__(", ["*layers"] + rest, ")")
    return out + lines + ["super().__init__(*layers)"]


def _split(text: str) -> list[str]:
    """`a(1, 2), b` as its items `a(1, 2)` and `b`."""
    cuts = [i for i, ch in top_level(text) if ch == ","]
    return [text[a + 1 if k else 0:b].strip() for k, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(text)]))]


def _packed(start: str, items: list[str], end: str) -> list[str]:
    """`start` items `end`, as many items a line as fit the constructor's body (indented twice), the
    next lines under the first item."""
    out, line = [], start
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else end)
        if line.strip() and line != start and 8 + len(line) + 1 + len(piece) > WIDTH:
            out.append(line)
            line = " " * len(start)
        line += piece if line == start or not line.strip() else " " + piece
    return out + [line]


def _own(body: list[str]) -> list[str]:
    head = _run(body[:1])
    out = [f"super().__init__({', '.join(head)})"] if head is not None else ["super().__init__()"]
    for line in body[1:] if head is not None else body:
        indent = line[:len(line) - len(line.lstrip())]
        items = _appended(line.lstrip())
        if items is None:
            out.append(line)
        elif line.lstrip().startswith("layers.append("):
            out.append(f"{indent}self.append({items[0]})")
        else:
            out.append(f"{indent}self.extend([{items[0]}])")
    return out


def _run(lines: list[str]) -> list | None:
    """The layers a top-level `layers.append(x)` or `layers += [x, y]` adds, else None."""
    return _appended(lines[0]) if lines and not lines[0].startswith(" ") else None


def _joined(tree: list, width: int) -> list:
    """Runs of `layers.append(x)` as one `layers += [x, y]` where it fits a line."""
    out: list = []
    for item in tree:
        prev = out[-1] if out else None
        if isinstance(item, str) and isinstance(prev, str) and _appended(item) and _appended(prev) is not None:
            joined = f"layers += [{', '.join(_appended(prev) + _appended(item))}]"
            if width + len(joined) <= WIDTH:
                out[-1] = joined
                continue
        out.append(item)
    return out


def _appended(line: str) -> list | None:
    if line.startswith("layers.append(") and line.endswith(")"):
        return [line[len("layers.append("):-1]]
    if line.startswith("layers += [") and line.endswith("]"):
        return [line[len("layers += ["):-1]]
    return None


# ---------------------------------------------------------------- expressions


_OPS = {"+", "-", "*", "/", "//", "%", "**", "==", "!=", "<", "<=", ">", ">=", "and", "or"}


def py_text(e, name) -> str:
    """A spec expression as Python (`hidden[::-1][1:]`); `name` spells each name."""
    if isinstance(e, ast.Name):
        return name(e.id)
    if isinstance(e, ast.Const) and (e.value is None or isinstance(e.value, (bool, int, float, str))):
        return repr(e.value)
    if isinstance(e, (ast.ListExpr, ast.TupleExpr)):
        inner = ", ".join(py_text(x, name) for x in e.items)
        return f"[{inner}]" if isinstance(e, ast.ListExpr) else f"({inner}{',' if len(e.items) == 1 else ''})"
    if isinstance(e, ast.BinOp) and e.op in _OPS:
        return f"{_operand(e.left, name)} {e.op} {_operand(e.right, name)}"
    if isinstance(e, ast.UnaryOp) and e.op in ("-", "not"):
        return f"{e.op}{' ' if e.op == 'not' else ''}{_operand(e.operand, name)}"
    if isinstance(e, ast.Index):
        return f"{_operand(e.value, name)}[{', '.join(_subscript(s, name) for s in e.subscripts)}]"
    if _builtin_call(e):   # `range(n)`, `len(blocks)`: Python's own (a spec name that is one is renamed)
        return f"{e.func.id}({', '.join(py_text(a, name) for a in e.args)})"
    if isinstance(e, ast.Cond):
        cond = f"({py_text(e.cond, name)})" if isinstance(e.cond, ast.Cond) else py_text(e.cond, name)
        return f"{_operand(e.then, name)} if {cond} else {_operand(e.orelse, name)}"
    raise NotLoopable("it computes with an expression a Python loop does not spell here")


# the built-ins a loop's expressions may call, with their values as the evaluator has them
_BUILTINS = {"range": lambda *a: list(range(*a)), "len": len, "min": min, "max": max}


def _builtin_call(e) -> bool:
    return isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id in _BUILTINS and not e.kwargs


def _operand(e, name) -> str:
    text = py_text(e, name)
    return f"({text})" if isinstance(e, (ast.BinOp, ast.UnaryOp, ast.Cond)) else text


def _subscript(s, name) -> str:
    if isinstance(s, ast.Slice):
        parts = ["" if p is None else py_text(p, name) for p in (s.start, s.stop, s.step)]
        return ":".join(parts[:2]) + (f":{parts[2]}" if parts[2] else "")
    return py_text(s, name)


_APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
          "//": operator.floordiv, "%": operator.mod, "**": operator.pow, "==": operator.eq,
          "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
          "and": lambda a, b: a and b, "or": lambda a, b: a or b}


def py_value(e, env: dict):
    """The value of a spec expression `py_text` spells, for the names' values in `env`."""
    try:
        return _value(e, env)
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as err:
        raise NotLoopable(f"cannot compute `{py_text(e, str)}` here") from err


def _value(e, env: dict):
    py_text(e, str)   # refuses what it cannot spell
    if isinstance(e, ast.Name):
        return env[e.id]
    if isinstance(e, ast.Const):
        return e.value
    if isinstance(e, (ast.ListExpr, ast.TupleExpr)):
        items = [_value(x, env) for x in e.items]
        return items if isinstance(e, ast.ListExpr) else tuple(items)
    if isinstance(e, ast.BinOp):
        return _APPLY[e.op](_value(e.left, env), _value(e.right, env))
    if isinstance(e, ast.UnaryOp):
        v = _value(e.operand, env)
        return -v if e.op == "-" else not v
    if isinstance(e, ast.Call):
        return _BUILTINS[e.func.id](*(_value(a, env) for a in e.args))
    if isinstance(e, ast.Cond):
        return _value(e.then, env) if _value(e.cond, env) else _value(e.orelse, env)
    v = _value(e.value, env)
    for sub in e.subscripts:   # an Index: py_text allowed nothing else
        v = v[slice(*(None if p is None else _value(p, env) for p in (sub.start, sub.stop, sub.step)))
              if isinstance(sub, ast.Slice) else _value(sub, env)]
    return v


def names_of(x) -> set:
    out = set()
    if isinstance(x, tuple):
        for y in x:
            out |= names_of(y)
    elif isinstance(x, ast.Node):
        if isinstance(x, ast.Name):
            out.add(x.id)
        if _builtin_call(x):
            return names_of(x.args)
        for f in fields(x):
            out |= names_of(getattr(x, f.name))
    return out


def expressions(x, out: dict) -> dict:
    """(start, end) -> the expression there, for every expression under `x`."""
    if isinstance(x, tuple):
        for y in x:
            expressions(y, out)
    elif isinstance(x, ast.Node):
        if x.span is not None:
            out.setdefault((x.span.start, x.span.end), x)
        for f in fields(x):
            expressions(getattr(x, f.name), out)
    return out


class Template:
    """The constructor lines of an nn.Sequential graph with list loops (see the module's doc), written
    through the class writer `w` (its printer, constructors and names); `square`: one `size` for
    spatial sizes that start equal (NotSquare where a pass makes them differ)."""

    def __init__(self, w, printer, square: bool = True):
        self.w, self.graph, self.printer = w, w.graph, printer
        if self.graph.decl is None:
            raise NotLoopable("it has no declaration to read its statements from")
        self.exprs = expressions(self.graph.decl.body, {})
        self.loop_names: dict = {}      # loop variable -> its Python name
        self.carried: str | None = None
        self.vars: list | None = None   # the running variables by dimension (1 on): `carried`, then VAR names
        self.names: dict = {}           # VAR name -> its Python name, for those a line reads
        self.live: set = set()          # the parameters the lines read
        self.counts: list = []          # the guards of the repeat counts written as loops
        self.bound: set = set()         # the names the loops walked so far bound
        self.sizes, self.square = Sizes(printer), square
        self.items: dict = {}           # a list argument's text -> its items' texts

    def lines(self, chain: list) -> list:
        top = {n: loop for loop in self.graph.list_loops for p in loop.passes for n in p}
        t = self.graph.type_of(self.graph.nodes[chain[0]].inputs[0])
        state = State(list(t.shape[1:]), [_known(d) for d in t.shape[1:]])
        tree, done = [], set()
        env = {p: _plain(v) for p, v in self.graph.params.items()}
        for n in chain:
            loop = top.get(n)
            if loop is None:
                tree += self.element(self.graph.nodes[n], env, state)
            elif id(loop) not in done:
                done.add(id(loop))
                tree += self.list_loop(loop, env, state)
        return tree

    def element(self, node, env: dict, state: State) -> list:
        """`layers.append(nn.Conv2d(in_channels, width, 3, padding=1))`, and the running value's
        dimensions after it."""
        inst = self.graph.instances.get(node.instance) if node.instance else None
        if inst is None or inst.folded is not None or inst.inits or inst.user_name or node.kind not in ("op", "call"):
            raise NotLoopable("an element is not a plain layer or block")
        given = self._given(inst, env)
        if state.dependent:
            self._no_shape_reads(inst, env)
        if given and not state.dependent:
            self._symbolic(state)
        if not state.dependent:   # nothing so far depends on a list: the IR's sizes are right
            text = self.w._ctor(inst, self.printer) if inst.kind == "layer" else self.w._block_ctor(inst, {})
            t = node.outputs[0] if len(node.outputs) == 1 else None
            if t is not None and t.rank >= 2:
                state.dims, state.values = list(t.shape[1:]), [_known(d) for d in t.shape[1:]]
            return [f"layers.append({text})"]
        text, dims = (self._layer if inst.kind == "layer" else self._block)(node, inst, given, state)
        self._follow(node, dims, state)
        return [f"layers.append({text})"]

    def _layer(self, node, inst, given: dict, state: State) -> tuple[str, list]:
        """A layer's constructor, its inferred arguments written from the running sizes, and its result's
        dimensions, by its shape rule."""
        t = self.graph.type_of(node.inputs[0])
        x = TensorType((t.shape[0], *[self.sizes.dim(p, v) for p, v in zip(state.dims, state.values)]), t.dtype)
        optional = self._optional_inferred(inst)
        args = {k: inst.op.param(k).default if k in optional else self._argument(v, given.get(k))
                for k, v in inst.args.items() if inst.op.param(k) is not None}
        fed, dims = infer_layer(self.sizes, inst, x, args, node.span or inst.op.name, optional)
        baked = [k for k in given if not _whole(inst.args[k]) and not _wholes(inst.args[k])
                 and not self._flag_keeps(inst, x, args, k, dims)]
        if baked:   # a float, a string or a flag the loop reads: what the rule made of it holds only here
            why = f"`{inst.op.name}` changes a size by `{baked[0]}`, which the loop gives"
            dims = [p if j < len(state.dims) and p == state.dims[j] else poison(why) for j, p in enumerate(dims)]
        written = {k: Source(self._written(v)) for k, v in fed.items()}
        return self.w._ctor(inst, self.printer, dict(inst.args, **given, **written)), dims

    def _optional_inferred(self, inst) -> set:
        """The arguments the spec left out that the layer takes from its input though it could be given
        one (LayerNorm's `normalized_shape`): the shape rule infers them again from the running sizes (the
        compiled value holds for the passes that ran only)."""
        out = set()
        for k, v in inst.args.items():
            spec = inst.op.param(k)
            if spec is not None and k not in inst.arg_spans and (_whole(v) or _wholes(v) and v) \
                    and not is_default(v, spec.default):
                out.add(k)
        return out

    def _no_shape_reads(self, inst, env: dict) -> None:
        """After the loop, an argument the spec computes from a tensor's shape (`h.shape[1] * 2`) has the
        value of the passes that ran: no Python here would follow it."""
        for span in inst.arg_spans.values():
            e = self.exprs.get((span.start, span.end))
            if e is None or isinstance(e, _STATEMENTS):
                continue   # a block made from a repeat's body (frontend/bodyblocks.py): its arguments are parameters
            if names_of(e) - set(env) or names_of(e) & self.bound:   # env: the parameters and loop variables
                # a tensor's shape, or a loop variable after its loop (its last item, which may hide a parameter)
                raise NotLoopable(f"`{py_text(e, str) if _spelled(e) else 'an argument'}` reads a value the loop changes")

    def _flag_keeps(self, inst, x: TensorType, args: dict, key: str, dims: list) -> bool:
        """Whether a flag the loop gives (`bias=not bn`) makes the same sizes either way."""
        if not isinstance(args[key], bool):
            return False
        try:
            return infer_layer(self.sizes, inst, x, dict(args, **{key: not args[key]}), inst.op.name)[1] == dims
        except NotLoopable:
            return False

    def _block(self, node, inst, given: dict, state: State) -> tuple[str, list]:
        """A block's constructor, the input sizes its class takes written from the running ones, and its
        result's dimensions, from its graph's."""
        sig = self.w.gen.class_for(inst.graph).signature
        taken = {s[0] for s in sig if isinstance(s[0], InDim)}
        dims = block_result(self.sizes, inst, state.dims, lambda p: self._block_argument(inst, p, given), taken,
                            self.w.gen.result_form(inst.graph))
        fed = {}
        for key, name, *_ in sig:
            if isinstance(key, InDim):
                if not 1 <= key.index <= len(state.dims):
                    raise NotLoopable("a block in it reads its batch size")
                fed[name] = Source(self.sizes.text(state.dims[key.index - 1]))
        names = {s[0]: s[1] for s in sig}
        return self.w._block_ctor(inst, {names[k]: v for k, v in given.items() if k in names} | fed), dims

    def _argument(self, v, text):
        """A layer's argument as its shape rule reads it: sizes keep the polynomial of what they are written
        as (`width`, `hidden`), one per item of a list the loop gives."""
        if text is None:
            if isinstance(v, Size) and not v.expr.is_const():
                return Size(plain(v), self.sizes.of_ir(v))
            return type(v)(self._argument(x, None) for x in v) if isinstance(v, (list, tuple)) else v
        if _whole(v):
            return Size(plain(v), self.sizes.given(str(text), v))
        if _wholes(v):
            base = str(text) if SIMPLE.fullmatch(str(text)) else f"({text})"
            items = self.items.get(str(text)) or [f"{base}[{i}]" for i in range(len(v))]
            return type(v)(plain(x) if t.isdigit() else Size(plain(x), self.sizes.given(t, x)) for t, x in zip(items, v))
        return v

    def _block_argument(self, inst, p: str, given: dict):
        v = inst.args.get(p)
        if p in given and _whole(v):
            return self.sizes.given(str(given[p]), v)
        if p not in given and isinstance(v, int) and not isinstance(v, bool):
            return self.sizes.of_ir(v)
        return poison(f"`{inst.graph.name}` makes a size from `{p}`, which is not a whole number")

    def _written(self, v) -> str:
        """An inferred argument as Python."""
        if isinstance(v, (int, Sym)) and not isinstance(v, bool):
            return self.sizes.text(self.sizes.poly(v))
        if isinstance(v, (list, tuple)):
            inner = ", ".join(self._written(x) for x in v)
            return f"[{inner}]" if isinstance(v, list) else f"({inner}{',' if len(v) == 1 else ''})"
        return self.printer.value(v)

    def _follow(self, node, dims: list, state: State) -> None:
        """The running value's dimensions after an element; each must give, in this pass, the size the
        IR has (else the text would be wrong for this list)."""
        t = node.outputs[0] if len(node.outputs) == 1 else None
        if t is None or t.rank < 2 or len(dims) != t.rank - 1:
            raise NotLoopable("an element's result has no channel dimension to follow")
        values = [_known(d) for d in t.shape[1:]]
        for p, v in zip(dims, values):
            if v is not None and poisoned(p) is None and self.sizes.value(p) != v:
                raise NotLoopable("a size it follows does not come out as dslc computed it")
        state.dims, state.values = dims, values

    def _symbolic(self, state: State) -> None:
        """From here on the sizes may differ for other lists: each IR size becomes an atom."""
        state.dims = [self.sizes.of_ir(d) for d in state.dims]
        state.dependent = True

    def _given(self, inst, env: dict) -> dict:
        """The arguments whose expressions read a list or a loop variable, as those expressions."""
        out = {}
        for key, span in inst.arg_spans.items():
            e = self.exprs.get((span.start, span.end))
            if e is None or not names_of(e) & self._live_names(env):
                continue
            if _listed_alike(py_value(e, env)) != _listed_alike(inst.args[key]):
                raise NotLoopable(f"`{py_text(e, str)}` does not give the argument it gave")
            out[key] = Source(py_text(e, self.name))
            if isinstance(e, (ast.ListExpr, ast.TupleExpr)):   # `[1, k]`: its items' texts size the result
                self.items[out[key]] = [py_text(x, self.name) for x in e.items]
        return out

    def _live_names(self, env: dict) -> set:
        """Names whose values the class would otherwise bake: lists, flags, strings, loop variables."""
        fixed = {p for p, v in self.graph.params.items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
        return fixed | (set(env) - set(self.graph.params))

    def name(self, n: str) -> str:
        if n in self.loop_names:
            return self.loop_names[n]
        if n in self.graph.params:
            self.live.add(n)
            self.w.used_params.add(n)
            return self.w.param_names[n]
        raise NotLoopable(f"it reads `{n}`, which is neither a parameter nor a loop variable")

    def list_loop(self, loop, env: dict, state: State) -> list:
        stmt = loop.stmt
        if any(n not in self.graph.nodes for p in loop.passes for n in p):
            raise NotLoopable("optimization passes changed the layers it made")
        if isinstance(stmt, ast.RepeatStmt):   # an unrolled `repeat depth`: `for _ in range(depth):`
            self._reads(stmt.count, env)
            head, names = f"for _ in range({py_text(stmt.count, self.name)}):", ()
            self.counts.append(loop.guard)
        else:
            head, names = self._loop_head(stmt.names, py_text(stmt.iterable, self.name)), stmt.names
        _unpacks(names, loop.items)
        lines = self.flush(state)
        state.dependent = True
        self.bound -= set(names)   # bound again while its passes run
        body = None
        for item, made in zip(loop.items, loop.passes):
            inner = dict(env, **_bound(names, item))
            cursor = list(made)
            tree = self.body(stmt.body, inner, state, cursor) + self.flush(state)
            if cursor:
                raise NotLoopable("a pass makes layers its statements do not account for")
            body = merge(body, tree)
        self.bound |= set(names)   # read after the loop, a name it bound is its last item
        return lines + [Compound(head, body)]

    def _loop_head(self, names: tuple, iterable: str) -> str:
        for n in names:
            self.loop_names.setdefault(n, self.w.locals.claim(n))
        return f"for {', '.join(self.loop_names[n] for n in names)} in {iterable}:"

    def flush(self, state: State) -> list:
        """`in_channels, size = width, size // 2`: the running variables set to the running value's
        dimensions (an Assign, written by `finish` with the variables a line reads)."""
        if not state.dependent:
            self._symbolic(state)
        if self.vars is None:
            self.vars = self._variables(state)
        targets: dict = {}
        for j, var in enumerate(self.vars):
            p = state.dims[j] if j < len(state.dims) else poison("the loop changes its running value's rank")
            if var is not None and var in targets and targets[var] != p:
                targets[var] = poison(SQUARE)
            elif var is not None:
                targets.setdefault(var, p)
        self.sizes.values.update({var: self.sizes.value(p) for var, p in targets.items()})
        state.dims = [self._flushed(j, p, targets) for j, p in enumerate(state.dims)]
        return [Assign({var: p for var, p in targets.items() if p != atom(var)})]

    def _flushed(self, j: int, p, targets: dict):
        """Dimension j after a flush: its running variable (what it was, for a run-time size)."""
        if j >= len(self.vars):
            return poison("the loop changes its running value's rank")
        var = self.vars[j]
        return p if var is None else targets[var] if poisoned(targets[var]) else atom(var)

    def _variables(self, state: State) -> list:
        """The running variables by dimension: torch's name for the first size known when the class is
        built (dimension 1, or a sequence's features), then `size` for the sizes after it where they
        start equal (and `square`), else `height, width` (`length`; `depth, height, width`); None for a
        run-time size."""
        static = [j for j, v in enumerate(state.values) if v is not None]
        if not static:
            raise NotLoopable("its running value has no size to follow")
        first = self.sizes.text(state.dims[static[0]])
        word = "in_features" if static[0] == len(state.dims) - 1 else "in_channels"   # torch's names for it
        self.carried = first if first in set(self.w.pseudo.values()) else self.w.locals.claim(word)
        self.sizes.loopy.add(self.carried)
        rest = static[1:]
        if self.square and len(rest) > 1 and all(state.dims[j] == state.dims[rest[0]] for j in rest):
            names = ["size"] * len(rest)
        else:
            names = list(SPATIAL.get(len(rest), [f"size{i}" for i in range(len(rest))]))
        out = [None] * len(state.dims)
        out[static[0]] = self.carried
        for j, name in zip(rest, names):
            out[j] = VAR + name
        return out

    def finish(self, tree: list) -> list:
        """The tree with its assignments written: only the running variables a line reads (`size` only
        where a later layer's size is computed from it), named now."""
        found, assigns = _walk(tree)
        live = {v for v in found if v.startswith(VAR)} | ({self.carried} if self.carried else set())
        grown = True
        while grown:
            reads = {a.name for x in assigns for var, p in x.pairs.items() if var in live for a in p.atoms()
                     if isinstance(a, Param)}
            grown = bool({r for r in reads if r.startswith(VAR)} - live)
            live |= {r for r in reads if r.startswith(VAR)}
        ordered = list(self.vars or ()) + sorted(v for v in live if v not in (self.vars or ()))   # a sibling's too
        self._name([v for v in dict.fromkeys(ordered) if v in live and v and v.startswith(VAR)])
        return self._resolved(tree, live)

    def _name(self, spatial: list) -> None:
        """Python names for the spatial variables a line reads: `height, width`, else `h, w` where one is
        taken (a loop variable `width`), else numbered."""
        for spelling in (0, 1, None):
            names = [SPELLINGS.get(v[1:], (v[1:],) * 2)[spelling or 0] for v in spatial]
            if spelling is None or not set(names) & self.w.locals.taken:
                self.names.update({v: self.w.locals.claim(n) for v, n in zip(spatial, names)})
                return

    def _resolved(self, tree: list | None, live: set) -> list | None:
        if tree is None:
            return None
        out = []
        for item in tree:
            if isinstance(item, Compound):
                out.append(Compound(self._named(item.header), self._resolved(item.body, live)))
            elif isinstance(item, Assign):
                pairs = [(self._named(v), self._named(self.sizes.text(p))) for v, p in item.pairs.items() if v in live]
                pairs = [(v, text) for v, text in pairs if v != text]
                if pairs:
                    out.append(f"{', '.join(v for v, _ in pairs)} = {', '.join(t for _, t in pairs)}")
            else:
                out.append(self._named(item))
        return out

    def _named(self, text: str) -> str:
        def name(m) -> str:
            if m.group(0) not in self.names:
                raise NotLoopable(f"`{m.group(0)[1:]}` is read where no pass sets it")
            return self.names[m.group(0)]
        return re.sub(VAR + r"\w+", name, text)

    def running(self) -> set:
        """The running variables' Python names."""
        return ({self.carried} if self.carried else set()) | set(self.names.values())

    def body(self, stmts: tuple, env: dict, state: State, cursor: list) -> list:
        out = []
        for s in stmts:
            if isinstance(s, ast.ExprStmt) or _running(s):
                for call in _calls(s.value)[1 if isinstance(s, ast.AssignStmt) else 0:]:
                    out += self.element(self._next(call, cursor), env, state)
            elif isinstance(s, ast.IfStmt):
                out += self.branch(s, env, state, cursor)
            elif isinstance(s, (ast.RepeatStmt, ast.ForStmt)):
                out += self.inner_loop(s, env, state, cursor)
            else:
                raise NotLoopable("its body has statements other than layers, `if`, `repeat` and `for`")
        return out

    def _next(self, call, cursor: list):
        node = self.graph.nodes[cursor.pop(0)] if cursor else None
        if node is None or node.span is None or (node.span.start, node.span.end) != (call.span.start, call.span.end):
            raise NotLoopable("its layers are not one per call")
        return node

    def branch(self, s: ast.IfStmt, env: dict, state: State, cursor: list) -> list:
        self._reads(s.cond, env)
        out = self.flush(state)
        taken = bool(py_value(s.cond, env))
        arms = [(f"if {py_text(s.cond, self.name)}:", s.body, taken), ("else:", s.orelse, not taken)]
        for header, stmts, ran in arms:
            if header == "else:" and not stmts:
                break
            tree = (self.body(stmts, env, state, cursor) + self.flush(state)) if ran else None if stmts else []
            out.append(Compound(header, tree))
        return out

    def inner_loop(self, s, env: dict, state: State, cursor: list) -> list:
        head = s.iterable if isinstance(s, ast.ForStmt) else s.count
        if isinstance(head, ast.AsName):
            raise NotLoopable("a named loop inside it is a module list")
        self._reads(head, env)
        out = self.flush(state)
        value = py_value(head, env)
        if isinstance(s, ast.RepeatStmt):
            header, items, names = f"for _ in range({py_text(head, self.name)}):", [()] * int(value), ()
        else:
            header, items, names = self._loop_head(s.names, py_text(head, self.name)), list(value), s.names
            _unpacks(names, items)
        body = None
        self.bound -= set(names)   # an inner loop's names are its own again in each pass of the outer one
        for item in items:
            tree = self.body(s.body, dict(env, **_bound(names, item)), state, cursor) + self.flush(state)
            body = merge(body, tree)
        if isinstance(s, ast.RepeatStmt):   # its count's guards (one per value it ran with) hold for any count
            self.counts += [g for g in self.graph.guards if getattr(g, "loop", None) == s.span]
        self.bound |= set(names)
        return out + [Compound(header, body)]

    def _reads(self, e, env: dict) -> None:
        missing = names_of(e) - set(env)
        if missing:
            raise NotLoopable(f"it decides on `{sorted(missing)[0]}`, which is not a parameter or loop variable")


def _running(s) -> bool:
    """`h = h -> Block(dim)`: layers applied to the running value (the graph is a chain), as the
    one-block-per-pass body of a `repeat` is written (frontend/bodyblocks.py)."""
    return isinstance(s, ast.AssignStmt) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name) \
        and isinstance(s.value, ast.Pipe) and isinstance(s.value.stages[0], ast.Name) \
        and s.value.stages[0].id == s.targets[0].id


def _calls(e) -> list:
    stages = e.stages if isinstance(e, ast.Pipe) else (e,)
    if not all(isinstance(c, ast.Call) for c in stages[1 if isinstance(stages[0], ast.Name) else 0:]):
        raise NotLoopable("a statement in it is more than layer calls")
    return list(stages)


def _unpacks(names: tuple, items) -> None:
    if len(names) > 1 and any(not isinstance(i, (list, tuple)) or len(i) != len(names) for i in items):
        raise NotLoopable("its items do not unpack into its loop variables")


def _bound(names: tuple, item) -> dict:
    if len(names) == 1:
        return {names[0]: _plain(item)}
    return {n: _plain(v) for n, v in zip(names, item)}


def _walk(tree: list | None) -> tuple[set, list]:
    """The running variables the tree's lines and headers read, and its assignments."""
    found, assigns = set(), []
    for item in tree or ():
        if isinstance(item, Compound):
            inner, more = _walk(item.body)
            found |= inner | set(re.findall(VAR + r"\w+", item.header))
            assigns += more
        elif isinstance(item, Assign):
            assigns.append(item)
        else:
            found |= set(re.findall(VAR + r"\w+", item))
    return found, assigns


def _listed_alike(v):
    """A value with its tuples as lists: `[1, k]` gives a kernel the IR holds as `(1, k)`."""
    return [_listed_alike(x) for x in v] if isinstance(v, (list, tuple)) else _plain(v)


_STATEMENTS = typing.get_args(ast.Stmt)


def _spelled(e) -> bool:
    try:
        py_text(e, str)
        return True
    except NotLoopable:
        return False


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _wholes(v) -> bool:
    return isinstance(v, (list, tuple)) and all(_whole(x) for x in v)


def _known(d) -> int | None:
    """A size's number; None for a run-time size."""
    return None if isinstance(d, Sym) else plain(d)


def _plain(v):
    if isinstance(v, (list, tuple)):
        return type(v)(_plain(x) for x in v)
    return plain(v) if isinstance(v, int) and not isinstance(v, bool) else v


__all__ = ["Compound", "NotLoopable", "NotSquare", "Source", "State", "expressions", "merge", "names_of", "py_text",
           "py_value", "render"]
