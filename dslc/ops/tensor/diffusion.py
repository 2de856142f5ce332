"""Diffusion's noise schedules and their indexing by a batch of timesteps: `beta_schedule` (the
variances β_1 .. β_T of Ho et al.'s linear schedule or Nichol & Dhariwal's cosine one), `cumprod`
(ᾱ_t = ∏ (1 − β_s)) and `extract` (table[t] shaped to broadcast against a batch, as
openai/improved-diffusion's `_extract_into_tensor`)."""
from __future__ import annotations

import math

from ...ir.dims import Sym
from ...ir.types import FLOAT_DTYPES, TensorType
from .. import checks
from ..ptypes import INT, TENSOR, Str
from ..registry import Example, OpDef, ParamSpec, S, ShapeError, TorchFunction, helper, register
from ..shapes import norm_dim
from .common import ANY_DTYPE

SCHEDULES = ("linear", "cosine")
LINEAR_BETAS = (1e-4, 0.02)     # Ho et al. 2020, for T = 1000
COSINE_OFFSET = 0.008           # Nichol & Dhariwal 2021's s
MAX_BETA = 0.999                # ... and their clip, so that no step destroys the signal outright


def beta_values(schedule: str, steps: int):
    """β_1 .. β_T in float64 (numpy), as the papers' code computes them."""
    import numpy as np
    if schedule == "linear":
        return np.linspace(LINEAR_BETAS[0], LINEAR_BETAS[1], steps, dtype=np.float64)
    t = np.arange(steps + 1, dtype=np.float64) / steps
    f = np.cos((t + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
    return np.minimum(1 - f[1:] / f[:-1], MAX_BETA)


def _beta_src(e) -> str:
    """float64 as the papers compute them, then float32: the same numbers as `beta_values`."""
    steps, dev = e.fmt(e["steps"]), f", device={e.device}" if e.device else ""
    if e["schedule"] == "linear":
        lo, hi = LINEAR_BETAS
        return f"torch.linspace({lo}, {hi}, {steps}, dtype=torch.float64{dev}).float()"
    return f"cosine_betas({steps}{dev})"


helper("cosine_betas", f'''
    def cosine_betas(steps: int, s: float = {COSINE_OFFSET}, max_beta: float = {MAX_BETA}, device=None):
        """Nichol & Dhariwal's cosine schedule: beta_t = 1 - abar_t / abar_(t-1) for
        abar_t = cos((t / steps + s) / (1 + s) * pi / 2) ** 2, clipped at max_beta; float64, then float32."""
        t = torch.arange(steps + 1, dtype=torch.float64, device=device) / steps
        f = torch.cos((t + s) / (1 + s) * torch.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=max_beta).float()
''')


def _beta_onnx(g, n):
    return [g.const(beta_values(n["schedule"], int(n["steps"])).astype("float32"), "float32", hint="betas")]


register(OpDef(
    name="beta_schedule", kind="function", family="tensor",
    doc="The variances β_1 .. β_T of a diffusion's noise, float32 [steps]: `\"linear\"` from 1e-4 to 0.02 (Ho et "
        "al. 2020), or `\"cosine\"`, 1 − ᾱ_t / ᾱ_{t−1} for ᾱ_t = cos²((t/T + 0.008) / 1.008 · π/2) clipped at "
        "0.999 (Nichol & Dhariwal 2021); computed in float64. ᾱ is `cumprod(1 - betas, 0)`. `dslc sample` "
        "reads the plan's schedule from it.",
    params=(ParamSpec("schedule", Str(SCHEDULES)), ParamSpec("steps", INT, check=checks.positive)),
    infer=lambda b: [TensorType((b["steps"],), "float32")], macs=lambda b, out: 0,
    torch=TorchFunction(_beta_src, helpers=lambda a: ("cosine_betas",) if a["schedule"] == "cosine" else ()), onnx=_beta_onnx,
    examples=(Example({"schedule": "linear", "steps": 10}), Example({"schedule": "cosine", "steps": 12})),
    arbitrary=lambda d: Example({"schedule": d.choice(list(SCHEDULES)), "steps": d.int(1, 50)}),
))


def _cumprod_infer(b):
    if b.x.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"`cumprod` takes floating-point values, got {b.x.dtype}", code="E0310", arg="input")
    if not b.x.rank:
        raise ShapeError("`cumprod` needs a tensor of one dimension or more", code="E0402", arg="input")
    norm_dim(b["dim"], b.x.rank)
    return [b.x]


def _cumprod_onnx(g, n):
    """exp(CumSum(log x)) is inexact and fails at 0: a Loop would be exact but heavy. ONNX has no
    CumProd, so the product of each prefix is taken as ReduceProd over a lower-triangular mask."""
    import numpy as np
    axis = norm_dim(n["dim"], n.x.rank)
    size = n.x.shape[axis]
    dtype = n.outputs[0].dtype
    x = n.inputs[0]
    moved = g.op("Transpose", [x], perm=_move_last(n.x.rank, axis)) if axis != n.x.rank - 1 else x
    rows = g.op("Unsqueeze", [moved, g.ints([-2])])                       # [..., 1, n]
    if isinstance(size, Sym):   # a run-time length (`T`): the mask from its positions, as a causal mask is made
        positions = g.op("Range", [g.const(0, dtype="int64"), g.op("Squeeze", [g.dim(size)]), g.const(1, dtype="int64")])
        mask = g.op("GreaterOrEqual", [g.op("Unsqueeze", [positions, g.ints([1])]),
                                       g.op("Unsqueeze", [positions, g.ints([0])])])   # [i, j]: j <= i
        picked = g.op("Where", [mask, rows, g.const(1.0, dtype=dtype)])    # [..., n, n]
    else:
        mask = np.tril(np.ones((int(size), int(size)), dtype=bool))       # [i, j]: j <= i
        ones = g.const(np.ones((int(size), int(size))), dtype)
        picked = g.op("Where", [g.const(mask, "bool"), rows, ones])     # [..., n, n]
    y = g.op("ReduceProd", [picked, g.ints([-1])], keepdims=0)
    if axis != n.x.rank - 1:
        y = g.op("Transpose", [y], perm=_move_last(n.x.rank, axis, back=True))
    return [y]


def _move_last(rank: int, axis: int, back: bool = False) -> list:
    perm = [d for d in range(rank) if d != axis] + [axis]
    return [perm.index(d) for d in range(rank)] if back else perm


register(OpDef(
    name="cumprod", kind="function", family="reduce",
    doc="Running products along `dim` (torch.cumprod) of floating-point values: a diffusion's "
        "ᾱ_t = `cumprod(1 - betas, 0)`.",
    params=(ParamSpec("input", TENSOR), ParamSpec("dim", INT)), dtypes=FLOAT_DTYPES,
    infer=_cumprod_infer, macs=lambda b, out: 0, onnx=_cumprod_onnx,
    torch=TorchFunction(lambda e: f"{e.arg('input')}.cumprod({e.fmt(e.args['dim'])})"),
    examples=(Example({"input": S(6, values=(0.5, 1.0)), "dim": 0}), Example({"input": S(2, 5, 3), "dim": 1})),
    arbitrary=lambda d: Example({"input": S(*d.shape(1, 3, 1, 5), values=(0.5, 1.5)), "dim": d.choice([0, -1])}),
))


def _extract_infer(b):
    table, t, like = b.x, b["t"].type, b["like"].type
    if table.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"`extract` reads a floating-point table, got {table.dtype}", code="E0310", arg="input")
    if table.rank != 1:
        raise ShapeError(f"`extract` reads a table of one dimension [T], got {table.shape_str()}", code="E0402",
                         arg="input")
    if t.rank != 1 or t.dtype not in ("int64", "int32"):
        raise ShapeError(f"`extract`'s timesteps are int64 [B], got {t}", code="E0310", arg="t")
    if not like.rank:
        raise ShapeError("`extract` shapes its result like a batch [B, ...], got a scalar", code="E0402", arg="like")
    return [TensorType((t.shape[0],) + (1,) * (like.rank - 1), table.dtype)]


