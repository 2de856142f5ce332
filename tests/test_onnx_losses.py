"""The losses' ONNX forms against torch on chosen inputs: the edge values the random conformance
test (test_onnx_ops) seldom or never reaches, compared with NaN counted as a value.

- probabilities at exactly 0 and 1 (bce's clamp at -100), logits of ±100 and beyond (bce_with_logits),
- cosine targets of exactly ±1 (and of other values, which count for nothing),
- ignored class ids, label smoothing with them, and an all-ignored batch whose mean is NaN,
- zeros in kl_div's target (xlogy), every p of triplet_margin's norm, float64,
- run-time sizes: every loss example again with its batch (and class) dimensions symbolic.

References are torch.nn.functional (or the generated helpers) called directly, not dslc's PyTorch.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import onnx_parity, ort_run, random_input, single_op_graph

from dslc.backends.onnx_emit import emit_model
from dslc.ir.dims import Sym
from dslc.ir.values import Fill
from dslc.ops import HELPERS, REGISTRY
from dslc.ops.registry import Example, S, TensorSpec

B, C = Sym.var("B"), Sym.var("C")
ONES, ZEROS = Fill(1.0), Fill(0.0)
REDUCTIONS = ("mean", "sum", "none")
LOSSES = sorted(op.name for op in REGISTRY.values() if op.kind == "loss")


def onnx_loss(name: str, shapes: dict | None = None, **args) -> torch.Tensor:
    """Loss `name` exported to ONNX, checked, and run in onnxruntime on these tensors (other args as
    given); `shapes` overrides a tensor's declared shape (symbolic sizes)."""
    shapes = shapes or {}
    spec = {k: S(*shapes.get(k, v.shape), dtype=str(v.dtype).removeprefix("torch."))
            if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    graph, _ = single_op_graph(REGISTRY[name], Example(spec))
    model = emit_model(graph, {})
    import onnx
    onnx.checker.check_model(model, full_check=True)
    (out,) = ort_run(model, {n: args[n].numpy() for n, _ in graph.inputs})
    return torch.from_numpy(np.asarray(out))


def same(got: torch.Tensor, want: torch.Tensor, tol: float = 1e-5) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype, want.dtype)
    torch.testing.assert_close(got, want, rtol=tol, atol=tol, equal_nan=True)


def helper(name: str):
    scope = {"torch": torch, "F": F}
    exec(HELPERS[name].source, scope)  # noqa: S102 - our own helper source
    return scope[name]


def randn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------- binary cross-entropy

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bce_clamps_each_log_at_minus_100(reduction, dtype):
    p = torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.5, 1e-30], [0.3, 0.999, 1.0, 0.0, 1e-5, 0.7]], dtype=dtype)
    t = torch.tensor([[0.0, 1.0, 0.3, 0.3, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0, 0.5, 0.25]], dtype=dtype)
    same(onnx_loss("bce", input=p, target=t, reduction=reduction),
         F.binary_cross_entropy(p, t, reduction=reduction))


