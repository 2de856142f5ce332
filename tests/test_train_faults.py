"""`dslc train` under hostile conditions (issue #11): folders that are not runs, finished and
edited runs, read-only and misplaced folders, two processes in one run, pickles that run code,
tampered checkpoints, SIGTERM, and data files that are endless, not UTF-8, or not finite.

Each refusal is a diagnostic with exit 1 that names the path, never exit 3, and a refused
command leaves every file as it was."""
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_train import PLAN, SLOW_PLAN, _cli, _without_time, metrics, run, same, weights, write

from dslc.catalog import sources
from dslc.cli import main
from dslc.diagnostics import DslcError
from dslc.frontend.fmt import statements
from dslc.runtime import checkpoint, data
from dslc.runtime.rundir import RunDir
from dslc.runtime.runlock import RunLock


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, code: str, *words: str) -> str:
    """The stderr of a command that must fail with `code` (exit 1, no traceback), holding `words`."""
    err = result.stderr
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert f"error[{code}]" in err and "Traceback" not in err and "internal error" not in err, err
    for w in words:
        assert str(w) in err, (w, err)
    return err


def snapshot(folder) -> dict:
    """Every file under `folder` with its bytes (the lock file aside: it is the lock, not the run)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if name != ".lock":
                with open(path, "rb") as f:
                    out[os.path.relpath(path, folder)] = f.read()
    return out


@pytest.fixture
def read_only():
    """Make a folder read-only the way the OS enforces it for this user: chmod for a normal user,
    the immutable attribute (chattr +i) for root, whom chmod does not stop."""
    undo = []

    def make(path):
        path = str(path)
        if os.geteuid() != 0:
            os.chmod(path, 0o555)
            undo.append(lambda: os.chmod(path, 0o755))
        else:
            try:
                done = subprocess.run(["chattr", "+i", path], capture_output=True, text=True)
                why = done.stderr.strip()
            except FileNotFoundError:
                done, why = None, "there is no chattr"
            if done is None or done.returncode != 0:
                pytest.skip(f"running as root, whom chmod does not stop, and `chattr +i` fails here ({why}): "
                            "nothing can make a folder read-only for root on this system")
            undo.append(lambda: subprocess.run(["chattr", "-i", path], check=True))
        with pytest.raises(OSError):   # the OS really refuses: the test cannot pass for another reason
            open(os.path.join(path, "probe"), "w").close()

    yield make
    for step in reversed(undo):
        step()


# curves.png and confusion.png take most of a small run's time, and none of these tests is about them
pytestmark = pytest.mark.usefixtures("no_figures")


ONE_EPOCH = PLAN.replace("epochs     = 3", "epochs     = 1")


# ------------------------------------------------------------------ 1. only a run is ever written to

def test_resume_into_a_folder_that_is_not_a_run_writes_nothing(tmp_path):
    path = write(tmp_path, PLAN)
    mine = tmp_path / "mine"
    (mine / "checkpoints").mkdir(parents=True)
    (mine / "notes.txt").write_text("precious")
    (mine / "plan.dl").write_text(PLAN)             # a plan.dl, but the user's, not one a run wrote
    before = snapshot(mine)
    err = refused(cli("train", path, "--out", mine, "--resume"), "E0603", f"{mine} is not a dslc run folder")
    assert "nothing was written to it" in err
    assert snapshot(mine) == before and sorted(os.listdir(mine)) == ["checkpoints", "notes.txt", "plan.dl"]


# ------------------------------------------------------------------ 2. a finished run

def test_a_finished_run_is_not_resumed_but_set_epochs_continues_it(tmp_path):
    run(tmp_path, ONE_EPOCH, out="short")
    folder = tmp_path / "short"
    before = snapshot(folder)
    path = str(tmp_path / "plan.dl")
    err = refused(cli("train", path, "--out", folder, "--resume"), "E0606", "has finished", "--set epochs=N")
    assert snapshot(folder) == before, err              # metrics.jsonl untouched
    refused(cli("train", path, "--out", folder, "--resume", "--set", "epochs=1"), "E0606", "has finished")
    assert snapshot(folder) == before
    # more epochs continue it, and it ends as a run that had that many epochs from the start
    result = cli("train", path, "--out", folder, "--resume", "--set", "epochs=2")
    assert result.exit_code == 0, result.output
    assert "epochs = 2 (the run had 1): 1 more to run" in result.output
    assert "    epochs = 2" in statements((folder / "plan.dl").read_text())
    run(tmp_path, ONE_EPOCH, out="straight", sets=["epochs=2"])
    assert [r["epoch"] for r in metrics(folder)] == [1, 2]
    assert _without_time(metrics(folder)) == _without_time(metrics(tmp_path / "straight"))
    assert same(weights(folder), weights(tmp_path / "straight"))


def test_more_epochs_are_refused_when_the_schedule_spans_the_run(tmp_path):
    run(tmp_path, ONE_EPOCH.replace("epochs     = 1", "epochs     = 1\n    schedule   = cosine()"))
    folder = tmp_path / "run"
    before = snapshot(folder)
    refused(cli("train", tmp_path / "plan.dl", "--out", folder, "--resume", "--set", "epochs=3"), "E0606",
            "the schedule `cosine` spans the whole run", "(1 -> 3)")
    assert snapshot(folder) == before


# ------------------------------------------------------------------ 7, 8. the run's own plan, unchanged

TWO_PLANS = PLAN + """
train q {
    model      = Net()
    data       = digits(val=0.2)
    loss       = cross_entropy(out, batch.y)
    optimizer  = Adam(lr=3e-3)
    epochs     = 3
}
"""


def test_resume_with_another_plan_writes_nothing(tmp_path):
    run(tmp_path, TWO_PLANS, plan="p", max_epochs=1)
    folder = tmp_path / "run"
    before = snapshot(folder)
    refused(cli("train", tmp_path / "plan.dl", "--plan", "q", "--out", folder, "--resume"), "E0606",
            f"{folder} is a run of the plan `p`, not `q`", "--plan p")
    assert snapshot(folder) == before                   # plan.py is still p's code


@pytest.mark.parametrize("edit, was, now", [
    (("Adam(lr=3e-3)", "Adam(lr=1e-2)"), "optimizer = Adam(lr=0.003,", "optimizer = Adam(lr=0.01,"),
    (("seed       = 0", "seed       = 5"), "seed = 0", "seed = 5"),
    (("Adam(lr=3e-3)", "SGD(lr=0.1, momentum=0.9)"), "optimizer = Adam(lr=0.003,", "optimizer = SGD(lr=0.1,"),
])
def test_resume_with_an_edited_plan_lists_what_changed(tmp_path, edit, was, now):
    run(tmp_path, PLAN, max_epochs=1)
    folder = tmp_path / "run"
    before = snapshot(folder)
    path = write(tmp_path, PLAN.replace(*edit))
    err = refused(cli("train", path, "--out", folder, "--resume"), "E0606", "changed since the run",
                  f"note: the run: {was}", f"note: now:     {now}")
    assert "only `--set epochs=N` may change" in err
    assert snapshot(folder) == before


def test_resume_with_a_set_learning_rate_is_refused(tmp_path):
    run(tmp_path, PLAN, max_epochs=1)
    folder = tmp_path / "run"
    before = snapshot(folder)
    refused(cli("train", tmp_path / "plan.dl", "--out", folder, "--resume", "--set", "optimizer.lr=0.5"),
            "E0606", "now:     optimizer = Adam(lr=0.5,")
    assert snapshot(folder) == before


def test_a_run_whose_plan_dl_predates_the_formatted_layout_still_resumes(tmp_path):
    """Runs started before plan.dl was laid out as `dslc fmt` writes it hold one statement a line
    with `=` unaligned and long lines unbroken: they resume, and a real change of their plan is
    still refused."""
    import dslc
    from dslc.runtime.rundir import plan_text
    run(tmp_path, PLAN, max_epochs=1)
    folder, path = tmp_path / "run", str(tmp_path / "plan.dl")
    old = plan_text(dslc.load(path).plan("p"), path, str(folder))     # what dslc wrote before
    assert "\n    epochs = 3\n" in old and "amsgrad=false, lr_mult=none)\n" in old
    assert old != (folder / "plan.dl").read_text()
    (folder / "plan.dl").write_text(old)
    before = snapshot(folder)
    refused(cli("train", path, "--out", folder, "--resume", "--set", "optimizer.lr=0.5"), "E0606",
            "note: the run: optimizer = Adam(lr=0.003,", "note: now:     optimizer = Adam(lr=0.5,")
    refused(cli("train", path, "--out", folder, "--resume", "--set", "batch_size=32"), "E0606",
            "note: the run: batch_size = 64", "note: now:     batch_size = 32")
    assert snapshot(folder) == before
    result = cli("train", path, "--out", folder, "--resume")
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in metrics(folder)] == [1, 2, 3]


def test_resume_with_changed_model_code_is_refused(tmp_path):
    run(tmp_path, PLAN, max_epochs=1)
    folder = tmp_path / "run"
    before = snapshot(folder)
    path = write(tmp_path, PLAN.replace("    ReLU()\n    Dropout", "    GELU()\n    Dropout"))
    refused(cli("train", path, "--out", folder, "--resume"), "E0606", "the models of the plan `p` changed",
            "F.relu", "F.gelu")
    assert snapshot(folder) == before


def test_a_shifted_source_line_is_no_change(tmp_path):
    """plan.py's docstrings name source lines; a comment added above the model changes nothing real."""
    run(tmp_path, PLAN, max_epochs=1)
    path = write(tmp_path, "# a comment\n# another\n" + PLAN)
    result = cli("train", path, "--out", tmp_path / "run", "--resume")
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in metrics(tmp_path / "run")] == [1, 2, 3]


