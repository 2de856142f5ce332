"""The command line: exit codes (0 ok, 1 user error, 2 usage, 3 internal), output streams,
no tracebacks, the parallel check, and files never overwritten by surprise."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from support import ROOT

from dslc.cli import main
from dslc.diagnostics import DslcError

DSLC = os.path.join(os.path.dirname(sys.executable), "dslc")
EXAMPLE = os.path.join(ROOT, "examples", "language.dl")


def run(*args, cwd=None):
    return subprocess.run([DSLC, *args], capture_output=True, text=True, cwd=cwd or ROOT)


def test_check_ok_prints_one_summary_line():
    r = run("check", EXAMPLE)
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.strip() == f"ok: {EXAMPLE}: 11 models, 6 blocks, 1 loss, 3 plans"


def test_check_summary_plurals(tmp_path):
    two = tmp_path / "two.dl"
    two.write_text("loss a = cross_entropy(out, batch.y)\nloss b = cross_entropy(out, batch.y) / 2\n"
                   "model M {\n    input x: [B, 4]\n    Linear(3)\n}\n")
    r = run("check", str(two))
    assert r.stdout.strip() == f"ok: {two}: 1 model, 2 losses", r.stderr


def test_user_error_exits_1_with_diagnostics_only(tmp_path):
    bad = tmp_path / "bad.dl"
    bad.write_text("model M {\n    input x: [B, 4]\n    Linear(0)\n}\n")
    r = run("check", str(bad))
    assert r.returncode == 1 and r.stdout == ""
    assert "error[E0302]" in r.stderr and "Traceback" not in r.stderr


def test_usage_errors_exit_2():
    assert run("compile").returncode == 2
    assert run("frobnicate").returncode == 2
    assert run("compile", EXAMPLE, "--target", "tensorflow").returncode == 2


def test_missing_file_is_a_user_error():
    r = run("check", "no/such/file.dl")
    assert r.returncode == 1 and "error[E0901]" in r.stderr


def test_explain():
    r = run("explain", "E0402")
    assert r.returncode == 0 and r.stdout.startswith("E0402:")
    assert run("explain", "E9999").returncode == 2


def test_internal_errors_are_one_line_unless_debug(monkeypatch):
    import dslc.api

    def boom(path):
        raise RuntimeError("simulated bug")
    monkeypatch.setattr(dslc.api, "load", boom)
    result = CliRunner().invoke(main, ["check", EXAMPLE])
    assert result.exit_code == 3
    assert result.stderr.strip() == ("internal error, please report: RuntimeError: simulated bug "
                                     "(rerun with --debug for the traceback)")
    debug = CliRunner().invoke(main, ["--debug", "check", EXAMPLE])
    assert isinstance(debug.exception, RuntimeError)


def test_compile_default_output_never_replaces_a_users_file(tmp_path):
    (tmp_path / "language.py").write_text("# my own code\n")
    r = run("compile", EXAMPLE, cwd=str(tmp_path))
    assert r.returncode == 1 and "refusing to overwrite" in r.stderr
    assert (tmp_path / "language.py").read_text() == "# my own code\n"
    r = run("compile", EXAMPLE, "-o", str(tmp_path / "out.py"))
    assert r.returncode == 0 and (tmp_path / "out.py").read_text().startswith('"""')
    r = run("compile", EXAMPLE, "-o", str(tmp_path / "out.py"))  # dslc's own file: replaced
    assert r.returncode == 0


def test_set_and_seed_reach_the_generated_file(tmp_path):
    r = run("compile", EXAMPLE, "--model", "MnistMLP", "--set", "hidden=64", "--seed", "3", "-o", "-")
    assert r.returncode == 0
    assert "def __init__(self, hidden: int = 64, classes: int = 10):" in r.stdout
    assert "seed: int | None = 3" in r.stdout
    r = run("compile", EXAMPLE, "--model", "MnistMLP", "--set", "hiden=64", "-o", "-")
    assert r.returncode == 1 and "did you mean `hidden`?" in r.stderr


@pytest.mark.parametrize("jobs", [1, 2])
def test_parallel_check_reports_what_a_serial_one_does(tmp_path, jobs):
    """A file with errors spread over many models: two processes find exactly what one does."""
    from dslc.frontend.check import check_unit
    from dslc.frontend.loader import load_unit
    models = []
    for i in range(12):
        body = "    Linear(0)\n" if i % 3 == 0 else ("    Conv2d(4, 3)\n" if i % 3 == 1 else "    Linear(4)\n")
        models.append(f"model M{i}(w: int = {i + 1}) {{\n    input x: [B, 8]\n{body}}}\n")
    path = tmp_path / "many.dl"
    path.write_text("\n".join(models))
    with pytest.raises(DslcError) as serial:
        check_unit(load_unit(str(path)), jobs=1)
    with pytest.raises(DslcError) as parallel:
        check_unit(load_unit(str(path)), jobs=jobs)
    assert parallel.value.render() == serial.value.render()
    assert serial.value.codes.count("E0302") == 4 and serial.value.codes.count("E0402") == 4


