"""Momentum targets (`ema(model.encoder, decay=0.99)` in a step): BYOL's target network, MoCo's key encoder.

A target is a copy of a model, or of one of its blocks, made once the model has its initial
weights (after `init`). No gradient reaches it: its parameters do not require one. After each
optimizer step that updates its model, each floating-point parameter moves towards the live
one, θ_t ← d·θ_t + (1 − d)·θ; buffers (batch-norm statistics) are copied from the live block,
as the plan's `ema` does. Checkpoints hold its weights (`target.KEY.NAME`), so a resumed run
continues with the very same target.
"""
from __future__ import annotations

import copy

import torch

from .callbacks import Callback
from .checkpoint import under


class MomentumTarget:
    def __init__(self, live: torch.nn.Module, decay: float):
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.live = live
        self.decay = float(decay)
        self.module = copy.deepcopy(live)
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        d = self.decay
        mine = self.module.state_dict(keep_vars=True)
        for name, live in self.live.state_dict(keep_vars=True).items():
            if isinstance(live, torch.nn.Parameter) and live.is_floating_point():
                mine[name].mul_(d).add_(live.detach().to(mine[name].dtype), alpha=1.0 - d)
            else:
                mine[name].copy_(live.detach())

    def state_dict(self) -> dict:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, sd: dict) -> None:
        self.module.load_state_dict(sd)   # strict: a checkpoint of another target fails, named by the caller

    def reset(self) -> None:
        """Make the target the live block's copy again (the live block was given other weights)."""
        self.module.load_state_dict(self.live.state_dict())


def build_targets(plan, models: dict) -> dict:
    """KEY -> MomentumTarget for each of the plan's targets, copied from the models as they are now."""
    out = {}
    for key, t in plan.targets.items():
        model = models[t.model]
        out[key] = MomentumTarget(model.get_submodule(".".join(t.path)) if t.path else model, t.decay)
    return out


class MomentumTargets(Callback):
    """Updates the targets after each optimizer step of a step that trains their model, and keeps
    them in the checkpoints."""

    def __init__(self, plan, targets: dict):
        self.targets = {key: (plan.targets[key].model, t) for key, t in targets.items()}

    def on_optimizer_step(self, trainer, step) -> None:
        for model, t in self.targets.values():
            if model in step.trains:
                t.update()

    def on_save_checkpoint(self, trainer, state: dict, tensors: dict) -> None:
        for key, (_, t) in self.targets.items():
            tensors.update({f"target.{key}.{n}": v for n, v in t.state_dict().items()})

    def on_load_checkpoint(self, trainer, state: dict, tensors: dict) -> None:
        for key, (_, t) in self.targets.items():
            t.load_state_dict(under(tensors, f"target.{key}."))


__all__ = ["MomentumTarget", "MomentumTargets", "build_targets"]
