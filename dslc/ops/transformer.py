"""torch.nn's Transformer layers: TransformerEncoderLayer, TransformerDecoderLayer, TransformerEncoder,
TransformerDecoder and Transformer, with torch's arguments, masks and state-dict keys.

An encoder layer is self-attention then a feed-forward network (linear2(dropout(act(linear1(x))))),
each with a residual connection and a LayerNorm: after it (`norm_first=false`, torch's default)
or before it (`norm_first=true`). A decoder layer puts attention over the encoder's output
(`memory`) between the two. The stacks repeat a layer `num_layers` times (torch deep-copies one
layer; each copy then has weights of its own) and may end in a LayerNorm. Transformer is an
encoder and a decoder stack, each with its final norm.

dslc's tensors are batch-first, so `batch_first` must be true (it is the default here, unlike
torch). A stack takes its layer as torch's does, `TransformerEncoder(TransformerEncoderLayer(256, 8), 6,
norm=LayerNorm(256))` (`layer_form`), or its layer's arguments flat: `TransformerEncoder(256, 8, 6, norm=true)` is
`nn.TransformerEncoder(nn.TransformerEncoderLayer(256, 8, batch_first=True), num_layers=6,
norm=nn.LayerNorm(256))`. The generated stacks pass `enable_nested_tensor=False`: torch's nested
tensors would set the outputs at padded positions to 0 in eval mode, which training never sees.

MACs at batch B, sequence T (S for memory), width E, feed-forward width F: self-attention
4·T·E² + 2·T²·E, attention over memory 2·T·E² + 2·S·E² + 2·T·S·E, the feed-forward network
2·T·E·F, and T·E per LayerNorm (its affine map).
"""
from __future__ import annotations

from ..ir.dims import Real, Size, Sym, plain
from ..ir.types import TensorType
from . import checks
from .attention import _agree, _causal_mask, _need_divides, _project, check_masks, mask_sum, packed_attention_onnx
from .ptypes import BOOL, FLOAT, INT, OPTIONAL_TENSOR, Layer, Optional, Str
from .registry import REQUIRED, Example, LayerForm, OpDef, ParamSpec, S, ShapeError, TorchFunction, TorchLayer, register
from .shapes import dim_text, need_rank
from .tensor.creation import SIZE_OR_INT


def _batch_first(v) -> str | None:
    return None if v else "must be true: dslc's tensors are batch-first [B, T, E] (permute a [T, B, E] tensor first)"


def _layer_params(d_model=None, nhead=None) -> tuple:
    """The arguments every Transformer layer takes, with torch's defaults (batch_first aside)."""
    return (ParamSpec("d_model", INT, REQUIRED if d_model is None else d_model, checks.positive,
                      doc="the width E of every token"),
            ParamSpec("nhead", INT, REQUIRED if nhead is None else nhead, checks.positive,
                      doc="attention heads; must divide d_model"),)


_SETTINGS = (
    ParamSpec("dim_feedforward", INT, 2048, checks.positive, doc="the feed-forward network's hidden width"),
    ParamSpec("dropout", FLOAT, 0.1, checks.probability),
    ParamSpec("activation", Str(("relu", "gelu")), "relu", doc="of the feed-forward network"),
    ParamSpec("layer_norm_eps", FLOAT, 1e-5, checks.positive_number),
    ParamSpec("batch_first", BOOL, True, _batch_first, doc="must be true (dslc's tensors are batch-first)"),
    ParamSpec("norm_first", BOOL, False, doc="LayerNorm before each sublayer rather than after its residual sum"),
    ParamSpec("bias", BOOL, True, doc="biases in the linear layers and LayerNorms"),
)
_SETTING_NAMES = tuple(p.name for p in _SETTINGS if p.name != "batch_first")


def _tensor(name: str, doc: str) -> ParamSpec:
    return ParamSpec(name, OPTIONAL_TENSOR, None, doc=doc)


def _flag(name: str, doc: str) -> ParamSpec:
    return ParamSpec(name, BOOL, False, doc=doc)


