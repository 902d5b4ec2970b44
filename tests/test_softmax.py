"""Softmax layer, all ten variants: forward and backward against the float64 NumPy reference
(tests/reference/softmax.py), finite-difference gradients, per-row normalisation, Gumbel noise,
schedule agreement, specs (builder, Loom build JSON, round trips), errors and training."""

import json

import numpy as np
import pytest

import polyvtd as pv
from reference.dense import rel_err
from reference.softmax import KINDS, Variant, entmax
from reference.gradcheck import central_difference

MODES = ["normal", "tiled", "parallel"]
MASK12 = [True, False, True, True, False, True, True, True, False, True, True, True]

#: builder keyword arguments per case (samples of shape [2, 12]).
VARIANTS = {
    "standard": dict(kind="standard"),
    "temperature": dict(kind="temperature", temperature=0.5),
    "grid_rows_cols": dict(kind="grid", rows=4, cols=6),
    "grid_cols_across_rows": dict(kind="grid", cols=8),
    "grid_rows_only": dict(kind="grid", rows=3, temperature=2.0),
    "grid_per_row": dict(kind=1),
    "hierarchical_levels": dict(kind="hierarchical", hierarchy_levels=[3, 4], temperature=1.3),
    "hierarchical_cols": dict(kind="hierarchical", cols=6),
    "masked": dict(kind="masked", mask=MASK12, temperature=0.8),
    "sparse": dict(kind="sparse", temperature=0.8),
    "adaptive": dict(kind="adaptive", temperature=0.7),
    "mixture": dict(kind="mixture", temperature=1.5),
    "entmax_1.5": dict(kind="entmax"),
    "entmax_1.3": dict(kind="entmax", entmax_alpha=1.3, temperature=0.9),
    "entmax_1": dict(kind="entmax", entmax_alpha=1.0),
    "entmax_2": dict(kind="entmax", entmax_alpha=2.0),
}


def inputs(*shape, seed=0, scale=2.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def build(case, **extra):
    return pv.layers.Softmax(**VARIANTS[case], **extra)


def reference(case):
    return Variant(**VARIANTS[case])


def domains(case, p):
    """The layer output split into its normalised vectors."""
    return np.asarray(p).reshape(-1, reference(case).domain_len(p.shape[1:]))


# ---- forward and backward against the reference ---------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", VARIANTS)
def test_forward_matches_numpy_and_sums_to_one(case, mode):
    x = inputs(3, 2, 12, seed=1)
    p = build(case).forward(x, mode=mode)
    assert p.shape == x.shape and p.dtype == np.float32
    assert rel_err(p, reference(case).forward(x)) <= 1e-5
    assert np.allclose(domains(case, p).sum(axis=1), 1.0, atol=1e-6) and (p >= 0).all()
    if case == "masked":
        assert (p[..., ~np.array(MASK12)] == 0).all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", VARIANTS)
def test_backward_matches_numpy(case, mode):
    x, g = inputs(3, 2, 12, seed=2), inputs(3, 2, 12, seed=3, scale=1.0)
    dx, grads = build(case).backward(x, g, mode=mode)
    assert grads == [] and dx.shape == x.shape
    assert rel_err(dx, reference(case).backward(x, g)) <= 1e-5


@pytest.mark.parametrize("case", VARIANTS)
def test_gradients_match_float64_finite_differences(case):
    x, g = inputs(2, 2, 12, seed=4), inputs(2, 2, 12, seed=5, scale=1.0)
    x64, ref = x.astype(np.float64), reference(case)
    numeric = central_difference(lambda: float(np.sum(ref.forward(x64) * g)), x64)
    dx, _ = build(case).backward(x, g, mode="normal")
    assert rel_err(dx, numeric) <= 1e-5


@pytest.mark.parametrize("case", ["sparse", "entmax_1.5", "adaptive", "mixture", "hierarchical_levels"])
def test_input_gradient_matches_finite_differences_through_the_layer(case):
    layer = build(case)
    x, g = inputs(2, 12, seed=6), inputs(2, 12, seed=7, scale=1.0).astype(np.float64)
    h = np.float32(1e-2)
    numeric = np.zeros(x.shape)
    for idx in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (np.sum(layer.forward(up) * g) - np.sum(layer.forward(down) * g)) / (float(up[idx]) - float(down[idx]))
    dx, _ = layer.backward(x, g.astype(np.float32))
    assert rel_err(dx, numeric) <= 2e-2


# ---- variant specifics ----------------------------------------------------------------------------

def test_rows_of_a_batch_are_normalised_separately():
    """Quirk 20 fixed: never across the batch (nor across the rows of one sample)."""
    layer = pv.layers.Softmax()
    x = inputs(4, 3, 5, seed=8)
    p = layer.forward(x)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, atol=1e-6)
    for i in range(4):
        np.testing.assert_array_equal(layer.forward(x[i:i + 1]), p[i:i + 1])


