"""A list parameter's items are sizes in the generated class (issue #14 item 3, no baked parameters).

`hidden: list[int] = [32, 64, 128, 256, 512]` used to be fixed whole: sizes computed from its items
were numbers (`nn.Linear(2048, latent)`), and the class refused any other list. Its items are now
sizes like any int parameter (ir/dims.py Item), so the class reads `nn.Linear(4 * hidden[-1], latent)`
and takes other lists of the length it was compiled for; a decision on an item (`mults[0] == 1`) is
checked like a decision on any parameter. Where a size would read three or more items (DenseNet's
widths after its blocks), the list stays fixed, saying so.

The references: the hand-written twins of tests/zoo_*.py at other lists, and dslc's own build at
those values, which the twins pin down.
"""
from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_specs import as_list, checker_inputs, make_inputs, program
from zoo_sequence import ConvVAETwin

import dslc
from dslc.backends.pymodule import exec_source
from dslc.ir.dims import Item, Poly, Size
from dslc.ir.pyliteral import Printer

torch.set_num_threads(1)


def _items(name: str, values: list) -> list:
    return [Size(v, Poly.atom(Item(name, i))) for i, v in enumerate(values)]


def _printer(length: int) -> Printer:
    return Printer(lambda a: f"{a.name}[{-1 if a.index == length - 1 else a.index}]")


def test_every_item_in_order_prints_as_the_list():
    items = _items("hidden", [8, 16, 32])
    assert _printer(3).value(items) == "hidden"
    assert _printer(3).value(items[::-1]) == "hidden[::-1]"
    assert _printer(3).value(items[:2]) == "[hidden[0], hidden[1]]"    # not every item: written out
    assert _printer(3).value([items[0], items[2]]) == "[hidden[0], hidden[-1]]"


def _same(mine: torch.nn.Module, theirs: torch.nn.Module, inputs: list) -> None:
    """Bit-equal: the state (seeded alike) and the forward."""
    mine, theirs = mine.eval(), theirs.eval()
    want, got = theirs.state_dict(), mine.state_dict()
    assert list(got) == list(want)
    for key, value in want.items():
        assert torch.equal(got[key], value), key
    with torch.no_grad():
        for g, w in zip(as_list(mine(*inputs)), as_list(theirs(*inputs))):
            assert torch.equal(g, w)


# ---------------------------------------------------------------- ConvVAE: free but for its length


def test_the_conv_vae_class_takes_other_widths_like_its_twin():
    prog = program("conv_vae.dl")
    source = prog.source(["ConvVAE"])
    assert "nn.Linear(4 * hidden[-1], latent)" in source and "Encoder(channels, hidden)" in source
    assert "2048" not in source and "Encoder(channels, [32" not in source
    module = exec_source(source, "<conv_vae>")
    for hidden in ([8, 8, 16, 16, 24], [4, 12, 6, 20, 10]):
        torch.manual_seed(0)
        mine = module.ConvVAE(latent=16, hidden=hidden)
        # the twin (AntixK's VanillaVAE layout) at the same widths: the same weights' shapes, in order
        twin = ConvVAETwin(latent=16, hidden=hidden)
        assert [tuple(p.shape) for p in mine.parameters()] == [tuple(p.shape) for p in twin.parameters()]
        x = torch.rand(2, 3, 64, 64)
        assert [o.shape for o in mine.eval()(x)] == [o.shape for o in twin.eval()(x)]
        _same(mine, prog.build("ConvVAE", seed=0, latent=16, hidden=hidden), [x])


def test_the_conv_vae_class_refuses_another_length():
    module = program("conv_vae.dl").module(["ConvVAE"])
    try:
        module.ConvVAE(hidden=[8, 16, 32, 64])
    except ValueError as e:
        assert str(e) == "ConvVAE was compiled for len(hidden) == 5; compile it again with `dslc compile --set`"
    else:
        raise AssertionError("a list of another length was taken")


# ---------------------------------------------------------------- DDPM: decisions on items


