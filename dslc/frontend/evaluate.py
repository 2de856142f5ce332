"""AST -> IR: compile-time evaluation of models and blocks.

Parameters, conditions, loops and `x.shape[i]` are evaluated here; every
layer application runs its registry shape rule, so each value in the
resulting graph has a static type. Errors are collected per statement: a
statement that fails binds its names to POISON, and later uses of a
poisoned value report nothing more.

Statements and expressions live here; applying layers, functions and
blocks lives in `apply.py`.
"""
from __future__ import annotations

import keyword
import sys
from dataclasses import dataclass, replace

from ..diagnostics import Diagnostic, Label, Reporter, did_you_mean
from ..diagnostics.diagnostic import MAX_SHOWN
from ..ir.dims import Param, Poly, Real, Size, Sym, SymbolicDecision, atom_values, plain, plain_float, recording
from ..ir.graph import Graph
from ..ir.limits import (
    MAX_ITEMS,
    MAX_NESTING,
    MAX_STEPS,
    LimitError,
    elements_too_many,
    int_too_large,
    magnitude,
    power_too_large,
)
from ..ir.naming import attribute_problem, name_instances
from ..ir.types import DTYPES, TensorType
from ..ir.values import Ref, TensorValue
from ..ops import REGISTRY
from ..ops.init import INITS
from ..ops.ptypes import describe, is_int, is_number
from . import ast
from .apply import LayerApplication
from .binding import Arg, bind_op
from .builtins import BUILTINS, BuiltinError
from .context import Ctx, block_input_type
from .errors import EvalError, Poisoned
from .values import MISSING, POISON, BlockSpec, Builtin, DeclRef, InitSpec, InstanceValue, LayerSpec, OpRef, Record

# Evaluation recurses on blocks (about 9 frames a level, MAX_NESTING levels), bodies and
# expressions (both bounded at parse time); the default limit of 1000 frames is too tight for that.
if sys.getrecursionlimit() < 4000:
    sys.setrecursionlimit(4000)


