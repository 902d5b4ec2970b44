"""Benchmarks, printed as Markdown tables: ``python -m polyvtd.bench dense``.

Every figure is timed in the same run as its peers: NumPy (float32 matmul with the same
shapes) and, when installed, ``welvet`` (the reference engine's own Python package). Ratios
are "peer time / polyvtd time", so > 1 means polyvtd is faster.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Optional

import numpy as np

import polyvtd as pv

DTYPES = ("float32", "float16", "int8", "int4", "ternary", "binary")
MODES = ("normal", "tiled", "parallel")
MLP = (128, 512, 512, 8)


def timeit(fn: Callable[[], object], budget: float = 0.4, max_runs: int = 50, min_runs: int = 3) -> float:
    """Median seconds of ``fn`` after one warm-up call, repeated until ``budget`` seconds."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (len(times) < max_runs and time.perf_counter() - start < budget):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _welvet():
    try:
        import welvet  # the reference engine's package; optional
        import welvet.utils  # noqa: F401  (morph_all_layers lives there)

        return welvet
    except Exception:
        return None


def _spec(sizes, activations=None):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        act = activations[i] if activations else ("relu" if i < len(sizes) - 2 else "linear")
        layers.append({"z": 0, "y": 0, "x": 0, "l": i, "type": "dense", "activation": act,
                       "input_height": a, "output_height": b})
    return {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": len(layers), "layers": layers}


def _numpy_forward(weights):
    def run(x):
        h = x
        for i, w in enumerate(weights):
            h = h @ w.T
            if i < len(weights) - 1:
                np.maximum(h, 0, out=h)
        return h

    return run


def _fmt_ms(seconds: Optional[float]) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.3f}"


def _fmt_ratio(peer: Optional[float], ours: float) -> str:
    return "—" if peer is None else f"{peer / ours:.2f}×"


def _table(title: str, header: list, rows: list) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def forward_table(title, sizes, batch, dtypes, modes, welvet, rng, budget) -> str:
    spec = _spec(sizes)
    net = pv.VolumetricNetwork.from_spec(spec, seed=1)
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    weights = [layer.weights.master for _, layer in net.layers()]
    numpy_s = timeit(lambda: _numpy_forward(weights)(x), budget)
    wnet = welvet.Network(spec) if welvet else None
    flat = x.ravel().tolist()
    rows = []
    for dtype in dtypes:
        morphed = net.copy()
        morphed.morph_all(dtype)
        welvet_s = None
        if wnet is not None:
            welvet.utils.morph_all_layers(wnet._handle, getattr(welvet.DType, dtype.upper()))
            welvet_s = timeit(lambda: wnet.forward_polymorphic(flat, [batch, sizes[0]]), budget, max_runs=5, min_runs=1)
        for mode in modes:
            ours = timeit(lambda: morphed.forward(x, mode=mode), budget)
            rows.append((dtype, mode, _fmt_ms(ours), _fmt_ratio(numpy_s, ours), _fmt_ratio(welvet_s, ours),
                         f"{morphed.weight_bytes:,}"))
    if wnet is not None:
        wnet.free() if hasattr(wnet, "free") else None
    header = ["dtype", "mode", "polyvtd ms", "vs NumPy f32", "vs welvet", "weight bytes"]
    note = f"NumPy float32: {numpy_s * 1e3:.3f} ms" + (", welvet timed per dtype" if welvet else ", welvet not installed")
    return _table(f"{title} — forward ({note})", header, rows)


def _numpy_train(x_batches, t_batches, weights, epochs, lr):
    ws = [w.copy() for w in weights]
    for _ in range(epochs):
        for x, t in zip(x_batches, t_batches):
            acts = [x]
            for i, w in enumerate(ws):
                h = acts[-1] @ w.T
                if i < len(ws) - 1:
                    h = np.maximum(h, 0)
                acts.append(h)
            g = 2.0 * (acts[-1] - t) / t.size
            for i in range(len(ws) - 1, -1, -1):
                if i < len(ws) - 1:
                    g = g * (acts[i + 1] > 0)
                dw = g.T @ acts[i]
                g = g @ ws[i]
                ws[i] -= lr * dw
    return ws


