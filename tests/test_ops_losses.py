"""Losses: the generated PyTorch's VALUES against independent references.

Each loss runs through the real backend as a one-op graph on fixed inputs and
is compared with torch.nn.functional (the standard losses) or with an explicit
formula written here (kl_normal, nt_xent, distillation). Shape rules are also
checked on symbolic sizes and for their errors (codes, and messages naming the
loss and both shapes).
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from support import error_codes, single_op_graph

from dslc import api
from dslc.backends.torch_codegen import generate
from dslc.ir.dims import Sym, plain
from dslc.ir.types import TensorType
from dslc.ir.values import Fill, Ref, TensorValue
from dslc.ops import HELPERS, REGISTRY
from dslc.ops.registry import Bound, Example, S, ShapeError

ONES, ZEROS = Fill(1.0), Fill(0.0)
REDUCTIONS = ("mean", "sum", "none")


def run(name: str, **args):
    """The dslc-generated expression of loss `name`, run on these tensors (other args as given)."""
    spec = {k: S(*v.shape, dtype=str(v.dtype).removeprefix("torch.")) if isinstance(v, torch.Tensor) else v
            for k, v in args.items()}
    graph, _ = single_op_graph(REGISTRY[name], Example(spec))
    source = generate([graph], "test.dl")
    model = api.exec_source(source, f"<loss {name}>").build(graph.name)
    with torch.no_grad():
        return model(*[args[n] for n, _ in graph.inputs])


def source_of(name: str, **args) -> str:
    """The generated statement of the loss (the last line of forward)."""
    spec = {k: S(*v.shape, dtype=str(v.dtype).removeprefix("torch.")) if isinstance(v, torch.Tensor) else v
            for k, v in args.items()}
    graph, _ = single_op_graph(REGISTRY[name], Example(spec))
    forward = generate([graph], "test.dl").split("def forward")[1].split("\n\n")[0]
    return forward.strip().splitlines()[-1].strip()


def close(got, want, tol=1e-5):
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=gen(seed), dtype=dtype)


def rand(*shape, seed=0, lo=0.0, hi=1.0):
    return torch.rand(*shape, generator=gen(seed)) * (hi - lo) + lo


# ---------------------------------------------------------------- elementwise losses vs F

ELEMENTWISE = [
    ("mse", F.mse_loss, {}),
    ("l1", F.l1_loss, {}),
    ("smooth_l1", F.smooth_l1_loss, {}),
    ("smooth_l1", F.smooth_l1_loss, {"beta": 0.5}),
    ("huber", F.huber_loss, {}),
    ("huber", F.huber_loss, {"delta": 0.3}),
    ("bce_with_logits", F.binary_cross_entropy_with_logits, {}),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,ref,settings", ELEMENTWISE)
def test_elementwise_losses(name, ref, settings, reduction):
    x, y = randn(4, 3, 2, seed=1), rand(4, 3, 2, seed=2)
    got = run(name, input=x, target=y, reduction=reduction, **settings)
    close(got, ref(x, y, reduction=reduction, **settings))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_on_probabilities(reduction):
    p, t = rand(3, 5, seed=3, lo=0.01, hi=0.99), rand(3, 5, seed=4)
    close(run("bce", input=p, target=t, reduction=reduction), F.binary_cross_entropy(p, t, reduction=reduction))


@pytest.mark.parametrize("name,ref", [("bce", F.binary_cross_entropy), ("mse", F.mse_loss),
                                      ("bce_with_logits", F.binary_cross_entropy_with_logits)])
@pytest.mark.parametrize("fill", [ONES, ZEROS])
def test_fill_targets_take_the_predictions_shape(name, ref, fill):
    p = rand(4, 1, seed=5, lo=0.01, hi=0.99)
    want = ref(p, torch.full_like(p, fill.value), reduction="sum")
    close(run(name, input=p, target=fill, reduction="sum"), want)
    kind = "ones" if fill.value == 1.0 else "zeros"
    assert f"torch.{kind}_like(input)" in source_of(name, input=p, target=fill)


def test_number_targets_are_filled_like_the_prediction():
    p = rand(2, 3, seed=6, lo=0.01, hi=0.99)
    close(run("bce", input=p, target=0.9), F.binary_cross_entropy(p, torch.full_like(p, 0.9)))
    assert source_of("mse", input=p, target=0) == "return F.mse_loss(input, torch.full_like(input, 0))"


def test_emission_reads_like_hand_written_torch():
    x, y = randn(2, 3), randn(2, 3)
    ids = torch.tensor([0, 2])
    assert source_of("mse", input=x, target=y) == "return F.mse_loss(input, target)"
    assert source_of("bce", input=x, target=y, reduction="sum") == \
        'return F.binary_cross_entropy(input, target, reduction="sum")'
    assert source_of("cross_entropy", input=x, target=ids, label_smoothing=0.1) == \
        "return F.cross_entropy(input, target, label_smoothing=0.1)"
    assert source_of("smooth_l1", input=x, target=y, beta=1.0) == "return F.smooth_l1_loss(input, target)"
    assert source_of("kl_div", input=x, target=y) == 'return F.kl_div(input, target, reduction="batchmean")'


# ---------------------------------------------------------------- classification

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("settings", [{}, {"label_smoothing": 0.2}, {"ignore_index": 1}])
def test_cross_entropy_with_class_ids(settings, reduction):
    logits, ids = randn(5, 4, seed=7), torch.tensor([0, 1, 3, 1, 2])
    got = run("cross_entropy", input=logits, target=ids, reduction=reduction, **settings)
    close(got, F.cross_entropy(logits, ids, reduction=reduction, **settings))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_per_position(reduction):
    logits = randn(2, 3, 4, 5, seed=8)
    ids = torch.randint(0, 3, (2, 4, 5), generator=gen(9))
    close(run("cross_entropy", input=logits, target=ids, reduction=reduction),
          F.cross_entropy(logits, ids, reduction=reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_with_probabilities(reduction):
    logits, probs = randn(3, 4, seed=10), F.softmax(randn(3, 4, seed=11), dim=1)
    got = run("cross_entropy", input=logits, target=probs, reduction=reduction, label_smoothing=0.1)
    # Independent of F.cross_entropy: the soft-label formula with smoothing written out.
    smoothed = probs * 0.9 + 0.1 / 4
    per_row = -(smoothed * F.log_softmax(logits, dim=1)).sum(dim=1)
    want = {"mean": per_row.mean(), "sum": per_row.sum(), "none": per_row}[reduction]
    close(got, want)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll(reduction):
    logp, ids = F.log_softmax(randn(4, 6, seed=12), dim=1), torch.tensor([5, 0, 2, 2])
    close(run("nll", input=logp, target=ids, reduction=reduction), F.nll_loss(logp, ids, reduction=reduction))
    close(run("nll", input=logp, target=ids, ignore_index=2), F.nll_loss(logp, ids, ignore_index=2))


# ---------------------------------------------------------------- weights (torch's `weight=`)

CLASS_WEIGHTS = torch.tensor([1.0, 3.0, 0.5, 2.0])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("settings", [{}, {"label_smoothing": 0.2}, {"ignore_index": 1}])
def test_cross_entropy_class_weights_written_as_numbers(settings, reduction):
    logits, ids = randn(6, 4, seed=40), torch.tensor([0, 1, 3, 1, 2, 3])
    got = run("cross_entropy", input=logits, target=ids, weight=(1.0, 3.0, 0.5, 2.0), reduction=reduction,
              **settings)
    close(got, F.cross_entropy(logits, ids, weight=CLASS_WEIGHTS, reduction=reduction, **settings))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_class_weights_as_a_tensor_with_probability_targets(reduction):
    logits, probs = randn(3, 4, seed=41), F.softmax(randn(3, 4, seed=42), dim=1)
    got = run("cross_entropy", input=logits, target=probs, weight=CLASS_WEIGHTS, reduction=reduction)
    # written out: -Σ_c w_c t_c log p_c per row, then reduced over the rows (not normalized by the weights)
    per_row = -(CLASS_WEIGHTS * probs * F.log_softmax(logits, dim=1)).sum(dim=1)
    close(got, {"mean": per_row.mean(), "sum": per_row.sum(), "none": per_row}[reduction])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_class_weights(reduction):
    logp, ids = F.log_softmax(randn(5, 4, seed=43), dim=1), torch.tensor([3, 0, 2, 2, 1])
    got = run("nll", input=logp, target=ids, weight=(1.0, 3.0, 0.5, 2.0), reduction=reduction)
    close(got, F.nll_loss(logp, ids, weight=CLASS_WEIGHTS, reduction=reduction))
    # "mean" divides by the weights of the targets' classes: sum(w[y] * -logp[y]) / sum(w[y])
    w = CLASS_WEIGHTS[ids]
    want = (w * -logp[torch.arange(5), ids]).sum() / w.sum()
    close(run("nll", input=logp, target=ids, weight=(1.0, 3.0, 0.5, 2.0)), want)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,ref,pred", [("bce", F.binary_cross_entropy, lambda x: torch.sigmoid(x)),
                                           ("bce_with_logits", F.binary_cross_entropy_with_logits, lambda x: x)])
def test_binary_losses_weight_each_output_or_each_element(name, ref, pred, reduction):
    x, t = pred(randn(4, 3, seed=44)), (randn(4, 3, seed=45) > 0).float()
    close(run(name, input=x, target=t, weight=(1.0, 2.0, 0.5), reduction=reduction),
          ref(x, t, weight=torch.tensor([1.0, 2.0, 0.5]), reduction=reduction))
    close(run(name, input=x, target=t, weight=(3.0,), reduction=reduction),
          ref(x, t, weight=torch.tensor(3.0), reduction=reduction))
    per_example = 1 + 2 * t     # positives count three times: Keras's class_weight={0: 1, 1: 3}
    close(run(name, input=x, target=t, weight=per_example, reduction=reduction),
          ref(x, t, weight=per_example, reduction=reduction))


def test_weights_read_like_hand_written_torch():
    x, ids = randn(2, 3), torch.tensor([0, 2])
    assert source_of("cross_entropy", input=x, target=ids, weight=(1.0, 2.0, 0.5)) == \
        "return F.cross_entropy(input, target, weight=input.new_tensor([1.0, 2.0, 0.5]))"
    assert source_of("bce", input=x, target=x, weight=(2.0,)) == \
        "return F.binary_cross_entropy(input, target, weight=input.new_tensor(2.0))"


# ---------------------------------------------------------------- divergences

@pytest.mark.parametrize("reduction", REDUCTIONS + ("batchmean",))
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(reduction, log_target):
    logp = F.log_softmax(randn(3, 5, seed=13), dim=1)
    q = F.softmax(randn(3, 5, seed=14), dim=1)
    target = q.log() if log_target else q
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # "mean" is written so that torch does not warn
        got = run("kl_div", input=logp, target=target, reduction=reduction, log_target=log_target)
    elementwise = q * (q.log() - logp)
    want = {"mean": elementwise.mean(), "sum": elementwise.sum(), "none": elementwise,
            "batchmean": elementwise.sum() / 3}[reduction]
    close(got, want)


def test_kl_div_defaults_to_batchmean():
    logp, q = F.log_softmax(randn(4, 3, seed=15), dim=1), F.softmax(randn(4, 3, seed=16), dim=1)
    close(run("kl_div", input=logp, target=q), F.kl_div(logp, q, reduction="batchmean"))


def _kl_normal_terms(mu, log_var) -> list[list[float]]:
    """Per sample, per element: -0.5 (1 + log_var - mu² - exp(log_var)), in plain Python."""
    return [[-0.5 * (1 + lv - m * m - math.exp(lv)) for m, lv in zip(mr, lr)]
            for mr, lr in zip(mu.tolist(), log_var.tolist())]


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_kl_normal(reduction):
    mu, log_var = randn(4, 3, seed=17, dtype=torch.float64), randn(4, 3, seed=18, dtype=torch.float64)
    terms = _kl_normal_terms(mu, log_var)
    want = {"sum": torch.tensor(sum(map(sum, terms)), dtype=torch.float64),
            "mean": torch.tensor(sum(map(sum, terms)) / 4, dtype=torch.float64),
            "none": torch.tensor(terms, dtype=torch.float64)}[reduction]
    close(run("kl_normal", mu=mu, log_var=log_var, reduction=reduction), want, tol=1e-10)


def test_kl_normal_is_the_kl_of_the_posterior_from_the_prior():
    mu, log_var = randn(3, 2, seed=19), randn(3, 2, seed=20)
    posterior = torch.distributions.Normal(mu, torch.exp(0.5 * log_var))
    prior = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    close(run("kl_normal", mu=mu, log_var=log_var), torch.distributions.kl_divergence(posterior, prior).sum())
    assert source_of("kl_normal", mu=mu, log_var=log_var) == \
        "return -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp())"


# ---------------------------------------------------------------- contrastive and metric losses

def _nt_xent_loop(z1, z2, t: float) -> float:
    """SimCLR's loss as written in the paper: every one of the 2N rows, one at a time."""
    z = [list(map(float, r)) for r in torch.cat([z1, z2]).tolist()]
    n2, n = len(z), len(z1)

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        denom = sum(math.exp(cos(z[i], z[k]) / t) for k in range(n2) if k != i)
        total += -math.log(math.exp(cos(z[i], z[j]) / t) / denom)
    return total / n2


