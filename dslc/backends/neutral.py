"""Layer arguments that take a model's or block's str, bool or none parameter as it is (`mode=mode`,
`bias=bias`) and that no legal value of it changes the layer's output types: the generated class
passes the parameter through, as a person writes `nn.Upsample(scale_factor=2, mode=mode)`, instead
of baking the value and refusing every other.

A parameter is live so only where every read of it in the declaration is such an argument (one
an `if` reads, or another expression, keeps its guard), the layer has no `init=` and no folded
batch norm, and the generated code writes the value where the literal would be (checked by
writing the layer with each value). A block's argument is such an argument where the block's class
takes it live so itself (`Outer(3, mode)`; a repeat's body made a block passes the names it reads).
Values the op refuses (`mode="linear"` on a 4-d input) are refused by the class, with the spec line.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..frontend import ast
from ..frontend.loopvars import ast_nodes
from ..ir.dims import recording
from ..ir.pyliteral import Source, literal
from ..ops.ptypes import BOOL, OneOf, Optional, Str
from ..ops.registry import Bound
from .pyformat import is_default

SENTINEL = "__dslc_live__"   # the value as the code would print the parameter, for the comparisons


@dataclass
class LiveArgs:
    args: dict = field(default_factory=dict)    # (instance id, argument) -> the parameter it passes
    legal: dict = field(default_factory=dict)   # parameter -> the values every layer it reaches takes
    where: dict = field(default_factory=dict)   # parameter -> the span of its first argument


def choices(ptype) -> tuple | None:
    """Every value of a parameter type, or None where there are too many to list (an int, any string)."""
    if ptype is BOOL:
        return (False, True)
    if isinstance(ptype, Str):
        return ptype.choices or None
    if isinstance(ptype, Optional):
        inner = choices(ptype.inner)
        return None if inner is None else (None, *inner)
    if isinstance(ptype, OneOf):
        parts = [choices(o) for o in ptype.options]
        return None if any(p is None for p in parts) else tuple(dict.fromkeys(x for p in parts for x in p))
    return None


def find(writer) -> LiveArgs:
    """The live arguments of the class `writer` writes (a _ClassWriter: its graph, and `_rendered`)."""
    graph, out = writer.graph, LiveArgs()
    decl = graph.decl
    if not isinstance(decl, (ast.ModelDecl, ast.BlockDecl)):
        return out
    candidates = {p for p, v in graph.params.items() if v is None or isinstance(v, (bool, str))}
    if not _possible(graph, candidates):
        return out
    reads = _reads(decl, candidates - _bound(decl))
    uses: dict = {}    # parameter -> (instance, argument, its span), and the reads each stands for
    for inst in graph.instances.values():
        for key, span in inst.arg_spans.items():
            for p, spans in reads.items():
                if (span.start, span.end) in spans:
                    uses.setdefault(p, []).append(((inst, key, span), {(span.start, span.end)}))
                elif key == p and getattr(inst.graph, "decl", None) is not None and \
                        getattr(inst.graph.decl, "repeat_of", ""):   # a repeat's body made a block (bodyblocks.py)
                    uses.setdefault(p, []).append(((inst, key, span), _reads(inst.graph.decl, {p}).get(p, set())))
    for p, pairs in uses.items():
        if set().union(*(covered for _, covered in pairs)) != reads[p]:
            continue    # read somewhere else too (an `if`, an expression)
        found = [use for use, _ in pairs]
        legal = _legal(writer, p, found)
        if legal is not None and graph.params[p] in legal and len(legal) > 1:
            out.args |= {(inst.id, key): p for inst, key, _ in found}
            out.legal[p] = legal
            out.where[p] = min((s for _, _, s in found), key=lambda s: s.start)
    return out


def _possible(graph, candidates: set) -> bool:
    """Whether some layer argument with listed values, or some block argument, has a candidate's value
    (a quick test before the declaration is walked: most classes have none)."""
    values = [graph.params[p] for p in candidates]
    for inst in graph.instances.values():
        for key, v in inst.args.items():
            if any(type(v) is type(c) and v == c for c in values) and \
                    (inst.kind == "block" or inst.kind == "layer" and inst.op.param(key) is not None
                     and choices(inst.op.param(key).type) is not None):
                return True
    return False


def _reads(decl, names: set) -> dict:
    """Parameter -> the (start, end) of each place the declaration reads it."""
    out: dict = {}
    for n in ast_nodes(decl.body) + ast_nodes(decl.params):
        if isinstance(n, ast.Name) and n.id in names:
            out.setdefault(n.id, set()).add((n.span.start, n.span.end))
    return out


def _bound(decl) -> set:
    """Names the body binds (an assignment, a loop variable, `as`): a parameter's name there may not be it."""
    out = set()
    for n in ast_nodes(decl.body):
        if isinstance(n, ast.AssignStmt):
            out |= {t.id for t in n.targets if isinstance(t, ast.Name)}
        elif isinstance(n, ast.ForStmt):
            out |= set(n.names)
        elif isinstance(n, (ast.AsName, ast.InputStmt, ast.ParamStmt, ast.BufferStmt)):
            out.add(n.name)
    return out


