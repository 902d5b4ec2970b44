"""Embedding: lookups and table gradients against the float64 NumPy reference
(tests/reference/embedding.py) for every dtype, activations, schedule agreement, repeated ids,
finite differences, specs, bad ids (named with their position) and a short training run."""

import json

import numpy as np
import pytest

import polyvtd as pv
from reference import codecs as ref_codecs
from reference.dense import JSON_NAMES, norm_rel_err, rel_err
from reference.embedding import embedding_backward, embedding_forward
from reference.gradcheck import central_difference

DTYPES = ref_codecs.DTYPES
MODES = ["normal", "tiled", "parallel"]
_BY_JSON_NAME = {v: k for k, v in JSON_NAMES.items()}


def ids(shape, vocab, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, shape).astype(np.float32)


def grads(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def check(layer, x, g, mode="parallel", tol=1e-5, err=rel_err):
    table = layer.weights.dequantize()
    act = _BY_JSON_NAME[layer.activation]
    y = layer.forward(x, mode=mode)
    assert y.shape == x.shape + (table.shape[1],) and y.dtype == np.float32
    assert err(y, embedding_forward(x, table, act)) <= tol
    dx, (dtable,) = layer.backward(x, g, mode=mode)
    assert dx.shape == x.shape and not dx.any()
    assert err(dtable, embedding_backward(x, table, g, act)) <= tol


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("activation", ["linear", "tanh", "relu"])
def test_lookup_and_backward_match_numpy(activation, mode):
    layer = pv.layers.Embedding(11, 6, activation=activation, seed=1)
    x = ids((4, 9), 11, seed=2)
    check(layer, x, grads((4, 9, 6), seed=3), mode)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_looks_up_its_dequantised_rows(dtype):
    i = DTYPES.index(dtype)
    layer = pv.layers.Embedding(13, 10, dtype=dtype, seed=i)
    assert layer.dtype == dtype
    x = ids((3, 7), 13, seed=i)
    check(layer, x, grads((3, 7, 10), seed=i), tol=1e-4, err=norm_rel_err)
    # rows are exact decodes, no arithmetic
    np.testing.assert_array_equal(layer.forward(x), layer.weights.dequantize()[x.astype(int)])


def test_repeated_ids_accumulate_and_unused_rows_get_zero():
    layer = pv.layers.Embedding(5, 3, seed=4)
    x = np.array([[1, 3, 1], [1, 0, 3]], dtype=np.float32)
    g = grads((2, 3, 3), seed=5)
    _, (dtable,) = layer.backward(x, g)
    np.testing.assert_allclose(dtable[1], g[0, 0] + g[0, 2] + g[1, 0], rtol=1e-6)
    np.testing.assert_allclose(dtable[3], g[0, 1] + g[1, 2], rtol=1e-6)
    np.testing.assert_array_equal(dtable[2], 0)
    np.testing.assert_array_equal(dtable[4], 0)


def test_schedules_agree_bitwise():
    # 32·256 positions over a 100-word vocabulary: rows repeat many times.
    layer = pv.layers.Embedding(100, 64, activation="gelu", dtype="int4", seed=6)
    x, g = ids((32, 256), 100, seed=7), grads((32, 256, 64), seed=8)
    ys = [layer.forward(x, mode=m) for m in MODES]
    bs = [layer.backward(x, g, mode=m)[1][0] for m in MODES]
    for other in range(1, 3):
        np.testing.assert_array_equal(ys[other], ys[0])
        np.testing.assert_array_equal(bs[other], bs[0])


def test_table_gradient_matches_float64_finite_differences():
    layer = pv.layers.Embedding(4, 3, activation="sigmoid", seed=9)
    x, g = np.array([[0, 2, 2, 1]], dtype=np.float32), grads((1, 4, 3), seed=10)
    table = layer.weights.master.astype(np.float64)
    loss = lambda: float(np.sum(embedding_forward(x, table, "sigmoid") * g))  # noqa: E731
    _, (dtable,) = layer.backward(x, g, mode="normal")
    assert rel_err(dtable, central_difference(loss, table)) <= 1e-5


def test_layer_properties_and_spec_round_trip():
    layer = pv.layers.Embedding(20, 8, activation="tanh", dtype="uint8", seed=2)
    assert layer.type == "Embedding" and layer.input_shape is None
    assert layer.output_shape([3, 4]) == [3, 4, 8] and layer.weights.shape == [20, 8]
    spec = json.loads(layer.spec_json())
    assert spec == {"type": "Embedding", "activation": "Tanh", "vocab_size": 20, "embedding_dim": 8,
                    "dtype": "uint8"}
    again = pv.layers.from_spec(spec, seed=2)  # the seed the weights came from
    assert json.loads(again.spec_json()) == spec
    x = ids((2, 5), 20)
    np.testing.assert_array_equal(again.forward(x), layer.forward(x))
    table = pv.layers.Embedding(2000, 16, seed=0).weights.master
    assert abs(table.mean()) < 0.02 and abs(table.std() - 1.0) < 0.02  # N(0, 1)


def test_loom_build_spec_loads_and_runs():
    spec = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 2, "layers": [
        {"z": 0, "y": 0, "x": 0, "l": 0, "type": "embedding", "vocab_size": 10, "embedding_dim": 4},
        {"z": 0, "y": 0, "x": 0, "l": 1, "type": "dense", "activation": "tanh", "input_height": 4,
         "output_height": 2}]}
    net = pv.VolumetricNetwork.from_spec(spec)
    assert net.layer(0, 0, 0, 0).activation == "Linear"
    y = net.forward(ids((3, 5), 10))
    assert y.shape == (3, 5, 2)