@pytest.mark.parametrize("temperature", [0.5, 0.1, 1.0])
def test_nt_xent(temperature):
    z1, z2 = randn(4, 6, seed=21, dtype=torch.float64), randn(4, 6, seed=22, dtype=torch.float64)
    got = run("nt_xent", z1=z1, z2=z2, temperature=temperature)
    close(got, torch.tensor(_nt_xent_loop(z1, z2, temperature), dtype=torch.float64), tol=1e-9)


def _distillation_explicit(s, t, y, temp: float, alpha: float) -> float:
    s, t, y = s.tolist(), t.tolist(), y.tolist()

    def softmax(row, temp_):
        m = max(row)
        e = [math.exp((v - m) / temp_) for v in row]
        return [v / sum(e) for v in e]
    kl = sum(sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(softmax(tr, temp), softmax(sr, temp)))
             for sr, tr in zip(s, t)) / len(s)
    ce = sum(-math.log(softmax(sr, 1.0)[c]) for sr, c in zip(s, y)) / len(s)
    return alpha * temp * temp * kl + (1 - alpha) * ce


@pytest.mark.parametrize("temperature,alpha", [(4.0, 0.5), (2.0, 0.9), (1.0, 0.0), (3.0, 1.0)])
def test_distillation(temperature, alpha):
    s, t = randn(5, 4, seed=23, dtype=torch.float64), randn(5, 4, seed=24, dtype=torch.float64)
    y = torch.tensor([0, 3, 1, 1, 2])
    got = run("distillation", student=s, teacher=t, target=y, temperature=temperature, alpha=alpha)
    close(got, torch.tensor(_distillation_explicit(s, t, y, temperature, alpha), dtype=torch.float64), tol=1e-9)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("margin", [0.0, 0.4])
