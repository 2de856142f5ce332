"""`sweep NAME { ... }` and `dslc sweep` (issue #17): Optuna studies over a training plan.

What is checked against something other than dslc's own word: each trial's value against its own
run folder's metrics.jsonl (written by the ordinary trainer), the best plan (best.dl) by training
it again and reading its metrics, the study's trials through Optuna's own API on the storage, and
a real PostgreSQL server shared by two workers with separate folders (two machines).
"""
from __future__ import annotations

import csv
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
from click.testing import CliRunner
from support import ROOT

import dslc
from dslc.api import sweep as run_sweep
from dslc.api import train
from dslc.cli import main
from dslc.diagnostics import DslcError
from dslc.frontend import fmt
from dslc.frontend.fmt import WIDTH, format_source
from dslc.runtime.sweep import SweepOptions, with_driver
from dslc.runtime.trainer import Options

SPEC = """\
model Net(hidden: int = 32, dropout: float = 0.0) {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(hidden)
    ReLU()
    Dropout(dropout)
    Linear(10)
}

train digits_mlp {
    model = Net(hidden=32)
    data = digits(val=0.25, limit=400)
    loss = cross_entropy(out, batch.y)
    optimizer = AdamW(lr=1e-5)
    epochs = EPOCHS
    batch_size = 32
    metrics = [accuracy]
}

sweep search {
    plan = digits_mlp; trials = 3
    objective = maximize(val_accuracy)
    sampler = random
    space {
        optimizer.lr = loguniform(3e-3, 3e-2)
        hidden = choice([32, 64])
    }
}
"""


def spec(tmp_path, epochs: int = 2) -> str:
    path = tmp_path / "search.dl"
    path.write_text(SPEC.replace("EPOCHS", str(epochs)))
    return str(path)


def best_val(run: str) -> float:
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return max(json.loads(line)["val_accuracy"] for line in f)


def study_trials(url: str, name: str = "search") -> list:
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def cli(*args, cwd) -> subprocess.Popen:
    """`dslc ARGS` in a process of its own, running this checkout's dslc."""
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "dslc", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finished(proc: subprocess.Popen, timeout: float = 400) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out + err
    assert "Traceback" not in err, err
    return out


def trial_lines(out: str) -> set:
    return {int(line.split(":")[0].split()[1]) for line in out.splitlines() if line.startswith("trial ")}


# ---------------------------------------------------------------------------- the language

def test_sweep_checks_and_is_listed(tmp_path):
    prog = dslc.load(spec(tmp_path))
    assert prog.sweeps == ["search"]
    s = prog.sweep()
    assert (s.plan, s.trials, s.direction, s.metric, s.sampler, s.pruner) == \
        ("digits_mlp", 3, "maximize", "val_accuracy", "random", "none")
    dims = {d.key: d for d in s.dimensions}
    assert (dims["optimizer.lr"].kind, dims["optimizer.lr"].low, dims["optimizer.lr"].high) == ("loguniform", 3e-3, 3e-2)
    assert dims["model.hidden"].choices == (32, 64)   # a bare model parameter is `model.NAME`
    r = CliRunner().invoke(main, ["check", str(tmp_path / "search.dl")])
    assert r.exit_code == 0 and r.stdout.endswith("1 model, 1 plan, 1 sweep\n"), r.output


def test_set_model_parameter_of_a_plan(tmp_path):
    """`--set model.hidden=64` (what a sweep's `model.hidden` range applies) sets the model's argument."""
    prog = dslc.load(spec(tmp_path))
    _decl, args, graph = prog.plan("digits_mlp", ("model.hidden=64",)).models["model"]
    assert args["hidden"].value == 64
    linear = [n for n in graph.topological() if n.kind == "op" and n.op.name == "Linear"]
    assert [n.outputs[0].shape[-1] for n in linear] == [64, 10]
    with pytest.raises(DslcError) as e:
        prog.plan("digits_mlp", ("model.hiden=64",))
    assert e.value.codes == ["E0305"]


