"""Observers (events per grid layer on forward and backward, statistics against NumPy, exceptions
that leave the network intact), net.blueprint() and net.memory_report()."""

import numpy as np
import pytest

import polyvtd as pv
from polyvtd import layers as L
from reference import dna as ref

RNG = np.random.default_rng(5)


def data(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def linear_net():
    """Dense 4→6 (linear), Dense 6→3 (tanh): outputs and gradients are easy to recompute."""
    net = pv.VolumetricNetwork(1, 1, 1, 2)
    net.set_layer(0, 0, 0, 0, L.Dense(4, 6, seed=1))
    net.set_layer(0, 0, 0, 1, L.Dense(6, 3, "tanh", seed=2))
    return net


def check_stats(stats, values):
    want = ref.stats(values)
    for key in ("avg", "std", "max", "min"):
        assert getattr(stats, key) == pytest.approx(want[key], rel=1e-5, abs=1e-6), key
    assert (stats.active, stats.total) == (want["active"], want["total"])


def test_forward_events_carry_each_layer_output_and_its_stats():
    net, x = linear_net(), data(5, 4)
    events = []
    net.add_observer(events.append, values=True)
    y = net.forward(x)
    assert [(e.mode, e.coord, e.layer_type, e.shape) for e in events] == [
        ("forward", (0, 0, 0, 0), "Dense", [5, 6]), ("forward", (0, 0, 0, 1), "Dense", [5, 3])]
    hidden = x @ net.layer(0, 0, 0, 0).weights.master.T
    np.testing.assert_allclose(events[0].values, hidden, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(events[1].values, y)
    for e in events:
        check_stats(e.stats, e.values)


def test_backward_events_carry_the_gradient_of_each_layer_output():
    net, x, g = linear_net(), data(5, 4), data(5, 3)
    events = []
    net.add_observer(events.append, values=True)
    net.backward(x, g)
    backward = [e for e in events if e.mode == "backward"]
    assert [e.coord for e in backward] == [(0, 0, 0, 1), (0, 0, 0, 0)]
    np.testing.assert_array_equal(backward[0].values, g)
    out = [e.values for e in events if e.mode == "forward"][1]
    w1 = net.layer(0, 0, 0, 1).weights.master.astype(np.float64)
    want = (g * (1 - out.astype(np.float64) ** 2)) @ w1
    np.testing.assert_allclose(backward[1].values, want, rtol=1e-5, atol=1e-6)
    check_stats(backward[1].stats, backward[1].values)


def test_stats_count_active_values_as_the_reference():
    net = pv.VolumetricNetwork(1, 1, 1, 1)
    net.set_layer(0, 0, 0, 0, L.Dense(3, 4, "relu", seed=3))
    seen = []
    net.add_observer(seen.append)
    y = net.forward(data(8, 3))
    stats = seen[0].stats
    assert seen[0].values is None
    assert stats.active == int(np.sum(np.abs(y) > 1e-6)) and stats.total == y.size
    assert stats.active < stats.total, "ReLU zeros are inactive"
    assert stats.to_dict() == {k: getattr(stats, k) for k in ("avg", "std", "max", "min", "active", "total")}
    d = seen[0].to_dict()
    assert (d["mode"], d["z"], d["y"], d["x"], d["l"], d["layer_type"]) == ("forward", 0, 0, 0, 0, "Dense")
    assert d["stats"]["total"] == y.size and "LayerEvent(forward" in repr(seen[0])


def test_containers_report_once_and_disabled_layers_not_at_all():
    net = pv.VolumetricNetwork(1, 1, 1, 3)
    net.set_layer(0, 0, 0, 0, L.Dense(4, 4, seed=1))
    net.set_layer(0, 0, 0, 1, L.Parallel(L.Dense(4, 4, seed=2), (0, 0, 0, 0), combine="add"))
    net.set_layer(0, 0, 0, 2, L.LayerNorm(4))
    net.set_disabled(0, 0, 0, 2)
    events = []
    with net.observe(events.append):
        net.forward(data(2, 4))
    assert [(e.coord, e.layer_type) for e in events] == [((0, 0, 0, 0), "Dense"), ((0, 0, 0, 1), "Parallel")]


def test_training_reports_every_step_both_ways():
    net, x, t = linear_net(), data(8, 4), data(8, 3)
    modes = []
    with net.observe(lambda e: modes.append(e.mode)):
        result = net.train(x, t, epochs=2, batch_size=4, shuffle=False)
    assert result.steps == 4
    assert modes.count("forward") == modes.count("backward") == 4 * 2


def test_observers_run_in_order_and_can_be_removed():
    net, x = linear_net(), data(2, 4)
    calls = []
    h1 = net.add_observer(lambda e: calls.append(("first", e.coord)))
    h2 = net.add_observer(lambda e: calls.append(("second", e.coord)))
    assert net.observers == [h1, h2]
    net.forward(x)
    assert [c[0] for c in calls] == ["first", "second", "first", "second"]
    net.remove_observer(h1)
    calls.clear()
    net.forward(x)
    assert [c[0] for c in calls] == ["second", "second"]
    net.remove_observer(h2)
    assert net.observers == []
    with pytest.raises(pv.InputError, match=f"no observer with handle {h2}"):
        net.remove_observer(h2)


def test_observing_does_not_change_results():
    net, x = linear_net(), data(6, 4)
    plain = net.forward(x)
    with net.observe(lambda e: None, values=True):
        np.testing.assert_array_equal(net.forward(x), plain)
    assert net.observers == []


class Stop(Exception):
    pass


def raise_at_second_layer(event):
    if event.coord == (0, 0, 0, 1):
        raise Stop("seen enough")


def test_a_callback_exception_propagates_and_leaves_the_network_intact():
    net, x, t = linear_net(), data(8, 4), data(8, 3)
    before = [p.master.copy() for p in net.parameters]
    expected = net.forward(x)
    with pytest.raises(Stop, match="seen enough"):
        with net.observe(raise_at_second_layer):
            net.forward(x)
    assert net.observers == []
    with net.observe(raise_at_second_layer):
        with pytest.raises(Stop):
            net.backward(x, data(8, 3))
        with pytest.raises(Stop):
            net.train(x, t, epochs=3, lr=0.1)
    for p, w in zip(net.parameters, before):
        np.testing.assert_array_equal(p.master, w)
    np.testing.assert_array_equal(net.forward(x), expected)


def test_bad_observers_are_rejected():
    net = linear_net()
    with pytest.raises(TypeError, match="callable"):
        net.add_observer(42)

    def add_inside(event):
        net.add_observer(print)

    net.add_observer(add_inside)
    with pytest.raises(pv.InputError, match="while the network is running"):
        net.forward(data(1, 4))


def test_copies_start_without_observers():
    net = linear_net()
    net.add_observer(print)
    assert net.copy().observers == []


# --- blueprint ------------------------------------------------------------------------------

def container_grid():
    net = pv.VolumetricNetwork(1, 2, 1, 2)
    net.set_layer(0, 0, 0, 0, L.Dense(4, 8, "relu", bias=True, seed=1))
    net.set_layer(0, 0, 0, 1, L.Dense(8, 8, seed=2))
    net.set_layer(0, 1, 0, 0, L.Parallel(L.Dense(8, 8, seed=3), (0, 0, 0, 1), combine="add"))
    net.set_layer(0, 1, 0, 1, L.Sequential(L.LayerNorm(8), L.Dense(8, 2, seed=4), L.Softmax()))
    return net


def test_blueprint_lists_structure_shapes_and_exact_parameter_counts():
    net = container_grid()
    net.set_disabled(0, 0, 0, 1)
    bp = net.blueprint()
    assert (bp["total_layers"], bp["active_layers"], bp["total_parameters"]) == (4, 3, net.num_params)
    assert bp["dims"] == [1, 2, 1, 2] and bp["input_shape"] == [4] and bp["output_shape"] == [2]
    first, off, par, seq = bp["layers"]
    assert (first["type"], first["activation"], first["parameters"], first["bytes"]) == ("Dense", "ReLU", 4 * 8 + 8, 4 * 40)
    assert (first["input_shape"], first["output_shape"], first["link"], first["disabled"]) == ([4], [8], None, False)
    assert off["disabled"] and off["input_shape"] is None and off["parameters"] == 64
    assert par["combine_mode"] == "add" and par["parameters"] == 64 and par["input_shape"] == [8]
    own, link = par["branches"]
    assert own["type"] == "Dense" and own["output_shape"] == [8]
    assert link == {"type": "link", "target": [0, 0, 0, 1], "input_shape": [8], "output_shape": [8]}
    assert [s["type"] for s in seq["stages"]] == ["LayerNorm", "Dense", "Softmax"]
    assert seq["stages"][1]["input_shape"] == [8] and seq["stages"][2]["output_shape"] == [2]
    assert seq["parameters"] == 16 + 16 and seq["activation"] is None
    assert sum(layer["parameters"] for layer in bp["layers"]) == net.num_params


def test_blueprint_shapes_follow_the_given_input_and_links():
    net = pv.VolumetricNetwork(1, 1, 1, 3)
    net.set_layer(0, 0, 0, 0, L.Softmax())
    net.set_layer(0, 0, 0, 1, L.Dense(6, 6, seed=1))
    net.set_layer(0, 0, 0, 2, L.Residual())
    net.set_link(0, 0, 0, 2, (0, 0, 0, 0))
    assert net.blueprint()["input_shape"] is None
    bp = net.blueprint(input_shape=(3, 6))
    assert [e["output_shape"] for e in bp["layers"]] == [[3, 6], [3, 6], [3, 6]]
    assert bp["layers"][2]["link"] == [0, 0, 0, 0]
    assert net.blueprint(input_shape=[5])["output_shape"] is None, "a shape the network does not take"


# --- memory report --------------------------------------------------------------------------

def test_memory_report_splits_masters_and_packed_versions_per_dtype():
    net = container_grid()
    report = net.memory_report()
    assert report["total_bytes"] == report["master_bytes"] == net.memory_bytes == 4 * net.num_params
    assert report["dtypes"] == {"float32": {"tensors": len(net.parameters), "parameters": net.num_params,
                                            "active_bytes": 4 * net.num_params, "held_bytes": 4 * net.num_params}}
    net.morph_all("int4")
    report = net.memory_report()
    int4 = report["dtypes"]["int4"]
    morphed = [p for p in net.parameters if p.dtype == "int4"]
    assert int4["tensors"] == len(morphed) and int4["parameters"] == sum(len(p) for p in morphed)
    assert int4["held_bytes"] == sum(len(p.packed_bytes()) for p in morphed)
    assert int4["active_bytes"] == sum(p.size_in_bytes() for p in morphed)
    assert report["packed_bytes"] == int4["held_bytes"]
    assert report["total_bytes"] == report["master_bytes"] + report["packed_bytes"] == net.memory_bytes
    net.layer(0, 0, 0, 0).weights.release_master()
    after = net.memory_report()
    assert after["master_bytes"] == report["master_bytes"] - 4 * 32
    assert after["dtypes"]["float32"]["held_bytes"] == after["master_bytes"]
