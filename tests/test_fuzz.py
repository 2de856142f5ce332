"""The fuzzer (tools/fuzz.py) and what it asks of dslc: no input file or argument ever gives an
internal error, a hang or a memory blow-up.

Three parts: the fuzzer itself (every operator mutates, the classifier tells a planted internal
error, hang, crash and memory hog apart, the minimizer shrinks a planted failure); a bounded fuzz
run (300 cases, seed 0); and hypothesis driving the command line with random bytes, random token
sequences and random arguments. The last two run in the fuzzer's forked workers, so a hang or a
memory blow-up fails the test instead of stalling or exhausting the machine.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import ROOT

sys.path.append(os.path.join(ROOT, "tools"))   # appended: its common.py must not hide another module
from fuzzing import generators, mutate, target  # noqa: E402
from fuzzing.cases import WEIRD_INTS, Case, make_case, with_text  # noqa: E402
from fuzzing.minimize import Minimizer, abbreviate, ddmin  # noqa: E402
from fuzzing.pool import Limits, Pool  # noqa: E402
from fuzzing.seeds import all_seeds  # noqa: E402

HERE = (os.path.abspath(__file__),)
SPEC = open(os.path.join(ROOT, "examples", "language.dl"), encoding="utf-8").read()   # has every kind of token


# ---------------------------------------------------------------- the operators


def _significant(text):
    return [p for p in mutate.tokens(text) if mutate.kind(p) not in ("space", "newline", "comment")]


def _changed(text, mutant):
    """The one token that differs, before and after ([] unless exactly one does)."""
    before, after = _significant(text), _significant(mutant)
    pairs = [(a, b) for a, b in zip(before, after) if a != b]
    return list(pairs[0]) if len(before) == len(after) and len(pairs) == 1 else []


def _invalid_utf8(text):
    try:
        mutate.to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


EFFECT = {   # what each operator must have done to SPEC
    "delete": lambda t, m: len(_significant(m)) < len(_significant(t)),
    "duplicate": lambda t, m: len(_significant(m)) > len(_significant(t)),
    "swap": lambda t, m: sorted(m) == sorted(t),    # the same characters, elsewhere
    "huge_number": lambda t, m: any(h in m and h not in t for h in mutate.HUGE if len(h) > 1) or
    len(_significant(m)) != len(_significant(t)) or _significant(m) != _significant(t),
    "small_number": lambda t, m: _significant(m) != _significant(t) and any(
        x in _significant(m) for x in mutate.SMALL),
    "retype_number": lambda t, m: [(mutate.kind(x), "." in x) for x in _changed(t, m)] in (
        [("number", False), ("number", True)], [("number", True), ("number", False)]),
    "swap_string": lambda t, m: [mutate.kind(x) for x in _changed(t, m)] == ["string", "string"],
    "swap_name": lambda t, m: [mutate.kind(x) for x in _changed(t, m)][1:] in (["name"], ["keyword"]),
    "drop_line": lambda t, m: len(m.splitlines()) == len(t.splitlines()) - 1,
    "dup_line": lambda t, m: len(m.splitlines()) == len(t.splitlines()) + 1,
    "nest_parens": lambda t, m: "(" * 100 in m,
    "nest_unary": lambda t, m: any(p * 100 in m for p in ("-", "- ", "not ", "+")),
    "nest_sum": lambda t, m: any(m.count(op) >= t.count(op) + 899 for op in (" + ", " * ", " - ", " and ", " -> ")),
    "nest_compare": lambda t, m: any(m.count(op) >= t.count(op) + 2999 for op in (" < ", " == ", " in ")),
    "nest_lists": lambda t, m: any(o * 100 in m for o in ("[", "{a: ", "f(", "(")),
    "nest_blocks": lambda t, m: m.count("{\n") >= t.count("{\n") + 150,
    "truncate": lambda t, m: mutate.to_bytes(t).startswith(mutate.to_bytes(m)) and len(mutate.to_bytes(m)) < len(
        mutate.to_bytes(t)),
    "insert_nul": lambda t, m: "\x00" in m and "\x00" not in t,
    "insert_bad_utf8": lambda t, m: _invalid_utf8(m) and not _invalid_utf8(t),
    "insert_control": lambda t, m: any(m.count(c) > t.count(c) for c in mutate.CONTROL),
    "dup_decl": lambda t, m: len(mutate.declarations(m)) > len(mutate.declarations(t)),
    "long_string": lambda t, m: any(u * 2000 in m and u * 2000 not in t for u in mutate.LONG_UNITS),
}


def test_every_operator_is_checked():
    assert set(EFFECT) == set(mutate.OPERATORS)


@pytest.mark.parametrize("name", sorted(mutate.OPERATORS))
def test_each_operator_mutates(name):
    for k in range(5):
        out = mutate.OPERATORS[name](random.Random(k), SPEC)
        assert out is not None and out != SPEC
        assert EFFECT[name](SPEC, out), (name, k)


@settings(max_examples=200)
@given(st.text(st.characters(blacklist_categories=()), max_size=200))
def test_tokens_join_back_to_any_text(text):
    assert "".join(mutate.tokens(text)) == text


def test_mutants_keep_invalid_bytes_byte_for_byte():
    data = b"model M {\xff\xfe\x00 }"
    assert mutate.to_bytes(mutate.from_bytes(data)) == data


def test_a_case_depends_only_on_the_seed_and_its_number():
    seeds = all_seeds()
    assert len(seeds) > 80
    assert make_case(3, 17, seeds) == make_case(3, 17, seeds)
    assert len({make_case(3, i, seeds).files[make_case(3, i, seeds).main] for i in range(20)}) > 15


def test_the_generators_build_what_the_issue_names():
    rng = random.Random(0)
    files, main = generators.broken_declarations(rng)
    assert files[main].count("\nmodel M") + files[main].count("\nblock B") >= 4999
    files, main = generators.huge_string_default(random.Random(1))
    assert len(files[main]) >= 1 << 20
    files, main = generators.import_chain(random.Random(2))
    assert len(files) >= 101 and 'import "f0.dl"' in files[main]
    files, main = generators.doubling(random.Random(3))
    assert files[main].count("block A") >= 13


# ---------------------------------------------------------------- the classifier, on planted failures


def _planted_internal():
    raise ValueError("planted")


def _planted_spin():
    while True:
        pass


def _planted_hog():
    hoard = []
    while True:
        hoard.append(bytearray(16 << 20))


def planted(case, root, progress):
    """A fake target: what it does is named by the case's origin."""
    from dslc.diagnostics import Diagnostic, DslcError
    what = case.origin
    if what == "clean":
        raise DslcError(Diagnostic("E0101", "planted"))
    if what == "internal":
        _planted_internal()
    if what == "spin":
        _planted_spin()
    if what == "sleep":
        time.sleep(60)
    if what == "hog":
        _planted_hog()
    if what == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if what == "boom":
        with open(os.path.join(root, case.main), "rb") as f:
            if b"BOOM" in f.read():
                _planted_internal()


