"""`dslc predict`: a trained run's model applied to a split of its data, or to files.

The run's weights go into the plan's model (restore.py), which reads each example as the run
evaluated it (the plan's data, its `normalize`, its precision) in inference mode, one batch
of `batch_size` at a time. Each example gives one row: its index (and file and row, for
`--input`), its target when known, and
- for a classifier (class-id targets, an output of one score per class `[B, C]`, or one
  binary output `[B]` or `[B, 1]`, that the plan scores as its `out` or that has one score per
  class of the data): the predicted class and every class's probability.
  Logits go through a softmax (a sigmoid for one binary output), probabilities are kept,
  and log-probabilities are exponentiated, as the plan's graph shows the output to be; a
  binary output is class 1 when its probability is above 0.5 (accuracy's `threshold`);
- for a regression (float targets, one value per example): the predicted value;
- otherwise, or with `--output NAME`, the tensor itself, flattened per example: the model's
  output of that name, the output of its layer or block of that name (a dotted path such as
  `encoder.conv1` reaches inside a block), or its tensor bound to that name (`h = ...`).

Rows are written as CSV, JSON lines or an .npz file (by the output's suffix) and the first
ones are printed with a summary: the accuracy recomputed from the rows, or the errors of
a regression, when the targets are known.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..backends.output import write_output
from ..backends.pymodule import exec_source
from ..backends.torch_codegen import generate
from ..diagnostics import Diagnostic, DslcError, did_you_mean
from ..ir.clone import clone
from ..ir.nesting import SEP, top_names
from ..ir.values import Ref
from ..passes import optimize
from . import data as data_mod
from . import inputs as inputs_mod
from .evaluate import split_of
from .metrics import THRESHOLD, binary_log_probabilities
from .restore import restore
from .weights import fit_state_dict

FORMATS = (".csv", ".jsonl", ".npz")
SHOWN = 10           # rows printed


@dataclass
class PredictOptions:
    run: str | None = None          # the run folder (default: the latest runs/PLAN*)
    weights: str | None = None      # best (default), last, or a weights file
    split: str = "test"
    inputs: tuple = ()              # files to predict instead of a split
    output: str | None = None       # --output NAME: the tensor to write
    file: str | None = None         # -o: the rows' file (default RUN/predictions.csv)
    model: str | None = None        # the plan's model, when it has several
    sets: tuple = ()                # --set (and --data, as data=...) as given to `dslc train`
    device: str | None = None


@dataclass
class Rows:
    """The predictions, one entry per example."""
    index: np.ndarray
    target: np.ndarray | None = None
    prediction: np.ndarray | None = None       # class ids, or values
    probabilities: np.ndarray | None = None    # [N, C]
    tensor: np.ndarray | None = None           # [N, ...]: what --output names, or an output of another kind
    name: str = "out"                          # the tensor's name
    class_names: list = field(default_factory=list)
    files: list | None = None                  # --input: each example's file and row in it
    rows: list | None = None


def predict(plan, path: str, options: PredictOptions, warn=print) -> dict:
    """Predict with the checked plan's run; returns {plan, run, weights, file (written), examples,
    what ("classes", "values" or "tensor"), accuracy or errors when targets are known, table}."""
    restored = restore(plan, path, options.run, options.weights, options.device, warn)
    trainer = restored.trainer
    key = choose_model(plan, options.model)
    fields = model_fields(plan, key)
    split, where, read = _examples(trainer, options, fields)
    net, pick, name = network(trainer, key, options.output, path)
    tensor, target = _outputs(trainer, net, pick, split, [f for _, f, _ in fields])
    rows = _rows(trainer, key, tensor, target, name if options.output else None)
    if read is not None:
        rows.files, rows.rows = read.files, read.rows
    out_file = options.file or os.path.join(restored.run, "predictions.csv")
    write(rows, out_file)
    summary = _summary(rows)
    return {"plan": plan.name, "run": restored.run, "weights": restored.weights.path,
            "weights_label": restored.weights.label, "file": out_file, "examples": len(rows.index),
            "what": _kind(rows), **summary,
            "table": show(rows) + "\n" + _summary_line(rows, summary, where, out_file)}


def _examples(trainer, options: PredictOptions, fields: list):
    """(split, how the summary names it, the files read or None): the files of --input, else a split."""
    plan = trainer.plan
    if options.inputs:
        n = len(options.inputs)
        read = inputs_mod.read(list(options.inputs), {f: t for _, f, t in fields}, plan.data, trainer.data.meta)
        return read.split, f"{n} input file{'s' if n > 1 else ''}", read
    split = split_of(trainer, options.split)
    if isinstance(split, data_mod.Stream):
        raise DslcError(Diagnostic("E0504", "the plan reads its data as a stream of windows, not as examples: "
                                   "predict has no rows to write", plan.data.span,
                                   help="`dslc eval` measures such a run on any split"))
    return split, f"the {options.split} split", None


# ---------------------------------------------------------------------- which model, fed how

def choose_model(plan, name: str | None) -> str:
    """The plan's model to run: `name` (a plan name, or its declaration's), the only one, or the one
    whose output the plan scores (its `out`)."""
    models = plan.models
    if name is not None:
        by_decl = [k for k, (decl, _, _) in models.items() if decl.name == name]
        if name in models or len(by_decl) == 1:
            return name if name in models else by_decl[0]
        raise DslcError(Diagnostic("E0209", f"the plan `{plan.name}` has no model `{name}`",
                                   file_name=_file(plan), help="models: " + ", ".join(models)))
    if len(models) == 1:
        return next(iter(models))
    scored = _scored_model(plan)
    if scored is not None:
        return scored
    raise DslcError(Diagnostic("E0209", f"the plan `{plan.name}` has {len(models)} models: choose one with --model",
                               file_name=_file(plan), help="models: " + ", ".join(models)))


def _scored_model(plan) -> str | None:
    """The model whose output is the plan's `out` (what its metrics score), if one is."""
    if len(plan.steps) != 1 or plan.steps[0].prediction is None:
        return None
    step = plan.steps[0]
    node = step.graph.nodes[step.prediction.node]
    key = step.models.get(node.instance) if node.kind == "call" else None
    return key if key in plan.models else None   # not a momentum target


