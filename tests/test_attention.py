"""MultiHeadAttention: forward / backward against the float64 NumPy reference
(tests/reference/attention.py) for float32 and all 21 dtypes, schedule agreement, finite-difference
gradients, spec round trips and Loom build specs, errors, training, and the KV cache."""

import json

import numpy as np
import pytest

import polyvtd as pv
from reference import codecs as ref_codecs
from reference.attention import PARAM_ORDER, Config, attention_backward, attention_forward
from reference.dense import norm_rel_err, rel_err
from reference.gradcheck import central_difference
from reference.schedules import assert_schedules_agree
from reference.gradcheck import float32_input_gradient

DTYPES = ref_codecs.DTYPES
MODES = ["normal", "tiled", "parallel"]

# (builder kwargs, what it exercises)
SHAPES = {
    "mha": dict(d_model=16, num_heads=4),
    "gqa+qk_norm": dict(d_model=16, num_heads=4, num_kv_heads=2, qk_norm=True),
    "mqa, bidirectional": dict(d_model=12, num_heads=3, num_kv_heads=1, causal=False),
    "head_dim given, no bias": dict(d_model=10, num_heads=2, head_dim=6, bias=False, rope_freq_base=500.0),
    "odd head_dim": dict(d_model=12, num_heads=4, qk_norm=True, epsilon=1e-3),
}


# ---- helpers --------------------------------------------------------------------------------------

def inputs(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def config_of(layer):
    spec = json.loads(layer.spec_json())
    return Config(heads=spec["num_heads"], kv_heads=spec["num_kv_heads"], head_dim=spec["head_dim"],
                  rope_base=spec["rope_freq_base"], causal=spec["causal"], eps=spec["epsilon"])


def names_of(layer):
    spec = json.loads(layer.spec_json())
    names = PARAM_ORDER[:4] + (PARAM_ORDER[4:8] if spec["bias"] else []) + (PARAM_ORDER[8:] if spec["qk_norm"] else [])
    assert len(names) == len(layer.parameters)
    return names


def params_of(layer):
    """Every tensor as the layer computes with it (projections dequantised, the rest float32)."""
    return {n: (p.dequantize() if i < 4 else p.master) for i, (n, p) in enumerate(zip(names_of(layer), layer.parameters))}


def randomise(layer, seed):
    """Give biases and norm gains non-trivial values (gains start at 1)."""
    rng = np.random.default_rng(seed)
    for name, p in zip(names_of(layer), layer.parameters):
        if name.endswith("norm"):
            p.set_master((1.0 + 0.3 * rng.standard_normal(p.shape)).astype(np.float32))
        elif name.startswith("b"):
            p.set_master((0.2 * rng.standard_normal(p.shape)).astype(np.float32))
    return layer


def layer_for(case, seed=0, **extra):
    return randomise(pv.layers.MultiHeadAttention(**SHAPES[case], seed=seed, **extra), seed)


# ---- forward / backward against the reference ------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(SHAPES))
def test_forward_matches_reference(case, mode):
    layer = layer_for(case, seed=1)
    d = SHAPES[case]["d_model"]
    x = inputs(3, 7, d, seed=2)
    y = layer.forward(x, mode=mode)
    assert y.shape == x.shape and y.dtype == np.float32
    assert rel_err(y, attention_forward(x, params_of(layer), config_of(layer))) <= 1e-5


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(SHAPES))
def test_backward_matches_reference(case, mode):
    layer = layer_for(case, seed=3)
    d = SHAPES[case]["d_model"]
    x, g = inputs(2, 6, d, seed=4), inputs(2, 6, d, seed=5)
    dx, grads = layer.backward(x, g, mode=mode)
    edx, egrads = attention_backward(x, params_of(layer), config_of(layer), g)
    assert dx.shape == x.shape
    assert rel_err(dx, edx) <= 1e-5
    for name, got, p in zip(names_of(layer), grads, layer.parameters):
        assert got.shape == tuple(p.shape), name
        assert rel_err(got, egrads[name]) <= 1e-5, name


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_computes_from_its_packed_weights(dtype):
    layer = layer_for("gqa+qk_norm", seed=6, dtype=dtype)
    assert layer.dtype == dtype
    assert all(p.dtype == dtype for p in layer.parameters[:4])
    assert all(p.dtype == "float32" for p in layer.parameters[4:])
    x, g = inputs(2, 5, 16, seed=7), inputs(2, 5, 16, seed=8)
    params, config = params_of(layer), config_of(layer)
    assert norm_rel_err(layer.forward(x), attention_forward(x, params, config)) <= 1e-4
    dx, grads = layer.backward(x, g)
    edx, egrads = attention_backward(x, params, config, g)
    assert norm_rel_err(dx, edx) <= 1e-4
    for name, got in zip(names_of(layer), grads):
        assert norm_rel_err(got, egrads[name]) <= 1e-4, name


