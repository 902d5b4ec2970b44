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


def SwiGLU(
    d_model: int,
    hidden_size: int,
    *,
    bias: bool = True,
    activation: str = "silu",
    dtype: str = "float32",
    seed: int = 0,
    compat: str = "standard",
) -> Layer:
    """A gated feed-forward block applied to rows along the last axis (sample shape
    ``[..., d_model]`` → ``[..., d_model]``)::

        out = W_down @ (act(W_gate @ x + b_gate) * (W_up @ x + b_up)) + b_down

    W_gate, W_up: [hidden_size, d_model]; W_down: [d_model, hidden_size]. ``act`` is SiLU, or
    ReLU² (BitNet's squared ReLU) with ``activation="relu2"``; any other activation name means
    SiLU. Biases are on by default (as in the reference engine) and stay float32 when ``dtype``
    quantises the three matrices. Initialisation: U(±1/sqrt(fan_in)) per projection.
    ``parameters``: [W_gate, W_up, W_down, (b_gate, b_up, b_down)].
    """
    non_negative(d_model=d_model, hidden_size=hidden_size)
    return _build("SwiGLU", seed, compat, input_height=d_model, output_height=hidden_size,
                  activation=activation, bias=bias, dtype=dtype)


def RMSNorm(
    size: int,
    *,
    epsilon: float = 1e-6,
    dtype: str = "float32",
    seed: int = 0,
    compat: str = "standard",
) -> Layer:
    """``y = x / sqrt(mean(x**2) + epsilon) * gain`` over the last axis (of length ``size``);
    the sample shape is kept. The gain starts at ones; it is the layer's weight tensor, so
    ``dtype`` quantises it. ``parameters``: [gain]."""
    non_negative(size=size)
    return _build("RMSNorm", seed, compat, input_height=size, epsilon=epsilon, dtype=dtype)


def LayerNorm(
    size: int,
    *,
    epsilon: float = 1e-5,
    dtype: str = "float32",
    seed: int = 0,
    compat: str = "standard",
) -> Layer:
    """``y = (x - mean) / sqrt(var + epsilon) * gain + shift`` over the last axis (of length
    ``size``; biased variance, as ``torch.nn.LayerNorm``); the sample shape is kept. Gain starts
    at ones, shift at zeros; both are weight tensors that ``dtype`` quantises.
    ``parameters``: [gain, shift]."""
    non_negative(size=size)
    return _build("LayerNorm", seed, compat, input_height=size, epsilon=epsilon, dtype=dtype)


def Embedding(
    vocab_size: int,
    embedding_dim: int,
    *,
    activation: str = "linear",
    dtype: str = "float32",
    seed: int = 0,
    compat: str = "standard",
) -> Layer:
    """A lookup table [vocab_size, embedding_dim]: every input value is a token id (an integer
    in [0, vocab_size), given as a float array) and becomes its row, so the sample shape
    ``S`` becomes ``S + [embedding_dim]``. Any other value raises InputError naming it and its
    position. ``activation`` is applied to the rows (linear by default). Rows start N(0, 1), as
    ``torch.nn.Embedding``. ``parameters``: [table]; the input gradient is zero."""
    non_negative(vocab_size=vocab_size, embedding_dim=embedding_dim)
    return _build("Embedding", seed, compat, vocab_size=vocab_size, embedding_dim=embedding_dim,
                  activation=activation, dtype=dtype)


def KMeans(
    num_features: int,
    num_clusters: int,
    *,
    temperature: float = 1.0,
    output_mode: str = "probabilities",
    activation: str = "linear",
    dtype: str = "float32",
    seed: int = 0,
    compat: str = "standard",
) -> Layer:
    """Differentiable k-means over samples of ``num_features`` values: soft assignments
    ``a = softmax(-|x - c_k|**2 / (2 * temperature**2))`` to ``num_clusters`` centroids
    [num_clusters, num_features]. ``output_mode="probabilities"`` outputs ``a`` (sample shape
    [num_clusters]); ``"features"`` outputs the expected centroid ``sum_k a_k c_k`` (the input's
    sample shape). ``activation`` is applied after (linear by default). Centroids start N(0, 1)
    and compute in ``dtype``. ``parameters``: [centroids]."""
    non_negative(num_features=num_features, num_clusters=num_clusters)
    return _build("KMeans", seed, compat, input_height=num_features, num_clusters=num_clusters,
                  kmeans_temperature=temperature, output_mode=output_mode, activation=activation,
                  dtype=dtype)


__all__ = ["Dense", "Embedding", "KMeans", "Layer", "LayerNorm", "RMSNorm", "SwiGLU", "from_spec"]