def test_cosine_embedding(reduction, margin):
    x1, x2 = randn(4, 5, seed=25), randn(4, 5, seed=26)
    y = torch.tensor([1.0, -1.0, -1.0, 1.0])
    got = run("cosine_embedding", x1=x1, x2=x2, target=y, margin=margin, reduction=reduction)
    close(got, F.cosine_embedding_loss(x1, x2, y, margin=margin, reduction=reduction))


@pytest.mark.parametrize("target,value", [(ONES, 1.0), (1, 1.0), (-1, -1.0), (-1.0, -1.0)])
def test_cosine_embedding_constant_targets(target, value):
    x1, x2 = randn(3, 4, seed=27), randn(3, 4, seed=28)
    close(run("cosine_embedding", x1=x1, x2=x2, target=target, reduction="none"),
          F.cosine_embedding_loss(x1, x2, torch.full((3,), value), reduction="none"))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("settings", [{}, {"margin": 0.3, "p": 1.0}])
def test_triplet_margin(reduction, settings):
    a, p, n = randn(4, 3, seed=29), randn(4, 3, seed=30), randn(4, 3, seed=31)
    got = run("triplet_margin", anchor=a, positive=p, negative=n, reduction=reduction, **settings)
    close(got, F.triplet_margin_loss(a, p, n, reduction=reduction, **settings))