def _median_seconds(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of ``runs`` calls (whole training runs: no warm-up call)."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def train_table(epochs, batches, batch, welvet, rng) -> str:
    spec = _spec(MLP)
    x = rng.standard_normal((batches * batch, MLP[0])).astype(np.float32)
    t = (rng.standard_normal((batches * batch, MLP[-1])) * 0.5).astype(np.float32)
    lr = 0.01
    base = pv.VolumetricNetwork.from_spec(spec, seed=1)
    weights = [layer.weights.master for _, layer in base.layers()]
    xb = [x[i * batch:(i + 1) * batch] for i in range(batches)]
    tb = [t[i * batch:(i + 1) * batch] for i in range(batches)]
    numpy_s = _median_seconds(lambda: _numpy_train(xb, tb, weights, epochs, lr), 3)
    welvet_s = None
    if welvet is not None:
        wnet = welvet.Network(spec)
        xl = [b.tolist() for b in xb]
        tl = [b.tolist() for b in tb]
        t0 = time.perf_counter()
        welvet.train(wnet, xl, tl, epochs=epochs, learning_rate=lr, loss_type="mse")
        welvet_s = time.perf_counter() - t0
    rows = []
    for dtype in ("float32", "int8", "int4"):
        for mode in MODES:
            def run():
                net = base.copy()
                net.morph_all(dtype)
                net.train(x, t, epochs=epochs, lr=lr, batch_size=batch, loss="mse", optimizer="sgd",
                          mode=mode, shuffle=False)

            ours = _median_seconds(run, 1 if mode == "normal" else 3)
            rows.append((dtype, mode, f"{ours:.3f}", _fmt_ratio(numpy_s, ours), _fmt_ratio(welvet_s, ours)))
    header = ["dtype", "mode", "polyvtd s", "vs NumPy SGD", "vs welvet"]
    note = (f"{epochs} epochs × {batches} batches of {batch}, SGD, MSE, median of 3 runs "
            f"(normal: 1); NumPy {numpy_s:.3f} s"
            + (f", welvet {welvet_s:.2f} s" if welvet_s is not None else ", welvet not installed"))
    return _table(f"MLP {'→'.join(map(str, MLP))} training — {note}", header, rows)


def bytes_table() -> str:
    store = pv.WeightStore(np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32))
    rows = []
    for dtype in pv.dtypes():
        rows.append((dtype, f"{store.size_in_bytes(dtype):,}", f"{store.size_in_bytes(dtype) / store.size_in_bytes('float32'):.4f}"))
    return _table("Weight bytes of one 4096×4096 layer", ["dtype", "bytes", "vs float32"], rows)


def dense(args) -> None:
    """Print each table as soon as it is measured."""
    rng = np.random.default_rng(0)
    welvet = None if args.no_welvet else _welvet()
    dtypes = DTYPES if not args.quick else ("float32", "int8", "int4")
    big_modes = ("tiled", "parallel") if args.quick else MODES
    print(f"polyvtd {pv.__version__}, {os.cpu_count()} CPU threads, NumPy {np.__version__}, "
          f"welvet {getattr(welvet, '__version__', 'not installed')}\n", flush=True)
    tables = [
        lambda: forward_table("MLP 128→512→512→8, batch 64", MLP, 64, dtypes, MODES, welvet, rng, args.budget),
        lambda: forward_table("Dense 4096×4096, batch 1", (4096, 4096), 1, dtypes, big_modes, welvet, rng, args.budget),
        lambda: forward_table("Dense 4096×4096, batch 64", (4096, 4096), 64, dtypes, big_modes,
                              None if args.quick else welvet, rng, args.budget),
        lambda: train_table(args.epochs, 16, 64, welvet, rng),
        bytes_table,
    ]
    for table in tables:
        print(table(), flush=True)


