"""float64 NumPy reference of a Dense layer: y = f(x·Wᵀ + b), W of shape [out, in], and its
backward pass for an upstream gradient g = dL/dy: (dL/dx, dL/dW, dL/db)."""

from __future__ import annotations

import math

import numpy as np

ACTIVATIONS = ["relu", "silu", "gelu", "gelu_exact", "tanh", "sigmoid", "leaky_relu", "relu2", "linear"]

#: the name each activation is written with in the build JSON (the reference's String()).
JSON_NAMES = {
    "relu": "ReLU", "silu": "Silu", "gelu": "GELU", "gelu_exact": "GELUExact", "tanh": "Tanh",
    "sigmoid": "Sigmoid", "leaky_relu": "LeakyReLU", "relu2": "ReLU2", "linear": "Linear",
}

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715
_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def activate(name: str, z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "silu":
        return z * _sigmoid(z)
    if name == "gelu":
        return 0.5 * z * (1.0 + np.tanh(_SQRT_2_OVER_PI * (z + _GELU_C * z**3)))
    if name == "gelu_exact":
        return 0.5 * z * (1.0 + _erf(z / math.sqrt(2.0)))
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return _sigmoid(z)
    if name == "leaky_relu":
        return np.where(z >= 0, z, 0.01 * z)
    if name == "relu2":
        return np.maximum(z, 0.0) ** 2
    if name == "linear":
        return z.copy()
    raise KeyError(name)


def derivative(name: str, z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if name == "relu":
        return (z > 0).astype(np.float64)
    if name == "silu":
        s = _sigmoid(z)
        return s * (1.0 + z * (1.0 - s))
    if name == "gelu":
        t = np.tanh(_SQRT_2_OVER_PI * (z + _GELU_C * z**3))
        du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_C * z**2)
        return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * du
    if name == "gelu_exact":
        cdf = 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))
        pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        return cdf + z * pdf
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if name == "sigmoid":
        s = _sigmoid(z)
        return s * (1.0 - s)
    if name == "leaky_relu":
        return np.where(z >= 0, 1.0, 0.01)
    if name == "relu2":
        return np.where(z > 0, 2.0 * z, 0.0)
    if name == "linear":
        return np.ones_like(z)
    raise KeyError(name)


def _as2d(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(1, -1) if x.ndim == 1 else x


def dense_forward(x, w, b=None, activation: str = "linear") -> np.ndarray:
    """y = f(x·Wᵀ + b) in float64."""
    z = _as2d(x) @ np.asarray(w, dtype=np.float64).T
    if b is not None:
        z = z + np.asarray(b, dtype=np.float64)
    return activate(activation, z)


def dense_backward(x, w, g, b=None, activation: str = "linear"):
    """(dx [batch, in], dW [out, in], db [out]) for upstream gradient g = dL/dy."""
    x = _as2d(x)
    w = np.asarray(w, dtype=np.float64)
    z = x @ w.T
    if b is not None:
        z = z + np.asarray(b, dtype=np.float64)
    gz = _as2d(g) * derivative(activation, z)
    return gz @ w, gz.T @ x, gz.sum(axis=0)


def norm_rel_err(a, b) -> float:
    """‖a − b‖₂ / ‖b‖₂: the norm-wise relative error (how "relative" is meant in the schedule
    agreement claim; insensitive to cancellation in single outputs)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} vs {b.shape}"
    den = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / den) if den else float(np.linalg.norm(a))


def rel_err(a, b) -> float:
    """max|a − b| / max|b| (0 when both are all zeros)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} vs {b.shape}"
    den = np.max(np.abs(b)) if b.size else 0.0
    num = np.max(np.abs(a - b)) if a.size else 0.0
    if den == 0.0:
        return float(num)
    return float(num / den)
