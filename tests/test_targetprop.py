"""Target propagation (pv.TargetProp): the NumPy reference for both target rules, a binary
network whose exact gradient is zero, parity with backprop on a float network, every layer type
and container, every config field's effect, budgets, morphed layers, NaN stops and errors."""

import math

import numpy as np
import pytest

import polyvtd as pv
from reference import targetprop as ref

L = pv.layers


# ---- helpers --------------------------------------------------------------------------------------

def chain(*layers):
    """A 1×1×1×n grid running `layers` in order."""
    net = pv.VolumetricNetwork(1, 1, 1, len(layers))
    for i, layer in enumerate(layers):
        net.set_layer(0, 0, 0, i, layer)
    return net


def mse(net, x, y):
    return float(np.mean((net.forward(x) - y) ** 2))


def regression(n=64, inputs=8, outputs=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, inputs)).astype(np.float32)
    y = np.tanh(x @ rng.standard_normal((inputs, outputs))).astype(np.float32)
    return x, y


def masters(net):
    return [p.master.copy() for p in net.parameters]


def dense_mlp(compat="standard", bias=True, seed=1):
    return chain(L.Dense(8, 16, "tanh", bias=bias, seed=seed, compat=compat),
                 L.Dense(16, 4, bias=bias, seed=seed + 1, compat=compat))


def reference_layers(net, activations):
    out = []
    for (_, layer), act in zip(net.layers(), activations):
        stores = layer.parameters
        out.append(ref.DenseLayer(stores[0].master.astype(np.float64),
                                  stores[1].master.astype(np.float64) if len(stores) > 1 else None, act))
    return out


# ---- the NumPy reference ------------------------------------------------------------------------

REFERENCE_CASES = {
    "chain_rule": {},
    "target": {"use_chain_rule": False},
    "target_tight_clamp": {"use_chain_rule": False, "activation_clamp": 0.3},
    "target_high_threshold": {"use_chain_rule": False, "weight_threshold": 0.2},
    "chain_depth_scaled": {"depth_scale_factor": 2.0, "gradient_scale": 0.5, "activation_clamp": 0.4},
    "target_minibatches": {"use_chain_rule": False, "batch_size": 2, "momentum": 0.5},
    "chain_gated": {"min_budget": 0.95},
}


@pytest.mark.parametrize("case", sorted(REFERENCE_CASES))
def test_targets_budgets_gaps_and_updates_match_the_numpy_reference(case):
    cfg = {**REFERENCE_CASES[case], "learning_rate": 0.2}
    activations = ["tanh", "relu", "linear"]
    net = chain(L.Dense(5, 7, "tanh", bias=True, seed=3), L.Dense(7, 6, "relu", bias=True, seed=4),
                L.Dense(6, 3, bias=False, seed=5))
    layers = reference_layers(net, activations)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 5)).astype(np.float32)
    t = rng.uniform(-1, 1, (5, 3)).astype(np.float32)
    tp = pv.TargetProp(net, cfg)
    for _ in range(2):  # the second step also checks the momentum buffers
        loss = tp.step(x, t)
        ref_loss, (targets, budgets, gaps) = ref.step(layers, x.astype(np.float64), t.astype(np.float64), cfg)
        assert loss == pytest.approx(ref_loss, rel=1e-5)
    for i in range(3):  # the last mini-batch's targets (one sample: 5 samples in batches of 1 or 2)
        assert tp.targets[(0, 0, 0, i)].shape == targets[i].shape == (1, [7, 6, 3][i])
        np.testing.assert_allclose(tp.targets[(0, 0, 0, i)], targets[i], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tp.link_budgets.ravel(), budgets, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tp.gaps.ravel(), gaps, rtol=1e-4, atol=1e-6)
    want = [v for layer in layers for v in (layer.w, layer.b) if v is not None]
    for store, values in zip(net.parameters, want):
        np.testing.assert_allclose(store.master, values, rtol=1e-4, atol=1e-6)


def test_reference_weighted_combination_is_the_spec_rule():
    # Σ_o w(j,o)·gap[o] / Σ_o |w(j,o)| with w stored [out][in]; pathways below the threshold out.
    w = np.array([[0.5, -0.005, 0.0], [-0.25, 0.3, 0.0]])
    gap = np.array([[1.0, 2.0]])
    got = ref.weighted_combination(gap, w, threshold=0.01)
    np.testing.assert_allclose(got, [[(0.5 - 0.5) / 0.75, 0.6 / 0.3, 0.0]])


