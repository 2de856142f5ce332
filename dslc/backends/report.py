"""`dslc report`: one self-contained HTML page for a model or for a training run.

Everything is inline (styles, scripts, images as data URLs), so the file opens offline and can be
mailed. The model page holds the Graphviz diagram as SVG, where a click on a closed block shows
the diagram with that block open (each such diagram is drawn ahead, up to MAX_VARIANTS), and
hovering a box shows its shape, parameters and spec line; the summary table, sortable; the
parameters and MACs of the top-level layers as bars; and the highlighted spec, each line a
target of the diagram's links. The run page holds the plan, the curves (inline SVG; hovering
shows an epoch's values), the result, and the run's pictures and checkpoints.
"""
from __future__ import annotations

import base64
import html
import json
import os
import re

from jinja2 import Environment, PackageLoader, select_autoescape
from pygments import highlight
from pygments.formatters import HtmlFormatter

from .diagram import _graphviz, auto_depth, to_dot
from .highlight import DlLexer
from .summary import format_count, macs_value, summarize

MAX_VARIANTS = 64
_BLOCK_ID = re.compile(r'<g id="block:([^"]+)"')


def _env() -> Environment:
    return Environment(loader=PackageLoader("dslc.backends", "templates"), autoescape=select_autoescape())


def source_html(text: str) -> str:
    """The spec highlighted, one anchor per line (`#L-12`), styles inline."""
    return highlight(text, DlLexer(), HtmlFormatter(noclasses=True, lineanchors="L", linenos="inline",
                                                      anchorlinenos=True, style="friendly"))


# ---------------------------------------------------------------- the model page

def model_page(graph, source_name: str, source_text: str) -> str:
    """The page of a checked model graph whose spec is `source_text` (file `source_name`)."""
    summary = summarize(graph)
    depth = auto_depth(graph)
    diagrams = _diagrams(graph, depth, source_name)
    rows = [{"name": r.name, "type": r.type, "shape": r.output_shape, "params": r.params,
             "macs": _known_macs(r.macs), "depth": r.depth} for r in summary.layers]
    macs = _known_macs(summary.macs)
    return _env().get_template("model.html").render(
        name=graph.name, file=os.path.basename(source_name), summary=summary, rows=rows,
        bars=_bars(rows), total_params=format_count(summary.total_params),
        macs=format_count(macs) if macs is not None else str(summary.macs),
        base=diagrams.pop(""), variants=diagrams, source=source_html(source_text))


def _known_macs(macs) -> int | None:
    """MACs as a number, or None where they depend on a run-time size that has no value."""
    value = macs_value(macs)
    return value if isinstance(value, int) else None


def _diagrams(graph, depth: int, source_name: str) -> dict:
    """{"": the diagram as drawn by default, block path: the diagram with that block (and the
    blocks around it) open}, breadth first from the outermost blocks, at most MAX_VARIANTS."""
    out = {"": _svg(to_dot(graph, depth, source=source_name))}
    queue = list(dict.fromkeys(_BLOCK_ID.findall(out[""])))
    while queue and len(out) <= MAX_VARIANTS:
        path = queue.pop(0)
        if path in out:
            continue
        svg = _svg(to_dot(graph, depth, expand=_ancestors(path), source=source_name))
        out[path] = svg
        queue += [p for p in dict.fromkeys(_BLOCK_ID.findall(svg)) if p not in out]
    return out


def _ancestors(path: str) -> frozenset:
    """`layer1.0` opens `layer1` and `layer1.0` (a name with a dot, `h.3`, opens `h` too: harmless)."""
    parts = path.split(".")
    return frozenset(".".join(parts[:i]) for i in range(1, len(parts) + 1))


def _svg(dot_source: str) -> str:
    """Graphviz's SVG without its XML prologue, ready to sit inside the page."""
    svg = _graphviz(dot_source, "svg").decode("utf-8")
    return svg[svg.index("<svg"):]