def test_helpers_need_only_torch_and_F():
    for name in ("nt_xent_loss", "distillation_loss"):
        scope = {"torch": torch, "F": F, "__builtins__": {"float": float}}
        exec(HELPERS[name].source, scope)  # noqa: S102 - our own helper source
        assert callable(scope[name])
    scope["distillation_loss"](randn(2, 3), randn(2, 3), torch.tensor([0, 2]))


# ---------------------------------------------------------------- shape rules

B = Sym.var("B")


def infer(name: str, **args):
    """The shape rule on arguments given as TensorTypes (tensors) or values."""
    op = REGISTRY[name]
    full, inputs = {}, []
    for p in op.params:
        v = args.get(p.name, p.default)
        if isinstance(v, TensorType):
            v = TensorValue(Ref(f"n{len(inputs)}"), v)
            inputs.append(v.type)
        full[p.name] = v
    return op.infer(Bound(op, full, inputs))


def T(*shape, dtype="float32"):
    return TensorType(shape, dtype)


def test_symbolic_batch_sizes():
    (out,) = infer("mse", input=T(B, 10), target=T(B, 10), reduction="none")
    assert out.shape[0] is B and plain(out.shape[1]) == 10
    (out,) = infer("cross_entropy", input=T(B, 10, 7), target=T(B, 7, dtype="int64"), reduction="none")
    assert out.rank == 2 and out.shape[0] is B
    assert infer("bce", input=T(B, 1), target=ONES)[0].shape == ()
    assert infer("kl_normal", mu=T(B, 8), log_var=T(B, 8))[0].shape == ()
    assert infer("nt_xent", z1=T(B, 8), z2=T(B, 8))[0].shape == ()