def test_the_ddpm_class_takes_other_multipliers_its_decisions_allow():
    prog = program("ddpm.dl")
    module = prog.module(["DDPMUNet"])
    params = {"base": 8, "groups": 4, "mults": [1, 3, 3]}
    torch.manual_seed(0)
    mine = module.DDPMUNet(**params)
    theirs = prog.build("DDPMUNet", seed=0, **params)
    torch.manual_seed(1)
    _same(mine, theirs, make_inputs(checker_inputs(prog, "DDPMUNet", **params), "cpu"))
    # which blocks add a 1×1 shortcut was decided by comparing items: other outcomes are refused
    for mults, fact in (([2, 2, 2], "mults[0] == 1"), ([1, 1, 1], "mults[1] != 1"),
                        ([1, 2, 4], "mults[-1] == mults[1]"), ([1, 2], "len(mults) == 3")):
        try:
            module.DDPMUNet(base=8, groups=4, mults=mults)
        except ValueError as e:
            assert f"DDPMUNet was compiled for {fact};" in str(e)
        else:
            raise AssertionError(f"mults={mults} was taken")


# ---------------------------------------------------------------- DenseNet: too many items in one size


def test_a_list_whose_sizes_would_read_many_items_stays_fixed_saying_why():
    source = program("densenet.dl").source(["DenseNet121"])
    init = source.split("class DenseNet121(")[1]
    assert "if blocks != [6, 12, 24, 16]:" in init
    assert "# `blocks` stays fixed: sizes computed from its items would read 3 or more of them" in init
    assert "blocks[" not in source


# ---------------------------------------------------------------- property: sound for any list

SPEC = '''block Pair(a: int, b: int) {{
    input x
    h = x -> Linear(a) -> ReLU()
    output (h -> Linear(b)) if a != b else h + (h -> Linear(a))
}}

model M(widths: list[int] = {default}) {{
    input x: [B, 3]
    h = x -> Linear(widths[0] * 2)
    if widths[1] > widths[0] {{
        h = h -> ReLU()
    }}
    h = h -> Pair(widths[1], widths[2])
    for w in widths {{
        h = h -> Linear(w)
    }}
    output h -> Linear(widths[-1] + widths[0])
}}
'''

WIDTHS = st.lists(st.integers(1, 6), min_size=3, max_size=3)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(default=WIDTHS, other=st.one_of(WIDTHS, st.lists(st.integers(1, 6), min_size=2, max_size=4)))
def test_a_class_with_list_items_builds_what_dslc_builds_or_refuses(tmp_path, default, other):
    """Compiled at one list, the class at another either refuses it (ValueError) or builds exactly
    what dslc builds at that list."""
    path = tmp_path / "items.dl"
    path.write_text(SPEC.format(default=default), encoding="utf-8")
    prog = dslc.load(str(path))
    module = prog.module(["M"])
    torch.manual_seed(0)
    try:
        mine = module.M(widths=other)
    except ValueError:
        assert other != default    # the list it was compiled for is always taken
        return
    theirs = prog.build("M", seed=0, widths=other)
    _same(mine, theirs, [torch.rand(2, 3)])


def test_the_property_spec_takes_other_lists(tmp_path):
    """The property above is not vacuous: compiled at [2, 4, 5], the class takes [1, 3, 6]."""
    path = tmp_path / "items.dl"
    path.write_text(SPEC.format(default=[2, 4, 5]), encoding="utf-8")
    prog = dslc.load(str(path))
    source = prog.source(["M"])
    assert "nn.Linear(3, widths[0] * 2)" in source and "if len(widths) < 3:" in source
    torch.manual_seed(0)
    mine = prog.module(["M"]).M(widths=[1, 3, 6])
    _same(mine, prog.build("M", seed=0, widths=[1, 3, 6]), [torch.rand(2, 3)])


def test_a_model_parameter_called_len_keeps_the_list_whole(tmp_path):
    """`len(widths)` would call the int a parameter `len` is: that model checks the whole list."""
    path = tmp_path / "lens.dl"
    path.write_text("model M(len: int = 2, widths: list[int] = [3, 4]) {\n    input x: [B, 2]\n"
                    "    h = x -> Linear(widths[0]) -> Linear(widths[1] + len)\n    output h + h\n}\n", encoding="utf-8")
    prog = dslc.load(str(path))
    source = prog.source(["M"])
    assert "len(" not in source and "if widths != [3, 4]:" in source
    torch.manual_seed(0)
    mine = prog.module(["M"]).M(len=3)
    _same(mine, prog.build("M", seed=0, len=3), [torch.rand(2, 2)])


