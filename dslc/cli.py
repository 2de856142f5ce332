"""The `dslc` command line: click commands that parse flags and call the API.

Exit status: 0 success, 1 a user error (diagnostics were printed to stderr),
2 a usage error (click's), 3 an internal error (one line; the traceback only
with --debug). Each command imports what it uses inside it, for start-up time:
`dslc check` never loads the backends or torch.
"""
from __future__ import annotations

import os
import sys

import click

EXIT_USER, EXIT_INTERNAL = 1, 3


class _Context:
    debug = False


def _handled(fn):
    """User errors print their diagnostics (exit 1); anything else is an internal error (exit 3)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .diagnostics import DslcError
        try:
            return fn(*args, **kwargs)
        except DslcError as e:
            _error(e.render())
            sys.exit(EXIT_USER)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (SystemExit, click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:  # noqa: BLE001 - the last line of defence
            if _Context.debug:
                raise
            from .diagnostics.render import printable
            _error(printable(f"internal error, please report: {type(e).__name__}: {e} "
                             "(rerun with --debug for the traceback)"))
            sys.exit(EXIT_INTERNAL)
    return wrapper


def _error(text: str) -> None:
    """An error's message on stderr; in a process of a data-parallel run, where every process may fail
    alike, through its launcher, which prints each different message once (distributed.tell)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
        from .runtime.distributed import tell
        tell(text)
    else:
        click.echo(text, err=True)


def _load(path: str):
    """`dslc.api.load(path)`, its warnings printed to stderr (a warning stops nothing)."""
    from .api import load
    prog = load(path)
    for w in prog.warnings:
        click.echo(w.render(), err=True)
    return prog


def _echo(text: str, err: bool = False) -> None:
    """Print a line that may quote user text (file names): control characters in it print escaped."""
    from .diagnostics.render import printable
    click.echo(printable(text), err=err)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show Python tracebacks of internal errors.")
@click.version_option(package_name="dslc", prog_name="dslc")
def main(debug: bool) -> None:
    """dslc: compile `.dl` model descriptions to PyTorch (and more)."""
    _Context.debug = debug


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@_handled
def check(files) -> None:
    """Parse, resolve and shape-check FILES (models, blocks, losses, plans).

    Prints only diagnostics, and a one-line summary per file when it is fine.
    """
    from .diagnostics import DslcError
    failed = False
    for path in files:
        try:
            _echo(_check_one(path))
        except DslcError as e:
            click.echo(e.render(), err=True)
            failed = True
    sys.exit(EXIT_USER if failed else 0)


@main.command("lsp")
def lsp() -> None:
    """Serve the language server protocol over stdin and stdout, for editors: diagnostics as you
    type, hovers (shapes, signatures), definitions, symbols and completions (docs/language.md,
    "Editors")."""
    import gc

    from .lsp.server import serve
    gc.enable()   # `run` pauses the collector for a short command; a server runs for hours
    serve()


@main.command("fmt")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--check", is_flag=True, help="Change nothing; name each file that is not formatted and exit 1.")
@click.option("--diff", "show_diff", is_flag=True, help="Change nothing; print what would change as a diff.")
@_handled
def fmt(files, check: bool, show_diff: bool) -> None:
    """Rewrite FILES in the canonical layout: four-space bodies, canonical spaces, lines wrapped
    at 100 columns, plan fields' `=` aligned. Comments stay where they were.

    A file that does not parse is reported and left as it was, and so is one whose formatting
    would parse differently (checked every time).
    """
    from .diagnostics import DslcError
    from .files import atomic_write
    from .frontend.fmt import FormatError, format_source
    from .frontend.loader import read_source
    failed = changed = 0
    for path in files:
        try:
            src = read_source(path)
            new = format_source(src.text, src.name)
        except DslcError as e:
            click.echo(e.render(), err=True)
            failed += 1
            continue
        except FormatError as e:
            _echo(f"error: {e}", err=True)
            failed += 1
            continue
        if new == src.text:
            continue
        changed += 1
        if show_diff:
            _echo_diff(src.text, new, src.name)
        elif check:
            _echo(f"not formatted: {src.name}")
        else:
            atomic_write(path, new.encode("utf-8"))
            _echo(f"formatted {src.name}")
    if not changed and not failed:
        _echo(f"ok: {len(files)} {_plural('file', len(files))} already formatted")
    sys.exit(EXIT_USER if failed or (changed and (check or show_diff)) else 0)


def _echo_diff(old: str, new: str, name: str) -> None:
    import difflib
    click.echo("".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), name, name + " (formatted)")),
               nl=False)


@main.command()
@click.argument("target", type=click.Path(exists=False))
@click.option("--model", help="The model (needed when FILE has several).")
@click.option("--set", "sets", multiple=True, metavar="K=V", help="A model parameter, e.g. --set hidden=256.")
@click.option("-o", "--output", help="The HTML file (default: MODEL.html, or RUN.html for a run folder).")
@_handled
def report(target, model, sets, output) -> None:
    """One self-contained HTML page for TARGET: a `.dl` file's model (diagram with blocks that open
    on a click, summary table, parameters and MACs by layer, the highlighted spec) or a run folder
    (curves, result, confusion matrix, samples, health, checkpoints, plan)."""
    from .backends.report import model_page, run_page
    if os.path.isdir(target):
        name = os.path.basename(os.path.abspath(target))
        out = output or f"{name}.html"
        if not os.path.isfile(os.path.join(target, "metrics.jsonl")) and \
                not os.path.isfile(os.path.join(target, "result.json")):
            from .diagnostics import Diagnostic, DslcError
            raise DslcError(Diagnostic("E0901", f"{target} is not a run folder (no metrics.jsonl or result.json)",
                                       file_name=target, help="give a folder `dslc train` wrote, or a .dl file"))
        page = run_page(target, os.path.dirname(os.path.abspath(out)))
    else:
        prog = _load(target)
        name = _one_model(prog, model)
        out = output or f"{name}.html"
        graph = prog.graph(name, params=model_args(sets))
        page = model_page(graph, prog.unit.root.name, prog.unit.root.text)
    _write(out, page, output is not None)
    _echo(f"wrote {out}", err=True)


