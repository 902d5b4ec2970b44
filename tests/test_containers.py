"""Containers and routing: Sequential, Parallel (add/avg/concat/grid_scatter/filter), Residual in
the grid and in containers, remote links at the top level and inside containers, disabled layers,
nesting, end-to-end training — each against the NumPy references in tests/reference/."""

import json

import numpy as np
import pytest

import polyvtd as pv
from reference.containers import dense, parallel, sequential
from reference.gradcheck import central_difference
from reference.dense import norm_rel_err
from reference.norm import layernorm_forward, rmsnorm_forward

RNG = np.random.default_rng(7)


def data(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def w64(layer):
    return layer.weights.master.astype(np.float64)


def grid(*layers, lpc=None):
    """A 1×1×1×L grid holding `layers` in order."""
    net = pv.VolumetricNetwork(1, 1, 1, lpc or len(layers))
    for l, layer in enumerate(layers):
        net.set_layer(0, 0, 0, l, layer)
    return net


def check_gradients(net, x, reference, tol=1e-4):
    """Our network backward vs central differences of the float64 `reference(x, weights)`,
    for the input and every parameter, on a random upstream gradient."""
    out = net.forward(x)
    g = RNG.standard_normal(out.shape)
    gx, gparams = net.backward(x, g.astype(np.float32))
    weights = [p.master.astype(np.float64) for p in net.parameters]
    x64 = x.astype(np.float64)
    loss = lambda: float(np.sum(reference(x64, weights) * g))
    assert norm_rel_err(gx, central_difference(loss, x64)) < tol
    for i, w in enumerate(weights):
        assert norm_rel_err(gparams[i], central_difference(loss, w)) < tol, f"parameter {i}"


# ---- Residual ------------------------------------------------------------------------------

def test_residual_in_the_grid_adds_the_previous_layers_input():
    d = pv.layers.Dense(5, 5, "tanh", seed=1)
    net = grid(d, pv.layers.Residual())
    x = data(4, 5)
    expected = sequential(x, [dense(w64(d), "tanh"), "residual"])
    assert norm_rel_err(net.forward(x), expected) < 1e-6
    check_gradients(net, x, lambda x, w: sequential(x, [dense(w[0], "tanh"), "residual"]))


def test_residual_first_is_identity():
    net = grid(pv.layers.Residual(), pv.layers.Dense(3, 2, seed=2))
    x = data(2, 3)
    assert norm_rel_err(net.forward(x), x.astype(np.float64) @ w64(net.layer(0, 0, 0, 1)).T) < 1e-6


def test_residual_with_mismatched_skip_names_coordinate():
    net = grid(pv.layers.Dense(4, 3), pv.layers.Residual())
    with pytest.raises(pv.ShapeError, match=r"\(0,0,0,1\).*skip"):
        net.forward(data(2, 4))


# ---- remote links in the grid --------------------------------------------------------------

def test_top_level_remote_link_reads_the_target_output():
    a, b, c = pv.layers.Dense(4, 6, "relu", seed=1), pv.layers.Dense(6, 3, seed=2), pv.layers.Dense(6, 2, seed=3)
    net = grid(a, b, c)
    net.set_link(0, 0, 0, 2, (0, 0, 0, 0))  # c reads a's output, skipping b
    x = data(3, 4)
    ref = lambda x, w: dense(w[2])(dense(w[0], "relu")(x))
    assert norm_rel_err(net.forward(x), ref(x.astype(np.float64), [w64(a), w64(b), w64(c)])) < 1e-6
    gx, grads = net.backward(x, np.ones((3, 2), np.float32))
    assert np.all(grads[1] == 0)  # b's output is read by nobody
    check_gradients(net, x, ref)


def test_residual_with_a_remote_link_skips_from_the_target():
    a, b, c = (pv.layers.Dense(4, 4, "tanh", seed=s) for s in (1, 2, 3))
    net = grid(a, b, c, pv.layers.Residual())
    net.set_link(0, 0, 0, 3, (0, 0, 0, 0))  # out = c(b(a(x))) + a(x)
    ref = lambda x, w: (lambda h: dense(w[2], "tanh")(dense(w[1], "tanh")(h)) + h)(dense(w[0], "tanh")(x))
    x = data(2, 4)
    assert norm_rel_err(net.forward(x), ref(x.astype(np.float64), [w64(a), w64(b), w64(c)])) < 1e-6
    check_gradients(net, x, ref)


def test_remote_link_in_the_build_json_round_trips():
    spec = {"depth": 1, "rows": 1, "cols": 2, "layers_per_cell": 2, "layers": [
        {"x": 0, "l": 0, "type": "dense", "input_height": 4, "output_height": 4, "activation": "tanh"},
        {"x": 0, "l": 1, "type": "dense", "input_height": 4, "output_height": 4},
        {"x": 1, "l": 0, "type": "residual", "is_remote_link": True, "target_z": 0, "target_y": 0,
         "target_x": 0, "target_l": 0}]}
    net = pv.VolumetricNetwork.from_spec(spec, seed=4)
    assert net.link(0, 0, 1, 0) == (0, 0, 0, 0)
    again = pv.VolumetricNetwork.from_spec(net.to_spec(), seed=4)
    assert again.to_spec() == net.to_spec()
    x = data(3, 4)
    np.testing.assert_array_equal(again.forward(x), net.forward(x))


def test_a_forward_link_is_a_feedback_loop_the_one_pass_forward_refuses():
    net = grid(pv.layers.Dense(4, 4), pv.layers.Dense(4, 4))
    net.set_link(0, 0, 0, 0, (0, 0, 0, 1))  # allowed: the systolic mesh runs it (test_systolic.py)
    with pytest.raises(pv.SpecError, match=r"\(0,0,0,0\).*\(0,0,0,1\).*traversal order.*Systolic"):
        net.forward(data(2, 4))
    with pytest.raises(pv.SpecError, match="outside"):
        net.set_link(0, 0, 0, 0, (0, 0, 0, 2))


def test_disabled_layers_are_skipped_and_links_to_them_read_through():
    a, b, c = pv.layers.Dense(4, 4, seed=1), pv.layers.Dense(4, 4, seed=2), pv.layers.Dense(4, 3, seed=3)
    net = grid(a, b, c)
    net.set_disabled(0, 0, 0, 1)
    x = data(2, 4)
    assert norm_rel_err(net.forward(x), dense(w64(c))(dense(w64(a))(x))) < 1e-6


# ---- Sequential -----------------------------------------------------------------------------

def test_sequential_residual_block_matches_reference_and_gradients():
    d1, d2 = pv.layers.Dense(4, 8, "gelu", seed=1), pv.layers.Dense(8, 8, seed=2)
    block = pv.layers.Sequential(d1, d2, pv.layers.Residual())  # d2(h) + h with h = d1(x)
    ref = lambda x, w: sequential(x, [dense(w[0], "gelu"), dense(w[1]), "residual"])
    x = data(3, 4)
    net = grid(block)
    assert norm_rel_err(net.forward(x), ref(x.astype(np.float64), [w64(d1), w64(d2)])) < 1e-6
    check_gradients(net, x, ref)


def test_sequential_disabled_stage_is_skipped():
    spec = {"type": "sequential", "sequential_layers": [
        {"type": "dense", "input_height": 3, "output_height": 3, "activation": "tanh"},
        {"type": "dense", "input_height": 3, "output_height": 3, "is_disabled": True},
        {"type": "residual"}]}
    layer = pv.layers.from_spec(spec, seed=3)
    x = data(2, 3)
    first = pv.layers.from_spec(spec["sequential_layers"][0], seed=0)
    w = json.loads(layer.spec_json())
    assert w["sequential_layers"][1]["is_disabled"] is True
    d = layer.parameters[0].master.astype(np.float64)
    assert norm_rel_err(layer.forward(x), sequential(x, [dense(d, "tanh"), "residual"])) < 1e-6
    assert first.type == "Dense"


# ---- Parallel -------------------------------------------------------------------------------

@pytest.mark.parametrize("combine", ["add", "avg", "concat", "grid_scatter"])
def test_parallel_combines_match_reference(combine):
    b1, b2 = pv.layers.Dense(5, 3, "relu", seed=1), pv.layers.Dense(5, 3, "tanh", seed=2)
    layer = pv.layers.Parallel(b1, b2, combine=combine)
    x = data(4, 5)
    ref = lambda x, w: parallel(x, [dense(w[0], "relu"), dense(w[1], "tanh")], combine)
    y = layer.forward(x)
    expected = ref(x.astype(np.float64), [w64(b1), w64(b2)])
    assert y.shape == expected.shape and norm_rel_err(y, expected) < 1e-6
    check_gradients(grid(layer), x, ref)


def test_parallel_concat_of_different_widths_is_per_sample():
    b1, b2 = pv.layers.Dense(3, 2, seed=1), pv.layers.Dense(3, 5, seed=2)
    y = pv.layers.Parallel(b1, b2).forward(data(4, 3))
    assert y.shape == (4, 7)


def test_parallel_filter_gate_weights_branches_per_sample_and_trains():
    experts = [pv.layers.Dense(4, 3, "tanh", seed=s) for s in (1, 2, 3)]
    gate = pv.layers.Dense(4, 3, seed=9)
    layer = pv.layers.Parallel(*experts, combine="filter", gate=gate)
    x = data(5, 4)
    ref = lambda x, w: parallel(x, [dense(w[i], "tanh") for i in range(3)], "filter", gate=dense(w[3]))
    weights = [w64(e) for e in experts] + [w64(gate)]
    assert norm_rel_err(layer.forward(x), ref(x.astype(np.float64), weights)) < 1e-6
    check_gradients(grid(layer), x, ref)


def test_filter_gate_per_token_is_a_token_level_mixture_of_experts():
    experts = [pv.layers.Dense(4, 4, "gelu", seed=s) for s in (1, 2)]
    gate = pv.layers.Dense(4, 2, seed=3)
    layer = pv.layers.Parallel(*experts, combine="filter", gate=gate)
    x = data(2, 5, 4)  # [batch, tokens, d]: the gate gives one row of logits per token

    def ref(x, w):
        logits = dense(w[2])(x)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        return sum(p[..., i:i + 1] * dense(w[i], "gelu")(x) for i in range(2))

    weights = [w64(e) for e in experts] + [w64(gate)]
    assert norm_rel_err(layer.forward(x), ref(x.astype(np.float64), weights)) < 1e-6
    check_gradients(grid(layer), x, ref)


def test_mismatched_branch_widths_for_add_name_coordinate_and_branches():
    spec = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 1, "layers": [
        {"type": "parallel", "combine_mode": "add", "parallel_branches": [
            {"type": "dense", "input_height": 4, "output_height": 3},
            {"type": "dense", "input_height": 4, "output_height": 5}]}]}
    with pytest.raises(pv.SpecError, match=r"\(0,0,0,0\).*branch 0: \[3\].*branch 1: \[5\]"):
        pv.VolumetricNetwork.from_spec(spec)


