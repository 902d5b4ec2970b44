"""Bad inputs raise their named exception (every one a pv.PolyError and the fitting builtin),
never crash; inputs that only need converting (float64, strided) are converted."""

import numpy as np
import pytest

import polyvtd as pv

SPEC = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 2, "layers": [
    {"l": 0, "type": "dense", "activation": "tanh", "input_height": 4, "output_height": 6, "bias": True},
    {"l": 1, "type": "dense", "activation": "linear", "input_height": 6, "output_height": 3},
]}


def net():
    return pv.VolumetricNetwork.from_spec(SPEC, seed=2)


def x_ok(batch=5, width=4, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, width)).astype(np.float32)


def t_ok(batch=5):
    return np.random.default_rng(9).standard_normal((batch, 3)).astype(np.float32)


def with_nan(a, row, col, value=np.nan):
    a = a.copy()
    a[row, col] = value
    return a


# (id, call, exception class, builtin base, fragments the message must contain)
CASES = [
    ("unknown dtype (morph_all)", lambda: net().morph_all("int3"), pv.DTypeError, TypeError, ["int3"]),
    ("unknown dtype (Dense)", lambda: pv.layers.Dense(4, 2, dtype="float8"), pv.DTypeError, TypeError, ["float8"]),
    ("unknown dtype (weights)", lambda: pv.WeightStore(np.ones(3)).morph("q4"), pv.DTypeError, TypeError, ["q4"]),
    ("wrong input width", lambda: net().forward(x_ok(5, 3)), pv.ShapeError, ValueError, ["(0,0,0,0)", "4"]),
    ("wrong input width (layer)", lambda: pv.layers.Dense(4, 2).forward(x_ok(5, 3)), pv.ShapeError,
     ValueError, ["4", "3"]),
    ("NaN input (forward)", lambda: net().forward(with_nan(x_ok(), 2, 1)), pv.InputError, ValueError,
     ["NaN", "row 2", "column 1"]),
    ("Inf input (forward)", lambda: net().forward(with_nan(x_ok(), 4, 3, np.inf)), pv.InputError, ValueError,
     ["inf", "row 4", "column 3"]),
    ("NaN input (layer)", lambda: pv.layers.Dense(4, 2).forward(with_nan(x_ok(), 0, 0)), pv.InputError,
     ValueError, ["row 0", "column 0"]),
    ("NaN input (train)", lambda: net().train(with_nan(x_ok(), 3, 2), t_ok(), epochs=1), pv.InputError,
     ValueError, ["NaN", "row 3", "column 2"]),
    ("NaN target (train)", lambda: net().train(x_ok(), with_nan(t_ok(), 1, 0), epochs=1), pv.InputError,
     ValueError, ["targets", "row 1", "column 0"]),
    ("empty batch (forward)", lambda: net().forward(np.zeros((0, 4))), pv.InputError, ValueError, ["empty"]),
    ("empty batch (layer)", lambda: pv.layers.Dense(4, 2).forward(np.zeros((0, 4), np.float32)), pv.InputError,
     ValueError, ["empty"]),
    ("empty batch (train)", lambda: net().train(np.zeros((0, 4)), np.zeros((0, 3)), epochs=1), pv.InputError,
     ValueError, ["empty"]),
    ("negative epochs", lambda: net().train(x_ok(), t_ok(), epochs=-1), pv.InputError, ValueError, ["-1"]),
    ("batch_size 0", lambda: net().train(x_ok(), t_ok(), batch_size=0), pv.InputError, ValueError, ["batch_size"]),
    ("negative batch_size", lambda: net().train(x_ok(), t_ok(), batch_size=-3), pv.InputError, ValueError,
     ["batch_size"]),
    ("negative lr", lambda: net().train(x_ok(), t_ok(), lr=-0.1), pv.InputError, ValueError, ["lr"]),
    ("NaN lr", lambda: net().train(x_ok(), t_ok(), lr=float("nan")), pv.InputError, ValueError, ["lr"]),
    ("unknown loss", lambda: net().train(x_ok(), t_ok(), loss="hinge"), pv.InputError, ValueError, ["hinge"]),
    ("unknown optimizer", lambda: net().train(x_ok(), t_ok(), optimizer="lion"), pv.InputError, ValueError,
     ["lion"]),
    ("unknown mode (forward)", lambda: net().forward(x_ok(), mode="fast"), pv.InputError, ValueError, ["fast"]),
    ("unknown mode (train)", lambda: net().train(x_ok(), t_ok(), mode="fast"), pv.InputError, ValueError,
     ["fast"]),
    ("unknown mode (layer)", lambda: pv.layers.Dense(4, 2).forward(x_ok(), mode="fast"), pv.InputError,
     ValueError, ["fast"]),
    ("unknown device (forward)", lambda: net().forward(x_ok(), device="tpu"), pv.InputError, ValueError,
     ["tpu"]),
    ("unknown device (train)", lambda: net().train(x_ok(), t_ok(), device="tpu"), pv.InputError, ValueError,
     ["tpu"]),
    ("gpu training", lambda: net().train(x_ok(), t_ok(), device="gpu"), pv.InputError, ValueError, ["gpu"]),
    ("unknown schedule", lambda: net().train(x_ok(), t_ok(), schedule="warm"), pv.InputError, ValueError,
     ["warm"]),
    ("unknown schedule option", lambda: net().train(x_ok(), t_ok(), schedule={"type": "step", "steps": 2}),
     pv.InputError, ValueError, ["steps"]),
    ("3-D input of the wrong width (forward)", lambda: net().forward(np.zeros((2, 3, 5), np.float32)), pv.ShapeError,
     ValueError, ["(0,0,0,0)", "[3, 5]"]),
    ("scalar input (one feature)", lambda: net().forward(np.float32(1.0)), pv.ShapeError, ValueError,
     ["(0,0,0,0)", "4"]),
    ("3-D input (train)", lambda: net().train(np.zeros((2, 3, 4)), np.zeros((2, 3)), epochs=1), pv.ShapeError,
     ValueError, ["[3, 4]", "[3]"]),
    ("rows mismatch", lambda: net().train(x_ok(5), t_ok(4), epochs=1), pv.ShapeError, ValueError, ["5", "4"]),
    ("target width", lambda: net().train(x_ok(5), np.zeros((5, 2)), epochs=1), pv.ShapeError, ValueError,
     ["3", "2"]),
    ("input width (train)", lambda: net().train(x_ok(5, 7), t_ok(5), epochs=1), pv.ShapeError, ValueError,
     ["4", "7"]),
    ("class index out of range", lambda: net().train(x_ok(5), np.array([0, 1, 2, 3, 1]), loss="cross_entropy"),
     pv.InputError, ValueError, ["3"]),
    ("non-numeric input", lambda: net().forward([["a", "b", "c", "d"]]), pv.InputError, ValueError, ["float32"]),
    ("ragged input", lambda: net().forward([[1.0, 2.0], [3.0]]), pv.InputError, ValueError, ["float32"]),
    ("train without layers", lambda: pv.VolumetricNetwork(1, 1, 1, 1).train(x_ok(), t_ok(), epochs=1),
     pv.InputError, ValueError, ["no active layers"]),
    ("bad clip_norm", lambda: net().train(x_ok(), t_ok(), clip_norm=-1.0), pv.InputError, ValueError,
     ["clip_norm"]),
    ("bad compat", lambda: pv.VolumetricNetwork.from_spec(SPEC, compat="onnx"), pv.InputError, ValueError,
     ["onnx"]),
    ("bad grid", lambda: pv.VolumetricNetwork(1, 0, 1, 1), pv.SpecError, ValueError, ["rows"]),
    ("huge grid", lambda: pv.VolumetricNetwork(1024, 1024, 1024, 1024), pv.SpecError, ValueError, ["slots"]),
    ("missing spec file", lambda: pv.VolumetricNetwork.from_spec("/nonexistent/spec.json"), pv.SpecError,
     ValueError, ["/nonexistent/spec.json"]),
    ("float32 release", lambda: pv.WeightStore(np.ones(4)).release_master(), pv.InputError, ValueError,
     ["float32"]),
    ("layer backward shapes", lambda: pv.layers.Dense(4, 2).backward(x_ok(3), np.zeros((2, 2), np.float32)),
     pv.ShapeError, ValueError, ["backward"]),
]


