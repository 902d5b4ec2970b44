"""GPU (wgpu) forward against the CPU and the NumPy reference. On a machine without a GPU
adapter the whole module is skipped; on CI it runs on Mesa's software Vulkan driver (lavapipe),
so shapes stay ≤ 256."""

import numpy as np
import pytest

import polyvtd as pv
from reference import codecs as ref_codecs
from reference.dense import ACTIVATIONS, JSON_NAMES, dense_forward, rel_err

pytestmark = pytest.mark.skipif(
    not pv.gpu_available(), reason="no GPU adapter found by wgpu (install mesa-vulkan-drivers for lavapipe)"
)

MAIN_DTYPES = ["float32", "int8", "int4", "fp8e4m3", "binary", "uint4"]
_BY_JSON_NAME = {v: k for k, v in JSON_NAMES.items()}


def inputs(batch, width, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, width)).astype(np.float32)


def numpy_reference(layer, x):
    b = layer.bias.master if layer.bias is not None else None
    return dense_forward(x, layer.weights.dequantize(), b, _BY_JSON_NAME[layer.activation])


def check_gpu(layer, x, tol=1e-5):
    gpu = layer.forward(x, device="gpu")
    cpu = layer.forward(x, device="cpu")
    assert gpu.dtype == np.float32 and gpu.shape == cpu.shape
    assert np.all(np.isfinite(gpu))
    assert rel_err(gpu, cpu) <= tol
    assert rel_err(gpu, numpy_reference(layer, x)) <= tol
    return gpu


# ---- adapter --------------------------------------------------------------------------------------

def test_gpu_info():
    info = pv.gpu_info()
    for key in ("name", "backend", "device_type", "driver"):
        assert isinstance(info[key], str)
    assert info["name"] and info["backend"]
    limits = info["limits"]
    for key in ("max_compute_workgroup_size_x", "max_compute_invocations_per_workgroup",
                "max_compute_workgroup_storage_size", "max_storage_buffer_binding_size", "max_buffer_size"):
        assert isinstance(limits[key], int) and limits[key] > 0
    assert limits["max_compute_workgroup_size_x"] >= 64  # WebGPU's guaranteed minimum is 256
    assert pv.gpu_available() is True


# ---- dense forward --------------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", MAIN_DTYPES)
def test_dense_gpu_matches_cpu_odd_shapes(dtype, activation, bias):
    layer = pv.layers.Dense(37, 19, activation, bias=bias, dtype=dtype, seed=3)
    check_gpu(layer, inputs(3, 37, seed=1))


@pytest.mark.parametrize("dtype", ref_codecs.DTYPES)
def test_dense_gpu_every_dtype(dtype):
    i = ref_codecs.DTYPES.index(dtype)
    layer = pv.layers.Dense(45, 21, ACTIVATIONS[i % len(ACTIVATIONS)], bias=i % 2 == 0, dtype=dtype, seed=i)
    check_gpu(layer, inputs(5, 45, seed=i))


@pytest.mark.parametrize("activation", ["relu", "gelu_exact", "sigmoid"])
@pytest.mark.parametrize("dtype", MAIN_DTYPES)
def test_dense_gpu_64x256x256(dtype, activation):
    layer = pv.layers.Dense(256, 256, activation, bias=True, dtype=dtype, seed=5)
    check_gpu(layer, inputs(64, 256, seed=2))


@pytest.mark.parametrize("batch", [1, 4, 5, 16, 17, 33])
def test_dense_gpu_every_tile_shape(batch):
    # batches ≤ 4, 5..16 and > 16 pick different workgroup tiles; widths not multiples of them
    for dtype in ("float32", "int4"):
        layer = pv.layers.Dense(70, 67, "tanh", bias=True, dtype=dtype, seed=batch)
        check_gpu(layer, inputs(batch, 70, seed=batch))


def test_one_dimensional_input_on_gpu():
    layer = pv.layers.Dense(9, 4, "silu", bias=True, seed=1)
    x = inputs(1, 9)
    np.testing.assert_array_equal(layer.forward(x[0], device="gpu"), layer.forward(x, device="gpu"))


# ---- whole network --------------------------------------------------------------------------------

