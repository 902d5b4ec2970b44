"""Layer builders: ``pv.layers.Dense(4, 8, activation="relu")`` returns a Layer to place in a
grid with ``net.set_layer(z, y, x, l, layer)``.

Every builder writes the layer's build-JSON entry (the reference engine's field names) and the
native side reads it, so a builder and a JSON spec always mean the same layer. ``layer.spec_json()``
gives the entry back.
"""

import json
import numbers
from typing import Any, Sequence, Union

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


Size = Union[int, Sequence[int]]

#: The build-JSON fields of the spatial input sizes, slowest axis first.
_SPATIAL_FIELDS = {
    ("CNN", 1): ("input_height",),
    ("ConvTransposed", 1): ("input_width",),  # the reference's ConvTransposed1D reads widths
    ("CNN", 2): ("input_height", "input_width"),
    ("ConvTransposed", 2): ("input_height", "input_width"),
    ("CNN", 3): ("input_depth", "input_height", "input_width"),
    ("ConvTransposed", 3): ("input_depth", "input_height", "input_width"),
}


def _conv(family: str, axes: int, input_channels: int, filters: int, kernel_size: int,
          input_size: Size, activation: str, stride: int, padding: int, bias: bool, dtype: str,
          seed: int, compat: str, output_padding: int = 0) -> Layer:
    """A convolution entry: ``input_size`` is one size for every axis or one per axis."""
    if isinstance(input_size, numbers.Integral):
        sizes: tuple = (input_size,) * axes
    else:
        sizes = tuple(input_size) if isinstance(input_size, (tuple, list)) else ()
        if len(sizes) != axes:
            raise SpecError(f"input_size must be one size or {axes} sizes for a {axes}-D layer, "
                            f"got {input_size!r}")
    non_negative(input_channels=input_channels, filters=filters, kernel_size=kernel_size,
                 stride=stride, padding=padding, output_padding=output_padding,
                 **{f"input_size[{i}]": n for i, n in enumerate(sizes)})
    layer_type = f"CNN{axes}" if family == "CNN" else f"ConvTransposed{axes}D"
    spatial = dict(zip(_SPATIAL_FIELDS[family, axes], sizes))
    return _build(layer_type, seed, compat, input_channels=input_channels, filters=filters,
                  kernel_size=kernel_size, stride=stride, padding=padding,
                  output_padding=output_padding or None, activation=activation, bias=bias,
                  dtype=dtype, **spatial)


def CNN1(input_channels: int, filters: int, kernel_size: int, input_size: Size,
         activation: str = "linear", *, stride: int = 1, padding: int = 0, bias: bool = False,
         dtype: str = "float32", seed: int = 0, compat: str = "standard") -> Layer:
    """1-D convolution (cross-correlation with zero padding, like ``torch.nn.Conv1d``): samples
    [input_channels, L] → [filters, L_out], L_out = (L + 2·padding − kernel_size) // stride + 1.

    Weights [filters, input_channels, k] start U(±1/sqrt(input_channels·k)) from ``seed`` like
    PyTorch's; bias is off by default (as in the reference engine). Samples may also come
    flattened (the reference's flat tensors). ``dtype`` is the weight type it computes with;
    ``compat="loom"`` uses the reference engine's quantisation codes.
    """
    return _conv("CNN", 1, input_channels, filters, kernel_size, input_size, activation, stride,
                 padding, bias, dtype, seed, compat)


def CNN2(input_channels: int, filters: int, kernel_size: int, input_size: Size,
         activation: str = "linear", *, stride: int = 1, padding: int = 0, bias: bool = False,
         dtype: str = "float32", seed: int = 0, compat: str = "standard") -> Layer:
    """2-D convolution (like ``torch.nn.Conv2d``): samples [input_channels, H, W] → [filters,
    H_out, W_out], H_out = (H + 2·padding − kernel_size) // stride + 1 and W_out likewise.

    ``input_size`` is H (square) or (H, W). Weights [filters, input_channels, k, k], bias off by
    default; the rest as for :func:`CNN1`.
    """
    return _conv("CNN", 2, input_channels, filters, kernel_size, input_size, activation, stride,
                 padding, bias, dtype, seed, compat)