# ---- where backprop has no gradient: binary weights ---------------------------------------------

def test_target_propagation_trains_a_binary_network_whose_exact_gradient_is_zero():
    """Loom-codec binary weights are sign(master)·(a scale fixed at the first morph): the loss is
    a step function of the FP32 masters, so its exact gradient is zero and exact backprop has no
    direction to move them (the engine's net.train uses a straight-through estimator instead,
    docs/compat.md). Target propagation needs no derivative of the quantiser."""
    x, y = regression()
    net = dense_mlp(compat="loom", bias=False)
    net.morph_all("binary")
    before = mse(net, x, y)
    for store in net.parameters:
        master = store.master
        for idx in [(i, j) for i in range(0, master.shape[0], 3) for j in range(0, master.shape[1], 3)]:
            if abs(master[idx]) < 1e-2:
                continue
            for h in (1e-3, -1e-3):
                moved = master.copy()
                moved[idx] += h
                store.set_master(moved)
                assert mse(net, x, y) == before  # finite differences: exactly zero
            store.set_master(master)
    tp = pv.TargetProp(net, {"use_chain_rule": False, "learning_rate": 0.05, "batch_size": 8})
    result = tp.train(x, y, epochs=30)
    after = mse(net, x, y)
    assert before > 0.6 and after < 0.45, (before, after)  # the bar: the loss falls below 0.45
    assert result.stopped_early is None and len(result.loss_history) == 30
    assert all(store.dtype == "binary" for store in net.parameters)
    for store in net.parameters:  # still exactly two values: ±scale
        assert len(np.unique(np.abs(store.dequantize()))) == 1


def test_target_propagation_trains_a_ternary_network():
    x, y = regression()
    net = dense_mlp(compat="loom", bias=False)
    net.morph_all("ternary")
    before = mse(net, x, y)
    pv.TargetProp(net, {"use_chain_rule": False, "learning_rate": 0.05, "batch_size": 8}).train(x, y, epochs=30)
    assert mse(net, x, y) < 0.3 * before
    assert all(set(np.unique(np.sign(s.dequantize()))) <= {-1.0, 0.0, 1.0} for s in net.parameters)


# ---- a float network: as good as backprop on the same budget -------------------------------------

@pytest.mark.parametrize("use_chain_rule", [False, True])
def test_float_network_reaches_backprops_loss_within_2x(use_chain_rule):
    """Same network, data, 40 epochs of 8 mini-batches of 8 in the same order, a constant rate
    for both, each at its best rate of the same grid."""
    x, y = regression()
    rates = [0.1, 0.3, 1.0]
    backprop = []
    for lr in rates:
        net = dense_mlp()
        net.train(x, y, epochs=40, lr=lr, batch_size=8, optimizer="sgd", shuffle=False)
        backprop.append(mse(net, x, y))
    target = []
    for lr in rates:
        net = dense_mlp()
        pv.TargetProp(net, {"use_chain_rule": use_chain_rule, "learning_rate": lr, "batch_size": 8}).train(x, y, epochs=40)
        target.append(mse(net, x, y))
    best_bp, best_tp = min(v for v in backprop if math.isfinite(v)), min(v for v in target if math.isfinite(v))
    assert best_tp <= 2 * best_bp, (backprop, target)
    assert best_tp < 0.02 * mse(dense_mlp(), x, y)


# ---- every layer type and container ---------------------------------------------------------------