def test_sparsemax_is_exact_and_sparse():
    layer = pv.layers.Softmax("sparse")
    p = layer.forward(np.array([[0.1, 1.0, 0.9], [3.0, 0.0, -1.0]], np.float32))
    np.testing.assert_allclose(p, [[0.0, 0.55, 0.45], [1.0, 0.0, 0.0]], atol=1e-7)
    x = inputs(50, 9, seed=9)
    p = layer.forward(x)
    assert rel_err(p, np.stack([entmax(r.astype(np.float64), 2.0) for r in x])) <= 1e-6
    assert (p == 0).any() and (p > 0).sum(axis=1).min() >= 1


def test_entmax_limits_are_softmax_and_sparsemax():
    x = inputs(6, 10, seed=10)
    np.testing.assert_array_equal(pv.layers.Softmax("entmax", entmax_alpha=1.0).forward(x), pv.layers.Softmax().forward(x))
    np.testing.assert_allclose(pv.layers.Softmax("entmax", entmax_alpha=2.0).forward(x),
                               pv.layers.Softmax("sparse").forward(x), atol=1e-7)


@pytest.mark.parametrize("alpha", [1.05, 1.25, 1.5, 1.75, 1.95])
def test_entmax_matches_bisection_for_any_alpha(alpha):
    x = inputs(20, 16, seed=11)
    p = pv.layers.Softmax("entmax", entmax_alpha=alpha).forward(x)
    assert rel_err(p, np.stack([entmax(r.astype(np.float64), alpha) for r in x])) <= 1e-6


def test_adaptive_is_scale_invariant_and_mixture_is_a_mean():
    x = inputs(5, 8, seed=12)
    adaptive = pv.layers.Softmax("adaptive", temperature=0.5)
    np.testing.assert_allclose(adaptive.forward(x), adaptive.forward(7.0 * x), atol=1e-6)
    constant = adaptive.forward(np.full((1, 8), 3.0, np.float32))
    np.testing.assert_allclose(constant, 1 / 8, atol=1e-7)
    mix = pv.layers.Softmax("mixture", temperature=1.2).forward(x)
    parts = [pv.layers.Softmax(temperature=t).forward(x) for t in (0.6, 1.2, 2.4)]
    np.testing.assert_allclose(mix, np.mean(parts, axis=0), atol=1e-6)


def test_hierarchical_weights_groups_by_their_mean_logit():
    x = np.array([[0.0, 2.0, 1.0, 1.0]], np.float32)
    p = pv.layers.Softmax("hierarchical", hierarchy_levels=[2]).forward(x)[0]
    # both groups have mean 1: each gets 1/2, split by the softmax inside the group
    inner = np.exp([0.0, 2.0]) / np.exp([0.0, 2.0]).sum()
    np.testing.assert_allclose(p, [inner[0] / 2, inner[1] / 2, 0.25, 0.25], atol=1e-7)


def test_masked_without_mask_is_standard():
    x = inputs(3, 7, seed=13)
    np.testing.assert_array_equal(pv.layers.Softmax("masked").forward(x), pv.layers.Softmax().forward(x))


