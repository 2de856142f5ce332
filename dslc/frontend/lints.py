"""Warnings for the classic mistakes of a training set-up, found in the checked graphs.

Each stops nothing (a warning, as `dslc check` prints them) and points at the line to change:
- W0401 a model whose output comes out of a `Dropout`: it zeroes outputs in training only, so
  the loss trains on noise the predictions never have;
- W0501 probabilities given to a loss that applies the softmax or sigmoid itself
  (`Softmax()` into `cross_entropy`, `Sigmoid()` into `bce_with_logits`): squashed twice, the
  gradients shrink and training stalls;
- W0502 probabilities given to `nll`, which takes log-probabilities (`log` is missing);
- W0503 `bce` of an output straight out of a layer with weights, which gives logits: bce takes
  probabilities (values outside [0, 1] make it fail or clamp);
- W0504 a `BatchNorm` that sees one value per feature, in a plan whose batches hold one example:
  torch refuses to train it ("Expected more than 1 value per channel when training").

What a loss takes and what an activation gives are the registry's facts (`expects`, `produces`).
"""
from __future__ import annotations

from .. import catalog
from ..diagnostics import Diagnostic, Label, Reporter
from ..ir.dims import Sym, plain
from ..ir.graph import Graph
from ..ir.values import Ref, TensorValue
from ..ops.registry import SAME_VALUE
from .producers import producer


def lint_model(graph: Graph, reporter: Reporter) -> None:
    """W0401 for each output of a model that comes out of a dropout."""
    for name, ref in graph.outputs:
        found = _last_dropout(graph, ref)
        if found is not None:
            reporter.add(Diagnostic(
                "W0401", f"`{graph.name}`'s output `{name}` comes out of a dropout: in training it zeroes "
                f"outputs the loss then scores, and at inference it does nothing", found.span,
                label="the model's last layer", severity="warning",
                help="drop it, or move it before the last layer with weights (as torchvision's classifiers do)"))


def _last_dropout(graph: Graph, ref: Ref):
    """The dropout node `ref` comes out of (through reshapes and the ends of blocks), or None."""
    while True:
        node = graph.nodes[ref.node]
        if node.kind == "call" and isinstance(node.args.get("graph"), Graph):
            graph = node.args["graph"]
            ref = graph.outputs[ref.index][1]
        elif node.kind == "op" and node.op is not None and node.op.category == "dropout":
            return node
        elif node.kind == "op" and node.op is not None and node.op.category in SAME_VALUE and node.inputs:
            ref = node.inputs[0]
        else:
            return None


def lint_plan(plan, reporter: Reporter) -> None:
    """The loss lints of each step, W0504 for the plan's batch sizes, and W0401 for its models."""
    for step in plan.steps:
        for node in step.graph:
            if node.kind == "op" and node.op is not None and node.op.expects:
                _lint_loss(step.graph, node, reporter)
    if 1 in batch_sizes(plan):
        for _decl, _args, graph in plan.models.values():
            for node in single_value_norms(graph):
                reporter.add(_one_example_batches(node, plan))
    for _decl, _args, graph in plan.models.values():
        lint_model(graph, reporter)


def batch_sizes(plan) -> set:
    """Every batch size the plan trains with (its own, and each phase's)."""
    sizes = {plain(catalog.setting(plan.fields, "batch_size"))}
    return sizes | {plain(p.fields["batch_size"]) for p in plan.phases if "batch_size" in p.fields}


def _lint_loss(graph: Graph, node, reporter: Reporter) -> None:
    value = node.args.get("input")
    if not isinstance(value, TensorValue):
        return
    found = producer(graph, value.ref)
    loss, expects = node.op.name, node.op.expects
    makes = found.op.produces if found is not None else ""
    where = _where(found, node)
    if expects == "logits" and makes == "probabilities":
        squash = "softmax" if loss == "cross_entropy" else "sigmoid"
        reporter.add(Diagnostic(
            "W0501", f"`{loss}` applies the {squash} itself, and its input already went through "
            f"`{found.op.name}`: the {squash} twice squashes the gradients", node.span, label="takes logits",
            labels=where, severity="warning",
            help=f"remove `{found.op.name}` from the model and apply the {squash} to its output when predicting, "
                 "or use " + ("`nll(log(...), ...)`" if loss == "cross_entropy" else "`bce`")))
    elif expects == "log_probabilities" and makes == "probabilities":
        reporter.add(Diagnostic(
            "W0502", f"`{loss}` takes log-probabilities, and its input holds the probabilities of "
            f"`{found.op.name}`", node.span, label="takes log-probabilities", labels=where, severity="warning",
            help="take their log (`nll(log(out), ...)`), end the model with `LogSoftmax()`, or give the logits to "
                 "`cross_entropy`"))
    elif expects == "probabilities" and found is not None and not makes and found.op.weights is not None:
        reporter.add(Diagnostic(
            "W0503", f"`{loss}` takes probabilities in [0, 1], and its input comes straight out of "
            f"`{found.op.name}`: logits", node.span, label="takes probabilities", labels=where, severity="warning",
            help="use `bce_with_logits`, which applies the sigmoid itself (and is stabler), or end the model "
                 "with `Sigmoid()`"))


def _where(found, node) -> tuple:
    """A label on the op that made the loss's input, when it is written in the loss's file."""
    if found is None or found.node.span is None or node.span is None or found.node.span.file is not node.span.file:
        return ()
    return (Label(found.node.span, f"`{found.op.name}` makes the input"),)


def single_value_norms(graph: Graph) -> list:
    """The batch norms of a model (its blocks' included) that see one value per feature per example:
    a [B, C] input, or spatial sizes of 1. Over a batch of one example, torch cannot train them."""
    out = []
    for node in graph:
        if node.kind == "call" and isinstance(node.args.get("graph"), Graph):
            out += single_value_norms(node.args["graph"])
        elif node.kind == "op" and node.op is not None and node.op.category == "batchnorm" and node.inputs:
            shape = graph.type_of(node.inputs[0]).shape
            if all(not isinstance(d, Sym) and plain(d) == 1 for d in shape[2:]):
                out.append(node)
    return list({id(n): n for n in out}.values())


def _one_example_batches(node, plan, which: str = "") -> Diagnostic:
    """W0504 at a batch norm; `which`: the batch of one, when it is the training split's last."""
    which = which or f"the plan `{plan.name}` trains on batches of one example"
    return Diagnostic(
        "W0504", f"`{node.op.name}` normalizes each feature over the batch, and {which}: torch refuses to train it "
        "(\"Expected more than 1 value per channel when training\")", node.span, label="one value per feature",
        severity="warning", help="train with batches of 2 or more examples, or use `LayerNorm()`, which normalizes "
        "each example alone")


def last_batch_of_one(plan, examples: int, sizes) -> list:
    """W0504 for a training split whose last batch would hold one example (`examples` of them, at each
    of the batch sizes `sizes`), when a model has a batch norm that cannot train on it."""
    bad = [bs for bs in sorted(sizes) if bs > 1 and examples % bs == 1]
    if not bad:
        return []
    which = f"the last batch of the training split ({examples} examples, batch_size {bad[0]}) holds one"
    return [_one_example_batches(node, plan, which) for _d, _a, graph in plan.models.values()
            for node in single_value_norms(graph)]


__all__ = ["batch_sizes", "last_batch_of_one", "lint_model", "lint_plan", "single_value_norms"]