@pytest.mark.parametrize("dtype", ["float32", "int4", "fp8e4m3"])
def test_schedules_agree_and_tiled_equals_parallel_bitwise(dtype):
    # 4 items × 4 heads × 96 positions: enough work for the parallel task split, and two score
    # blocks per head (the second partial).
    layer = pv.layers.MultiHeadAttention(64, 4, 2, qk_norm=True, dtype=dtype, seed=9)
    x, g = inputs(4, 96, 64, seed=10), inputs(4, 96, 64, seed=11)
    assert_schedules_agree(layer, x, g)


# ---- finite differences -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["gqa+qk_norm", "head_dim given, no bias", "odd head_dim"])
def test_gradients_match_float64_finite_differences(case):
    """Every gradient the layer returns (and the reference's) against central differences of
    the float64 reference forward, with the layer's own weights."""
    layer = layer_for(case, seed=12)
    d = SHAPES[case]["d_model"]
    x, g = inputs(2, 4, d, seed=13), inputs(2, 4, d, seed=14).astype(np.float64)
    config = config_of(layer)
    params = {k: v.astype(np.float64) for k, v in params_of(layer).items()}
    x64 = x.astype(np.float64)
    loss = lambda: float(np.sum(attention_forward(x64, params, config) * g))  # noqa: E731
    dx, grads = layer.backward(x, g.astype(np.float32), mode="normal")
    ref_dx, ref_grads = attention_backward(x64, params, config, g)
    numeric = central_difference(loss, x64)
    assert rel_err(ref_dx, numeric) <= 1e-6
    assert rel_err(dx, numeric) <= 1e-5
    for name, got in zip(names_of(layer), grads):
        numeric = central_difference(loss, params[name])
        assert rel_err(ref_grads[name], numeric) <= 1e-6, name
        assert rel_err(got, numeric) <= 1e-5, name


def test_input_gradient_matches_finite_differences_through_the_layer():
    """Numeric d(sum(forward(x)·g))/dx from the layer's own float32 forward."""
    layer = layer_for("gqa+qk_norm", seed=15)
    x, g = inputs(1, 3, 16, seed=16), inputs(1, 3, 16, seed=17).astype(np.float64)
    numeric = float32_input_gradient(layer, x, g)
    dx, _ = layer.backward(x, g.astype(np.float32))
    assert rel_err(dx, numeric) <= 1e-2


# ---- layer object and spec ----------------------------------------------------------------------------

def test_parameters_shapes_and_init():
    layer = pv.layers.MultiHeadAttention(24, 6, 2, 5, qk_norm=True, seed=4)
    assert layer.type == "MultiHeadAttention" and layer.activation is None
    shapes = [p.shape for p in layer.parameters]
    assert shapes == [[30, 24], [10, 24], [10, 24], [24, 30], [30], [10], [10], [24], [5], [5]]
    assert layer.num_params == sum(int(np.prod(s)) for s in shapes)
    assert layer.weights.shape == [30, 24]  # the first projection, wq
    wq, wo = layer.parameters[0].master, layer.parameters[3].master
    assert 0.15 < np.abs(wq).max() < 1 / np.sqrt(24) and np.abs(wo).max() < 1 / np.sqrt(30)
    np.testing.assert_array_equal(layer.parameters[8].master, np.ones(5, np.float32))
    assert len(pv.layers.MultiHeadAttention(8, 2, bias=False).parameters) == 4