def _plural(word: str, n: int) -> str:
    return word if n == 1 else word + ("es" if word.endswith("s") else "s")


def _check_one(path: str) -> str:
    prog = _load(path)
    counts = [(len(prog.unit.of_kind(k)), k) for k in ("model", "block", "loss", "train", "sweep")]
    parts = [f"{n} {_plural({'train': 'plan'}.get(k, k), n)}" for n, k in counts if n]
    return f"ok: {path}: {', '.join(parts) or 'nothing to check'}"


# torch.manual_seed takes an int64 (or uint64); beyond, compile wrote a file whose build() failed
SEED = click.IntRange(-2 ** 63, 2 ** 63 - 1)


def _usable_device(ctx, param, value: str | None) -> str | None:
    """A device string torch understands (exit 2 otherwise); one this machine lacks is E0607 when the
    run starts, before any data is read."""
    if not value:  # absent (or empty): the default, CUDA when present
        return None
    from .runtime.devices import spelling_problem
    problem = spelling_problem(value)
    if problem:
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


def model_args(sets: tuple[str, ...]) -> dict:
    """`--set` values as model parameter arguments, a dict the API takes as `params=` (so any name
    reaches the model: `--set seed=1` is the model's `seed`, never compile's)."""
    from .frontend.settings import literal_args, parse_sets
    return literal_args(parse_sets(sets))


@main.command("compile")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--model", "model", metavar="NAME", help="Compile only this model (default: every model).")
@click.option("--target", type=click.Choice(["pytorch", "onnx", "torchscript", "exported"]), default="pytorch",
              show_default=True, help="pytorch: one standalone .py; onnx: one .onnx model with its weights (opset "
              "18); torchscript: one model's torch.jit.script (or trace) .pt; exported: its torch.export .pt2.")
@click.option("-o", "--output", metavar="OUT", help="Output file; `-` for stdout (pytorch only). Default: FILE's "
                                                    "name with .py, or the model's name with .onnx, .pt or .pt2, "
                                                    "here.")
@click.option("--set", "sets", multiple=True, metavar="K=V", help="Override a model parameter (a .dl literal); "
                                                                  "repeatable.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the initial weights.")
@click.option("--weights", metavar="CKPT", type=click.Path(), callback=lambda c, p, v: _run_weights(v),
              help="Weights to export instead of the seeded ones (.safetensors or a torch state dict, or a run "
                   "folder: its checkpoints/best.safetensors; not for pytorch).")
@click.option("--rename", "renames", multiple=True, metavar="OLD=NEW", callback=lambda c, p, v: _renames(v),
              help="With --weights: the file's names under the prefix OLD are the model's under NEW "
                   "(conv1=stem.conv1; the longest prefix wins); repeatable.")
@click.option("-O", "opt", type=click.IntRange(0, 2), default=0, show_default=True, metavar="LEVEL",
              help="Optimization: -O0 none; -O1 no-ops, constants, common subexpressions, dead code, fused "
                   "attention; -O2 also inference only: dropout removed, batch norm folded (docs/passes.md).")
@click.option("--channels-last/--no-channels-last", default=None,
              help="CNNs: weights and 4-d inputs in the channels_last memory format. Default: -O2 uses it for "
                   "models whose MACs are mostly 2-d convolutions.")
@click.option("--dump-ir", is_flag=True, help="Print each model's IR before and after the passes, and what the "
                                              "passes did, to stderr.")
@click.option("--size", "sizes", multiple=True, metavar="NAME=N",
              help="torchscript, exported: a run-time size of the example inputs (default B=2, others 8); "
                   "e.g. --size T=128.")
@click.option("--quantize", type=click.Choice(["dynamic", "static"]),
              help="int8 post-training quantization of the --weights: dynamic (Linear, LSTM, GRU weights; "
                   "TorchScript .pt, or onnxruntime's with --target onnx) or static (also activations and "
                   "per-channel conv weights, calibrated on --calibrate).")
@click.option("--calibrate", metavar="DATA", help="--quantize static: the data set whose validation split (else "
                                                   "training split) calibrates the observers: 'digits(val=0.1)'.")