_PAD = "[B, S] bool (true: a padding key no query sees) or float (added to the scores)"
_MASK = "[T, S] or [B * nhead, T, S], bool (true: hidden) or float (added): `square_subsequent_mask(T)`"
_HINT = "torch's hint that the mask is the causal mask (the mask must be given too)"
ENCODER_LAYER_KEYWORDS = (_tensor("src_mask", _MASK), _tensor("src_key_padding_mask", _PAD), _flag("is_causal", _HINT))
ENCODER_KEYWORDS = (_tensor("mask", _MASK), _tensor("src_key_padding_mask", _PAD), _flag("is_causal", _HINT))
DECODER_KEYWORDS = (_tensor("tgt_mask", _MASK), _tensor("memory_mask", _MASK), _tensor("tgt_key_padding_mask", _PAD),
                    _tensor("memory_key_padding_mask", _PAD), _flag("tgt_is_causal", _HINT),
                    _flag("memory_is_causal", _HINT))
TRANSFORMER_KEYWORDS = (_tensor("src_mask", _MASK), _tensor("tgt_mask", _MASK), _tensor("memory_mask", _MASK),
                        _tensor("src_key_padding_mask", _PAD), _tensor("tgt_key_padding_mask", _PAD),
                        _tensor("memory_key_padding_mask", _PAD), _flag("src_is_causal", _HINT),
                        _flag("tgt_is_causal", _HINT), _flag("memory_is_causal", _HINT))


# ---------------------------------------------------------------- shapes

def _check_tokens(b, t, what: str, input: int) -> None:
    need_rank(t, 3, b.op.name, "[B, length, d_model] (batch first)", input=input)
    e = b["d_model"]
    if not isinstance(t.shape[2], Sym) and plain(t.shape[2]) != plain(e):
        raise ShapeError(f"`{b.op.name}` with d_model {plain(e)} got {what} of width {plain(t.shape[2])} "
                         f"({t.shape_str()})", code="E0403", input=input,
                         label=f"the last dimension must be {plain(e)}")


def _encoder_infer(attn: str, pad: str, hint: str):
    def infer(b):
        src = b.inputs[0]
        _check_tokens(b, src, "a src", 0)
        _need_divides(b["d_model"], b["nhead"], b.op.name, "nhead")
        check_masks(b, src, src, b["nhead"], attn, pad, hint)
        return [src]
    return infer


def _check_memory(b, tgt, memory) -> None:
    _check_tokens(b, tgt, "a tgt", len(b.inputs) - 1)
    if not _agree(tgt.shape[0], memory.shape[0]):
        raise ShapeError(f"`{b.op.name}`: the batch sizes differ ({dim_text(memory.shape[0])} and "
                         f"{dim_text(tgt.shape[0])})", code="E0403", input=1, label="batch differs")
    _need_divides(b["d_model"], b["nhead"], b.op.name, "nhead")
    check_masks(b, tgt, tgt, b["nhead"], "tgt_mask", "tgt_key_padding_mask", "tgt_is_causal")
    check_masks(b, tgt, memory, b["nhead"], "memory_mask", "memory_key_padding_mask", "memory_is_causal")


def _decoder_infer(b):
    tgt, memory = b.inputs
    _check_tokens(b, memory, "a memory", 1)
    _check_memory(b, tgt, memory)
    return [tgt]


def _transformer_infer(b):
    src, tgt = b.inputs
    _check_tokens(b, src, "a src", 0)
    _need_divides(b["d_model"], b["nhead"], b.op.name, "nhead")
    check_masks(b, src, src, b["nhead"], "src_mask", "src_key_padding_mask", "src_is_causal")
    _check_memory(b, tgt, src)
    return [tgt]


# ---------------------------------------------------------------- weights (torch's state-dict keys)

def _attention_weights(prefix: str, e, bias: bool) -> dict:
    w = {f"{prefix}in_proj_weight": (3 * e, e)}
    if bias:
        w[f"{prefix}in_proj_bias"] = (3 * e,)
    w[f"{prefix}out_proj.weight"] = (e, e)
    if bias:
        w[f"{prefix}out_proj.bias"] = (e,)
    return w


def _norm_weights(name: str, e, bias: bool) -> dict:
    return {f"{name}.weight": (e,), **({f"{name}.bias": (e,)} if bias else {})}


