"""Augmentations (ops/augment.py), each on its own terms as torchvision documents it: output
shapes, value ranges, identity at zero strength, draws fixed by the generator's seed, and
hand-computed references where they are cheap (centre-crop indices, antialiased resizing as a
triangle filter, Gaussian blur as an explicit 2-d kernel, a 90° affine as torch.rot90). Then the
step form `augment(batch.x, [...])` (two views differ; the same seed gives the same views; eval
mode leaves them alone), `standardize()` (numpy's figures of the training split, stored in the run
and applied by `dslc predict`) and the diagnostics."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import load_file
from support import train_until_interrupted

from dslc.api import evaluate, predict, train
from dslc.cli import main
from dslc.runtime import data as data_mod
from dslc.runtime.evaluate import EvalOptions
from dslc.runtime.predict import PredictOptions
from dslc.runtime.trainer import Options

# curves.png and confusion.png are left out of these runs (tests/conftest.py: no_figures)
pytestmark = pytest.mark.usefixtures("no_figures")


def aug(name: str, x: torch.Tensor, seed: int = 0, **kwargs) -> torch.Tensor:
    return data_mod.apply_augment(x, [(name, kwargs)], data_mod.generator(seed))


def images(b=4, c=3, h=8, w=8, seed=0) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


RANDOM = [("random_resized_crop", {"size": [5, 6], "scale": [0.3, 1.0]}),
          ("color_jitter", {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}),
          ("gaussian_blur", {"kernel_size": [3, 5], "sigma": [0.5, 2.0]}),
          ("random_erasing", {"p": 1.0}),
          ("random_affine", {"degrees": 20, "translate": [0.2, 0.1], "scale": [0.8, 1.2], "shear": [-10, 10, -5, 5]})]


# ------------------------------------------------------------------ shapes, ranges, seeds

@pytest.mark.parametrize("name,kwargs", RANDOM, ids=[n for n, _ in RANDOM])
def test_shapes_ranges_and_seeds(name, kwargs):
    x = images(b=6)
    out = aug(name, x, **kwargs)
    want = (6, 3) + (tuple(kwargs["size"]) if "size" in kwargs else (8, 8))
    assert out.shape == want and out.dtype == x.dtype
    # each is a blend, crop or move of [0, 1] pixels, or fills with 0: the values stay in [0, 1]
    assert out.min() >= 0 and out.max() <= 1 + 1e-6
    assert torch.equal(out, aug(name, x, **kwargs))            # the same generator seed: the same draws
    assert not torch.equal(out, aug(name, x, seed=1, **kwargs))  # another: others
    grey = aug(name, x[:, :1, :, 0:8].squeeze(1), **kwargs)     # [B, H, W]: one channel
    assert grey.shape == (6,) + want[2:]
    # per example: the same image twice in a batch is augmented differently
    twins = aug(name, x[:1].expand(6, -1, -1, -1).contiguous(), **kwargs)
    assert not all(torch.equal(twins[0], twins[i]) for i in range(1, 6))


def test_identity_at_zero_strength():
    x = images()
    assert torch.equal(aug("color_jitter", x), x)
    assert torch.equal(aug("color_jitter", x, brightness=0, contrast=0, saturation=0, hue=0), x)
    assert torch.equal(aug("random_erasing", x, p=0.0), x)
    torch.testing.assert_close(aug("random_affine", x, degrees=0), x, rtol=0, atol=1e-6)
    torch.testing.assert_close(aug("random_affine", x, degrees=0, interpolation="bilinear"), x, rtol=0, atol=1e-6)
    # the whole square image at ratio 1, resized to its own size
    torch.testing.assert_close(aug("random_resized_crop", x, size=[8, 8], scale=[1, 1], ratio=[1, 1]), x)


# ------------------------------------------------------------------ hand-computed references

def test_center_crop_takes_torchvisions_rounded_centre_and_pads_small_images():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8)
    # top = round((8 - 3) / 2) = round(2.5) = 2 (Python rounds half to even)
    assert torch.equal(aug("center_crop", x, size=[3, 3]), x[..., 2:5, 2:5])
    odd = torch.arange(7 * 7, dtype=torch.float32).view(1, 1, 7, 7)
    assert torch.equal(aug("center_crop", odd, size=[4, 2]), odd[..., 2:6, 2:4])   # round(1.5) = 2, round(2.5) = 2
    small = torch.ones(1, 1, 2, 3)
    out = aug("center_crop", small, size=[4, 6])   # padded by (1, 1) rows and (1, 2) columns
    want = torch.zeros(1, 1, 4, 6)
    want[..., 1:3, 1:4] = 1
    assert torch.equal(out, want)


def _triangle(n_in: int, n_out: int) -> torch.Tensor:
    """The antialiased bilinear resampling matrix [n_out, n_in] of a downscale: a triangle filter
    stretched by the scale, normalized over the input pixels it covers (PIL's and torch's rule)."""
    scale = n_in / n_out
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        centre = (i + 0.5) * scale
        for j in range(n_in):
            m[i, j] = max(0.0, 1 - abs(j + 0.5 - centre) / scale)
    return m / m.sum(1, keepdim=True)


def test_resize_is_torchvisions_antialiased_bilinear():
    x = images(b=2, c=2, h=8, w=12)
    out = aug("resize", x, size=[4, 3])
    rows, cols = _triangle(8, 4), _triangle(12, 3)
    want = torch.einsum("ih,bchw,jw->bcij", rows, x.double(), cols).float()
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    up = aug("resize", x, size=[16, 24])   # upscaling: plain bilinear (antialiasing changes nothing)
    torch.testing.assert_close(up, F.interpolate(x, size=(16, 24), mode="bilinear", align_corners=False))


def test_gaussian_blur_is_an_explicit_2d_kernel_with_reflect_padding():
    x = images(b=3, c=2, h=7, w=9)
    sigma, (kh, kw) = 1.3, (3, 5)
    out = aug("gaussian_blur", x, kernel_size=[kh, kw], sigma=[sigma, sigma])

    def kernel(k):
        t = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
        g = torch.exp(-t ** 2 / (2 * sigma ** 2))
        return g / g.sum()
    k2 = torch.outer(kernel(kh), kernel(kw)).float()
    padded = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode="reflect")
    want = F.conv2d(padded, k2.expand(2, 1, kh, kw), groups=2)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


def test_color_jitter_brightness_is_a_clamped_factor_per_example():
    x = images(b=8) * 0.5
    out = aug("color_jitter", x, brightness=0.4)
    factors = (out / x).flatten(1)
    assert torch.allclose(factors, factors[:, :1].expand_as(factors), atol=1e-5)   # one factor per example
    assert factors.min() >= 0.6 - 1e-5 and factors.max() <= 1.4 + 1e-5
    assert factors[:, 0].unique().numel() == 8


def test_color_jitter_saturation_and_hue_leave_one_channel_alone():
    x = images(c=1)
    assert torch.equal(aug("color_jitter", x, saturation=0.9, hue=0.5), x)
    grey = images(c=1).expand(-1, 3, -1, -1).contiguous()   # r = g = b: no hue, no saturation to change
    # (torchvision's grey weights 0.2989 + 0.587 + 0.114 sum to 0.9999: saturation moves grey by 1e-4)
    torch.testing.assert_close(aug("color_jitter", grey, saturation=0.9, hue=0.5), grey, rtol=0, atol=2e-4)


def test_hue_shift_turns_red_to_green_a_third_of_a_turn_on():
    hue = data_mod.helper("hue")
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(hue(red, torch.tensor(1 / 3).view(1, 1, 1)), torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1))
    x = images()
    torch.testing.assert_close(hue(x, torch.zeros(4, 1, 1)), x, rtol=0, atol=1e-6)   # RGB -> HSV -> RGB


def test_contrast_on_one_channel_blends_with_the_images_mean():
    x = images(b=5, c=1) * 0.6 + 0.2
    out = aug("color_jitter", x, contrast=0.3)
    mean = x.mean((1, 2, 3), keepdim=True)
    f = ((out - mean) / (x - mean)).flatten(1)   # out = f·x + (1 - f)·mean, nothing clamped at these values
    assert torch.allclose(f, f[:, :1].expand_as(f), atol=1e-4) and f.min() >= 0.7 - 1e-4 and f.max() <= 1.3 + 1e-4


def test_random_erasing_fills_one_rectangle_of_a_drawn_area():
    x = images(b=16, c=2, h=10, w=12)
    out = aug("random_erasing", x, p=1.0, scale=[0.1, 0.3], ratio=[0.5, 2.0], value=5.0)
    for i in range(16):
        changed = (out[i] != x[i]).all(0)
        assert (out[i][:, changed] == 5).all()
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert changed.sum() == h * w and rows[-1] - rows[0] + 1 == h and cols[-1] - cols[0] + 1 == w
        assert 0 < h < 10 and 0 < w < 12
        # the rounded sides of an area in [0.1, 0.3]·120 (rounding moves it by less than a side)
        assert 0.1 * 120 - h - w <= h * w <= 0.3 * 120 + h + w
    noisy = aug("random_erasing", x, p=1.0, value="random")
    assert noisy.shape == x.shape and not torch.equal(noisy, x)


def test_random_affine_rotates_clockwise_and_shifts_by_whole_pixels():
    x = images(b=3, c=1, h=6, w=6)
    # F.affine's angle is clockwise: a quarter turn is torch.rot90 the other way
    torch.testing.assert_close(aug("random_affine", x, degrees=[90, 90]), torch.rot90(x, -1, (-2, -1)))
    moved = aug("random_affine", x, degrees=0, translate=[0.34, 0.34])
    for i in range(3):
        shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.allclose(moved[i], _shift(x[i], dy, dx))]
        assert shifts, f"example {i} is not a shift by whole pixels of at most 0.34·6"


def _shift(img, dy, dx):
    out = torch.zeros_like(img)
    h, w = img.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        img[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def test_random_resized_crop_samples_within_the_image_values():
    x = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8).expand(6, 2, 8, 8).contiguous()
    out = aug("random_resized_crop", x, size=[4, 4], scale=[0.2, 0.5])
    assert out.shape == (6, 2, 4, 4)
    assert out.min() >= 0 and out.max() <= 63
    # a crop: each example's rows increase down and its columns to the right, as the image's
    assert (out.diff(dim=-1) > 0).all() and (out.diff(dim=-2) > 0).all()


# ------------------------------------------------------------------ augment() in a step

STEP_PLAN = """
model Net {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(10) as head
}

