"""float64 NumPy reference of an embedding lookup: out[..., :] = f(table[id]) for every id, and
the table gradient for g = dL/dout (rows of repeated ids add up)."""

from __future__ import annotations

import numpy as np

from .dense import activate, derivative


def embedding_forward(ids, table, act="linear"):
    ids = np.asarray(ids).astype(np.int64)
    return activate(act, np.asarray(table, dtype=np.float64)[ids])


def embedding_backward(ids, table, g, act="linear"):
    """dtable [vocab, dim]."""
    ids = np.asarray(ids).astype(np.int64).reshape(-1)
    table = np.asarray(table, dtype=np.float64)
    rows = table[ids]
    gz = np.asarray(g, dtype=np.float64).reshape(-1, table.shape[1]) * derivative(act, rows)
    dtable = np.zeros_like(table)
    np.add.at(dtable, ids, gz)
    return dtable
