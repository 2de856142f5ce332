"""The Python API: `load(path) -> Program`.

`Program.build` runs the very source `dslc compile` writes (registered in
linecache, so tracebacks show its lines): the CLI and the API share one
path, and the same seed gives the same weights.

Model parameters are keywords (`build("ResNet18", seed=0, classes=10)`) or a
dict, `params={"classes": 10}`. The dict reaches every name the language
allows, those of the methods' own arguments too (`params={"seed": 3}` sets a
model parameter `seed`); the CLI's `--set` always passes one.

Methods import the backend or runtime they use inside them, for start-up time: loading and
checking a file needs neither.
"""
from __future__ import annotations

import itertools
import os
import types

from .backends.pymodule import exec_source
from .diagnostics import Diagnostic, DslcError, Reporter, did_you_mean
from .frontend import ast
from .frontend.binding import Arg
from .frontend.evaluator import Evaluator, list_items
from .frontend.loader import Unit, load_unit


class Program:
    """A checked `.dl` file with everything it imports; `warnings`: what its check found that stops
    nothing (Diagnostics with severity "warning", such as W0201), which the command line prints."""

    def __init__(self, unit: Unit, path: str, warnings: list | None = None):
        self.unit = unit
        self.path = path
        self.warnings = list(warnings or [])
        self._graphs: dict = {}
        self._optimized: dict = {}

    @property
    def models(self) -> list[str]:
        return self.unit.models

    @property
    def plans(self) -> list[str]:
        return self.unit.plans

    @property
    def sweeps(self) -> list[str]:
        return [d.name for d in self.unit.of_kind("sweep")]

    def sweep(self, name: str | None = None):
        """The checked sweep `name` (a frontend.sweeps.Sweep), the file's only one when None."""
        from .frontend.sweeps import checked_sweep
        return checked_sweep(self.unit, self.declaration(self.sweep_name(name), "sweep"))

    def sweep_name(self, name: str | None) -> str:
        """The sweep a command runs: `name` (it must exist), else the file's only sweep."""
        if name is not None:
            return self.declaration(name, "sweep").name
        sweeps, file = self.sweeps, self.unit.root.name
        if len(sweeps) == 1:
            return sweeps[0]
        raise DslcError(Diagnostic("E0209", f"{file} has {len(sweeps) or 'no'} sweeps" +
                                   (": choose one with --sweep" if sweeps else ""), file_name=file,
                                   help="sweeps: " + ", ".join(sweeps) if sweeps else
                                   "declare one with `sweep NAME { plan = ...; space { ... } }` (docs/language.md)"))

    @property
    def buildable(self) -> list[str]:
        """Models that build as declared: every parameter has a default."""
        return [d.name for d in self.unit.of_kind("model") if all(p.default is not None for p in d.params)]

    def needs_arguments(self) -> dict[str, list[str]]:
        """Models that need arguments, with the parameters they need."""
        return {d.name: [p.name for p in d.params if p.default is None]
                for d in self.unit.of_kind("model") if d.name not in self.buildable}

    @property
    def source_name(self) -> str:
        return os.path.basename(self.path)

    def declaration(self, name: str, kind: str = "model"):
        """The declaration `name` of `kind` (model, block, train...); E0209 naming the others if none."""
        decl = self.unit.decls.get(name)
        if decl is None or decl.kind != kind:
            pool = [d.name for d in self.unit.of_kind(kind)]
            guess = did_you_mean(name, pool)
            listing = ", ".join(pool) or "none"
            raise DslcError(Diagnostic("E0209", f"no {kind} named `{name}` in {self.unit.root.name}",
                                       file_name=self.unit.root.name,
                                       help=f"did you mean `{guess}`?" if guess else f"{kind}s: {listing}"))
        return decl

    def graph(self, name: str, /, *, params: dict | None = None, **keywords):
        """The IR of a model, with parameters overridden (values are Python or `.dl` values)."""
        return self._graph(name, model_params(params, keywords))

    def _graph(self, name: str, params: dict, items: bool = False):
        """The IR; `items`: with a list parameter's items as sizes (`hidden[4]`, frontend/evaluator.py
        list_items), for the generated class, which then takes other lists of that length."""
        key = (name, items, tuple(sorted((k, repr(v)) for k, v in params.items())))
        if key not in self._graphs:
            decl = self.declaration(name)
            reporter = Reporter()
            ev = Evaluator(self.unit, reporter)
            args = {k: (v if isinstance(v, Arg) else Arg(v, None)) for k, v in params.items()}
            with list_items(items):
                g = ev.model(decl, args)
            reporter.raise_if_errors()
            self._graphs[key] = g
        return self._graphs[key]

    def optimized(self, name: str, /, opt: int = 1, channels_last: bool | None = None, *,
                  params: dict | None = None, **keywords):
        """The model's IR after the passes of -O`opt` (a dslc.passes.Result: .graph, .applied, .declined,
        .report()). The graph `graph(name)` returns is not changed."""
        return self._optimized_at(name, opt, channels_last, model_params(params, keywords))

    def _optimized_at(self, name: str, opt: int, channels_last: bool | None, params: dict, items: bool = False):
        from .passes import optimize
        key = (name, opt, channels_last, items, tuple(sorted((k, repr(v)) for k, v in params.items())))
        if key not in self._optimized:
            self._optimized[key] = optimize(self._graph(name, params, items), opt, channels_last)
        return self._optimized[key]

    def _graph_at(self, name: str, opt: int, channels_last: bool | None, params: dict, items: bool = False):
        if not opt and not channels_last:
            return self._graph(name, params, items)
        return self._optimized_at(name, opt, channels_last, params, items).graph

    def source(self, names: list[str] | None = None, /, seed: int = 0, *, opt: int = 0,
               channels_last: bool | None = None, params: dict | None = None, **keywords) -> str:
        """The generated PyTorch file for the named models (every buildable model when None), optimized
        with the passes of -O`opt` (0: none, the default) and the channels_last layout when asked (True),
        never (False) or, by default (None), where -O2 judges it worth it (docs/passes.md).
        Model parameters (one model only) are keywords or `params`, as for `build`."""
        from .backends.torch_codegen import TangledItems
        params = model_params(params, keywords)
        names = names or self.buildable
        if not names:
            needy = ", ".join(f"{m} ({', '.join(ps)})" for m, ps in self.needs_arguments().items())
            raise DslcError(Diagnostic("E0209", f"{self.unit.root.name} declares no model that builds as declared",
                                       file_name=self.unit.root.name,
                                       help=f"choose one with --model and give its parameters with --set: {needy}"
                                       if needy else None))
        if params and len(names) > 1:
            raise DslcError(Diagnostic("E0209", "parameters can be set for one model at a time",
                                       file_name=self.unit.root.name, help="choose one with --model"))
        tangled: frozenset = frozenset()
        while True:
            try:
                return self._source(names, seed, opt, channels_last, params, tangled)
            except TangledItems as e:   # a list's items would read as long expressions: that list stays fixed
                tangled |= e.args[0]

    def _source(self, names: list, seed: int, opt: int, channels_last: bool | None, params: dict, tangled: frozenset):
        """The file, with the models' list items as sizes but in the models `tangled` (TangledItems)."""
        from .backends.torch_codegen import generate
        lists = self._takes_lists()
        items = {n: n not in tangled and lists for n in names}
        graphs = [self._graph_at(n, opt, channels_last, params, items[n]) for n in names]
        flags = {g.name: self._flipped(n, g, opt, channels_last, params, items[n]) for n, g in zip(names, graphs)}
        return generate(graphs, self.source_name, seed, {k: v for k, v in flags.items() if v is not None},
                        check_items=True, tangled=tangled)

    def _takes_lists(self) -> bool:
        """Whether a declaration has a list parameter (typed so, or with a list default): else the
        graphs with list items as sizes are the graphs without, and need not be compiled again."""
        return any((p.type is not None and p.type.name == "list") or isinstance(p.default, ast.ListExpr)
                   for d in self.unit.decls.values() for p in getattr(d, "params", ()) or ())

    def _flipped(self, name: str, graph, opt: int, channels_last: bool | None, params: dict, items: bool):
        """The model's bool parameters compiled the other way too (every combination, for up to
        MAX_FLAGS of them), so that its one class takes both values (torch_codegen.ModelFlags);
        None where it has none or more. A value the spec refuses stays refused, saying why."""
        from .backends.torch_codegen import MAX_FLAGS, ModelFlags
        flags = [p for p, v in graph.params.items() if isinstance(v, bool)]
        if not flags or len(flags) > MAX_FLAGS:
            return None
        refused = {}
        for p in flags:
            try:
                self._graph_at(name, opt, channels_last, {**params, p: not graph.params[p]}, items)
            except DslcError as e:
                refused[p] = f"{_given({p: not graph.params[p]})} does not check: {_first_error(e)}"
        live = [p for p in flags if p not in refused]
        out = ModelFlags([], refused)
        for values in itertools.product((False, True), repeat=len(live)):
            given = dict(zip(live, values))
            if any(v != graph.params[p] for p, v in given.items()):
                try:
                    out.graphs.append((given, self._graph_at(name, opt, channels_last, {**params, **given}, items)))
                except DslcError as e:   # a combination the spec refuses: the class refuses it too
                    out.failed.append(f"{_given(given)} does not check: {_first_error(e)}")
        return out

    def module(self, names: list[str] | None = None, /, seed: int = 0, *, opt: int = 0,
               channels_last: bool | None = None, params: dict | None = None, **keywords) -> types.ModuleType:
        """The generated file, executed as a Python module."""
        params = model_params(params, keywords)
        src = self.source(names, seed, opt=opt, channels_last=channels_last, params=params)
        tag = "-".join(names or self.models) + (f"-O{opt}" if opt else "") + ("-cl" if channels_last else "")
        return exec_source(src, f"<dslc {self.source_name}:{tag}>")

    def build(self, name: str, /, seed: int | None = None, *, opt: int = 0, channels_last: bool | None = None,
              params: dict | None = None, **keywords):
        """A torch.nn.Module; with `seed`, the same weights as `dslc compile --seed` (at the same -O level).
        At -O2 the module is for inference: built in eval mode, with batch norm folded (docs/passes.md).
        Model parameters are keywords (`classes=10`) or a dict, `params={"classes": 10}`, which also
        reaches a parameter named like an argument of build itself (`params={"seed": 3}`)."""
        params = model_params(params, keywords)
        self._check_fits(name, params, _memory_bytes(), "this machine's memory")
        mod = self.module([name], seed or 0, opt=opt, channels_last=channels_last, params=params)
        return mod.build(name, seed=seed)

    def _check_fits(self, name: str, params: dict, limit: int | None, where: str) -> None:
        """Refuse to allocate weights that cannot fit (`Linear(10**12)` checks fine as a spec, but
        torch would fail, or the machine would swap, when it is built)."""
        from .backends.summary import count_params
        size = count_params(self.graph(name, params=params)) * 4  # float32
        if limit is not None and size > limit:
            raise DslcError(Diagnostic("E0708", f"the weights of `{name}` take {_bytes(size)}, more than {where} "
                                       f"({_bytes(limit)})", file_name=self.unit.root.name,
                                       help="check the layer sizes (`dslc summary` lists each layer's parameters)"))

    def summary(self, name: str, /, sizes: dict | None = None, frozen: list | None = None, *,
                params: dict | None = None, **keywords):
        """Per-layer parameters and MACs (at batch 1; `sizes` gives other run-time sizes such as T).
        `frozen`: (layer path, freeze?) rules, e.g. from `plan(...).freeze_rules()`."""
        from .backends.summary import summarize
        return summarize(self.graph(name, params=model_params(params, keywords)), sizes, frozen)

    def plan(self, name: str | None = None, sets: tuple = ()):
        """The checked training plan `name` (a frontend.plans.Plan), the file's only one when None,
        with `sets` (`--set` K=V strings) applied as if the plan said so."""
        from .frontend.plans import PlanChecker
        from .frontend.settings import apply_plan_sets, parse_sets
        decl = self.declaration(self.plan_name(name), "train")
        if sets:
            decl = apply_plan_sets(decl, parse_sets(sets))
        reporter = Reporter()
        plan = PlanChecker(self.unit, reporter).check(decl)
        reporter.raise_if_errors()
        return plan

    def plan_name(self, name: str | None) -> str:
        """The plan a command runs: `name` (it must exist), else the file's only plan."""
        if name is not None:
            return self.declaration(name, "train").name
        plans, file = self.plans, self.unit.root.name
        if len(plans) == 1:
            return plans[0]
        if not plans:
            raise DslcError(Diagnostic("E0209", f"{file} has no training plan", file_name=file,
                                       help="declare one with `train NAME { ... }` (docs/language.md)"))
        raise DslcError(Diagnostic("E0209", f"{file} has {len(plans)} training plans: choose one with --plan",
                                   file_name=file, help="plans: " + ", ".join(plans)))

    def diagram(self, name: str, /, depth: int | None = None, collapse: bool = True, *,
                params: dict | None = None, **keywords) -> str:
        """The Graphviz DOT source of a model's diagram."""
        from .backends.diagram import to_dot
        return to_dot(self.graph(name, params=model_params(params, keywords)), depth, collapse)

    def state(self, name: str, /, seed: int = 0, weights: str | None = None, *, opt: int = 0,
              params: dict | None = None, buffers: bool = False, rename: dict | None = None, **keywords) -> dict:
        """The model's weights by state-dict name, as numpy arrays: seeded, or read from `weights` (its
        names moved by the prefix rules `rename`, {the file's prefix: the model's}).
        With `opt`, those of the -O`opt` module (weights, a checkpoint of the unoptimized model, are
        checked against that model, then loaded, folded, into the optimized one). With `buffers`, the
        non-persistent buffers too (not in the state dict, but an ONNX graph holds them)."""
        params = model_params(params, keywords)
        net = self._weighted(name, seed, weights, opt, params, rename)
        state = dict(net.state_dict())
        if buffers:
            state.update(net.named_buffers())
        return {k: v.detach().cpu().numpy() for k, v in state.items()}

    def _weighted(self, name: str, seed: int, weights: str | None, opt: int, params: dict,
                  rename: dict | None):
        """The model with its seeded weights or those of `weights` (names moved by `rename`), as the
        -O`opt` module: a checkpoint of the unoptimized model is loaded into that, then folded."""
        net = self.build(name, seed=seed, params=params)
        if weights is not None:
            from .runtime.weights import load_into
            load_into(net, weights, rename)
        if opt:
            optimized = self.build(name, seed=seed, opt=opt, params=params)
            optimized.load_state_dict(net.state_dict())
            net = optimized
        return net

    def onnx(self, name: str, /, seed: int = 0, weights: str | None = None, *, opt: int = 0,
             params: dict | None = None, rename: dict | None = None, **keywords):
        """A checked ONNX model of `name` (onnx.ModelProto) in inference mode, with its weights; with
        `opt`, of the model after the passes of -O`opt` (-O2 folds batch norm into the weights)."""
        import onnx

        from .backends.onnx_emit import OnnxExportError, emit_model
        params = model_params(params, keywords)
        self._check_fits(name, params, ONNX_LIMIT, "one ONNX file holds")
        graph = self._graph_at(name, opt, False, params)
        try:
            model = emit_model(graph, self.state(name, seed, weights, opt=opt, params=params, buffers=True,
                                                 rename=rename),
                               doc=f"{name} from {self.source_name}, generated by dslc")
        except OnnxExportError as e:
            raise DslcError(Diagnostic("E0902", f"cannot export `{name}` to ONNX: {e}",
                                       file_name=self.unit.root.name)) from None
        onnx.checker.check_model(model, full_check=True)
        return model

    def torchscript(self, name: str, /, seed: int = 0, weights: str | None = None, *, opt: int = 0,
                    sizes: dict | None = None, params: dict | None = None, rename: dict | None = None, **keywords):
        """The model in eval mode, with its seeded weights or those of `weights`, as TorchScript: a
        runtime.deploy.Deployed whose `module` is torch.jit.script's, or torch.jit.trace's at `sizes`
        (run-time sizes such as T; B = 2 and 8 for the others by default) where torch cannot script
        it (`how` says which, `note` why)."""
        from .runtime.deploy import torchscript
        return self._deploy(torchscript, name, seed, weights, opt, sizes, model_params(params, keywords), rename)

    def exported(self, name: str, /, seed: int = 0, weights: str | None = None, *, opt: int = 0,
                 sizes: dict | None = None, params: dict | None = None, rename: dict | None = None, **keywords):
        """The model in eval mode, as torch.export.export makes it (a runtime.deploy.Deployed whose
        `module` is the ExportedProgram), with the batch and, where torch accepts it, the other
        run-time sizes dynamic (`dynamic` lists them); `sizes` are the example sizes."""
        from .runtime.deploy import exported
        return self._deploy(exported, name, seed, weights, opt, sizes, model_params(params, keywords), rename)

    def quantized(self, name: str, /, how: str, seed: int = 0, weights: str | None = None, *,
                  calibrate: str | None = None, sizes: dict | None = None, params: dict | None = None,
                  rename: dict | None = None, **keywords):
        """The model in eval mode, int8-quantized by torch.ao (runtime/compress.py) and saved as
        TorchScript (a runtime.deploy.Deployed): `how` dynamic (Linear, LSTM, GRU), or static (FX,
        Conv-BN-ReLU fused, per-channel weights) calibrated on the data-set call `calibrate`."""
        from .runtime import compress
        from .runtime.deploy import example_sizes
        params = model_params(params, keywords)
        net = self._weighted(name, seed, weights, 0, params, rename).eval()
        graph = self._graph_at(name, 0, False, params)
        if how == "dynamic":
            module = compress.dynamic_int8(net)
        else:
            module = compress.static_int8(net, self._calibration(graph, calibrate))
        return compress.scripted(module, graph, example_sizes(graph, sizes))

    def onnx_quantized(self, name: str, /, how: str, seed: int = 0, weights: str | None = None, *,
                       calibrate: str | None = None, params: dict | None = None, rename: dict | None = None,
                       **keywords):
        """The ONNX model quantized to int8 by onnxruntime.quantization: `how` dynamic, or static (QDQ,
        per-channel) calibrated on the data-set call `calibrate`; checked (onnx.ModelProto)."""
        from .runtime import compress
        params = model_params(params, keywords)
        model = self.onnx(name, seed, weights, params=params, rename=rename)
        feeds = None
        if how == "static":
            graph = self._graph_at(name, 0, False, params)
            names = [i.name for i in model.graph.input]
            feeds = [{n: t.numpy() for n, t in zip(names, batch)} for batch in self._calibration(graph, calibrate)]
        return compress.onnx_int8(model, how, feeds)

    def _calibration(self, graph, calibrate: str | None) -> list:
        from .runtime import compress
        if not calibrate:
            raise DslcError(Diagnostic("E0503", "static quantization needs calibration data",
                                       file_name=self.unit.root.name,
                                       help="name a data set: --calibrate 'digits(val=0.1)'"))
        split = compress.calibration_split(calibrate, os.path.dirname(os.path.abspath(self.path)))
        return compress.calibration_batches(split, [n for n, _ in graph.inputs])

    def _deploy(self, convert, name: str, seed: int, weights: str | None, opt: int, sizes: dict | None,
                params: dict, rename: dict | None = None):
        from .runtime.deploy import DeployError, example_sizes
        net = self._weighted(name, seed, weights, opt, params, rename)
        graph = self._graph_at(name, opt, False, params)
        try:
            return convert(net, graph, example_sizes(graph, sizes))
        except DeployError as e:
            raise DslcError(Diagnostic("E0902", f"cannot convert `{name}` for deployment: {e}",
                                       file_name=self.unit.root.name,
                                       help="the generated PyTorch (--target pytorch) runs in eager mode")) from None


