"""Plain NumPy float64 references for the grid's routing and containers (network.md §4–5, with
the correct math: per-sample filter gate, residual skips, remote links)."""

import numpy as np

from reference.dense import activate


def dense(w, activation="linear", b=None):
    """A Dense stage as a function of x (W [out, in], float64), applied along the last axis."""
    w = np.asarray(w, np.float64)
    return lambda x: activate(activation, np.asarray(x, np.float64) @ w.T + (0 if b is None else b))


def sequential(x, stages):
    """Stages are functions or the string "residual" (adds the previous stage's input)."""
    current, previous = np.asarray(x, np.float64), None
    for stage in stages:
        if isinstance(stage, str):
            out = current if previous is None else current + previous
        else:
            out = stage(current)
        previous, current = current, out
    return current


def softmax_rows(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def parallel(x, branches, combine, gate=None):
    """Combine the branches' outputs per sample; `gate` maps x to one logit per branch."""
    outs = [np.asarray(f(x), np.float64) for f in branches]
    batch = outs[0].shape[0]
    if combine == "add":
        return sum(outs)
    if combine == "avg":
        return sum(outs) / len(outs)
    if combine == "concat":
        return np.concatenate([o.reshape(batch, -1) for o in outs], axis=1)
    if combine == "grid_scatter":
        return np.stack(outs, axis=1)
    if combine == "filter":
        p = softmax_rows(gate(x).reshape(batch, -1))
        return sum(p[:, i].reshape((batch,) + (1,) * (o.ndim - 1)) * o for i, o in enumerate(outs))
    raise ValueError(combine)
