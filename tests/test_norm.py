"""RMSNorm and LayerNorm: forward / backward against the float64 NumPy reference
(tests/reference/norm.py) for every dtype, schedule agreement, finite-difference gradients,
specs (builder, JSON round trip, Loom build spec), errors and a short training run."""

import json

import numpy as np
import pytest

import polyvtd as pv
from reference import codecs as ref_codecs
from reference.dense import norm_rel_err, rel_err
from reference.gradcheck import central_difference
from reference.norm import layernorm_backward, layernorm_forward, rmsnorm_backward, rmsnorm_forward
from reference.schedules import assert_schedules_agree

DTYPES = ref_codecs.DTYPES
MODES = ["normal", "tiled", "parallel"]
KINDS = ["RMSNorm", "LayerNorm"]


def inputs(shape, seed=0, scale=1.0, offset=0.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + offset).astype(np.float32)


def make(kind, size, seed=0, dtype="float32", **kw):
    """A norm layer with random (not 1/0) gain and shift, so they matter in every check."""
    layer = getattr(pv.layers, kind)(size, dtype=dtype, **kw)
    for i, p in enumerate(layer.parameters):
        p.set_master(inputs(size, seed=seed + 10 * i, scale=0.5, offset=1.0 - i))
    return layer


def reference(layer, x, g):
    """(y, (dx, [gradient per parameter])) of the reference with the weights the layer computes
    with."""
    eps = json.loads(layer.spec_json())["epsilon"]
    w = [p.dequantize() for p in layer.parameters]
    if layer.type == "RMSNorm":
        dx, dgain = rmsnorm_backward(x, w[0], g, eps)
        return rmsnorm_forward(x, w[0], eps), (dx, [dgain])
    dx, dgain, dshift = layernorm_backward(x, w[0], g, eps)
    return layernorm_forward(x, w[0], w[1], eps), (dx, [dgain, dshift])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", MODES)
def test_forward_and_backward_match_numpy(kind, mode):
    layer = make(kind, 24, seed=1)
    x = inputs((5, 3, 24), seed=2, scale=3.0, offset=0.7)
    g = inputs((5, 3, 24), seed=3)
    expected, (edx, egrads) = reference(layer, x, g)
    y = layer.forward(x, mode=mode)
    assert y.shape == x.shape and y.dtype == np.float32
    assert rel_err(y, expected) <= 1e-5
    dx, grads = layer.backward(x, g, mode=mode)
    assert dx.shape == x.shape
    assert rel_err(dx, edx) <= 1e-5
    assert len(grads) == len(egrads) == len(layer.parameters)
    for got, want in zip(grads, egrads):
        assert got.shape == (24,)
        assert rel_err(got, want) <= 1e-5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_computes_from_its_dequantised_weights(kind, dtype):
    layer = make(kind, 20, seed=DTYPES.index(dtype), dtype=dtype)
    assert layer.dtype == dtype and all(p.dtype == dtype for p in layer.parameters)
    x, g = inputs((6, 20), seed=4, scale=2.0), inputs((6, 20), seed=5)
    expected, (edx, egrads) = reference(layer, x, g)
    assert norm_rel_err(layer.forward(x), expected) <= 1e-4
    dx, grads = layer.backward(x, g)
    assert norm_rel_err(dx, edx) <= 1e-4
    for got, want in zip(grads, egrads):
        assert norm_rel_err(got, want) <= 1e-4


@pytest.mark.parametrize("kind", KINDS)
def test_schedules_agree_and_tiled_equals_parallel_bitwise(kind):
    # 64·16 rows of 96: several row blocks, large enough for the parallel path.
    layer = make(kind, 96, seed=6, dtype="int8")
    x, g = inputs((64, 16, 96), seed=7, scale=2.0, offset=0.3), inputs((64, 16, 96), seed=8)
    assert_schedules_agree(layer, x, g)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_float64_finite_differences(kind):
    layer = make(kind, 7, seed=9, epsilon=1e-3)
    x, g = inputs((3, 7), seed=10, offset=0.5), inputs((3, 7), seed=11)
    x64 = x.astype(np.float64)
    w64 = [p.master.astype(np.float64) for p in layer.parameters]
    if kind == "RMSNorm":
        loss = lambda: float(np.sum(rmsnorm_forward(x64, w64[0], 1e-3) * g))  # noqa: E731
    else:
        loss = lambda: float(np.sum(layernorm_forward(x64, w64[0], w64[1], 1e-3) * g))  # noqa: E731
    dx, grads = layer.backward(x, g, mode="normal")
    assert rel_err(dx, central_difference(loss, x64)) <= 1e-5
    for got, w in zip(grads, w64):
        assert rel_err(got, central_difference(loss, w)) <= 1e-5


def test_variance_is_two_pass():
    # A large offset: E[x²] − μ² would lose every digit of the variance in float32.
    layer = pv.layers.LayerNorm(4)
    x = np.array([[1000.0, 1000.5, 999.5, 1000.25]], dtype=np.float32)
    assert rel_err(layer.forward(x), layernorm_forward(x, np.ones(4), np.zeros(4), 1e-5)) <= 1e-4