def _cases():
    pre = lambda n: L.Dense(6, n, "tanh", seed=1)  # noqa: E731  (a layer that receives targets)
    return {
        "Dense": (lambda: chain(pre(8), L.Dense(8, 4, seed=2)), (6,)),
        "CNN1": (lambda: chain(pre(16), L.CNN1(2, 3, 3, 8, "tanh", seed=2)), (6,)),
        "CNN2": (lambda: chain(pre(50), L.CNN2(2, 3, 3, 5, padding=1, seed=2)), (6,)),
        "CNN3": (lambda: chain(pre(64), L.CNN3(1, 2, 2, 4, seed=2)), (6,)),
        "ConvTransposed1D": (lambda: chain(pre(8), L.ConvTransposed1D(2, 3, 3, 4, stride=2, seed=2)), (6,)),
        "ConvTransposed2D": (lambda: chain(pre(18), L.ConvTransposed2D(2, 2, 2, 3, seed=2)), (6,)),
        "ConvTransposed3D": (lambda: chain(pre(8), L.ConvTransposed3D(1, 2, 2, 2, seed=2)), (6,)),
        "RNN": (lambda: chain(L.Dense(5, 5, "tanh", seed=1), L.RNN(5, 6, 4, seed=2)), (4, 5)),
        "RNN_last": (lambda: chain(L.Dense(5, 5, "tanh", seed=1), L.RNN(5, 6, 4, return_sequences=False, seed=2)), (4, 5)),
        "LSTM": (lambda: chain(L.Dense(5, 5, "tanh", seed=1), L.LSTM(5, 6, 4, seed=2)), (4, 5)),
        "MultiHeadAttention": (lambda: chain(L.Dense(8, 8, "tanh", seed=1), L.MultiHeadAttention(8, 2, 1, seed=2)), (3, 8)),
        "SwiGLU": (lambda: chain(pre(8), L.SwiGLU(8, 12, seed=2)), (6,)),
        "RMSNorm": (lambda: chain(pre(8), L.RMSNorm(8)), (6,)),
        "LayerNorm": (lambda: chain(pre(8), L.LayerNorm(8)), (6,)),
        "Softmax": (lambda: chain(pre(8), L.Softmax(temperature=0.1)), (6,)),
        "KMeans": (lambda: chain(pre(8), L.KMeans(8, 4, seed=2)), (6,)),
        "KMeans_features": (lambda: chain(pre(8), L.KMeans(8, 4, output_mode="features", seed=2)), (6,)),
        "Embedding": (lambda: chain(L.Embedding(10, 6, seed=1), L.Dense(6, 3, seed=2)), None),
        "Sequential": (lambda: chain(pre(8), L.Sequential(L.Dense(8, 8, "tanh", seed=3), L.Residual(), L.Dense(8, 4, seed=4))), (6,)),
        "Parallel_concat": (lambda: chain(pre(8), L.Parallel(L.Dense(8, 2, seed=3), L.Dense(8, 3, seed=4))), (6,)),
        "Parallel_add": (lambda: chain(pre(8), L.Parallel(L.Dense(8, 3, seed=3), L.Dense(8, 3, seed=4), combine="add")), (6,)),
        "Parallel_avg": (lambda: chain(pre(8), L.Parallel(L.Dense(8, 3, seed=3), L.Dense(8, 3, seed=4), combine="avg")), (6,)),
        "Parallel_filter": (lambda: chain(pre(8), L.Parallel(L.Dense(8, 3, seed=3), L.Dense(8, 3, seed=4), combine="filter",
                                                               gate=L.Dense(8, 2, seed=5))), (6,)),
        "Residual": (lambda: chain(pre(6), L.Dense(6, 6, "tanh", seed=2), L.Residual()), (6,)),
    }


CASES = _cases()