def test_sample_shapes():
    layer = layer_for("mha", seed=5)
    x = inputs(3, 16, seed=6)
    # a [d_model] sample is one position (attending only to itself)
    y = layer.forward(x)
    assert y.shape == (3, 16)
    np.testing.assert_array_equal(y, layer.forward(x[:, None, :])[:, 0, :])
    assert layer.output_shape([5, 16]) == [5, 16] and layer.input_shape == [16]
    # with seq_length, a flattened [seq_length·d_model] sample is that many positions
    flat = pv.layers.from_spec({**json.loads(layer.spec_json()), "seq_length": 4}, seed=5)
    randomise(flat, 5)
    assert flat.input_shape == [4, 16]
    xs = inputs(2, 4, 16, seed=7)
    np.testing.assert_array_equal(flat.forward(xs.reshape(2, 64)), flat.forward(xs).reshape(2, 64))


def test_spec_round_trip_gives_the_same_layer():
    layer = pv.layers.MultiHeadAttention(16, 4, 2, qk_norm=True, causal=False, rope_freq_base=1e5,
                                         epsilon=1e-5, max_seq_len=64, dtype="int8", seed=8)
    spec = json.loads(layer.spec_json())
    assert spec == {"type": "MultiHeadAttention", "d_model": 16, "num_heads": 4, "num_kv_heads": 2,
                    "head_dim": 4, "seq_length": 1, "rope_freq_base": 1e5, "qk_norm": True,
                    "epsilon": 1e-5, "causal": False, "bias": True, "max_seq_len": 64, "dtype": "int8"}
    again = pv.layers.from_spec(spec, seed=8)
    assert json.loads(again.spec_json()) == spec
    x = inputs(2, 5, 16, seed=9)
    np.testing.assert_array_equal(again.forward(x), layer.forward(x))


@pytest.mark.parametrize("type_name", ["MultiHeadAttention", "mha", "Attention", "MULTIHEADATTENTION"])
def test_loom_build_spec_loads_and_runs(type_name):
    spec = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 2, "layers": [
        {"z": 0, "y": 0, "x": 0, "l": 0, "type": type_name, "d_model": 16, "num_heads": 4,
         "num_kv_heads": 2, "seq_length": 5, "dtype": "bfloat16"},
        {"z": 0, "y": 0, "x": 0, "l": 1, "type": "dense", "activation": "tanh", "input_height": 16, "output_height": 3},
    ]}
    net = pv.VolumetricNetwork.from_spec(spec, seed=3)
    attn = net.layer(0, 0, 0, 0)
    assert attn.type == "MultiHeadAttention" and attn.dtype == "bfloat16" and len(attn.parameters) == 8
    assert attn.input_shape == [5, 16]
    x = inputs(2, 5, 16, seed=1)
    y = net.forward(x)
    assert y.shape == (2, 5, 3)
    np.testing.assert_allclose(y, net.layer(0, 0, 0, 1).forward(attn.forward(x)), rtol=1e-6, atol=1e-7)
    # head_dim := d_model / num_heads, num_kv_heads 0 → num_heads, rope_freq_base ≤ 0 → 10000
    entry = json.loads(pv.layers.from_spec({"type": "mha", "d_model": 12, "num_heads": 3,
                                            "num_kv_heads": 0, "rope_freq_base": 0}).spec_json())
    assert (entry["head_dim"], entry["num_kv_heads"], entry["rope_freq_base"]) == (4, 3, 10000.0)


# ---- errors --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,fragments", [
    (dict(d_model=10, num_heads=3), ["num_heads", "d_model", "3", "10"]),
    (dict(d_model=12, num_heads=4, num_kv_heads=3), ["num_kv_heads", "num_heads", "3", "4"]),
    (dict(d_model=12, num_heads=0), ["num_heads"]),
    (dict(d_model=0, num_heads=2), ["d_model"]),
    (dict(d_model=8, num_heads=2, max_seq_len=0), ["max_seq_len"]),
    (dict(d_model=8, num_heads=2, epsilon=0.0), ["epsilon"]),
    (dict(d_model=8, num_heads=-2), ["num_heads"]),
])
def test_bad_arguments_are_spec_errors(kwargs, fragments):
    with pytest.raises(pv.SpecError) as err:
        pv.layers.MultiHeadAttention(**kwargs)
    for f in fragments:
        assert f in str(err.value)


