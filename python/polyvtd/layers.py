"""Layer builders: ``pv.layers.Dense(4, 8, activation="relu")`` returns a Layer to place in a
grid with ``net.set_layer(z, y, x, l, layer)``."""

from . import _core
from ._arrays import non_negative

Layer = _core.Layer


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

    Bias is off by default, as in the reference engine. Weights start U(±1/sqrt(input_size))
    from ``seed`` (PyTorch's Linear initialisation). ``dtype`` is the weight type it computes
    with; ``compat="loom"`` uses the reference engine's quantisation codes.
    """
    non_negative(input_size=input_size, output_size=output_size, seed=seed)
    return _core.Layer.dense(
        input_size, output_size, activation, bias=bias, dtype=dtype, seed=seed, compat=compat
    )


__all__ = ["Dense", "Layer"]
