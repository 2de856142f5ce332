"""What a name means while evaluating (the scope, declarations, ops, built-ins), the errors and
suggestions for unknown names, and the checks on the names that statements and `as` bind.
"""
from __future__ import annotations

import keyword

from ..diagnostics import did_you_mean
from ..diagnostics.diagnostic import MAX_SHOWN
from ..ir.naming import attribute_problem
from ..ops import REGISTRY
from . import ast
from .builtins import BUILTINS, CONSTANTS
from .context import Ctx
from .errors import EvalError
from .torch_names import TORCH_ONLY, TORCH_PREFIXES, torch_only_help
from .values import MISSING, DeclRef, InstanceValue, OpRef


class NameLookup:
    """Looking names up and checking new ones (a mixin of `Evaluator`)."""

    def _e_Name(self, e: ast.Name, ctx: Ctx):
        v = self._lookup(e.id, ctx)
        if v is MISSING:
            raise self._unknown_name(e, ctx)
        return v

    def _lookup(self, name: str, ctx: Ctx):
        if name in ctx.scope:
            return ctx.scope[name]
        decl = self.unit.decls.get(name)
        if decl is not None and decl.kind not in ("train", "sweep"):  # a plan or sweep is run, never a value
            return DeclRef(decl)
        if name in REGISTRY and not REGISTRY[name].internal:  # `index`, `sdpa`: made by the compiler only
            return OpRef(REGISTRY[name])
        if name in BUILTINS:
            return BUILTINS[name]
        if name in CONSTANTS:
            return CONSTANTS[name]
        return self._lookup_extra(name, ctx)

    def _lookup_extra(self, name: str, ctx: Ctx):
        return MISSING

    def visible_names(self, ctx: Ctx) -> list[str]:
        return list(ctx.scope) + list(self.unit.decls) + _public_ops() + list(BUILTINS) + list(CONSTANTS)

    def _unknown_name(self, e: ast.Name, ctx: Ctx, called: bool = False) -> EvalError:
        name = e.id
        if len(self.reporter.diagnostics) >= MAX_SHOWN:  # not shown: no suggestion (each scans every name)
            code, what = ("E0202", "layer") if name[:1].isupper() else ("E0203", "function") if called else \
                ("E0201", "")
            return EvalError(code, f"unknown {what} `{name}`" if what else f"`{name}` is not defined", e.span)
        if name in TORCH_ONLY:
            return EvalError("E0202", f"`{name}` is a torch.nn layer that dslc does not have", e.span,
                             label="not in dslc's library", help=torch_only_help(name))
        if name[:1].isupper():
            guess = self._layer_guess(name)
            return EvalError("E0202", f"unknown layer `{name}`", e.span, label="not a layer or block",
                             help=f"did you mean `{guess}`?" if guess else None)
        if called and name == "augment":
            return EvalError("E0203", "`augment(...)` augments a batch inside a training plan's `step`", e.span,
                             label="not in a step", help="write `x = augment(batch.x, [random_flip()])` in a `step`, "
                             "or the plan field `augment = [random_flip()]`")
        if called and name == "queue":
            return EvalError("E0203", "`queue(...)` keeps keys from one batch to the next: it is made in a training "
                             "plan's `step`", e.span, label="not in a step",
                             help="write `negatives = queue(k, size=4096)` in a `step`")
        if called and name in REGISTRY and REGISTRY[name].internal and REGISTRY[name].family == "random":
            return EvalError("E0203", f"`{name}(...)` mixes a batch and its targets inside a training plan's `step`",
                             e.span, label="not in a step", help=f"write `x, y = {name}(batch.x, batch.y)` in a "
                             f"`step`, or the plan field `augment = [{name}()]`")
        if called:
            pool = [n for n in _public_ops() + list(BUILTINS) if n[:1].islower()] + \
                   [n for n in ctx.scope if isinstance(ctx.scope[n], InstanceValue)]
            guess = did_you_mean(name, pool)
            return EvalError("E0203", f"unknown function `{name}`", e.span, label="not a function",
                             help=f"did you mean `{guess}`?" if guess else None)
        guess = did_you_mean(name, self.visible_names(ctx))
        return EvalError("E0201", f"`{name}` is not defined", e.span, label="unknown name",
                         help=f"did you mean `{guess}`?" if guess else None)

    def _layer_guess(self, name: str) -> str | None:
        """The layer or block an unknown capitalized name likely means. Kept for the evaluator's
        life (its unit's names do not change): a misspelled layer in a block is reported once per
        specialization of the block, and each search scans every name."""
        guesses = self.__dict__.setdefault("_layer_guesses", {})
        if name not in guesses:
            pool = [n for n in list(REGISTRY) + list(self.unit.decls)
                    if n[:1].isupper() and (n not in REGISTRY or REGISTRY[n].kind == "layer")]
            guesses[name] = did_you_mean(name, pool)
        return guesses[name]

    def _torch_prefix(self, e: ast.Attr, ctx: Ctx) -> EvalError | None:
        """`nn.Linear(8)`, `F.relu(x)`, `torch.nn.LSTM(...)` written as in PyTorch: dslc names its layers and
        functions without a module, so say which of ours it is (None: not such a name)."""
        root, names = e, [e.name]
        while isinstance(root.value, ast.Attr):
            root = root.value
            names.insert(0, root.name)
        if not isinstance(root.value, ast.Name) or root.value.id not in TORCH_PREFIXES or \
                self._lookup(root.value.id, ctx) is not MISSING:
            return None
        written = ".".join([root.value.id] + names)
        name = e.name
        if name in REGISTRY and not REGISTRY[name].internal:
            return EvalError("E0201", f"`{written}` is written `{name}` in dslc", e.span,
                             label=f"no `{written[:-len(name)]}` before it",
                             help=f"dslc's layers and functions are named without a module: `{name}(...)`")
        if name in TORCH_ONLY:
            return EvalError("E0202", f"`{written}` is a torch.nn layer that dslc does not have", e.span,
                             label="not in dslc's library", help=torch_only_help(name))
        guess = did_you_mean(name, _public_ops())
        return EvalError("E0201", f"`{root.value.id}` is not defined", root.value.span, label="unknown name",
                         help="dslc's layers and functions are named without a module" +
                              (f": did you mean `{guess}`?" if guess else " (docs/reference.md lists them)"))

    # ------------------------------------------------------------------ names being bound

    def _check_binding_name(self, name: str, span) -> None:
        if keyword.iskeyword(name) or name == "self":
            why = "the module itself in the generated Python" if name == "self" else "a Python keyword"
            raise EvalError("E0211", f"`{name}` cannot be used as a name: it is {why}", span,
                            help="choose another name")
        # A local name may shadow a library layer or function, as in Python (`pad = tokens == 0`), so that
        # new library names never break a spec; the file's own declarations it may not.
        if name in self.unit.decls:
            raise EvalError("E0201", f"`{name}` already names a {self.unit.decls[name].kind}", span,
                            help="choose another name")

    def _check_layer_name(self, name: str, span, what: str = "a layer") -> None:
        """The name of a layer or `param` is its attribute, and state-dict key, in the generated module."""
        self._check_binding_name(name, span)
        problem = attribute_problem(name)
        if problem:
            raise EvalError("E0211", f"`{name}` cannot name {what}: {problem}", span,
                            help="it becomes the module's attribute and state-dict key: choose another name")



def _public_ops() -> list[str]:
    """The registry's names a spec may use (internal ops are made by the compiler only)."""
    return [n for n, op in REGISTRY.items() if not op.internal]
