"""float64 NumPy references of RMSNorm and LayerNorm over the last axis (two-pass biased
variance, as torch.nn.LayerNorm) and their backward passes for g = dL/dy."""

from __future__ import annotations

import numpy as np


def rmsnorm_forward(x, gain, eps):
    x = np.asarray(x, dtype=np.float64)
    rms = np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return x / rms * np.asarray(gain, dtype=np.float64)


def rmsnorm_backward(x, gain, g, eps):
    """(dx, dgain)."""
    x, gain, g = (np.asarray(a, dtype=np.float64) for a in (x, gain, g))
    inv = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    xh = x * inv
    h = g * gain
    dx = inv * (h - xh * np.mean(h * xh, axis=-1, keepdims=True))
    return dx, (g * xh).reshape(-1, x.shape[-1]).sum(axis=0)


def layernorm_forward(x, gain, shift, eps):
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * np.asarray(gain, dtype=np.float64) + np.asarray(shift, dtype=np.float64)


def layernorm_backward(x, gain, g, eps):
    """(dx, dgain, dshift)."""
    x, gain, g = (np.asarray(a, dtype=np.float64) for a in (x, gain, g))
    mu = x.mean(axis=-1, keepdims=True)
    inv = 1.0 / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + eps)
    xh = (x - mu) * inv
    h = g * gain
    dx = inv * (h - h.mean(axis=-1, keepdims=True) - xh * np.mean(h * xh, axis=-1, keepdims=True))
    n = x.shape[-1]
    return dx, (g * xh).reshape(-1, n).sum(axis=0), g.reshape(-1, n).sum(axis=0)