# ---- Gumbel ---------------------------------------------------------------------------------------

def test_gumbel_is_seeded_and_draws_fresh_noise_each_call():
    x = inputs(4, 10, seed=14)
    a, b = pv.layers.Softmax("gumbel", seed=5), pv.layers.Softmax("gumbel", seed=5)
    first, second = a.forward(x), a.forward(x)
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(b.forward(x), first)
    np.testing.assert_array_equal(b.forward(x), second)
    assert not np.allclose(pv.layers.Softmax("gumbel", seed=6).forward(x), first)
    np.testing.assert_allclose(first.sum(axis=1), 1.0, atol=1e-6)
    for mode in ("normal", "tiled"):  # the noise does not depend on the schedule
        np.testing.assert_array_equal(pv.layers.Softmax("gumbel", seed=5).forward(x, mode=mode), first)


def test_gumbel_max_samples_follow_the_softmax():
    """At a low temperature each row is nearly one-hot at argmax(x + g), which falls on class i
    with probability softmax(x)_i (the Gumbel-max trick)."""
    logits = np.array([1.0, 0.0, -0.5, 2.0], np.float32)
    p = pv.layers.Softmax("gumbel", temperature=0.01, seed=1).forward(np.tile(logits, (20000, 1)))
    counts = np.bincount(p.argmax(axis=1), minlength=4) / 20000
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(counts, expected, atol=0.015)


def test_gumbel_backward_uses_the_noise_of_its_forward():
    x, g = inputs(3, 6, seed=15), inputs(3, 6, seed=16, scale=1.0)
    p = pv.layers.Softmax("gumbel", temperature=0.7, seed=9).forward(x)
    dx, _ = pv.layers.Softmax("gumbel", temperature=0.7, seed=9).backward(x, g)
    # (x + noise) / T is T·log p up to a constant per row, which softmax ignores
    noise = 0.7 * np.log(p.astype(np.float64)) - x
    assert rel_err(dx, Variant("gumbel", temperature=0.7).backward(x, g, noise)) <= 1e-5
    fresh = lambda v: pv.layers.Softmax("gumbel", temperature=0.7, seed=9).forward(v)  # noqa: E731
    h = np.float32(1e-2)
    numeric = np.zeros(x.shape)
    for idx in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (np.sum(fresh(up) * g) - np.sum(fresh(down) * g)) / (float(up[idx]) - float(down[idx]))
    assert rel_err(dx, numeric) <= 2e-2


# ---- schedules --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_schedules_are_bitwise_identical(kind):
    # 64 × 512 values: past the parallel threshold
    mask = [i % 3 != 1 for i in range(512)]
    extra = dict(cols=128 if kind == "grid" else 0, hierarchy_levels=[64], mask=mask, entmax_alpha=1.3)
    x, g = inputs(64, 512, seed=17), inputs(64, 512, seed=18, scale=1.0)
    ys, bs = {}, {}
    for mode in MODES:
        ys[mode] = pv.layers.Softmax(kind, temperature=0.9, seed=2, **extra).forward(x, mode=mode)
        bs[mode] = pv.layers.Softmax(kind, temperature=0.9, seed=2, **extra).backward(x, g, mode=mode)[0]
    for mode in ("normal", "parallel"):
        np.testing.assert_array_equal(ys[mode], ys["tiled"])
        np.testing.assert_array_equal(bs[mode], bs["tiled"])


# ---- specs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", [*VARIANTS, "gumbel"])
def test_spec_round_trip(case):
    layer = pv.layers.Softmax("gumbel", temperature=0.6, seed=12) if case == "gumbel" else build(case)
    spec = json.loads(layer.spec_json())
    assert spec["type"] == "Softmax" and isinstance(spec["softmax_type"], int)
    copy = pv.layers.from_spec(spec)
    assert json.loads(copy.spec_json()) == spec
    x = inputs(2, 2, 12, seed=19)
    np.testing.assert_array_equal(copy.forward(x), layer.forward(x))


