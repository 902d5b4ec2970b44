"""Training: two-moons accuracy, losses against NumPy, optimisers, LR schedules, clipping,
schedules of computation, determinism, quantisation-aware training, NaN stop, callbacks."""

import math

import numpy as np
import pytest

import polyvtd as pv
from reference import codecs as ref_codecs
from reference.dense import rel_err

MOONS_SPEC = {
    "depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 3,
    "layers": [
        {"l": 0, "type": "dense", "activation": "relu", "input_height": 2, "output_height": 32, "bias": True},
        {"l": 1, "type": "dense", "activation": "relu", "input_height": 32, "output_height": 32, "bias": True},
        {"l": 2, "type": "dense", "activation": "linear", "input_height": 32, "output_height": 2, "bias": True},
    ],
}


# ---- helpers --------------------------------------------------------------------------------------

def two_moons(n=1024, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    half = n // 2
    a = rng.uniform(0, np.pi, half)
    b = rng.uniform(0, np.pi, n - half)
    x = np.concatenate([np.c_[np.cos(a), np.sin(a)], np.c_[1 - np.cos(b), 0.5 - np.sin(b)]])
    x += rng.normal(0, noise, x.shape)
    y = np.concatenate([np.zeros(half, dtype=np.int64), np.ones(n - half, dtype=np.int64)])
    return x.astype(np.float32), y


def moons_net(seed=1):
    return pv.VolumetricNetwork.from_spec(MOONS_SPEC, seed=seed)


def regression(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    a = rng.standard_normal((4, 2))
    y = (np.tanh(x @ a) + 0.1).astype(np.float32)
    return x, y


def regression_net(seed=0):
    net = pv.VolumetricNetwork(1, 1, 1, 2)
    net.set_layer(0, 0, 0, 0, pv.layers.Dense(4, 16, "tanh", bias=True, seed=seed))
    net.set_layer(0, 0, 0, 1, pv.layers.Dense(16, 2, bias=True, seed=seed + 1))
    return net


def masters(net):
    out = []
    for _, layer in net.layers():
        out.append(layer.weights.master)
        if layer.bias is not None:
            out.append(layer.bias.master)
    return out


def flat(arrays):
    return np.concatenate([a.ravel() for a in arrays]).astype(np.float64)


def accuracy(net, x, y):
    return float((net.forward(x).argmax(axis=1) == y).mean())


def snapshots(net):
    """An on_epoch callback that keeps the flattened weights after every epoch."""
    taken = []

    def callback(epoch, loss, seconds):
        taken.append(flat(masters(net)))

    return taken, callback


# ---- two moons ------------------------------------------------------------------------------------

def test_two_moons_with_class_index_targets():
    x, y = two_moons()
    net = moons_net()
    result = net.train(x, y, epochs=30, lr=0.01, batch_size=64, loss="cross_entropy", optimizer="adam")
    assert result.loss_history[-1] < 0.5 * result.loss_history[0]
    assert accuracy(net, x, y) >= 0.95


def test_two_moons_with_one_hot_targets():
    x, y = two_moons(seed=1)
    one_hot = np.eye(2, dtype=np.float32)[y]
    net = moons_net(seed=2)
    net.train(x, one_hot, epochs=30, lr=0.01, batch_size=64, loss="cross_entropy", optimizer="adam")
    assert accuracy(net, x, y) >= 0.95


def test_class_indices_and_one_hot_targets_train_identically():
    x, y = two_moons(n=256)
    a, b = moons_net(), moons_net()
    ra = a.train(x, y, epochs=3, loss="cross_entropy", optimizer="adam")
    rb = b.train(x, np.eye(2, dtype=np.float32)[y], epochs=3, loss="cross_entropy", optimizer="adam")
    assert ra.loss_history == rb.loss_history


@pytest.mark.parametrize("alias", ["crossentropy", "ce", "Cross_Entropy"])
def test_cross_entropy_aliases(alias):
    x, y = two_moons(n=128)
    ref = moons_net().train(x, y, epochs=2, loss="cross_entropy", optimizer="adam")
    got = moons_net().train(x, y, epochs=2, loss=alias, optimizer="adam")
    assert got.loss_history == ref.loss_history


def test_class_index_out_of_range_is_an_input_error():
    x, y = two_moons(n=64)
    with pytest.raises(pv.InputError):
        moons_net().train(x, y + 1, epochs=1, loss="cross_entropy")


# ---- loss values against NumPy (lr = 0 leaves the weights alone) -----------------------------------

def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("batch_size", [7, 64, 1000])
def test_cross_entropy_value_is_pytorchs(batch_size):
    x, y = two_moons(n=200)
    rng = np.random.default_rng(3)
    soft = rng.dirichlet([1.0, 1.0], size=200).astype(np.float32)  # probability targets
    net = moons_net()
    logits = net.forward(x).astype(np.float64)
    for targets in (y, soft):
        t = np.eye(2)[targets] if targets.ndim == 1 else targets.astype(np.float64)
        expected = float(np.mean(-(t * log_softmax(logits)).sum(axis=1)))
        result = net.train(x, targets, epochs=1, lr=0.0, batch_size=batch_size, loss="cross_entropy")
        assert result.loss_history[0] == pytest.approx(expected, rel=1e-5)
    np.testing.assert_array_equal(net.forward(x), logits.astype(np.float32))  # lr 0: unchanged


def test_mse_value_and_one_dimensional_targets():
    x, y = regression(n=100)
    net = regression_net()
    out = net.forward(x).astype(np.float64)
    result = net.train(x, y, epochs=1, lr=0.0, batch_size=16, loss="mse")
    assert result.loss_history[0] == pytest.approx(float(np.mean((out - y) ** 2)), rel=1e-5)
    single = pv.VolumetricNetwork(1, 1, 1, 1)
    single.set_layer(0, 0, 0, 0, pv.layers.Dense(4, 1, seed=3))
    out1 = single.forward(x)[:, 0].astype(np.float64)
    r1 = single.train(x, y[:, 0], epochs=1, lr=0.0, loss="mse")  # [batch] targets = one column
    assert r1.loss_history[0] == pytest.approx(float(np.mean((out1 - y[:, 0]) ** 2)), rel=1e-5)


# ---- optimisers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.1), ("momentum", 0.02), ("adam", 0.01),
                                          ("adamw", 0.01), ("rmsprop", 0.005)])
