"""float64 NumPy reference of the systolic mesh's clock cycle (src/systolic): cells in traversal
order, every cell computing from the previous cycle's buffers (double buffering), remote links
to any cell (feedback), Residual skips, disabled cells as one-cycle delays. Dense and Residual
cells, enough to check the engine's cycles and its backprop through time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from reference.dense import activate


@dataclass
class Cell:
    kind: str  # "dense" or "residual"
    W: Optional[np.ndarray] = None  # [out, in]
    b: Optional[np.ndarray] = None
    act: str = "linear"
    link: Optional[int] = None  # index of the linked cell in the list
    disabled: bool = False


def cycle(cells, x, out, consumed):
    """One clock: (outputs, consumed inputs) after it, from those before it and input ``x``."""
    new_out, new_consumed = list(out), list(consumed)
    for i, c in enumerate(cells):
        chained = x if i == 0 else out[i - 1]
        if c.disabled:
            if chained is not None:
                new_out[i], new_consumed[i] = chained, chained
            continue
        if c.kind == "residual":
            main = chained
            skip = out[c.link] if c.link is not None else (consumed[i - 1] if i > 0 else None)
            if main is None and skip is None:
                continue
            base = main if main is not None else np.zeros_like(skip)
            new_out[i] = base + skip if skip is not None else base.copy()
        else:
            main = out[c.link] if c.link is not None else chained
            if main is None:
                continue
            z = main @ c.W.T + (0.0 if c.b is None else c.b)
            new_out[i] = activate(c.act, z)
        new_consumed[i] = main
    return new_out, new_consumed


def run(cells, inputs):
    """Present ``inputs[t]`` at cycle t; every cell's output after each cycle (None: no data)."""
    out, consumed = [None] * len(cells), [None] * len(cells)
    trace = []
    for x in inputs:
        out, consumed = cycle(cells, None if x is None else np.asarray(x, np.float64), out, consumed)
        trace.append(list(out))
    return trace


def sequence_mse(cells, inputs, targets):
    """Mean over ``targets`` ({cycle index: target}) of the MSE of the last cell's output."""
    trace = run(cells, inputs)
    return float(np.mean([np.mean((trace[t][-1] - y) ** 2) for t, y in targets.items()]))
