"""One class for a block's specializations, branching at construction time.

A block is evaluated once per distinct set of decisions (`stride != 1`, `t == 1`,
`bilinear`), and each evaluation writes its own class body. A person writes one
class that decides in its constructor, as torchvision's BasicBlock does:

    self.downsample = (Downsample(in_channels, out, stride)
                       if stride != 1 or in_channels != out else None)

and whose forward asks the module it built
(`skip = self.downsample(x) if self.downsample is not None else x`), or a decision the
spec named (`self.use_res_connect`, kept by the constructor).
`merge` writes that class from the bodies: the statements every body has are
written once, the others in `if`/`elif`/`else` chains, or in one conditional
expression where a chain would only choose between a member and None, or
between a local a branch computes and a value the other has. `__init__` chooses by the
decisions each body was made under (the guards, printed as conditions on the
constructor's arguments and minimized over the cases this file has); `forward`
chooses by the members one body builds and another sets to None. Walking the
merged class with one body's arguments runs exactly that body's statements.

A decision is the spec's whole condition (`stride != 1 or in_channels != out`: ir/dims.py
Compound), and one that a block this one calls decides in its own constructor is left to it
(torch_codegen.callee_decided). Arguments outside every case this file compiled are built all
the same where they differ from a compiled case only in decisions no branch of the class tests
and that the uses of one body made both ways; the others make the constructor raise: as the
spec's need with its check's line where each is a compiled case failing one of the spec's own
checks (`MBConv needs stride != 1 or in_channels != out or k % 2 != 0 (efficientnet.dl:67)`),
else naming the block's spec line and the arguments the file never wrote code for (`Block
(two.dl:2) does not take stride == 1 and in_channels != out`). A body a
loop made with one pass is the body of more passes at that count (`range(1, blocks)` is
empty), so it needs no branch of its own.
A merge is refused (the bodies stay separate classes) when a case cannot be told
apart in Python, or when the bodies differ by a count (`layers == 6` and
`layers == 12`: an unrolled loop, which branches would only spell out again).
"""
from __future__ import annotations

import difflib
import itertools
import keyword
import re
from dataclasses import dataclass, field

from ..ir.pyliteral import py_str, top_level

INDENT = "    "
WIDTH = 120            # a line's characters at most, as torchvision's black config (line-length = 120)
MAX_ATOMS = 8          # decisions a merge considers (cases are enumerated: 2 ** MAX_ATOMS)
_MEMBER = re.compile(r'^self\.([A-Za-z_]\w*) = |^self\.register_buffer\("(\w+)"')
_NOT_FLAG = re.compile(r"not [A-Za-z_]\w*")   # a test that is a flag's negation: `not bilinear`


@dataclass(frozen=True)
class Atom:
    """One decision, as Python: `true` when it holds, `false` when not."""
    key: object
    true: str
    false: str
    subst: tuple | None = None     # `padding == "same"`: ('"same"', "padding"), the one spelling the other
    logic: tuple | None = None     # the spec's condition `a or b`: ("or", (("atom", key, holds), ...)), its
                                   # operands as the atoms they are (holds: the operand is that atom, not its negation)
    where: str = ""                # a check of the spec whose other outcome is an error: its position (`m.dl:9`)
    # the spec's name for the decision and the atom's value where it holds: (`use_res_connect`, True)
    named: tuple | None = field(default=None, compare=False)


@dataclass
class Body:
    """One specialization's class body, and the decisions each of its uses was made under."""
    init: list             # __init__'s statements after super().__init__(), unindented
    forward: list          # forward's lines, `def forward(...):` first
    cases: list            # per use: [(Atom, holds), ...]
    flags: dict            # the flag arguments that tell the bodies apart -> their value in this one
    first: list = None     # the constructor's first statement: `super().__init__()`, or an
                           # nn.Sequential's `super().__init__(first, *rest)`
    quiet: frozenset = frozenset()   # members whose construction draws no random numbers (a norm)


@dataclass
class Merged:
    init: list                     # after the first statement
    forward: list
    first: list | None = None      # the bodies' first statements as a chain; None: all alike
    check: list = None             # `if not (...): raise ValueError(...)` for arguments no case covers


def merge(block: str, bodies: list[Body], args: set, where: str = "") -> Merged | None:
    """One class body for every given body, or None when they cannot be merged (see the module doc).
    `args` are the constructor's argument names (a condition forward tests reads them as members);
    `where`: the block's spec position, for the message of the arguments it refuses."""
    if len({b.forward[0] if b.forward else "" for b in bodies}) != 1:
        return None     # different inputs, or an nn.Sequential's forward and another's
    bodies = _without_single_passes(bodies)
    atoms = _atoms(bodies)
    if len(atoms) > MAX_ATOMS:
        return None
    cases = [_minterms(b.cases, atoms) for b in bodies]
    if any(not c for c in cases):
        return None
    used: set = set()      # the atoms a branch of the class tests
    init = _merge_init(bodies, cases, atoms, used)
    ctx = _ForwardContext(bodies, cases, atoms, args, used=used)
    forward = _merge_forward(ctx) if bodies[0].forward else []
    if forward is None:
        return None
    members = set().union(*ctx.built)
    if ctx.stored & members:
        return None     # `self.stride` would be a module's name too
    keep = [f"self.{f} = {f}" for f in sorted(ctx.stored, key=_first_use(forward)) if f"self.{f} = {f}" not in init]
    keep += [f"self.{name} = {a.true if a.named[1] else a.false}" for name, a in ctx.named.items()]
    first = _merge_first(bodies, cases, atoms, used)
    if first is None and bodies[0].first and bodies[0].first != ["super().__init__()"]:
        first = list(bodies[0].first)   # one body left (_without_single_passes): its first statement
    return Merged(keep + init, forward, first, refusal(block, where, bodies, cases, atoms, used))