@pytest.mark.parametrize("space, codes", [
    ("optimizer.lr = uniform(0.1, 0.01)", ["E0510"]),            # bounds the wrong way round
    ("optimizer.lr = loguniform(0, 0.1)", ["E0510"]),            # the log of 0
    ("hidden = uniform(16, 64)", ["E0510"]),                     # an int parameter, a float range
    ("hidden = choice([16, 32.5])", ["E0510"]),                  # a float among int choices
    ("epochs = int_uniform(0, 3)", ["E0510"]),                   # the plan refuses epochs = 0
    ("optimizer.momentum = uniform(0.1, 0.9)", ["E0509"]),       # AdamW has no momentum
    ("hiddn = choice([16])", ["E0509"]),                         # no such field or parameter
    ("optimizer.lr = normal(0, 1)", ["E0510"]),                  # no such distribution
])
def test_bad_ranges(tmp_path, space, codes):
    path = tmp_path / "bad.dl"
    ranges = "optimizer.lr = loguniform(3e-3, 3e-2)\n        hidden = choice([32, 64])"
    path.write_text(SPEC.replace("EPOCHS", "2").replace(ranges, space))
    with pytest.raises(DslcError) as e:
        dslc.load(str(path))
    assert e.value.codes == codes, e.value.render()
    assert "bad.dl:" in e.value.render()


@pytest.mark.parametrize("old, new, codes", [
    ("objective = maximize(val_accuracy)", "objective = maximize(val_f1)", ["E0511"]),
    ("data = digits(val=0.25, limit=400)", "data = digits(limit=400)", ["E0511"]),   # no validation split
    ("plan = digits_mlp;", "plan = digits;", ["E0512"]),
    ("sampler = random", "sampler = grid", ["E0510"]),        # grid needs choices
    ("sampler = random", "samplr = random", ["E0512"]),
    ("trials = 3", "trials = 0", ["E0512"]),
])
def test_bad_settings(tmp_path, old, new, codes):
    path = tmp_path / "bad.dl"
    path.write_text(SPEC.replace("EPOCHS", "2").replace(old, new))
    with pytest.raises(DslcError) as e:
        dslc.load(str(path))
    assert e.value.codes == codes, e.value.render()


def _best_dl(tmp_path) -> str:
    """best.dl as a sweep writes it for a best trial with these values (no trial run)."""
    from types import SimpleNamespace

    from dslc.runtime.sweep import best_plan, checked_sweep
    path = spec(tmp_path)
    unit = dslc.load(path).unit
    sweep = checked_sweep(unit, unit.decls["search"])
    lr, hidden = (d.key for d in sweep.dimensions)
    best = SimpleNamespace(number=1, value=0.9125, params={lr: 0.012345678901234, hidden: 64})
    folder = tmp_path / "sweeps" / "search"
    folder.mkdir(parents=True)
    text = best_plan(unit, path, sweep, best, str(folder / "best.dl"))
    (folder / "best.dl").write_text(text)
    return str(folder / "best.dl")


def test_best_dl_is_laid_out_as_dslc_fmt_writes_it(tmp_path):
    best = _best_dl(tmp_path)
    with open(best) as f:
        text = f.read()
    assert format_source(text) == text
    assert max(len(line) for line in text.splitlines() if not line.startswith("#")) <= WIDTH
    assert "optimizer  = AdamW(lr=0.012345678901234," in text     # the train body's `=` aligned
    checked = CliRunner().invoke(main, ["check", best])
    assert checked.exit_code == 0, checked.output
    plan = dslc.load(best).plan("digits_mlp_best")
    assert float(plan.fields["optimizer"].args["lr"]) == 0.012345678901234 and int(plan.fields["epochs"]) == 2


def test_best_dl_is_written_even_when_the_formatter_fails(tmp_path, monkeypatch):
    def broken(text, name="<text>"):
        raise RuntimeError("a bug in the formatter")
    monkeypatch.setattr(fmt, "format_source", broken)
    with open(_best_dl(tmp_path)) as f:
        text = f.read()
    assert "    optimizer = AdamW(lr=0.012345678901234," in text   # the renderer's own layout
    plan = dslc.load(str(tmp_path / "sweeps" / "search" / "best.dl")).plan("digits_mlp_best")
    assert float(plan.fields["optimizer"].args["lr"]) == 0.012345678901234


