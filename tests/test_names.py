"""Names that would break generated Python, and `--set` reaching every parameter name.

A name from a spec becomes a Python class, argument, local variable or
attribute in the generated file. Whatever the name, `dslc check` either
refuses it with a clean diagnostic (exit 1, no traceback), or the file it
compiles to imports without dslc, builds, runs, and keeps the user's names
where they are visible: the `MODELS` key, the constructor's keywords and
the state-dict keys.
"""
from __future__ import annotations

import ast
import builtins
import json
import keyword
import pathlib
import re

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from support import run_without_dslc

import dslc
from dslc.api import exec_source
from dslc.cli import main
from dslc.diagnostics import DslcError
from dslc.ops.registry import HELPERS

# Names the generated file uses or defines itself, temporaries it makes, and shapes of names that
# Python treats specially (dunders, mangled `__x`, the throwaway `_`).
GENERATED = {"torch", "nn", "F", "math", "MODELS", "build", "self", "super", "x", "h", "y", "z", "B", "T",
             "seed", "params", "name", "names", "opt", "channels_last", "in_features", "x_dim0", "fc",
             "out", "M", "Blk", "n", "__class__", "__builtins__", "__name__", "__init__", "__dict__",
             "__module__", "__qualname__", "__doc__", "__file__", "__spec__", "__annotations__", "__all__",
             "__slots__", "__x", "_", "__", "_x", "x_", "float_", "forward_", "type_"}


def hostile_names() -> list[str]:
    """Every keyword, builtin, nn.Module attribute, helper and name above. The builtin exception
    classes behave alike, so only a few of them are tried."""
    import torch
    exceptions = {n for n in dir(builtins) if n[:1].isupper() and n not in ("None", "True", "False")}
    names = set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins)) | set(HELPERS) | GENERATED
    names |= set(dir(torch.nn.Module()))
    names -= exceptions - {"ValueError", "RuntimeError", "Exception", "TypeError"}
    return sorted(names)


# One spec that makes the generated code use what it can: a block class and a guard (ValueError) in
# the constructor, float("inf") in the constructor and in forward, F, a run-time size, a `param`, an
# unused result (`_`). Each role puts the name under test in one place of it.
SPEC = """\
block {block}({block_param}: int) {{
    Linear({block_param})
}}
model {model}({model_param}: int = 3) {{
    input {input}: [B, {size}, 4]
    param {param}: [3] = ones
    {tensor} = (sum({input}, dim=1) / {size}) -> Linear({model_param}) as {layer}
    u = {tensor}
    repeat {model_param} {{
        u = u -> {block}(3)
    }}
    v = u -> Softplus(threshold=1e999) as sp
    a, b, c = chunk(softplus(v * {param}, threshold=1e999) + {tensor}, 3, dim=1)
    output b
}}
"""
DEFAULTS = {"block": "Blk", "block_param": "k", "model": "M", "model_param": "k", "input": "x", "size": "S",
            "param": "scale", "tensor": "h", "layer": "fc"}
ROLES = sorted(DEFAULTS)
INPUT_SHAPE = (2, 5, 4)   # the DRIVER's too


def spec(role: str, name: str) -> str:
    return SPEC.format(**dict(DEFAULTS, **{role: name}))


def check_cleanly(path) -> bool:
    """`dslc check`: True when the spec is fine; a refusal must be a clean diagnostic (exit 1)."""
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code in (0, 1), (path.read_text(), result.output)
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    if result.exit_code == 1:
        assert_clean(result.stderr, path)
    return result.exit_code == 0


def assert_clean(rendered: str, path) -> None:
    """A diagnostic with its code, at `file:line:col` of the spec, with the source line and a caret."""
    assert re.search(rf"{re.escape(path.name)}:\d+:\d+: error\[E\d{{4}}\]", rendered), rendered
    assert "^" in rendered and "Traceback" not in rendered, rendered