def test_errors_inside_a_network_name_the_coordinate():
    entry = {"z": 0, "y": 0, "x": 0, "l": 1, "type": "mha", "d_model": 10, "num_heads": 4}
    spec = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 2, "layers": [
        {"z": 0, "y": 0, "x": 0, "l": 0, "type": "dense", "input_height": 4, "output_height": 10}, entry]}
    with pytest.raises(pv.SpecError, match=r"\(0,0,0,1\)") as err:
        pv.VolumetricNetwork.from_spec(spec)
    assert "num_heads (4)" in str(err.value) and "d_model (10)" in str(err.value)
    entry["num_heads"] = 2
    net = pv.VolumetricNetwork.from_spec(spec)
    assert net.forward(inputs(3, 4)).shape == (3, 10)
    net.set_layer(0, 0, 0, 1, pv.layers.MultiHeadAttention(8, 2))
    with pytest.raises(pv.ShapeError, match=r"\(0,0,0,1\)") as err:
        net.forward(inputs(3, 4))
    assert "d_model 8" in str(err.value) and "[10]" in str(err.value)


def test_bad_inputs_are_shape_errors():
    layer = pv.layers.MultiHeadAttention(8, 2)
    with pytest.raises(pv.ShapeError, match="d_model 8"):
        layer.forward(inputs(2, 3, 7))
    with pytest.raises(pv.ShapeError, match="d_model 8"):
        layer.forward(inputs(2, 3, 4, 8))
    with pytest.raises(pv.ShapeError):
        layer.backward(inputs(2, 3, 8), inputs(2, 4, 8))
    with pytest.raises(pv.InputError):
        layer.forward(np.full((1, 2, 8), np.nan, np.float32))


# ---- training --------------------------------------------------------------------------------------------

def test_training_reduces_the_loss():
    """Learn y_t = mean(x_0..x_t): needs the causal attention to average over the prefix."""
    spec = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 1, "layers": [
        {"type": "mha", "d_model": 8, "num_heads": 2, "num_kv_heads": 1, "seq_length": 6, "qk_norm": True}]}
    net = pv.VolumetricNetwork.from_spec(spec, seed=2)
    x = inputs(64, 6, 8, seed=3)
    t = np.cumsum(x, axis=1) / np.arange(1, 7)[None, :, None]
    result = net.train(x, t.astype(np.float32), epochs=15, lr=0.01, batch_size=16, optimizer="adam", seed=1)
    history = result.loss_history
    assert len(history) == 15 and history[-1] < 0.5 * history[0]


# ---- KV cache -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ["mha", "gqa+qk_norm"])
def test_prefill_then_decode_matches_the_full_sequence(case, mode):
    layer = layer_for(case, seed=20)
    d = SHAPES[case]["d_model"]
    x = inputs(2, 11, d, seed=21)
    full = layer.forward(x, mode=mode)
    cache = pv.KVCache(layer, batch=2, max_seq_len=16)
    assert (cache.length, cache.batch, cache.max_seq_len) == (0, 2, 16)
    parts = [cache.forward(x[:, :4], mode=mode)]
    assert parts[0].shape == (2, 4, d) and cache.length == 4
    parts.append(cache.forward(x[:, 4:6], mode=mode))
    for s in range(6, 11):
        step = cache.forward(x[:, s], mode=mode)  # [batch, d]: one position each
        assert step.shape == (2, d)
        parts.append(step[:, None, :])
    assert cache.length == 11
    assert rel_err(np.concatenate(parts, axis=1), full) <= 1e-5
    cache.reset()
    assert cache.length == 0
    assert rel_err(cache.forward(x[:, :3], mode=mode), full[:, :3]) <= 1e-5