class Evaluator(LayerApplication):
    def __init__(self, unit, reporter: Reporter | None = None):
        self.unit = unit
        self.reporter = reporter or Reporter()
        self.cache: dict = {}       # block specializations by (name, args, input types)
        self.evaluated: set = set()  # names of the models and blocks evaluation reached
        self.subst_cache: dict = {}  # block results in callers' terms, see LayerApplication._in_caller_terms
        self._fresh_sym = 0
        self.steps = 0               # statements and loop iterations run (bounded by MAX_STEPS)
        self.runaway = False         # a limit on the total work was reached: evaluate nothing more
        self.measured: dict = {}     # id -> (list, tuple or dict, items, nesting): see _collection

    # ------------------------------------------------------------------ entry points

    def model(self, decl, args: dict | None = None, call_span=None, partial: bool = False) -> Graph | None:
        """The IR of a model with the given parameter values (name -> Arg).

        With errors it is None, unless `partial`: then the graph as far as it got, with its
        `failures` (for a diagram that shows where it stopped)."""
        given = dict(args or {})
        if self.runaway:
            return None
        self.evaluated.add(decl.name)
        graph = Graph(decl.name, "model", decl=decl)
        ctx = Ctx(graph, decl, "model", stack=(decl.name,))
        before = len(self.reporter.diagnostics)
        with recording(graph.guards), atom_values(graph.atom_env):
            try:
                self._bind_params(decl, given, ctx, call_span or decl.name_span)
            except EvalError as e:
                self.reporter.add(e.diagnostic)
                return None
            except LimitError as e:
                self.reporter.add(Diagnostic(e.code, e.message, decl.name_span, help=e.help))
                return None
            except Poisoned:
                return None
            self._run_body(decl.body, ctx, top=True)
            self._finish_outputs(ctx)
        failed = len(self.reporter.diagnostics) > before or ctx.failed
        if failed and not partial:
            return None
        name_instances(graph)
        return graph

    # ------------------------------------------------------------------ parameters

    def _bind_params(self, decl, given: dict, ctx: Ctx, call_span) -> None:
        names = [p.name for p in decl.params]
        for name, arg in given.items():
            if name not in names:
                guess = did_you_mean(name, names)
                raise EvalError("E0305", f"`{decl.name}` has no parameter `{name}`", arg.name_span or arg.span,
                                label="unknown parameter", help=f"did you mean `{guess}`?" if guess else
                                (f"`{decl.name}` takes ({', '.join(names)})" if names else
                                 f"`{decl.name}` takes no parameters"))
        missing = []
        for p in decl.params:
            if p.name in given:
                value, span = given[p.name].value, given[p.name].span
            elif p.default is not None:
                value, span = self._expr(p.default, ctx), p.default.span
            else:
                missing.append(p.name)
                continue
            if value is POISON:
                raise Poisoned()
            value = self._check_param_type(p, value, span, decl)
            # A given value is in the caller's terms: inside, the parameter is its own name, so
            # only its value is kept. A default is in this block's terms (`4 * dim`): kept whole.
            ctx.graph.params[p.name] = _plain_value(value) if p.name in given else value
            ctx.graph.param_types[p.name] = str(p.type) if p.type else None
            ctx.scope[p.name] = fresh(p.name, value)
            if is_int(value):
                ctx.graph.atom_env[Param(p.name)] = plain(value)
        if missing:
            quoted = ", ".join(f"`{m}`" for m in missing)
            raise EvalError("E0303", f"`{decl.name}` is missing the argument{'s' if len(missing) > 1 else ''} "
                            f"{quoted}", call_span, label="called here",
                            help=f"pass {quoted}, or give {'them defaults' if len(missing) > 1 else 'it a default'} "
                                 f"in the declaration of `{decl.name}`",
                            labels=(Label(decl.name_span, f"`{decl.name}` is declared here"),)
                            if call_span is not decl.name_span else ())

    def _check_param_type(self, p: ast.ParamDecl, value, span, decl):
        if p.type is None:
            return value
        expected = _type_ok(p.type, value)
        if expected is None:
            return value
        if expected == "unknown":
            known = ["int", "float", "bool", "str", "list"]
            guess = did_you_mean(p.type.name, known)
            raise EvalError("E0301", f"unknown parameter type `{p.type}`", p.type.span,
                            help=f"did you mean `{guess}`?" if guess else "types are int, float, bool, str and list[...]")
        raise EvalError("E0301", f"parameter `{p.name}` of `{decl.name}` is declared `{p.type}`, "
                        f"but got {describe(value)}", span, label=f"expected {expected}",
                        labels=(Label(p.type.span, "declared here"),))

    # ------------------------------------------------------------------ statements

    def _run_body(self, stmts, ctx: Ctx, top: bool = False) -> None:
        for stmt in stmts:
            self._statement(stmt, ctx, top)

    def _statement(self, stmt, ctx: Ctx, top: bool) -> None:
        try:
            self._spend(stmt.span)
            getattr(self, "_s_" + type(stmt).__name__)(stmt, ctx, top)
        except EvalError as e:
            self._fail(stmt, ctx, e.diagnostic)
        except LimitError as e:
            self._fail(stmt, ctx, Diagnostic(e.code, e.message, stmt.span, help=e.help))
        except RecursionError:  # a last resort: the limits above are meant to stop this first
            self._fail(stmt, ctx, Diagnostic("E0705", "this statement nests too deeply to evaluate", stmt.span,
                                             help="split it into flatter blocks and named steps"))
        except Poisoned:
            self._poison_targets(stmt, ctx)
            ctx.failed = True

    def _fail(self, stmt, ctx: Ctx, d: Diagnostic) -> None:
        if d.code == "E0703":
            self.runaway = True  # reported once: every later statement stops silently
        self.reporter.add(d)
        self._poison_targets(stmt, ctx)
        ctx.failed = True

    def _spend(self, span, work: int = 1) -> None:
        """Count work against MAX_STEPS, the total of one check: a statement or a loop iteration
        is 1, an operation on a list or string its length (copying, comparing or searching it)."""
        if self.runaway:
            raise Poisoned()
        self.steps += work
        if self.steps > MAX_STEPS:
            raise EvalError("E0703", f"evaluation ran more than {MAX_STEPS:,} steps (statements, loop "
                            "iterations and items of lists built or searched)", span, label="still running here",
                            help="loops, repeats and blocks run at compile time: make them smaller")

    def _poison_targets(self, stmt, ctx: Ctx) -> None:
        if isinstance(stmt, ast.AssignStmt):
            for t in stmt.targets:
                for name in _target_names(t):
                    ctx.scope[name] = POISON
        elif isinstance(stmt, (ast.InputStmt, ast.ParamStmt)):
            ctx.scope[stmt.name] = POISON
            if isinstance(stmt, ast.InputStmt) and ctx.n_inputs_declared == 1:
                ctx.current = POISON
        elif isinstance(stmt, ast.ExprStmt):
            ctx.current = POISON
            for name in _as_names(stmt.value):
                ctx.scope[name] = POISON

    def _s_InputStmt(self, stmt: ast.InputStmt, ctx: Ctx, top: bool) -> None:
        if ctx.kind not in ("model", "block"):
            raise EvalError("E0107", "`input` belongs in a model or block", stmt.span)
        if not top:
            raise EvalError("E0107", "`input` must be at the top of the body, not inside a loop or `if`",
                            stmt.span)
        self._check_binding_name(stmt.name, stmt.name_span)
        ctx.n_inputs_declared += 1
        self._check_input_name(stmt, ctx)
        if ctx.inputs_left is None:
            value = self._declare_input(stmt, ctx)
        else:
            value = self._receive_input(stmt, ctx)
        ctx.scope[stmt.name] = value
        ctx.current = value if ctx.n_inputs_declared == 1 else None

    def _check_input_name(self, stmt: ast.InputStmt, ctx: Ctx) -> None:
        """An input is an argument of the generated forward: its name must be new in the body."""
        earlier = ctx.scope.get(stmt.name, MISSING)
        if earlier is MISSING:
            return
        if isinstance(earlier, TensorValue):
            raise EvalError("E0204", f"input `{stmt.name}` is declared twice", stmt.name_span,
                            label="second declaration", labels=(Label(earlier.span, "first declared here"),),
                            help="give each input its own name")
        what = "a parameter" if stmt.name in ctx.graph.params else "a size of an earlier input"
        raise EvalError("E0204", f"input `{stmt.name}` has the name of {what} of `{ctx.decl.name}`",
                        stmt.name_span, label="already defined", help="give the input another name")

    def _declare_input(self, stmt: ast.InputStmt, ctx: Ctx) -> TensorValue:
        """A model's own input: its shape is declared; unknown names become run-time sizes."""
        if stmt.shape is None:
            raise EvalError("E0303", f"model input `{stmt.name}` needs a shape", stmt.span,
                            help=f"declare it like `input {stmt.name}: [B, 784]`")
        shape = self._shape_pattern(stmt.shape, ctx, None)
        t = TensorType(tuple(shape), self._dtype(stmt))
        _check_elements(t, stmt.shape.span)
        node = ctx.graph.add("input", [t], span=stmt.span, names=[stmt.name])
        ctx.graph.inputs.append((stmt.name, Ref(node.id)))
        return TensorValue(Ref(node.id), t, stmt.name_span)

    def _receive_input(self, stmt: ast.InputStmt, ctx: Ctx) -> TensorValue:
        """A block's (or a model used as a layer's) input: the caller's tensor."""
        if not ctx.inputs_left:
            raise Poisoned()  # the caller already reported the count mismatch
        caller = ctx.inputs_left.pop(0)
        t = caller.type
        if ctx.kind == "block":
            t = block_input_type(stmt.name, t, ctx.graph.atom_env)
        if stmt.shape is not None:
            self._shape_pattern(stmt.shape, ctx, t)
        if stmt.dtype is not None and self._dtype(stmt) != t.dtype:
            raise EvalError("E0310", f"input `{stmt.name}` is declared {self._dtype(stmt)} but receives {t.dtype}",
                            caller.span, label=f"this is {t.dtype}", labels=(Label(stmt.span, "declared here"),))
        node = ctx.graph.add("input", [t], span=stmt.span, names=[stmt.name])
        ctx.graph.inputs.append((stmt.name, Ref(node.id)))
        return TensorValue(Ref(node.id), t, stmt.name_span)

    def _dtype(self, stmt: ast.InputStmt) -> str:
        if stmt.dtype is None:
            return "float32"
        if stmt.dtype not in DTYPES:
            guess = did_you_mean(stmt.dtype, DTYPES)
            raise EvalError("E0310", f"unknown dtype `{stmt.dtype}`", stmt.dtype_span,
                            help=f"did you mean `{guess}`?" if guess else "dtypes: " + ", ".join(DTYPES))
        return stmt.dtype

    def _shape_pattern(self, expr, ctx: Ctx, actual: TensorType | None) -> list:
        """Evaluate `[B, 3, image, image]`; with `actual`, match it (binding new names)."""
        if not isinstance(expr, ast.ListExpr):
            raise EvalError("E0301", "a shape is written as a list, like `[B, 3, 32, 32]`", expr.span)
        if actual is not None and len(expr.items) != actual.rank:
            raise EvalError("E0402", f"input expects a {len(expr.items)}-d tensor, got {actual.shape_str()}",
                            expr.span, label=f"{len(expr.items)} dimensions declared")
        dims = []
        for i, item in enumerate(expr.items):
            if isinstance(item, ast.Name) and self._lookup(item.id, ctx) is MISSING:
                self._check_symbol_name(item, ctx)
                d = Sym.var(item.id) if actual is None else actual.shape[i]
                ctx.scope[item.id] = d
            else:
                d = self._expr(item, ctx)
                if d is POISON:
                    raise Poisoned()
                if not (is_int(d) or isinstance(d, Sym)):
                    raise EvalError("E0301", f"a dimension must be an int or a size name, got {describe(d)}",
                                    item.span)
                if is_int(d) and plain(d) <= 0:
                    raise EvalError("E0302", f"a dimension must be positive, got {plain(d)}", item.span)
                if actual is not None and not _dims_equal(d, actual.shape[i]):
                    raise EvalError("E0403", f"dimension {i} should be {_dim_text(d)}, got "
                                    f"{_dim_text(actual.shape[i])} (shape {actual.shape_str()})", item.span,
                                    label="declared here")
            dims.append(d)
        return dims

    def _check_symbol_name(self, item: ast.Name, ctx: Ctx) -> None:
        """An unknown name in an input shape is a new run-time size, unless it is a typo."""
        if len(item.id) < 3:
            return  # B, T, N, H, W: the usual names of run-time sizes, never a typo
        params = [p.name for p in getattr(ctx.decl, "params", ())]
        guess = did_you_mean(item.id, params)
        if guess:
            raise EvalError("E0201", f"`{item.id}` is not defined", item.span,
                            label="would become a new run-time size", help=f"did you mean `{guess}`?")

    def _s_OutputStmt(self, stmt: ast.OutputStmt, ctx: Ctx, top: bool) -> None:
        if ctx.kind not in ("model", "block"):
            raise EvalError("E0107", "`output` belongs in a model or block", stmt.span)
        if ctx.outputs is not None:
            raise EvalError("E0107", "a second `output` statement", stmt.span,
                            help="list every output in one statement: `output a, b`")
        outputs = []
        for i, e in enumerate(stmt.values):
            v = self._expr(e, ctx)
            if v is POISON:
                raise Poisoned()
            if not isinstance(v, TensorValue):
                raise EvalError("E0307", f"`output` needs tensors, got {describe(v)}", e.span)
            if isinstance(e, ast.Name):
                name = e.id
            else:
                name = "out" if len(stmt.values) == 1 else f"out{i + 1}"
            outputs.append((name, v))
        names = [n for n, _ in outputs]
        for n in names:
            if names.count(n) > 1:
                raise EvalError("E0107", f"two outputs are named `{n}`", stmt.span,
                                help="bind them to different names first")
        ctx.outputs = outputs

    def _finish_outputs(self, ctx: Ctx) -> None:
        if ctx.outputs is None:
            cur = ctx.current
            if cur is POISON or ctx.failed:  # an earlier error (perhaps in `output` itself) says enough
                ctx.failed = True
                return
            if not isinstance(cur, TensorValue):
                self.reporter.error("E0107", f"`{ctx.decl.name}` computes no output", ctx.decl.name_span,
                                    help="end the body with a layer, or add `output ...`")
                return
            ctx.outputs = [("out", cur)]
        for name, v in ctx.outputs:
            ctx.graph.outputs.append((name, v.ref))

    def _s_ParamStmt(self, stmt: ast.ParamStmt, ctx: Ctx, top: bool) -> None:
        if ctx.kind not in ("model", "block"):
            raise EvalError("E0107", "`param` belongs in a model or block", stmt.span)
        if ctx.loop_depth:
            raise EvalError("E0107", "`param` cannot be declared inside a loop", stmt.span)
        self._check_layer_name(stmt.name, stmt.name_span, "a `param`")
        shape = self._expr(stmt.shape, ctx)
        if shape is POISON:
            raise Poisoned()
        if not isinstance(shape, list) or not all(is_int(d) for d in shape):
            raise EvalError("E0307", "a `param` shape must be a list of sizes known at compile time",
                            stmt.shape.span, label="run-time sizes like `B` are not allowed here"
                            if isinstance(shape, list) else "")
        for d, item in zip(shape, stmt.shape.items):
            if plain(d) <= 0:
                raise EvalError("E0302", f"a dimension must be positive, got {plain(d)}", item.span)
        _check_elements(TensorType(tuple(shape)), stmt.shape.span)
        init = self._init(stmt.init, ctx)
        inst = ctx.graph.new_instance("param", user_name=stmt.name, init=init, shape=tuple(shape),
                                      span=stmt.span)
        t = TensorType(tuple(shape))
        node = ctx.graph.add("param", [t], instance=inst.id, span=stmt.span, names=[stmt.name])
        ctx.scope[stmt.name] = TensorValue(Ref(node.id), t, stmt.name_span)

    def _layer_inits(self, kw: ast.Keyword, ctx: Ctx) -> tuple:
        """`init=normal(std=0.02)` (every weight but the biases) or `init={weight: ..., bias: zeros}`:
        (weight name or None, InitSpec, span) triples; the weights are checked when the layer is made."""
        if isinstance(kw.value, ast.DictExpr):
            return tuple((name, self._init(value, ctx), key_span)
                         for name, key_span, value in zip(kw.value.keys, kw.value.key_spans, kw.value.values))
        return ((None, self._init(kw.value, ctx), kw.value.span),)

    def _init(self, expr, ctx: Ctx) -> InitSpec:
        if expr is None:
            return InitSpec(INITS["zeros"], {})
        if isinstance(expr, ast.Name) and expr.id in INITS:
            init = INITS[expr.id]
            values, _ = bind_op(init.params, [], [], init.name, expr.span)  # `constant` alone lacks its value
            return InitSpec(init, values)
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in INITS:
            init = INITS[expr.func.id]
            pos = [Arg(self._expr(a, ctx), a.span) for a in expr.args]
            kws = [(k.name, Arg(self._expr(k.value, ctx), k.value.span, k.span)) for k in expr.kwargs]
            values, _ = bind_op(init.params, pos, kws, init.name, expr.span)
            return InitSpec(init, values)
        name = expr.func.id if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) else \
            expr.id if isinstance(expr, ast.Name) else None
        guess = did_you_mean(name, INITS) if name else None
        raise EvalError("E0301", "unknown initializer" + (f" `{name}`" if name else ""), expr.span,
                        help=f"did you mean `{guess}`?" if guess else "initializers: " + ", ".join(INITS))

    def _s_AssignStmt(self, stmt: ast.AssignStmt, ctx: Ctx, top: bool) -> None:
        for t in stmt.targets:
            _check_target(t)
        value = self._expr(stmt.value, ctx)
        if len(stmt.targets) == 1:
            self._assign(stmt.targets[0], value, stmt.value.span, ctx)
        else:
            names_span = stmt.targets[0].span.to(stmt.targets[-1].span)
            self._assign(ast.TupleExpr(names_span, stmt.targets), value, stmt.value.span, ctx)
        if isinstance(value, TensorValue):
            ctx.current = value

    def _assign(self, target, value, span, ctx: Ctx) -> None:
        if isinstance(target, ast.Name):
            self._check_binding_name(target.id, target.span)
            if value is POISON:
                ctx.scope[target.id] = POISON
                return
            ctx.scope[target.id] = value
            if isinstance(value, TensorValue):
                node = ctx.graph.nodes[value.ref.node]
                if node.names[value.ref.index] is None:
                    node.names[value.ref.index] = target.id
            return
        targets = target.items
        if value is POISON:
            for t in targets:
                self._assign(t, POISON, span, ctx)
            return
        if not isinstance(value, (tuple, list)):
            what = "a tensor" if isinstance(value, TensorValue) else describe(value)
            raise EvalError("E0309", f"cannot unpack {what} into {len(targets)} names", span,
                            label="one value", help="use `chunk(n, dim=...)` or `split(...)` to get several tensors"
                            if isinstance(value, TensorValue) else None)
        if len(value) != len(targets):
            raise EvalError("E0309", f"{len(targets)} names on the left but {len(value)} values on the right",
                            target.span, label=f"{len(targets)} names",
                            labels=(Label(span, f"{len(value)} values"),))
        for t, v in zip(targets, value):
            self._assign(t, v, span, ctx)

    def _check_binding_name(self, name: str, span) -> None:
        if keyword.iskeyword(name) or name == "self":
            why = "the module itself in the generated Python" if name == "self" else "a Python keyword"
            raise EvalError("E0211", f"`{name}` cannot be used as a name: it is {why}", span,
                            help="choose another name")
        if name in REGISTRY or name in self.unit.decls:
            what = REGISTRY[name].kind if name in REGISTRY else self.unit.decls[name].kind
            raise EvalError("E0201", f"`{name}` already names a {what}", span,
                            help="choose another name")

    def _s_ExprStmt(self, stmt: ast.ExprStmt, ctx: Ctx, top: bool) -> None:
        e = stmt.value
        if isinstance(e, ast.Pipe):
            value = self._expr(e, ctx)
        else:
            value = self._stage(e, ctx.current, ctx, statement=True)
        if value is POISON:
            raise Poisoned()
        if isinstance(value, TensorValue) or (isinstance(value, tuple) and value):
            ctx.current = value
        else:
            raise EvalError("E0307", f"this statement has no effect: it is {describe(value)}", e.span,
                            help="a model body is a list of layers, assignments and `output`")

    def _s_ForStmt(self, stmt: ast.ForStmt, ctx: Ctx, top: bool) -> None:
        items = self._expr(stmt.iterable, ctx)
        if items is POISON:
            raise Poisoned()
        if not isinstance(items, (list, tuple)):
            raise EvalError("E0307", f"`for` needs a list to loop over, got {describe(items)}",
                            stmt.iterable.span, help="use `range(n)` to count")
        ctx.loop_depth += 1
        outer = ctx.graph.region
        try:
            for i, item in enumerate(items):
                self._spend(stmt.span)
                ctx.graph.region = (id(stmt), i, "for")  # diagrams draw identical iterations once
                self._bind_loop_vars(stmt, item, ctx)
                self._run_body(stmt.body, ctx)
        finally:
            ctx.loop_depth -= 1
            ctx.graph.region = outer

    def _bind_loop_vars(self, stmt: ast.ForStmt, item, ctx: Ctx) -> None:
        if len(stmt.names) == 1:
            ctx.scope[stmt.names[0]] = item
            return
        if not isinstance(item, (list, tuple)) or len(item) != len(stmt.names):
            raise EvalError("E0309", f"cannot unpack {describe(item)} into {len(stmt.names)} names",
                            stmt.iterable.span, label=f"each item needs {len(stmt.names)} values")
        for name, v in zip(stmt.names, item):
            ctx.scope[name] = v

    def _s_RepeatStmt(self, stmt: ast.RepeatStmt, ctx: Ctx, top: bool) -> None:
        count = self._expr(stmt.count, ctx)
        n = self._count(count, stmt.count.span)
        ctx.loop_depth += 1
        outer = ctx.graph.region
        try:
            for i in range(n):
                self._spend(stmt.span)
                ctx.graph.region = (id(stmt), i, "repeat")
                self._run_body(stmt.body, ctx)
        finally:
            ctx.loop_depth -= 1
            ctx.graph.region = outer

    def _s_IfStmt(self, stmt: ast.IfStmt, ctx: Ctx, top: bool) -> None:
        cond = self._expr(stmt.cond, ctx)
        branch = stmt.body if self._truth(cond, stmt.cond.span) else stmt.orelse
        self._run_body(branch, ctx)

    def _s_StepStmt(self, stmt, ctx: Ctx, top: bool) -> None:
        raise EvalError("E0107", "`step` belongs in a training plan", stmt.span)

    def _s_PhaseStmt(self, stmt, ctx: Ctx, top: bool) -> None:
        raise EvalError("E0107", "`phase` belongs in a training plan", stmt.span)

    def _s_FreezeStmt(self, stmt, ctx: Ctx, top: bool) -> None:
        word = "freeze" if stmt.freeze else "unfreeze"
        raise EvalError("E0107", f"`{word}` belongs in a training plan", stmt.span)

    # ------------------------------------------------------------------ compile-time decisions

    def _truth(self, v, span) -> bool:
        if v is POISON:
            raise Poisoned()
        if isinstance(v, TensorValue):
            raise EvalError("E0307", "a tensor cannot decide a compile-time condition", span)
        try:
            return bool(v)
        except SymbolicDecision as e:
            raise EvalError("E0311", f"cannot decide this at compile time: {e}", span,
                            help="conditions may only use sizes known at compile time") from None

    def _count(self, v, span) -> int:
        if v is POISON:
            raise Poisoned()
        if isinstance(v, Sym):
            raise EvalError("E0311", f"a repeat count must be known at compile time, got `{v}`", span)
        if not is_int(v):
            raise EvalError("E0301", f"a repeat count must be an int, got {describe(v)}", span)
        if isinstance(v, Size):
            v._lose("a repeat count")
        if plain(v) < 0:
            raise EvalError("E0302", f"a repeat count cannot be negative, got {plain(v)}", span)
        if plain(v) > MAX_ITEMS:
            raise EvalError("E0702", f"a repeat count must be at most {MAX_ITEMS:,}, got {plain(v):,}", span,
                            label="too many repeats")
        return plain(v)

    # ------------------------------------------------------------------ expressions

    def _expr(self, e, ctx: Ctx):
        return getattr(self, "_e_" + type(e).__name__)(e, ctx)

    def _e_Const(self, e: ast.Const, ctx: Ctx):
        return e.value

    def _e_ListExpr(self, e: ast.ListExpr, ctx: Ctx):
        items = [self._expr(x, ctx) for x in e.items]
        if any(x is POISON for x in items):
            raise Poisoned()   # an item already failed and was reported: no follow-on error about the list
        return self._collection(items, e.span)

    def _e_TupleExpr(self, e: ast.TupleExpr, ctx: Ctx):
        return self._collection(tuple(self._expr(x, ctx) for x in e.items), e.span)

    def _e_DictExpr(self, e: ast.DictExpr, ctx: Ctx):
        return self._collection({k: self._expr(v, ctx) for k, v in zip(e.keys, e.values)}, e.span)

    # ------------------------------------------------------------------ limits on values

    def _collection(self, value, span):
        """A new list, tuple, dict or string, checked against MAX_ITEMS (nested items counted
        each time they appear, as printing or walking the value would) and MAX_NESTING."""
        size, depth = self._measure(value)
        if size - 1 > MAX_ITEMS:  # the container itself is not one of its items
            what = "this string" if isinstance(value, str) else "this value"
            unit = "characters" if isinstance(value, str) else "items (nested ones included)"
            raise EvalError("E0702", f"{what} holds more than {MAX_ITEMS:,} {unit}", span, label="too large")
        if depth > MAX_NESTING:
            raise EvalError("E0705", f"lists nest more than {MAX_NESTING} deep here", span, label="too deep")
        return value

    def _measure(self, v) -> tuple[int, int]:
        """(items, nesting) of a value; containers of containers are remembered, so a value
        built by nesting another is measured in time proportional to its own length."""
        if isinstance(v, str):
            return max(len(v), 1), 0
        if not isinstance(v, (list, tuple, dict)):
            return 1, 0
        hit = self.measured.get(id(v))
        if hit is not None and hit[0] is v:
            return hit[1], hit[2]
        size, depth = 1, 0
        for x in (v.values() if isinstance(v, dict) else v):
            if isinstance(x, (list, tuple, dict, str)):
                n, d = self._measure(x)
                size, depth = size + n, max(depth, d)
            else:
                size += 1
        if depth or len(v) > 64:
            self.measured[id(v)] = (v, size, depth + 1)
        return size, depth + 1

    def _bounded(self, v, span):
        """A computed value within the limits: an int in int64, a list or string not too long."""
        if isinstance(v, int) and int_too_large(v):
            raise EvalError("E0701", f"this integer is too large: {magnitude(v)}, more than 2**63 - 1", span,
                            label="evaluated at compile time", help="sizes and counts are int64 in PyTorch")
        if isinstance(v, (list, tuple, dict, str)):
            return self._collection(v, span)
        return v

    def _e_Name(self, e: ast.Name, ctx: Ctx):
        v = self._lookup(e.id, ctx)
        if v is MISSING:
            raise self._unknown_name(e, ctx)
        return v

    def _lookup(self, name: str, ctx: Ctx):
        if name in ctx.scope:
            return ctx.scope[name]
        decl = self.unit.decls.get(name)
        if decl is not None and decl.kind != "train":  # a plan is run, never used as a value
            return DeclRef(decl)
        if name in REGISTRY and not REGISTRY[name].internal:  # `index`, `sdpa`: made by the compiler only
            return OpRef(REGISTRY[name])
        if name in BUILTINS:
            return BUILTINS[name]
        return self._lookup_extra(name, ctx)

    def _lookup_extra(self, name: str, ctx: Ctx):
        return MISSING

    def visible_names(self, ctx: Ctx) -> list[str]:
        return list(ctx.scope) + list(self.unit.decls) + _public_ops() + list(BUILTINS)

    def _unknown_name(self, e: ast.Name, ctx: Ctx, called: bool = False) -> EvalError:
        name = e.id
        if len(self.reporter.diagnostics) >= MAX_SHOWN:  # not shown: no suggestion (each scans every name)
            code, what = ("E0202", "layer") if name[:1].isupper() else ("E0203", "function") if called else \
                ("E0201", "")
            return EvalError(code, f"unknown {what} `{name}`" if what else f"`{name}` is not defined", e.span)
        if name[:1].isupper():
            pool = [n for n in list(REGISTRY) + list(self.unit.decls)
                    if n[:1].isupper() and (n not in REGISTRY or REGISTRY[n].kind == "layer")]
            guess = did_you_mean(name, pool)
            return EvalError("E0202", f"unknown layer `{name}`", e.span, label="not a layer or block",
                             help=f"did you mean `{guess}`?" if guess else None)
        if called:
            pool = [n for n in _public_ops() + list(BUILTINS) if n[:1].islower()] + \
                   [n for n in ctx.scope if isinstance(ctx.scope[n], InstanceValue)]
            guess = did_you_mean(name, pool)
            return EvalError("E0203", f"unknown function `{name}`", e.span, label="not a function",
                             help=f"did you mean `{guess}`?" if guess else None)
        guess = did_you_mean(name, self.visible_names(ctx))
        return EvalError("E0201", f"`{name}` is not defined", e.span, label="unknown name",
                         help=f"did you mean `{guess}`?" if guess else None)

    def _e_BinOp(self, e: ast.BinOp, ctx: Ctx):
        if e.op in ("and", "or"):
            left = self._expr(e.left, ctx)
            lt = self._truth(left, e.left.span)
            if (e.op == "and" and not lt) or (e.op == "or" and lt):
                return left
            return self._expr(e.right, ctx)
        left, right = self._expr(e.left, ctx), self._expr(e.right, ctx)
        if left is POISON or right is POISON:
            raise Poisoned()
        if isinstance(left, TensorValue) or isinstance(right, TensorValue):
            return self._tensor_binop(e, left, right, ctx)
        return self._scalar_binop(e, left, right)

    def _scalar_binop(self, e: ast.BinOp, a, b):
        # float ∘ Size runs float's own operator, which drops the size's expression: the generated
        # code then holds the number, so record that it is only valid for this parameter value
        for x, y in ((a, b), (b, a)):
            if isinstance(x, Size) and isinstance(y, float) and not isinstance(y, bool):
                x._lose("mixing with a float")
        if e.op == "**" and is_int(a) and is_int(b) and plain(b) >= 0 and power_too_large(plain(a), plain(b)):
            raise EvalError("E0701", f"`{plain(a)} ** {plain(b)}` is too large: more than 2**63 - 1", e.span,
                            label="evaluated at compile time", help="sizes and counts are int64 in PyTorch")
        _check_lengths(e.op, a, b, e.span)
        self._spend(e.span, _length(a) + _length(b))
        try:
            result = self._bounded(_SCALAR_OPS[e.op](a, b), e.span)
        except ZeroDivisionError:
            raise EvalError("E0308", "division by zero", e.span, label="evaluated at compile time",
                            labels=(Label(e.right.span, "this is zero"),)) from None
        except SymbolicDecision as err:
            raise EvalError("E0311", f"cannot decide this at compile time: {err}", e.span) from None
        except (TypeError, KeyError, ValueError, OverflowError):
            raise EvalError("E0307", f"cannot apply `{e.op}` to {describe(a)} and {describe(b)}",
                            e.op_span, label="unsupported operands") from None
        self._spend(e.span, _length(result))
        return result

    def _e_UnaryOp(self, e: ast.UnaryOp, ctx: Ctx):
        v = self._expr(e.operand, ctx)
        if v is POISON:
            raise Poisoned()
        if e.op == "not":
            return not self._truth(v, e.operand.span)
        if isinstance(v, TensorValue):
            return self._tensor_unary(e, v, ctx)
        if not is_number(v) and not isinstance(v, Sym):
            raise EvalError("E0307", f"cannot apply `{e.op}` to {describe(v)}", e.span)
        return self._bounded(-v if e.op == "-" else v, e.span)

    def _e_Cond(self, e: ast.Cond, ctx: Ctx):
        cond = self._expr(e.cond, ctx)
        return self._expr(e.then if self._truth(cond, e.cond.span) else e.orelse, ctx)

    def _e_Pipe(self, e: ast.Pipe, ctx: Ctx):
        value = self._expr(e.stages[0], ctx)
        for stage in e.stages[1:]:
            if value is POISON:
                raise Poisoned()
            value = self._stage(stage, value, ctx)
        return value

    def _e_AsName(self, e: ast.AsName, ctx: Ctx):
        applied = self._named_application(e, ctx)
        if applied is not None:
            return applied
        v = self._expr(e.value, ctx)
        return self._named_spec(v, e)

    def _named_application(self, e: ast.AsName, ctx: Ctx):
        """`Up(64)(x, skip) as up1`: `as` names the layer of an explicit application."""
        call = e.value
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Call):
            return None
        spec = self._expr(call.func, ctx)
        if spec is POISON:
            raise Poisoned()
        if not isinstance(spec, (LayerSpec, BlockSpec)):
            return None
        spec = self._named_spec(spec, e)
        pos, kws = self._args(call, ctx)
        if kws:
            raise EvalError("E0305", "a layer is applied to tensors only; keyword arguments go in its "
                            "construction", kws[0][1].name_span)
        return self._apply(spec, [a.value for a in pos], [a.span for a in pos], call.span, ctx)

    def _named_spec(self, v, e: ast.AsName):
        if v is POISON:
            raise Poisoned()
        if isinstance(v, OpRef) and v.op.is_layer:
            v = self._layer_spec(v.op, [], [], e.value.span)
        if isinstance(v, DeclRef) and v.decl.kind in ("block", "model"):
            v = BlockSpec(v.decl, {}, {}, e.value.span)
        if not isinstance(v, (LayerSpec, BlockSpec)):
            raise EvalError("E0307", f"`as` names a layer, but this is {describe(v)}", e.span,
                            label="not a layer")
        self._check_layer_name(e.name, e.name_span)
        return replace(v, name=e.name, name_span=e.name_span)

    def _check_layer_name(self, name: str, span, what: str = "a layer") -> None:
        """The name of a layer or `param` is its attribute, and state-dict key, in the generated module."""
        self._check_binding_name(name, span)
        problem = attribute_problem(name)
        if problem:
            raise EvalError("E0211", f"`{name}` cannot name {what}: {problem}", span,
                            help="it becomes the module's attribute and state-dict key: choose another name")

    def _e_Index(self, e: ast.Index, ctx: Ctx):
        v = self._expr(e.value, ctx)
        if v is POISON:
            raise Poisoned()
        if isinstance(v, TensorValue):
            return self._tensor_index(e, v, ctx)
        if len(e.subscripts) != 1:
            raise EvalError("E0307", f"{describe(v)} takes one index", e.span)
        sub = e.subscripts[0]
        if isinstance(sub, ast.Slice):
            if not isinstance(v, (list, tuple)):
                raise EvalError("E0307", f"cannot slice {describe(v)}", e.span)
            parts = [None if x is None else self._index_int(self._expr(x, ctx), x.span)
                     for x in (sub.start, sub.stop, sub.step)]
            if parts[2] == 0:
                raise EvalError("E0308", "slice step cannot be zero", sub.span)
            out = v[slice(*parts)]
            self._spend(e.span, len(out))
            return out
        i = self._index_int(self._expr(sub, ctx), sub.span)
        if isinstance(v, dict):
            raise EvalError("E0307", "index a dictionary with `.name`", e.span)
        if not isinstance(v, (list, tuple, str)):
            raise EvalError("E0307", f"cannot index {describe(v)}", e.value.span)
        if not -len(v) <= i < len(v):
            raise EvalError("E0308", f"index {i} is out of range for {len(v)} item{'s' if len(v) != 1 else ''}",
                            sub.span, label=f"valid: {-len(v)} to {len(v) - 1}" if v else "it is empty")
        return v[i]

    def _index_int(self, v, span) -> int:
        if v is POISON:
            raise Poisoned()
        if isinstance(v, Sym):
            raise EvalError("E0311", f"an index must be known at compile time, got `{v}`", span)
        if not is_int(v):
            raise EvalError("E0301", f"an index must be an int, got {describe(v)}", span)
        if isinstance(v, Size):
            v._lose("an index")
        return plain(v)

    def _e_Attr(self, e: ast.Attr, ctx: Ctx):
        v = self._expr(e.value, ctx)
        if v is POISON:
            raise Poisoned()
        if isinstance(v, TensorValue):
            return self._tensor_attr(e, v)
        if isinstance(v, InstanceValue):
            return self._instance_attr(e, v, ctx)
        if isinstance(v, Record):
            if e.name not in v.fields:
                guess = did_you_mean(e.name, v.fields)
                raise EvalError("E0208", f"{describe(v)} has no field `{e.name}`", e.name_span,
                                help=f"did you mean `{guess}`?" if guess else
                                "fields: " + ", ".join(f"`{f}`" for f in v.fields))
            return v.fields[e.name]
        raise EvalError("E0208", f"{describe(v)} has no attribute `{e.name}`", e.name_span)

    def _tensor_attr(self, e: ast.Attr, v: TensorValue):
        t = v.type
        if e.name == "shape":
            return tuple(t.shape)
        if e.name in ("ndim", "rank"):
            return t.rank
        if e.name == "dtype":
            return t.dtype
        guess = did_you_mean(e.name, ["shape", "ndim", "dtype"])
        raise EvalError("E0208", f"a tensor has no attribute `{e.name}`", e.name_span,
                        help=f"did you mean `{guess}`?" if guess else "tensors have `.shape`, `.ndim` and `.dtype`")

    def _e_Call(self, e: ast.Call, ctx: Ctx):
        func = self._callee(e, ctx)
        return self._call(func, e, ctx)

    def _callee(self, e: ast.Call, ctx: Ctx):
        if isinstance(e.func, ast.Name):
            v = self._lookup(e.func.id, ctx)
            if v is MISSING:
                raise self._unknown_name(e.func, ctx, called=True)
            return v
        return self._expr(e.func, ctx)

    def _args(self, e: ast.Call, ctx: Ctx, piped=None, skip: tuple = ()) -> tuple[list, list]:
        pos = [Arg(self._expr(a, ctx), a.span) for a in e.args]
        if piped is not None:
            pos.insert(0, Arg(piped, getattr(piped, "span", None) or e.span))
        kws = [(k.name, Arg(self._expr(k.value, ctx), k.value.span, k.span))
               for k in e.kwargs if k.name not in skip]
        for a in pos + [a for _, a in kws]:
            if a.value is POISON:
                raise Poisoned()
        return pos, kws

    def _call(self, func, e: ast.Call, ctx: Ctx, piped=None):
        if func is POISON:
            raise Poisoned()
        if isinstance(func, OpRef):
            if func.op.is_layer:
                init = next((k for k in e.kwargs if k.name == "init"), None)
                if init is None or func.op.param("init") is not None:
                    pos, kws = self._args(e, ctx)
                    return self._layer_spec(func.op, pos, kws, e.span)
                pos, kws = self._args(e, ctx, skip=("init",))
                return replace(self._layer_spec(func.op, pos, kws, e.span), inits=self._layer_inits(init, ctx))
            pos, kws = self._args(e, ctx, piped)
            return self._call_function(func.op, pos, kws, e.span, ctx)
        if isinstance(func, DeclRef) and func.decl.kind in ("block", "model"):
            pos, kws = self._args(e, ctx)
            return self._block_spec(func.decl, pos, kws, e.span)
        if isinstance(func, Builtin):
            pos, kws = self._args(e, ctx, piped)
            return self._call_builtin(func, pos, kws, e)
        if isinstance(func, (LayerSpec, BlockSpec, InstanceValue)):
            pos, kws = self._args(e, ctx)
            if kws:
                raise EvalError("E0305", "a layer is applied to tensors only; keyword arguments go in its "
                                "construction", kws[0][1].name_span)
            return self._apply(func, [a.value for a in pos], [a.span for a in pos], e.span, ctx)
        return self._call_other(func, e, ctx, piped)

    def _call_other(self, func, e: ast.Call, ctx: Ctx, piped=None):
        if isinstance(func, DeclRef):
            raise EvalError("E0307", f"{describe(func)} cannot be called here", e.func.span)
        raise EvalError("E0307", f"{describe(func)} is not callable", e.func.span)

    def _call_builtin(self, func: Builtin, pos: list[Arg], kws, e: ast.Call):
        if kws:
            raise EvalError("E0305", f"`{func.name}` takes no keyword arguments", kws[0][1].name_span)
        self._spend(e.span, sum(_length(a.value) for a in pos))
        try:
            result = self._bounded(func.fn(*[a.value for a in pos]), e.span)
            self._spend(e.span, _length(result))
            return result
        except BuiltinError as err:
            span = pos[err.arg].span if err.arg is not None and err.arg < len(pos) else e.span
            raise EvalError(err.code, str(err), span) from None
        except SymbolicDecision as err:
            raise EvalError("E0311", f"cannot decide this at compile time: {err}", e.span) from None

    # ------------------------------------------------------------------ stages (pipes and sequential bodies)

    def _stage(self, e, value, ctx: Ctx, statement: bool = False):
        """Apply the stage `e` to `value` (the piped or running value).

        The stage itself is evaluated first, so its own mistakes are reported even
        when the value it would receive comes from an earlier error."""
        if isinstance(e, ast.AsName):
            spec = self._stage_callable(e.value, ctx, value)
            if isinstance(spec, _Done):
                raise EvalError("E0307", "`as` names a layer, but this stage is a function call", e.span)
            spec = self._named_spec(spec, e)
            return self._apply_to(spec, value, e, ctx, statement)
        spec = self._stage_callable(e, ctx, value)
        if isinstance(spec, _Done):
            return spec.value
        if spec is POISON:
            raise Poisoned()
        if isinstance(spec, TensorValue) and statement:
            return spec  # a tensor expression written as a statement: it becomes the running value
        return self._apply_to(spec, value, e, ctx, statement)

    def _stage_callable(self, e, ctx: Ctx, value):
        """What a stage applies: a layer-like value, or _Done when a function consumed the value."""
        if isinstance(e, ast.Call):
            func = self._callee(e, ctx)
            if isinstance(func, OpRef) and not func.op.is_layer or isinstance(func, Builtin):
                self._need_value(value, e, ctx)
                if value is POISON:
                    self._args(e, ctx)  # still report mistakes in the arguments
                    raise Poisoned()
                return _Done(self._call(func, e, ctx, piped=value))
            return self._call(func, e, ctx)
        if isinstance(e, ast.Name):
            v = self._lookup(e.id, ctx)
            if v is MISSING:
                raise self._unknown_name(e, ctx)
            if isinstance(v, OpRef) and not v.op.is_layer:
                self._need_value(value, e, ctx)
                if value is POISON:
                    raise Poisoned()
                return _Done(self._call_function(v.op, [Arg(value, getattr(value, "span", e.span))], [],
                                                 e.span, ctx))
            return v
        return self._expr(e, ctx)

    def _need_value(self, value, e, ctx: Ctx) -> None:
        if value is None:
            raise EvalError("E0307", "there is no value to apply this to", e.span,
                            help=self._no_current_help(ctx))

    def _no_current_help(self, ctx: Ctx) -> str:
        if ctx.n_inputs_declared > 1:
            return "with several inputs, say which one: `x -> Linear(10)`"
        return "declare an `input` first"

    def _apply_to(self, spec, value, e, ctx: Ctx, statement: bool):
        if spec is POISON or value is POISON:
            raise Poisoned()
        if value is None:
            raise EvalError("E0307", "there is no value to apply this layer to", e.span,
                            help=self._no_current_help(ctx))
        if isinstance(spec, TensorValue):
            raise EvalError("E0307", "a tensor is not a layer: nothing to pipe into", e.span,
                            help="pipes end in layers or functions: `x -> Linear(10)`")
        if isinstance(value, tuple):
            if isinstance(spec, (LayerSpec, InstanceValue, OpRef)) and len(value) > 1 and \
                    all(isinstance(v, TensorValue) for v in value):
                return self._apply(spec, list(value), [v.span for v in value], e.span, ctx)
            raise EvalError("E0307", "the value piped here is a tuple of tensors", e.span,
                            help="unpack it first, e.g. `out, (h, c) = x -> LSTM(64)`, or index it: `(...)[0]`")
        if not isinstance(value, TensorValue):
            raise EvalError("E0307", f"only a tensor can go into a layer, but this is {describe(value)}", e.span,
                            help="a pipe starts from a tensor: `x -> Linear(10)`")
        return self._apply(spec, [value], [value.span], e.span, ctx)


