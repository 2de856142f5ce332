"""Metrics of training plans (catalog.METRICS), accumulated over the batches of a split.

Classification: `prediction` holds scores (logits) `[N, C]`, or `[N, C, ...]` per position
with `target` `[N, ...]` class ids; negative targets (cross_entropy's ignore_index, -100)
are left out. A prediction with the target's own shape is one binary logit per
example (class 1 when > 0). `accuracy` is the top-1 fraction correct, `top5` the fraction
of targets among the min(5, C) highest scores, `f1` the F1 score macro-averaged over the
classes that occur in the targets or the predictions (scikit-learn's
`f1_score(average="macro")`), `perplexity` exp of the mean cross-entropy of the targets
(word_language_model's exp(mean loss), summed in float64 over every target). A confusion matrix `[C, C]` (rows: true class) is kept.

Regression: `mse` and `mae` average over every element.
"""
from __future__ import annotations

import math

import torch

from .. import catalog

CLASSIFICATION = ("accuracy", "top5", "f1", "perplexity")
REGRESSION = ("mse", "mae")
HIGHER_IS_BETTER = frozenset(("accuracy", "top5", "f1"))


class MetricSet:
    def __init__(self, names: list[str], task: str):
        unknown = [n for n in names if n not in catalog.METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; metrics: {', '.join(catalog.METRICS)}")
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        allowed = CLASSIFICATION if task == "classification" else REGRESSION
        wrong = [n for n in names if n not in allowed]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} cannot be computed for {task}; use {', '.join(allowed)}")
        self.names = list(names)
        self.task = task
        self.reset()

    def reset(self) -> None:
        self._confusion = None   # [C, C] int64 on the predictions' device
        self._top5 = None
        self._nll = 0.0          # perplexity: the summed cross-entropy of the targets
        self._count = 0          # examples (classification) or elements (regression)
        self._sq = None
        self._abs = None

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
        if prediction.shape == target.shape:   # one binary logit per example
            prediction = torch.stack([torch.zeros_like(prediction), prediction], 1)
            target = target.round() if target.is_floating_point() else target
        if prediction.dim() > 2:
            prediction = prediction.movedim(1, -1)
        c = prediction.shape[-1]
        scores = prediction.reshape(-1, c)
        target = target.reshape(-1).long()
        keep = target >= 0
        if not bool(keep.all()):
            scores, target = scores[keep], target[keep]
        if self._confusion is None:
            self._confusion = torch.zeros(c, c, dtype=torch.int64, device=scores.device)
            self._top5 = torch.zeros((), dtype=torch.int64, device=scores.device)
        elif self._confusion.shape[0] != c:
            raise ValueError(f"predictions have {c} classes, earlier ones {self._confusion.shape[0]}")
        if target.numel() and (int(target.max()) >= c):
            raise ValueError(f"a target class id is {int(target.max())}, but the predictions have {c} classes")
        pred = scores.argmax(1)
        self._confusion += torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)
        if "top5" in self.names:
            top = scores.topk(min(5, c), dim=1).indices
            self._top5 += (top == target[:, None]).any(1).sum()
        if "perplexity" in self.names:
            logp = torch.log_softmax(scores.double(), 1)
            self._nll += float(-logp.gather(1, target[:, None]).sum())
        self._count += target.numel()

    def compute(self) -> dict[str, float]:
        out = {}
        n = self._count
        if self.task == "regression":
            for name in self.names:
                total = self._sq if name == "mse" else self._abs
                out[name] = float(total) / n if n else float("nan")
            return out
        cm = self._confusion.double() if self._confusion is not None else None
        for name in self.names:
            if not n:
                out[name] = float("nan")
            elif name == "accuracy":
                out[name] = float(cm.diagonal().sum()) / n
            elif name == "top5":
                out[name] = float(self._top5) / n
            elif name == "f1":
                out[name] = macro_f1(cm)
            elif name == "perplexity":
                mean = self._nll / n
                out[name] = math.exp(mean) if mean < 709 else math.inf   # past float64's range
        return out

    def confusion(self):
        """The confusion matrix `[C, C]` (rows: true class, columns: predicted), or None."""
        if self.task != "classification" or self._confusion is None:
            return None
        return self._confusion.cpu().numpy()


def macro_f1(cm: torch.Tensor) -> float:
    """Mean F1 over the classes that occur as targets or as predictions."""
    tp = cm.diagonal()
    true, pred = cm.sum(1), cm.sum(0)
    present = (true + pred) > 0
    if not bool(present.any()):
        return float("nan")
    f1 = 2 * tp / (true + pred).clamp(min=1)
    return float(f1[present].mean())


__all__ = ["HIGHER_IS_BETTER", "MetricSet", "macro_f1"]
