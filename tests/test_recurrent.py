"""RNN and LSTM layers: forward / backward against the float64 NumPy reference
(tests/reference/recurrent.py) for every dtype and schedule, finite-difference gradients of the
input and every parameter, schedule agreement, specs (builders, Loom build JSON, round trips),
errors, and a sequence task trained with net.train."""

import json

import numpy as np
import pytest

import polyvtd as pv
from reference import codecs as ref_codecs
from reference.dense import norm_rel_err, rel_err
from reference.recurrent import lstm_backward, lstm_forward, rnn_backward, rnn_forward
from reference.gradcheck import central_difference, float32_input_gradient

DTYPES = ref_codecs.DTYPES
MODES = ["normal", "tiled", "parallel"]
CELLS = ["rnn_tanh", "rnn_relu", "lstm"]


# ---- helpers --------------------------------------------------------------------------------------

def make(cell, input_size, hidden, steps, **kw):
    if cell == "lstm":
        return pv.layers.LSTM(input_size, hidden, steps, **kw)
    return pv.layers.RNN(input_size, hidden, steps, cell.split("_")[1], **kw)


def inputs(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def params_of(layer):
    """(W_ih, W_hh as the layer computes with them, b)."""
    w_ih, w_hh, b = layer.parameters
    return w_ih.dequantize(), w_hh.dequantize(), b.master


def reference_forward(cell, x, params):
    return lstm_forward(x, *params) if cell == "lstm" else rnn_forward(x, *params, cell.split("_")[1])


def reference_backward(cell, x, params, g):
    return lstm_backward(x, *params, g) if cell == "lstm" else rnn_backward(x, *params, g, cell.split("_")[1])


# ---- forward and backward against the reference ---------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", CELLS)
def test_forward_matches_numpy(cell, mode):
    layer = make(cell, 5, 7, 6, seed=1)
    x = inputs(3, 6, 5, seed=2)
    y = layer.forward(x, mode=mode)
    assert y.shape == (3, 6, 7) and y.dtype == np.float32
    assert rel_err(y, reference_forward(cell, x, params_of(layer))) <= 1e-5


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", CELLS)
def test_backward_matches_numpy(cell, mode):
    layer = make(cell, 4, 6, 5, seed=3)
    x, g = inputs(2, 5, 4, seed=4), inputs(2, 5, 6, seed=5)
    dx, grads = layer.backward(x, g, mode=mode)
    expected = reference_backward(cell, x, params_of(layer), g)
    assert dx.shape == x.shape and [gr.shape for gr in grads] == [tuple(p.shape) for p in layer.parameters]
    for got, want in zip([dx, *grads], expected):
        assert rel_err(got, want) <= 1e-5


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_computes_from_its_dequantised_weights(cell, dtype):
    layer = make(cell, 6, 8, 4, dtype=dtype, seed=7)
    assert layer.dtype == dtype and [p.dtype for p in layer.parameters] == [dtype, dtype, "float32"]
    x, g = inputs(3, 4, 6, seed=8), inputs(3, 4, 8, seed=9)
    params = params_of(layer)
    assert norm_rel_err(layer.forward(x), reference_forward(cell, x, params)) <= 1e-4
    dx, grads = layer.backward(x, g)
    for got, want in zip([dx, *grads], reference_backward(cell, x, params, g)):
        assert norm_rel_err(got, want) <= 1e-4


# ---- finite differences -----------------------------------------------------------------------------

@pytest.mark.parametrize("last_only", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_float64_finite_differences(cell, last_only):
    layer = make(cell, 3, 4, 4, seed=11, return_sequences=not last_only)
    x = inputs(2, 4, 3, seed=12)
    g = inputs(2, 4, seed=13) if last_only else inputs(2, 4, 4, seed=13)
    params = [p.astype(np.float64) for p in params_of(layer)]
    x64 = x.astype(np.float64)

    def loss():
        hs = reference_forward(cell, x64, params)
        return float(np.sum((hs[:, -1] if last_only else hs) * g))

    dx, grads = layer.backward(x, g, mode="normal")
    assert rel_err(dx, central_difference(loss, x64)) <= 1e-5
    for got, p in zip(grads, params):
        assert rel_err(got, central_difference(loss, p)) <= 1e-5


@pytest.mark.parametrize("mode", MODES)
def test_input_gradient_matches_finite_differences_through_the_layer(mode):
    """Numeric d(sum(forward(x)·g))/dx from the layer's own float32 forward."""
    layer = pv.layers.LSTM(3, 5, 3, seed=14)
    x, g = inputs(2, 3, 3, seed=15), inputs(2, 3, 5, seed=16).astype(np.float64)
    numeric = float32_input_gradient(layer, x, g, mode=mode)
    dx, _ = layer.backward(x, g.astype(np.float32), mode=mode)
    assert rel_err(dx, numeric) <= 1e-2


def test_set_master_weights_are_what_the_layer_uses():
    layer = pv.layers.RNN(2, 3, 2, seed=0)
    w_ih, w_hh, b = layer.parameters
    w_ih.set_master(np.arange(6, dtype=np.float32).reshape(3, 2) / 10)
    w_hh.set_master(np.eye(3, dtype=np.float32) / 2)
    b.set_master(np.array([0.1, -0.2, 0.3], dtype=np.float32))
    x = inputs(1, 2, 2, seed=1)
    expected = rnn_forward(x, w_ih.master, w_hh.master, b.master)
    assert rel_err(layer.forward(x), expected) <= 1e-6


# ---- schedules --------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell,dtype", [("lstm", "int4"), ("rnn_tanh", "float32"), ("rnn_relu", "fp8e4m3")])
def test_schedules_agree_and_tiled_equals_parallel_bitwise(cell, dtype):
    # Past the kernels' parallel threshold (2^21 multiply-adds per product), so steps split.
    hidden = 192 if cell == "lstm" else 512
    layer = make(cell, 32, hidden, 3, dtype=dtype, seed=17)
    x, g = inputs(16, 3, 32, seed=18), inputs(16, 3, hidden, seed=19)
    ys = {m: layer.forward(x, mode=m) for m in MODES}
    bs = {m: layer.backward(x, g, mode=m) for m in MODES}
    np.testing.assert_array_equal(ys["tiled"], ys["parallel"])
    for a, b in zip([bs["tiled"][0], *bs["tiled"][1]], [bs["parallel"][0], *bs["parallel"][1]]):
        np.testing.assert_array_equal(a, b)
    assert norm_rel_err(ys["tiled"], ys["normal"]) <= 1e-6
    for a, b in zip([bs["tiled"][0], *bs["tiled"][1]], [bs["normal"][0], *bs["normal"][1]]):
        assert norm_rel_err(a, b) <= 1e-6


# ---- shapes and the layer object -----------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_parameters_shapes_and_initialisation(cell):
    gates = 4 if cell == "lstm" else 1
    layer = make(cell, 5, 16, 3, seed=2)
    assert layer.type == ("LSTM" if cell == "lstm" else "RNN")
    assert [p.shape for p in layer.parameters] == [[gates * 16, 5], [gates * 16, 16], [gates * 16]]
    assert layer.weights.shape == [gates * 16, 5]
    # the reference's weight count: gates · (in·h + h·h + h)
    assert layer.num_params == gates * (5 * 16 + 16 * 16 + 16)
    assert layer.input_shape == [3, 5] and layer.output_shape([3, 5]) == [3, 16]
    for p in layer.parameters:  # PyTorch: U(±1/sqrt(hidden))
        assert 0.2 < np.abs(p.master).max() < 0.25
    assert layer.activation == {"rnn_tanh": "Tanh", "rnn_relu": "ReLU", "lstm": None}[cell]


def test_flat_samples_and_last_state_output():
    layer = pv.layers.LSTM(3, 4, 5, seed=3)
    x = inputs(2, 5, 3, seed=4)
    y = layer.forward(x)
    np.testing.assert_array_equal(layer.forward(x.reshape(2, 15)), y)
    np.testing.assert_array_equal(layer.forward(x[0].reshape(15)), y[:1])
    last = pv.layers.LSTM(3, 4, 5, seed=3, return_sequences=False)
    assert last.output_shape([5, 3]) == [4]
    np.testing.assert_array_equal(last.forward(x), y[:, -1])


def test_morphing_changes_both_matrices_and_keeps_the_bias():
    layer = pv.layers.RNN(4, 6, 3, seed=5)
    layer.weights.morph("int8")
    assert [p.dtype for p in layer.parameters] == ["int8", "float32", "float32"]
    net = pv.VolumetricNetwork(1, 1, 1, 1)
    net.set_layer(0, 0, 0, 0, layer)
    net.morph_all("int4")
    assert [p.dtype for p in layer.parameters] == ["int4", "int4", "float32"]
    x = inputs(2, 3, 4, seed=6)
    assert norm_rel_err(net.forward(x), rnn_forward(x, *params_of(layer))) <= 1e-5


# ---- specs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [
    pv.layers.RNN(3, 5, 4, "relu", dtype="int8", seed=1),
    pv.layers.RNN(3, 5, 4, return_sequences=False, seed=2),
    pv.layers.LSTM(2, 3, 6, dtype="fp4", seed=3),
], ids=["rnn_relu_int8", "rnn_last", "lstm_fp4"])
def test_spec_round_trip(layer):
    spec = json.loads(layer.spec_json())
    copy = pv.layers.from_spec(spec)
    assert json.loads(copy.spec_json()) == spec
    for src, dst in zip(layer.parameters, copy.parameters):
        dst.set_master(src.master)  # re-morphs to the spec's dtype
    x = inputs(2, *layer.input_shape, seed=4)
    np.testing.assert_array_equal(copy.forward(x), layer.forward(x))