def _legal(writer, p: str, found: list) -> tuple | None:
    """The values of `p` every layer or block it reaches takes, each giving the types it gives now;
    None where one is not such an argument (a value that changes a shape, a layer written otherwise)."""
    graph = writer.graph
    value, declared = graph.params[p], graph.param_types.get(p)
    legal = None
    for inst, key, _ in found:
        if key == "inplace" or inst.id in writer.external or type(inst.args.get(key)) is not type(value) \
                or inst.args.get(key) != value:
            return None
        values = _layer_values(writer, inst, key) if inst.kind == "layer" else \
            writer._block_values(inst, key) if inst.kind == "block" else None
        if values is None:
            return None
        values = tuple(v for v in values if _admits(declared, v))
        legal = values if legal is None else tuple(v for v in legal if v in values)
    return legal


def _layer_values(writer, inst, key: str) -> tuple | None:
    """The values of the layer's argument `key` that give the types its value gives, where the code
    for each is the code for the parameter with the value in its place; None where one does not."""
    spec = inst.op.param(key)
    if spec is None or inst.inits or inst.folded is not None:
        return None
    values = choices(spec.type)
    if values is None:
        return None
    values = tuple(v for v in values if not (spec.check and _refuses(spec.check, v)))
    for node in (n for n in writer.graph.nodes.values() if n.instance == inst.id):
        values = _same_types(writer.graph, node, key, values)
        if values is None or not _written_through(writer, node, key, values, spec.default):
            return None
    return values


def _refuses(check, v) -> bool:
    try:
        return bool(check(v))
    except Exception:   # a check written for other values than these
        return True


def _admits(declared: str | None, v) -> bool:
    """Whether the parameter's declared type takes the value (an untyped parameter takes any)."""
    if declared is None:
        return True
    return {"bool": isinstance(v, bool), "str": isinstance(v, str)}.get(declared, False)


def _same_types(graph, node, key: str, values: tuple) -> tuple | None:
    """The values the node's op takes, or None where one it takes changes its outputs, the arguments
    it infers or the guards it records."""
    op = node.op
    types = [graph.type_of(r) for r in op.positional(node.args, node.inputs)]
    base = _infer(op, node.args, types, node.span)
    if base is None:
        return None
    out = []
    for v in values:
        got = _infer(op, dict(node.args, **{key: v}), types, node.span)
        if got is None:
            continue    # refused: the class refuses it too
        args, outs, guards = got
        if outs != base[1] or guards != base[2] or {k: a for k, a in args.items() if k != key} != \
                {k: a for k, a in base[0].items() if k != key}:
            return None
        out.append(v)
    return tuple(out)


def _infer(op, args: dict, types: list, where):
    """(the bound arguments, the output types, the guards) of the op's rule, or None where it refuses."""
    try:
        with recording() as guards:
            b = Bound(op, dict(args), list(types), where=where)
            outs = list(op.result_types(b))
    except Exception:   # a ShapeError, or a value the rule was never written for: refused
        return None
    return b.args, outs, set(guards)


def _written_through(writer, node, key: str, values: tuple, default) -> bool:
    """Whether the code written for the node with the parameter in place of the value is the code
    written for each value, but for the value printed there (or left out, where it is the default).
    A module's call in forward may not depend on it at all."""
    try:
        live = writer._rendered(node, dict(node.args, **{key: Source(SENTINEL)}))
        each = [writer._rendered(node, dict(node.args, **{key: v})) for v in values]
    except Exception:   # written only for some values (a lookup, a branch): not passed through
        return False
    for v, (init, fwd, module) in zip(values, each):
        if not _same_but(live[0], init, key, v, default):
            return False
        if (fwd != live[1]) if module else not _same_but(live[1], fwd, key, v, default):
            return False
    return True


def _same_but(live: str, got: str, key: str, v, default) -> bool:
    if live.replace(SENTINEL, literal(v)) == got:
        return True
    if not is_default(v, default):
        return False
    left_out = live.replace(f", {key}={SENTINEL}", "").replace(f"{key}={SENTINEL}, ", "") \
        .replace(f"{key}={SENTINEL}", "")
    return SENTINEL not in left_out and left_out == got