ONNX_LIMIT = 2 << 30  # bytes: a protobuf message, and so an ONNX file with its weights inside


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _bytes(n: float) -> str:
    """`18.2 TiB`: a size in binary units, as the limits are given."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024


def _given(values: dict) -> str:
    """`a=true, b=false`: flags' values as the spec spells them."""
    return ", ".join(f"{p}={str(v).lower()}" for p, v in values.items())


def _first_error(error: DslcError) -> str:
    """`E0301 at rnn.dl:30: message`: the first diagnostic of an error, on one line."""
    d = error.diagnostics[0]
    where = f" at {os.path.basename(d.span.file.name)}:{d.span.line}" if d.span is not None else ""
    return f"{d.code}{where}: {d.message}"


def model_params(params: dict | None, keywords: dict) -> dict:
    """Model parameters given as a dict (`params=`) and as keywords; a name given both ways is an error."""
    if params is not None and not isinstance(params, dict):
        raise TypeError(f"params= takes a dict of model parameters, not {type(params).__name__}")
    twice = sorted(set(params or {}) & set(keywords))
    if twice:
        raise TypeError(f"model parameter `{twice[0]}` given both in params= and as a keyword")
    return {**(params or {}), **keywords}


def partial_graph(error: DslcError, name: str | None, params: dict):
    """A model's graph as far as evaluation gets, for a diagram of a spec with errors: from the
    files `load` parsed before it failed (None if they did not parse, or the model is not there)."""
    unit = getattr(error, "unit", None)
    if unit is None:
        return None
    models = unit.of_kind("model")
    decl = unit.decls.get(name) if name else (models[0] if len(models) == 1 else None)
    if decl is None or decl.kind != "model":
        return None
    args = {k: (v if isinstance(v, Arg) else Arg(v, None)) for k, v in params.items()}
    return Evaluator(unit, Reporter()).model(decl, args, partial=True)