def test_parallel_check_falls_back_when_the_child_fails(tmp_path, monkeypatch):
    """When the forked child's answer is lost, every model is checked here: the errors of the
    models the child had are still reported."""
    from dslc.frontend import check
    from dslc.frontend.loader import load_unit
    failed = []

    def failed_child(child, reporter, ev):
        os.close(child[1])
        os.waitpid(child[0], 0)
        failed.append(child)
        return False
    path = tmp_path / "two.dl"
    path.write_text("model A {\n    input x: [B, 2]\n    Linear(-3)\n}\n"
                    "model C {\n    input x: [B, 2]\n    Conv2d(4, 3)\n}\n")
    with pytest.raises(DslcError) as serial:
        check.check_unit(load_unit(str(path)), jobs=1)
    monkeypatch.setattr(check, "_join_child", failed_child)
    with pytest.raises(DslcError) as fallback:
        check.check_unit(load_unit(str(path)), jobs=2)
    assert failed, "the child was not used"
    assert fallback.value.render() == serial.value.render()
    assert sorted(fallback.value.codes) == ["E0302", "E0402"], fallback.value.codes


def test_check_starts_without_torch_or_numpy():
    """Start-up is a target (bench/frontend.py): checking a file with plans loads neither."""
    import subprocess
    import sys
    code = ("import sys, dslc; dslc.load('examples/language.dl'); "
            "print(sorted(m for m in ('torch', 'numpy', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("seed", ["18446744073709551616", "100000000000000000000000", "-9223372036854775809"])
def test_a_seed_beyond_int64_is_a_usage_error(tmp_path, seed):
    # torch.manual_seed takes an int64: compile wrote a file whose build() failed, ONNX exited 3
    for target in ("pytorch", "onnx"):
        out = tmp_path / f"m.{target}"
        result = CliRunner().invoke(main, ["compile", os.path.join(ROOT, "specs", "mlp.dl"), "--model", "MLP",
                                           "--target", target, "-o", str(out), "--seed", seed])
        assert result.exit_code == 2 and "--seed" in result.stderr and not out.exists()


@pytest.mark.parametrize("device", ["nonsense", "cuda:-1", "cpu,cuda"])
def test_train_and_sample_refuse_a_string_that_names_no_device(tmp_path, device):
    plan = os.path.join(ROOT, "examples", "digits", "digits.dl")
    for command in (["train", plan, "--plan", "mlp", "--out", str(tmp_path / "run")],
                    ["sample", plan, "--plan", "mlp", "--run", str(tmp_path / "run")]):
        result = CliRunner().invoke(main, [*command, "--device", device])
        assert result.exit_code == 2, result.output
        assert "Invalid value for '--device'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()   # refused before anything was read or written


def _absent_devices() -> list:
    """Devices this machine lacks (the test runs wherever it is: on a CUDA machine, cuda:99 is one)."""
    import torch
    absent = ["meta", "cuda:99"]
    absent += [] if torch.cuda.is_available() else ["cuda"]
    return absent + ([] if torch.backends.mps.is_available() else ["mps"])


@pytest.mark.parametrize("device", _absent_devices())
def test_a_device_this_machine_lacks_is_a_diagnostic(tmp_path, device):
    """`--device cuda` on a CPU-only torch was "internal error, please report: AssertionError" from the API
    and a usage error from the command line: E0607 from both, before anything is read or written."""
    from dslc.api import train
    from dslc.runtime.trainer import Options
    plan = os.path.join(ROOT, "examples", "digits", "digits.dl")
    for command in (["train", plan, "--plan", "mlp", "--out", str(tmp_path / "run")],
                    ["sample", plan, "--plan", "mlp", "--run", str(tmp_path / "run")]):
        result = CliRunner().invoke(main, [*command, "--device", device])
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith(f"error[E0607]: the device `{device}` cannot be used: ")
        assert "help: leave out --device" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(DslcError) as e:
        train(plan, "mlp", Options(out=str(tmp_path / "run"), device=device), out=lambda line: None)
    assert e.value.codes == ["E0607"]
    assert not (tmp_path / "run").exists()


def test_render_of_a_spec_with_errors_parses_it_once(tmp_path, monkeypatch):
    from dslc.frontend import loader
    parses = []
    real = loader.parse
    monkeypatch.setattr(loader, "parse", lambda f: parses.append(f.name) or real(f))
    spec = tmp_path / "bad.dl"
    spec.write_text("model M {\n    input x: [B, 4]\n    Linear(3)\n    Conv2d(3, 3)\n}\n")
    result = CliRunner().invoke(main, ["render", str(spec), "-o", str(tmp_path / "m.dot")])
    assert result.exit_code == 1 and "E0402" in result.stderr
    assert (tmp_path / "m.dot").exists() and len(parses) == 1


def test_python_dash_m_runs_the_same_command_line(tmp_path):
    bad = tmp_path / "bad.dl"
    bad.write_text("model M {\n    input x: [B, 4]\n    output x -> Lineer(2)\n}\n")
    ok = subprocess.run([sys.executable, "-m", "dslc", "check", "specs/mlp.dl"], capture_output=True, text=True,
                        cwd=ROOT)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: specs/mlp.dl")
    fail = subprocess.run([sys.executable, "-m", "dslc", "check", str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert fail.returncode == 1 and "bad.dl:3:" in fail.stderr and "Traceback" not in fail.stderr