def test_the_best_dl_quoted_in_the_sweep_example_is_what_dslc_writes(monkeypatch):
    """examples/sweep/README.md quotes a run's best.dl: written again from its trial's values by
    today's writer, it is the same text (so the quote follows the writer's layout)."""
    import re
    from types import SimpleNamespace

    from dslc.runtime.sweep import best_plan, checked_sweep
    monkeypatch.chdir(ROOT)                # the README's commands run from the repository root
    with open("examples/sweep/README.md") as f:
        quoted = re.search(r"```dl\n(.*?)```", f.read(), re.S).group(1)
    number, value = re.search(r"# The best trial \((\d+)\) of the sweep `lr_search`: val_accuracy = (\S+)\.\n",
                              quoted).groups()
    values = re.search(r"# Its values: (.*)\n", quoted).group(1)
    params = {k: json.loads(v) for k, v in (item.split(" = ") for item in values.split(", "))}
    unit = dslc.load("examples/sweep/sweep.dl").unit
    sweep = checked_sweep(unit, unit.decls["lr_search"])
    best = SimpleNamespace(number=int(number), value=float(value), params=params)
    assert best_plan(unit, "examples/sweep/sweep.dl", sweep, best, "sweeps/lr_search/best.dl") == quoted


# ---------------------------------------------------------------------------- a sweep

