"""The run directory of `dslc train` (INTERFACES.md): metrics.jsonl, checkpoints/,
result.json, curves.png, plan.dl, plus `.lock` (runlock.py) while a process runs in it.

A new run never reuses a directory that holds an earlier run: it takes the next free
name (`runs/PLAN-2`, ...) with mkdir, which is atomic, so two runs started at once get
two folders. `--resume` only ever writes into a folder that is a dslc run, one with a
`plan.dl` that dslc wrote (its first line says so) and a `checkpoints/` folder, and
that no other process holds; everything else is refused before anything is written.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile

from ..diagnostics import Diagnostic, DslcError
from ..files import atomic_write
from ..frontend import ast
from ..frontend.fmt import FormatError, formatted, statement_at
from ..frontend.plans import PlanCall
from ..ir.dims import Real, Size, plain, plain_float
from .runlock import LOCK_NAME, RunLock, unusable

# the first line of every plan.dl that render_plan writes: what marks a folder as a run
_HEADER = re.compile(r"# The plan `([^`]+)` as it ran")


CONFUSION_CELLS = 30   # classes a confusion matrix writes each count of; more get a colour bar instead


class RunDir:
    def __init__(self, path: str):
        self.path = path
        self.checkpoints = os.path.join(path, "checkpoints")
        self.lock = None

    @classmethod
    def open(cls, plan: str, out: str | None, resume: bool, checkpoints: bool = True) -> "RunDir":
        """A new run's folder (claimed and held), or the run to resume (checked, then held).
        `checkpoints=False`: a run that trains nothing (an evaluation plan) gets no checkpoints/."""
        base = out or os.path.join("runs", plan)
        if resume:
            path = base if out else latest_run(base)
            check_run(path or base)
            run = cls(path)
            run.hold()
            run._check_writable()
            return run
        run = cls(_claim(base))
        try:
            run.hold()
            if checkpoints:
                os.mkdir(run.checkpoints)
        except OSError as e:
            run._unclaim()
            raise unusable(run.path, e) from None
        except DslcError:
            run._unclaim()
            raise
        return run

    def _unclaim(self) -> None:
        """Undo a new run's claim that could not be set up: its lock, then its folder if still empty."""
        self.close()
        _remove_claim(self.path)

    def hold(self) -> None:
        """Take the folder's lock (E0605 when another process holds it)."""
        self.lock = RunLock(self.path).acquire()

    def close(self) -> None:
        """Let go of the folder (the OS does it too when the process ends)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _check_writable(self) -> None:
        """A resumed run writes files in the folder and in checkpoints/: find out now, not after an epoch."""
        for folder in (self.path, self.checkpoints):
            try:
                fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
                os.close(fd)
                os.remove(probe)
            except OSError as e:
                self.close()
                raise unusable(folder, OSError(e.errno, e.strerror)) from None   # not the probe's name

    def read_text(self, name: str) -> str | None:
        """A file of the run as text, or None when it is missing or unreadable."""
        try:
            with open(os.path.join(self.path, name), encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError):
            return None

    def exists(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.path, name))

    # ------------------------------------------------------------------ files

    def write_text(self, name: str, text: str) -> None:
        atomic_write(os.path.join(self.path, name), text.encode())

    def write_bytes(self, name: str, data: bytes) -> None:
        atomic_write(os.path.join(self.path, name), data)

    def write_json(self, name: str, value) -> None:
        self.write_text(name, json.dumps(value, indent=2, default=_plain) + "\n")

    def append_metrics(self, record: dict) -> None:
        with open(os.path.join(self.path, "metrics.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=_plain) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rewrite_metrics(self, history: list, step_lines_to: list | None = None) -> None:
        """metrics.jsonl as the checkpoint knows it: epochs logged after it are run (and logged) again.
        The epochs' lines are the checkpoint's history; the `log_every` step lines are not in it, so
        those the file holds up to (epoch, step) `step_lines_to` are kept, each before its epoch's line."""
        steps = [r for r in self._metrics_lines() if step_lines_to is not None and _step_line(r)
                 and (r["epoch"], r["step"]) <= tuple(step_lines_to)]
        lines, epochs = [], list(history)
        for record in steps:
            while epochs and epochs[0].get("epoch", 0) < record.get("epoch", 0):
                lines.append(epochs.pop(0))
            lines.append(record)
        lines += epochs
        self.write_text("metrics.jsonl", "".join(json.dumps(r, default=_plain) + "\n" for r in lines))

    def _metrics_lines(self) -> list:
        """metrics.jsonl's records as a killed run left them (a line cut short is left out)."""
        text = self.read_text("metrics.jsonl") or ""
        records = []
        for line in text.splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return [r for r in records if isinstance(r, dict)]

    def write_plan(self, plan, source_path: str) -> None:
        self.write_text("plan.dl", render_plan(plan, source_path, self.path))

    def curves(self, history: list) -> None:
        """curves.png: every loss and metric per epoch, training vs validation."""
        if not history:
            return
        plt = pyplot()
        epochs = [r["epoch"] for r in history]
        losses = [k for k in history[-1] if k.endswith("loss")]
        metrics = [k for k in history[-1] if k.startswith("val_") and not k.endswith("loss")]
        panels = [losses] + ([metrics] if metrics else []) + [["lr"]]
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
        for ax, keys in zip(axes[0], panels):
            for k in keys:
                ax.plot(epochs, [r.get(k) for r in history], marker="o", markersize=3, label=k)
            ax.set_xlabel("epoch")
            _whole_epochs(ax)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        axes[0][0].set_title("loss")
        if metrics:
            axes[0][1].set_title("validation metrics")
        axes[0][-1].set_title("learning rate (end of epoch)")
        _fixed_margins(fig, len(panels))
        self._save_figure(plt, fig, "curves.png", fitted=True)

    def health(self, history: list, layers: list) -> None:
        """health.png: per epoch, each layer's gradient norm, update/weight ratio and fraction of zero
        outputs, and the global gradient norm (log scales: vanishing and exploding span decades)."""
        records = [r for r in history if "grad_norm" in r]
        if not records or not layers:
            return
        plt = pyplot()
        epochs = [r["epoch"] for r in records]
        panels = [("grad_norm", "gradient norm", True), ("update_ratio", "update / weight", True),
                  ("act_zero", "fraction of zero outputs", False)]
        bar = len(layers) + 1 > 16   # too many lines (and "all") for a legend: a colour bar says how deep
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False,
                                 layout="constrained" if bar else None)   # room for the bar, which fixed margins lack
        colours = _depth_colours(plt, len(layers))
        for ax, (key, title, log) in zip(axes[0], panels):
            for name, colour in zip(layers, colours):
                ys = [r.get(f"{key}/{name}") for r in records]
                if any(y is not None for y in ys):
                    ax.plot(epochs, [math.nan if y is None else max(y, 1e-30) if log else y for y in ys],
                            marker="o", markersize=2, linewidth=1, label=name, color=colour)
            if key == "grad_norm":
                ax.plot(epochs, [max(r["grad_norm"], 1e-30) for r in records], color="black", linewidth=2,
                        label="all")
            if log:
                ax.set_yscale("log")
            ax.set_title(title)
            ax.set_xlabel("epoch")
            _whole_epochs(ax)
            ax.grid(alpha=0.3)
        if bar:
            _depth_bar(plt, fig, axes[0], layers)
        else:
            axes[0][0].legend(fontsize=7)
            _fixed_margins(fig, len(panels))
        self._save_figure(plt, fig, "health.png", fitted=True)

    def confusion(self, matrix, names=None, file: str = "confusion.png") -> None:
        """confusion.png (or `file`): counts of true (rows) against predicted (columns) classes."""
        plt = pyplot()
        n = matrix.shape[0]
        labels = list(names) if names is not None and len(names) == n else [str(i) for i in range(n)]
        side = min(n, CONFUSION_CELLS)
        fig, ax = plt.subplots(figsize=(1.2 + 0.45 * side, 1.0 + 0.45 * side))
        image = ax.imshow(matrix, cmap="Blues")
        if n <= CONFUSION_CELLS:
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if matrix[i, j] > matrix.max() / 2 else "black")
        else:   # a character model's 76 classes: too many numbers to read (and to draw: 19 s); a colour bar says them
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        step = -(-n // CONFUSION_CELLS)   # every class labelled up to CONFUSION_CELLS, then every step-th
        ax.set_xticks(range(0, n, step), labels[::step], fontsize=7, rotation=90 if step > 1 else 0)
        ax.set_yticks(range(0, n, step), labels[::step], fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        self._save_figure(plt, fig, file)

    def _save_figure(self, plt, fig, name: str, fitted: bool = False) -> None:
        """A PNG written whole (temporary file, then rename), so a killed run leaves no half image.
        `fitted`: its margins are set already (else tight_layout or the figure's layout engine sets them)."""
        if not fitted and fig.get_layout_engine() is None:
            fig.tight_layout()
        try:
            atomic_write(os.path.join(self.path, name), lambda f: fig.savefig(f, dpi=110, format="png"))
        finally:
            plt.close(fig)


class RunView(RunDir):
    """The run folder as the processes of a data-parallel run other than rank 0 see it: they read it
    (a checkpoint to resume from) and never write it, nor hold its lock (rank 0 does)."""

    def hold(self) -> None:
        pass

    def write_text(self, name: str, text: str) -> None:
        pass

    def write_bytes(self, name: str, data: bytes) -> None:
        pass

    def append_metrics(self, record: dict) -> None:
        pass

    def curves(self, history: list) -> None:
        pass

    def health(self, history: list, layers: list) -> None:
        pass

    def confusion(self, matrix, names=None, file: str = "confusion.png") -> None:
        pass


def _whole_epochs(ax) -> None:
    """Epoch ticks at whole numbers (matplotlib's default puts one at 1.5)."""
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _depth_colours(plt, n: int) -> list:
    """One colour per layer, input side dark to output side light: a vanishing gradient shows as
    the dark lines falling away from the light ones."""
    cmap = plt.get_cmap("viridis")
    return [cmap(i / max(n - 1, 1) * 0.9) for i in range(n)]


def _fixed_margins(fig, panels: int) -> None:
    """Margins for a row of `panels` plots of about 5 × 3.7 inches, with titles, axis labels and
    tick labels as wide as 1e-05: set, where tight_layout measures them by drawing the figure once
    more (about half of a small run's time went to drawing its figures)."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.85 / width, right=1 - 0.2 / width, bottom=0.55 / height, top=1 - 0.35 / height,
                        wspace=0.95 * panels / (width - 1.05 - 0.95 * (panels - 1)))


def _depth_bar(plt, fig, axes, layers: list) -> None:
    """A colour bar from the first layer to the last, named at its ends."""
    import matplotlib.cm
    import matplotlib.colors
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, 1 / 0.9),
                                            cmap=plt.get_cmap("viridis"))
    bar = fig.colorbar(mappable, ax=list(axes), fraction=0.02, pad=0.01)
    bar.set_ticks([0, 1], labels=[layers[0], layers[-1]], fontsize=7)
    bar.set_label("layer, input to output", fontsize=8)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (runs have no display)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def check_run(path: str) -> str:
    """The plan name of the run in `path`; E0603 unless `path` is a dslc run folder (read only)."""
    help_ = "give --out the folder of an earlier `dslc train` run, or start a new run without --resume"
    if not os.path.isdir(path):
        what = "there is no run to resume at" if not os.path.exists(path) else "there is no run folder at"
        raise DslcError(Diagnostic("E0603", f"{what} {path}", file_name=path,
                                   help="start a new run without --resume, or give its folder with --out"))
    name = run_plan_name(path)
    if name is None or not os.path.isdir(os.path.join(path, "checkpoints")):
        raise DslcError(Diagnostic("E0603", f"{path} is not a dslc run folder: a run holds the plan.dl that "
                                   "`dslc train` wrote and a checkpoints/ folder (nothing was written to it)",
                                   file_name=path, help=help_))
    return name


def run_plan_name(path: str) -> str | None:
    """The plan named by the first line of `path`/plan.dl when dslc wrote it, else None."""
    try:
        with open(os.path.join(path, "plan.dl"), encoding="utf-8") as f:
            first = f.readline(400)
    except (OSError, UnicodeDecodeError):
        return None
    m = _HEADER.match(first)
    return m.group(1) if m else None


def _claim(base: str) -> str:
    """`base`, or `base-2`, `base-3`, ...: the first that does not exist yet (created here, atomically)."""
    parent = os.path.dirname(base)
    if os.path.lexists(base) and not os.path.isdir(base):
        raise DslcError(Diagnostic("E0603", f"cannot start a run in {base}: it is a file, not a folder",
                                   file_name=base, help="give --out a folder name that is not a file"))
    n = 1
    while True:
        path = base if n == 1 else f"{base}-{n}"
        try:
            if parent:
                os.makedirs(parent, exist_ok=True)
            os.mkdir(path)
            return path
        except FileExistsError:
            if not os.path.isdir(path):   # makedirs met a file where a folder of the path should be
                raise _cannot_create(path, None) from None
            n += 1
        except OSError as e:
            raise _cannot_create(path, e) from None


def _remove_claim(path: str) -> None:
    """Undo a claim that could not be set up: the folder, with only what this process put there."""
    for undo, name in ((os.remove, LOCK_NAME), (os.rmdir, "checkpoints"), (os.rmdir, "")):
        try:
            undo(os.path.join(path, name))
        except OSError:
            pass   # not there, or the folder is not empty: what else is in it stays


def _cannot_create(path: str, e: OSError | None) -> DslcError:
    """E0603 for a run folder that cannot be made, naming what is in the way."""
    blocking = _file_in_the_way(path)
    existing = _nearest_folder(path)
    if blocking:
        why = f"{blocking} is a file, not a folder"
    elif isinstance(e, PermissionError):
        why = f"{existing} is not writable ({e.strerror})"
    else:
        why = f"{e.filename or path}: {e.strerror or e}" if e else "it cannot be made"
    return DslcError(Diagnostic("E0603", f"cannot create the run folder {path}: {why}", file_name=path,
                                help="give --out a folder you can write to"))


def _file_in_the_way(path: str) -> str | None:
    """The first existing ancestor of `path` (itself included) that is not a folder, if any."""
    parts = os.path.normpath(path).split(os.sep)
    for i in range(1, len(parts) + 1):
        head = os.sep.join(parts[:i]) or os.sep
        if os.path.lexists(head) and not os.path.isdir(head):
            return head
    return None


def _nearest_folder(path: str) -> str:
    """The deepest existing folder on the way to `path`."""
    head = os.path.dirname(os.path.normpath(path))
    while head and not os.path.isdir(head):
        head = os.path.dirname(head)
    return head or "."


def latest_run(base: str) -> str | None:
    parent, name = os.path.split(base)
    try:
        entries = os.listdir(parent or ".")
    except OSError:
        return None
    pattern = re.compile(re.escape(name) + r"(?:-(\d+))?$")
    found = [(int(m.group(1) or 1), os.path.join(parent, entry)) for entry in entries
             if (m := pattern.fullmatch(entry)) and os.path.isdir(os.path.join(parent, entry))]
    runs = [f for f in found if run_plan_name(f[1]) is not None]   # not a folder a killed start left empty
    return max(runs or found)[1] if found else None


def _plain(v):
    if isinstance(v, tuple):
        return list(v)
    try:
        import numpy as np
        if isinstance(v, np.generic):
            return v.item()
    except ImportError:
        pass
    return str(v)


# ---------------------------------------------------------------------- plan.dl

def render_plan(plan, source_path: str, run_path: str) -> str:
    """The plan as run: every field, argument and call with its value, defaults and --set included,
    laid out as `dslc fmt` writes it."""
    return formatted(plan_text(plan, source_path, run_path), "plan.dl")


def plan_text(plan, source_path: str, run_path: str) -> str:
    """render_plan's text, one statement a line, before `dslc fmt`'s layout."""
    rel = os.path.relpath(os.path.abspath(source_path), os.path.abspath(run_path))
    lines = [f"# The plan `{plan.name}` as it ran: every default and --set filled in.",
             f"# Its models are declared in {rel}.", f"train {plan.name} {{"]
    lines += _field_lines(plan) + _step_lines(plan) + _phase_lines(plan)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _field_lines(plan) -> list[str]:
    """Models, data, fields, calls, freezes and (without steps) the loss."""
    if list(plan.models) == ["model"]:
        lines = [f"    model = {_model_call(plan.models['model'])}"]
    else:
        lines = ["    models = { " + ", ".join(f"{k}: {_model_call(v)}" for k, v in plan.models.items()) + " }"]
    lines.append(f"    data = {dl_value(plan.data)}")
    for name, value in plan.fields.items():
        if name in ("metrics", "precision"):   # bare words, as written (metrics with their arguments)
            text = "[" + ", ".join(getattr(m, "text", m.__str__)() for m in value) + "]" \
                if isinstance(value, list) else str(value)
        else:
            text = dl_value(value)
        lines.append(f"    {name} = {text}")
    lines += [f"    {dl_value(call)}" for call in plan.calls]
    lines += ["    " + _text(stmt) for stmt in plan.decl.body if isinstance(stmt, ast.FreezeStmt)]
    if not any(isinstance(s, ast.StepStmt) for s in plan.decl.body):
        loss = next(s for s in plan.decl.body if isinstance(s, ast.AssignStmt) and s.targets[0].id == "loss")
        lines.append("    " + _text(loss))
    return lines


def _step_lines(plan) -> list[str]:
    """Each step as written, its optimizer with every argument."""
    steps, lines = {s.name: s for s in plan.steps}, []
    for stmt in plan.decl.body:
        if isinstance(stmt, ast.StepStmt):
            lines.append(f"    step {stmt.name} {{")
            for inner in stmt.body:
                if isinstance(inner, ast.AssignStmt) and isinstance(inner.targets[0], ast.Name) and \
                        inner.targets[0].id == "optimizer":
                    lines.append(f"        optimizer = {dl_value(steps[stmt.name].optimizer, plan)}")
                else:
                    lines.append("        " + _text(inner))
            lines.append("    }")
    return lines


def _phase_lines(plan) -> list[str]:
    """Each phase: its freezes, then its fields with their values."""
    phases, lines = {p.name: p for p in plan.phases}, []
    for stmt in plan.decl.body:
        if isinstance(stmt, ast.PhaseStmt):
            lines.append(f"    phase {stmt.name} {{")
            lines += ["        " + _text(inner) for inner in stmt.body if isinstance(inner, ast.FreezeStmt)]
            lines += ["        " + p.text() for p in phases[stmt.name].prunes]
            if phases[stmt.name].quantize is not None:
                lines.append("        " + phases[stmt.name].quantize.text())
            lines += [f"        {k} = {dl_value(v)}" for k, v in phases[stmt.name].fields.items()]
            lines.append("    }")
    return lines


def _text(node) -> str:
    """A statement as written, on one line: from its source, up to where the statement ends (its
    span ends before the `)` of a parenthesized expression at its end)."""
    s = node.span
    try:
        return statement_at(s.file.text, s.start)
    except (FormatError, IndexError):
        return " ".join(s.file.text[s.start:s.end].split())


def _model_call(entry) -> str:
    decl, args, _ = entry
    given = ", ".join(f"{k}={dl_value(a.value)}" for k, a in args.items())
    return f"{decl.name}({given})"


def dl_value(v, plan=None) -> str:
    """A value written as `.dl` source (an optimizer's models by their names in `plan`)."""
    if isinstance(v, PlanCall):
        targets = [plan.model_name(t) if plan is not None else t.decl.name for t in v.targets]
        args = [f"{k}={dl_value(x)}" for k, x in v.args.items()]
        return f"{v.entry.name}({', '.join(targets + args)})"
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, Size):
        return str(plain(v))
    if isinstance(v, Real):
        return repr(plain_float(v))
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {dl_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(dl_value(x) for x in v) + "]"
    if isinstance(v, str) and type(v) is not str:
        return str(v)        # a bare word: bf16, accuracy, val_loss
    if isinstance(v, str):
        return json.dumps(v)
    return str(v)


def _step_line(record: dict) -> bool:
    """A `log_every` line of metrics.jsonl: a `step` and its `epoch`, both whole numbers."""
    return all(isinstance(record.get(k), int) and not isinstance(record.get(k), bool) for k in ("step", "epoch"))
