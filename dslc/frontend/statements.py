"""Running the statements of model and block bodies: `input`, `output`, `param`, assignments,
`for`, `repeat` and `if`. Errors are collected per statement: a statement that fails binds its
names to POISON, and later uses of a poisoned value report nothing more.
"""
from __future__ import annotations

from ..diagnostics import Diagnostic, Label, did_you_mean
from ..ir.dims import Sym, SymbolicDecision, plain
from ..ir.limits import MAX_ITEMS, MAX_STEPS, LimitError, elements_too_many
from ..ir.nesting import SEP, flatten, leaves
from ..ir.types import DTYPES, TensorType
from ..ir.values import Ref, TensorValue
from ..ops.init import INITS
from ..ops.ptypes import describe, is_int
from . import ast
from .binding import Arg, bind_op
from .bodyblocks import body_block
from .builtins import BUILTINS
from .conditions import is_condition
from .containers import Loop, check_name, finish_loops, split_name
from .context import Ctx, block_input_type
from .errors import EvalError, Poisoned
from .loopvars import carried_names, index_threshold, settled_from, snapshot, uses_any
from .values import MISSING, POISON, BlockSpec, DeclRef, InitSpec, LayerSpec


class StatementEvaluation:
    """The statements of a body, run in order against its `Ctx` (a mixin of `Evaluator`)."""

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
        elif isinstance(stmt, (ast.InputStmt, ast.ParamStmt, ast.BufferStmt)):
            ctx.scope[stmt.name] = POISON
            if isinstance(stmt, ast.InputStmt) and ctx.n_inputs_declared == 1:
                ctx.current = POISON
        elif isinstance(stmt, ast.ExprStmt):
            ctx.current = POISON
            for name in _as_names(stmt.value):
                ctx.scope[name] = POISON

    # ------------------------------------------------------------------ inputs

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
        if isinstance(earlier, tuple) and earlier and all(isinstance(t, TensorValue) for t in leaves(earlier)):
            earlier = leaves(earlier)[0]   # a tuple input
        if isinstance(earlier, TensorValue):
            raise EvalError("E0204", f"input `{stmt.name}` is declared twice", stmt.name_span,
                            label="second declaration", labels=(Label(earlier.span, "first declared here"),),
                            help="give each input its own name")
        what = "a parameter" if stmt.name in ctx.graph.params else "a size of an earlier input"
        raise EvalError("E0204", f"input `{stmt.name}` has the name of {what} of `{ctx.decl.name}`",
                        stmt.name_span, label="already defined", help="give the input another name")

    def _declare_input(self, stmt: ast.InputStmt, ctx: Ctx, shape=None, name: str | None = None):
        """A model's own input: its shape is declared; unknown names become run-time sizes. A tuple of
        shapes, `([L, B, H], [L, B, H])`, declares a tuple of tensors, held as `hidden.0`, `hidden.1`."""
        shape, name = shape or stmt.shape, name or stmt.name
        if shape is None:
            raise EvalError("E0303", f"model input `{stmt.name}` needs a shape", stmt.span,
                            help=f"declare it like `input {stmt.name}: [B, 784]`")
        if isinstance(shape, ast.TupleExpr):
            return tuple(self._declare_input(stmt, ctx, item, f"{name}{SEP}{i}") for i, item in enumerate(shape.items))
        dims = self._shape_pattern(shape, ctx, None)
        t = TensorType(tuple(dims), self._dtype(stmt))
        _check_elements(t, shape.span)
        node = ctx.graph.add("input", [t], span=stmt.span, names=[name])
        ctx.graph.inputs.append((name, Ref(node.id)))
        return TensorValue(Ref(node.id), t, stmt.name_span)

    def _receive_input(self, stmt: ast.InputStmt, ctx: Ctx):
        """A block's (or a model used as a layer's) input: the caller's tensor, or tuple of tensors."""
        if not ctx.inputs_left:
            raise Poisoned()  # the caller already reported the count mismatch
        return self._receive(stmt, stmt.shape, stmt.name, ctx.inputs_left.pop(0), ctx)

    def _receive(self, stmt: ast.InputStmt, shape, name: str, caller, ctx: Ctx):
        if isinstance(caller, tuple) or isinstance(shape, ast.TupleExpr):
            declared = len(shape.items) if isinstance(shape, ast.TupleExpr) else None if shape is None else 1
            given = len(caller) if isinstance(caller, tuple) else 1
            if declared is not None and (declared != given or not isinstance(caller, tuple)):
                what = f"a tuple of {declared} tensors" if isinstance(shape, ast.TupleExpr) else "one tensor"
                raise EvalError("E0307", f"input `{stmt.name}` is declared as {what} but receives {describe(caller)}",
                                shape.span, label="declared here")
            items = shape.items if shape is not None else (None,) * given
            return tuple(self._receive(stmt, item, f"{name}{SEP}{i}", v, ctx)
                         for i, (item, v) in enumerate(zip(items, caller)))
        t = caller.type
        if ctx.kind == "block":
            t = block_input_type(name, t, ctx.graph.atom_env)
        if shape is not None:
            self._shape_pattern(shape, ctx, t)
        if stmt.dtype is not None and self._dtype(stmt) != t.dtype:
            raise EvalError("E0310", f"input `{stmt.name}` is declared {self._dtype(stmt)} but receives {t.dtype}",
                            caller.span, label=f"this is {t.dtype}", labels=(Label(stmt.span, "declared here"),))
        node = ctx.graph.add("input", [t], span=stmt.span, names=[name])
        ctx.graph.inputs.append((name, Ref(node.id)))
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

    # ------------------------------------------------------------------ outputs and `param`

    def _s_OutputStmt(self, stmt: ast.OutputStmt, ctx: Ctx, top: bool) -> None:
        if ctx.kind not in ("model", "block"):
            raise EvalError("E0107", "`output` belongs in a model or block", stmt.span)
        if ctx.outputs is not None:
            raise EvalError("E0107", "a second `output` statement", stmt.span,
                            help="list every output in one statement: `output a, b`")
        outputs = []
        for i, e in enumerate(stmt.values):
            v = self._expr(e, ctx)
            if v is POISON or isinstance(v, tuple) and any(x is POISON for x in leaves(v)):
                raise Poisoned()
            if not _tensors(v):
                raise EvalError("E0307", f"`output` needs tensors or tuples of tensors, got {describe(v)}", e.span)
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
            ctx.graph.outputs += [(flat, t.ref) for flat, t in flatten(name, v)]   # a tuple: `hidden.0`, ...
        self._drop_buffer_sources(ctx)
        try:
            finish_loops(ctx)
        except EvalError as e:
            self.reporter.add(e.diagnostic)
            ctx.failed = True

    def _s_ParamStmt(self, stmt: ast.ParamStmt, ctx: Ctx, top: bool) -> None:
        if ctx.kind not in ("model", "block"):
            raise EvalError("E0107", "`param` belongs in a model or block", stmt.span)
        if ctx.loop_depth:
            raise EvalError("E0107", "`param` cannot be declared inside a loop", stmt.span)
        self._check_layer_name(stmt.name, stmt.name_span, "a `param`")
        self._claim_state_name(stmt.name, stmt.name_span, ctx)
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
        ctx.layer_names[stmt.name] = (inst, stmt.name_span)
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
        if guess:
            help = f"did you mean `{guess}`?"
        elif isinstance(expr, ast.Name) or (isinstance(expr, ast.Const) and isinstance(expr.value, (int, float))):
            # `= layer_scale`, `= 0.1`: meant as the value to fill the tensor with
            help = f"a fill value is written `constant({expr.id if isinstance(expr, ast.Name) else expr.value})`"
        else:
            help = "initializers: " + ", ".join(INITS)
        raise EvalError("E0301", "unknown initializer" + (f" `{name}`" if name else ""), expr.span, help=help)

    # ------------------------------------------------------------------ assignments

    def _s_AssignStmt(self, stmt: ast.AssignStmt, ctx: Ctx, top: bool) -> None:
        for t in stmt.targets:
            _check_target(t)
        target = stmt.targets[0] if len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) else None
        if target is not None and is_condition(stmt.value):
            value = self._named_condition(stmt.value, target.id, ctx)   # frontend/conditions.py
        else:
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
            if isinstance(value, (LayerSpec, BlockSpec)) and ctx.kind in ("model", "block"):
                value = self._bound_layer(value, target, ctx)  # `lin = Linear(8)`: one layer, `lin`
            ctx.scope[target.id] = value
            named = flatten(target.id, value) if _tensors(value) else []   # a tuple's tensors: `hidden_0`, ...
            for name, v in named:
                node = ctx.graph.nodes[v.ref.node]
                if node.names[v.ref.index] is None:
                    node.names[v.ref.index] = name.replace(SEP, "_")
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

    # ------------------------------------------------------------------ control flow

    def _s_ForStmt(self, stmt: ast.ForStmt, ctx: Ctx, top: bool) -> None:
        iterable, name, name_span = split_name(stmt.iterable)   # `for i in range(n) as layers`
        if name is not None:
            check_name(name, name_span, ctx)
        items, count = self._loop_items(iterable, ctx)
        if count is None:   # a list, not `range(n)`: the loop variables hold items, which may differ
            count, settled = len(items), 0 if not uses_any(stmt.body, stmt.names) else None
        else:
            settled = index_threshold(stmt.body, stmt.names[0]) if len(stmt.names) == 1 else None

        def bind(i: int) -> None:
            self._bind_loop_vars(stmt, items[i], ctx)
        passes, stable = self._passes(stmt, "for", len(items), bind, ctx)
        settled = None if settled is None else max(settled, stable)
        # whether it is a module list, and so whether its count stays a parameter, is decided
        # once the body is done (frontend/containers.py)
        ctx.loops.append(Loop("for", count, passes, name, name_span, stmt.span, settled, stmt=stmt,
                              items=tuple(items)))

    def _loop_items(self, iterable: ast.Expr, ctx: Ctx) -> tuple:
        """The items a `for` loops over, and its count when it is `range(n)` (n, which may be a parameter
        the loop keeps as its count), else None."""
        if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Name) and iterable.func.id == "range" \
                and len(iterable.args) == 1 and not iterable.kwargs and self._lookup("range", ctx) is BUILTINS["range"]:
            n = self._expr(iterable.args[0], ctx)
            if n is POISON:
                raise Poisoned()
            # range() of the bare value: n's expression is fixed only if the loop does not keep it
            return self._call_builtin(BUILTINS["range"], [Arg(plain(n), iterable.args[0].span)], [], iterable), n
        items = self._expr(iterable, ctx)
        if items is POISON:
            raise Poisoned()
        if not isinstance(items, (list, tuple)):
            raise EvalError("E0307", f"`for` needs a list to loop over, got {describe(items)}",
                            iterable.span, help="use `range(n)` to count")
        return items, None

    def _passes(self, stmt, kind: str, n: int, bind, ctx: Ctx) -> tuple:
        """Run a loop's body n times: the nodes each pass made, and the first pass from which every pass
        started from the same values of what one pass hands the next (frontend/loopvars.py)."""
        carried = carried_names(stmt.body) - set(getattr(stmt, "names", ()))
        ctx.loop_depth += 1
        outer = ctx.graph.region
        passes, starts = [], []
        try:
            for i in range(n):
                self._spend(stmt.span)
                ctx.graph.region = (id(stmt), i, kind)  # diagrams draw identical iterations once
                if bind is not None:
                    bind(i)
                starts.append(snapshot(ctx.scope, carried))
                before = ctx.graph.mark()
                self._run_body(stmt.body, ctx)
                passes.append(ctx.graph.added_since(before))
        finally:
            ctx.loop_depth -= 1
            ctx.graph.region = outer
        starts.append(snapshot(ctx.scope, carried))
        return passes, settled_from(starts)

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
        count_expr, name, name_span = split_name(stmt.count)   # `repeat depth as h`
        if name is not None:
            check_name(name, name_span, ctx)
        count = self._expr(count_expr, ctx)
        n = self._count(count, count_expr.span)
        if name is None:
            stmt = self._as_block_repeat(stmt, ctx)
        passes, settled = self._passes(stmt, "repeat", n, None, ctx)
        ctx.loops.append(Loop("repeat", count, passes, name, name_span, stmt.span, settled, stmt=stmt))

    def _as_block_repeat(self, stmt: ast.RepeatStmt, ctx: Ctx) -> ast.RepeatStmt:
        """A body of several layers as one block applied each pass (frontend/bodyblocks.py), made once
        per statement so that every specialization of the model shares the block."""
        if ctx.kind not in ("model", "block"):
            return stmt   # a plan's step makes no layers (E0513)
        made = self.body_blocks.get(id(stmt))
        if made is None:   # the statement kept beside it: its id stays its own
            made = self.body_blocks[id(stmt)] = (stmt, body_block(stmt, ctx.decl, ctx.scope, self.unit,
                                                                  self.body_block_names))
        if made[1] is None:
            return stmt
        rewritten, block = made[1]
        ctx.scope[block.name] = DeclRef(block)
        return rewritten

    def _count(self, v, span) -> int:
        if v is POISON:
            raise Poisoned()
        if isinstance(v, Sym):
            raise EvalError("E0311", f"a repeat count must be known at compile time, got `{v}`", span)
        if not is_int(v):
            raise EvalError("E0301", f"a repeat count must be an int, got {describe(v)}", span)
        if plain(v) < 0:
            raise EvalError("E0302", f"a repeat count cannot be negative, got {plain(v)}", span)
        if plain(v) > MAX_ITEMS:
            raise EvalError("E0702", f"a repeat count must be at most {MAX_ITEMS:,}, got {plain(v):,}", span,
                            label="too many repeats")
        return plain(v)

    def _s_IfStmt(self, stmt: ast.IfStmt, ctx: Ctx, top: bool) -> None:
        branch = stmt.body if self._condition(stmt.cond, ctx) else stmt.orelse   # frontend/conditions.py
        self._run_body(branch, ctx)

    def _s_StepStmt(self, stmt, ctx: Ctx, top: bool) -> None:
        raise EvalError("E0107", "`step` belongs in a training plan", stmt.span)

    def _s_PhaseStmt(self, stmt, ctx: Ctx, top: bool) -> None:
        raise EvalError("E0107", "`phase` belongs in a training plan", stmt.span)

    def _s_FreezeStmt(self, stmt, ctx: Ctx, top: bool) -> None:
        word = "freeze" if stmt.freeze else "unfreeze"
        raise EvalError("E0107", f"`{word}` belongs in a training plan", stmt.span)


def _tensors(v) -> bool:
    """A tensor, or a (nested) tuple of tensors: what an input or output may be."""
    if isinstance(v, tuple):
        return bool(v) and all(_tensors(x) for x in v)
    return isinstance(v, TensorValue)


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
        return [] if e.template else [e.name]
    if isinstance(e, ast.Pipe):
        return [n for s in e.stages for n in _as_names(s)]
    return []


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