_REST = re.compile(r", \*\[[^\[\]]* for _ in range\(1, ([A-Za-z_]\w*)\)\]")


def _without_single_passes(bodies: list[Body]) -> list[Body]:
    """A body whose loop ran once (`blocks == 1` in each of its uses) that is another body's with the
    elements after the first left out (`*[MBConv(out, out, ...) for _ in range(1, blocks)]`) is that
    body at `blocks == 1`, where the range is empty, as in torchvision's `_make_layer`: its uses
    join the other body's, and the class needs no branch for them."""
    out = list(bodies)
    pair = _single_pass_of(out)
    while pair is not None:
        b, other = pair
        out.remove(b)
        out[out.index(other)] = Body(other.init, other.forward, other.cases + b.cases, other.flags, other.first)
        pair = _single_pass_of(out)
    return out


def _single_pass_of(bodies: list[Body]) -> tuple | None:
    """(a body, the body it is at a count of one) or None (see _without_single_passes)."""
    for b in bodies:
        for other in bodies:
            if other is b or other.forward != b.forward or other.flags != b.flags:
                continue
            text = _flat(other.first or []) + "\n" + "\n".join(other.init)
            m = _REST.search(text)
            if m and _REST.sub("", text, count=1) == _flat(b.first or []) + "\n" + "\n".join(b.init) and \
                    all(_holds_in(case, f"{m.group(1)} == 1") for case in b.cases):
                return b, other
    return None


def _flat(lines: list[str]) -> str:
    """A statement wrapped over lines, on one line."""
    return " ".join(line.strip() for line in lines).replace("( ", "(")


def _holds_in(case: list, text: str) -> bool:
    return any((a.true == text and holds) or (a.false == text and not holds) for a, holds in case)


def _merge_first(bodies: list[Body], cases: list, atoms: list[Atom], used: set) -> list[str] | None:
    """None where every body starts alike; else the bodies' first statements as a chain (an
    nn.Sequential of a Bottleneck or of a BasicBlock: `if bottleneck: super().__init__(...)`)."""
    firsts = [tuple(b.first or ["super().__init__()"]) for b in bodies]
    if len(set(firsts)) == 1:
        return None
    union = set().union(*cases)
    return _init_chain([statements(list(f)) for f in firsts], cases, union, atoms, used)


def _first_use(forward: list[str]):
    text = "\n".join(forward)
    return lambda name: (text.find(f"self.{name}"), name)


# ---------------------------------------------------------------- decisions as conditions


def _atoms(bodies: list[Body]) -> list[Atom]:
    """The decisions that tell the uses apart, in first-seen order."""
    out: dict = {}
    for b in bodies:
        for case in b.cases:
            for atom, _ in case:
                out.setdefault(atom.key, atom)
    return list(out.values())


def _minterms(cases: list, atoms: list[Atom]) -> set:
    """The assignments of the atoms (bit i: atom i holds) under which some use of a body was made."""
    index = {a.key: i for i, a in enumerate(atoms)}
    out = set()
    for case in cases:
        fixed = {index[a.key]: holds for a, holds in case}
        free = [i for i in range(len(atoms)) if i not in fixed]
        base = sum(1 << i for i, holds in fixed.items() if holds)
        if any(fixed.get(index[a.key]) != holds for a, holds in case):
            continue   # contradictory: no assignment
        for bits in itertools.product((0, 1), repeat=len(free)):
            out.add(base + sum(1 << i for i, bit in zip(free, bits) if bit))
    return out


def condition(on: set, care: set, atoms: list[Atom], used: set | None = None) -> str:
    """A short Python condition true on `on`, false on `care - on` (other assignments: either way);
    the indices of the atoms it reads are added to `used`."""
    cubes = _cover(on, care, len(atoms))
    if used is not None:
        used.update(i for c in cubes for i in c)
    if any(not c for c in cubes):
        return "True"
    texts = [" and ".join(_operand(atoms[i].true if holds else atoms[i].false, len(c) > 1)
                          for i, holds in sorted(c.items()))
             for c in cubes]
    if len(texts) == 1:
        return texts[0]
    return " or ".join(f"({t})" if len(c) > 1 else t for t, c in zip(texts, cubes))


