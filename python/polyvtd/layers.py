"""Layer builders: ``pv.layers.Dense(4, 8, activation="relu")`` returns a Layer to place in a
grid with ``net.set_layer(z, y, x, l, layer)``.

Every builder writes the layer's build-JSON entry (the reference engine's field names) and the
native side reads it, so a builder and a JSON spec always mean the same layer. ``layer.spec_json()``
gives the entry back.
"""

import json
from typing import Any

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


__all__ = ["Dense", "Layer", "from_spec"]