def test_every_optimizer_reduces_the_loss(optimizer, lr):
    x, y = regression()
    net = regression_net()
    result = net.train(x, y, epochs=15, lr=lr, batch_size=32, optimizer=optimizer, loss="mse")
    assert len(result.loss_history) == 15
    assert result.loss_history[-1] < 0.5 * result.loss_history[0]
    assert all(math.isfinite(v) for v in result.loss_history)


def test_optimizers_follow_different_paths():
    x, y = regression()
    histories = {name: regression_net().train(x, y, epochs=3, lr=0.01, optimizer=name).loss_history
                 for name in ("sgd", "momentum", "adam", "adamw", "rmsprop")}
    assert len({tuple(h) for h in histories.values()}) == 5


def test_weight_decay_shrinks_the_weights():
    x, y = regression()
    plain, decayed = regression_net(), regression_net()
    plain.train(x, y, epochs=10, lr=0.05, optimizer="sgd")
    decayed.train(x, y, epochs=10, lr=0.05, optimizer="sgd", weight_decay=0.5)
    assert np.linalg.norm(flat(masters(decayed))) < 0.9 * np.linalg.norm(flat(masters(plain)))


# ---- learning-rate schedules ----------------------------------------------------------------------

@pytest.mark.parametrize("schedule", ["cosine", "linear", "step", "exponential", "constant",
                                      {"type": "step", "step_size": 2, "gamma": 0.5},
                                      {"type": "cosine", "warmup_steps": 10, "min_lr": 1e-4},
                                      {"type": "exponential", "gamma": 0.7}])
def test_schedules_run_and_train(schedule):
    if schedule == "step":
        schedule = {"type": "step", "step_size": 3}
    x, y = regression()
    result = regression_net().train(x, y, epochs=8, lr=0.05, optimizer="sgd", schedule=schedule)
    assert len(result.loss_history) == 8 and result.stopped_early is None
    assert result.loss_history[-1] < result.loss_history[0]


