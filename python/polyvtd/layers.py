"""Layer builders: ``pv.layers.Dense(4, 8, activation="relu")`` returns a Layer to place in a
grid with ``net.set_layer(z, y, x, l, layer)``.

Every builder writes the layer's build-JSON entry (the reference engine's field names) and the
native side reads it, so a builder and a JSON spec always mean the same layer. ``layer.spec_json()``
gives the entry back.
"""

import json
import numbers
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


def MultiHeadAttention(
    d_model: int,
    num_heads: int,
    num_kv_heads: Optional[int] = None,
    head_dim: Optional[int] = None,
    *,
    rope_freq_base: float = 10000.0,
    qk_norm: bool = False,
    epsilon: float = 1e-6,
    causal: bool = True,
    bias: bool = True,
    max_seq_len: int = 2048,
    dtype: str = "float32",
    seed: int = 0,
    compat: str = "standard",
) -> Layer:
    """Multi-head self-attention with rotary positions, as in Llama/Qwen-style transformers.

    Samples are [seq, d_model] (a [d_model] sample is one position); the output has the input's
    shape. Each sample attends within itself: ``Q = x Wq.T + bq`` (K, V likewise), optional
    per-head RMSNorm of Q and K with learned [head_dim] gains (``qk_norm``, ``epsilon``), RoPE
    with half-split pairing and base ``rope_freq_base`` at positions 0..seq-1, scaled dot
    products (causal mask unless ``causal=False``), softmax, ``y = concat(heads) Wo.T + bo``.
    No activation.

    ``num_kv_heads`` (default ``num_heads``) must divide ``num_heads``: query head h reads KV
    head ``h // (num_heads // num_kv_heads)`` (grouped-query attention). ``head_dim`` defaults
    to ``d_model // num_heads``. Weights: wq [H*hd, d], wk and wv [Hkv*hd, d], wo [d, H*hd]
    (computed in ``dtype``), float32 biases when ``bias`` (default on, as in the reference
    engine), all U(±1/sqrt(fan_in)) from ``seed``. ``max_seq_len`` is the default capacity of a
    ``pv.KVCache`` for incremental decoding.
    """
    non_negative(d_model=d_model, num_heads=num_heads, max_seq_len=max_seq_len)
    if num_kv_heads is not None:
        non_negative(num_kv_heads=num_kv_heads)
    if head_dim is not None:
        non_negative(head_dim=head_dim)
    return _build("MultiHeadAttention", seed, compat, d_model=d_model, num_heads=num_heads,
                  num_kv_heads=num_kv_heads, head_dim=head_dim, rope_freq_base=float(rope_freq_base),
                  qk_norm=qk_norm, epsilon=float(epsilon), causal=causal, bias=bias,
                  max_seq_len=max_seq_len, dtype=dtype)


Size = Union[int, Sequence[int]]


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


__all__ = [
    "CNN1", "CNN2", "CNN3", "ConvTransposed1D", "ConvTransposed2D", "ConvTransposed3D", "Dense",
    "Embedding", "KMeans", "LSTM", "Layer", "LayerNorm", "MultiHeadAttention", "Parallel",
    "RMSNorm", "RNN", "Residual", "SOFTMAX_KINDS", "Sequential", "Softmax", "SwiGLU", "from_spec"
]