@pytest.mark.parametrize("target,value", [(ONES, 1.0), (ZEROS, 0.0), (0.9, 0.9)])
def test_bce_constant_targets_fill_like_the_prediction(target, value):
    p = torch.tensor([[0.0, 0.2, 1.0], [0.5, 0.9, 0.999]])
    for reduction in REDUCTIONS:
        same(onnx_loss("bce", input=p, target=target, reduction=reduction),
             F.binary_cross_entropy(p, torch.full_like(p, value), reduction=reduction))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bce_with_logits_is_stable_for_large_logits(dtype):
    x = torch.tensor([-1e4, -100.0, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0, 1e4], dtype=dtype)
    t = torch.tensor([0.0, 1.0, 0.5, 1.0, 0.3, 0.0, 0.0, 1.0, 0.7], dtype=dtype)
    for reduction in REDUCTIONS:
        got = onnx_loss("bce_with_logits", input=x, target=t, reduction=reduction)
        assert torch.isfinite(got).all()
        same(got, F.binary_cross_entropy_with_logits(x, t, reduction=reduction))
    same(onnx_loss("bce_with_logits", input=x, target=ONES, reduction="none"),
         F.binary_cross_entropy_with_logits(x, torch.ones_like(x), reduction="none"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_binary_cross_entropies_keep_relative_precision_of_tiny_losses(dtype):
    """Losses of 1e-8 and below, compared relatively: bce's log(1 - p) is torch's log1p(-p), and
    bce_with_logits' log(1 + exp(-|x|)) keeps its digits where exp(-|x|) is far below 1."""
    p = torch.tensor([1e-7, 3e-8, 1e-5, 1e-12, 0.25], dtype=dtype)
    got = onnx_loss("bce", input=p, target=ZEROS, reduction="none")
    torch.testing.assert_close(got, F.binary_cross_entropy(p, torch.zeros_like(p), reduction="none"),
                               rtol=1e-6, atol=0)
    x = torch.tensor([20.0, 30.0, 60.0, 17.0], dtype=dtype)
    got = onnx_loss("bce_with_logits", input=x, target=ONES, reduction="none")
    torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(x, torch.ones_like(x), reduction="none"),
                               rtol=1e-6, atol=0)
    # torch's kernel, (1 - t) x - log_sigmoid(x), cancels for x << 0 with t = 0 (0.0 in float32 at x = -25);
    # the stable form keeps the digits of the exact value softplus(x) = -log_sigmoid(-x)
    got = onnx_loss("bce_with_logits", input=-x, target=ZEROS, reduction="none")
    torch.testing.assert_close(got, -F.logsigmoid(x), rtol=1e-6, atol=0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,ref,x", [
    ("bce", F.binary_cross_entropy, torch.tensor([[0.1, 0.9, 0.5], [0.0, 0.7, 1.0]])),
    ("bce_with_logits", F.binary_cross_entropy_with_logits, torch.tensor([[-3.0, 0.5, 8.0], [1.0, -0.2, 0.0]]))])
def test_binary_losses_with_weights(name, ref, x, reduction):
    t = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    same(onnx_loss(name, input=x, target=t, weight=(1.0, 2.0, 0.5), reduction=reduction),
         ref(x, t, weight=torch.tensor([1.0, 2.0, 0.5]), reduction=reduction))
    same(onnx_loss(name, input=x, target=t, weight=1 + 2 * t, reduction=reduction),
         ref(x, t, weight=1 + 2 * t, reduction=reduction))


# ---------------------------------------------------------------- regression

def test_smooth_l1_and_huber_at_their_thresholds():
    x = torch.tensor([[0.0, 0.5, 1.0, 2.0, -2.0, 3.5]])
    t = torch.zeros_like(x)
    for beta in (0.0, 0.5, 1.0, 2.0):
        same(onnx_loss("smooth_l1", input=x, target=t, beta=beta, reduction="none"),
             F.smooth_l1_loss(x, t, beta=beta, reduction="none"))
    for delta in (0.5, 1.0, 2.0):
        same(onnx_loss("huber", input=x, target=t, delta=delta, reduction="none"),
             F.huber_loss(x, t, delta=delta, reduction="none"))


def test_regression_losses_with_a_number_as_target():
    x = randn(3, 4, dtype=torch.float64)
    for name, fn in (("mse", F.mse_loss), ("l1", F.l1_loss), ("smooth_l1", F.smooth_l1_loss),
                     ("huber", F.huber_loss)):
        for reduction in REDUCTIONS:
            same(onnx_loss(name, input=x, target=2.5, reduction=reduction),
                 fn(x, torch.full_like(x, 2.5), reduction=reduction))


def test_zero_dimensional_prediction():
    x, t = torch.tensor(0.7), torch.tensor(0.2)
    for reduction in REDUCTIONS:
        same(onnx_loss("mse", input=x, target=t, reduction=reduction), F.mse_loss(x, t, reduction=reduction))
        same(onnx_loss("bce", input=x, target=ONES, reduction=reduction),
             F.binary_cross_entropy(x, torch.ones_like(x), reduction=reduction))


# ---------------------------------------------------------------- cross-entropy and nll

IDS = torch.tensor([0, 2, 1, 1, 3, -100])


def ids_for(ignore: int) -> torch.Tensor:
    """Class ids holding `ignore` twice (-100 is only a valid entry when it is the ignored one)."""
    return IDS if ignore == -100 else torch.where(IDS == -100, ignore, IDS)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("ignore", [-100, 1])