train views {
    model = Net()
    data = digits(val=0.2, test=0.2, limit=120)
    epochs = 2
    batch_size = 32
    seed = SEED
    step contrast {
        x1 = augment(batch.x, [random_resized_crop(size=[8, 8], scale=[0.5, 1]), color_jitter(0.4, 0.4), random_flip()])
        x2 = augment(batch.x, [random_resized_crop(size=[8, 8], scale=[0.5, 1]), color_jitter(0.4, 0.4), random_flip()])
        loss = mse(model(x1), model(x2)) + mse(x1, x2)
        optimizer = SGD(lr=0.1)
    }
}
"""


def _write(tmp_path, text: str, name="plan.dl") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _step(tmp_path, seed=0):
    from dslc.api import load
    from dslc.runtime.trainer import Trainer
    path = _write(tmp_path, STEP_PLAN.replace("SEED", str(seed)))
    trainer = Trainer(load(path).plan("views"), path, Options(progress=False), out=lambda s: None)
    trainer.setup()
    return trainer


def test_two_views_in_one_step_differ_and_the_seed_fixes_them(tmp_path):
    trainer = _step(tmp_path)
    step = trainer.steps[0].module
    x, y = trainer.data.train["x"][:16], trainer.data.train["y"][:16]
    step.train()
    torch.manual_seed(3)
    a = _loss(step(x, y))
    torch.manual_seed(3)
    b = _loss(step(x, y))
    assert a > 0 and a == b           # the views differ (mse > 0); the same seed draws them again
    assert _loss(step(x, y)) != a     # the generator has moved on: new views
    step.eval()
    assert _loss(step(x, y)) == 0     # eval mode: no random augmentation, both views are `batch.x`


def _loss(out) -> float:
    """The step's loss: its first output (the prediction follows)."""
    return (out[0] if isinstance(out, (tuple, list)) else out).item()