@pytest.mark.parametrize("bad,field", [({"combine_mode": "mix"}, "combine_mode"), ({"combine_mode": "filter"}, "gate"),
                                       ({"parallel_branches": []}, "parallel_branches")])
def test_bad_parallel_specs(bad, field):
    spec = {"type": "parallel", "combine_mode": "add",
            "parallel_branches": [{"type": "dense", "input_height": 2, "output_height": 2}], **bad}
    with pytest.raises(pv.SpecError, match=field):
        pv.layers.from_spec(spec)


def test_filter_gate_of_the_wrong_width():
    with pytest.raises(pv.ShapeError, match="one logit per branch"):
        pv.layers.Parallel(pv.layers.Dense(4, 2), pv.layers.Dense(4, 2), combine="filter",
                           gate=pv.layers.Dense(4, 3)).forward(data(2, 4))


# ---- remote links inside containers ----------------------------------------------------------

def test_branch_remote_link_shares_and_trains_the_target():
    shared = pv.layers.Dense(4, 4, "tanh", seed=1)
    own = pv.layers.Dense(4, 4, seed=2)
    net = grid(shared, pv.layers.Parallel((0, 0, 0, 0), own, combine="add"))
    x = data(3, 4)
    ref = lambda x, w: (lambda h: dense(w[0], "tanh")(h) + dense(w[1])(h))(dense(w[0], "tanh")(x))
    assert norm_rel_err(net.forward(x), ref(x.astype(np.float64), [w64(shared), w64(own)])) < 1e-6
    assert len(net.parameters) == 2  # the link adds no tensor of its own
    check_gradients(net, x, ref)
    before = shared.weights.master.copy()
    net.train(x, data(3, 4), epochs=2, lr=0.05, optimizer="sgd")
    assert not np.array_equal(before, shared.weights.master)