@_handled
def compile_(file, model, target, output, sets, seed, weights, renames, opt, channels_last, dump_ir,
             sizes, quantize, calibrate) -> None:
    """Compile FILE to a standalone PyTorch file (needs only torch), or one model to ONNX, TorchScript
    or a torch.export program; with --quantize, one model's int8 TorchScript or ONNX."""
    params = model_args(sets)
    prog = _load(file)
    _check_quantize(quantize, calibrate, target, opt or channels_last or dump_ir, renames and not weights)
    if quantize:
        return _compile_quantized(prog, target, model, output, seed, weights, params, renames, quantize, calibrate,
                                  _sizes(sizes))
    if sizes and target not in ("torchscript", "exported"):
        raise click.UsageError("--size applies to --target torchscript and exported (their example inputs)")
    if target != "pytorch":
        if channels_last:
            raise click.UsageError("--channels-last applies to --target pytorch")
        if renames and not weights:
            raise click.UsageError("--rename applies to the names of a --weights file")
        if target == "onnx":
            return _compile_onnx(prog, model, output, seed, weights, params, opt, dump_ir, renames)
        return _compile_deployed(prog, target, model, output, seed, weights, params, opt, _sizes(sizes), renames)
    if weights or renames:
        raise click.UsageError("--weights applies to --target onnx, torchscript and exported (a generated .py "
                               "builds its own weights)")
    names = [model] if model else None
    if model:
        prog.declaration(model)
    if dump_ir:
        _dump_ir(prog, names or prog.buildable, opt, channels_last, params)
    source = prog.source(names, seed, opt=opt, channels_last=channels_last, params=params)
    if not model:
        for name, needs in prog.needs_arguments().items():
            click.echo(f"note: skipped `{name}`: it needs {', '.join(needs)} "
                       f"(compile it with --model {name} --set {needs[0]}=...)", err=True)
    out = output or os.path.splitext(os.path.basename(file))[0] + ".py"
    if out == "-":
        click.echo(source, nl=False)
        return
    _write(out, source, explicit=output is not None)
    _echo(f"wrote {out}", err=True)


def _named_inputs(items) -> dict:
    """`--input NAME=FILE` options as {input name: file}."""
    out = {}
    for item in items:
        name, sep, file = item.partition("=")
        if not sep or not name.isidentifier() or not file:
            raise click.BadParameter(f"{item!r}: write NAME=FILE.npy, a model input and a file", param_hint="--input")
        out[name] = file
    return out


def _run_weights(path: str | None) -> str | None:
    """--weights RUN (a folder `dslc train` wrote) stands for RUN/checkpoints/best.safetensors."""
    if path is None or not os.path.isdir(path):
        return path
    best = os.path.join(path, "checkpoints", "best.safetensors")
    if not os.path.isfile(best):
        raise click.BadParameter(f"{path} is a folder without checkpoints/best.safetensors: give a run folder "
                                 "or a weights file", param_hint="--weights")
    return best


def _renames(items) -> dict:
    """`--rename OLD=NEW` options as `rename` rules (either side may be empty: every name, or none)."""
    import re
    out = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or any(x and not re.match(r"^[^.\s=]+(?:\.[^.\s=]+)*$", x) for x in (old, new)):
            raise click.BadParameter(f"{item!r}: write OLD=NEW, two name prefixes such as conv1=stem.conv1",
                                     param_hint="--rename")
        if old in out:
            raise click.BadParameter(f"{old!r} is renamed twice", param_hint="--rename")
        out[old] = new
    return out


def _dump_ir(prog, names: list, opt: int, channels_last: bool, params: dict) -> None:
    from .ir.printer import print_graph
    for name in names:
        click.echo(f"# IR of {name} before the passes\n{print_graph(prog.graph(name, params=params))}", err=True)
        result = prog.optimized(name, opt, channels_last, params=params)
        click.echo(f"# IR of {name} after -O{opt}{_layout_flag(channels_last)}\n"
                   f"{print_graph(result.graph)}", err=True)
        report = result.report() or "nothing to do\n"
        click.echo(f"# passes on {name}\n{report}", err=True, nl=False)


def _layout_flag(channels_last: bool | None) -> str:
    return {True: " --channels-last", False: " --no-channels-last"}.get(channels_last, "")


def _compile_onnx(prog, model, output, seed, weights, params, opt: int = 0, dump_ir: bool = False,
                  renames: dict | None = None) -> None:
    model = _one_model(prog, model)
    if output == "-":
        raise click.UsageError("an ONNX model is binary: give a file with -o")
    if dump_ir:
        _dump_ir(prog, [model], opt, False, params)
    onnx_model = prog.onnx(model, seed=seed, weights=weights, opt=opt, params=params, rename=renames or None)
    out = output or f"{model}.onnx"
    _write(out, onnx_model.SerializeToString(), explicit=output is not None)
    _echo(f"wrote {out}", err=True)


def _compile_deployed(prog, target: str, model, output, seed, weights, params, opt: int, sizes: dict,
                      renames: dict | None = None) -> None:
    """One model as TorchScript (.pt) or a torch.export program (.pt2), with what torch made of it on stderr."""
    model = _one_model(prog, model)
    if output == "-":
        raise click.UsageError(f"a {target} model is binary: give a file with -o")
    convert = prog.torchscript if target == "torchscript" else prog.exported
    result = convert(model, seed=seed, weights=weights, opt=opt, sizes=sizes, params=params, rename=renames or None)
    if result.how == "traced":
        _echo(f"note: {model}: {result.note}", err=True)
    elif result.how == "exported":
        dynamic = ", ".join(result.dynamic) or "none"
        _echo(f"note: {model}: dynamic sizes: {dynamic}" + (f"; {result.note}" if result.note else ""), err=True)
    out = output or f"{model}.{'pt' if target == 'torchscript' else 'pt2'}"
    _write(out, result.save(), explicit=output is not None)
    _echo(f"wrote {out}" + (f" ({result.how})" if target == "torchscript" else ""), err=True)


def _check_quantize(quantize, calibrate, target: str, passes: bool, renames_alone: bool) -> None:
    if calibrate and quantize != "static":
        raise click.UsageError("--calibrate applies to --quantize static")
    if quantize == "static" and not calibrate:
        raise click.UsageError("--quantize static needs calibration data: --calibrate 'digits(val=0.1)'")
    if not quantize:
        return
    if target not in ("pytorch", "torchscript", "onnx"):
        raise click.UsageError("--quantize writes TorchScript (the default) or, with --target onnx, ONNX")
    if passes:
        raise click.UsageError("--quantize takes no -O, --channels-last or --dump-ir (it fuses what it quantizes)")
    if renames_alone:
        raise click.UsageError("--rename applies to the names of a --weights file")


