"""Convolution layers (CNN1/2/3, ConvTransposed1D/2D/3D): forward and backward against the
float64 NumPy reference (tests/reference/conv.py) for every dtype and schedule, finite
differences, spec round trips, the reference's build JSON, errors and a short training run."""

import json

import numpy as np
import pytest

import polyvtd as pv
from reference import codecs as ref_codecs
from reference.conv import conv_backward, conv_forward, transposed_backward, transposed_forward
from reference.dense import JSON_NAMES, dense_forward, norm_rel_err, rel_err
from reference.gradcheck import central_difference
from reference.schedules import assert_schedules_agree
from reference.gradcheck import float32_input_gradient

DTYPES = ref_codecs.DTYPES
MODES = ["normal", "tiled", "parallel"]
_BY_JSON_NAME = {v: k for k, v in JSON_NAMES.items()}

# (builder, positional args, keyword args, sample shape): strides, padding, output_padding and
# non-square sizes on every kind.
CASES = {
    "CNN1": ("CNN1", (3, 4, 3, 9), dict(stride=2, padding=1), (3, 9)),
    "CNN2": ("CNN2", (2, 3, 3, (6, 5)), dict(padding=1), (2, 6, 5)),
    "CNN3": ("CNN3", (2, 2, 2, (4, 3, 5)), dict(stride=2), (2, 4, 3, 5)),
    "ConvTransposed1D": ("ConvTransposed1D", (3, 2, 4, 5), dict(stride=2, padding=1, output_padding=1), (3, 5)),
    "ConvTransposed2D": ("ConvTransposed2D", (2, 3, 3, (3, 4)), dict(stride=2, padding=1, output_padding=1), (2, 3, 4)),
    "ConvTransposed3D": ("ConvTransposed3D", (2, 2, 3, (2, 3, 2)), dict(padding=1), (2, 2, 3, 2)),
}
NAMES = list(CASES)


# ---- helpers --------------------------------------------------------------------------------------

def make(name, activation="linear", **overrides):
    builder, args, kwargs, _ = CASES[name]
    return getattr(pv.layers, builder)(*args, activation, **{**kwargs, **overrides})


