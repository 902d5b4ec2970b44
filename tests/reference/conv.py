"""float64 NumPy reference of the convolution layers on channels-first batches [B, C, *spatial]
(1–3 spatial axes), weights W [F, C, k, ...]: cross-correlation with zero padding (CNN1/2/3)
and the transposed convolution in its scatter form (ConvTransposed1D/2D/3D), each with bias and
activation, and their backward passes for an upstream gradient g = dL/dy.

Written per kernel tap with strided slices (no patch matrices), independently of the engine's
im2col/gather implementation."""

from __future__ import annotations

import itertools

import numpy as np

from .dense import activate, derivative


def conv_output_size(n: int, k: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - k) // stride + 1


def transposed_output_size(n: int, k: int, stride: int, padding: int, output_padding: int = 0) -> int:
    return (n - 1) * stride - 2 * padding + k + output_padding


def _taps(w):
    """Every kernel tap index (t_0, ..., t_{n-1}) of W [F, C, k, ...]."""
    return itertools.product(*(range(k) for k in w.shape[2:]))


def _strided(taps, counts, stride):
    """Slices (t, t + s, ..., t + s·(count − 1)) per spatial axis, after the batch/channel axes."""
    return (slice(None), slice(None)) + tuple(slice(t, t + stride * (n - 1) + 1, stride)
                                              for t, n in zip(taps, counts))


def _outer(g, patch):
    """Σ over batch and spatial axes of g[b, f, ...]·patch[b, c, ...] → [f, c]."""
    axes = [0, *range(2, g.ndim)]
    return np.tensordot(g, patch, axes=(axes, axes))


def _bias(z, b):
    return z if b is None else z + np.asarray(b, np.float64).reshape((1, -1) + (1,) * (z.ndim - 2))


# ---- cross-correlation -------------------------------------------------------------------------

def _conv_pre(x, w, stride, padding):
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    axes = x.ndim - 2
    xp = np.pad(x, [(0, 0), (0, 0)] + [(padding, padding)] * axes)
    out = [conv_output_size(n, w.shape[2 + a], stride, padding) for a, n in enumerate(x.shape[2:])]
    z = np.zeros((x.shape[0], w.shape[0], *out))
    for t in _taps(w):
        patch = xp[_strided(t, out, stride)]  # [B, C, *out]: what tap t reads at every output
        z += np.einsum("bc...,fc->bf...", patch, w[(slice(None), slice(None)) + t])
    return z


def conv_forward(x, w, b=None, activation="linear", stride=1, padding=0):
    """y[b, f, o] = f(Σ_c Σ_t x[b, c, o·s + t − p]·W[f, c, t] + bias[f]) per spatial axis."""
    return activate(activation, _bias(_conv_pre(x, w, stride, padding), b))


def conv_backward(x, w, g, b=None, activation="linear", stride=1, padding=0):
    """(dx, dW, db) of conv_forward for upstream gradient g."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    axes = x.ndim - 2
    gz = np.asarray(g, np.float64) * derivative(activation, _bias(_conv_pre(x, w, stride, padding), b))
    xp = np.pad(x, [(0, 0), (0, 0)] + [(padding, padding)] * axes)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    out = gz.shape[2:]
    for t in _taps(w):
        where = _strided(t, out, stride)
        wt = (slice(None), slice(None)) + t
        dw[wt] = _outer(gz, xp[where])
        dxp[where] += np.einsum("bf...,fc->bc...", gz, w[wt])
    inner = (slice(None), slice(None)) + tuple(slice(padding, padding + n) for n in x.shape[2:])
    return dxp[inner], dw, gz.sum(axis=(0, *range(2, gz.ndim)))


# ---- transposed convolution (scatter form) -----------------------------------------------------

def _full_length(n, k, stride, padding, output_padding):
    """Length of the uncropped scatter target, long enough for the output window."""
    out = transposed_output_size(n, k, stride, padding, output_padding)
    return max((n - 1) * stride + k, padding + out), out


def _transposed_pre(x, w, stride, padding, output_padding):
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    sizes = [_full_length(n, w.shape[2 + a], stride, padding, output_padding)
             for a, n in enumerate(x.shape[2:])]
    full = np.zeros((x.shape[0], w.shape[0], *(f for f, _ in sizes)))
    for t in _taps(w):
        # input i through tap t lands on uncropped position i·s + t = o + p
        full[_strided(t, x.shape[2:], stride)] += np.einsum("bc...,fc->bf...", x, w[(slice(None), slice(None)) + t])
    crop = (slice(None), slice(None)) + tuple(slice(padding, padding + o) for _, o in sizes)
    return full[crop], sizes


def transposed_forward(x, w, b=None, activation="linear", stride=1, padding=0, output_padding=0):
    """y[b, f, o] = f(Σ_{i, t: i·s − p + t = o} Σ_c x[b, c, i]·W[f, c, t] + bias[f]) per axis."""
    z, _ = _transposed_pre(x, w, stride, padding, output_padding)
    return activate(activation, _bias(z, b))


def transposed_backward(x, w, g, b=None, activation="linear", stride=1, padding=0, output_padding=0):
    """(dx, dW, db) of transposed_forward for upstream gradient g."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    z, sizes = _transposed_pre(x, w, stride, padding, output_padding)
    gz = np.asarray(g, np.float64) * derivative(activation, _bias(z, b))
    g_full = np.zeros((x.shape[0], w.shape[0], *(f for f, _ in sizes)))
    g_full[(slice(None), slice(None)) + tuple(slice(padding, padding + o) for _, o in sizes)] = gz
    dx = np.zeros_like(x)
    dw = np.zeros_like(w)
    for t in _taps(w):
        where = _strided(t, x.shape[2:], stride)
        wt = (slice(None), slice(None)) + t
        dx += np.einsum("bf...,fc->bc...", g_full[where], w[wt])
        dw[wt] = _outer(g_full[where], x)
    return dx, dw, gz.sum(axis=(0, *range(2, gz.ndim)))
