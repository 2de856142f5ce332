"""Sizes: plain ints, ints that remember where they came from, and symbolic dims.

A tensor dimension is one of
- `int`   a size known at compile time;
- `Size`  an int that also carries `expr`, a polynomial over the parameters it
          was computed from (`4 * dim`, `(image // patch) ** 2 + 1`). Code
          generation prints the expression instead of the number, so generated
          classes keep their constructor arguments (`nn.Linear(hidden, classes)`);
- `Sym`   a size known only at run time (`B`, `T`, `T * 64`), a polynomial with
          at least one run-time variable.

All three share one `Poly` (integer coefficients; atoms are parameters, block
input dims, run-time variables and floor divisions), so `(h + 2 - 3) // 1 + 1`
normalizes to `h`.

Whenever a computation on a `Size` cannot keep its expression (a comparison, an
index, a loop count), the fact it relied on is recorded as a `Guard` on the
active recorder. A generated class is valid for every argument value that
satisfies its guards, and the model's `__init__` checks them.

A guard over a run-time size (an atom `Var`) is a run-time requirement instead:
`x[:, 3]` on `[B, T]` has a static shape only if `T > 3`, which `require` records
and the model's `forward` checks. Every run-time size is taken to be at least 1, so
what any size meets (`T > 0`, `T >= 1`, `2 * T + 1 >= 3`) is never recorded; a size
computed from them is not (`T - 2 >= 1` is recorded, as `T >= 3`).
"""
from __future__ import annotations

import contextvars
import functools
import math
import operator
from dataclasses import dataclass, field, replace
from typing import Callable, Union

from .limits import MAX_POLY, MAX_POLY_PRODUCT, LimitError

# ---------------------------------------------------------------- atoms


@dataclass(frozen=True)
class Param:
    """A compile-time parameter of the enclosing model or block."""
    name: str

    def sort_key(self) -> tuple:
        return (1, self.name)


@dataclass(frozen=True)
class Item:
    """Item `index` of a list parameter of the enclosing model or block (`hidden[4]`): a list's
    length shapes what is built, its items are sizes like any parameter."""
    name: str
    index: int

    def sort_key(self) -> tuple:
        return (1, self.name, self.index)


def int_list(value) -> bool:
    """A list of ints (not bools), whose items are sizes by their place in it (Item)."""
    return isinstance(value, list) and bool(value) and \
        all(isinstance(v, int) and not isinstance(v, bool) for v in value)


@dataclass(frozen=True)
class InDim:
    """Dimension `index` of a block's input tensor `input` (e.g. its channels)."""
    input: str
    index: int

    def sort_key(self) -> tuple:
        return (2, self.input, self.index)


@dataclass(frozen=True)
class Var:
    """A run-time size, such as the batch dimension `B`."""
    name: str

    def sort_key(self) -> tuple:
        return (0, self.name)


@dataclass(frozen=True)
class FloorDiv:
    num: "Poly"
    den: "Poly"

    def sort_key(self) -> tuple:
        return (3, self.num.sort_key(), self.den.sort_key())


@dataclass(frozen=True)
class MinMax:
    """`max(...)` or `min(...)` of sizes over parameters (`max(1, in_channels // 4)`), kept as an
    expression: picking the winner at compile time would be a decision (a guard) that bakes it."""
    op: str       # "max" or "min"
    args: tuple   # Polys, at least two, in sort_key order, none of them a `op` of its own

    def sort_key(self) -> tuple:
        return (4, self.op, tuple(a.sort_key() for a in self.args))


def _inner(a) -> tuple:
    """The polynomials inside a compound atom (a floor division's, a max's), else ()."""
    if isinstance(a, FloorDiv):
        return (a.num, a.den)
    if isinstance(a, MinMax):
        return a.args
    return ()


Atom = Union[Param, Item, InDim, Var, FloorDiv, MinMax]

# A monomial is a frozenset of (atom, power) pairs; the empty one is the constant term.
# Sets make the form canonical without sorting: the order only matters when printing.
ONE: frozenset = frozenset()


def _mono_mul(a: frozenset, b: frozenset) -> frozenset:
    if not a:
        return b
    if not b:
        return a
    powers = dict(a)
    for atom, p in b:
        powers[atom] = powers.get(atom, 0) + p
    return frozenset(powers.items())


def _mono_sort_key(m: frozenset) -> tuple:
    return tuple(sorted((atom.sort_key(), p) for atom, p in m))


# ---------------------------------------------------------------- polynomials