def _extract_src(e) -> str:
    ones = ", 1" * (e.args["like"].type.rank - 1)
    return f"{e.arg('input')}[{e.arg('t')}].view(-1{ones})"


def _extract_onnx(g, n):
    rank = n["like"].type.rank
    y = g.op("Gather", [n.inputs[0], n.tensor("t")], axis=0)
    return [g.op("Unsqueeze", [y, g.ints(list(range(1, rank)))]) if rank > 1 else g.op("Identity", [y])]


register(OpDef(
    name="extract", kind="function", family="tensor",
    doc="`input[t]` of a table [T] at a batch of timesteps t [B] (int64), shaped [B, 1, ...] to broadcast against "
        "`like` [B, ...] (improved-diffusion's `_extract_into_tensor`): `extract(alpha_bar, t, batch.x) * batch.x`.",
    params=(ParamSpec("input", TENSOR), ParamSpec("t", TENSOR), ParamSpec("like", TENSOR)), dtypes=ANY_DTYPE,
    infer=_extract_infer, macs=lambda b, out: 0, torch=TorchFunction(_extract_src), onnx=_extract_onnx,
    examples=(Example({"input": S(10), "t": S(3, dtype="int64", values=(0, 10)), "like": S(3, 1, 4, 4)}),
              Example({"input": S(5), "t": S(4, dtype="int64", values=(0, 5)), "like": S(4, 2)})),
    arbitrary=lambda d: Example({"input": S(d.int(2, 9)), "t": S(3, dtype="int64", values=(0, 2)),
                                 "like": S(3, *d.shape(0, 3, 1, 4))}),
))
