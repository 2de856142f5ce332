"""Write docs/codegen.md: what dslc's generated PyTorch looks like, ResNet-50 and GPT-2 next to
their hand-written twins, and the line counts of every zoo model against its twin.

    python tools/gen_codegen.py            # rewrite docs/codegen.md
    python tools/gen_codegen.py --check    # exit 1 when docs/codegen.md is stale

The code and the counts come from compiling specs/ now and from the twins in tests/
(tools/codegen_size.py), so the page goes stale whenever the code generator changes:
run this again then. tests/test_codegen_size.py holds every model to 1.3× its twin.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import codegen_size  # noqa: E402
from common import write_or_check  # noqa: E402

OUT = os.path.join(ROOT, "docs", "codegen.md")
LIMIT = 1.3
# the models shown whole: (spec, model, title, whose layout the twin follows)
SHOWN = [("resnet.dl", "ResNet50", "ResNet-50", "torchvision's `resnet.py`"),
         ("gpt.dl", "GPT", "GPT-2 small", "nanoGPT's `model.py`")]

INTRO = """\
# Generated PyTorch next to hand-written PyTorch

Written by `tools/gen_codegen.py` from [specs/](../specs/), the code generator and the
hand-written twins in [tests/](../tests/): edit those, not this file.

`dslc compile` writes one file per spec that imports only torch, meant to be read and
kept. Its shape follows from what the compiler knows and a reader wants:

- **One class per model and per block.** A model's constructor takes the model's
  parameters, with the values it was compiled for as defaults; a block's takes the
  sizes that differ between its uses. Sizes are written as the expressions they came
  from (`nn.Linear(in_features, 3 * dim)`), not as numbers. A block's uses that differ
  in structure are one class that branches in its constructor and forward on the spec's
  own condition, as torchvision's BasicBlock chooses its downsample (`if stride != 1 or
  in_channels != out`), and a block that makes such blocks leaves the choice to them (a
  stage takes any stride and width); so is a model over its `bool`
  parameters, compiled each way (up to three of them, every combination):
  `self.fc = nn.Linear(2 * hidden, classes) if bidirectional else nn.Linear(hidden, classes)`
  and `if self.bidirectional:` in forward, with no guard left for the flag. A value the
  spec refuses keeps a guard, whose message gives the spec's error. A `str`, `bool` or
  `none` parameter passed to layers as it is, where no value the layers take changes what
  they output, is passed through as a person writes it (`nn.Upsample(scale_factor=2,
  mode=mode)`, `self.mode` in forward), any number of them; only the values the layers
  refuse are refused (`M needs mode in ("nearest", "bilinear", "bicubic") (m.dl:3)`).
- **Names from the spec.** A layer's attribute is its `as` name, or one made from its
  kind (`conv1`, `bn1`), and the attributes make the state-dict keys.
- **PyTorch's containers.** A model or block that is a chain of unnamed layers is an
  `nn.Sequential` subclass of them, keyed by place as PyTorch keys one (`1.weight` for
  `nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), ...)`); a loop that applies one
  block or layer per pass is an `nn.ModuleList` built in a comprehension, with a loop in
  `forward` (DenseNet's dense block too: `DenseLayer(num_features + i * growth, growth)
  for i in range(layers)`, each result concatenated to the running value). Elements named
  by a template (`as "encoder_layer_{i}"`) are added with `add_module` in a loop, as
  torchvision builds ViT's `encoder.layers` and DenseNet's `denseblock1.denselayer1`.
  A `for` over a list parameter in such a chain is a Python loop that appends the layers,
  the list a constructor argument, as torchvision's `make_layers` builds VGG
  (`for width, convs in config:`, one `VGGFeatures` class for all four VGGs); every size a later
  layer reads is followed as Python (`in_channels, size = width, size // 2`, then
  `nn.Linear(in_channels * size ** 2, hidden)` after `Flatten()`). So is an
  unnamed `repeat depth { Linear(width) Sigmoid() }` that unrolls in such a chain:
  `for _ in range(depth):` appends a pass's layers and `in_features = width` follows the
  running size, so `depth` stays an argument (0 included) and a block that loops so
  leaves its caller's count live too (`Stage(16, depth)`).