@pytest.mark.parametrize("name,args,shape,dtype", [
    ("mse", {"input": T(4, 3), "target": T(4, 3), "reduction": "none"}, (4, 3), "float32"),
    ("huber", {"input": T(4, 3, dtype="float64"), "target": T(4, 3, dtype="float64")}, (), "float64"),
    ("kl_div", {"input": T(4, 3), "target": ZEROS, "reduction": "none"}, (4, 3), "float32"),
    ("nll", {"input": T(4, 3, 5), "target": T(4, 5, dtype="int64"), "reduction": "none"}, (4, 5), "float32"),
    ("cross_entropy", {"input": T(4, 3), "target": T(4, 3), "reduction": "none"}, (4,), "float32"),
    ("cosine_embedding", {"x1": T(4, 3), "x2": T(4, 3), "target": ONES, "reduction": "none"}, (4,), "float32"),
    ("cosine_embedding", {"x1": T(3), "x2": T(3), "target": T(), "reduction": "none"}, (), "float32"),
    ("triplet_margin", {"anchor": T(4, 3), "positive": T(4, 3), "negative": T(4, 3), "reduction": "none"},
     (4,), "float32"),
    ("kl_normal", {"mu": T(4, 3), "log_var": T(4, 3), "reduction": "mean"}, (), "float32"),
    ("distillation", {"student": T(4, 3), "teacher": T(4, 3), "target": T(4, dtype="int64")}, (), "float32"),
])
def test_output_types(name, args, shape, dtype):
    (out,) = infer(name, **args)
    assert tuple(plain(d) for d in out.shape) == shape and out.dtype == dtype


