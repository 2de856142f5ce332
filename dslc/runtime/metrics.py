"""Metrics of training plans (catalog.METRICS), accumulated over the batches of a split.

Classification: `prediction` holds one score per class `[N, C]`, or `[N, C, ...]` per position
with `target` `[N, ...]` class ids; negative targets (cross_entropy's ignore_index, -100) are
left out. The scores are logits, probabilities (after a softmax) or log-probabilities (after
log_softmax): `scores` says which, as the plan's graph shows it (frontend/producers.py).
A prediction with the target's own shape is one binary output per example: the logit of
class 1, or its probability after a sigmoid. It is class 1 when its probability is above the
metric's `threshold` (default 0.5, which is a logit above 0).

`accuracy` is the top-1 fraction correct, `top5` the fraction of targets among the min(5, C)
highest scores, `f1` the F1 score macro-averaged over the classes that occur in the targets or
the predictions (scikit-learn's `f1_score(average="macro")`), `perplexity` exp of the mean
cross-entropy of the targets (word_language_model's exp(mean loss), summed in float64 over
every target; probabilities are logged first). A confusion matrix `[C, C]` (rows: true class)
is kept per threshold in use.

Regression: `mse` and `mae` average over every element.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import catalog

CLASSIFICATION = ("accuracy", "top5", "f1", "perplexity")
REGRESSION = ("mse", "mae")
HIGHER_IS_BETTER = frozenset(("accuracy", "top5", "f1"))
SCORES = ("logits", "probabilities", "log_probabilities")
THRESHOLD = 0.5


class MetricSet:
    def __init__(self, names: list[str], task: str, scores: str = "logits", thresholds: dict | None = None):
        unknown = [n for n in names if n not in catalog.METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; metrics: {', '.join(catalog.METRICS)}")
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        if scores not in SCORES:
            raise ValueError(f"scores must be one of {', '.join(SCORES)}, got {scores!r}")
        allowed = CLASSIFICATION if task == "classification" else REGRESSION
        wrong = [n for n in names if n not in allowed]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} cannot be computed for {task}; use {', '.join(allowed)}")
        self.names = [str(n) for n in names]
        self.task = task
        self.scores = scores
        # the binary decision of each metric; accuracy's (else the first) is the confusion matrix shown
        self.thresholds = {n: float((thresholds or {}).get(n, THRESHOLD)) for n in self.names}
        self.reset()

    def reset(self) -> None:
        self._confusion = {}     # threshold (None: argmax) -> [C, C] int64 on the predictions' device
        self._top5 = None
        self._nll = 0.0          # perplexity: the summed cross-entropy of the targets
        self._count = 0          # examples (classification) or elements (regression)
        self._sq = None
        self._abs = None
        self._binary = None

    @torch.no_grad()
    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        prediction = prediction.detach()
        target = target.detach()
        if self.task == "regression":
            diff = prediction.double() - target.double().reshape(prediction.shape)
            sq, ab = (diff * diff).sum(), diff.abs().sum()
            self._sq = sq if self._sq is None else self._sq + sq
            self._abs = ab if self._abs is None else self._abs + ab
            self._count += diff.numel()
            return
        scores, kind = prediction, self.scores
        self._binary = prediction.shape == target.shape
        if self._binary:   # one output per example: log-probabilities of classes 0 and 1
            scores, kind = binary_log_probabilities(prediction, self.scores), "log_probabilities"
            target = target.round() if target.is_floating_point() else target
        elif prediction.dim() > 2:
            scores = prediction.movedim(1, -1)
        c = scores.shape[-1]
        scores = scores.reshape(-1, c)
        target = target.reshape(-1).long()
        keep = target >= 0
        if not bool(keep.all()):
            scores, target = scores[keep], target[keep]
        self._check_classes(c, target, scores.device)
        for key in self._decisions():
            pred = scores.argmax(1) if key is None else (scores[:, 1].exp() > key).long()
            self._confusion[key] += torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)
        if "top5" in self.names:
            top = scores.topk(min(5, c), dim=1).indices
            self._top5 += (top == target[:, None]).any(1).sum()
        if "perplexity" in self.names:
            logp = torch.log_softmax(as_log(scores.double(), kind), 1)
            self._nll += float(-logp.gather(1, target[:, None]).sum())
        self._count += target.numel()

    def state(self) -> dict:
        """What has been accumulated, as JSON (a checkpoint taken mid-epoch keeps the training split's)."""
        return {"confusion": [[k, m.tolist()] for k, m in self._confusion.items()],
                "top5": int(self._top5) if self._top5 is not None else None, "nll": self._nll, "count": self._count,
                "sq": float(self._sq) if self._sq is not None else None,
                "abs": float(self._abs) if self._abs is not None else None, "binary": self._binary}

    def load_state(self, state: dict, device=None) -> None:
        self._confusion = {k: torch.tensor(m, dtype=torch.int64, device=device) for k, m in state["confusion"]}
        self._top5 = torch.tensor(state["top5"], device=device) if state["top5"] is not None else None
        self._nll, self._count, self._binary = float(state["nll"]), int(state["count"]), state["binary"]
        self._sq = torch.tensor(state["sq"], dtype=torch.float64) if state["sq"] is not None else None
        self._abs = torch.tensor(state["abs"], dtype=torch.float64) if state["abs"] is not None else None

    def _decisions(self) -> list:
        """The thresholds of the binary decisions in use, or [None] (the top-1 class) for C classes."""
        if not self._binary:
            return [None]
        return list(dict.fromkeys(self.thresholds[n] for n in self.names)) or [THRESHOLD]

    def _check_classes(self, c: int, target: torch.Tensor, device) -> None:
        if not self._confusion:
            for key in self._decisions():
                self._confusion[key] = torch.zeros(c, c, dtype=torch.int64, device=device)
            self._top5 = torch.zeros((), dtype=torch.int64, device=device)
        elif next(iter(self._confusion.values())).shape[0] != c:
            raise ValueError(f"predictions have {c} classes, earlier ones "
                             f"{next(iter(self._confusion.values())).shape[0]}")
        if target.numel() and (int(target.max()) >= c):
            raise ValueError(f"a target class id is {int(target.max())}, but the predictions have {c} classes")

    def _matrix(self, name: str | None):
        if not self._confusion:
            return None
        key = self.thresholds.get(name) if self._binary else None
        return self._confusion.get(key, next(iter(self._confusion.values())))

    def compute(self) -> dict[str, float]:
        out = {}
        n = self._count
        if self.task == "regression":
            for name in self.names:
                total = self._sq if name == "mse" else self._abs
                out[name] = float(total) / n if n else float("nan")
            return out
        for name in self.names:
            cm = self._matrix(name)
            if not n:
                out[name] = float("nan")
            elif name == "accuracy":
                out[name] = float(cm.double().diagonal().sum()) / n
            elif name == "top5":
                out[name] = float(self._top5) / n
            elif name == "f1":
                out[name] = macro_f1(cm.double())
            elif name == "perplexity":
                mean = self._nll / n
                out[name] = math.exp(mean) if mean < 709 else math.inf   # past float64's range
        return out

    def confusion(self):
        """The confusion matrix `[C, C]` (rows: true class, columns: predicted), or None: at accuracy's
        threshold for binary outputs (else the first metric's)."""
        if self.task != "classification" or not self._confusion:
            return None
        name = "accuracy" if "accuracy" in self.names else (self.names[0] if self.names else None)
        return self._matrix(name).cpu().numpy()


def binary_log_probabilities(x: torch.Tensor, scores: str) -> torch.Tensor:
    """One binary output per example as the log-probabilities of classes 0 and 1 (a last dimension
    of 2), in float64: log σ(-x), log σ(x) for a logit; log(1 - p), log p for a probability."""
    x = x.double()
    if scores == "logits":
        return torch.stack([F.logsigmoid(-x), F.logsigmoid(x)], -1)
    p = x.exp() if scores == "log_probabilities" else x
    p = p.clamp(0.0, 1.0)
    return torch.stack([torch.log1p(-p), torch.log(p)], -1)


def as_log(scores: torch.Tensor, kind: str) -> torch.Tensor:
    """Scores on a scale that log_softmax turns into log-probabilities: probabilities are logged
    (0 becomes the smallest float64's log, not -inf, so a sure miss stays finite)."""
    if kind == "probabilities":
        return torch.log(scores.clamp(min=torch.finfo(scores.dtype).tiny))
    return scores


def macro_f1(cm: torch.Tensor) -> float:
    """Mean F1 over the classes that occur as targets or as predictions."""
    tp = cm.diagonal()
    true, pred = cm.sum(1), cm.sum(0)
    present = (true + pred) > 0
    if not bool(present.any()):
        return float("nan")
    f1 = 2 * tp / (true + pred).clamp(min=1)
    return float(f1[present].mean())


__all__ = ["HIGHER_IS_BETTER", "MetricSet", "as_log", "binary_log_probabilities", "macro_f1"]