def test_remote_link_cycle_is_an_error_not_a_hang():
    net = grid(pv.layers.Sequential((0, 0, 0, 0)))
    with pytest.raises(pv.SpecError, match="cycle"):
        net.forward(data(1, 3))


def test_link_outside_a_network_is_explained():
    with pytest.raises(pv.SpecError, match="needs a network"):
        pv.layers.Sequential((0, 0, 0, 1)).forward(data(1, 2))


# ---- nesting and training -------------------------------------------------------------------

def nested_net():
    experts = [pv.layers.Sequential(pv.layers.Dense(6, 6, "tanh", seed=s), pv.layers.Residual()) for s in (1, 2)]
    moe = pv.layers.Parallel(*experts, combine="filter", gate=pv.layers.Dense(6, 2, seed=3))
    inner = pv.layers.Parallel(moe, pv.layers.Dense(6, 6, seed=4), combine="avg")
    return grid(pv.layers.Dense(2, 6, "tanh", seed=5), pv.layers.Sequential(inner, pv.layers.Residual()),
                pv.layers.Dense(6, 1, seed=6))


def test_nested_containers_gradients():
    net = nested_net()
    p = [q.master.astype(np.float64) for q in net.parameters]

    def ref(x, w):
        h = dense(w[0], "tanh")(x)
        experts = [lambda v, i=i: sequential(v, [dense(w[1 + i], "tanh"), "residual"]) for i in range(2)]
        moe = lambda v: parallel(v, experts, "filter", gate=dense(w[3]))
        inner = parallel(h, [moe, dense(w[4])], "avg")
        return dense(w[5])(inner + h)

    x = data(3, 2)
    assert norm_rel_err(net.forward(x), ref(x.astype(np.float64), p)) < 1e-6
    check_gradients(net, x, ref, tol=2e-4)