@pytest.mark.parametrize("name,args,code,words", [
    ("mse", {"input": T(4, 1), "target": T(4)}, "E0403", ["`mse`", "[4, 1]", "[4]"]),
    ("bce", {"input": T(B, 1), "target": T(B)}, "E0403", ["`bce`", "[B, 1]", "[B]"]),
    ("l1", {"input": T(2, 3), "target": T(2, 3, dtype="float64")}, "E0310", ["`l1`", "float64"]),
    ("bce", {"input": T(2, 3), "target": 1.5}, "E0302", ["`bce`", "1.5"]),
    ("cross_entropy", {"input": T(4), "target": T(4, dtype="int64")}, "E0402", ["`cross_entropy`", "[4]"]),
    ("cross_entropy", {"input": T(4, 10), "target": T(4, 10, dtype="int64")}, "E0403",
     ["`cross_entropy`", "[4, 10]", "[4]"]),
    ("cross_entropy", {"input": T(4, 10), "target": T(4, 9)}, "E0403", ["`cross_entropy`", "[4, 10]", "[4, 9]"]),
    ("cross_entropy", {"input": T(4, 10), "target": ONES}, "E0301", ["`cross_entropy`", "ones"]),
    ("cross_entropy", {"input": T(4, 10, dtype="int64"), "target": T(4, dtype="int64")}, "E0310",
     ["`cross_entropy`", "int64"]),
    ("cross_entropy", {"input": T(4, 3), "target": T(4, 3), "ignore_index": 0}, "E0302", ["ignore_index"]),
    ("nll", {"input": T(4, 10), "target": T(4)}, "E0310", ["`nll`", "float32"]),
    ("nll", {"input": T(4, 10, 3), "target": T(4, 10, dtype="int64")}, "E0403", ["`nll`", "[4, 10, 3]", "[4, 3]"]),
    ("kl_div", {"input": T(4, 10), "target": T(10)}, "E0403", ["`kl_div`", "[4, 10]", "[10]"]),
    ("kl_normal", {"mu": T(4, 8), "log_var": T(4, 4)}, "E0403", ["`kl_normal`", "[4, 8]", "[4, 4]"]),
    ("kl_normal", {"mu": T(), "log_var": T()}, "E0402", ["`kl_normal`"]),
    ("nt_xent", {"z1": T(4, 8), "z2": T(3, 8)}, "E0403", ["`nt_xent`", "[4, 8]", "[3, 8]"]),
    ("nt_xent", {"z1": T(4, 8, 2), "z2": T(4, 8, 2)}, "E0402", ["`nt_xent`", "[4, 8, 2]"]),
    ("distillation", {"student": T(4, 10), "teacher": T(4, 5), "target": T(4, dtype="int64")}, "E0403",
     ["`distillation`", "[4, 10]", "[4, 5]"]),
    ("distillation", {"student": T(4, 10), "teacher": T(4, 10), "target": T(5, dtype="int64")}, "E0403",
     ["`distillation`", "[4, 10]", "[5]"]),
    ("cosine_embedding", {"x1": T(4, 8), "x2": T(4, 8), "target": T(4, 1)}, "E0403",
     ["`cosine_embedding`", "[4]", "[4, 1]"]),
    ("cosine_embedding", {"x1": T(4, 8), "x2": T(4, 8), "target": ZEROS}, "E0302", ["`cosine_embedding`"]),
    ("cosine_embedding", {"x1": T(2, 4, 8), "x2": T(2, 4, 8), "target": ONES}, "E0402", ["`cosine_embedding`"]),
    ("triplet_margin", {"anchor": T(4, 8), "positive": T(4, 8), "negative": T(4, 7)}, "E0403",
     ["`triplet_margin`", "[4, 8]", "[4, 7]"]),
])
def test_shape_errors(name, args, code, words):
    with pytest.raises(ShapeError) as err:
        infer(name, **args)
    assert err.value.code == code
    for w in words:
        assert w in err.value.message, err.value.message


