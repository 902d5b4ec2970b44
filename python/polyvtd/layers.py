"""Layer builders: ``pv.layers.Dense(4, 8, activation="relu")`` returns a Layer to place in a
grid with ``net.set_layer(z, y, x, l, layer)``.

Every builder writes the layer's build-JSON entry (the reference engine's field names) and the
native side reads it, so a builder and a JSON spec always mean the same layer. ``layer.spec_json()``
gives the entry back.
"""

import json
from typing import Any, Optional, Sequence, Union

from . import _core
from ._arrays import non_negative
from .errors import SpecError

Layer = _core.Layer


def from_spec(spec: dict, *, seed: int = 0, compat: str = "standard") -> Layer:
    """A layer from its build-JSON entry (a dict with the reference's field names)."""
    non_negative(seed=seed)
    return _core.Layer.from_spec(json.dumps(spec), seed=seed, compat=compat)


def _build(layer_type: str, seed: int, compat: str, **fields: Any) -> Layer:
    """The entry for ``layer_type`` with the given fields (None values left out)."""
    spec = {"type": layer_type, **{k: v for k, v in fields.items() if v is not None}}
    return from_spec(spec, seed=seed, compat=compat)


def Dense(
    input_size: int,
    output_size: int,
    activation: str = "linear",
    *,
    bias: bool = False,
    dtype: str = "float32",
    seed: int = 0,
    compat: str = "standard",
) -> Layer:
    """A fully connected layer ``y = activation(x @ W.T [+ b])``, W of shape [output, input].

    Applied along the last axis when it is ``input_size`` wide (like ``torch.nn.Linear``), else
    to each sample flattened. Bias is off by default, as in the reference engine. Weights start
    U(±1/sqrt(input_size)) from ``seed`` (PyTorch's Linear initialisation). ``dtype`` is the
    weight type it computes with; ``compat="loom"`` uses the reference engine's quantisation
    codes.
    """
    non_negative(input_size=input_size, output_size=output_size)
    return _build("Dense", seed, compat, input_height=input_size, output_height=output_size,
                  activation=activation, bias=bias, dtype=dtype)


def Residual() -> Layer:
    """``out = input + skip``. In the grid the skip is the input of the layer before it (so a
    Dense then a Residual is ``Dense(x) + x``), or the output of the layer its remote link
    targets (``net.set_link``); inside a Sequential, the input of the previous stage. Without a
    skip (first layer) it is the identity."""
    return _build("Residual", 0, "standard")


Member = Union[Layer, tuple]


def Sequential(*stages: Member) -> Layer:
    """Stages run in order; each is a Layer (shared, not copied) or a ``(z, y, x, l)`` remote
    link to the grid layer there (its weights are shared and trained through the link)."""
    return _core.Layer.sequential(list(stages))


def Parallel(*branches: Member, combine: str = "concat", gate: Optional[Layer] = None) -> Layer:
    """Every branch gets the same input; outputs are combined per sample by ``combine``:

    - ``"add"`` / ``"avg"``: element-wise sum / mean (branches of equal size);
    - ``"concat"``: each sample's branch outputs one after another (flattened);
    - ``"grid_scatter"``: the same values viewed as ``[branches, *branch shape]``;
    - ``"filter"``: ``sum_i softmax(gate(x))_i * branch_i(x)`` per sample — a mixture of experts.
      ``gate`` must output one logit per branch (e.g. ``Dense(d, len(branches))``); the backward
      trains the gate too.

    Branches are Layers or ``(z, y, x, l)`` remote links to grid layers.
    """
    return _core.Layer.parallel(list(branches), combine, gate)


def RNN(
    input_size: int,
    hidden_size: int,
    seq_length: int,
    nonlinearity: str = "tanh",
    *,
    return_sequences: bool = True,
    dtype: str = "float32",
    seed: int = 0,
    compat: str = "standard",
) -> Layer:
    """An Elman RNN ``h_t = nonlinearity(W_ih x_t + W_hh h_{t-1} + b)``, h_0 = 0.

    Samples are sequences [seq_length, input_size] (a flat [seq_length * input_size] sample
    also works); the output is every hidden state [seq_length, hidden_size], or with
    ``return_sequences=False`` the last one [hidden_size]. ``nonlinearity``: "tanh" (default,
    as PyTorch and the reference engine) or "relu". Parameters (``layer.parameters``): W_ih
    [hidden, input] and W_hh [hidden, hidden] in ``dtype``, b [hidden] in float32; all start
    U(±1/sqrt(hidden_size)) from ``seed`` (PyTorch's initialisation).
    """
    non_negative(input_size=input_size, hidden_size=hidden_size, seq_length=seq_length)
    if nonlinearity.lower() not in ("tanh", "relu"):
        raise SpecError(f"RNN nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return _build("RNN", seed, compat, input_height=input_size, output_height=hidden_size,
                  seq_length=seq_length, activation=nonlinearity,
                  return_sequences=None if return_sequences else False, dtype=dtype)


