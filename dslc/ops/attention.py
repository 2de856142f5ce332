"""Attention: the MultiheadAttention layer and the `attention` function.

Scaled dot-product attention of queries Q [T, d] over keys K [S, d] and
values V [S, dv] is

    attend(Q, K, V) = softmax(Q Kᵀ / √d) V            (a causal mask sets the
                                                      scores of keys after the
                                                      query to -inf first)

Multi-head attention splits the width into h heads, attends in each, and
concatenates the heads again. `MultiheadAttention` (torch.nn's, batch-first)
also projects: Q = q W_qᵀ, K = k W_kᵀ, V = v W_vᵀ, out = concat(heads) W_oᵀ,
where W_k is (E, kdim) and W_v is (E, vdim) with kdim and vdim read off the
key and value inputs. `attention(q, k, v, heads)` has no weights: it attends
over its inputs as they are.

MACs at batch B: the projections (T·E·E + S·kdim·E + S·vdim·E), the scores
Q Kᵀ (T·S·E), the weighted sum of values (T·S·E) and the output projection
(T·E·E).
"""
from __future__ import annotations

import textwrap

from ..ir.dims import Sym, plain
from ..ir.types import DTYPES
from . import checks
from .ptypes import BOOL, FLOAT, INT, OPTIONAL_TENSOR, TENSOR
from .registry import Example, OpDef, ParamSpec, S, ShapeError, TorchFunction, TorchLayer, helper, register
from .shapes import dim_text, divides, need_rank, same_dim, static


def _agree(a, b) -> bool:
    """Equal sizes, or undecidable; static sizes compare by value (a check records nothing)."""
    if isinstance(a, Sym) or isinstance(b, Sym):
        return same_dim(a, b)
    return plain(a) == plain(b)


def _need_divides(width, heads, what: str, arg: str, input: int | None = None, where=None) -> None:
    if not divides(width, heads, where):
        raise ShapeError(f"`{what}`: {plain(heads)} heads do not divide the width {plain(width)}",
                         code="E0405", arg=arg, input=input, label=f"{plain(heads)} does not divide {plain(width)}",
                         help=f"choose a head count that divides {plain(width)}")


def _check_qkv(what: str, q, k, v) -> None:
    """Batch-first [B, T, .] query over [B, S, .] keys and values: batch and length must agree."""
    for i, t in enumerate((q, k, v)):
        need_rank(t, 3, what, "[B, length, features] (batch first)", input=i)
    if not _agree(k.shape[1], v.shape[1]) or not _agree(k.shape[0], v.shape[0]):
        raise ShapeError(f"`{what}`: key and value must agree in batch and length, "
                         f"got key {k.shape_str()} and value {v.shape_str()}", code="E0403", input=2,
                         label="batch or length differs from the key's")
    if not _agree(q.shape[0], k.shape[0]):
        raise ShapeError(f"`{what}`: query and key batch sizes differ "
                         f"({dim_text(q.shape[0])} and {dim_text(k.shape[0])})", code="E0403", input=1,
                         label="batch differs from the query's")


# ---------------------------------------------------------------- ONNX (opset 18)