@pytest.mark.slow
def test_a_rerun_with_the_same_seed_and_a_resumed_run_see_the_same_views(tmp_path):
    path = _write(tmp_path, STEP_PLAN.replace("SEED", "0"))
    runs = {}
    for out, extra in (("a", {}), ("b", {})):
        train(path, "views", Options(out=str(tmp_path / out), progress=False, **extra), out=lambda s: None)
        runs[out] = [json.loads(line)["train_loss"] for line in open(tmp_path / out / "metrics.jsonl")
                     if "train_loss" in json.loads(line)]
    assert runs["a"] == runs["b"] and len(runs["a"]) == 2
    train(path, "views", Options(out=str(tmp_path / "c"), progress=False, max_epochs=1), out=lambda s: None)
    train(path, "views", Options(out=str(tmp_path / "c"), progress=False, resume=True), out=lambda s: None)
    resumed = [json.loads(line)["train_loss"] for line in open(tmp_path / "c" / "metrics.jsonl")
               if "train_loss" in json.loads(line)]
    assert resumed == runs["a"]
    other = _write(tmp_path, STEP_PLAN.replace("SEED", "1"), "other.dl")
    train(other, "views", Options(out=str(tmp_path / "d"), progress=False), out=lambda s: None)
    assert [json.loads(line)["train_loss"] for line in open(tmp_path / "d" / "metrics.jsonl")
            if "train_loss" in json.loads(line)] != runs["a"]


# ------------------------------------------------------------------ standardize()

STANDARDIZE_PLAN = """
model Net {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(10) as head
}

train std {
    model = Net()
    data = digits(val=0.2, test=0.2, limit=300, seed=4)
    augment = [standardize(), random_flip()]
    loss = cross_entropy(out, batch.y)
    optimizer = Adam(lr=1e-2)
    epochs = 1
    batch_size = 64
}
"""


