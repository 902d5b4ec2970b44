"""Dense layer: forward / backward for every dtype and schedule against the float64 NumPy
reference (tests/reference/dense.py), activations, schedule agreement, determinism and
finite-difference gradient checks."""

import numpy as np
import pytest

import polyvtd as pv
from reference import codecs as ref_codecs
from reference.dense import ACTIVATIONS, JSON_NAMES, dense_backward, dense_forward, rel_err
from reference.gradcheck import central_difference
from reference.schedules import assert_schedules_agree

DTYPES = ref_codecs.DTYPES
MODES = ["normal", "tiled", "parallel"]


# ---- helpers --------------------------------------------------------------------------------------

def inputs(batch, width, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal((batch, width)) * scale).astype(np.float32)


def params_of(layer):
    """(W as the layer computes with it, bias master or None)."""
    w = layer.weights.dequantize()
    b = layer.bias.master if layer.bias is not None else None
    return w, b


def check_forward(layer, x, mode="parallel", tol=1e-5):
    w, b = params_of(layer)
    y = layer.forward(x, mode=mode)
    assert y.dtype == np.float32 and y.shape == (x.shape[0], layer.weights.shape[0])
    expected = dense_forward(x, w, b, layer_activation(layer))
    assert rel_err(y, expected) <= tol
    return y


def check_backward(layer, x, g, mode="parallel", tol=1e-5):
    w, b = params_of(layer)
    dx, grads = layer.backward(x, g, mode=mode)
    edx, edw, edb = dense_backward(x, w, g, b, layer_activation(layer))
    assert dx.shape == x.shape and dx.dtype == np.float32
    assert len(grads) == (2 if b is not None else 1)
    assert grads[0].shape == (layer.weights.shape[0], layer.weights.shape[1])
    assert rel_err(dx, edx) <= tol
    assert rel_err(grads[0], edw) <= tol
    if b is not None:
        assert grads[1].shape == (layer.weights.shape[0],)
        assert rel_err(grads[1], edb) <= tol
    return dx, grads


_BY_JSON_NAME = {v: k for k, v in JSON_NAMES.items()}


def layer_activation(layer):
    return _BY_JSON_NAME[layer.activation]


# ---- every dtype × every schedule ------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_matches_numpy(dtype, mode):
    i = DTYPES.index(dtype)
    activation = ACTIVATIONS[i % len(ACTIVATIONS)]
    layer = pv.layers.Dense(37, 19, activation, bias=i % 2 == 0, dtype=dtype, seed=i)
    assert layer.dtype == dtype
    check_forward(layer, inputs(7, 37, seed=i), mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_matches_numpy(dtype, mode):
    i = DTYPES.index(dtype)
    activation = ACTIVATIONS[(i + 4) % len(ACTIVATIONS)]
    layer = pv.layers.Dense(29, 23, activation, bias=i % 2 == 1, dtype=dtype, seed=100 + i)
    check_backward(layer, inputs(6, 29, seed=i), inputs(6, 23, seed=50 + i), mode)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", ["float32", "int8", "fp4"])
def test_every_activation_forward_and_backward(activation, bias, dtype):
    layer = pv.layers.Dense(16, 12, activation, bias=bias, dtype=dtype, seed=3)
    assert layer.activation == JSON_NAMES[activation]
    x = inputs(9, 16, seed=4, scale=2.0)
    for mode in MODES:
        check_forward(layer, x, mode)
        check_backward(layer, x, inputs(9, 12, seed=5), mode)


@pytest.mark.parametrize("alias,name", [("swish", "silu"), ("GELU_TANH", "gelu"), ("gelu-exact", "gelu_exact"),
                                        ("identity", "linear"), ("", "linear"), ("6", "relu2"),
                                        ("LeakyReLU", "leaky_relu"), ("none", "linear")])
def test_activation_aliases(alias, name):
    assert pv.layers.Dense(3, 2, alias).activation == JSON_NAMES[name]


# ---- schedules agree, runs repeat ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_schedules_agree_and_tiled_equals_parallel_bitwise(dtype):
    # 512 inputs → 128-row decode tiles, so 300 outputs take 3 tiles (and backward several
    # column chunks). "Within 1e-6 relative" is norm-wise (compat.md): single outputs that
    # cancel can differ more between f32 (tiled/parallel) and f64 (normal) accumulation.
    layer = pv.layers.Dense(512, 300, "silu", bias=True, dtype=dtype, seed=9)
    x, g = inputs(16, 512, seed=1), inputs(16, 300, seed=2)
    assert_schedules_agree(layer, x, g)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ["float32", "int4", "fp8e5m2", "uint8", "binary"])
def test_repeated_runs_are_bitwise_identical(dtype, mode):
    layer = pv.layers.Dense(300, 200, "gelu", bias=True, dtype=dtype, seed=11)
    x, g = inputs(33, 300, seed=3), inputs(33, 200, seed=4)
    first_y = layer.forward(x, mode=mode)
    first_dx, first_grads = layer.backward(x, g, mode=mode)
    for _ in range(3):
        np.testing.assert_array_equal(layer.forward(x, mode=mode), first_y)
        dx, grads = layer.backward(x, g, mode=mode)
        np.testing.assert_array_equal(dx, first_dx)
        for a, b in zip(grads, first_grads):
            np.testing.assert_array_equal(a, b)


# ---- finite differences -----------------------------------------------------------------------------

def numpy_loss(x, w, b, g, activation):
    return float(np.sum(dense_forward(x, w, b, activation) * g))


