"""`dslc sample`: images from a trained GAN's generator, text from a character-level LM,
the same samples for the same seed, and diagnostics (not tracebacks) for what is missing."""
import os
import struct

import numpy as np
import pytest
from click.testing import CliRunner
from test_train import GAN  # the same small GAN plan the trainer tests run

import dslc
from dslc.api import train
from dslc.cli import main
from dslc.runtime import data
from dslc.runtime.sample import choose_model, data_fed, grid_size
from dslc.runtime.trainer import Options

LM = """
model CharLM(vocab: int = 76, dim: int = 32) {
    input tokens: [B, T] of int64
    out, (h, c) = tokens -> Embedding(vocab, dim) -> LSTM(dim)
    output out -> Linear(vocab)
}

train lm {
    model      = CharLM()
    data       = shakespeare(context=16, chars=5000)
    loss       = cross_entropy(transpose(out, 1, 2), batch.y)   # class dim 1: [B, vocab, T]
    optimizer  = Adam(lr=1e-2)
    epochs     = 1
    batch_size = 32
}
"""


def _trained(folder, text: str, plan: str) -> str:
    path = folder / f"{plan}.dl"
    path.write_text(text)
    train(str(path), plan, Options(out=str(folder / "runs" / plan), progress=False), out=[].append)
    return str(path)


@pytest.fixture(scope="module")
def gan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gan")
    return folder, _trained(folder, GAN, "gan")


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    return folder, _trained(folder, LM, "lm")


def cli(*args, cwd=None):
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(main, list(args))
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return runner.invoke(main, list(args))
    finally:
        os.chdir(old)


def png_size(path) -> tuple[int, int]:
    """(height, width) from the PNG's IHDR chunk."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    return height, width


# ------------------------------------------------------------------ images from a generator

def test_the_generator_is_the_model_fed_noise(gan):
    _, path = gan
    plan = dslc.load(path).plan("gan")
    assert data_fed(plan) == {"D"}
    assert choose_model(plan, None) == "G"
    assert choose_model(plan, "D") == "D"


def test_gan_samples_are_a_png_grid_in_the_latest_run(gan):
    folder, path = gan
    r = cli("sample", path, "--plan", "gan", "-n", "10", cwd=folder)
    assert r.exit_code == 0, r.output
    out = folder / "runs" / "gan" / "samples.png"
    assert f"wrote {os.path.join('runs', 'gan', 'samples.png')}: 10 samples of G" in r.output
    # 10 images of 8×8, enlarged 8×: 4 per row, 3 rows, 2 pixels between and around them
    assert png_size(out) == grid_size(10, 8, 8) == (3 * 66 + 2, 4 * 66 + 2)
    # the default: 64 samples, to -o
    r = cli("sample", path, "-o", str(folder / "all.png"), cwd=folder)
    assert r.exit_code == 0, r.output
    assert png_size(folder / "all.png") == (8 * 66 + 2, 8 * 66 + 2)


def test_the_same_seed_gives_the_same_images(gan):
    folder, path = gan
    run = str(folder / "runs" / "gan")
    files = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        files[name] = folder / f"{name}.png"
        r = cli("sample", path, "--run", run, "-n", "4", "--seed", str(seed), "-o", str(files[name]))
        assert r.exit_code == 0, r.output
    assert files["a"].read_bytes() == files["b"].read_bytes()
    assert files["a"].read_bytes() != files["c"].read_bytes()


def test_outputs_that_are_not_images_are_saved_as_an_array(gan):
    folder, path = gan
    r = cli("sample", path, "--run", str(folder / "runs" / "gan"), "--model", "D", "-n", "5",
            "-o", str(folder / "d.png"))
    assert r.exit_code == 0, r.output
    assert "numpy array" in r.output
    assert np.load(folder / "d.npy").shape == (5, 1)


# ------------------------------------------------------------------ text from a language model

def test_lm_samples_are_text_in_the_vocabulary(lm):
    folder, path = lm
    itos = set(data.load("shakespeare", {"context": 16, "chars": 5000}).meta["itos"])
    r = cli("sample", path, "--length", "120", "--prompt", "ROMEO:", cwd=folder)
    assert r.exit_code == 0, r.output
    text = (folder / "runs" / "lm" / "samples.txt").read_text(encoding="utf-8")
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 120
    assert set(text) <= itos
    assert text in r.stdout
    assert "wrote " + os.path.join("runs", "lm", "samples.txt") in r.stderr


def test_the_same_seed_gives_the_same_text(lm):
    folder, path = lm
    run = str(folder / "runs" / "lm")
    texts = []
    for name, seed, temperature in (("a", 1, "0.8"), ("b", 1, "0.8"), ("c", 2, "0.8")):
        out = folder / f"{name}.txt"
        r = cli("sample", path, "--run", run, "--length", "60", "--seed", str(seed), "--temperature", temperature,
                "-o", str(out))
        assert r.exit_code == 0, r.output
        texts.append(out.read_text(encoding="utf-8"))
    assert texts[0] == texts[1] != texts[2]
    assert texts[0].startswith("\n") and len(texts[0]) == 61     # the default prompt is a newline


# ------------------------------------------------------------------ errors

def test_no_run_is_a_diagnostic_not_a_traceback(gan, tmp_path):
    _, path = gan
    r = cli("sample", path, "--plan", "gan", cwd=tmp_path)
    assert r.exit_code == 1
    assert "error[E0603]: there is no run of the plan `gan`" in r.output
    assert "Traceback" not in r.output


def test_weights_of_another_plan_are_e0602(gan, lm):
    (_, gan_path), (lm_folder, _) = gan, lm
    r = cli("sample", gan_path, "--run", str(lm_folder / "runs" / "lm"))
    assert r.exit_code == 1
    assert "error[E0602]: the weights in" in r.output and "do not fit the model `G`" in r.output
    assert "Traceback" not in r.output


def test_an_unknown_model_or_prompt_character_lists_what_there_is(gan, lm):
    folder, path = gan
    r = cli("sample", path, "--run", str(folder / "runs" / "gan"), "--model", "Q")
    assert r.exit_code == 1 and "error[E0209]: the plan `gan` has no model `Q`" in r.output
    assert "models: G(z: [B, 16]); D(x: [B, 64])" in r.output
    folder, path = lm
    r = cli("sample", path, "--run", str(folder / "runs" / "lm"), "--prompt", "é")
    assert r.exit_code == 1 and "error[E0302]" in r.output and "'é'" in r.output
