"""A phase's `prune(...)` statements, through torch.nn.utils.prune.

At the start of the phase each statement prunes the convolution and linear weights under its
path: torch re-parametrizes `weight` as `weight_orig * weight_mask` (a parameter and a buffer),
so the phase fine-tunes with the mask in force and its checkpoints hold both, which is what an
exact resume needs. At the end of the phase `prune.remove` makes the zeros permanent: the model
has its plain `weight` again, with the pruned entries zero.
"""
from __future__ import annotations

import torch.nn.utils.prune as tprune
from torch import nn

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
MASK, ORIG = "_mask", "_orig"


def layers(model: nn.Module, path: str) -> list[tuple[str, nn.Module]]:
    """The prunable layers at `path` in `model` (all of them for ""), with their names in it."""
    root = model.get_submodule(path) if path else model
    return [(".".join(x for x in (path, n) if x), m) for n, m in root.named_modules() if isinstance(m, PRUNABLE)]


def apply(models: dict, prunes: list) -> list[str]:
    """Prune the models as the statements say, in order; the names of the pruned weights
    (`conv2.weight`, or `G.conv2.weight` with several models)."""
    pruned = []
    for p in prunes:
        key, path = p.path[0], ".".join(p.path[1:])
        found = layers(models[key], path)
        if p.global_:
            tprune.global_unstructured([(m, "weight") for _, m in found], pruning_method=tprune.L1Unstructured,
                                       amount=p.amount)
        else:
            for _, m in found:
                _prune_one(m, p)
        pruned += [named(models, key, name + ".weight") for name, _ in found]
    return list(dict.fromkeys(pruned))


def _prune_one(module: nn.Module, p) -> None:
    if p.method == "ln_structured":
        tprune.ln_structured(module, "weight", amount=p.amount, n=_norm(p.n), dim=p.dim)
    elif p.method == "random_unstructured":
        tprune.random_unstructured(module, "weight", amount=p.amount)
    else:
        tprune.l1_unstructured(module, "weight", amount=p.amount)


def _norm(n: float):
    return int(n) if float(n).is_integer() else n


def named(models: dict, key: str, name: str) -> str:
    return f"{key}.{name}" if len(models) > 1 else name


def reparametrize(model: nn.Module, names) -> None:
    """Give `model` the pruned form of a checkpoint whose state dict has `NAME_orig` and `NAME_mask`
    (`names`: its keys): an all-ones mask on each such weight, which loading the checkpoint replaces."""
    for key in names:
        if not key.endswith(MASK):
            continue
        path, _, tensor = key[:-len(MASK)].rpartition(".")
        module = model.get_submodule(path)
        if not tprune.is_pruned(module) or tensor + ORIG not in dict(module.named_parameters(recurse=False)):
            tprune.identity(module, tensor)


def make_permanent(models: dict) -> bool:
    """`prune.remove` on every pruned weight: the zeros stay, the mask goes; whether any was pruned."""
    found = False
    for model in models.values():
        for module in model.modules():
            for hook in list(module._forward_pre_hooks.values()):
                if isinstance(hook, tprune.BasePruningMethod):
                    tprune.remove(module, hook._tensor_name)
                    found = True
    return found


def fold(state: dict) -> dict:
    """A state dict of pruned modules in its plain form: `NAME = NAME_orig * NAME_mask`."""
    out = {}
    for k, v in state.items():
        if k.endswith(ORIG) and k[:-len(ORIG)] + MASK in state:
            out[k[:-len(ORIG)]] = v * state[k[:-len(ORIG)] + MASK]
        elif not (k.endswith(MASK) and k[:-len(MASK)] + ORIG in state):
            out[k] = v
    return out


def sparsity(models: dict, names: list[str]) -> dict:
    """The fraction of zeros of each weight in `names`, and of all of them together (`total`)."""
    state = {}
    for key, model in models.items():
        for n, t in fold(dict(model.state_dict())).items():
            state[named(models, key, n)] = t
    out, zeros, total = {}, 0, 0
    for name in names:
        t = state[name]
        z = int((t == 0).sum())
        out[name] = round(z / t.numel(), 6)
        zeros, total = zeros + z, total + t.numel()
    out["total"] = round(zeros / max(total, 1), 6)
    return out


def all_sparsity(model: nn.Module) -> tuple[int, float]:
    """A model's parameter count and the fraction of its weights that are zero."""
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    zeros = sum(int((p == 0).sum()) for p in params)
    return n, zeros / max(n, 1)


__all__ = ["PRUNABLE", "all_sparsity", "apply", "fold", "layers", "make_permanent", "named", "reparametrize", "sparsity"]