- **A list's items are sizes.** What is computed from an `int` list's items stays an expression
  of them (`nn.Linear(4 * hidden[-1], latent)` in specs/conv_vae.dl's `ConvVAE`, which passes
  `hidden` on whole to the `Encoder` and `Decoder` that walk it), and the class checks only what it
  was compiled for: the list's length (`len(hidden) != 5`) where it does not walk the list in a loop
  of its own, a decision on an item (`mults[0] == 1`), and, in a class that walks the list and reads
  items by place besides, that it has that many. A size that would read three items or more
  (DenseNet's widths after its blocks) keeps the list fixed, with a comment saying so
  ([the language reference](language.md#compile-time-evaluation) has the rules).
  `tools/other_values.py --n 200 --seed 1` builds such classes at other lists on random specs and
  reports any that takes a list dslc refuses or builds something else (tests/test_list_items.py
  runs one spec so under hypothesis).
- **A straight-line `forward`.** One statement per operation of the spec, in the spec's
  order, each result bound to a local (`h = self.conv1(x)`), where a person nests calls
  (`self.relu(self.bn1(self.conv1(x)))`). The generated code is longer for it, but every
  line is one step of the spec, and a traceback points at it.
- **Where Python does not say it yet.** Where uses of a block differ by a count outside a
  chain of layers (a different number of repeats) or could not share one class, the generator writes one
  class for each, numbered (`Stage2`) and with a docstring saying what it was built
  for, and writes repeats out one line per iteration. These are most of the
  difference from the twins in the table below.
- **Requirements and the values compiled for.** The constructor checks its arguments as a
  hand-written module would. What the spec itself needs (a check whose other outcome is
  an error: a concat's other sizes, a reshape's element count) reads as a requirement
  with the spec's line, `DDPMUNet needs size % 4 == 0 (ddpm.dl:98)` (the skip connections
  of two halvings), `Translator needs emb_size % 2 == 0 (translator.dl:28)` (sines and
  cosines in pairs). A structure chosen from a value (a repeat count, a branch, a list's
  layers) says `compiled for depth == 12` and how to compile again. A condition on one
  size that repeats with a period is written as a remainder, `size % 4 == 0`, not as the
  floor divisions it came from, and one another condition implies is left out.

Each class's docstring names the spec line it comes from. What the code computes is
proven elsewhere: every zoo model against its twin (`tests/test_specs.py`), and the
generated classes at other parameter values (`tests/test_generated_params.py`).

## How lines are counted

`tools/codegen_size.py` counts, and `tests/test_codegen_size.py` holds every zoo model
to at most 1.3× its twin's lines. The rule is the same on both sides:
"""


def rule() -> str:
    """The counting rule: the bullet list of tools/codegen_size.py's docstring (stated once)."""
    paragraphs = codegen_size.__doc__.split("\n\n")
    return next(p for p in paragraphs if p.startswith("- ")) + "\n"


def shown(case, source: str, title: str, layout: str) -> list[str]:
    generated = codegen_size.generated_code(source, case.model)
    twin = codegen_size.twin_code(case.twin)
    where = ", ".join(f"`{s.label}`" for s in twin.files)
    return [f"## {title}", "",
            f"[specs/{case.file}](../specs/{case.file}), model `{case.model}`: **{generated.lines}** code lines "
            f"generated, **{twin.lines}** in the twin ({generated.lines / twin.lines:.2f}×).", "",
            f"### Generated (`dslc compile specs/{case.file}`)", "", "```python", generated.text.rstrip(), "```", "",
            f"### The twin, in {layout} layout ({where})", "", "```python", twin.text.rstrip(), "```", ""]


def table(sizes: list) -> list[str]:
    lines = ["## Every zoo model", "",
             "Code lines counted as above, for one `dslc compile` of each spec file at -O0 (the",
             "default), and the ratio of the two.", "",
             "| spec | model | generated | twin | ratio | ≤ 1.3× |", "| --- | --- | ---: | ---: | ---: | :---: |"]
    for s in sizes:
        within = "yes" if s.generated * 10 <= s.twin * 13 else "**no**"
        lines.append(f"| [{s.file}](../specs/{s.file}) | `{s.model}` | {s.generated} | {s.twin} | "
                     f"{s.ratio:.2f} | {within} |")
    ok = sum(1 for s in sizes if s.generated * 10 <= s.twin * 13)
    total_generated, total_twin = sum(s.generated for s in sizes), sum(s.twin for s in sizes)
    lines += ["", f"{ok} of {len(sizes)} models are within 1.3× of their twins; all together, "
                  f"{total_generated:,} generated lines against {total_twin:,} ({total_generated / total_twin:.2f}×).", ""]
    return lines


def spec_order(case) -> tuple:
    """Files by name, models in the order the file declares (or imports) them."""
    import dslc
    return case.file, dslc.load(os.path.join(ROOT, "specs", case.file)).models.index(case.model)


def text() -> str:
    cases = codegen_size.zoo_cases()
    sources = codegen_size.compile_zoo(cases)
    out = [INTRO, rule()]
    for file, model, title, layout in SHOWN:
        case = next(c for c in cases if c.file == file and c.model == model)
        out += shown(case, sources[case.id], title, layout)
    out += table([codegen_size.measure(c, sources[c.id]) for c in sorted(cases, key=spec_order)])
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(write_or_check(OUT, text()))
