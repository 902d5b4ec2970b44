"""The systolic mesh (pv.Systolic): cycle semantics against the NumPy reference
(tests/reference/systolic.py), feedback loops through remote links, history capture, backprop
through time against finite differences, a delayed-recall task it learns, and online learning
through the target-propagation bridge (step_targetprop)."""

import threading

import numpy as np
import pytest

import polyvtd as pv
from reference.gradcheck import central_difference
from reference.systolic import Cell, run, sequence_mse

L = pv.layers
RNG = np.random.default_rng(7)


def data(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def chain(*layers):
    """A 1×1×1×L grid holding `layers` in order."""
    net = pv.VolumetricNetwork(1, 1, 1, len(layers))
    for l, layer in enumerate(layers):
        net.set_layer(0, 0, 0, l, layer)
    return net


def cells_of(net, links=None, disabled=()):
    """The reference cells of a 1×1×1×L grid of Dense/Residual layers."""
    cells = []
    for l, (_, layer) in enumerate(net.layers()):
        link = (links or {}).get(l)
        if layer.type == "Residual":
            cells.append(Cell("residual", link=link, disabled=l in disabled))
        else:
            b = None if layer.bias is None else layer.bias.master.astype(np.float64)
            cells.append(Cell("dense", layer.weights.master.astype(np.float64), b, layer.activation.lower(),
                              link=link, disabled=l in disabled))
    return cells


def wire(net, links, disabled=()):
    for l, target in links.items():
        net.set_link(0, 0, 0, l, (0, 0, 0, target))
    for l in disabled:
        net.set_disabled(0, 0, 0, l)
    return net


def feedback_mesh(seed=1):
    """x → Dense → Residual(+ feedback from cell 2) → Dense(tanh) → Dense: a loop of 2 cycles."""
    net = chain(L.Dense(2, 3, "tanh", seed=seed), L.Residual(), L.Dense(3, 3, "tanh", seed=seed + 1),
                L.Dense(3, 2, seed=seed + 2))
    return wire(net, {1: 2}), {1: 2}, ()


def tangled_mesh(seed=5):
    """A Residual taking its default skip (what its predecessor consumed: cell 0's output), a
    disabled cell (a one-cycle delay), a Residual fed back from a later cell, a biased output."""
    net = chain(L.Dense(3, 3, "tanh", seed=seed), L.Dense(3, 3, seed=seed + 1), L.Residual(),
                L.Dense(3, 3, seed=seed + 2), L.Residual(), L.Dense(3, 3, "tanh", seed=seed + 3),
                L.Dense(3, 2, bias=True, seed=seed + 4))
    return wire(net, {4: 5}, disabled=(3,)), {4: 5}, (3,)


# ---- cycle semantics --------------------------------------------------------------------------

def test_a_chain_of_k_layers_needs_k_cycles():
    k = 4
    net = chain(*[L.Dense(3, 3, "tanh", seed=s) for s in range(k)])
    mesh = pv.Systolic(net)
    x = data(5, 3)
    mesh.set_input(x)
    for c in range(1, k):
        mesh.step()
        assert mesh.cycle == c and mesh.output() is None
        assert [mesh.state(0, 0, 0, l) is not None for l in range(k)] == [l < c for l in range(k)]
    out = mesh.step()
    assert out.shape == (5, 3)
    np.testing.assert_allclose(out, net.forward(x), rtol=1e-6, atol=1e-6)


def test_double_buffering_moves_data_one_cell_per_cycle():
    net = chain(*[L.Dense(2, 2, "tanh", seed=s) for s in range(3)])
    mesh = pv.Systolic(net)
    inputs = [data(4, 2) for _ in range(7)]
    outs = mesh.run(inputs)
    trace = run(cells_of(net), inputs)
    assert outs[:2] == [None, None]
    for t in range(2, 7):
        # the output after cycle t is the chain applied to the input presented at cycle t - 2
        np.testing.assert_allclose(outs[t], trace[t][-1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(outs[t], net.forward(inputs[t - 2]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("build", [feedback_mesh, tangled_mesh])
def test_cycles_match_the_numpy_reference(build):
    net, links, disabled = build()
    width = net.input_shape[0]
    inputs = [data(3, width) for _ in range(9)]
    mesh = pv.Systolic(net)
    trace = run(cells_of(net, links, disabled), inputs)
    for t, x in enumerate(inputs):
        mesh.step(x)
        for l, expected in enumerate(trace[t]):
            got = mesh.state(0, 0, 0, l)
            assert (got is None) == (expected is None), (t, l)
            if expected is not None:
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=f"cycle {t + 1}, cell {l}")


def test_a_self_linked_residual_accumulates_across_cycles():
    # out(c) = x + out(c − 1): the link delivers the cell's own output on the next cycle.
    net = wire(chain(L.Residual(), L.Dense(2, 2, seed=3)), {0: 0})
    mesh = pv.Systolic(net, history=8)
    x = data(1, 2)
    mesh.set_input(x)
    for c in range(1, 6):
        mesh.step()
        np.testing.assert_allclose(mesh.state(0, 0, 0, 0), c * x, rtol=1e-6)
    w = net.layer(0, 0, 0, 1).weights.master
    np.testing.assert_allclose(mesh.output(), (4 * x) @ w.T, rtol=1e-5)
    mesh.set_input(np.zeros_like(x))  # the loop keeps its sum without input
    mesh.step(cycles=3)
    np.testing.assert_allclose(mesh.state(0, 0, 0, 0), 5 * x, rtol=1e-6)


def test_cells_running_side_by_side_give_the_same_cycles():
    # "parallel" runs a cycle's cells concurrently: bit-identical to "tiled" (the same kernels
    # one cell after another); "normal" accumulates in f64 (test_dense.py), so it is close.
    net, _, _ = tangled_mesh()
    inputs = [data(4, 3) for _ in range(6)]
    results = {mode: pv.Systolic(net, mode=mode).run(inputs) for mode in ("normal", "tiled", "parallel")}
    for a, b, c in zip(results["tiled"], results["parallel"], results["normal"]):
        assert (a is None) == (b is None) == (c is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)
            np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)


def test_feedback_links_run_only_in_the_mesh():
    net, _, _ = feedback_mesh()
    with pytest.raises(pv.SpecError, match=r"\(0,0,0,1\).*feedback loop.*Systolic"):
        net.forward(data(2, 2))
    again = pv.VolumetricNetwork.from_spec(net.to_spec(), seed=1)
    assert again.link(0, 0, 0, 1) == (0, 0, 0, 2)
    assert pv.Systolic(again).run([data(2, 2)] * 4)[-1].shape == (2, 2)


def test_the_mesh_follows_edits_to_the_network():
    net = chain(L.Dense(2, 2, seed=1), L.Dense(2, 2, seed=2))
    mesh = pv.Systolic(net)
    x = data(3, 2)
    mesh.step(x, cycles=2)
    net.set_disabled(0, 0, 0, 1)  # now a delay: the output becomes cell 0's output
    mesh.step()
    np.testing.assert_allclose(mesh.output(), mesh.state(0, 0, 0, 0), rtol=1e-6)
    mesh.reset()
    assert mesh.cycle == 0 and mesh.output() is None and mesh.states() == {}


# ---- history --------------------------------------------------------------------------------

def test_history_keeps_the_last_cycles_with_each_cells_inputs_and_outputs():
    net, _, _ = feedback_mesh()
    mesh = pv.Systolic(net, history=3)
    for x in [data(2, 2) for _ in range(6)]:
        mesh.step(x)
    assert mesh.captured_cycles == [4, 5, 6] and mesh.history_size == 3
    records = mesh.history(0, 0, 0, 1)
    assert [c for c, _, _ in records] == [4, 5, 6]
    # the newest record is the mesh's state; the Residual's input came from cell 0 one cycle earlier
    np.testing.assert_array_equal(records[-1][2], mesh.state(0, 0, 0, 1))
    np.testing.assert_array_equal(records[-1][1], mesh.last_input(0, 0, 0, 1))
    np.testing.assert_array_equal(records[-1][1], mesh.history(0, 0, 0, 0)[-2][2])
    # the feedback link: cell 1 at cycle c adds cell 2's output of cycle c − 1
    out2 = {c: y for c, _, y in mesh.history(0, 0, 0, 2)}
    np.testing.assert_allclose(records[-1][2] - records[-1][1], out2[5], rtol=1e-6, atol=1e-6)
    mesh.capture(False)
    assert mesh.captured_cycles == [] and mesh.history_size == 0


def test_history_memory_stays_bounded():
    net, _, _ = feedback_mesh()
    mesh = pv.Systolic(net)
    mesh.capture(cycles=4)
    mesh.set_input(data(2, 2))
    mesh.step(cycles=500)
    assert mesh.cycle == 500 and mesh.captured_cycles == [497, 498, 499, 500]


def test_capturing_a_cycle_does_not_deadlock():
    # Quirk 26: the reference locks a non-reentrant mutex twice when it captures history.
    net, _, _ = tangled_mesh()
    mesh = pv.Systolic(net, history=16, mode="parallel")
    mesh.set_input(data(8, 3))
    worker = threading.Thread(target=mesh.step, kwargs={"cycles": 50})
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert mesh.cycle == 50 and len(mesh.captured_cycles) == 16


# ---- backprop through time ------------------------------------------------------------------

@pytest.mark.parametrize("build", [feedback_mesh, tangled_mesh])
def test_bptt_gradients_match_finite_differences(build):
    net, links, disabled = build()
    width = net.input_shape[0]
    steps, scored = 10, [6, 7, 8, 9]
    inputs = [data(3, width) for _ in range(steps)]
    targets = data(len(scored), 3, 2)
    mesh = pv.Systolic(net, history=steps)
    mesh.run(inputs)
    loss, grads = mesh.backward(targets, loss="mse")
    assert len(grads) == len(net.parameters)

    cells = cells_of(net, links, disabled)
    target_map = {t: targets[k].astype(np.float64) for k, t in enumerate(scored)}
    assert loss == pytest.approx(sequence_mse(cells, inputs, target_map), rel=1e-5)
    # net.parameters run in traversal order, each layer's weights then its bias; a disabled
    # cell's weights are unused (zero gradient)
    tensors = [t for c in cells for t in (c.W, c.b) if t is not None]
    assert len(tensors) == len(grads)
    for t, g in zip(tensors, grads):
        expected = central_difference(lambda: sequence_mse(cells, inputs, target_map), t)
        assert g.shape == expected.shape
        assert np.abs(g - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max()), (g, expected)


def test_bptt_with_a_gradient_reports_the_inner_product():
    net, _, _ = feedback_mesh()
    mesh = pv.Systolic(net, history=6)
    outs = mesh.run([data(2, 2) for _ in range(6)])
    g = data(2, 2, 2)
    value, grads = mesh.backward(g, loss=None)
    assert value == pytest.approx(float(np.sum(outs[-2] * g[0]) + np.sum(outs[-1] * g[1])), rel=1e-5)
    value_at, grads_at = mesh.backward(g, loss=None, cycles=[5, 6])
    assert value_at == value and all(np.array_equal(a, b) for a, b in zip(grads, grads_at))
    # a single output's gradient applies to the last captured cycle
    single, _ = mesh.backward(g[1], loss=None)
    assert single == pytest.approx(float(np.sum(outs[-1] * g[1])), rel=1e-5)


# ---- learning -------------------------------------------------------------------------------

def recall_net(feedback, hidden=16, seed=3):
    """x_t → Dense → Residual (+ cell 2's output, fed back) → Dense(tanh) → Dense → y_t. The
    pipeline alone delays by 3 cycles; recalling x_{t−5} needs the loop to hold it."""
    net = chain(L.Dense(1, hidden, seed=seed), L.Residual(), L.Dense(hidden, hidden, "tanh", seed=seed + 1),
                L.Dense(hidden, 1, seed=seed + 2))
    if feedback:
        net.set_link(0, 0, 0, 1, (0, 0, 0, 2))
    else:
        net.set_disabled(0, 0, 0, 1)  # the same cells as a plain pipeline
    return net


def recall_mse(mesh, x, delay):
    mesh.reset()
    outs = mesh.run(x)
    return float(np.mean((np.stack(outs[delay:]) - x[:-delay]) ** 2))


def test_the_mesh_learns_delayed_recall_through_its_feedback_loop():
    # Bar: recall of the ±1 input presented 5 cycles earlier reaches MSE < 0.01 on fresh
    # sequences after 250 BPTT epochs, while the untrained mesh is at ≈1 (the input's variance)
    # and the same cells without the loop cannot go below ≈1.
    steps, batch, delay = 20, 64, 5
    x = RNG.choice([-1.0, 1.0], size=(steps, batch, 1)).astype(np.float32)
    fresh = RNG.choice([-1.0, 1.0], size=(steps, batch, 1)).astype(np.float32)
    losses = {}
    for feedback in (True, False):
        mesh = pv.Systolic(recall_net(feedback))
        before = recall_mse(mesh, fresh, delay)
        result = mesh.train_bptt(x, x[:-delay], epochs=250, lr=0.01, optimizer="adam")
        assert result.steps == 250 and result.stopped_early is None
        losses[feedback] = (before, result.loss_history[0], result.final_loss, recall_mse(mesh, fresh, delay))
    before, first, final, fresh_loss = losses[True]
    assert before > 0.9 and first > 0.9
    assert final < 0.01 and fresh_loss < 0.01
    assert losses[False][3] > 0.9


def test_online_training_continues_from_the_current_state():
    mesh = pv.Systolic(recall_net(True))
    x = RNG.choice([-1.0, 1.0], size=(10, 16, 1)).astype(np.float32)
    mesh.train_bptt(x, x[:-5], epochs=3, lr=0.01, reset=False)
    assert mesh.cycle == 30  # three windows of ten cycles, never reset
    assert mesh.history_size == 0 and mesh.captured_cycles == []


@pytest.mark.parametrize("scale, reason, steps", [
    (1e12, "loss became", 1),                 # the first step overflows the weights: the next loss is inf
    (1e30, "gradient became non-finite", 0),  # the first gradient overflows: no step is taken
])
def test_training_stops_on_non_finite_values_with_the_last_good_weights(scale, reason, steps):
    net = recall_net(True)
    mesh = pv.Systolic(net)
    x = RNG.choice([-1.0, 1.0], size=(8, 4, 1)).astype(np.float32)
    initial = [p.master.copy() for p in net.parameters]
    result = mesh.train_bptt(x, x[:-5] * scale, epochs=20, lr=1e30, optimizer="sgd")
    assert result.stopped_early and reason in result.stopped_early
    assert result.steps == steps and len(result.loss_history) == steps
    for p, w in zip(net.parameters, initial):
        np.testing.assert_array_equal(p.master, w)  # the weights that gave the last finite loss
    mesh.reset()
    assert all(np.isfinite(y).all() for y in mesh.run(x) if y is not None)


def test_train_bptt_target_steps_and_progress_callback():
    mesh = pv.Systolic(recall_net(True))
    x = RNG.choice([-1.0, 1.0], size=(12, 8, 1)).astype(np.float32)
    seen = []
    result = mesh.train_bptt(x, x[[2, 4]], target_steps=[7, 9], epochs=4, lr=0.01,
                             on_epoch=lambda epoch, loss, seconds: seen.append((epoch, loss)))
    assert [e for e, _ in seen] == [0, 1, 2, 3]
    assert [l for _, l in seen] == result.loss_history


# ---- online learning: the target-propagation bridge --------------------------------------------

def masters(net):
    return [p.master.copy() for p in net.parameters]


def mapping_task(seed=0):
    """32 inputs and what a fixed random 2-cell teacher mesh maps them to."""
    teacher = chain(L.Dense(4, 8, "tanh", seed=10), L.Dense(8, 2, seed=11))
    x = np.random.default_rng(seed).standard_normal((32, 4)).astype(np.float32)
    return x, pv.Systolic(teacher).step(x, cycles=2)


def test_the_bridge_learns_a_fixed_mapping_online():
    # Bar: a 2-cell mesh shown a fixed mapping cycle after cycle, one target-propagation step per
    # cycle and no BPTT, brings the output MSE from ≈0.085 to below 0.005 in 300 cycles.
    x, t = mapping_task()
    net = chain(L.Dense(4, 8, "tanh", seed=1), L.Dense(8, 2, seed=2))
    mesh = pv.Systolic(net)
    untouched = masters(net)
    assert mesh.step_targetprop(t, x=x) is None  # data has not reached the output: nothing learns
    assert all(np.array_equal(a, b) for a, b in zip(untouched, masters(net)))
    losses = [mesh.step_targetprop(t) for _ in range(300)]
    assert mesh.cycle == 301 and mesh.targetprop_stopped is None
    assert losses[0] > 0.05 and losses[-1] < 0.005, (losses[0], losses[-1])
    assert losses[-1] < 0.1 * losses[0]
    assert all(np.isfinite(m).all() for m in masters(net))
    assert float(np.mean((mesh.step() - t) ** 2)) < 0.005  # the mesh's own output, after learning
    assert mesh.targetprop_config.use_chain_rule is False  # the reference's StepApplyTween default
    assert [d["coord"] for d in mesh.targetprop_links] == [(0, 0, 0, 1), (0, 0, 0, 0)]


def test_the_bridge_learns_through_a_feedback_loop():
    # x → Dense → Residual(+ cell 2's output, fed back) → Dense(tanh) → Dense: the Residual reads
    # cell 2 over a feedback link (no target goes back that way), the chain carries the rest.
    # Bar: the MSE to a fixed target falls below a tenth of its first value in 300 cycles.
    net, _, _ = feedback_mesh()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 2)).astype(np.float32)
    t = np.tanh(1.5 * x[:, ::-1]).astype(np.float32)
    mesh = pv.Systolic(net, mode="normal")
    losses = [mesh.step_targetprop(t, x=x, lr=0.05) for _ in range(300)]
    assert losses[:3] == [None] * 3  # four cells: the output computes from cycle 4 on
    assert losses[-1] < 0.1 * losses[3], (losses[3], losses[-1])
    assert all(np.isfinite(m).all() for m in masters(net))
    links = {d["coord"]: d for d in mesh.targetprop_links}
    assert sorted(links) == [(0, 0, 0, l) for l in range(4)]
    assert all(0.0 <= d["budget"] <= 1.0 and not d["gated"] for d in links.values())


def test_the_bridge_config_lr_and_reset():
    x, t = mapping_task()
    net = chain(L.Dense(4, 8, "tanh", seed=1), L.Dense(8, 2, seed=2))
    mesh = pv.Systolic(net)
    assert mesh.targetprop_config is None and mesh.targetprop_links == []
    mesh.set_input(x)
    mesh.step()
    before = masters(net)
    mesh.step_targetprop(t, lr=0.0)  # rate 0: the cycle runs, the weights stay
    assert all(np.array_equal(a, b) for a, b in zip(before, masters(net)))
    mesh.step_targetprop(t, config={"use_chain_rule": True, "momentum": 0.0}, lr=0.1)
    assert mesh.targetprop_config.use_chain_rule is True and mesh.targetprop_config.momentum == 0.0
    assert not all(np.array_equal(a, b) for a, b in zip(before, masters(net)))
    mesh.step_targetprop(t)  # no config: keeps the current one
    assert mesh.targetprop_config.use_chain_rule is True
    config = pv.TargetPropConfig(use_chain_rule=False, learning_rate=0.02)
    mesh.step_targetprop(t, config=config)
    assert mesh.targetprop_config == config
    mesh.reset()
    assert mesh.targetprop_config is None and mesh.cycle == 0


def test_the_bridge_stops_on_non_finite_weights_with_the_last_good_ones():
    x, t = mapping_task()
    net = chain(L.Dense(4, 8, "tanh", seed=1), L.Dense(8, 2, seed=2))
    mesh = pv.Systolic(net)
    mesh.step(1000 * x)
    good = masters(net)
    loss = mesh.step_targetprop(t, lr=3e38)  # the update overflows float32
    assert np.isfinite(loss) and "would become" in mesh.targetprop_stopped
    assert all(np.array_equal(a, b) for a, b in zip(good, masters(net)))
    mesh.step_targetprop(t, x=x)
    assert mesh.targetprop_stopped is None


def test_bridge_errors_name_what_is_wrong():
    x, t = mapping_task()
    net = chain(L.Dense(4, 8, "tanh", seed=1), L.Dense(8, 2, seed=2))
    mesh = pv.Systolic(net)
    mesh.step(x)
    with pytest.raises(pv.ShapeError, match=r"target has 96 values; the output cell at \(0,0,0,1\) produces 64"):
        mesh.step_targetprop(np.zeros((32, 3), np.float32))
    assert mesh.cycle == 1  # a wrong target runs no cycle
    with pytest.raises(pv.InputError, match="target contains NaN"):
        mesh.step_targetprop(np.full_like(t, np.nan))
    with pytest.raises(pv.InputError, match="lr"):
        mesh.step_targetprop(t, lr=-1.0)
    with pytest.raises(pv.InputError, match="momentum"):
        mesh.step_targetprop(t, config={"momentum": 2.0})
    with pytest.raises(pv.InputError, match="no_such_field"):
        mesh.step_targetprop(t, config={"no_such_field": 1})
    with pytest.raises(TypeError, match="config must be"):
        mesh.step_targetprop(t, config="fast")
    assert mesh.cycle == 1 and mesh.targetprop_config is None
    net.set_disabled(0, 0, 0, 1)
    with pytest.raises(pv.SpecError, match=r"output cell at \(0,0,0,1\) is disabled"):
        mesh.step_targetprop(t)
    busy = pv.Systolic(recall_net(True))
    seq = RNG.choice([-1.0, 1.0], size=(8, 4, 1)).astype(np.float32)
    with pytest.raises(pv.InputError, match="busy"):
        busy.train_bptt(seq, seq[:-5], epochs=1, on_epoch=lambda *_: busy.step_targetprop(seq[0]))


# ---- bad inputs -----------------------------------------------------------------------------

def test_bad_inputs_raise_named_errors():
    net, _, _ = feedback_mesh()
    mesh = pv.Systolic(net)
    mesh.set_input(data(2, 5))
    with pytest.raises(pv.ShapeError, match=r"\(0,0,0,0\).*external input"):
        mesh.step()
    assert mesh.cycle == 0  # a failed cycle changes nothing
    mesh.set_input(data(2, 2))
    mesh.step()
    with pytest.raises(pv.ShapeError, match="batches of 2"):
        mesh.set_input(data(3, 2))
    with pytest.raises(pv.InputError, match="row 0, column 1"):
        mesh.set_input(np.array([[0.0, np.nan]], np.float32))
    with pytest.raises(pv.SpecError, match="outside"):
        mesh.state(0, 0, 0, 9)
    with pytest.raises(pv.SpecError):
        mesh.state(-1, 0, 0, 0)
    with pytest.raises(pv.InputError, match="no captured cycles.*history=N"):
        mesh.backward(data(2, 2))
    with pytest.raises(pv.InputError):
        pv.Systolic(net, mode="sideways")


def test_backward_and_training_errors_name_what_is_wrong():
    net, _, _ = feedback_mesh()
    mesh = pv.Systolic(net, history=4)
    mesh.run([data(2, 2) for _ in range(4)])
    with pytest.raises(pv.ShapeError, match="target for cycle 4 has 6 values"):
        mesh.backward(data(2, 3))
    with pytest.raises(pv.InputError, match="cycle 9 is not in the captured history"):
        mesh.backward(data(2, 2), cycles=[9])
    with pytest.raises(pv.InputError, match=r"\(0,0,0,3\) produced nothing in cycle 2"):
        mesh.backward(data(2, 2), cycles=[2])
    with pytest.raises(pv.InputError, match="unknown loss"):
        mesh.backward(data(2, 2), loss="hinge")
    x = data(6, 2, 2)
    with pytest.raises(pv.InputError, match="produced nothing"):
        mesh.train_bptt(x, data(6, 2, 2), epochs=1)  # the output needs 4 cycles
    with pytest.raises(pv.ShapeError, match="3 axes"):
        mesh.train_bptt(data(6, 2), data(2, 2), epochs=1)
    with pytest.raises(pv.InputError, match="target step 6 is outside"):
        mesh.train_bptt(x, data(1, 2, 2), target_steps=[6], epochs=1)
    with pytest.raises(pv.InputError, match="target_steps"):
        mesh.train_bptt(x, data(1, 2, 2), target_steps=[-1], epochs=1)
    with pytest.raises(pv.InputError, match="targets contains NaN"):
        mesh.train_bptt(x, np.full((2, 2, 2), np.nan, np.float32), epochs=1)


def test_links_to_empty_slots_and_empty_networks_are_refused():
    net = pv.VolumetricNetwork(1, 1, 1, 3)
    with pytest.raises(pv.InputError, match="no layers"):
        pv.Systolic(net).step(data(1, 2))
    net.set_layer(0, 0, 0, 0, L.Dense(2, 2))
    net.set_link(0, 0, 0, 0, (0, 0, 0, 2))
    with pytest.raises(pv.SpecError, match=r"\(0,0,0,2\) is an empty slot"):
        pv.Systolic(net).step(data(1, 2))


def test_a_call_from_inside_training_is_refused_not_deadlocked():
    mesh = pv.Systolic(recall_net(True))
    x = RNG.choice([-1.0, 1.0], size=(8, 4, 1)).astype(np.float32)
    with pytest.raises(pv.InputError, match="busy"):
        mesh.train_bptt(x, x[:-5], epochs=3, on_epoch=lambda *_: mesh.cycle)
    assert mesh.cycle == 8  # usable again afterwards
