"""Diffusion end to end: the noise schedules against the papers' formulas, the DDPM training step
written in .dl against the same step written by hand in torch, the loss going down, `dslc sample`'s
DDPM and DDIM samplers against hand-written reference loops (same model, same noise), and
conditional sampling (`--label`, `--input`) of a conditional GAN, with its diagnostics."""
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import dslc
from dslc.api import sample, train
from dslc.cli import main
from dslc.diagnostics import DslcError
from dslc.ir.dims import Sym
from dslc.ir.types import TensorType
from dslc.runtime import checkpoint
from dslc.runtime.restore import run_weights
from dslc.runtime.sample import SampleOptions, input_feeds
from dslc.runtime.trainer import Options, plan_module, plan_source

T = 1000   # the paper's schedule; the tiny model keeps the reference loops fast

DIFFUSION = f"""
block Res(width: int) {{
    input x
    input temb
    h = x -> Conv2d(width, 3, padding=1) -> SiLU()
    h = h + (temb -> Linear(width) -> unsqueeze(-1) -> unsqueeze(-1))
    output x + (h -> Conv2d(width, 3, padding=1))
}}

model Eps(width: int = 8) {{
    input x: [B, 1, 8, 8]
    input t: [B]
    temb = unsqueeze(t / {T}.0, 1) -> Linear(32) -> SiLU() -> Linear(32) -> SiLU()
    h = x -> Conv2d(width, 3, padding=1)
    h = Res(width)(h, temb)
    output h -> Conv2d(1, 3, padding=1)
}}

train ddpm {{
    model      = Eps()
    data       = digits(scale=[-1, 1])
    batch_size = 64
    epochs     = 6
    step denoise {{
        betas = beta_schedule("linear", {T})
        alpha_bar = cumprod(1 - betas, 0)
        t = randint(0, {T}, [batch.x.shape[0]])
        eps = randn_like(batch.x)
        a = extract(alpha_bar, t, batch.x)
        x_t = sqrt(a) * batch.x + sqrt(1 - a) * eps
        loss = mse(model(x_t, float(t)), eps)
        optimizer = Adam(model, lr=3e-3)
    }}
}}
"""

CGAN = """
model CG(latent: int = 8, classes: int = 10) {
    input z: [B, latent]
    input label: [B] of int64
    h = concat([label -> Embedding(classes, 4), z], dim=1)
    output h -> Linear(64) -> Tanh() -> reshape([B, 1, 8, 8])
}

model CD(classes: int = 10) {
    input x: [B, 1, 8, 8]
    input label: [B] of int64
    h = concat([flatten(x, start_dim=1), label -> Embedding(classes, 4)], dim=1)
    output h -> Linear(1) -> Sigmoid()
}

train cgan {
    models     = { G: CG(), D: CD() }
    data       = digits(scale=[-1, 1], limit=128)
    batch_size = 64
    epochs     = 1
    step discriminator {
        fake = G(noise([batch.x.shape[0], 8]), batch.y)
        loss = bce(D(batch.x, batch.y), ones) + bce(D(detach(fake), batch.y), zeros)
        optimizer = Adam(D, lr=2e-4)
    }
    step generator {
        loss = bce(D(G(noise([batch.x.shape[0], 8]), batch.y), batch.y), ones)
        optimizer = Adam(G, lr=2e-4)
    }
}
"""


def _trained(folder, text: str, plan: str) -> tuple[str, str]:
    path = folder / f"{plan}.dl"
    path.write_text(text)
    run = str(folder / "runs" / plan)
    train(str(path), plan, Options(out=run, progress=False, watch=False), out=[].append)
    return str(path), run


@pytest.fixture(scope="module")
def ddpm(tmp_path_factory):
    return _trained(tmp_path_factory.mktemp("ddpm"), DIFFUSION, "ddpm")


@pytest.fixture(scope="module")
def cgan(tmp_path_factory):
    return _trained(tmp_path_factory.mktemp("cgan"), CGAN, "cgan")


def _model(path: str, run: str, plan_name: str, key: str = "model") -> torch.nn.Module:
    """The run's model rebuilt by hand: the plan's generated module and the run's best weights."""
    plan = dslc.load(path).plan(plan_name)
    model = plan_module(plan, plan_source(plan, path)).MODELS[key]()
    weights = run_weights(run).state
    model.load_state_dict(checkpoint.under(weights, key + ".") if len(plan.models) > 1 else weights)
    return model.eval()


# ------------------------------------------------------------------ the schedules

