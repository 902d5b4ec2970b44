"""Zero-copy boundary: float32 C-contiguous inputs are read in place, anything else is converted
once; outputs are fresh, writable float32 NumPy arrays."""

import numpy as np
import pytest

import polyvtd as pv


def x_ok(batch=6, width=5, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, width)).astype(np.float32)


def small_net():
    net = pv.VolumetricNetwork(1, 1, 1, 1)
    net.set_layer(0, 0, 0, 0, pv.layers.Dense(5, 3, "relu", bias=True, seed=1))
    return net


@pytest.mark.parametrize("shape", [(6, 5), (5,), (1, 1), (300, 17)])
def test_float32_c_contiguous_input_is_borrowed(shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    assert x.flags.c_contiguous
    assert pv._core.borrowed_data_ptr(x) == x.ctypes.data


def test_a_c_contiguous_slice_is_borrowed_at_its_offset():
    base = x_ok(10, 5)
    rows = base[3:7]  # still C-contiguous, starts 3 rows in
    assert rows.flags.c_contiguous and not rows.flags.owndata
    assert pv._core.borrowed_data_ptr(rows) == base.ctypes.data + 3 * 5 * 4


@pytest.mark.parametrize("make", [
    lambda x: x.astype(np.float64),
    lambda x: x.astype(np.float16),
    lambda x: x.astype(np.int32),
    lambda x: np.repeat(x, 2, axis=1)[:, ::2],
    lambda x: np.ascontiguousarray(x.T).T,
    lambda x: x.tolist(),
], ids=["float64", "float16", "int32", "strided", "transposed", "list"])
def test_other_inputs_are_converted_once(make):
    x = x_ok()
    source = make(x)
    if isinstance(source, np.ndarray):  # the native side reads a converted copy, not the source
        assert pv._core.borrowed_data_ptr(source) != source.ctypes.data
    expected = np.ascontiguousarray(source, dtype=np.float32)
    net = small_net()
    np.testing.assert_array_equal(net.forward(source), net.forward(expected))
    np.testing.assert_array_equal(net.layer(0, 0, 0, 0).forward(source), net.forward(expected))


def test_the_network_reads_the_callers_buffer():
    """The forward sees the values at call time from the caller's own memory (no stale copy)."""
    net = small_net()
    x = x_ok()
    first = net.forward(x)
    x[:] = x_ok(seed=3)
    np.testing.assert_array_equal(net.forward(x), net.forward(x.copy()))
    assert not np.array_equal(net.forward(x), first)


def test_input_is_not_modified():
    net = small_net()
    x = x_ok()
    keep = x.copy()
    net.forward(x)
    net.layer(0, 0, 0, 0).backward(x, np.ones((6, 3), np.float32))
    net.train(x, np.zeros((6, 3), np.float32), epochs=2)
    np.testing.assert_array_equal(x, keep)


def check_output(y, shape):
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == shape
    assert y.flags.writeable and y.flags.c_contiguous
    assert y.flags.owndata or y.base is not None  # owns its buffer or views the one it was moved into
    y[...] = 7.0  # writing is allowed and sticks
    assert np.all(y == 7.0)


def test_outputs_are_writable_float32_arrays():
    net = small_net()
    layer = net.layer(0, 0, 0, 0)
    x = x_ok()
    check_output(net.forward(x), (6, 3))
    check_output(layer.forward(x), (6, 3))
    dx, grads = layer.backward(x, np.ones((6, 3), np.float32))
    check_output(dx, (6, 5))
    check_output(grads[0], (3, 5))
    check_output(grads[1], (3,))
    store = layer.weights
    check_output(store.dequantize("int4"), (3, 5))
    check_output(store.master, (3, 5))


def test_outputs_do_not_alias_inputs_weights_or_each_other():
    net = small_net()
    x = x_ok()
    a, b = net.forward(x), net.forward(x)
    assert not np.shares_memory(a, b) and not np.shares_memory(a, x)
    a[:] = 0
    np.testing.assert_array_equal(net.forward(x), b)  # the network kept nothing of a
    store = net.layer(0, 0, 0, 0).weights
    m = store.master
    m[:] = 0
    assert np.any(store.master != 0)  # master is a copy


def test_empty_network_returns_a_copy_not_the_input():
    empty = pv.VolumetricNetwork(1, 1, 1, 1)
    x = x_ok()
    y = empty.forward(x)
    np.testing.assert_array_equal(y, x)
    assert not np.shares_memory(y, x)
    check_output(y, x.shape)
