"""float64 NumPy reference of the RNN and LSTM layers (PyTorch's equations, h_0 = c_0 = 0, one
bias per gate row): forward over x [batch, T, in] → every hidden state [batch, T, hidden], and
backpropagation through time for an upstream gradient g = dL/dh [batch, T, hidden], giving
(dx, dW_ih, dW_hh, db). LSTM gate rows are stacked i, f, g, o."""

from __future__ import annotations

import numpy as np


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def rnn_forward(x, w_ih, w_hh, b, nonlinearity: str = "tanh") -> np.ndarray:
    x, w_ih, w_hh, b = _f64(x, w_ih, w_hh, b)
    batch, steps, _ = x.shape
    h = np.zeros((batch, w_hh.shape[0]))
    out = []
    for t in range(steps):
        pre = x[:, t] @ w_ih.T + h @ w_hh.T + b
        h = np.tanh(pre) if nonlinearity == "tanh" else np.maximum(pre, 0.0)
        out.append(h)
    return np.stack(out, axis=1)


def rnn_backward(x, w_ih, w_hh, b, g, nonlinearity: str = "tanh"):
    x, w_ih, w_hh, b, g = _f64(x, w_ih, w_hh, b, g)
    hs = rnn_forward(x, w_ih, w_hh, b, nonlinearity)
    batch, steps, hidden = hs.shape
    dx = np.zeros_like(x)
    dw_ih, dw_hh, db = np.zeros_like(w_ih), np.zeros_like(w_hh), np.zeros_like(b)
    carry = np.zeros((batch, hidden))
    for t in reversed(range(steps)):
        dh = g[:, t] + carry
        slope = 1.0 - hs[:, t] ** 2 if nonlinearity == "tanh" else (hs[:, t] > 0).astype(np.float64)
        dpre = dh * slope
        h_prev = hs[:, t - 1] if t > 0 else np.zeros((batch, hidden))
        dx[:, t] = dpre @ w_ih
        dw_ih += dpre.T @ x[:, t]
        dw_hh += dpre.T @ h_prev
        db += dpre.sum(axis=0)
        carry = dpre @ w_hh
    return dx, dw_ih, dw_hh, db


def _lstm_steps(x, w_ih, w_hh, b):
    """Per step: (i, f, g, o, c, h), each [batch, hidden]."""
    batch, steps, _ = x.shape
    hidden = w_hh.shape[1]
    h = np.zeros((batch, hidden))
    c = np.zeros((batch, hidden))
    out = []
    for t in range(steps):
        pre = x[:, t] @ w_ih.T + h @ w_hh.T + b
        i, f, gg, o = (pre[:, k * hidden:(k + 1) * hidden] for k in range(4))
        i, f, gg, o = _sigmoid(i), _sigmoid(f), np.tanh(gg), _sigmoid(o)
        c = f * c + i * gg
        h = o * np.tanh(c)
        out.append((i, f, gg, o, c, h))
    return out


def lstm_forward(x, w_ih, w_hh, b) -> np.ndarray:
    x, w_ih, w_hh, b = _f64(x, w_ih, w_hh, b)
    return np.stack([s[5] for s in _lstm_steps(x, w_ih, w_hh, b)], axis=1)


def lstm_backward(x, w_ih, w_hh, b, g):
    x, w_ih, w_hh, b, g = _f64(x, w_ih, w_hh, b, g)
    steps_state = _lstm_steps(x, w_ih, w_hh, b)
    batch, steps, _ = x.shape
    hidden = w_hh.shape[1]
    dx = np.zeros_like(x)
    dw_ih, dw_hh, db = np.zeros_like(w_ih), np.zeros_like(w_hh), np.zeros_like(b)
    dh_carry = np.zeros((batch, hidden))
    dc_carry = np.zeros((batch, hidden))
    for t in reversed(range(steps)):
        i, f, gg, o, c, h = steps_state[t]
        c_prev = steps_state[t - 1][4] if t > 0 else np.zeros((batch, hidden))
        h_prev = steps_state[t - 1][5] if t > 0 else np.zeros((batch, hidden))
        dh = g[:, t] + dh_carry
        tc = np.tanh(c)
        dc = dc_carry + dh * o * (1.0 - tc ** 2)
        dpre = np.concatenate([
            dc * gg * i * (1.0 - i),
            dc * c_prev * f * (1.0 - f),
            dc * i * (1.0 - gg ** 2),
            dh * tc * o * (1.0 - o),
        ], axis=1)
        dx[:, t] = dpre @ w_ih
        dw_ih += dpre.T @ x[:, t]
        dw_hh += dpre.T @ h_prev
        db += dpre.sum(axis=0)
        dh_carry = dpre @ w_hh
        dc_carry = dc * f
    return dx, dw_ih, dw_hh, db
