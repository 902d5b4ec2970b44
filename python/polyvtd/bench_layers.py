"""``python -m polyvtd.bench layers``: every layer type, forward and training step (forward +
backward) per schedule and a few dtypes, beside a straightforward NumPy float32 implementation
of the same forward (im2col + matmul for convolutions, batched matmul for attention) and, when
installed, welvet (the reference engine) on the same build spec — all timed in the same run.
Ratios are "peer time / polyvtd time": > 1 means polyvtd is faster.

``--device gpu``: the same layers' forward with ``device="gpu"`` (upload of x, one submission and
the readback included) beside our CPU ``parallel`` schedule timed in the same run.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import polyvtd as pv

WEIGHTED_DTYPES = ("float32", "int8", "int4")
MODES = ("normal", "tiled", "parallel")


@dataclass
class Case:
    """One layer type: its build-JSON entry, the batch it runs on, and a NumPy forward taking
    (x, [weight masters as float32])."""

    name: str
    spec: dict
    batch_shape: tuple
    numpy_forward: Callable
    ids: Optional[int] = None  # Embedding: inputs are token ids below this
    # Extra fields the reference needs to read the same shapes (its norms use output_height).
    welvet_fields: dict = field(default_factory=dict)


# ---- NumPy float32 peers ---------------------------------------------------------------------

def _conv(x, w, stride, pad):
    """N-d cross-correlation by im2col + one matmul. x [B, C, *S], w [F, C, *K]."""
    n = w.ndim - 2
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pad, pad)] * n)
    windows = sliding_window_view(xp, w.shape[2:], axis=tuple(range(2, 2 + n)))
    windows = windows[(slice(None), slice(None)) + (slice(None, None, stride),) * n]
    spatial = windows.shape[2:2 + n]
    cols = np.moveaxis(windows, 1, 1 + n).reshape(x.shape[0] * int(np.prod(spatial)), -1)
    y = cols @ w.reshape(w.shape[0], -1).T
    return np.moveaxis(y.reshape((x.shape[0],) + spatial + (w.shape[0],)), -1, 1)


def _conv_transposed(x, w, stride, pad):
    """Scatter form, one matmul per kernel tap. x [B, C, *S], w [F, C, *K] (the reference's
    filter-major layout)."""
    k, s_in = w.shape[2:], x.shape[2:]
    full = tuple((i - 1) * stride + kk for i, kk in zip(s_in, k))
    y = np.zeros((x.shape[0], w.shape[0]) + full, np.float32)
    xm = np.moveaxis(x, 1, -1)
    for tap in np.ndindex(*k):
        contrib = np.moveaxis(xm @ w[(slice(None), slice(None)) + tap].T, -1, 1)
        index = (slice(None), slice(None)) + tuple(slice(t, t + (i - 1) * stride + 1, stride) for t, i in zip(tap, s_in))
        y[index] += contrib
    crop = (slice(None), slice(None)) + tuple(slice(pad, f - pad) for f in full)
    return y[crop]


def _rope(v, base=10000.0):
    s, hd = v.shape[-2], v.shape[-1]
    inv = base ** (-np.arange(0, hd // 2, dtype=np.float32) * 2 / hd)
    ang = np.arange(s, dtype=np.float32)[:, None] * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)
    a, b = v[..., : hd // 2], v[..., hd // 2:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


def _attention(x, p, heads):
    wq, wk, wv, wo, bq, bk, bv, bo = p
    b, s, d = x.shape
    hd = d // heads
    split = lambda t: t.reshape(b, s, heads, hd).transpose(0, 2, 1, 3)
    q, k, v = split(x @ wq.T + bq), split(x @ wk.T + bk), split(x @ wv.T + bv)
    q, k = _rope(q), _rope(k)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    scores += np.triu(np.full((s, s), -np.inf, np.float32), 1)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    scores /= scores.sum(-1, keepdims=True)
    out = (scores @ v).transpose(0, 2, 1, 3).reshape(b, s, d)
    return out @ wo.T + bo


def _silu(v):
    return v / (1 + np.exp(-v))


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def _rnn(x, p):
    w_ih, w_hh, b = p
    xs = x @ w_ih.T + b
    h = np.zeros((x.shape[0], w_hh.shape[0]), np.float32)
    out = np.empty(xs.shape, np.float32)
    for t in range(x.shape[1]):
        h = np.tanh(xs[:, t] + h @ w_hh.T)
        out[:, t] = h
    return out


def _lstm(x, p):
    w_ih, w_hh, b = p
    hidden = w_hh.shape[1]
    xs = x @ w_ih.T + b
    h = np.zeros((x.shape[0], hidden), np.float32)
    c = np.zeros_like(h)
    out = np.empty((x.shape[0], x.shape[1], hidden), np.float32)
    for t in range(x.shape[1]):
        gates = xs[:, t] + h @ w_hh.T
        i, f, g, o = np.split(gates, 4, axis=1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        out[:, t] = h
    return out


def _rmsnorm(x, p, eps=1e-6):
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * p[0]


def _layernorm(x, p, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(x.var(-1, keepdims=True) + eps) * p[0] + p[1]


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _kmeans(x, p, tau=1.0):
    c = p[0]
    d2 = (x * x).sum(-1, keepdims=True) - 2 * x @ c.T + (c * c).sum(-1)
    return _softmax(-d2 / (2 * tau * tau))


def cases(scale: float = 1.0) -> list:
    """The benchmark shapes; `scale` < 1 shrinks them (the test suite runs a tiny version)."""
    s = lambda n: max(2, int(round(n * scale)))
    d, seq, batch = 8 * s(32), s(64), s(16)  # d: a multiple of the 8 attention heads
    img, ch = s(32), s(16)
    conv = lambda kind, dims, size: {"type": kind, "input_channels": ch, "filters": 2 * ch, "kernel_size": 3,
                                     "stride": 1, "padding": 1, "input_height": size, "input_width": size,
                                     "input_depth": size, "activation": "relu"}
    return [
        Case("Dense", {"type": "dense", "input_height": 2 * d, "output_height": 2 * d, "activation": "relu"},
             (4 * batch, 2 * d), lambda x, p: np.maximum(x @ p[0].T, 0)),
        Case("CNN1", conv("cnn1", 1, 8 * img), (batch, ch, 8 * img), lambda x, p: np.maximum(_conv(x, p[0], 1, 1), 0)),
        Case("CNN2", conv("cnn2", 2, img), (batch, ch, img, img), lambda x, p: np.maximum(_conv(x, p[0], 1, 1), 0)),
        Case("CNN3", conv("cnn3", 3, s(10)), (max(2, batch // 4), ch, s(10), s(10), s(10)),
             lambda x, p: np.maximum(_conv(x, p[0], 1, 1), 0)),
        Case("ConvTransposed1D", dict(conv("convtransposed1d", 1, 8 * img), input_width=8 * img), (batch, ch, 8 * img),
             lambda x, p: np.maximum(_conv_transposed(x, p[0], 1, 1), 0)),
        Case("ConvTransposed2D", conv("convtransposed2d", 2, img), (batch, ch, img, img),
             lambda x, p: np.maximum(_conv_transposed(x, p[0], 1, 1), 0)),
        Case("ConvTransposed3D", conv("convtransposed3d", 3, s(10)), (max(2, batch // 4), ch, s(10), s(10), s(10)),
             lambda x, p: np.maximum(_conv_transposed(x, p[0], 1, 1), 0)),
        Case("MultiHeadAttention", {"type": "mha", "d_model": d, "num_heads": 8, "seq_length": seq},
             (batch // 2, seq, d), lambda x, p: _attention(x, p, 8)),
        Case("SwiGLU", {"type": "swiglu", "input_height": d, "output_height": s(688)}, (batch, seq, d),
             lambda x, p: (_silu(x @ p[0].T + p[3]) * (x @ p[1].T + p[4])) @ p[2].T + p[5]),
        Case("RMSNorm", {"type": "rmsnorm", "input_height": 2 * d}, (batch, seq, 2 * d), _rmsnorm,
             welvet_fields={"output_height": 2 * d}),
        Case("LayerNorm", {"type": "layernorm", "input_height": 2 * d}, (batch, seq, 2 * d), _layernorm,
             welvet_fields={"output_height": 2 * d}),
        Case("RNN", {"type": "rnn", "input_height": d // 4, "output_height": d // 2, "seq_length": seq // 2},
             (2 * batch, seq // 2, d // 4), _rnn),
        Case("LSTM", {"type": "lstm", "input_height": d // 4, "output_height": d // 2, "seq_length": seq // 2},
             (2 * batch, seq // 2, d // 4), _lstm),
        Case("Embedding", {"type": "embedding", "vocab_size": s(32000), "embedding_dim": d}, (2 * batch, 2 * seq),
             lambda x, p: p[0][x.astype(np.int64)], ids=s(32000)),
        Case("KMeans", {"type": "kmeans", "input_height": d // 4, "num_clusters": 32}, (16 * batch, d // 4), _kmeans),
        Case("Softmax", {"type": "softmax", "softmax_type": 0}, (batch, seq, 2 * d), lambda x, p: _softmax(x)),
        Case("Residual", {"type": "residual"}, (4 * batch, 2 * d), lambda x, p: x.copy()),
    ]


def _inputs(case: Case, rng) -> np.ndarray:
    if case.ids is not None:
        return rng.integers(0, case.ids, case.batch_shape).astype(np.float32)
    return rng.standard_normal(case.batch_shape).astype(np.float32)


def _welvet_seconds(entry: dict, x: np.ndarray, budget: float) -> Optional[float]:
    """Median seconds of welvet's forward on `entry` (runs in a child process)."""
    import welvet

    net = welvet.Network({"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 1, "layers": [entry]})
    flat, shape = x.ravel().tolist(), list(x.shape)
    net.forward_polymorphic(flat, shape)
    times, start = [], time.perf_counter()
    while not times or (len(times) < 3 and time.perf_counter() - start < budget):
        t = time.perf_counter()
        net.forward_polymorphic(flat, shape)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def welvet_time(case: Case, x: np.ndarray, dtype: str, budget: float) -> Optional[float]:
    """welvet on the same entry, in a fresh process: the reference engine panics (and takes its
    process down) on some shapes; that counts as no figure."""
    rows = x.reshape(-1, x.shape[-1]) if case.welvet_fields else x
    entry = dict(case.spec, z=0, y=0, x=0, l=0, dtype=dtype, **case.welvet_fields)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            return pool.submit(_welvet_seconds, entry, rows, budget).result(timeout=300)
        except Exception:
            return None


def layer_rows(case: Case, rng, use_welvet: bool, dtypes, modes, budget, timeit) -> list:
    layer = pv.layers.from_spec(case.spec, seed=1)
    x = _inputs(case, rng)
    weighted = bool(layer.parameters)
    masters = [p.master for p in layer.parameters]
    numpy_s = timeit(lambda: case.numpy_forward(x, masters), budget)
    grad = np.ones(layer.forward(x).shape, np.float32)
    rows = []
    for dtype in (dtypes if weighted else ("—",)):
        if weighted:
            layer.morph(dtype)
        welvet_s = welvet_time(case, x, dtype if weighted else "float32", budget) if use_welvet else None
        for mode in modes:
            fwd = timeit(lambda: layer.forward(x, mode=mode), budget)
            step = timeit(lambda: layer.backward(x, grad, mode=mode), budget)
            rows.append((case.name, dtype, mode, f"{fwd * 1e3:.3f}", f"{step * 1e3:.3f}",
                         f"{numpy_s / fwd:.2f}×", "—" if welvet_s is None else f"{welvet_s / fwd:.2f}×"))
    return rows


def gpu_rows(case: Case, rng, dtypes, budget, timeit) -> list:
    """The GPU forward per dtype beside our CPU parallel forward, with their relative difference."""
    layer = pv.layers.from_spec(case.spec, seed=1)
    x = _inputs(case, rng)
    rows = []
    for dtype in (dtypes if layer.parameters else ("—",)):
        if layer.parameters:
            layer.morph(dtype)
        gpu_y = layer.forward(x, device="gpu")
        cpu_y = layer.forward(x, mode="parallel")
        scale = float(np.abs(cpu_y).max()) if cpu_y.size else 0.0
        err = float(np.abs(gpu_y - cpu_y).max()) / scale if scale else 0.0
        gpu = timeit(lambda: layer.forward(x, device="gpu"), budget)
        cpu = timeit(lambda: layer.forward(x, mode="parallel"), budget)
        rows.append((case.name, dtype, f"{gpu * 1e3:.3f}", f"{cpu * 1e3:.3f}", f"{cpu / gpu:.2f}×", f"{err:.1e}"))
    return rows


def run(args, timeit, table, welvet) -> None:
    rng = np.random.default_rng(0)
    dtypes = ("float32", "int4") if args.quick else WEIGHTED_DTYPES
    modes = ("tiled", "parallel") if args.quick else MODES
    gpu = args.device == "gpu"
    if gpu:
        header = ["layer", "dtype", "GPU ms", "CPU parallel ms", "GPU vs CPU", "rel diff"]
        info = pv.gpu_info()
        on = f" — GPU: {info['name']} ({info['backend']})"
    else:
        header = ["layer", "dtype", "mode", "forward ms", "train step ms", "vs NumPy fwd", "vs welvet fwd"]
        on = ""
    wanted = {n.lower() for n in args.only} if args.only else None
    for case in cases(args.scale):
        if wanted and case.name.lower() not in wanted:
            continue
        if gpu:
            rows = gpu_rows(case, rng, dtypes, args.budget, timeit)
        else:
            rows = layer_rows(case, rng, welvet is not None, dtypes, modes, args.budget, timeit)
        shape = "×".join(map(str, case.batch_shape))
        print(table(f"{case.name}, input {shape}{on}", header, rows), flush=True)