def test_nested_network_trains_end_to_end():
    net = nested_net()
    x = RNG.uniform(-1, 1, (128, 2)).astype(np.float32)
    y = (np.sin(2 * x[:, :1]) * x[:, 1:]).astype(np.float32)
    result = net.train(x, y, epochs=40, lr=0.01, batch_size=16, optimizer="adam")
    assert result.loss_history[-1] < 0.3 * result.loss_history[0]


@pytest.mark.parametrize("mode", ["normal", "tiled"])
def test_schedules_agree_through_containers(mode):
    net = nested_net()
    x = data(5, 2)
    assert norm_rel_err(net.forward(x, mode=mode), net.forward(x, mode="parallel")) < 1e-6


def test_container_spec_round_trip_and_copy():
    net = nested_net()
    spec = net.to_spec()
    kinds = [e["type"] for e in spec["layers"]]
    assert kinds == ["Dense", "Sequential", "Dense"]
    inner = spec["layers"][1]["sequential_layers"][0]
    assert inner["combine_mode"] == "avg" and inner["parallel_branches"][0]["gate"]["type"] == "Dense"
    rebuilt = pv.VolumetricNetwork.from_spec(spec)
    assert rebuilt.to_spec() == spec
    clone = net.copy()
    x = data(2, 2)
    np.testing.assert_array_equal(clone.forward(x), net.forward(x))
    clone.parameters[1].set_master(np.zeros((6, 6), np.float32))
    assert not np.array_equal(clone.forward(x), net.forward(x))