def test_spec_fields():
    spec = json.loads(pv.layers.RNN(3, 5, 4, "relu", seed=1).spec_json())
    assert spec == {"type": "RNN", "activation": "ReLU", "input_height": 3, "output_height": 5, "seq_length": 4,
                    "dtype": "float32"}
    spec = json.loads(pv.layers.LSTM(3, 5, 4, return_sequences=False, dtype="int4").spec_json())
    assert spec == {"type": "LSTM", "input_height": 3, "output_height": 5, "seq_length": 4,
                    "return_sequences": False, "dtype": "int4"}


LOOM_SEQUENCE = {
    "depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 3,
    "layers": [
        {"z": 0, "y": 0, "x": 0, "l": 0, "type": "lstm", "input_height": 2, "output_height": 8, "seq_length": 5},
        {"z": 0, "y": 0, "x": 0, "l": 1, "type": "RNN", "activation": "sigmoid", "dtype": "int8",
         "input_height": 8, "output_height": 6, "seq_length": 5},
        {"z": 0, "y": 0, "x": 0, "l": 2, "type": "dense", "input_height": 6, "output_height": 1},
    ],
}


def test_loom_build_spec_loads_and_runs():
    net = pv.VolumetricNetwork.from_spec(LOOM_SEQUENCE, seed=3)
    lstm, rnn, dense = (net.layer(0, 0, 0, l) for l in range(3))
    assert (lstm.type, rnn.type, rnn.dtype) == ("LSTM", "RNN", "int8")
    assert rnn.activation == "Tanh"  # the reference ignores RNN activations other than tanh
    x = inputs(4, 5, 2, seed=5)
    y = net.forward(x)
    assert y.shape == (4, 5, 1)
    h = lstm_forward(x, *params_of(lstm))
    h = rnn_forward(h, *params_of(rnn))
    assert norm_rel_err(y, h @ dense.weights.dequantize().T.astype(np.float64)) <= 1e-5
    assert pv.VolumetricNetwork.from_spec(net.to_spec()).to_spec() == net.to_spec()


