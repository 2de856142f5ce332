"""Tuples of tensors among a model's or block's inputs and outputs.

A graph holds its inputs and outputs flat, one tensor each. An input or output
that is a tuple, `input hidden: ([L, B, H], [L, B, H])` or `output logits, (h, c)`,
holds one entry per tensor, named by its position: `hidden.0`, `hidden.1` (and
`x.1.0` a level deeper). A user's name never holds a `.`, so the names alone say
how the tensors nest: the generated forward takes `hidden` and returns
`logits, (h, c)`, and ONNX keeps the flat names.
"""
from __future__ import annotations

SEP = "."


def flatten(name: str, value) -> list[tuple[str, object]]:
    """(flat name, tensor) pairs of a value that is a tensor or a tuple of them (nested)."""
    if isinstance(value, tuple):
        return [pair for i, item in enumerate(value) for pair in flatten(f"{name}{SEP}{i}", item)]
    return [(name, value)]


def leaves(values) -> list:
    """The tensors of a list of tensors and tuples of tensors, in order."""
    out = []
    for v in values:
        out += leaves(v) if isinstance(v, tuple) else [v]
    return out


def structure(names: list[str]) -> tuple:
    """How flat entries nest, by their names: ["x", "hidden.0", "hidden.1"] is (0, (1, 2)), in the form
    of an op's `results` (an index per tensor, a tuple per tuple)."""
    root: dict = {}
    for i, name in enumerate(names):
        node = root
        parts = name.split(SEP)
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = i
    return _built(root)


def _built(node: dict) -> tuple:
    # a module function: a nested one that calls itself is a reference cycle, left to the cyclic
    # collector on every call (the language server's checks call this for every block applied)
    return tuple(v if isinstance(v, int) else _built(v) for v in node.values())


def top_names(names: list[str]) -> list[str]:
    """The names as the user wrote them, one per input or output: ["x", "hidden"]."""
    return list(dict.fromkeys(name.split(SEP)[0] for name in names))


def nest(structure_: tuple, values: list):
    """The flat `values` nested as `structure_` says (an index picks a value, a tuple makes one)."""
    if isinstance(structure_, int):
        return values[structure_]
    return tuple(nest(s, values) for s in structure_)


def is_flat(names: list[str]) -> bool:
    return not any(SEP in name for name in names)


def py_path(name: str) -> str:
    """A flat name as Python reaches its tensor: `hidden.0` is `hidden[0]`."""
    top, *rest = name.split(SEP)
    return top + "".join(f"[{i}]" for i in rest)
