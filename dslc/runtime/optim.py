"""Optimizers of training plans: a catalog entry (`AdamW(lr=1e-3, lr_mult={...})`) built
as the torch.optim class of the same name.

`lr_mult` maps dotted layer-name prefixes of parameter names (as in the model's state
dict: "backbone" covers "backbone.layer1.conv.weight") to learning-rate multipliers.
The longest prefix that matches on a dot boundary wins; parameters that no prefix
matches get 1. There is one parameter group per distinct multiplier (in order of first
appearance), with `lr = lr * mult` and the multiplier kept in the group as `lr_mult`,
which the schedules read. Frozen parameters (requires_grad=False) are left out.
"""
from __future__ import annotations

import torch

from .. import catalog

# Catalog arguments that are dslc's own and not torch's.
OWN_ARGS = ("lr_mult",)


def plain_args(args: dict) -> dict:
    """The catalog arguments torch's constructor takes, as plain Python values."""
    out = {}
    for k, v in args.items():
        if k in OWN_ARGS:
            continue
        out[k] = _plain(v)
    return out


def _plain(v):
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    if isinstance(v, (int, float)):
        return float(v)
    return v


def multiplier(name: str, lr_mult: dict | None) -> float:
    """The multiplier of the parameter `name`: that of the longest matching layer prefix, else 1."""
    best, best_len = 1.0, -1
    for prefix, mult in (lr_mult or {}).items():
        if prefix and (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
            best, best_len = float(mult), len(prefix)
    return best


def param_groups(named_params, lr: float, lr_mult: dict | None = None) -> list[dict]:
    """Trainable parameters in one group per distinct multiplier (first appearance order);
    a parameter shared under several names is taken once, under its first name."""
    groups: dict[float, dict] = {}
    seen = set()
    for name, p in named_params:
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        mult = multiplier(name, lr_mult)
        g = groups.setdefault(mult, {"params": [], "param_names": [], "lr": lr * mult, "lr_mult": mult})
        g["params"].append(p)
        g["param_names"].append(name)
    return list(groups.values())


def build_optimizer(name: str, args: dict, named_params: list[tuple[str, torch.nn.Parameter]],
                    lr_mult: dict[str, float] | None = None) -> torch.optim.Optimizer:
    """torch.optim.`name` over the trainable parameters of `named_params`, with the catalog
    arguments `args` (defaults filled in). `lr_mult` defaults to `args["lr_mult"]`."""
    if name not in catalog.OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; optimizers: {', '.join(catalog.OPTIMIZERS)}")
    defaults = {p.name: p.default for p in catalog.OPTIMIZERS[name].params}
    kwargs = plain_args({**defaults, **args})
    if lr_mult is None:
        lr_mult = args.get("lr_mult")
    groups = param_groups(list(named_params), kwargs["lr"], lr_mult)
    if not groups:
        raise ValueError(f"{name}: no trainable parameters (all are frozen)")
    return getattr(torch.optim, name)(groups, **kwargs)


__all__ = ["build_optimizer", "multiplier", "param_groups", "plain_args"]
