"""Nearest-neighbour sanity check of a diffusion run's samples: how far each sample is from its
nearest training digit (Euclidean, over the 64 pixels in [-1, 1]), against the same distance for
random images. Samples copied from the training set would be at 0; noise is far from every digit.

    OMP_NUM_THREADS=1 python examples/diffusion/nearest.py runs/ddpm ddpm 1000
"""
import sys

import torch
from sklearn.datasets import load_digits

from dslc.api import sample
from dslc.runtime.sample import SampleOptions

run, sampler, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
train = torch.tensor(load_digits().data / 16 * 2 - 1, dtype=torch.float32)          # [1797, 64] in [-1, 1]
drawn = sample("examples/diffusion/diffusion.dl", "ddpm",
               SampleOptions(run=run, n=64, seed=0, sampler=sampler, steps=steps, output="/tmp/nearest.png"))
samples = drawn["samples"].reshape(64, 64).clamp(-1, 1)   # as samples.png shows them
g = torch.Generator().manual_seed(0)
uniform = torch.rand(64, 64, generator=g) * 2 - 1
digits = train[torch.randperm(len(train), generator=g)[:64]]
shuffled = digits[:, torch.randperm(64, generator=g)]                # digits' own pixels, in another order


def nearest(a: torch.Tensor, skip_self: bool = False) -> torch.Tensor:
    d = torch.cdist(a, train)
    if skip_self:
        d[d == 0] = float("inf")
    return d.min(1).values


print(f"samples ({sampler}, {steps} steps): mean {nearest(samples).mean():.2f}, min {nearest(samples).min():.2f}")
print(f"uniform noise in [-1, 1]: mean {nearest(uniform).mean():.2f}")
print(f"training digits with their pixels shuffled: mean {nearest(shuffled).mean():.2f}")
print(f"training digits, to the nearest other one: mean {nearest(digits, skip_self=True).mean():.2f}")
print(f"pixels: samples mean {samples.mean():.3f} std {samples.std():.3f}; "
      f"data mean {train.mean():.3f} std {train.std():.3f}")