def test_spec_fields():
    spec = json.loads(pv.layers.Softmax("entmax", temperature=2.0, entmax_alpha=1.2).spec_json())
    assert spec == {"type": "Softmax", "softmax_type": 9, "temperature": 2.0, "entmax_alpha": 1.2}
    spec = json.loads(pv.layers.Softmax(1, rows=2, cols=3).spec_json())
    assert spec == {"type": "Softmax", "softmax_type": 1, "softmax_rows": 2, "softmax_cols": 3}
    assert json.loads(pv.layers.Softmax().spec_json()) == {"type": "Softmax", "softmax_type": 0}
    assert pv.layers.Softmax().num_params == 0 and pv.layers.Softmax().parameters == []


@pytest.mark.parametrize("value,index", [(0, 0), (6, 6), ("Grid", 1), ("HIERARCHICAL", 2), ("sparsemax", 6),
                                         ("Sparse", 6), ("entmax", 9), (None, 0)])
def test_softmax_type_integers_and_names(value, index):
    spec = {"type": "softmax"} if value is None else {"type": "softmax", "softmax_type": value}
    assert json.loads(pv.layers.from_spec(spec).spec_json())["softmax_type"] == index


def test_temperature_and_alpha_defaults():
    """The build JSON's 0 means T = 1 and alpha = 1.5 (as in the reference)."""
    x = inputs(3, 9, seed=20)
    zero = pv.layers.from_spec({"type": "softmax", "softmax_type": 9, "temperature": 0, "entmax_alpha": 0})
    np.testing.assert_array_equal(zero.forward(x), pv.layers.Softmax("entmax").forward(x))


LOOM_EXAMPLE = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 3, "layers": [
    {"z": 0, "y": 0, "x": 0, "l": 0, "type": "dense", "activation": "relu", "input_height": 4, "output_height": 8},
    {"z": 0, "y": 0, "x": 0, "l": 1, "type": "dense", "activation": "linear", "dtype": "int8", "input_height": 8,
     "output_height": 3},
    {"z": 0, "y": 0, "x": 0, "l": 2, "type": "softmax", "softmax_type": 0}]}


def test_loom_build_spec_example_loads_and_runs():
    net = pv.VolumetricNetwork.from_spec(LOOM_EXAMPLE, seed=1)
    assert net.layer(0, 0, 0, 2).type == "Softmax"
    x = inputs(5, 4, seed=21)
    p = net.forward(x)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    logits = x.astype(np.float64)
    for l, act in ((0, "relu"), (1, "linear")):
        logits = logits @ net.layer(0, 0, 0, l).weights.dequantize().T.astype(np.float64)
        logits = np.maximum(logits, 0) if act == "relu" else logits
    assert rel_err(p, Variant().forward(logits)) <= 1e-5
    assert pv.VolumetricNetwork.from_spec(net.to_spec()).to_spec() == net.to_spec()


@pytest.mark.parametrize("fields,group", [
    ({"softmax_type": 1, "softmax_rows": 2, "softmax_cols": 4}, 4),
    ({"softmax_type": 2, "hierarchy_levels": [2, 4]}, 8),
    ({"softmax_type": 4, "temperature": 0.5}, 8),
    ({"softmax_type": 5, "mask": [True, True, False, True, True, True, False, True]}, 8),
    ({"softmax_type": 9, "entmax_alpha": 1.7}, 8),
])
def test_loom_softmax_variants_in_a_network(fields, group):
    spec = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 2, "layers": [
        {"l": 0, "type": "dense", "input_height": 3, "output_height": 8},
        {"l": 1, "type": "softmax", **fields}]}
    p = pv.VolumetricNetwork.from_spec(spec).forward(inputs(4, 3, seed=22))
    assert p.shape == (4, 8)
    np.testing.assert_allclose(p.reshape(-1, group).sum(axis=1), 1.0, atol=1e-6)