def _operand(text: str, joined: bool) -> str:
    """An atom's Python as an operand of `and`: the spec's condition `a or b` in parentheses."""
    return f"({text})" if joined and _top_level_or(text) else text


def _top_level_or(text: str) -> bool:
    return any(ch == " " and text.startswith(" or ", i) for i, ch in top_level(text))


def _cover(on: set, care: set, k: int) -> list[dict]:
    """A small set of cubes (partial assignments) covering `on` without touching `care - on`."""
    off = care - on
    candidates = []
    for values in itertools.product((None, False, True), repeat=k):
        cube = {i: v for i, v in enumerate(values) if v is not None}
        terms = _cube_terms(cube, k)
        if terms & on and not terms & off:
            candidates.append((cube, terms))
    chosen, left = [], set(on)
    while left:
        cube, terms = max(candidates, key=lambda c: (len(c[1] & left), -len(c[0])))
        chosen.append(cube)
        left -= terms
    return chosen


def _cube_terms(cube: dict, k: int) -> set:
    free = [i for i in range(k) if i not in cube]
    base = sum(1 << i for i, v in cube.items() if v)
    return {base + sum(1 << i for i, bit in zip(free, bits) if bit)
            for bits in itertools.product((0, 1), repeat=len(free))}


def refusal(block: str, where: str, bodies: list[Body], cases: list, atoms: list[Atom], used: set) -> list[str]:
    """`if ...: raise ValueError(...)` for the arguments the class cannot build (`refused_cases`)."""
    refused = refused_cases(bodies, cases, atoms, used)
    possible = {m for m in range(1 << len(atoms)) if _possible(m, atoms)}
    if not refused & possible:
        return []
    cond = condition(refused & possible, possible, atoms)
    checks = _failed_checks(refused & possible, cases, atoms, _free_bits(bodies, atoms, used))
    if checks:     # what the spec's own checks refuse: a need, as a hand-written module states one
        msg = f"{block} needs {condition(possible - refused, possible, atoms)} ({', '.join(checks)})"
    else:
        msg = f"{block} ({where}) does not take {cond}" if where else f"{block} does not take {cond}"
    return [f"if {cond}:", f"{INDENT}raise ValueError({py_str(msg)})"]


def _failed_checks(refused: set, cases: list, atoms: list[Atom], free: int) -> list[str]:
    """The positions of the spec's checks that refuse every refused assignment: each differs from a
    compiled use only in checks and in decisions the class is free of (`_free_bits`): ResnetBlock's
    `skip + h` without its shortcut at another width, where the spec, deciding as that use did,
    fails the check. Empty where some refused assignment is not so explained (the file has no code
    for it)."""
    check_bits = sum(1 << i for i, a in enumerate(atoms) if a.where)
    compiled = set().union(*cases)
    out: set = set()
    for m in refused:
        near = [c for c in compiled if (m ^ c) & ~(check_bits | free) == 0]
        if not near:
            return []
        out |= {atoms[i].where for i in range(len(atoms)) if (m ^ near[0]) >> i & 1 and atoms[i].where}
    return sorted(out)


def _free_bits(bodies: list[Body], atoms: list[Atom], used: set) -> int:
    """The atoms no branch of the class tests that uses of one body made both ways (refused_cases)."""
    both = _made_both_ways(bodies)
    return sum(1 << i for i in range(len(atoms)) if i not in used and atoms[i].key in both)


def refused_cases(bodies: list[Body], cases: list, atoms: list[Atom], used: set) -> set:
    """The assignments of the atoms the class refuses. One outside every compiled case is built all
    the same when it differs from a compiled one only in decisions that no branch of the class tests
    and that the uses made both ways (`expand != 1`, decided in a block this one only calls): the
    class runs the same code for both. Other differences may be a real constraint of the spec (an
    odd `k` where the block adds its input to its result: never seen failing here), or a decision
    whose code the file never wrote; those are refused."""
    union = set().union(*cases)
    free = _free_bits(bodies, atoms, used)
    seen = {m & ~free for m in union}
    return {m for m in range(1 << len(atoms)) if m not in union and m & ~free not in seen}


_BOUND = re.compile(r"^([A-Za-z_]\w*) (==|!=|<|<=|>|>=) (-?\d+)$")


def _possible(m: int, atoms: list[Atom]) -> bool:
    """Whether some integers meet the bounds an assignment sets on one argument (`blocks < 1` and
    `blocks == 1` cannot both hold), and every condition of the spec comes out as its operands'
    atoms say (`stride != 1 or in_channels != out` cannot fail where `in_channels != out` holds);
    decisions of other shapes are taken as possible."""
    index = {a.key: i for i, a in enumerate(atoms)}
    if any(a.logic and _value(a.logic, index, m) not in (None, bool(m >> i & 1)) for i, a in enumerate(atoms)):
        return False
    bounds: dict = {}
    for i, a in enumerate(atoms):
        found = _BOUND.match(a.true if isinstance(a.true, str) else "")
        if found:
            name, op, value = found.groups()
            bounds.setdefault(name, []).append((op, int(value), bool(m >> i & 1)))
    for rules in bounds.values():
        values = [v for _, v, _ in rules]
        if not any(all(_meets(x, op, v) == holds for op, v, holds in rules)
                   for x in range(min(values) - 2, max(values) + 3)):
            return False
    return True


