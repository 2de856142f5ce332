"""The `dslc` command line: click commands that parse flags and call the API.

Exit status: 0 success, 1 a user error (diagnostics were printed to stderr),
2 a usage error (click's), 3 an internal error (one line; the traceback only
with --debug). Heavy imports (torch) happen inside the commands that need them.
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
            click.echo(e.render(), err=True)
            sys.exit(EXIT_USER)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (SystemExit, click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:  # noqa: BLE001 - the last line of defence
            if _Context.debug:
                raise
            click.echo(f"internal error, please report: {type(e).__name__}: {e} "
                       "(rerun with --debug for the traceback)", err=True)
            sys.exit(EXIT_INTERNAL)
    return wrapper


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
            click.echo(_check_one(path))
        except DslcError as e:
            click.echo(e.render(), err=True)
            failed = True
    sys.exit(EXIT_USER if failed else 0)


def _check_one(path: str) -> str:
    from .api import load
    prog = load(path)
    counts = [(len(prog.unit.of_kind(k)), k) for k in ("model", "block", "loss", "train")]
    parts = [f"{n} {'plan' if k == 'train' else k}{'s' if n != 1 else ''}" for n, k in counts if n]
    return f"ok: {path}: {', '.join(parts) or 'nothing to check'}"


def model_args(sets: tuple[str, ...]) -> dict:
    """`--set` values as model parameter arguments."""
    from .frontend.settings import literal_args, parse_sets
    return literal_args(parse_sets(sets))


@main.command("compile")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--model", "model", metavar="NAME", help="Compile only this model (default: every model).")
@click.option("--target", type=click.Choice(["pytorch"]), default="pytorch", show_default=True,
              help="What to generate.")
@click.option("-o", "--output", metavar="OUT", help="Output file; `-` for stdout. Default: FILE's name with .py, "
                                                    "in the current directory.")
@click.option("--set", "sets", multiple=True, metavar="K=V", help="Override a model parameter (a .dl literal); "
                                                                  "repeatable.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the initial weights.")
@_handled
def compile_(file, model, target, output, sets, seed) -> None:
    """Compile FILE to a standalone PyTorch file (needs only torch)."""
    from .api import load
    params = model_args(sets)
    prog = load(file)
    names = [model] if model else None
    if model:
        prog._decl(model)
    source = prog.source(names, seed, **params)
    if not model:
        for name, needs in prog.needs_arguments().items():
            click.echo(f"note: skipped `{name}`: it needs {', '.join(needs)} "
                       f"(compile it with --model {name} --set {needs[0]}=...)", err=True)
    out = output or os.path.splitext(os.path.basename(file))[0] + ".py"
    if out == "-":
        click.echo(source, nl=False)
        return
    _write(out, source, explicit=output is not None)
    click.echo(f"wrote {out}", err=True)


def _write(path: str, text: str, explicit: bool) -> None:
    """Write atomically; never replace a file dslc did not write unless -o named it."""
    from .diagnostics import Diagnostic, DslcError
    if not explicit and os.path.exists(path) and not _written_by_dslc(path):
        raise DslcError(Diagnostic("E0902", f"refusing to overwrite {path}: dslc did not write it",
                                   file_name=path, help="name the output with -o"))
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise DslcError(Diagnostic("E0902", f"cannot write {path}: {e.strerror}", file_name=path)) from None


def _written_by_dslc(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return "generated by dslc" in f.read(400)
    except (OSError, UnicodeDecodeError):
        return False


@main.command()
@click.argument("code")
@_handled
def explain(code: str) -> None:
    """Explain an error code, e.g. `dslc explain E0402`."""
    from .diagnostics import EXPLANATIONS, explain as text
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
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