def test_standardize_stores_numpys_figures_of_the_training_split_and_predict_applies_them(tmp_path):
    path = _write(tmp_path, STANDARDIZE_PLAN)
    run = tmp_path / "run"
    train(path, "std", Options(out=str(run), progress=False), out=lambda s: None)
    stored = json.loads((run / "standardize.json").read_text())
    splits = data_mod.load("digits", {"val": 0.2, "test": 0.2, "limit": 300, "seed": 4})
    x = splits.train["x"].numpy().astype(np.float64)
    assert stored["mean"] == pytest.approx([x.mean()], rel=1e-12)
    assert stored["std"] == pytest.approx([x.std()], rel=1e-12)
    # predict applies the run's stored figures (changed here, so a fresh measurement would differ)
    (run / "standardize.json").write_text(json.dumps({"mean": [0.25], "std": [2.0]}))
    out = tmp_path / "p.npz"
    predict(path, "std", PredictOptions(run=str(run), split="test", file=str(out)), warn=lambda s: None)
    got = np.load(out)["probabilities"]
    state = load_file(os.path.join(run, "checkpoints", "best.safetensors"))
    test_x = (splits.test["x"] - 0.25) / 2.0
    want = torch.softmax(F.linear(test_x.flatten(1), state["head.weight"], state["head.bias"]), 1)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-6)
    # and so does eval: its loss is cross_entropy of those inputs
    measured = evaluate(path, "std", EvalOptions(run=str(run), split="test", out=str(tmp_path / "eval")),
                        warn=lambda s: None)
    logits = F.linear(test_x.flatten(1), state["head.weight"], state["head.bias"])
    assert measured["metrics"]["loss"] == pytest.approx(float(F.cross_entropy(logits, splits.test["y"])), rel=1e-5)