def inputs(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def sample_input(name, batch=3, seed=0):
    return inputs((batch, *CASES[name][3]), seed)


def reference_args(layer):
    """(forward, backward, keyword arguments) of the NumPy reference for a layer."""
    spec = json.loads(layer.spec_json())
    kw = dict(activation=_BY_JSON_NAME[spec["activation"]], stride=spec["stride"], padding=spec["padding"])
    if spec["type"].startswith("ConvTransposed"):
        return transposed_forward, transposed_backward, dict(kw, output_padding=spec.get("output_padding", 0))
    return conv_forward, conv_backward, kw


def weights_of(layer):
    """(W as the layer computes with it, bias master or None)."""
    return layer.weights.dequantize(), (layer.bias.master if layer.bias is not None else None)


def expected_forward(layer, x):
    forward, _, kw = reference_args(layer)
    w, b = weights_of(layer)
    return forward(x, w, b, **kw)


def expected_backward(layer, x, g):
    _, backward, kw = reference_args(layer)
    w, b = weights_of(layer)
    return backward(x, w, g, b, **kw)


def check_backward(layer, x, g, mode="parallel", tol=1e-5, rel=rel_err):
    dx, grads = layer.backward(x, g, mode=mode)
    edx, edw, edb = expected_backward(layer, x, g)
    assert dx.shape == x.shape and dx.dtype == np.float32
    assert len(grads) == len(layer.parameters) == (2 if layer.bias is not None else 1)
    assert grads[0].shape == tuple(layer.weights.shape)
    assert rel(dx, edx) <= tol and rel(grads[0], edw) <= tol
    if layer.bias is not None:
        assert grads[1].shape == tuple(layer.bias.shape)
        assert rel(grads[1], edb) <= tol


# ---- float32 parity ---------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["linear", "relu", "tanh", "gelu"])
@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_numpy(name, activation):
    layer = make(name, activation, bias=activation in ("relu", "gelu"), seed=NAMES.index(name))
    x = sample_input(name)
    expected = expected_forward(layer, x)
    for mode in MODES:
        y = layer.forward(x, mode=mode)
        assert y.dtype == np.float32 and y.shape == expected.shape
        assert rel_err(y, expected) <= 1e-5
    assert list(y.shape[1:]) == layer.output_shape(list(x.shape[1:]))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_numpy(name, mode):
    layer = make(name, "silu", bias=True, seed=10 + NAMES.index(name))
    x = sample_input(name, seed=1)
    g = inputs(layer.forward(x).shape, seed=2)
    check_backward(layer, x, g, mode)


def test_known_values_by_hand():
    """1-D, 1 channel, W = [1, 2, 3], x = [1, 2, 3, 4]: the conv and the transposed conv."""
    conv = pv.layers.CNN1(1, 1, 3, 4, padding=1)
    conv.weights.set_master(np.array([[[1, 2, 3]]], np.float32))
    x = np.array([[[1, 2, 3, 4]]], np.float32)
    np.testing.assert_allclose(conv.forward(x), [[[8, 14, 20, 11]]])
    up = pv.layers.ConvTransposed1D(1, 1, 3, 4, stride=2)
    up.weights.set_master(np.array([[[1, 2, 3]]], np.float32))
    # x[i] scattered onto 2i, 2i+1, 2i+2 with weights 1, 2, 3
    np.testing.assert_allclose(up.forward(x), [[[1, 2, 5, 4, 9, 6, 13, 8, 12]]])


# ---- every dtype ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_matches_numpy_on_the_dequantised_weights(dtype, name):
    i = DTYPES.index(dtype)
    layer = make(name, ["tanh", "relu", "linear"][i % 3], bias=i % 2 == 0, dtype=dtype, seed=i)
    assert layer.dtype == dtype and layer.weights.dtype == dtype
    if layer.bias is not None:
        assert layer.bias.dtype == "float32"
    x = sample_input(name, seed=i)
    y = layer.forward(x)
    assert norm_rel_err(y, expected_forward(layer, x)) <= 1e-4
    check_backward(layer, x, inputs(y.shape, seed=50 + i), tol=1e-4, rel=norm_rel_err)


def test_morphing_the_weights_handle_changes_the_layer():
    layer = make("CNN2", "tanh", seed=6)
    x = sample_input("CNN2")
    before = layer.forward(x)
    layer.weights.morph("int4")
    after = layer.forward(x)
    assert layer.dtype == "int4" and not np.allclose(before, after)
    assert rel_err(after, expected_forward(layer, x)) <= 1e-5
    layer.weights.morph("float32")
    np.testing.assert_array_equal(layer.forward(x), before)


# ---- schedules ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "int4", "fp8e4m3", "ternary"])
@pytest.mark.parametrize("name", NAMES + ["wide"])
def test_schedules_agree_and_tiled_equals_parallel_bitwise(name, dtype):
    if name == "wide":  # 64 channels × 5 taps, 1024 rows: several row chunks
        layer = pv.layers.CNN1(64, 8, 5, 64, "silu", padding=2, bias=True, dtype=dtype, seed=3)
        x = inputs((16, 64, 64), seed=4)
    else:
        layer = make(name, "silu", bias=True, dtype=dtype, seed=3)
        x = sample_input(name, batch=5, seed=4)
    g = inputs(layer.forward(x).shape, seed=5)
    assert_schedules_agree(layer, x, g)


# ---- finite differences ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_gradients_match_float64_finite_differences(name):
    layer = make(name, "tanh", bias=True, seed=21)
    x = sample_input(name, batch=2, seed=6)
    g = inputs(layer.forward(x).shape, seed=7).astype(np.float64)
    forward, _, kw = reference_args(layer)
    w, b = weights_of(layer)
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
    loss = lambda: float(np.sum(forward(x64, w64, b64, **kw) * g))  # noqa: E731
    dx, (dw, db) = layer.backward(x, g.astype(np.float32), mode="normal")
    assert rel_err(dx, central_difference(loss, x64, 1e-6)) <= 1e-5
    assert rel_err(dw, central_difference(loss, w64, 1e-6)) <= 1e-5
    assert rel_err(db, central_difference(loss, b64, 1e-6)) <= 1e-5


@pytest.mark.parametrize("name", ["CNN2", "ConvTransposed1D"])
def test_input_gradient_matches_finite_differences_through_the_layer(name):
    """Numeric d(sum(forward(x)·g))/dx from the layer's own float32 forward (h = 1e-2)."""
    layer = make(name, "silu", bias=True, seed=2)
    x = sample_input(name, batch=2, seed=8)
    g = inputs(layer.forward(x).shape, seed=9).astype(np.float64)
    numeric = float32_input_gradient(layer, x, g)
    dx, _ = layer.backward(x, g.astype(np.float32))
    assert rel_err(dx, numeric) <= 1e-2


# ---- the layer object -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_layer_properties_and_pytorch_initialisation(name):
    layer = make(name, "relu", bias=True, seed=4)
    _, (channels, filters, k, _), _, shape = CASES[name]
    axes = len(shape) - 1
    assert layer.type == name and layer.activation == "ReLU" and layer.dtype == "float32"
    assert layer.input_shape == list(shape)
    assert layer.weights.shape == [filters, channels] + [k] * axes and layer.bias.shape == [filters]
    assert layer.num_params == filters * channels * k**axes + filters
    fan_in = (filters if name.startswith("ConvTransposed") else channels) * k**axes
    bound = 1 / np.sqrt(fan_in)
    assert np.abs(layer.weights.master).max() < bound and np.abs(layer.bias.master).max() < bound
    assert make(name).bias is None


def test_output_sizes_follow_pytorch():
    assert pv.layers.CNN2(1, 1, 3, (7, 8), stride=2, padding=1).output_shape([1, 7, 8]) == [1, 4, 4]
    assert pv.layers.CNN3(1, 2, 2, 4, stride=2).output_shape([1, 4, 4, 4]) == [2, 2, 2, 2]
    assert pv.layers.ConvTransposed2D(1, 1, 3, (4, 5), stride=2, padding=1,
                                      output_padding=1).output_shape([1, 4, 5]) == [1, 8, 10]
    assert pv.layers.ConvTransposed3D(2, 1, 2, 3, stride=2).output_shape([2, 3, 3, 3]) == [1, 6, 6, 6]


@pytest.mark.parametrize("name", NAMES)
def test_flattened_samples_are_accepted(name):
    layer = make(name, "tanh", seed=5)
    x = sample_input(name)
    np.testing.assert_array_equal(layer.forward(x.reshape(len(x), -1)), layer.forward(x))


@pytest.mark.parametrize("name", NAMES)
def test_spec_json_round_trip(name):
    layer = make(name, "gelu", bias=True, dtype="int8")
    spec = json.loads(layer.spec_json())
    assert spec["type"] == name and spec["dtype"] == "int8" and spec["bias"] is True
    again = pv.layers.from_spec(spec)
    assert json.loads(again.spec_json()) == spec
    x = sample_input(name)
    np.testing.assert_array_equal(again.forward(x), layer.forward(x))


def test_spec_uses_the_reference_field_names():
    spec = json.loads(pv.layers.ConvTransposed1D(2, 3, 4, 7, stride=3, output_padding=2).spec_json())
    assert spec["input_width"] == 7 and spec["output_width"] == 24 and "input_height" not in spec
    assert spec["output_padding"] == 2 and spec["input_channels"] == 2 and spec["filters"] == 3
    spec = json.loads(pv.layers.CNN3(1, 2, 3, (5, 6, 7)).spec_json())
    assert (spec["input_depth"], spec["input_height"], spec["input_width"]) == (5, 6, 7)
    assert (spec["output_depth"], spec["output_height"], spec["output_width"]) == (3, 4, 5)


# ---- the reference's build JSON -------------------------------------------------------------------

# One Loom build spec per type (reference field names and spellings; CNN2/CNN3 widths and depths
# default to the height, ConvTransposed1D uses widths), each followed by a flattening Dense.
LOOM_ENTRIES = {
    "CNN1": ({"type": "CNN1", "input_channels": 2, "filters": 3, "kernel_size": 3, "stride": 1,
              "padding": 0, "input_height": 8, "output_height": 6}, (2, 8), 18),
    "CNN2": ({"type": "cnn2", "input_channels": 1, "filters": 2, "kernel_size": 3, "stride": 2,
              "padding": 1, "input_height": 6, "output_height": 3}, (1, 6, 6), 18),
    "CNN3": ({"type": "Cnn3", "input_channels": 1, "filters": 2, "kernel_size": 2, "stride": 1,
              "padding": 0, "input_height": 3, "output_height": 2}, (1, 3, 3, 3), 16),
    "ConvTransposed1D": ({"type": "ConvTransposed1D", "input_channels": 2, "filters": 2, "kernel_size": 4,
                          "stride": 2, "padding": 1, "input_width": 5, "output_width": 10}, (2, 5), 20),
    "ConvTransposed2D": ({"type": "CONVTRANSPOSED2D", "input_channels": 2, "filters": 2, "kernel_size": 2,
                          "stride": 2, "padding": 0, "input_height": 3, "input_width": 2,
                          "output_height": 6, "output_width": 4}, (2, 3, 2), 48),
    "ConvTransposed3D": ({"type": "convtransposed3d", "input_channels": 1, "filters": 1, "kernel_size": 3,
                          "stride": 1, "padding": 1, "input_depth": 2, "input_height": 3, "input_width": 2,
                          "output_depth": 2, "output_height": 3, "output_width": 2}, (1, 2, 3, 2), 12),
}


@pytest.mark.parametrize("name", NAMES)
def test_loom_build_spec_loads_and_runs(name):
    entry, shape, flat = LOOM_ENTRIES[name]
    spec = {"id": "conv", "depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 2, "layers": [
        {"z": 0, "y": 0, "x": 0, "l": 0, "activation": "relu", **entry},
        {"z": 0, "y": 0, "x": 0, "l": 1, "type": "dense", "input_height": flat, "output_height": 2}]}
    net = pv.VolumetricNetwork.from_spec(spec, seed=2)
    conv = net.layer(0, 0, 0, 0)
    assert conv.type == name and conv.input_shape == list(shape)
    x = inputs((4, int(np.prod(shape))), seed=3)  # the reference feeds flat samples
    y = net.forward(x)
    hidden = expected_forward(conv, x.reshape(4, *shape)).reshape(4, -1)
    assert rel_err(y, dense_forward(hidden, net.layer(0, 0, 0, 1).weights.master)) <= 1e-5
    again = pv.VolumetricNetwork.from_spec(net.to_spec(), seed=2)
    np.testing.assert_array_equal(again.forward(x), y)


