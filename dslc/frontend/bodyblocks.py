"""A `repeat` whose body spells out several layers becomes a repeat of one block made from that body.

    repeat depth {
        h = h + (h -> LayerNorm() -> CausalSelfAttention(dim, heads))
        h = h + (h -> LayerNorm() -> Linear(4 * dim) -> GELU() -> Linear(dim))
    }

runs as `repeat depth { h = h -> GPTBlock(dim, heads) }` with `block GPTBlock(dim: int, heads: int)
{ input h; <the body>; output h }`, so the generated module keeps the passes as an nn.ModuleList of one
class, its count a live argument (`self.gpt_blocks = nn.ModuleList([GPTBlock(dim, heads) for _ in
range(depth)])`), as nanoGPT writes its Block, instead of unrolling `depth` copies of the body.

Only a body that clearly is one: every statement assigns the same running tensor (`h = ...`), it makes
two layers or more, names none of them, and reads nothing from its model but that tensor and the
model's parameters of a plain type (which the block takes, in the order the model declares them).
Anything else (a loop variable, another tensor, a named layer) runs as written.
"""
from __future__ import annotations

import dataclasses

from ..ir.values import TensorValue
from . import ast
from .loopvars import ast_nodes, names_in
from .sites import call_sites

PLAIN_TYPES = ("int", "float", "bool", "str")


@dataclasses.dataclass(frozen=True)
class BodyBlockDecl(ast.BlockDecl):
    """A block made of a repeat's body; `repeat_of` names the model or block it repeats in."""
    repeat_of: str = ""


def body_block(stmt: ast.RepeatStmt, decl, scope: dict, unit, taken: set) -> tuple | None:
    """(the repeat rewritten to apply one block per pass, that block's declaration), or None. `taken`:
    the names of the blocks made so far, to which this one's is added."""
    target = _running_name(stmt.body)
    if target is None or not isinstance(scope.get(target), TensorValue) or \
            any(isinstance(n, ast.AsName) for n in ast_nodes(stmt.body)):   # `as`: refused on every pass as it is
        return None
    params = _block_params(stmt.body, target, decl, scope)
    if params is None:
        return None
    block = BodyBlockDecl(stmt.span, "", stmt.span, tuple(params),
                          (ast.InputStmt(stmt.span, target, stmt.span, None, None, None),) + stmt.body
                          + (ast.OutputStmt(stmt.span, (ast.Name(stmt.span, target),)),), repeat_of=decl.name)
    if len(call_sites(block, unit)) < 2:
        return None   # one layer a pass: the loop is already a list of it
    block = dataclasses.replace(block, name=_fresh_name(decl.name, unit, taken))
    call = ast.Call(stmt.span, ast.Name(stmt.span, block.name), tuple(ast.Name(stmt.span, p.name) for p in params), ())
    apply = ast.AssignStmt(stmt.span, (ast.Name(stmt.span, target),),
                           ast.Pipe(stmt.span, (ast.Name(stmt.span, target), call)))
    return dataclasses.replace(stmt, body=(apply,)), block


def _running_name(body) -> str | None:
    """The one name every statement of the body assigns (in a nested `repeat` or `if` too), or None."""
    names = _assigned(body)
    return names.pop() if names is not None and len(names) == 1 else None


def _assigned(body) -> set | None:
    names: set = set()
    for s in body:
        if isinstance(s, ast.AssignStmt) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name):
            names.add(s.targets[0].id)
            continue
        inner = [s.body] if isinstance(s, ast.RepeatStmt) else [s.body, s.orelse] if isinstance(s, ast.IfStmt) else None
        if inner is None:
            return None
        for arm in inner:
            got = _assigned(arm)
            if got is None:
                return None
            names |= got
    return names


def _block_params(body, target: str, decl, scope: dict) -> list | None:
    """The model's parameters the body reads, as the block's (its declared types); None where the body
    reads another value of the model (a local, a layer, a parameter without a plain type)."""
    declared = {p.name: p for p in decl.params}
    read = names_in(body) - {target}
    out = []
    for name in read:
        if name not in scope:
            continue   # a layer, block, function or constant of the program: the block sees it too
        p = declared.get(name)
        if p is None or p.type is None or p.type.name not in PLAIN_TYPES or p.type.arg is not None:
            return None
        out.append(ast.ParamDecl(p.span, p.name, p.type, None))
    order = list(declared)
    return sorted(out, key=lambda p: order.index(p.name))


def _fresh_name(model: str, unit, taken: set) -> str:
    base = model.lstrip("_") + "Block"
    name, n = base, 1
    while name in unit.decls or name in taken:
        n += 1
        name = f"{base}{n}"
    taken.add(name)
    return name
