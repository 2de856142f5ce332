"""`dslc train`: run a checked training plan.

The plan's models and steps are generated PyTorch (backends.torch_codegen.generate_plan),
so training runs the very code `dslc compile` writes; this module only drives it:
data, optimizers, schedules, precision, checkpoints, metrics and the run directory.

Resuming is exact. Batches depend only on (seed, epoch), and every checkpoint holds the
weights, the optimizer and schedule states, the RNG state and the metrics history. A
resumed run therefore takes the same steps, and logs each epoch once, as a run that was
never stopped. Ctrl-C and SIGTERM (what schedulers send before killing a job) are honoured
between batches: the run checkpoints, then exits.

Nothing is written before everything that can be checked was: the data is read and the
models are built before the run folder is claimed, and a resumed run's plan, code and
checkpoint are compared and loaded (resume.py) before the folder changes.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field, replace

import torch

from ..backends.pymodule import exec_source
from ..backends.torch_codegen import generate_plan
from ..diagnostics import Diagnostic, DslcError
from ..frontend import ast
from ..frontend.lints import batch_sizes, last_batch_of_one
from ..frontend.settings import parse_sets
from ..ir.nesting import nest
from ..passes import optimize
from . import allocator, checkpoint, health, pruning, qat, resume, smoke
from . import data as data_mod
from . import distributed as dist
from . import fsdp as fsdp_mod
from .callbacks import AveragedWeights, Callbacks, EarlyStop, EarlyStopping, MetricsLog, ProgressDisplay, TensorBoardLogger, clip_gradients
from .checkpointing import BestWeights, PeriodicCheckpoints
from .config import TrainConfig
from .deploy import example_inputs, example_sizes
from .devices import run_device
from .metrics import MetricSet
from .optim import build_optimizer
from .queues import KeyQueues, step_queues
from .resume import check_optimizer_state
from .rundir import RunDir, RunView, render_plan
from .runlock import unusable
from .safety import DivergenceCheck, Interrupted, SignalStop
from .schedules import build_schedule
from .targets import MomentumTargets, build_targets
from .weights import load_by_name, read_state, renamed, report_table

STANDARDIZE_FILE = "standardize.json"   # a run's `standardize` figures, which eval and predict apply


@dataclass
class Options:
    out: str | None = None
    resume: bool = False
    sets: tuple = ()
    device: str | None = None
    progress: bool | None = None     # None: a progress bar when stdout is a terminal
    max_epochs: int | None = None    # stop after this many epochs of this invocation (tests, smoke runs)
    fast_dev_run: bool = False       # one batch of each split, one epoch of each phase, nothing kept (smoke.py)
    watch: bool = True               # health checks (health.py); off: no hooks at all
    callbacks: tuple = ()            # more callbacks.Callback, after metrics.jsonl's (a sweep's trial report)
    nproc_per_node: int | None = None   # data-parallel processes on this machine (None: the plan's `devices`)
    nnodes: int = 1                  # machines of a data-parallel run
    node_rank: int = 0               # this machine's index among them
    rdzv_endpoint: str | None = None  # HOST:PORT where the machines meet (torchrun's c10d rendezvous)


@dataclass
class PhaseSpec:
    name: str | None
    epochs: int
    batch_size: int
    optimizers: dict          # step name -> PlanCall
    schedule: object          # PlanCall | None
    prunes: list = field(default_factory=list)    # frontend.plans.Prune, applied as the phase starts
    quantize: object = None                       # frontend.plans.Quantize: fake quantization from its start


@dataclass
class StepRun:
    name: str
    module: torch.nn.Module
    models: list              # plan names of the models it runs
    trains: set = field(default_factory=set)       # plan names of the models its optimizer updates
    params: list = field(default_factory=list)     # the parameters its optimizer updates
    optimizer: object = None
    schedule: object = None
    loss_span: object = None
    ddp: object = None        # its DistributedDataParallel wrapper in a data-parallel run (None: one process)
    unreached: list = field(default_factory=list)  # FSDP under torch.compile: the parameters its loss leaves out


# ---------------------------------------------------------------------------- entry point

def run_plan(plan, path: str, options: Options, out=print, warn=None) -> dict:
    """Run the checked plan `plan` of the .dl file `path` (`dslc.api.train` loads and checks
    it); returns result.json's content. Reports and warnings go to `warn` (default: `out`).
    With several processes asked for (`options.nproc_per_node`, `nnodes`, or the plan's `devices`),
    torchrun runs `dslc train` in each of them and this returns rank 0's result."""
    launch = dist.Launch(options.nproc_per_node or TrainConfig.of(plan).devices, options.nnodes, options.node_rank,
                         options.rdzv_endpoint)
    if launch.wanted and not dist.in_worker():
        return dist.launch(launch, worker_args(plan.name, path, options), out, warn)
    return Trainer(plan, path, options, out, warn).run()


def worker_args(plan_name: str, path: str, options: Options) -> list[str]:
    """The `dslc train` command line each process runs (what the command line can say of `options`)."""
    args = [path, "--plan", plan_name]
    args += ["--out", options.out] if options.out else []
    args += ["--resume"] if options.resume else []
    args += [a for s in options.sets for a in ("--set", s)]
    args += ["--device", options.device] if options.device else []
    args += [] if options.progress is None else ["--progress" if options.progress else "--no-progress"]
    args += ["--fast-dev-run"] if options.fast_dev_run else []
    args += ["--max-epochs", str(options.max_epochs)] if options.max_epochs is not None else []
    return args + ["--watch", "on" if options.watch else "off"]


class Diverged(Exception):
    pass


def plan_source(plan, path: str) -> str:
    """The generated PyTorch of a plan: its models with the passes of the plan's `optimize` level
    (1 unless it says 0; -O2 is for inference only), then one class per step."""
    opt = TrainConfig.of(plan).optimize
    graphs = {key: optimize(graph, opt).graph if opt else graph for key, (_d, _a, graph) in plan.models.items()}
    return generate_plan(plan, os.path.basename(path), graphs)


def plan_module(plan, source: str):
    """The module of a plan's generated source (its MODELS, STEPS and STEP_MODELS); tracebacks name it
    `<dslc plan NAME>`."""
    return exec_source(source, f"<dslc plan {plan.name}>")


class Trainer:
    def __init__(self, plan, path: str, options: Options, out, warn=None):
        self.world = dist.World.from_env()   # the processes of a data-parallel run (one otherwise); rank 0 speaks
        self.plan, self.path, self.options, self.out = plan, path, options, out if self.world.main else dist.quiet
        self.warn = (warn or self.out) if self.world.main else dist.quiet   # the weights report, warnings
        self.init_reports: dict = {}      # model key -> what `init` loaded (weights_report.json)
        self.config = TrainConfig.of(plan)
        self.seed = self.config.seed
        self.base_dir = os.path.dirname(os.path.abspath(path))
        self.device = self.world.device(run_device(options.device))
        # Everything a run holds, set by run() and its set-up steps (None until then).
        self.phases: list = []            # PhaseSpec per phase (one when the plan has none)
        self.phase_index = None           # the phase being trained
        self.precision = "fp32"
        self.data = None                  # data_mod.Data: the splits
        self.task = "regression"          # classification when the targets are class ids
        self.source = ""                  # the plan's generated PyTorch (plan.py)
        self.models: dict = {}            # plan key -> module
        self.targets, self.queues = {}, {}   # MomentumTarget by key (`ema(...)`), KeyQueue by "step.name" (`queue(...)`)
        self.steps: list = []             # StepRun per step
        self.batch_fields: list = []      # the batch fields a step takes, in order
        self.several = False              # several models (GANs, distillation)
        self.has_prediction = False       # one step with a model output to score
        self.frozen_modules: list = []    # modules kept in eval mode (frozen layers)
        self.scaler = None                # GradScaler under fp16
        self.rundir = None
        self.history: list = []           # one record per epoch run
        self.position = (0, 0)            # (epochs done, batches done in the next)
        self.epoch, self.epoch_batches = 0, 0   # the epoch being trained (1-based) and its number of batches
        self.stopped_early = False        # set by early stopping (or read from the checkpoint)
        self.saved = None                 # the checkpoint written after the last epoch, if one was
        self.partial = None               # loss sums of an epoch interrupted mid-way
        self.resume_tensors = None        # optimizer tensors read from the checkpoint
        self.last_confusion = None        # the last evaluation's confusion matrix
        self.best_weights = None          # checkpointing.BestWeights
        self.carried = None               # `state = hidden`: the training state after the last batch (detached)
        self.train_metrics = None         # `train_metrics`: the metrics of the epoch's training batches so far
        self.fast = False                 # a fast dev run (smoke.py): quiet about the folder it deletes
        # What happens around the loop without changing it: TensorBoard and the progress display
        # here; run() puts the callbacks that keep the run's state around them (_callbacks).
        self.callbacks = Callbacks([TensorBoardLogger(), ProgressDisplay(options.progress, self.out)] * self.world.main)

    @property
    def fsdp(self) -> bool:
        """`strategy = fsdp` in several processes: the models' weights are sharded (fsdp.py)."""
        return self.config.strategy == "fsdp" and self.world.size > 1

    # ------------------------------------------------------------------ set-up

    def run(self) -> dict:
        allocator.keep_freed_memory()   # each step reuses the last one's memory instead of faulting it in anew
        self.world.start(self.device)
        try:
            result = self._fast_dev_run() if self.options.fast_dev_run else self._run()
        except RuntimeError as e:   # another process died or hung
            if self.world.size > 1 and dist.lost_contact(e):
                raise dist.lost_peer(e) from None
            raise
        except Interrupted as e:   # the launcher says where the checkpoint is
            if self.world.main:
                dist.report_result({"interrupted": e.path, "signal": e.signum})
            raise
        finally:
            self.world.stop()
        if self.world.main:
            dist.report_result(result)
        return result

    def _open_rundir(self, resume: bool, checkpoints: bool = True) -> RunDir:
        """Rank 0 claims (or reopens) the run folder; the other processes read it, never write it."""
        if self.world.main:
            try:
                rundir = RunDir.open(self.plan.name, self.options.out, resume, checkpoints=checkpoints)
            except DslcError:
                self.world.share(None)
                raise
            self.world.share(rundir.path)
            return rundir
        path = self.world.share(None)
        if path is None:
            raise DslcError(Diagnostic("E0609", f"rank {self.world.rank}: rank 0 could not open the run folder "
                                       "(its message says why)"))
        return RunView(path)

    def _fast_dev_run(self) -> dict:
        """One batch of each split and one epoch of each phase, in a folder deleted at the end."""
        if self.options.resume:
            raise DslcError(Diagnostic("E0606", "a fast dev run starts afresh and keeps nothing: it cannot resume",
                                       self.plan.decl.name_span, help="leave out --resume or --fast-dev-run"))
        with tempfile.TemporaryDirectory(prefix="dslc-fast-dev-run-") as folder:
            self.options = replace(self.options, out=os.path.join(folder, "run"), fast_dev_run=False)
            self.fast = True
            result = self._run()
        test = "".join(f", {k} {v:.4g}" for k, v in result.get("test", {}).items())
        self.out(f"fast dev run of `{self.plan.name}`: ok (one batch of each split" +
                 (f": test{test}" if test else "") + ", one epoch of each phase); nothing was written")
        return dict(result, fast_dev_run=True)

    def _run(self) -> dict:
        self.phases = self._phases()
        self._check_precision()
        self._load_data()
        self._smoke_data()
        data_mod.check_requirements(self.plan, self.data, [p.batch_size for p in self.phases])
        if not isinstance(self.data.train, data_mod.Stream):   # a stream's batches are all full
            for d in last_batch_of_one(self.plan, data_mod.examples(self.data.train), batch_sizes(self.plan)):
                self.warn(d.render())
        self._build()
        if self.plan.evaluation:
            return self._evaluation_run()
        self._callbacks()
        self._announce()
        self.rundir = self._open_rundir(self.options.resume)
        try:
            self._resume() if self.options.resume else self._start_run()
            if not self.fast:
                self.out(f"run directory: {self.rundir.path}")
            return self._loop()
        except OSError as e:   # a full disk, a folder made read-only under a running job
            raise unusable(self.rundir.path, e) from None
        finally:
            self.rundir.close()

    def _evaluation_run(self) -> dict:
        """A plan whose steps have no optimizer: its loss and metrics on every split, in inference mode.
        Nothing trains, so there are no epochs, checkpoints or curves: plan.dl, plan.py and result.json
        (and confusion.png for a classifier)."""
        if self.options.resume:
            raise DslcError(Diagnostic("E0606", f"the plan `{self.plan.name}` evaluates (no step has an optimizer): "
                                       "there is no training to resume", self.plan.decl.name_span,
                                       help="run it again without --resume"))
        self.rundir = self._open_rundir(False, checkpoints=False)
        try:
            self._start_run()
            if not self.fast:
                self.out(f"run directory: {self.rundir.path}")
            result = {"plan": self.plan.name, "evaluation": True}
            for name in ("train", "val", "test"):
                split = getattr(self.data, name)
                if split is not None:
                    result[name] = self.evaluate(split, self.phases[0].batch_size)
                    self.out(f"{name}: " + "  ".join(f"{k} {v:.4f}" for k, v in result[name].items()))
            self.rundir.write_json("result.json", result)
            if self.last_confusion is not None and self.task == "classification":
                self.rundir.confusion(self.last_confusion, self.data.meta.get("class_names"))
            if not self.fast:
                self.out(f"done: evaluated; results in {self.rundir.path}")
            return result
        except OSError as e:
            raise unusable(self.rundir.path, e) from None
        finally:
            self.rundir.close()

    def _load_data(self) -> None:
        try:
            self.data = data_mod.load(self.plan.data.entry.name, dict(self.plan.data.args),
                                      base_dir=getattr(self.plan.data, "base_dir", None) or self.base_dir,
                                      lazy=self.config.workers is not None)
        except data_mod.DataError as e:
            raise DslcError(Diagnostic(getattr(e, "code", "E0508"), str(e), self.plan.data.span)) from None
        for note in self.data.meta.get("notes", ()):
            self.out(f"note: {note}")
        train = self.data.train
        y = train.tokens if isinstance(train, data_mod.Stream) else train.get("y")
        # integer targets are classes (digits' labels, shakespeare's next characters); floats are values
        self.task = "classification" if y is not None and not data_mod.floating(y) else "regression"
        # `standardize`: the training split's figures, measured once (a run keeps them: STANDARDIZE_FILE)
        self.augment = data_mod.resolved(self.config.augment, self.data.train, classes=self.data.meta.get("classes"))

    def standardize_stats(self) -> dict | None:
        """The figures `standardize` applies ({"mean", "std"}, per channel), or None without it."""
        return next(({"mean": a["mean"], "std": a["std"]} for name, a in self.augment if name == "standardize"), None)

    def use_standardize_stats(self, stats: dict) -> None:
        """Apply a run's stored `standardize` figures rather than those measured now."""
        self.augment = data_mod.resolved(self.config.augment, None, stats, self.data.meta.get("classes"))

    def _smoke_data(self) -> None:
        """A fast dev run's one batch per split, or `overfit_batches`' first training batches."""
        batch_size = self.phases[0].batch_size
        if self.fast:
            self.data = smoke.fast_dev_data(self.data, batch_size)
            self.phases = [replace(p, epochs=1) for p in self.phases]
        elif self.config.overfit_batches:
            self.data = smoke.overfit_data(self.data, batch_size, self.config.overfit_batches)

    def _start_run(self) -> None:
        """A new run's folder: plan.dl first (it marks the folder as a run), then the models' code."""
        self.rundir.write_plan(self.plan, self.path)
        self.rundir.write_text("plan.py", self.source)
        if self.data.meta.get("tokenizer"):   # `text(...)`: what `dslc sample` encodes and decodes with
            self.rundir.write_text("tokenizer.json", self.data.meta["tokenizer"])
        stats = self.standardize_stats()
        if stats is not None:
            self.rundir.write_json(STANDARDIZE_FILE, stats)
        if self.init_reports:
            self.rundir.write_json("weights_report.json", self.init_reports)

    def _phases(self) -> list[PhaseSpec]:
        plan, c = self.plan, self.config
        base_opts = {s.name: s.optimizer for s in plan.steps}
        if not plan.phases:
            return [PhaseSpec(None, c.epochs, c.batch_size, base_opts, c.schedule)]
        out = []
        for p in plan.phases:
            opts = dict(base_opts)
            if "optimizer" in p.fields:
                if len(plan.steps) > 1:
                    raise DslcError(Diagnostic("E0502", "a phase's `optimizer` applies to plans with one step; "
                                               "this plan has several", p.span))
                opts = {plan.steps[0].name: p.fields["optimizer"]}
            out.append(PhaseSpec(p.name, int(p.fields.get("epochs", c.epochs or 1)),
                                 int(p.fields.get("batch_size", c.batch_size)), opts,
                                 p.fields.get("schedule", c.schedule), list(p.prunes), p.quantize))
        return out

    def _check_precision(self) -> None:
        precision = self.config.precision
        if precision == "fp16" and self.device.type != "cuda":
            raise DslcError(Diagnostic("E0302", "fp16 training needs a CUDA device; on the CPU use `precision = bf16`",
                                       _field_span(self.plan, "precision")))
        self.precision = precision

    def _build(self, init: bool = True) -> None:
        source = plan_source(self.plan, self.path)
        self.source = source   # written to the run's plan.py once the run folder is claimed
        module = plan_module(self.plan, source)
        torch.manual_seed(self.seed)   # the same initial weights as `dslc compile --seed`
        self.models = {k: cls().to(self.device) for k, cls in module.MODELS.items()}
        if init:
            self._init_weights()
        if self.config.sync_batchnorm and self.world.size > 1:
            self._sync_batchnorm()
        self.batch_fields = [n[len("batch_"):] for n, _ in self.plan.steps[0].graph.inputs if n.startswith("batch_")]
        unreached = self._unreached(module) if self.fsdp and self.config.compile else {}
        if self.fsdp:   # after `init`: every process shards the same weights
            for m in self.models.values():
                fsdp_mod.shard(m)
        self.targets = build_targets(self.plan, self.models)   # copies of the weights as training starts
        if self.world.rank:   # the same initial weights everywhere, but each process its own noise and dropout
            torch.manual_seed(self._rank_seed(0))
        self.steps, self.queues = [], {}
        for step in self.plan.steps:
            names = module.STEP_MODELS[step.name]
            mod = self._step_module(module, step.name)
            self.queues.update(step_queues(self.plan, step.name, mod, self.device))
            if self.config.compile:
                mod = torch.compile(mod)
            self.steps.append(StepRun(step.name, mod, [m for m in names if m in self.models], loss_span=step.span,
                                      unreached=[self._parameter(n) for n in unreached.get(step.name, ())]))
        self.several = len(self.models) > 1
        self.has_prediction = len(self.plan.steps) == 1 and self.plan.steps[0].prediction is not None
        if self.config.metrics and not self.has_prediction:
            raise DslcError(Diagnostic("E0502", "metrics need a plan with one model whose `out` is one tensor",
                                       _field_span(self.plan, "metrics")))

    def _step_module(self, module, name: str) -> torch.nn.Module:
        """The plan module's step `name` over the trainer's models and momentum targets."""
        return module.STEPS[name](*[self.models[m] if m in self.models else self.targets[m].module
                                    for m in module.STEP_MODELS[name]])

    def _unreached(self, module) -> dict:
        """Step name -> the names ("model.fc.weight") of the parameters its loss does not reach, found
        on the whole models, before they are sharded. Under FSDP, torch.compile's backward pass gives
        them gradients of zeros (torch 2.13) where torch gives none, which weight decay and Adam's
        state would count as gradients: `_optimizer_step` drops them, so the run trains as uncompiled."""
        out = {}
        for step in self.plan.steps:
            s = StepRun(step.name, self._step_module(module, step.name),
                        [m for m in module.STEP_MODELS[step.name] if m in self.models])
            named = [(f"{k}.{n}", p) for k in s.models for n, p in self.models[k].named_parameters()]
            s.params = [p for _, p in named]   # a step with parameters to train keeps its graph (_forward)
            grads = self._probe_gradients(s, s.params, self.phases[0].batch_size)
            out[step.name] = [n for (n, _), g in zip(named, grads) if g is None]
        return out

    def _parameter(self, name: str) -> torch.nn.Parameter:
        key, rest = name.split(".", 1)
        return self.models[key].get_parameter(rest)

    def _rank_seed(self, epoch: int) -> int:
        """The seed of a process other than rank 0 (rank 0 draws as one process does)."""
        return int(data_mod.generator(self.seed, epoch, self.world.rank, 1 << 20).initial_seed())

    def _sync_batchnorm(self) -> None:
        """`sync_batchnorm = true`: batch norm over the batch of all processes (state dicts keep their names)."""
        if self.device.type != "cuda":
            raise DslcError(Diagnostic("E0302", "`sync_batchnorm` needs GPUs: torch's SyncBatchNorm runs on CUDA "
                                       "only", _field_span(self.plan, "sync_batchnorm"),
                                       help="leave it out on the CPU: each process then normalizes its own batch"))
        self.models = {k: torch.nn.SyncBatchNorm.convert_sync_batchnorm(m) for k, m in self.models.items()}

    def _announce(self) -> None:
        """A data-parallel run's processes and the effective batch (batch_size is per process)."""
        if self.world.size > 1:
            sizes = sorted({p.batch_size for p in self.phases})
            self.out(f"data-parallel: {self.world.size} processes ({self.world.backend}), batch_size "
                     f"{'/'.join(map(str, sizes))} per process, an effective batch of "
                     f"{'/'.join(str(b * self.world.size) for b in sizes)}" +
                     ("; FSDP: weights, gradients and optimizer state sharded" if self.fsdp else ""))

    def setup(self, init: bool = True) -> None:
        """What `run` prepares before it claims a run folder: the phases, the precision, the data,
        the models (with the plan's `init` weights unless `init=False`) and the steps. The commands
        that use a plan without training it (`dslc eval`, `predict`, `lr-find`) start here."""
        self.phases = self._phases()
        self._check_precision()
        self._load_data()
        data_mod.check_requirements(self.plan, self.data, [p.batch_size for p in self.phases])
        self._build(init)

    def _init_weights(self) -> None:
        """`init`: load each model's weights by name (after `rename`); the reports go to stderr now and
        to the run's weights_report.json once its folder is claimed."""
        init = self.config.init
        if not init:
            return
        span = _field_span(self.plan, "init")
        targets = init if isinstance(init, dict) else {k: init for k in self.models}
        applied = set()
        for key, file in targets.items():
            path = _resolve(file, self.base_dir)
            if path is None:
                raise DslcError(Diagnostic("E0901", f"`init`: no such file: {file}", span,
                                           help="train the plan that writes it first, or fix the path "
                                                "(relative to the current directory or to the .dl file)"))
            state = read_state(path, span)
            rules = self.config.rename
            if len(self.models) > 1 and not isinstance(init, dict):
                moved = renamed(state, rules, path, span)   # one file for all: names are `G.fc.weight`
                applied |= moved.applied
                state, rules = checkpoint.under(moved.state, key + "."), {}
            report = load_by_name(self.models[key], state, path, rules, skip_mismatched=self.config.skip_mismatched,
                                  key=key if len(self.models) > 1 else None, span=span)
            applied |= set(rules) - set(report["rules_that_matched_nothing"])
            self.init_reports[key] = dict(report, rename=dict(self.config.rename))
            self.warn(report_table(report))
        self._unmatched_rules(applied, targets)

    def _unmatched_rules(self, applied: set, targets: dict) -> None:
        """W0601 for each rename rule that no name of any `init` file falls under (a typo, most likely)."""
        stmt = next((s for s in self.plan.decl.body if isinstance(s, ast.AssignStmt) and len(s.targets) == 1 and
                     isinstance(s.targets[0], ast.Name) and s.targets[0].id == "rename"), None)
        spans = dict(zip(stmt.value.keys, stmt.value.key_spans)) if stmt is not None and \
            isinstance(stmt.value, ast.DictExpr) else {}
        files = ", ".join(dict.fromkeys(str(f) for f in targets.values()))
        for rule in self.config.rename:
            if rule not in applied:
                self.warn(Diagnostic("W0601", f"the rename rule {rule!r} matches no name in {files}",
                                     spans.get(rule, _field_span(self.plan, "rename")), label="matches nothing",
                                     severity="warning").render())

    def _callbacks(self) -> None:
        """The callbacks that keep the run's state, around those that only watch it: the best weights
        are chosen before early stopping decides, which comes before the checkpoint that records both,
        then metrics.jsonl; a signal stops the run last, once the epoch is recorded."""
        c = self.config
        self.best_weights = BestWeights(self._monitor(c.best_monitor), len(self.plan.steps) > 1)
        state = [self.best_weights]
        if c.early_stopping is not None:
            args = c.early_stopping
            rule = EarlyStopping(self._monitor(args["monitor"]), int(args["patience"]), args["mode"],
                                 float(args["min_delta"]), bool(args["restore_best"]))
            state.append(EarlyStop(rule, self.best_weights))
        state += [PeriodicCheckpoints(int(c.checkpoint["every"]), int(c.checkpoint["keep"])), MetricsLog(),
                  DivergenceCheck()]
        if c.ema:
            state.append(AveragedWeights(self.models, c.ema))
        state += self.step_followers()
        if self.options.watch:   # first: the epoch's record gets its numbers before anything keeps it
            graphs = {k: graph for k, (_d, _a, graph) in self.plan.models.items()}
            state.insert(0, health.HealthWatch(health.spec_layers(graphs), self.models, c.log_every,
                                               health.Warnings(self.warn)))
        self.callbacks.items = state + list(self.options.callbacks) + self.callbacks.items + [SignalStop()]

    def step_followers(self) -> list:
        """The callbacks that move, after each optimizer step, what the next step's loss reads besides the
        weights: the momentum targets (`ema(...)` in a step) and the queues of keys (`queue(...)`).
        Training runs them, and so does `dslc lr-find`, so that its sweep trains as the plan does."""
        out = []
        if self.targets:
            out.append(MomentumTargets(self.plan, self.targets))
        if self.queues:
            out.append(KeyQueues(self.queues, self.world))
        return out

    def _monitor(self, name: str) -> str:
        if name.startswith("val_") and self.data.val is None:
            return "train_loss" if name == "val_loss" else name   # no validation split: watch training loss
        return name

    # ------------------------------------------------------------------ freezing and optimizers

    def _start_phase(self, index: int, started: bool = False) -> None:
        """Set up phase `index`: its pruning (unless it had `started` before a resumed checkpoint, whose
        masks are loaded), freezes, optimizers and schedules."""
        phase = self.phases[index]
        self.phase_index = index
        if phase.prunes and not started:
            pruning.apply(self.models, phase.prunes)
        if phase.quantize is not None and not qat.is_prepared(self.models[phase.quantize.path[0]]):
            self.quantize_models()   # a resumed checkpoint of this phase was loaded into a prepared model
        self.frozen_modules = self._freeze(phase)
        per_epoch = data_mod.steps_per_epoch(self.data.train, phase.batch_size, self.world.size)
        accumulate = self.config.accumulate
        opt_steps = max(1, math.ceil(per_epoch / accumulate))
        for s in self.steps:
            call = phase.optimizers[s.name]
            if call is None:   # an evaluation step: it measures its loss, and trains nothing
                s.params, s.optimizer, s.schedule, s.trains = [], None, None, set()
                continue
            names = [self.plan.model_name(t) for t in call.targets] or s.models
            s.trains = set(names)
            named = [(f"{k}.{n}" if len(self.models) > 1 else n, p)
                     for k in dict.fromkeys(names) for n, p in self.models[k].named_parameters() if p.requires_grad]
            s.params = [p for _, p in named]
            args = {k: v for k, v in call.args.items() if k != "lr_mult"}
            lr_mult = call.args.get("lr_mult")
            if lr_mult and len(self.models) > 1 and len(call.targets) == 1:
                lr_mult = {f"{names[0]}.{k}": v for k, v in lr_mult.items()}   # keys relative to that model
            s.optimizer = build_optimizer(call.entry.name, args, named, lr_mult) if named else None
            sched = phase.schedule
            s.schedule = build_schedule(sched.entry.name if sched else None, dict(sched.args) if sched else {},
                                        s.optimizer, steps_per_epoch=opt_steps, epochs=phase.epochs) \
                if s.optimizer is not None else None
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        for s in self.steps:
            s.ddp = self._data_parallel(s)

    def _quantizing(self):
        """The plan's `quantize(...)` statement (in its last phase), or None."""
        return self.phases[-1].quantize if self.phases else None

    def quantize_models(self) -> None:
        """Put the prepared (fake-quantized) model in the place of the plan's model, steps included."""
        q = self._quantizing()
        key = q.path[0]
        if self.device.type != "cpu":
            raise DslcError(Diagnostic("E0902", f"`quantize` runs on the CPU (torch's int8 kernels do), not on "
                                       f"{self.device}", q.span, help="train this plan with --device cpu"))
        graph = self.plan.models[key][2]
        old = self.models[key]
        self.models[key] = qat.prepare(old, q.backend, example_inputs(graph, example_sizes(graph)))
        for s in self.steps:
            _replace_child(s.module, old, self.models[key])

    def _data_parallel(self, s: StepRun):
        """The step under DistributedDataParallel, syncing the gradients of the parameters its optimizer
        updates and of no others (a GAN's other model, a frozen teacher, a phase's frozen layers), so that
        each backward pass fills exactly the gradients DDP waits for. Built again at each phase, as
        freezing changes which parameters train."""
        s.ddp = None   # the last phase's: finding unused parameters runs the step itself
        if self.world.size <= 1 or not s.params or self.fsdp:   # FSDP's hooks are on the models themselves
            return None
        own = {id(p) for p in s.params}
        ignored = [n for n, p in s.module.named_parameters() if id(p) not in own]
        return dist.data_parallel(s.module, self.device, ignored, self.unused_parameters(s))

    def unused_parameters(self, s: StepRun) -> bool:
        """Whether some parameters the step trains get no gradient from its loss (a head the loss does
        not use). DDP must then look for them after every forward (`find_unused_parameters`, a walk of
        the graph), so it is asked to only then. Found by one forward on the first batch, in inference
        mode (batch norm's statistics stay as they are), the random streams put back afterwards."""
        grads = self._probe_gradients(s, s.params, self.phases[self.phase_index].batch_size)
        return any(g is None for g in grads)

    def _probe_gradients(self, s: StepRun, params: list, batch_size: int) -> list:
        """The gradients of `params` from the step's loss on the first batch (None for a parameter the
        loss does not reach), in inference mode, with the random streams put back afterwards."""
        batch = next(iter(data_mod.batches(self.data.train, batch_size, shuffle=False, seed=self.seed, epoch=0,
                                           train=False, rank=self.world.rank, world=self.world.size)))
        inputs = [batch[f].to(self.device) for f in self.batch_fields]
        rng = torch.get_rng_state()
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        modes = [(m, m.training) for m in s.module.modules()]
        s.module.eval()
        try:
            with torch.enable_grad():
                loss = self._carry(s, inputs, None)[0][0]
            if not loss.requires_grad:
                return [None] * len(params)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        finally:
            for m, training in modes:
                m.training = training
            torch.set_rng_state(rng)
            if cuda is not None:
                torch.cuda.set_rng_state(cuda, self.device)
        return list(grads)

    def _sync_buffers(self) -> None:
        """Rank 0's buffers (batch norm's running statistics) in every process, so that evaluation,
        and what rank 0 saves, are the same everywhere."""
        if self.world.size <= 1:
            return
        for m in self.modules():
            for b in m.buffers():
                torch.distributed.broadcast(b, 0)

    def _freeze(self, phase: PhaseSpec) -> list:
        """Apply the freeze rules in force during `phase`; the modules left with no trainable parameter."""
        frozen_modules = []
        for key, model in self.models.items():
            rules = self.plan.freeze_rules(key, phase.name)
            for p in model.parameters():
                p.requires_grad_(True)
            for path, freeze in rules:
                sub = model.get_submodule(path) if path else model
                for p in sub.parameters():
                    p.requires_grad_(not freeze)
            frozen_modules += [m for m in model.modules()
                               if any(True for _ in m.parameters()) and not any(p.requires_grad for p in m.parameters())]
        return frozen_modules

    # ------------------------------------------------------------------ the loop

    def _epoch_ends(self) -> list[int]:
        """The epoch count at the end of each phase."""
        ends, acc = [], 0
        for p in self.phases:
            acc += p.epochs
            ends.append(acc)
        return ends

    def _phase_at(self, epoch: int) -> int:
        """The index of the phase that runs epoch `epoch + 1`."""
        return next(i for i, end in enumerate(self._epoch_ends()) if epoch < end)

    def _loop(self) -> dict:
        start_epoch, skip = self.position
        total = self._epoch_ends()[-1]
        self.callbacks.on_fit_start(self)
        try:
            for epoch in range(start_epoch + 1, total + 1):
                if self.stopped_early:
                    break
                if self.phase_index != self._phase_at(epoch - 1):
                    self._start_phase(self._phase_at(epoch - 1))
                record = self._epoch(epoch, total, skip)
                skip = 0
                self._end_epoch(record, total)
                if self._pause_due(epoch - start_epoch, epoch, total):
                    return {"paused_after": epoch}
            pruning.make_permanent(self.models)   # a run stopped early inside a pruning phase
        finally:
            self.callbacks.on_fit_end(self)
        return self._finish()

    def _end_epoch(self, record: dict, total: int) -> None:
        self.history.append(record)
        self.position = (record["epoch"], 0)
        if record["epoch"] == self._epoch_ends()[self.phase_index]:
            pruning.make_permanent(self.models)   # the phase's pruning, for good: checkpoints have plain weights
        for s in self.steps:
            if s.schedule is not None:
                s.schedule.after_epoch(record)
        self.callbacks.on_epoch_end(self, record, total)

    def _pause_due(self, run_epochs: int, epoch: int, total: int) -> bool:
        """`--max-epochs` (tests, smoke runs): after that many epochs of this invocation, checkpoint and stop."""
        if self.options.max_epochs is None or run_epochs < self.options.max_epochs or epoch >= total \
                or self.stopped_early:
            return False
        if self.saved is None:
            self.save_checkpoint(epoch, 0)
        return True

    def _epoch(self, epoch: int, total: int, skip: int) -> dict:
        # long: the batch loop with gradient accumulation, and the epoch's record
        phase = self.phases[self.phase_index]
        self._step_modes(True)
        for m in self.modules():
            m.train()
        for m in self.frozen_modules:
            m.eval()   # frozen layers run as at inference (batch norm keeps its statistics), as in Keras
        accumulate = self.config.accumulate
        sums = {s.name: 0.0 for s in self.steps}
        count = 0
        self.train_metrics = self.metric_set() if self.config.train_metrics else None
        if skip and self.partial and self.world.main:   # the sums so far are all processes' together
            sums, count = dict(self.partial["sums"]), self.partial["count"]
            if self.train_metrics is not None and self.partial.get("metrics"):
                self.train_metrics.load_state(self.partial["metrics"], self.device)
        if not skip:
            self.carried = None   # each epoch starts from zeros; a resumed one from the checkpoint's state
        started = time.perf_counter()
        n_batches = data_mod.steps_per_epoch(self.data.train, phase.batch_size, self.world.size)
        self.epoch, self.epoch_batches = epoch, n_batches
        self.callbacks.on_epoch_start(self, epoch, total, n_batches)
        smoke_test = bool(self.config.overfit_batches)   # the same batches each epoch, in order, not augmented
        batches = self._loader(self.data.train, phase.batch_size, start=skip, shuffle=not smoke_test, seed=self.seed,
                               epoch=epoch, augment=self.augment, train=not smoke_test,
                               rank=self.world.rank, world=self.world.size)
        # a batch of a small model takes a millisecond: what the loop reads at every batch is read here once
        move = self.device.type != "cpu"   # batches are made on the CPU; `to` takes microseconds even when idle
        fields, fsdp, callbacks = self.batch_fields, self.fsdp, self.callbacks
        for b, batch in enumerate(batches, start=skip):
            inputs = [batch[f].to(self.device, non_blocking=True) for f in fields] if move else [batch[f] for f in fields]
            n = inputs[0].shape[0]
            callbacks.on_train_batch_start(self, b + 1)
            update = (b + 1) % accumulate == 0 or b + 1 == n_batches   # the batch ends in an optimizer step
            for s in self.steps:
                if fsdp:   # gradients stay whole and add up until the batch of an optimizer step
                    self._gradient_sync(s, update)
                # `graph` (the step's results) lives until the next batch's forward pass: while the last graph
                # is there, torch reuses the parameters' gradient accumulators instead of making new ones
                if s.ddp is not None and not update:
                    # DDP averages the gradients at the backward pass of a batch that ends in an optimizer step
                    with s.ddp.no_sync():
                        value, graph = self._step_batch(s, inputs, batch, b + 1)
                else:
                    value, graph = self._step_batch(s, inputs, batch, b + 1)
                sums[s.name] += value * n
                if update:
                    self._optimizer_step(s)
            count += n
            callbacks.on_train_batch_end(self, b + 1, sums, count)
        sums, count = self._total(sums, count)
        self._sync_buffers()
        record = {"epoch": epoch}
        record["train_loss"] = sum(sums.values()) / max(count, 1)
        if self.train_metrics is not None:
            record.update({f"train_{k}": v for k, v in self.train_metrics.compute().items()})
        if len(self.steps) > 1:
            for s in self.steps:
                record[f"{s.name}_loss"] = sums[s.name] / max(count, 1)
        if self.data.val is not None:
            record.update({f"val_{k}": v for k, v in self.evaluate(self.data.val, phase.batch_size).items()})
        record["lr"] = self._lr()
        record["seconds"] = round(time.perf_counter() - started, 4)
        if self.phases[self.phase_index].name is not None:
            record["phase"] = self.phases[self.phase_index].name
        self.partial = None
        return record

    def _step_batch(self, s: StepRun, inputs: list, batch: dict, done: int) -> tuple[float, tuple]:
        """Step `s`'s forward and backward passes on batch `done` (1-based) of the epoch: its loss's value, and
        its results (the loss first)."""
        if self.plan.state is None:
            result = self._forward(s, inputs)
        else:
            result, self.carried = self._carry(s, inputs, self.carried)
        loss = result[0]
        value = loss.item()
        if self.train_metrics is not None and len(result) > 1:
            self.train_metrics.update(*_per_example(result[1].detach().float(), _class_ids(batch).to(self.device)))
        self.callbacks.on_train_step_end(self, s, done, value)
        accumulate = self.config.accumulate
        scaled = loss / accumulate if accumulate > 1 else loss
        if s.params:
            scaled = self.scaler.scale(scaled) if self.scaler else scaled
            # with several models, gradients go only to this step's own parameters
            scaled.backward(inputs=s.params) if self.several else scaled.backward()
        return value, result

    def _gradient_sync(self, s: StepRun, sync: bool) -> None:
        for k in s.trains:
            fsdp_mod.set_gradient_sync(self.models[k], sync)

    def _total(self, sums: dict, count: int) -> tuple[dict, int]:
        """The loss sums and example count of all processes (and their training metrics)."""
        if self.world.size <= 1:
            return sums, count
        names = list(sums)
        *values, total = self.world.sums([sums[k] for k in names] + [count], self.device)
        if self.train_metrics is not None:
            self.train_metrics.load_state(_merged(self.world.gather(self.train_metrics.state())), self.device)
        return dict(zip(names, values)), int(total)

    def _carry(self, s: StepRun, inputs: list, carried):
        """The step on a batch, given the state carried from the batch before (`state = hidden`;
        zeros for the first): its results, and the state it returns, detached, so that the next
        batch's backward pass stops there (truncated BPTT)."""
        state = self.plan.state
        if state is None:
            return self._forward(s, inputs), None
        if carried is None:
            carried = nest(state.structure, [torch.zeros([inputs[0].shape[0] if d is None else d for d in shape],
                                                         dtype=getattr(torch, dtype), device=self.device)
                                             for _, shape, dtype in state.leaves])
        result = self._forward(s, inputs + [carried])
        return result[:-1], _detached(result[-1])

    def _forward(self, s: StepRun, inputs: list):
        try:
            if s.params and not self.mixed_precision:   # fp32 training, the usual case: no context to enter at every batch
                result = s.module(*inputs) if s.ddp is None else self._call(s, inputs)
            else:   # an evaluation step (no parameters to train) keeps no graph
                with self.autocast(), contextlib.nullcontext() if s.params else torch.no_grad():
                    result = self._call(s, inputs)
        except (RuntimeError, IndexError, ValueError) as e:
            if self.world.size > 1 and dist.lost_contact(e):
                raise   # another process stopped: run() says so
            # the plan checked, so what fails here is the data: labels out of range, say
            shapes = ", ".join(f"batch.{f} {list(x.shape)} {str(x.dtype).replace('torch.', '')}"
                               for f, x in zip(self.batch_fields, inputs))
            where = f"step `{s.name}`" if len(self.steps) > 1 else "the step"
            raise DslcError(Diagnostic("E0604", f"{where} failed on a batch: {type(e).__name__}: "
                                       f"{str(e).splitlines()[0] if str(e) else ''}", s.loss_span,
                                       label="while computing this loss", notes=(f"the batch: {shapes}",),
                                       help="check that the data fits the model (e.g. class ids below the "
                                            "model's number of outputs)")) from None
        return result if isinstance(result, tuple) else (result,)

    @property
    def mixed_precision(self) -> bool:
        """bf16 or fp16: the steps run under autocast."""
        return self.precision in ("bf16", "fp16")

    def autocast(self):
        """The precision's autocast context (bf16 and fp16; none in fp32): training's, and so evaluation's."""
        if not self.mixed_precision:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)

    @staticmethod
    def _call(s: StepRun, inputs: list):
        # training (DDP's wrapper, when there is one) keeps a graph; evaluation does not
        return (s.ddp if s.ddp is not None and torch.is_grad_enabled() else s.module)(*inputs)

    def _optimizer_step(self, s: StepRun) -> None:
        if s.optimizer is None:
            return
        for p in s.unreached:   # FSDP under torch.compile: zeros where torch gives no gradient (_unreached)
            p.grad = None
        if self.scaler is not None:
            self.scaler.unscale_(s.optimizer)
        self.callbacks.on_before_optimizer_step(self, s)
        clip_gradients(s.params, self.config.clip_grad_norm, self.config.clip_grad_value)
        if self.scaler is not None:
            self.scaler.step(s.optimizer)
            self.scaler.update()
        else:
            s.optimizer.step()
        s.optimizer.zero_grad(set_to_none=True)
        s.schedule.after_step()
        self.callbacks.on_optimizer_step(self, s)

    def _step_modes(self, training: bool) -> None:
        """The steps' own mode (not their models', which `modules()` sets): their random augmentations
        and mixing (`if self.training`) apply to training batches only."""
        for s in self.steps:
            s.module.training = training

    def modules(self) -> list:
        """The models, the momentum targets and the queues: what runs in training or in inference mode."""
        return list(self.models.values()) + [t.module for t in self.targets.values()] + list(self.queues.values())

    def _lr(self) -> float:
        for s in self.steps:
            if s.schedule is not None:
                return float(s.schedule.lr())   # the plan's rate, not a group's scaled one
        return 0.0

    # ------------------------------------------------------------------ evaluation

    def metric_set(self) -> MetricSet | None:
        """The plan's metrics, reading the prediction as the graph says it is (logits or probabilities)."""
        if not self.config.metrics:
            return None
        return MetricSet(list(self.config.metrics), self.task, self.plan.steps[0].scores, self.config.thresholds)

    def _loader(self, split, batch_size: int, **how):
        """The batches of `split` (data_mod.loader: the plan's `workers`, pinned memory for a GPU); a
        file that cannot be read mid-run is a diagnostic at the plan's data."""
        try:   # only the loader's own errors land here: the caller's are raised where it runs
            yield from data_mod.loader(split, batch_size, workers=self.config.workers,
                                       pin_memory=self.device.type == "cuda", **how)
        except data_mod.DataError as e:
            raise DslcError(Diagnostic(e.code, e.message, self.plan.data.span)) from None

    def evaluate(self, split: dict, batch_size: int) -> dict:
        """Loss (the sum of the steps' losses) and metrics on a split, in inference mode."""
        metrics = self.metric_set()
        self._step_modes(False)
        for m in self.modules():
            m.eval()
        total, count = 0.0, 0
        carried = None   # the state runs along the split from zeros, as in training
        with self.callbacks.evaluation_weights(self), qat.observers_off(self.modules()):
            with torch.no_grad():
                for batch in self._loader(split, batch_size, shuffle=False, seed=self.seed, epoch=0,
                                          augment=self.augment, train=False):
                    inputs = [batch[f].to(self.device) for f in self.batch_fields]
                    n = inputs[0].shape[0]
                    for s in self.steps:
                        result, carried = self._carry(s, inputs, carried)
                        total += float(result[0]) * n
                        if metrics is not None and len(result) > 1:
                            pred, target = _per_example(result[1].float(), _class_ids(batch).to(self.device))
                            metrics.update(pred, target)
                    count += n
        out = {"loss": total / max(count, 1)}
        if metrics is not None:
            out.update(metrics.compute())
            self.last_confusion = metrics.confusion()
        return out

    # ------------------------------------------------------------------ best, checkpoints, resume

    def weights(self, evaluated: bool = False) -> dict:
        """The models' weights, named as in a checkpoint; `evaluated`: those evaluation uses (EMA's)."""
        out = {}
        with self.callbacks.evaluation_weights(self) if evaluated else contextlib.nullcontext():
            for k, m in self.models.items():
                for n, t in self._state_dict(m).items():
                    out[f"{k}.{n}" if len(self.models) > 1 else n] = t.detach().clone()
        return out

    def _state_dict(self, model) -> dict:
        """A model's state dict; under FSDP gathered whole, on the CPU, in rank 0 (empty in the others)."""
        if not self.fsdp:
            return model.state_dict()
        return fsdp_mod.full_weights(model)

    def save_checkpoint(self, epoch: int, batch: int) -> str:
        """A checkpoint after `epoch` epochs and `batch` batches of the next: the weights, optimizers,
        schedules, RNG, history and what the callbacks keep; its path."""
        states = self.world.gather(torch.get_rng_state())   # each process's random stream
        tensors = {"rng.torch": states[0], **{f"rng.torch.{r}": t for r, t in enumerate(states) if r}}
        if torch.cuda.is_available() and self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        optim_state = {}
        for s in self.steps:
            if s.optimizer is None:
                continue
            json_part, tensor_part = _flatten_optimizer(self._optimizer_state(s.optimizer))
            optim_state[s.name] = {"optimizer": json_part, "schedule": s.schedule.state_dict()}
            tensors.update({f"optim.{s.name}.{k}": v for k, v in tensor_part.items()})
        partial = self._partial() if batch else None   # every process takes part in summing it
        state = {"plan": self.plan.name, "epoch": epoch, "batch": batch, "phase": self.phase_index,
                 "processes": self.world.size,
                 "history": self.history, "optim": optim_state, "stopped_early": self.stopped_early,
                 "partial": partial,
                 "scaler": self.scaler.state_dict() if self.scaler else None}
        if batch and self.carried is not None:   # mid-epoch: the next batch continues this state
            tensors.update({f"carried.{i}": t for i, t in enumerate(_leaves(self.carried))})
        self.callbacks.on_save_checkpoint(self, state, tensors)
        if batch == 0:
            self.partial = None
        weights = self.weights() if self.world.main or self.fsdp else {}   # FSDP: every process sends its shards
        if not self.world.main:   # only rank 0 writes; the others know where it did
            return os.path.join(self.rundir.checkpoints, checkpoint.tag_for(epoch, batch) + ".json")
        return checkpoint.save(self.rundir.checkpoints, checkpoint.tag_for(epoch, batch), weights, tensors, state)

    def _optimizer_state(self, optimizer) -> dict:
        """An optimizer's state dict as one process's optimizer has it (FSDP's shards made whole)."""
        if not self.fsdp:
            return optimizer.state_dict()
        return fsdp_mod.gather_optimizer_state(optimizer.state_dict())

    def _partial(self) -> dict | None:
        """An interrupted epoch's loss sums, and its training metrics so far."""
        if self.partial is None:
            return None
        sums, count = self._total(dict(self.partial["sums"]), self.partial["count"])
        partial = dict(self.partial, sums=sums, count=count)
        if self.train_metrics is None:
            return partial
        return dict(partial, metrics=self.train_metrics.state())

    def _resume(self) -> None:
        """Check that the run can continue as asked and load its last checkpoint; only then change
        the folder (temporary files of a killed run, metrics.jsonl as the checkpoint knows it)."""
        run_text = self.rundir.read_text("plan.dl")
        if run_text is None:
            raise DslcError(Diagnostic("E0603", f"cannot read {os.path.join(self.rundir.path, 'plan.dl')} (not "
                                       "UTF-8 text?)", file_name=self.rundir.path,
                                       help="start a new run without --resume"))
        epochs_set = "epochs" in parse_sets(self.options.sets) and not self.plan.phases
        rendered = render_plan(self.plan, self.path, self.rundir.path)
        resume.check_same_plan(self.rundir.path, run_text, self.plan.name, rendered, epochs_set)
        resume.check_same_code(self.rundir.path, self.rundir.read_text("plan.py"), self.source, self.plan.name)
        path = self._last_checkpoint()
        weights, tensors, state = checkpoint.load(path)
        try:
            self._apply_checkpoint(weights, tensors, state, path)
            schedule = self.phases[0].schedule
            changed = resume.check_continuation(
                self.rundir.path, state, self._epoch_ends()[-1], resume.run_epochs(run_text), epochs_set,
                self.rundir.exists("result.json"), schedule.entry.name if schedule else None, bool(self.plan.phases))
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            raise checkpoint.error(path, f"{type(e).__name__}: {e}") from None
        self._prepare_phase(state, path)
        self.world.barrier()   # every process has read the folder: rank 0 may change it now
        if self.world.main:
            checkpoint.remove_temporary(self.rundir.checkpoints)
        self.rundir.rewrite_metrics(self.history, state.get("step_lines"))
        if changed:
            self.rundir.write_plan(self.plan, self.path)
            self.out(f"continuing the run with {changed}")
        self.rundir.write_text("plan.py", self.source)
        self.out(f"resuming from {path} (epoch {self.position[0]}" +
                 (f", batch {self.position[1]})" if self.position[1] else ")"))

    def _last_checkpoint(self) -> str:
        found = checkpoint.checkpoints(self.rundir.checkpoints)
        if not found:
            raise DslcError(Diagnostic("E0603", f"{self.rundir.path} has no checkpoint to resume from (the run "
                                       "stopped before its first one)", file_name=self.rundir.path,
                                       help="start a new run without --resume"))
        return found[-1][2]

    def _apply_checkpoint(self, weights: dict, tensors: dict, state: dict, path: str) -> None:
        """The models, EMA, RNG, history and counters as the checkpoint holds them (read, not yet
        written back). A checkpoint that lacks a part raises KeyError and the like: the caller names it."""
        if state.get("plan") != self.plan.name:
            raise DslcError(Diagnostic("E0602", f"checkpoint {path} belongs to the plan `{state.get('plan')}`, "
                                       f"not `{self.plan.name}`", file_name=path))
        self.load_weights(weights, path)
        key = f"rng.torch.{self.world.rank}" if self.world.rank else "rng.torch"
        if key in tensors:
            torch.set_rng_state(tensors[key])
        else:   # a process the run did not have when it stopped
            torch.manual_seed(self._rank_seed(int(state["epoch"])))
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        if not isinstance(state["history"], list) or not all(isinstance(r, dict) for r in state["history"]):
            raise TypeError("its `history` is not a list of epochs' metrics")
        self.history = list(state["history"])
        self.position = (int(state["epoch"]), int(state["batch"]))
        processes = int(state.get("processes", 1))
        if self.position[1] and processes != self.world.size:
            raise DslcError(Diagnostic("E0609", f"checkpoint {path} was written {self.position[1]} batches into an "
                                       f"epoch by {processes} process{'es' if processes != 1 else ''}: its batches "
                                       f"are not those of {self.world.size}", file_name=path,
                                       help=f"resume it with {processes} process{'es' if processes != 1 else ''}; "
                                            "an epoch's checkpoint resumes with any number"))
        self.stopped_early = bool(state.get("stopped_early"))
        self.partial = state.get("partial")
        self.resume_tensors = tensors
        if self.plan.state is not None and self.position[1]:
            n = len(self.plan.state.leaves)
            self.carried = nest(self.plan.state.structure, [tensors[f"carried.{i}"].to(self.device) for i in range(n)])
        self.callbacks.on_load_checkpoint(self, state, tensors)

    def _prepare_phase(self, state: dict, path: str) -> None:
        """Build the optimizers of the phase the run continues in, with the checkpoint's state when it
        stopped in that phase, so that a state that does not fit is found before anything is written."""
        epoch = self.position[0]
        if epoch >= self._epoch_ends()[-1]:
            return
        index = self._phase_at(epoch)
        self._start_phase(index, started=state.get("phase") == index)
        if state.get("phase") == index:
            self._restore_optim(state, path)

    def _restore_optim(self, state: dict, path: str) -> None:
        saved = state.get("optim", {})
        try:
            for s in self.steps:
                if s.optimizer is None or s.name not in saved:
                    continue
                check_optimizer_state(saved[s.name]["optimizer"], s.optimizer)
                tensors = {k: v.to(self.device) for k, v in checkpoint.under(self.resume_tensors,
                                                                             f"optim.{s.name}.").items()}
                loaded = _unflatten_optimizer(saved[s.name]["optimizer"], tensors)
                if self.fsdp:   # the whole tensors of the checkpoint, cut into this process's shards
                    loaded = fsdp_mod.shard_optimizer_state(loaded, s.optimizer)
                s.optimizer.load_state_dict(loaded)
                s.schedule.load_state_dict(saved[s.name]["schedule"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            raise checkpoint.error(path, "its optimizer state does not fit the plan's optimizer: "
                                   f"{type(e).__name__}: {e}") from None

    def model_for(self, key: str, state: dict) -> torch.nn.Module:
        """The model `key` that `state` loads into: prepared for quantization first when `state` is
        weights of the quantizing phase (its fake-quantize modules' buffers are there)."""
        if qat.prepared_state(state) and not qat.is_prepared(self.models[key]) and self._quantizing():
            self.quantize_models()
        return self.models[key]

    def load_weights(self, weights: dict, path: str, mismatch=None, folded: bool = False) -> None:
        """Load a checkpoint's weights into the models, refusing (E0602) any that do not fit exactly:
        `mismatch(key, fit)` is that error (by default a resumed run's). A pruning phase's weights keep
        their masks (the model is given the pruned form), or are `folded` into plain weights."""
        for k in list(self.models):
            part = weights if len(self.models) == 1 else checkpoint.under(weights, k + ".")
            if folded:
                part = pruning.fold(part)
            m = self.model_for(k, part)   # weights of the quantizing phase: the fake-quantized model
            pruning.reparametrize(m, part)   # a checkpoint taken during a pruning phase: weights and masks
            # FSDP: rank 0's weights are loaded (the others may have none: best weights kept in memory)
            if part or not self.fsdp:
                fit = qat.fit(m.state_dict(), part)
                if not fit.exact:
                    raise mismatch(k, fit) if mismatch is not None else self._resume_mismatch(k, fit, path)
            if self.fsdp:
                fsdp_mod.load_full_weights(m, part)
            else:
                m.load_state_dict(part)

    def _resume_mismatch(self, key: str, fit, path: str) -> DslcError:
        return DslcError(Diagnostic("E0602", f"checkpoint {path} does not fit the model `{key}` of the plan "
                                    f"`{self.plan.name}` (was the .dl file changed since?)", file_name=path,
                                    notes=fit.notes(), help="start a new run without --resume"))

    # ------------------------------------------------------------------ the end

    def _finish(self) -> dict:
        self.callbacks.on_train_end(self)
        best = self.best_weights.best
        result = {"plan": self.plan.name, "epochs_run": len(self.history), "stopped_early": self.stopped_early,
                  "best_epoch": best[1] if best else None, "best": best[0] if best else None}
        if self.data.test is not None:
            test = self.evaluate(self.data.test, self.phases[-1].batch_size)
            result["test"] = test
        if self.config.overfit_batches and self.history and not self.fast:
            result["overfit"] = self._overfit_report()
        if self._quantizing() is not None and qat.is_prepared(self.models[self._quantizing().path[0]]):
            result["int8"] = self._int8()
        names = self._pruned_names()
        if names:
            result["sparsity"] = pruning.sparsity(self.models, names)
            if not self.fast:
                self.out("sparsity: " + ", ".join(f"{k} {v:.1%}" for k, v in result["sparsity"].items()))
        self.rundir.write_json("result.json", result)
        self.rundir.curves(self.history)
        confusion = self.last_confusion
        if confusion is not None and self.task == "classification":
            self.rundir.confusion(confusion, self.data.meta.get("class_names"))
        if not self.fast:
            self.out(_summary_line(result, self.rundir.path))
        return result

    def _int8(self) -> dict:
        """The quantizing phase's end: the int8 model, written as TorchScript, and its test metrics."""
        q = self._quantizing()
        key = q.path[0]
        prepared = self.models[key]
        int8 = qat.convert(prepared, q.backend)
        graph = self.plan.models[key][2]
        data = qat.saved(int8, graph, example_sizes(graph))
        self.rundir.write_bytes(qat.INT8_FILE, data)
        info = {"file": qat.INT8_FILE, "backend": q.backend, "bytes": len(data)}
        if self.data.test is not None:
            for s in self.steps:
                _replace_child(s.module, prepared, int8)
            try:
                info["test"] = self.evaluate(self.data.test, self.phases[-1].batch_size)
            finally:
                for s in self.steps:
                    _replace_child(s.module, int8, prepared)
        if not self.fast:
            test = "".join(f", test {k} {v:.4g}" for k, v in info.get("test", {}).items())
            self.out(f"int8 ({q.backend}): {os.path.join(self.rundir.path, qat.INT8_FILE)}, "
                     f"{len(data) / 1024:.1f} KiB{test}")
        return info

    def _pruned_names(self) -> list[str]:
        """The weights the phases that ran pruned (a run stopped early may not reach the later ones)."""
        starts = [0] + self._epoch_ends()[:-1]
        prunes = [p for start, phase in zip(starts, self.phases) if start < len(self.history) for p in phase.prunes]
        names = []
        for p in prunes:
            names += [pruning.named(self.models, p.path[0], n + ".weight")
                      for n, _ in pruning.layers(self.models[p.path[0]], ".".join(p.path[1:]))]
        return list(dict.fromkeys(names))

    def _overfit_report(self) -> dict:
        """Whether `overfit_batches` drove the loss near zero: a line, or W0602 at the field."""
        examples = smoke.examples_in(self.data.train, self.phases[0].batch_size)
        report, warning = smoke.overfit_report(self.history, self.config.overfit_batches, examples,
                                               _field_span(self.plan, "overfit_batches"))
        if warning is None:
            self.out(smoke.overfit_line(report))
        else:
            self.warn(warning.render())
        return report


# ---------------------------------------------------------------------------- helpers

def _replace_child(module, old, new) -> None:
    """`new` in the place of `old` among the children of a step's module (compiled or not)."""
    module = getattr(module, "_orig_mod", module)
    for name, child in list(module.named_children()):
        if child is old:
            setattr(module, name, new)


def _field_span(plan, name: str):
    for stmt in plan.decl.body:
        if isinstance(stmt, ast.AssignStmt) and len(stmt.targets) == 1 and \
                isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == name:
            return stmt.span
    return plan.decl.name_span


def _resolve(file: str, base_dir: str) -> str | None:
    for candidate in (file, os.path.join(base_dir, file)):
        if os.path.isfile(candidate):
            return candidate
    return None


def _class_ids(batch: dict):
    """What the metrics compare with: the class ids, also where mixup made `y` soft targets."""
    return batch.get(data_mod.CLASS_IDS, batch["y"])


def _per_example(pred, target):
    """Predictions and targets as [N, C] / [N] (per-position outputs flattened)."""
    if pred.dim() == target.dim() + 1 and pred.dim() > 2:
        if tuple(pred.shape[:-1]) == tuple(target.shape):       # [B, T, C] with [B, T]
            return pred.reshape(-1, pred.shape[-1]), target.reshape(-1)
        return pred.movedim(1, -1).reshape(-1, pred.shape[1]), target.reshape(-1)   # [B, C, ...]
    if pred.dim() == 2 and pred.shape[1] == 1 and target.dim() == 1:
        return pred[:, 0], target
    return pred, target


def _merged(states: list[dict]) -> dict:
    """Training metrics' states (MetricSet.state) of several processes as one: every part is a sum."""
    out = dict(states[0])
    for st in states[1:]:
        confusion = dict((k, m) for k, m in out["confusion"])
        for k, m in st["confusion"]:
            confusion[k] = (torch.tensor(confusion[k]) + torch.tensor(m)).tolist() if k in confusion else m
        out["confusion"] = [[k, m] for k, m in confusion.items()]
        for k in ("top5", "nll", "count", "sq", "abs"):
            if out[k] is not None and st[k] is not None:
                out[k] = out[k] + st[k]
    return out


def _detached(state):
    """A state (a tensor or nested tuples of them) cut from the graph that computed it."""
    return tuple(_detached(t) for t in state) if isinstance(state, tuple) else state.detach()


def _leaves(state) -> list:
    return [x for t in state for x in _leaves(t)] if isinstance(state, tuple) else [state]


def _flatten_optimizer(sd: dict) -> tuple[dict, dict]:
    """An optimizer state dict as JSON (scalars, param groups) and tensors."""
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    groups = json.loads(json.dumps(sd["param_groups"], default=_jsonable))
    return {"scalars": scalars, "param_groups": groups}, tensors


def _jsonable(v):
    if isinstance(v, tuple):
        return list(v)
    if torch.is_tensor(v):
        return v.tolist()
    raise TypeError(f"cannot store {type(v).__name__} in a checkpoint")


def _unflatten_optimizer(saved: dict, tensors: dict) -> dict:
    state: dict = {}
    for key, v in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    for idx, values in saved["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    groups = saved["param_groups"]
    for g in groups:
        if "betas" in g and isinstance(g["betas"], list):
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def _summary_line(result: dict, path: str) -> str:
    parts = [f"done: {result['epochs_run']} epochs" + (" (stopped early)" if result["stopped_early"] else "")]
    if result.get("test"):
        parts.append("test " + "  ".join(f"{k} {v:.4f}" for k, v in result["test"].items()))
    parts.append(f"results in {path}")
    return "; ".join(parts)
