"""Layer builders: ``pv.layers.Dense(4, 8, activation="relu")`` returns a Layer to place in a
grid with ``net.set_layer(z, y, x, l, layer)``.

Every builder writes the layer's build-JSON entry (the reference engine's field names) and the
native side reads it, so a builder and a JSON spec always mean the same layer. ``layer.spec_json()``
gives the entry back.
"""

import json
from typing import Any, Optional, Union

from . import _core
from ._arrays import non_negative

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


__all__ = ["Dense", "Layer", "Parallel", "Residual", "Sequential", "from_spec"]