def _value(logic: tuple, index: dict, m: int) -> bool | None:
    """A condition's value where the assignment `m` settles it (None where it does not)."""
    if logic[0] == "atom":
        _, key, holds = logic
        return None if key not in index else bool(m >> index[key] & 1) == holds
    op, items = logic
    values = [_value(x, index, m) for x in items]
    if (op == "or") in values:
        return op == "or"
    return None if None in values else op == "and"


def _meets(x: int, op: str, v: int) -> bool:
    return {"==": x == v, "!=": x != v, "<": x < v, "<=": x <= v, ">": x > v, ">=": x >= v}[op]


def _made_both_ways(bodies: list[Body]) -> set:
    """The keys of the atoms that two uses of one body found holding and not holding: the body's code
    is the same either way. (Uses of two bodies that differ in it may differ because of it: a class
    that tests another atom to tell those bodies apart would otherwise build one body where the
    spec builds the other.)"""
    out: set = set()
    for body in bodies:
        found: dict = {}
        for case in body.cases:
            for atom, holds in case:
                found.setdefault(atom.key, set()).add(holds)
        out |= {k for k, v in found.items() if len(v) == 2}
    return out


# ---------------------------------------------------------------- statements


def statements(lines: list[str]) -> list[tuple]:
    """Lines grouped into statements: a line at column 0 with the indented lines after it (a
    compound statement's body, a long call's arguments) and its closing bracket or `else:`."""
    out: list[list[str]] = []
    for line in lines:
        starts = line and not line[0].isspace() and line[0] not in ")]}" and \
            not re.match(r"(else|elif|except|finally)\b", line)
        if starts or not out:
            out.append([line])
        else:
            out[-1].append(line)
    return [tuple(s) for s in out]


def _lcs(a: list, b: list) -> list[tuple]:
    """Index pairs of a longest common subsequence of a and b."""
    n, m = len(a), len(b)
    best = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            best[i][j] = best[i + 1][j + 1] + 1 if a[i] == b[j] else max(best[i + 1][j], best[i][j + 1])
    pairs, i, j = [], 0, 0
    while i < n and j < m:
        if a[i] == b[j]:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif best[i + 1][j] >= best[i][j + 1]:
            i += 1
        else:
            j += 1
    return pairs


def hunks(seqs: list[list]) -> tuple[list, list]:
    """(the statements every sequence has, in order; per sequence, its statements before each of
    those and after the last): sequence s is hunks[s][0] + common[0] + hunks[s][1] + ..."""
    common = list(seqs[0])
    for s in seqs[1:]:
        common = [common[i] for i, _ in _lcs(common, s)]
    out = []
    for s in seqs:
        pos = [j for _, j in _lcs(common, s)]
        bounds = [-1] + pos + [len(s)]
        out.append([list(s[bounds[k] + 1:bounds[k + 1]]) for k in range(len(bounds) - 1)])
    return common, out


def _emit(common: list, parts: list) -> list[str]:
    """Lines: parts[0], common[0], parts[1], ... (parts are lists of lines)."""
    out: list[str] = []
    for k, part in enumerate(parts):
        out += part
        if k < len(common):
            out += list(common[k])
    return out


def _indented(stmts: list) -> list[str]:
    return [INDENT + line if line else line for s in stmts for line in s]


# ---------------------------------------------------------------- __init__


def _merge_init(bodies: list[Body], cases: list, atoms: list[Atom], used: set) -> list[str]:
    common, parts = hunks(_aligned(_unified([statements(b.init) for b in bodies], bodies), bodies))
    members = [set(_members(b.init)) for b in bodies]
    _pad_members(parts, members)
    union = set().union(*cases)
    gaps = []
    for k in range(len(common) + 1):
        gaps.append(_init_chain([p[k] for p in parts], cases, union, atoms, used))
    return _emit(common, gaps)


def _aligned(stmts: list, bodies: list[Body]) -> list:
    """The statements every body has alike that build a member drawing no random numbers (`self.norm1 =
    nn.LayerNorm(dim)`: Body.quiet) moved to where the reference body builds them: a post-norm layer's
    norm after its attention and a pre-norm one's before it are then one statement, written once,
    as a person writes it, and every other member still draws what it drew."""
    ref = stmts[_reference(bodies)]
    movable = [s for s in ref if _quiet(s, bodies) and all(other.count(s) == 1 for other in stmts)]
    out = []
    for mine in stmts:
        placed = [s for s in mine if s not in movable]
        for s in movable:
            before = ref[:ref.index(s)]
            at = next((placed.index(p) + 1 for p in reversed(before) if p in placed), 0)
            placed.insert(at, s)
        out.append(placed if mine is not ref else mine)
    return out