@pytest.mark.parametrize("seq_length", [0, -3, None])
def test_non_positive_or_missing_seq_length_means_one(seq_length):
    spec = {"type": "RNN", "input_height": 2, "output_height": 3}
    if seq_length is not None:
        spec["seq_length"] = seq_length
    layer = pv.layers.from_spec(spec)
    assert layer.input_shape == [1, 2]


# ---- errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,fragment", [
    ({"type": "RNN", "input_height": 0, "output_height": 3}, "input_height"),
    ({"type": "LSTM", "input_height": 2}, "output_height"),
    ({"type": "LSTM", "input_height": 2, "output_height": 3, "seq_length": "5"}, "seq_length"),
    ({"type": "RNN", "input_height": 2, "output_height": 3, "return_sequences": 1}, "return_sequences"),
    ({"type": "RNN", "input_height": 2, "output_height": 3, "activation": "softplus"}, "activation"),
])
def test_bad_specs_name_the_field(spec, fragment):
    with pytest.raises(pv.SpecError, match=fragment):
        pv.layers.from_spec(spec)


def test_bad_builder_arguments():
    with pytest.raises(pv.SpecError, match="nonlinearity"):
        pv.layers.RNN(2, 3, 4, "sigmoid")
    with pytest.raises(pv.SpecError, match="hidden_size"):
        pv.layers.LSTM(2, -1, 4)