@dataclass
class _Done:
    """A stage that was a function call: the piped value is already consumed."""
    value: object


def fresh(name: str, value):
    """A parameter's value as seen inside its model or block: it remembers its name."""
    if is_int(value):
        return Size.param(name, plain(value))
    if isinstance(value, float):
        return Real(plain_float(value), Poly.atom(Param(name)))
    return value


def _plain_value(v):
    """A value without the parameter expressions it carries."""
    if isinstance(v, Size):
        return plain(v)
    if isinstance(v, Real):
        return plain_float(v)
    if isinstance(v, list):
        return [_plain_value(x) for x in v]
    if isinstance(v, tuple):
        return tuple(_plain_value(x) for x in v)
    return v


def _type_ok(t: ast.TypeExpr, v) -> str | None:
    """None when `v` fits the declared type, else what was expected ("unknown" for a bad type)."""
    if t.name == "int" and t.arg is None:
        return None if is_int(v) else "an int"
    if t.name == "float" and t.arg is None:
        return None if is_number(v) else "a number"
    if t.name == "bool" and t.arg is None:
        return None if isinstance(v, bool) else "a bool"
    if t.name == "str" and t.arg is None:
        return None if isinstance(v, str) else "a string"
    if t.name == "list":
        if not isinstance(v, (list, tuple)):
            return f"a {t}"
        if t.arg is None:
            return None
        for item in v:
            inner = _type_ok(t.arg, item)
            if inner == "unknown":
                return inner
            if inner is not None:
                return f"a {t}"
        return None
    return "unknown"