def _layer_weights(a, decoder: bool, prefix: str = "") -> dict:
    e, f, bias = a["d_model"], a["dim_feedforward"], a["bias"]
    w = _attention_weights(f"{prefix}self_attn.", e, bias)
    if decoder:
        w |= _attention_weights(f"{prefix}multihead_attn.", e, bias)
    w[f"{prefix}linear1.weight"] = (f, e)
    if bias:
        w[f"{prefix}linear1.bias"] = (f,)
    w[f"{prefix}linear2.weight"] = (e, f)
    if bias:
        w[f"{prefix}linear2.bias"] = (e,)
    for i in range(1, 4 if decoder else 3):
        w |= _norm_weights(f"{prefix}norm{i}", e, bias)
    return w


def _stack_weights(a, decoder: bool, layers, norm: bool, prefix: str = "") -> dict:
    w = {}
    for i in range(plain(layers)):
        w |= _layer_weights(a, decoder, f"{prefix}layers.{i}.")
    return w | (_norm_weights(f"{prefix}norm", a["d_model"], a["bias"]) if norm else {})


# ---------------------------------------------------------------- MACs

def _self_attention_macs(t, e):
    return 4 * t * e * e + 2 * t * t * e


def _layer_macs(a, t, s=None):
    """One layer over T tokens (a decoder layer: and S memory tokens), at batch 1."""
    e, f = a["d_model"], a["dim_feedforward"]
    total = _self_attention_macs(t, e) + 2 * t * e * f + 2 * t * e
    if s is not None:
        total = total + 2 * t * e * e + 2 * s * e * e + 2 * t * s * e + t * e
    return total


def _encoder_layer_macs(b, outs):
    src = b.inputs[0]
    return src.shape[0] * _layer_macs(b.args, src.shape[1])


def _decoder_layer_macs(b, outs):
    tgt, memory = b.inputs
    return tgt.shape[0] * _layer_macs(b.args, tgt.shape[1], memory.shape[1])


def _encoder_macs(b, outs):
    src, e = b.inputs[0], b["d_model"]
    norm = src.shape[1] * e if b["norm"] else 0
    return src.shape[0] * (plain(b["num_layers"]) * _layer_macs(b.args, src.shape[1]) + norm)


def _decoder_macs(b, outs):
    tgt, memory = b.inputs
    norm = tgt.shape[1] * b["d_model"] if b["norm"] else 0
    return tgt.shape[0] * (plain(b["num_layers"]) * _layer_macs(b.args, tgt.shape[1], memory.shape[1]) + norm)


def _transformer_macs(b, outs):
    src, tgt = b.inputs
    e = b["d_model"]
    encoder = plain(b["num_encoder_layers"]) * _layer_macs(b.args, src.shape[1]) + src.shape[1] * e
    decoder = plain(b["num_decoder_layers"]) * _layer_macs(b.args, tgt.shape[1], src.shape[1]) + tgt.shape[1] * e
    return src.shape[0] * (encoder + decoder)


# ---------------------------------------------------------------- PyTorch

def _layer_ctor(cls: str, args: dict, fmt, settings=_SETTINGS) -> str:
    """`nn.TransformerEncoderLayer(256, 8, dim_feedforward=512, batch_first=True)`: settings at torch's default
    left out."""
    parts = [fmt(args["d_model"]), fmt(args["nhead"])]
    parts += [f"{p.name}={fmt(args[p.name])}" for p in settings
              if p.name != "batch_first" and not _is_default(args[p.name], p.default)]
    return f"{cls}({', '.join(parts + ['batch_first=True'])})"


def _is_default(v, default) -> bool:
    """A setting left out of the layer's constructor: at its default and depending on no parameter
    (as backends/pyformat.py's is_default, which ops may not import)."""
    if isinstance(v, (Size, Real, Sym)):
        return False
    return v == default and isinstance(v, bool) == isinstance(default, bool)


