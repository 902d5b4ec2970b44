"""float64 NumPy reference of differentiable k-means: a = softmax_k(−‖x − c_k‖² / 2τ²) per
sample (samples flattened to F values), output a ("probabilities") or Σ_k a_k c_k
("features"), then an activation; backward for g = dL/dout gives (dx, dC)."""

from __future__ import annotations

import numpy as np

from .dense import activate, derivative


def _assign(x, c, tau):
    d2 = ((x[:, None, :] - c[None, :, :]) ** 2).sum(axis=-1)
    logits = -d2 / (2.0 * tau * tau)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _pre(x, c, tau, mode):
    a = _assign(x, c, tau)
    return a, (a @ c if mode == "features" else a)


def kmeans_forward(x, c, tau=1.0, mode="probabilities", act="linear"):
    """[B, K] (probabilities) or [B, F] (features) for x of shape [B, ...]."""
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(x.shape[0], -1)
    return activate(act, _pre(x, np.asarray(c, dtype=np.float64), tau, mode)[1])


def kmeans_backward(x, c, g, tau=1.0, mode="probabilities", act="linear"):
    """(dx [B, F], dC [K, F])."""
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(x.shape[0], -1)
    c = np.asarray(c, dtype=np.float64)
    a, pre = _pre(x, c, tau, mode)
    gp = np.asarray(g, dtype=np.float64).reshape(pre.shape) * derivative(act, pre)
    dc = np.zeros_like(c)
    if mode == "features":
        da = gp @ c.T
        dc += a.T @ gp
    else:
        da = gp
    dlogit = a * (da - (a * da).sum(axis=1, keepdims=True))
    # logit_k = −‖x − c_k‖²/2τ²: ∂/∂x = (c_k − x)/τ², ∂/∂c_k = (x − c_k)/τ²
    diff = x[:, None, :] - c[None, :, :]
    dx = -(dlogit[:, :, None] * diff).sum(axis=1) / tau**2
    dc += (dlogit[:, :, None] * diff).sum(axis=0) / tau**2
    return dx, dc
