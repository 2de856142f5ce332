"""`dslc sample`: draw samples from a trained plan's model.

The model is rebuilt from the `.dl` file (the plan's generated PyTorch, as `dslc train`
builds it) and given the run's weights: `checkpoints/best.safetensors`, or else the
newest epoch checkpoint. What it is fed depends on its input:

- a float input `[B, ...]` (a GAN's generator, a VAE's decoder): seeded standard normal
  noise. Outputs the size of one example of the data's `x` become an image grid (PNG),
  mapped from the data's value range (`scale`, default [0, 1]) to [0, 1]; other
  outputs are saved as a `.npy` array;
- an int64 input `[B, T]` over a data set with a vocabulary (`shakespeare`'s characters, or
  the tokenizer a `text(...)` run keeps as tokenizer.json): autoregressive sampling.
  Starting from the prompt, encoded, the model reads the last `context` tokens, the logits
  at the last position are divided by the temperature, and the next token is drawn from
  their softmax with a seeded generator; the tokens are decoded back into text.

Every random draw comes from one CPU generator seeded by `seed`, so the same seed gives
the same samples.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass

import torch

from ..backends.output import is_stream, write_output
from ..catalog.text import Codec
from ..diagnostics import Diagnostic, DslcError
from ..ir.dims import known_value, plain
from . import checkpoint
from . import data as data_mod
from .devices import run_device
from .restore import run_weights
from .rundir import latest_run, pyplot
from .trainer import plan_module, plan_source
from .weights import fit_state_dict


@dataclass
class SampleOptions:
    run: str | None = None          # the run directory (default: the latest runs/PLAN*)
    model: str | None = None        # the plan's name of the model (or its declaration's)
    n: int | None = None            # samples (default 64 images, 1 text)
    length: int = 400               # characters to generate per text sample
    temperature: float = 1.0
    seed: int = 0
    prompt: str | None = None       # the text a language model starts from (default "\n")
    output: str | None = None       # default RUN/samples.png, .txt or .npy
    sets: tuple = ()                # --set as given to `dslc train`
    device: str | None = None


GRID_TILE = 64      # images are enlarged by a whole factor to about this many pixels a side
GRID_PAD = 2        # pixels between (and around) the images of a grid


def draw(plan, path: str, options: SampleOptions, out=print) -> dict:
    """Sample the checked plan `plan` of `path` (`dslc.api.sample` loads and checks it) as the
    run in `options.run` left it. Returns
    {"kind": "image" | "text" | "array", "path": the file written, "model": its plan name,
    "name": how to call it in messages, "weights": the weights file, "shape" (images, arrays)
    and "text" (the samples, text)}."""
    device = run_device(options.device)
    run = options.run or latest_run(os.path.join("runs", plan.name))
    if run is None or not os.path.isdir(run):
        where = run or os.path.join("runs", plan.name)
        raise DslcError(Diagnostic("E0603", f"there is no run of the plan `{plan.name}` at {where}", file_name=where,
                                   help=f"train it first (`dslc train {path} --plan {plan.name}`), or give its "
                                        "folder with --run"))
    key = choose_model(plan, options.model)
    weights_path, weights = _weights(run)
    model = _build(plan, key, path, weights, weights_path).to(device).eval()
    decl, _, graph = plan.models[key]
    if len(graph.inputs) != 1:
        raise DslcError(Diagnostic("E0209", f"`{key}` has {len(graph.inputs)} inputs; `dslc sample` feeds a model "
                                   "with one (noise, or a text's characters)", file_name=path,
                                   help=_models_help(plan)))
    in_type = graph.type_of(graph.inputs[0][1])
    generator = torch.Generator().manual_seed(int(options.seed))
    result = {"model": key, "name": decl.name if key == "model" else key, "weights": weights_path}
    with torch.no_grad():
        if in_type.dtype == "int64":
            result.update(_text(plan, path, model, in_type, options, generator, run, device))
        elif in_type.dtype.startswith("float") or in_type.dtype.startswith("bfloat"):
            if key in data_fed(plan):
                out(f"note: `{result['name']}` reads the data's fields in the plan; here it is fed noise")
            result.update(_noise(plan, model, in_type, options, generator, run, device))
        else:
            raise DslcError(Diagnostic("E0310", f"`{key}`'s input is {in_type}: `dslc sample` feeds noise to a float "
                                       "input, or characters to an int64 one", file_name=path))
    return result


# ---------------------------------------------------------------------- the plan, the model, its weights

def data_fed(plan) -> set:
    """The plan's models that some step applies to a tensor computed from the batch without
    passing through another model (`D(flatten(batch.x))`, or `out` itself)."""
    fed = set()
    for step in plan.steps:
        g = step.graph
        from_batch = {ref.node for _, ref in g.inputs}
        for node in g.nodes.values():   # a topological order
            is_model = node.kind == "call" and node.instance in step.models
            reads_batch = any(ref.node in from_batch for ref in node.inputs)
            if is_model and reads_batch and step.models[node.instance] in plan.models:   # not a momentum target
                fed.add(step.models[node.instance])
            elif not is_model and reads_batch:
                from_batch.add(node.id)
    return fed


def choose_model(plan, name: str | None) -> str:
    """The plan's name of the model to sample: `name` (a plan name, or a declaration's name
    when just one model of the plan has it), the plan's only model, or else the only one
    whose one input is float and is not computed from the batch (a generator, a decoder)."""
    models = plan.models
    if name is not None:
        if name in models:
            return name
        by_decl = [k for k, (decl, _, _) in models.items() if decl.name == name]
        if len(by_decl) == 1:
            return by_decl[0]
        raise DslcError(Diagnostic("E0209", f"the plan `{plan.name}` has no model `{name}`", file_name=_file(plan),
                                   help=_models_help(plan)))
    if len(models) == 1:
        return next(iter(models))
    fed = data_fed(plan)
    found = [k for k, (_, _, g) in models.items() if len(g.inputs) == 1 and k not in fed
             and g.type_of(g.inputs[0][1]).dtype.startswith("float")]
    if len(found) == 1:
        return found[0]
    why = "none of them" if not found else f"{len(found)} of them ({', '.join(found)})"
    raise DslcError(Diagnostic("E0209", f"the plan `{plan.name}` has {len(models)} models and {why} takes noise: "
                               "choose one with --model", file_name=_file(plan), help=_models_help(plan)))


def _models_help(plan) -> str:
    parts = []
    for k, (decl, _, g) in plan.models.items():
        ins = ", ".join(f"{n}: {g.type_of(r)}" for n, r in g.inputs)
        parts.append(f"{k} ({decl.name}({ins}))" if k != decl.name else f"{k}({ins})")
    return "models: " + "; ".join(parts)


def _file(plan) -> str:
    span = getattr(plan.decl, "span", None)
    return span.file.name if span is not None else plan.name


def _weights(run: str) -> tuple[str, dict]:
    """(file, state) of the run's best weights, or of its newest checkpoint."""
    found = run_weights(run)
    return found.path, found.state


