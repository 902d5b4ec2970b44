"""Central finite differences in float64, for gradient checks against a reference forward."""

from __future__ import annotations

import numpy as np


def central_difference(f, v, h=1e-6):
    """∂f/∂v for every element of the float64 array v (changed in place and restored)."""
    grad = np.zeros_like(v, dtype=np.float64)
    flat, out = v.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + h
        up = f()
        flat[i] = keep - h
        down = f()
        flat[i] = keep
        out[i] = (up - down) / (2 * h)
    return grad


def float32_input_gradient(layer, x, g, h=1e-2, **forward_options):
    """d sum(layer.forward(x, **forward_options)·g)/dx by central differences through the
    layer's own float32 forward (steps measured after rounding to float32)."""
    h = np.float32(h)
    numeric = np.zeros(x.shape)
    for idx in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        step = float(up[idx]) - float(down[idx])
        numeric[idx] = (np.sum(layer.forward(up, **forward_options) * g)
                        - np.sum(layer.forward(down, **forward_options) * g)) / step
    return numeric