# ---- errors ---------------------------------------------------------------------------------------

def network_with(entry):
    return pv.VolumetricNetwork.from_spec({"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 2, "layers": [
        {"l": 0, "type": "dense", "input_height": 4, "output_height": 4},
        {"l": 1, **entry}]})


def test_bad_specs_name_the_problem_and_the_coordinate():
    base = {"type": "CNN2", "input_channels": 1, "filters": 2, "kernel_size": 3, "input_height": 2}
    with pytest.raises(pv.SpecError, match=r"\(0,0,0,1\).*kernel_size 3 is larger than the padded input \(input_height 2"):
        network_with(base)
    with pytest.raises(pv.SpecError, match=r"\(0,0,0,1\).*output_width.* is 3, but CNN2 with these sizes produces 4"):
        network_with({**base, "input_height": 6, "output_width": 3})
    with pytest.raises(pv.SpecError, match=r"\(0,0,0,1\).*filters"):
        network_with({k: v for k, v in base.items() if k != "filters"})
    with pytest.raises(pv.SpecError, match=r"\(0,0,0,1\).*output_padding 2 must be smaller than stride 2"):
        network_with({**base, "type": "ConvTransposed2D", "stride": 2, "output_padding": 2})
    with pytest.raises(pv.SpecError, match="output_padding applies only to ConvTransposed"):
        pv.layers.from_spec({**base, "input_height": 6, "output_padding": 1})
    with pytest.raises(pv.SpecError, match="no output positions along input_width"):
        pv.layers.ConvTransposed1D(1, 1, 2, 1, padding=1)
    with pytest.raises(pv.SpecError, match="input_width"):
        pv.layers.from_spec({"type": "ConvTransposed1D", "input_channels": 1, "filters": 1, "kernel_size": 2})
    with pytest.raises(pv.SpecError, match="too large"):
        pv.layers.CNN3(1, 1, 100000, 100000, padding=100000)