def test_channel_stats_are_numpys_per_channel():
    x = torch.rand(10, 3, 4, 5, dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    stats = data_mod.channel_stats(x)
    a = x.numpy()
    np.testing.assert_allclose(stats["mean"], a.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(stats["std"], a.std(axis=(0, 2, 3)), rtol=1e-12)


# ------------------------------------------------------------------ diagnostics

BASE = """
model Net {{
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(10)
}}

train t {{
    model = Net()
    data = digits()
    epochs = 1
{body}
}}
"""


def _check(tmp_path, body: str, text: str | None = None):
    path = _write(tmp_path, text or BASE.format(body=body))
    return CliRunner().invoke(main, ["check", path])


def _step_body(line: str) -> str:
    return f"    step s {{\n        v = {line}\n        loss = cross_entropy(model(v), batch.y)\n" \
           "        optimizer = Adam()\n    }"


@pytest.mark.parametrize("line,message", [
    ('augment(batch.x, [color_jitter("a")])', "error[E0301]: `brightness` of `color_jitter` expects a number"),
    ("augment(batch.x, [color_jitter(hue=0.7)])", "error[E0302]: `hue` of `color_jitter` must be between 0 and 0.5"),
    ("augment(batch.x, [gaussian_blur(4)])", "error[E0302]: `kernel_size` of `gaussian_blur` must be odd and positive"),
    ("augment(batch.x, [gaussian_blur(17)])", "error[E0302]: a kernel of 17 pads the height 8 by reflection by 8"),
    ("augment(batch.x, [random_resized_crop(size=[8, 8], scale=[0.9, 0.1])])",
     "error[E0302]: `scale` of `random_resized_crop` must be [low, high] with low <= high"),
    ("augment(batch.x, [random_erasing(value=\"noise\")])", "error[E0302]: `value` of `random_erasing` must be"),
    ("augment(batch.x, [relu()])", "error[E0301]: `relu` is not an augmentation"),
    ("augment(batch.x, [standardize()])", "error[E0302]: `standardize` is a plan-level augmentation"),
    ("augment(batch.x, [random_resized_crop(size=[6, 6])])",
     "error[E0302]: the augmentations make the tensor [B, 1, 6, 6] while training but [B, 1, 8, 8] in eval mode"),
    ("augment(batch.x -> Flatten(), [color_jitter(0.2)])",
     "error[E0302]: `color_jitter` works on images [B, C, H, W] or [B, H, W], but the tensor is [B, 64]"),
    ("augment(batch.x)", "error[E0303]: `augment` takes a tensor and a list of augmentations"),
])
def test_step_form_mistakes_are_clean_diagnostics(tmp_path, line, message):
    result = _check(tmp_path, _step_body(line))
    assert result.exit_code == 1 and message in result.stderr, result.stderr
    assert "plan.dl:" in result.stderr and "^" in result.stderr and "Traceback" not in result.stderr


def test_augment_outside_a_step_says_where_it_belongs(tmp_path):
    text = "model Net {\n    input x: [B, 1, 8, 8]\n    h = augment(x, [random_flip()])\n    output h\n}\n"
    result = _check(tmp_path, "", text)
    assert "error[E0203]: `augment(...)` augments a batch inside a training plan's `step`" in result.stderr
    result = _check(tmp_path, "    batch_size = augment(32, [random_flip()])")
    assert "error[E0203]: `augment(...)` augments a batch inside a training plan's `step`" in result.stderr


def test_plan_level_sizes_must_agree_and_feed_the_model(tmp_path):
    result = _check(tmp_path, "    augment = [random_resized_crop(size=[6, 6])]\n    loss = cross_entropy(out, batch.y)\n"
                    "    optimizer = Adam()")
    assert "error[E0302]: the augmentations make `batch.x` [B, 1, 6, 6] on training batches but [B, 1, 8, 8]" \
        in result.stderr
    result = _check(tmp_path, "    augment = [resize(size=[6, 6])]\n    loss = cross_entropy(out, batch.y)\n"
                    "    optimizer = Adam()")
    assert "error[E0504]: `Net`'s input `x` is [B, 1, 8, 8], but the data's `x` is [B, 1, 6, 6]" in result.stderr
    ok = _check(tmp_path, "    augment = [random_resized_crop(size=[6, 6]), resize(size=[8, 8]), standardize()]\n"
                "    loss = cross_entropy(out, batch.y)\n    optimizer = Adam()")
    assert ok.exit_code == 0, ok.stderr


# ------------------------------------------------------------------ mixup and cutmix

def _mix(name, x, y, seed=0, classes=10, **kwargs):
    out = data_mod.apply_batch({"x": x, "y": y}, [(name, {"classes": classes, **kwargs})], data_mod.generator(seed))
    return out["x"], out["y"], out[data_mod.CLASS_IDS]


def test_mixup_blends_each_example_and_its_label_with_the_one_before():
    x, y = images(b=6), torch.tensor([0, 1, 2, 3, 4, 5])
    mx, my, ids = _mix("mixup", x, y, alpha=0.4)
    assert torch.equal(ids, y) and my.shape == (6, 10) and my.dtype == torch.float32
    lam = float(my[0, 0])                     # y·λ + y_rolled·(1 − λ): example 0's own class keeps λ
    want_y = F.one_hot(y, 10).float() * lam + F.one_hot(y.roll(1), 10).float() * (1 - lam)
    torch.testing.assert_close(my, want_y)
    torch.testing.assert_close(mx, x * lam + x.roll(1, 0) * (1 - lam))
    assert torch.equal(_mix("mixup", x, y, alpha=0.4)[0], mx)   # the seed fixes λ
    # off training: one-hot targets, nothing mixed
    plain_batch = data_mod.apply_batch({"x": x, "y": y}, [("mixup", {"classes": 10})], train=False)
    assert torch.equal(plain_batch["x"], x) and torch.equal(plain_batch["y"], F.one_hot(y, 10).float())


def test_mixup_at_lambda_1_is_the_identity_with_one_hot_targets(monkeypatch):
    mixup = data_mod.helper("mixup")
    monkeypatch.setitem(mixup.__globals__, "augment_beta", lambda alpha, generator=None: 1.0)
    x, y = images(b=4), torch.tensor([3, 1, 4, 1])
    mx, my, _ = _mix("mixup", x, y)
    assert torch.equal(mx, x) and torch.equal(my, F.one_hot(y, 10).float())


def test_beta_draws_follow_numpys_beta():
    from scipy import stats
    beta = data_mod.helper("beta")
    for alpha in (0.01, 0.2, 1.0, 3.0):   # 0.01: two Gamma draws below 1e-300, kept apart by their logarithms
        g = torch.Generator().manual_seed(1)
        draws = np.array([beta(alpha, g) for _ in range(800)])
        assert stats.ks_2samp(draws, np.random.default_rng(0).beta(alpha, alpha, 800)).pvalue > 0.001


def test_cutmix_pastes_one_box_of_the_rolled_batch_and_mixes_labels_by_area():
    x, y = images(b=5, c=2, h=10, w=12), torch.tensor([0, 1, 2, 3, 4])
    for seed in range(6):
        mx, my, _ = _mix("cutmix", x, y, seed=seed)
        changed = (mx != x).any(1).any(0)        # [H, W]: where any example took its neighbour's pixels
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        area = len(rows) * len(cols)
        assert changed.sum() == area
        if area:
            box = (slice(None), slice(None), slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
            assert torch.equal(mx[box], x.roll(1, 0)[box])
        lam = 1 - area / 120
        torch.testing.assert_close(my, F.one_hot(y, 10).float() * lam + F.one_hot(y.roll(1), 10).float() * (1 - lam))


MIX_PLAN = """
model Net {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(10)
}

train mix {
    model = Net()
    data = DATA
    augment = [MIX]
    epochs = 1
    loss = cross_entropy(out, batch.y)
    optimizer = Adam(lr=1e-2)
    metrics = [accuracy]
}
"""


def test_mixing_trains_on_soft_targets_and_measures_class_ids(tmp_path):
    path = _write(tmp_path, MIX_PLAN.replace("DATA", "digits(val=0.2, limit=200)").replace("MIX", "cutmix(alpha=1.0)"))
    train(path, "mix", Options(out=str(tmp_path / "run"), progress=False), out=lambda s: None)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 <= record["val_accuracy"] <= 1 and record["val_loss"] > 0   # one-hot targets off training


@pytest.mark.parametrize("data,mix,message", [
    ("digits()", "mixup(alpha=0)", "error[E0302]: `alpha` of `mixup` must be positive"),
    ("digits()", "mixup(), cutmix()", "error[E0302]: a plan mixes labels once"),
    ('npz("d.npz")', "mixup()", "error[E0302]: `mixup` needs the number of classes, which `npz` does not fix"),
    ("diabetes()", "mixup(classes=3)", "error[E0302]: `mixup` mixes class ids `batch.y` [B] of int64"),
])
def test_mixing_mistakes_are_clean_diagnostics(tmp_path, data, mix, message):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64))
    text = MIX_PLAN.replace("DATA", data).replace("MIX", mix)
    if data == "diabetes()":
        text = text.replace("[B, 1, 8, 8]", "[B, 10]").replace("metrics = [accuracy]", "")
    result = _check(tmp_path, "", text)
    assert result.exit_code == 1 and message in result.stderr, result.stderr


def test_mixing_inside_augment_points_at_the_step_function(tmp_path):
    result = _check(tmp_path, _step_body("augment(batch.x, [mixup()])"))
    assert "error[E0302]: `mixup` mixes `batch.y` too: in a step it is a function of the batch" in result.stderr
    assert "x, y = mixup(batch.x, batch.y)" in result.stderr


# ------------------------------------------------------------------ mixup and cutmix in a step

MIX_STEP_PLAN = """
model Net {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(10) as head
}

train mixing {
    model = Net()
    data = digits(val=0.2, test=0.2, limit=300, seed=2)
    epochs = EPOCHS
    batch_size = 32
    metrics = [accuracy]
    seed = 5
    step s {
        x, y = MIX(batch.x, batch.y, alpha=0.4)
        out = model(x)
        loss = cross_entropy(out, y)
        optimizer = Adam(lr=1e-2)
    }
}
"""


def _mix_plan(mix="mixup", epochs=1) -> str:
    return MIX_STEP_PLAN.replace("MIX", mix).replace("EPOCHS", str(epochs))


def _mix_step(tmp_path, mix):
    from dslc.api import load
    from dslc.runtime.trainer import Trainer
    path = _write(tmp_path, _mix_plan(mix))
    trainer = Trainer(load(path).plan("mixing"), path, Options(progress=False), out=lambda s: None)
    trainer.setup()
    return trainer.steps[0].module


def _twin_mixup(x, soft, alpha):
    """torchvision.transforms.v2.MixUp, written out: λ ~ Beta(α, α) (the run's draw), the batch rolled by one."""
    lam = data_mod.helper("beta")(alpha)
    return x.roll(1, 0) * (1.0 - lam) + x * lam, soft.roll(1, 0) * (1.0 - lam) + soft * lam


def _twin_cutmix(x, soft, alpha):
    """torchvision.transforms.v2.CutMix, written out: a box centred at (randint(W), randint(H)), half-sides
    int(√(1 − λ)/2 · size), clipped; λ adjusted to the share of the image kept."""
    lam = data_mod.helper("beta")(alpha)
    h, w = x.shape[-2:]
    r_x, r_y = torch.randint(w, size=(1,)), torch.randint(h, size=(1,))
    r = 0.5 * (1.0 - lam) ** 0.5
    r_w_half, r_h_half = int(r * w), int(r * h)
    x1, y1 = int(torch.clamp(r_x - r_w_half, min=0)), int(torch.clamp(r_y - r_h_half, min=0))
    x2, y2 = int(torch.clamp(r_x + r_w_half, max=w)), int(torch.clamp(r_y + r_h_half, max=h))
    out = x.clone()
    out[..., y1:y2, x1:x2] = x.roll(1, 0)[..., y1:y2, x1:x2]
    lam = 1.0 - (x2 - x1) * (y2 - y1) / (w * h)
    return out, soft.roll(1, 0) * (1.0 - lam) + soft * lam


@pytest.mark.parametrize("mix,twin", [("mixup", _twin_mixup), ("cutmix", _twin_cutmix)])
def test_a_mixing_step_is_its_hand_written_torch_twin(tmp_path, mix, twin):
    step = _mix_step(tmp_path, mix)
    state = step.model.state_dict()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
    step.train()
    for seed in range(4):
        torch.manual_seed(seed)
        loss, out = step(x, y)
        torch.manual_seed(seed)
        mx, my = twin(x, F.one_hot(y, 10).to(torch.float32), 0.4)
        logits = F.linear(mx.flatten(1), state["head.weight"], state["head.bias"])
        assert torch.equal(out, logits) and torch.equal(loss, F.cross_entropy(logits, my))
    step.eval()   # eval mode: the batch as it is, one-hot targets
    loss, out = step(x, y)
    logits = F.linear(x.flatten(1), state["head.weight"], state["head.bias"])
    assert torch.equal(out, logits) and torch.equal(loss, F.cross_entropy(logits, F.one_hot(y, 10).float()))


def _mixed(mix, x, y, alpha, seed, **kwargs):
    """The op as generated code runs it: the plan's helpers on torch's generator, seeded."""
    torch.manual_seed(seed)
    return data_mod.helper(mix)(x, F.one_hot(y, 10).to(torch.float32), alpha, **kwargs)


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_soft_targets_sum_to_one_and_a_tiny_alpha_leaves_a_batch_whole(mix):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(8, 3, 6, 6, generator=g), torch.randint(0, 10, (8,), generator=g)
    for seed in range(8):
        mx, my = _mixed(mix, x, y, 1.0, seed)
        torch.testing.assert_close(my.sum(1), torch.ones(8), rtol=0, atol=1e-6)
        assert (my >= 0).all() and mx.shape == x.shape
    # Beta(α, α) piles up at 0 and 1 as α → 0. At λ = 1 the batch is itself with one-hot targets; mixup's
    # λ = 0 is the rolled batch (cutmix's is a clipped box of half the image's sides, as torchvision's)
    kept = 0
    for seed in range(12):
        mx, my = _mixed(mix, x, y, 1e-4, seed)
        whole = [(x, y), (x.roll(1, 0), y.roll(1))] if mix == "mixup" else [(x, y)]
        same = [(mx - a).abs().max() < 1e-3 for a, b in whole if (my - F.one_hot(b, 10)).abs().max() < 1e-3]
        assert all(same) and (same or mix == "cutmix")
        kept += bool(same)
    assert kept >= 4


def test_a_plan_mixing_in_its_step_trains_on_digits_and_scores_class_ids(tmp_path):
    from dslc.runtime import checkpoint
    path = _write(tmp_path, _mix_plan("cutmix", epochs=6))
    run = tmp_path / "run"
    result = train(path, "mixing", Options(out=str(run), progress=False), out=lambda s: None)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["train_loss"] < records[0]["train_loss"] and records[-1]["val_loss"] < records[0]["val_loss"]
    assert records[-1]["val_accuracy"] > 0.3   # chance is 0.1 (a linear model on 180 images, 6 short epochs)
    # the metrics compare the unmixed validation batches' predictions with the class ids
    state = checkpoint.load(checkpoint.checkpoints(str(run / "checkpoints"))[-1][2])[0]
    splits = data_mod.load("digits", {"val": 0.2, "test": 0.2, "limit": 300, "seed": 2})
    for split, got in (("val", records[-1]["val_accuracy"]), ("test", result["test"]["accuracy"])):
        x, y = getattr(splits, split)["x"], getattr(splits, split)["y"]
        logits = F.linear(x.flatten(1), state["head.weight"], state["head.bias"])
        assert got == pytest.approx(int((logits.argmax(1) == y).sum()) / len(y), abs=1e-9)


def test_a_mixing_step_resumes_exactly_after_an_interruption_mid_epoch(tmp_path, monkeypatch):
    path = _write(tmp_path, _mix_plan("mixup", epochs=2))
    train(path, "mixing", Options(out=str(tmp_path / "whole"), progress=False), out=lambda s: None)
    train_until_interrupted(monkeypatch, path, "mixing", str(tmp_path / "cut"), batch=11)   # epoch 2's 3rd (6 each)
    assert any("-batch-" in n for n in os.listdir(tmp_path / "cut" / "checkpoints"))
    train(path, "mixing", Options(out=str(tmp_path / "cut"), resume=True, progress=False), out=lambda s: None)

    def records(run):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert records("cut") == records("whole")
    final = [load_file(str(tmp_path / run / "checkpoints" / "epoch-0002.safetensors")) for run in ("cut", "whole")]
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[1])