@pytest.mark.parametrize("kind,eps", [("RMSNorm", 1e-6), ("LayerNorm", 1e-5)])
def test_builder_defaults_and_spec_round_trip(kind, eps):
    layer = getattr(pv.layers, kind)(12, dtype="fp8", seed=3)
    spec = json.loads(layer.spec_json())
    assert spec == {"type": kind, "input_height": 12, "epsilon": eps, "dtype": "fp8e4m3"}
    assert layer.type == kind and layer.activation is None and layer.input_shape == [12]
    np.testing.assert_array_equal(layer.parameters[0].master, np.ones(12, dtype=np.float32))
    if kind == "LayerNorm":
        np.testing.assert_array_equal(layer.parameters[1].master, np.zeros(12, dtype=np.float32))
    again = pv.layers.from_spec(json.loads(layer.spec_json()))
    assert json.loads(again.spec_json()) == spec
    x = inputs((4, 12), seed=1)
    np.testing.assert_array_equal(again.forward(x), layer.forward(x))
    custom = getattr(pv.layers, kind)(5, epsilon=0.25)
    assert json.loads(custom.spec_json())["epsilon"] == 0.25


def test_loom_build_spec_loads_and_runs():
    spec = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 3, "layers": [
        {"z": 0, "y": 0, "x": 0, "l": 0, "type": "dense", "input_height": 6, "output_height": 8},
        {"z": 0, "y": 0, "x": 0, "l": 1, "type": "rmsnorm", "input_height": 8, "output_height": 8},
        # the reference sizes LayerNorm by output_height when that is what it is given
        {"z": 0, "y": 0, "x": 0, "l": 2, "type": "LayerNorm", "dtype": "int8", "output_height": 8},
    ]}
    net = pv.VolumetricNetwork.from_spec(spec)
    assert [layer.type for _, layer in net.layers()] == ["Dense", "RMSNorm", "LayerNorm"]
    x = inputs((5, 6), seed=2)
    y = net.forward(x)
    assert y.shape == (5, 8)
    np.testing.assert_allclose(y.mean(axis=1), 0.0, atol=1e-5)


def test_bad_specs_and_inputs():
    with pytest.raises(pv.SpecError, match="epsilon"):
        pv.layers.RMSNorm(4, epsilon=0.0)
    with pytest.raises(pv.SpecError, match="input_height"):
        pv.layers.from_spec({"type": "LayerNorm"})
    with pytest.raises(pv.SpecError, match="output_height"):
        pv.layers.from_spec({"type": "RMSNorm", "input_height": 4, "output_height": 5})
    with pytest.raises(pv.SpecError):
        pv.layers.LayerNorm(0)
    with pytest.raises(pv.ShapeError, match=r"last axis of size 4.*\[3, 5\]"):
        pv.layers.RMSNorm(4).forward(inputs((2, 3, 5)))
    spec = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 2, "layers": [
        {"l": 0, "type": "dense", "input_height": 3, "output_height": 5},
        {"l": 1, "type": "layernorm", "input_height": 4}]}
    with pytest.raises(pv.SpecError, match=r"\(0,0,0,1\).*LayerNorm"):
        pv.VolumetricNetwork.from_spec(spec)


def test_training_through_a_layernorm_reduces_the_loss():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 4)).astype(np.float32)
    y = np.tanh(x @ rng.standard_normal((4, 2))).astype(np.float32)
    net = pv.VolumetricNetwork(1, 1, 1, 3)
    net.set_layer(0, 0, 0, 0, pv.layers.Dense(4, 16, "tanh", bias=True, seed=1))
    net.set_layer(0, 0, 0, 1, pv.layers.LayerNorm(16))
    net.set_layer(0, 0, 0, 2, pv.layers.Dense(16, 2, bias=True, seed=2))
    gain_before = net.layer(0, 0, 0, 1).parameters[0].master
    result = net.train(x, y, epochs=15, lr=0.01, batch_size=16, optimizer="adam")
    assert result.loss_history[-1] < 0.5 * result.loss_history[0]
    assert not np.array_equal(net.layer(0, 0, 0, 1).parameters[0].master, gain_before)


@pytest.mark.skipif(not pv.gpu_available(), reason="no GPU adapter found by wgpu (install mesa-vulkan-drivers for lavapipe)")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_forward_matches_the_cpu_and_the_reference(kind, dtype):
    """device="gpu" for every dtype: one workgroup per row (shaders/norm.wgsl), rows wider than
    the workgroup (300 > 256 threads) and rows narrower than it, packed weights decoded in the
    shader to the values the CPU decodes."""
    for width in (300, 7):
        layer = make(kind, width, seed=11, dtype=dtype)
        x = inputs((4, 5, width), seed=12, scale=3.0, offset=0.7)
        gpu, cpu = layer.forward(x, device="gpu"), layer.forward(x)
        assert gpu.shape == x.shape
        assert rel_err(gpu, cpu) <= 1e-5
        assert rel_err(gpu, reference(layer, x, x)[0]) <= 1e-5
    net = pv.VolumetricNetwork(1, 1, 2, 1)
    net.set_layer(0, 0, 0, 0, pv.layers.Dense(width, 16))
    net.set_layer(0, 0, 1, 0, make(kind, 16, seed=13, dtype=dtype))
    x = inputs((3, width), seed=14)
    assert rel_err(net.forward(x, device="gpu"), net.forward(x)) <= 1e-5