@pytest.fixture(scope="module")
def planted_pool(tmp_path_factory):
    # a second of CPU: the memory hog must reach its limit before its time runs out on a loaded machine
    with Pool([str(tmp_path_factory.mktemp("w0"))], planted, Limits(seconds=1.0, memory=256 << 20),
              prefixes=HERE) as pool:
        yield pool


def test_the_classifier_tells_failures_apart(planted_pool):
    kinds = ["ok", "clean", "internal", "spin", "sleep", "hog", "crash", "ok"]
    outcomes = planted_pool.run_ordered([Case(i, kind) for i, kind in enumerate(kinds)])
    got = {kind: o for kind, o in zip(kinds, outcomes)}
    assert [o.cls for o in outcomes] == ["ok", "clean", "internal", "hang", "hang", "memory", "internal", "ok"]
    assert got["internal"].etype == "ValueError" and got["internal"].frame.endswith("test_fuzz.py:_planted_internal")
    assert got["spin"].frame.endswith(":_planted_spin")      # the stack the hang was stuck in
    assert got["hog"].etype == "MemoryError" and got["hog"].frame.endswith(":_planted_hog")
    assert got["crash"].etype == "SIGSEGV" and got["crash"].frame.endswith(":planted")
    assert got["clean"].codes == ("E0101",)


def test_the_minimizer_keeps_the_failure_and_shrinks_it(planted_pool):
    lines = [f"line {i} with some words" for i in range(40)]
    lines[23] = "a BOOM here"
    case = Case(0, "boom", files={"m.dl": "\n".join(lines).encode()}, main="m.dl")
    [found] = planted_pool.run_ordered([case])
    assert found.cls == "internal"
    m = Minimizer(planted_pool, case, found, seconds=60)
    small = m.run()
    assert small == b"BOOM"
    [again] = planted_pool.run_ordered([with_text(case, small)])
    assert (again.cls, again.etype, again.frame) == (found.cls, found.etype, found.frame)


