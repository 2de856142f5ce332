"""torch's padding in ONNX, for the padding layers, `pad` and a convolution's padding_mode: (before,
after) amounts on the dimensions from `first` on; negative amounts crop first, as torch does."""
from __future__ import annotations

from ..ir.dims import plain

_ONNX_MODE = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}
_INT64_MAX = 2 ** 63 - 1


def pad_onnx(g, x: str, first: int, amounts: list[tuple], mode: str, value: float = 0.0,
             dtype: str = "float32") -> str:
    """Crop the negative amounts (Slice), then pad the rest: Pad for constant, reflect and edge;
    circular by Slice + Concat of each dimension in turn (Pad's "wrap" is opset 19)."""
    crop = [(first + i, -min(plain(b), 0), -min(plain(a), 0)) for i, (b, a) in enumerate(amounts)]
    crop = [c for c in crop if c[1] or c[2]]
    if crop:
        x = g.op("Slice", [x, g.ints([c[1] for c in crop]), g.ints([-c[2] if c[2] else _INT64_MAX for c in crop]),
                           g.ints([c[0] for c in crop])])
    grow = [(max(plain(b), 0), max(plain(a), 0)) for b, a in amounts]
    if not any(b or a for b, a in grow):
        return x if crop else g.op("Identity", [x])
    if mode == "circular":
        return _wrap(g, x, first, grow)
    pads = [0] * first + [b for b, _ in grow] + [0] * first + [a for _, a in grow]
    inputs = [x, g.ints(pads)]
    if mode == "constant" and value != 0.0:
        inputs.append(g.const(value, dtype=dtype))
    return g.op("Pad", inputs, mode=_ONNX_MODE[mode])


def _wrap(g, x: str, first: int, grow: list[tuple]) -> str:
    for i, (before, after) in enumerate(grow):
        axis, parts = first + i, [x]
        if before:
            parts.insert(0, g.op("Slice", [x, g.ints([-before]), g.ints([_INT64_MAX]), g.ints([axis])]))
        if after:
            parts.append(g.op("Slice", [x, g.ints([0]), g.ints([after]), g.ints([axis])]))
        if len(parts) > 1:
            x = g.op("Concat", parts, axis=axis)
    return x
