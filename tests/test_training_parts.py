"""The building blocks of `dslc train`: optimizers (with per-layer lr multipliers),
learning-rate schedules, metrics, early stopping, EMA and gradient clipping, each
against torch's or scikit-learn's own, or a closed form written here."""
from __future__ import annotations

import copy
import inspect
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import dslc
from dslc import catalog
from dslc.ops.ptypes import FLOAT, ArgTypeError, DictOf
from dslc.runtime.callbacks import EMA, EarlyStopping, clip_gradients
from dslc.runtime.metrics import MetricSet
from dslc.runtime.optim import build_optimizer, multiplier
from dslc.runtime.schedules import Schedule, build_schedule

# ---------------------------------------------------------------- optimizers


def test_catalog_optimizer_defaults_are_torch_signature_defaults():
    for name, entry in catalog.OPTIMIZERS.items():
        sig = inspect.signature(getattr(torch.optim, name).__init__).parameters
        for p in entry.params:
            if p.name == "lr_mult":
                continue
            assert p.name in sig, f"{name}: torch.optim.{name} has no parameter {p.name!r}"
            want = sig[p.name].default
            got = p.default
            if isinstance(want, tuple):
                assert tuple(got) == want, (name, p.name)
            else:
                assert got == want, (name, p.name, got, want)
        assert entry.params[-1].name == "lr_mult"


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))


def _steps(net, opt, n=3):
    torch.manual_seed(1)
    for _ in range(n):
        x, y = torch.randn(8, 4), torch.randn(8, 2)
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        opt.step()


@pytest.mark.parametrize("name", list(catalog.OPTIMIZERS))
def test_every_optimizer_steps_like_torch(name):
    args = {p.name: p.default for p in catalog.OPTIMIZERS[name].params}
    args["weight_decay"] = 0.01
    if "betas" in args:
        args["betas"] = (0.8, 0.99)   # a tuple, as the checker binds lists
    ours, theirs = _net(), _net()
    opt = build_optimizer(name, args, list(ours.named_parameters()))
    assert type(opt) is getattr(torch.optim, name)
    kwargs = {k: v for k, v in args.items() if k != "lr_mult"}
    ref = getattr(torch.optim, name)(theirs.parameters(), **kwargs)
    _steps(ours, opt)
    _steps(theirs, ref)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(ours[0].weight, _net()[0].weight)


class _Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = nn.Linear(2, 2)
        self.layer4 = nn.Linear(2, 2)
        self.layer40 = nn.Linear(2, 2)


class _Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = _Backbone()
        self.head = nn.Linear(2, 2)
        self.other = nn.Linear(2, 2)


def test_lr_mult_groups_longest_prefix_wins_and_frozen_params_are_left_out():
    net = _Classifier()
    net.other.bias.requires_grad_(False)
    mult = {"backbone": 0.1, "backbone.layer4": 0.5, "head": 10.0}
    opt = build_optimizer("SGD", {"lr": 0.2, "momentum": 0.9, "lr_mult": mult}, list(net.named_parameters()))
    groups = {g["lr_mult"]: g for g in opt.param_groups}
    assert set(groups) == {0.1, 0.5, 10.0, 1.0}
    names = {m: g["param_names"] for m, g in groups.items()}
    assert names[0.1] == ["backbone.layer1.weight", "backbone.layer1.bias",
                          "backbone.layer40.weight", "backbone.layer40.bias"]   # "layer4" is no prefix of "layer40"
    assert names[0.5] == ["backbone.layer4.weight", "backbone.layer4.bias"]
    assert names[10.0] == ["head.weight", "head.bias"]
    assert names[1.0] == ["other.weight"]                                        # other.bias is frozen
    for m, g in groups.items():
        assert g["lr"] == pytest.approx(0.2 * m) and g["momentum"] == 0.9
        assert [id(p) for p in g["params"]] == [id(net.get_parameter(n)) for n in g["param_names"]]
    # the explicit argument wins over args["lr_mult"]; a frozen-only model is an error
    opt = build_optimizer("SGD", {"lr": 0.2, "lr_mult": mult}, list(net.named_parameters()), lr_mult={})
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["lr"] == 0.2
    for p in net.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer("SGD", {"lr": 0.2}, list(net.named_parameters()))