# ------------------------------------------------------------------ 3. what used to end in exit 3

def test_out_in_a_file_or_under_a_read_only_folder_is_a_diagnostic(tmp_path, read_only):
    path = write(tmp_path, PLAN)
    (tmp_path / "afile").write_text("keep me")
    refused(cli("train", path, "--out", tmp_path / "afile" / "run"), "E0603",
            f"cannot create the run folder {tmp_path / 'afile' / 'run'}", "afile is a file, not a folder")
    refused(cli("train", path, "--out", tmp_path / "afile"), "E0603", "it is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "keep me"
    locked = tmp_path / "locked"
    locked.mkdir()
    read_only(locked)
    refused(cli("train", path, "--out", locked / "missing" / "run"), "E0603",
            f"cannot create the run folder {locked / 'missing' / 'run'}", f"{locked} is not writable")


@pytest.mark.parametrize("which", [".", "checkpoints"])
def test_resume_into_a_read_only_run_is_a_diagnostic(tmp_path, read_only, which):
    run(tmp_path, PLAN, max_epochs=1)
    folder = tmp_path / "run"
    before = snapshot(folder)
    read_only(os.path.normpath(folder / which))
    refused(cli("train", tmp_path / "plan.dl", "--out", folder, "--resume"), "E0603",
            f"cannot write in the run folder {os.path.normpath(folder / which)}", "make the folder writable")
    assert snapshot(folder) == before


def test_an_optimizer_state_that_does_not_fit_is_a_diagnostic(tmp_path):
    """Even with the run's plan.dl edited to agree (so the plan check passes), SGD's saved state is
    not loaded into Adam, which used to fail inside a step with KeyError: 'momentum'."""
    import dslc
    from dslc.runtime.rundir import render_plan
    sgd = PLAN.replace("Adam(lr=3e-3)", "SGD(lr=0.05, momentum=0.9)")
    run(tmp_path, sgd, max_epochs=1)
    path = write(tmp_path, PLAN)
    folder = tmp_path / "run"
    (folder / "plan.dl").write_text(render_plan(dslc.load(path).plan("p"), path, str(folder)))
    before = snapshot(folder)
    refused(cli("train", path, "--out", folder, "--resume"), "E0602", "epoch-0001.json",
            "its optimizer state does not fit the plan's optimizer")
    assert snapshot(folder) == before


def test_weights_that_are_not_tensors_are_a_diagnostic(tmp_path):
    torch.save({"fc1.weight": 1, "fc1.bias": "x"}, tmp_path / "numbers.pt")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    path = write(tmp_path, PLAN)
    refused(cli("compile", path, "--model", "Small", "--target", "onnx", "-o", tmp_path / "m.onnx",
                "--weights", tmp_path / "numbers.pt"),
            "E0602", "numbers.pt does not hold a state dict of tensors: its entry 'fc1.weight' is int")
    refused(cli("compile", path, "--model", "Small", "--target", "onnx", "-o", tmp_path / "m.onnx",
                "--weights", tmp_path / "list.pt"), "E0602", "list.pt does not hold a state dict")
    assert not (tmp_path / "m.onnx").exists()
    with_init = PLAN.replace("seed       = 0", f'seed       = 0\n    init       = "{tmp_path / "numbers.pt"}"')
    refused(cli("train", write(tmp_path, with_init), "--out", tmp_path / "run"), "E0602", "numbers.pt")
    assert not (tmp_path / "run").exists()          # nothing is claimed before the models are built


CSV_PLAN = """
model Table {
    input x: [B, 2]
    Linear(3)
}
train t {
    model     = Table()
    data      = csv("DATA", target="label")
    loss      = cross_entropy(out, batch.y)
    optimizer = Adam()
    epochs    = 1
}
"""


def table(rows: int = 1200) -> list[str]:
    return ["a,b,label"] + [f"{i % 7},{i % 5 / 2},{i % 3}" for i in range(rows)]


def csv_train(tmp_path, name: str, content: bytes):
    (tmp_path / name).write_bytes(content)
    return cli("train", write(tmp_path, CSV_PLAN.replace("DATA", name)), "--out", tmp_path / "run")


def test_csv_problems_past_the_sampled_rows_are_diagnostics(tmp_path):
    rows = [r.encode() for r in table()]
    latin = b"\n".join(rows[:1100] + [b"1,\xe92,0"] + rows[1100:]) + b"\n"
    refused(csv_train(tmp_path, "latin.csv", latin), "E0508", "latin.csv:1101: the line is not UTF-8 text",
            "byte 0xe9 at column 3")
    wide = b"\n".join(rows[:1100] + [b"1," + b"9" * 200_000 + b",0"] + rows[1100:]) + b"\n"
    refused(csv_train(tmp_path, "wide.csv", wide), "E0508", "wide.csv:1101: a field is longer than 131072")
    word = b"\n".join(rows[:1100] + [b"1,seven,0"] + rows[1100:]) + b"\n"
    refused(csv_train(tmp_path, "word.csv", word), "E0508", "word.csv:1101: column 'b' needs a number here, "
            "got 'seven'")
    assert not (tmp_path / "run").exists()          # a data error claims no run folder


def test_a_line_without_end_is_a_diagnostic_not_a_memory_blow_up(tmp_path):
    err = refused(csv_train(tmp_path, "zeros.csv", b"\0" * (3 << 20)), "E0508", "zeros.csv:1: the line is "
                  f"longer than {sources.MAX_LINE} bytes")
    assert "csv(\"zeros.csv\"" in err               # the diagnostic points at the plan's data line


def test_reading_dev_zero_as_a_csv_ends_with_a_diagnostic(tmp_path):
    """An endless file: a real `dslc train` in a subprocess (so a regression cannot hang the tests)."""
    path = write(tmp_path, CSV_PLAN.replace("DATA", "/dev/zero"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "dslc.cli", "train", path, "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1, done.stderr
    assert "error[E0508]: cannot read data file /dev/zero: it is not a regular file" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


# ------------------------------------------------------------------ 10. data that is not finite

def test_non_finite_csv_cells_name_their_row_and_column(tmp_path):
    rows = table(40)
    for bad, shown in (("nan", "'nan'"), ("-inf", "'-inf'"), ("1e39", "'1e39'")):   # 1e39 overflows float32
        (tmp_path / "d.csv").write_text("\n".join(rows[:6] + [f"1,{bad},0"] + rows[6:]) + "\n")
        with pytest.raises(data.DataError, match=f"d.csv:7: column 'b' holds {shown}, not a finite number"):
            data.load("csv", {"path": "d.csv", "target": "label"}, base_dir=str(tmp_path))
    regression = "a,b,price\n" + "\n".join(f"{i},{i + 1},{i / 2}" for i in range(9)) + "\n5,6,inf\n"
    (tmp_path / "r.csv").write_text(regression)
    with pytest.raises(data.DataError, match="r.csv:11: column 'price' holds 'inf'"):
        data.load("csv", {"path": "r.csv", "target": "price"}, base_dir=str(tmp_path))
    err = refused(csv_train(tmp_path, "n.csv", "\n".join(rows[:3] + ["nan,1,0"] + rows[3:]).encode()),
                  "E0508", "n.csv:4: column 'a' holds 'nan'")
    assert "loss" not in err


def test_a_column_without_numbers_is_reported_not_silently_dropped(tmp_path):
    lines = ["name,a,b,label"] + [f"n{i},{r}" for i, r in enumerate(table(30)[1:])]
    result = csv_train(tmp_path, "named.csv", ("\n".join(lines) + "\n").encode())
    assert result.exit_code == 0, result.output
    assert "named.csv: the column 'name' holds no number in the first 1000 rows, so it is not a feature" \
        in result.output


def test_non_finite_npz_values_name_the_example(tmp_path):
    x = np.zeros((12, 3), np.float32)
    x[9, 2] = np.inf
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(12))
    with pytest.raises(data.DataError, match=r"the array 'x' in .*d.npz holds inf at \[9, 2\], in example 9"):
        data.load("npz", {"path": "d.npz"}, base_dir=str(tmp_path))
    np.savez(tmp_path / "big.npz", x=np.full((12, 3), 1e300), y=np.arange(12))    # inf as float32
    with pytest.raises(data.DataError, match=r"holds inf at \[0, 0\], in example 0"):
        data.load("npz", {"path": "big.npz"}, base_dir=str(tmp_path))


def npz_claiming(path, shape) -> None:
    """An .npz whose `x` header claims `shape` but holds 64 bytes, beside a real `y`."""
    import io
    import zipfile

    from numpy.lib import format as fmt
    head = io.BytesIO()
    fmt.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": shape})
    y = io.BytesIO()
    np.save(y, np.arange(8))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", head.getvalue() + b"\0" * 64)
        z.writestr("y.npy", y.getvalue())


def test_an_npz_header_claiming_a_huge_shape_is_a_diagnostic(tmp_path):
    npz_claiming(tmp_path / "huge.npz", (10 ** 12, 4))
    plan = PLAN.replace("model      = Small()", "model      = Table()").replace(
        "digits(val=0.2, test=0.2)", '''npz("huge.npz")''')
    path = write(tmp_path, "model Table {\n    input x: [B, 4]\n    Linear(10)\n}\n" + plan)
    refused(cli("check", path), "E0508", "the array 'x' in", "huge.npz claims the shape [1000000000000, 4]",
            "32,000,000,000,000 bytes, but holds 64 bytes")
    refused(cli("train", path, "--out", tmp_path / "run"), "E0508", "claims the shape [1000000000000, 4]")
    npz_claiming(tmp_path / "exact.npz", (8,))       # the same header check accepts an honest file
    assert sources.npz_header(str(tmp_path / "exact.npz"))["x"] == ((8,), "float32")


# ------------------------------------------------------------------ 4. one process per run folder

@pytest.mark.slow
def test_a_second_resume_of_a_run_is_refused_while_the_first_runs(tmp_path):
    """The issue's case: `dslc train --resume --out run` twice at once. The first holds the folder
    (its pid in RUN/.lock), the second stops with E0605 naming it, and metrics.jsonl stays whole."""
    plan = SLOW_PLAN.replace("hidden=512", "hidden=64").replace("batch_size = 2", "batch_size = 4")
    run(tmp_path, plan, max_epochs=1)
    path, folder = str(tmp_path / "plan.dl"), tmp_path / "run"
    holder = _cli([path, "--out", str(folder), "--resume"])
    try:
        end = time.monotonic() + 120
        while (folder / ".lock").read_text().strip() != str(holder.pid):
            assert holder.poll() is None, holder.stderr.read().decode()
            assert time.monotonic() < end, "the first process never took the folder"
            time.sleep(0.05)
        refused(cli("train", path, "--out", folder, "--resume"), "E0605",
                f"the run folder {folder} is in use by process {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    epochs = [r["epoch"] for r in metrics(folder)]
    assert epochs == list(range(1, len(epochs) + 1))   # each epoch once, in order
    RunLock(str(folder)).acquire().release()   # kill -9 left no stale lock: the OS released it


def test_new_runs_started_at_once_claim_distinct_folders(tmp_path):
    base = str(tmp_path / "runs" / "p")
    start = threading.Barrier(6)
    claimed, errors = [], []

    def claim():
        start.wait()
        try:
            claimed.append(RunDir.open("p", base, False))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors
        assert sorted(r.path for r in claimed) == sorted([base] + [f"{base}-{n}" for n in range(2, 7)])
        first = next(r for r in claimed if r.path == base)
        first.write_text("plan.dl", "# The plan `p` as it ran: every default and --set filled in.\n")
        with pytest.raises(DslcError) as e:     # a resume of a folder a new run holds
            RunDir.open("p", base, True)
        assert e.value.codes == ["E0605"] and "in use by this process" in str(e.value)
    finally:
        for r in claimed:
            r.close()


# ------------------------------------------------------------------ 9. SIGTERM, like Ctrl-C

def _wait_for(path, proc, seconds: float = 120.0) -> None:
    end = time.monotonic() + seconds
    while not os.path.exists(path):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_cleanly_then_resume_is_exact(tmp_path):
    plan = SLOW_PLAN.replace("epochs     = 5", "epochs     = 3").replace("hidden=512", "hidden=64").replace(
        "batch_size = 2", "batch_size = 4")
    path = write(tmp_path, plan)
    folder = tmp_path / "stopped"
    proc = _cli([path, "--out", str(folder)])
    _wait_for(folder / "metrics.jsonl", proc)
    time.sleep(0.2)                              # inside the second epoch
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    err = proc.stderr.read().decode()
    assert "stopped by SIGTERM: checkpoint written to" in err and "Traceback" not in err
    assert [r["epoch"] for r in metrics(folder)] in ([1], [1, 2])
    run(tmp_path, plan, out="stopped", resume=True)
    run(tmp_path, plan, out="whole")
    assert _without_time(metrics(folder)) == _without_time(metrics(tmp_path / "whole"))
    assert same(weights(folder), weights(tmp_path / "whole"))


# ------------------------------------------------------------------ 5. nothing that runs code is loaded

class RunsCode:
    """A pickle whose loading calls os.mkdir(marker): what a booby-trapped weights file does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path):
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(RunsCode(proof)))      # it really runs code when unpickled
    assert proof.is_dir()
    marker = tmp_path / "ran"
    torch.save({"fc1.weight": RunsCode(marker)}, tmp_path / "evil.pt")
    with_init = PLAN.replace("seed       = 0", f'seed       = 0\n    init       = "{tmp_path / "evil.pt"}"')
    refused(cli("train", write(tmp_path, with_init), "--out", tmp_path / "r"), "E0602", "evil.pt",
            "it holds more than tensors (loading it would call")
    refused(cli("compile", tmp_path / "plan.dl", "--model", "Small", "--target", "onnx", "-o",
                tmp_path / "m.onnx", "--weights", tmp_path / "evil.pt"), "E0602", "evil.pt")
    # a checkpoint's tensor file swapped for the pickle, its checksum updated to match
    run(tmp_path, PLAN, max_epochs=1)
    folder = tmp_path / "run" / "checkpoints"
    evil = (tmp_path / "evil.pt").read_bytes()
    (folder / "epoch-0001.safetensors").write_bytes(evil)
    record = json.loads((folder / "epoch-0001.json").read_text())
    import hashlib
    record["files"]["epoch-0001.safetensors"] = hashlib.sha256(evil).hexdigest()
    (folder / "epoch-0001.json").write_text(json.dumps(record))
    refused(cli("train", tmp_path / "plan.dl", "--out", tmp_path / "run", "--resume"), "E0602",
            "epoch-0001.safetensors is unusable")
    assert not marker.exists()


# ------------------------------------------------------------------ 6. only a run's own files are removed

def test_a_tampered_checkpoint_never_deletes_files_outside_its_folder(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    plan = PLAN.replace("seed       = 0", "seed       = 0\n    checkpoint(keep=2)")
    run(tmp_path, plan, max_epochs=2)
    folder = tmp_path / "run" / "checkpoints"
    old = folder / "epoch-0001.json"
    record = json.loads(old.read_text())
    record["files"]["../../victim.txt"] = "0" * 64
    old.write_text(json.dumps(record))
    (folder / "notes.tmp-1").write_text("not dslc's")
    (folder / "epoch-0003.json.tmp-999").write_text("{")     # what a killed run leaves
    result = cli("train", tmp_path / "plan.dl", "--out", tmp_path / "run", "--resume")
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "mine"
    names = sorted(os.listdir(folder))
    assert "epoch-0001.json" not in names and "epoch-0001.safetensors" not in names   # pruned: keep=2
    assert "notes.tmp-1" in names and "epoch-0003.json.tmp-999" not in names
    # a tampered latest checkpoint is refused before anything is read through it
    latest = folder / "epoch-0003.json"
    record = json.loads(latest.read_text())
    record["files"] = {"../../victim.txt": "0" * 64, "epoch-0003.state.safetensors": "0"}
    latest.write_text(json.dumps(record))
    with pytest.raises(DslcError, match="names files other than its own"):
        checkpoint.load(str(latest))
    checkpoint.remove(str(latest))
    assert victim.read_text() == "mine" and not latest.exists()