def CNN3(input_channels: int, filters: int, kernel_size: int, input_size: Size,
         activation: str = "linear", *, stride: int = 1, padding: int = 0, bias: bool = False,
         dtype: str = "float32", seed: int = 0, compat: str = "standard") -> Layer:
    """3-D convolution (like ``torch.nn.Conv3d``): samples [input_channels, D, H, W] →
    [filters, D_out, H_out, W_out], each (n + 2·padding − kernel_size) // stride + 1.

    ``input_size`` is one size (cube) or (D, H, W). Weights [filters, input_channels, k, k, k],
    bias off by default; the rest as for :func:`CNN1`.
    """
    return _conv("CNN", 3, input_channels, filters, kernel_size, input_size, activation, stride,
                 padding, bias, dtype, seed, compat)


def ConvTransposed1D(input_channels: int, filters: int, kernel_size: int, input_size: Size,
                     activation: str = "linear", *, stride: int = 1, padding: int = 0,
                     output_padding: int = 0, bias: bool = False, dtype: str = "float32",
                     seed: int = 0, compat: str = "standard") -> Layer:
    """1-D transposed convolution (like ``torch.nn.ConvTranspose1d``): samples
    [input_channels, L] → [filters, L_out], L_out = (L − 1)·stride − 2·padding + kernel_size +
    output_padding (output_padding < stride adds positions at the end, as in PyTorch).

    Weights [filters, input_channels, k] (the reference's filter-major layout: PyTorch's
    ConvTranspose weight [input_channels, filters, k] with the first two axes swapped) start
    U(±1/sqrt(filters·k)) from ``seed``, PyTorch's bound; bias off by default. Samples may also
    come flattened. ``dtype`` is the weight type it computes with; ``compat="loom"`` uses the
    reference engine's quantisation codes.
    """
    return _conv("ConvTransposed", 1, input_channels, filters, kernel_size, input_size, activation,
                 stride, padding, bias, dtype, seed, compat, output_padding)


def ConvTransposed2D(input_channels: int, filters: int, kernel_size: int, input_size: Size,
                     activation: str = "linear", *, stride: int = 1, padding: int = 0,
                     output_padding: int = 0, bias: bool = False, dtype: str = "float32",
                     seed: int = 0, compat: str = "standard") -> Layer:
    """2-D transposed convolution (like ``torch.nn.ConvTranspose2d``): samples
    [input_channels, H, W] → [filters, H_out, W_out], each n_out = (n − 1)·stride − 2·padding +
    kernel_size + output_padding.

    ``input_size`` is H (square) or (H, W). Weights [filters, input_channels, k, k]; the rest as
    for :func:`ConvTransposed1D`.
    """
    return _conv("ConvTransposed", 2, input_channels, filters, kernel_size, input_size, activation,
                 stride, padding, bias, dtype, seed, compat, output_padding)


def ConvTransposed3D(input_channels: int, filters: int, kernel_size: int, input_size: Size,
                     activation: str = "linear", *, stride: int = 1, padding: int = 0,
                     output_padding: int = 0, bias: bool = False, dtype: str = "float32",
                     seed: int = 0, compat: str = "standard") -> Layer:
    """3-D transposed convolution (like ``torch.nn.ConvTranspose3d``): samples
    [input_channels, D, H, W] → [filters, D_out, H_out, W_out], each n_out = (n − 1)·stride −
    2·padding + kernel_size + output_padding.

    ``input_size`` is one size (cube) or (D, H, W). Weights [filters, input_channels, k, k, k];
    the rest as for :func:`ConvTransposed1D`.
    """
    return _conv("ConvTransposed", 3, input_channels, filters, kernel_size, input_size, activation,
                 stride, padding, bias, dtype, seed, compat, output_padding)


__all__ = ["CNN1", "CNN2", "CNN3", "ConvTransposed1D", "ConvTransposed2D", "ConvTransposed3D",
           "Dense", "Layer", "from_spec"]
