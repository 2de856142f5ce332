"""Sampling a noise predictor ε(x_t, t) trained as DDPM trains it (Ho et al. 2020): from
x_T ~ N(0, I) down to x_0, over a subsequence τ_1 < ... < τ_S of the T timesteps.

- DDPM's ancestral steps (Algorithm 2, σ_t² = β_t), on the respaced schedule of
  improved-diffusion (Nichol & Dhariwal 2021) when S < T: ᾱ'_i = ᾱ_{τ_i},
  β'_i = 1 − ᾱ'_i / ᾱ'_{i−1}. With S = T it is Algorithm 2 itself.
- DDIM (Song et al. 2021, η = 0): x̂_0 = (x − √(1 − ᾱ_t) ε) / √ᾱ_t, then
  x ← √ᾱ_prev x̂_0 + √(1 − ᾱ_prev) ε, with ᾱ_prev = 1 after the last step.

The schedule is computed in float64 (as the papers' code does) and the images in float32.
Every draw comes from `generator`, so a seed gives the same samples.
"""
from __future__ import annotations

import numpy as np
import torch

from ..ops.tensor.diffusion import beta_values

SAMPLERS = ("ddpm", "ddim")


def betas(schedule: str, steps: int) -> np.ndarray:
    """β_1 .. β_T in float64: the numbers the plan's `beta_schedule(schedule, steps)` gives."""
    return beta_values(schedule, steps)


def timesteps(T: int, steps: int) -> list[int]:
    """`steps` timesteps of 0 .. T − 1, evenly spread and including both ends, in increasing order."""
    if steps == 1:
        return [T - 1]
    return sorted({int(round(v)) for v in np.linspace(0, T - 1, steps)})


def ddpm(eps, x: torch.Tensor, betas: np.ndarray, taus: list[int], generator) -> torch.Tensor:
    """Ancestral sampling: x_{i−1} = (x_i − β'_i / √(1 − ᾱ'_i) ε) / √(1 − β'_i) + √β'_i z, z ~ N(0, I)
    but at the last step."""
    abar = np.cumprod(1 - betas)[taus]
    for i in range(len(taus) - 1, -1, -1):
        beta = 1 - abar[i] / (abar[i - 1] if i > 0 else 1.0)
        e = eps(x, taus[i])
        x = (x - float(beta / np.sqrt(1 - abar[i])) * e) / float(np.sqrt(1 - beta))
        if i > 0:
            x = x + float(np.sqrt(beta)) * torch.randn(x.shape, generator=generator)
    return x


def ddim(eps, x: torch.Tensor, betas: np.ndarray, taus: list[int], generator=None) -> torch.Tensor:
    """Deterministic DDIM steps (η = 0): no draw after x_T."""
    abar = np.cumprod(1 - betas)[taus]
    for i in range(len(taus) - 1, -1, -1):
        e = eps(x, taus[i])
        x0 = (x - float(np.sqrt(1 - abar[i])) * e) / float(np.sqrt(abar[i]))
        prev = abar[i - 1] if i > 0 else 1.0
        x = float(np.sqrt(prev)) * x0 + float(np.sqrt(1 - prev)) * e
    return x