def _stack_ctor(kind: str):
    """`nn.TransformerEncoder(nn.TransformerEncoderLayer(...), num_layers=6, norm=nn.LayerNorm(256),
    enable_nested_tensor=False)`."""
    def ctor(args: dict, fmt) -> str:
        parts = [_layer_ctor(f"nn.Transformer{kind}Layer", args, fmt), f"num_layers={fmt(args['num_layers'])}"]
        if args["norm"]:
            parts.append(f"norm={_norm_ctor(args, fmt)}")
        if kind == "Encoder":   # nested tensors would zero the outputs at padded positions in eval mode only
            parts.append("enable_nested_tensor=False")
        return f"nn.Transformer{kind}({', '.join(parts)})"
    return ctor


def _norm_ctor(args: dict, fmt) -> str:
    """The final LayerNorm as nn.Transformer makes it: LayerNorm(d_model, eps=layer_norm_eps, bias=bias)."""
    extra = "" if plain(args["layer_norm_eps"]) == 1e-5 else f", eps={fmt(args['layer_norm_eps'])}"
    extra += "" if args["bias"] else ", bias=False"
    return f"nn.LayerNorm({fmt(args['d_model'])}{extra})"


def _keyword_call(e, module: str) -> str:
    """`self.encoder(src, mask=mask, src_key_padding_mask=pad)`: the keyword inputs given, torch's order."""
    parts = list(e.inputs)
    for p in e.op.keyword_inputs:
        v = e.args[p.name]
        if p.is_tensor and v is not None:
            parts.append(f"{p.name}={e.arg(p.name)}")
        elif not p.is_tensor and v:
            parts.append(f"{p.name}=True")
    return f"{module}({', '.join(parts)})"


# ---------------------------------------------------------------- ONNX

def _layer_norm(g, n, x: str, name: str, a) -> str:
    bias = n.weight(f"{name}.bias") if a["bias"] else None
    return g.op("LayerNormalization", [x, n.weight(f"{name}.weight"), bias], axis=-1,
                epsilon=float(plain(a["layer_norm_eps"])), hint=name.rsplit(".", 1)[-1])


def _feed_forward(g, n, x: str, prefix: str, a) -> str:
    bias = a["bias"]
    h = _project(g, x, n.weight(f"{prefix}linear1.weight"), n.weight(f"{prefix}linear1.bias") if bias else None,
                 "linear1")
    if a["activation"] == "gelu":   # 0.5 h (1 + erf(h / √2)), torch's exact GELU
        erf = g.op("Erf", [g.op("Div", [h, g.const(2.0 ** 0.5)])])
        h = g.op("Mul", [g.op("Mul", [h, g.const(0.5)]), g.op("Add", [erf, g.const(1.0)])], hint="gelu")
    else:
        h = g.op("Relu", [h])
    return _project(g, h, n.weight(f"{prefix}linear2.weight"), n.weight(f"{prefix}linear2.bias") if bias else None,
                    "linear2")


def _sublayers(g, n, x: str, prefix: str, a, blocks: list) -> str:
    """x through (function, norm name) sublayers, each with its residual sum, norm after or first."""
    for block, norm in blocks:
        if a["norm_first"]:
            x = g.op("Add", [x, block(_layer_norm(g, n, x, f"{prefix}{norm}", a))], hint="residual")
        else:
            x = _layer_norm(g, n, g.op("Add", [x, block(x)], hint="residual"), f"{prefix}{norm}", a)
    return x


def _encoder_layer_onnx_at(g, n, x: str, t, prefix: str, a, mask) -> str:
    heads = plain(a["nhead"])
    return _sublayers(g, n, x, prefix, a, [
        (lambda h: packed_attention_onnx(g, n, f"{prefix}self_attn.", h, h, t, t, heads, a["bias"], mask), "norm1"),
        (lambda h: _feed_forward(g, n, h, prefix, a), "norm2")])


def _decoder_layer_onnx_at(g, n, x: str, t, memory: str, mt, prefix: str, a, self_mask, cross_mask) -> str:
    heads = plain(a["nhead"])
    return _sublayers(g, n, x, prefix, a, [
        (lambda h: packed_attention_onnx(g, n, f"{prefix}self_attn.", h, h, t, t, heads, a["bias"], self_mask),
         "norm1"),
        (lambda h: packed_attention_onnx(g, n, f"{prefix}multihead_attn.", h, memory, t, mt, heads, a["bias"],
                                         cross_mask), "norm2"),
        (lambda h: _feed_forward(g, n, h, prefix, a), "norm3")])