# ---- errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields,fragment", [
    ({"softmax_type": 10}, "softmax_type"),
    ({"softmax_type": "fancy"}, "softmax_type"),
    ({"softmax_type": 1.5}, "softmax_type"),
    ({"softmax_type": True}, "softmax_type"),
    ({"temperature": -1.0}, "temperature"),
    ({"softmax_type": 9, "entmax_alpha": 2.5}, "entmax_alpha"),
    ({"softmax_type": 9, "entmax_alpha": 0.5}, "entmax_alpha"),
    ({"softmax_type": 5, "mask": [False, False]}, "mask"),
    ({"softmax_type": 5, "mask": [1, 0]}, "mask"),
    ({"softmax_type": 2, "hierarchy_levels": [4, 0]}, "hierarchy_levels"),
    ({"softmax_rows": -1}, "softmax_rows"),
])
def test_bad_specs_name_the_field(fields, fragment):
    with pytest.raises(pv.SpecError, match=fragment):
        pv.layers.from_spec({"type": "softmax", **fields})


@pytest.mark.parametrize("layer,fragment", [
    (pv.layers.Softmax("masked", mask=[True, False, True]), "mask has 3 positions but the rows have 5"),
    (pv.layers.Softmax("grid", rows=2, cols=3), "softmax_rows 2 × softmax_cols 3"),
    (pv.layers.Softmax("grid", cols=4), "softmax_cols 4"),
    (pv.layers.Softmax("hierarchical", hierarchy_levels=[3]), "hierarchy level 3"),
])
def test_inputs_that_do_not_fit_are_shape_errors(layer, fragment):
    with pytest.raises(pv.ShapeError, match=fragment):
        layer.forward(inputs(2, 5))


def test_shape_errors_inside_a_network_name_the_coordinate():
    spec = json.loads(json.dumps(LOOM_EXAMPLE))
    spec["layers"][2].update(softmax_type=5, mask=[True, False])
    with pytest.raises(pv.SpecError, match=r"\(0,0,0,2\).*mask has 2 positions"):
        pv.VolumetricNetwork.from_spec(spec)
    net = pv.VolumetricNetwork(1, 1, 1, 2)
    net.set_layer(0, 0, 0, 1, pv.layers.Softmax("grid", cols=4))
    with pytest.raises(pv.ShapeError, match=r"\(0,0,0,1\).*softmax_cols"):
        net.forward(inputs(2, 6))


def test_bad_builder_arguments():
    with pytest.raises(pv.SpecError, match="rows"):
        pv.layers.Softmax("grid", rows=-2)
    with pytest.raises(pv.SpecError, match="softmax_type"):
        pv.layers.Softmax("softest")


# ---- training -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields", [
    {"softmax_type": 0}, {"softmax_type": 3, "temperature": 0.5}, {"softmax_type": 2, "hierarchy_levels": [2]},
    {"softmax_type": 5, "mask": [True, True, True, False]}, {"softmax_type": 6}, {"softmax_type": 7},
    {"softmax_type": 8}, {"softmax_type": 9}, {"softmax_type": 4, "temperature": 2.0},
], ids=lambda f: KINDS[f["softmax_type"]])
def test_training_through_the_softmax_reduces_the_loss(fields):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 4)) * 2
    labels = rng.integers(0, 3, 300)
    x = (centres[labels] + rng.standard_normal((300, 4)) * 0.5).astype(np.float32)
    targets = np.eye(4, dtype=np.float32)[labels]
    spec = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 2, "layers": [
        {"l": 0, "type": "dense", "input_height": 4, "output_height": 4, "bias": True},
        {"l": 1, "type": "softmax", **fields}]}
    net = pv.VolumetricNetwork.from_spec(spec, seed=3)
    result = net.train(x, targets, epochs=25, lr=0.05, batch_size=30, optimizer="adam")
    assert result.stopped_early is None
    assert result.loss_history[-1] < 0.5 * result.loss_history[0]


# ---- GPU --------------------------------------------------------------------------------------------