def _called(plan, key: str) -> str:
    """How messages name a plan's model: its declaration's name for the plan's one `model`."""
    return plan.models[key][0].name if key == "model" else key


def _file(plan) -> str:
    span = getattr(plan.decl, "span", None)
    return span.file.name if span is not None else plan.name


def model_fields(plan, key: str) -> list[tuple[str, str, object]]:
    """(model input, data field, the input's type) for each input of the model `key`: the field of
    the input's name, or the data's `x` for a model of one input, as the plan's `out` reads them."""
    _, _, graph = plan.models[key]
    fields, called = plan.data.fields or {}, _called(plan, key)
    if plan.state is not None or any(SEP in n for n, _ in graph.inputs):
        raise DslcError(Diagnostic("E0504", f"`{called}` carries a state from batch to batch (`state = ...`): its "
                                   "outputs depend on the batches before, so predict has no rows to write",
                                   plan.data.span, help="`dslc eval` measures such a run on any split"))
    out = []
    for name, ref in graph.inputs:
        want = graph.type_of(ref)
        field_name = name if name in fields else plan.data.entry.input_field if len(graph.inputs) == 1 else None
        have = fields.get(field_name)
        if have is None or have.rank != want.rank or have.dtype != want.dtype:
            what = f"the data's `{field_name}` is {have}" if have is not None else "the data has no such field"
            raise DslcError(Diagnostic(
                "E0504", f"`{called}`'s input `{name}` is {want}, and {what}: the plan feeds `{called}` values it "
                "computes, not the data's examples", plan.data.span,
                help="predict runs a model that reads the data's fields (`dslc sample` feeds noise to a "
                     "generator); choose another with --model"))
        out.append((name, field_name, want))
    return out


# ---------------------------------------------------------------------- the network and the tensor it gives