def _masks(g, n, q, k, attn: str, pad: str):
    return mask_sum(g, n, q.dtype, (q.shape[0], plain(n["nhead"]), q.shape[1], k.shape[1]), attn, pad)


def _encoder_stack(g, n, x: str, t, layers, prefix: str, attn: str, norm: bool) -> str:
    mask = _masks(g, n, t, t, attn, "src_key_padding_mask")
    for i in range(plain(layers)):
        x = _encoder_layer_onnx_at(g, n, x, t, f"{prefix}layers.{i}.", n.args, mask)
    return _layer_norm(g, n, x, f"{prefix}norm", n.args) if norm else x


def _decoder_stack(g, n, x: str, t, memory: str, mt, layers, prefix: str, norm: bool) -> str:
    self_mask = _masks(g, n, t, t, "tgt_mask", "tgt_key_padding_mask")
    cross_mask = _masks(g, n, t, mt, "memory_mask", "memory_key_padding_mask")
    for i in range(plain(layers)):
        x = _decoder_layer_onnx_at(g, n, x, t, memory, mt, f"{prefix}layers.{i}.", n.args, self_mask, cross_mask)
    return _layer_norm(g, n, x, f"{prefix}norm", n.args) if norm else x


def _encoder_layer_onnx(g, n):
    t = n.types[0]
    return [_encoder_layer_onnx_at(g, n, n.inputs[0], t, "", n.args,
                                   _masks(g, n, t, t, "src_mask", "src_key_padding_mask"))]


def _decoder_layer_onnx(g, n):
    t, mt = n.types
    return [_decoder_layer_onnx_at(g, n, n.inputs[0], t, n.inputs[1], mt, "", n.args,
                                   _masks(g, n, t, t, "tgt_mask", "tgt_key_padding_mask"),
                                   _masks(g, n, t, mt, "memory_mask", "memory_key_padding_mask"))]


def _encoder_onnx(g, n):
    return [_encoder_stack(g, n, n.inputs[0], n.types[0], n["num_layers"], "", "mask", n["norm"])]


def _decoder_onnx(g, n):
    return [_decoder_stack(g, n, n.inputs[0], n.types[0], n.inputs[1], n.types[1], n["num_layers"], "", n["norm"])]


def _transformer_onnx(g, n):
    (src, tgt), (st, tt) = n.inputs, n.types
    memory = _encoder_stack(g, n, src, st, n["num_encoder_layers"], "encoder.", "src_mask", True)
    return [_decoder_stack(g, n, tgt, tt, memory, st, n["num_decoder_layers"], "decoder.", True)]


# ---------------------------------------------------------------- examples

def _layer_args(d, e: int, heads: int) -> dict:
    return {"d_model": e, "nhead": heads, "dim_feedforward": d.int(1, 12), "dropout": d.choice([0.0, 0.1]),
            "activation": d.choice(["relu", "gelu"]), "norm_first": d.bool(), "bias": d.bool()}


# No masks in the examples: in eval mode torch's fast path reads a float mask as true wherever it is
# nonzero, and a random bool mask may hide every key of a query, where torch's paths differ (NaN or 0).
# tests/test_transformer_layers.py checks the masks with chosen values.


def _encoder_layer_arbitrary(d):
    heads = d.int(1, 3)
    e, batch, steps = heads * d.int(1, 3), d.int(1, 3), d.int(1, 5)
    args = _layer_args(d, e, heads)
    return Example(args, (S(batch, steps, e),))


def _decoder_layer_arbitrary(d):
    heads = d.int(1, 3)
    e, batch, steps, keys = heads * d.int(1, 3), d.int(1, 3), d.int(1, 5), d.int(1, 5)
    args = _layer_args(d, e, heads)
    return Example(args, (S(batch, steps, e), S(batch, keys, e)))


# ---------------------------------------------------------------- the entries

def _stack_label(what: str):
    return lambda a: f"{what} {plain(a['d_model'])}, {plain(a['nhead'])} heads × {plain(a['num_layers'])}"


