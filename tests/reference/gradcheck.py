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