def test_multiplier_matches_on_dot_boundaries():
    m = {"a": 2.0, "a.b": 3.0, "ab": 5.0}
    assert multiplier("a.b.c.weight", m) == 3.0
    assert multiplier("a.bc.weight", m) == 2.0
    assert multiplier("ab.weight", m) == 5.0
    assert multiplier("abc.weight", m) == 1.0
    assert multiplier("a", m) == 2.0
    assert multiplier("x.weight", None) == 1.0


def test_shared_parameters_are_optimized_once():
    net = _Classifier()
    net.other.weight = net.head.weight
    opt = build_optimizer("Adam", {"lr": 1e-3}, list(net.named_parameters(remove_duplicate=False)))
    params = [p for g in opt.param_groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(net.parameters()))


def test_dict_ptype():
    t = DictOf(FLOAT)
    assert t.convert({"a": 1, "b.c": 0.5}) == {"a": 1, "b.c": 0.5}
    for bad in ([1.0], {"a": "x"}, 3):
        with pytest.raises(ArgTypeError):
            t.convert(bad)
    assert t.desc == "a dict of numbers"


# ---------------------------------------------------------------- schedules

LR, EPOCHS, STEPS = 0.1, 3, 5
T = EPOCHS * STEPS
MULTS = (1.0, 0.5)


def _opt(name="SGD", **kw):
    net = _Classifier()
    return build_optimizer(name, {"lr": LR, **kw}, list(net.named_parameters()), {"head": MULTS[1]})


def _one_cycle_ref(t, peak, pct=0.3):
    initial, low = peak / 25, peak / 25 / 1e4
    end1, end2 = pct * T - 1, T - 1

    def anneal(start, end, p):
        return end + (start - end) / 2 * (1 + math.cos(math.pi * p))
    if t <= end1:
        return anneal(initial, peak, t / end1)
    return anneal(peak, low, (t - end1) / (end2 - end1))


def _cos(t, total, lo, hi=LR):
    return lo + (hi - lo) * (1 + math.cos(math.pi * min(t / total, 1.0))) / 2


