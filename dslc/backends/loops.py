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
its unrolled form. A layer's inferred argument (`in_channels`) reads one running variable that
follows the running value's dimension 1, set where a layer changes it; an argument computed from
anything else the loop changes (a flattened size after strided convolutions) is not expressible
that way, and the class stays unrolled (NotLoopable says why).
"""
from __future__ import annotations

import operator
import re
import typing
from dataclasses import dataclass, fields

from ..frontend import ast
from ..ir.dims import InDim, plain
from ..ir.pyliteral import Source
from .pyformat import is_default
from .variants import WIDTH  # the generated code's line length (120, torchvision's)


class NotLoopable(Exception):
    """Why a list loop is written unrolled."""


@dataclass
class Compound:
    """`for ...:` / `if ...:` / `else:` and its body; body None where no pass ran it."""
    header: str
    body: list | None


@dataclass
class State:
    """The running value's dimension 1 as Python (`text`) and as the number it is here (`value`);
    `dependent`: set once it may differ for other values of a list (it is then never read from the IR)."""
    text: str
    value: int
    dependent: bool = False
    rank: int = 0


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
        else:
            raise NotLoopable("its passes make different layers")
    return out


def render(tree: list, indent: str = "    ", depth: int = 0) -> list[str]:
    out = []
    for item in _joined(tree, len(indent) * depth):
        if isinstance(item, Compound):
            if item.body is None:
                raise NotLoopable(f"no pass of this file ran the body of `{item.header}`")
            out.append(indent * depth + item.header)
            out += render(item.body, indent, depth + 1) or [indent * (depth + 1) + "pass"]
        else:
            out.append(indent * depth + item)
    return out


def constructor(body: list[str], carried: str | None) -> list[str]:
    """The constructor's lines around the rendered loop: the shorter of torchvision's `layers = [...]`
    ... `super().__init__(*layers, last)` and nn.Sequential's own `super().__init__(first)` ...
    `self.append(x)` (the same modules, keyed 0, 1, 2, ... either way); the first on a tie."""
    listed, own = _listed(body, carried), _own(body)
    return own if len(own) < len(listed) else listed


def reuse_argument(body: list[str], carried: str | None, arguments) -> tuple[list[str], str | None]:
    """`in_channels = 32` rather than a second `in_channels2 = 32`: the running variable takes the name
    of the constructor argument it was numbered after when no line from its first value on reads that
    argument (torchvision's make_layers reassigns its `in_channels` so)."""
    for name in arguments:
        if not carried or not carried.startswith(name) or not carried[len(name):].isdigit():
            continue
        start = next((i for i, line in enumerate(body) if line.startswith(f"{carried} = ")), None)
        word = re.compile(rf"\b{re.escape(name)}\b")
        if start is not None and not any(word.search(line) for line in body[start:]):
            own = re.compile(rf"\b{re.escape(carried)}\b")
            return [own.sub(name, line) for line in body], name
    return body, carried


def _listed(body: list[str], carried: str | None) -> list[str]:
    head, tail = _run(body[:1]), _run(body[-1:])
    lines = body[1:] if head is not None else body
    first = f"[{', '.join(head)}]" if head is not None else "[]"
    if lines and carried and lines[0].startswith(f"{carried} = "):
        out = [f"layers, {carried} = {first}, {lines[0][len(carried) + 3:]}"]
        lines = lines[1:]
    else:
        out = [f"layers = {first}"]
    end = f"super().__init__(*layers, {', '.join(tail)})" if tail is not None else ""
    if tail is not None and lines and 8 + len(end) <= WIDTH:
        return out + lines[:-1] + [end]
    return out + lines + ["super().__init__(*layers)"]


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
    raise NotLoopable("it computes with an expression a Python loop does not spell here")


def _operand(e, name) -> str:
    text = py_text(e, name)
    return f"({text})" if isinstance(e, (ast.BinOp, ast.UnaryOp)) else text


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


def fed_dim(v, state: State) -> bool:
    """Whether an inferred argument is the running value's dimension 1 that `state` follows."""
    return not isinstance(v, bool) and isinstance(v, int) and plain(v) == state.value


class Template:
    """The constructor lines of an nn.Sequential graph with list loops (see the module's doc), written
    through the class writer `w` (its printer, constructors and names)."""

    def __init__(self, w, printer):
        self.w, self.graph, self.printer = w, w.graph, printer
        if self.graph.decl is None:
            raise NotLoopable("it has no declaration to read its statements from")
        self.exprs = expressions(self.graph.decl.body, {})
        self.loop_names: dict = {}      # loop variable -> its Python name
        self.carried: str | None = None
        self.live: set = set()          # the parameters the lines read
        self.counts: list = []          # the guards of the repeat counts written as loops
        self.bound: set = set()         # the names the loops walked so far bound

    def lines(self, chain: list) -> list[str]:
        top = {n: loop for loop in self.graph.list_loops for p in loop.passes for n in p}
        t = self.graph.type_of(self.graph.nodes[chain[0]].inputs[0])
        state = State(self.printer.value(t.shape[1]) if t.rank >= 2 else "", plain(t.shape[1]) if t.rank >= 2 else 0,
                      rank=t.rank)
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
        dimension 1 after it."""
        inst = self.graph.instances.get(node.instance) if node.instance else None
        if inst is None or inst.folded is not None or inst.inits or inst.user_name or node.kind not in ("op", "call"):
            raise NotLoopable("an element is not a plain layer or block")
        given = self._given(inst, env)
        if state.dependent:
            self._no_shape_reads(inst, env)
        if inst.kind == "layer":
            fed = {k: v for k, v in inst.args.items() if inst.op.param(k) is None}
            fed.update(self._optional_inferred(inst, state))
            text = self.w._ctor(inst, self.printer, dict(inst.args, **given, **self._fed(fed, state)))
        else:
            sig = self.w.gen.class_for(inst.graph).signature
            dims = {s[1]: s[0] for s in sig if isinstance(s[0], InDim)}
            fed = {name: v for name, v in self.w._fed_arguments(inst) if name in dims}
            if state.dependent and any(dims[name].index != 1 for name in fed):
                raise NotLoopable("a block in it reads sizes of its input that the loop changes")
            names = {s[0]: s[1] for s in sig}
            text = self.w._block_ctor(inst, {names[k]: v for k, v in given.items() if k in names} |
                                      self._fed(fed, state))
        self._after(node, given, inst, fed, state)
        return [f"layers.append({text})"]

    def _no_shape_reads(self, inst, env: dict) -> None:
        """After the loop, an argument the spec computes from a tensor's shape (`h.shape[1] * 2`) has the
        value of the passes that ran: no Python here would follow it."""
        for span in inst.arg_spans.values():
            e = self.exprs.get((span.start, span.end))
            if isinstance(e, _STATEMENTS):
                continue   # a block made from a repeat's body (frontend/bodyblocks.py): its arguments are parameters
            if e is None:
                continue
            if names_of(e) - set(self.graph.params) - set(env) or names_of(e) & self.bound:
                # a tensor's shape, or a loop variable after its loop (its last item, which may hide a parameter)
                raise NotLoopable(f"`{py_text(e, str) if _spelled(e) else 'an argument'}` reads a value the loop changes")

    def _optional_inferred(self, inst, state: State) -> dict:
        """Arguments the spec left out that the layer took from its input though it could be given one
        (LayerNorm's `normalized_shape`): after the loop they follow the running size, which is theirs
        only where the value has one dimension besides the batch; elsewhere the loop unrolls."""
        out: dict = {}
        if not state.dependent:
            return out
        for k, v in inst.args.items():
            spec = inst.op.param(k)
            if spec is None or k in inst.arg_spans or not _sized(v) or is_default(v, spec.default):
                continue
            if state.rank != 2:
                raise NotLoopable(f"`{inst.op.name}` takes its `{k}` from its input's sizes, which the loop changes")
            out[k] = v
        return out

    def _given(self, inst, env: dict) -> dict:
        """The arguments whose expressions read a list or a loop variable, as those expressions."""
        out = {}
        for key, span in inst.arg_spans.items():
            e = self.exprs.get((span.start, span.end))
            if e is None or not names_of(e) & self._live_names(env):
                continue
            if _plain(py_value(e, env)) != _plain(inst.args[key]):
                raise NotLoopable(f"`{py_text(e, str)}` does not give the argument it gave")
            out[key] = Source(py_text(e, self.name))
        return out

    def _live_names(self, env: dict) -> set:
        """Names whose values the class would otherwise bake: lists, flags, strings, loop variables."""
        fixed = {p for p, v in self.graph.params.items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
        return fixed | (set(env) - set(self.graph.params))

    def _fed(self, fed: dict, state: State) -> dict:
        """Inferred arguments as the running variable; before any list is read, as the IR has them."""
        if not state.dependent:
            return {}
        for k, v in fed.items():
            if not fed_dim(v, state):
                raise NotLoopable(f"an inferred argument ({k}) is computed from sizes the loop changes")
        return {k: Source(state.text) for k in fed}

    def _after(self, node, given: dict, inst, fed: dict, state: State) -> None:
        t = node.outputs[0] if len(node.outputs) == 1 else None
        if t is None or t.rank < 2:
            if state.dependent or given:
                raise NotLoopable("an element's result has no channel dimension to follow")
            return
        value, state.rank = plain(t.shape[1]), t.rank
        state.dependent = state.dependent or bool(given)
        if not state.dependent:   # nothing so far depends on a list: the IR's size is right
            state.text, state.value = self.printer.value(t.shape[1]), value
            return
        text = self._size_source(inst, given, fed, value)
        if text is None and value != state.value:
            what = inst.op.name if inst.kind == "layer" else inst.graph.name
            raise NotLoopable(f"`{what}` makes a size ({value}) from sizes the loop changes")
        state.text, state.value = text or state.text, value

    def _size_source(self, inst, given: dict, fed: dict, value: int) -> str | None:
        """The argument that gives an element's channels (`width` of `Conv2d(width, 3)`): one that reads
        the loop, else, for an element with inferred sizes, one that does not; None where none equals
        them. A layer's is its first parameter (torch's `out_channels`, `out_features`) where that
        equals them; two different candidates otherwise are NotLoopable."""
        found = {k: str(v) for k, v in given.items() if _is_size(inst.args[k]) and plain(inst.args[k]) == value}
        if not found and fed:
            found = {k: self.printer.value(v) for k, v in inst.args.items()
                     if k not in fed and _is_size(v) and plain(v) == value}
        first = inst.op.params[0].name if inst.kind == "layer" and inst.op.params else None
        if first in found:
            return found[first]
        texts = set(found.values())
        if len(texts) > 1:
            raise NotLoopable(f"arguments {' and '.join(sorted(texts))} could each give its channels")
        return texts.pop() if texts else None

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
        """`in_channels = width`: the running variable set to the running value's dimension 1."""
        if self.carried is None:
            taken = set(self.w.pseudo.values())
            word = "in_features" if state.rank == 2 else "in_channels"   # torch's names for it
            self.carried = state.text if state.text in taken else self.w.locals.claim(word)
        if state.text == self.carried:
            return []
        line = f"{self.carried} = {state.text}"
        state.text = self.carried
        return [line]

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


_STATEMENTS = typing.get_args(ast.Stmt)


def _spelled(e) -> bool:
    try:
        py_text(e, str)
        return True
    except NotLoopable:
        return False


def _sized(v) -> bool:
    """An int size, or a tuple or list of them (`normalized_shape`)."""
    if isinstance(v, (list, tuple)):
        return bool(v) and all(_is_size(x) for x in v)
    return _is_size(v)


def _is_size(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _plain(v):
    if isinstance(v, (list, tuple)):
        return type(v)(_plain(x) for x in v)
    return plain(v) if isinstance(v, int) and not isinstance(v, bool) else v


__all__ = ["Compound", "NotLoopable", "Source", "State", "expressions", "merge", "names_of", "py_text",
           "py_value", "render"]