def epoch_deltas(schedule, epochs=10, optimizer="sgd", lr=0.05):
    x, y = regression()
    net = regression_net()
    start = flat(masters(net))
    taken, callback = snapshots(net)
    net.train(x, y, epochs=epochs, lr=lr, optimizer=optimizer, schedule=schedule, on_epoch=callback)
    points = [start] + taken
    return [float(np.linalg.norm(b - a)) for a, b in zip(points, points[1:])]


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_decaying_schedules_make_late_epochs_change_little(schedule):
    constant = epoch_deltas(None)
    decayed = epoch_deltas(schedule)
    assert decayed[0] == pytest.approx(constant[0], rel=0.2)  # starts at full lr
    assert decayed[-1] < 0.2 * decayed[0]
    assert decayed[-1] < 0.3 * constant[-1]


def test_step_schedule_with_gamma_zero_freezes_the_weights():
    deltas = epoch_deltas({"type": "step", "step_size": 2, "gamma": 0.0}, epochs=5)
    assert deltas[0] > 0 and deltas[1] > 0
    assert deltas[2:] == [0.0, 0.0, 0.0]  # lr = 0 from epoch 2 on


def test_warmup_slows_the_first_steps():
    plain = epoch_deltas("constant", epochs=2)
    warm = epoch_deltas({"type": "constant", "warmup_steps": 1000}, epochs=2)
    assert warm[0] < 0.1 * plain[0]


def test_warmup_without_a_schedule_type_is_not_ignored():
    plain = epoch_deltas(None, epochs=2)
    warm = epoch_deltas({"warmup_steps": 1000}, epochs=2)
    assert warm[0] < 0.1 * plain[0]


def test_step_schedule_needs_a_step_size_and_unknown_options_are_rejected():
    x, y = regression(n=32)
    with pytest.raises(pv.InputError):
        regression_net().train(x, y, epochs=1, schedule="step")
    with pytest.raises(pv.InputError, match="warmup"):
        regression_net().train(x, y, epochs=1, schedule={"type": "cosine", "warmup": 3})


# ---- gradient clipping ----------------------------------------------------------------------------

def test_clip_norm_bounds_every_step():
    x, y = regression()
    net = regression_net()
    start = flat(masters(net))
    clip, lr = 1e-3, 1.0
    result = net.train(x, y, epochs=2, lr=lr, batch_size=32, optimizer="sgd", clip_norm=clip)
    moved = np.linalg.norm(flat(masters(net)) - start)
    assert 0 < moved <= result.steps * lr * clip * (1 + 1e-4)
    free = regression_net()
    free.train(x, y, epochs=2, lr=lr, batch_size=32, optimizer="sgd")
    assert np.linalg.norm(flat(masters(free)) - start) > 10 * moved