def test_a_hang_is_named_by_the_loop_every_stack_sample_is_in():
    dump = """Thread 0x1 (most recent call first):
  File "{root}/dslc/diagnostics/suggest.py", line 21 in {leaf}
  File "{root}/dslc/frontend/names.py", line 131 in _report
  File "{root}/tools/fuzzing/target.py", line 170 in api_target
"""
    root = target.ROOT
    samples = [target.text_frames(dump.format(root=root, leaf=leaf), newest_first=True)
               for leaf in ("edit_distance", "did_you_mean", "edit_distance")]
    assert samples[0][-1][2] == "edit_distance"                  # newest last, once parsed
    assert target.steady_frame(samples, target.DSLC_FRAMES) == ("dslc/frontend/names.py:_report",
                                                                 "dslc/frontend/names.py:131")
    assert target.steady_frame(samples[:1], target.DSLC_FRAMES)[0] == "dslc/diagnostics/suggest.py:edit_distance"


def test_a_recursion_error_is_named_by_the_function_that_recurses():
    root = target.ROOT + "/dslc/frontend/"
    frames = [(root + "loader.py", 10, "load_unit")] + [(root + "loader.py", 99, "_load"),
                                                          (root + "loader.py", 120, "_import")] * 300
    frames += [(root + "parser.py", 391, "_sp")]    # where the limit happened to strike
    assert target.culprit(frames, target.DSLC_FRAMES, recursion=True)[0] in ("dslc/frontend/loader.py:_import",
                                                                            "dslc/frontend/loader.py:_load")
    assert target.culprit(frames, target.DSLC_FRAMES, recursion=False)[0] == "dslc/frontend/parser.py:_sp"


def test_ddmin_finds_the_two_items_that_matter():
    def first_failing(candidates):
        return next((i for i, c in enumerate(candidates) if 3 in c and 7 in c), None)
    assert ddmin(list(range(20)), first_failing, time.monotonic() + 10) == [3, 7]


def test_reproducers_are_abbreviated_for_reading():
    assert abbreviate("x = " + "(" * 500 + "1" + ")" * 500) == "x = «(»{500}1«)»{500}"
    assert abbreviate("a\x00b\udcff") == "a\\x00b\\xff"


def _fake_dslc(tmp_path, script: str) -> str:
    path = tmp_path / "dslc"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return str(path)


def test_the_command_line_classifier(tmp_path, monkeypatch):
    case = Case(0, "cli", files={"m.dl": b""}, main="m.dl", mode="cli", argv=("check", "{file}"))

    def outcome(script):
        monkeypatch.setattr(target, "DSLC_COMMAND", _fake_dslc(tmp_path, script))
        return target.run_cli(case, str(tmp_path), str(tmp_path), 1.0, 256 << 20)

    assert outcome("exit 0").cls == "ok"
    assert outcome("echo 'm.dl:1:1: error[E0101]: bad' >&2; exit 1").codes == ("E0101",)
    internal = outcome('echo "internal error, please report: KeyError: 3 (rerun with --debug for the traceback)" >&2\n'
                       'echo \'File "/x/dslc/frontend/a.py", line 9, in f\' >&2\nexit 3')
    assert (internal.cls, internal.etype, internal.message) == ("internal", "KeyError", "3")
    assert outcome("echo 'Traceback (most recent call last):' >&2; exit 1").cls == "internal"
    assert outcome("while :; do :; done").cls == "hang"       # SIGXCPU after 1 s of CPU


# ---------------------------------------------------------------- a bounded run


@pytest.mark.slow
def test_a_bounded_fuzz_run_finds_no_failure(tmp_path):
    """300 mutants of seed 0 (in-process, 10% built and exported, 5% through the command line):
    no internal error, hang or memory blow-up. The table names any failure and its reproducer.
    The fuzzer runs in a process of its own: its pool forks workers from its parent, and a test
    worker that has run hundreds of tests (their threads, loaders and writers) is no parent to fork."""
    out = tmp_path / "result.json"
    args = ["--n", "300", "--seed", "0", "--deep", "0.1", "--min-seconds", "20", "--quiet", "--json", str(out), "--out",
            str(tmp_path / "found")]
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "fuzz.py"), *args], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=1200)
    code = run.returncode
    assert os.path.exists(out), run.stdout + run.stderr
    result = json.loads(out.read_text())
    assert result["n"] == 300
    assert sum(result["counts"]["cli"].values()) > 0
    assert code == 0 and not result["failures"], json.dumps(result["failures"], indent=1)