def test_bad_builder_arguments():
    with pytest.raises(pv.SpecError, match="2 sizes"):
        pv.layers.CNN2(1, 1, 3, (5, 5, 5))
    with pytest.raises(pv.SpecError, match="kernel_size"):
        pv.layers.CNN1(1, 1, 0, 5)
    with pytest.raises(pv.SpecError, match="stride"):
        pv.layers.CNN1(1, 1, 2, 5, stride=-1)
    with pytest.raises(pv.SpecError, match="activation"):
        pv.layers.CNN1(1, 1, 2, 5, "softplus")
    with pytest.raises(pv.PolyError, match="int3"):
        pv.layers.CNN1(1, 1, 2, 5, dtype="int3")


def test_wrong_input_shapes_are_shape_errors():
    layer = make("CNN2")
    with pytest.raises(pv.ShapeError, match=r"expects samples of shape \[2, 6, 5\].*got sample shape \[2, 5, 6\]"):
        layer.forward(inputs((1, 2, 5, 6)))
    with pytest.raises(pv.ShapeError, match="59"):
        layer.forward(inputs((1, 59)))
    # a sample of another rank is read as the flat values (the reference's flat tensors)
    np.testing.assert_array_equal(layer.forward(inputs((1, 2, 30))), layer.forward(inputs((1, 2, 6, 5))))
    x = sample_input("CNN2", batch=2)
    with pytest.raises(pv.ShapeError):
        layer.backward(x, inputs((3, 3, 6, 5)))  # batch mismatch
    with pytest.raises(pv.ShapeError):
        layer.backward(x, inputs((2, 3, 6, 4)))  # gradient size
    net = network_with({"type": "CNN1", "input_channels": 2, "filters": 1, "kernel_size": 1, "input_height": 2})
    net.set_layer(0, 0, 0, 1, pv.layers.CNN1(3, 1, 1, 2))
    with pytest.raises(pv.ShapeError, match=r"\(0,0,0,1\).*CNN1 expects samples of shape \[3, 2\]"):
        net.forward(inputs((1, 4)))


