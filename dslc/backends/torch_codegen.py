"""IR -> one standalone, readable PyTorch file.

Every model becomes an `nn.Module` class whose constructor takes the model's
parameters; every block becomes a class too (its uses that differ share it, see
below, except where they differ by a count). Sizes print as
the parameter expressions they carry, so `Linear(hidden)` reads
`nn.Linear(784, hidden)`. A compile-time decision that fixed a parameter
(a loop count, a condition) is checked in the model's constructor; what a
static index relies on of a run-time size (`T > 3` for `x[:, 3]`) is checked
first thing in the model's forward, with the spec line and the size it got.

`forward` has one statement per node, or nests a node's call in the next
statement where it is that statement's only input read once (`x = x +
self.attn(self.ln_1(x))`, see _Held): names come from the user's bindings, other
values reuse a temporary (`x = self.fc1(x)`) once the value it held is dead.
A block's specializations are one class that branches in its constructor
(backends/variants.py). The file imports only torch and is byte-identical run to run.
"""
from __future__ import annotations

import ast as pyast
import functools
import os
import re
import textwrap
from dataclasses import dataclass, field, replace

from ..frontend import ast
from ..frontend.loopvars import ast_nodes, names_in
from ..ir.dims import (
    Compound,
    FloatGuard,
    FloorDiv,
    Guard,
    InDim,
    Item,
    MinMax,
    Param,
    Poly,
    Real,
    Size,
    Sym,
    Var,
    conjuncts,
    constants,
    defines,
    equal_under,
    equalities,
    expr_of,
    int_list,
    is_requirement,
    requirements,
    to_python,
    without_implied,
)
from ..ir.graph import Graph, Instance, Node
from ..ir.naming import CONSTRUCTOR_GLOBALS, READ_WHERE_FREE
from ..ir.nesting import SEP, py_path, structure, top_names
from ..ir.pyliteral import Printer, Source, literal, py_str, top_level
from ..ir.scan import block_input_types, is_scan
from ..ir.values import Ref, TensorValue
from ..ops.registry import HELPERS, TorchLayer
from ..version import __version__
from . import loops, neutral, variants
from .inplace import kept_inplace
from .pyformat import Namespace, doc_text, is_default, safe_attr, safe_ident
from .variants import Body

INDENT = "    "
MAX_FLAGS = 3      # a model's bool parameters compiled every way (2 ** MAX_FLAGS specializations) at most


class CodegenError(Exception):
    """The graph cannot be written as Python (a run-time size with no source, say)."""


@dataclass
class ModelFlags:
    """A model's bool parameters compiled the other way too (api.Program._flipped): each combination
    other than the model's own that checks, with its flags' values, and why a flag whose other value
    does not check stays fixed. The model is one class that takes its flags as live arguments
    (`if bidirectional:` in __init__ and forward), written from those specializations as a block's
    are (backends/variants.py)."""
    graphs: list = field(default_factory=list)     # [({flag: value}, Graph)]
    refused: dict = field(default_factory=dict)    # flag -> why its other value stays refused
    failed: list = field(default_factory=list)     # why each combination of the others that does not check


class _Unmerged(Exception):
    """A model's specializations that do not merge: the file is written again with its flags fixed."""