def _compile_quantized(prog, target: str, model, output, seed, weights, params, renames, how: str,
                       calibrate, sizes: dict) -> None:
    """One model quantized to int8: TorchScript (.pt), or ONNX (.onnx) with --target onnx."""
    model = _one_model(prog, model)
    if output == "-":
        raise click.UsageError("a quantized model is binary: give a file with -o")
    if weights is None:
        _echo(f"note: {model}: no --weights: quantizing the seeded initial weights", err=True)
    if target == "onnx":
        data = prog.onnx_quantized(model, how, seed, weights, calibrate=calibrate, params=params,
                                   rename=renames or None).SerializeToString()
        out = output or f"{model}.int8.onnx"
    else:
        result = prog.quantized(model, how, seed, weights, calibrate=calibrate, sizes=sizes, params=params,
                                rename=renames or None)
        if result.note:
            _echo(f"note: {model}: {result.note}", err=True)
        data, out = result.save(), output or f"{model}.int8.pt"
    _write(out, data, explicit=output is not None)
    _echo(f"wrote {out} ({how} int8)", err=True)


def _write(path: str, text, explicit: bool) -> None:
    """Write atomically (devices and pipes in place); never replace a file dslc did not write unless -o named it."""
    from .backends.output import write_output
    from .diagnostics import Diagnostic, DslcError
    if not explicit and os.path.lexists(path) and not _written_by_dslc(path):
        raise DslcError(Diagnostic("E0902", f"refusing to overwrite {path}: dslc did not write it",
                                   file_name=path, help="name the output with -o"))
    write_output(path, text.encode("utf-8") if isinstance(text, str) else text)


def _written_by_dslc(path: str) -> bool:
    import stat
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False  # only a regular file can be ours; reading a FIFO could block
        with open(path, "rb") as f:
            head = f.read(400)
    except OSError:
        return False
    if b"generated by dslc" in head or b"\x12\x04dslc" in head:  # our .py header, or an ONNX producer_name
        return True
    return head.startswith(b"PK") and _archive_by_dslc(path)   # a .pt or .pt2 (zip) marked as ours


def _archive_by_dslc(path: str) -> bool:
    import zipfile

    from .runtime.deploy import MARK
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.rsplit("/", 1)[-1] == MARK for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--model", "model", metavar="NAME", help="The model (needed when FILE has several).")
@click.option("--set", "sets", multiple=True, metavar="K=V", help="Override a model parameter; repeatable.")
@click.option("--size", "sizes", multiple=True, metavar="NAME=N",
              help="A value for a run-time size when counting MACs (B is 1); e.g. --size T=128.")