def LSTM(
    input_size: int,
    hidden_size: int,
    seq_length: int,
    *,
    return_sequences: bool = True,
    dtype: str = "float32",
    seed: int = 0,
    compat: str = "standard",
) -> Layer:
    """A long short-term memory layer (PyTorch's equations), h_0 = c_0 = 0.

    Samples are sequences [seq_length, input_size] (or flat); the output is every hidden state
    [seq_length, hidden_size], or the last one [hidden_size] with ``return_sequences=False``.
    Parameters: W_ih [4*hidden, input] and W_hh [4*hidden, hidden] in ``dtype`` with the gate
    blocks stacked input, forget, cell, output (PyTorch's layout), and one float32 bias
    [4*hidden] (PyTorch's b_ih + b_hh); all start U(±1/sqrt(hidden_size)) from ``seed``.
    """
    non_negative(input_size=input_size, hidden_size=hidden_size, seq_length=seq_length)
    return _build("LSTM", seed, compat, input_height=input_size, output_height=hidden_size,
                  seq_length=seq_length, return_sequences=None if return_sequences else False, dtype=dtype)


#: Softmax variants by name; the build JSON's ``softmax_type`` integer is the position.
SOFTMAX_KINDS = ("standard", "grid", "hierarchical", "temperature", "gumbel", "masked", "sparse",
                 "adaptive", "mixture", "entmax")


def Softmax(
    kind: Union[str, int] = "standard",
    *,
    temperature: float = 1.0,
    rows: int = 0,
    cols: int = 0,
    hierarchy_levels: Optional[Sequence[int]] = None,
    mask: Optional[Sequence[bool]] = None,
    entmax_alpha: float = 1.5,
    seed: int = 0,
) -> Layer:
    """A softmax-family normalisation (no weights); output shape = input shape.

    Each variant divides the logits by ``temperature`` and normalises every row along the last
    axis of each sample (never across the batch), except "grid". ``kind`` (name or the build
    JSON's integer, see ``SOFTMAX_KINDS``):

    - "standard", "temperature": softmax(x / T).
    - "grid": groups of ``cols`` consecutive values of a sample (or sample_size / ``rows``;
      with both set the sample must hold rows * cols values); neither set: per row.
    - "hierarchical": each row in groups of m (the last of ``hierarchy_levels``, else from
      ``rows``/``cols``): p = softmax over groups of the group means × softmax within the group.
    - "gumbel": softmax((x + g) / T) with Gumbel noise g drawn fresh on every call from
      ``seed`` (reproducible: the same seed and call sequence give the same outputs).
    - "masked": ``mask`` (one bool per row position) False positions get probability 0.
    - "sparse": sparsemax(x / T) (exact); "entmax": alpha-entmax(x / T), ``entmax_alpha`` in
      [1, 2] (1 = softmax, 2 = sparsemax).
    - "adaptive": softmax(x / (T * max(std(x), 1e-6))) per row (scale-invariant).
    - "mixture": mean of softmax at temperatures T/2, T and 2T.
    """
    non_negative(rows=rows, cols=cols, seed=seed)
    return _build("Softmax", seed, "standard", softmax_type=kind if isinstance(kind, str) else int(kind),
                  temperature=temperature,
                  softmax_rows=rows or None, softmax_cols=cols or None,
                  hierarchy_levels=None if hierarchy_levels is None else [int(v) for v in hierarchy_levels],
                  mask=None if mask is None else [bool(v) for v in mask], entmax_alpha=entmax_alpha)


__all__ = ["Dense", "LSTM", "Layer", "Parallel", "RNN", "Residual", "SOFTMAX_KINDS", "Sequential", "Softmax", "from_spec"]