def _check_target(t) -> None:
    if isinstance(t, ast.Name):
        return
    if isinstance(t, ast.TupleExpr):
        for x in t.items:
            _check_target(x)
        return
    raise EvalError("E0108", "cannot assign to this", t.span,
                    help="the left side of `=` is a name or names: `a = ...`, `out, (h, c) = ...`")


def _target_names(t) -> list[str]:
    if isinstance(t, ast.Name):
        return [t.id]
    if isinstance(t, ast.TupleExpr):
        return [n for x in t.items for n in _target_names(x)]
    return []


def _as_names(e) -> list[str]:
    if isinstance(e, ast.AsName):
        return [e.name]
    if isinstance(e, ast.Pipe):
        return [n for s in e.stages for n in _as_names(s)]
    return []


def _public_ops() -> list[str]:
    """The registry's names a spec may use (internal ops are made by the compiler only)."""
    return [n for n, op in REGISTRY.items() if not op.internal]


def _check_elements(t: TensorType, span) -> None:
    if elements_too_many(t.shape):
        raise EvalError("E0706", f"a tensor of {t.shape_str()} has more elements than int64 can count", span,
                        label="too large")


def _dims_equal(a, b) -> bool:
    try:
        return bool(a == b)
    except SymbolicDecision:
        return False