def test_a_mixing_steps_plan_py_runs_without_dslc(tmp_path):
    """The step's plan.py holds the mixing helpers: with torch alone, two seeds mix differently while
    training, and eval mode scores the batch as it is against one-hot targets."""
    from support import run_without_dslc

    from dslc.api import load
    from dslc.runtime.trainer import plan_source
    path = _write(tmp_path, _mix_plan("cutmix"))
    code = plan_source(load(path).plan("mixing"), path)
    assert "def augment_cutmix(" in code and "def augment_beta(" in code
    run = run_without_dslc(code + """
import torch.nn.functional as F
step = STEPS["s"](*[MODELS[m]() for m in STEP_MODELS["s"]])
x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
losses = []
for seed in (0, 1, 0):
    torch.manual_seed(seed)
    losses.append(float(step(x, y)[0]))
step.eval()
plain = float(F.cross_entropy(step.model(x), F.one_hot(y, 10).float()))
print(losses[0] == losses[2], losses[0] != losses[1], float(step(x, y)[0]) == plain)
""")
    assert run.returncode == 0 and run.stdout.split() == ["True", "True", "True"], run.stderr


@pytest.mark.parametrize("line,message", [
    ("mixup(batch.x, batch.y, alpha=0)", "error[E0302]: `alpha` of `mixup` must be positive"),
    ("cutmix(flatten(batch.x, start_dim=1), batch.y)",
     "error[E0302]: `cutmix` works on images [B, C, H, W] or [B, H, W], but the tensor is [B, 64]"),
    ("mixup(batch.x, float(batch.y))", "error[E0302]: `mixup` mixes class ids [B] of int64 or soft targets [B, C]"),
    ("mixup(batch.x, batch.y[:3])", "error[E0302]: `mixup` mixes a batch and its targets"),
    ("mixup(batch.x, float(one_hot(batch.y, 10)), classes=5)", "error[E0302]: the soft targets [B, 10] have 10 classes, not 5"),
    ("mixup(batch.x)", "error[E0303]"),
])
def test_mixing_step_mistakes_are_clean_diagnostics(tmp_path, line, message):
    body = f"    step s {{\n        v, soft = {line}\n        loss = cross_entropy(model(v), soft)\n" \
           "        optimizer = Adam()\n    }"
    result = _check(tmp_path, body)
    assert result.exit_code == 1 and message in result.stderr, result.stderr
    assert "plan.dl:" in result.stderr and "^" in result.stderr and "Traceback" not in result.stderr