def _build(plan, key: str, path: str, weights: dict, weights_path: str) -> torch.nn.Module:
    """The plan's model `key` (as `dslc train` builds it) holding `weights`."""
    module = plan_module(plan, plan_source(plan, path))
    model = module.MODELS[key]()
    if len(plan.models) > 1:
        weights = checkpoint.under(weights, key + ".")
    fit = fit_state_dict(model.state_dict(), weights)
    if not fit.exact:
        raise DslcError(Diagnostic("E0602", f"the weights in {weights_path} do not fit the model `{key}` of the plan "
                                   f"`{plan.name}` (was the .dl file changed since the run?)", file_name=weights_path,
                                   notes=fit.notes(),
                                   help="give the run's --set again, or sample another run with --run"))
    model.load_state_dict(weights)
    return model


# ---------------------------------------------------------------------- noise in: images or arrays

def _noise(plan, model, in_type, options: SampleOptions, generator, run: str, device) -> dict:
    rest = _concrete(in_type.shape[1:])
    if rest is None:
        raise DslcError(Diagnostic("E0311", f"the model's input is {in_type}: noise needs every size but the "
                                   "batch's known", file_name=_file(plan)))
    n = options.n or 64
    z = torch.randn((n, *rest), generator=generator)
    y = _first(model(z.to(device, _float_dtype(model))))
    y = y.detach().float().cpu()
    image = _image_shape(plan, y[0].numel())
    if image is None:
        target = _output(options.output, run, ".npy", force=True)
        import numpy as np
        buf = io.BytesIO()
        np.save(buf, y.numpy())
        write_output(target, buf.getvalue())
        return {"kind": "array", "path": target, "shape": list(y.shape)}
    lo, hi = _scale(plan)
    images = ((y.reshape(n, *image) - lo) / (hi - lo)).clamp(0, 1)
    target = _output(options.output, run, ".png")
    write_grid(images, target)
    return {"kind": "image", "path": target, "shape": list(images.shape)}


