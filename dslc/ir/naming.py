"""Attribute names for a graph's instances: the names in generated code,
state-dict keys, ONNX initializers, summaries and diagrams all come from here.

A user's `as name` or `param name` wins. Other instances are named after
their op's stem (`conv`, `bn`, `fc`) or their block (`conv_bn_relu`): the
bare stem when it occurs once in the graph, numbered from 1 otherwise
(`conv1`, `conv2`), skipping names the user took and names that would
break the module (`forward`, `train`: see MODULE_ATTRIBUTES).

The name sets here say which names Python code may use where; the checker
(frontend) refuses a user's name that would break the generated file, and
the PyTorch backend renames its own names around them.
"""
from __future__ import annotations

import keyword
import re

from .graph import Graph, Instance

PY_KEYWORDS = frozenset(keyword.kwlist)  # soft keywords (match, case, type, _) are ordinary names

# The public attributes of torch.nn.Module (torch 2.13, tests/test_names.py checks it against the
# installed torch): a layer named like one would replace a method or flag of the generated module.
# Private ones are all refused by their leading `_`.
MODULE_ATTRIBUTES = frozenset({
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children", "compile",
    "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer",
    "get_extra_state", "get_parameter", "get_submodule", "half", "ipu", "load_state_dict", "modules", "mtia",
    "named_buffers", "named_children", "named_modules", "named_parameters", "parameters",
    "register_backward_hook", "register_buffer", "register_forward_hook", "register_forward_pre_hook",
    "register_full_backward_hook", "register_full_backward_pre_hook", "register_load_state_dict_post_hook",
    "register_load_state_dict_pre_hook", "register_module", "register_parameter",
    "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_", "set_extra_state",
    "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train", "training", "type", "xpu",
    "zero_grad",
})

# The module-level names a generated constructor refers to, besides the file's classes and helpers:
# a model parameter (a constructor argument, by the user's name) called so would hide them.
# tests/test_names.py checks every generated constructor against this list.
CONSTRUCTOR_GLOBALS = frozenset({"torch", "nn", "F", "math", "super", "ValueError", "float", "range", "max", "min"})
# Of those, the ones a block's parameter may still be called: the block's class renames it (`range_`).
RENAMED_IN_BLOCKS = frozenset({"math", "range", "max", "min"})
# Read by a constructor only where no model parameter is called so (a block's is renamed): `len(hidden)`
# checks a list's length, and a model with a parameter `len` checks the whole list instead.
READ_WHERE_FREE = frozenset({"len"})


def attribute_problem(name: str) -> str | None:
    """Why `name` cannot be a module attribute, a state-dict key the user chose (None if it can)."""
    if name in PY_KEYWORDS:
        return "it is a Python keyword"
    if name.startswith("_"):
        return "names starting with `_` are torch.nn.Module's private attributes"
    if name in MODULE_ATTRIBUTES:
        return f"it would replace torch.nn.Module's own `{name}`"
    return None


def parameter_problem(name: str, module_names=frozenset(), renamed: bool = False) -> str | None:
    """Why `name` cannot be a generated constructor's argument, a model's keyword (None if it can).
    `module_names`: the helpers the generated file may define besides CONSTRUCTOR_GLOBALS.
    `renamed`: a block's parameter, passed by position, which the generated class renames around
    RENAMED_IN_BLOCKS (`range_`)."""
    if name in PY_KEYWORDS:
        return "it is a Python keyword"
    if name == "self":
        return "the generated constructor's first argument is `self`"
    if name.startswith("__"):
        return "Python renames names starting with `__` inside a class"
    if name in module_names or name in CONSTRUCTOR_GLOBALS and not (renamed and name in RENAMED_IN_BLOCKS):
        return f"it would hide `{name}`, which the generated constructor uses"
    return None


