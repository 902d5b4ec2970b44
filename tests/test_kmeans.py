"""KMeans: soft assignments and expected centroids against the float64 NumPy reference
(tests/reference/kmeans.py) for every dtype (integer dtypes included), both output modes,
schedule agreement, finite differences, specs, errors and a small clustering run."""

import json

import numpy as np
import pytest

import polyvtd as pv
from reference import codecs as ref_codecs
from reference.dense import JSON_NAMES, norm_rel_err, rel_err
from reference.gradcheck import central_difference
from reference.kmeans import kmeans_backward, kmeans_forward

DTYPES = ref_codecs.DTYPES
MODES = ["normal", "tiled", "parallel"]
OUTPUTS = ["probabilities", "features"]
_BY_JSON_NAME = {v: k for k, v in JSON_NAMES.items()}


def inputs(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def settings(layer):
    spec = json.loads(layer.spec_json())
    return dict(tau=spec["kmeans_temperature"], mode=spec["output_mode"], act=_BY_JSON_NAME[spec["activation"]])


def check(layer, x, g, mode="parallel", tol=1e-5, err=rel_err):
    c = layer.weights.dequantize()
    s = settings(layer)
    y = layer.forward(x, mode=mode)
    expected = kmeans_forward(x, c, **s).reshape(y.shape)
    assert err(y, expected) <= tol
    dx, (dc,) = layer.backward(x, g, mode=mode)
    edx, edc = kmeans_backward(x, c, g, **s)
    assert dx.shape == x.shape and dc.shape == c.shape
    assert err(dx, edx.reshape(x.shape)) <= tol
    assert err(dc, edc) <= tol
    return y


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("activation", ["linear", "sigmoid"])
def test_forward_and_backward_match_numpy(activation, output, mode):
    layer = pv.layers.KMeans(5, 4, temperature=1.5, output_mode=output, activation=activation, seed=1)
    x = inputs((6, 5), seed=2)
    y = check(layer, x, inputs((6, 4 if output == "probabilities" else 5), seed=3), mode)
    assert y.shape == ((6, 4) if output == "probabilities" else (6, 5))
    if activation == "linear" and output == "probabilities":
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_computes_from_its_dequantised_centroids(dtype):
    i = DTYPES.index(dtype)
    output = OUTPUTS[i % 2]
    layer = pv.layers.KMeans(6, 5, temperature=2.0, output_mode=output, dtype=dtype, seed=i)
    assert layer.dtype == dtype
    x = inputs((4, 6), seed=i, scale=1.5)
    y = check(layer, x, inputs((4, 5 if output == "probabilities" else 6), seed=i + 1), tol=1e-4, err=norm_rel_err)
    if output == "probabilities":
        # The reference's integer dtypes give uniform assignments (quirk 20); here they do not.
        assert np.ptp(y, axis=1).max() > 0.05


def test_samples_are_vectors_of_the_layers_size_not_the_whole_batch():
    layer = pv.layers.KMeans(4, 3, seed=2)
    x = inputs((5, 2, 2), seed=3)  # samples of shape [2, 2] hold 4 features
    y = layer.forward(x)
    assert y.shape == (5, 3)
    np.testing.assert_allclose(y, kmeans_forward(x, layer.weights.master), rtol=1e-5)
    features = pv.layers.KMeans(4, 3, output_mode="features", seed=2)
    assert features.forward(x).shape == (5, 2, 2)


@pytest.mark.parametrize("output", OUTPUTS)
def test_schedules_agree_and_tiled_equals_parallel_bitwise(output):
    layer = pv.layers.KMeans(64, 96, temperature=4.0, output_mode=output, dtype="int8", seed=4)
    x = inputs((300, 64), seed=5)
    g = inputs((300, 96 if output == "probabilities" else 64), seed=6)
    ys = {m: layer.forward(x, mode=m) for m in MODES}
    bs = {m: layer.backward(x, g, mode=m) for m in MODES}
    for m in ("tiled", "parallel"):
        assert norm_rel_err(ys[m], ys["normal"]) <= 1e-6
        assert norm_rel_err(bs[m][0], bs["normal"][0]) <= 1e-6
        assert norm_rel_err(bs[m][1][0], bs["normal"][1][0]) <= 1e-6
    np.testing.assert_array_equal(ys["tiled"], ys["parallel"])
    np.testing.assert_array_equal(bs["tiled"][0], bs["parallel"][0])
    np.testing.assert_array_equal(bs["tiled"][1][0], bs["parallel"][1][0])


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("activation", ["linear", "tanh"])
def test_gradients_match_float64_finite_differences(output, activation):
    layer = pv.layers.KMeans(3, 4, temperature=0.8, output_mode=output, activation=activation, seed=7)
    x = inputs((3, 3), seed=8)
    g = inputs((3, 4 if output == "probabilities" else 3), seed=9)
    x64, c64 = x.astype(np.float64), layer.weights.master.astype(np.float64)
    s = dict(tau=0.8, mode=output, act=activation)
    loss = lambda: float(np.sum(kmeans_forward(x64, c64, **s) * g))  # noqa: E731
    dx, (dc,) = layer.backward(x, g, mode="normal")
    assert rel_err(dx, central_difference(loss, x64)) <= 1e-5
    assert rel_err(dc, central_difference(loss, c64)) <= 1e-5


def test_layer_properties_and_spec_round_trip():
    layer = pv.layers.KMeans(6, 3, temperature=0.5, output_mode="features", activation="relu",
                             dtype="int4", seed=3)
    assert layer.type == "KMeans" and layer.input_shape == [6] and layer.weights.shape == [3, 6]
    spec = json.loads(layer.spec_json())
    assert spec == {"type": "KMeans", "activation": "ReLU", "input_height": 6, "num_clusters": 3,
                    "kmeans_temperature": 0.5, "output_mode": "features", "dtype": "int4"}
    again = pv.layers.from_spec(spec, seed=3)  # the seed the weights came from
    assert json.loads(again.spec_json()) == spec
    x = inputs((4, 6))
    np.testing.assert_array_equal(again.forward(x), layer.forward(x))
    default = json.loads(pv.layers.KMeans(2, 2, temperature=0).spec_json())
    assert default["kmeans_temperature"] == 1.0 and default["output_mode"] == "probabilities"


def test_loom_build_spec_loads_and_runs():
    spec = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 2, "layers": [
        {"z": 0, "y": 0, "x": 0, "l": 0, "type": "kmeans", "input_height": 2, "num_clusters": 3,
         "output_mode": "features"},
        {"z": 0, "y": 0, "x": 0, "l": 1, "type": "KMEANS", "dtype": "uint8", "input_height": 2,
         "num_clusters": 4}]}
    net = pv.VolumetricNetwork.from_spec(spec)
    y = net.forward(inputs((5, 2)))
    assert y.shape == (5, 4)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