# ---------------------------------------------------------------- through the language

def test_losses_in_a_program(tmp_path):
    path = tmp_path / "losses.dl"
    path.write_text("model Disc {\n  input x: [B, 8]\n  output bce(x -> Linear(1) -> sigmoid, ones)\n}\n\n"
                    "model Clf {\n  input x: [B, 8]\n  input y: [B] of int64\n"
                    "  output cross_entropy(Linear(3)(x), y, label_smoothing=0.1)\n}\n")
    program = api.load(str(path))
    source = program.source()
    assert "F.binary_cross_entropy(h, torch.ones_like(h))" in source
    assert "F.cross_entropy(self.fc(x), y, label_smoothing=0.1)" in source
    disc, clf = program.build("Disc", seed=0), program.build("Clf", seed=0)
    x, y = randn(5, 8, seed=32), torch.tensor([0, 1, 2, 2, 1])
    with torch.no_grad():
        p = torch.sigmoid(disc.fc(x))
        close(disc(x), F.binary_cross_entropy(p, torch.ones_like(p)))
        close(clf(x, y), F.cross_entropy(clf.fc(x), y, label_smoothing=0.1))


@pytest.mark.parametrize("body,code", [
    ("input x: [B, 8]\n  input y: [B]\n  output mse(Linear(1)(x), y)", "E0403"),
    ("input x: [B, 8]\n  output cross_entropy(x, ones)", "E0301"),
    ("input x: [B, 8]\n  input y: [B] of int32\n  output cross_entropy(x, y)", "E0310"),
    ("input x: [B, 8]\n  output kl_div(x, x, reduction=\"avg\")", "E0302"),
    ("input x: [B, 8]\n  output cross_entropy(x, x, label_smoothing=1.5)", "E0302"),
])
def test_language_errors(tmp_path, body, code):
    assert code in error_codes(tmp_path, body)


@pytest.mark.parametrize("name,args,code,words", [
    ("cross_entropy", {"input": T(4, 3), "target": T(4, dtype="int64"), "weight": (1.0, 2.0)}, "E0403",
     ["2 numbers", "3 classes"]),
    ("nll", {"input": T(4, 3), "target": T(4, dtype="int64"), "weight": T(4)}, "E0403", ["[3]", "[4]"]),
    ("cross_entropy", {"input": T(4, 3), "target": T(4, dtype="int64"), "weight": T(3, dtype="float64")},
     "E0310", ["float32", "float64"]),
    ("bce", {"input": T(4, 3), "target": T(4, 3), "weight": (1.0, 2.0)}, "E0403", ["2 numbers", "3"]),
    ("bce_with_logits", {"input": T(4, 3), "target": T(4, 3), "weight": T(4, 1)}, "E0403", ["[4, 3]", "[4, 1]"]),
])
def test_weight_shape_errors(name, args, code, words):
    with pytest.raises(ShapeError) as err:
        infer(name, **args)
    assert err.value.code == code and err.value.arg == "weight"
    for w in words:
        assert w in err.value.message, err.value.message


def test_negative_weights_are_refused(tmp_path):
    assert "E0302" in error_codes(tmp_path, "input x: [B, 3]\n  input y: [B] of int64\n"
                                            "  output cross_entropy(x, y, weight=[1.0, -1.0, 1.0])")