# Acronyms that would split badly (`ConvBnReLU6` -> `conv_bn_re_lu6`), spelled as words first.
_WORDS = {"ReLU": "Relu", "GELU": "Gelu", "SiLU": "Silu", "PReLU": "Prelu", "LSTM": "Lstm", "GRU": "Gru",
          "RNN": "Rnn", "MLP": "Mlp", "ViT": "Vit", "VAE": "Vae", "GAN": "Gan", "CNN": "Cnn", "GPT": "Gpt",
          "ResNet": "Resnet", "MobileNet": "Mobilenet", "DenseNet": "Densenet", "UNet": "Unet",
          "EfficientNet": "Efficientnet", "AlexNet": "Alexnet"}


def snake(name: str) -> str:
    for acronym, word in _WORDS.items():
        name = name.replace(acronym, word)
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return s.lower()


def stem_of(inst: Instance) -> str:
    if inst.kind == "block":
        return snake(inst.graph.name)
    if inst.kind in ("param", "buffer"):
        return inst.kind
    return inst.op.stem


def name_instances(graph: Graph, sites: dict | None = None) -> None:
    """`sites`: the declaration's call sites, taken or not (frontend/sites.py call_sites); a stem whose
    layers each come from a site of their own is numbered by them."""
    taken = {i.user_name for i in graph.instances.values() if i.user_name and i.container is None}
    taken |= {c.user_name for c in graph.containers.values() if c.user_name}
    stems: dict[str, list[Instance]] = {}
    for inst in graph.instances.values():
        if inst.container is not None:
            continue   # `h.3`: named with its list, below
        if inst.user_name:
            inst.name = inst.user_name
        else:
            # a block `__Mix` gives `mix`: a stem never starts with `_` (torch's private attributes)
            stems.setdefault(stem_of(inst).lstrip("_") or "block", []).append(inst)
    for stem, insts in stems.items():
        if sites and _name_by_sites(insts, stem, sites, taken):
            continue
        if len(insts) == 1 and _free(stem, taken):
            insts[0].name = stem
            taken.add(stem)
            continue
        n = 0
        for inst in insts:
            n += 1
            while not _free(f"{stem}{n}", taken):   # `Bfloat` used 16 times must not make `bfloat16`
                n += 1
            inst.name = f"{stem}{n}"
            taken.add(inst.name)


    _name_containers(graph, taken)


def _name_by_sites(insts: list[Instance], stem: str, sites: dict, taken: set) -> bool:
    """Each layer named by its call site's number among the stem's sites, so that a name does not
    depend on the branches taken (`conv2` is the projection's in every specialization); False,
    leaving the numbering by count, where a layer has no site of its own (made in a loop, or passed in)."""
    where = [sites.get((i.span.file.name, i.span.start)) if i.span is not None else None for i in insts]
    if None in where or any(w[0] != stem for w in where):
        return False
    names = [stem if total == 1 else f"{stem}{n}" for _, n, total in where]
    if len(set(names)) != len(names) or not all(_free(n, taken) for n in names):
        return False
    for inst, name in zip(insts, names):
        inst.name = name
        taken.add(name)
    return True


def _name_containers(graph: Graph, taken: set) -> None:
    """A module list is named by the user (`repeat depth as h`) or after its elements (`blocks`);
    its elements by their place, as in PyTorch: `h.0`, `h.1`. The elements of a block that is an
    nn.Sequential are keyed by their place alone: `0`, `1` (the block's `layer1` gives `layer1.0`)."""
    named = {}
    for c in graph.containers.values():
        c.instances = [i for i in c.instances if i in graph.instances]   # what the passes kept
        if not c.instances:
            continue
        name = "" if c.sequential else c.user_name
        if name is None:
            stem = (stem_of(graph.instances[c.instances[0]]).lstrip("_") or "block")
            stem = stem if stem.endswith("s") else stem + "s"
            name, n = stem, 1
            while not _free(name, taken):
                n += 1
                name = f"{stem}{n}"
            taken.add(name)
        c.name = name
        named[name] = c
        for i, inst_id in enumerate(c.instances):
            inst = graph.instances[inst_id]
            key = inst.user_name if c.keys else str(i)   # `layers.encoder_layer_0`, else `h.0`
            inst.container, inst.name = name, f"{name}.{key}" if name else key
    graph.containers = named


def _free(name: str, taken: set) -> bool:
    return name not in taken and attribute_problem(name) is None