@pytest.mark.parametrize("activation", ["tanh", "silu", "gelu", "gelu_exact", "sigmoid", "relu2"])
def test_gradients_match_float64_finite_differences(activation):
    layer = pv.layers.Dense(6, 4, activation, bias=True, seed=21)
    x, g = inputs(3, 6, seed=6), inputs(3, 4, seed=7)
    w, b = params_of(layer)
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
    loss = lambda: numpy_loss(x64, w64, b64, g, activation)  # noqa: E731
    dx, (dw, db) = layer.backward(x, g, mode="normal")
    assert rel_err(dx, central_difference(loss, x64, 1e-6)) <= 1e-5
    assert rel_err(dw, central_difference(loss, w64, 1e-6)) <= 1e-5
    assert rel_err(db, central_difference(loss, b64, 1e-6)) <= 1e-5


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("activation", ["tanh", "silu"])
def test_input_gradient_matches_finite_differences_through_the_layer(activation, mode):
    """Numeric d(sum(forward(x)·g))/dx from the layer's own float32 forward (h = 1e-2)."""
    layer = pv.layers.Dense(10, 5, activation, bias=True, seed=2)
    x, g = inputs(4, 10, seed=8), inputs(4, 5, seed=9).astype(np.float64)
    h = np.float32(1e-2)
    numeric = np.zeros(x.shape)
    for idx in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        step = float(up[idx]) - float(down[idx])  # the f32 perturbation actually applied
        numeric[idx] = (np.sum(layer.forward(up, mode=mode) * g)
                        - np.sum(layer.forward(down, mode=mode) * g)) / step
    dx, _ = layer.backward(x, g.astype(np.float32), mode=mode)
    assert rel_err(dx, numeric) <= 1e-2


# ---- layer object --------------------------------------------------------------------------------

def test_layer_properties_and_init():
    layer = pv.layers.Dense(25, 7, "relu", bias=True, seed=4)
    assert layer.type == "Dense" and layer.weights.shape[1] == 25 and layer.weights.shape[0] == 7
    assert layer.activation == "ReLU" and layer.dtype == "float32"
    assert layer.num_params == 25 * 7 + 7
    assert layer.weights.shape == [7, 25] and layer.bias.shape == [7]
    # PyTorch Linear init: U(±1/sqrt(fan_in)) for weights and bias
    assert np.abs(layer.weights.master).max() < 1 / 5 and np.abs(layer.bias.master).max() < 1 / 5
    assert np.abs(layer.weights.master).max() > 0.15  # and it uses the range
    assert pv.layers.Dense(25, 7).bias is None
    assert pv.layers.Dense(25, 7).num_params == 175


def test_seed_determines_the_weights():
    a = pv.layers.Dense(8, 8, seed=1).weights.master
    np.testing.assert_array_equal(a, pv.layers.Dense(8, 8, seed=1).weights.master)
    assert not np.array_equal(a, pv.layers.Dense(8, 8, seed=2).weights.master)
    # the dtype is applied to the same seeded master
    q = pv.layers.Dense(8, 8, dtype="int4", seed=1).weights
    np.testing.assert_array_equal(q.master, a)
    np.testing.assert_array_equal(q.dequantize(), ref_codecs.standard_quantize(a, "int4")[0].reshape(8, 8))


def test_bias_stays_float32_when_the_layer_is_quantised():
    layer = pv.layers.Dense(6, 3, bias=True, dtype="int4", seed=5)
    assert layer.dtype == "int4" and layer.weights.dtype == "int4"
    assert layer.bias.dtype == "float32"
    check_forward(layer, inputs(2, 6))


def test_morphing_the_weights_handle_changes_the_layer():
    layer = pv.layers.Dense(12, 6, "tanh", seed=6)
    x = inputs(5, 12)
    before = layer.forward(x)
    layer.weights.morph("ternary")
    assert layer.dtype == "ternary"
    after = check_forward(layer, x)
    assert not np.allclose(before, after)
    layer.weights.morph("float32")
    np.testing.assert_array_equal(layer.forward(x), before)


def test_one_dimensional_input_is_one_row():
    layer = pv.layers.Dense(5, 3, "sigmoid", bias=True, seed=7)
    x = inputs(1, 5)
    y = layer.forward(x[0])
    assert y.shape == (1, 3)
    np.testing.assert_array_equal(y, layer.forward(x))


def test_spec_json_describes_the_layer():
    import json

    spec = json.loads(pv.layers.Dense(5, 3, "gelu", bias=True, dtype="fp8", seed=7).spec_json())
    assert spec["type"] == "Dense" and spec["activation"] == "GELU" and spec["dtype"] == "fp8e4m3"
    assert spec["input_height"] == 5 and spec["output_height"] == 3 and spec["bias"] is True


@pytest.mark.parametrize("bad", [dict(input_size=0, output_size=3), dict(input_size=3, output_size=0)])
def test_zero_sized_layers_are_spec_errors(bad):
    with pytest.raises(pv.SpecError):
        pv.layers.Dense(**bad)


def test_bad_layer_arguments():
    with pytest.raises(pv.SpecError, match="activation"):
        pv.layers.Dense(3, 3, "softplus")
    with pytest.raises(pv.DTypeError):
        pv.layers.Dense(3, 3, dtype="int3")
    with pytest.raises(pv.InputError):
        pv.layers.Dense(3, 3, compat="pytorch")
    layer = pv.layers.Dense(3, 2)
    with pytest.raises(pv.ShapeError):
        layer.backward(inputs(2, 3), inputs(3, 2))  # batch mismatch
    with pytest.raises(pv.ShapeError):
        layer.backward(inputs(2, 3), inputs(2, 3))  # grad width
