"""The schedule contract (compat.md): `tiled` and `parallel` give bitwise identical forward and
backward results for any thread count; `normal` (f64 loops) agrees within `tol`, norm-wise."""

import numpy as np

from reference.dense import norm_rel_err

MODES = ("normal", "tiled", "parallel")


def assert_schedules_agree(layer, x, g, tol=1e-6):
    ys = {m: layer.forward(x, mode=m) for m in MODES}
    bs = {m: layer.backward(x, g, mode=m) for m in MODES}
    for m in ("tiled", "parallel"):
        assert norm_rel_err(ys[m], ys["normal"]) <= tol
        assert norm_rel_err(bs[m][0], bs["normal"][0]) <= tol
        for got, expected in zip(bs[m][1], bs["normal"][1]):
            assert norm_rel_err(got, expected) <= tol
    np.testing.assert_array_equal(ys["tiled"], ys["parallel"])
    np.testing.assert_array_equal(bs["tiled"][0], bs["parallel"][0])
    for a, b in zip(bs["tiled"][1], bs["parallel"][1]):
        np.testing.assert_array_equal(a, b)
