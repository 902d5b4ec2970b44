"""The reference's permutation table, done properly: every layer type × every dtype computes from
its packed weights exactly what it computes from the dequantised values of those weights
(a float32 twin holding them), in every schedule. Each family's own test file checks the float32
path against its NumPy reference; together they pin every (layer, dtype) pair."""

import json

import numpy as np
import pytest

import polyvtd as pv
from polyvtd.bench_layers import cases
from reference.dense import norm_rel_err

CASES = {c.name: c for c in cases(scale=0.08)}
WEIGHTED = [name for name, c in CASES.items() if pv.layers.from_spec(c.spec).parameters]


def test_the_table_covers_every_layer_type():
    # LayerType 0–15 and Residual (18); Softmax and Residual have no weights. The containers
    # (16, 17) hold layers rather than weights: tests/test_containers.py.
    assert len(CASES) == 17 and len(WEIGHTED) == 15


def inputs(case, rng):
    if case.ids is not None:
        return rng.integers(0, case.ids, case.batch_shape).astype(np.float32)
    return rng.standard_normal(case.batch_shape).astype(np.float32)


def twin_on_dequantised(layer):
    """A float32 layer of the same spec whose tensors hold `layer`'s dequantised values."""
    spec = dict(json.loads(layer.spec_json()), dtype="float32")
    twin = pv.layers.from_spec(spec)
    for mine, theirs in zip(layer.parameters, twin.parameters):
        theirs.set_master(mine.dequantize())
    return twin


@pytest.mark.parametrize("dtype", pv.dtypes())
@pytest.mark.parametrize("name", WEIGHTED)
def test_packed_weights_compute_like_their_dequantised_values(name, dtype):
    case, rng = CASES[name], np.random.default_rng(3)
    layer = pv.layers.from_spec(case.spec, seed=5)
    layer.morph(dtype)
    assert layer.dtype == dtype
    x = inputs(case, rng)
    expected = twin_on_dequantised(layer).forward(x, mode="normal")
    for mode in ("normal", "tiled", "parallel"):
        y = layer.forward(x, mode=mode)
        assert y.shape == expected.shape
        assert norm_rel_err(y, expected) < 2e-5, mode


@pytest.mark.parametrize("name", WEIGHTED)
def test_morphed_layers_train_their_master(name):
    """Backward works from packed weights too (gradients of the dequantised function)."""
    case, rng = CASES[name], np.random.default_rng(4)
    layer = pv.layers.from_spec(case.spec, seed=5)
    layer.morph("int8")
    x = inputs(case, rng)
    g = rng.standard_normal(layer.forward(x).shape).astype(np.float32)
    gx, grads = layer.backward(x, g)
    tx, tgrads = twin_on_dequantised(layer).backward(x, g)
    assert norm_rel_err(gx, tx) < 1e-4 or np.abs(tx).max() == 0
    for a, b in zip(grads, tgrads):
        assert norm_rel_err(a, b) < 1e-4