@pytest.mark.slow
def test_sweep_beats_a_bad_default_and_writes_a_runnable_best_plan(tmp_path, monkeypatch, data_cache):
    monkeypatch.chdir(tmp_path)
    path = spec(tmp_path)
    train(path, "digits_mlp", Options(out=str(tmp_path / "default"), progress=False), out=lambda *a: None)
    default = best_val(str(tmp_path / "default"))          # lr 1e-5: barely above chance
    lines = []
    summary = run_sweep(path, "search", SweepOptions(root="sweeps", heartbeat=1), out=lines.append)
    assert summary["trials"] == {"complete": 3}, lines
    folder = tmp_path / "sweeps" / "search"
    with open(folder / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["number"]) for r in rows] == [0, 1, 2]
    for r in rows:   # each trial is an ordinary run, and its value is that run's best epoch
        assert float(r["value"]) == best_val(r["run"])
        with open(os.path.join(r["run"], "plan.dl")) as f:
            ran = f.read()
        assert f"lr={float(r['optimizer.lr'])!r}" in ran and format_source(ran) == ran
    best = max(rows, key=lambda r: float(r["value"]))
    assert summary["best_value"] == float(best["value"]) > default + 0.3, (default, rows)
    # best.dl checks, and training it again gives the best trial's numbers (the same seed and data)
    with open(folder / "best.dl") as f:
        written = f.read()
    assert format_source(written) == written
    checked = CliRunner().invoke(main, ["check", str(folder / "best.dl")])
    assert checked.exit_code == 0, checked.output
    train(str(folder / "best.dl"), "digits_mlp_best", Options(out=str(tmp_path / "again"), progress=False),
          out=lambda *a: None)
    assert best_val(str(tmp_path / "again")) == float(best["value"])
    for png in ("history.png", "importances.png", "parallel.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # run again: the study has its trials, so nothing new runs
    again = run_sweep(path, "search", SweepOptions(root="sweeps", heartbeat=1), out=lines.append)
    assert again["trials"] == {"complete": 3}


@pytest.mark.slow
def test_trials_that_fail_are_recorded_and_end_the_sweep(tmp_path, monkeypatch, data_cache):
    """A learning rate that makes the loss NaN fails each trial (E0601); the sweep goes on to new trials
    until as many failed as it has trials, then stops rather than loop."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "nan.dl"
    ranges = "optimizer.lr = loguniform(3e-3, 3e-2)\n        hidden = choice([32, 64])"
    path.write_text(SPEC.replace("EPOCHS", "1").replace(ranges, "optimizer.lr = loguniform(1e30, 1e32)"))
    lines = []
    summary = run_sweep(str(path), "search", SweepOptions(root="sweeps", trials=2), out=lines.append)
    assert summary["trials"] == {"fail": 2} and "best_trial" not in summary
    assert any(line.startswith("stopping: 2 trials failed") for line in lines), lines
    with open(tmp_path / "sweeps" / "search" / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["state"] for r in rows] == ["fail", "fail"] and all("NaN" in r["error"] or "inf" in r["error"]
                                                                  for r in rows), rows


@pytest.mark.slow
def test_grid_tries_each_combination_once(tmp_path, monkeypatch, data_cache):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "grid.dl"
    ranges = "optimizer.lr = loguniform(3e-3, 3e-2)\n        hidden = choice([32, 64])"
    path.write_text(SPEC.replace("EPOCHS", "1").replace("sampler = random", "sampler = grid")
                    .replace(ranges, "hidden = choice([16, 32])\n        optimizer.lr = choice([0.01])"))
    summary = run_sweep(str(path), "search", SweepOptions(root="sweeps", trials=5), out=lambda *a: None)
    assert summary["trials"] == {"complete": 2}   # 5 asked, 2 combinations
    trials = study_trials("sqlite:///" + str(tmp_path / "sweeps" / "search" / "study.db"))
    assert sorted(t.params["model.hidden"] for t in trials) == [16, 32]


@pytest.mark.slow
def test_two_processes_share_one_sqlite_study(tmp_path, data_cache):
    path = spec(tmp_path, epochs=1)
    args = ("sweep", path, "--trials", "3", "--heartbeat", "1")
    a, b = cli(*args, cwd=tmp_path), cli(*args, cwd=tmp_path)
    ran_a, ran_b = trial_lines(finished(a)), trial_lines(finished(b))
    assert not ran_a & ran_b and ran_a | ran_b == {0, 1, 2}
    trials = study_trials("sqlite:///" + str(tmp_path / "sweeps" / "search" / "study.db"))
    assert sorted(t.number for t in trials) == [0, 1, 2]
    assert {t.state.name for t in trials} == {"COMPLETE"}
    for t in trials:
        assert t.value == best_val(str(tmp_path / "sweeps" / "search" / "trials" / str(t.number)))


def _open_together(folder: str, barrier) -> str:
    """One worker of test_workers_that_start_together_open_one_study: waits for the others, then opens."""
    from dslc.runtime.sweep import _study
    unit = dslc.api.load(os.path.join(folder, "search.dl"))
    barrier.wait()
    try:
        return _study(unit.sweep("search"), SweepOptions(root=os.path.join(folder, "sweeps")), 0).study_name
    except DslcError as e:
        return str(e)


def test_workers_that_start_together_open_one_study(tmp_path):
    # CI once lost this race: two processes creating a fresh SQLite study's tables at the same
    # moment, the second failing with "table study_directions already exists"
    import multiprocessing

    import optuna
    spec(tmp_path)
    os.makedirs(tmp_path / "sweeps" / "search")
    context = multiprocessing.get_context("fork")   # the parent has dslc and optuna imported already
    barrier = context.Manager().Barrier(4)
    with context.Pool(4) as pool:
        names = pool.starmap(_open_together, [(str(tmp_path), barrier)] * 4)
    assert names == ["search"] * 4
    url = "sqlite:///" + str(tmp_path / "sweeps" / "search" / "study.db")
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["search"]


@pytest.mark.slow
def test_resume_after_kill_9_loses_no_finished_trial(tmp_path, data_cache):
    path = spec(tmp_path, epochs=3)
    url = "sqlite:///" + str(tmp_path / "sweeps" / "search" / "study.db")
    args = ("sweep", path, "--trials", "2", "--heartbeat", "1")
    proc = cli(*args, cwd=tmp_path)
    done = _wait_for(url, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    out = finished(cli(*args, cwd=tmp_path))
    assert f"({len(done)} done)" in out
    trials = {t.number: t for t in study_trials(url)}
    for number, (value, params) in done.items():   # every trial finished before the kill is kept as it was
        assert trials[number].state.name == "COMPLETE"
        assert (trials[number].value, trials[number].params) == (value, params)
    states = [t.state.name for t in trials.values()]
    assert states.count("COMPLETE") == 2 and states.count("FAIL") == 1, states   # the killed one failed
    assert len(trials) == 3


def _wait_for(url: str, proc, timeout: float = 300) -> dict:
    """Step the sweep until a trial finished and the next runs, and leave it stopped there;
    (number -> (value, params)) of those done.

    The process is frozen (SIGSTOP) while the study is read: otherwise, on a loaded machine, the
    next trial can finish between two looks and the sweep ends before it can be killed."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            trials = study_trials(url)
        except Exception:   # noqa: BLE001 - the study is not created yet, or the sweep holds its lock
            trials = []
        done = {t.number: (t.value, t.params) for t in trials if t.state.name == "COMPLETE"}
        if done and any(t.state.name == "RUNNING" and t.number > max(done) for t in trials):
            return done
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("no trial finished in time")

# ---------------------------------------------------------------------------- PostgreSQL

def _initdb() -> str | None:
    found = shutil.which("initdb")
    if found:
        return found
    for version in sorted(os.listdir("/usr/lib/postgresql"), reverse=True) if os.path.isdir("/usr/lib/postgresql") else ():
        candidate = f"/usr/lib/postgresql/{version}/bin/initdb"
        if os.path.exists(candidate):
            return candidate
    return None


@pytest.fixture
def postgres():
    """A PostgreSQL server of its own (initdb in a temporary folder, a free port), stopped at the end;
    run as `nobody` when the tests run as root (the server refuses root)."""
    initdb = _initdb()
    if initdb is None:
        pytest.skip("PostgreSQL is not installed (no initdb): `make postgres-test` installs it and runs this test")
    pytest.importorskip("psycopg", reason="the psycopg driver is missing: pip install 'psycopg[binary]'")
    bindir = os.path.dirname(initdb)
    folder = tempfile.mkdtemp(prefix="dslc-pg-")
    drop = None
    if os.getuid() == 0:
        user = pwd.getpwnam("nobody")
        os.chown(folder, user.pw_uid, user.pw_gid)

        def drop():
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "LC_ALL": "C"}
    port = _free_port()
    data = os.path.join(folder, "data")

    def pg(*args):
        subprocess.run(list(args), check=True, capture_output=True, preexec_fn=drop, env=env, timeout=120)
    pg(initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
    pg(os.path.join(bindir, "pg_ctl"), "-D", data, "-l", os.path.join(folder, "log"), "-w",
       "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        pg(os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_postgres_url_gets_the_installed_driver():
    url = with_driver("postgresql://u@h:5432/db")
    import importlib.util
    if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
        assert url == "postgresql+psycopg://u@h:5432/db"
    assert with_driver("sqlite:///a.db") == "sqlite:///a.db"


@pytest.mark.slow
def test_two_machines_share_a_postgres_study(tmp_path, postgres, data_cache):
    """Two workers with their own folders (two machines) and one PostgreSQL study."""
    path = spec(tmp_path, epochs=1)
    workers = [cli("sweep", path, "--storage", postgres, "--trials", "3", "--heartbeat", "1",
                   "--root", str(tmp_path / f"machine{i}"), cwd=tmp_path) for i in (1, 2)]
    ran = [trial_lines(finished(w)) for w in workers]
    assert not ran[0] & ran[1] and ran[0] | ran[1] == {0, 1, 2}
    stored = study_trials(with_driver(postgres))
    # two machines that ask for the last slot at once: the second trial is failed at once, marked
    # `surplus` (docs/scaling.md, Counting); it holds no slot and ran nothing
    surplus = [t for t in stored if t.user_attrs.get("surplus")]
    assert all(t.state.name == "FAIL" and t.number >= 3 for t in surplus)
    trials = [t for t in stored if t not in surplus]
    assert sorted(t.number for t in trials) == [0, 1, 2]
    assert {t.state.name for t in trials} == {"COMPLETE"}
    for t in trials:   # each trial's folder is on the machine that ran it
        machine = 1 if t.number in ran[0] else 2
        run = tmp_path / f"machine{machine}" / "search" / "trials" / str(t.number)
        assert t.value == best_val(str(run))