def test_kv_cache_errors():
    layer = pv.layers.MultiHeadAttention(8, 2, max_seq_len=5, seed=1)
    cache = pv.KVCache(layer)
    assert cache.max_seq_len == 5 and cache.batch == 1
    cache.forward(inputs(1, 3, 8))
    with pytest.raises(pv.ShapeError) as err:
        cache.forward(inputs(1, 3, 8))
    assert "3 positions" in str(err.value) and "3 of at most 5" in str(err.value)
    assert cache.length == 3  # a rejected call leaves the cache as it was
    cache.forward(inputs(1, 2, 8))
    assert cache.length == 5
    with pytest.raises(pv.ShapeError, match="batch 2"):
        pv.KVCache(layer).forward(inputs(2, 1, 8))
    with pytest.raises(pv.ShapeError, match="d_model 8"):
        cache.forward(inputs(1, 1, 6))
    with pytest.raises(pv.SpecError, match="MultiHeadAttention"):
        pv.KVCache(pv.layers.Dense(3, 3))
    with pytest.raises(pv.InputError, match="batch"):
        pv.KVCache(layer, batch=0)
    with pytest.raises(pv.InputError, match="max_seq_len"):
        pv.KVCache(layer, max_seq_len=-1)


def test_kv_cache_follows_weight_changes_of_its_layer():
    """The cache holds the layer itself, so morphing its weights changes what new positions see."""
    layer = layer_for("mha", seed=30)
    x = inputs(1, 2, 16, seed=31)
    cache = pv.KVCache(layer)
    before = cache.forward(x)
    for p in layer.parameters[:4]:
        p.morph("int8")
    cache.reset()
    after = cache.forward(x)
    assert not np.array_equal(before, after)
    np.testing.assert_allclose(after, layer.forward(x), rtol=1e-5, atol=1e-6)


# ---- GPU --------------------------------------------------------------------------------------------------------

needs_gpu = pytest.mark.skipif(not pv.gpu_available(), reason="no GPU adapter found by wgpu (install mesa-vulkan-drivers for lavapipe)")


def check_gpu(layer, x, tol=1e-5, err=rel_err):
    """device="gpu" against the CPU forward (≤ 1e-5) and against the float64 reference."""
    gpu, cpu = layer.forward(x, device="gpu"), layer.forward(x)
    assert gpu.shape == x.shape and gpu.dtype == np.float32
    assert rel_err(gpu, cpu) <= 1e-5
    samples = x.reshape(x.shape[0], -1, x.shape[-1])
    assert err(gpu.reshape(samples.shape), attention_forward(samples, params_of(layer), config_of(layer))) <= tol


@needs_gpu
@pytest.mark.parametrize("case", list(SHAPES))
def test_gpu_forward_matches_the_cpu_and_the_reference(case):
    """Q/K/V projections, Q/K norm + RoPE, streaming-softmax attention and the output projection
    in one submit: 37 positions make three query blocks (the last partial) and several key tiles;
    7 positions one partial block."""
    layer = layer_for(case, seed=40)
    d = SHAPES[case]["d_model"]
    for batch, seq in ((2, 37), (3, 7)):
        check_gpu(layer, inputs(batch, seq, d, seed=seq))


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_forward_decodes_every_dtype_in_the_shader(dtype):
    layer = layer_for("gqa+qk_norm", seed=41, dtype=dtype)
    check_gpu(layer, inputs(2, 5, 16, seed=42), tol=1e-4, err=norm_rel_err)


@needs_gpu
def test_gpu_forward_takes_every_sample_shape():
    layer = layer_for("mha", seed=43)
    x = inputs(5, 16, seed=44)  # [d] samples: one position each
    assert rel_err(layer.forward(x, device="gpu"), layer.forward(x)) <= 1e-5
    spec = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 1, "layers": [
        {"type": "mha", "d_model": 12, "num_heads": 3, "seq_length": 4, "causal": False}]}
    net = pv.VolumetricNetwork.from_spec(spec, seed=46)
    x = inputs(3, 48, seed=47)  # flattened [seq_length·d] samples
    assert rel_err(net.forward(x, device="gpu"), net.forward(x)) <= 1e-5


@needs_gpu
def test_gpu_forward_inside_a_network_grid():
    net = pv.VolumetricNetwork(1, 1, 3, 1)
    net.set_layer(0, 0, 0, 0, pv.layers.Dense(16, 16, "tanh", seed=50))
    net.set_layer(0, 0, 1, 0, layer_for("gqa+qk_norm", seed=51, dtype="int8"))
    net.set_layer(0, 0, 2, 0, pv.layers.SwiGLU(16, 24, seed=52))
    x = inputs(3, 11, 16, seed=53)
    assert rel_err(net.forward(x, device="gpu"), net.forward(x)) <= 1e-5