def train(path: str, plan_name: str | None = None, options=None, out=print, warn=None) -> dict:
    """Run a training plan of the .dl file `path`, as `dslc train` does (options: a
    runtime.trainer.Options); returns result.json's content. The file's warnings, and the report of
    the weights `init` loaded, go to `warn` (default: `out`), rendered."""
    from .runtime.trainer import Options, run_plan
    options = options or Options()
    return run_plan(_loaded(path, warn or out).plan(plan_name, options.sets), path, options, out, warn)


def sample(path: str, plan_name: str | None = None, options=None, out=print, warn=None) -> dict:
    """Draw samples from a trained plan's model, as `dslc sample` does (options: a
    runtime.sample.SampleOptions); the file's warnings go to `warn` (default: `out`)."""
    from .runtime.sample import SampleOptions, draw, with_label_setting
    options = with_label_setting(options or SampleOptions())   # `--set label=K` is `--label K`
    return draw(_loaded(path, warn or out).plan(plan_name, options.sets), path, options, out)


def evaluate(path: str, plan_name: str | None = None, options=None, warn=print) -> dict:
    """A trained run's loss and metrics on one split, as `dslc eval` measures them (options: a
    runtime.evaluate.EvalOptions); notes and the file's warnings go to `warn`."""
    from .runtime.evaluate import EvalOptions
    from .runtime.evaluate import evaluate as measure
    options = options or EvalOptions()
    return measure(_loaded(path, warn).plan(plan_name, options.sets), path, options, warn)