@pytest.mark.parametrize("bad,where", [(10.0, r"sample 1, index \[0, 2\]"), (-1.0, r"sample 1, index \[0, 2\]"),
                                       (2.5, r"sample 1, index \[0, 2\]")])
def test_bad_ids_name_the_value_and_position(bad, where):
    layer = pv.layers.Embedding(10, 4)
    x = ids((2, 1, 3), 10)
    x[1, 0, 2] = bad
    with pytest.raises(pv.InputError, match=rf"{bad:g} at {where}.*\[0, 10\)"):
        layer.forward(x)


def test_bad_specs_and_errors_in_a_network():
    with pytest.raises(pv.SpecError, match="embedding_dim"):
        pv.layers.from_spec({"type": "Embedding", "vocab_size": 5})
    with pytest.raises(pv.SpecError, match="vocab_size"):
        pv.layers.Embedding(0, 4)
    net = pv.VolumetricNetwork(1, 1, 1, 2)
    net.set_layer(0, 0, 0, 0, pv.layers.Dense(3, 3))
    net.set_layer(0, 0, 0, 1, pv.layers.Embedding(10, 4))
    with pytest.raises(pv.InputError, match=r"\(0,0,0,1\).*Embedding.*token id"):
        net.forward(np.ones((2, 3), dtype=np.float32))


def test_training_learns_a_vector_per_token():
    rng = np.random.default_rng(0)
    targets = rng.standard_normal((8, 3)).astype(np.float32)
    x = rng.integers(0, 8, (256, 1)).astype(np.float32)
    y = targets[x[:, 0].astype(int)][:, None, :]
    net = pv.VolumetricNetwork(1, 1, 1, 1)
    net.set_layer(0, 0, 0, 0, pv.layers.Embedding(8, 3, seed=1))
    result = net.train(x, y, epochs=10, lr=0.1, batch_size=16, optimizer="adam")
    assert result.loss_history[-1] < 0.1 * result.loss_history[0]
    np.testing.assert_allclose(net.layer(0, 0, 0, 0).weights.master, targets, atol=0.1)


# ---- GPU --------------------------------------------------------------------------------------------

GPU = pytest.mark.skipif(not pv.gpu_available(), reason="no GPU adapter found by wgpu (install mesa-vulkan-drivers for lavapipe)")
ACTIVATIONS = list(JSON_NAMES)


@GPU
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_forward_matches_the_cpu_and_the_reference(dtype):
    """device="gpu": one thread per output value (shaders/embedding.wgsl), the table decoded in
    the shader; batch 3 of 7 ids × 10 values (not a multiple of the 64-thread workgroup), each
    dtype with another activation."""
    i = DTYPES.index(dtype)
    act = ACTIVATIONS[i % len(ACTIVATIONS)]
    layer = pv.layers.Embedding(13, 10, activation=act, dtype=dtype, seed=i)
    x = ids((3, 7), 13, seed=i)
    gpu, cpu = layer.forward(x, device="gpu"), layer.forward(x)
    assert gpu.shape == (3, 7, 10)
    assert rel_err(gpu, cpu) <= 1e-5
    assert rel_err(gpu, embedding_forward(x, layer.weights.dequantize(), act)) <= 1e-5
    if act == "linear":  # rows are exact decodes, on the GPU too
        np.testing.assert_array_equal(gpu, cpu)


@GPU
def test_gpu_forward_in_a_network_and_bad_ids():
    net = pv.VolumetricNetwork(1, 1, 1, 2)
    net.set_layer(0, 0, 0, 0, pv.layers.Embedding(50, 32, activation="gelu", dtype="q4_0", seed=3))
    net.set_layer(0, 0, 0, 1, pv.layers.Dense(32, 5, activation="tanh", seed=4))
    x = ids((4, 3, 11), 50, seed=5)
    gpu = net.forward(x, device="gpu")
    assert gpu.shape == (4, 3, 11, 5)
    assert rel_err(gpu, net.forward(x)) <= 1e-5
    x[2, 1, 7] = 50.0
    with pytest.raises(pv.InputError, match=r"50 at sample 2, index \[1, 7\]"):
        net.layer(0, 0, 0, 0).forward(x, device="gpu")