@dataclass
class ClassInfo:
    name: str
    signature: list                      # [(param_key, python_name, annotation, default_src | None)]
    code: str = ""                       # with a __DOC__ placeholder for the docstring
    heading: str = ""                    # "The block `X` (file:line)"
    facts: list | None = None            # guards true for every use of this class
    graphs: list = field(default_factory=list)   # the block specializations it is written for
    loops: set = field(default_factory=set)      # the spans of the unrolled loops it writes as Python loops
    walks: set = field(default_factory=set)      # the list parameters it walks in a Python loop

    def source(self) -> str:
        """The class, documented: what it was built for (a fact on arguments its constructor takes is
        checked first thing in it, as a hand-written module checks one), and what its inputs need
        (`x.shape[2] == dim`: torch's own error says when they do not)."""
        facts = [self._named(f) for f in self.facts or []]
        inputs = [f for f in facts if ".shape[" in f]
        built = [f for f in facts if f not in inputs]
        needs = [f for f in built if getattr(f, "where", "")]   # checks of the spec, not decisions
        chosen = [f for f in built if f not in needs]
        doc = self.heading + (", built for " + " and ".join(chosen) if chosen else "") + "." + \
            (f" Needs {' and '.join(needs)}." if needs else "") + \
            (f" Expects inputs with {' and '.join(inputs)}." if inputs else "")
        lines = self.code.replace("__DOC__", _wrapped(doc, INDENT)).split("\n")
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{INDENT}def __init__("))
        at = next(i for i in range(start, len(lines)) if lines[i].endswith("):")) + 1   # the signature's end
        lines = lines[:at] + [INDENT * 2 + c for c in self._checks(built)] + lines[at:]
        return "\n".join(_fitted(lines))

    def _named(self, f: "Fact") -> "Fact":
        """The fact in the constructor's argument names where it reads only those (`in_channels != out`
        for `x.shape[1] != out`: the constructor can check it), else as it is."""
        g = getattr(f, "guard", None)
        if g is None or not any(isinstance(a, InDim) for a in _base_atoms(g)):
            return f
        try:
            return fact_of(g, _namer(_argument_names(self.signature)))
        except _Unprintable:
            return f

    def _checks(self, facts: list) -> list[str]:
        """`if stride != 1: raise ValueError(...)` for each fact that reads only constructor arguments."""
        taken = set(_argument_names(self.signature).values())
        where = re.search(r"\(([^()]*)\)$", self.heading)
        out = []
        for f in facts:
            names = set(re.findall(r"[A-Za-z_]\w*", f)) - {"and", "or", "not", "if", "else", "in", "len"}
            if getattr(f, "negated", "") and names <= taken:
                at = getattr(f, "where", "") or (where.group(1) if where else "")   # the check's position, else the block's
                msg = f"{self.name} needs {f}" + (f" ({at})" if at else "")
                out += [f"if {f.negated}:", f"{INDENT}raise ValueError({py_str(msg)})"]
        return out


class Fact(str):
    """A fact a class was built for, as Python (`stride == 1`), its negation (`stride != 1`), and the
    spec position of the check that needs it ('' for a decision the class was compiled for)."""
    negated: str = ""
    where: str = ""
    guard = None


def fact_of(g, name=None) -> Fact:
    """The fact, printed with `name` (an atom's Python; default: an input's size as `x.shape[1]`)."""
    name = name or _doc_atom
    if isinstance(g, Guard) and g.op in ("==", "!=") and _reads_input(g.rhs) and not _reads_input(g.lhs):
        g = replace(g, lhs=g.rhs, rhs=g.lhs)   # the input's size first: `x.shape[2] == dim`
    f = Fact(g.to_python(name))
    if isinstance(g, (Guard, Compound)):
        f.negated = g.negated().to_python(name)
        f.where = _position(g.where) if g.where is not None else ""
        f.guard = g
    return f


def _reads_input(p) -> bool:
    return any(isinstance(a, InDim) for a in _base_atoms(p))


@dataclass
class ClassParts:
    """A class before it is named: its constructor's signature, __init__'s statements after its first
    (`super().__init__()`, or an nn.Sequential's `super().__init__(first, *rest)`), forward's lines
    (from `def forward`; none for an nn.Sequential), the docstring's heading and facts."""
    signature: list
    init: list
    forward: list
    heading: str
    facts: list
    first: list = field(default_factory=lambda: ["super().__init__()"])
    base: str = "nn.Module"


def assemble(signature: list, init: list, forward: list, base: str = "nn.Module") -> str:
    """A class's source, named __CLASS__ and documented __DOC__ (filled in when it is emitted)."""
    lines = [f"class __CLASS__({base}):", f'{INDENT}"""__DOC__"""', ""]
    params = [f"{name}{ann}{'' if default is None else ' = ' + default}"
              if ann else f"{name}{'' if default is None else '=' + default}"
              for _, name, ann, default in signature]
    lines += [INDENT + line for line in _packed("def __init__(", ["self", *params], "):", indent=1)]
    lines += [INDENT * 2 + b if b else b for b in init]
    if forward:
        lines.append("")
        lines += [INDENT + line if line else "" for line in forward]
    return "\n".join(lines) + "\n"


@dataclass
class Generator:
    """Collects the classes of one file, deduplicating identical block structures."""
    classes: list = field(default_factory=list)        # ClassInfo in emission order
    by_graph: dict = field(default_factory=dict)       # id(graph) -> ClassInfo
    by_code: dict = field(default_factory=dict)        # (graph name, code) -> ClassInfo
    # class names; they avoid the models' constructor arguments, which keep the user's names
    names: Namespace = field(default_factory=lambda: Namespace(set(HELPERS)))
    class_names: set = field(default_factory=set)
    helpers: set = field(default_factory=set)
    top: dict = field(default_factory=dict)            # model name -> class name
    # id(graph) -> {instance id: name}: instances the class receives ready-made as constructor
    # arguments instead of building them (a training step's models, shared between steps)
    external: dict = field(default_factory=dict)
    # block key -> the graphs of each of its specializations (a first pass found them), to be
    # written as one class (backends/variants.py)
    variants: dict = field(default_factory=dict)
    models: list = field(default_factory=list)        # the graphs the file is written for
    flags: dict = field(default_factory=dict)         # model name -> ModelFlags
    forms: dict = field(default_factory=dict)         # id(block graph) -> result_form
    tangled: frozenset = frozenset()                  # models whose lists' items are numbers (TangledItems)

    def result_form(self, graph: Graph) -> tuple | None:
        """The sizes of a block's result (1 on) in its own terms, one form that holds in every use of the
        block in the file under the equalities that use decided (backends/loopsizes.py block_result):
        `out` for MobileNet's InvertedResidual, whose uses that add their input back keep its width
        where they decided `x.shape[1] == out`. None where no one form does."""
        if id(graph) in self.forms:
            return self.forms[id(graph)]
        uses = [(_result_form(h), h.guards) for h in [graph, *self.siblings(graph)]]
        found = next((form for form in dict.fromkeys(f for f, _ in uses)
                      if all(len(form) == len(theirs) and all(_equal_size(a, b, guards) for a, b in zip(form, theirs))
                             for theirs, guards in uses)), None)
        self.forms[id(graph)] = found
        return found

    def siblings(self, graph: Graph) -> list:
        """The other specializations of `graph`'s block under the file's models."""
        return [g for g in _graphs_under(self.models)
                if g is not graph and g.kind == "block" and block_key(g) == block_key(graph)]

    def class_for(self, graph: Graph, top: bool = False) -> ClassInfo:
        if id(graph) in self.by_graph and not top:
            return self.by_graph[id(graph)]
        if not top and block_key(graph) in self.variants:
            info = self._merged(graph)
            if info is not None:
                return info
        if top and self.flags.get(graph.name) is not None and self.flags[graph.name].graphs:
            return self._flagged(graph)
        body = _ClassWriter(self, graph, is_model=top)
        code, signature, heading, facts = body.write()
        key = (graph.name, code, tuple(s[1] for s in signature))
        if key in self.by_code and not top:
            info = self.by_code[key]
            info.facts = [f for f in info.facts if f in facts]  # what holds for every use
            info.loops &= body.loops()
        else:
            name = self.names.claim(graph.name)
            self.class_names.add(name)
            info = ClassInfo(name, signature, code.replace("__CLASS__", name), heading, facts, loops=body.loops(),
                             walks=set(body.live))
            self.classes.append(info)
            if not top:
                self.by_code[key] = info
        self.by_graph[id(graph)] = info
        info.graphs.append(graph)
        if top:
            self.top[graph.name] = info.name
        return info

    def _flagged(self, graph: Graph) -> ClassInfo:
        """The one class of a model compiled for each combination of its flags (ModelFlags)."""
        info = flagged_class(self, graph, self.flags[graph.name])
        if info is None:
            raise _Unmerged(graph.name)
        self._add(info, graph.name)
        self.by_graph[id(graph)] = info
        self.top[graph.name] = info.name
        return info

    def _merged(self, graph: Graph) -> ClassInfo | None:
        """The one class of all of a block's specializations, or None where they stay apart."""
        key = block_key(graph)
        groups = self.variants[key]
        if not any(member is graph for g in groups for member in g):
            return None     # not seen by the first pass (a training step's own block): its own class
        info = merged_class(self, groups)
        if info is None:
            del self.variants[key]
            return None
        self._add(info, graph.name)
        for g in groups:
            for member in g:
                self.by_graph[id(member)] = info
        return info

    def _add(self, info: ClassInfo, name: str) -> None:
        """A class written from several graphs (ModelFlags, a block's specializations) named and emitted."""
        info.name = self.names.claim(name)
        info.code = info.code.replace("__CLASS__", info.name)
        self.class_names.add(info.name)
        self.classes.append(info)


class _ClassWriter:
    def __init__(self, gen: Generator, graph: Graph, is_model: bool, names: dict | None = None,
                 aliases: dict | None = None):
        self.gen, self.graph, self.is_model = gen, graph, is_model
        self.external = gen.external.get(id(graph), {})
        self.inplace = kept_inplace(graph)   # node and instance ids whose `inplace=True` stays
        self.first_use = _first_uses(graph)   # instance id -> the first node applying it
        for inst in graph.instances.values():   # first the classes the constructor will call
            if inst.kind == "block" and inst.id not in self.external:
                gen.class_for(inst.graph)
        # members forward reads are named after the submodules; a layer written as a function
        # (`F.interpolate`) leaves its name free (`self.upsample` is the argument, as a person writes it)
        self.attrs = Namespace({i.name for i in graph.instances.values() if i.kind != "layer" or is_module(i)},
                               attributes=True)
        # the constructor's argument names: a block's may not hide what its constructor reads
        self.locals = Namespace(set(HELPERS) | gen.class_names | CONSTRUCTOR_GLOBALS)
        # a specialization written into one class with others: their argument names, and no input
        # dim printed as the parameter it equals here (`in_channels`, not `out`): it may not elsewhere
        self.forced = names or {}
        self.locals.taken |= set(self.forced.values())
        self.param_names = {p: self.forced.get(p) or self._param_name(p) for p in graph.params}
        self.used_params: set = set()      # referenced in __init__ or forward
        self.stored: dict = {}             # atom -> self.<attr>, for values forward needs
        self.dim_reads, self._forward_locals = {}, None   # input sizes forward reads by name (_read_at_run_time)
        self.aliases = {} if is_model else _input_aliases(graph) if aliases is None else aliases
        self.pseudo = self._pseudo_names()
        self.used_pseudo: set = set()
        self.symbols, self.size_names = set(), {}   # run-time sizes forward needs (B, T), their names there
        self.tuples: dict = {}             # tuple inputs as forward reads them (`hidden`) -> their lengths
        self.uses_f = False
        self.joins = _dense_joins(graph)   # the concat node of each dense list's element -> the list
        # list parameters a Python loop reads (backends/loops.py); such a list -> how many items are read
        # by place outside it (`widths[2]`: 3)
        self.live, self.item_reads = set(), {}
        self.flags: set = set()            # a model's bool parameters its class takes live (ModelFlags)
        flags = gen.flags.get(graph.name) if is_model else None
        self.refused = flags.refused if flags is not None else {}   # flag -> why it stays fixed
        self.unlooped: str | None = None   # why a list loop stays unrolled
        self.looped: set = set()           # the guards of repeat counts a Python loop keeps (`depth == 30`)
        self.neutral = neutral.find(self)  # str/bool parameters passed to layers as they are (`mode=mode`)

    # ---------------------------------------------------------------- naming of atoms

    def _param_name(self, p: str) -> str:
        """A model's arguments are its keywords, the user's names (`dslc check` refused those Python
        cannot take); a block's are only passed by position, so any legal name does."""
        if self.is_model:
            self.locals.taken.add(p)
            return p
        return self.locals.claim(p)

    def _pseudo_names(self) -> dict:
        """Constructor names for a block's input dims: after the first layer or block argument they feed."""
        names = {}
        for inst in self.graph.instances.values():
            if inst.id in self.external:
                continue
            for key, v in self._fed_arguments(inst):
                atom = _single_atom(v)
                if isinstance(atom, InDim) and atom not in names and atom not in self.aliases:
                    names[atom] = self.forced.get(atom) or self.locals.claim(key)
        for name, ref in self.graph.inputs:
            t = self.graph.type_of(ref)
            for i in range(t.rank):
                atom = InDim(name, i)
                if atom not in names:
                    names[atom] = self.forced.get(atom) or self.locals.claim(f"{name.replace(SEP, '_')}_dim{i}")
        return names

    def _fed_arguments(self, inst: Instance) -> list:
        """(argument name, value) pairs an instance's constructor receives."""
        if inst.kind == "layer":
            folded = list(inst.folded.norm.args.items()) if inst.folded is not None else []
            # in the order the call prints them: a depthwise conv's input width is its `in_channels`
            # (first), not the `out_channels` the spec wrote as `x.shape[1]`
            order = {k: i for i, k in enumerate(inst.op.torch.positional if inst.op.torch else ())}
            return sorted(inst.args.items(), key=lambda kv: order.get(kv[0], len(order))) + folded
        if inst.kind != "block":
            return []
        child = self.gen.class_for(inst.graph)
        first = self.first_use[inst.id]
        in_types = block_input_types(self.graph, first)
        child_inputs = [n for n, _ in inst.graph.inputs]
        out = []
        for key, name, _, _ in child.signature:
            if isinstance(key, InDim):
                out.append((name, in_types[child_inputs.index(key.input)].shape[key.index]))
            else:
                out.append((name, inst.args[key]))
        return out

    def init_atom(self, a) -> str:
        if a in self.aliases:
            return _parenthesized(self.aliases[a], self.init_atom)
        if isinstance(a, Param):
            self.used_params.add(a.name)
            return self.param_names[a.name]
        if isinstance(a, Item):
            self.used_params.add(a.name)
            return self._item(a)
        if isinstance(a, InDim):
            self.used_pseudo.add(a)
            return self.pseudo[a]
        raise CodegenError(f"the run-time size `{a.name}` cannot size a layer")

    def forward_atom(self, a) -> str:
        if isinstance(a, Var):
            self.symbols.add(a.name)
            return self.size_names.get(a.name, a.name)
        if a in self.aliases:
            return _parenthesized(self.aliases[a], self.forward_atom)
        read = self._read_at_run_time(a)
        if read is not None:
            return read
        if a not in self.stored:
            local = self.init_atom(a)
            self.stored[a] = self.attrs.claim(_item_attr(a, self.graph) if isinstance(a, Item) else local)
        else:
            self.init_atom(a)
        return f"self.{self.stored[a]}"

    def _read_at_run_time(self, a) -> str | None:
        """A block's input size in forward as a local set from the input at the top of forward, named
        as the spec declared it (`H`), else as the constructor names it (`x_dim2`); None for a size of
        an input forward does not receive as one tensor (kept as a member)."""
        if not isinstance(a, InDim) or self.is_model or self._forward_locals is None:
            return None
        if a not in self.dim_reads:
            ref = dict(self.graph.inputs).get(a.input)
            if ref is None or SEP in a.input or a.index >= self.graph.type_of(ref).rank:
                return None   # an item of a tuple input stays a member
            name = _declared_dim(self.graph, a) or self.pseudo[a]
            self.dim_reads[a] = self._forward_locals.claim(name)
        return self.dim_reads[a]

    # ---------------------------------------------------------------- the class

    def write(self) -> tuple[str, list, str, list]:
        p = self.parts()
        return assemble(p.signature, p.first + p.init, p.forward, p.base), p.signature, p.heading, p.facts

    def parts(self) -> "ClassParts":
        init_printer = Printer(self.init_atom, self._fixed_items)
        whole = _sequential(self.graph)
        sequential = whole is not None
        # a dense list that is its block (torchvision's _DenseBlock) is an nn.ModuleDict with a forward of its own
        dense = sequential and whole.concat_dim is not None
        fwd = self._sequential_forward() if sequential and not dense else self._forward()
        members = self._members(init_printer)
        opening = self._sequential_init(init_printer)
        plain = Printer(self.init_atom)   # a guard on an item reads the item (`mults[0] != 1`)
        checks = self._derived_defaults(plain) + (self._guards(plain) if self.is_model else [])
        signature = self._signature()
        stores = [f"self.{attr} = {self._atom_local(atom)}" for atom, attr in self.stored.items()]
        init = stores + members + self._settings(init_printer)
        if sequential:   # the layers are super().__init__'s arguments: what they read is ready before
            opening = checks + opening
        else:
            init = checks + init
        base = "nn.ModuleDict" if dense else "nn.Sequential" if sequential else "nn.Module"
        if self.is_model and self.graph.inference:
            fwd += ([""] if fwd else []) + self._train_refusal()
        heading, facts = self._doc_parts()
        return ClassParts(signature, init, fwd, heading, facts, opening, base)

    @functools.cached_property
    def _fixed_items(self):
        """Items of a list the model was compiled for as numbers or as other items (`mults[0] == 1`,
        `mults[2] == mults[1]`), by the model's own decisions: written so (`base`, not `base * mults[0]`);
        its guards check them."""
        if not self.is_model:
            return None
        guards = [g for g in conjuncts(_facts(self.graph.guards))
                  if getattr(g, "origin", None) is None and getattr(g, "loop", None) is None]
        fixed = {a: p for a, p in equalities(guards).items() if isinstance(a, Item)}
        return fixed.get if fixed else None

    def _derived_defaults(self, printer: Printer) -> list[str]:
        """A model parameter whose default is computed from others (`ff: int = 4 * dim`) defaults to
        None in Python, which cannot refer to one argument in another's default; computed here."""
        if not self.is_model:
            return []
        out = []
        for p, v in self.graph.params.items():
            if _derived(v):
                name = self.param_names[p]
                out += [f"if {name} is None:", f"{INDENT}{name} = {printer.value(v)}"]
        return out

    def _atom_local(self, atom) -> str:
        if isinstance(atom, Item):
            return self._item(atom)
        return self.param_names[atom.name] if isinstance(atom, Param) else self.pseudo[atom]

    def _item(self, a: Item) -> str:
        """`hidden[0]`; the last item as `hidden[-1]`, as people write it, where the class fixes the
        length; in a list it walks in a loop, as many as it has, by its place (`widths[2]`)."""
        if a.name in self.live:
            self.item_reads[a.name] = max(self.item_reads.get(a.name, 0), a.index + 1)
            return f"{self.param_names[a.name]}[{a.index}]"
        return f"{self.param_names[a.name]}[{-1 if _is_last(a, self.graph) and a.index > 0 else a.index}]"

    def _least_lengths(self) -> dict:
        """A list the class walks in a loop -> how many items it reads by place outside it, at least
        (`widths[2]`: 3), in its code or its guards."""
        out = dict(self.item_reads)
        for g in self._own_guards():
            for a in _base_atoms(g):
                if isinstance(a, Item) and a.name in self.live:
                    out[a.name] = max(out.get(a.name, 0), a.index + 1)
        for name, least in _places_read(self.graph.decl):   # the loop's lines spell the spec's `widths[3]`
            if name in self.live:
                out[name] = max(out.get(name, 0), least)
        return out

    def _signature(self) -> list:
        out = []
        graph = self.graph
        if self.is_model:
            for p, v in graph.params.items():
                ann = _annotation(graph.param_types.get(p))
                if _derived(v):   # `ff: int = 4 * dim`: None stands for "computed from dim" (below)
                    out.append((p, self.param_names[p], f"{ann} | None" if ann else ann, "None"))
                else:
                    out.append((p, self.param_names[p], ann, literal(v)))
            for name in dict.fromkeys(self.external.values()):
                out.append((name, name, ": nn.Module", None))
            return out
        for atom in sorted(self.used_pseudo, key=lambda a: (self._input_pos(a.input), a.index)):
            out.append((atom, self.pseudo[atom], ": int", None))
        for p in graph.params:
            if p in self.used_params:
                out.append((p, self.param_names[p], _annotation(graph.param_types.get(p)), None))
        return with_defaults(graph, out)

    def _input_pos(self, name: str) -> int:
        return [n for n, _ in self.graph.inputs].index(name)

    def _doc_parts(self) -> tuple[str, list]:
        """The docstring's heading, and the facts the class was built for (blocks only)."""
        where = _where(self.graph)
        kind = "model" if self.is_model else "block"
        heading = f"The {kind} `{self.graph.name}` ({where})"
        made_of = getattr(self.graph.decl, "repeat_of", None)   # a repeat's body (frontend/bodyblocks.py)
        if made_of:
            heading = f"One pass of `{made_of}`'s `repeat` ({where})"
        facts = [] if self.is_model else [fact_of(g) for g in simplified(conjuncts(_facts(self._own_guards())))]
        return heading, facts + ([] if self.is_model else self._length_facts())

    def _length_facts(self) -> list:
        """`len(config) == 2` for a list whose items the block reads without walking it in a loop: what
        was compiled from its items holds for that many (a model checks it in _guards)."""
        out = [_length_fact(self.param_names[p], "==", len(v)) for p, v in self.graph.params.items()
               if _items_of(self.graph, p) and p in self.used_params and p not in self.live]
        return out + [_length_fact(self.param_names[p], ">=", n) for p, n in self._least_lengths().items()]

    def _own_guards(self) -> list:
        """The graph's guards but those of the repeat counts the class keeps as loops."""
        looped = self.loops()
        return [g for g in self.graph.guards if getattr(g, "loop", None) not in looped   # ir/dims.py LoopCount
                and not callee_decided(self.gen, g) and not self._read_in_loop(g)]

    def _read_in_loop(self, g) -> bool:
        """A decision on the items of a list the class walks in a Python loop, made in that loop (`if
        width > 4`, or by a block called there): the loop makes it for each item as it runs
        (backends/loops.py). One made outside the loop (`if widths[1] > widths[0]`) stays a guard."""
        if not any(isinstance(a, Item) and a.name in self.live for a in _base_atoms(g)):
            return False
        at = getattr(g, "at", None)
        if getattr(g, "origin", None) is not None:   # decided in a block: where this class calls it
            at = next((i.span for i in self.graph.instances.values() if i.graph is g.origin), None)
        return at is not None and any(_within(at, loop.stmt.span) for loop in self.graph.list_loops)

    def loops(self) -> set:
        """The spans of the loops this class writes as Python loops: its own, and a block's loop that
        every block of the class that has it writes as one (`Stage(16, depth)`: the count is the
        caller's argument too); a loop some block of it unrolls keeps its guard."""
        out = {g.loop for g in self.looped}
        seen: dict = {}   # loop span -> every block that has it loops it
        for inst in self.graph.instances.values():
            if inst.kind != "block" or inst.id in self.external:
                continue
            info = self.gen.class_for(inst.graph)
            for loop in {getattr(g, "loop", None) for g in inst.graph.guards} - {None}:
                seen[loop] = seen.get(loop, True) and loop in info.loops
        return out | {span for span, looped in seen.items() if looped}

    def _guards(self, printer: Printer) -> list[str]:
        out = []
        guards = simplified(conjuncts(_facts(self._own_guards())))
        for g in [g for g in guards if not _implied(g, guards)]:
            fact = _guard_src(g, printer)
            cond = _negate(g, printer)
            msg = (f"{self.graph.name} was compiled for {fact}; compile it again with "
                   f"`dslc compile --set` to change that")
            if getattr(g, "where", None) is not None:   # a check whose other outcome is an error (ir/dims.py)
                msg = f"{self.graph.name} needs {fact} ({_position(g.where)})"
            out += [f"if {cond}:", f"{INDENT}raise ValueError({py_str(msg)})"]
        lengths = []   # first: the checks above may read a list's items
        unread = self._unread_params()
        for p, v in self.graph.params.items():
            if p in self.neutral.legal:
                out += self._choice_guard(p)
            elif not (isinstance(v, (Size, Real)) or (isinstance(v, (int, float)) and not isinstance(v, bool))
                      or p in self.live or p in self.flags or p in unread):
                (lengths if _items_of(self.graph, p) else out).extend(self._fixed_guard(p, v))
        for p, n in self._least_lengths().items():
            if self._reads_len():
                name = self.param_names[p]
                msg = f"{self.graph.name} needs len({p}) >= {n}"
                lengths += [f"if len({name}) < {n}:", f"{INDENT}raise ValueError({py_str(msg)})"]
        return lengths + out

    def _fixed_guard(self, p: str, v) -> list[str]:
        """The check of a parameter the class was compiled for: its value, or a list's length where
        its items are sizes like any parameter's (`len(hidden) != 5`)."""
        name = self.param_names[p]
        cond = f"{name} is not {literal(v)}" if v is None or isinstance(v, bool) else f"{name} != {literal(v)}"
        # a flag whose other value the spec refuses: recompiling would not help, the message says why
        again = self.refused.get(p, "compile it again with `dslc compile --set`")
        msg = f"{self.graph.name} was compiled for {p}={literal(v)}; {again}"
        if self._length_only(p):
            cond, msg = f"len({name}) != {len(v)}", f"{self.graph.name} was compiled for len({p}) == {len(v)}; {again}"
        return self._unlooped_note(p, v) + [f"if {cond}:", f"{INDENT}raise ValueError({py_str(msg)})"]

    def _choice_guard(self, p: str) -> list[str]:
        """A live parameter (neutral.py) whose layers take only some values: the others refused, as
        `dslc check` refuses them, with the line of its first layer."""
        legal = self.neutral.legal[p]
        if set(legal) == {False, True} and self.graph.param_types.get(p) == "bool":
            return []
        name = self.param_names[p]
        values = literal(tuple(legal))
        msg = f"{self.graph.name} needs {p} in {values} ({_position(self.neutral.where[p])})"
        return [f"if {name} not in {values}:", f"{INDENT}raise ValueError({py_str(msg)})"]

    def _unread_params(self) -> set:
        """The parameters the declaration never reads (nor another's default): no value of theirs changes
        what the class builds, so none is refused."""
        decl = self.graph.decl
        if not isinstance(decl, (ast.ModelDecl, ast.BlockDecl)):
            return set()   # a plan's step: its parameters are the plan's
        return set(self.graph.params) - names_in(decl.body) - names_in(decl.params)

    def _unlooped_note(self, p: str, v) -> list[str]:
        """Why a list the model loops over stays fixed (backends/loops.py): a comment above its guard."""
        if not isinstance(v, (list, tuple)):
            return []
        if self.unlooped:
            return [f"# `{p}` stays fixed, not a loop: {self.unlooped}"]
        if self.graph.name in self.gen.tangled and int_list(v):
            return [f"# `{p}` stays fixed: sizes computed from its items would read {MAX_ITEMS + 1} or more of them"]
        looping = self._looping_blocks(p)
        if self._length_only(p):
            if looping:
                return [f"# `{p}` is fixed in length: {' and '.join(looping)} loop over it, what follows was "
                        "compiled for its length"]
            return [f"# `{p}` is fixed in length: what was compiled from its items is written out here"]
        if looping:
            return [f"# `{p}` stays fixed: {' and '.join(looping)} loop over it, but sizes computed from it "
                    "are numbers here"]
        return [f"# `{p}` stays fixed: what was compiled from it is written out here"]

    def _length_only(self, p: str) -> bool:
        """Whether the model checks only the list's length (its items are sizes); not where a
        parameter named `len` hides len(): then the whole list."""
        return _items_of(self.graph, p) and self._reads_len()

    def _reads_len(self) -> bool:
        """Whether the constructor may call len(): no parameter of the class hides it."""
        return not READ_WHERE_FREE & set(self.param_names.values())

    def _looping_blocks(self, p: str) -> list[str]:
        """The blocks this class passes `p` to whose classes walk it in a loop (backends/loops.py)."""
        exprs = loops.expressions(self.graph.decl.body, {}) if self.graph.decl is not None else {}
        out = []
        for inst in self.graph.instances.values():
            if inst.kind != "block" or inst.id in self.external:
                continue
            info = self.gen.class_for(inst.graph)
            taken = {key for key, *_ in info.signature if key in info.walks or not _items_of(inst.graph, key)}
            for key, span in inst.arg_spans.items():
                e = exprs.get((span.start, span.end))
                if key in taken and isinstance(inst.args.get(key), (list, tuple)) and e is not None \
                        and p in loops.names_of(e):
                    out.append(f"`{info.name}`")
        return list(dict.fromkeys(out))

    def _settings(self, printer: Printer) -> list[str]:
        """What optimization passes add to __init__: loading unoptimized checkpoints, eval mode, layout."""
        lines = []
        folded = {i.name: i.folded.norm for i in self.graph.instances.values()
                  if i.kind == "layer" and i.folded is not None and i.id not in self.external}
        if folded or self.graph.dropped:
            self.gen.helpers.add("unoptimized_weights")
            pairs = ", ".join(f"{py_str(layer)}: ({py_str(norm.name)}, {printer.value(norm.args['eps'])})"
                              for layer, norm in folded.items())
            dropped = ", ".join(py_str(d) for d in self.graph.dropped)
            dropped = f", dropped=({dropped},)" if self.graph.dropped else ""
            lines.append(f"self.register_load_state_dict_pre_hook(unoptimized_weights({{{pairs}}}{dropped}))")
        if self.is_model and self.graph.memory_format == "channels_last":
            lines.append("self.to(memory_format=torch.channels_last)")
        if self.is_model and self.graph.inference:
            lines.append("self.eval()")
        return lines

    def _train_refusal(self) -> list[str]:
        msg = (f"{self.graph.name} was compiled with -O2 for inference (batch norm folded, dropout removed): "
               "it runs in eval mode only; compile it without -O2 to train it")
        return ["def train(self, mode: bool = True):",
                f"{INDENT}if mode:",
                f"{INDENT * 2}raise RuntimeError({py_str(msg)})",
                f"{INDENT}return super().train(False)"]

    # ---------------------------------------------------------------- __init__ members

    def _members(self, printer: Printer) -> list[str]:
        lines = [f"self.{name} = {name}" for name in dict.fromkeys(self.external.values())]
        for inst in self.graph.instances.values():
            if inst.id in self.external:
                continue
            if inst.container is not None:
                lines += self._container_lines(inst, printer)
            elif inst.kind == "layer":
                if inst.folded is not None:
                    lines.append(f"self.{attr(inst.name)} = {self._element_ctor(inst, printer)}")
                elif is_module(inst):
                    lines.append(f"self.{inst.name} = {self._ctor(inst, printer)}")
                    lines += self._init_calls(inst, printer)
            elif inst.kind == "block":
                lines.append(f"self.{inst.name} = {self._block_ctor(inst)}")
            elif inst.kind == "param":
                shape = ", ".join(printer.value(d) for d in inst.shape) or "()"   # a 0-d tensor
                spec = inst.init
                init = spec.init.torch(shape, {k: printer.value(v) for k, v in spec.args.items()}) \
                    if spec.init.torch else spec.init.in_place(f"torch.empty({shape})", _given_args(spec, printer))
                lines.append(f"self.{inst.name} = nn.Parameter({init})")
            elif inst.kind == "buffer":
                lines += self._buffer_lines(inst, printer)
        return lines

    def _buffer_lines(self, inst: Instance, printer: Printer) -> list[str]:
        """A buffer's value computed in the constructor, one statement per node as in forward, then
        `self.register_buffer("pe", pe)`; its last node is the value itself (the graph is its cone)."""
        sub = inst.graph
        local = Namespace(self.locals.taken)
        var: dict = {}
        lines = []
        (_, out), = sub.outputs
        nodes = list(sub)
        readers = _readers(sub, nodes)

        def targets(node, _i) -> str:   # an unnamed step is a draft of the buffer: named after it
            names = [local.claim(n or attr(inst.name)) for n in node.names]
            for k, name in enumerate(names):
                var[Ref(node.id, k)] = name
            return _target_pattern(node, names)

        # `torch.tril(torch.ones(n, n))`: a value read once, by the next node, is written into it
        held = _Held(targets, var, lines)
        for i, node in enumerate(nodes):
            expr = held.written_into(node, lambda n=node: self._node_expr(n, var, printer, [], sub))
            if _is_alias(node, expr, var) or (node.id == out.node and len(node.outputs) == 1):
                var[Ref(node.id)] = expr
                continue
            once = node.kind in ("op", "call") and len(node.outputs) == 1 and node.names[0] is None \
                and readers.get(Ref(node.id)) == [i + 1]
            if not held.hold(node, i, expr, once):
                lines.append(f"{targets(node, i)} = {expr}")
        persistent = "" if inst.args["persistent"] else ", persistent=False"
        return lines + [f"self.register_buffer({py_str(inst.name)}, {var[out]}{persistent})"]

    def _init_calls(self, inst: Instance, printer: Printer) -> list[str]:
        """`nn.init.normal_(self.fc.weight, std=0.02)`: the layer's own `init=`, right after it is made."""
        return [spec.init.in_place(f"self.{attr(inst.name)}.{weight}", _given_args(spec, printer))
                for weight, spec in inst.inits.items()]

    def _ctor(self, inst: Instance, printer: Printer, args: dict | None = None) -> str:
        args = self._live(inst, inst.args if args is None else args, printer)
        return self._ctor_text(inst, printer, args)

    def _live(self, inst: Instance, args: dict, printer: Printer) -> dict:
        """The arguments with each live parameter (neutral.py) as the printer names it: `mode`
        in the constructor, `self.mode` in forward. An argument already written (a loop's) stays."""
        live = {key: p for (iid, key), p in self.neutral.args.items() if iid == inst.id}
        return {k: Source(printer.atom(Param(live[k]))) if k in live and not isinstance(v, Source) else v
                for k, v in args.items()}

    def _rendered(self, node: Node, args: dict) -> tuple[str, str, bool]:
        """The node's layer written with `args` (its constructor, and its call in forward), every size
        as `_`: what neutral.py compares between values of an argument."""
        inst, op = self.graph.instances[node.instance], node.op
        printer = Printer(lambda a: "_")
        inputs = op.positional(args, [f"x{i}" for i in range(len(node.inputs))])
        e = Emit(args, inputs, _AnyName(), printer, op, device="x0.device",
                 types=[self.graph.type_of(r) for r in op.positional(node.args, node.inputs)], outputs=node.outputs)
        helpers = set(self.gen.helpers)
        try:
            if not is_module(inst):
                return "", f"{op.torch.functional(e)} {_helpers_of(op.torch, args)}", False
            call = op.torch.call(e, "m") if op.torch.call else ""
            init = self._ctor_text(inst, printer, {k: args[k] for k in inst.args})
            return init, f"{call} {_helpers_of(op.torch, args)}", True
        finally:
            self.gen.helpers = helpers

    def _block_values(self, inst: Instance, key: str) -> tuple | None:
        """The values of a block's argument that its class takes live (neutral.py) where the block
        is called plainly (not a scan's step); None where it does not take it so."""
        if any("scan" in n.args for n in self.graph.nodes.values() if n.instance == inst.id):
            return None
        if key not in {k for k, *_ in self.gen.class_for(inst.graph).signature}:
            return None
        return _ClassWriter(self.gen, inst.graph, is_model=False).neutral.legal.get(key)

    def _ctor_text(self, inst: Instance, printer: Printer, args: dict) -> str:
        op, args = inst.op, self._inplace_args(inst.op, inst.id, args)
        t: TorchLayer = op.torch
        if t.ctor is not None:   # a module made of modules: nn.TransformerEncoder(nn.TransformerEncoderLayer(...))
            return t.ctor(args, printer.value)
        parts = [printer.value(args[n]) for n in t.positional]
        for n in t.keywords:
            spec = op.param(n)
            if spec is None and args[n] is None:
                continue  # an inferred argument left at torch's default
            if n in t.explicit or spec is None or not is_default(args[n], spec.default):
                parts.append(f"{n}={printer.value(args[n])}")
        parts += [f"{k}={v}" for k, v in t.fixed]
        self.gen.helpers.update(_helpers_of(t, args))
        return f"{t.cls}({', '.join(parts)})"

    def _container_lines(self, inst: Instance, printer: Printer) -> list[str]:
        """A loop's module list, written where its first element is made (an nn.Sequential block's
        elements are its constructor's super().__init__ instead, `_sequential_init`)."""
        if inst.index != 0:
            return []
        c = self.graph.containers[inst.container]
        if c.sequential:
            return []
        if c.keys:
            holder = "nn.ModuleDict" if c.concat_dim is not None else "nn.Sequential"
            return [f"self.{c.name} = {holder}()"] + self._keyed(f"self.{c.name}", c, printer)
        if c.concat_dim is not None:
            return _packed_call(f"self.{c.name} = nn.ModuleList(", f"[{self._dense_elements(c, printer)}]", ")")
        if c.uniform_from == 0:
            return [f"self.{c.name} = nn.ModuleList([{self._repeated(c, printer)}])"]
        if c.uniform_from == 1:
            return [f"self.{c.name} = nn.ModuleList([{', '.join(self._elements(c, printer))}])"]
        items = [f"{INDENT}{e}," for e in self._elements(c, printer)]
        return [f"self.{c.name} = nn.ModuleList(["] + items + ["])"]

    def _sequential_init(self, printer: Printer) -> list[str]:
        """The constructor's first lines: `super().__init__()`, or for a block that is an nn.Sequential of
        its elements, `super().__init__(first, *rest)` (torchvision's `nn.Sequential(*layers)`)."""
        c = _sequential(self.graph)
        if c is None:
            return ["super().__init__()"]
        if self.graph.list_loops and c.uniform_from is None and c.concat_dim is None and not c.keys:
            looped = self._looped_init(c, printer)
            if looped:
                return looped
        if c.keys:
            return ["super().__init__()"] + self._keyed("self", c, printer)
        elements = self._elements(c, printer)
        kept = [i.name for i in self._kept(c)]
        if c.uniform_from is None and kept != [str(k) for k in range(len(kept))]:
            # -O2 folded a batch norm into the layer before it: the others keep their places' keys
            return ["super().__init__()"] + [f"self.add_module({py_str(k)}, {e})" for k, e in zip(kept, elements)]
        return _packed("super().__init__(", elements, ")")

    def _looped_init(self, c, printer: Printer) -> list[str]:
        """`layers = []`, a Python loop over the list parameter appending the layers, and
        `super().__init__(*layers)` (backends/loops.py); [] where the loop stays unrolled. Spatial sizes
        that start equal are one `size`, unless a pass makes them differ: then `height, width`."""
        saved = (set(self.used_params), set(self.locals.taken), set(self.used_pseudo), set(self.gen.helpers))
        chain = [self.first_use[i].id for i in c.instances if i in self.first_use]
        for square in (True, False):
            try:
                if len(chain) != len(c.instances) or "layers" in self.locals.taken:
                    raise loops.NotLoopable("the passes changed its layers")
                template = loops.Template(self, printer, square)
                tree = template.lines(chain)
                if not self.is_model:
                    tree = self._with_siblings(tree, template)
                body = loops.render(template.finish(tree))
                break
            except loops.NotLoopable as why:
                self.used_params, self.locals.taken, self.used_pseudo, self.gen.helpers = (set(x) for x in saved)
                self.unlooped = str(why)
                if not square or not isinstance(why, loops.NotSquare):
                    return []
        self.unlooped = None
        self.live = template.live
        self.looped = set(template.counts)
        body, carried = loops.reuse_argument(body, template.carried, sorted(self.pseudo.values()))
        return loops.constructor(body, template.running() - {template.carried} | {carried})

    def _with_siblings(self, tree: list, template) -> list:
        """A branch this specialization did not take, written as another specialization wrote it."""
        for g in self.gen.siblings(self.graph):
            c = _sequential(g)
            if not g.list_loops or c is None:
                continue
            w = _ClassWriter(self.gen, g, is_model=False)
            chain = [w.first_use[i].id for i in c.instances if i in w.first_use]
            try:
                other = loops.Template(w, Printer(w.init_atom), template.square)
                tree = loops.merge(tree, other.lines(chain))
            except loops.NotLoopable:
                continue
            for name, d in other.sizes.fixed.items():
                template.sizes.fixed.setdefault(name, d)
        return tree

    def _keyed(self, holder: str, c, printer: Printer) -> list[str]:
        """A list whose keys a template made, as torchvision builds one: `add_module(key, element)`, in a
        loop over the index where the elements are alike (`f"encoder_layer_{i}"`), else one by one."""
        kept = self._kept(c)
        keyed = {i.id: k for i, k in zip((self.graph.instances[n] for n in c.instances), c.keys)}
        if c.uniform_from is None:
            return [f"{holder}.add_module({py_str(keyed[i.id])}, {self._element_ctor(i, printer)})" for i in kept]
        lines = [f"{holder}.add_module({py_str(keyed[kept[0].id])}, {self._element_ctor(kept[0], printer)})"] \
            if c.uniform_from == 1 else []
        index = self.locals.claim("i")
        key = "f" + py_str("".join(p if isinstance(p, str) else "{" + _plus(index, p) + "}" for p in c.key_pattern))
        if c.concat_dim is not None:
            element = self._dense_elements(c, printer, index).rsplit(" for ", 1)[0]
        else:
            element = self._element_ctor(kept[c.uniform_from], printer)
        start = "1, " if c.uniform_from == 1 else ""
        return lines + [f"for {index} in range({start}{printer.value(c.count)}):",
                        f"{INDENT}{holder}.add_module({key}, {element})"]

    def _elements(self, c, printer: Printer) -> list[str]:
        """A list's elements as constructor arguments: `*[Block(dim) for _ in range(depth)]` when they are
        alike, the first and then the rest so when all but the first are, else each element."""
        kept = self._kept(c)
        if c.uniform_from is None:
            return [self._element_ctor(i, printer) for i in kept]
        first = [self._element_ctor(kept[0], printer)] if c.uniform_from == 1 else []
        return first + [f"*[{self._repeated(c, printer)}]"]

    def _repeated(self, c, printer: Printer) -> str:
        """`Block(dim) for _ in range(depth)`, `Block(w, 1) for _ in range(1, blocks)`: the alike elements,
        their count a live argument."""
        start = "1, " if c.uniform_from == 1 else ""
        return f"{self._element_ctor(self._kept(c)[c.uniform_from], printer)} for _ in " \
               f"range({start}{printer.value(c.count)})"

    def _dense_elements(self, c, printer: Printer, index: str | None = None) -> str:
        """`DenseLayer(in_channels + i * growth, growth) for i in range(layers)`: a dense list's elements,
        made for an input that grows by what each adds (frontend/containers.py), their count an argument."""
        kept = self._kept(c)
        child = self.gen.class_for(kept[0].graph)
        first = self.first_use[kept[0].id]
        dim = c.concat_dim % first.outputs[0].rank
        step = first.outputs[0].shape[dim]
        grows = [name for key, name, _, _ in child.signature if isinstance(key, InDim) and key.index == dim]
        base = dict(self._fed_arguments(kept[0]))
        for k, inst in enumerate(kept):
            fed = dict(self._fed_arguments(inst))
            if self.gen.class_for(inst.graph) is not child or any(
                    not _same_size(fed[n], base[n], k, step) if n in grows else literal(fed[n]) != literal(base[n])
                    for n in fed):
                raise CodegenError(f"the dense list `{c.name}` has elements that are not made alike")
        index = index or self.locals.claim("i")
        grown = {n: f"{printer.value(base[n])} + {index} * {_factor(printer.value(step))}" for n in grows}
        return f"{self._block_ctor(kept[0], grown)} for {index} in range({printer.value(c.count)})"

    def _kept(self, c) -> list[Instance]:
        """The list's elements the passes kept (-O2 folds a batch norm into the layer before it)."""
        return [self.graph.instances[i] for i in c.instances if i in self.graph.instances]

    def _element_ctor(self, inst: Instance, printer: Printer) -> str:
        if inst.kind == "block":
            return self._block_ctor(inst)
        if inst.folded is not None:
            self.gen.helpers.add("fold_batchnorm")
            layer = self._ctor(inst, printer, dict(inst.args, bias=inst.folded.bias))
            return f"fold_batchnorm({layer}, {self._ctor(inst.folded.norm, printer)})"
        return self._ctor(inst, printer)

    def _block_ctor(self, inst: Instance, given: dict | None = None) -> str:
        """`Bottleneck(in_channels, width, stride=2)`: sizes and required arguments by position, those
        with a default by keyword, left out where they have it; `given`: arguments already written. A
        flag written as `True`/`False` is passed by keyword, and the arguments after it
        (`ResnetBlock(base, 4 * base, base, shortcut=False, groups=groups, dropout=dropout)`): a bare
        `False` among positions says nothing to a reader."""
        child = self.gen.class_for(inst.graph)
        caller = Printer(self.init_atom, self._fixed_items)
        defaults = {name: d for _, name, _, d in child.signature}
        keys = {name: key for key, name, _, _ in child.signature}
        parts, by_keyword = [], False
        for name, v in self._fed_arguments(inst):
            if (inst.id, keys[name]) in self.neutral.args:   # a live parameter passed on (neutral.py)
                v = Source(self.init_atom(Param(self.neutral.args[inst.id, keys[name]])))
            default = defaults.get(name)
            if not (given and name in given) and default is not None and not _is_expression(v) \
                    and literal(v) == default:
                continue
            text = given[name] if given and name in given else caller.value(v)
            by_keyword = by_keyword or default is not None or text in ("True", "False")
            parts.append(f"{name}={text}" if by_keyword else text)
        return f"{child.name}({', '.join(parts)})"

    # ---------------------------------------------------------------- forward

    def _sequential_forward(self) -> list[str]:
        """An nn.Sequential's forward is its own, but where a model checks its input first (a run-time
        requirement, a memory format): those lines, then the layers in turn (a loop over `self`, as
        nn.Sequential's own forward: torch.jit.script takes no `super().forward(x)`)."""
        if not self.is_model:
            return []
        printer = Printer(self.forward_atom, self._fixed_items)
        var: dict = {}
        (name, ref), = self.graph.inputs
        local = Namespace(set(HELPERS))
        x = var[ref] = local.claim(name)
        self.size_names = {s: local.claim(s) for s in sorted(_symbol_names(self.graph))}
        checks = self._requirements(printer)
        prologue = self._symbol_bindings(var) + checks + self._layout(var)
        if not prologue:
            return []
        layer = local.claim("layer")
        loop = [f"for {layer} in self:", f"{INDENT}{x} = {layer}({x})", f"return {x}"]
        return [f"def forward(self, {x}):"] + [INDENT + line for line in prologue + loop]

    def _forward(self) -> list[str]:
        g = self.graph
        printer = Printer(self.forward_atom, self._fixed_items)
        nodes = [n for n in g if n.kind != "input"]
        last_use = _last_uses(g, nodes)
        local = Namespace(set(HELPERS))  # helpers stay visible
        self.size_names = {s: local.claim(s) for s in sorted(_symbol_names(g))}  # `T = x.shape[1]`
        self._forward_locals = local
        var, holder, temps = {}, {}, set()   # holder: variable -> the Ref it holds
        params = self._parameters(local, var, holder, last_use)
        body = []
        out_refs = [r for _, r in g.outputs]
        self._bound_at = _bindings(nodes)
        readers = _readers(g, nodes)
        chains = _chain_names(nodes, readers)
        held = _Held(lambda n, k: self._targets(n, k, var, holder, temps, local, last_use, prefer=chains[k]),
                     var, body)
        for i, node in enumerate(nodes):
            special = self._special_node(node, i, nodes, var, holder, temps, local, last_use, printer, params)
            if special is not None:
                if special:
                    held.flush()
                body += special
                continue
            expr = held.written_into(node, lambda n=node: self._node_expr(n, var, printer, params))
            if _is_alias(node, expr, var) or _weight_view(node, g, readers, len(nodes)):
                var[Ref(node.id)] = expr   # `x @ self.wte.weight.transpose(0, 1)`: no local for a weight's view
                continue
            if i == len(nodes) - 1 and len(node.outputs) == 1 and out_refs == [Ref(node.id)] \
                    and node.names[0] is None and SEP not in g.outputs[0][0]:
                body.append(f"return {expr}")
                break
            if not held.hold(node, i, expr, _inlinable(node, i, nodes, readers, self._special_node_kind)):
                body.append(f"{held.targets(node, i)} = {expr}")
        else:
            body.append("return " + _pattern(structure([n for n, _ in g.outputs]), [var[r] for r in out_refs]))
        checks = self._requirements(printer)
        prologue = self._symbol_bindings(var) + checks + self._layout(var)
        sig = ", ".join(["self"] + [p + self._tuple_annotation(p) for p in params])
        return [f"def forward({sig}):"] + [INDENT + line for line in prologue + body]

    def _special_node_kind(self, node: Node) -> bool:
        """A node written as more than one statement `x = expr` (see _special_node)."""
        if node.kind in ("param", "weight", "buffer") or is_scan(node) or node.id in self.joins:
            return True
        inst = self.graph.instances.get(node.instance) if node.instance is not None else None
        return inst is not None and inst.container is not None

    def _special_node(self, node: Node, i: int, nodes: list, var, holder, temps, local, last_use, printer,
                      params) -> list[str] | None:
        """The lines of a node that is not one statement `x = expr` (None for one that is): a weight read
        as `self.fc.weight`, a scan's loop, a module list's loop (written at its first element)."""
        g = self.graph
        if node.kind in ("param", "weight", "buffer"):
            inst = g.instances[node.instance]
            var[Ref(node.id)] = f"self.{attr(inst.name)}" + (f".{node.attr}" if node.kind == "weight" else "")
            return []
        if is_scan(node):
            targets = self._targets(node, i, var, holder, temps, local, last_use)
            return self._scan_lines(node, targets, var, printer, local)
        if node.id in self.joins:
            return []    # written by its dense list's loop
        inst = g.instances[node.instance] if node.instance is not None else None
        if inst is not None and inst.container is not None:
            if inst.index != 0:
                return []
            if g.containers[inst.container].concat_dim is not None:
                return self._dense_loop(node, i, nodes, var, holder, temps, local, last_use, printer, params)
            return self._container_loop(node, i, nodes, var, holder, temps, local, last_use, printer, params)
        return None

    def _dense_loop(self, node: Node, i: int, nodes: list, var, holder, temps, local, last_use, printer,
                    params) -> list[str]:
        """`for layer in self.layers: x = torch.cat([x, layer(x)], dim=1)`: a dense list's elements, each
        applied to the running value and its result concatenated to it (torchvision's DenseNet)."""
        g = self.graph
        c = g.containers[g.instances[node.instance].container]
        run = nodes[i:i + 2 * len(c.instances)]
        if [n.instance for n in run[::2]] != c.instances or [self.joins.get(n.id) for n in run[1::2]] != \
                [c.name] * len(c.instances):
            raise CodegenError(f"the dense list `{c.name}` is not applied in one run")
        join, last = run[1], run[-1]
        running = var[node.inputs[0]]
        var[last.inputs[0]] = running          # so that the result may take the running value's name
        # read last by the first join (i + 1) where the loop alone reads it: `x = torch.cat([x, ...])`
        target = self._targets(last, i + 1, var, holder, temps, local, last_use)
        element = local.claim("layer") if "layer" in local.taken else "layer"
        var[node.inputs[0]] = target
        var[Ref(node.id)] = self._node_expr(node, var, printer, params, module=element)
        expr = self._node_expr(join, var, printer, params)
        var[node.inputs[0]] = running
        lines = [f"{target} = {running}"] if target != running else []
        elements = (f"self.{c.name}" if c.name else "self") + (".values()" if c.keys else "")
        return lines + [f"for {element} in {elements}:", f"{INDENT}{target} = {expr}"]

    def _container_loop(self, node: Node, i: int, nodes: list, var, holder, temps, local, last_use, printer,
                        params) -> list[str]:
        """`for block in self.h: x = block(x)`: a module list's elements, applied in turn to the running
        value (each to the one before's result, with the same other inputs; frontend/containers.py)."""
        g = self.graph
        c = g.containers[g.instances[node.instance].container]
        last = nodes[i + len(c.instances) - 1] if i + len(c.instances) <= len(nodes) else None
        if [n.instance for n in nodes[i:i + len(c.instances)]] != c.instances:
            raise CodegenError(f"the module list `{c.name}` is not applied in one run")
        running = var[node.inputs[0]]
        var[last.inputs[0]] = running          # so that the result may take the running value's name
        target = self._targets(last, i, var, holder, temps, local, last_use)
        if c.keys and len(node.inputs) == 1:   # an nn.Sequential of its own: called as torchvision calls one
            return [f"{target} = self.{c.name}({running})"]
        element = "block" if node.kind == "call" else "layer"
        if element in local.taken:   # a tensor of the user's is called so; a loop's own name is dead after it
            element = local.claim(element)
        var[node.inputs[0]] = target
        expr = self._node_expr(node, var, printer, params, module=element)
        var[node.inputs[0]] = running
        lines = [f"{target} = {running}"] if target != running else []
        return lines + [f"for {element} in self.{c.name}:", f"{INDENT}{target} = {expr}"]

    def _tuple_annotation(self, path: str) -> str:
        """`: tuple[torch.Tensor, torch.Tensor]` for a tuple input (torch.jit.script takes an unannotated
        parameter for one tensor), nothing for a tensor."""
        def type_of(p: str) -> str:
            if p not in self.tuples:
                return "torch.Tensor"
            return "tuple[" + ", ".join(type_of(f"{p}[{i}]") for i in range(self.tuples[p])) + "]"
        return f": {type_of(path)}" if path in self.tuples else ""

    def _parameters(self, local: Namespace, var: dict, holder: dict, last_use: dict) -> list:
        """forward's parameters, one per input; a tuple input's tensors are read as `hidden[0]`."""
        params = {name: local.claim(name) for name in top_names([n for n, _ in self.graph.inputs])}
        for name, ref in self.graph.inputs:
            first, *rest = name.split(SEP)
            top = params[first]
            var[ref] = top + "".join(f"[{i}]" for i in rest)
            for k in range(len(rest)):
                path = top + "".join(f"[{i}]" for i in rest[:k])
                self.tuples[path] = max(self.tuples.get(path, 0), int(rest[k]) + 1)
            if top not in holder or last_use.get(ref, -1) > last_use.get(holder[top], -1):
                holder[top] = ref   # a tuple's name stays taken while any of its tensors is used
        return list(params.values())

    def _node_expr(self, node: Node, var: dict, printer: Printer, params: list, graph: Graph | None = None,
                   module: str | None = None) -> str:
        """The node's expression; `module`: the module it applies, when not its own attribute (a loop's)."""
        g = graph or self.graph
        inputs = [var[r] for r in node.inputs]
        if node.kind == "call":
            inst = g.instances[node.instance]
            name = module or "self." + attr(self.external.get(inst.id, inst.name))
            return f"{name}({_nested(structure([n for n, _ in inst.graph.inputs]), inputs, self.tuples)})"
        op = node.op
        inputs = op.positional(node.args, inputs)   # keyword inputs are read from the args by name
        source = (inputs or params or [None])[0]
        args = self._inplace_args(op, node.instance if op.is_layer else node.id, node.args, g)
        e = Emit(args, inputs, var, printer, op, device=f"{source}.device" if source else None,
                 types=[g.type_of(r) for r in op.positional(node.args, node.inputs)], outputs=node.outputs)
        self.gen.helpers.update(_helpers_of(op.torch, node.args))
        if op.is_layer:
            inst = g.instances[node.instance]
            if is_module(inst):
                call = op.torch.call
                module = module or f"self.{attr(inst.name)}"
                return call(e, module) if call else \
                    f"{module}({_nested(op.input_structure(len(inputs)), inputs, self.tuples)})"
            if g is self.graph:
                e.args = self._live(inst, args, printer)
            return op.torch.functional(e)
        return op.torch.expr(e)

    def _inplace_args(self, op, owner: str | None, args: dict, graph: Graph | None = None) -> dict:
        """The arguments with `inplace=True` dropped where overwriting the input is not safe (inplace.py)."""
        if not args.get("inplace") or op.param("inplace") is None:
            return args
        if (graph is None or graph is self.graph) and owner in self.inplace:
            return args
        return dict(args, inplace=False)

    def _scan_lines(self, node: Node, targets: str, var: dict, printer: Printer, local: Namespace) -> list[str]:
        """A scan as the loop one writes by hand: the step module called on each step of the sequence
        (`x.unbind(1)`, or `x.split(1, dim=1)` with keepdim), then `future` times on its own last output,
        each y collected and stacked (or concatenated) at the end."""
        g, scan = self.graph, node.args["scan"]
        sub = node.args["graph"]
        inst = g.instances[node.instance]
        call = f"self.{self.external.get(inst.id, inst.name)}"
        seq = var[node.inputs[0]]
        outs = [var.get(Ref(node.id, k)) for k in range(len(node.outputs))]
        # the carried state: the outputs' own names (fresh where the result is unused or names the sequence)
        state = [o if o is not None and o != seq else local.claim(name.replace(SEP, "_"))
                 for o, (name, _) in zip(outs[1:], sub.inputs[1:])]
        lines = []
        inits = [var[r] for r in node.inputs[1:]]
        if state != inits:
            lines.append(f"{', '.join(state)} = {', '.join(inits)}")
        x_t, y = local.claim(sub.inputs[0][0].replace(SEP, "_")), local.claim(sub.outputs[0][0].replace(SEP, "_"))
        steps = local.claim("outputs")
        dim = scan["dim"]
        pattern = _pattern(structure([n for n, _ in sub.outputs]), [y] + state)
        lines.append(f"{steps} = []")
        source = f"{seq}.split(1, dim={dim})" if scan["keepdim"] else f"{seq}.unbind({dim})"
        for head, x in ((f"for {x_t} in {source}:", x_t), (f"for _ in range({printer.value(scan['future'])}):", y)):
            if head.startswith("for _") and isinstance(scan["future"], int) and not hasattr(scan["future"], "expr") \
                    and scan["future"] == 0:
                continue
            args = _nested(structure([n for n, _ in sub.inputs]), [x] + state, {})
            lines += [head, f"{INDENT}{pattern} = {call}({args})", f"{INDENT}{steps}.append({y})"]
        if outs[0] is not None:
            combine = "cat" if scan["keepdim"] else "stack"
            lines.append(f"{outs[0]} = torch.{combine}({steps}, dim={dim})")
        lines += [f"{o} = {s}" for o, s in zip(outs[1:], state) if o is not None and o != s]
        return lines

    def _targets(self, node: Node, i: int, var, holder, temps, local, last_use, prefer: str | None = None) -> str:
        """The left side of node i's statement. `prefer`: the name the chain of calls this unnamed value
        starts ends in, taken when it holds nothing read after i (`h = F.relu(self.fc1(h))`, then
        `h = F.relu(self.fc2(h))`, rather than a fresh `y` that `h` replaces at once)."""
        refs = [Ref(node.id, k) for k in range(len(node.outputs))]
        first_input = var.get(node.inputs[0]) if node.inputs else None
        names = []
        for k, ref in enumerate(refs):
            if ref not in last_use:
                names.append("_")
                continue
            want = node.names[k]
            free = lambda n: n not in holder or last_use.get(holder[n], -1) <= i  # noqa: E731
            if want is not None:
                name = safe_ident(want)
                if name in holder:
                    name = name if free(name) else local.claim(name)
                elif name in local.taken:  # a helper's or run-time size's name: keep those visible
                    name = local.claim(name)
                else:
                    local.taken.add(name)
            elif k == 0 and prefer is not None and (free(prefer) if prefer in holder else prefer not in local.taken):
                name = prefer
                local.taken.add(name)
            elif k == 0 and first_input is not None and free(first_input) and \
                    (first_input in temps or any(j > i for j in self._bound_at.get(first_input, ()))):
                name = first_input  # `h = self.project(h)` when `h` is rebound right after anyway
            else:
                name = next((t for t in ("x", "h", "y", "z") if t not in local.taken or
                             (t in temps and free(t))), None) or local.claim("x")
                local.taken.add(name)
                temps.add(name)
            holder[name] = ref
            var[ref] = name
            names.append(name)
        return _target_pattern(node, names)

    def _symbol_bindings(self, var: dict) -> list[str]:
        """`B = x.shape[0]` for each run-time size forward reads, and the input sizes it reads by their
        spec names (`dim_reads`); `B, C, H, W = x.shape` where one input gives all of its sizes."""
        reads: dict = {}    # input Ref -> {index: local}
        for sym in sorted(self.symbols):
            found = self._symbol_source(sym)
            if found is None:
                raise CodegenError(f"`{sym}` is used in `{self.graph.name}` but no input has it as a dimension")
            reads.setdefault(found[0], {})[found[1]] = self.size_names[sym]
        refs = dict(self.graph.inputs)
        for a, local in self.dim_reads.items():
            reads.setdefault(refs[a.input], {})[a.index] = local
        lines = []
        for ref, got in reads.items():
            if sorted(got) == list(range(self.graph.type_of(ref).rank)) and len(got) > 1:
                lines.append(f"{', '.join(got[i] for i in sorted(got))} = {var[ref]}.shape")
            else:
                lines += [f"{got[i]} = {var[ref]}.shape[{i}]" for i in sorted(got)]
        return lines

    def _requirements(self, printer: Printer) -> list[str]:
        """A model's run-time requirements (`T > 3` for `x[:, 3]`), checked before anything runs,
        each with the spec position that relies on it and the sizes it got. Blocks leave them to
        their callers, and a requirement on sizes no input gives is left to torch."""
        if not (self.is_model and self.graph.kind == "model"):
            return []
        known = _symbol_names(self.graph)
        out = []
        for g in requirements(self.graph.guards):
            names = sorted({a.name for a in g.atoms() if isinstance(a, Var)})
            if not set(names) <= known:
                continue
            g = _as_bound(g)
            cond = _negate(g, printer)
            where = f" ({_position(g.where)})" if g.where is not None else ""
            got = ", ".join(f"{n} = {{{self.forward_atom(Var(n))}}}" for n in names)
            msg = f"{self.graph.name} needs {g.to_python(_doc_atom)}{where}".replace("{", "{{").replace("}", "}}")
            out += [f"if {cond}:", f"{INDENT}raise ValueError(f{py_str(msg + ', got ' + got)})"]
        return out

    def _layout(self, var: dict) -> list[str]:
        """channels_last models convert their 4-d inputs first."""
        if not (self.is_model and self.graph.memory_format == "channels_last"):
            return []
        images = [ref for name, ref in self.graph.inputs   # a tuple input's tensors are left as they come
                  if self.graph.type_of(ref).rank == 4 and self.graph.type_of(ref).is_float and SEP not in name]
        return [f"{var[ref]} = {var[ref]}.contiguous(memory_format=torch.channels_last)" for ref in images]

    def _symbol_source(self, sym: str) -> tuple | None:
        """(the input's Ref, the index) of the dimension that is the run-time size `sym`."""
        for _name, ref in self.graph.inputs:
            for i, d in enumerate(self.graph.type_of(ref).shape):
                if isinstance(d, Sym) and d.poly == Poly.atom(Var(sym)):
                    return ref, i
        return None


class _AnyName(dict):
    """Every tensor an emission reads named `t` (neutral.py writes a layer without its forward's names)."""

    def __missing__(self, key) -> str:
        return "t"


class Emit:
    """What an op's emission sees: inputs as source, arguments and a printer."""

    def __init__(self, args: dict, inputs: list[str], var: dict, printer: Printer, op, device: str | None,
                 types: list, outputs: list):
        self.args, self.inputs, self._var, self._printer, self.op, self.device = \
            args, inputs, var, printer, op, device
        self.types, self.outputs = types, outputs   # the input and output TensorTypes

    @property
    def x(self):
        """The first input's type (as in shape rules' `b.x`)."""
        return self.types[0]

    def __getitem__(self, name: str):
        return self.args[name]

    def fmt(self, v) -> str:
        return self._printer.value(v)

    def arg(self, name: str) -> str:
        v = self.args[name]
        if isinstance(v, TensorValue):
            return self._var[v.ref]
        if isinstance(v, tuple) and v and all(isinstance(x, TensorValue) for x in v):
            return "[" + ", ".join(self._var[x.ref] for x in v) + "]"
        return self.fmt(v)

    def kw(self, name: str) -> str:
        """`, name=value`, or nothing when the value is the default."""
        spec = self.op.param(name)
        v = self.args[name]
        if spec is not None and is_default(v, spec.default):
            return ""
        return f", {name}={self.fmt(v)}"

    def dims(self, values) -> str:
        return ", ".join(self.fmt(v) for v in values)


# ---------------------------------------------------------------- one class per block (backends/variants.py)


class _Unprintable(Exception):
    """A decision about a size the merged constructor does not receive."""


def _argument_names(signature: list) -> dict:
    """The constructor's arguments a fact can be written in: atom key (a parameter's name, an input's
    size) -> its Python name; a parameter renamed in Python (a keyword) is not one."""
    return {key: name for key, name, _, _ in signature if key == name or isinstance(key, InDim)}


def _atom_key(a):
    return a.name if isinstance(a, Param) else a


def _namer(names: dict, read: set | None = None):
    """An atom's Python for to_python: its name in `names` (atom key -> name), each key it reads added
    to `read`; _Unprintable where there is none."""
    def name(a):
        key = _atom_key(a)
        if key not in names:
            raise _Unprintable(a)
        if read is not None:
            read.add(key)
        return names[key]
    return name


def merged_class(gen: Generator, groups: list) -> ClassInfo | None:
    """One class for a block's specializations (each a list of graphs that share a body), or None
    where they stay separate classes (see backends/variants.py)."""
    if _count_like(groups):
        return None
    names: dict = {}
    parts = []
    aliases = _common_aliases(groups)
    for group in groups:
        writer = _ClassWriter(gen, group[0], is_model=False, names=dict(names), aliases=aliases)
        part = writer.parts()
        for key, name, _, _ in part.signature:
            names.setdefault(key, name)
        for p, name in writer.param_names.items():
            names.setdefault(p, name)
        parts.append(part)
    if len({p.base for p in parts}) != 1:
        return None     # an nn.Sequential and a module with a forward of its own
    graph = groups[0][0]
    read: set = set()    # the arguments the decisions read
    try:
        cases, fixed = _variant_cases(gen, groups, names, read)
    except _Unprintable:
        return None
    bodies = [Body(p.init, p.forward, c, f, p.first, quiet_members(group[0]))
              for p, c, f, group in zip(parts, cases, _flags(groups, names), groups)]
    merged = variants.merge(graph.name, bodies, set(names.values()), _where(graph))
    if merged is None or _longer(merged, parts):
        return None
    signature = _merged_signature(graph, parts, names, read)
    code = assemble(signature, _merged_init(merged, parts), merged.forward, parts[0].base)
    facts = [fact_of(g) for g in conjuncts(fixed)]
    return ClassInfo("", signature, code, parts[0].heading, facts, [m for g in groups for m in g])


def flagged_class(gen: Generator, graph: Graph, flags: ModelFlags) -> ClassInfo | None:
    """A model's one class for every combination of its flags that checks (ModelFlags), each flag a
    live constructor argument; None where the specializations stay apart (backends/variants.py)."""
    live = [p for p in graph.params if any(p in values for values, _ in flags.graphs)]
    specs = [({p: graph.params[p] for p in live}, graph), *flags.graphs]
    parts = []
    for _, g in specs:
        writer = _ClassWriter(gen, g, is_model=True)
        writer.flags = set(live)
        parts.append(writer.parts())
    if len({p.base for p in parts}) != 1:
        return None
    atoms = {p: variants.Atom(("param", p), p, f"not {p}") for p in live}
    methods = [_other_methods(part.forward) for part in parts]   # -O2's `train` refusal, alike in each
    bodies = [Body(part.init, part.forward[:len(part.forward) - len(rest)], [[(atoms[p], values[p]) for p in live]],
                   dict(values), part.first, quiet_members(g)) for part, rest, (values, g) in zip(parts, methods, specs)]
    merged = variants.merge(graph.name, variants.flags_spelled(bodies), set(graph.params), _where(graph))
    if merged is None or _longer(merged, parts):
        return None
    if merged.check:    # what the class refuses, the spec refused: say why
        merged.check = [f"# {line}" for why in flags.failed for line in textwrap.wrap(why, MAX_STATEMENT - 10)] \
            + merged.check
    code = assemble(parts[0].signature, _merged_init(merged, parts), merged.forward + methods[0], parts[0].base)
    return ClassInfo("", parts[0].signature, code, parts[0].heading, parts[0].facts, [graph])


def quiet_members(graph: Graph) -> frozenset:
    """The members whose construction draws nothing from torch's random number generator (a norm, a
    dropout: OpDef.draws_at_init), so that a merged class may build them where the other specialization
    does without changing anyone's initial weights."""
    return frozenset(inst.name for inst in graph.instances.values()
                     if inst.kind == "layer" and inst.container is None and inst.folded is None and not inst.inits
                     and is_module(inst) and not inst.op.draws_at_init)


def _other_methods(forward: list[str]) -> list[str]:
    """The lines after forward's own: the methods written after it (with the blank line before)."""
    at = next((i for i, line in enumerate(forward) if line.startswith("def ") and not line.startswith("def forward(")),
              len(forward))
    return forward[max(at - 1, 0):] if at < len(forward) else []    # an nn.Sequential's has no forward before


def _longer(merged: variants.Merged, parts: list) -> bool:
    """Branches that would only list the bodies one after the other (members that one names `conv`
    and another `conv1`, say): separate classes read better than one long one."""
    return len(merged.init) + len(merged.forward) > sum(len(p.init) + len(p.forward) for p in parts) + 2 * len(parts)


def _merged_init(merged: variants.Merged, parts: list) -> list[str]:
    """A merged class's __init__: arguments are checked before anything is built, but after a
    module's super().__init__()."""
    if merged.first is None and parts[0].base == "nn.Module":
        return parts[0].first + merged.check + merged.init
    return merged.check + (merged.first or parts[0].first) + merged.init


def _where(graph: Graph) -> str:
    """`resnet.dl:21`: where the spec declares the model or block ('' when nowhere)."""
    return _position(graph.decl.span) if graph.decl is not None else ""


def _position(span) -> str:
    """`resnet.dl:21`: a spec position as a generated message names it."""
    return f"{doc_text(os.path.basename(span.file.name))}:{span.line}"


def _common_aliases(groups: list) -> dict:
    """The input dims every use proves equal to the same parameter expression (`x.shape[2] == dim`):
    printed as it in every branch."""
    maps = [_input_aliases(m) for g in groups for m in g]
    return {a: p for a, p in maps[0].items() if all(m.get(a) == p for m in maps[1:])}


def _flags(groups: list, names: dict) -> list[dict]:
    """Per specialization, the flag (bool) arguments that differ between them, by their
    constructor names, with its value (flags whose uses disagree within one are left out)."""
    out: list[dict] = [{} for _ in groups]
    for p in _differing_params(groups):
        values = [[m.params[p] for m in group] for group in groups]
        if all(isinstance(x, bool) for v in values for x in v) and all(len(set(v)) == 1 for v in values):
            for flags, v in zip(out, values):
                flags[names[p]] = v[0]
    return out


def _count_like(groups: list) -> bool:
    """Specializations that fix one parameter to different numbers (`layers == 6`, `layers == 12`):
    a count an unrolled loop ran, which branches would only spell out again (one class per
    count stays, its docstring saying the count)."""
    seen: dict = {}
    for group in groups:
        for graph in group:
            for g in simplified(_facts(graph.guards)):
                if isinstance(g, Guard) and g.op == "==" and g.rhs.is_const() and \
                        isinstance(g.lhs.single_atom(), Param):
                    seen.setdefault(g.lhs.single_atom(), set()).add(g.rhs.const_value())
    if any(len(v) > 1 for v in seen.values()):
        return True
    # a list or tuple (`config = [[64, 2], ...]`) a loop ran over, likewise
    return any(isinstance(v, (list, tuple)) for values in _differing_params(groups).values() for v in values)


def _variant_cases(gen: Generator, groups: list, names: dict, read: set) -> tuple[list, list]:
    """Per specialization, per use, the decisions it was made under as (Atom, holds) pairs; and the
    guards every use shares (the class's facts, as before: they do not tell the uses apart)."""
    per_graph = [[_decisions(graph, groups, lambda g: callee_decided(gen, g)) for graph in group] for group in groups]
    everywhere = None
    for group in per_graph:
        for case in group:
            keys = {(atom.key, holds) for atom, holds, _ in case}
            everywhere = keys if everywhere is None else everywhere & keys
    cases, fixed = [], []
    seen: dict = {}
    for group in per_graph:
        out = []
        for case in group:
            lits = [(atom, holds) for atom, holds, _ in case if (atom.key, holds) not in everywhere]
            out.append(_same_text([(replace(_printed(atom, names, read), logic=atom.logic, where=atom.where,
                                            named=atom.named), holds) for atom, holds in lits], seen))
        cases.append(out)
    for atom, holds, guard in per_graph[0][0]:
        if (atom.key, holds) in everywhere and guard is not None:
            fixed.append(guard)
    return cases, fixed


def _same_text(case: list, seen: dict) -> list:
    """Decisions that print alike are one (`(k - 1) % 2 == 0`, from the height and from the width),
    and one printed as another's negation is it, not holding."""
    out = []
    for atom, holds in case:
        if atom.true in seen:
            atom = seen[atom.true]
        elif atom.false in seen:
            atom, holds = seen[atom.false], not holds
        else:
            seen[atom.true] = atom
        if (atom, holds) not in out:
            out.append((atom, holds))
    return out


def _decisions(graph: Graph, groups: list, decided) -> list:
    """(Atom with its guard in `true`, holds, the guard) for each decision of one use (but those of
    the blocks it calls that decide them in their own constructors: `decided(guard)`)."""
    out = []
    for g in simplified(_facts([g for g in graph.guards if not decided(g)])):
        if isinstance(g, FloatGuard):
            out.append((variants.Atom(("float", g), g, None), True, g))
            continue
        canon, holds = _canonical(g)
        where = _position(g.where) if getattr(g, "where", None) is not None else ""
        out.append((variants.Atom(canon.key(), canon, None, logic=_logic_of(canon), where=where,
                                  named=_spec_name(graph, g, holds)), holds, g))
    for p, values in _differing_params(groups).items():
        v = graph.params[p]
        if isinstance(v, bool) and all(isinstance(x, bool) for x in values):
            out.append((variants.Atom(("param", p), ("param", p, True), None), v, None))
            continue
        for x in values:   # `padding == "same"`, and for a size `padding != "same"`
            atom = variants.Atom(("param", p, literal(x)), ("param", p, x), None)
            out.append((atom, not _is_size(v) and literal(v) == literal(x), None))
    return out


def _spec_name(graph: Graph, g, holds: bool) -> tuple | None:
    """(the spec's name for the decision, the atom's value where the name is true): `use_res_connect`
    for the guard of `use_res_connect = stride == 1 and x.shape[1] == out` (frontend/conditions.py),
    a block's own; None where it has none."""
    at = getattr(g, "at", None)
    found = graph.named_conditions.get(at) if at is not None and g.origin is None else None
    if found is None:
        return None
    name, cond = found
    if g == cond:
        return safe_attr(name), holds
    return (safe_attr(name), not holds) if g == cond.negated() else None


def callee_decided(gen: Generator, g) -> bool:
    """Whether the guard is the decision of one of the spec's conditions (`Guard.at`, `Compound.at`)
    that the block it comes from (`origin`) decides in its own constructor: the block's class takes
    every argument it reads, and branches on it or, built for one outcome, checks it, so the class
    that calls the block needs neither (BasicBlock's `stride != 1 or in_channels != out`, in the
    stage that makes the blocks)."""
    if getattr(g, "at", None) is None or g.origin is None:
        return False
    info = gen.by_graph.get(id(g.origin))
    own = [c for c in g.origin.guards if getattr(c, "at", None) == g.at]
    return info is not None and bool(own) and all(_decides(info, c, g.origin) for c in own)


def _decides(info: ClassInfo, g, mine: Graph) -> bool:
    """Whether the class decides the guard in its constructor: it takes every argument the guard
    reads (by the guard's names), its uses made it both ways (a class built for one outcome only
    would refuse the other as a need it is not: the caller's "compiled for" says what to do), and
    whichever way it decides, its result has the sizes of `mine` (the specialization the caller was
    written with) there."""
    keys = _argument_names(info.signature)
    if not all(_atom_key(a) in keys for a in _base_atoms(g)):
        return False
    return _both_ways(info, g) and all(_same_results(mine, other) for other in info.graphs)


def _both_ways(info: ClassInfo, g) -> bool:
    """Whether the class's uses made the decision `g` both ways: each one's fact at g's span is g or
    its negation, and both occur (a fact of another form there is no known outcome)."""
    keys = {g.key(): True, g.negated().key(): False}
    outcomes = set()
    for m in info.graphs:
        for c in m.guards:
            if getattr(c, "at", None) == g.at:
                if c.key() not in keys:
                    return False
                outcomes.add(keys[c.key()])
    return len(outcomes) == 2


def _same_results(mine: Graph, other: Graph) -> bool:
    """Whether `other`'s result sizes are `mine`'s wherever `other` is built: the same expressions,
    or equal by `other`'s facts (MBConv's `(h + 2 * (k // 2) - k) // stride + 1` and the `h` of its
    residual sum, which needed them equal)."""
    ours, theirs = _result_forms(mine), _result_forms(other)
    if len(ours) != len(theirs):
        return False
    differ = [(a, b) for a, b in zip(ours, theirs) if a != b]
    if not differ:
        return True
    facts = [f for f in other.guards if isinstance(f, Guard)]
    consts = constants(other.guards)
    known = {f.key() for f in facts} | {f.subst(lambda a: consts.get(a)).key() for f in facts}
    for a, b in differ:
        if not isinstance(a, Poly) or not isinstance(b, Poly):
            return False
        same = Guard(a, "==", b)
        settled = same.subst(lambda x: consts.get(x))
        if same.key() in known or settled.key() in known:
            continue
        if not (settled.lhs.is_const() and settled.rhs.is_const() and settled.holds(lambda x: None)):
            return False
    return True


def _result_forms(graph: Graph) -> list:
    """The block's result sizes as expressions (`out`, `(h - 1) // stride + 1`), whatever their values."""
    out = []
    for _, ref in graph.outputs:
        t = graph.result_type(ref)
        shape = getattr(t, "shape", None)
        if shape is None:
            out.append(("not a tensor", repr(t)))
            continue
        out += [("rank", len(shape))] + [d.expr if isinstance(d, Size) else d.poly if isinstance(d, Sym)
                                         else Poly.const(int(d)) for d in shape]
    return out


def _canonical(g) -> tuple:
    """(the guard or its negation, whichever is the atom of both; whether it is the guard)."""
    neg = g.negated()
    return (g, True) if repr(g.key()) <= repr(neg.key()) else (neg, False)


def _logic_of(g) -> tuple | None:
    """A condition `a or b` in terms of its operands' atoms (variants.Atom.logic); None for a guard."""
    if not isinstance(g, Compound):
        return None
    items = []
    for p in g.parts:
        canon, holds = _canonical(p)
        items.append(_logic_of(p) or ("atom", canon.key(), holds))
    return (g.op, tuple(items))


def _differing_params(groups: list) -> dict:
    """Parameters the uses give different values that are no sizes (flags, names, lists), or sizes
    in some uses only -> those values, in first-seen order."""
    graphs = [m for g in groups for m in g]
    out = {}
    for p in graphs[0].params:
        values = [m.params[p] for m in graphs]
        if all(_is_size(v) for v in values) or len({literal(v) for v in values}) == 1:
            continue
        out[p] = list({literal(v): v for v in values if not _is_size(v)}.values())
    return out


def _is_size(v) -> bool:
    return isinstance(v, (Size, Real)) or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _printed(atom, names: dict, read: set):
    """The atom with its Python spelled in the merged constructor's argument names (each one it
    reads added to `read`)."""
    name = _namer(names, read)
    what = atom.true
    if isinstance(what, tuple):     # a parameter's value
        _, p, v = what
        read.add(p)
        if isinstance(v, bool):
            return variants.Atom(atom.key, names[p], f"not {names[p]}")
        op, neg = ("is", "is not") if v is None else ("==", "!=")
        return variants.Atom(atom.key, f"{names[p]} {op} {literal(v)}", f"{names[p]} {neg} {literal(v)}",
                             (literal(v), names[p]))
    if isinstance(what, FloatGuard):
        text = to_python(what.expr, name)
        return variants.Atom(atom.key, f"{text} == {what.value!r}", f"{text} != {what.value!r}")
    try:
        return _guard_atom(atom.key, what, name)
    except _Unprintable:   # `x.shape[3] == x.shape[3] + 2 * (k // 2) - k + 1`: the size cancels
        return _guard_atom(atom.key, _cancelled(what), name)


def _cancelled(g):
    """The guard with each comparison's sides moved to the left (a size on both sides cancels)."""
    if isinstance(g, Compound):
        return Compound(g.op, tuple(_cancelled(p) for p in g.parts))
    return Guard(g.lhs - g.rhs, g.op, Poly.const(0)).normalized()


def _guard_atom(key, g, name) -> variants.Atom:
    return variants.Atom(key, g.to_python(name), g.negated().to_python(name))


def _merged_signature(graph: Graph, parts: list, names: dict, read: set) -> list:
    """Every argument some specialization's constructor takes or a decision reads, in the order
    one class's would be: input sizes first, then the block's parameters."""
    keys = {key for p in parts for key, _, _, _ in p.signature} | read
    dims = sorted((k for k in keys if isinstance(k, InDim)),
                  key=lambda a: ([n for n, _ in graph.inputs].index(a.input), a.index))
    out = [(a, names[a], ": int", None) for a in dims]
    out += [(p, names[p], _annotation(graph.param_types.get(p)), None) for p in graph.params if p in keys]
    return with_defaults(graph, out)


def _length_fact(name: str, op: str, n: int) -> "Fact":
    """`len(config) == 2` (or `>= 2`), checked by the block's constructor (ClassInfo._checks)."""
    f = Fact(f"len({name}) {op} {n}")
    f.negated = f"len({name}) {'!=' if op == '==' else '<'} {n}"
    return f


def _places_read(decl) -> list:
    """(list name, how many items it needs) for each `widths[3]` (4) or `widths[-2]` (2) in the
    declaration's body: an item read by a constant place."""
    out = []
    for n in ast_nodes(decl.body) if decl is not None else ():
        if isinstance(n, ast.Index) and isinstance(n.value, ast.Name) and len(n.subscripts) == 1:
            i = _constant_place(n.subscripts[0])
            if i is not None:
                out.append((n.value.id, i + 1 if i >= 0 else -i))
    return out


def _constant_place(e) -> int | None:
    """The int a subscript spells (`3`, `-1`), or None."""
    if isinstance(e, ast.UnaryOp) and e.op == "-":
        inner = _constant_place(e.operand)
        return -inner if inner is not None else None
    return e.value if isinstance(e, ast.Const) and type(e.value) is int else None


def _first_uses(graph: Graph) -> dict:
    """Instance id -> the first node applying it."""
    out: dict = {}
    for node in graph.nodes.values():
        if node.instance is not None:
            out.setdefault(node.instance, node)
    return out


def _within(inner, outer) -> bool:
    return inner.file is outer.file and outer.start <= inner.start and inner.end <= outer.end


def _items_of(graph: Graph, p) -> bool:
    """Whether the graph's list parameter `p` has its items as sizes (`hidden[4]`, ir/dims.py Item)."""
    return isinstance(p, str) and int_list(graph.params.get(p)) and Item(p, 0) in graph.atom_env


def _is_last(a: Item, graph: Graph) -> bool:
    return a.index == len(graph.params[a.name]) - 1


def _item_attr(a: Item, graph: Graph) -> str:
    """The member keeping a list's item for forward: `self.last_hidden`, `self.hidden_0`."""
    return f"last_{a.name}" if _is_last(a, graph) else f"{a.name}_{a.index}"


def with_defaults(graph: Graph, signature: list) -> list:
    """A block class's signature with the defaults the spec declares (`stride: int = 1`), where they
    are constants, on the arguments after the last one without: callers then leave them out."""
    declared = {p.name: literal(p.default.value) for p in (graph.decl.params if graph.decl is not None else ())
                if isinstance(p.default, ast.Const)}
    out = list(signature)
    for i in range(len(out) - 1, -1, -1):
        key, name, ann, _ = out[i]
        if not isinstance(key, str) or key not in declared:
            break
        out[i] = (key, name, ann, declared[key])
    return out


# ---------------------------------------------------------------- nested calls in forward

INLINE = "__dslc_inline__"     # stands for a held value while its reader is written
MAX_NESTING = 3                # calls written inside one another at most
MAX_STATEMENT = variants.WIDTH  # a line's characters at most (120, torchvision's black line-length)


class _Held:
    """A value not bound to a local but written into the statement that reads it next, as a person
    writes `x = F.relu(self.bn1(self.conv1(x)))`: an unnamed result read once, by the very next
    statement, so nothing runs between making it and reading it (random draws keep their order)."""

    def __init__(self, targets, var: dict, body: list):
        self.targets, self.var, self.body = targets, var, body
        self.node, self.index, self.expr, self.depth = None, -1, "", 0
        self.carried = 0      # values nested in the expression just written

    def flush(self) -> None:
        """Bind the held value to a local after all (`h = self.conv1(x)`)."""
        if self.node is not None:
            node, expr = self.node, self.expr
            self.node = None
            self.body.append(f"{self.targets(node, self.index)} = {expr}")

    def written_into(self, node: Node, expr_of) -> str:
        """The node's expression, with the held value written in where it reads it, or after binding
        the held value to a local where it cannot be (read twice, a statement too long)."""
        self.carried = 0
        if self.node is None:
            return expr_of()
        ref = Ref(self.node.id)
        self.var[ref] = INLINE
        text = _write_in(expr_of(), self.expr)
        if text is not None and len(text) <= MAX_STATEMENT - 12:
            self.node, self.carried = None, self.depth + 1
            self.var[ref] = self.expr
            return text
        self.flush()
        return expr_of()

    def hold(self, node: Node, i: int, expr: str, inlinable: bool) -> bool:
        """Hold the node's value for the next statement when it may be written there."""
        if not inlinable or self.carried + 1 >= MAX_NESTING:
            return False
        self.node, self.index, self.expr, self.depth = node, i, expr, self.carried
        return True


def _write_in(reader: str, value: str) -> str | None:
    """`reader` with `value` where INLINE stands, parenthesized only if Python would read it otherwise;
    None when the reader reads it more than once or is no expression."""
    if reader.count(INLINE) != 1:
        return None
    plain, wrapped = reader.replace(INLINE, value), reader.replace(INLINE, f"({value})")
    if _binds_tightest(value):   # `self.conv1(x)`, `h.flatten(1)`: no reader can split it
        return plain
    try:
        same = pyast.dump(pyast.parse(plain, mode="eval")) == pyast.dump(pyast.parse(wrapped, mode="eval"))
    except SyntaxError:
        return None
    return plain if same else wrapped


def _binds_tightest(value: str) -> bool:
    try:
        node = pyast.parse(value, mode="eval").body
    except SyntaxError:
        return False
    return isinstance(node, (pyast.Call, pyast.Attribute, pyast.Subscript, pyast.Name))


def _inlinable(node: Node, i: int, nodes: list, readers: dict, special_kind) -> bool:
    """An unnamed single result of an op or block call, read once, by the next node, which is an
    ordinary statement, and not a result of the graph (`readers`: _readers)."""
    if node.kind not in ("op", "call") or len(node.outputs) != 1 or node.names[0] is not None:
        return False
    if i + 1 >= len(nodes) or special_kind(nodes[i + 1]):
        return False
    return readers.get(Ref(node.id)) == [i + 1]


def _chain_names(nodes: list, readers: dict) -> list:
    """For each node i, the user's name for the value a chain of calls from it ends in: each unnamed
    single result read once, as the first input of the next node, up to a node with a name; None
    when the chain ends otherwise (a mask read by keyword is no running value). One pass from the
    end, so that a chain of thousands of layers is not walked again from each of them."""
    def linked(j: int) -> bool:   # node j's result is the first input of node j + 1
        return j + 1 < len(nodes) and nodes[j + 1].inputs[:1] == [Ref(nodes[j].id)]

    ends = [None] * (len(nodes) + 1)   # ends[j]: where the chain goes on from node j, entered from j - 1
    starts = [None] * len(nodes)
    for j in range(len(nodes) - 1, -1, -1):
        node = nodes[j]
        if len(node.outputs) != 1:
            continue
        if node.names[0] is not None:
            ends[j] = safe_ident(node.names[0]) if SEP not in node.names[0] else None
        elif readers.get(Ref(node.id)) == [j + 1] and linked(j):
            ends[j] = starts[j] = ends[j + 1]
    return starts


def _readers(g: Graph, nodes: list) -> dict:
    """Value -> the index of each read of it, once per read (an input, a keyword tensor); a result
    of the graph is read at len(nodes)."""
    out: dict = {}
    for j, node in enumerate(nodes):
        for r in node.inputs:
            out.setdefault(r, []).append(j)
        for v in node.args.values():
            for t in (v if isinstance(v, tuple) else (v,)):
                if isinstance(t, TensorValue) and t.ref not in node.inputs:
                    out.setdefault(t.ref, []).append(j)
    for _, r in g.outputs:
        out.setdefault(r, []).append(len(nodes))
    return out


def is_module(inst: Instance) -> bool:
    """Layers with state, named by the user, or with no functional form become submodules."""
    return inst.op.is_module(bool(inst.user_name))


def _is_alias(node: Node, expr: str, var: dict) -> bool:
    return node.kind == "op" and len(node.inputs) == 1 and expr == var[node.inputs[0]]


def _weight_view(node: Node, g: Graph, readers: dict, end: int) -> bool:
    """An unnamed op on weights alone (`transpose(wte.weight, 0, 1)`) read once, not a result: it is
    written where it is read rather than bound to a local an activation might be called
    (`readers`: _readers, where a result of the graph is read at `end`)."""
    if node.kind != "op" or len(node.outputs) != 1 or node.names[0] is not None or not node.inputs:
        return False
    if any(g.nodes[r.node].kind not in ("weight", "param", "buffer") for r in node.inputs):
        return False
    reads = readers.get(Ref(node.id), [])
    return len(reads) == 1 and reads[0] != end


def _last_uses(g: Graph, nodes: list[Node]) -> dict:
    out = {}
    for i, node in enumerate(nodes):
        for r in node.inputs:
            out[r] = i
        for v in node.args.values():
            for t in (v if isinstance(v, tuple) else (v,)):
                if isinstance(t, TensorValue):
                    out[t.ref] = i
    for _, r in g.outputs:
        out[r] = len(nodes)
    return out


def _target_pattern(node: Node, names: list) -> str:
    """The left side of a node's statement: `h`, `q, k, v`, `out, (h, c)`."""
    if node.kind == "op" and node.op.results is not None:
        nesting = node.op.results
    elif node.kind == "call":   # a block or model that returns a tuple: `out, (h, c) = self.decoder(...)`
        nesting = structure([n for n, _ in node.args["graph"].outputs])
    else:
        nesting = tuple(range(len(names)))
    if nesting == (0,):   # `h, = x.chunk(1)`: chunk and split return a tuple even of one tensor
        return names[0] + ("," if node.kind == "op" and node.op.sequence else "")
    return _pattern(nesting, names)


def _pattern(nesting, names) -> str:
    def go(s):
        if isinstance(s, int):
            return names[s]
        parts = [go(x) for x in s]
        if all(p == "_" for p in parts):
            return "_"
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
    top = [go(x) for x in nesting]
    return ", ".join(top)


def _nested(nesting: tuple, inputs: list, tuples: dict) -> str:
    """Arguments as a forward takes them: `x, (h, c)` for an LSTM given its state. A tuple that is all
    of a tuple input, `(hidden[0], hidden[1])` of `hidden` (`tuples`: its length), is passed whole."""
    def go(s):
        if isinstance(s, int):
            return inputs[s]
        parts = [go(x) for x in s]
        whole = parts[0][:-len("[0]")] if parts[0].endswith("[0]") else None
        if tuples.get(whole) == len(parts) and parts == [f"{whole}[{i}]" for i in range(len(parts))]:
            return whole
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
    return ", ".join(go(s) for s in nesting)


def _given_args(spec, printer: Printer) -> dict:
    """An initializer's arguments as source, those left at their defaults out (a torch.nn.init call)."""
    return {p.name: printer.value(spec.args[p.name]) for p in spec.init.params
            if p.name in spec.args and not is_default(spec.args[p.name], p.default)}


def _helpers_of(torch_entry, args: dict) -> tuple:
    """The helpers an op's code uses: a tuple, or a function of the op's arguments (only some settings
    need one, as MultiheadAttention's causal mask)."""
    h = torch_entry.helpers
    return h(args) if callable(h) else h


def _result_form(graph: Graph) -> tuple:
    """The sizes of a block's first result (1 on), as expressions of its parameters and input sizes."""
    shape = graph.type_of(graph.outputs[0][1]).shape if graph.outputs else ()
    return tuple(d.expr if isinstance(d, Size) else d for d in shape[1:])


def _equal_size(a, b, guards) -> bool:
    return equal_under(a, b, guards) if isinstance(a, Poly) and isinstance(b, Poly) else a == b


def _declared_dim(graph: Graph, a: InDim) -> str | None:
    """The name the spec declared a block's input size with (`C` in `input x: [B, C, H, W]`), where it
    names neither a parameter nor a run-time size of the block."""
    decl = graph.decl
    stmt = next((s for s in getattr(decl, "body", ()) if isinstance(s, ast.InputStmt) and s.name == a.input), None)
    items = getattr(getattr(stmt, "shape", None), "items", None)
    if not items or a.index >= len(items) or not isinstance(items[a.index], ast.Name):
        return None
    name = items[a.index].id
    return None if name in graph.params or name in _symbol_names(graph) else name


def _symbol_names(g: Graph) -> set:
    names = set()
    for _, ref in g.inputs:
        for d in g.type_of(ref).shape:
            if isinstance(d, Sym):
                names |= {a.name for a in d.poly.atoms() if isinstance(a, Var)}
    return names


def _plus(index: str, c: int) -> str:
    return index if c == 0 else f"{index} + {c}" if c > 0 else f"{index} - {-c}"


def _packed(head: str, items: list[str], tail: str, indent: int = 2) -> list[str]:
    """`head` + the items, comma-separated, + `tail`: on one line where it fits, else as many items a line
    as fit, the lines after the first aligned under the first item (the way the twins write
    `nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(),`)."""
    width = MAX_STATEMENT - len(INDENT) * indent
    lines = [head]
    for k, item in enumerate(items):
        text = item + (", " if k < len(items) - 1 else tail)
        if len(lines[-1]) > len(head) and len(lines[-1]) + len(text.rstrip()) > width:
            lines[-1] = lines[-1].rstrip()
            lines.append(" " * len(head))
        lines[-1] += text
    return [line.rstrip() for line in lines]


def _packed_call(head: str, argument: str, tail: str, indent: int = 2) -> list[str]:
    """`head + argument + tail` on one line where it fits, else the argument on a line of its own."""
    if len(INDENT * indent + head + argument + tail) <= MAX_STATEMENT:
        return [head + argument + tail]
    return [head, INDENT + argument + tail]


def _wrapped(text: str, indent: str = "") -> str:
    """A docstring's text in lines within the line limit, the lines after the first indented by
    `indent` (the docstring's own), counting the quotes around it."""
    width = MAX_STATEMENT - len(indent) - 3
    lines = textwrap.wrap(text, width=width, break_long_words=False, break_on_hyphens=False)
    return ("\n" + indent).join(lines) if len(text) + 6 > width else text


def _fitted(lines: list[str]) -> list[str]:
    """The lines, each statement that passes the line limit wrapped: a call's arguments aligned under
    the first (`self.transformer = nn.Transformer(d_model=..., ...)`), a raise's message split. A
    statement written on several lines (a merged class indents one more level) is joined first."""
    out, i = [], 0
    while i < len(lines):
        end, statement = i + 1, None
        branch = _BRANCH.match(lines[i])
        if len(lines[i]) > MAX_STATEMENT and branch:
            out += _wrapped_condition(*branch.groups())
            i += 1
            continue
        if len(lines[i]) > MAX_STATEMENT:
            end, statement = _statement_at(lines, i)
        out += _fit(lines[i:end], statement) if statement is not None else lines[i:end]
        i = end
    return out


_BRANCH = re.compile(r"^(\s*)(if|elif) (.+):$")


def _wrapped_condition(indent: str, keyword: str, cond: str) -> list[str]:
    """`if a and b and ...:` over the line limit, in parentheses, broken before an `and` / `or` at its top
    level, the lines after the first indented twice (PEP 8: apart from the body)."""
    pieces = _top_level_split(cond)
    lines = [f"{indent}{keyword} ({pieces[0]}"]
    for piece in pieces[1:]:
        if len(lines[-1]) + 1 + len(piece) <= MAX_STATEMENT - 2:
            lines[-1] += " " + piece
        else:
            lines.append(indent + INDENT * 2 + piece)
    lines[-1] += "):"
    return lines


def _top_level_split(text: str) -> list[str]:
    """The text cut before each ` and ` / ` or ` outside brackets and strings (`a and (b or c)`: two)."""
    cuts = [i for i, ch in top_level(text) if ch == " " and (text.startswith(" and ", i) or text.startswith(" or ", i))]
    return [text[a + 1 if k else 0:b] for k, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(text)]))]