def compress_report(path: str, plan_name: str | None = None, options=None, warn=print) -> dict:
    """A trained run's model beside its int8 variants: size, sparsity, test metrics and CPU latency
    (options: a runtime.compress_report.ReportOptions); also written to RUN/compress-report.json."""
    from .runtime.compress_report import ReportOptions, report
    options = options or ReportOptions()
    return report(_loaded(path, warn).plan(plan_name, options.sets), path, options, warn)


def predict(path: str, plan_name: str | None = None, options=None, warn=print) -> dict:
    """A trained run's predictions for a split or for files, as `dslc predict` writes them (options:
    a runtime.predict.PredictOptions); notes and the file's warnings go to `warn`."""
    from .runtime.predict import PredictOptions
    from .runtime.predict import predict as run_model
    options = options or PredictOptions()
    return run_model(_loaded(path, warn).plan(plan_name, options.sets), path, options, warn)


def lr_find(path: str, plan_name: str | None = None, options=None, out=print, warn=None) -> dict:
    """The learning-rate range test of a plan, as `dslc lr-find` runs it (options: a
    runtime.lr_find.LrFindOptions); returns what lr_find.json holds."""
    from .runtime.lr_find import LrFindOptions, sweep
    options = options or LrFindOptions()
    return sweep(_loaded(path, warn or out).plan(plan_name, options.sets), path, options, out, warn or out)


def sweep(path: str, sweep_name: str | None = None, options=None, out=print, warn=None) -> dict:
    """Run, resume or join a hyperparameter sweep of the .dl file `path`, as `dslc sweep` does
    (options: a runtime.sweep.SweepOptions); returns the summary (trials by state, the best trial)."""
    from .runtime.sweep import SweepOptions, run_sweep
    options = options or SweepOptions()
    prog = _loaded(path, warn or out)
    return run_sweep(prog.unit, path, prog.sweep_name(sweep_name), options, out)


def _loaded(path: str, warn) -> Program:
    prog = load(path)
    for w in prog.warnings:
        warn(w.render())
    return prog


def load(path: str) -> Program:
    from .frontend.check import check_unit, gc_paused
    with gc_paused():
        unit = load_unit(path)
        try:
            warnings = check_unit(unit)
        except DslcError as e:
            e.unit = unit  # parsed and resolved: what partial_graph draws from without parsing again
            raise
    return Program(unit, path, warnings)