def test_loom_build_spec_with_containers_loads_and_runs():
    spec = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 2, "layers": [
        {"z": 0, "y": 0, "x": 0, "l": 0, "type": "parallel", "combine_mode": "concat", "parallel_branches": [
            {"type": "dense", "activation": "relu", "input_height": 4, "output_height": 3},
            {"type": "sequential", "sequential_layers": [
                {"type": "dense", "input_height": 4, "output_height": 4},
                {"type": "residual"}]}]},
        {"z": 0, "y": 0, "x": 0, "l": 1, "type": "dense", "input_height": 7, "output_height": 2}]}
    net = pv.VolumetricNetwork.from_spec(spec, seed=1)
    assert net.forward(data(3, 4)).shape == (3, 2)


# ---- device="gpu" through containers ----------------------------------------------------------
# Containers, Residual and links only route: every Dense and norm inside runs its GPU kernel
# (packed weights decoded in the shader), the combines run between them. Odd widths, batch > 1.

needs_gpu = pytest.mark.skipif(
    not pv.gpu_available(), reason="no GPU adapter found by wgpu (install mesa-vulkan-drivers for lavapipe)"
)


def wq(layer):
    """The weights a layer computes with (its dtype's values), float64."""
    return layer.weights.dequantize().astype(np.float64)


def bq(layer):
    return layer.bias.master.astype(np.float64)


def rms(layer):
    return lambda h: rmsnorm_forward(h, wq(layer), 1e-6)


def ln(layer):
    gain, shift = (p.dequantize().astype(np.float64) for p in layer.parameters)
    return lambda h: layernorm_forward(h, gain, shift, 1e-5)


def check_gpu(model, x, expected):
    """`model` (a layer or a network) with device="gpu" against its CPU forward and the float64
    reference output `expected`."""
    gpu, cpu = model.forward(x, device="gpu"), model.forward(x)
    assert gpu.dtype == np.float32 and gpu.shape == cpu.shape == expected.shape
    assert norm_rel_err(gpu, cpu) <= 1e-5
    assert norm_rel_err(gpu, expected) <= 1e-5
    return gpu


@needs_gpu
def test_sequential_on_the_gpu():
    d1 = pv.layers.Dense(13, 24, "gelu", bias=True, dtype="int8", seed=1)
    norm = pv.layers.RMSNorm(24, dtype="fp8e4m3")
    d2 = pv.layers.Dense(24, 24, "tanh", dtype="int4", seed=2)
    block = pv.layers.Sequential(d1, norm, d2, pv.layers.Residual())  # d2(n) + n, n = norm(d1(x))
    x = data(5, 13)
    expected = sequential(x, [dense(wq(d1), "gelu", bq(d1)), rms(norm), dense(wq(d2), "tanh"), "residual"])
    check_gpu(block, x, expected)
    check_gpu(grid(block), x, expected)


@needs_gpu
@pytest.mark.parametrize("combine", ["add", "avg", "concat", "grid_scatter", "filter"])
def test_parallel_combines_on_the_gpu(combine):
    b1 = pv.layers.Dense(11, 6, "relu", bias=True, dtype="uint4", seed=1)
    d2, norm = pv.layers.Dense(11, 6, seed=2, dtype="bfloat16"), pv.layers.LayerNorm(6, dtype="int8")
    gate = pv.layers.Dense(11, 2, seed=3, dtype="fp4") if combine == "filter" else None
    layer = pv.layers.Parallel(b1, pv.layers.Sequential(d2, norm), combine=combine, gate=gate)
    x = data(7, 11)
    branches = [dense(wq(b1), "relu", bq(b1)), lambda v: ln(norm)(dense(wq(d2))(v))]
    expected = parallel(x, branches, combine, gate=None if gate is None else dense(wq(gate)))
    check_gpu(layer, x, expected)