# ---------------------------------------------------------------- the command line on random input


def cli_runner_target(case, root, progress):
    """Run `dslc ARGS` in the worker through click's CliRunner: exit 0, 1 or 2, no traceback."""
    from click.testing import CliRunner

    from dslc.cli import main
    argv = [a.replace("{file}", os.path.join(root, case.main)).replace("{out}", root) for a in case.argv]
    result = CliRunner().invoke(main, argv)
    text = result.output
    assert result.exit_code in (0, 1, 2) and "Traceback" not in text and "internal error" not in text, \
        f"dslc {' '.join(case.argv)}: exit {result.exit_code}\n{text[-1500:]}"


@pytest.fixture(scope="module")
def cli_pool(tmp_path_factory):
    with Pool([str(tmp_path_factory.mktemp("cli"))], cli_runner_target, Limits(seconds=10)) as pool:
        yield pool


COMMANDS = [["check", "{file}"], ["compile", "{file}", "-o", "{out}/out.py"], ["summary", "{file}"],
            ["render", "{file}", "-o", "{out}/out.dot"],
            ["compile", "{file}", "--target", "onnx", "-o", "{out}/m.onnx"]]


def run_cli(pool, data: bytes, argv: list) -> None:
    case = Case(0, "hypothesis", files={"input.dl": data}, main="input.dl", argv=tuple(argv))
    [outcome] = pool.run_ordered([case])
    assert outcome.cls == "ok", f"{outcome.cls} {outcome.etype} at {outcome.where}: {outcome.message}\n" \
                                f"input: {abbreviate(data)}"


def _vocabulary() -> list[str]:
    """Every distinct short token of the seeds, with newlines and a few hostile ones."""
    pieces = {p for s in all_seeds() for p in mutate.tokens(s.text)
              if mutate.kind(p) not in ("space", "comment") and len(p) <= 20}
    return sorted(pieces) + ["\n", "\x00", "\udcff", "9 ** 9 ** 9", "10**30", "1e308", "(" * 50]


VOCABULARY = _vocabulary()
tokens = st.lists(st.sampled_from(VOCABULARY), max_size=80).map(" ".join)


@settings(max_examples=100)
@given(data=st.binary(max_size=3000), argv=st.sampled_from(COMMANDS))
def test_the_command_line_on_random_bytes(cli_pool, data, argv):
    run_cli(cli_pool, data, argv)


@settings(max_examples=100)
@given(text=tokens, argv=st.sampled_from(COMMANDS))
def test_the_command_line_on_random_token_sequences(cli_pool, text, argv):
    run_cli(cli_pool, mutate.to_bytes(text), argv)


NUMBER_FLAGS = {"compile": "--seed", "summary": "--size", "render": "--depth"}


def _small_cnn() -> bytes:
    with open(os.path.join(ROOT, "specs", "small_cnn.dl"), "rb") as f:
        return f.read()


@settings(max_examples=60)
@given(argv=st.sampled_from(COMMANDS[1:]), setting=st.none() | st.tuples(st.sampled_from(VOCABULARY),
                                                                       st.sampled_from(VOCABULARY)),
       model=st.none() | st.sampled_from(VOCABULARY + ["SmallCNN"]))
def test_the_command_line_on_random_settings(cli_pool, argv, setting, model):
    """--set KEY=VALUE and --model NAME of random tokens, on a spec that compiles."""
    extra = (["--set", "=".join(setting)] if setting else []) + (["--model", model] if model else [])
    run_cli(cli_pool, _small_cnn(), argv + extra)


@pytest.mark.parametrize("argv", COMMANDS[1:], ids=lambda a: "-".join(a[0:1] + a[2:3]))
@settings(max_examples=30)
@given(number=st.sampled_from([int(n) for n in WEIRD_INTS]) | st.integers(-2 ** 70, 2 ** 70))
def test_the_command_line_on_odd_numbers(cli_pool, argv, number):
    """Any integer for --seed (compile), --size T= (summary) or --depth (render)."""
    flag = NUMBER_FLAGS[argv[0]]
    run_cli(cli_pool, _small_cnn(), argv + [flag, f"T={number}" if flag == "--size" else str(number)])