def _statement_at(lines: list[str], i: int) -> tuple:
    """(the index after it, its AST) for the statement that starts on line i; (i + 1, None) where
    none does (a continuation line, `if ...:`)."""
    for end in range(i + 1, min(i + 12, len(lines)) + 1):
        text = " ".join(line.strip() for line in lines[i:end])
        try:
            body = pyast.parse(text).body
        except SyntaxError:
            continue
        return (end, (body[0], text)) if body else (i + 1, None)   # a comment is no statement
    return i + 1, None


def _fit(lines: list[str], statement: tuple) -> list[str]:
    node, text = statement
    indent = len(lines[0]) - len(lines[0].lstrip())
    value = node.exc if isinstance(node, pyast.Raise) else getattr(node, "value", None)
    if not isinstance(value, pyast.Call) or value.end_col_offset != len(text):
        return lines
    args = value.args
    if isinstance(node, pyast.Raise) and len(args) == 1 and isinstance(args[0], pyast.Constant):
        error = pyast.get_source_segment(text, value.func)          # ValueError, RuntimeError
        return [" " * (indent - len(INDENT)) + line for line in _raised(args[0].value, indent // len(INDENT), error)]
    before = text[:value.col_offset]          # `self.decoder = `
    wrapped = _wrapped_call(value, text, indent + len(before))
    return [" " * indent + before + wrapped[0]] + wrapped[1:]


def _wrapped_call(node, text: str, column: int) -> list[str]:
    """A call (or a list) starting at `column`, its arguments packed under the first; an argument too
    long for any line is itself wrapped where it starts (a layer given to a container, EfficientNet's
    settings). Lines after the first carry their own indentation."""
    whole = pyast.get_source_segment(text, node)
    if column + len(whole) <= MAX_STATEMENT or not isinstance(node, (pyast.Call, pyast.List)):
        return [whole]
    if isinstance(node, pyast.Call):
        parts = sorted([*node.args, *node.keywords], key=lambda a: (a.lineno, a.col_offset))
        head, tail = pyast.get_source_segment(text, node.func) + "(", ")"
    else:
        parts, head, tail = node.elts, "[", "]"
    lines, align = [head], column + len(head)
    for k, part in enumerate(parts):
        piece, suffix = pyast.get_source_segment(text, part), ", " if k < len(parts) - 1 else tail
        end = (column if len(lines) == 1 else 0) + len(lines[-1])
        inner = part.value if isinstance(part, pyast.keyword) else part
        wrappable = isinstance(inner, (pyast.Call, pyast.List))
        fits_alone = align + len(piece + suffix.rstrip()) <= MAX_STATEMENT
        if lines[-1].strip() not in (head, "") and end + len(piece + suffix.rstrip()) > MAX_STATEMENT \
                and (fits_alone or not wrappable):   # one that fits no line wraps where it stands
            lines[-1] = lines[-1].rstrip()
            lines.append(" " * align)
            end = align
        if end + len(piece + suffix.rstrip()) <= MAX_STATEMENT or not wrappable:
            lines[-1] += piece + suffix
            continue
        prefix = piece[:len(piece) - len(pyast.get_source_segment(text, inner))]    # `norm=`
        sub = _wrapped_call(inner, text, end + len(prefix))
        lines[-1] += prefix + sub[0]
        lines += sub[1:]
        lines[-1] += suffix
    return [line.rstrip() for line in lines]


def _raised(message: str, indent: int, error: str) -> list[str]:
    """`raise ERROR("...")` indented once, the message split at spaces into strings Python joins
    where one line would pass the line limit (a check in __init__ is `indent` levels deep)."""
    head = f"{INDENT}raise {error}("
    width = MAX_STATEMENT - len(INDENT) * (indent - 1) - len(head) - 4   # quotes, `)` or a space
    chunks, line = [], ""
    for word in re.findall(r"`[^`]*`\S*|\S+", message):     # a `code span` is not split
        if line and len(line) + 1 + len(word) > width:
            chunks.append(line + " ")
            line = word
        else:
            line = f"{line} {word}" if line else word
    chunks.append(line)
    strings = [py_str(c) for c in chunks]
    return [head + strings[0] + (")" if len(strings) == 1 else "")] + \
        [" " * len(head) + t + (")" if k == len(strings) - 1 else "") for k, t in enumerate(strings[1:], 1)]


def _dense_joins(g: Graph) -> dict:
    """The concat node that joins each element of a dense list to the running value -> the list's name."""
    out = {}
    dense = {i for c in g.containers.values() if c.concat_dim is not None for i in c.instances}
    for node in g.nodes.values():
        if node.kind == "op" and node.op.name == "concat" and len(node.inputs) == 2:
            element = g.nodes[node.inputs[1].node]
            if element.instance in dense:
                out[node.id] = g.instances[element.instance].container
    return out


def _same_size(v, base, k: int, step) -> bool:
    """Whether a size is `base + k * step` (the input of a dense list's element k)."""
    return isinstance(v, Size) and isinstance(base, Size) and isinstance(step, Size) and \
        v.expr == base.expr + step.expr * Poly.const(k)


def _factor(text: str) -> str:
    """A size written as a factor: `growth`, `(2 * growth)`."""
    return text if text.isidentifier() or text.isdigit() else f"({text})"


def _sequential(g: Graph):
    """The Container a block is an nn.Sequential of, or None (frontend/containers.py)."""
    return next((c for c in g.containers.values() if c.sequential), None)


def attr(name: str) -> str:
    """An instance's attribute path: a module list's element `h.3` is `h[3]`."""
    head, *rest = name.split(".")
    return head + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in rest)


def _is_expression(v) -> bool:
    """A value that prints as parameters (`stride`, `2 * width`), not as a constant."""
    return isinstance(v, (Size, Real)) and not v.expr.is_const()


def _derived(v) -> bool:
    """A model parameter's value that is an expression of other parameters (its default was)."""
    return isinstance(v, (Size, Real)) and not v.expr.is_const()


def _annotation(t: str | None) -> str:
    return f": {t}" if t else ""


def _single_atom(v):
    """The atom a size is exactly (`in_channels`, not `2 * in_channels`), or None."""
    return v.expr.single_atom() if isinstance(v, Size) else None


def _input_aliases(graph: Graph) -> dict:
    """Block input dims a guard proves equal to a parameter expression: print them as it.

    `LayerNorm()` on an input whose width the block also calls `dim` becomes
    `nn.LayerNorm(dim)`, as a person would write it, not a second constructor argument."""
    out = {}
    for g in graph.guards:
        if not isinstance(g, Guard) or g.op != "==":
            continue
        for a, b in ((g.lhs, g.rhs), (g.rhs, g.lhs)):
            atom = _single_atom(Size(0, a)) if not a.is_const() else None
            if isinstance(atom, InDim) and atom not in out and b.atoms() and \
                    all(isinstance(x, (Param, FloorDiv, MinMax)) for x in b.atoms()) and \
                    not any(isinstance(x, InDim) for x in b.atoms()):
                out[atom] = b
                break
    return out


def _parenthesized(p: Poly, atom) -> str:
    text = to_python(p, atom)
    return text if _single_atom(Size(0, p)) is not None else f"({text})"


def _doc_atom(a) -> str:
    if isinstance(a, InDim):
        return f"{py_path(a.input)}.shape[{a.index}]"
    if isinstance(a, Item):
        return f"{a.name}[{a.index}]"
    return a.name


def _facts(guards: list) -> list:
    """The guards that are facts about parameters (run-time requirements are checked by forward)."""
    return [g for g in guards if not is_requirement(g)]


def simplified(guards: list) -> list:
    """Guards without those implied by others: constants a guard fixes are substituted, and a
    remainder condition another one on the same size implies is dropped (ir/dims.py)."""
    consts = constants(guards)
    out, seen = [], set()
    for g in guards:
        if not isinstance(g, Guard):
            out.append(g)
            continue
        g2 = g if defines(g, consts) else g.subst(lambda a: consts.get(a))
        if g2.is_trivial() or g2.key() in seen:
            continue
        seen.add(g2.key())
        out.append(g2)
    return without_implied(out)


def _implied(g, guards: list) -> bool:
    """An equality the others make hold by substitution (`base * mults[1] == base * mults[-1]` after
    `mults[-1] == mults[1]`): checking it too would say the same thing twice."""
    return isinstance(g, Guard) and g.op == "==" and equal_under(g.lhs, g.rhs, [h for h in guards if h is not g])


def _base_atoms(g) -> set:
    """The parameters and sizes a guard reads, inside floor divisions and min/max too."""
    out = set()
    for a in g.atoms():
        if isinstance(a, FloorDiv):
            out |= _base_atoms(Guard(a.num, "==", a.den))
        elif isinstance(a, MinMax):
            for q in a.args:
                out |= _base_atoms(Guard(q, "==", Poly.const(0)))
        else:
            out.add(a)
    return out


def _as_bound(g: Guard) -> Guard:
    """`S <= maxlen` for `maxlen - S >= 0`, as a person writes it: a requirement whose one run-time
    size is subtracted reads as that size's bound (printing only: the guard itself is unchanged)."""
    if g.op not in (">", ">=") or not g.rhs.is_const():
        return g
    sized = [(m, c) for m, c in g.lhs.terms.items() if any(isinstance(a, Var) for a, _ in m)]
    if len(sized) != 1:
        return g
    mono, coef = sized[0]
    if coef != -1 or len(mono) != 1 or next(iter(mono))[1] != 1:
        return g
    size = Poly.atom(next(iter(mono))[0])
    return Guard(size, "<=" if g.op == ">=" else "<", g.lhs + size - g.rhs, g.where)


def _guard_src(g, printer: Printer) -> str:
    return g.to_python(printer.atom)


def _negate(g, printer: Printer) -> str:
    if isinstance(g, FloatGuard):
        return f"{printer.size(g.expr)} != {g.value!r}"
    return g.negated().to_python(printer.atom)


# ---------------------------------------------------------------- the file

class TangledItems(Exception):
    """Sizes that read three or more items of a list (DenseNet's widths after its blocks): written out
    they are no code a person writes, so the models named (`args[0]`, a set) are compiled again with
    their lists' items as numbers."""


MAX_ITEMS = 2   # a list's items one size may read, written out (`base * mults[1] + base * mults[-1]`)


def generate(models: list[Graph], source_name: str, seed: int = 0, flags: dict | None = None,
             check_items: bool = False, tangled: frozenset = frozenset()) -> str:
    """The Python source of a file holding every given model (and the blocks they use). `flags`:
    model name -> ModelFlags, its bool parameters compiled the other way too (one class takes them).
    `check_items`: raise TangledItems naming the models where a size reads more than MAX_ITEMS items
    of a list; `tangled`: the models compiled again after that (their lists' notes say why they are fixed)."""
    flags = dict(flags or {})
    if check_items:
        found = {g.name for g in models if _tangled([g] + [h for _, h in flags.get(g.name, ModelFlags([])).graphs])}
        if found:
            raise TangledItems(found)
    while True:
        try:
            gen = _generator(models, flags)
            gen.tangled = tangled
            for g in models:
                gen.class_for(g, top=True)
            break
        except _Unmerged as e:   # as if never flipped: no class written for the other values alone
            flags[e.args[0]] = ModelFlags([], flags[e.args[0]].refused)
        except CodegenError:     # one of the other values Python cannot write: each model for its own
            if not any(f.graphs for f in flags.values()):
                raise
            flags = {k: ModelFlags([], f.refused) for k, f in flags.items()}
    title = f"{', '.join(g.name for g in models)}: generated by dslc {__version__} from {doc_text(source_name)}."
    return _file(gen, title, _optimization_note(models), _registry(gen, models, seed))


def _tangled(models: list[Graph]) -> bool:
    """Whether a size in the graphs (a layer's argument, a tensor's dimension) reads more than
    MAX_ITEMS items of a list parameter."""
    for g in _graphs_under(models):
        sizes = [d for n in g for t in n.outputs for d in t.shape]
        sizes += [x for inst in g.instances.values() for v in inst.args.values() for x in _flat(v)]
        if any(len({a for a in _base_atoms(Guard(expr_of(d), "==", Poly.const(0))) if isinstance(a, Item)})
               > MAX_ITEMS for d in sizes if isinstance(d, (Size, Sym))):
            return True
    return False


def _flat(v) -> list:
    return [x for item in v for x in _flat(item)] if isinstance(v, (list, tuple)) else [v]


def _graphs_under(models: list[Graph]):
    """Each of the models' graphs and their blocks' specializations, once."""
    todo, done = list(models), set()
    while todo:
        g = todo.pop()
        if id(g) in done:
            continue
        done.add(id(g))
        yield g
        todo += [i.graph for i in g.instances.values() if i.kind == "block"]


def _generator(models: list[Graph], flags: dict | None = None) -> Generator:
    """A generator whose classes are never named like an argument of the models' constructors
    (those keep the user's names, and a class named so would be hidden in them), and that knows
    each block's specializations (a first pass writes them) to write them as one class: those of
    the models' flags compiled the other way (ModelFlags) too."""
    everything = list(models) + [g for f in (flags or {}).values() for _, g in f.graphs]
    gen = _named_generator(everything)
    gen.flags = dict(flags or {})
    if _several_specializations(everything):
        probe = _named_generator(everything)
        for g in everything:
            probe.class_for(g, top=True)
        gen.variants = _variant_groups(probe, {id(g) for g in everything})
    return gen


def _several_specializations(models: list[Graph]) -> bool:
    """Whether some block is specialized more than once (else there is nothing to write as one class)."""
    seen: dict = {}
    for g in _graphs_under(models):
        for inst in g.instances.values():
            if inst.kind == "block":
                seen.setdefault(block_key(inst.graph), set()).add(id(inst.graph))
    return any(len(v) > 1 for v in seen.values())


def _named_generator(models: list[Graph]) -> Generator:
    gen = Generator(models=list(models))
    gen.names.taken |= {p for g in models for p in g.params}
    return gen


def _variant_groups(probe: Generator, tops: set) -> dict:
    """Block key -> the graphs of each distinct class a first pass wrote for it (two or more);
    `tops`: the ids of the models' graphs."""
    out: dict = {}
    for info in probe.classes:
        if id(info.graphs[0]) not in tops:
            out.setdefault(block_key(info.graphs[0]), []).append(list(info.graphs))
    return {k: v for k, v in out.items() if len(v) > 1}


def block_key(graph: Graph) -> tuple:
    return (graph.name, id(graph.decl))


def _tell_apart(gen: Generator) -> None:
    """The classes of one block that stay apart (`VGGFeatures`, `VGGFeatures2`) say in their
    docstrings the arguments they were built for that the constructor does not take and that
    differ between them (`config == [[64, 2], ...] and bn`), where their facts do not already
    name them: a numbered class must say what makes it differ."""
    tops = set(gen.top.values())
    groups: dict = {}
    for info in gen.classes:
        if info.name not in tops and info.graphs:
            groups.setdefault(block_key(info.graphs[0]), []).append(info)
    for infos in groups.values():
        baked = [_baked(info) for info in infos]
        for info, mine in zip(infos, baked):
            named = set(re.findall(r"[A-Za-z_]\w*", " ".join(info.facts or [])))
            for p, v in mine.items():
                if p not in named and any(other.get(p, mine) != v for other in baked if other is not mine):
                    info.facts = [*(info.facts or []), _baked_fact(p, v)]


def _baked(info: ClassInfo) -> dict:
    """The block's arguments that the class's constructor does not take, with the one plain value
    (bool, number, string, list) that every use of the class gives them."""
    taken = {s[0] for s in info.signature}
    out = {}
    for p in info.graphs[0].params:
        values = [g.params.get(p) for g in info.graphs]
        if p not in taken and _plain(values[0]) and all(v == values[0] for v in values):
            out[p] = values[0]
    return out


def _plain(v) -> bool:
    if isinstance(v, (list, tuple)):
        return all(_plain(x) for x in v)
    return isinstance(v, (bool, int, float, str)) and not isinstance(v, (Size, Real))


def _baked_fact(name: str, value) -> str:
    if isinstance(value, bool):
        return name if value else f"not {name}"
    return f"{name} == {literal(value)}"


def _file(gen: Generator, title: str, notes: list[str], registry: str) -> str:
    """A generated file: docstring, imports (F only where used), helpers, classes, registry."""
    _tell_apart(gen)
    classes = "\n\n".join(c.source() for c in gen.classes)
    uses_f = "F." in classes or any("F." in HELPERS[h].source for h in _helper_order(gen.helpers))
    header = [f'"""{_wrapped(title)}', "", *notes, "Edit the .dl source rather than this file. Needs only torch.", '"""']
    if re.search(r"\bmath\.", classes):   # `math.sqrt(d_model)`: a float computed from parameters
        header.append("import math")
    header += ["import torch", "from torch import nn"]
    if uses_f:
        header.append("import torch.nn.functional as F")
    parts = ["\n".join(header)]
    for h in _helper_order(gen.helpers):
        parts.append(HELPERS[h].source.rstrip())
    parts.append(classes.rstrip())
    parts.append(registry)
    return "\n\n\n".join(parts) + "\n"


def _optimization_note(models: list[Graph]) -> list[str]:
    """A paragraph on the passes the models went through (none for unoptimized code)."""
    level = max(g.opt_level for g in models)
    channels_last = any(g.memory_format == "channels_last" for g in models)
    if not level and not channels_last:
        return []
    words = []
    if level == 1:
        words.append("Optimized with -O1 (the same function in training and in eval mode).")
    elif level == 2:
        words.append("Optimized with -O2 for inference: the modules run in eval mode only, with batch norm")
        words.append("folded into the layers before it. A checkpoint of the unoptimized model still loads.")
    if channels_last:
        words.append("Weights and 4-d inputs use the channels_last memory format.")
    return words + [""]


def _helper_order(names: set) -> list[str]:
    """The helpers to write, each after those it needs; a lesser form (Helper.replaces) only where
    the file does not need the fuller one too."""
    names = {n for n in names if HELPERS[n].replaces not in names}
    out: list[str] = []

    def visit(n):
        for dep in HELPERS[n].needs:
            visit(dep)
        if n not in out:
            out.append(n)
    for n in sorted(names):
        visit(n)
    return out


def _registry(gen: Generator, models: list[Graph], seed: int) -> str:
    entries = [f"{py_str(g.name)}: {gen.top[g.name]}" for g in models]
    default = py_str(models[0].name)
    return "\n".join([
        *_packed("MODELS = {", entries, "}", indent=0),
        "",
        "",
        f"def build(name: str = {default}, seed: int | None = {seed}, **params) -> nn.Module:",
        f'{INDENT}"""A model with the same initial weights as dslc\'s `build(name, seed=seed)`."""',
        f"{INDENT}if seed is not None:",
        f"{INDENT * 2}torch.manual_seed(seed)",
        f"{INDENT}return MODELS[name](**params)",
    ])


def generate_plan(plan, source_name: str, graphs: dict | None = None) -> str:
    """The Python source that runs a training plan: its models (classes whose defaults are the
    plan's arguments), and one class per step whose forward takes the batch's fields and returns
    the step's loss (and the model's output, when the step reads `out`). A step receives the plan's
    models ready-made, so every step trains the same weights, and its momentum targets (TARGETS:
    key -> the model, the block's path in it, the decay), which the runtime copies. `graphs` are the models' graphs by
    plan key after whatever passes the caller ran (default: as checked)."""
    graphs = graphs or {key: graph for key, (_decl, _args, graph) in plan.models.items()}
    gen = _generator(list(graphs.values()))
    model_classes = {key: gen.class_for(graph, top=True).name for key, graph in graphs.items()}
    # a step receives the models by position and keeps each as an attribute
    model_names = Namespace(attributes=True)
    targets = plan.targets
    py_names = {key: model_names.claim(key) for key in [*plan.models, *targets]}
    step_classes, step_models = {}, {}
    for step in plan.steps:
        names = {inst_id: py_names[key] for inst_id, key in step.models.items()}
        gen.external[id(step.graph)] = names
        saved = step.graph.name
        step.graph.name = _step_class_name(step.name)
        try:
            info = gen.class_for(step.graph, top=True)
        finally:
            step.graph.name = saved
        info.heading = f"The step `{step.name}` of the plan `{plan.name}`: the loss of one batch"
        step_classes[step.name] = info.name
        step_models[step.name] = list(dict.fromkeys(step.models.values()))
    registry = [
        "MODELS = {" + ", ".join(f"{py_str(k)}: {v}" for k, v in model_classes.items()) + "}",
        "STEPS = {" + ", ".join(f"{py_str(k)}: {v}" for k, v in step_classes.items()) + "}",
        "STEP_MODELS = {" + ", ".join(f"{py_str(k)}: [{', '.join(py_str(m) for m in v)}]"
                                      for k, v in step_models.items()) + "}",
    ]
    if targets:   # momentum targets: copies of a model or block, moved towards it after each optimizer step
        registry.append("TARGETS = {" + ", ".join(
            f"{py_str(k)}: ({py_str(t.model)}, {py_str('.'.join(t.path))}, {t.decay!r})" for k, t in targets.items()) + "}")
    if plan.queues:   # the steps' queues of keys: `enqueue()` after each optimizer step of their step
        registry.append(_queues_line(plan.queues))
    title = f"The training plan `{plan.name}`: generated by dslc {__version__} from {doc_text(source_name)}."
    return _file(gen, title, [], "\n".join(registry))


def _queues_line(queues: dict) -> str:
    """`QUEUES = {"moco": ["queue"]}`: each step's KeyQueue attributes."""
    by_step: dict = {}
    for q in queues.values():
        by_step.setdefault(q.step, []).append(py_str(q.name))
    return "QUEUES = {" + ", ".join(f"{py_str(k)}: [{', '.join(v)}]" for k, v in by_step.items()) + "}"


def _bindings(nodes: list) -> dict:
    """User name -> indices of the nodes that bind it."""
    out: dict = {}
    for i, node in enumerate(nodes):
        for name in node.names:
            if name is not None:
                out.setdefault(safe_ident(name), []).append(i)
    return out


def _step_class_name(step: str) -> str:
    words = [w for w in safe_ident(step).split("_") if w]
    return "".join(w[:1].upper() + w[1:] for w in words) + "Step"