def test_bad_specs_and_inputs():
    with pytest.raises(pv.SpecError, match="output_mode.*centroids"):
        pv.layers.KMeans(2, 2, output_mode="centroids")
    with pytest.raises(pv.SpecError, match="kmeans_temperature"):
        pv.layers.KMeans(2, 2, temperature=-1.0)
    with pytest.raises(pv.SpecError, match="num_clusters"):
        pv.layers.from_spec({"type": "KMeans", "input_height": 3})
    with pytest.raises(pv.ShapeError, match=r"3 features.*\[4\]"):
        pv.layers.KMeans(3, 2).forward(inputs((2, 4)))
    spec = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 2, "layers": [
        {"l": 0, "type": "dense", "input_height": 3, "output_height": 5},
        {"l": 1, "type": "kmeans", "input_height": 4, "num_clusters": 2}]}
    with pytest.raises(pv.SpecError, match=r"\(0,0,0,1\).*KMeans"):
        pv.VolumetricNetwork.from_spec(spec)


def test_clustering_moves_centroids_onto_the_blobs():
    rng = np.random.default_rng(0)
    centers = np.array([[3.0, 0.0], [-3.0, 2.0], [0.0, -3.0]])
    x = (centers[rng.integers(0, 3, 300)] + rng.normal(0, 0.3, (300, 2))).astype(np.float32)
    net = pv.VolumetricNetwork(1, 1, 1, 1)
    net.set_layer(0, 0, 0, 0, pv.layers.KMeans(2, 3, temperature=0.5, output_mode="features", seed=1))
    # reconstruct the input from the expected centroid: minimising it pulls centroids onto blobs
    result = net.train(x, x, epochs=30, lr=0.1, batch_size=30, optimizer="adam")
    assert result.loss_history[-1] < 0.2 * result.loss_history[0]
    c = net.layer(0, 0, 0, 0).weights.master
    nearest = np.linalg.norm(centers[:, None, :] - c[None, :, :], axis=-1).min(axis=1)
    assert nearest.max() < 0.5


# ---- GPU --------------------------------------------------------------------------------------------

GPU = pytest.mark.skipif(not pv.gpu_available(), reason="no GPU adapter found by wgpu (install mesa-vulkan-drivers for lavapipe)")


@GPU
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_forward_matches_the_cpu_and_the_reference(dtype, output):
    """device="gpu": one workgroup per sample (shaders/kmeans.wgsl), the centroids decoded in
    the shader; batch 4, 6 features and 5 clusters (a fraction of one workgroup)."""
    i = DTYPES.index(dtype)
    act = ["linear", "sigmoid", "tanh"][i % 3]
    layer = pv.layers.KMeans(6, 5, temperature=2.0, output_mode=output, activation=act, dtype=dtype, seed=i)
    x = inputs((4, 6), seed=i, scale=1.5)
    gpu, cpu = layer.forward(x, device="gpu"), layer.forward(x)
    assert gpu.shape == cpu.shape == ((4, 5) if output == "probabilities" else (4, 6))
    assert rel_err(gpu, cpu) <= 1e-5
    expected = kmeans_forward(x, layer.weights.dequantize(), **settings(layer))
    assert rel_err(gpu, expected) <= 1e-5


@GPU
@pytest.mark.parametrize("output", OUTPUTS)
def test_gpu_forward_past_one_workgroup_and_in_a_network(output):
    """More clusters and features than threads in a workgroup (each thread takes several), sample
    shape [3, 100]; then the layer inside a grid after a Dense layer."""
    layer = pv.layers.KMeans(300, 270, temperature=6.0, output_mode=output, dtype="fp8e4m3", seed=10)
    x = inputs((3, 3, 100), seed=11)
    gpu = layer.forward(x, device="gpu")
    assert gpu.shape == ((3, 270) if output == "probabilities" else (3, 3, 100))
    assert rel_err(gpu, layer.forward(x)) <= 1e-5
    expected = kmeans_forward(x, layer.weights.dequantize(), **settings(layer)).reshape(gpu.shape)
    assert rel_err(gpu, expected) <= 1e-5
    net = pv.VolumetricNetwork(1, 1, 2, 1)
    net.set_layer(0, 0, 0, 0, pv.layers.Dense(7, 9, activation="tanh", seed=12))
    net.set_layer(0, 0, 1, 0, pv.layers.KMeans(9, 4, temperature=0.7, output_mode=output, dtype="int4", seed=13))
    x = inputs((5, 7), seed=14)
    assert rel_err(net.forward(x, device="gpu"), net.forward(x)) <= 1e-5