# name, args, base lr (multiplier 1) at optimizer step t of epoch e, from the formulas in schedules.py
CLOSED_FORMS = {
    "step": ({"step_size": 2, "gamma": 0.5}, lambda t, e: LR * 0.5 ** (e // 2)),
    "multistep": ({"milestones": (1, 2), "gamma": 0.1}, lambda t, e: LR * 0.1 ** sum(e >= m for m in (1, 2))),
    "exponential": ({"gamma": 0.5}, lambda t, e: LR * 0.5 ** e),
    "cosine": ({"min_lr": 0.01}, lambda t, e: _cos(t, T, 0.01)),
    "one_cycle": ({"max_lr": None, "pct_start": 0.3}, lambda t, e: _one_cycle_ref(t, LR)),
    "warmup_cosine": ({"warmup": 4, "min_lr": 0.01},
                      lambda t, e: LR * (t + 1) / 4 if t + 1 <= 4 else _cos(t + 1 - 4, T - 4, 0.01)),
    "linear_warmup": ({"warmup": 4}, lambda t, e: LR * min(1.0, (t + 1) / 4)),
    # val_loss 1.0, 1.0, 0.5: with patience 0 the second epoch's plateau halves the lr
    "reduce_on_plateau": ({"factor": 0.5, "patience": 0, "mode": "min"}, lambda t, e: LR * (0.5 if e >= 2 else 1)),
}
VAL_LOSS = [1.0, 1.0, 0.5]


def _run(sched, opt, steps=range(T), record=None):
    """Run the loop's calls for the given global steps; returns [lr of each group] per step."""
    record = [] if record is None else record
    for t in steps:
        record.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.after_step()
        if (t + 1) % STEPS == 0:
            sched.after_epoch({"val_loss": VAL_LOSS[t // STEPS], "train_loss": 9.0})
    return record


def test_every_catalog_schedule_has_a_closed_form_here():
    assert set(CLOSED_FORMS) == set(catalog.SCHEDULES)


@pytest.mark.parametrize("name", list(CLOSED_FORMS))
def test_schedule_curve_matches_closed_form_with_multipliers(name):
    args, base = CLOSED_FORMS[name]
    opt = _opt()
    sched = build_schedule(name, args, opt, steps_per_epoch=STEPS, epochs=EPOCHS)
    got = _run(sched, opt)
    want = [[base(t, t // STEPS) * m for m in MULTS] for t in range(T)]
    assert [g["lr_mult"] for g in opt.param_groups] == list(MULTS)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert sched.lr() == pytest.approx(opt.param_groups[0]["lr"])


TORCH_REFS = {
    "step": lambda o: torch.optim.lr_scheduler.StepLR(o, 2, 0.5),
    "multistep": lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [1, 2], 0.1),
    "exponential": lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.5),
    "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T, eta_min=0.01),
    "one_cycle": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, LR, total_steps=T, pct_start=0.3),
    "reduce_on_plateau": lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=0),
}


@pytest.mark.parametrize("name", list(TORCH_REFS))
def test_schedule_matches_torch_scheduler(name):
    """One parameter group (torch's eta_min is not scaled per group), Adam: momentum cycles too."""
    args, _ = CLOSED_FORMS[name]
    net_a, net_b = nn.Linear(2, 2), nn.Linear(2, 2)
    ours = build_optimizer("Adam", {"lr": LR}, list(net_a.named_parameters()))
    theirs = torch.optim.Adam(net_b.parameters(), lr=LR)
    sched, ref = build_schedule(name, args, ours, steps_per_epoch=STEPS, epochs=EPOCHS), TORCH_REFS[name](theirs)
    per_step = name in ("cosine", "one_cycle")
    for t in range(T):
        assert ours.param_groups[0]["lr"] == pytest.approx(theirs.param_groups[0]["lr"], rel=1e-9, abs=1e-12)
        assert ours.param_groups[0]["betas"] == pytest.approx(theirs.param_groups[0]["betas"])
        ours.step(), theirs.step()
        sched.after_step()
        if per_step:
            ref.step()
        if (t + 1) % STEPS == 0:
            sched.after_epoch({"val_loss": VAL_LOSS[t // STEPS]})
            if name == "reduce_on_plateau":
                ref.step(VAL_LOSS[t // STEPS])
            elif not per_step:
                ref.step()


@pytest.mark.parametrize("name", list(CLOSED_FORMS))
@pytest.mark.parametrize("stop", [7, 10])   # mid-epoch, and at an epoch's end
@pytest.mark.parametrize("optimizer_state_first", [False, True, None])
def test_schedule_resumes_the_same_curve(name, stop, optimizer_state_first):
    """Save after `stop` steps (state through JSON), rebuild optimizer and schedule as a
    resumed run does, load, continue: the lrs are those of an uninterrupted run.
    None: the optimizer's state is not loaded at all (the schedule alone restores the lr)."""
    args, _ = CLOSED_FORMS[name]
    opt = _opt("Adam")
    sched = build_schedule(name, args, opt, steps_per_epoch=STEPS, epochs=EPOCHS)
    full = _run(sched, opt)

    opt = _opt("Adam")
    sched = build_schedule(name, args, opt, steps_per_epoch=STEPS, epochs=EPOCHS)
    got = _run(sched, opt, range(stop))
    saved = json.loads(json.dumps(sched.state_dict(), allow_nan=False))
    opt_state = copy.deepcopy(opt.state_dict())

    opt = _opt("Adam")
    if optimizer_state_first:
        opt.load_state_dict(opt_state)
    sched = build_schedule(name, args, opt, steps_per_epoch=STEPS, epochs=EPOCHS)
    sched.load_state_dict(saved)
    if optimizer_state_first is False:
        opt.load_state_dict(opt_state)
    _run(sched, opt, range(stop, T), got)
    np.testing.assert_allclose(got, full, rtol=1e-12, atol=1e-15)


def test_steps_past_the_end_keep_the_last_lr():
    for name in ("cosine", "one_cycle", "warmup_cosine"):
        args, _ = CLOSED_FORMS[name]
        opt = _opt()
        sched = build_schedule(name, args, opt, steps_per_epoch=STEPS, epochs=EPOCHS)
        for _ in range(T):
            opt.step()
            sched.after_step()
        last = [g["lr"] for g in opt.param_groups]
        for _ in range(2):
            opt.step()
            sched.after_step()
        assert [g["lr"] for g in opt.param_groups] == last


def test_reduce_on_plateau_falls_back_to_train_loss():
    opt = _opt()
    sched = build_schedule("reduce_on_plateau", {"factor": 0.5, "patience": 0}, opt, steps_per_epoch=1, epochs=3)
    sched.after_epoch({"train_loss": 1.0, "val_loss": None})
    sched.after_epoch({"train_loss": 1.0})
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([LR * 0.5 * m for m in MULTS])


def test_no_schedule_is_a_no_op():
    opt = _opt()
    sched = build_schedule(None, {}, opt, steps_per_epoch=STEPS, epochs=EPOCHS)
    assert type(sched) is Schedule
    sched.after_step()
    sched.after_epoch({"val_loss": 1.0})
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([LR * m for m in MULTS])
    sched.load_state_dict(json.loads(json.dumps(sched.state_dict())))
    with pytest.raises(ValueError):
        build_schedule("cosine", {}, opt, steps_per_epoch=1, epochs=1).load_state_dict(sched.state_dict())


# ---------------------------------------------------------------- metrics

def test_classification_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    g = torch.Generator().manual_seed(0)
    c = 7
    logits = torch.randn(90, c, generator=g)
    target = torch.randint(0, c - 1, (90,), generator=g)   # class 6 never a target: it may still be predicted
    m = MetricSet(["accuracy", "top5", "f1"], "classification")
    for sl in (slice(0, 40), slice(40, 90)):
        m.update(logits[sl], target[sl])
    got = m.compute()
    pred = logits.argmax(1).numpy()
    assert got["accuracy"] == pytest.approx(accuracy_score(target.numpy(), pred))
    assert got["f1"] == pytest.approx(f1_score(target.numpy(), pred, average="macro"))
    top5 = (logits.topk(5, dim=1).indices == target[:, None]).any(1).float().mean().item()
    assert got["top5"] == pytest.approx(top5)
    np.testing.assert_array_equal(m.confusion(), confusion_matrix(target.numpy(), pred, labels=list(range(c))))
    m.reset()
    assert math.isnan(m.compute()["accuracy"])


def test_per_position_and_ignored_targets_and_binary_logits():
    from sklearn.metrics import accuracy_score, f1_score
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 3, 6, generator=g)         # [N, C, L]
    target = torch.randint(0, 3, (4, 6), generator=g)
    target[0, :2] = -100
    m = MetricSet(["accuracy", "f1"], "classification")
    m.update(logits, target)
    flat_pred = logits.argmax(1).reshape(-1)
    keep = target.reshape(-1) >= 0
    t, p = target.reshape(-1)[keep].numpy(), flat_pred[keep].numpy()
    assert m.compute() == pytest.approx({"accuracy": accuracy_score(t, p), "f1": f1_score(t, p, average="macro")})
    # one logit per example against 0/1 targets
    z = torch.tensor([2.0, -1.0, 0.5, -3.0])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    m = MetricSet(["accuracy"], "classification")
    m.update(z, y)
    assert m.compute()["accuracy"] == 0.5 and m.confusion().tolist() == [[1, 1], [1, 1]]
    # fewer than 5 classes: top5 counts every target
    m = MetricSet(["top5"], "classification")
    m.update(torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1]))
    assert m.compute()["top5"] == 1.0


def test_regression_metrics_match_sklearn():
    from sklearn.metrics import mean_absolute_error, mean_squared_error
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(30, 2, generator=g), torch.randn(30, 2, generator=g)
    m = MetricSet(["mse", "mae"], "regression")
    m.update(pred[:10], target[:10])
    m.update(pred[10:], target[10:])
    got = m.compute()
    assert got["mse"] == pytest.approx(mean_squared_error(target.numpy(), pred.numpy()))
    assert got["mae"] == pytest.approx(mean_absolute_error(target.numpy(), pred.numpy()))
    assert m.confusion() is None


def test_metrics_must_fit_the_task():
    with pytest.raises(ValueError, match="regression"):
        MetricSet(["accuracy"], "regression")
    with pytest.raises(ValueError, match="unknown"):
        MetricSet(["auc"], "classification")


# ---------------------------------------------------------------- early stopping

def _feed(es, values, key="val_loss"):
    for epoch, v in enumerate(values, 1):
        if es.update(epoch, {key: v}):
            return epoch
    return None


def test_early_stopping_patience_and_min_delta():
    es = EarlyStopping(patience=2)
    assert _feed(es, [1.0, 0.9, 0.95, 0.91, 0.5]) == 4       # two epochs without a new best
    assert (es.best, es.best_epoch, es.stopped) == (0.9, 2, True)
    es = EarlyStopping(patience=2, min_delta=0.05)
    assert _feed(es, [1.0, 0.96, 0.94, 0.9]) is None           # 0.96 is within min_delta; 0.94 is not
    assert (es.best, es.best_epoch, es.wait, es.stopped) == (0.94, 3, 1, False)
    es = EarlyStopping(patience=0)
    assert _feed(es, [1.0, 0.5, 0.7]) == 3
    es = EarlyStopping(patience=1)
    assert _feed(es, [1.0, float("nan")]) == 2                 # NaN never improves


def test_early_stopping_mode():
    es = EarlyStopping(monitor="val_accuracy", patience=1)     # auto: accuracy is maximized
    assert es.mode == "max"
    assert _feed(es, [0.5, 0.6, 0.55], "val_accuracy") == 3 and es.best == 0.6
    assert EarlyStopping(monitor="val_f1").mode == "max" and EarlyStopping(monitor="val_top5").mode == "max"
    assert EarlyStopping(monitor="val_mse").mode == "min" and EarlyStopping(monitor="train_loss").mode == "min"
    es = EarlyStopping(monitor="val_loss", mode="max", patience=0)
    assert _feed(es, [1.0, 2.0, 1.5]) == 3 and es.best == 2.0
    es = EarlyStopping(patience=0)                              # no validation split: train_loss
    assert _feed(es, [2.0, 3.0], "train_loss") == 2
    with pytest.raises(KeyError, match="val_accuracy"):
        EarlyStopping(monitor="val_accuracy").update(1, {"val_loss": 1.0})


def test_early_stopping_restores_the_best_weights_and_round_trips():
    net = nn.Linear(2, 1)
    es = EarlyStopping(patience=1)
    best = None
    for epoch, v in enumerate([1.0, 0.5, 0.8], 1):
        with torch.no_grad():
            net.weight.fill_(epoch)
        es.update(epoch, {"val_loss": v}, module=net)
        if es.improved:
            best = copy.deepcopy(net.state_dict())
    assert es.stopped and es.best_epoch == 2
    assert es.restore(net) and torch.equal(net.weight, best["weight"])
    assert not EarlyStopping(restore_best=False).restore(net)

    es = EarlyStopping(patience=3)
    _feed(es, [1.0, 0.5, 0.7])
    again = EarlyStopping(patience=3)
    again.load_state_dict(json.loads(json.dumps(es.state_dict(), allow_nan=False)))
    assert (again.best, again.best_epoch, again.wait, again.stopped) == (0.5, 2, 1, False)
    assert _feed(es, [0.9, 0.9]) == 2 and _feed(again, [0.9, 0.9]) == 2


# ---------------------------------------------------------------- EMA and clipping

def test_ema_is_the_hand_computed_average_and_swaps_back():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    w0 = net[0].weight.detach().clone()
    ema = EMA(net, decay=0.9)
    expected = w0.clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(4, 2)).pow(2).sum().backward()
        opt.step()
        ema.update()
        expected = 0.9 * expected + 0.1 * net[0].weight.detach()
    live = copy.deepcopy(net.state_dict())
    sd = ema.state_dict()
    torch.testing.assert_close(sd["0.weight"], expected)
    assert torch.equal(sd["1.running_mean"], net[1].running_mean)           # buffers are copied
    assert int(sd["1.num_batches_tracked"]) == 3
    weight = net[0].weight
    with ema.swapped() as m:
        assert m is net and torch.equal(net[0].weight, sd["0.weight"])
        assert net[0].weight is weight                                      # same Parameter: optimizers unaffected
    for k, v in net.state_dict().items():
        assert torch.equal(v, live[k])
    other = EMA(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), 0.5)
    other.load_state_dict(sd)
    torch.testing.assert_close(other.state_dict()["0.weight"], expected)


def test_clip_gradients():
    net = nn.Linear(3, 1)
    for p in net.parameters():
        p.grad = torch.full_like(p, 2.0)
    total = math.sqrt(4 * 4.0)
    assert clip_gradients(net.parameters(), None, None) is None
    assert clip_gradients(net.parameters(), 1.0, None) == pytest.approx(total)
    grads = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
    assert grads.norm().item() == pytest.approx(1.0, rel=1e-4)
    for p in net.parameters():
        p.grad = torch.tensor([[3.0, -0.1, -5.0]]) if p.dim() == 2 else torch.tensor([0.2])
    norm = clip_gradients(list(net.parameters()), None, 0.5)
    assert norm == pytest.approx(math.sqrt(9 + 0.01 + 25 + 0.04))
    assert net.weight.grad.tolist() == [[0.5, pytest.approx(-0.1), -0.5]]


# ---------------------------------------------------------------- the language side

MODEL = """\
model M {
    input x: [B, 1, 8, 8]
    Flatten() as flat
    Linear(10) as head
}
"""


def _plan(tmp_path, lr_mult: str, name="plan.dl"):
    src = tmp_path / name
    src.write_text(MODEL + f"""
train t {{
    model = M()
    data = digits()
    loss = cross_entropy(out, batch.y)
    optimizer = SGD(lr=0.1, lr_mult={lr_mult})
    epochs = 1
}}
""", encoding="utf-8")
    return str(src)


def test_plan_lr_mult_checks_and_builds_the_groups(tmp_path):
    prog = dslc.load(_plan(tmp_path, '{"head": 10.0}'))
    opt_call = prog.plan("t").fields["optimizer"]
    assert opt_call.args["lr_mult"] == {"head": 10.0}
    net = prog.build("M", seed=0)
    opt = build_optimizer(opt_call.entry.name, opt_call.args, list(net.named_parameters()))
    assert [(g["lr"], g["param_names"]) for g in opt.param_groups] == [(1.0, ["head.weight", "head.bias"])]


def test_plan_lr_mult_unknown_layer_is_e0506(tmp_path):
    with pytest.raises(dslc.DslcError) as e:
        dslc.load(_plan(tmp_path, '{haed: 10.0}'))
    text = str(e.value)
    assert "error[E0506]" in text and "no layer `haed`" in text and "did you mean `head`?" in text
    with pytest.raises(dslc.DslcError, match="E0302"):
        dslc.load(_plan(tmp_path, '{"head": -1.0}', "neg.dl"))
    with pytest.raises(dslc.DslcError, match="expects a dict of numbers"):
        dslc.load(_plan(tmp_path, '[1.0]', "list.dl"))


def test_lr_mult_keys_are_relative_to_the_optimizers_model(tmp_path):
    src = tmp_path / "gan.dl"
    text = """\
model G {
    input z: [B, 4]
    Linear(64) as fc
}

model D {
    input x: [B, 64]
    Linear(1) as score
}

train gan {
    models = { G: G(), D: D() }
    data = digits()
    epochs = 1
    step disc {
        loss = bce_with_logits(D(flatten(batch.x, start_dim=1)), ones)
        optimizer = Adam(D, lr=2e-4, lr_mult={"score": 0.5})
    }
    step gen {
        loss = bce_with_logits(D(G(noise([batch_size, 4]))), ones)
        optimizer = Adam(G, lr=2e-4, lr_mult={fc: 2.0})
    }
}
"""
    src.write_text(text, encoding="utf-8")
    dslc.load(str(src))
    src.write_text(text.replace("{fc: 2.0}", "{score: 2.0}"), encoding="utf-8")
    with pytest.raises(dslc.DslcError, match=r"E0506\]: `G` has no layer `score`"):
        dslc.load(str(src))


def test_cli_check_reports_the_unknown_prefix(tmp_path):
    from click.testing import CliRunner

    from dslc.cli import main
    r = CliRunner().invoke(main, ["check", _plan(tmp_path, '{"flat.x": 2.0}')])
    assert r.exit_code == 1 and "E0506" in r.output and "single layer" in r.output


# ------------------------------------------------------------------ the plan's settings


def test_train_config_takes_every_default_from_the_catalogue_and_is_frozen(tmp_path):
    """`TrainConfig` restates no default: a plan that sets nothing optional runs with the catalogue's."""
    import dataclasses

    from dslc import catalog
    from dslc.runtime.config import TrainConfig
    path = tmp_path / "p.dl"
    path.write_text("model M {\n    input x: [B, 4]\n    Linear(3)\n}\n"
                    "train p {\n    model = M()\n    data = iris()\n    loss = cross_entropy(out, batch.y)\n"
                    "    optimizer = SGD(lr=0.1)\n    epochs = 1\n}\n")
    config = TrainConfig.of(dslc.load(str(path)).plan("p"))
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for f in catalog.FIELDS.values():
        if f.name in names and f.name != "epochs":   # the plan sets `epochs`
            value = getattr(config, f.name)
            assert value == f.default if f.default is not None else not value, f.name
    for name in ("every", "keep", "monitor"):
        assert config.checkpoint[name] == next(p.default for p in catalog.CALLS["checkpoint"].params
                                               if p.name == name)
    assert config.early_stopping is None and config.best_monitor == "val_loss"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1


def test_train_config_reads_what_the_plan_sets(tmp_path):
    from dslc.runtime.config import TrainConfig
    path = tmp_path / "p.dl"
    path.write_text("model M {\n    input x: [B, 4]\n    Linear(3)\n}\n"
                    "train p {\n    model = M()\n    data = iris(val=0.2)\n    loss = cross_entropy(out, batch.y)\n"
                    "    optimizer = SGD(lr=0.1)\n    epochs = 2\n    batch_size = 8\n    accumulate = 2\n"
                    "    metrics = [accuracy]\n    ema = 0.99\n    clip_grad_norm = 1.0\n"
                    "    early_stopping(monitor=\"val_accuracy\", patience=1)\n}\n")
    config = TrainConfig.of(dslc.load(str(path)).plan("p"))
    assert (config.epochs, config.batch_size, config.accumulate, config.ema, config.clip_grad_norm) == \
        (2, 8, 2, 0.99, 1.0)
    assert config.metrics == ("accuracy",) and config.early_stopping["patience"] == 1
    assert config.best_monitor == "val_accuracy"   # no checkpoint(...) call: early stopping's monitor