register(OpDef(
    name="TransformerEncoderLayer", kind="layer", family="attention", stem="encoder_layer",
    doc="torch.nn.TransformerEncoderLayer (batch-first): self-attention and a feed-forward network, each with "
        "a residual sum and a LayerNorm (after it, or before with norm_first); masks by keyword where applied.",
    inputs=("src",), keyword_inputs=ENCODER_LAYER_KEYWORDS,
    params=_layer_params() + _SETTINGS,
    infer=_encoder_infer("src_mask", "src_key_padding_mask", "is_causal"),
    weights=lambda a: _layer_weights(a, False), macs=_encoder_layer_macs,
    label=lambda a: f"TransformerEncoderLayer {plain(a['d_model'])}, {plain(a['nhead'])} heads",
    torch=TorchLayer("nn.TransformerEncoderLayer", ("d_model", "nhead"), _SETTING_NAMES,
                     fixed=(("batch_first", "True"),), call=_keyword_call),
    onnx=_encoder_layer_onnx, pure=False,
    examples=(Example({"d_model": 8, "nhead": 2, "dim_feedforward": 16}, (S(2, 5, 8),)),
              Example({"d_model": 8, "nhead": 2, "dim_feedforward": 12, "norm_first": True, "activation": "gelu"}, (S(2, 5, 8),)),
              Example({"d_model": 6, "nhead": 3, "dim_feedforward": 4, "bias": False, "dropout": 0.0}, (S(2, 4, 6),))),
    arbitrary=_encoder_layer_arbitrary,
))

register(OpDef(
    name="TransformerDecoderLayer", kind="layer", family="attention", stem="decoder_layer",
    doc="torch.nn.TransformerDecoderLayer (batch-first): self-attention over tgt, attention over memory and a "
        "feed-forward network, each with a residual sum and a LayerNorm; masks by keyword where applied.",
    inputs=("tgt", "memory"), keyword_inputs=DECODER_KEYWORDS,
    params=_layer_params() + _SETTINGS,
    infer=_decoder_infer, weights=lambda a: _layer_weights(a, True), macs=_decoder_layer_macs,
    label=lambda a: f"TransformerDecoderLayer {plain(a['d_model'])}, {plain(a['nhead'])} heads",
    torch=TorchLayer("nn.TransformerDecoderLayer", ("d_model", "nhead"), _SETTING_NAMES,
                     fixed=(("batch_first", "True"),), call=_keyword_call),
    onnx=_decoder_layer_onnx, pure=False,
    examples=(Example({"d_model": 8, "nhead": 2, "dim_feedforward": 16}, (S(2, 4, 8), S(2, 6, 8))),
              Example({"d_model": 8, "nhead": 4, "dim_feedforward": 8, "norm_first": True, "activation": "gelu"},
                      (S(2, 4, 8), S(2, 3, 8)))),
    arbitrary=_decoder_layer_arbitrary,
))

_NUM_LAYERS = ParamSpec("num_layers", INT, check=checks.positive, doc="how many layers, each with its own weights")
_NORM = ParamSpec("norm", BOOL, False, doc="a final LayerNorm(d_model, eps=layer_norm_eps, bias=bias) (torch's "
                                           "`norm=nn.LayerNorm(d_model)`)")


# ---------------------------------------------------------------- torch's form: TransformerEncoder(layer, 6, norm=LayerNorm(d))

def _stack_form(layer: str, first: str, nested: bool) -> LayerForm:
    """`nn.TransformerEncoder(encoder_layer, num_layers, norm=None, enable_nested_tensor=True, mask_check=True)`
    and `nn.TransformerDecoder(decoder_layer, num_layers, norm=None)`. The generated code always passes
    enable_nested_tensor=False (module doc); mask_check only matters with nested tensors."""
    params = (ParamSpec(first, Layer((layer,)), doc=f"a `{layer}(...)`, repeated num_layers times (torch copies it)"),
              _NUM_LAYERS,
              ParamSpec("norm", Optional(Layer(("LayerNorm",))), None,
                        doc="a final `LayerNorm(d_model)` (its eps and bias as the layer's), or none"))
    if nested:
        params += (ParamSpec("enable_nested_tensor", BOOL, True, doc="accepted; the generated code passes False"),
                   ParamSpec("mask_check", BOOL, True, doc="accepted; only nested tensors use it"))

    def flatten(values: dict) -> dict:
        inner = values[first].args
        return dict(inner) | {"num_layers": values["num_layers"], "norm": _final_norm(values["norm"], inner)}
    return LayerForm(params, flatten)