def gpu(args) -> None:
    """Dense forward on the GPU per dtype (upload of x, one submission and readback included),
    with the GPU-vs-CPU relative error."""
    if not pv.gpu_available():
        print("no GPU adapter found by wgpu: nothing to measure")
        return
    info = pv.gpu_info()
    print(f"polyvtd {pv.__version__} on {info['name']} ({info['backend']}, {info['driver']})\n")
    rng = np.random.default_rng(0)
    rows = []
    for dtype in ("float32", "float16", "int8", "int4", "uint4", "fp8e4m3", "ternary", "binary"):
        layer = pv.layers.Dense(args.size, args.size, activation="gelu", bias=True, dtype=dtype, seed=3)
        cells = [dtype]
        for batch in (1, 64):
            x = rng.standard_normal((batch, args.size)).astype(np.float32)
            y = layer.forward(x, device="gpu")
            err = float(np.abs(y - layer.forward(x)).max() / np.abs(layer.forward(x)).max())
            cells += [_fmt_ms(timeit(lambda: layer.forward(x, device="gpu"), args.budget)), f"{err:.1e}"]
        rows.append(cells)
    header = ["dtype", "batch 1 ms", "rel err", "batch 64 ms", "rel err"]
    print(_table(f"Dense {args.size}×{args.size} forward on the GPU", header, rows))


def layers(args) -> None:
    from . import bench_layers

    if args.device == "gpu":
        if not pv.gpu_available():
            print("no GPU adapter found by wgpu: nothing to measure")
            return
        info = pv.gpu_info()
        print(f"polyvtd {pv.__version__} on {info['name']} ({info['backend']}, {info['driver']}) beside "
              f"{os.cpu_count()} CPU threads\n", flush=True)
        bench_layers.run(args, timeit, _table, None)
        return
    welvet = None if args.no_welvet else _welvet()
    print(f"polyvtd {pv.__version__}, {os.cpu_count()} CPU threads, NumPy {np.__version__}, "
          f"welvet {getattr(welvet, '__version__', 'not installed')}\n", flush=True)
    bench_layers.run(args, timeit, _table, welvet)


def _llm(args) -> None:
    from . import bench_llm

    print(f"polyvtd {pv.__version__}, {os.cpu_count()} CPU threads\n", flush=True)
    bench_llm.run(args, _table)


def _beyond(args) -> None:
    from . import bench_beyond

    bench_beyond.run(args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m polyvtd.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="suite", required=True)
    d = sub.add_parser("dense", help="Dense layers and MLP training vs NumPy and welvet")
    d.add_argument("--quick", action="store_true", help="fewer dtypes and schedules")
    d.add_argument("--no-welvet", action="store_true", help="skip the reference engine even if installed")
    d.add_argument("--epochs", type=int, default=20)
    d.add_argument("--budget", type=float, default=0.4, help="seconds of repeats per figure")
    g = sub.add_parser("gpu", help="Dense forward on the GPU per dtype")
    g.add_argument("--size", type=int, default=4096)
    g.add_argument("--budget", type=float, default=0.4, help="seconds of repeats per figure")
    lay = sub.add_parser("layers", help="every layer type: forward and training step per schedule and dtype")
    lay.add_argument("--quick", action="store_true", help="fewer dtypes and schedules")
    lay.add_argument("--no-welvet", action="store_true", help="skip the reference engine even if installed")
    lay.add_argument("--scale", type=float, default=1.0, help="shrink (<1) or grow the shapes")
    lay.add_argument("--only", nargs="*", help="layer type names to run (default: all)")
    lay.add_argument("--budget", type=float, default=0.3, help="seconds of repeats per figure")
    lay.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                     help="gpu: each layer's GPU forward beside our CPU parallel forward")
    llm = sub.add_parser("llm", help="SmolLM2-135M-Instruct prefill/decode speed and memory vs llama.cpp (CPU) "
                                     "or HF transformers (--device gpu)")
    llm.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    llm.add_argument("--model", default="smollm2")
    llm.add_argument("--dtypes", nargs="*", help="default: q4_1 int8 float32 (CPU), q4_1 float16 (GPU)")
    llm.add_argument("--new-tokens", type=int, default=64)
    llm.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for every engine")
    llm.add_argument("--rounds", type=int, default=3, help="fresh processes per engine, alternating")
    llm.add_argument("--repeats", type=int, default=2, help="prompt + generation runs per process")
    beyond = sub.add_parser("beyond", help="persistence JSON, target propagation and mesh cycles vs welvet")
    beyond.add_argument("--no-welvet", action="store_true", help="skip the reference engine even if installed")
    beyond.add_argument("--budget", type=float, default=0.4, help="seconds of repeats per figure")
    args = parser.parse_args(argv)
    {"dense": dense, "gpu": gpu, "layers": layers, "llm": _llm, "beyond": _beyond}[args.suite](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