def _float_dtype(model) -> torch.dtype:
    p = next(iter(model.parameters()), None)
    return p.dtype if p is not None and p.dtype.is_floating_point else torch.float32


def _first(y):
    while isinstance(y, (tuple, list)):
        y = y[0]
    return y


def _concrete(dims) -> list | None:
    values = [known_value(d) for d in dims]
    return None if any(v is None for v in values) else [int(v) for v in values]


def _image_shape(plan, size: int) -> tuple | None:
    """[C, H, W] of one example of the data's `x`, when `size` values fill it."""
    fields = plan.data.fields or {}
    x = fields.get(plan.data.entry.input_field or "x") or fields.get("x")
    dims = _concrete(x.shape[1:]) if x is not None else None
    if not dims or math.prod(dims) != size:
        return None
    if len(dims) == 3 and dims[0] in (1, 3):
        return tuple(dims)
    if len(dims) == 2:
        return (1, *dims)
    if len(dims) == 1 and math.isqrt(size) ** 2 == size:
        return (1, math.isqrt(size), math.isqrt(size))
    return None


def _scale(plan) -> tuple[float, float]:
    scale = plan.data.args.get("scale")
    if scale is None or len(scale) != 2:
        return 0.0, 1.0
    lo, hi = (float(plain(v)) for v in scale)
    return (lo, hi) if hi != lo else (0.0, 1.0)