# ---- training ---------------------------------------------------------------------------------------

def test_training_a_small_conv_net_reduces_the_loss():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 6, 6)).astype(np.float32)
    # target: a fixed 3×3 edge filter's mean response (learnable by the conv + dense stack)
    edge = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float64)
    target = conv_forward(x, edge[None, None], stride=1).mean(axis=(1, 2, 3))[:, None].astype(np.float32)
    net = pv.VolumetricNetwork(1, 1, 1, 3)
    net.set_layer(0, 0, 0, 0, pv.layers.CNN2(1, 4, 3, 6, "tanh", bias=True, seed=1))
    net.set_layer(0, 0, 0, 1, pv.layers.ConvTransposed2D(4, 2, 2, 4, stride=2, bias=True, seed=2))
    net.set_layer(0, 0, 0, 2, pv.layers.Dense(2 * 8 * 8, 1, bias=True, seed=3))
    result = net.train(x, target, epochs=30, lr=0.01, batch_size=16, optimizer="adam")
    assert result.loss_history[-1] < 0.3 * result.loss_history[0]


# ---- GPU forward ----------------------------------------------------------------------------------

needs_gpu = pytest.mark.skipif(not pv.gpu_available(), reason="no GPU adapter found by wgpu (install mesa-vulkan-drivers for lavapipe)")


def check_gpu(layer, x, tol=1e-5):
    """device="gpu" against the CPU forward and the NumPy reference (on the dequantised weights)."""
    gpu, cpu = layer.forward(x, device="gpu"), layer.forward(x)
    assert gpu.dtype == np.float32 and gpu.shape == cpu.shape
    assert rel_err(gpu, cpu) <= tol
    assert rel_err(gpu, expected_forward(layer, x)) <= tol
    return gpu