def _betas_in_torch(path, schedule: str, steps: int) -> torch.Tensor:
    """What the generated PyTorch computes for `beta_schedule(schedule, steps)`."""
    path.write_text(f'model S {{\n    input x: [B, 1]\n    output x * 0.0 + unsqueeze(beta_schedule("{schedule}", '
                    f'{steps}), 0)\n}}\n')
    return dslc.load(str(path)).build("S")(torch.zeros(1, 1))[0]


def linear_betas() -> torch.Tensor:
    """hojonathanho/diffusion's get_beta_schedule("linear", 1e-4, 0.02, T), float64."""
    return torch.from_numpy(np.linspace(1e-4, 0.02, T, dtype=np.float64))


def test_the_linear_schedule_is_ho_et_als(tmp_path):
    betas = _betas_in_torch(tmp_path / "s.dl", "linear", T)
    assert betas.dtype == torch.float32
    np.testing.assert_array_equal(betas.numpy(), linear_betas().float().numpy())


def cosine_betas(steps: int) -> torch.Tensor:
    """improved-diffusion's betas_for_alpha_bar with its cosine ᾱ (Nichol & Dhariwal 2021), float64."""
    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return torch.tensor([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)],
                        dtype=torch.float64)


def test_the_cosine_schedule_is_nichol_and_dhariwals(tmp_path):
    betas = _betas_in_torch(tmp_path / "s.dl", "cosine", 1000)
    np.testing.assert_allclose(betas.numpy(), cosine_betas(1000).float().numpy(), rtol=1e-6)
    assert betas[-1] == pytest.approx(0.999)   # the clip
    assert (betas[:-1] < 0.999).all()


def test_a_schedule_of_no_steps_is_a_diagnostic(tmp_path):
    path = tmp_path / "s.dl"
    path.write_text('model S {\n    input x: [B, 1]\n    output x + unsqueeze(beta_schedule("cosine", 0), 0)\n}\n')
    r = CliRunner().invoke(main, ["check", str(path)])
    assert r.exit_code == 1 and "error[" in r.output and "Traceback" not in r.output
    path.write_text('model S {\n    input x: [B, 1]\n    output x + unsqueeze(beta_schedule("quadratic", 9), 0)\n}\n')
    r = CliRunner().invoke(main, ["check", str(path)])
    assert r.exit_code == 1 and "linear" in r.output and "Traceback" not in r.output


# ------------------------------------------------------------------ training