@pytest.mark.parametrize("use_chain_rule", [False, True], ids=["target", "chain_rule"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_layer_type_and_container_learns(name, use_chain_rule):
    make, shape = CASES[name]
    rng = np.random.default_rng(1)
    x = (rng.integers(0, 10, (8, 3)) if shape is None else rng.standard_normal((8, *shape))).astype(np.float32)
    teacher = make()
    for store in teacher.parameters:
        store.set_master(store.master + 0.3 * rng.standard_normal(store.master.shape).astype(np.float32))
    y = teacher.forward(x)
    net = make()
    before, weights = mse(net, x, y), masters(net)
    tp = pv.TargetProp(net, {"use_chain_rule": use_chain_rule, "learning_rate": 0.05, "batch_size": 4})
    tp.train(x, y, epochs=30)
    assert mse(net, x, y) < 0.8 * before
    assert all(not np.array_equal(a, b) for a, b in zip(weights, masters(net)))  # every tensor learnt
    if shape is not None:  # the first layer got a target through the one under test
        assert tp.gaps[0, 0, 0, 0] > 0 and tp.link_budgets[0, 0, 0, 0] > 0.5


def test_container_members_get_their_own_links():
    make, _ = CASES["Parallel_filter"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    tp = pv.TargetProp(make(), {"use_chain_rule": False})
    tp.step(x, np.zeros((4, 3), np.float32))
    paths = [(link["coord"], link["path"], link["type"]) for link in tp.links]
    assert paths == [((0, 0, 0, 1), "", "Parallel"), ((0, 0, 0, 1), "branch 0", "Dense"),
                     ((0, 0, 0, 1), "branch 1", "Dense"), ((0, 0, 0, 1), "gate", "Dense"), ((0, 0, 0, 0), "", "Dense")]
    seq = pv.TargetProp(CASES["Sequential"][0](), {"use_chain_rule": False})
    seq.step(x, np.zeros((4, 4), np.float32))
    assert [link["path"] for link in seq.links][:4] == ["", "stage 2", "stage 1", "stage 0"]


def test_targets_follow_remote_links_and_skip_unread_layers():
    # (0,0,0,2) reads (0,0,0,0) by a remote link: (0,0,0,1)'s output is read by nobody.
    net = chain(L.Dense(4, 5, "tanh", seed=1), L.Dense(5, 5, "tanh", seed=2), L.Dense(5, 2, seed=3))
    net.set_link(0, 0, 0, 2, (0, 0, 0, 0))
    middle = net.layer(0, 0, 0, 1).weights.master.copy()
    x = np.ones((2, 4), np.float32)
    output = net.forward(x)
    tp = pv.TargetProp(net, {"use_chain_rule": False, "batch_size": 2})
    tp.step(x, np.zeros((2, 2), np.float32))
    assert np.isnan(tp.link_budgets[0, 0, 0, 1]) and not np.isnan(tp.link_budgets[0, 0, 0, 0])
    assert set(tp.targets) == {(0, 0, 0, 0), (0, 0, 0, 2)}
    assert set(tp.activations) == {(0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 0, 2)}
    np.testing.assert_allclose(tp.activations[(0, 0, 0, 2)], output, rtol=1e-6)  # captured before the update
    np.testing.assert_array_equal(net.layer(0, 0, 0, 1).weights.master, middle)


def test_container_members_linked_to_grid_layers_train_those_layers():
    # The Sequential's first stage is a remote link to (0,0,0,0): that layer runs twice and
    # learns from both targets.
    net = chain(L.Dense(4, 4, "tanh", seed=1), L.Sequential((0, 0, 0, 0), L.Dense(4, 2, seed=2)))
    shared = net.layer(0, 0, 0, 0).weights
    before = shared.master.copy()
    tp = pv.TargetProp(net, {"use_chain_rule": False})
    tp.step(np.ones((2, 4), np.float32), np.zeros((2, 2), np.float32))
    assert [(link["path"], link["type"]) for link in tp.links][1:] == [("stage 1", "Dense"), ("stage 0", "Dense"), ("", "Dense")]
    assert not np.array_equal(shared.master, before)


def test_disabled_and_empty_slots_are_nan_in_the_grid_arrays():
    net = pv.VolumetricNetwork(1, 2, 1, 2)
    net.set_layer(0, 0, 0, 0, L.Dense(3, 3, "tanh", seed=1))
    net.set_layer(0, 0, 0, 1, L.Dense(3, 3, seed=2))
    net.set_layer(0, 1, 0, 0, L.Dense(3, 2, seed=3))
    net.set_disabled(0, 0, 0, 1)
    tp = pv.TargetProp(net)
    tp.step(np.ones((1, 3), np.float32), np.zeros((1, 2), np.float32))
    assert tp.link_budgets.shape == tp.gaps.shape == (1, 2, 1, 2)
    assert tp.link_budgets.dtype == np.float32
    nan = np.isnan(tp.link_budgets)
    assert nan.tolist() == [[[[False, True]], [[False, True]]]]


# ---- budgets --------------------------------------------------------------------------------------

def test_budgets_lie_in_0_1_and_dead_links_are_gated():
    x, y = regression(n=16)
    net = chain(L.Dense(8, 16, "relu", bias=True, seed=1), L.Dense(16, 4, seed=2))
    tp = pv.TargetProp(net, {"use_chain_rule": False})
    for _ in range(5):
        tp.step(x, y)
        budgets = tp.link_budgets.ravel()
        assert np.all((budgets >= 0) & (budgets <= 1))
    # A dead ReLU layer (every pre-activation negative) outputs zeros: budget 0, gated.
    first = net.layer(0, 0, 0, 0)
    first.bias.set_master(np.full(16, -100.0, np.float32))
    frozen = first.weights.master.copy()
    tp.step(x, y)
    assert tp.link_budgets[0, 0, 0, 0] == 0.0
    assert [(link["coord"], link["gated"]) for link in tp.links][-1] == ((0, 0, 0, 0), True)
    np.testing.assert_array_equal(first.weights.master, frozen)


# ---- every config field has an effect -------------------------------------------------------------

# Weight changes are differences of float32 weights (|w| < 1): exact to about this much.
ULP = 2e-7


def _after_one_step(cfg, steps=1, x=None, y=None, lr=None):
    x, y = (regression(n=4) if x is None else (x, y))
    net = dense_mlp()
    start = masters(net)
    tp = pv.TargetProp(net, cfg)
    for _ in range(steps):
        tp.step(x, y, lr=lr)
    return [after - before for after, before in zip(masters(net), start)], tp


def test_batch_size_sets_the_number_of_updates():
    x, y = regression(n=6)
    net = dense_mlp()
    per_sample = pv.TargetProp(net, {"batch_size": 1}).train(x, y, epochs=2)
    whole = pv.TargetProp(dense_mlp(), {"batch_size": 6}).train(x, y, epochs=2)
    assert (per_sample.steps, whole.steps) == (12, 2)
    d1, _ = _after_one_step({"batch_size": 1}, x=x, y=y)
    d6, _ = _after_one_step({"batch_size": 4}, x=x, y=y)
    assert not np.allclose(d1[0], d6[0])


def test_use_chain_rule_selects_the_target_rule():
    x, y = regression(n=1)
    _, chain_tp = _after_one_step({"use_chain_rule": True}, x=x, y=y)
    _, target_tp = _after_one_step({"use_chain_rule": False}, x=x, y=y)
    hidden = chain_tp.activations[(0, 0, 0, 0)]
    np.testing.assert_array_equal(hidden, target_tp.activations[(0, 0, 0, 0)])
    assert not np.allclose(chain_tp.targets[(0, 0, 0, 0)], target_tp.targets[(0, 0, 0, 0)])


def test_gradient_scale_sets_how_far_chain_rule_targets_lie():
    x, y = regression(n=1)
    _, small = _after_one_step({"gradient_scale": 0.1}, x=x, y=y)
    _, large = _after_one_step({"gradient_scale": 0.3}, x=x, y=y)
    assert large.gaps[0, 0, 0, 0] == pytest.approx(3 * small.gaps[0, 0, 0, 0], rel=1e-4)


def test_depth_scale_factor_scales_earlier_layers_rates():
    x, y = regression(n=1)
    flat, _ = _after_one_step({"depth_scale_factor": 1.0}, x=x, y=y)
    deep, _ = _after_one_step({"depth_scale_factor": 2.0}, x=x, y=y)
    np.testing.assert_allclose(deep[0], 2 * flat[0], rtol=1e-4, atol=ULP)  # one step before the output
    np.testing.assert_allclose(deep[2], flat[2], rtol=1e-4, atol=ULP)      # the output layer


def test_momentum_sets_the_velocity_rule():
    x, y = regression(n=1)
    plain, _ = _after_one_step({"momentum": 0.0}, x=x, y=y)
    heavy, _ = _after_one_step({"momentum": 0.5}, x=x, y=y)
    np.testing.assert_allclose(heavy[2], 0.5 * plain[2], rtol=1e-4, atol=ULP)  # v = (1 − μ)·Δ at first
    carried, _ = _after_one_step({"momentum": 0.5, "learning_rate": 0.0}, x=x, y=y, steps=2)
    assert np.all(carried[2] == 0)


def test_learning_rate_is_the_default_rate():
    x, y = regression(n=1)
    base, _ = _after_one_step({"learning_rate": 0.01}, x=x, y=y)
    double, _ = _after_one_step({"learning_rate": 0.02}, x=x, y=y)
    explicit, _ = _after_one_step({"learning_rate": 0.01}, x=x, y=y, lr=0.02)
    np.testing.assert_allclose(double[2], 2 * base[2], rtol=1e-4, atol=ULP)
    np.testing.assert_array_equal(explicit[2], double[2])


def test_activation_clamp_bounds_estimated_targets():
    x, y = regression(n=4)
    _, wide = _after_one_step({"use_chain_rule": False}, x=3 * x, y=y)
    _, tight = _after_one_step({"use_chain_rule": False, "activation_clamp": 0.25}, x=3 * x, y=y)
    assert np.abs(wide.targets[(0, 0, 0, 0)]).max() > 0.25
    assert np.abs(tight.targets[(0, 0, 0, 0)]).max() <= 0.25
    np.testing.assert_array_equal(tight.targets[(0, 0, 0, 1)], y[-1:])  # the global target is never clamped


def test_weight_threshold_cuts_weak_pathways():
    x, y = regression(n=1)
    weak, tp = _after_one_step({"use_chain_rule": False, "weight_threshold": 10.0}, x=x, y=y)
    assert tp.gaps[0, 0, 0, 0] == 0.0 and np.all(weak[0] == 0)  # no pathway carries a target back
    some, tp = _after_one_step({"use_chain_rule": False, "weight_threshold": 0.2}, x=x, y=y)
    every, _ = _after_one_step({"use_chain_rule": False, "weight_threshold": 0.0}, x=x, y=y)
    assert tp.gaps[0, 0, 0, 0] > 0 and not np.allclose(some[0], every[0])


def test_min_budget_gates_links():
    x, y = regression(n=4)
    frozen, tp = _after_one_step({"min_budget": 1.0}, x=x, y=y)
    assert all(np.all(d == 0) for d in frozen) and all(link["gated"] for link in tp.links)
    moving, tp = _after_one_step({"min_budget": 0.0}, x=x, y=y)
    assert all(np.any(d != 0) for d in moving) and not any(link["gated"] for link in tp.links)


# ---- morphed layers, NaN stops --------------------------------------------------------------------

def test_morphed_layers_update_the_master_and_remorph():
    x, y = regression(n=8)
    net = dense_mlp()
    net.morph_all("int8")
    before = masters(net)
    pv.TargetProp(net, {"use_chain_rule": False, "learning_rate": 0.1}).step(x, y)
    weights = net.layer(0, 0, 0, 0).weights
    assert weights.dtype == "int8" and not np.array_equal(weights.master, before[0])
    fresh = pv.WeightStore(weights.master)
    fresh.morph("int8")
    np.testing.assert_array_equal(weights.dequantize(), fresh.dequantize())  # re-morphed from the new master
    hidden = np.tanh(x @ weights.dequantize().T + net.layer(0, 0, 0, 0).bias.master)
    second = net.layer(0, 0, 0, 1)
    np.testing.assert_allclose(net.forward(x), hidden @ second.weights.dequantize().T + second.bias.master, rtol=1e-4, atol=1e-5)


def test_non_finite_weights_stop_cleanly_with_the_last_good_ones():
    x, y = regression(n=4)
    net = dense_mlp()
    tp = pv.TargetProp(net, {"batch_size": 4})
    tp.step(x, y)
    good = masters(net)
    loss = tp.step(1000 * x, y, lr=3e38)  # the update overflows float32
    assert math.isfinite(loss) and "would become" in tp.stopped_early
    assert all(np.array_equal(a, b) for a, b in zip(good, masters(net)))
    result = tp.train(1000 * x, y, epochs=3, lr=3e38)
    assert result.stopped_early.startswith("epoch 0") and result.loss_history == [] and result.steps == 0
    tp.step(x, y)
    assert tp.stopped_early is None and not all(np.array_equal(a, b) for a, b in zip(good, masters(net)))


def test_a_non_finite_output_stops_before_any_update():
    x, y = regression(n=4)
    net = dense_mlp()
    first = net.layer(0, 0, 0, 1).weights
    first.set_master(np.full((4, 16), 3e38, np.float32))
    good = masters(net)
    loss = pv.TargetProp(net).step(x, y)
    assert not math.isfinite(loss)
    assert all(np.array_equal(a, b) for a, b in zip(good, masters(net)))


# ---- config, API, errors --------------------------------------------------------------------------

def test_config_defaults_and_conversions():
    cfg = pv.TargetPropConfig()
    assert cfg.to_dict() == pytest.approx({"batch_size": 1, "use_chain_rule": True, "gradient_scale": 0.1,
                                           "depth_scale_factor": 1.1, "momentum": 0.9, "learning_rate": 0.01,
                                           "activation_clamp": 10.0, "weight_threshold": 0.01, "min_budget": 0.2})
    changed = cfg.replace(momentum=0.5, use_chain_rule=False)
    assert (changed.momentum, changed.use_chain_rule, cfg.momentum) == (0.5, False, pytest.approx(0.9))
    assert pv.TargetPropConfig.from_dict(changed.to_dict()) == changed != cfg
    assert "use_chain_rule=False" in repr(changed)
    net = dense_mlp()
    assert pv.TargetProp(net, changed).config == changed == pv.TargetProp(net, {"momentum": 0.5, "use_chain_rule": False}).config
    assert pv.TargetProp(net).config == cfg


@pytest.mark.parametrize("fields, name", [
    ({"momentun": 0.5}, "momentun"), ({"momentum": 1.0}, "momentum"), ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 2.5}, "batch_size"), ({"use_chain_rule": 1}, "use_chain_rule"), ({"learning_rate": -1.0}, "learning_rate"),
    ({"gradient_scale": float("nan")}, "gradient_scale"), ({"depth_scale_factor": 0}, "depth_scale_factor"),
    ({"activation_clamp": 0}, "activation_clamp"), ({"weight_threshold": -0.1}, "weight_threshold"),
    ({"min_budget": 1.5}, "min_budget"), ({"momentum": "high"}, "momentum"),
])
def test_bad_config_fields_are_named(fields, name):
    with pytest.raises(pv.InputError, match=name):
        pv.TargetProp(dense_mlp(), fields)
    with pytest.raises(pv.InputError, match=name):
        pv.TargetPropConfig.from_dict(fields)


def test_bad_calls_raise_named_errors():
    net = dense_mlp()
    x, y = regression(n=4)
    with pytest.raises(TypeError, match="unexpected keyword|momentun"):
        pv.TargetPropConfig(momentun=0.5)
    with pytest.raises(pv.InputError, match="momentum"):
        pv.TargetPropConfig(momentum=-0.1)
    with pytest.raises(TypeError, match="VolumetricNetwork"):
        pv.TargetProp("not a network")
    with pytest.raises(TypeError, match="config"):
        pv.TargetProp(net, [("momentum", 0.5)])
    tp = pv.TargetProp(net)
    with pytest.raises(pv.ShapeError, match=r"\[4, 4\]"):
        tp.step(x, y[:, :3])
    with pytest.raises(pv.ShapeError, match="4 samples but targets have 3"):
        tp.step(x, y[:3])
    with pytest.raises(pv.ShapeError, match="Dense"):
        tp.step(x[:, :5], y)
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(pv.InputError, match="row 1, column 2"):
        tp.step(bad, y)
    with pytest.raises(pv.InputError, match="lr"):
        tp.step(x, y, lr=-1.0)
    with pytest.raises(pv.InputError, match="mode"):
        tp.step(x, y, mode="fast")
    with pytest.raises(pv.InputError, match="epochs"):
        tp.train(x, y, epochs=-1)
    with pytest.raises(pv.InputError, match="no active layers"):
        pv.TargetProp(pv.VolumetricNetwork(1, 1, 1, 1)).step(x, y)
    assert tp.links == [] and tp.targets == {}  # nothing ran


def test_train_reports_epochs_and_calls_back():
    x, y = regression(n=8)
    seen = []
    tp = pv.TargetProp(dense_mlp(), {"batch_size": 4, "learning_rate": 0.1})
    result = tp.train(x, y, epochs=5, on_epoch=lambda e, loss, s: seen.append((e, loss)))
    assert [e for e, _ in seen] == list(range(5)) and [l for _, l in seen] == result.loss_history
    assert result.steps == 10 and result.final_loss == result.loss_history[-1] < result.loss_history[0]
    tp.reset()
    assert tp.links == [] and np.all(np.isnan(tp.link_budgets))
    with pytest.raises(ZeroDivisionError):
        tp.train(x, y, epochs=2, on_epoch=lambda *a: 1 / 0)
