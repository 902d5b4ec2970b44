"""float64 NumPy reference of MultiHeadAttention: projections with biases, optional per-head
Q/K RMSNorm, RoPE with half-split (NeoX) pairing, grouped KV heads, scaled dot-product attention
with an optional causal mask, output projection; and its backward pass for g = dL/dy.

Parameters are a dict: wq [H·hd, d], wk, wv [Hkv·hd, d], wo [d, H·hd], bq, bk, bv, bo (or None)
and q_norm, k_norm [hd] (or None). Inputs are [batch, seq, d]."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the order of ``layer.parameters`` (biases and norm gains only when the layer has them).
PARAM_ORDER = ["wq", "wk", "wv", "wo", "bq", "bk", "bv", "bo", "q_norm", "k_norm"]


@dataclass
class Config:
    heads: int
    kv_heads: int
    head_dim: int
    rope_base: float = 10000.0
    causal: bool = True
    eps: float = 1e-6


def rope_tables(seq: int, head_dim: int, base: float, first: int = 0):
    """cos, sin of pos·base^(−2i/hd) for positions first..first+seq−1, i < hd//2: [seq, hd//2]."""
    half = head_dim // 2
    inv_freq = base ** (-2.0 * np.arange(half) / head_dim)
    angles = np.arange(first, first + seq, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.cos(angles), np.sin(angles)


def rope(x, cos, sin, inverse: bool = False):
    """Rotate pairs (i, i + hd//2) of x [batch, seq, heads, hd]; an odd last element stays."""
    half = cos.shape[1]
    sin = -sin if inverse else sin
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = x.copy()
    a, b = x[..., :half], x[..., half:2 * half]
    out[..., :half] = a * c - b * s
    out[..., half:2 * half] = a * s + b * c
    return out


def _rms_norm(x, gain, eps):
    inv = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return x * inv * gain, inv


def _rms_norm_backward(x, inv, gain, g):
    hd = x.shape[-1]
    dot = np.sum(gain * g * x, axis=-1, keepdims=True)
    dx = inv * gain * g - x * inv**3 * dot / hd
    dgain = np.sum(g * x * inv, axis=tuple(range(x.ndim - 1)))
    return dx, dgain


def _linear(x, w, b):
    y = x @ np.asarray(w, dtype=np.float64).T
    return y if b is None else y + b


def _f64(p):
    return {k: (None if v is None else np.asarray(v, dtype=np.float64)) for k, v in p.items()}


def _forward_parts(x, p, c: Config):
    x = np.asarray(x, dtype=np.float64)
    p = _f64(p)
    batch, seq, _ = x.shape
    group = c.heads // c.kv_heads
    q_raw = _linear(x, p["wq"], p.get("bq")).reshape(batch, seq, c.heads, c.head_dim)
    k_raw = _linear(x, p["wk"], p.get("bk")).reshape(batch, seq, c.kv_heads, c.head_dim)
    v = _linear(x, p["wv"], p.get("bv")).reshape(batch, seq, c.kv_heads, c.head_dim)
    q, k, q_inv, k_inv = q_raw, k_raw, None, None
    if p.get("q_norm") is not None:
        q, q_inv = _rms_norm(q_raw, p["q_norm"], c.eps)
        k, k_inv = _rms_norm(k_raw, p["k_norm"], c.eps)
    cos, sin = rope_tables(seq, c.head_dim, c.rope_base)
    q, k = rope(q, cos, sin), rope(k, cos, sin)
    k_rep, v_rep = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
    scores = np.einsum("bshd,bthd->bhst", q, k_rep) / np.sqrt(c.head_dim)
    if c.causal:
        scores = np.where(np.tril(np.ones((seq, seq), dtype=bool)), scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=-1, keepdims=True)
    attn = np.einsum("bhst,bthd->bshd", probs, v_rep).reshape(batch, seq, c.heads * c.head_dim)
    y = _linear(attn, p["wo"], p.get("bo"))
    return y, dict(x=x, p=p, q_raw=q_raw, k_raw=k_raw, q_inv=q_inv, k_inv=k_inv, q=q, k_rep=k_rep,
                   v_rep=v_rep, probs=probs, attn=attn, cos=cos, sin=sin)


def attention_forward(x, params, config: Config) -> np.ndarray:
    """y [batch, seq, d] in float64."""
    return _forward_parts(x, params, config)[0]


def attention_backward(x, params, config: Config, g):
    """(dx, {name: gradient}) for every parameter present in ``params``."""
    c = config
    _, t = _forward_parts(x, params, c)
    p, x = t["p"], t["x"]
    g = np.asarray(g, dtype=np.float64)
    batch, seq, _ = x.shape
    group = c.heads // c.kv_heads
    grads = {"wo": g.reshape(-1, g.shape[-1]).T @ t["attn"].reshape(-1, t["attn"].shape[-1])}
    if p.get("bo") is not None:
        grads["bo"] = g.sum(axis=(0, 1))
    d_attn = (g @ p["wo"]).reshape(batch, seq, c.heads, c.head_dim)
    probs = t["probs"]
    dv_rep = np.einsum("bhst,bshd->bthd", probs, d_attn)
    dp = np.einsum("bshd,bthd->bhst", d_attn, t["v_rep"])
    ds = probs * (dp - np.sum(dp * probs, axis=-1, keepdims=True)) / np.sqrt(c.head_dim)
    dq = np.einsum("bhst,bthd->bshd", ds, t["k_rep"])
    dk_rep = np.einsum("bhst,bshd->bthd", ds, t["q"])
    dk = dk_rep.reshape(batch, seq, c.kv_heads, group, c.head_dim).sum(axis=3)
    dv = dv_rep.reshape(batch, seq, c.kv_heads, group, c.head_dim).sum(axis=3)
    dq, dk = rope(dq, t["cos"], t["sin"], inverse=True), rope(dk, t["cos"], t["sin"], inverse=True)
    if p.get("q_norm") is not None:
        dq, grads["q_norm"] = _rms_norm_backward(t["q_raw"], t["q_inv"], p["q_norm"], dq)
        dk, grads["k_norm"] = _rms_norm_backward(t["k_raw"], t["k_inv"], p["k_norm"], dk)
    dx = np.zeros_like(x)
    for name, d_proj in (("q", dq), ("k", dk), ("v", dv)):
        rows = d_proj.reshape(batch * seq, -1)
        grads["w" + name] = rows.T @ x.reshape(batch * seq, -1)
        if p.get("b" + name) is not None:
            grads["b" + name] = rows.sum(axis=0)
        dx += (rows @ p["w" + name]).reshape(x.shape)
    return dx, grads
