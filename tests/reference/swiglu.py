"""float64 NumPy reference of the SwiGLU block on rows along the last axis:
out = W_down·(act(W_gate·x + b_gate) ⊙ (W_up·x + b_up)) + b_down, act = SiLU or ReLU², and its
backward for an upstream gradient g = dL/dout."""

from __future__ import annotations

import numpy as np

from .dense import activate, derivative


def _f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64) for a in arrays]


def swiglu_forward(x, w_gate, w_up, w_down, b_gate=None, b_up=None, b_down=None, act="silu"):
    """out with x's shape; biases may be None (no bias)."""
    x, w_gate, w_up, w_down, b_gate, b_up, b_down = _f64(x, w_gate, w_up, w_down, b_gate, b_up, b_down)
    gate = x @ w_gate.T + (0.0 if b_gate is None else b_gate)
    up = x @ w_up.T + (0.0 if b_up is None else b_up)
    a = activate(act, gate) * up
    return a @ w_down.T + (0.0 if b_down is None else b_down)


def swiglu_backward(x, g, w_gate, w_up, w_down, b_gate=None, b_up=None, b_down=None, act="silu"):
    """(dx, [dW_gate, dW_up, dW_down, db_gate, db_up, db_down]) — the bias gradients only when
    the layer has biases."""
    x, g, w_gate, w_up, w_down, b_gate, b_up, b_down = _f64(x, g, w_gate, w_up, w_down, b_gate, b_up, b_down)
    h = x.shape[-1]
    xr, gr = x.reshape(-1, h), g.reshape(-1, h)
    gate = xr @ w_gate.T + (0.0 if b_gate is None else b_gate)
    up = xr @ w_up.T + (0.0 if b_up is None else b_up)
    a = activate(act, gate) * up
    da = gr @ w_down
    d_up = da * activate(act, gate)
    d_gate = da * up * derivative(act, gate)
    dx = d_up @ w_up + d_gate @ w_gate
    grads = [d_gate.T @ xr, d_up.T @ xr, gr.T @ a]
    if b_gate is not None:
        grads += [d_gate.sum(axis=0), d_up.sum(axis=0), gr.sum(axis=0)]
    return dx.reshape(x.shape), grads