@click.option("--plan", metavar="PLAN", help="Count as trainable what PLAN leaves unfrozen (its freeze statements).")
@click.option("--phase", metavar="PHASE", help="With --plan: the freezes in force during this phase.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@_handled
def summary(file, model, sets, sizes, plan, phase, fmt) -> None:
    """A per-layer table of FILE's model: output shapes, parameters, MACs (at batch 1), totals."""
    import json

    from .backends.summary import render_table
    params = model_args(sets)
    prog = _load(file)
    frozen = None
    if plan:
        p = prog.plan(plan)
        if phase and phase not in [ph.name for ph in p.phases]:
            raise click.BadParameter(f"the plan `{plan}` has no phase `{phase}` (phases: "
                                     + ", ".join(ph.name for ph in p.phases) + ")", param_hint="--phase")
        key = "model" if "model" in p.models else (model or next(iter(p.models)))
        decl, args, _ = p.models[key]
        model = model or decl.name
        params = params or {k: a for k, a in args.items()}
        frozen = p.freeze_rules(key, phase)
    elif phase:
        raise click.UsageError("--phase needs --plan")
    name = _one_model(prog, model)
    s = prog.summary(name, sizes=_sizes(sizes), frozen=frozen, params=params)
    if fmt == "json":
        click.echo(json.dumps(s.as_json(), indent=2))
    else:
        render_table(s)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--model", "model", metavar="NAME", help="The model (needed when FILE has several).")
@click.option("-o", "--output", metavar="OUT", help="OUT.svg, .png, .pdf or .dot (default: the model's name .svg).")
@click.option("--depth", type=click.IntRange(min=0), default=None,
              help="How many levels of blocks to draw as nested clusters; deeper blocks are single boxes. "
                   "Default: the deepest level that keeps the diagram legible (about 60 boxes).")
@click.option("--expand", is_flag=True, help="Draw runs of identical blocks one by one instead of as ×N.")
@click.option("--set", "sets", multiple=True, metavar="K=V", help="Override a model parameter; repeatable.")
@_handled
def render(file, model, output, depth, expand, sets) -> None:
    """Draw FILE's model with Graphviz: blocks as clusters, shapes on edges, parameters on nodes.

    With a shape error, the diagram is still drawn up to the failing layer (in red), the
    diagnostic is printed, and the exit status is 1."""
    from .api import partial_graph
    from .backends.diagram import render as draw
    from .backends.diagram import to_dot
    from .diagnostics import DslcError
    params = model_args(sets)
    try:
        prog = _load(file)
    except DslcError as e:
        graph = partial_graph(e, model, params)
        if graph is not None:
            out = _diagram_path(output, graph.name)
            try:
                _draw(draw, to_dot(graph, depth, not expand), out)
            except DslcError as failed:  # the spec's own errors come first
                raise DslcError(e.diagnostics + failed.diagnostics) from None
            _echo(f"wrote {out} (up to the error)", err=True)
        raise e
    name = _one_model(prog, model)
    out = _diagram_path(output, name)
    _draw(draw, prog.diagram(name, depth, not expand, params=params), out)
    _echo(f"wrote {out}", err=True)


def _diagram_path(output: str | None, name: str) -> str:
    out = output or f"{name}.svg"
    if out.rsplit(".", 1)[-1].lower() not in ("svg", "png", "pdf", "dot"):
        raise click.BadParameter(f"{out}: the output must end in .svg, .png, .pdf or .dot", param_hint="-o")
    return out


def _draw(draw, dot_source: str, out: str) -> None:
    from .diagnostics import Diagnostic, DslcError
    try:
        draw(dot_source, out)
    except FileNotFoundError as e:
        raise DslcError(Diagnostic("E0902", str(e), file_name=out, help="or write the diagram as .dot")) from None
    except (OSError, RuntimeError) as e:
        raise DslcError(Diagnostic("E0902", f"cannot draw {out}: {e}", file_name=out)) from None


def _one_model(prog, model: str | None) -> str:
    from .diagnostics import Diagnostic, DslcError
    if model is not None:
        prog.declaration(model)
        return model
    if len(prog.models) != 1:
        raise DslcError(Diagnostic("E0209", f"{prog.unit.root.name} has {len(prog.models)} models: choose one with "
                                   "--model", file_name=prog.unit.root.name, help="models: " + ", ".join(prog.models)))
    return prog.models[0]


def _sizes(items) -> dict:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if not name.isidentifier() or not value.isdigit() or int(value) <= 0:
            raise click.BadParameter(f"{item!r}: write NAME=N with a positive N", param_hint="--size")
        out[name] = int(value)
    return out


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--plan", "plan", metavar="NAME", help="The training plan (needed when FILE has several).")
@click.option("--out", metavar="DIR", help="Run directory (default runs/PLAN; a new run never reuses one: "
              "runs/PLAN-2, ...).")
@click.option("--resume", is_flag=True, help="Continue the run in --out (default: the latest runs/PLAN*) from its "
              "last checkpoint, with the plan it ran (only --set epochs=N may change it).")
@click.option("--set", "sets", multiple=True, metavar="K=V",
              help="Override a plan field or argument: epochs=3, optimizer.lr=1e-4, early_stopping.patience=2, "
                   "STEP.optimizer.lr=..., PHASE.epochs=...; repeatable.")
@click.option("--weights", metavar="FILE", type=click.Path(dir_okay=False),
              help="Start from these weights, matched by name (.safetensors or a torch state dict): the plan's "
                   "`init`.")
@click.option("--rename", "renames", multiple=True, metavar="OLD=NEW", callback=lambda c, p, v: _renames(v),
              help="The file's names under the prefix OLD are the model's under NEW: the plan's `rename`; "
                   "repeatable.")
@click.option("--skip-mismatched", is_flag=True, help="Keep the model's own values for weights of other shapes "
              "(a new head): the plan's `skip_mismatched = true`.")
@click.option("--device", metavar="DEVICE", callback=_usable_device,
              help="cpu, cuda, cuda:1, ... (default: CUDA when present).")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar (default: when stdout is a terminal; plain lines otherwise).")
@click.option("--fast-dev-run", is_flag=True,
              help="A smoke test: one batch of the training, validation and test splits (one epoch of each phase), "
                   "every step, loss and metric run once; nothing is written.")
@click.option("--watch", type=click.Choice(["on", "off"]), default="on", show_default=True,
              help="Health checks: per-layer gradient and weight norms, update ratios and activations in "
                   "metrics.jsonl, TensorBoard and health.png, with warnings at the spec's lines; off registers "
                   "no hooks.")
@click.option("--max-epochs", type=click.IntRange(min=1), hidden=True,
              help="Checkpoint and stop after this many epochs of this invocation (tests, smoke runs).")
@click.option("--nproc-per-node", type=click.IntRange(min=1), metavar="N",
              help="Data-parallel training in N processes on this machine (one per GPU; CPU processes with gloo), "
                   "launched through torchrun: the plan's `devices = N`. batch_size is per process.")
@click.option("--nnodes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Machines of a data-parallel run; run the same command on each, with its --node-rank.")
@click.option("--node-rank", type=click.IntRange(min=0), default=0, show_default=True,
              help="This machine's index among --nnodes (0 on the first).")
@click.option("--rdzv-endpoint", metavar="HOST:PORT",
              help="Where the machines of a run meet (torchrun's c10d rendezvous): the first node and a free port.")
@_handled
def train(file, plan, out, resume, sets, weights, renames, skip_mismatched, device, progress, fast_dev_run,
          watch, max_epochs, nproc_per_node, nnodes, node_rank, rdzv_endpoint) -> None:
    """Run a training plan of FILE: metrics, checkpoints and results go to the run directory.

    Ctrl-C or SIGTERM checkpoints and stops (exit 130 or 143); `--resume` continues exactly
    where the run stopped. `--fast-dev-run` tries everything on one batch first, and the plan's
    `overfit_batches = N` checks that the model can fit a few batches."""
    import gc
    import signal
    gc.enable()   # `dslc` pauses the collector for short commands; a training run is long
    from .api import train as run_plan
    from .runtime.distributed import RESULT_FILE, in_worker
    from .runtime.safety import Interrupted
    from .runtime.trainer import Options
    if fast_dev_run and (resume or out):
        raise click.UsageError("--fast-dev-run writes nothing: it takes no --out or --resume")
    sets = tuple(sets) + _weight_sets(weights, renames, skip_mismatched)
    options = Options(out=out, resume=resume, sets=sets, device=device, progress=progress, fast_dev_run=fast_dev_run,
                      watch=watch == "on", max_epochs=max_epochs, nproc_per_node=nproc_per_node, nnodes=nnodes,
                      node_rank=node_rank, rdzv_endpoint=rdzv_endpoint)
    try:
        run_plan(file, plan, options, out=click.echo, warn=lambda text: click.echo(text, err=True))
    except Interrupted as e:
        how = "interrupted" if e.signum == signal.SIGINT else f"stopped by {signal.Signals(e.signum).name}"
        if not in_worker() or os.environ.get("RANK") == "0" and RESULT_FILE not in os.environ:   # said once
            click.echo(f"{how}: checkpoint written to {e.path}; continue with --resume", err=True)
        sys.exit(128 + e.signum)   # the shell's status for a process ended by that signal


def _weight_sets(weights: str | None, renames: dict, skip_mismatched: bool) -> tuple:
    """--weights, --rename and --skip-mismatched as the `--set`s of the plan fields they stand for, so that
    the run's plan.dl records them (and --resume compares them) like any other setting."""
    import json
    out = (f"init={json.dumps(weights)}",) if weights else ()
    if renames:
        out += ("rename={" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in renames.items()) + "}",)
    return out + (("skip_mismatched=true",) if skip_mismatched else ())


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--plan", "plan", metavar="NAME", help="The training plan (needed when FILE has several).")
@click.option("--run", "run_dir", metavar="DIR", help="The run to sample (default: the latest runs/PLAN*). Its "
              "checkpoints/best.safetensors, else its newest epoch checkpoint.")