def expected_keys(role: str, name: str, prog) -> list[str]:
    """The state-dict keys: the user's names for the layer and the `param`, the IR's for the blocks."""
    names = dict(DEFAULTS, **{role: name})
    blocks = [i.name for i in prog.graph(names["model"]).instances.values() if i.kind == "block"]
    assert len(blocks) == 3
    keys = [names["param"], f"{names['layer']}.weight", f"{names['layer']}.bias"]
    return sorted(keys + [f"{b}.fc.{w}" for b in blocks for w in ("weight", "bias")])


# Runs in a subprocess that cannot import dslc: imports each generated file, builds its model by
# the user's name, constructs it again with its parameters by the user's names, runs a forward
# pass and reports the state-dict keys (or what went wrong).
DRIVER = """
import importlib.util, json, torch
cases = json.load(open("cases.json"))
out = {}
for i, (path, model, keywords) in enumerate(cases):
    try:
        spec = importlib.util.spec_from_file_location(f"generated_{i}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mod.MODELS[model](**keywords)
        net = mod.build(model, seed=0)
        y = net(torch.randn(2, 5, 4))
        ys = y if isinstance(y, tuple) else (y,)
        assert all(torch.isfinite(t).all() for t in ys), "not finite"
        out[path] = sorted(net.state_dict())
    except Exception as e:
        out[path] = f"{type(e).__name__}: {e}"
json.dump(out, open("keys.json", "w"))
"""


