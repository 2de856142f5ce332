"""Error and warning codes by phase, each with the text `dslc explain CODE` prints.

E01xx syntax · E02xx names and imports · E03xx arguments and types ·
E04xx shapes · E05xx plans and data · E06xx training time · E07xx limits of
compile-time evaluation (each names the limit it hit) · E09xx files ·
Wxxxx warnings, which stop nothing (numbered like the errors of their phase).
"""
from __future__ import annotations

EXPLANATIONS: dict[str, str] = {
    # syntax
    "E0101": "The parser met a token it did not expect. Check for a missing bracket, comma or brace near the caret.",
    "E0102": "A string literal is not closed before the end of the line. Strings are written \"like this\" on one line.",
    "E0103": "A character that is not part of the `.dl` language. Comments start with `#`.",
    "E0104": "A bracket, parenthesis or brace was opened and never closed before the end of the file.",
    "E0105": "The file is not valid UTF-8 text (perhaps a binary file).",
    "E0106": "The expression nests too deeply. Split it into named steps.",
    "E0107": "This statement is not allowed here (for example `input` outside a model or block, or `step` outside a training plan).",
    "E0108": "The left-hand side of `=` must be a name or a tuple of names such as `out, (h, c)`.",
    # names and imports
    "E0201": "The name is not defined in this scope: not a parameter, a bound tensor, a layer, a function or a declaration.",
    "E0202": "No layer of that name exists. Layers are capitalized and follow torch.nn (`Linear`, `Conv2d`, ...).",
    "E0203": "No function of that name exists. Functions are lower-case (`relu`, `concat`, ...).",
    "E0204": "Two declarations (models, blocks, losses or plans) share a name; names must be unique across a file and its imports.",
    "E0205": "The file cannot be imported: it does not exist, is not a regular file, or its name does not end in "
             "`.dl` (imports must be `.dl` files). Import paths are relative to the importing file.",
    "E0206": "Files import each other in a cycle.",
    "E0207": "A block uses itself, directly or through other blocks: blocks unroll at compile time, so recursion would never end.",
    "E0208": "The attribute does not exist on this value.",
    "E0209": "The model or plan named on the command line does not exist in the file.",
    "E0210": "Two layers take one name (`as name`, `name = Layer(...)`): a name is one layer of its model or "
             "block, and a `param` or `buffer` name is taken the same way. Inside a loop, a name given on every "
             "pass would name a new layer each time: make the layer "
             "once before the loop and apply it inside to share it, or leave it unnamed for one per pass.",
    "E0211": "The name would break the generated Python: it is a Python keyword, a dunder name, or an attribute "
             "that torch.nn.Module or the generated file relies on. Choose another name.",
    "E0212": "`repeat n as name` and `for ... as name` keep one layer or block per pass in a list (an "
             "`nn.ModuleList`), so each pass must apply one layer with weights or one block to the value the pass "
             "before made, and only the next pass may read it.",
    # arguments and types
    "E0301": "The argument has the wrong type for this parameter.",
    "E0302": "The value is outside the range this parameter accepts.",
    "E0303": "A required argument is missing.",
    "E0304": "More positional arguments were given than the callee accepts.",
    "E0305": "The keyword does not name a parameter of the callee.",
    "E0306": "An argument was given twice, by position and by keyword, or twice by keyword.",
    "E0307": "The value cannot be used here (for example a tensor where a compile-time number is needed).",
    "E0308": "A compile-time expression failed: division by zero, an index out of range, or an unsupported operation.",
    "E0309": "The number of names on the left of `=` does not match the number of values on the right.",
    "E0310": "The tensor has the wrong element type (dtype) for this operation.",
    "E0311": "A compile-time condition depends on a symbolic dimension such as `B`, whose value is only known at run time.",
    # shapes
    "E0401": "The shapes of the operands cannot be broadcast together.",
    "E0402": "The layer expects an input of a different rank (number of dimensions).",
    "E0403": "The sizes along a dimension do not match.",
    "E0404": "The kernel (or window) is larger than the input it slides over.",
    "E0405": "The size does not divide evenly (for example `heads` must divide the embedding width).",
    "E0406": "The dimension index is out of range for the tensor's rank.",
    "E0407": "The new shape does not have the same number of elements as the old one.",
    "E0408": "A layer or block shared by name is applied to inputs it was not made for: its inferred sizes "
             "(`in_features`, a block's layers) would differ from its first application's.",
    "E0409": "The layer received the wrong number of input tensors.",
    # plans and data
    "E0501": "The training plan is missing a required field.",
    "E0502": "The training plan field is unknown.",
    "E0503": "The data set is unknown.",
    "E0504": "The model's input does not match the data set's fields (shape or dtype), or its batches are too small "
             "for a run-time requirement of the model (`h[7]` on the batch needs more than 7 examples).",
    "E0505": "The loss must reduce to a single number (a 0-d tensor).",
    "E0506": "A name in `freeze`/`unfreeze`/`prune` does not name a layer of the model (or `prune`'s names no "
             "convolution or linear layer).",
    "E0507": "A trainable parameter is updated by no optimizer, or by several in one step.",
    "E0508": "A data file cannot be read, or its contents do not fit the data set (paths are relative to the "
             "plan's file).",
    "E0509": "A key of a sweep's `space` is neither a field of its plan (what `dslc train --set` accepts: "
             "`epochs`, `optimizer.lr`, `model.hidden`) nor a parameter of the plan's model.",
    "E0510": "A sweep's range does not fit its key: an int parameter takes `int_uniform`, `int_loguniform` or "
             "int choices, a float one `uniform` or `loguniform` (whose bounds must be above 0); the lower bound "
             "must be below the upper one; and the plan must check with the bounds and with every choice. The "
             "grid sampler needs `choice([...])` for every key.",
    "E0511": "A sweep's objective names a number its plan does not log in metrics.jsonl (`val_<metric>` needs "
             "the metric in `metrics` and a validation split).",
    "E0512": "A sweep's settings are wrong: an unknown or repeated setting, no `plan` (or one that is not a "
             "training plan), an objective not written `maximize(METRIC)`/`minimize(METRIC)`, an unknown sampler "
             "or pruner, `trials` below 1, or not exactly one `space`.",
    "E0513": "A step makes a layer, block or model of its own (`z = Linear(3)(model(batch.x))`, `Head()(x)`, "
             "`Adam(Head())`). It "
             "would be a module of the step, outside every model: no optimizer would train its weights, no "
             "checkpoint would save them or its running statistics, and evaluation would leave it in training "
             "mode. A step applies the plan's models by their names (and their `ema` targets), functions, and "
             "layers without weights that are written as functions (`ReLU()`, `Flatten()`); `dropout(x, p=0.1)` "
             "is the function of `Dropout`. A name given with `as` (`x = Linear(3) as head`) makes the layer a "
             "module too, and is no name to apply it by in a step. Declare the layer in a model: at the end of the plan's model, or in "
             "a model of its own, listed in the plan's `models` and named by the optimizer that trains it.",
    # training time
    "E0601": "The loss became NaN or infinite.",
    "E0602": "A checkpoint could not be read or does not match the model.",
    "E0603": "The run directory cannot be used.",
    "E0604": "The model or its loss failed on a batch of the data (labels out of range, for example).",
    "E0605": "The run directory is in use by another dslc process (a run folder is held by one process at a time).",
    "E0606": "The run cannot be resumed as asked: it has finished, or its plan changed since it started "
             "(`--set epochs=N` continues a finished run for more epochs).",
    "E0607": "The device asked for (`--device cuda`, `mps`, `cuda:1`) is not on this machine, or this build of "
             "torch cannot use it (a CPU-only torch has no CUDA). Leave out --device to train on CUDA when it is "
             "present and on the CPU otherwise.",
    "E0608": "A sweep's study storage (`--storage`, an SQLAlchemy URL) cannot be opened or used: a malformed URL, "
             "a database driver that is not installed, a server that cannot be reached or refuses the user.",
    "E0609": "Data-parallel training stopped: a process failed or was killed (the others are stopped), a process "
             "lost contact with the others, or the launch options cannot work (several machines without "
             "--rdzv-endpoint, a mid-epoch checkpoint resumed with another number of processes).",
    # limits: compile-time evaluation is bounded, so a check always ends in bounded time and memory
    "E0701": "An integer is larger than the language allows (its magnitude must stay below 2**63, the range of "
             "int64 that PyTorch and ONNX use).",
    "E0702": "A list, string, `range` or `repeat` is longer than the language allows.",
    "E0703": "The model unrolls to more layers and operations than the language allows (loops, repeats and "
             "blocks are expanded at compile time).",
    "E0704": "A string literal or source file is larger than the language allows.",
    "E0705": "Blocks, imports or expressions nest more deeply than the language allows. Split them into named "
             "steps or flatter blocks.",
    "E0706": "A tensor would have more elements than int64 can count (the product of its sizes is 2**63 or more).",
    "E0707": "A file has more errors or declarations than are reported; fix the first ones and check again.",
    "E0708": "The model's weights would not fit: in this machine's memory (building it), or in one ONNX file "
             "(2 GiB, the protobuf limit).",
    # files
    "E0901": "The file could not be read.",
    "E0902": "The output could not be written.",
    # warnings
    "W0201": "A model, block or loss takes the name of a library layer, function or loss (`block LayerNorm`). "
             "It hides the library's: in its file and the files that import it, the name means the declaration "
             "(inside the block itself, a use of the name is the block again). Rename it to keep both.",
    "W0401": "A model's output comes out of a `Dropout` (its last layer, or its last block's): in training it "
             "zeroes outputs the loss then scores, and at inference it does nothing. Put dropout before the last "
             "layer with weights.",
    "W0501": "A loss that applies the softmax or sigmoid itself is given probabilities: `Softmax()` into "
             "`cross_entropy`, `Sigmoid()` into `bce_with_logits`. Squashed twice, the outputs stay near uniform "
             "and the gradients shrink. Give the loss the logits (drop the activation from the model, and apply "
             "it when predicting), or use the loss that takes probabilities (`nll(log(p), y)`, `bce`).",
    "W0502": "`nll` is given probabilities (after a softmax or sigmoid): it takes log-probabilities. Take their "
             "`log`, end the model with `LogSoftmax()`, or give the logits to `cross_entropy`.",
    "W0503": "`bce` is given the output of a layer with weights (`Linear`, `Conv2d`, ...): logits, not the "
             "probabilities in [0, 1] it takes. Use `bce_with_logits`, or end the model with `Sigmoid()`.",
    "W0504": "A `BatchNorm` that sees one value per feature (a [B, C] input, or spatial sizes of 1) is trained on "
             "batches of one example (`batch_size = 1`, or a training split whose last batch holds one): it "
             "normalizes over the batch, and torch refuses (\"Expected more than 1 value per channel when "
             "training\"). Use batches of 2 or more, or `LayerNorm()`.",
    "W0601": "A `rename` rule of the plan (or a --rename of the command line) matches no name in the weights file: "
             "its prefix is misspelled, or the file is laid out otherwise. The report lists the file's names.",
    "W0602": "With `overfit_batches = N` the plan trained on N batches only, and the loss on them did not reach "
             "near zero (1% of where it started). A model, loss and optimizer that work can memorize a few "
             "batches: check the learning rate (0, or far too small), the loss and the labels, that the layers "
             "are not frozen, or give it more epochs.",
    "W0701": "A layer's gradients vanished (norm below 1e-7, and 10,000 times below the largest layer's) on 3 "
             "health checks in a row: the layers below it barely learn. Saturating activations (sigmoid, tanh) in "
             "a deep stack do this; ReLU with BatchNorm, or residual connections, do not.",
    "W0702": "A layer's gradients exploded (norm above 1e4, or not finite): lower the learning rate, clip the "
             "gradients (`clip_grad_norm`), normalize the inputs.",
    "W0703": "A ReLU is dead: more than 90% of the outputs of the layer before it are <= 0 on a checked batch, so "
             "those units pass no gradient (a large negative bias, a learning rate too high).",
    "W0704": "The training loss did not decrease over the first epoch (the mean of its last quarter of batches "
             "is not below that of its first quarter): check the learning rate, the labels, frozen layers.",
    "W0705": "A layer whose weights an optimizer updates gets no gradient at all: its parameters' `.grad` is None "
             "at a health check, as at every check before, so the loss does not use the layer (a head left out of "
             "the loss, a branch whose output goes nowhere). Its weights stay as initialized. Use its output in "
             "the loss, remove it, or `freeze` it: frozen layers are not checked. Such a layer has no "
             "`grad_norm/NAME`, and is not taken for one whose gradients vanished (W0701).",
}


def explain(code: str) -> str | None:
    """The explanation of an error code, or None when the code is unknown."""
    return EXPLANATIONS.get(code.upper())