def _split_heads(g, x: str, shape: tuple, heads: int, hint: str) -> str:
    """[B, L, W] -> [B, heads, L, W / heads]."""
    batch, length, width = shape
    return g.op("Transpose", [g.op("Reshape", [x, g.shape((batch, length, heads, width // heads))])],
                perm=[0, 2, 1, 3], hint=f"{hint}_heads")


def _merge_heads(g, x: str, batch, length, width) -> str:
    """[B, heads, L, W / heads] -> [B, L, W], the heads side by side."""
    return g.op("Reshape", [g.op("Transpose", [x], perm=[0, 2, 1, 3]), g.shape((batch, length, width))],
                hint="attended")


def _sqrt(g, head_dim, dtype: str) -> str:
    """√d as a scalar of `dtype`, computed at run time when d is."""
    if not isinstance(head_dim, Sym):
        return g.const(plain(head_dim) ** 0.5, dtype=dtype)
    return g.op("Sqrt", [g.cast(g.op("Squeeze", [g.dim(head_dim)]), dtype)])


def _causal_mask(g, steps, keys) -> str:
    """[T, S] bool, true where key j comes after query i (torch.triu(ones(T, S), diagonal=1)), sizes run-time."""
    def positions(d):
        return g.op("Range", [g.const(0, dtype="int64"), g.op("Squeeze", [g.dim(d)]), g.const(1, dtype="int64")])
    rows = g.op("Unsqueeze", [positions(steps), g.ints([1])])  # [T, 1]
    cols = g.op("Unsqueeze", [positions(keys), g.ints([0])])   # [1, S]
    return g.op("Greater", [cols, rows], hint="future")


def _attend(g, q: str, k: str, v: str, head_dim, dtype: str, mask: str | None = None,
            empty_rows: bool = False) -> str:
    """softmax(q kᵀ / √d) v over [B, h, T, d] queries and [B, h, S, d] keys and values (dropout off in eval).
    `empty_rows`: the mask may hide every key of a query, which then attends to nothing (0, not NaN)."""
    scores = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])])  # [B, h, T, S]
    scores = g.op("Div", [scores, _sqrt(g, head_dim, dtype)], hint="scores")
    if mask is not None:
        scores = g.op("Where", [mask, g.const(float("-inf"), dtype=dtype), scores], hint="scores")
    weights = g.op("Softmax", [scores], axis=-1, hint="weights")
    if empty_rows:
        seen = g.op("ReduceMax", [g.op("Cast", [g.op("Not", [mask])], to=6), g.ints([-1])], keepdims=1)  # int32
        empty = g.op("Equal", [seen, g.const(0, dtype="int32")], hint="empty")
        weights = g.op("Where", [empty, g.const(0.0, dtype=dtype), weights], hint="weights")
    return g.op("MatMul", [weights, v])


def _additive(g, m: str, dtype: str, is_bool: bool) -> str:
    """A mask as torch's MultiheadAttention adds it to the scores: a bool true is -inf, a float as it is."""
    if not is_bool:
        return m
    return g.op("Where", [m, g.const(float("-inf"), dtype=dtype), g.const(0.0, dtype=dtype)], hint="mask")


def mask_sum(g, n, dtype: str, sizes: tuple, attn: str | None, pad: str | None, causal: bool = False,
             bias_kv: bool = False) -> str | None:
    """The sum of the causal mask, the attention mask (the argument named `attn`: [T, S] or [B * heads, T, S])
    and the key padding mask (`pad`: [B, S]), broadcastable to [B, heads, T, S], as torch merges them
    (bool ones as -inf); with add_bias_kv a 0 column lets every query see the bias key. `sizes`: (B, heads, T, S)."""
    batch, heads, steps, keys = sizes
    parts, wide = [], False
    if causal:
        parts.append(_additive(g, _causal_mask(g, steps, keys), dtype, True))
    if attn is not None and n.tensor(attn) is not None:
        t = n.type_of(attn)
        m = _additive(g, n.tensor(attn), dtype, t.dtype == "bool")
        if t.rank == 3:   # [B * heads, T, S]: torch's batch-major order of the heads
            m = g.op("Reshape", [m, g.shape((batch, heads, steps, keys))], hint="attn_mask")
            wide = True
        parts.append(m)
    if pad is not None and n.tensor(pad) is not None:
        m = _additive(g, n.tensor(pad), dtype, n.type_of(pad).dtype == "bool")
        parts.append(g.op("Unsqueeze", [m, g.ints([1, 2])], hint="padding"))   # [B, 1, 1, S]
        wide = True
    if not parts:
        return None
    mask = parts[0]
    for m in parts[1:]:
        mask = g.op("Add", [mask, m], hint="mask")
    if bias_kv:
        if not wide:   # [T, S] -> [1, 1, T, S], for the one Pad below
            mask = g.op("Unsqueeze", [mask, g.ints([0, 1])], hint="mask")
        mask = g.op("Pad", [mask, g.ints([0, 0, 0, 0, 0, 0, 0, 1]), g.const(0.0, dtype=dtype)], hint="mask")
    return mask


def mha_attend(g, q: str, k: str, v: str, head_dim, dtype: str, mask: str | None, empty_rows: bool):
    """softmax(q kᵀ / √d + mask) v over [B, h, T, d] queries; returns (attended, weights [B, h, T, S]).
    `empty_rows`: a query whose keys are all masked attends to nothing (0, as torch's
    scaled_dot_product_attention gives) rather than NaN (softmax over nothing, as torch's weights path)."""
    scores = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])])  # [B, h, T, S]
    scores = g.op("Div", [scores, _sqrt(g, head_dim, dtype)], hint="scores")
    if mask is not None:
        scores = g.op("Add", [scores, mask], hint="scores")
    weights = g.op("Softmax", [scores], axis=-1, hint="weights")
    if mask is not None and empty_rows:
        top = g.op("ReduceMax", [scores, g.ints([-1])], keepdims=1)
        empty = g.op("Equal", [top, g.const(float("-inf"), dtype=dtype)], hint="empty")
        weights = g.op("Where", [empty, g.const(0.0, dtype=dtype), weights], hint="weights")
    return g.op("MatMul", [weights, v]), weights


def _project(g, x: str, w: str, b: str | None, hint: str) -> str:
    """x Wᵀ + b over a [B, L, in] input."""
    y = g.op("MatMul", [x, g.op("Transpose", [w], perm=[1, 0])], hint=hint)
    return g.op("Add", [y, b], hint=hint) if b is not None else y