def _reference(bodies: list[Body]) -> int:
    """The body whose order the others take: the one with its flags false where flags tell them apart
    (the same whichever value the model was compiled for, so its parameters come in one order),
    else the first."""
    keys = [tuple(sorted((k, repr(v)) for k, v in b.flags.items())) for b in bodies]
    return keys.index(min(keys)) if any(keys) else 0


def _quiet(stmt: tuple, bodies: list[Body]) -> bool:
    """A one-line statement building a quiet member of every body, reading no local of the constructor
    (moved, it cannot then read one before it is set)."""
    m = _MEMBER.match(stmt[0])
    if len(stmt) != 1 or not m or not m.group(1) or not all(m.group(1) in b.quiet for b in bodies):
        return False
    read = set(re.findall(r"(?<![.\w])([A-Za-z_]\w*)(?!\s*=[^=])", stmt[0].split("=", 1)[1]))
    return not read & set().union(*(_locals(b.init) for b in bodies))


_LOCAL = re.compile(r"^([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*(?:[-+*/]?=)(?!=)")


def _locals(lines: list[str]) -> set:
    """The names the constructor assigns (`in_features = width`, `layers, size = [], 32`)."""
    out: set = set()
    for line in lines:
        m = _LOCAL.match(line)
        if m and not line.startswith("self."):
            out |= {n.strip() for n in m.group(1).split(",")}
    return out


def _unified(stmts: list, bodies: list[Body]) -> list:
    """Where a body was made for `padding == "same"`, a statement that reads `padding="same"` and
    another body's that reads `padding=padding` are one statement: spell it the other's way."""
    out = []
    for v, mine in enumerate(stmts):
        others = {s for w, theirs in enumerate(stmts) if w != v for s in theirs}
        subs = [a.subst for a in _holding(bodies[v].cases) if a.subst]
        out.append([_respelled(s, subs, others) for s in mine])
    return out


def _holding(cases: list) -> list[Atom]:
    """The atoms that hold in every use of a body."""
    sets = [{a for a, holds in case if holds} for case in cases]
    return sorted(set.intersection(*sets), key=lambda a: repr(a.key)) if sets else []


def _respelled(stmt: tuple, subs: list, others: set) -> tuple:
    for lit, name in subs:
        pattern = re.escape(lit) if lit[0] in "\"'" else rf"\b{re.escape(lit)}\b"
        t = tuple(re.sub(pattern, name, line) for line in stmt)
        if t != stmt and t in others:
            return t
    return stmt