TINY_PLAN = b"""model Tiny {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(10)
}

train tiny {
    model      = Tiny()
    data       = digits(val=0.1, test=0.1)
    loss       = cross_entropy(out, batch.y)
    optimizer  = SGD(lr=0.1)
    epochs     = 1
    batch_size = 256
}
"""


@pytest.mark.slow
@pytest.mark.parametrize("device", ["nonsense", "cuda:99", "meta"])
def test_train_refuses_a_device_it_cannot_use(cli_pool, device):
    """A device torch does not know, or that this machine lacks: a usage error, not exit 3."""
    run_cli(cli_pool, TINY_PLAN, ["train", "{file}", "--out", "{out}/run", "--device", device])


HOSTILE = {"random-bytes": bytes(random.Random(0).randrange(256) for _ in range(2000)),
           "nul": b"model M {\x00\x00}", "deep-parens": b"model M(a: int = " + b"(" * 5000 + b"1" + b")" * 5000
           + b") {\n input x: [B, 4]\n}\n", "utf16": "model M { }".encode("utf-16")}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_the_real_command_on_hostile_files(name, tmp_path):
    """The installed `dslc` command itself (not CliRunner): exit 1, a diagnostic, no traceback."""
    import subprocess
    path = tmp_path / "hostile.dl"
    path.write_bytes(HOSTILE[name])
    r = subprocess.run([target.DSLC_COMMAND, "check", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr


def _raised_in(filename: str, error: BaseException) -> BaseException:
    """`error`, raised by code whose file name is `filename` (a generated model's `<dslc ...>`)."""
    try:
        exec(compile("raise error", filename, "exec"), {"error": error})  # noqa: S102 - a fixed line
    except BaseException as e:  # noqa: BLE001
        return e
    raise AssertionError("not raised")


def test_a_torch_value_check_in_the_generated_forward_is_its_own_class():
    """BCE of values outside [0, 1] in the model's own forward (the 100,000-case run's case 76793 of
    seed 1) is `value`, not `internal`; the same error anywhere else, or another message, stays internal."""
    def bce():   # a new one each time: raising an exception again extends its traceback
        return RuntimeError("all elements of input should be between 0 and 1")
    generated = _raised_in("<dslc _fuzz_mutant.dl:Discriminator>", bce())
    assert target.failure(generated, "forward", target.DSLC_FRAMES, 0.0).cls == "value"
    assert target.failure(generated, "build", target.DSLC_FRAMES, 0.0).cls == "internal"
    in_dslc = _raised_in(os.path.join(target.DSLC_FRAMES[0], "ops", "losses.py"), bce())
    assert target.failure(in_dslc, "forward", target.DSLC_FRAMES, 0.0).cls == "internal"
    other = _raised_in("<dslc m.dl:M>", RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert target.failure(other, "forward", target.DSLC_FRAMES, 0.0).cls == "internal"


CLIP_MUTANT = """\
block TextTransformer(vocab:int,int,dim:int,depth,heads,embed:int){input tokens:[B,T]
h=((tokens->Embedding(vocab,dim)as positional_embedding))
h[4294967296]->LayerNorm as ln_final->Linear(embed)as text_projection}
model CLIP(vocab:int=1000,context:int=16,text_dim=64,text_depth:int=2,text_heads:int=4,embed:int=32){input texts:[B,T]of int64
texts->TextTransformer(vocab,context,text_dim,text_depth,text_heads,embed)as text}
"""


@pytest.mark.parametrize("index, phase", [("4294967296", "build"), ("1", "onnx")])
def test_a_model_needing_longer_inputs_than_the_fuzzer_feeds_is_not_run(tmp_path, index, phase):
    """The 100,000-case run's case 98374 of seed 1 (a CLIP mutant indexing `h[4294967296]` on the
    run-time batch size) needs B > 4294967296: forward refuses the fuzzer's inputs, so neither it nor
    ONNX runs, and nothing is wrong. Where the fuzzer's sizes meet the requirement, both run."""
    (tmp_path / "case.dl").write_text(CLIP_MUTANT.replace("4294967296", index))
    case = Case(98374, "replay", main="case.dl", deep=True)
    outcome = target.classify(lambda progress: target.api_target(case, str(tmp_path), progress))
    assert (outcome.cls, outcome.phase) == ("ok", phase), outcome