def test_cross_entropy_class_ids_ignore_and_smoothing(reduction, smoothing, ignore):
    x, ids = randn(6, 4), ids_for(ignore)
    same(onnx_loss("cross_entropy", input=x, target=ids, label_smoothing=smoothing, ignore_index=ignore,
                   reduction=reduction),
         F.cross_entropy(x, ids, label_smoothing=smoothing, ignore_index=ignore, reduction=reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_spatial_class_ids(reduction, smoothing):
    x = randn(2, 5, 3, 4, dtype=torch.float64)
    t = torch.randint(0, 5, (2, 3, 4), generator=torch.Generator().manual_seed(1))
    t[0, 1, 2] = 4
    for ignore in (-100, 4):
        same(onnx_loss("cross_entropy", input=x, target=t, label_smoothing=smoothing, ignore_index=ignore,
                       reduction=reduction),
             F.cross_entropy(x, t, label_smoothing=smoothing, ignore_index=ignore, reduction=reduction))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_all_ignored_mean_is_nan_as_in_torch(smoothing):
    x, t = randn(3, 2), torch.zeros(3, dtype=torch.int64)
    want = F.cross_entropy(x, t, ignore_index=0, label_smoothing=smoothing)
    assert torch.isnan(want)
    same(onnx_loss("cross_entropy", input=x, target=t, ignore_index=0, label_smoothing=smoothing), want)
    same(onnx_loss("nll", input=x, target=t, ignore_index=0), F.nll_loss(x, t, ignore_index=0))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.25, 1.0])
