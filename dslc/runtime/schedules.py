"""Learning-rate schedules of training plans, wrapping torch.optim.lr_scheduler.

The training loop calls `after_step()` after every optimizer step and
`after_epoch(metrics)` after every epoch; each schedule acts on one of the two:

| schedule | when | what |
| --- | --- | --- |
| `step(step_size, gamma)` | epoch | StepLR |
| `multistep(milestones, gamma)` | epoch | MultiStepLR |
| `exponential(gamma)` | epoch | ExponentialLR |
| `cosine(min_lr)` | step | lr -> min_lr over the whole run (T = steps_per_epoch * epochs) |
| `one_cycle(max_lr, pct_start)` | step | OneCycleLR over the whole run |
| `warmup_cosine(warmup, min_lr)` | step | lr * s / warmup for s <= warmup, then cosine: min_lr at s = T |
| `linear_warmup(warmup)` | step | lr * min(1, s / warmup) |
| `reduce_on_plateau(factor, patience, mode)` | epoch | ReduceLROnPlateau on `val_loss`, or `train_loss` without a validation split |

`t` counts optimizer steps from 0, `s = t + 1` from 1; T = steps_per_epoch * epochs.
cosine is torch's CosineAnnealingLR(T_max=T) in closed form: step t runs at
min_lr + (lr - min_lr) * (1 + cos(pi * t / T)) / 2. The warm-ups start at lr / warmup
(step s = 1) and reach the full lr at step s = warmup; warmup_cosine then decays with
progress (s - warmup) / (T - warmup), so no step repeats the peak and the run's last
step (s = T) runs at min_lr. Steps past T keep the last lr. The closed-form schedules
(cosine and the warm-ups) are LambdaLR factors, so every parameter group is scaled
from its own initial lr: a group with `lr_mult` m runs at m times the plan's curve,
min_lr included. one_cycle's max_lr is multiplied by each group's `lr_mult` too; it cycles
momentum (torch's default) only when the optimizer has betas or a non-zero momentum.

`state_dict()` is JSON-serializable (torch's scheduler state, converted);
`load_state_dict()` also puts the schedule's current lr back into the optimizer, so a
resumed run continues the same curve whichever of the two states is loaded first.
"""
from __future__ import annotations

import math
import warnings
from collections import Counter

import torch
from torch.optim import lr_scheduler as L

from .. import catalog