def _mha_onnx(g, n):
    """torch's batch-first MultiheadAttention: project, append bias_k/bias_v, attend per head, project out."""
    a = n.args
    e, heads, dtype = plain(a["embed_dim"]), plain(a["num_heads"]), n.x.dtype
    q, k, v = _qkv(n.inputs)
    tq, tk, _ = _qkv(n.types)
    if _packed(a):  # in_proj_weight [3E, E] holds W_q, W_k, W_v one under the other
        w_q, w_k, w_v = g.op("Split", [n.weight("in_proj_weight")], n_out=3, axis=0, num_outputs=3, hint="w_qkv")
    else:
        w_q, w_k, w_v = (n.weight(f"{p}_proj_weight") for p in "qkv")
    b_q, b_k, b_v = (g.op("Split", [n.weight("in_proj_bias")], n_out=3, axis=0, num_outputs=3, hint="b_qkv")
                     if a["bias"] else (None, None, None))
    batch, steps, keys = tq.shape[0], tq.shape[1], tk.shape[1]
    mask = mask_sum(g, n, dtype, (batch, heads, steps, keys), "attn_mask", "key_padding_mask", a["causal"],
                    a["add_bias_kv"])
    q, k, v = _project(g, q, w_q, b_q, "q"), _project(g, k, w_k, b_k, "k"), _project(g, v, w_v, b_v, "v")  # [B, ., E]
    if a["add_bias_kv"]:  # one more key and value, the learned bias_k / bias_v [1, 1, E], for every batch row
        one = g.shape((batch, 1, e))
        k = g.op("Concat", [k, g.op("Expand", [n.weight("bias_k"), one])], axis=1, hint="k")
        v = g.op("Concat", [v, g.op("Expand", [n.weight("bias_v"), one])], axis=1, hint="v")
        keys = keys + 1
    q, k, v = (_split_heads(g, x, (batch, length, e), heads, h)
               for x, length, h in ((q, steps, "q"), (k, keys, "k"), (v, keys, "v")))
    attended, weights = mha_attend(g, q, k, v, e // heads, dtype, mask, empty_rows=not a["need_weights"])
    out = _merge_heads(g, attended, batch, steps, e)
    out = _project(g, out, n.weight("out_proj.weight"), n.weight("out_proj.bias") if a["bias"] else None, "out")
    if not a["need_weights"]:
        return [out]
    if a["average_attn_weights"]:   # the heads' mean, [B, T, S]
        weights = g.op("ReduceMean", [weights, g.ints([1])], keepdims=0, hint="weights")
    return [out, weights]


def packed_attention_onnx(g, n, prefix: str, q: str, kv: str, qtype, kvtype, heads: int, bias: bool,
                          mask: str | None) -> str:
    """torch's MultiheadAttention with packed weights (kdim = vdim = E) under `prefix` (`self_attn.`),
    query `q` over `kv`, the additive `mask`; values only (need_weights=False: a query that sees no key gives 0)."""
    e, dtype = qtype.shape[2], qtype.dtype
    w_q, w_k, w_v = g.op("Split", [n.weight(f"{prefix}in_proj_weight")], n_out=3, axis=0, num_outputs=3,
                         hint="w_qkv")
    b_q, b_k, b_v = (g.op("Split", [n.weight(f"{prefix}in_proj_bias")], n_out=3, axis=0, num_outputs=3, hint="b_qkv")
                     if bias else (None, None, None))
    batch, steps, keys = qtype.shape[0], qtype.shape[1], kvtype.shape[1]
    q, k, v = _project(g, q, w_q, b_q, "q"), _project(g, kv, w_k, b_k, "k"), _project(g, kv, w_v, b_v, "v")
    q, k, v = (_split_heads(g, x, (batch, length, e), heads, h)
               for x, length, h in ((q, steps, "q"), (k, keys, "k"), (v, keys, "v")))
    attended, _ = mha_attend(g, q, k, v, e // heads, dtype, mask, empty_rows=True)
    out = _merge_heads(g, attended, batch, steps, e)
    return _project(g, out, n.weight(f"{prefix}out_proj.weight"),
                    n.weight(f"{prefix}out_proj.bias") if bias else None, "attn_out")


def _attention_onnx(g, n):
    """multi_head_attention(q, k, v, heads, causal) over batch-first [B, length, width] tensors, no weights."""
    heads = plain(n["heads"])
    tq, tk, tv = n.type_of("q"), n.type_of("k"), n.type_of("v")
    batch, steps, keys = tq.shape[0], tq.shape[1], tk.shape[1]
    width = tq.shape[2]
    mask = _causal_mask(g, steps, keys) if n["causal"] else None   # [T, S]
    if n.tensor("mask") is not None:   # [B, S] padding keys -> [B, 1, 1, S], beside the causal mask
        padding = g.op("Unsqueeze", [n.tensor("mask"), g.ints([1, 2])], hint="padding")
        mask = padding if mask is None else g.op("Or", [mask, padding], hint="hidden")
    q, k, v = (_split_heads(g, n.tensor(p), t.shape, heads, p) for p, t in (("q", tq), ("k", tk), ("v", tv)))
    heads_out = _attend(g, q, k, v, width // heads, tq.dtype, mask, empty_rows=n.tensor("mask") is not None)
    return [_merge_heads(g, heads_out, batch, steps, tv.shape[2])]


# ---------------------------------------------------------------- MultiheadAttention

def _qkv(inputs: list) -> tuple:
    """(query, key, value): one input attends to itself; two are a query and a memory used as both."""
    q = inputs[0]
    k = inputs[1] if len(inputs) > 1 else q
    v = inputs[2] if len(inputs) > 2 else k
    return q, k, v


def _mha_resolve(b):
    q, k, v = _qkv(b.inputs)
    _check_qkv("MultiheadAttention", q, k, v)
    width = q.shape[-1]
    t, s = q.shape[1], k.shape[1]
    if b["causal"] and not isinstance(t, Sym) and not isinstance(s, Sym) and plain(t) != plain(s):
        raise ShapeError(f"`MultiheadAttention` with causal=true needs as many queries as keys, got {plain(t)} "
                         f"and {plain(s)}", code="E0403", input=1, label="length differs from the query's",
                         help="a causal mask is for self-attention over one sequence")
    if not isinstance(width, Sym) and plain(width) != plain(b["embed_dim"]):
        raise ShapeError(f"`MultiheadAttention` with embed_dim {plain(b['embed_dim'])} got a query of "
                         f"width {plain(width)} ({q.shape_str()})", code="E0403", input=0,
                         label=f"the last dimension must be {plain(b['embed_dim'])}")
    _need_divides(b["embed_dim"], b["num_heads"], "MultiheadAttention", "num_heads")
    _check_masks(b, q, k)
    n = len(b.inputs)
    kdim = static(k.shape[-1], "MultiheadAttention's kdim (the key's last dimension)", min(n - 1, 1))
    vdim = static(v.shape[-1], "MultiheadAttention's vdim (the value's last dimension)", min(n - 1, 2))
    # None (torch's default, "= embed_dim") keeps the common constructor short: nn.MultiheadAttention(E, h)
    same = plain(kdim) == plain(b["embed_dim"]) and plain(vdim) == plain(b["embed_dim"])
    return {"kdim": None if same else kdim, "vdim": None if same else vdim}


def _mask_type(b, name: str, dtype: str, layout: str):
    """A mask given at the application: bool, or float of the query's dtype (added to the scores)."""
    m = b.args.get(name)
    if m is None:
        return None
    t = m.type
    if t.dtype != "bool" and t.dtype != dtype:
        raise ShapeError(f"`{b.op.name}`'s `{name}` must be bool or {dtype} like the query, got {t.dtype}",
                         code="E0310", arg=name, label=f"{t.dtype}, not bool or {dtype}",
                         help=f"{layout}; true (or -inf) hides a key: `tokens == 0`")
    return t


def _check_masks(b, q, k) -> None:
    check_masks(b, q, k, b["num_heads"], "attn_mask", "key_padding_mask", "is_causal")
    if b["causal"] and b["attn_mask"] is not None:
        raise ShapeError("`MultiheadAttention` made with causal=true takes no attn_mask as well", code="E0403",
                         arg="attn_mask", label="a second mask",
                         help="give the causal mask yourself (`attn_mask=square_subsequent_mask(T)`) or use "
                              "causal=true alone")


def check_masks(b, q, k, heads, attn: str | None, pad: str | None, hint: str | None) -> None:
    """The masks of attention of queries `q` over keys `k`: the key padding mask (the argument named `pad`)
    [B, S]; the attention mask (`attn`) [T, S] or [B * heads, T, S]; `hint` (is_causal) is torch's hint
    that the attention mask is the causal mask (torch wants the mask too)."""
    batch, steps, keys = q.shape[0], q.shape[1], k.shape[1]
    what = f"`{b.op.name}`'s"
    m = _mask_type(b, pad, q.dtype, "[B, S]") if pad else None
    if m is not None and (m.rank != 2 or not _agree(m.shape[0], batch) or not _agree(m.shape[1], keys)):
        raise ShapeError(f"{what} {pad} must be [B, S] = [{dim_text(batch)}, {dim_text(keys)}] (the keys' batch "
                         f"and length), got {m.shape_str()}", code="E0403", arg=pad,
                         label=f"expected [{dim_text(batch)}, {dim_text(keys)}]",
                         help="true marks a key (padding) that no query attends to: `tokens == 0`")
    am = _mask_type(b, attn, q.dtype, "[T, S] or [B * heads, T, S]") if attn else None
    if am is not None:
        first = batch * heads
        ok = am.rank in (2, 3) and _agree(am.shape[-2], steps) and _agree(am.shape[-1], keys) and \
            (am.rank == 2 or _agree(am.shape[0], first))
        if not ok:
            raise ShapeError(f"{what} {attn} must be [T, S] = [{dim_text(steps)}, {dim_text(keys)}] or "
                             f"[B * heads, T, S] = [{dim_text(first)}, {dim_text(steps)}, {dim_text(keys)}], "
                             f"got {am.shape_str()}", code="E0403", arg=attn,
                             label=f"expected [{dim_text(steps)}, {dim_text(keys)}]",
                             help="true (or -inf) at [i, j] hides key j from query i")
    if hint and b[hint] and am is None:
        raise ShapeError(f"{what} {hint}=true is torch's hint that {attn} is the causal mask: it needs {attn} too",
                         code="E0403", arg=hint, label=f"no {attn} given",
                         help=f"give the mask too: `{attn}=square_subsequent_mask(T)`")


def _mha_infer(b):
    q, k, _ = _qkv(b.inputs)
    out = b.x.with_shape(b.x.shape[:2] + (b["embed_dim"],))
    if not b["need_weights"]:
        return [out]
    keys = k.shape[1] + 1 if b["add_bias_kv"] else k.shape[1]
    heads = () if b["average_attn_weights"] else (b["num_heads"],)
    return [out, b.x.with_shape((q.shape[0],) + heads + (q.shape[1], keys))]


def _kv_dims(a) -> tuple:
    e = a["embed_dim"]
    return (e if a["kdim"] is None else a["kdim"]), (e if a["vdim"] is None else a["vdim"])


def _packed(a) -> bool:
    """torch packs the three input projections into one in_proj_weight when all widths are E."""
    return a["kdim"] is None


def _mha_weights(a):
    e = a["embed_dim"]
    if _packed(a):
        w = {"in_proj_weight": (3 * e, e)}
    else:
        kdim, vdim = _kv_dims(a)
        w = {"q_proj_weight": (e, e), "k_proj_weight": (e, kdim), "v_proj_weight": (e, vdim)}
    if a["bias"]:
        w["in_proj_bias"] = (3 * e,)
    if a["add_bias_kv"]:
        w["bias_k"] = (1, 1, e)
        w["bias_v"] = (1, 1, e)
    w["out_proj.weight"] = (e, e)
    if a["bias"]:
        w["out_proj.bias"] = (e,)
    return w


def _mha_macs(b, outs):
    q, k, _ = _qkv(b.inputs)
    e, batch, steps, keys = b["embed_dim"], q.shape[0], q.shape[1], k.shape[1]
    kdim, vdim = _kv_dims(b.args)
    projections = steps * e * e + keys * (kdim + vdim) * e
    attended = keys + 1 if b["add_bias_kv"] else keys   # the bias key and value are attended to too
    return batch * (projections + 2 * steps * attended * e + steps * e * e)


def _mha_call(e, module: str) -> str:
    """`self.attn(q, k, v, key_padding_mask=m, need_weights=False, attn_mask=a)[0]`, keywords in torch's order."""
    q, k, v = _qkv(e.inputs)
    a = e.args
    kws = [f"key_padding_mask={e.arg('key_padding_mask')}"] if a["key_padding_mask"] is not None else []
    kws.append(f"need_weights={bool(a['need_weights'])}")
    if a["causal"]:
        # torch wants the mask itself; is_causal=True lets it use a causal kernel instead, which is the same
        # function except with add_bias_kv (torch then pads the mask so that every query sees the bias key)
        kws.append(f"attn_mask=causal_mask({q}.shape[1], {k}.shape[1], {q}.device)")
    elif a["attn_mask"] is not None:
        kws.append(f"attn_mask={e.arg('attn_mask')}")
    if a["need_weights"] and not a["average_attn_weights"]:
        kws.append("average_attn_weights=False")
    if a["is_causal"] or a["causal"] and not a["add_bias_kv"]:
        kws.append("is_causal=True")
    call = f"{module}({q}, {k}, {v}, {', '.join(kws)})"
    return call if a["need_weights"] else f"{call}[0]"


helper("causal_mask", '''
    def causal_mask(t: int, s: int, device: torch.device | None = None):
        """[t, s] bool, true where key j comes after query i: the keys a causal query must not see."""
        return torch.triu(torch.ones(t, s, dtype=torch.bool, device=device), diagonal=1)
''')


def _mha_arbitrary(d):
    heads, head_dim = d.int(1, 4), d.int(1, 4)
    e = heads * head_dim
    batch, steps, keys = d.int(1, 3), d.int(1, 5), d.int(1, 5)
    n = d.int(1, 3)
    kdim = e if n == 1 or d.bool() else d.int(1, 6)
    vdim = kdim if n < 3 or d.bool() else d.int(1, 6)
    inputs = (S(batch, steps, e), S(batch, keys, kdim), S(batch, keys, vdim))[:n]
    args = {"embed_dim": e, "num_heads": heads, "bias": d.bool(), "add_bias_kv": d.bool(),
            "dropout": d.choice([0.0, 0.1]), "causal": d.bool(), "need_weights": d.bool(),
            "average_attn_weights": d.bool()}
    # float masks (finite, added to the scores): a random bool mask may hide every key of a query,
    # where torch's paths differ (NaN or 0; tests/test_transformer_layers.py checks those apart)
    if d.bool():
        args["key_padding_mask"] = S(batch, keys, values=(-2.0, 0.0))
    if not args["causal"] and d.bool():
        args["attn_mask"] = S(*((batch * heads,) if d.bool() else ()), steps, keys, values=(-2.0, 0.0))
    return Example(args, inputs)


MHA_KEYWORDS = (
    ParamSpec("key_padding_mask", OPTIONAL_TENSOR, None, doc="[B, S] bool (true: a key no query sees) or float "
                                                             "(added to the scores)"),
    ParamSpec("need_weights", BOOL, False, doc="also return the attention weights (torch's default is true; "
                                               "dslc's false returns the values alone)"),
    ParamSpec("attn_mask", OPTIONAL_TENSOR, None, doc="[T, S] or [B * heads, T, S], bool (true: hidden) or float"),
    ParamSpec("average_attn_weights", BOOL, True, doc="weights averaged over the heads [B, T, S]; false: "
                                                      "[B, heads, T, S]"),
    ParamSpec("is_causal", BOOL, False, doc="torch's hint that attn_mask is the causal mask (needs attn_mask)"),
)


register(OpDef(
    name="MultiheadAttention", kind="layer", family="attention", stem="attn",
    doc="Multi-head attention with learned projections, batch-first; applied to (query, key, value), "
        "to (query, memory) or to one input (self-attention), with torch's keywords (key_padding_mask, attn_mask, "
        "is_causal, need_weights, average_attn_weights). Returns the attended values [B, T, E], and with "
        "need_weights=true also the attention weights.",
    inputs=("query", "key", "value"), min_inputs=1,
    params=(ParamSpec("embed_dim", INT, check=checks.positive, doc="the query's width E"),
            ParamSpec("num_heads", INT, check=checks.positive, doc="heads; must divide embed_dim"),
            ParamSpec("dropout", FLOAT, 0.0, checks.probability, doc="dropout on the attention weights"),
            ParamSpec("bias", BOOL, True),
            ParamSpec("add_bias_kv", BOOL, False, doc="append a learned key and value to the sequence"),
            ParamSpec("causal", BOOL, False, doc="each query sees the keys up to its own position only "
                                                 "(self-attention in a decoder)")),
    keyword_inputs=MHA_KEYWORDS,
    resolve=_mha_resolve,
    infer=_mha_infer,
    weights=_mha_weights, macs=_mha_macs,
    label=lambda a: f"MultiheadAttention {plain(a['embed_dim'])}, {plain(a['num_heads'])} heads",
    torch=TorchLayer("nn.MultiheadAttention", ("embed_dim", "num_heads"),
                     ("dropout", "bias", "add_bias_kv", "kdim", "vdim"), fixed=(("batch_first", "True"),),
                     call=_mha_call, helpers=lambda a: ("causal_mask",) if a["causal"] else ()),
    onnx=_mha_onnx,
    pure=False,  # dropout on the attention weights is random in training
    examples=(Example({"embed_dim": 8, "num_heads": 2}, (S(2, 5, 8),)),
              Example({"embed_dim": 6, "num_heads": 3, "dropout": 0.1}, (S(2, 4, 6), S(2, 7, 6), S(2, 7, 6))),
              Example({"embed_dim": 4, "num_heads": 2, "bias": False}, (S(2, 3, 4), S(2, 5, 3), S(2, 5, 7))),
              Example({"embed_dim": 4, "num_heads": 1, "add_bias_kv": True}, (S(2, 3, 4), S(2, 6, 5))),
              Example({"embed_dim": 8, "num_heads": 2, "causal": True}, (S(2, 5, 8),)),
              Example({"embed_dim": 8, "num_heads": 2, "key_padding_mask": S(2, 6, values=(-3.0, 0.0)),
                       "attn_mask": S(4, 6, values=(-1.0, 0.0)), "need_weights": True},
                      (S(2, 4, 8), S(2, 6, 8))),
              Example({"embed_dim": 4, "num_heads": 2, "add_bias_kv": True, "need_weights": True,
                       "average_attn_weights": False, "attn_mask": S(4, 3, 5, values=(-1.0, 0.0))},
                      (S(2, 3, 4), S(2, 5, 4)))),
    arbitrary=_mha_arbitrary,
))


# ---------------------------------------------------------------- attention(q, k, v, heads)

_MULTI_HEAD_ATTENTION = helper("multi_head_attention", '''
    def multi_head_attention(q, k, v, heads: int, causal: bool = False, dropout: float = 0.0,
                             training: bool = False, mask: torch.Tensor | None = None):
        """softmax(q kᵀ / √d) v in each of `heads` heads of batch-first [B, length, width] tensors;
        `mask` [B, S] is true for the keys (padding) that no query attends to."""
        b, t, s = q.shape[0], q.shape[1], k.shape[1]
        q = q.reshape(b, t, heads, -1).transpose(1, 2)  # [B, heads, T, d]
        k = k.reshape(b, s, heads, -1).transpose(1, 2)  # [B, heads, S, d]
        v = v.reshape(b, s, heads, -1).transpose(1, 2)  # [B, heads, S, dv]
        scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
        if causal:  # query i sees keys 0..i only
            future = torch.triu(torch.ones(t, s, dtype=torch.bool, device=q.device), diagonal=1)
            scores = scores.masked_fill(future, float("-inf"))
        if mask is not None:
            scores = scores.masked_fill(mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        if mask is not None:  # a query whose keys are all hidden attends to nothing (0, as F.sdpa gives)
            weights = weights.masked_fill(scores.isneginf().all(-1, keepdim=True), 0.0)
        weights = F.dropout(weights, p=dropout, training=training)
        return (weights @ v).transpose(1, 2).reshape(b, t, -1)  # heads side by side again
''')


def _without_mask(source: str) -> str:
    """The helper above without its mask: no `mask` argument, no `if mask is not None:` steps."""
    lines, out = source.splitlines(), []
    for k, line in enumerate(lines):
        if line.lstrip().startswith("if mask is not None") or k and lines[k - 1].lstrip().startswith("if mask is not None"):
            continue
        out.append(line)
    text = "\n".join(out) + "\n"
    text = text.replace(",\n                         training: bool = False, mask: torch.Tensor | None = None):",
                        ", training: bool = False):")
    text = text.replace(";\n    `mask` [B, S] is true for the keys (padding) that no query attends to.", ".")
    if "mask:" in text or "`mask`" in text or "mask is" in text:
        raise AssertionError("multi_head_attention changed: say here how to write it without its mask")
    return text


# The same function where no call of the file passes a mask (the generated file carries no code it
# never runs): a file with both writes the full one (backends/torch_codegen.py _helper_order).
helper("multi_head_attention/unmasked", "\n" + textwrap.indent(_without_mask(_MULTI_HEAD_ATTENTION.source), "    "),
       replaces="multi_head_attention")   # indented as a template is: helper() dedents it


def _attention_helpers(args: dict) -> tuple:
    return ("multi_head_attention",) if args.get("mask") is not None else ("multi_head_attention/unmasked",)


def _attention_infer(b):
    q, k, v = b["q"].type, b["k"].type, b["v"].type
    for i, t in enumerate((q, k, v)):   # the op takes any dtype so that the mask may be bool
        if not t.is_float:
            raise ShapeError(f"`attention` expects floating-point q, k and v, got {t.dtype}", code="E0310",
                             input=i, label="needs floating-point")
    _check_qkv("attention", q, k, v)
    mask = b.args.get("mask")   # an optional tensor argument: absent where a caller binds only the others
    if mask is not None:
        m = mask.type
        if m.dtype != "bool" or m.rank != 2 or not _agree(m.shape[0], k.shape[0]) or not _agree(m.shape[1], k.shape[1]):
            raise ShapeError(f"`attention`'s mask must be bool [B, S] like the keys' batch and length "
                             f"({dim_text(k.shape[0])}, {dim_text(k.shape[1])}), got {m}", code="E0403", arg="mask",
                             help="true marks a key (padding) that no query attends to: `tokens == 0`")
    if not _agree(q.shape[-1], k.shape[-1]):
        raise ShapeError(f"`attention`: query and key widths differ ({dim_text(q.shape[-1])} and {dim_text(k.shape[-1])})",
                         code="E0403", input=1, label="width differs from the query's")
    _need_divides(q.shape[-1], b["heads"], "attention", "heads", where=b.where)
    _need_divides(v.shape[-1], b["heads"], "attention", "heads", where=b.where)
    t, s = q.shape[1], k.shape[1]
    if b["causal"] and not isinstance(t, Sym) and not isinstance(s, Sym) and plain(t) != plain(s):
        raise ShapeError(f"`attention` with causal=true needs as many queries as keys, got {plain(t)} and "
                         f"{plain(s)}", code="E0403", input=1, label="length differs from the query's",
                         help="a causal mask is for self-attention over one sequence")
    return [q.with_shape(q.shape[:2] + (v.shape[-1],))]


def _mask_kw(e) -> str:
    return f", mask={e.arg('mask')}" if e.args["mask"] is not None else ""


def _attention_expr(e) -> str:
    training = ", training=self.training" if e.kw("dropout") else ""  # dropout 0 never needs the mode
    return (f"multi_head_attention({e.arg('q')}, {e.arg('k')}, {e.arg('v')}, {e.fmt(e['heads'])}"
            f"{e.kw('causal')}{e.kw('dropout')}{training}{_mask_kw(e)})")


def _attention_arbitrary(d):
    heads = d.int(1, 4)
    batch, steps = d.int(1, 3), d.int(1, 5)
    causal = d.bool()
    keys = steps if causal else d.int(1, 5)
    width, vwidth = heads * d.int(1, 3), heads * d.int(1, 3)
    return Example({"q": S(batch, steps, width), "k": S(batch, keys, width), "v": S(batch, keys, vwidth),
                    "heads": heads, "causal": causal, "dropout": d.choice([0.0, 0.2])})


def _attention_op(name: str, doc: str, torch: TorchFunction, internal: bool = False) -> OpDef:
    """`attention` and its -O1 form `sdpa`: one signature, shape rule, MACs, ONNX form and examples;
    only the PyTorch emission differs."""
    return register(OpDef(
        name=name, kind="function", family="attention", internal=internal, doc=doc,
        params=(ParamSpec("q", TENSOR), ParamSpec("k", TENSOR), ParamSpec("v", TENSOR),
                ParamSpec("heads", INT, check=checks.positive, doc="must divide the widths"),
                ParamSpec("causal", BOOL, False),
                ParamSpec("dropout", FLOAT, 0.0, checks.probability, doc="dropout on the attention weights"),
                ParamSpec("mask", OPTIONAL_TENSOR, None, doc="bool [B, S]: true for keys no query attends to")),
        infer=_attention_infer, dtypes=DTYPES,
        macs=lambda b, out: b["q"].type.shape[0] * b["q"].type.shape[1] * b["k"].type.shape[1]
        * (b["q"].type.shape[2] + b["v"].type.shape[2]),
        label=lambda a: "causal attention" if a["causal"] else "attention",
        torch=torch,
        onnx=_attention_onnx,
        pure=False,  # dropout on the attention weights is random in training
        examples=(Example({"q": S(2, 5, 8), "k": S(2, 5, 8), "v": S(2, 5, 8), "heads": 2}),
                  Example({"q": S(2, 4, 6), "k": S(2, 4, 6), "v": S(2, 4, 6), "heads": 3, "causal": True,
                           "dropout": 0.1}),
                  Example({"q": S(2, 3, 4), "k": S(2, 6, 4), "v": S(2, 6, 2), "heads": 2}),
                  Example({"q": S(2, 5, 4), "k": S(2, 5, 4), "v": S(2, 5, 4), "heads": 2, "causal": True,
                           "mask": S(2, 5, dtype="bool", values=(0, 2))})),
        arbitrary=_attention_arbitrary,
    ))


_attention_op("attention", "Multi-head scaled dot-product attention without weights: softmax(q kᵀ / √d) v in each "
              "of `heads` heads of batch-first [B, T, D] tensors; `causal` hides later keys. Returns [B, T, Dv].",
              TorchFunction(_attention_expr, helpers=_attention_helpers))


# ---------------------------------------------------------------- sdpa: attention through torch's fused kernels

helper("sdpa_attention", '''
    def sdpa_attention(q, k, v, heads: int, causal: bool = False, dropout: float = 0.0,
                       mask: torch.Tensor | None = None):
        """multi_head_attention through F.scaled_dot_product_attention (fused kernels where there are some)."""
        b, t, s = q.shape[0], q.shape[1], k.shape[1]
        q = q.reshape(b, t, heads, -1).transpose(1, 2)  # [B, heads, T, d]
        k = k.reshape(b, s, heads, -1).transpose(1, 2)  # [B, heads, S, d]
        v = v.reshape(b, s, heads, -1).transpose(1, 2)  # [B, heads, S, dv]
        allowed: torch.Tensor | None = None
        if mask is not None:  # scaled_dot_product_attention's boolean mask marks the keys that take part
            allowed = ~mask[:, None, None, :]
            if causal:  # it takes a mask or is_causal, not both
                allowed = allowed & torch.ones(t, s, dtype=torch.bool, device=q.device).tril()
                causal = False
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout, is_causal=causal)
        return out.transpose(1, 2).reshape(b, t, -1)  # heads side by side again
''')


def _sdpa_expr(e) -> str:
    dropout = e.kw("dropout")
    if dropout:  # dropout only while training, as F.dropout(..., training=self.training) does
        dropout = f", dropout={e.fmt(e.args['dropout'])} if self.training else 0.0"
    return (f"sdpa_attention({e.arg('q')}, {e.arg('k')}, {e.arg('v')}, {e.fmt(e['heads'])}"
            f"{e.kw('causal')}{dropout}{_mask_kw(e)})")


# Made by the -O1 pass that rewrites `attention` (dslc/passes/attention.py), not written in specs.
_attention_op("sdpa", "`attention` computed by torch.nn.functional.scaled_dot_product_attention (made by the -O1 "
              "passes).", TorchFunction(_sdpa_expr, helpers=("sdpa_attention",)), internal=True)