def test_cross_entropy_probability_targets(reduction, smoothing):
    x = randn(3, 4, 2)
    t = torch.softmax(randn(3, 4, 2, seed=1), dim=1)
    same(onnx_loss("cross_entropy", input=x, target=t, label_smoothing=smoothing, reduction=reduction),
         F.cross_entropy(x, t, label_smoothing=smoothing, reduction=reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_ignore_index(reduction):
    logp = torch.log_softmax(randn(6, 4), dim=1)
    for ignore in (-100, 1):
        same(onnx_loss("nll", input=logp, target=ids_for(ignore), ignore_index=ignore, reduction=reduction),
             F.nll_loss(logp, ids_for(ignore), ignore_index=ignore, reduction=reduction))


# ---------------------------------------------------------------- divergences

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("ignore", [-100, 1])
def test_class_weights_of_cross_entropy_and_nll(reduction, smoothing, ignore):
    x, ids = randn(6, 3, 2, seed=50), torch.tensor([[0, 1], [2, 1], [1, 1], [0, 2], [2, 2], [ignore, 0]])
    w = torch.tensor([0.5, 2.0, 1.5])
    same(onnx_loss("cross_entropy", input=x, target=ids, weight=(0.5, 2.0, 1.5), label_smoothing=smoothing,
                   ignore_index=ignore, reduction=reduction),
         F.cross_entropy(x, ids, weight=w, label_smoothing=smoothing, ignore_index=ignore, reduction=reduction))
    same(onnx_loss("cross_entropy", input=x, target=ids, weight=w, label_smoothing=smoothing,
                   ignore_index=ignore, reduction=reduction),
         F.cross_entropy(x, ids, weight=w, label_smoothing=smoothing, ignore_index=ignore, reduction=reduction))
    probs = F.softmax(randn(6, 3, 2, seed=51), dim=1)
    same(onnx_loss("cross_entropy", input=x, target=probs, weight=(0.5, 2.0, 1.5), label_smoothing=smoothing,
                   reduction=reduction),
         F.cross_entropy(x, probs, weight=w, label_smoothing=smoothing, reduction=reduction))
    logp = F.log_softmax(x, dim=1)
    same(onnx_loss("nll", input=logp, target=ids, weight=(0.5, 2.0, 1.5), ignore_index=ignore, reduction=reduction),
         F.nll_loss(logp, ids, weight=w, ignore_index=ignore, reduction=reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS + ("batchmean",))
def test_kl_div_zero_targets_and_log_targets(reduction):
    x = torch.log_softmax(randn(3, 4), dim=1)
    t = torch.tensor([[0.0, 0.5, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    torch_red = "none" if reduction == "mean" else reduction

    def ref(target, log_target=False):
        out = F.kl_div(x, target, reduction=torch_red, log_target=log_target)
        return out.mean() if reduction == "mean" else out

    same(onnx_loss("kl_div", input=x, target=t, reduction=reduction), ref(t))
    same(onnx_loss("kl_div", input=x, target=ZEROS, reduction=reduction), ref(torch.zeros_like(x)))
    same(onnx_loss("kl_div", input=x, target=ONES, reduction=reduction), ref(torch.ones_like(x)))
    lt = torch.log_softmax(randn(3, 4, seed=2), dim=1)
    same(onnx_loss("kl_div", input=x, target=lt, log_target=True, reduction=reduction), ref(lt, True))


def test_kl_normal_reductions():
    mu, lv = randn(4, 3, 2, dtype=torch.float64), randn(4, 3, 2, dtype=torch.float64, seed=1)
    terms = 1 + lv - mu.pow(2) - lv.exp()
    same(onnx_loss("kl_normal", mu=mu, log_var=lv, reduction="none"), -0.5 * terms)
    same(onnx_loss("kl_normal", mu=mu, log_var=lv, reduction="sum"), -0.5 * torch.sum(terms))
    same(onnx_loss("kl_normal", mu=mu, log_var=lv, reduction="mean"), -0.5 * torch.sum(terms) / 4)


# ---------------------------------------------------------------- metric losses

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("margin", [0.0, 0.5, -0.2])
def test_cosine_embedding_with_exact_targets(reduction, margin):
    x1, x2 = randn(6, 5), randn(6, 5, seed=1)
    x2[2] = x1[2]  # cos = 1
    x2[3] = -x1[3]  # cos = -1
    t = torch.tensor([1.0, -1.0, 1.0, -1.0, 0.0, 0.5])
    same(onnx_loss("cosine_embedding", x1=x1, x2=x2, target=t, margin=margin, reduction=reduction),
         F.cosine_embedding_loss(x1, x2, t, margin=margin, reduction=reduction))
    for target, value in ((ONES, 1.0), (-1, -1.0), (1, 1.0)):
        same(onnx_loss("cosine_embedding", x1=x1, x2=x2, target=target, margin=margin, reduction=reduction),
             F.cosine_embedding_loss(x1, x2, torch.full((6,), value), margin=margin, reduction=reduction))


def test_cosine_embedding_of_single_vectors():
    x1, x2 = randn(5), randn(5, seed=1)
    for t in (torch.tensor(1.0), torch.tensor(-1.0)):
        for reduction in REDUCTIONS:
            same(onnx_loss("cosine_embedding", x1=x1, x2=x2, target=t, margin=-0.5, reduction=reduction),
                 F.cosine_embedding_loss(x1, x2, t, margin=-0.5, reduction=reduction))
    same(onnx_loss("cosine_embedding", x1=x1, x2=x2, target=-1, margin=-0.5, reduction="none"),
         F.cosine_embedding_loss(x1, x2, torch.tensor(-1.0), margin=-0.5, reduction="none"))


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 0.5, math.inf])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_triplet_margin_every_norm(p, reduction):
    a, pos, neg = randn(4, 6), randn(4, 6, seed=1), randn(4, 6, seed=2)
    pos[0] = a[0]  # a zero difference: the eps inside the norm matters
    same(onnx_loss("triplet_margin", anchor=a, positive=pos, negative=neg, margin=0.7, p=p, reduction=reduction),
         F.triplet_margin_loss(a, pos, neg, margin=0.7, p=p, reduction=reduction))
    same(onnx_loss("triplet_margin", anchor=a[0], positive=pos[0], negative=neg[0], p=p, reduction=reduction),
         F.triplet_margin_loss(a[0], pos[0], neg[0], p=p, reduction=reduction))


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 0.5, math.inf])
def test_triplet_margin_eps_inside_the_norm(p):
    """Near-equal embeddings in float64, compared tightly: the 1e-6 torch adds inside the norm shows."""
    a = randn(3, 6, dtype=torch.float64)
    pos, neg = a.clone(), a + 3e-6
    for reduction in REDUCTIONS:
        same(onnx_loss("triplet_margin", anchor=a, positive=pos, negative=neg, margin=0.1, p=p,
                       reduction=reduction),
             F.triplet_margin_loss(a, pos, neg, margin=0.1, p=p, reduction=reduction), tol=1e-12)


def test_cosine_embedding_eps_of_tiny_vectors():
    """Vectors of norm ~1e-7 in float64: torch's 1e-12 added to each squared norm changes the cosine."""
    x1, x2 = 1e-7 * randn(4, 5, dtype=torch.float64), 1e-7 * randn(4, 5, dtype=torch.float64, seed=1)
    t = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    same(onnx_loss("cosine_embedding", x1=x1, x2=x2, target=t, margin=-0.5, reduction="none"),
         F.cosine_embedding_loss(x1, x2, t, margin=-0.5, reduction="none"), tol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_the_helper(n, temperature):
    z1, z2 = randn(n, 4, dtype=torch.float64), randn(n, 4, dtype=torch.float64, seed=1)
    same(onnx_loss("nt_xent", z1=z1, z2=z2, temperature=temperature),
         helper("nt_xent_loss")(z1, z2, temperature=temperature))


@pytest.mark.parametrize("alpha,temperature", [(0.5, 4.0), (0.0, 2.0), (1.0, 1.0), (0.9, 2.5)])
def test_distillation_matches_the_helper(alpha, temperature):
    s, t = randn(5, 3), randn(5, 3, seed=1)
    t[0] = torch.tensor([200.0, -200.0, 0.0])  # a softmax that underflows to 0: xlogy's 0 log 0
    y = torch.tensor([0, 2, 1, 1, 0])
    same(onnx_loss("distillation", student=s, teacher=t, target=y, alpha=alpha, temperature=temperature),
         helper("distillation_loss")(s, t, y, temperature=temperature, alpha=alpha))


# ---------------------------------------------------------------- run-time sizes

def _symbolic(spec, batch: int):
    """The spec with dimension 0 the run-time size B when it is the batch."""
    if isinstance(spec, TensorSpec) and spec.shape and spec.shape[0] == batch:
        return TensorSpec((B,) + tuple(spec.shape[1:]), spec.dtype, spec.values)
    return spec


def _loss_examples():
    for name in LOSSES:
        for i, ex in enumerate(REGISTRY[name].examples):
            yield pytest.param(name, ex, id=f"{name}-{i}")


@pytest.mark.parametrize("name,example", list(_loss_examples()))
def test_every_loss_example_with_a_run_time_batch(name, example):
    """The example's tensors sharing dimension 0 get the symbolic batch B; onnxruntime on the same inputs
    must match the static graph's PyTorch (including batchmean's and kl_normal's division by B)."""
    tensors = [v for v in example.args.values() if isinstance(v, TensorSpec)]
    batch = tensors[0].shape[0] if tensors[0].shape else None
    sym = Example({k: _symbolic(v, batch) for k, v in example.args.items()}) if batch is not None else example
    op = REGISTRY[name]
    static_graph, specs = single_op_graph(op, example)
    graph, _ = single_op_graph(op, sym)
    assert any(isinstance(d, Sym) for _, r in graph.inputs for d in graph.type_of(r).shape) or batch is None
    from dslc.api import exec_source
    from dslc.backends.torch_codegen import generate
    net = exec_source(generate([static_graph], "test.dl"), f"<{name}>").build(static_graph.name).eval()
    torch.manual_seed(1)
    inputs = [random_input(s) for s in specs]
    with torch.no_grad():
        want = net(*inputs)
    model = emit_model(graph, {})
    import onnx
    onnx.checker.check_model(model, full_check=True)
    (got,) = ort_run(model, {n: x.numpy() for (n, _), x in zip(graph.inputs, inputs)})
    same(torch.from_numpy(np.asarray(got)), want, tol=1e-4)


def test_symbolic_class_count_in_smoothing():
    """ε / C with the class count a run-time size, for class ids and for probabilities."""
    x = randn(3, 4, 2)
    ids = torch.tensor([[0, 3], [1, 1], [2, 0]])
    probs = torch.softmax(randn(3, 4, 2, seed=1), dim=1)
    for reduction in REDUCTIONS:
        same(onnx_loss("cross_entropy", {"input": (B, C, 2), "target": (B, 2)}, input=x, target=ids,
                       label_smoothing=0.2, ignore_index=1, reduction=reduction),
             F.cross_entropy(x, ids, label_smoothing=0.2, ignore_index=1, reduction=reduction))
        same(onnx_loss("cross_entropy", {"input": (B, C, 2), "target": (B, C, 2)}, input=x, target=probs,
                       label_smoothing=0.2, reduction=reduction),
             F.cross_entropy(x, probs, label_smoothing=0.2, reduction=reduction))


def test_nt_xent_and_distillation_with_a_run_time_batch():
    z1, z2 = randn(3, 4), randn(3, 4, seed=1)
    same(onnx_loss("nt_xent", {"z1": (B, 4), "z2": (B, 4)}, z1=z1, z2=z2),
         helper("nt_xent_loss")(z1, z2))
    s, t, y = randn(4, 3), randn(4, 3, seed=1), torch.tensor([0, 2, 1, 0])
    same(onnx_loss("distillation", {"student": (B, 3), "teacher": (B, 3), "target": (B,)}, student=s, teacher=t,
                   target=y),
         helper("distillation_loss")(s, t, y))


def test_conformance_harness_agrees_on_float64_examples():
    """Each loss example once more in float64 (the harness draws float64 only for some losses)."""
    for name in LOSSES:
        op = REGISTRY[name]
        for ex in op.examples:
            args = {k: TensorSpec(v.shape, "float64", v.values) if isinstance(v, TensorSpec) and v.dtype == "float32"
                    else v for k, v in ex.args.items()}
            graph, specs = single_op_graph(op, Example(args))
            assert onnx_parity(graph, specs) < 1e-6, name


# ---------------------------------------------------------------- half precision

EXTRA = {  # paths the registry's examples do not take: smoothing with class ids, nll's ignore_index
    "cross_entropy": (Example({"input": S(4, 3, 2), "target": S(4, 2, dtype="int64", values=(0, 3)),
                               "label_smoothing": 0.1, "ignore_index": 2, "reduction": "mean"}),),
    "nll": (Example({"input": S(4, 3), "target": S(4, dtype="int64", values=(0, 3)), "ignore_index": 0,
                     "reduction": "sum"}),),
}


def _in_dtype(example: Example, dtype: str) -> Example:
    return Example({k: TensorSpec(v.shape, dtype, v.values) if isinstance(v, TensorSpec) and v.dtype == "float32"
                    else v for k, v in example.args.items()})


def _half_cases():
    for name in LOSSES:
        for i, ex in enumerate(REGISTRY[name].examples + EXTRA.get(name, ())):
            yield pytest.param(name, ex, id=f"{name}-{i}")


@pytest.mark.parametrize("name,example", list(_half_cases()))
def test_half_precision_exports(name, example):
    """float16 and bfloat16 graphs pass the full check (bfloat16 constants are Casts; nll runs on a float32
    copy); float16 also runs in onnxruntime, close to torch's float16 on the same inputs."""
    import onnx
    op = REGISTRY[name]
    graph, _ = single_op_graph(op, _in_dtype(example, "bfloat16"))
    onnx.checker.check_model(emit_model(graph, {}), full_check=True)
    graph, specs = single_op_graph(op, _in_dtype(example, "float16"))
    model = emit_model(graph, {})
    onnx.checker.check_model(model, full_check=True)
    from dslc.api import exec_source
    from dslc.backends.torch_codegen import generate
    net = exec_source(generate([graph], "test.dl"), f"<{name}>").build(graph.name).eval()
    torch.manual_seed(1)
    inputs = [random_input(s) for s in specs]
    with torch.no_grad():
        want = net(*inputs)
    (got,) = ort_run(model, {n: x.numpy() for (n, _), x in zip(graph.inputs, inputs)})
    got = torch.from_numpy(np.asarray(got))
    assert got.dtype == want.dtype == torch.float16 and got.shape == want.shape
    scale = want.float().abs().max().item() + 1e-3
    assert (got.float() - want.float()).abs().max().item() / scale < 2e-2