class Schedule:
    """The schedule of a plan without one: the learning rate stays as it is."""

    name: str | None = None
    per_step = False

    def __init__(self, optimizer=None):
        self.optimizer = optimizer
        self.torch = None   # the wrapped torch scheduler

    def after_step(self) -> None:
        if self.per_step:
            self._step()

    def after_epoch(self, metrics: dict) -> None:
        if self.torch is not None and not self.per_step:
            self._step()

    def _step(self) -> None:
        self.torch.step()

    def lr(self) -> float:
        """The plan's learning rate now (that of a group with multiplier 1)."""
        g = self.optimizer.param_groups[0]
        mult = g.get("lr_mult", 1.0)
        return g["lr"] / mult if mult else g["lr"]

    def state_dict(self) -> dict:
        if self.torch is None:
            return {"name": self.name}
        return {"name": self.name, "torch": to_json(self.torch.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"the saved schedule is {state.get('name')!r}, this one {self.name!r}")
        if self.torch is None:
            return
        self.torch.load_state_dict(from_json(state["torch"]))
        self._restore_lr()

    def _restore_lr(self) -> None:
        for g, lr in zip(self.optimizer.param_groups, self.torch._last_lr):
            g["lr"] = lr


class _Torch(Schedule):
    def __init__(self, name: str, optimizer, sched, per_step: bool):
        super().__init__(optimizer)
        self.name, self.torch, self.per_step = name, sched, per_step


class _Capped(_Torch):
    """A per-step schedule over a fixed number of steps: steps past the end keep the last lr."""

    def __init__(self, name, optimizer, sched, total: int):
        super().__init__(name, optimizer, sched, True)
        self.total = total

    def _step(self) -> None:
        if self.torch.last_epoch < self.total:
            self.torch.step()

    after_step = _step   # a per-step schedule: one call a batch, not two


class _OneCycle(_Capped):
    def _restore_lr(self) -> None:
        # OneCycleLR's lr and momentum are closed forms of the step: recompute both
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lrs = self.torch.get_lr()
        for g, lr in zip(self.optimizer.param_groups, lrs):
            g["lr"] = lr


class _Plateau(Schedule):
    name = "reduce_on_plateau"

    def __init__(self, optimizer, sched):
        super().__init__(optimizer)
        self.torch = sched

    def after_epoch(self, metrics: dict) -> None:
        self.torch.step(float(plateau_value(metrics)))


def plateau_value(metrics: dict) -> float:
    """What reduce_on_plateau watches: val_loss, else train_loss."""
    for key in ("val_loss", "train_loss"):
        v = metrics.get(key)
        if v is not None:
            return v
    raise KeyError("reduce_on_plateau needs `val_loss` or `train_loss` in the epoch's metrics")


# ---------------------------------------------------------------- closed forms (factors of the initial lr)

def cosine_factor(t: int, total: int, min_ratio: float) -> float:
    progress = min(max(t / total, 0.0), 1.0) if total > 0 else 1.0
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_factor(t: int, warmup: int) -> float:
    return 1.0 if warmup <= 0 else min(1.0, (t + 1) / warmup)


def warmup_cosine_factor(t: int, warmup: int, total: int, min_ratio: float) -> float:
    s = t + 1   # the step's number from 1
    if s <= warmup:
        return s / warmup
    return cosine_factor(s - warmup, total - warmup, min_ratio)


def _factor(fn, *args):
    """A LambdaLR factor; a plain function, so torch saves none of it (the state is the step)."""
    return lambda t: fn(t, *args)


# ---------------------------------------------------------------- building

def build_schedule(name: str | None, args: dict, optimizer, *, steps_per_epoch: int, epochs: int) -> Schedule:
    """The schedule `name` (a catalog SCHEDULES key, or None for none) with its bound
    arguments `args` (defaults filled in) over `epochs` epochs of `steps_per_epoch`
    optimizer steps."""
    if name is None:
        return Schedule(optimizer)
    if name not in catalog.SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; schedules: {', '.join(catalog.SCHEDULES)}")
    a = {p.name: p.default for p in catalog.SCHEDULES[name].params}
    a.update(args)
    total = max(1, int(steps_per_epoch) * int(epochs))
    base_lr = float(optimizer.defaults["lr"])
    mults = [float(g.get("lr_mult", 1.0)) for g in optimizer.param_groups]
    if name == "step":
        return _Torch(name, optimizer, L.StepLR(optimizer, int(a["step_size"]), float(a["gamma"])), False)
    if name == "multistep":
        return _Torch(name, optimizer, L.MultiStepLR(optimizer, [int(m) for m in a["milestones"]],
                                                     float(a["gamma"])), False)
    if name == "exponential":
        return _Torch(name, optimizer, L.ExponentialLR(optimizer, float(a["gamma"])), False)
    if name == "reduce_on_plateau":
        return _Plateau(optimizer, L.ReduceLROnPlateau(optimizer, mode=str(a["mode"]), factor=float(a["factor"]),
                                                       patience=int(a["patience"])))
    if name == "one_cycle":
        peak = float(a["max_lr"]) if a["max_lr"] is not None else base_lr
        d = optimizer.defaults
        cycle = "betas" in d or float(d.get("momentum", 0.0) or 0.0) > 0
        sched = L.OneCycleLR(optimizer, max_lr=[peak * m for m in mults], total_steps=total,
                             pct_start=float(a["pct_start"]), cycle_momentum=cycle)
        return _OneCycle(name, optimizer, sched, total)
    min_ratio = float(a.get("min_lr", 0.0)) / base_lr
    if name == "cosine":
        factor = _factor(cosine_factor, total, min_ratio)
    elif name == "warmup_cosine":
        factor = _factor(warmup_cosine_factor, int(a["warmup"]), total, min_ratio)
    elif name == "linear_warmup":
        factor = _factor(warmup_factor, int(a["warmup"]))
    else:  # pragma: no cover - a catalog entry without a runtime
        raise NotImplementedError(f"schedule {name!r}")
    return _Capped(name, optimizer, L.LambdaLR(optimizer, factor), total)


# ---------------------------------------------------------------- JSON state

def to_json(v):
    """torch scheduler state as JSON values: Counters and non-finite floats are tagged."""
    if isinstance(v, Counter):
        return {"__counter__": [[to_json(k), n] for k, n in v.items()]}
    if isinstance(v, dict):
        if not all(isinstance(k, str) for k in v):
            raise TypeError(f"cannot save a dict with non-string keys: {list(v)!r}")
        return {k: to_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_json(x) for x in v]
    if isinstance(v, torch.Tensor):
        return to_json(v.tolist())
    if isinstance(v, bool) or v is None or isinstance(v, (str, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {"__float__": repr(v)}
    raise TypeError(f"cannot save a {type(v).__name__} in a schedule's state")


def from_json(v):
    if isinstance(v, dict):
        if set(v) == {"__counter__"}:
            return Counter({from_json(k): n for k, n in v["__counter__"]})
        if set(v) == {"__float__"}:
            return float(v["__float__"])
        return {k: from_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [from_json(x) for x in v]
    return v


__all__ = ["Schedule", "build_schedule", "cosine_factor", "from_json", "plateau_value", "to_json",
           "warmup_cosine_factor", "warmup_factor"]
