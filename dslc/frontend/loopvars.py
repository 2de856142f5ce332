"""What one pass of a loop can hand to the next: read from the loop body's AST, checked on its values.

A loop kept as a module list whose count stays a constructor argument claims that every pass
from some index on makes the same element, however many passes there are. Those passes start
from the same values when
- the loop variable of `for i in range(n)` only meets comparisons with constants that come out
  the same from that index on (`stride if i == 0 else 1` decides alike from i = 1), and
- the names a pass reads before assigning them, and that the body assigns (`s = s * 2`), hold
  the same values at the start of each of those passes (tensors aside: the running value is
  checked by the list's own rules, frontend/containers.py).
`index_threshold` and `carried_names` read the first from the AST; `snapshot` and
`settled_from` check the second on the values each pass starts from.
"""
from __future__ import annotations

import functools
from dataclasses import fields

from ..ir.keys import value_key
from ..ir.values import TensorValue
from . import ast
from .templates import pieces

_COMPARISONS = {"==", "!=", "<", "<=", ">", ">="}
_FLIPPED = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "==", "!=": "!="}


def index_threshold(body: tuple, name: str) -> int | None:
    """The loop index from which every decision `body` makes on its loop variable `name` comes out
    the same; None when the body uses `name` otherwise (computes with it, indexes by it, rebinds it)."""
    uses, decided, threshold = 0, 0, 0
    for node in ast_nodes(body):
        if isinstance(node, ast.Name) and node.id == name:
            uses += 1
        elif isinstance(node, ast.BinOp) and node.op in _COMPARISONS:
            t = _decided_from(node, name)
            if t is not None:
                decided, threshold = decided + 1, max(threshold, t)
        elif isinstance(node, ast.AsName) and node.template:
            # `as "layer{i + 1}"`: a name the generated list writes for any count (containers.py)
            decided += sum(1 for p in pieces(node) if _offset_of(p, name) is not None)
        elif name in _bound_by(node):
            return None
    return threshold if uses == decided else None


def uses_any(body: tuple, names) -> bool:
    return any(isinstance(n, ast.Name) and n.id in names for n in ast_nodes(body))


def carried_names(body: tuple) -> set:
    """Names a pass may read before it assigns them and that the body assigns: what a pass can
    hand to the next one."""
    exposed, _ = _exposed(body, set())
    return exposed & {n for node in ast_nodes(body) for n in _bound_by(node)}


def snapshot(scope: dict, names) -> tuple:
    """The values of `names` a pass starts from, tensors left out, comparable across passes."""
    out = []
    for n in sorted(names):
        v = scope.get(n)
        if not _tensors(v):
            out.append((n, value_key(v)))
    return tuple(out)


def settled_from(snapshots: list) -> int:
    """The first pass from which every pass started from the same values (the last snapshot is the
    values after the last pass, what one more pass would start from)."""
    u = len(snapshots) - 1
    while u > 0 and snapshots[u - 1] == snapshots[-1]:
        u -= 1
    return u


def _offset_of(e, name: str) -> int | None:
    """c for `name`, `name + c`, `c + name` or `name - c` with an int constant c, else None."""
    if isinstance(e, ast.Name) and e.id == name:
        return 0
    if not isinstance(e, ast.BinOp) or e.op not in ("+", "-"):
        return None
    pair = (e.left, e.right) if e.op == "-" or isinstance(e.left, ast.Name) else (e.right, e.left)
    var, c = pair
    if not (isinstance(var, ast.Name) and var.id == name and isinstance(c, ast.Const)) or \
            isinstance(c.value, bool) or not isinstance(c.value, int):
        return None
    return -c.value if e.op == "-" else c.value


def _decided_from(node: ast.BinOp, name: str) -> int | None:
    """For `i OP c` (or `c OP i`) with an int constant c: the first i from which it comes out the same."""
    op, other = node.op, None
    if isinstance(node.left, ast.Name) and node.left.id == name:
        other = node.right
    elif isinstance(node.right, ast.Name) and node.right.id == name:
        op, other = _FLIPPED[op], node.left
    if not isinstance(other, ast.Const) or isinstance(other.value, bool) or not isinstance(other.value, int):
        return None
    c = other.value
    return max(0, c) if op in ("<", ">=") else max(0, c + 1)


def _exposed(stmts: tuple, assigned: set) -> tuple[set, set]:
    """(names read before they are surely assigned, names surely assigned after `stmts`)."""
    assigned, exposed = set(assigned), set()
    for s in stmts:
        if isinstance(s, ast.AssignStmt):
            exposed |= names_in(s.value) - assigned
            assigned |= _bound_by(s)
        elif isinstance(s, ast.IfStmt):
            exposed |= names_in(s.cond) - assigned
            e1, a1 = _exposed(s.body, assigned)
            e2, a2 = _exposed(s.orelse, assigned)
            exposed |= e1 | e2
            assigned = a1 & a2
        elif isinstance(s, (ast.ForStmt, ast.RepeatStmt)):   # may run no pass: assigns nothing surely
            head = s.iterable if isinstance(s, ast.ForStmt) else s.count
            exposed |= names_in(head) - assigned
            exposed |= _exposed(s.body, assigned | _bound_by(s))[0]
        else:
            exposed |= names_in(s) - assigned
    return exposed, assigned


def _bound_by(node) -> set:
    """The names a statement binds: assignment targets, a `for`'s loop variables."""
    if isinstance(node, ast.AssignStmt):
        return {n.id for t in node.targets for n in ast_nodes(t) if isinstance(n, ast.Name)}
    if isinstance(node, ast.ForStmt):
        return set(node.names)
    return set()


def names_in(x) -> set:
    """Every name a syntax tree (or a tuple of them) mentions, template pieces included."""
    return {n.id for n in ast_nodes(x) if isinstance(n, ast.Name)}


def ast_nodes(x) -> list:
    """Every AST node in `x` (a node or a tuple of them), depth first. A walk with a stack of its
    own: a loop's body is walked on every evaluation of the loop (the language server's checks
    evaluate a model on each edit), and recursive generators cost a frame per node and level."""
    out, stack = [], [x]
    while stack:
        x = stack.pop()
        if isinstance(x, tuple):
            stack.extend(reversed(x))
        elif isinstance(x, ast.Node):
            out.append(x)
            if isinstance(x, ast.AsName) and x.template:
                stack.append(tuple(p for p in pieces(x) if not isinstance(p, str)))
            stack.extend([v for name in reversed(_field_names(type(x))) if isinstance(v := getattr(x, name), _WALKED)])
    return out


_WALKED = (tuple, ast.Node)   # what may hold nodes: a span, a name or a number holds none


@functools.cache
def _field_names(cls) -> tuple:
    return tuple(f.name for f in fields(cls))


def _tensors(v) -> bool:
    if isinstance(v, tuple):
        return bool(v) and all(_tensors(x) for x in v)
    return isinstance(v, TensorValue)
