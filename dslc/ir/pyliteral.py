"""Python literals for compile-time values: the printer the front end, the ops and the backends
share (a neutral module, so that none of them imports another's)."""
from __future__ import annotations

from .dims import Item, Poly, Real, Size, Sym, plain, plain_float, to_python


def py_str(s: str) -> str:
    """A Python string literal for `s` (double quotes when that needs no escapes)."""
    if '"' not in s and "\\" not in s and s.isprintable():
        return f'"{s}"'
    return repr(s)


def py_float(x: float) -> str:
    r = repr(float(x))
    return r if r not in ("inf", "-inf", "nan") else f"float({r!r})"


class Source(str):
    """Python source standing for a value (a loop variable `width`, `hidden[0]`): printed as is."""


class Printer:
    """Prints values; `atom` spells each Param/InDim/Var atom in the current context."""

    def __init__(self, atom, known=None):
        # known(atom): the Poly a class was compiled for the atom to equal (`mults[0] == 1`), or None
        self.atom, self.known = atom, known

    def size(self, p: Poly) -> str:
        return to_python(p.subst(self.known) if self.known is not None else p, self.atom)

    def value(self, v) -> str:
        if isinstance(v, Source):
            return str(v)
        if isinstance(v, bool) or v is None:
            return repr(v)
        if isinstance(v, Size):
            return self.size(v.expr)
        if isinstance(v, Sym):
            return self.size(v.poly)
        if isinstance(v, Real):
            return to_python(v.expr, self.atom) if not v.expr.is_const() else py_float(plain_float(v))
        if isinstance(v, int):
            return str(plain(v))
        if isinstance(v, float):
            return py_float(v)
        if isinstance(v, str):
            return py_str(v)
        if isinstance(v, tuple):
            inner = ", ".join(self.value(x) for x in v)
            return f"({inner},)" if len(v) == 1 else f"({inner})"
        if isinstance(v, list):
            items = [self.value(x) for x in v]
            return _whole_list(v, items) or "[" + ", ".join(items) + "]"
        raise TypeError(f"cannot print {v!r} as Python")


def _whole_list(values: list, texts: list) -> str | None:
    """`hidden` for `[hidden[0], hidden[1], hidden[-1]]`, every item of a list parameter in order (the
    last one printed as `[-1]`, which only the last is: none is missing), `hidden[::-1]` for them
    reversed; else None."""
    places = [(a.name, a.index) if isinstance(a, Item) else None
              for a in (v.expr.single_atom() if isinstance(v, Size) else None for v in values)]
    for order, texts_in_order, suffix in ((places, texts, ""), (places[::-1], texts[::-1], "[::-1]")):
        if len(order) > 1 and None not in order and order == [(order[0][0], i) for i in range(len(order))] \
                and texts_in_order[-1].endswith("[-1]"):
            return texts_in_order[-1][:-4] + suffix
    return None


def literal(v) -> str:
    """A value printed with every size as its number."""
    return Printer(lambda a: (_ for _ in ()).throw(TypeError("no atoms here"))).value(_strip(v))


def _strip(v):
    if isinstance(v, Size):
        return plain(v)
    if isinstance(v, Real):
        return plain_float(v)
    if isinstance(v, (list, tuple)):
        return type(v)(_strip(x) for x in v)
    return v


def top_level(text: str):
    """(index, character) of Python source `text` outside brackets and string literals: where a
    condition splits at its `and`, a list at its commas."""
    depth, quote = 0, ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote and text[i - 1] != "\\" else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            yield i, ch