class Poly:
    """An integer polynomial over atoms: {monomial: coefficient}, zero coefficients dropped."""

    __slots__ = ("terms", "_hash", "_size")

    def __init__(self, terms: dict | None = None, clean: bool = False):
        if terms and not clean:
            terms = {m: c for m, c in terms.items() if c != 0}
        self.terms: dict = terms or {}
        self._hash = None
        self._size = None

    def size(self) -> int:
        """How big the polynomial is: its terms, their powers and the floor divisions inside
        (what printing, substituting and evaluating it cost). Kept once computed."""
        if self._size is None:
            n = 0
            for m in self.terms:
                n += 1
                for a, p in m:
                    n += p + sum(q.size() for q in _inner(a))
            self._size = n
        return self._size

    @staticmethod
    def const(c: int) -> "Poly":
        return Poly({ONE: int(c)}, clean=True) if c else Poly()

    @staticmethod
    def atom(a: Atom) -> "Poly":
        return Poly({frozenset(((a, 1),)): 1}, clean=True)

    def key(self) -> frozenset:
        """A hashable, order-free form (for caches and equality)."""
        return frozenset(self.terms.items())

    def sort_key(self) -> tuple:
        """A total order, for printing deterministically."""
        return tuple(sorted((_mono_sort_key(m), c) for m, c in self.terms.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Poly) and self.terms == other.terms

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self.terms.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"Poly({to_python(self)})"

    # structure
    def is_const(self) -> bool:
        return all(not m for m in self.terms)

    def const_value(self) -> int:
        return self.terms.get(ONE, 0)

    def single_atom(self):
        """The atom this polynomial is exactly (coefficient and power 1), or None."""
        if len(self.terms) == 1:
            (m, c), = self.terms.items()
            if c == 1 and len(m) == 1:
                (atom, p), = m
                if p == 1:
                    return atom
        return None

    def atoms(self) -> set:
        out: set = set()
        for m in self.terms:
            for a, _ in m:
                out.add(a)
                for q in _inner(a):
                    out |= q.atoms()
        return out

    def has_vars(self) -> bool:
        return any(isinstance(a, Var) for a in self.atoms())

    # arithmetic
    def __add__(self, other: "Poly") -> "Poly":
        if not other.terms:
            return self
        if not self.terms:
            return other
        out = dict(self.terms)
        for m, c in other.terms.items():
            out[m] = out.get(m, 0) + c
        return Poly(out)

    def __neg__(self) -> "Poly":
        return Poly({m: -c for m, c in self.terms.items()}, clean=True)

    def __sub__(self, other: "Poly") -> "Poly":
        return self + (-other)

    def __mul__(self, other: "Poly") -> "Poly":
        if len(self.terms) * len(other.terms) > MAX_POLY_PRODUCT:
            raise LimitError("E0705", f"a size expression grew past {MAX_POLY_PRODUCT:,} terms",
                             help="compute the size in fewer, simpler steps")
        out: dict = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in other.terms.items():
                m = _mono_mul(m1, m2)
                out[m] = out.get(m, 0) + c1 * c2
        return Poly(out)

    def floordiv(self, den: "Poly") -> "Poly":
        if den.is_const():
            return self._floordiv_int(den.const_value())
        exact = self._divide_monomial(den)
        if exact is not None:
            return exact
        # (m * den + r) // den == m + r // den for an integer m
        lead_m, lead_c = max(den.terms.items(), key=lambda t: _mono_sort_key(t[0]))
        c = self.terms.get(lead_m, 0)
        m = c // lead_c if lead_c else 0
        rest = self - den * Poly.const(m)
        if m and not any(mm in rest.terms for mm in den.terms):
            return Poly.const(m) + (rest.floordiv(den) if rest.terms else Poly())
        return Poly.atom(FloorDiv(self, den))

    @staticmethod
    def minmax(op: str, polys) -> "Poly":
        """`max(*polys)` (op "max") or `min(*polys)`, in its plainest form: nested ones of the same
        op flattened, constants folded into one, an argument another exceeds by a constant
        dropped (`max(c, c + 1)` is `c + 1`); one argument left is the result itself."""
        pick = max if op == "max" else min
        flat: list = []
        for p in polys:
            a = p.single_atom()
            flat.extend(a.args if isinstance(a, MinMax) and a.op == op else (p,))
        consts = [p.const_value() for p in flat if p.is_const()]
        args: list = [Poly.const(pick(consts))] if consts else []
        for p in flat:
            if not p.is_const() and p not in args:
                args.append(p)
        kept = [p for p in args if not any(q is not p and _beats(q, p, pick) for q in args)]
        if len(kept) == 1:
            return kept[0]
        return Poly.atom(MinMax(op, tuple(sorted(kept, key=Poly.sort_key))))

    def _floordiv_int(self, c: int) -> "Poly":
        if c == 0:
            raise ZeroDivisionError("division by zero")
        if c == 1:
            return self
        exact = {m: k // c for m, k in self.terms.items() if k % c == 0}
        rest = Poly({m: k for m, k in self.terms.items() if k % c != 0})
        out = Poly(exact)
        if not rest.terms:
            return out
        if rest.is_const():
            return out + Poly.const(rest.const_value() // c)
        return out + Poly.atom(FloorDiv(rest, Poly.const(c)))

    def _divide_monomial(self, den: "Poly") -> "Poly | None":
        if len(den.terms) != 1:
            return None
        (dm, dc), = den.terms.items()
        out = {}
        for m, c in self.terms.items():
            powers = dict(m)
            for a, p in dm:
                if powers.get(a, 0) < p:
                    return None
                powers[a] -= p
            if c % dc:
                return None
            out[frozenset((a, p) for a, p in powers.items() if p)] = c // dc
        return Poly(out)

    # evaluation
    def evaluate(self, env: Callable[[Atom], int | None]) -> int | None:
        """The value, given each atom's value; None when some atom is unknown."""
        total = 0
        for m, c in self.terms.items():
            prod = c
            for a, p in m:
                v = _atom_value(a, env)
                if v is None:
                    return None
                prod *= v ** p
            total += prod
        return total

    def subst(self, f: Callable[[Atom], "Poly | None"]) -> "Poly":
        """Replace atoms by polynomials (None keeps the atom)."""
        atoms = {a for m in self.terms for a, _ in m}
        if not atoms:
            return self
        new = {a: _subst_atom(a, f) for a in atoms}
        if all(new[a].single_atom() == a for a in atoms):
            return self  # nothing changes: no need to rebuild
        out = Poly()
        for m, c in self.terms.items():
            term = Poly.const(c)
            for a, p in m:
                for _ in range(p):
                    term = term * new[a]
            out = out + term
        return out


def _beats(q: Poly, p: Poly, pick) -> bool:
    """Whether `q` always wins over `p` in `pick` (max or min): they differ by a constant that
    favours q (a tie keeps the earlier one)."""
    diff = q - p
    if not diff.is_const():
        return False
    d = diff.const_value()
    return (d > 0 if pick is max else d < 0) or d == 0 and q.sort_key() < p.sort_key()


def _atom_value(a: Atom, env) -> int | None:
    if isinstance(a, FloorDiv):
        n, d = a.num.evaluate(env), a.den.evaluate(env)
        return None if n is None or d is None or d == 0 else n // d
    if isinstance(a, MinMax):
        values = [q.evaluate(env) for q in a.args]
        return None if None in values else (max if a.op == "max" else min)(values)
    return env(a)


def _subst_atom(a: Atom, f) -> Poly:
    if isinstance(a, FloorDiv):
        return a.num.subst(f).floordiv(a.den.subst(f))
    if isinstance(a, MinMax):
        return Poly.minmax(a.op, [q.subst(f) for q in a.args])
    r = f(a)
    return Poly.atom(a) if r is None else r


# ---------------------------------------------------------------- printing

_ADD, _MUL, _POW, _ATOM = 1, 2, 3, 4


def to_python(p, name: Callable[[Atom], str] | None = None) -> str:
    """Python source for a polynomial or a float expression; `name` spells each non-floor-division atom."""
    return _expr_src(p, name or _default_name)[0]


def _expr_src(e, name) -> tuple[str, float]:
    if isinstance(e, Poly):
        return _poly_src(e, name)
    if isinstance(e, FExpr):
        return _fexpr_src(e, name)
    text = repr(e)
    return text, (_NEG if text.startswith("-") else _ATOM)


def _fexpr_src(e: "FExpr", name) -> tuple[str, float]:
    """Float expressions print their tree exactly: float arithmetic is not associative, so a
    right operand of the same precedence keeps its parentheses (`a * (b * c)`)."""
    args = [_expr_src(a, name) for a in e.args]
    if e.op in MATH_FUNCTIONS:
        return f"math.{e.op}({args[0][0]})", _ATOM
    if e.op == "float":
        return f"float({args[0][0]})", _ATOM
    if e.op == "neg":
        return f"-{_wrap(*args[0], _NEG + 0.1)}", _NEG
    prec = _POW if e.op == "**" else _MUL if e.op in ("*", "/") else _ADD
    (left, lp), (right, rp) = args
    if e.op == "**":  # right-associative, and binds tighter than a unary minus on its left
        return f"{_wrap(left, lp, _POW + 1)} ** {_wrap(right, rp, _NEG)}", _POW
    return f"{_wrap(left, lp, prec)} {e.op} {_wrap(right, rp, prec + 1)}", prec


def _default_name(a: Atom) -> str:
    if isinstance(a, (Param, Var)):
        return a.name
    if isinstance(a, InDim):
        return f"{a.input}.shape[{a.index}]"
    if isinstance(a, Item):
        return f"{a.name}[{a.index}]"
    raise TypeError(a)


def _poly_src(p: Poly, name) -> tuple[str, int]:
    if not p.terms:
        return "0", _ATOM
    # Positive terms first, constants last, so `4 * dim - 1` rather than `-1 + 4 * dim`.
    terms = sorted(p.terms.items(), key=lambda t: (not t[0], t[1] < 0, -len(t[0]), _mono_sort_key(t[0])))
    out, prec = "", _ATOM
    for i, (m, c) in enumerate(terms):
        text, tprec = _term_src(m, abs(c), name)
        if i == 0:
            # a unary minus binds tighter than `//`: `-(x // 2)`, since `-x // 2` is `(-x) // 2`
            out = text if c > 0 else f"-{_wrap(text, tprec, _MUL + 1 if _is_floor_division(m, c) else _MUL)}"
            prec = tprec if c > 0 else _MUL
        else:
            out += (" + " if c > 0 else " - ") + _wrap(text, tprec, _MUL if c < 0 else _ADD)
            prec = _ADD
    return out, prec


def _is_floor_division(m: frozenset, c: int) -> bool:
    """Whether the term `c * m` prints as a bare `a // b` (coefficient 1 or -1, one floor division)."""
    return abs(c) == 1 and len(m) == 1 and all(isinstance(a, FloorDiv) and p == 1 for a, p in m)


def _term_src(m: frozenset, c: int, name) -> tuple[str, int]:
    if not m:
        return str(c), _ATOM
    factors = []
    for atom, power in sorted(m, key=lambda t: t[0].sort_key()):
        text, prec = _atom_src(atom, name)
        factors.append((f"{_wrap(text, prec, _POW + 1)} ** {power}", _POW) if power > 1 else (text, prec))
    if c == 1 and len(factors) == 1:
        return factors[0]
    # `*` and `//` bind equally and associate left: `b * (a // b)` needs its parentheses.
    parts = [str(c)] if c != 1 else []
    for t, p in factors:
        parts.append(_wrap(t, p, _MUL if not parts else _MUL + 1))
    return " * ".join(parts), _MUL


def _atom_src(a: Atom, name) -> tuple[str, int]:
    if isinstance(a, FloorDiv):
        n, np_ = _poly_src(a.num, name)
        d, dp = _poly_src(a.den, name)
        return f"{_wrap(n, np_, _MUL)} // {_wrap(d, dp, _MUL + 1)}", _MUL
    if isinstance(a, MinMax):
        return f"{a.op}({', '.join(_poly_src(q, name)[0] for q in a.args)})", _ATOM
    return name(a), _ATOM


def _wrap(text: str, prec: int, need: int) -> str:
    return text if prec >= need else f"({text})"


# ---------------------------------------------------------------- guards

@dataclass(frozen=True)
class Guard:
    """A fact about parameter values that a compile-time decision relied on, or, when it
    involves a run-time size, a run-time requirement (`is_requirement`)."""
    lhs: Poly
    op: str  # == != < <= > >=
    rhs: Poly
    where: object = field(default=None, compare=False, repr=False)  # the spec position it comes from (a Span)
    # a decision of the spec's condition at this Span (`if expand != 1`), and the block a caller has it
    # from: the caller's class need not decide what that block's class decides (torch_codegen.callee_decided)
    at: object = field(default=None, repr=False)
    origin: object = field(default=None, compare=False, repr=False)

    def subst(self, f) -> "Guard":
        return Guard(self.lhs.subst(f), self.op, self.rhs.subst(f), self.where, self.at).normalized()

    def normalized(self) -> "Guard":
        """A requirement in its plainest form: on one size that the left side grows with, the least
        value it allows (`(T - 1) // 2 > 0` is `T >= 3`); else with its constant term on the right
        (`T * S >= 6`, not `T * S - 4 >= 2`)."""
        if not self.is_requirement() or self.op not in (">", ">=") or not self.rhs.is_const():
            return self
        single = _single_size(self.lhs)
        if single is not None and self.lhs.single_atom() != single:
            least = _least_meeting(self, single)
            if least is not None:
                return Guard(Poly.atom(single), ">=", Poly.const(least), self.where)
        falling = _single_size(-self.lhs)     # `64 - T >= 0` is `T <= 64`
        if falling is not None:
            most = _most_meeting(self, falling)
            if most is not None:
                return Guard(Poly.atom(falling), "<=", Poly.const(most), self.where)
        c = self.lhs.const_value()
        if not c:
            return self
        lhs = Poly({m: k for m, k in self.lhs.terms.items() if m != ONE}, clean=True)
        return Guard(lhs, self.op, Poly.const(self.rhs.const_value() - c), self.where)

    def is_trivial(self) -> bool:
        """True for facts that hold whatever the parameters are (`dim == dim`, `3 < 4`), and for
        requirements that every run-time size meets (`T > 0`: a size is at least 1), and facts a
        `max` with a constant meets (`max(1, c // 4) > 0`)."""
        if self.lhs == self.rhs or (self.lhs.is_const() and self.rhs.is_const()):
            return True
        return self._met_by_every_size()

    def is_requirement(self) -> bool:
        """Whether the fact is about run-time sizes (checked by `forward`, not `__init__`)."""
        return any(isinstance(a, Var) for a in self.atoms())

    def _met_by_every_size(self) -> bool:
        if self.op not in (">", ">=") or not self.rhs.is_const():
            return False
        need = self.rhs.const_value() + (1 if self.op == ">" else 0)
        least = least_value(self.lhs)
        return least is not None and need <= least

    def holds(self, env: Callable[[Atom], int | None]) -> bool | None:
        """Whether the fact holds for these atom values; None when one is unknown."""
        a, b = self.lhs.evaluate(env), self.rhs.evaluate(env)
        return None if a is None or b is None else _OPS[self.op](a, b)

    def atoms(self) -> set:
        return self.lhs.atoms() | self.rhs.atoms()

    def negated(self) -> "Guard":
        """The fact that holds when this one does not (`stride == 1` for `stride != 1`)."""
        return Guard(self.lhs, _NEGATE[self.op], self.rhs, at=self.at)

    def key(self) -> tuple:
        """Equal for the same fact written either way round (`a == b`, `b == a`)."""
        if self.op in ("==", "!="):   # `a == b`, `b == a`, `a - b == 0` and `b - a == 0` alike
            diff = self.lhs - self.rhs
            return (self.op, frozenset((diff, -diff)))
        return (self.op, self.lhs, self.rhs)

    def to_python(self, name=None) -> str:
        form = residue_form(self)   # `size % 4 == 0`, not `size == 4 * ((size - 1) // 2 // 2) + 4`
        if form is not None and 0 < len(form.residues) < form.modulus:
            return form.to_python(name or _default_name)
        lhs, rhs = self.lhs, self.rhs
        if lhs.is_const() and not rhs.is_const():  # `stride == 1`, not `1 == stride`
            lhs, rhs, op = rhs, lhs, _FLIP[self.op]
        else:
            op = self.op
        if op in ("==", "!=") and rhs.is_const() and rhs.const_value() == 0 and _remainder_src(lhs, name) is None:
            flipped = _remainder_src(-lhs, name)    # `h * (d // h) - d == 0` is `d % h == 0`
            if flipped is not None:
                return f"{flipped} {op} 0"
        return f"{_remainder_src(lhs, name) or to_python(lhs, name)} {op} {to_python(rhs, name)}"


# ---------------------------------------------------------------- conditions of the spec


@dataclass(frozen=True)
class Compound:
    """The spec's own condition, `a or b` / `a and b` of comparisons of sizes
    (`stride != 1 or x.shape[1] != out`), as one decision: what the result relied on is the
    condition's outcome, not which operand settled it, so a generated class branches on the
    condition and takes every argument it admits (frontend/conditions.py)."""
    op: str          # "or" or "and"
    parts: tuple     # Guard or Compound, each true when its operand is
    at: object = None   # the condition's Span in the spec
    origin: object = field(default=None, compare=False, repr=False)   # the block (its Graph) a caller has it from
    where = None     # a decision, never a check of the spec

    @staticmethod
    def of(op: str, parts, at=None) -> "Guard | Compound | bool":
        """The condition with constant operands settled: a bool, one guard, or a Compound."""
        flat: list = []
        for p in parts:
            if isinstance(p, Guard) and p.lhs.is_const() and p.rhs.is_const():
                p = _OPS[p.op](p.lhs.const_value(), p.rhs.const_value())
            if isinstance(p, bool):
                if p == (op == "or"):
                    return p            # `True or ...`, `False and ...`
                continue
            for q in (p.parts if isinstance(p, Compound) and p.op == op else (p,)):
                if q not in flat:
                    flat.append(q)
        if not flat:
            return op == "and"
        if len(flat) == 1:
            return replace(flat[0], at=at) if at is not None else flat[0]
        return Compound(op, tuple(flat), at)

    def negated(self) -> "Compound":
        """`a == 1 and b == c` for `a != 1 or b != c`."""
        return Compound("and" if self.op == "or" else "or", tuple(p.negated() for p in self.parts), self.at)

    def subst(self, f):
        """In a caller's terms: operands that become constant settle (a trivial guard where the
        condition does: it held)."""
        out = Compound.of(self.op, [p.subst(f) for p in self.parts], self.at)
        return Guard(Poly.const(0), "==", Poly.const(0)) if isinstance(out, bool) else out

    def normalized(self) -> "Compound":
        return self

    def is_trivial(self) -> bool:
        return False

    def is_requirement(self) -> bool:
        return False

    def holds(self, env) -> bool | None:
        values = [p.holds(env) for p in self.parts]
        if any(v is (self.op == "or") for v in values):
            return self.op == "or"
        return None if None in values else self.op == "and"

    def atoms(self) -> set:
        return set().union(*(p.atoms() for p in self.parts))

    def key(self) -> tuple:
        return (self.op, frozenset(p.key() for p in self.parts))

    def to_python(self, name=None) -> str:
        texts = [p.to_python(name) for p in self.parts]
        if self.op == "and":      # `or` binds looser: its operands need parentheses here
            texts = [f"({t})" if isinstance(p, Compound) else t for p, t in zip(self.parts, texts)]
        return f" {self.op} ".join(texts)


def conjuncts(guards) -> list:
    """The guards, with a condition `a and b` that held as its parts (each held)."""
    out = []
    for g in guards:
        out += conjuncts(g.parts) if isinstance(g, Compound) and g.op == "and" else [g]
    return out


def constants(guards) -> dict:
    """atom -> the constant Poly a guard fixes it to (`stride == 1`, alone or in a condition that
    held: `stride == 1 and in_channels == out`)."""
    out: dict = {}
    for g in conjuncts(guards):
        if isinstance(g, Guard) and g.op == "==":
            for a, b in ((g.lhs, g.rhs), (g.rhs, g.lhs)):
                atom = a.single_atom()
                if atom is not None and b.is_const() and atom not in out:
                    out[atom] = b
    return out


def equal_under(a: Poly, b: Poly, guards) -> bool:
    """Whether a == b follows from the equalities among the guards (those that held: `conjuncts`) by
    substitution (`equalities`)."""
    if a == b:
        return True
    known = equalities(guards)
    return bool(known) and a.subst(known.get) == b.subst(known.get)


def equalities(guards) -> dict:
    """atom -> the Poly it equals by the equalities among the guards: each, in terms of the ones
    before it, that sets one atom to what does not read it (`x.shape[1] == out` makes `x.shape[1]`
    and `out` one size)."""
    known: dict = {}
    for g in conjuncts(guards):
        if not (isinstance(g, Guard) and g.op == "=="):
            continue
        left, right = g.lhs.subst(known.get), g.rhs.subst(known.get)
        for x, y in ((left, right), (right, left)):
            single = x.single_atom()
            if x != y and single is not None and x == Poly.atom(single) and single not in y.atoms():
                known = {k: v.subst({single: y}.get) for k, v in known.items()} | {single: y}
                break
    return known


def defines(g, consts: dict) -> bool:
    """Whether the guard fixes one of `consts` (`stride == 1`): it stays as it is."""
    return isinstance(g, Guard) and g.op == "==" and any(
        side.single_atom() in consts and other.is_const() for side, other in ((g.lhs, g.rhs), (g.rhs, g.lhs)))


def settled(guards) -> list:
    """The guards without those the constants others fix make true (`(h - 1) // stride + 1 == h`
    beside `stride == 1`): the same facts, fewer of them. A caller then learns a block's condition
    without the facts of the branch it chose (the block's class decides that branch itself). A loop's
    count (LoopCount) settles nothing here: a caller that writes the loop as one drops its guard."""
    consts = constants([g for g in guards if not isinstance(g, LoopCount)])
    if not consts:
        return list(guards)
    return [g for g in guards if not isinstance(g, Guard) or defines(g, consts)
            or not g.subst(lambda a: consts.get(a)).is_trivial()]


def recorder_active() -> bool:
    return _recorder.get() is not None


# ---------------------------------------------------------------- periodic guards

# The longest period a guard is written as a remainder for (`x % 1024 == 0`); longer ones stay as written.
MAX_PERIOD = 1024


@dataclass(frozen=True)
class Residues:
    """A guard on one size that holds exactly when `atom % modulus` is one of `residues`."""
    atom: object
    modulus: int
    residues: tuple

    def to_python(self, name) -> str:
        """`x % 4 == 0`; against 0 where it can be (`x % 2 != 0`, not `x % 2 == 1`); else the shorter
        of `in (...)` and `not in (...)`."""
        x = _atom_src(self.atom, name)[0]
        left = tuple(r for r in range(self.modulus) if r not in self.residues)
        if self.residues == (0,) or len(self.residues) == 1 and left != (0,):
            return f"{x} % {self.modulus} == {self.residues[0]}"
        if len(left) == 1:
            return f"{x} % {self.modulus} != {left[0]}"
        if len(self.residues) <= len(left):
            return f"{x} % {self.modulus} in ({', '.join(map(str, self.residues))})"
        return f"{x} % {self.modulus} not in ({', '.join(map(str, left))})"

    def implies(self, other: "Residues") -> bool:
        """Whether every value this form allows the other allows too (checked over both periods)."""
        if self.atom != other.atom:
            return False
        period = math.lcm(self.modulus, other.modulus)
        return all(r % other.modulus in other.residues for r in range(period) if r % self.modulus in self.residues)


def residue_form(g: "Guard") -> Residues | None:
    """The guard as a remainder condition, when it is one: both sides built from one size with +, -,
    * by constants and // by positive constants, and equal slopes, so `lhs - rhs` repeats with the
    period L of its divisions (`(size - 1) // 2 + 1 == 2 * ((size - 1) // 2 // 2) + 2` holds for
    `size % 4 in (0, 3)`). None otherwise (`dim >= 4`, `stride == 1`, two sizes)."""
    if not isinstance(g, Guard) or g.op not in _OPS:
        return None
    return _residues(g.lhs - g.rhs, g.op)


@functools.lru_cache(maxsize=4096)
def _residues(diff: Poly, op: str) -> Residues | None:
    """The residues of `diff op 0`. Python's `//` floors, so such a form repeats with its period over
    all integers, and the window may start anywhere: it is evaluated over three periods from 0 and
    kept only if it really repeats (a slope left over shows as a change from one period to the next)."""
    found = _quasi_linear(diff)
    if found is None:
        return None
    atom, period = found
    values = [diff.evaluate(lambda a, x=x: x if a == atom else None) for x in range(3 * period)]
    if any(values[i + period] != values[i] for i in range(2 * period)):
        return None
    holds = [_OPS[op](v, 0) for v in values[:period]]
    modulus = next(m for m in range(1, period + 1)
                   if period % m == 0 and all(holds[i] == holds[i % m] for i in range(period)))
    return Residues(atom, modulus, tuple(r for r in range(modulus) if holds[r]))


def _quasi_linear(p: Poly) -> tuple | None:
    """(the one leaf atom, a period) when `p` is built from one parameter, input dim or run-time
    size with +, -, * by constants and // by positive constants; the period is the least common
    multiple of each division's divisor times its numerator's period, after which `p` changes by a
    constant. None for anything else, or a period over MAX_PERIOD."""
    atom, period = None, 1
    for m in p.terms:
        if not m:
            continue
        if len(m) != 1:
            return None
        (a, power), = m
        if power != 1:
            return None
        if isinstance(a, FloorDiv):
            inner = _quasi_linear(a.num) if a.den.is_const() and a.den.const_value() > 0 else None
            if inner is None:
                return None
            leaf, step = inner[0], inner[1] * a.den.const_value()
        elif isinstance(a, (Param, InDim, Var)):
            leaf, step = a, 1
        else:
            return None
        if atom is not None and leaf != atom:
            return None
        atom, period = leaf, math.lcm(period, step)
        if period > MAX_PERIOD:
            return None
    return None if atom is None else (atom, period)


def without_implied(guards: list) -> list:
    """The guards without the remainder conditions that every value meets, or that another one on the
    same size implies (`size % 4 == 0` implies `size % 4 in (0, 3)`; of two alike, the first stays)."""
    forms = [residue_form(g) for g in guards]
    out = []
    for i, (g, f) in enumerate(zip(guards, forms)):
        if f is not None:
            if len(f.residues) == f.modulus:
                continue
            if any(h is not None and j != i and h.implies(f) and (j < i or not f.implies(h))
                   for j, h in enumerate(forms)):
                continue
        out.append(g)
    return out


def _remainder_src(p: Poly, name) -> str | None:
    """`T % 4` for the polynomial `T - 4 * (T // 4)` (how `%` of a size is kept), `d % h` for
    `d - h * (d // h)` (a reshape into `h` heads), else None."""
    for m, c in p.terms.items():
        found = _remainder_of(p, m, c)
        if found is not None:
            num, den = found
            text = to_python(num, name)
            den_text = to_python(den, name)
            return (f"{text if num.single_atom() is not None else f'({text})'} % "
                    f"{den_text if den.is_const() or den.single_atom() is not None else f'({den_text})'}")
    return None


def _remainder_of(p: Poly, m: frozenset, c: int) -> tuple | None:
    """(num, den) when the term `c * m` is `-den * (num // den)` and the rest of `p` is `num`."""
    divs = [(atom, power) for atom, power in m if isinstance(atom, FloorDiv)]
    if len(divs) != 1 or divs[0][1] != 1:
        return None
    atom = divs[0][0]
    factor = Poly({frozenset(pair for pair in m if pair[0] is not atom): -c})
    if factor != atom.den or atom.den.is_const() and atom.den.const_value() <= 0:
        return None
    rest = Poly({mm: cc for mm, cc in p.terms.items() if mm != m}, clean=True)
    return (atom.num, atom.den) if rest == atom.num else None


def _single_size(p: Poly):
    """The one run-time size `p` grows with (never falls with), or None: positive coefficients,
    floor divisions by positive constants, no other atoms."""
    sizes = set()
    for m, c in p.terms.items():
        if m and c < 0:
            return None
        for a, _ in m:
            if isinstance(a, Var):
                sizes.add(a)
            elif isinstance(a, FloorDiv) and a.den.is_const() and a.den.const_value() > 0:
                inner = _single_size(a.num)
                if inner is None:
                    return None
                sizes.add(inner)
            else:
                return None
    return sizes.pop() if len(sizes) == 1 else None


def _most_meeting(g: "Guard", size: Var, limit: int = 2 ** 62) -> int | None:
    """The greatest value of `size` for which the requirement holds (the left side falls as `size`
    grows), or None when not even 1 does or every value below `limit` does."""
    holds = lambda v: g.holds(lambda a: v if a == size else None)  # noqa: E731
    if not holds(1) or holds(limit):
        return None
    lo, hi = 1, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if holds(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _least_meeting(g: "Guard", size: Var, limit: int = 2 ** 62) -> int | None:
    """The least value of `size` (at least 1) for which the requirement holds, or None (never below
    `limit`); the left side grows with `size`, so a binary search finds it."""
    holds = lambda v: g.holds(lambda a: v if a == size else None)  # noqa: E731
    if not holds(limit):
        return None
    lo, hi = 1, limit
    while lo < hi:
        mid = (lo + hi) // 2
        if holds(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def least_value(p: Poly) -> int | None:
    """A lower bound of a polynomial of run-time sizes, each at least 1 (`2 * T + 1` is at least 3,
    `(T - 1) // 2 + 2` at least 2, `max(1, c // 4)` at least 1); None when it has parameters outside
    such a `max` or a term that can fall without bound (a negative coefficient on a size)."""
    total = 0
    for m, c in p.terms.items():
        least = 1
        for a, power in m:
            low = _least_atom(a)
            if low is None or low < 0:
                return None
            least *= low ** power
        if m and c < 0:
            return None
        total += c * least
    return total


def _least_atom(a) -> int | None:
    if isinstance(a, Var):
        return 1
    if isinstance(a, FloorDiv) and a.den.is_const() and a.den.const_value() > 0:
        low = least_value(a.num)
        return None if low is None else low // a.den.const_value()
    if isinstance(a, MinMax):   # `max(1, c // 4)` is at least 1 whatever c is
        lows = [least_value(q) for q in a.args]
        known = [low for low in lows if low is not None]
        if a.op == "max":
            return max(known) if known else None
        return None if None in lows else min(lows)
    return None


def is_requirement(g) -> bool:
    """Whether a recorded guard is a run-time requirement (over `B`, `T`, ...)."""
    return isinstance(g, Guard) and g.is_requirement()


def requirements(guards) -> list:
    """The run-time requirements among guards, in order, without those another implies: of
    `T > 3`, `T >= 9` and `T - 3 >= 2`, only `T >= 9`."""
    best: dict = {}      # size without its constant term -> (the least value that must reach, guard)
    others = []
    for g in guards:
        if not is_requirement(g):
            continue
        if g.op in (">", ">=") and g.rhs.is_const():
            c = g.lhs.const_value()
            need = g.rhs.const_value() + (1 if g.op == ">" else 0) - c
            key = g.lhs - Poly.const(c)
            if key not in best or need > best[key][0]:
                best[key] = (need, g)
        elif g not in others:
            others.append(g)
    kept = {id(g) for _, g in best.values()} | {id(g) for g in others}
    return [g for g in guards if id(g) in kept]


def unmet(guards, env: Callable[[Atom], int | None]) -> list:
    """The run-time requirements among guards that fail for these atom values (`env(Var("T"))`
    gives a run-time size, and a parameter's value where one appears)."""
    return [g for g in requirements(guards) if g.holds(env) is False]


_FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_NEGATE = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}

_recorder: contextvars.ContextVar[list | None] = contextvars.ContextVar("dslc_guards", default=None)


class GuardList(list):
    """Guards in the order they were found, with constant-time membership."""

    def __init__(self, items=()):
        super().__init__(items)
        self._set = set(items)

    def append(self, g) -> None:
        if g not in self._set:
            self._set.add(g)
            super().append(g)

    def __contains__(self, g) -> bool:
        return g in self._set


class recording:
    """Collect the guards of the code run inside `with recording() as guards:`."""

    def __init__(self, into: list | None = None):
        self.guards: list = GuardList() if into is None else into

    def __enter__(self) -> list:
        self._token = _recorder.set(self.guards)
        return self.guards

    def __exit__(self, *exc) -> None:
        _recorder.reset(self._token)


class not_recording(recording):
    """Run checks (not decisions) without recording guards."""

    def __enter__(self):
        self._token = _recorder.set(None)
        return []


def record_all(guards) -> None:
    """Add guards decided elsewhere (a block's, in its caller's terms) to the active recording."""
    recorder = _recorder.get()
    if recorder is not None:
        for g in guards:
            recorder.append(g)


def require(size, op: str, bound: int, where=None) -> None:
    """Record that a static result relies on a run-time size: `size > bound` or `size >= bound`
    (`op`), checked when the model runs; `where` is the spec position that relies on it. Sizes
    known at compile time, and what every run-time size meets, record nothing."""
    guards = _recorder.get()
    if guards is None or not isinstance(size, Sym):
        return
    g = Guard(size.poly, op, Poly.const(bound), where).normalized()
    if not g.is_trivial():
        guards.append(g)


def require_parameter(size, op: str, bound: int, where) -> bool:
    """Whether `size op bound` holds, for a check whose other outcome is an error (`future` cannot be
    negative): on a parameter it is recorded as a requirement with its spec position, which the
    generated constructor checks as one (`needs future >= 0 (m.dl:5)`), not as a decision it was
    compiled for."""
    ok = _OPS[op](plain(size), bound)
    if ok and isinstance(size, Size):
        record(size.expr, op, Poly.const(bound), True, where)
    return ok


@dataclass(frozen=True)
class LoopCount(Guard):
    """A loop unrolled for its count (`depth == 30`), one guard per loop (`loop`: its span, so two loops
    of one count are two guards): the generated class drops the guard of a loop it writes as a Python
    loop (backends/loops.py), and keeps every other, an `if depth == 30` included."""
    loop: object = None

    def subst(self, f) -> "LoopCount":
        """In a caller's terms (a block's loop, called with `depth`): still that loop's guard."""
        return LoopCount(self.lhs.subst(f), self.op, self.rhs.subst(f), self.where, loop=self.loop)


def record_count(count, loop) -> LoopCount | None:
    """Record that a loop (its span `loop`) was unrolled for the value of `count`; the guard, or None
    where the count is a plain number (nothing to guard)."""
    guards = _recorder.get()
    if not isinstance(count, Size):
        return None
    g = LoopCount(count.expr, "==", Poly.const(int.__int__(count)), loop=loop)
    if guards is not None:
        guards.append(g)
    return g


def record(lhs: Poly, op: str, rhs: Poly, outcome: bool, where=None) -> None:
    """Record the comparison `lhs op rhs` and its outcome: a decision the result was compiled for or,
    with `where` (the spec position), a check whose other outcome is an error."""
    guards = _recorder.get()
    if guards is None:
        return
    g = Guard(lhs, op if outcome else _NEGATE[op], rhs, where)
    if not g.is_trivial():
        guards.append(g)


# ---------------------------------------------------------------- Size


def expr_of(x) -> Poly:
    """The polynomial of an int-like value (a constant for plain ints)."""
    if isinstance(x, Size):
        return x.expr
    if isinstance(x, Sym):
        return x.poly
    if isinstance(x, bool):
        raise TypeError("a bool is not a size")
    return Poly.const(int(x))


def plain(x):
    """The bare value of a size, without recording anything (for checks and keys)."""
    if isinstance(x, Size):
        return int.__int__(x)
    return x


class Size(int):
    """An int with the polynomial it was computed from."""

    expr: Poly

    def __new__(cls, value: int, expr: Poly):
        if expr.is_const():
            return int(value)
        obj = int.__new__(cls, value)
        obj.expr = expr
        return obj

    @staticmethod
    def param(name: str, value: int) -> "Size":
        return Size(value, Poly.atom(Param(name)))

    def __repr__(self) -> str:
        return f"Size({int.__int__(self)}, {to_python(self.expr)})"

    def __reduce__(self):
        return (Size, (int.__int__(self), self.expr))

    # arithmetic keeps the expression
    def _bin(self, other, op, rop=False):
        if isinstance(other, Sym):
            return NotImplemented
        if isinstance(other, bool) or not isinstance(other, int):
            if isinstance(other, float):
                return self._with_float(other, op, rop)
            return NotImplemented
        a, b = (other, self) if rop else (self, other)
        va, vb = plain(a), plain(b)
        ea, eb = expr_of(a), expr_of(b)
        if op in (_floordiv, _mod) and vb == 0:
            raise ZeroDivisionError("division by zero")
        if op is _mul and ea.size() * eb.size() > MAX_POLY:
            return _forget(a, b, va * vb)
        if op is _floordiv:
            value, expr = va // vb, ea.floordiv(eb)
        elif op is _mod:
            value, expr = va % vb, ea - eb * ea.floordiv(eb)
        else:
            value, expr = op(va, vb), op(ea, eb)
        return Size(value, expr) if expr.size() <= MAX_POLY else _forget(a, b, value)

    def _with_float(self, other: float, op, rop: bool):
        """A size with a float: a float that keeps both expressions (`ninp * 0.5`); floor division
        and remainder of floats fix the size's value."""
        a, b = (other, self) if rop else (self, other)
        symbol = {_add: "+", _sub: "-", _mul: "*"}.get(op)
        if symbol is None:
            self._lose("mixing with a float")
            return op(_number(a), _number(b))
        return float_expr(symbol, op(_number(a), _number(b)), a, b)

    def __add__(self, o): return self._bin(o, _add)
    def __radd__(self, o): return self._bin(o, _add, True)
    def __sub__(self, o): return self._bin(o, _sub)
    def __rsub__(self, o): return self._bin(o, _sub, True)
    def __mul__(self, o): return self._bin(o, _mul)
    def __rmul__(self, o): return self._bin(o, _mul, True)
    def __floordiv__(self, o): return self._bin(o, _floordiv)
    def __rfloordiv__(self, o): return self._bin(o, _floordiv, True)
    def __mod__(self, o): return self._bin(o, _mod)
    def __rmod__(self, o): return self._bin(o, _mod, True)

    def __neg__(self): return Size(-int.__int__(self), -self.expr)
    def __pos__(self): return self

    def __pow__(self, o, mod=None):
        if mod is None and isinstance(o, int) and not isinstance(o, bool) and 0 <= plain(o) and \
                self.expr.size() * plain(o) <= MAX_POLY:
            n = self._index_of(o)
            out = Poly.const(1)
            for _ in range(n):
                out = out * self.expr
            return Size(int.__int__(self) ** n, out)
        if mod is None and _is_operand(o):   # `ninp ** 0.5`, `dim ** -1`: a float
            value = pow(int.__int__(self), _number(o))
            if isinstance(value, float):
                return float_expr("**", value, self, o)
        self._lose("a power")
        return pow(int.__int__(self), plain(o), mod)

    def __rpow__(self, o):
        if isinstance(o, float):   # `10000.0 ** (i / dim)`
            return float_expr("**", o ** int.__int__(self), o, self)
        self._lose("an exponent")
        return pow(o, int.__int__(self))

    def _index_of(self, o) -> int:
        if isinstance(o, Size):
            o._lose("an exponent")
        return plain(o)

    def __truediv__(self, o):
        if not _is_operand(o) or isinstance(o, Sym):
            return NotImplemented
        return float_expr("/", int.__int__(self) / _number(o), self, o)

    def __rtruediv__(self, o):
        if not _is_operand(o):
            return NotImplemented
        return float_expr("/", _number(o) / int.__int__(self), o, self)

    def __abs__(self):
        self._lose("abs()")
        return abs(int.__int__(self))

    # decisions record guards
    def _cmp(self, other, op: str):
        if isinstance(other, Sym):
            return NotImplemented
        if isinstance(other, bool) or not isinstance(other, (int, float)):
            return NotImplemented if op not in ("==", "!=") else (op == "!=")
        if isinstance(other, float):
            self._lose("a comparison with a float")
            return _OPS[op](int.__int__(self), other)
        result = _OPS[op](int.__int__(self), plain(other))
        lhs, rhs = self.expr, expr_of(other)
        if not (op in ("==", "<=", ">=") and lhs == rhs):
            record(lhs, op, rhs, result)
        return result

    def __eq__(self, o): return self._cmp(o, "==")
    def __ne__(self, o): return self._cmp(o, "!=")
    def __lt__(self, o): return self._cmp(o, "<")
    def __le__(self, o): return self._cmp(o, "<=")
    def __gt__(self, o): return self._cmp(o, ">")
    def __ge__(self, o): return self._cmp(o, ">=")
    __hash__ = int.__hash__

    def __bool__(self) -> bool:
        return self._cmp(0, "!=")

    def __index__(self) -> int:
        self._lose("an index or count")
        return int.__int__(self)

    def __int__(self) -> int:
        self._lose("a conversion")
        return int.__int__(self)

    def __float__(self) -> float:
        self._lose("a conversion to float")
        return float(int.__int__(self))

    def _lose(self, why: str) -> None:
        """The value is used where its expression cannot follow: fix it."""
        record(self.expr, "==", Poly.const(int.__int__(self)), True)

    def __str__(self) -> str:
        return str(int.__int__(self))

    def __format__(self, spec: str) -> str:
        return format(int.__int__(self), spec)


def extreme(op: str, values) -> int:
    """`max(values)` (op "max") or `min(values)` of ints some of which are Sizes: a Size that keeps
    `max(1, in_channels // 4)` as its expression, so no comparison fixes which one wins."""
    pick = max if op == "max" else min
    expr = Poly.minmax(op, [expr_of(v) for v in values])
    if expr.size() > MAX_POLY:
        return pick(values)   # too big to keep: the comparisons record their guards
    return Size(pick(plain(v) for v in values), expr)


def _forget(a, b, value: int) -> int:
    """The plain value of an operation whose expression would be too big to keep (a size
    computed in a long loop): like any lost expression, it holds for these values only."""
    for x in (a, b):
        if isinstance(x, Size):
            x._lose("a size expression too big to keep")
    return value


def _add(a, b): return a + b
def _sub(a, b): return a - b
def _mul(a, b): return a * b
def _floordiv(a, b): return a // b
def _mod(a, b): return a % b


_OPS = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


# ---------------------------------------------------------------- float expressions

# Python's precedence of a negative number or `-x`: above `*`, below `**`.
_NEG = 2.5
MATH_FUNCTIONS = {"sqrt": math.sqrt, "log": math.log, "exp": math.exp, "sin": math.sin, "cos": math.cos}


@dataclass(frozen=True)
class FExpr:
    """A float computed from parameters that a polynomial cannot hold: `ninp ** 0.5`,
    `log(10000.0) / d_model`, `scale * 2.0`. Code generation prints it as written, so the
    generated class computes the same double from its own arguments rather than a baked number.

    `op` is `+ - * / **`, `neg`, or a name of MATH_FUNCTIONS; `args` are Poly (an int or
    float parameter's polynomial), FExpr, or plain numbers."""
    op: str
    args: tuple

    def atoms(self) -> set:
        out = set()
        for a in self.args:
            if isinstance(a, (Poly, FExpr)):
                out |= a.atoms()
        return out

    def is_const(self) -> bool:
        return not self.atoms()

    def subst(self, f) -> "FExpr":
        return FExpr(self.op, tuple(fsubst(a, f) for a in self.args))


def fsubst(e, f):
    """Substitute atoms in a Poly, FExpr or number, where `f` may give a float parameter an FExpr
    (a block's float parameter bound to `ninp ** 0.5` in its caller)."""
    if isinstance(e, FExpr):
        return e.subst(f)
    if not isinstance(e, Poly):
        return e
    new = {a: f(a) for a in e.atoms()}
    if not any(isinstance(v, FExpr) for v in new.values()):
        return e.subst(lambda a: new.get(a) if not isinstance(new.get(a), FExpr) else None)
    return _poly_as_fexpr(e, new)


def _poly_as_fexpr(p: Poly, new: dict):
    """A polynomial with some atoms replaced by float expressions, as a sum of products."""
    out = None
    for m, c in sorted(p.terms.items(), key=lambda t: _mono_sort_key(t[0])):
        term = None if c == 1 and m else c
        for a, power in sorted(m, key=lambda t: t[0].sort_key()):
            v = new.get(a)
            v = Poly.atom(a) if v is None else v
            for _ in range(power):
                term = v if term is None else FExpr("*", (term, v))
        out = term if out is None else FExpr("+", (out, term))
    return out if out is not None else 0


def _operand_expr(x):
    """An operand of a float expression: a parameter's expression, or the number itself."""
    if isinstance(x, Real):
        return x.expr
    if isinstance(x, Size):
        return x.expr
    return x


def real(value: float, expr):
    """A float that remembers `expr`, or the plain float when `expr` holds no parameter."""
    if isinstance(expr, (int, float)) or expr.is_const():
        return float(value)
    return Real(value, expr)


def float_expr(op: str, value: float, *operands):
    """The result of `op` on numbers where some operand is a parameter (a Size or a Real)."""
    return real(value, FExpr(op, tuple(_operand_expr(o) for o in operands)))


def as_float(x) -> float:
    """`float(n)` at compile time: a size's expression is kept (`float(dim)`)."""
    if isinstance(x, Size):
        return float_expr("float", float(int.__int__(x)), x)
    return float(x) if not isinstance(x, Real) else x


def math_function(name: str, x) -> float:
    """`sqrt(d_model)` and friends at compile time: a Real keeping the parameter's expression."""
    value = MATH_FUNCTIONS[name](plain_float(x) if isinstance(x, Real) else plain(x))
    if isinstance(x, (Size, Real)):
        return float_expr(name, value, x)
    return value


_FLOAT_OPS = {"+": _add, "-": _sub, "*": _mul, "/": operator.truediv, "**": operator.pow}


def _is_operand(o) -> bool:
    return isinstance(o, (int, float)) and not isinstance(o, bool)


class Real(float):
    """A float parameter (dropout, eps, std), or a float computed from parameters, that prints
    as its expression in generated code. Arithmetic keeps the expression; a comparison or a
    use as a plain number fixes the value (a FloatGuard the constructor checks)."""

    expr: "Poly | FExpr"

    def __new__(cls, value: float, expr):
        obj = float.__new__(cls, value)
        obj.expr = expr
        return obj

    def __repr__(self) -> str:
        return f"Real({float(self)!r}, {to_python(self.expr)})"

    def __reduce__(self):
        return (Real, (float.__float__(self), self.expr))

    def _lose(self) -> None:
        guards = _recorder.get()
        if guards is not None:
            g = FloatGuard(self.expr, float.__float__(self))
            if g not in guards:
                guards.append(g)

    def _arith(self, o, f):
        self._lose()
        return f(float(self), o if not isinstance(o, Real) else float(o))

    def _keep(self, o, op: str, reverse: bool = False):
        """`self op o` (or `o op self`), keeping both expressions."""
        if not _is_operand(o):
            return NotImplemented
        a, b = (o, self) if reverse else (self, o)
        value = _FLOAT_OPS[op](_number(a), _number(b))
        if isinstance(value, complex):   # a negative base to a fractional power: Python's complex
            raise ValueError("a negative number to a fractional power")
        return float_expr(op, value, a, b)

    def __add__(self, o): return self._keep(o, "+")
    def __radd__(self, o): return self._keep(o, "+", True)
    def __sub__(self, o): return self._keep(o, "-")
    def __rsub__(self, o): return self._keep(o, "-", True)
    def __mul__(self, o): return self._keep(o, "*")
    def __rmul__(self, o): return self._keep(o, "*", True)
    def __truediv__(self, o): return self._keep(o, "/")
    def __rtruediv__(self, o): return self._keep(o, "/", True)
    def __pow__(self, o): return self._keep(o, "**")
    def __rpow__(self, o): return self._keep(o, "**", True)
    def __neg__(self): return float_expr("neg", -float.__float__(self), self)
    def __pos__(self): return self
    def __eq__(self, o): return self._arith(o, lambda a, b: a == b)
    def __ne__(self, o): return self._arith(o, lambda a, b: a != b)
    def __lt__(self, o): return self._arith(o, lambda a, b: a < b)
    def __le__(self, o): return self._arith(o, lambda a, b: a <= b)
    def __gt__(self, o): return self._arith(o, lambda a, b: a > b)
    def __ge__(self, o): return self._arith(o, lambda a, b: a >= b)
    __hash__ = float.__hash__

    def __bool__(self):
        self._lose()
        return float(self) != 0.0

    # uses that fix the value (the generated constructor checks it)
    def __floordiv__(self, o): return self._arith(o, lambda a, b: a // b)
    def __rfloordiv__(self, o): return self._arith(o, lambda a, b: b // a)
    def __mod__(self, o): return self._arith(o, lambda a, b: a % b)
    def __rmod__(self, o): return self._arith(o, lambda a, b: b % a)

    def __abs__(self):
        self._lose()
        return abs(float.__float__(self))

    def __int__(self):
        self._lose()
        return float.__int__(self)

    def __round__(self, n=None):
        self._lose()
        return round(float.__float__(self), n)


def _number(x):
    """The bare number of an operand: an int stays an int, as in the generated Python."""
    if isinstance(x, Real):
        return float.__float__(x)
    return plain(x)


@dataclass(frozen=True)
class FloatGuard:
    """A float parameter whose value a decision (or a lost expression) depended on."""
    expr: "Poly | FExpr"
    value: float

    def subst(self, f) -> "FloatGuard":
        return FloatGuard(fsubst(self.expr, f), self.value)

    def is_trivial(self) -> bool:
        return self.expr.is_const()

    def atoms(self) -> set:
        return self.expr.atoms()

    def to_python(self, name=None) -> str:
        return f"{to_python(self.expr, name)} == {self.value!r}"


def plain_float(x) -> float:
    return float.__float__(x) if isinstance(x, Real) else float(x)


# ---------------------------------------------------------------- Sym


class SymbolicDecision(Exception):
    """A comparison that cannot be decided at compile time (it involves `B`, `T`, ...)."""


class Sym:
    """A dimension known only at run time."""

    __slots__ = ("poly",)

    def __init__(self, poly: Poly):
        self.poly = poly

    @staticmethod
    def var(name: str) -> "Sym":
        return Sym(Poly.atom(Var(name)))

    def __repr__(self) -> str:
        return to_python(self.poly)

    __str__ = __repr__

    def key(self):
        return self.poly.key()

    def _bin(self, other, f, rop=False):
        if isinstance(other, bool) or not isinstance(other, (int, Sym)):
            return NotImplemented
        a, b = (expr_of(other), self.poly) if rop else (self.poly, expr_of(other))
        p = f(a, b)
        if p.size() > MAX_POLY:
            raise LimitError("E0705", f"a run-time size expression grew past {MAX_POLY} terms",
                             help="compute the size in fewer, simpler steps")
        return make_dim(p, None)

    def __add__(self, o): return self._bin(o, lambda a, b: a + b)
    def __radd__(self, o): return self._bin(o, lambda a, b: a + b, True)
    def __sub__(self, o): return self._bin(o, lambda a, b: a - b)
    def __rsub__(self, o): return self._bin(o, lambda a, b: a - b, True)
    def __mul__(self, o): return self._bin(o, lambda a, b: a * b)
    def __rmul__(self, o): return self._bin(o, lambda a, b: a * b, True)
    def __neg__(self): return Sym(-self.poly)

    def __floordiv__(self, o):
        if plain(o) == 0 if not isinstance(o, Sym) else False:
            raise ZeroDivisionError("division by zero")
        return self._bin(o, lambda a, b: a.floordiv(b))

    def __rfloordiv__(self, o):
        return self._bin(o, lambda a, b: a.floordiv(b), True)

    def __mod__(self, o):
        return self._bin(o, lambda a, b: a - b * a.floordiv(b))

    def __eq__(self, o):
        if isinstance(o, bool) or not isinstance(o, (int, Sym)):
            return False
        return self.poly == expr_of(o)

    def __ne__(self, o):
        return not self.__eq__(o)

    def __hash__(self) -> int:
        return hash(self.poly)

    def _undecidable(self, *_):
        raise SymbolicDecision(f"`{self}` is only known at run time")

    __lt__ = __le__ = __gt__ = __ge__ = _undecidable

    def __bool__(self):
        raise SymbolicDecision(f"`{self}` is only known at run time")

    def __index__(self):
        raise SymbolicDecision(f"`{self}` is only known at run time")

    __int__ = __index__


_atom_env: contextvars.ContextVar[dict | None] = contextvars.ContextVar("dslc_atoms", default=None)


class atom_values:
    """Make the values of parameter and input-dim atoms known to `make_dim`."""

    def __init__(self, env: dict):
        self.env = env

    def __enter__(self) -> dict:
        self._token = _atom_env.set(self.env)
        return self.env

    def __exit__(self, *exc) -> None:
        _atom_env.reset(self._token)


def make_dim(p: Poly, value: int | None):
    """The right kind of dim for a polynomial: Sym when it has run-time variables."""
    if p.has_vars():
        return Sym(p)
    if p.is_const():
        return p.const_value()
    if value is None:
        env = _atom_env.get() or {}
        value = p.evaluate(env.get)
        if value is None:
            raise ValueError(f"the value of `{to_python(p)}` is unknown")
    return Size(value, p)


Dim = Union[int, Size, Sym]


def is_static(d) -> bool:
    return not isinstance(d, Sym)


def dim_key(d) -> tuple:
    """A hashable key of a dim's value and form (for caches), recording nothing."""
    if isinstance(d, Sym):
        return ("sym", d.poly)
    if isinstance(d, Size):
        return ("size", int.__int__(d), d.expr)
    return ("int", d)


def dim_str(d) -> str:
    return str(d) if not isinstance(d, Size) else str(int.__int__(d))


def product(dims) -> Dim:
    out = 1
    for d in dims:
        out = out * d
    return out


def known_value(d) -> int | None:
    """The value of a static dim, None for a symbolic one."""
    return None if isinstance(d, Sym) else plain(d)


def same(a, b, where=None) -> bool:
    """Whether two dims are equal (a decision: records a guard when their forms differ). Run-time
    sizes are equal when their forms are, or when they become so with the parameters' values: then
    the equality is recorded (`(W - 1) // stride + 1 == W` holds for stride 1, and the generated
    model checks it), instead of being refused for other values. With `where` (the spec position of
    a check whose other outcome is an error: a concat's other dims, a reshape's element count), what
    is recorded is a requirement there (`needs size % 4 == 0 (unet.dl:30)`), not a decision."""
    if isinstance(a, Sym) or isinstance(b, Sym):
        pa = a.poly if isinstance(a, Sym) else expr_of(a)
        pb = b.poly if isinstance(b, Sym) else expr_of(b)
        if pa == pb:
            return True
        env = _atom_env.get() or {}
        known = lambda atom: None if isinstance(atom, Var) or env.get(atom) is None else Poly.const(env[atom])  # noqa: E731
        if pa.subst(known) != pb.subst(known):
            return False
        guards = _recorder.get()
        if guards is not None:
            for g in _parameter_facts(pa - pb, env):
                if not g.is_trivial():
                    guards.append(Guard(g.lhs, g.op, g.rhs, where))
        return True
    if where is None:
        return a == b
    equal = plain(a) == plain(b)
    record(expr_of(a), "==", expr_of(b), equal, where)
    return equal


def _parameter_facts(diff: Poly, env: dict) -> list:
    """What the parameters must satisfy for `diff` (a difference of run-time sizes that is 0 at the
    parameters' values) to be 0 at every size: each run-time monomial's coefficient is 0
    (`T * (2 * (d // 2) - d)` needs `d % 2 == 0`); where a floor division mixes sizes and
    parameters (`(W - 1) // stride`), those parameters keep their values (`stride == 1`)."""
    by_sizes: dict = {}
    mixed = set()
    for m, c in diff.terms.items():
        sizes = frozenset((a, p) for a, p in m if _has_vars(a))
        for a, _ in m:
            if isinstance(a, FloorDiv) and _has_vars(a):
                mixed |= {x for x in a.num.atoms() | a.den.atoms() if not isinstance(x, Var)}
        by_sizes.setdefault(sizes, {})[frozenset(m - sizes)] = c
    if mixed:
        return [Guard(Poly.atom(x), "==", Poly.const(env[x])) for x in sorted(mixed, key=lambda x: x.sort_key())]
    return [_zero(Poly(coeffs)) for coeffs in by_sizes.values()]


def _has_vars(a) -> bool:
    return isinstance(a, Var) or any(q.has_vars() for q in _inner(a))


def _zero(p: Poly) -> "Guard":
    """`p == 0`, written as `d % 2 == 0` when p is (minus) a remainder."""
    if _remainder_src(p, None) is None and _remainder_src(-p, None) is not None:
        p = -p
    return Guard(p, "==", Poly())


def gcd_all(values) -> int:
    return math.gcd(*[plain(v) for v in values])
