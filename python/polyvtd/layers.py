"""Layer builders: ``pv.layers.Dense(4, 8, activation="relu")`` returns a Layer to place in a
grid with ``net.set_layer(z, y, x, l, layer)``.

Every builder writes the layer's build-JSON entry (the reference engine's field names) and the
native side reads it, so a builder and a JSON spec always mean the same layer. ``layer.spec_json()``
gives the entry back.
"""

import json
from typing import Any, Optional

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


__all__ = ["Dense", "Layer", "MultiHeadAttention", "from_spec"]