@click.option("--model", "model", metavar="NAME", help="The plan's model to sample (e.g. G). Default: the plan's "
              "only model, else the only one taking noise (one float input not computed from the batch).")
@click.option("-n", "n", type=click.IntRange(min=1), metavar="N",
              help="How many samples (default: 64 images, 1 text).")
@click.option("--length", type=click.IntRange(min=0), default=400, show_default=True,
              help="Characters to generate per text sample.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Divides the logits before sampling each character: lower is more conservative.")
@click.option("--prompt", metavar="TEXT", help="The text a language model starts from (default: a newline).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the noise and of every draw.")
@click.option("-o", "--output", metavar="OUT", help="Output file (default: RUN/samples.png, .txt, or .npy for "
              "outputs that are not images).")
@click.option("--set", "sets", multiple=True, metavar="K=V", help="The --set the run was trained with; repeatable. "
              "label=K is --label K.")
@click.option("--device", metavar="DEVICE", callback=_usable_device,
              help="cpu, cuda, ... (default: CUDA when present).")
@click.option("--label", type=click.IntRange(min=0), metavar="K", help="The class of every sample, for a model with "
              "a label input (int64 [B]): a conditional GAN, VAE or diffusion model (also --set label=K). Default: "
              "the classes in turn.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy", callback=lambda c, p, v: _named_inputs(v),
              help="Feed the model's input NAME from a .npy file: one example, or one per sample; repeatable.")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim"]), default="ddpm", show_default=True,
              help="Diffusion models (a plan with a beta_schedule): DDPM's ancestral steps or DDIM's "
                   "deterministic ones (eta = 0).")
@click.option("--steps", type=click.IntRange(min=1), metavar="N", help="Diffusion models: denoising steps, an evenly "
              "spread subsequence of the schedule's T (default: T for ddpm, 50 for ddim).")
@_handled
def sample(file, plan, run_dir, model, n, length, temperature, prompt, seed, output, sets, device, label, inputs,
           sampler, steps) -> None:
    """Generate samples from a trained plan's model: images from a generator or decoder fed
    seeded noise (a PNG grid), images from a diffusion model, or text from a character-level
    language model.

    Images: when the model's output is the size of one example of the data's `x`, the
    outputs are mapped from the data's range (`scale`) to [0, 1] and drawn as a grid;
    other outputs are written as a .npy array. Models with several inputs get noise for
    float inputs, class labels (--label) for int64 [B] ones, or --input files. In a plan
    whose steps declare a beta_schedule, a model of an image and a timestep is sampled
    with --sampler from pure noise. Text: starting from --prompt, each next character is
    drawn from softmax(logits / temperature) of the last `context` ones."""
    from .api import sample as draw
    from .runtime.sample import SampleOptions
    options = SampleOptions(run=run_dir, model=model, n=n, length=length, temperature=temperature, seed=seed,
                            prompt=prompt, output=output, sets=sets, device=device, label=label,
                            inputs=tuple(inputs.items()), sampler=sampler, steps=steps)
    result = draw(file, plan, options, out=lambda line: click.echo(line, err=True))  # warnings too
    if result["kind"] == "text":
        click.echo(result["text"])
        _echo(f"wrote {result['path']}: text from {result['name']} (weights {result['weights']})", err=True)
    elif result["kind"] == "image":
        how = f", {result['sampler']} in {result['steps']} steps" if "sampler" in result else ""
        _echo(f"wrote {result['path']}: {result['shape'][0]} samples of {result['name']}{how} "
                   f"(weights {result['weights']})")
    else:
        _echo(f"wrote {result['path']}: the outputs of {result['name']}, {result['shape']}, are not images "
                   "of the data's `x`, so they are saved as a numpy array")