@pytest.mark.parametrize("call,exc,builtin,fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_its_named_exception(call, exc, builtin, fragments):
    with pytest.raises(exc) as info:
        call()
    err = info.value
    assert isinstance(err, pv.PolyError) and isinstance(err, builtin)
    message = str(err)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_errors_leave_the_network_usable():
    n = net()
    x = x_ok()
    before = n.forward(x)
    for bad in (lambda: n.forward(with_nan(x, 0, 0)), lambda: n.train(x, t_ok(4)),
                lambda: n.train(x, t_ok(), optimizer="lion"), lambda: n.morph_all("nope")):
        with pytest.raises(pv.PolyError):
            bad()
    np.testing.assert_array_equal(n.forward(x), before)


def test_wrong_input_width_message_names_the_received_width():
    with pytest.raises(pv.ShapeError) as info:
        net().forward(x_ok(5, 3))
    assert "got sample shape [3]" in str(info.value)


# ---- epochs = 0 (documented: an empty run) ---------------------------------------------------------

def test_zero_epochs_is_an_empty_run():
    result = net().train(x_ok(), t_ok(), epochs=0)
    assert result.loss_history == [] and result.epoch_times == []
    assert result.final_loss is None and result.steps == 0 and result.stopped_early is None


# ---- inputs that are converted, not rejected -----------------------------------------------------

def test_float64_input_is_converted():
    n = net()
    x = x_ok()
    np.testing.assert_array_equal(n.forward(x.astype(np.float64)), n.forward(x))
    np.testing.assert_array_equal(n.forward(x.tolist()), n.forward(x))  # nested lists too
    a, b = net(), net()
    ra = a.train(x.astype(np.float64), t_ok().astype(np.float64), epochs=2)
    rb = b.train(x, t_ok(), epochs=2)
    assert ra.loss_history == rb.loss_history


@pytest.mark.parametrize("view", ["every_other_column", "transpose", "fortran", "reversed_rows"])
def test_strided_input_is_converted(view):
    n = net()
    base = x_ok(5, 8)
    x = {"every_other_column": lambda: base[:, ::2],
         "transpose": lambda: np.ascontiguousarray(base[:, :4].T).T,
         "fortran": lambda: np.asfortranarray(base[:, :4]),
         "reversed_rows": lambda: base[::-1, 2:6]}[view]()
    assert not x.flags.c_contiguous
    expected = n.forward(np.ascontiguousarray(x))
    np.testing.assert_array_equal(n.forward(x), expected)
    ra = net().train(x, t_ok(), epochs=2)
    rb = net().train(np.ascontiguousarray(x), t_ok(), epochs=2)
    assert ra.loss_history == rb.loss_history


def test_layer_forward_with_an_every_other_column_view_is_converted_or_rejected():
    layer = pv.layers.Dense(4, 3, "relu", seed=1)
    x = x_ok(5, 8)[:, ::2]
    try:
        y = layer.forward(x)
    except pv.PolyError:
        return  # a clear PolyError is acceptable for the raw Layer API
    np.testing.assert_array_equal(y, layer.forward(np.ascontiguousarray(x)))


@pytest.mark.parametrize("call", ["forward", "backward"])
def test_layer_with_a_transposed_input_is_converted_or_rejected(call):
    layer = pv.layers.Dense(4, 3, "relu", seed=1)
    x = np.ascontiguousarray(x_ok(5, 4).T).T  # F-contiguous [5, 4]
    assert x.flags.f_contiguous and not x.flags.c_contiguous
    g = np.ones((5, 3), np.float32)
    run = (lambda a: layer.forward(a)) if call == "forward" else (lambda a: layer.backward(a, g)[1][0])
    try:
        got = run(x)
    except pv.PolyError:
        return
    np.testing.assert_array_equal(got, run(np.ascontiguousarray(x)))


def test_layer_forward_with_float64_input_is_converted_or_a_poly_error():
    layer = pv.layers.Dense(4, 3, "relu", seed=1)
    x = x_ok()
    try:
        y = layer.forward(x.astype(np.float64))
    except pv.PolyError:
        return
    np.testing.assert_array_equal(y, layer.forward(x))


def test_training_after_release_master_is_an_input_error_and_changes_nothing():
    n = net()
    n.morph_all("int8")
    for _, layer in n.layers():
        layer.weights.release_master()
    x = x_ok()
    before = n.forward(x)
    with pytest.raises(pv.InputError, match="released"):
        n.train(x, t_ok(), epochs=1)
    np.testing.assert_array_equal(n.forward(x), before)
    with pytest.raises(pv.InputError):
        n.morph_all("int4")
    np.testing.assert_array_equal(n.forward(x), before)


@pytest.mark.parametrize("call", [
    lambda: pv.layers.Dense(-3, 2),
    lambda: pv.layers.Dense(3, 2, seed=-1),
    lambda: pv.VolumetricNetwork(1, 1, 1, 1).layer(-1, 0, 0, 0),
    lambda: pv.VolumetricNetwork(-1, 1, 1, 1),
], ids=["size", "seed", "coordinate", "grid"])
def test_negative_integers_raise_a_poly_error(call):
    with pytest.raises(pv.PolyError):
        call()