@pytest.mark.parametrize("clip", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_clip_norm(clip):
    x, y = regression(n=16)
    with pytest.raises(pv.InputError):
        regression_net().train(x, y, epochs=1, clip_norm=clip)


# ---- schedules of computation, determinism ---------------------------------------------------------

def test_modes_give_the_same_loss_history():
    x, y = two_moons(n=512)
    histories = {mode: moons_net().train(x, y, epochs=10, lr=0.01, loss="cross_entropy", optimizer="adam",
                                         mode=mode).loss_history for mode in ("normal", "tiled", "parallel")}
    for mode in ("tiled", "parallel"):
        assert rel_err(histories[mode], histories["normal"]) <= 1e-4


def test_same_seed_same_history_and_weights():
    x, y = regression()
    a, b = regression_net(), regression_net()
    ra = a.train(x, y, epochs=4, lr=0.01, optimizer="adam", seed=5)
    rb = b.train(x, y, epochs=4, lr=0.01, optimizer="adam", seed=5)
    assert ra.loss_history == rb.loss_history
    for p, q in zip(masters(a), masters(b)):
        np.testing.assert_array_equal(p, q)
    rc = regression_net().train(x, y, epochs=4, lr=0.01, optimizer="adam", seed=6)
    assert rc.loss_history != ra.loss_history  # another shuffle


def test_shuffle_false_ignores_the_seed():
    x, y = regression()
    ra = regression_net().train(x, y, epochs=3, lr=0.01, shuffle=False, seed=1)
    rb = regression_net().train(x, y, epochs=3, lr=0.01, shuffle=False, seed=2)
    assert ra.loss_history == rb.loss_history


# ---- quantisation-aware training ----------------------------------------------------------------

def test_training_a_morphed_network_updates_the_master_and_stays_int8():
    x, y = two_moons(n=256)
    net = moons_net()
    net.morph_all("int8")
    layer = net.layer(0, 0, 0, 1)
    master_before, deq_before = layer.weights.master, layer.weights.dequantize()
    result = net.train(x, y, epochs=5, lr=0.01, loss="cross_entropy", optimizer="adam")
    assert result.stopped_early is None
    assert all(l.dtype == "int8" for _, l in net.layers())
    assert not np.array_equal(layer.weights.master, master_before)
    deq = layer.weights.dequantize()
    assert not np.array_equal(deq, deq_before)
    # re-morphed from the new master with a fresh per-dtype scale
    expected, scale, _ = ref_codecs.standard_quantize(layer.weights.master, "int8")
    np.testing.assert_array_equal(deq.ravel(), expected)
    assert layer.weights.scale == scale
    # and it computes with the int8 values
    hand = x
    for _, l in net.layers():
        hand = l.forward(hand)
    np.testing.assert_array_equal(net.forward(x), hand)


# ---- non-finite losses stop cleanly ---------------------------------------------------------------

def test_huge_lr_stops_early_with_finite_weights():
    x, y = regression()
    net = regression_net()
    result = net.train(x, y, epochs=5, lr=1e30, optimizer="sgd", loss="mse")
    assert isinstance(result.stopped_early, str) and result.stopped_early
    assert len(result.loss_history) < 5
    assert all(np.isfinite(m).all() for m in masters(net))
    assert np.isfinite(net.forward(x)).all()
    assert result.final_loss is None or math.isfinite(result.final_loss)
    assert "stopped_early" in repr(result)


def test_huge_lr_on_a_morphed_network_also_stops_cleanly():
    x, y = two_moons(n=256)
    net = moons_net()
    net.morph_all("int4")
    result = net.train(x, np.eye(2, dtype=np.float32)[y], epochs=5, lr=1e30, loss="mse")
    assert isinstance(result.stopped_early, str)
    assert all(np.isfinite(m).all() for m in masters(net))
    assert np.isfinite(net.forward(x)).all()
    assert all(l.dtype == "int4" for _, l in net.layers())


# ---- progress, callbacks, result ------------------------------------------------------------------

def test_progress_bar(capsys):
    x, y = regression(n=64)
    result = regression_net().train(x, y, epochs=3, progress=True)
    assert len(result.loss_history) == 3
    err = capsys.readouterr().err
    assert "train" in err and "3/3" in err


def test_on_epoch_receives_every_epoch():
    x, y = regression(n=100)
    calls = []
    result = regression_net().train(x, y, epochs=6, batch_size=16,
                                    on_epoch=lambda e, loss, s: calls.append((e, loss, s)))
    assert [c[0] for c in calls] == list(range(6))
    assert [c[1] for c in calls] == result.loss_history
    assert [c[2] for c in calls] == result.epoch_times


def test_on_epoch_exception_propagates_and_stops_training():
    x, y = regression(n=100)
    net, once = regression_net(), regression_net()

    class Stop(Exception):
        pass

    def callback(epoch, loss, seconds):
        raise Stop(epoch)

    with pytest.raises(Stop):
        net.train(x, y, epochs=5, lr=0.05, on_epoch=callback)
    once.train(x, y, epochs=1, lr=0.05)
    for p, q in zip(masters(net), masters(once)):
        np.testing.assert_array_equal(p, q)  # exactly one epoch ran


def test_training_result_fields():
    x, y = regression(n=100)
    result = regression_net().train(x, y, epochs=4, batch_size=16)
    assert len(result.loss_history) == 4 and len(result.epoch_times) == 4
    assert all(t >= 0 for t in result.epoch_times)
    assert result.final_loss == result.loss_history[-1]
    assert result.steps == 4 * math.ceil(100 / 16)
    assert result.stopped_early is None
    assert "epochs=4" in repr(result)


def test_zero_epochs():
    x, y = regression(n=10)
    net = regression_net()
    before = masters(net)
    result = net.train(x, y, epochs=0)
    assert result.loss_history == [] and result.final_loss is None and result.steps == 0
    for p, q in zip(before, masters(net)):
        np.testing.assert_array_equal(p, q)


def test_empty_training_result_repr_has_no_negative_time():
    x, y = regression(n=10)
    assert "-0.000" not in repr(regression_net().train(x, y, epochs=0))