@needs_gpu
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_forward_every_dtype(dtype, name):
    """Packed weights of every dtype decoded in the shader (shaders/conv.wgsl via weights.wgsl)."""
    i = DTYPES.index(dtype)
    layer = make(name, ["tanh", "relu", "linear"][i % 3], bias=i % 2 == 0, dtype=dtype, seed=i)
    check_gpu(layer, sample_input(name, batch=2, seed=i))


# Odd sizes (rows, filters and channels·taps off the tile sizes 64 × {4, 16, 64} × 16): one case
# per tile width and per kind, strides, padding and output padding on non-square inputs.
GPU_ODD = {
    "CNN1 wide": (pv.layers.CNN1, (5, 17, 5, 37), dict(stride=2, padding=3), (5, 37)),
    "CNN2": (pv.layers.CNN2, (3, 6, 3, (11, 13)), dict(padding=1), (3, 11, 13)),
    "CNN3": (pv.layers.CNN3, (2, 3, 3, (5, 4, 7)), dict(stride=2, padding=1), (2, 5, 4, 7)),
    "ConvTransposed1D": (pv.layers.ConvTransposed1D, (4, 5, 5, 23), dict(stride=3, padding=2, output_padding=2), (4, 23)),
    "ConvTransposed2D wide": (pv.layers.ConvTransposed2D, (3, 18, 3, (5, 7)), dict(stride=2, padding=1, output_padding=1), (3, 5, 7)),
    "ConvTransposed3D": (pv.layers.ConvTransposed3D, (2, 3, 2, (3, 2, 4)), dict(stride=2), (2, 3, 2, 4)),
}


@needs_gpu
@pytest.mark.parametrize("case", list(GPU_ODD))
@pytest.mark.parametrize("activation,dtype", [("silu", "float32"), ("gelu", "int4"), ("sigmoid", "fp8e4m3")])
def test_gpu_forward_odd_shapes_and_batches(case, activation, dtype):
    builder, args, kwargs, shape = GPU_ODD[case]
    layer = builder(*args, activation, bias=True, dtype=dtype, seed=7, **kwargs)
    for batch in (1, 5):
        check_gpu(layer, inputs((batch, *shape), seed=batch))


@needs_gpu
def test_gpu_flattened_samples_and_no_bias():
    layer = make("ConvTransposed2D", "leaky_relu", seed=3)
    x = sample_input("ConvTransposed2D", batch=4)
    gpu = check_gpu(layer, x)
    np.testing.assert_array_equal(layer.forward(x.reshape(4, -1), device="gpu"), gpu)


@needs_gpu
def test_gpu_follows_weight_and_bias_updates():
    """The uploaded copies are keyed by the master's generation and the packed version."""
    layer = make("CNN2", "tanh", bias=True, seed=8)
    x = sample_input("CNN2", batch=2)
    before = check_gpu(layer, x)
    layer.bias.set_master(layer.bias.master + 0.5)
    after_bias = check_gpu(layer, x)
    layer.weights.morph("int2")
    after_morph = check_gpu(layer, x)
    assert not np.allclose(before, after_bias) and not np.allclose(after_bias, after_morph)


@needs_gpu
def test_gpu_network_of_conv_layers_matches_the_cpu():
    """CNN2 → ConvTransposed2D → CNN1 on flattened samples → Dense in one grid, device="gpu"."""
    net = pv.VolumetricNetwork(1, 1, 2, 2)
    net.set_layer(0, 0, 0, 0, pv.layers.CNN2(2, 4, 3, (7, 6), "relu", stride=2, padding=1, bias=True, seed=1, dtype="int8"))
    net.set_layer(0, 0, 0, 1, pv.layers.ConvTransposed2D(4, 3, 3, (4, 3), "tanh", stride=2, output_padding=1, seed=2))
    net.set_layer(0, 0, 1, 0, pv.layers.CNN1(3, 2, 4, 10 * 8, "silu", stride=3, bias=True, seed=3, dtype="fp4"))
    net.set_layer(0, 0, 1, 1, pv.layers.Dense(2 * 26, 5, seed=4))
    x = inputs((3, 2 * 7 * 6), seed=9)
    gpu, cpu = net.forward(x, device="gpu"), net.forward(x)
    assert gpu.shape == cpu.shape == (3, 5)
    assert rel_err(gpu, cpu) <= 1e-5