def _final_norm(norm, layer: dict) -> bool:
    """Whether the stack ends in a LayerNorm; it must be the one nn.Transformer makes: LayerNorm(d_model,
    eps=layer_norm_eps, bias=bias) (a flat stack's `norm=true`)."""
    if norm is None:
        return False
    a, e = norm.args, plain(layer["d_model"])
    shape = a["normalized_shape"]
    widths = [plain(w) for w in (shape if isinstance(shape, (list, tuple)) else (shape,))]
    if shape is not None and widths != [e]:
        raise ShapeError(f"the final `norm` normalizes {widths if len(widths) > 1 else widths[0]} but the layers' "
                         f"d_model is {e}", code="E0403", arg="norm", label=f"must be LayerNorm({e})")
    same = (plain(a["eps"]) == plain(layer["layer_norm_eps"]) and a["bias"] == layer["bias"]
            and a["elementwise_affine"])
    if not same:
        raise ShapeError("the final `norm` must be LayerNorm(d_model) with the layer's eps and bias (as "
                         "nn.Transformer makes it)", code="E0302", arg="norm", label="a different LayerNorm",
                         help=f"eps={plain(layer['layer_norm_eps'])!r} and bias={str(layer['bias']).lower()} "
                              "are the layer's `layer_norm_eps` and `bias`; elementwise_affine must be true")
    return True


def _stack_arbitrary(layer_arbitrary, keywords: dict):
    def draw(d):
        ex = layer_arbitrary(d)
        args = {keywords.get(k, k): v for k, v in ex.args.items()}
        return Example(args | {"num_layers": d.int(1, 2), "norm": d.bool()}, ex.inputs)
    return draw


register(OpDef(
    name="TransformerEncoder", kind="layer", family="attention", stem="encoder",
    doc="torch.nn.TransformerEncoder of `num_layers` TransformerEncoderLayers, given the layer's arguments flat, "
        "and an optional final LayerNorm; masks by keyword where applied (`mask=`, `src_key_padding_mask=`).",
    inputs=("src",), keyword_inputs=ENCODER_KEYWORDS,
    params=_layer_params() + (_NUM_LAYERS,) + _SETTINGS + (_NORM,),
    infer=_encoder_infer("mask", "src_key_padding_mask", "is_causal"),
    weights=lambda a: _stack_weights(a, False, a["num_layers"], a["norm"]), macs=_encoder_macs,
    label=_stack_label("TransformerEncoder"),
    torch=TorchLayer("nn.TransformerEncoder", call=_keyword_call, ctor=_stack_ctor("Encoder")),
    layer_form=_stack_form("TransformerEncoderLayer", "encoder_layer", nested=True),
    onnx=_encoder_onnx, pure=False,
    examples=(Example({"d_model": 8, "nhead": 2, "num_layers": 2, "dim_feedforward": 16, "norm": True},
                      (S(2, 5, 8),)),
              Example({"d_model": 8, "nhead": 2, "num_layers": 2, "dim_feedforward": 8, "norm_first": True}, (S(2, 5, 8),))),
    arbitrary=_stack_arbitrary(_encoder_layer_arbitrary, {"src_mask": "mask"}),
))

register(OpDef(
    name="TransformerDecoder", kind="layer", family="attention", stem="decoder",
    doc="torch.nn.TransformerDecoder of `num_layers` TransformerDecoderLayers, given the layer's arguments flat, "
        "and an optional final LayerNorm; applied to (tgt, memory), masks by keyword.",
    inputs=("tgt", "memory"), keyword_inputs=DECODER_KEYWORDS,
    params=_layer_params() + (_NUM_LAYERS,) + _SETTINGS + (_NORM,),
    infer=_decoder_infer,
    weights=lambda a: _stack_weights(a, True, a["num_layers"], a["norm"]), macs=_decoder_macs,
    label=_stack_label("TransformerDecoder"),
    torch=TorchLayer("nn.TransformerDecoder", call=_keyword_call, ctor=_stack_ctor("Decoder")),
    layer_form=_stack_form("TransformerDecoderLayer", "decoder_layer", nested=False),
    onnx=_decoder_onnx, pure=False,
    examples=(Example({"d_model": 8, "nhead": 2, "num_layers": 2, "dim_feedforward": 16, "norm": True},
                      (S(2, 4, 8), S(2, 6, 8))),),
    arbitrary=_stack_arbitrary(_decoder_layer_arbitrary, {}),
))


