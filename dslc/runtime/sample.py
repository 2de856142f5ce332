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
  their softmax with a seeded generator; the tokens are decoded back into text;
- several inputs (a conditional GAN's `z` and `label`): float inputs get noise, int64 `[B]`
  inputs class labels (`label`, or 0, 1, 2, ... in turn), and any input a `.npy` file;
- in a plan whose steps declare a `beta_schedule` (a diffusion model), a model of an image
  `x_t` and a timestep `t` [B] (and labels) is a noise predictor ε(x_t, t): it is sampled
  from x_T ~ N(0, I) by DDPM's ancestral steps or DDIM's deterministic ones (diffusion.py).

Every random draw comes from one CPU generator seeded by `seed`, so the same seed gives
the same samples.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, replace

import torch

from ..backends.output import is_stream, write_output
from ..catalog.text import Codec
from ..diagnostics import Diagnostic, DslcError, SourceFile, Span, did_you_mean
from ..ir.dims import known_value, plain
from . import checkpoint, diffusion
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
    label: int | None = None        # the class of every sample, for models with a label input
    label_setting: str | None = None  # the `--set label=K` it came from (`with_label_setting`), for messages
    inputs: tuple = ()              # (input name, .npy file) pairs that feed those inputs
    sampler: str = "ddpm"           # diffusion models: "ddpm" or "ddim"
    steps: int | None = None        # diffusion models: denoising steps (default T for ddpm, 50 for ddim)


GRID_TILE = 64      # images are enlarged by a whole factor to about this many pixels a side
GRID_PAD = 2        # pixels between (and around) the images of a grid


LABEL = "label"


def with_label_setting(options: SampleOptions) -> SampleOptions:
    """`--set label=K` is `--label K`, taken out of `sets` (which hold the plan's settings: `label` is
    not a plan field, and a model's parameter is set through its call, `--set model.label=K`). Given
    with `--label` too it is E0306; `draw` refuses it for a model with a parameter `label` (E0305)."""
    found = [item for item in options.sets if item.partition("=")[0].strip() == LABEL]
    if not found:
        return options
    item = found[0]
    start = item.index("=") + 1
    span = Span(SourceFile("--set", item), start, len(item))
    if len(found) > 1 or options.label is not None:
        raise DslcError(Diagnostic("E0306", "the class of the samples is given twice" + (
            f": --label {options.label} and --set {item}" if options.label is not None else ""), span,
            help="give it once: --label K, or --set label=K"))
    text = item[start:].strip()
    if not text.isdigit():
        raise DslcError(Diagnostic("E0301", f"`--set label` is the class of the samples, a whole number >= 0, "
                                   f"got `{text}`", span, help="for example --set label=3"))
    sets = tuple(s for s in options.sets if s is not item)
    return replace(options, sets=sets, label=int(text), label_setting=item)


def _label_setting_fits(options: SampleOptions, decl) -> None:
    """`--set label=K` names the class of the samples; a model with a parameter `label` makes it ambiguous."""
    if options.label_setting is None or all(p.name != LABEL for p in decl.params):
        return
    item = options.label_setting
    raise DslcError(Diagnostic(
        "E0305", f"`--set label` is ambiguous: `{decl.name}` has a parameter `label`, and `dslc sample` also "
        "takes `label` as the class of the samples", Span(SourceFile("--set", item), 0, item.index("=")),
        help="the class of the samples: --label K; the model's parameter: --set model.label=K (its call in the plan)"))


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
    _label_setting_fits(options, plan.models[key][0])
    weights_path, weights = _weights(run)
    model = _build(plan, key, path, weights, weights_path).to(device).eval()
    decl, _, graph = plan.models[key]
    generator = torch.Generator().manual_seed(int(options.seed))
    result = {"model": key, "name": decl.name if key == "model" else key, "weights": weights_path}
    schedule = diffusion_schedule(plan)
    with torch.no_grad():
        if schedule is not None and timestep_input(graph) is not None:
            result.update(_diffusion(plan, path, model, graph, schedule, options, generator, run, device))
            return result
        if options.steps is not None or options.sampler != "ddpm":
            raise DslcError(Diagnostic("E0209", f"--sampler and --steps sample a diffusion model, and `{key}` of "
                                       f"the plan `{plan.name}` is not one", file_name=path,
                                       help="a diffusion model takes an image and a timestep [B], in a plan whose "
                                            "steps declare a beta_schedule"))
        if len(graph.inputs) != 1 or options.inputs or options.label is not None:
            result.update(_fed(plan, path, model, graph, options, generator, run, device))
        else:
            result.update(_one_input(plan, path, key, result, model, graph, options, generator, run, device, out))
    return result


def _one_input(plan, path, key, result, model, graph, options, generator, run, device, out) -> dict:
    in_type = graph.type_of(graph.inputs[0][1])
    if in_type.dtype == "int64":
        return _text(plan, path, model, in_type, options, generator, run, device)
    if in_type.dtype.startswith("float") or in_type.dtype.startswith("bfloat"):
        if key in data_fed(plan):
            out(f"note: `{result['name']}` reads the data's fields in the plan; here it is fed noise")
        return _noise(plan, model, in_type, options, generator, run, device)
    raise DslcError(Diagnostic("E0310", f"`{key}`'s input is {in_type}: `dslc sample` feeds noise to a float "
                               "input, or characters to an int64 one", file_name=path))


# ---------------------------------------------------------------------- the plan, the model, its weights

def data_fed(plan) -> set:
    """The plan's models that some step applies to a float tensor computed from the batch without
    passing through another model (`D(flatten(batch.x))`, or `out` itself); a class label read
    from the batch (a conditional generator's `batch.y`) does not count."""
    fed = set()
    for step in plan.steps:
        g = step.graph
        from_batch = {ref.node for _, ref in g.inputs}
        for node in g.nodes.values():   # a topological order
            is_model = node.kind == "call" and node.instance in step.models
            reads_batch = any(ref.node in from_batch and (not is_model or _is_float(g.type_of(ref)))
                              for ref in node.inputs)
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
    found = [k for k, (_, _, g) in models.items() if k not in fed and _takes_noise(g)]
    if len(found) == 1:
        return found[0]
    why = "none of them" if not found else f"{len(found)} of them ({', '.join(found)})"
    raise DslcError(Diagnostic("E0209", f"the plan `{plan.name}` has {len(models)} models and {why} takes noise: "
                               "choose one with --model", file_name=_file(plan), help=_models_help(plan)))


def _is_float(t) -> bool:
    return t is not None and (t.dtype.startswith("float") or t.dtype.startswith("bfloat"))


def _takes_noise(g) -> bool:
    """One float input, besides any int64 [B] labels: a generator or a decoder, conditional or not."""
    types = [g.type_of(ref) for _, ref in g.inputs]
    floats = [t for t in types if _is_float(t)]
    return len(floats) == 1 and all(_is_float(t) or _is_label(t) for t in types)


def _is_label(t) -> bool:
    return t.dtype == "int64" and t.rank == 1


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
    return write_samples(plan, _first(model(z.to(device, _float_dtype(model)))), options, run)


def write_samples(plan, y, options: SampleOptions, run: str) -> dict:
    """The outputs `y` [N, ...] as an image grid when each is one example of the data's `x` (mapped from
    the data's range to [0, 1]), else as a .npy array. The result's `samples` holds `y` (in the data's
    range, on the CPU)."""
    y = y.detach().float().cpu()
    n = y.shape[0]
    image = _image_shape(plan, y[0].numel())
    if image is None:
        target = _output(options.output, run, ".npy", force=True)
        import numpy as np
        buf = io.BytesIO()
        np.save(buf, y.numpy())
        write_output(target, buf.getvalue())
        return {"kind": "array", "path": target, "shape": list(y.shape), "samples": y}
    lo, hi = _scale(plan)
    images = ((y.reshape(n, *image) - lo) / (hi - lo)).clamp(0, 1)
    target = _output(options.output, run, ".png")
    write_grid(images, target)
    return {"kind": "image", "path": target, "shape": list(images.shape), "samples": y}


# ---------------------------------------------------------------------- several inputs: noise, labels, files

def _fed(plan, path: str, model, graph, options: SampleOptions, generator, run: str, device) -> dict:
    n = options.n or 64
    feeds = input_feeds(plan, path, graph, options, generator, n)
    dtype = _float_dtype(model)
    args = [feeds[name].to(device, dtype if feeds[name].is_floating_point() else None) for name, _ in graph.inputs]
    return write_samples(plan, _first(_run(plan, model, args)), options, run)


def input_feeds(plan, path: str, graph, options: SampleOptions, generator, n: int, skip=()) -> dict:
    """A tensor of n rows for each input of `graph` but those in `skip`: a `--input` file, class labels for
    an int64 [B] input, else standard normal noise of a float input of known sizes. Inputs are fed in the
    order of the graph, so the noise of a seed does not depend on the labels."""
    files = _input_files(plan, graph, options)
    labels = [name for name, ref in graph.inputs if name not in skip and name not in files
              and _is_label(graph.type_of(ref))]
    if options.label is not None and not labels:
        raise DslcError(Diagnostic("E0209", "--label gives the class of a model with a label input (int64 [B]); "
                                   "this one has none", file_name=path, help=_inputs_help(graph)))
    feeds = {}
    for name, ref in graph.inputs:
        t = graph.type_of(ref)
        if name in skip:
            continue
        if name in files:
            feeds[name] = _from_file(plan, name, t, files[name], n)
        elif name in labels:
            feeds[name] = _labels(plan, path, options.label, n)
        elif _is_float(t) and _concrete(t.shape[1:]) is not None:
            feeds[name] = torch.randn((n, *_concrete(t.shape[1:])), generator=generator)
        else:
            raise DslcError(Diagnostic("E0209", f"`dslc sample` cannot feed the input `{name}` ({t}): it feeds "
                                       "noise to float inputs of known sizes and class labels to int64 [B] ones",
                                       file_name=path, help=f"give it as a .npy file: --input {name}=FILE.npy"))
    return feeds


def _input_files(plan, graph, options: SampleOptions) -> dict:
    names = [name for name, _ in graph.inputs]
    files = dict(options.inputs)
    for name in files:
        if name not in names:
            guess = did_you_mean(name, names)
            raise DslcError(Diagnostic("E0209", f"--input names `{name}`, which is not an input of the model",
                                       file_name=_file(plan),
                                       help=f"did you mean `{guess}`?" if guess else _inputs_help(graph)))
    return files


def _inputs_help(graph) -> str:
    return "inputs: " + ", ".join(f"{name}: {graph.type_of(ref)}" for name, ref in graph.inputs)


def _from_file(plan, name: str, t, file: str, n: int) -> torch.Tensor:
    """A .npy array for the input `name`: one example (broadcast to the n samples) or n of them."""
    import numpy as np
    try:
        array = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DslcError(Diagnostic("E0508", f"cannot read {file} for the input `{name}`: {e}", file_name=file)) \
            from None
    want = _concrete(t.shape[1:])
    shape = list(array.shape)
    if want is not None and shape == want:
        array = np.broadcast_to(array, (n, *want))
    elif want is None or shape != [n, *want]:
        wanted = "[" + ", ".join(str(d) for d in t.shape[1:]) + "]"
        raise DslcError(Diagnostic("E0504", f"{file} holds an array of shape {shape}; the input `{name}` needs one "
                                   f"example {wanted} or n = {n} of them", file_name=file))
    if (t.dtype == "int64") != (array.dtype.kind in "iu"):
        raise DslcError(Diagnostic("E0310", f"{file} holds {array.dtype} values; the input `{name}` is {t.dtype}",
                                   file_name=file))
    return torch.from_numpy(np.array(array)).to(getattr(torch, t.dtype) if t.dtype == "int64" else torch.float32)


def _labels(plan, path: str, label: int | None, n: int) -> torch.Tensor:
    """`label` for every sample, or the classes in turn (0, 1, ..., 0, 1, ...) so that a grid shows each."""
    classes = _class_count(plan, path)
    if label is not None:
        if classes is not None and not 0 <= label < classes:
            raise DslcError(Diagnostic("E0302", f"label {label} is out of range: `{plan.data.entry.name}` has "
                                       f"{classes} classes, 0 to {classes - 1}", file_name=path))
        return torch.full((n,), int(label), dtype=torch.int64)
    if classes is None:
        raise DslcError(Diagnostic("E0209", f"`{plan.data.entry.name}` has no classes to draw labels from",
                                   file_name=path, help="give the class with --label K"))
    return torch.arange(n, dtype=torch.int64) % classes


def _class_count(plan, path: str) -> int | None:
    base = getattr(plan.data, "base_dir", None) or os.path.dirname(os.path.abspath(path))
    try:
        meta = data_mod.load(plan.data.entry.name, dict(plan.data.args), base_dir=base).meta
    except data_mod.DataError as e:
        raise DslcError(Diagnostic(getattr(e, "code", "E0508"), str(e), plan.data.span)) from None
    classes = meta.get("classes")
    return int(classes) if classes else None


def _run(plan, model, args: list):
    """The model on `args`; a failure (an id beyond an embedding, say) is E0604, not a traceback."""
    try:
        return model(*args)
    except (IndexError, RuntimeError) as e:
        raise DslcError(Diagnostic("E0604", f"the model failed on the sampled inputs: {str(e).splitlines()[0]}",
                                   file_name=_file(plan))) from None


# ---------------------------------------------------------------------- diffusion

def diffusion_schedule(plan) -> tuple | None:
    """(schedule, T) of the plan's `beta_schedule(...)`, or None when no step declares one."""
    found = set()
    for step in plan.steps:
        for node in step.graph.nodes.values():
            if node.kind == "op" and node.op is not None and node.op.name == "beta_schedule":
                found.add((node.args["schedule"], int(plain(node.args["steps"]))))
    if len(found) > 1:
        raise DslcError(Diagnostic("E0209", f"the plan `{plan.name}` declares {len(found)} beta schedules: "
                                   + ", ".join(f"{s} over {t} steps" for s, t in sorted(found))
                                   + "; `dslc sample` needs one", file_name=_file(plan)))
    return next(iter(found), None)


def timestep_input(graph) -> str | None:
    """The timestep input of a noise predictor ε(x_t, t): its float [B] input (or an int64 [B] one named
    t), beside a float image input."""
    inputs = [(name, graph.type_of(ref)) for name, ref in graph.inputs]
    images = [name for name, t in inputs if _is_float(t) and t.rank >= 2]
    if len(images) != 1:
        return None
    floats = [name for name, t in inputs if _is_float(t) and t.rank == 1]
    named = [name for name, t in inputs if t.rank == 1 and name in ("t", "timestep", "timesteps")]
    return floats[0] if len(floats) == 1 else named[0] if len(named) == 1 else None


def _diffusion(plan, path: str, model, graph, schedule: tuple, options: SampleOptions, generator, run: str,
               device) -> dict:
    n = options.n or 64
    t_name = timestep_input(graph)
    x_name = next(name for name, ref in graph.inputs if _is_float(graph.type_of(ref)) and graph.type_of(ref).rank >= 2)
    x_type = graph.type_of(dict(graph.inputs)[x_name])
    size = _concrete(x_type.shape[1:])
    if size is None:
        raise DslcError(Diagnostic("E0311", f"the model's input `{x_name}` is {x_type}: sampling needs every size "
                                   "but the batch's known", file_name=path))
    steps = _steps(options, schedule[1], path)
    x_T = torch.randn((n, *size), generator=generator)      # first: the same seed starts from the same noise
    feeds = input_feeds(plan, path, graph, options, generator, n, skip=(x_name, t_name))
    dtype = _float_dtype(model)
    t_dtype = torch.int64 if graph.type_of(dict(graph.inputs)[t_name]).dtype == "int64" else dtype

    def eps(x: torch.Tensor, t: int) -> torch.Tensor:
        given = {x_name: x.to(device, dtype), t_name: torch.full((n,), t, dtype=t_dtype, device=device)}
        given.update((k, v.to(device, dtype if v.is_floating_point() else None)) for k, v in feeds.items())
        return _first(_run(plan, model, [given[name] for name, _ in graph.inputs])).float().cpu()

    betas = diffusion.betas(*schedule)
    sample = diffusion.ddpm if options.sampler == "ddpm" else diffusion.ddim
    x0 = sample(eps, x_T, betas, diffusion.timesteps(schedule[1], steps), generator)
    result = write_samples(plan, x0, options, run)
    result.update(sampler=options.sampler, steps=steps, schedule=list(schedule))
    return result


def _steps(options: SampleOptions, T: int, path: str) -> int:
    steps = options.steps or (T if options.sampler == "ddpm" else min(50, T))
    if not 1 <= steps <= T:
        raise DslcError(Diagnostic("E0302", f"--steps {steps} is out of range: the plan's schedule has T = {T} steps",
                                   file_name=path, help=f"give 1 to {T} steps"))
    return steps


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
