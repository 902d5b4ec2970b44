"""The benchmark module runs and prints well-formed tables (tiny shapes; speed is not tested)."""

import argparse

import numpy as np

import polyvtd as pv
from polyvtd import bench


def test_forward_table_has_a_row_per_dtype_and_mode():
    rng = np.random.default_rng(0)
    table = bench.forward_table("tiny", (8, 16, 4), 4, ("float32", "int4"), ("tiled", "parallel"), None, rng, 0.01)
    rows = [line for line in table.splitlines() if line.startswith("| float32") or line.startswith("| int4")]
    assert len(rows) == 4
    assert all(line.count("|") == 7 for line in rows)


def test_numpy_training_reference_reduces_the_loss():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    t = (x[:, :2] * 0.5).astype(np.float32)
    w = [rng.standard_normal((16, 8)).astype(np.float32) * 0.3, rng.standard_normal((2, 16)).astype(np.float32) * 0.3]
    loss = lambda ws: float(np.mean((bench._numpy_forward(ws)(x) - t) ** 2))
    trained = bench._numpy_train([x], [t], w, epochs=200, lr=0.05)
    assert loss(trained) < 0.5 * loss(w)


def test_gpu_suite_reports(capsys):
    bench.gpu(argparse.Namespace(size=32, budget=0.01))
    out = capsys.readouterr().out
    if pv.gpu_available():
        assert "| int4 |" in out and "rel err" in out
    else:
        assert "no GPU adapter" in out


def test_layers_suite_prints_a_table_per_layer_type(capsys):
    args = argparse.Namespace(quick=True, scale=0.05, only=None, budget=0.0, no_welvet=True, device="cpu")
    bench.layers(args)
    out = capsys.readouterr().out
    for name in ("Dense", "CNN2", "ConvTransposed3D", "MultiHeadAttention", "LSTM", "Softmax", "Residual"):
        assert f"### {name}, input" in out
    assert "| CNN1 | int4 | parallel |" in out and "| Softmax | — | tiled |" in out


def test_layers_suite_on_the_gpu(capsys):
    """--device gpu: a row per dtype with the GPU and CPU parallel times of every layer type
    (each has a GPU kernel); the adapter is named in each table."""
    only = ["Dense", "RMSNorm", "Residual", "SwiGLU", "Embedding"]
    args = argparse.Namespace(quick=True, scale=0.05, only=only, budget=0.0, no_welvet=True, device="gpu")
    bench.layers(args)
    out = capsys.readouterr().out
    if not pv.gpu_available():
        assert "no GPU adapter" in out
        return
    name = pv.gpu_info()["name"]
    for layer in only:
        assert f"### {layer}, input" in out and f"GPU: {name}" in out
        rows = [line.split(" | ") for line in out.splitlines() if line.startswith(f"| {layer} |")]
        assert rows, layer
        for row in rows:
            assert float(row[2]) > 0 and row[4].endswith("×"), row
    for dtype in ("float32", "int4"):
        dense = next(line for line in out.splitlines() if line.startswith(f"| Dense | {dtype} |"))
        assert float(dense.split(" | ")[-1].rstrip(" |")) <= 1e-5


def test_numpy_peers_match_our_layers():
    """The NumPy peers compute the same function as our layers (so the ratios compare like with
    like): checked on the tiny shapes for every layer type."""
    from polyvtd.bench_layers import _inputs, cases

    rng = np.random.default_rng(1)
    for case in cases(scale=0.05):
        layer = pv.layers.from_spec(case.spec, seed=2)
        x = _inputs(case, rng)
        ours = layer.forward(x)
        peer = case.numpy_forward(x, [p.master for p in layer.parameters])
        assert np.allclose(ours, peer, rtol=1e-4, atol=1e-4), case.name


def test_beyond_suite_reports_persistence_and_steps(capsys):
    assert bench.main(["beyond", "--no-welvet", "--budget", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "Persistence JSON of the MLP" in out and "| int4 |" in out
    assert "target propagation step, true targets" in out and "one clock cycle" in out