def _dim_text(d) -> str:
    return str(d) if isinstance(d, Sym) else str(plain(d))


def _check_numbers(a, b):
    for v in (a, b):
        if isinstance(v, (str, list, tuple, dict)) or v is None or not (is_number(v) or isinstance(v, Sym)):
            raise TypeError


def _arith(f):
    def op(a, b):
        _check_numbers(a, b)
        return f(a, b)
    return op


def _length(v) -> int:
    return len(v) if isinstance(v, (list, tuple, dict, str)) else 0


def _check_lengths(op: str, a, b, span) -> None:
    """Refuse, before building it, a list or string longer than MAX_ITEMS (`[0] * 10**9`)."""
    if op == "+" and isinstance(a, (list, str)) and type(a) is type(b):
        n = len(a) + len(b)
    elif op == "*" and (isinstance(a, list) and is_int(b) or isinstance(b, list) and is_int(a)):
        lst, count = (a, b) if isinstance(a, list) else (b, a)
        n = len(lst) * max(plain(count), 0)
    else:
        return
    if n > MAX_ITEMS:
        what = "string" if isinstance(a, str) else "list"
        raise EvalError("E0702", f"this {what} would hold {n:,} items, more than {MAX_ITEMS:,}", span,
                        label="too long")


def _add(a, b):
    if isinstance(a, list) and isinstance(b, list):
        return a + b
    if isinstance(a, str) and isinstance(b, str):
        return a + b
    _check_numbers(a, b)
    return a + b