SPEC = {"depth": 1, "rows": 2, "cols": 1, "layers_per_cell": 2, "layers": [
    {"z": 0, "y": 0, "x": 0, "l": 0, "type": "dense", "activation": "relu", "input_height": 31,
     "output_height": 64, "bias": True},
    {"z": 0, "y": 0, "x": 0, "l": 1, "type": "dense", "activation": "gelu", "dtype": "int8",
     "input_height": 64, "output_height": 48},
    {"z": 0, "y": 1, "x": 0, "l": 0, "type": "dense", "activation": "tanh", "dtype": "int4",
     "input_height": 48, "output_height": 40, "bias": True},
    {"z": 0, "y": 1, "x": 0, "l": 1, "type": "dense", "activation": "linear", "dtype": "fp8e4m3",
     "input_height": 40, "output_height": 7},
]}


def test_network_forward_on_gpu_matches_cpu():
    net = pv.VolumetricNetwork.from_spec(SPEC, seed=4)
    x = inputs(13, 31, seed=6)
    gpu, cpu = net.forward(x, device="gpu"), net.forward(x)
    assert gpu.shape == (13, 7)
    assert rel_err(gpu, cpu) <= 1e-5
    # layer by layer: the GPU network equals composing the GPU layers
    hand = x
    for _, layer in net.layers():
        hand = layer.forward(hand, device="gpu")
    np.testing.assert_array_equal(gpu, hand)


def test_disabled_and_empty_slots_on_gpu():
    net = pv.VolumetricNetwork.from_spec(SPEC, seed=4)
    net.set_disabled(0, 0, 0, 1)
    net.set_layer(0, 1, 0, 0, pv.layers.Dense(64, 40, "tanh", seed=8))
    net.clear_layer(0, 1, 0, 1)
    x = inputs(6, 31)
    assert rel_err(net.forward(x, device="gpu"), net.forward(x)) <= 1e-5


# ---- weight caching -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "int4", "fp8e4m3"])
def test_same_weights_twice_give_identical_results(dtype):
    layer = pv.layers.Dense(100, 50, "silu", bias=True, dtype=dtype, seed=7)
    x = inputs(10, 100)
    first = layer.forward(x, device="gpu")
    np.testing.assert_array_equal(layer.forward(x, device="gpu"), first)
    np.testing.assert_array_equal(layer.forward(x.copy(), device="gpu"), first)


def test_gpu_follows_morph():
    layer = pv.layers.Dense(64, 32, "relu", bias=True, seed=9)
    x = inputs(8, 64)
    f32 = layer.forward(x, device="gpu")
    for dtype in ("int8", "int4", "binary", "fp4", "uint2"):
        layer.weights.morph(dtype)
        got = check_gpu(layer, x)
        assert not np.array_equal(got, f32)
    layer.weights.morph("float32")
    np.testing.assert_array_equal(layer.forward(x, device="gpu"), f32)


def test_gpu_follows_morph_through_the_network():
    net = pv.VolumetricNetwork.from_spec(SPEC, seed=4)
    x = inputs(5, 31)
    before = net.forward(x, device="gpu")
    net.morph_all("ternary")
    after = net.forward(x, device="gpu")
    assert not np.allclose(after, before)
    assert rel_err(after, net.forward(x)) <= 1e-5


def test_gpu_sees_trained_float32_weights():
    """float32 weights are cached on the GPU by generation: training must invalidate them."""
    net = pv.VolumetricNetwork(1, 1, 1, 1)
    net.set_layer(0, 0, 0, 0, pv.layers.Dense(12, 3, "linear", bias=True, seed=2))
    x = inputs(32, 12)
    before = net.forward(x, device="gpu")
    net.train(x, np.zeros((32, 3), np.float32), epochs=3, lr=0.1)
    after = net.forward(x, device="gpu")
    assert not np.allclose(after, before)
    assert rel_err(after, net.forward(x)) <= 1e-5


def test_gpu_sees_an_unpacked_master():
    layer = pv.layers.Dense(20, 6, "tanh", seed=3)
    x = inputs(4, 20)
    layer.forward(x, device="gpu")  # caches the float32 weights
    layer.weights.unpack("int2")  # master := int2 values, float32 stays active
    assert layer.dtype == "float32"
    check_gpu(layer, x)


# ---- errors on the GPU path ------------------------------------------------------------------------

def test_gpu_input_errors():
    layer = pv.layers.Dense(8, 3, seed=1)
    bad = inputs(2, 8)
    bad[1, 5] = np.nan
    with pytest.raises(pv.InputError, match="row 1, column 5"):
        layer.forward(bad, device="gpu")
    with pytest.raises(pv.ShapeError):
        layer.forward(inputs(2, 7), device="gpu")
    net = pv.VolumetricNetwork.from_spec(SPEC)
    with pytest.raises(pv.ShapeError, match=r"\(0,0,0,0\)"):
        net.forward(inputs(2, 30), device="gpu")