def test_mixing_outside_a_step_says_where_it_belongs(tmp_path):
    text = "model Net {\n    input x: [B, 1, 8, 8]\n    h, t = mixup(x, x)\n    output h\n}\n"
    result = _check(tmp_path, "", text)
    assert "error[E0203]: `mixup(...)` mixes a batch and its targets inside a training plan's `step`" in result.stderr


def test_a_step_mixes_soft_targets_of_a_data_set_without_classes(tmp_path):
    """Soft targets [B, C] mix as they are (no `classes`); class ids of a set that does not fix the number
    of classes need it."""
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64))
    base = BASE.format(body="    step s {\n        v, soft = LINE\n        loss = cross_entropy(model(v), soft)\n"
                            "        optimizer = Adam()\n    }").replace("digits()", 'npz("d.npz")')
    result = _check(tmp_path, "", base.replace("LINE", "mixup(batch.x, batch.y)"))
    assert "error[E0302]: `mixup` makes class ids one-hot: it needs the number of classes" in result.stderr
    for line in ("mixup(batch.x, batch.y, classes=10)", "cutmix(batch.x, float(one_hot(batch.y, 10)))"):
        ok = _check(tmp_path, "", base.replace("LINE", line))
        assert ok.exit_code == 0, ok.stderr
    # digits fixes 10 classes, which class ids default to; soft targets keep their own number
    ok = _check(tmp_path, "    step s {\n        v, soft = mixup(target=float(one_hot(batch.y, 4)), input=batch.x)\n"
                "        loss = cross_entropy(model(v)[:, :4], soft)\n        optimizer = Adam()\n    }")
    assert ok.exit_code == 0, ok.stderr