def _mul(a, b):
    if isinstance(a, list) and is_int(b) or isinstance(b, list) and is_int(a):
        lst, n = (a, b) if isinstance(a, list) else (b, a)
        if isinstance(n, Size):
            n._lose("a repeat count")
        return lst * plain(n)
    _check_numbers(a, b)
    return a * b


def _truediv(a, b):
    _check_numbers(a, b)
    if isinstance(a, Sym) or isinstance(b, Sym):
        raise TypeError
    return a / b


def _eq(a, b):
    if isinstance(a, Sym) or isinstance(b, Sym):
        if isinstance(a, Sym) and isinstance(b, Sym) and a == b:
            return True
        raise SymbolicDecision(f"`{a if isinstance(a, Sym) else b}` is only known at run time")
    return a == b


def _contains(item, container) -> bool:
    """`a in b` at compile time: an element of a list or tuple, a key of a dict, a substring of a string."""
    if isinstance(container, str):
        if not isinstance(item, str):
            raise TypeError
        return item in container
    if isinstance(container, dict):
        return item in container
    if not isinstance(container, (list, tuple)):
        raise TypeError
    return any(_eq(item, x) for x in container)   # sizes compare as `==` does (run-time ones: E0311)


_SCALAR_OPS = {
    "+": _add, "-": _arith(lambda a, b: a - b), "*": _mul, "/": _truediv,
    "//": _arith(lambda a, b: a // b), "%": _arith(lambda a, b: a % b),
    "**": _arith(lambda a, b: a ** b),
    "==": _eq, "!=": lambda a, b: not _eq(a, b),
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    "@": lambda a, b: (_ for _ in ()).throw(TypeError()),
    "in": _contains, "not in": lambda a, b: not _contains(a, b),
}