@needs_gpu
def test_filter_gate_per_token_on_the_gpu():
    experts = [pv.layers.Dense(5, 5, "silu", dtype=d, seed=s) for s, d in ((1, "int16"), (2, "ternary"))]
    gate = pv.layers.Dense(5, 2, seed=3)
    layer = pv.layers.Parallel(*experts, combine="filter", gate=gate)
    x = data(3, 4, 5)  # [batch, tokens, d]: one gate row per token
    logits = dense(wq(gate))(x)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    expected = sum(p[..., i:i + 1] * dense(wq(e), "silu")(x) for i, e in enumerate(experts))
    check_gpu(layer, x, expected)


@needs_gpu
def test_residual_and_remote_links_on_the_gpu():
    a = pv.layers.Dense(9, 9, "tanh", bias=True, dtype="fp8e5m2", seed=1)
    b = pv.layers.Dense(9, 9, "relu", seed=2)
    c = pv.layers.RMSNorm(9, dtype="uint8")
    net = grid(a, b, c, pv.layers.Residual(), pv.layers.Dense(9, 3, dtype="binary", seed=4))
    net.set_link(0, 0, 0, 3, (0, 0, 0, 0))  # out = d(c(b(a(x))) + a(x))
    x = data(6, 9)
    h = dense(wq(a), "tanh", bq(a))(x)
    expected = dense(wq(net.layer(0, 0, 0, 4)))(rms(c)(dense(wq(b), "relu")(h)) + h)
    check_gpu(net, x, expected)
    net.set_link(0, 0, 0, 2, (0, 0, 0, 0))  # c reads a's output: b's is unused
    expected = dense(wq(net.layer(0, 0, 0, 4)))(rms(c)(h) + h)
    check_gpu(net, x, expected)


@needs_gpu
def test_remote_links_inside_containers_on_the_gpu():
    shared = pv.layers.Dense(8, 8, "tanh", dtype="int2", seed=1)
    norm = pv.layers.LayerNorm(8, dtype="float16")
    own = pv.layers.Dense(8, 8, seed=2)
    block = pv.layers.Parallel((0, 0, 0, 0), pv.layers.Sequential(own, (0, 0, 0, 1)), combine="add")
    net = grid(shared, norm, block)
    x = data(4, 8)
    h = ln(norm)(dense(wq(shared), "tanh")(x))
    expected = dense(wq(shared), "tanh")(h) + ln(norm)(dense(wq(own))(h))
    check_gpu(net, x, expected)


@needs_gpu
def test_containers_across_a_grid_on_the_gpu():
    """A 2×1×2 grid (cells run z, y, x in order), two layers per cell, disabled and empty slots."""
    net = pv.VolumetricNetwork(2, 1, 2, 2)
    d0 = pv.layers.Dense(10, 12, "relu", bias=True, dtype="int4", seed=1)
    net.set_layer(0, 0, 0, 0, d0)
    net.set_layer(0, 0, 0, 1, pv.layers.Dense(12, 12, seed=9))
    net.set_disabled(0, 0, 0, 1)
    norm = pv.layers.RMSNorm(12, dtype="int32")
    net.set_layer(0, 0, 1, 0, norm)
    experts = [pv.layers.Dense(12, 12, "gelu", dtype="uint2", seed=s) for s in (2, 3)]
    gate = pv.layers.Dense(12, 2, seed=4)
    moe = pv.layers.Parallel(*experts, combine="filter", gate=gate)
    net.set_layer(1, 0, 0, 0, pv.layers.Sequential(moe, pv.layers.Residual()))
    d1 = pv.layers.Dense(12, 5, "sigmoid", dtype="float64", seed=5)
    net.set_layer(1, 0, 1, 1, d1)
    x = data(3, 10)
    h = rms(norm)(dense(wq(d0), "relu", bq(d0))(x))
    h = parallel(h, [dense(wq(e), "gelu") for e in experts], "filter", gate=dense(wq(gate))) + h
    check_gpu(net, x, dense(wq(d1), "sigmoid")(h))
