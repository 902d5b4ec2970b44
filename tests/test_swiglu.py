"""SwiGLU: forward / backward against the float64 NumPy reference (tests/reference/swiglu.py)
for every dtype, hidden ≠ intermediate sizes, SiLU and ReLU² gates, schedule agreement,
finite-difference gradients, specs, errors and a short training run."""

import json

import numpy as np
import pytest

import polyvtd as pv
from reference import codecs as ref_codecs
from reference.dense import norm_rel_err, rel_err
from reference.gradcheck import central_difference
from reference.swiglu import swiglu_backward, swiglu_forward
from reference.schedules import assert_schedules_agree

DTYPES = ref_codecs.DTYPES
MODES = ["normal", "tiled", "parallel"]


def inputs(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def gate_of(layer):
    return "relu2" if json.loads(layer.spec_json())["activation"] == "ReLU2" else "silu"


def weights_of(layer):
    """W_gate, W_up, W_down as the layer computes with them, then the biases (None if absent)."""
    w = [p.dequantize() for p in layer.parameters[:3]]
    b = [p.master for p in layer.parameters[3:]] or [None, None, None]
    return w + b


def check(layer, x, g, mode="parallel", tol=1e-5, err=rel_err):
    w = weights_of(layer)
    act = gate_of(layer)
    y = layer.forward(x, mode=mode)
    assert y.shape == x.shape and y.dtype == np.float32
    assert err(y, swiglu_forward(x, *w, act=act)) <= tol
    dx, grads = layer.backward(x, g, mode=mode)
    edx, egrads = swiglu_backward(x, g, *w, act=act)
    assert dx.shape == x.shape
    assert err(dx, edx) <= tol
    assert len(grads) == len(egrads) == len(layer.parameters)
    for got, want, p in zip(grads, egrads, layer.parameters):
        assert list(got.shape) == p.shape
        assert err(got, want) <= tol


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", ["silu", "relu2"])
@pytest.mark.parametrize("h,i", [(12, 20), (16, 6)])
def test_forward_and_backward_match_numpy(h, i, activation, bias, mode):
    layer = pv.layers.SwiGLU(h, i, bias=bias, activation=activation, seed=h + i)
    check(layer, inputs((4, 3, h), seed=1, scale=2.0), inputs((4, 3, h), seed=2), mode)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_computes_from_its_dequantised_weights(dtype):
    i = DTYPES.index(dtype)
    layer = pv.layers.SwiGLU(24, 40, dtype=dtype, activation=["silu", "relu2"][i % 2], seed=i)
    assert all(p.dtype == dtype for p in layer.parameters[:3])
    assert all(p.dtype == "float32" for p in layer.parameters[3:])
    check(layer, inputs((5, 24), seed=3, scale=2.0), inputs((5, 24), seed=4), tol=1e-4, err=norm_rel_err)


def test_schedules_agree_and_tiled_equals_parallel_bitwise():
    layer = pv.layers.SwiGLU(128, 352, dtype="int4", seed=5)
    x, g = inputs((48, 128), seed=6), inputs((48, 128), seed=7)
    assert_schedules_agree(layer, x, g)


@pytest.mark.parametrize("activation", ["silu", "relu2"])
def test_gradients_match_float64_finite_differences(activation):
    layer = pv.layers.SwiGLU(5, 7, activation=activation, seed=8)
    x, g = inputs((3, 5), seed=9), inputs((3, 5), seed=10)
    x64 = x.astype(np.float64)
    params = [p.master.astype(np.float64) for p in layer.parameters]
    loss = lambda: float(np.sum(swiglu_forward(x64, *params, act=activation) * g))  # noqa: E731
    dx, grads = layer.backward(x, g, mode="normal")
    assert rel_err(dx, central_difference(loss, x64)) <= 1e-5
    for got, p in zip(grads, params):
        assert rel_err(got, central_difference(loss, p)) <= 1e-5


def test_layer_properties_and_spec_round_trip():
    layer = pv.layers.SwiGLU(6, 10, dtype="int8", seed=3)
    assert layer.type == "SwiGLU" and layer.dtype == "int8" and layer.input_shape == [6]
    assert [p.shape for p in layer.parameters] == [[10, 6], [10, 6], [6, 10], [10], [10], [6]]
    assert layer.num_params == 3 * 60 + 26
    spec = json.loads(layer.spec_json())
    assert spec == {"type": "SwiGLU", "activation": "Silu", "input_height": 6, "output_height": 10,
                    "bias": True, "dtype": "int8"}
    again = pv.layers.from_spec(spec, seed=3)  # the seed the weights came from
    assert json.loads(again.spec_json()) == spec
    x = inputs((3, 6))
    np.testing.assert_array_equal(again.forward(x), layer.forward(x))
    bare = pv.layers.SwiGLU(6, 10, bias=False, activation="relu2")
    assert json.loads(bare.spec_json())["bias"] is False and len(bare.parameters) == 3
    assert json.loads(bare.spec_json())["activation"] == "ReLU2"


def test_loom_build_spec_loads_and_runs():
    # Reference field names; no activation (the JSON default "linear") means a SiLU gate.
    spec = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 2, "layers": [
        {"z": 0, "y": 0, "x": 0, "l": 0, "type": "RMSNorm", "input_height": 8},
        {"z": 0, "y": 0, "x": 0, "l": 1, "type": "SWIGLU", "dtype": "bf16", "input_height": 8,
         "output_height": 24}]}
    net = pv.VolumetricNetwork.from_spec(spec)
    layer = net.layer(0, 0, 0, 1)
    assert layer.type == "SwiGLU" and gate_of(layer) == "silu" and len(layer.parameters) == 6
    x = inputs((2, 5, 8), seed=1)
    y = net.forward(x)
    assert y.shape == (2, 5, 8) and np.all(np.isfinite(y))