def network(trainer, key: str, output: str | None, path: str):
    """(module, pick, name): the model `key` holding the run's weights, and the function that picks
    the tensor to write out of what one call of it returns (and what the tensor is called)."""
    model = trainer.models[key]
    graph = trainer.plan.models[key][2]
    outputs = top_names([n for n, _ in graph.outputs])
    if output is None:
        if len(outputs) > 1:
            raise DslcError(Diagnostic("E0209", f"`{_called(trainer.plan, key)}` has {len(outputs)} outputs "
                                       f"({', '.join(outputs)}): choose one with --output",
                                       file_name=_file(trainer.plan)))
        return model, _first, outputs[0]
    if output in outputs:
        i = outputs.index(output)
        return model, (lambda result: result[i]) if len(outputs) > 1 else _first, output
    if output in dict(model.named_modules()) and output:
        return _Hooked(model, output), _first, output
    bound = _bound(graph, output)
    if bound is not None:
        return _with_output(trainer, key, graph, output, bound, path), lambda result: result[-1], output
    raise _unknown_output(trainer, key, model, graph, outputs, output)


def _first(result):
    """A call's one tensor, or the first of several (an LSTM's output, not its state)."""
    return result[0] if isinstance(result, (tuple, list)) else result


class _Hooked(torch.nn.Module):
    """A model whose calls return, instead of its output, that of its submodule `path` (last call)."""

    def __init__(self, model: torch.nn.Module, path: str):
        super().__init__()
        self.model, self.seen = model, []
        model.get_submodule(path).register_forward_hook(lambda _m, _i, out: self.seen.append(out))

    def forward(self, *inputs):
        self.seen.clear()
        self.model(*inputs)
        return self.seen[-1]


def _bound(graph, name: str):
    """The last tensor the model's graph binds to `name` (`h = ...`), as a Ref, or None."""
    found = None
    for node in graph.nodes.values():
        if node.kind in ("op", "call"):
            for i, n in enumerate(node.names):
                if n == name:
                    found = Ref(node.id, i)
    return found


def _with_output(trainer, key: str, graph, name: str, ref, path: str) -> torch.nn.Module:
    """The model `key` generated again with the tensor `ref` as one more output, holding its weights."""
    extended = clone(graph)
    extended.outputs = list(extended.outputs) + [(name, ref)]
    level = trainer.config.optimize
    extended = optimize(extended, level).graph if level else extended
    module = exec_source(generate([extended], os.path.basename(path)), f"<dslc predict {trainer.plan.name}>")
    net = module.MODELS[extended.name]().to(trainer.device)
    state = trainer.models[key].state_dict()
    fit = fit_state_dict(net.state_dict(), state)
    if not fit.exact:   # a tensor the passes had dropped as unused, with weights that were never trained
        raise DslcError(Diagnostic("E0209", f"`{name}` is computed by layers that `{_called(trainer.plan, key)}`'s "
                                   "output does not use (they were never trained)", file_name=_file(trainer.plan),
                                   notes=fit.notes()))
    net.load_state_dict(state)
    return net.eval()


def _unknown_output(trainer, key, model, graph, outputs, name) -> DslcError:
    layers = [n for n, _ in model.named_children()]
    tensors = list(dict.fromkeys(n for node in graph.nodes.values() if node.kind in ("op", "call")
                                 for n in node.names if n))
    guess = did_you_mean(name, outputs + layers + tensors)
    parts = [f"outputs: {', '.join(outputs)}", f"layers: {', '.join(layers) or 'none'} (dotted paths reach inside)"]
    if tensors:
        parts.append(f"named tensors: {', '.join(tensors)}")
    return DslcError(Diagnostic("E0209", f"`{_called(trainer.plan, key)}` has no output, layer or named tensor "
                                f"`{name}`", file_name=_file(trainer.plan),
                                help=(f"did you mean `{guess}`? " if guess else "") + "; ".join(parts)))