def test_the_runs_plan_py_augments_without_dslc(tmp_path):
    """plan.py holds the augmentation helpers it calls: it runs with torch alone, and its step draws
    from torch's generator (two views differ in training mode, not in eval mode)."""
    from support import run_without_dslc
    path = _write(tmp_path, STEP_PLAN.replace("SEED", "0").replace("epochs = 2", "epochs = 1"))
    train(path, "views", Options(out=str(tmp_path / "run"), progress=False), out=lambda s: None)
    code = (tmp_path / "run" / "plan.py").read_text()
    assert "def augment_random_resized_crop(" in code and "def augment_color_jitter(" in code
    run = run_without_dslc(code + """
def loss(result):
    return float((result[0] if isinstance(result, tuple) else result).detach())
x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
torch.manual_seed(0)
step = STEPS["contrast"](*[MODELS[m]() for m in STEP_MODELS["contrast"]])
first = loss(step(x, y))
torch.manual_seed(0)
step2 = STEPS["contrast"](*[MODELS[m]() for m in STEP_MODELS["contrast"]])
again = loss(step2(x, y))
step.eval()
print(first > 0, first == again, loss(step(x, y)) == 0.0)
""")
    assert run.returncode == 0 and run.stdout.split() == ["True", "True", "True"], run.stderr
