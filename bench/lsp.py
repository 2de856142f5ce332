"""`dslc lsp` latency: the time from a change to its published diagnostics, as an editor sees it.

A client (pygls's) starts `dslc lsp` over stdio, opens a 500-line spec (bench/frontend.py's
generated one: blocks, graph-form models, loops) and sends `--edits` incremental changes, one
at a time, each waiting for the diagnostics of its version. The edits alternate between one that
breaks a line (a misspelled layer: an error to report) and one that mends it, so both the error
path and the clean path are timed. The edited layer is in a block that every model uses, so
each edit changes what every model computes: a broken text evaluates every model again, from
its last statement before its first use of the block (dslc/lsp/prefix.py), and a mended one is
the text of two checks before, whose models were clean (an undone typo: none is evaluated). The
same edits inside one model are timed too (`model_edit`), and a line typed into the block a
character at a time (`typing`: no text comes back, and most are broken; each check resumes
every model). Results go to bench/results/lsp.json: p50, p95 and the maximum of the
change-to-diagnostics times, and the time to the first diagnostics after opening.

    python bench/lsp.py [--lines 500] [--edits 40] [--out PATH]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

from common import ROOT, write
from frontend import generated_spec
from lsprotocol import types as lsp
from pygls.lsp.client import LanguageClient


class Client(LanguageClient):
    def __init__(self):
        super().__init__("dslc-bench", "1")
        self.waiting: dict = {}   # (uri, version) -> future of its diagnostics


def _on_diagnostics(client: Client, params: lsp.PublishDiagnosticsParams) -> None:
    fut = client.waiting.pop((params.uri, params.version), None)
    if fut is not None and not fut.done():
        fut.set_result(list(params.diagnostics))


async def _timed_change(client: Client, uri: str, version: int, changes: list) -> tuple[float, list]:
    fut = asyncio.get_running_loop().create_future()
    client.waiting[(uri, version)] = fut
    t = time.perf_counter()
    if version == 1:
        client.text_document_did_open(lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri, "dl", 1, changes[0])))
    else:
        client.text_document_did_change(lsp.DidChangeTextDocumentParams(
            lsp.VersionedTextDocumentIdentifier(uri=uri, version=version), changes))
    diags = await asyncio.wait_for(fut, 120)
    return time.perf_counter() - t, diags


BLOCK_LAYER = "Linear(dim)"       # its first one is in block Mlp, which every model uses
MODEL_LAYER = "Linear(classes)"   # its first one is in the first model, which nothing uses


def _edit(text: str, version: int, layer: str) -> tuple[list, str]:
    """Break (even versions) or mend (odd ones) the first `layer` of the spec."""
    broken = layer.replace("(", "r(", 1)
    old, new = (layer, broken) if version % 2 == 0 else (broken, layer)
    i = text.index(old)
    line, col = text.count("\n", 0, i), i - (text.rfind("\n", 0, i) + 1)
    change = lsp.TextDocumentContentChangePartial(lsp.Range(lsp.Position(line, col), lsp.Position(line, col + len(old))),
                                                  new)
    return [change], text[:i] + new + text[i + len(old):]


# a line typed at the end of a line of block Mlp (Enter first): texts that do not parse, with an
# unknown layer, and clean ones
TYPED = "\n    h = h -> Dropout(0.25) -> LayerNorm() -> Identity() -> Dropout(0.5)"
TYPED_AT = "\n    output x + h"   # where in block Mlp


def _typed(text: str, version: int, start: int) -> tuple[list, str]:
    """One more character of TYPED, typed into block Mlp at `start`: no text comes back, and most are broken."""
    i = start + version - 2
    line, col = text.count("\n", 0, i), i - (text.rfind("\n", 0, i) + 1)
    ch = TYPED[(version - 2) % len(TYPED)]
    return [lsp.TextDocumentContentChangePartial(lsp.Range(lsp.Position(line, col), lsp.Position(line, col)), ch)], \
        text[:i] + ch + text[i:]


async def measure(lines: int, edits: int, layer: str | None = BLOCK_LAYER) -> dict:
    client = Client()
    client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)(_on_diagnostics)
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    await client.start_io(sys.executable, "-m", "dslc", "lsp", env=env)
    await client.initialize_async(lsp.InitializeParams(capabilities=lsp.ClientCapabilities()))
    client.initialized(lsp.InitializedParams())
    text = generated_spec(lines)
    with tempfile.TemporaryDirectory() as tmp:
        uri = "file://" + os.path.join(tmp, "bench.dl")
        opened, diags = await _timed_change(client, uri, 1, [text])
        assert diags == [], diags
        times, start = [], text.index(TYPED_AT)
        for version in range(2, edits + 2):
            changes, text = _edit(text, version, layer) if layer is not None else _typed(text, version, start)
            seconds, diags = await _timed_change(client, uri, version, changes)
            # the broken versions, and only they (a typed text is broken or not as it comes)
            assert layer is None or bool(diags) == (version % 2 == 0), (version, diags)
            times.append(seconds)
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return _figures(text, opened, times)


def _figures(text: str, opened: float, times: list[float]) -> dict:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"lines": text.count("\n"), "edits": len(times), "open_s": round(opened, 4),
            "p50_s": round(statistics.median(times), 4), "p95_s": round(p95, 4), "max_s": round(max(times), 4),
            "samples_s": [round(t, 4) for t in times]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=500)
    ap.add_argument("--edits", type=int, default=40)
    ap.add_argument("--out", help="write the results here instead of bench/results/lsp.json")
    args = ap.parse_args(argv)
    result = asyncio.run(measure(args.lines, args.edits))
    result["model_edit"] = asyncio.run(measure(args.lines, args.edits, MODEL_LAYER))
    result["typing"] = asyncio.run(measure(args.lines, min(args.edits, len(TYPED)), None))
    for what, r in (("in a block all models use", result), ("in one model", result["model_edit"]),
                    ("typing a line into that block", result["typing"])):
        print(f"{r['lines']} lines, {r['edits']} edits {what}: change to diagnostics p50 {r['p50_s']:.3f} s, "
              f"p95 {r['p95_s']:.3f} s, max {r['max_s']:.3f} s; open {r['open_s']:.3f} s")
    if args.out:
        import json
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    else:
        print(write("lsp", result))


if __name__ == "__main__":
    main()