def _outputs(trainer, net, pick, split: dict, fields: list) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The picked tensor for every example of `split` ([N, ...], float32 on the CPU), and the targets."""
    for m in trainer.modules():
        m.eval()
    net.eval()
    got, targets = [], []
    with torch.no_grad(), trainer.autocast():   # the precision the run evaluated in
        for batch in data_mod.batches(split, trainer.phases[-1].batch_size, shuffle=False, seed=trainer.seed,
                                      epoch=0, augment=trainer.augment, train=False):
            result = net(*[batch[f].to(trainer.device) for f in fields])
            got.append(pick(result).float().cpu())
            if "y" in batch:
                targets.append(batch.get(data_mod.CLASS_IDS, batch["y"]))
    return torch.cat(got), torch.cat(targets) if targets else None


# ---------------------------------------------------------------------- rows

def _rows(trainer, key: str, tensor: torch.Tensor, target, output: str | None) -> Rows:
    n = tensor.shape[0]
    rows = Rows(np.arange(n), target.numpy() if target is not None else None, name=output or "out")
    per_example = tensor.reshape(n, -1)
    if output is None and _classifier(trainer, key, tensor):
        kind = _scores(trainer, key)
        if tensor.dim() == 1 or per_example.shape[1] == 1:   # decided as the metrics decide, in float64
            probs = binary_log_probabilities(per_example[:, 0], kind).exp()
            rows.prediction = (probs[:, 1] > _threshold(trainer)).long().numpy()
        else:
            probs = _probabilities(per_example, kind)
            rows.prediction = per_example.argmax(1).numpy()   # the top score, as accuracy takes it
        rows.probabilities = probs.float().numpy()
        rows.class_names = _class_names(trainer, probs.shape[1])
    elif output is None and trainer.task == "regression" and per_example.shape[1] == 1:
        rows.prediction = per_example[:, 0].numpy()
    else:
        rows.tensor = tensor.numpy()
    return rows


def _classifier(trainer, key: str, tensor: torch.Tensor) -> bool:
    """Whether the model's output scores the data's classes: class-id targets, and an output `[B, C]`
    (or one binary output) that the plan scores as its `out`, or with one score per class of the
    data (a projection head's `[B, 64]` over the digits is not)."""
    if trainer.task != "classification" or tensor.dim() > 2:
        return False
    width = 1 if tensor.dim() == 1 else tensor.shape[1]
    classes = trainer.data.meta.get("classes")
    return _scored_model(trainer.plan) == key or width == classes or width == 1 and classes == 2


def _scores(trainer, key: str) -> str:
    """What the model's output holds: logits, probabilities or log-probabilities, as the plan's graph
    shows it (its step's `scores`) for the model the plan scores; logits for another."""
    return trainer.plan.steps[0].scores if _scored_model(trainer.plan) == key else "logits"


def _threshold(trainer) -> float:
    """The probability above which one binary output is class 1: accuracy's `threshold`."""
    return float(trainer.config.thresholds.get("accuracy", THRESHOLD))


def _probabilities(scores: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "probabilities":
        return scores
    if kind == "log_probabilities":
        return scores.exp()
    return torch.softmax(scores, dim=1)


def _class_names(trainer, count: int) -> list[str]:
    names = trainer.data.meta.get("class_names")
    return [str(n) for n in names] if names is not None and len(names) == count else [str(i) for i in range(count)]


def _kind(rows: Rows) -> str:
    return "tensor" if rows.tensor is not None else "classes" if rows.probabilities is not None else "values"


# ---------------------------------------------------------------------- files

def columns(rows: Rows) -> dict:
    """Column name -> one value per example (a numpy array, or a list of file names), in order: what
    a CSV file holds. float32 values print as their shortest form (`0.98427063`)."""
    out = {"index": rows.index}
    if rows.files is not None:
        out.update(file=rows.files, row=np.array(rows.rows))
    for name in ("target", "prediction"):
        if getattr(rows, name) is not None:
            out[name] = getattr(rows, name)
    if rows.probabilities is not None:
        out.update({f"p_{name}": rows.probabilities[:, i] for i, name in enumerate(rows.class_names)})
    if rows.tensor is not None:
        flat = rows.tensor.reshape(len(rows.index), -1)
        out.update({f"{rows.name}_{i}": flat[:, i] for i in range(flat.shape[1])})
    return out


def write(rows: Rows, path: str) -> None:
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npz":
        buf = io.BytesIO()
        np.savez(buf, **_arrays(rows))
        data = buf.getvalue()
    elif suffix == ".jsonl":
        data = "".join(json.dumps(r) + "\n" for r in _records(rows)).encode()
    else:
        data = _csv_text(columns(rows)).encode()
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    write_output(path, data)


def _csv_text(cols: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    w.writerows(zip(*cols.values()))
    return buf.getvalue()


def _records(rows: Rows):
    """One JSON object per example: its index, file and row, target, prediction, probabilities
    (a list, in class order) or the tensor (nested lists)."""
    for i in range(len(rows.index)):
        r = {"index": int(rows.index[i])}
        if rows.files is not None:
            r.update(file=rows.files[i], row=rows.rows[i])
        for name in ("target", "prediction", "probabilities"):
            if getattr(rows, name) is not None:
                r[name] = _plain(getattr(rows, name)[i])
        if rows.tensor is not None:
            r[rows.name] = _plain(rows.tensor[i])
        yield r


def _plain(a):
    """A number or an array as JSON values; a float32 as its shortest form, not float64's digits."""
    a = np.asarray(a)
    if a.ndim:
        return [_plain(x) for x in a]
    return float(str(a)) if a.dtype.kind == "f" else a.item()


def _arrays(rows: Rows) -> dict:
    out = {"index": rows.index}
    if rows.files is not None:
        out.update(file=np.array(rows.files), row=np.array(rows.rows))
    for name in ("target", "prediction", "probabilities"):
        if getattr(rows, name) is not None:
            out[name] = getattr(rows, name)
    if rows.probabilities is not None:
        out["class_names"] = np.array(rows.class_names)
    if rows.tensor is not None:
        out[rows.name] = rows.tensor
    return out


# ---------------------------------------------------------------------- what is printed

def show(rows: Rows, n: int = SHOWN) -> str:
    """The first `n` rows as an aligned table."""
    head = ["index"] + (["file", "row"] if rows.files is not None else []) + \
        (["target"] if rows.target is not None else [])
    if rows.probabilities is not None:
        head += ["prediction", "probability"]
    elif rows.prediction is not None:
        head += ["prediction"]
    else:
        head += [f"{rows.name} {list(rows.tensor.shape[1:])}"]
    lines = [head] + [_cells(rows, i) for i in range(min(n, len(rows.index)))]
    widths = [max(len(line[c]) for line in lines) for c in range(len(head))]
    text = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)
    more = len(rows.index) - n
    return text + (f"\n... and {more} more row{'s' if more != 1 else ''}" if more > 0 else "")


def _cells(rows: Rows, i: int) -> list[str]:
    cells = [str(rows.index[i])]
    if rows.files is not None:
        cells += [rows.files[i], str(rows.rows[i])]
    if rows.target is not None:
        cells.append(_value(rows.target[i], rows))
    if rows.probabilities is not None:
        cells += [_value(rows.prediction[i], rows), f"{rows.probabilities[i].max():.4f}"]
    elif rows.prediction is not None:
        cells.append(f"{rows.prediction[i]:.6g}")
    else:
        flat = rows.tensor[i].reshape(-1)
        cells.append(" ".join(f"{v:.4g}" for v in flat[:4]) + (" ..." if flat.size > 4 else ""))
    return cells


def _value(v, rows: Rows) -> str:
    """A target or predicted class as its name (`7`, `setosa`), or a value."""
    if rows.class_names and float(v) == int(v) and 0 <= int(v) < len(rows.class_names):
        return rows.class_names[int(v)]
    return f"{float(v):.6g}" if isinstance(v, (float, np.floating)) else str(v)


def _summary(rows: Rows) -> dict:
    """accuracy (classes) or mae and rmse (values), recomputed from the rows, when targets are known."""
    if rows.target is None or rows.tensor is not None:
        return {}
    if rows.probabilities is not None:
        keep = rows.target >= 0   # -100: cross_entropy's ignore_index, as the metrics skip it
        correct, counted = int((rows.prediction[keep] == rows.target[keep]).sum()), int(keep.sum())
        return {"accuracy": correct / max(counted, 1), "correct": correct, "counted": counted}
    diff = rows.prediction.astype(np.float64) - rows.target.astype(np.float64)
    return {"mae": float(np.abs(diff).mean()), "rmse": float(np.sqrt((diff * diff).mean()))}


def _summary_line(rows: Rows, summary: dict, where: str, path: str) -> str:
    n = len(rows.index)
    text = f"{n} example{'s' if n != 1 else ''} of {where}"
    if "accuracy" in summary:
        text += f": accuracy {summary['accuracy']:.4f} ({summary['correct']} / {summary['counted']})"
    elif "mae" in summary:
        text += f": mean absolute error {summary['mae']:.6g}, root mean squared error {summary['rmse']:.6g}"
    return text + f"; wrote {path}"


__all__ = ["FORMATS", "PredictOptions", "Rows", "choose_model", "columns", "model_fields", "network", "predict",
           "show", "write"]