def test_wrong_input_shapes_are_shape_errors():
    layer = pv.layers.LSTM(3, 4, 5)
    with pytest.raises(pv.ShapeError, match=r"\[seq_length 5, input 3\].*\[4, 3\]"):
        layer.forward(inputs(2, 4, 3))
    with pytest.raises(pv.ShapeError):
        layer.backward(inputs(2, 5, 3), inputs(2, 5, 3))  # gradient of the wrong width
    net = pv.VolumetricNetwork.from_spec(LOOM_SEQUENCE)
    with pytest.raises(pv.ShapeError, match=r"\(0,0,0,0\).*LSTM"):
        net.forward(inputs(2, 6, 2))


def test_width_mismatch_inside_a_network_names_the_coordinate():
    spec = json.loads(json.dumps(LOOM_SEQUENCE))
    spec["layers"][1]["input_height"] = 7
    with pytest.raises(pv.SpecError, match=r"\(0,0,0,1\) \(RNN\).*input 7.*\[5, 8\]"):
        pv.VolumetricNetwork.from_spec(spec)


# ---- training -------------------------------------------------------------------------------------

def delayed_copy_task(n=128, steps=6, seed=0):
    """Output at step t is the input at step t − 1 (0 at t = 0): needs memory."""
    x = np.random.default_rng(seed).uniform(-1, 1, (n, steps, 1)).astype(np.float32)
    y = np.concatenate([np.zeros((n, 1, 1), np.float32), x[:, :-1]], axis=1)
    return x, y


@pytest.mark.parametrize("cell", ["RNN", "LSTM"])
def test_training_learns_a_delayed_copy(cell):
    spec = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 2, "layers": [
        {"l": 0, "type": cell, "input_height": 1, "output_height": 12, "seq_length": 6},
        {"l": 1, "type": "dense", "input_height": 12, "output_height": 1, "bias": True}]}
    net = pv.VolumetricNetwork.from_spec(spec, seed=1)
    x, y = delayed_copy_task()
    result = net.train(x, y, epochs=40, lr=0.02, batch_size=16, optimizer="adam")
    assert result.stopped_early is None
    assert result.loss_history[-1] < 0.1 * result.loss_history[0]
    assert np.mean((net.forward(x) - y) ** 2) < 0.02


# ---- GPU --------------------------------------------------------------------------------------------

GPU = pytest.mark.skipif(not pv.gpu_available(), reason="no GPU adapter found by wgpu (install mesa-vulkan-drivers for lavapipe)")


@GPU
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_gpu_forward_matches_the_cpu_and_the_reference(cell, dtype):
    """device="gpu": the input projection and each step's recurrent product (shaders/dense.wgsl)
    and cell (shaders/recurrent.wgsl) in one pass, W_ih / W_hh decoded in the shader; batch 3,
    sizes that fill no tile or workgroup, every hidden state and the last one only."""
    i = DTYPES.index(dtype)
    for last_only in (False, True):
        layer = make(cell, 5, 7, 4, dtype=dtype, seed=i, return_sequences=not last_only)
        x = inputs(3, 4, 5, seed=i + 1)
        gpu, cpu = layer.forward(x, device="gpu"), layer.forward(x)
        assert gpu.shape == cpu.shape == ((3, 7) if last_only else (3, 4, 7))
        assert rel_err(gpu, cpu) <= 1e-5
        expected = reference_forward(cell, x, params_of(layer))
        assert rel_err(gpu, expected[:, -1] if last_only else expected) <= 1e-5


@GPU
@pytest.mark.parametrize("cell", CELLS)
def test_gpu_forward_across_tiles_and_workgroups(cell):
    """Gate widths, rows and hidden units past one 16 × 16 product tile and one 64-thread cell
    workgroup, and a flat sample shape."""
    layer = make(cell, 19, 37, 6, dtype="int8", seed=20)
    x = inputs(5, 6, 19, seed=21)
    gpu = layer.forward(x.reshape(5, 114), device="gpu")
    assert gpu.shape == (5, 6, 37)
    assert rel_err(gpu, layer.forward(x)) <= 1e-5
    assert rel_err(gpu, reference_forward(cell, x, params_of(layer))) <= 1e-5


@GPU
def test_gpu_forward_in_a_network():
    net = pv.VolumetricNetwork.from_spec(LOOM_SEQUENCE, seed=3)
    x = inputs(4, 5, 2, seed=22)
    gpu, cpu = net.forward(x, device="gpu"), net.forward(x)
    assert gpu.shape == (4, 5, 1)
    assert rel_err(gpu, cpu) <= 1e-5