def test_bad_specs_and_inputs():
    with pytest.raises(pv.SpecError, match="output_height"):
        pv.layers.from_spec({"type": "swiglu", "input_height": 4})
    with pytest.raises(pv.SpecError, match="activation"):
        pv.layers.SwiGLU(4, 4, activation="softplus")
    with pytest.raises(pv.ShapeError, match=r"width 4.*\[2, 5\]"):
        pv.layers.SwiGLU(4, 8).forward(inputs((3, 2, 5)))
    layer = pv.layers.SwiGLU(4, 8)
    with pytest.raises(pv.ShapeError):
        layer.backward(inputs((2, 4)), inputs((2, 8)))
    spec = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 2, "layers": [
        {"l": 0, "type": "dense", "input_height": 3, "output_height": 5},
        {"l": 1, "type": "swiglu", "input_height": 4, "output_height": 8}]}
    with pytest.raises(pv.SpecError, match=r"\(0,0,0,1\).*SwiGLU"):
        pv.VolumetricNetwork.from_spec(spec)


def test_training_reduces_the_loss():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 6)).astype(np.float32)
    y = (np.tanh(x @ rng.standard_normal((6, 6))) * 0.5).astype(np.float32)
    net = pv.VolumetricNetwork(1, 1, 1, 1)
    net.set_layer(0, 0, 0, 0, pv.layers.SwiGLU(6, 16, seed=1))
    result = net.train(x, y, epochs=20, lr=0.01, batch_size=16, optimizer="adam")
    assert result.loss_history[-1] < 0.5 * result.loss_history[0]


# ---- GPU --------------------------------------------------------------------------------------------------------

needs_gpu = pytest.mark.skipif(not pv.gpu_available(), reason="no GPU adapter found by wgpu (install mesa-vulkan-drivers for lavapipe)")


def check_gpu(layer, x, tol=1e-5, err=rel_err):
    """device="gpu" against the CPU forward (≤ 1e-5) and against the float64 reference."""
    gpu, cpu = layer.forward(x, device="gpu"), layer.forward(x)
    assert gpu.shape == x.shape and gpu.dtype == np.float32
    assert rel_err(gpu, cpu) <= 1e-5
    assert err(gpu, swiglu_forward(x, *weights_of(layer), act=gate_of(layer))) <= tol


@needs_gpu
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", ["silu", "relu2"])
@pytest.mark.parametrize("h,i", [(12, 20), (16, 6)])
def test_gpu_forward_matches_the_cpu_and_the_reference(h, i, activation, bias):
    """The fused gate/up kernel then the down projection, one submit; [3, h] samples, batch 4."""
    layer = pv.layers.SwiGLU(h, i, bias=bias, activation=activation, seed=h + i)
    check_gpu(layer, inputs((4, 3, h), seed=1, scale=2.0))


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_forward_decodes_every_dtype_in_the_shader(dtype):
    i = DTYPES.index(dtype)
    layer = pv.layers.SwiGLU(24, 40, dtype=dtype, activation=["silu", "relu2"][i % 2], seed=i)
    check_gpu(layer, inputs((5, 24), seed=3, scale=2.0), tol=1e-4, err=norm_rel_err)


@needs_gpu
def test_gpu_forward_with_shapes_off_the_tile_grid():
    """37 rows (one 64-row tile, partly empty), h = 70 (not a multiple of the 16-wide K step) and
    I = 130 (three 64-column tiles, the last with 2 columns)."""
    layer = pv.layers.SwiGLU(70, 130, dtype="int4", seed=8)
    check_gpu(layer, inputs((37, 70), seed=9), tol=1e-4, err=norm_rel_err)
    check_gpu(layer, inputs((1, 70), seed=10), tol=1e-4, err=norm_rel_err)


@needs_gpu
def test_gpu_forward_inside_a_network_grid():
    net = pv.VolumetricNetwork(1, 1, 2, 1)
    net.set_layer(0, 0, 0, 0, pv.layers.Dense(9, 12, "tanh", seed=11))
    net.set_layer(0, 0, 1, 0, pv.layers.SwiGLU(12, 18, dtype="fp8e4m3", activation="relu2", seed=12))
    x = inputs((6, 9), seed=13)
    assert rel_err(net.forward(x, device="gpu"), net.forward(x)) <= 1e-5
