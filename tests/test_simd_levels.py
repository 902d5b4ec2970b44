"""Every CPU kernel level gives the right numbers: the AVX-512, AVX2 and scalar kernels are
each run (POLYVTD_SIMD caps the level, in a fresh interpreter) and checked against float64 on
the dequantised weights, for every dtype and GGML block format, at batch 1 (the per-dtype code
kernels) and 7 (decoded tiles), with row lengths that do and do not start sub-byte rows on a
byte."""

import json
import subprocess
import sys

import pytest

import polyvtd as pv

CHECK = r"""
import json, sys
import numpy as np
import polyvtd as pv
sys.path.insert(0, sys.argv[1])
from reference.dense import dense_forward, norm_rel_err
worst = 0.0
for dtype in pv.dtypes() + pv.block_dtypes():
    for k in ((64, 70, 200) if dtype in pv.dtypes() else (64, 96)):
        layer = pv.layers.Dense(k, 33, "linear", dtype=dtype, seed=k)
        w = layer.weights.dequantize()
        for batch in (1, 7):
            x = np.random.default_rng(batch).standard_normal((batch, k)).astype(np.float32)
            tiled, parallel = layer.forward(x, mode="tiled"), layer.forward(x, mode="parallel")
            assert np.array_equal(tiled, parallel), (dtype, k, batch)
            worst = max(worst, norm_rel_err(tiled, dense_forward(x, w, None, "linear")))
print(json.dumps({"level": pv.simd_level(), "worst": worst}))
"""


@pytest.mark.parametrize("level", ["avx512", "avx2", "scalar"])
def test_kernels_at_every_simd_level(level, tmp_path):
    tests_dir = str(__import__("pathlib").Path(__file__).resolve().parent)
    env = dict(__import__("os").environ, POLYVTD_SIMD=level)
    done = subprocess.run([sys.executable, "-c", CHECK, tests_dir], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    order = ["scalar", "avx2", "avx512"]
    assert order.index(result["level"]) <= order.index(level), "the cap must not raise the level"
    assert result["worst"] <= 1e-5


def test_default_level_is_what_the_cpu_has():
    assert pv.simd_level() in ("avx512", "avx2", "scalar")