def test_a_class_walking_a_list_checks_it_has_the_items_it_reads_by_place(tmp_path):
    """`max(widths[2], widths[3])` outside the loop needs four items: the class says so (an
    IndexError was what a shorter list got)."""
    path = tmp_path / "walk.dl"
    path.write_text("model M(widths: list[int] = [2, 3, 2, 1]) {\n    input x: [B, 3]\n"
                    "    h = x -> Linear(max(widths[2], widths[3]))\n"
                    "    for w in widths {\n        h = h -> Linear(w)\n    }\n    output h\n}\n", encoding="utf-8")
    prog = dslc.load(str(path))
    module = prog.module(["M"])
    try:
        module.M(widths=[4, 2, 2])
    except ValueError as e:
        assert str(e) == "M needs len(widths) >= 4"
    else:
        raise AssertionError("a list of three was taken")
    torch.manual_seed(0)
    mine = module.M(widths=[1, 5, 3, 2, 6])   # longer is fine: the loop walks every item
    _same(mine, prog.build("M", seed=0, widths=[1, 5, 3, 2, 6]), [torch.rand(2, 3)])


def test_a_broadcast_of_a_size_that_is_1_is_a_decision(tmp_path):
    """`h + (h -> Linear(k))` with k == 1 broadcasts to `h`'s width; at k == 4 and a == 1 it would
    broadcast the other way, and the layer after it read another width. The class was compiled for
    k == 1 and says so (it used to build a model dslc does not build). Older than list items."""
    path = tmp_path / "broadcast.dl"
    path.write_text("model M(a: int = 2, k: int = 1) {\n    input x: [B, 3]\n    h = x -> Linear(a)\n"
                    "    h = h + (h -> Linear(k))\n    output h -> Linear(5)\n}\n", encoding="utf-8")
    prog = dslc.load(str(path))
    module = prog.module(["M"])
    try:
        module.M(a=1, k=4)
    except ValueError as e:
        assert str(e).startswith("M was compiled for k == 1;")
    else:
        raise AssertionError("k == 4 was taken")
    torch.manual_seed(0)
    _same(module.M(a=6), prog.build("M", seed=0, a=6), [torch.rand(2, 3)])
    # a size broadcast with the number 1 decides nothing: `[B, 1]` with `[B, out]` is `out` for any out
    path.write_text("model N(out: int = 4) {\n    input x: [B, 3]\n    h = x -> Linear(out)\n"
                    "    output h + (h -> Linear(1))\n}\n", encoding="utf-8")
    assert "compiled for" not in dslc.load(str(path)).source(["N"])


def test_one_item_keys_its_layer_as_every_longer_list_does(tmp_path):
    """The class walking `widths` keys its layers `0, 1, ...` for any list; dslc's own build of a
    one-item list named its one layer `fc` (a chain of one was no nn.Sequential), so the state-dict
    keys differed. A list loop's one element is a chain now."""
    path = tmp_path / "one.dl"
    path.write_text("model M(widths: list[int] = [4, 2]) {\n    input x: [B, 3]\n    h = x\n"
                    "    for w in widths {\n        h = h -> Linear(w)\n    }\n    output h\n}\n", encoding="utf-8")
    prog = dslc.load(str(path))
    torch.manual_seed(0)
    mine = prog.module(["M"]).M(widths=[5])
    theirs = prog.build("M", seed=0, widths=[5])
    assert list(theirs.state_dict()) == ["0.weight", "0.bias"]
    _same(mine, theirs, [torch.rand(2, 3)])


def test_the_by_hand_runner_finds_a_class_that_builds_something_else(monkeypatch, capsys):
    """tools/other_values.py runs this file's property on many random specs; here on a few, and on a
    class planted to build another width than dslc does, which it must report."""
    import os
    import sys

    from support import ROOT
    sys.path.append(os.path.join(ROOT, "tools"))
    import other_values
    assert other_values.main(["--n", "3", "--seed", "0", "--values", "2"]) == 0
    real = dslc.api.Program.module

    def planted(self, *args, **kwargs):
        module = real(self, *args, **kwargs)
        built = module.M
        module.M = lambda widths: torch.nn.Sequential(built(widths=widths), torch.nn.Linear(1, 1))
        return module
    monkeypatch.setattr(dslc.api.Program, "module", planted)
    assert other_values.main(["--n", "2", "--seed", "0", "--values", "2"]) == 1
    assert "=== spec" in capsys.readouterr().out