def _transformer_arbitrary(d):
    heads = d.int(1, 3)
    e, batch, steps, keys = heads * d.int(1, 3), d.int(1, 3), d.int(1, 4), d.int(1, 4)
    args = _layer_args(d, e, heads) | {"num_encoder_layers": d.int(1, 2), "num_decoder_layers": d.int(1, 2)}
    return Example(args, (S(batch, keys, e), S(batch, steps, e)))


register(OpDef(
    name="Transformer", kind="layer", family="attention", stem="transformer",
    doc="torch.nn.Transformer (batch-first): an encoder stack over src and a decoder stack over tgt attending "
        "to the encoder's output, each ending in a LayerNorm; applied to (src, tgt), masks by keyword.",
    inputs=("src", "tgt"), keyword_inputs=TRANSFORMER_KEYWORDS,
    params=_layer_params(512, 8) + (ParamSpec("num_encoder_layers", INT, 6, checks.positive),
                                    ParamSpec("num_decoder_layers", INT, 6, checks.positive)) + _SETTINGS,
    infer=_transformer_infer,
    weights=lambda a: _stack_weights(a, False, a["num_encoder_layers"], True, "encoder.")
    | _stack_weights(a, True, a["num_decoder_layers"], True, "decoder."),
    macs=_transformer_macs,
    label=lambda a: f"Transformer {plain(a['d_model'])}, {plain(a['nhead'])} heads, "
                    f"{plain(a['num_encoder_layers'])}+{plain(a['num_decoder_layers'])} layers",
    torch=TorchLayer("nn.Transformer", (), ("d_model", "nhead", "num_encoder_layers", "num_decoder_layers")
                     + _SETTING_NAMES, explicit=("d_model", "nhead"), fixed=(("batch_first", "True"),),
                     call=_keyword_call),
    onnx=_transformer_onnx, pure=False,
    examples=(Example({"d_model": 8, "nhead": 2, "num_encoder_layers": 1, "num_decoder_layers": 2,
                       "dim_feedforward": 16},
                      (S(2, 5, 8), S(2, 4, 8))),),
    arbitrary=_transformer_arbitrary,
))


# ---------------------------------------------------------------- square_subsequent_mask(T)

def _positive_size(v) -> str | None:
    return None if isinstance(v, Sym) else checks.positive(v)   # a run-time size is never below 1


def _square_infer(b):
    return [TensorType((b["size"], b["size"]), "float32")]


def _square_onnx(g, n):
    size = n["size"]
    future = _causal_mask(g, size, size)
    return [g.op("Where", [future, g.const(float("-inf"), dtype="float32"), g.const(0.0, dtype="float32")])]


def _square_src(e) -> str:
    device = f", device={e.device}" if e.device else ""
    return f"nn.Transformer.generate_square_subsequent_mask({e.fmt(e['size'])}{device})"


register(OpDef(
    name="square_subsequent_mask", kind="function", family="tensor", category="constant",
    doc="The causal mask of `size` steps, float32 [size, size]: -inf above the diagonal (a later key), 0 elsewhere "
        "(nn.Transformer.generate_square_subsequent_mask): `tgt_mask=square_subsequent_mask(T)`.",
    params=(ParamSpec("size", SIZE_OR_INT, check=_positive_size),),
    infer=_square_infer, macs=lambda b, out: 0,
    torch=TorchFunction(_square_src), onnx=_square_onnx,
    examples=(Example({"size": 4}), Example({"size": 1})),
    arbitrary=lambda d: Example({"size": d.int(1, 6)}),
))