def _bars(rows: list) -> list:
    """The top-level layers' parameters and MACs as fractions of the largest, for the bar chart."""
    top = [r for r in rows if r["depth"] == 0 and (r["params"] or r["macs"])]
    most_p = max((r["params"] for r in top), default=0) or 1
    most_m = max((r["macs"] or 0 for r in top), default=0) or 1
    return [{"name": r["name"], "type": r["type"], "params": r["params"], "macs": r["macs"] or 0,
             "p": r["params"] / most_p, "m": (r["macs"] or 0) / most_m,
             "params_text": format_count(r["params"]), "macs_text": format_count(r["macs"] or 0)} for r in top]


# ---------------------------------------------------------------- the run page

def run_page(run_dir: str, out_dir: str) -> str:
    """The page of a run folder; links (checkpoints) are relative to `out_dir`, where the page goes."""
    records = _metrics(os.path.join(run_dir, "metrics.jsonl"))
    result = _json(os.path.join(run_dir, "result.json"))
    plan_text = _text(os.path.join(run_dir, "plan.dl"))
    pictures = [(title, _data_url(os.path.join(run_dir, file)))
                for title, file in (("Confusion matrix (test split)", "confusion.png"), ("Samples", "samples.png"),
                                    ("Training health", "health.png"))
                if os.path.isfile(os.path.join(run_dir, file))]
    return _env().get_template("run.html").render(
        run=os.path.basename(os.path.abspath(run_dir)), plan=source_html(plan_text) if plan_text else None,
        charts=_charts(records), result=_result_rows(result), headline=_headline(_result_rows(result), records),
        pictures=pictures,
        checkpoints=_checkpoints(run_dir, out_dir), data=json.dumps(_series(records)))


def _metrics(path: str) -> list:
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [r for r in (json.loads(line) for line in f if line.strip()) if "step" not in r]


def _json(path: str):
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _text(path: str) -> str | None:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


def _data_url(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def _series(records: list) -> dict:
    """{metric: [[epoch, value], ...]} for every number logged per epoch (per-layer health aside)."""
    out: dict = {}
    for r in records:
        for k, v in r.items():
            if k != "epoch" and "/" not in k and isinstance(v, (int, float)) and not isinstance(v, bool):
                out.setdefault(k, []).append([r["epoch"], v])
    return out


def _charts(records: list) -> list:
    """The charts to draw: losses together, each group of metrics together, then the learning rate."""
    series = _series(records)
    losses = [k for k in series if k.endswith("loss")]
    metrics = sorted({k.split("_", 1)[1] for k in series if k.startswith(("val_", "train_")) and not k.endswith("loss")})
    charts = [{"title": "Loss", "keys": losses}] if losses else []
    for m in metrics:
        keys = [k for k in (f"train_{m}", f"val_{m}") if k in series]
        charts.append({"title": m.replace("_", " ").capitalize(), "keys": keys})
    if "lr" in series:
        charts.append({"title": "Learning rate", "keys": ["lr"]})
    return charts


def _result_rows(result) -> list:
    """result.json flattened to (name, value) rows: `test.accuracy`, `best_epoch`, ..."""
    if not isinstance(result, dict):
        return []
    rows = []
    for k, v in result.items():
        if isinstance(v, dict):
            rows += [(f"{k}.{k2}", _fmt(v2)) for k2, v2 in v.items()]
        else:
            rows.append((k, _fmt(v)))
    return rows


def _headline(rows: list, records: list) -> list:
    """The header's facts: the test split's numbers and the epochs run (else the last epoch's)."""
    picked = [(k, v) for k, v in rows if k.startswith("test.")] + [(k, v) for k, v in rows if k == "epochs_run"]
    if not picked and records:
        last = records[-1]
        picked = [(k, _fmt(v)) for k, v in last.items() if k == "epoch" or k.startswith("val_")]
    return picked


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else html.unescape(str(v))


def _checkpoints(run_dir: str, out_dir: str) -> list:
    folder = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(folder):
        return []
    return [(name, os.path.relpath(os.path.join(folder, name), out_dir).replace(os.sep, "/"))
            for name in sorted(os.listdir(folder)) if not name.startswith(".")]