def _members(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        m = _MEMBER.match(line)
        if m:
            out.append(m.group(1) or m.group(2))
    return out


def _pad_members(parts: list, members: list[set]) -> None:
    """A member one body builds and another does not is None in the other (`self.downsample = None`),
    set where the first builds it, so that forward can ask."""
    done: list[set] = [set() for _ in parts]
    for k in range(len(parts[0])):
        made = [m for p in parts for s in p[k] for m in _members(list(s[:1]))]
        for v, p in enumerate(parts):
            for name in dict.fromkeys(made):
                if name not in members[v] and name not in done[v]:
                    done[v].add(name)
                    p[k].append((_none_line(name, made_by=parts, k=k),))


def _none_line(name: str, made_by: list, k: int) -> str:
    for p in made_by:
        for s in p[k]:
            if s[0].startswith(f'self.register_buffer("{name}"'):
                return f'self.register_buffer("{name}", None)'
    return f"self.{name} = None"


def _init_chain(hunk: list, cases: list, union: set, atoms: list[Atom], used: set) -> list[str]:
    """The statements of one gap: `if ...: ... elif ...: ... else: ...` by the bodies' cases."""
    groups = _groups(hunk)
    if len(groups) == 1:
        return [line for s in hunk[0] for line in s]
    groups.sort(key=lambda g: (not hunk[g[0]], _only_none(hunk[g[0]]), -sum(len(s) for s in hunk[g[0]])))
    if len(groups) == 2 and _negated_first(groups, hunk, cases, union, atoms):
        groups.reverse()     # `if bilinear: ... else: ...`, not `if not bilinear:` with an else
    if len(groups) == 2:
        cond = lambda: condition(set().union(*(cases[v] for v in groups[0])), union, atoms, used)  # noqa: E731
        one = _member_or_none(hunk[groups[0][0]], hunk[groups[1][0]], cond)
        if one is None:
            one = _one_of(hunk[groups[0][0]], hunk[groups[1][0]], cond)
        if one is not None:
            return one
    out, seen = [], set()
    for n, group in enumerate(groups):
        stmts = hunk[group[0]]
        on = set().union(*(cases[v] for v in group))
        if n == len(groups) - 1:
            if stmts:
                out += ["else:"] + _indented(stmts)
            break
        cond = condition(on, union - seen, atoms, used)
        out += [f"{'if' if n == 0 else 'elif'} {cond}:"] + (_indented(stmts) if stmts else [INDENT + "pass"])
        seen |= on
    return out


def _negated_first(groups: list, hunk: list, cases: list, union: set, atoms: list[Atom]) -> bool:
    """Whether the first of two branches that both build something is chosen by `not flag`."""
    if any(not hunk[g[0]] or _only_none(hunk[g[0]]) for g in groups):
        return False
    first = condition(set().union(*(cases[v] for v in groups[0])), union, atoms)
    return _NOT_FLAG.fullmatch(first) is not None


def _member_or_none(built: list, other: list, cond) -> list[str] | None:
    """`self.downsample = Downsample(...) if ... else None`: a member one branch builds in a single
    statement and the other sets to None, written as one assignment, as torchvision's `_make_layer`
    chooses its downsample; None where the branches are anything else."""
    if len(built) != 1 or len(built[0]) != 1 or len(other) != 1 or len(other[0]) != 1:
        return None
    m = re.match(r"self\.([A-Za-z_]\w*) = (.+)$", built[0][0])
    if m is None or other[0][0] != f"self.{m.group(1)} = None":
        return None
    return _conditional(f"self.{m.group(1)} = ", m.group(2), cond(), "None")


def _one_of(chosen: list, other: list, cond) -> list[str] | None:
    """`self.fc = nn.Linear(2 * hidden, classes) if bidirectional else nn.Linear(hidden, classes)`: one
    member each branch makes in one statement of one line, as one assignment where it fits a line;
    None where the branches are anything else."""
    parts = _one_value_each(chosen, other, r"self\.[A-Za-z_]\w* = ")
    if parts is None:
        return None
    (head, value, otherwise), test = parts, cond()
    if _NOT_FLAG.fullmatch(test):   # `... if bidirectional else ...`, not `if not`
        test, value, otherwise = test[4:], otherwise, value
    one = _conditional(head, value, test, otherwise)
    return one if len(one) == 1 else None


def _conditional(head: str, value: str, test: str, otherwise: str) -> list[str]:
    """`head value if test else otherwise`, on one line where it fits in a method body, else
    parenthesized on two, the condition under the value."""
    line = f"{head}{value} if {test} else {otherwise}"
    if len(2 * INDENT + line) <= WIDTH:
        return [line]
    return [f"{head}({value}", f"{' ' * (len(head) + 1)}if {test} else {otherwise})"]


def _only_none(stmts: list) -> bool:
    """Statements that only set members to None: the `else` of a chain, as a person orders it."""
    return all(s[0].endswith(" = None") or s[0].endswith(", None)") for s in stmts)


def _groups(hunk: list) -> list[list[int]]:
    """The bodies with the same statements in this gap, in first-seen order."""
    out: dict = {}
    for v, stmts in enumerate(hunk):
        out.setdefault(tuple(stmts), []).append(v)
    return list(out.values())


# ---------------------------------------------------------------- forward


@dataclass
class _ForwardContext:
    bodies: list
    cases: list
    atoms: list
    args: set
    built: list = None          # per body, the members it builds
    stored: set = None          # arguments forward reads as members (`self.stride`)
    used: set = None            # the atoms a branch tests (indices into atoms)
    named: dict = None          # decisions forward reads as the spec named them: name -> the condition

    def __post_init__(self):
        self.built = [set(_members(b.init)) for b in self.bodies]
        self.stored = set()
        self.named = {}


def _merge_forward(ctx: _ForwardContext) -> list[str] | None:
    """forward, branching on the members a body built (`if self.downsample is not None:`), on a flag
    argument kept as a member (`if self.causal:`), or on the decision itself, read from arguments
    kept as members (`if self.stride == 1 and self.in_channels == self.out:`)."""
    lines = [[line[len(INDENT):] for line in b.forward[1:]] for b in ctx.bodies]
    common, parts = hunks([statements(ls) for ls in lines])
    gaps = []
    for k in range(len(common) + 1):
        chain = _forward_chain([p[k] for p in parts], ctx)
        if chain is None:
            return None
        gaps.append(chain)
    return [ctx.bodies[0].forward[0]] + [INDENT + line if line else line for line in _emit(common, gaps)]


def _forward_chain(hunk: list, ctx: _ForwardContext) -> list[str] | None:
    """One gap of forward as a chain; a body that built a member comes first
    (`if self.downsample is not None:`), as a person writes it."""
    groups = _groups(hunk)
    if len(groups) == 1:
        return [line for s in hunk[0] for line in s]
    left = set(range(len(hunk)))
    if len(groups) == 2:
        test, group = _forward_test(groups, left, hunk, ctx)
        other = next(g for g in groups if g is not group)
        one = _value_or_input(hunk[group[0]], hunk[other[0]], test)
        if one is None:
            one = _either(hunk[group[0]], hunk[other[0]], test)
        if one is not None:
            return one
    out: list[str] = []
    while len(groups) > 1:
        test, group = _forward_test(groups, left, hunk, ctx)
        stmts = hunk[group[0]]
        out += [f"{'elif' if out else 'if'} {test}:"] + (_indented(stmts) if stmts else [INDENT + "pass"])
        left -= set(group)
        groups.remove(group)
    stmts = hunk[groups[0][0]]
    return out + (["else:"] + _indented(stmts) if stmts else [])


def _value_or_input(chosen: list, other: list, test: str) -> list[str] | None:
    """`skip = self.downsample(x) if self.downsample is not None else x` and the statements after
    it once, where one branch computes a local in its first statement and the other runs the same
    statements on a value it has (a residual's shortcut); None where the branches differ otherwise."""
    if not chosen or any(len(s) != 1 for s in chosen + other):
        return None
    m = re.match(r"([A-Za-z_]\w*) = (.+)$", chosen[0][0])
    if m is None:
        return None
    local, rest, theirs = m.group(1), [s[0] for s in chosen[1:]], [s[0] for s in other]
    if not rest or len(rest) != len(theirs) or any(re.search(rf"\b{local}\b", t) for t in theirs):
        return None
    for name in dict.fromkeys(re.findall(r"(?<![.\w])[A-Za-z_]\w*", "\n".join(theirs))):
        if not keyword.iskeyword(name) and [re.sub(rf"(?<![.\w]){local}\b", name, r) for r in rest] == theirs:
            return _conditional(f"{local} = ", m.group(2), test, name) + rest
    return None


def _either(chosen: list, other: list, test: str) -> list[str] | None:
    """`return inp + h if self.stride == 1 and ... else h`: branches that each give one value the same
    way (a return, or one local) as the conditional expression the spec wrote (`output a if c else b`);
    None where they do more, where it does not fit one line, or where a value holds a conditional of its
    own (it would bind wrongly)."""
    parts = _one_value_each(chosen, other, r"return |[A-Za-z_]\w* = ")
    if parts is None:
        return None
    one = _conditional(parts[0], parts[1], test, parts[2])
    return one if len(one) == 1 else None   # wrapped over two lines, the if statement reads better


def _one_value_each(chosen: list, other: list, head: str) -> tuple | None:
    """(the head, the value, the other value) of two branches that are each one statement of one line
    starting with the same `head` (a pattern: `return `, `self.fc = `), neither value holding a
    conditional or a lambda of its own (a conditional around it would bind wrongly); else None."""
    if len(chosen) != 1 or len(other) != 1 or len(chosen[0]) != 1 or len(other[0]) != 1:
        return None
    m = re.match(rf"({head})(.+)$", chosen[0][0])
    if m is None or not other[0][0].startswith(m.group(1)):
        return None
    value, otherwise = m.group(2), other[0][0][len(m.group(1)):]
    if any(re.search(r"\b(if|lambda)\b", v) for v in (value, otherwise)):
        return None
    return m.group(1), value, otherwise


def _forward_test(groups: list, left: set, hunk: list, ctx: _ForwardContext) -> tuple:
    """(the test, the group it picks) for the next branch of a forward chain."""
    flags = [b.flags for b in ctx.bodies]
    for find in (lambda g: _member_test(set(g), left, ctx.built, hunk[g[0]]),
                 lambda g: _flag_test(set(g), left, flags, ctx.built, ctx.stored)):
        tests = [(t, g) for t, g in ((find(g), g) for g in groups) if t is not None]
        if tests:
            test, group = min(tests, key=lambda tg: tg[0].endswith(" is None") or tg[0].startswith("not "))
            flag = test.removeprefix("not ").removeprefix("self.")
            ctx.used.update(i for i, a in enumerate(ctx.atoms) if a.true == flag)   # `self.causal`
            return test, group
    care = set().union(*(ctx.cases[v] for v in left))
    on = {tuple(g): set().union(*(ctx.cases[v] for v in g)) for g in groups}
    named = [(found, g) for g in groups if (found := _named_test(on[tuple(g)], care, ctx)) is not None]
    if named:     # the spec's name for the decision (`self.use_res_connect`), true for the group if it can be
        (name, holds, atom), group = max(named, key=lambda ng: ng[0][1])
        ctx.named[name] = atom
        condition(on[tuple(group)], care, ctx.atoms, ctx.used)
        return (f"self.{name}" if holds else f"not self.{name}"), group
    conds = [(condition(on[tuple(g)], care, ctx.atoms), g) for g in groups]
    cond, group = min(conds, key=lambda cg: (" or " in cg[0], len(cg[0])))   # the plainest test first
    condition(on[tuple(group)], care, ctx.atoms, ctx.used)
    return _as_members(cond, ctx), group


def _named_test(on: set, care: set, ctx: _ForwardContext) -> tuple | None:
    """(name, whether it holds for `on`, the atom) where one decision the spec bound to a name
    (Atom.named) tells `on` from the rest of `care` and no argument or member of the class has that
    name; the constructor then keeps it (`self.use_res_connect = stride == 1 and in_channels == out`)."""
    cubes = _cover(on, care, len(ctx.atoms))
    if len(cubes) != 1 or len(cubes[0]) != 1:
        return None
    (i, holds), = cubes[0].items()
    atom = ctx.atoms[i]
    if atom.named is None:
        return None
    name, value = atom.named
    if name in ctx.args or name in set().union(*ctx.built) or ctx.named.get(name, atom) is not atom:
        return None
    return name, holds == value, atom


def _as_members(cond: str, ctx: _ForwardContext) -> str:
    """An __init__ condition read in forward: its arguments as members, kept by __init__."""
    def member(m):
        if m.group(0) in ctx.args:
            ctx.stored.add(m.group(0))
            return f"self.{m.group(0)}"
        return m.group(0)
    return re.sub(r"(?<![.\w\"'])[A-Za-z_]\w*(?![\w\"'])", member, cond)


def _flag_test(group: set, left: set, flags: list[dict], built: list[set], stored: set) -> str | None:
    """`self.causal` (or `not self.causal`) true for exactly the group's bodies among those left."""
    members = set().union(*built)
    for f in flags[0]:
        if f in members:
            continue    # the name is a module's
        true = {v for v in left if flags[v][f]}
        if true in (group, left - group):
            stored.add(f)
            return f"self.{f}" if true == group else f"not self.{f}"
    return None


def _member_test(group: set, left: set, built: list[set], stmts: list) -> str | None:
    """`self.m is not None` true for exactly the group's bodies among those left; a member the
    group's statements read first."""
    names = sorted(set().union(*(built[v] for v in left)),
                   key=lambda m: (f"self.{m}" not in "\n".join(line for s in stmts for line in s), m))
    for m in names:
        has = {v for v in left if m in built[v]}
        if has == group:
            return f"self.{m} is not None"
        if left - has == group:
            return f"self.{m} is None"
    return None


# ---------------------------------------------------------------- a flag argument read where it was a value

_TOKEN = re.compile(r"[A-Za-z_]\w*|\d+|\s+|.")


def flags_spelled(bodies: list[Body]) -> list[Body]:
    """The bodies with the constructor statements that differ only in a flag's value, between two
    bodies that differ only in that flag, spelled with the flag's name in both: `nn.LSTM(...,
    bidirectional=True)` and `nn.LSTM(...)` (the default) are `nn.LSTM(..., bidirectional=bidirectional)`,
    `Layer(dim, pre_norm=True)` and `Layer(dim, pre_norm=False)` are `Layer(dim, pre_norm=pre_norm)`, as a
    person passes a flag on.
    Pairs are spelled until none changes, so that a statement reads every flag it differs in."""
    inits = [statements(b.init) for b in bodies]
    firsts = [statements(b.first or []) for b in bodies]
    changed = True
    while changed:
        changed = False
        for v, w in itertools.permutations(range(len(bodies)), 2):
            flag = _one_flag_apart(bodies[v].flags, bodies[w].flags)
            if flag is not None:
                value = bodies[v].flags[flag]
                changed |= _spell_pair(inits[v], inits[w], flag, value)
                changed |= _spell_pair(firsts[v], firsts[w], flag, value)
    return [Body([line for st in i for line in st], b.forward, b.cases, b.flags,
                  [line for st in f for line in st] if b.first is not None else None)
            for b, i, f in zip(bodies, inits, firsts)]


def _one_flag_apart(mine: dict, theirs: dict) -> str | None:
    apart = [f for f in mine if mine[f] != theirs.get(f)]
    return apart[0] if len(apart) == 1 and isinstance(mine[apart[0]], bool) else None


def _spell_pair(mine: list, theirs: list, flag: str, value: bool) -> bool:
    """Spell each statement of `mine` that `theirs` lacks with the flag, with the statement of
    `theirs` it matches (both lists change); whether any did."""
    changed = False
    for i, st in enumerate(mine):
        if st in theirs:
            continue
        for j, other in enumerate(theirs):
            one = None if other in mine or len(other) != len(st) else \
                [_spelled_line(a, b, flag, value) for a, b in zip(st, other)]
            if one is not None and None not in one:
                mine[i] = theirs[j] = tuple(one)
                changed = True
                break
    return changed


def _spelled_line(mine: str, theirs: str, flag: str, value: bool) -> str | None:
    """The line with the flag's name where the two differ only in its value (`True` against
    `False`, or `name=True` against nothing: the argument's default); None where they differ otherwise."""
    a, b = _TOKEN.findall(mine), _TOKEN.findall(theirs)
    lit, other = str(value), str(not value)
    out: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out += a[i1:i2]
        elif op == "replace" and a[i1:i2] == [lit] and b[j1:j2] == [other]:
            out.append(flag)
        elif op == "delete" and _keyword(a[i1:i2], lit):
            out += [flag if t == lit else t for t in a[i1:i2]]
        elif op == "insert" and _keyword(b[j1:j2], other):
            out += [flag if t == other else t for t in b[j1:j2]]
        else:
            return None
    return "".join(out)


def _keyword(tokens: list[str], lit: str) -> bool:
    """Tokens that are one keyword argument `name=lit`, with its comma."""
    words = [t for t in tokens if t.strip() not in ("", ",")]
    return len(words) == 3 and words[0].isidentifier() and words[1:] == ["=", lit] and "," in tokens