GPU = pytest.mark.skipif(not pv.gpu_available(), reason="no GPU adapter found by wgpu (install mesa-vulkan-drivers for lavapipe)")
MASK300 = [i % 7 not in (2, 5) for i in range(300)]
#: builder keyword arguments per case for samples of shape [2, 300]: rows wider than the
#: workgroup, so every thread takes several values.
WIDE = {
    "standard": dict(kind="standard", temperature=0.9),
    "grid": dict(kind="grid", cols=200),
    "hierarchical": dict(kind="hierarchical", hierarchy_levels=[5, 60]),
    "masked": dict(kind="masked", mask=MASK300),
    "sparse": dict(kind="sparse"),
    "adaptive": dict(kind="adaptive", temperature=1.7),
    "mixture": dict(kind="mixture", temperature=2.5),
    "entmax_1.5": dict(kind="entmax", temperature=0.5),
    "entmax_1.7": dict(kind="entmax", entmax_alpha=1.7),
}


@GPU
@pytest.mark.parametrize("case", VARIANTS)
def test_gpu_forward_matches_the_cpu_and_the_reference(case):
    """device="gpu": one workgroup per normalised vector (shaders/softmax.wgsl), in f32; batch 3
    of samples [2, 12]."""
    x = inputs(3, 2, 12, seed=23)
    gpu, cpu = build(case).forward(x, device="gpu"), build(case).forward(x)
    assert gpu.shape == x.shape
    assert rel_err(gpu, cpu) <= 1e-5
    assert rel_err(gpu, reference(case).forward(x)) <= 1e-5
    if case == "masked":
        assert (gpu[..., ~np.array(MASK12)] == 0).all()


@GPU
@pytest.mark.parametrize("case", WIDE)
def test_gpu_forward_of_rows_wider_than_a_workgroup(case):
    x = inputs(2, 2, 300, seed=24, scale=3.0)
    gpu, cpu = pv.layers.Softmax(**WIDE[case]).forward(x, device="gpu"), pv.layers.Softmax(**WIDE[case]).forward(x)
    assert rel_err(gpu, cpu) <= 1e-5
    assert rel_err(gpu, Variant(**WIDE[case]).forward(x)) <= 1e-5


@GPU
def test_gpu_gumbel_draws_the_noise_the_cpu_draws():
    """The noise is drawn on the CPU from the same stream (seed, forward count, domain), so a
    layer on the GPU and its twin on the CPU give the same samples, call after call."""
    x = inputs(4, 10, seed=25)
    on_gpu, on_cpu = pv.layers.Softmax("gumbel", temperature=0.7, seed=5), pv.layers.Softmax("gumbel", temperature=0.7, seed=5)
    for _ in range(2):
        gpu, cpu = on_gpu.forward(x, device="gpu"), on_cpu.forward(x)
        assert rel_err(gpu, cpu) <= 1e-5
        noise = 0.7 * np.log(cpu.astype(np.float64)) - x  # up to a constant per row, which softmax ignores
        assert rel_err(gpu, Variant("gumbel", temperature=0.7).forward(x, noise)) <= 1e-5


@GPU
def test_gpu_edge_rows_and_a_network():
    """A one-value row, constant rows (adaptive clamps σ; sparse maps split ties evenly), and
    the layer at the end of a grid."""
    one = inputs(3, 1, seed=26)
    for kind in ("standard", "sparse", "entmax", "hierarchical"):
        np.testing.assert_allclose(pv.layers.Softmax(kind).forward(one, device="gpu"), 1.0, rtol=1e-6)
    constant = np.full((2, 8), 3.0, np.float32)
    for kind in ("adaptive", "sparse", "entmax", "mixture"):
        np.testing.assert_allclose(pv.layers.Softmax(kind).forward(constant, device="gpu"), 1 / 8, rtol=1e-6)
    net = pv.VolumetricNetwork.from_spec(LOOM_EXAMPLE, seed=1)
    x = inputs(5, 4, seed=27)
    assert rel_err(net.forward(x, device="gpu"), net.forward(x)) <= 1e-5