def test_the_training_step_is_the_papers_algorithm_1(ddpm):
    path, _ = ddpm
    plan = dslc.load(path).plan("ddpm")
    module = plan_module(plan, plan_source(plan, path))
    torch.manual_seed(0)
    model = module.MODELS["model"]()
    step = module.STEPS["denoise"](model)
    x0 = torch.rand(5, 1, 8, 8) * 2 - 1
    torch.manual_seed(7)
    loss = step(x0, torch.zeros(5, dtype=torch.int64))
    # by hand, the same draws in the same order: t ~ U{0..T-1}, ε ~ N(0, I)
    torch.manual_seed(7)
    alpha_bar = torch.cumprod(1 - linear_betas(), 0).float()
    t = torch.randint(0, T, (5,))
    eps = torch.randn_like(x0)
    a = alpha_bar[t].view(5, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    want = torch.nn.functional.mse_loss(model(x_t, t.float()), eps)
    torch.testing.assert_close(loss, want)


def test_the_ddpm_loss_goes_down(ddpm):
    _, run = ddpm
    losses = [json.loads(line)["train_loss"] for line in open(f"{run}/metrics.jsonl")]
    assert len(losses) == 6
    assert losses[-1] < 0.5 * losses[0]   # from ~1 (predicting nothing) down


@pytest.mark.slow
@torch.no_grad()
def test_samples_have_the_datas_pixel_mean_and_std(ddpm, tmp_path):
    """A 6-epoch model's DDPM samples: the digits' mean and spread, not the noise's (0 and 1) they start from."""
    path, run = ddpm
    from sklearn.datasets import load_digits
    x = torch.from_numpy(load_digits().data / 16 * 2 - 1)
    y = _sample(path, run, tmp_path, n=128, seed=0, sampler="ddpm")["samples"]
    assert abs(y.mean() - x.mean()) < 0.15, (y.mean(), x.mean())      # -0.39 in [-1, 1]
    assert abs(y.std() - x.std()) < 0.2, (y.std(), x.std())           # 0.75


def test_a_paused_and_resumed_run_draws_what_an_unbroken_one_does(tmp_path):
    """The timesteps and the noise come from the run's seeded random state, which checkpoints hold."""
    from test_train import metrics, run, same, weights
    plan = CONDITIONAL.replace("epochs     = 1", "epochs     = 2")
    run(tmp_path, plan, out="whole", watch=False)
    run(tmp_path, plan, out="parts", watch=False, max_epochs=1)
    run(tmp_path, plan, out="parts", watch=False, resume=True)
    assert same(weights(tmp_path / "whole"), weights(tmp_path / "parts"))
    assert [m["train_loss"] for m in metrics(tmp_path / "whole")] == \
        [m["train_loss"] for m in metrics(tmp_path / "parts")]


# ------------------------------------------------------------------ sampling

def _reference_ddpm(model, n: int, seed: int) -> torch.Tensor:
    """Algorithm 2 of Ho et al., written out: σ_t² = β_t."""
    g = torch.Generator().manual_seed(seed)
    betas = linear_betas()
    alphas = 1 - betas
    alpha_bar = torch.cumprod(alphas, 0)
    x = torch.randn(n, 1, 8, 8, generator=g)
    for t in reversed(range(T)):
        eps = model(x, torch.full((n,), float(t)))
        x = (x - (betas[t] / (1 - alpha_bar[t]).sqrt()).item() * eps) / alphas[t].sqrt().item()
        if t > 0:
            x = x + betas[t].sqrt().item() * torch.randn(x.shape, generator=g)
    return x


def _reference_ddim(model, n: int, seed: int, taus: list, betas=None, labels=()) -> torch.Tensor:
    """Song et al.'s eq. 12 with η = 0 over the timesteps `taus` (increasing)."""
    g = torch.Generator().manual_seed(seed)
    alpha_bar = torch.cumprod(1 - (linear_betas() if betas is None else betas), 0)
    x = torch.randn(n, 1, 8, 8, generator=g)
    prevs = [None] + taus[:-1]
    for t, prev in zip(reversed(taus), reversed(prevs)):
        a, a_prev = alpha_bar[t].item(), 1.0 if prev is None else alpha_bar[prev].item()
        eps = model(x, torch.full((n,), float(t)), *labels)
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    return x


def _sample(path, run, tmp_path, **options):
    options.setdefault("output", str(tmp_path / "samples.png"))
    return sample(path, "ddpm", SampleOptions(run=run, **options), out=[].append)


@torch.no_grad()
def test_ddpm_sampling_is_algorithm_2(ddpm, tmp_path):
    path, run = ddpm
    result = _sample(path, run, tmp_path, n=3, seed=3, sampler="ddpm")
    assert result["kind"] == "image" and result["steps"] == T and result["schedule"] == ["linear", T]
    want = _reference_ddpm(_model(path, run, "ddpm"), 3, 3)
    torch.testing.assert_close(result["samples"], want, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_ddim_with_every_step_follows_its_formula(ddpm, tmp_path):
    path, run = ddpm
    result = _sample(path, run, tmp_path, n=3, seed=4, sampler="ddim", steps=T)
    want = _reference_ddim(_model(path, run, "ddpm"), 3, 4, list(range(T)))
    torch.testing.assert_close(result["samples"], want, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_ddim_strides_over_the_schedule(ddpm, tmp_path):
    path, run = ddpm
    result = _sample(path, run, tmp_path, n=4, seed=5, sampler="ddim", steps=5)
    want = _reference_ddim(_model(path, run, "ddpm"), 4, 5, [0, 250, 500, 749, 999])   # round(linspace(0, 999, 5))
    torch.testing.assert_close(result["samples"], want, rtol=1e-4, atol=1e-4)
    again = _sample(path, run, tmp_path, n=4, seed=5, sampler="ddim", steps=5)
    assert torch.equal(again["samples"], result["samples"])


def test_the_cli_samples_a_diffusion_model_and_checks_steps(ddpm, tmp_path):
    path, run = ddpm
    out = str(tmp_path / "grid.png")
    r = CliRunner().invoke(main, ["sample", path, "--plan", "ddpm", "--run", run, "--sampler", "ddim", "--steps",
                                  "4", "-n", "9", "-o", out])
    assert r.exit_code == 0, r.output
    assert "ddim in 4 steps" in r.output
    r = CliRunner().invoke(main, ["sample", path, "--plan", "ddpm", "--run", run, "--steps", str(T + 1)])
    assert r.exit_code == 1 and "E0302" in r.output and f"T = {T}" in r.output
    r = CliRunner().invoke(main, ["sample", path, "--plan", "ddpm", "--run", run, "--label", "3"])
    assert r.exit_code == 1 and "E0209" in r.output and "label input" in r.output


# ------------------------------------------------------------------ conditional sampling

CONDITIONAL = """
model CEps(classes: int = 10) {
    input x: [B, 1, 8, 8]
    input t: [B]
    input label: [B] of int64
    c = concat([unsqueeze(t / 20.0, 1), label -> Embedding(classes, 4)], dim=1) -> Linear(8)
    h = x -> Conv2d(8, 3, padding=1) -> SiLU()
    output (h + unsqueeze(unsqueeze(c, -1), -1)) -> Conv2d(1, 3, padding=1)
}

train cddpm {
    model      = CEps()
    data       = digits(scale=[-1, 1], limit=128)
    batch_size = 64
    epochs     = 1
    step denoise {
        alpha_bar = cumprod(1 - beta_schedule("cosine", 20), 0)
        t = randint(0, 20, [batch.x.shape[0]])
        eps = randn_like(batch.x)
        a = extract(alpha_bar, t, batch.x)
        loss = mse(model(sqrt(a) * batch.x + sqrt(1 - a) * eps, float(t), batch.y), eps)
        optimizer = Adam(model, lr=1e-3)
    }
}
"""


def test_a_conditional_diffusion_model_draws_the_label_it_is_given(tmp_path):
    path, run = _trained(tmp_path, CONDITIONAL, "cddpm")
    model = _model(path, run, "cddpm")
    for label, labels in ((6, torch.full((4,), 6)), (None, torch.arange(4))):
        result = sample(path, "cddpm", SampleOptions(run=run, n=4, seed=1, label=label, sampler="ddim", steps=20,
                                                     output=str(tmp_path / "s.png")), out=[].append)
        with torch.no_grad():
            want = _reference_ddim(model, 4, 1, list(range(20)), cosine_betas(20), (labels,))
        torch.testing.assert_close(result["samples"], want, rtol=1e-4, atol=1e-4)
    r = CliRunner().invoke(main, ["sample", path, "--plan", "cddpm", "--run", run, "--label", "12"])
    assert r.exit_code == 1 and "label 12 is out of range" in r.output


@torch.no_grad()
def test_label_k_feeds_the_generator_class_k(cgan, tmp_path):
    path, run = cgan
    result = sample(path, "cgan", SampleOptions(run=run, n=5, seed=2, label=7, output=str(tmp_path / "s.png")),
                    out=[].append)
    assert result["model"] == "G" and result["kind"] == "image"
    g = torch.Generator().manual_seed(2)
    z = torch.randn(5, 8, generator=g)
    want = _model(path, run, "cgan", "G")(z, torch.full((5,), 7))
    torch.testing.assert_close(result["samples"], want)


@torch.no_grad()
def test_set_label_k_is_label_k(cgan, tmp_path):
    path, run = cgan
    result = sample(path, "cgan", SampleOptions(run=run, n=5, seed=2, sets=("label=7", "batch_size=64"),
                                                output=str(tmp_path / "s.png")), out=[].append)
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(result["samples"], _model(path, run, "cgan", "G")(z, torch.full((5,), 7)))
    for args, name in ((["--set", "label=7"], "a.png"), (["--label", "7"], "b.png")):
        r = CliRunner().invoke(main, ["sample", path, "--plan", "cgan", "--run", run, "-n", "5", "--seed", "2",
                                      "-o", str(tmp_path / name), *args])
        assert r.exit_code == 0, r.output
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_set_label_mistakes_are_clean_diagnostics(cgan, tmp_path):
    path, run = cgan
    def run_cli(*args, file=path):
        return CliRunner().invoke(main, ["sample", file, "--run", run, *args])
    for args, words in ((("--label", "3", "--set", "label=4"), "error[E0306]: the class of the samples is given "
                         "twice: --label 3 and --set label=4"),
                        (("--set", "label=4", "--set", "label=5"), "error[E0306]: the class of the samples is given twice"),
                        (("--set", "label=three"), "error[E0301]: `--set label` is the class of the samples, a whole "
                         "number >= 0, got `three`"),
                        (("--set", "label=12"), "error[E0302]: label 12 is out of range")):
        r = run_cli("--plan", "cgan", *args)
        assert r.exit_code == 1 and words in r.output and "Traceback" not in r.output, r.output
    # a model with a parameter `label`: `--set label` could mean either, so it says how to say which
    other = tmp_path / "p.dl"
    cg = CGAN[CGAN.index("model CG"):CGAN.index("model CD")]
    other.write_text(CGAN.replace(cg, cg.replace("classes: int = 10)", "classes: int = 10, label: int = 0)")
                                  .replace("label", "y").replace("y: int = 0", "label: int = 0")))
    r = run_cli("--plan", "cgan", "--set", "label=3", file=str(other))
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "error[E0305]: `--set label` is ambiguous: `CG` has a parameter `label`" in r.output
    assert "--set model.label=K" in r.output and "--set:1:1" in r.output


@torch.no_grad()
def test_without_a_label_the_classes_come_in_turn(cgan, tmp_path):
    path, run = cgan
    result = sample(path, "cgan", SampleOptions(run=run, n=12, seed=0, output=str(tmp_path / "s.png")),
                    out=[].append)
    z = torch.randn(12, 8, generator=torch.Generator().manual_seed(0))
    want = _model(path, run, "cgan", "G")(z, torch.arange(12) % 10)
    torch.testing.assert_close(result["samples"], want)


@torch.no_grad()
def test_input_files_feed_named_inputs(cgan, tmp_path):
    path, run = cgan
    z = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", np.array([1, 2, 3]))
    r = CliRunner().invoke(main, ["sample", path, "--plan", "cgan", "--run", run, "-n", "3", "--input",
                                  f"z={tmp_path / 'z.npy'}", "--input", f"label={tmp_path / 'y.npy'}",
                                  "-o", str(tmp_path / "s.png")])
    assert r.exit_code == 0, r.output
    result = sample(path, "cgan", SampleOptions(run=run, n=3, inputs=(("z", str(tmp_path / "z.npy")),),
                                                label=4, output=str(tmp_path / "t.png")), out=[].append)
    want = _model(path, run, "cgan", "G")(torch.from_numpy(z), torch.full((3,), 4))
    torch.testing.assert_close(result["samples"], want)


def test_conditional_sampling_diagnostics(cgan, tmp_path):
    path, run = cgan
    def run_cli(*args):
        return CliRunner().invoke(main, ["sample", path, "--plan", "cgan", "--run", run, *args])
    r = run_cli("--label", "10")
    assert r.exit_code == 1 and "E0302" in r.output and "label 10 is out of range" in r.output
    assert "0 to 9" in r.output and "Traceback" not in r.output
    r = run_cli("--input", "zz=a.npy")
    assert r.exit_code == 1 and "E0209" in r.output and "`z`" in r.output
    np.save(tmp_path / "bad.npy", np.zeros((2, 5), dtype=np.float32))
    r = run_cli("-n", "4", "--input", f"z={tmp_path / 'bad.npy'}")
    assert r.exit_code == 1 and "E0504" in r.output and "[2, 5]" in r.output
    r = run_cli("--input", "z")
    assert r.exit_code == 2
    r = run_cli("--sampler", "ddim")
    assert r.exit_code == 1 and "E0209" in r.output and "not one" in r.output
    r = run_cli("--model", "D")   # an image input is noise, but its label comes from the data
    assert r.exit_code == 0, r.output


class _Graph:
    """A model's inputs as `input_feeds` reads them: (name, ref) pairs and their types."""
    def __init__(self, **types):
        self.types = types
        self.inputs = [(name, name) for name in types]

    def type_of(self, ref):
        return self.types[ref]


def test_an_input_that_cannot_be_fed_says_how_to_feed_it(cgan):
    path, _ = cgan
    plan = dslc.load(path).plan("cgan")
    B = Sym("B")
    graph = _Graph(z=TensorType((B, 8), "float32"), tokens=TensorType((B, 5), "int64"))
    with pytest.raises(DslcError) as e:
        input_feeds(plan, path, graph, SampleOptions(), torch.Generator(), 4)
    text = str(e.value)
    assert "E0209" in text and "`tokens`" in text and "--input tokens=FILE.npy" in text


@pytest.mark.parametrize("dim", [1, -2])
def test_cumprod_along_a_run_time_length_exports_to_onnx(tmp_path, dim):
    # its ONNX took the length as a number (int(T)): a spec that passed `dslc check` failed in export
    from support import ort_run
    path = tmp_path / "c.dl"
    path.write_text(f"model C {{\n    input x: [B, T, 3]\n    output cumprod(x, {dim})\n}}\n")
    prog = dslc.load(str(path))
    model = prog.onnx("C")   # the full checker runs inside
    rng = np.random.default_rng(0)
    for length in (1, 5, 9):
        x = rng.uniform(0.5, 1.5, (2, length, 3)).astype(np.float32)
        np.testing.assert_allclose(ort_run(model, {"x": x})[0], torch.cumprod(torch.from_numpy(x), dim).numpy(),
                                   rtol=1e-6, atol=1e-6)
