"""Binding call arguments to parameters: positions, keywords, defaults, types, ranges.

Shared by registry ops, blocks and models so every callee reports the same
errors: too many arguments (E0304), unknown keyword with did-you-mean (E0305),
an argument given twice (E0306), a missing argument (E0303), a wrong type
(E0301) and a value out of range (E0302).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..diagnostics import did_you_mean
from ..ir.dims import not_recording
from ..ir.pyliteral import literal
from ..ops.ptypes import ArgRangeError, ArgTypeError, describe
from ..ops.registry import REQUIRED, ParamSpec
from .errors import EvalError


@dataclass
class Arg:
    value: object
    span: object
    name_span: object = None


def bind(names: list[str], positional: list[Arg], keywords: list[tuple[str, Arg]],
         callee: str, call_span, also: tuple = ()) -> dict[str, Arg]:
    """Match arguments to parameter names (no defaults, no types). `also`: keywords the callee takes
    besides them (a layer's `init`), named when a keyword is unknown."""
    if len(positional) > len(names):
        extra = positional[len(names)]
        n = len(names)
        raise EvalError("E0304", f"`{callee}` takes {n} positional argument{'s' if n != 1 else ''} "
                        f"but {len(positional)} were given", extra.span, label="one too many",
                        help=_signature_help(callee, names))
    out = {name: arg for name, arg in zip(names, positional)}
    for name, arg in keywords:
        if name not in names:
            raise unknown_keyword(callee, name, list(names) + list(also), arg.name_span or arg.span)
        if name in out:
            raise EvalError("E0306", f"`{name}` is given twice in the call of `{callee}`",
                            arg.name_span or arg.span, label="given again here")
        out[name] = arg
    return out


def unknown_keyword(callee: str, name: str, names: list[str], span, label: str = "unknown keyword",
                    where: str = "") -> EvalError:
    """E0305: `callee` has no parameter `name`; the help lists the ones it has (`where`: where they
    are given, for a layer applied to tensors), after a did-you-mean."""
    guess = did_you_mean(name, names)
    listing = _signature_help(callee, names) + where
    return EvalError("E0305", f"`{callee}` has no parameter `{name}`", span, label=label,
                     help=f"did you mean `{guess}`? {listing}" if guess else listing)


def _signature_help(callee: str, names: list[str]) -> str:
    return f"`{callee}` takes ({', '.join(names)})" if names else f"`{callee}` takes no arguments"


def bind_op(params: tuple[ParamSpec, ...], positional: list[Arg], keywords: list[tuple[str, Arg]],
            callee: str, call_span, convert_hook=None, also: tuple = ()) -> tuple[dict, dict]:
    """Bind, convert and check a registry op's arguments; returns (values, spans)."""
    given = bind([p.name for p in params], pack_rest(params, positional), keywords, callee, call_span, also)
    missing = [p.name for p in params if p.required and p.name not in given]
    if missing:
        raise EvalError("E0303", f"`{callee}` is missing {_plural_args(missing)}", call_span,
                        label="called here", help=_signature_help(callee, [p.name for p in params]))
    values, spans = {}, {}
    for p in params:
        if p.name not in given:
            values[p.name] = p.default
            continue
        arg = given[p.name]
        v = convert_hook(p, arg.value) if convert_hook else arg.value
        values[p.name] = convert(p, v, arg.span, callee)
        spans[p.name] = arg.span
    return values, spans


def pack_rest(params: tuple[ParamSpec, ...], positional: list[Arg]) -> list[Arg]:
    """A `rest` parameter (einsum's operands) collects the positional arguments from its place on, as
    Python's *args, into one list argument; a single list there is taken as it is (`einsum(eq, [a, b])`)."""
    if not params or not params[-1].rest or len(positional) < len(params):
        return positional
    i = len(params) - 1
    tail = positional[i:]
    if len(tail) == 1 and isinstance(tail[0].value, (list, tuple)):
        return positional
    spans = [a.span for a in tail if a.span is not None]
    span = spans[0].to(spans[-1]) if spans else None
    return positional[:i] + [Arg(tuple(a.value for a in tail), span)]


def convert(p: ParamSpec, value, span, callee: str):
    try:
        v = p.type.convert(value)
    except ArgTypeError as e:
        raise EvalError("E0301", f"`{p.name}` of `{callee}` expects {e.expected}, got {describe(value)}",
                        span, label=f"expected {e.expected}") from None
    except ArgRangeError as e:
        raise EvalError("E0302", f"`{p.name}` of `{callee}` {e.problem}, got {describe(value)}", span,
                        label="out of range") from None
    choices = getattr(p.type, "choices", ())
    if choices and v not in choices:
        guess = did_you_mean(v, choices)
        raise EvalError("E0302", f"`{p.name}` of `{callee}` must be {p.type.desc}, got {v!r}", span,
                        label="not a valid choice", help=f"did you mean {guess!r}?" if guess else None)
    if p.check is not None and v is not None:
        with not_recording():
            problem = p.check(v)
        if problem:
            raise EvalError("E0302", f"`{p.name}` of `{callee}` {problem}, got {_shown(v)}", span,
                            label="out of range")
    return v


def _shown(v) -> str:
    try:
        return literal(v)
    except TypeError:
        return describe(v)


def _plural_args(names: list[str]) -> str:
    quoted = ", ".join(f"`{n}`" for n in names)
    return f"the argument{'s' if len(names) > 1 else ''} {quoted}"


__all__ = ["Arg", "REQUIRED", "bind", "bind_op", "convert", "pack_rest", "unknown_keyword"]