@pytest.mark.slow
def test_every_hostile_name_is_refused_or_works(tmp_path):
    """Every hostile name in every role: a clean refusal, or a file that works without dslc and
    keeps the user's names (one subprocess runs every generated file)."""
    cases, expected, accepted = [], {}, {role: [] for role in ROLES}
    for role in ROLES:
        for i, name in enumerate(hostile_names()):
            path = tmp_path / f"{role}{i}.dl"
            path.write_text(spec(role, name))
            try:
                prog = dslc.load(str(path))
            except DslcError as e:
                assert_clean(e.render(), path)   # what `dslc check` prints, exiting 1
                continue
            accepted[role].append(name)
            out = tmp_path / f"{role}{i}.py"
            out.write_text(prog.source())      # what `dslc compile` writes
            model = name if role == "model" else DEFAULTS["model"]
            cases.append((str(out), model, {name: 3} if role == "model_param" else {}))
            expected[str(out)] = ((role, name), expected_keys(role, name, prog))
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    run = run_without_dslc(DRIVER, cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    keys = json.loads((tmp_path / "keys.json").read_text())
    wrong = {case: keys[path] for path, (case, want) in expected.items() if keys[path] != want}
    assert not wrong, wrong
    # refusing everything would pass the above: names Python allows there are accepted
    for role, names in {"model": ["float", "torch", "__class__", "__builtins__", "build", "MODELS", "int"],
                        "block": ["forward", "super", "train", "__x", "F"],
                        "model_param": ["type", "input", "len", "name", "seed", "params", "x_dim0"],
                        "block_param": ["type", "in_features", "range", "max"],
                        "tensor": ["float", "len", "type", "_", "__x", "x_", "F", "build", "torch"],
                        "input": ["float", "type", "_", "torch"],
                        "size": ["torch", "self", "lambda", "F"],
                        "layer": ["torch", "nn", "len", "range", "print", "super", "int", "x"],
                        "param": ["torch", "len", "build", "MODELS"]}.items():
        assert set(names) <= set(accepted[role]), (role, set(names) - set(accepted[role]))


def test_module_attributes_are_torch_modules_public_attributes():
    """MODULE_ATTRIBUTES is written out (the checker does not import torch): it must be exactly the
    installed torch.nn.Module's public attributes, so a torch that adds one fails here first."""
    import torch

    from dslc.ir.naming import MODULE_ATTRIBUTES
    assert MODULE_ATTRIBUTES == {n for n in dir(torch.nn.Module()) if not n.startswith("_")}


def free_names(func: ast.FunctionDef) -> set[str]:
    """The names a function's body reads without binding them: module-level names and builtins."""
    body = ast.Module(body=func.body, type_ignores=[])
    args = func.args
    bound = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
    bound |= {n.id for n in ast.walk(body) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    return {n.id for n in ast.walk(body) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - bound


def generated_sources() -> list[tuple[str, str]]:
    """Every golden generated file, and a file for every registry example."""
    from support import single_op_graph

    from dslc.backends.torch_codegen import generate
    from dslc.ops import REGISTRY
    out = [(str(p), p.read_text()) for p in sorted(pathlib.Path(__file__).parent.glob("golden/**/*.py"))]
    for op in sorted(REGISTRY.values(), key=lambda op: op.name):
        for i, example in enumerate(op.examples):
            graph, _ = single_op_graph(op, example)
            out.append((f"{op.name} example {i}", generate([graph], "test.dl")))
    return out


def test_generated_code_reads_only_names_ours_cannot_hide():
    """A constructor reads only CONSTRUCTOR_GLOBALS, helpers and the file's classes, the names a
    model parameter (kept as the user wrote it) is refused or a class avoids. A forward reads only
    names no local of ours takes (RESERVED and helpers), so no tensor can hide them."""
    from dslc.backends.pyformat import RESERVED
    from dslc.ir.naming import CONSTRUCTOR_GLOBALS, READ_WHERE_FREE
    sources = generated_sources()
    assert len(sources) > 100
    for where, src in sources:
        tree = ast.parse(src)
        classes = {c.name for c in tree.body if isinstance(c, ast.ClassDef)}
        for cls in (c for c in tree.body if isinstance(c, ast.ClassDef)):
            methods = {f.name: f for f in cls.body if isinstance(f, ast.FunctionDef)}
            constructor_may_read = CONSTRUCTOR_GLOBALS | set(HELPERS) | classes | READ_WHERE_FREE
            assert free_names(methods["__init__"]) <= constructor_may_read, (where, cls.name)
            # those it reads only where no argument is called so (`len(hidden)`)
            init = methods["__init__"]
            calls = {n.func.id for n in ast.walk(init) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
            assert not READ_WHERE_FREE & calls & {a.arg for a in init.args.args}, (where, cls.name)
            if "forward" in methods:   # an nn.Sequential block has torch's own
                assert free_names(methods["forward"]) <= RESERVED | set(HELPERS), (where, cls.name)
            else:
                assert [ast.unparse(b) for b in cls.bases] == ["nn.Sequential"], (where, cls.name)


IDENTIFIERS = st.one_of(st.sampled_from(hostile_names()), st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,8}\Z"))


@given(role=st.sampled_from(ROLES), name=IDENTIFIERS)
def test_any_identifier_is_refused_cleanly_or_builds(role, name, tmp_path_factory):
    import torch
    path = tmp_path_factory.mktemp("names") / "spec.dl"
    path.write_text(spec(role, name))
    if not check_cleanly(path):
        return
    prog = dslc.load(str(path))
    net = prog.build(name if role == "model" else "M", seed=0)
    out = net(torch.randn(*INPUT_SHAPE))
    assert torch.isfinite(out).all()
    assert sorted(net.state_dict()) == expected_keys(role, name, prog)


# ---------------------------------------------------------------- what each kind of name becomes

def load_spec(tmp_path, text: str, name: str = "spec.dl"):
    path = tmp_path / name
    path.write_text(text)
    return dslc.load(str(path))


def test_models_and_blocks_named_like_python_become_other_classes(tmp_path):
    prog = load_spec(tmp_path, "block torch(k: int) {\n    Linear(k)\n}\n"
                               "model float(int: int = 3) {\n    input x: [B, 4]\n    torch(int)\n    torch(2)\n}\n"
                               "model __class__ {\n    input x: [B, 4]\n    float()\n}\n")
    src = prog.source()
    for cls in ("torch_", "class_"):
        assert f"class {cls}(nn.Module):" in src
    assert "class float_(nn.Sequential):" in src      # a chain of two unnamed blocks
    assert 'MODELS = {"float": float_, "__class__": class_}' in src
    assert "def __init__(self, int: int = 3):" in src          # the parameter keeps its name
    mod = exec_source(src, "<names test>")
    assert type(mod.build("float")).__name__ == "float_" and mod.float_(int=3) is not None
    # the layer the block `float` makes is not named `float`: that is nn.Module's own method
    assert sorted(prog.build("__class__", seed=0).state_dict())[0] == "float1.0.fc.bias"


def test_parameters_keep_their_names_and_attributes_avoid_the_modules(tmp_path):
    """`type` and `input` are ordinary keywords; a parameter the forward reads is stored as an
    attribute, which must not replace nn.Module's `type` or `train`."""
    import torch
    prog = load_spec(tmp_path, "model M(type: float = 2.0, input: int = 3, train: int = 4) {\n"
                               "    input x: [B, 4]\n    Linear(input + train)\n    output x * type\n}\n")
    src = prog.source()
    assert "def __init__(self, type: float = 2.0, input: int = 3, train: int = 4):" in src
    mod = exec_source(src, "<names test>")
    net = mod.MODELS["M"](type=0.5, input=3, train=4)
    assert net.type_ == 0.5 and net.type(torch.float32) is net and net.train(False) is net
    assert torch.equal(net(torch.ones(1, 4)), torch.full((1, 4), 0.5))   # forward reads `self.type_`


def test_layer_and_param_names_are_the_state_dict_keys(tmp_path):
    prog = load_spec(tmp_path, "model M {\n    input x: [B, 4]\n    param len: [3] = ones\n"
                               "    h = x -> Linear(3) as torch -> Linear(3) as range\n    output h * len\n}\n")
    assert sorted(prog.build("M", seed=0).state_dict()) == ["len", "range.bias", "range.weight", "torch.bias",
                                                             "torch.weight"]


def test_automatic_names_avoid_the_modules_attributes(tmp_path):
    """Blocks named `Forward`, `Train` or `__Mix` give layers `forward1`, `train1`, `mix`; sixteen
    `Bfloat` blocks are numbered past `bfloat16`, which is a method."""
    uses = "\n".join(["    Forward()", "    Train()", "    __Mix()"] + ["    Bfloat()"] * 16)
    blocks = "".join(f"block {b} {{\n    Linear(4)\n}}\n" for b in ("Forward", "Train", "__Mix", "Bfloat"))
    # the named head keeps M a class with named members (a chain of unnamed blocks alone is an nn.Sequential)
    prog = load_spec(tmp_path, blocks + f"model M {{\n    input x: [B, 4]\n{uses}\n    Linear(4) as head\n}}\n")
    names = [i.name for i in prog.graph("M").instances.values()]
    assert names[:3] == ["forward1", "train1", "mix"] and "bfloat16" not in names and "bfloat17" in names
    net = prog.build("M", seed=0)
    assert net.train(False) is net and net.bfloat16 is not None and net.forward1 is not None


@pytest.mark.parametrize("role,name", [
    ("model_param", "lambda"), ("model_param", "self"), ("model_param", "__depth"), ("model_param", "torch"),
    ("model_param", "super"), ("model_param", "DropPath"), ("block_param", "float"), ("block_param", "nn"),
    ("layer", "train"), ("layer", "forward"), ("layer", "_proj"), ("layer", "class"), ("param", "type"),
    ("param", "__dict__"), ("tensor", "class"), ("tensor", "self"), ("input", "lambda")])
def test_names_python_cannot_take_are_e0211(role, name, tmp_path):
    path = tmp_path / "spec.dl"
    path.write_text(spec(role, name))
    with pytest.raises(DslcError) as e:
        dslc.load(str(path))
    assert "E0211" in e.value.codes, e.value.render()


# ---------------------------------------------------------------- `--set` reaches every parameter name

OPTIONS_SPEC = """\
model M(seed: int = 1, opt: int = 1, names: int = 1, channels_last: int = 1, params: int = 1, name: int = 1,
        depth: int = 1, sizes: int = 1, frozen: int = 1, weights: int = 1, collapse: int = 1) {
    input x: [B, 4]
    Linear(seed + opt + names + channels_last + params + name + depth + sizes + frozen + weights + collapse)
}
"""
OPTIONS = ["seed", "opt", "names", "channels_last", "params", "name", "depth", "sizes", "frozen", "weights",
           "collapse"]


def run_cli(*args):
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    return result


def test_set_reaches_parameters_named_like_the_commands_options(tmp_path):
    path = tmp_path / "options.dl"
    path.write_text(OPTIONS_SPEC)
    sets = [a for k in OPTIONS for a in ("--set", f"{k}={OPTIONS.index(k) + 2}")]
    total = sum(range(2, len(OPTIONS) + 2))
    result = run_cli("compile", str(path), "-o", "-", "--seed", "7", *sets)
    assert result.exit_code == 0, result.output
    assert "def __init__(self, seed: int = 2, opt: int = 3, names: int = 4, " in result.stdout
    assert "seed: int | None = 7" in result.stdout               # --seed is still compile's
    summary = run_cli("summary", str(path), "--format", "json", *sets)
    assert summary.exit_code == 0 and json.loads(summary.stdout)["total_params"] == 5 * total
    dot = tmp_path / "m.dot"
    assert run_cli("render", str(path), "-o", str(dot), *sets).exit_code == 0
    assert f"Linear 4→{total}" in dot.read_text()
    onnx_file = tmp_path / "m.onnx"
    result = run_cli("compile", str(path), "--target", "onnx", "-o", str(onnx_file), "--dump-ir", *sets)
    assert result.exit_code == 0 and onnx_file.exists(), result.output
    assert f"[B, {total}]" in result.stderr                     # the IR --dump-ir prints


def test_set_self_is_an_unknown_parameter_not_a_crash(tmp_path):
    path = tmp_path / "options.dl"
    path.write_text(OPTIONS_SPEC)
    for command in (["compile", "-o", "-"], ["summary"], ["render", "-o", str(tmp_path / "m.dot")]):
        result = run_cli(command[0], str(path), *command[1:], "--set", "self=1")
        assert result.exit_code == 1 and "error[E0305]: `M` has no parameter `self`" in result.stderr


def test_the_api_reaches_every_parameter_through_params(tmp_path):
    path = tmp_path / "options.dl"
    path.write_text(OPTIONS_SPEC)
    prog = dslc.load(str(path))
    given_ = {k: 2 for k in OPTIONS}
    total = 2 * len(OPTIONS)
    net = prog.build("M", seed=0, params=given_)
    assert net.fc.out_features == total
    compiled = run_cli("compile", str(path), "-o", "-", *[a for k in OPTIONS for a in ("--set", f"{k}=2")])
    same = exec_source(compiled.stdout, "<names test: compiled>").build("M", seed=0)
    assert all((a == b).all() for a, b in zip(net.state_dict().values(), same.state_dict().values()))
    assert prog.summary("M", params=given_).total_params == 5 * total
    assert f"Linear 4→{total}" in prog.diagram("M", params=given_)
    assert prog.graph("M", params={"name": 3}).params["name"] == 3
    assert prog.optimized("M", 1, params=given_).graph.params["opt"] == 2
    assert "names: int = 2" in prog.source(params=given_)
    assert prog.state("M", params=given_)["fc.weight"].shape == (total, 4)
    assert prog.build("M", name=5).fc.out_features == len(OPTIONS) + 4   # keywords still work


def test_the_api_refuses_a_parameter_given_twice():
    prog = dslc.load(str(pathlib.Path(__file__).parent.parent / "specs" / "mlp.dl"))
    with pytest.raises(TypeError, match="`hidden` given both"):
        prog.build("MLP", params={"hidden": 4, "classes": 2}, hidden=4)
    with pytest.raises(TypeError, match="takes a dict"):
        prog.build("MLP", params=[("hidden", 4)])
    assert prog.build("MLP", params={"hidden": 4}, classes=2).state_dict()["5.weight"].shape == (2, 4)


# ---------------------------------------------------------------- names by place in the source


def _keys(prog, model: str) -> list[str]:
    return [k for k in prog.build(model, seed=0).state_dict() if k.endswith(".weight")]


def test_a_layer_is_named_by_its_place_in_the_source_whatever_the_branches_took(tmp_path):
    """The skip's layers are `fc2`/`norm2` where they are built, and the layer after them `fc3` in
    both uses: a name does not move with what a specialization took (frontend/sites.py)."""
    prog = load_spec(tmp_path, "block Res(out: int, proj: bool = false) {\n    input x\n"
                               "    main = x -> Linear(out) -> LayerNorm()\n"
                               "    skip = (x -> Linear(out) -> LayerNorm()) if proj else x\n"
                               "    output (main + skip) -> Linear(out)\n}\n"
                               "model M {\n    input x: [B, 4]\n    Res(4) as a\n    Res(4, proj=true) as b\n}\n")
    assert _keys(prog, "M") == ["a.fc1.weight", "a.norm1.weight", "a.fc3.weight", "b.fc1.weight",
                                "b.norm1.weight", "b.fc2.weight", "b.norm2.weight", "b.fc3.weight"]
    assert [n for n in re.findall(r"^class (\w+)\(", prog.source(), re.M)] == ["Res", "M"]   # one class


def test_the_arms_of_an_if_are_numbered_from_the_same_place(tmp_path):
    prog = load_spec(tmp_path, "block L(pre: bool) {\n    input x\n    if pre {\n"
                               "        h = x -> LayerNorm() -> Linear(4)\n    } else {\n"
                               "        h = x -> Linear(4) -> LayerNorm()\n    }\n    output (h -> Linear(4)) + x\n}\n"
                               "model M {\n    input x: [B, 4]\n    L(true) as a\n    L(false) as b\n}\n")
    assert _keys(prog, "M") == ["a.norm.weight", "a.fc1.weight", "a.fc2.weight",
                                "b.fc1.weight", "b.norm.weight", "b.fc2.weight"]


def test_layers_without_a_site_of_their_own_are_not_numbered_by_sites(tmp_path):
    """A bound name (`lin = Linear(4)`) and an `as` name are the user's, and a layer passed to a block
    is made there: none of these is a site, so the last Linear is the model's only one (`fc`). A loop
    makes several layers at one site: its stem is numbered by count, as before."""
    prog = load_spec(tmp_path, "block Wrap(layer) {\n    input x\n    output (x -> layer -> Linear(4)) + x\n}\n"
                               "model M {\n    input x: [B, 4]\n    lin = Linear(4)\n"
                               "    h = x -> lin -> Linear(4) as named -> Wrap(Linear(4))\n    output h -> Linear(4)\n}\n"
                               "model N {\n    input x: [B, 4]\n    h = x\n"
                               "    for i in [1, 2] {\n        h = h -> Linear(4)\n    }\n    output (h -> Linear(4)) + x\n}\n")
    assert _keys(prog, "M") == ["lin.weight", "named.weight", "wrap.fc1.weight", "wrap.fc2.weight", "fc.weight"]
    assert _keys(prog, "N") == ["fc1.weight", "fc2.weight", "fc3.weight"]