def grid_size(n: int, height: int, width: int) -> tuple[int, int]:
    """(height, width) in pixels of the grid of n images of height × width."""
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    zoom = max(1, GRID_TILE // max(height, width))
    return rows * (height * zoom + GRID_PAD) + GRID_PAD, cols * (width * zoom + GRID_PAD) + GRID_PAD


def write_grid(images: torch.Tensor, path: str) -> None:
    """[N, C, H, W] images in [0, 1] as one picture: ceil(sqrt(N)) per row, each enlarged by
    a whole factor to about GRID_TILE pixels, GRID_PAD white pixels between them."""
    import numpy as np
    plt = pyplot()
    n, _, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    zoom = max(1, GRID_TILE // max(h, w))
    canvas = np.ones(grid_size(n, h, w) + (3,), dtype=np.float32)
    big = images.repeat_interleave(zoom, 2).repeat_interleave(zoom, 3).expand(n, 3, h * zoom, w * zoom)
    pixels = big.permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, col = divmod(i, cols)
        top, left = GRID_PAD + r * (h * zoom + GRID_PAD), GRID_PAD + col * (w * zoom + GRID_PAD)
        canvas[top:top + h * zoom, left:left + w * zoom] = pixels[i]
    buf = io.BytesIO()
    fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    try:
        plt.imsave(buf, canvas, format=fmt)
    except ValueError as e:  # a format matplotlib cannot write
        raise DslcError(Diagnostic("E0902", f"cannot write {path}: {e}", file_name=path)) from None
    write_output(path, buf.getvalue())


# ---------------------------------------------------------------------- characters in: text

def _text(plan, path: str, model, in_type, options: SampleOptions, generator, run: str, device) -> dict:
    vocab = _vocabulary(plan, path, run)
    prompt = "\n" if options.prompt is None else options.prompt
    ids = vocab.encode(prompt, _file(plan))
    window, fixed = _window(plan, in_type)
    n = options.n or 1
    seq = torch.tensor([ids] * n, dtype=torch.int64)
    for _ in range(int(options.length)):
        inp = seq[:, -window:] if window else seq
        if fixed and inp.shape[1] < window:
            inp = torch.cat([torch.full((n, window - inp.shape[1]), vocab.pad, dtype=torch.int64), inp], 1)
        logits = _first(model(inp.to(device)))
        if logits.dim() == 3:
            logits = logits[:, -1, :]
        elif logits.dim() != 2:
            raise DslcError(Diagnostic("E0403", f"the model's output is {list(logits.shape)}: sampling needs logits "
                                       "[B, T, vocab] or [B, vocab]", file_name=_file(plan)))
        logits = logits.float().cpu() / float(options.temperature)
        if logits.shape[1] > vocab.size:
            logits[:, vocab.size:] = float("-inf")
        probs = torch.softmax(logits, dim=1)
        nxt = torch.multinomial(probs, 1, generator=generator)
        seq = torch.cat([seq, nxt], 1)
    texts = [vocab.decode(row.tolist()) for row in seq]
    text = ("\n\n" + "-" * 40 + "\n").join(texts)
    target = _output(options.output, run, ".txt")
    write_output(target, text.encode("utf-8"))
    return {"kind": "text", "path": target, "text": text}


@dataclass
class _Vocabulary:
    """How sampling turns a prompt into ids and ids into text: a run's tokenizer (`text(...)`), or a
    data set's characters (`shakespeare`), which refuse a prompt's characters they lack."""
    codec: Codec | None = None
    itos: list | None = None

    @property
    def size(self) -> int:
        return self.codec.size if self.codec is not None else len(self.itos)

    @property
    def pad(self) -> int:
        """What pads a prompt shorter than a fixed window: a newline, when it is one token."""
        ids = self.codec.encode("\n") if self.codec is not None else \
            [self.itos.index("\n")] if "\n" in self.itos else []
        return ids[0] if len(ids) == 1 else 0

    def encode(self, prompt: str, file_name: str) -> list[int]:
        if self.codec is None:
            unknown = sorted({ch for ch in prompt if ch not in self.itos})
            if unknown:
                raise DslcError(Diagnostic("E0302", "the prompt has characters outside the data's vocabulary: "
                                           + ", ".join(repr(c) for c in unknown), file_name=file_name,
                                           help="vocabulary: " + repr("".join(self.itos))))
            ids = [self.itos.index(ch) for ch in prompt]
        else:
            ids = self.codec.encode(prompt)
        if not ids:
            level = f"at the level `{self.codec.level}`" if self.codec is not None else ""
            raise DslcError(Diagnostic("E0302", f"the prompt {prompt!r} has no token {level}".rstrip(),
                                       file_name=file_name, help="give --prompt with at least one character"
                                       + (" of a word" if self.codec is not None and self.codec.level == "word" else "")))
        return ids

    def decode(self, ids: list) -> str:
        return self.codec.decode(ids) if self.codec is not None else "".join(self.itos[i] for i in ids)


def _vocabulary(plan, path: str, run: str) -> _Vocabulary:
    """The run's tokenizer.json when it has one (a `text(...)` run), else the data set's characters."""
    kept = os.path.join(run, "tokenizer.json")
    if os.path.isfile(kept):
        try:
            with open(kept, encoding="utf-8") as f:
                return _Vocabulary(codec=Codec.from_json(f.read()))
        except Exception as e:   # OSError, bad JSON, or the exceptions of tokenizers (its own types)
            raise DslcError(Diagnostic("E0602", f"cannot read the run's tokenizer {kept}: {e}", file_name=kept,
                                       help="train the plan again: its run writes tokenizer.json")) from None
    base = getattr(plan.data, "base_dir", None) or os.path.dirname(os.path.abspath(path))
    try:
        meta = data_mod.load(plan.data.entry.name, dict(plan.data.args), base_dir=base).meta
    except data_mod.DataError as e:
        raise DslcError(Diagnostic(getattr(e, "code", "E0508"), str(e), plan.data.span)) from None
    if meta.get("tokenizer"):   # trained on the file now, which may have changed since the run
        raise DslcError(Diagnostic("E0603", f"the run {run} has no tokenizer.json, the tokenizer its model was "
                                   "trained with", plan.data.span, help="train the plan again"))
    itos = meta.get("itos")
    if not itos:
        raise DslcError(Diagnostic("E0504", f"`{plan.data.entry.name}` has no character vocabulary to turn the "
                                   "model's token ids into text", plan.data.span,
                                   help="`dslc sample` writes text for `shakespeare` and `text(...)`; models "
                                        "taking noise give images or arrays"))
    return _Vocabulary(itos=list(itos))


def _window(plan, in_type) -> tuple[int | None, bool]:
    """(characters the model reads at once, whether it needs exactly that many)."""
    if in_type.rank != 2:
        raise DslcError(Diagnostic("E0402", f"the model's input is {in_type}: sampling text needs [B, T] of int64",
                                   file_name=_file(plan)))
    fixed = _concrete(in_type.shape[1:])
    if fixed is not None:
        return fixed[0], True
    context = plan.data.args.get("context")
    return (int(plain(context)) if context is not None else None), False


# ---------------------------------------------------------------------- files

def _output(given: str | None, run: str, suffix: str, force: bool = False) -> str:
    if given is None:
        return os.path.join(run, "samples" + suffix)
    if force and not given.endswith(suffix) and not is_stream(given):  # -o /dev/null stays /dev/null
        return os.path.splitext(given)[0] + suffix
    return given
