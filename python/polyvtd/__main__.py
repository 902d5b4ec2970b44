"""Command line: ``python -m polyvtd demo`` builds a small grid, morphs it through dtypes, trains
it and prints what happened; ``python -m polyvtd info`` prints the version and GPU adapter;
``python -m polyvtd chat [MODEL]`` and ``python -m polyvtd generate MODEL "prompt"`` talk to a
language model (SmolLM2-135M-Instruct by default)."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import chat_cli


def _two_moons(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    half = n // 2
    a = rng.uniform(0, np.pi, half)
    b = rng.uniform(0, np.pi, n - half)
    x = np.concatenate([np.c_[np.cos(a), np.sin(a)], np.c_[1 - np.cos(b), 0.5 - np.sin(b)]])
    x += rng.normal(0, 0.1, x.shape)
    y = np.concatenate([np.zeros(half, int), np.ones(n - half, int)])
    return x.astype(np.float32), y


def demo() -> int:
    import polyvtd as pv

    print(f"polyvtd {pv.__version__}: a 1×1×1×3 grid, 2 → 32 → 32 → 2, on two-moons\n")
    net = pv.VolumetricNetwork.from_spec({
        "depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 3,
        "layers": [
            {"z": 0, "y": 0, "x": 0, "l": 0, "type": "dense", "activation": "relu", "input_height": 2, "output_height": 32, "bias": True},
            {"z": 0, "y": 0, "x": 0, "l": 1, "type": "dense", "activation": "relu", "input_height": 32, "output_height": 32, "bias": True},
            {"z": 0, "y": 0, "x": 0, "l": 2, "type": "dense", "activation": "linear", "input_height": 32, "output_height": 2, "bias": True},
        ],
    }, seed=1)
    print(net, "\n")
    x, y = _two_moons(1024)
    t0 = time.perf_counter()
    result = net.train(x, y, epochs=60, lr=0.01, batch_size=64, loss="cross_entropy", optimizer="adam")
    elapsed = time.perf_counter() - t0
    accuracy = float((net.forward(x).argmax(1) == y).mean())
    print(f"trained 60 epochs in {elapsed:.2f}s: loss {result.loss_history[0]:.4f} → {result.final_loss:.4f}, "
          f"accuracy {accuracy:.1%}\n")
    print(f"{'dtype':<10}{'weight bytes':>14}{'accuracy':>10}")
    for dtype in ("float32", "float16", "bfloat16", "fp8e4m3", "int8", "int4", "fp4", "int2", "ternary", "binary"):
        morphed = net.copy()
        morphed.morph_all(dtype)
        acc = float((morphed.forward(x).argmax(1) == y).mean())
        print(f"{dtype:<10}{morphed.weight_bytes:>14,}{acc:>10.1%}")
    int4 = net.copy()
    int4.morph_all("int4")
    result = int4.train(x, y, epochs=20, lr=0.005, batch_size=64, loss="cross_entropy", optimizer="adam")
    acc = float((int4.forward(x).argmax(1) == y).mean())
    print(f"\nquantisation-aware training in int4 (20 epochs): accuracy {acc:.1%}")
    if pv.gpu_available():
        info = pv.gpu_info()
        diff = np.abs(net.forward(x, device="gpu") - net.forward(x)).max()
        print(f"GPU ({info['name']}, {info['backend']}): forward max |gpu − cpu| = {diff:.2e}")
    else:
        print("no GPU adapter found: skipped the GPU forward")
    return 0


def info() -> int:
    import polyvtd as pv

    print(f"polyvtd {pv.__version__}")
    print("dtypes:", ", ".join(pv.dtypes()))
    print("gpu:", pv.gpu_info() if pv.gpu_available() else "none")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m polyvtd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="build, morph and train a small grid")
    sub.add_parser("info", help="version, dtypes and GPU adapter")
    chat_cli.add_arguments(sub)
    args = parser.parse_args(argv)
    if args.command in ("chat", "generate"):
        return chat_cli.run(args)
    return {"demo": demo, "info": info}[args.command]()


if __name__ == "__main__":
    sys.exit(main())