def _run_options(fn):
    """The options of the commands that use a trained run: which run, which weights, which data."""
    options = [
        click.option("--plan", "plan", metavar="NAME", help="The training plan (needed when FILE has several)."),
        click.option("--run", "run_dir", metavar="DIR", help="The run (default: the latest runs/PLAN*)."),
        click.option("--weights", metavar="best|last|FILE", help="The run's best weights (the default: "
                     "checkpoints/best.safetensors, else its newest epoch checkpoint), its last epoch's, or a "
                     "weights file."),
        click.option("--data", metavar="DATA", help="The plan's data set as a .dl call, another split or another "
                     "set with the same fields: 'digits(test=0.2)'."),
        click.option("--set", "sets", multiple=True, metavar="K=V", help="The --set the run was trained with; "
                     "repeatable."),
        click.option("--device", metavar="DEVICE", callback=_usable_device,
                     help="cpu, cuda, ... (default: CUDA when present)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _data_sets(sets: tuple, data: str | None) -> tuple:
    """--data as the `--set data=...` it stands for."""
    return tuple(sets) + ((f"data={data}",) if data else ())


@main.command("eval")
@click.argument("file", type=click.Path(dir_okay=False))
@_run_options
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True,
              help="The split to measure.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--out", metavar="DIR", help="Where eval-SPLIT.json and confusion-SPLIT.png go (default: the run).")
@_handled
def eval_(file, plan, run_dir, weights, data, sets, device, split, fmt, out) -> None:
    """The loss and metrics of a trained run of FILE's plan on one split: printed, and written as
    RUN/eval-SPLIT.json (with a confusion matrix, confusion-SPLIT.png, for a classifier).

    On the test split with the weights the run ended with, the numbers are result.json's `test`."""
    from .api import evaluate
    from .runtime.evaluate import EvalOptions, json_text, table
    options = EvalOptions(run=run_dir, split=split, weights=weights, out=out, sets=_data_sets(sets, data),
                          device=device)
    result = evaluate(file, plan, options, warn=lambda text: click.echo(text, err=True))
    if fmt == "json":
        click.echo(json_text(result), nl=False)
    else:
        _echo(table(result))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@_run_options
@click.option("--split", type=click.Choice(["test", "val", "train"]), default=None,
              help="The split to predict (default: test).")
@click.option("--input", "inputs", multiple=True, metavar="PATH", type=click.Path(),
              help="Predict these examples instead of a split: images, .csv rows, .npz or .npy arrays, or a "
                   "folder of them; repeatable.")
@click.option("--output", "output_name", metavar="NAME", help="Write this tensor instead of the prediction: an "
              "output of the model, the output of a layer or block (encoder, encoder.conv1) or a named tensor.")
@click.option("--model", "model", metavar="NAME", help="The plan's model (needed when it has several).")
@click.option("-o", "file_out", metavar="OUT", help="The rows' file: .csv, .jsonl or .npz (default: "
              "RUN/predictions.csv).")
@_handled
def predict(file, plan, run_dir, weights, data, sets, device, split, inputs, output_name, model, file_out) -> None:
    """Run a trained run of FILE's plan on a split of its data or on files, and write one row per
    example: its index, target, predicted class and class probabilities (a classifier), value (a
    regression), or the tensor --output names. The first rows and a summary are printed."""
    from .api import predict as run_model
    from .runtime.predict import FORMATS, PredictOptions
    if inputs and (split or data):
        raise click.UsageError("--input predicts files: it takes no --split or --data")
    if file_out and os.path.splitext(file_out)[1].lower() not in FORMATS:
        raise click.BadParameter(f"{file_out}: the rows' file must end in {', '.join(FORMATS)}", param_hint="-o")
    options = PredictOptions(run=run_dir, weights=weights, split=split or "test", inputs=_input_files(inputs),
                             output=output_name, file=file_out, model=model, sets=_data_sets(sets, data),
                             device=device)
    result = run_model(file, plan, options, warn=lambda text: click.echo(text, err=True))
    _echo(result["table"])


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--sweep", "sweep_name", metavar="NAME", help="The sweep (needed when FILE has several).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Trial worker processes on this machine.")
@click.option("--storage", metavar="URL", help="The study's database, an SQLAlchemy URL (default: SQLite at "
              "sweeps/NAME/study.db); the same postgresql://... on several machines runs one study.")
@click.option("--trials", type=click.IntRange(min=1), help="Trials to finish, instead of the sweep's `trials`.")
@click.option("--root", metavar="DIR", default="sweeps", show_default=True,
              help="Where the sweep's folder (DIR/NAME: trials/, trials.csv, best.dl, plots) goes.")
@click.option("--heartbeat", type=click.IntRange(min=1), default=10, show_default=True,
              help="Seconds between a running trial's heartbeats; a trial silent for twice this (its process "
                   "was killed) is failed and its slot given to a new trial.")
@click.option("--device", metavar="DEVICE", callback=_usable_device,
              help="cpu, cuda, ... (default: CUDA when present).")
@_handled
def sweep(file, sweep_name, jobs, storage, trials, root, heartbeat, device) -> None:
    """Run a hyperparameter sweep of FILE (an Optuna study): each trial trains the sweep's plan with
    values drawn from its `space`, in sweeps/NAME/trials/N/. Running the command again resumes
    the study; the same command with a shared --storage on other machines joins it. Writes
    trials.csv, best.dl (the best trial's plan) and history.png, importances.png, parallel.png."""
    import gc
    gc.enable()   # a sweep trains: long-lived, as `train`

    from .api import sweep as run_sweep
    from .runtime.safety import Interrupted
    from .runtime.sweep import SweepOptions
    options = SweepOptions(root=root, storage=storage, jobs=jobs, trials=trials, heartbeat=heartbeat, device=device)
    try:
        run_sweep(file, sweep_name, options, out=_echo, warn=lambda text: click.echo(text, err=True))
    except Interrupted as e:
        click.echo("interrupted: the trial that was running is marked failed; run the command again to resume "
                   "the sweep", err=True)
        sys.exit(128 + e.signum)


@main.command("lr-find")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--plan", "plan", metavar="NAME", help="The training plan (needed when FILE has several).")
@click.option("--min", "start", type=click.FloatRange(min=0, min_open=True), default=1e-7, show_default=True,
              help="The first learning rate.")
@click.option("--max", "end", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="The last learning rate.")
@click.option("--steps", type=click.IntRange(min=2), default=100, show_default=True,
              help="Optimizer steps (one per training batch), the rate growing exponentially from --min to --max.")
@click.option("--out", metavar="DIR", help="The folder for lr_find.png, .jsonl and .json (default: a new "
              "runs/PLAN-lr-find).")
@click.option("--set", "sets", multiple=True, metavar="K=V", help="Override a plan field, as for train; repeatable.")
@click.option("--device", metavar="DEVICE", callback=_usable_device,
              help="cpu, cuda, ... (default: CUDA when present).")
@_handled
def lr_find(file, plan, start, end, steps, out, sets, device) -> None:
    """The learning-rate range test of FILE's plan (Smith 2015): from the plan's initial weights,
    one optimizer step per batch at a rate growing exponentially from --min to --max, until the
    smoothed loss diverges (4 × its lowest). Prints the rate where the smoothed loss falls fastest
    and the --set that trains with it; writes lr_find.png, lr_find.jsonl and lr_find.json.

    Nothing else changes: the weights are built afresh in memory, and only the new folder is written."""
    from .api import lr_find as sweep
    from .runtime.lr_find import LrFindOptions
    if start >= end:
        raise click.BadParameter(f"--min {start:g} must be below --max {end:g}", param_hint="--min")
    options = LrFindOptions(start=start, end=end, steps=steps, out=out, sets=tuple(sets), device=device)
    sweep(file, plan, options, out=_echo, warn=lambda text: click.echo(text, err=True))


@main.command("compress-report")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--plan", "plan", metavar="NAME", help="The training plan (needed when FILE has several).")
@click.option("--run", "run_dir", metavar="DIR", help="The run (default: the latest runs/PLAN*).")
@click.option("--weights", metavar="best|last|FILE", help="The run's best weights (the default), its last "
              "epoch's, or a weights file (a quantization-aware run: the float weights; default: the newest "
              "float checkpoint).")
@click.option("--set", "sets", multiple=True, metavar="K=V", help="The --set the run was trained with; repeatable.")
@click.option("--repeats", type=click.IntRange(min=1), default=100, show_default=True,
              help="Latency: runs of one example (batch 1) whose median is reported.")
@click.option("--onnx/--no-onnx", default=True, show_default=True, help="Also the ONNX model and its int8 variants "
                                                                        "(onnxruntime).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_handled
def compress_report(file, plan, run_dir, weights, sets, repeats, onnx, as_json) -> None:
    """A trained run's model beside its int8 variants (PyTorch dynamic and static, ONNX dynamic and
    static, and a quantization-aware run's own RUN/model.int8.pt): size on disk, parameters and
    sparsity, test-split metrics and CPU latency (batch 1, one thread). Written to
    RUN/compress-report.json too."""
    import json

    from .api import compress_report as measure
    from .runtime.compress_report import ReportOptions, table
    options = ReportOptions(run=run_dir, weights=weights, sets=tuple(sets), repeats=repeats, onnx=onnx)
    result = measure(file, plan, options, warn=lambda text: click.echo(text, err=True))
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _echo(table(result))


def _input_files(paths: tuple) -> tuple:
    """The files of --input: each path, a folder standing for the files in it that predict reads (sorted)."""
    from .runtime.inputs import SUFFIXES
    out = []
    for path in paths:
        if os.path.isdir(path):
            out += sorted(os.path.join(path, f) for f in os.listdir(path)
                          if f.lower().endswith(SUFFIXES) and os.path.isfile(os.path.join(path, f)))
        else:
            out.append(path)
    if paths and not out:
        raise click.BadParameter(f"no image, .csv, .npz or .npy file in {', '.join(paths)}", param_hint="--input")
    return tuple(out)


@main.command()
@click.argument("code")
@_handled
def explain(code: str) -> None:
    """Explain an error code, e.g. `dslc explain E0402`."""
    from .diagnostics import EXPLANATIONS
    from .diagnostics import explain as text
    found = text(code)
    if found is None:
        click.echo(f"unknown error code {code}; codes: {', '.join(sorted(EXPLANATIONS))}", err=True)
        sys.exit(2)
    click.echo(f"{code.upper()}: {found}")


def run() -> None:
    """The `dslc` console command.

    A checked 10,000-line spec leaves about a million objects behind; collecting and
    freeing them at exit would take longer than the check. Like mypy, the command
    pauses the collector, then flushes its output and leaves without the teardown.
    (In-process callers use `main`, which exits normally.)"""
    import gc
    gc.disable()
    try:
        main(standalone_mode=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # closed: the language server's client went away
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
