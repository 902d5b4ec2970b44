"""``python -m polyvtd.bench llm``: SmolLM2-135M-Instruct prefill and decode speed and memory for
a ~105-token ChatML prompt and 64 greedy tokens. On the CPU beside llama.cpp
(``llama-cpp-python`` on the same GGUF, same thread count); with ``--device gpu`` beside HF
transformers (PyTorch, float16 on CUDA, built from the same weights and config), when installed.

Every engine runs in a fresh process of its own (``_bench_llm_child.py``), so its peak RSS is
its own; the rounds alternate between engines so that a noisy neighbour slows them alike, and
each figure is the best over rounds × repeats."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import polyvtd as pv

SYSTEM = "You are a helpful assistant. Answer in plain words, in a calm voice."
PROMPT = ("Here is a short story about a lighthouse keeper who finds a message in a bottle. "
          "Tell it in a calm voice, with vivid details about the sea, the weather, the light, the "
          "old stone tower and the long nights, and end it with a surprising discovery that changes "
          "how the keeper sees the world around him forever.")

CHILD = os.path.join(os.path.dirname(__file__), "_bench_llm_child.py")


def prompt_ids(model: "pv.Transformer") -> list:
    """The benchmark prompt through the model's own chat template (≈105 tokens for SmolLM2); a
    model without a tokenizer gets 105 fixed pseudo-random ids."""
    if model.tokenizer is None:
        return [(7919 * i + 13) % model.config["vocab_size"] for i in range(105)]
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    return model.tokenizer.encode(model.render(messages))


def measure(engine: str, model: str, dtype, ids: list, args) -> dict:
    """One engine's figures, from a child process."""
    request = {"engine": engine, "model": model, "dtype": dtype, "ids": ids, "new_tokens": args.new_tokens,
               "repeats": args.repeats, "threads": args.threads, "device": args.device}
    env = {**os.environ, "RAYON_NUM_THREADS": str(args.threads)}
    done = subprocess.run([sys.executable, CHILD, json.dumps(request)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{engine} run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peers(model_path: str) -> tuple:
    """The peer engines that can run this model here, and a note on those that cannot."""
    notes = []
    found = []
    if not model_path.lower().endswith(".gguf"):
        notes.append("llama.cpp: runs GGUF files only")
    elif importlib.util.find_spec("llama_cpp") is None:
        notes.append('llama.cpp: not installed (CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON '
                     '-DGGML_AMX_INT8=OFF" pip install llama-cpp-python)')
    else:
        found.append("llama.cpp")
    notes.append("welvet 0.80: reads no GGUF files, and its Transformer.prefill_tokens returns a placeholder "
                 "([0.0] × 256), so it cannot generate")
    return found, notes


def gpu_peers() -> tuple:
    """HF transformers on CUDA when torch sees a GPU, else a note saying why not."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        return [], ["transformers: torch and transformers are not installed"]
    import torch

    if not torch.cuda.is_available():
        return [], ["transformers: torch sees no CUDA device"]
    return ["transformers"], []


def best_of_rounds(runs: list, model_path: str, ids: list, args, notes: list) -> dict:
    """Each (engine, dtype) run `args.rounds` times, alternating; the best figures kept. A peer
    that fails is dropped with a note; polyvtd failing is an error."""
    best: dict = {}
    for _ in range(args.rounds):
        for engine, dtype in list(runs):
            try:
                got = measure(engine, model_path, dtype, ids, args)
            except RuntimeError as failure:
                if engine == "polyvtd":
                    raise
                runs.remove((engine, dtype))
                notes.append(f"{engine}: failed on this file ({str(failure).strip().splitlines()[-1]})")
                continue
            key = (engine, dtype)
            if key in best:
                got["prefill"] = max(got["prefill"], best[key]["prefill"])
                got["decode"] = max(got["decode"], best[key]["decode"])
                got["peak_rss"] = min(got["peak_rss"], best[key]["peak_rss"])
            best[key] = got
    return best


def as_loaded(model_path: str, dtype: str):
    """None (the weights as stored) for "q4_1" on a GGUF file, which holds Q4_1 already."""
    return None if dtype == "q4_1" and model_path.lower().endswith(".gguf") else dtype


def run_gpu(args, table) -> None:
    model_path = str(pv.models.resolve(args.model))
    ids = prompt_ids(pv.Transformer.from_pretrained(model_path))
    info = pv.gpu_info()
    found, notes = gpu_peers()
    runs = [(engine, as_loaded(model_path, d)) for d in args.dtypes or ["q4_1", "float16"] for engine in ["polyvtd", *found]]
    best = best_of_rounds(runs, model_path, ids, args, notes)
    rows = []
    for (engine, dtype), got in best.items():
        peer = best.get(("transformers", dtype)) if engine == "polyvtd" else None
        device_mb = "—" if got.get("device_memory") is None else f"{got['device_memory'] / 1e6:,.0f}"
        rows.append((engine, dtype or "Q4_1 (as stored)", f"{got['prefill']:,.0f}", f"{got['decode']:,.0f}",
                     f"{got['weight_bytes'] / 1e6:,.0f}", device_mb,
                     f"{got['prefill'] / peer['prefill']:.1f}×" if peer else "",
                     f"{got['decode'] / peer['decode']:.1f}×" if peer else "",
                     "same" if peer and peer["tokens"] == got["tokens"] else ("differ" if peer else "")))
    title = (f"{os.path.basename(model_path)} on {info['name']} ({info['backend']}), {len(ids)}-token prompt, "
             f"{args.new_tokens} greedy tokens (best of {args.rounds}×{args.repeats})")
    print(table(title, ["engine", "weights", "prefill tok/s", "decode tok/s", "resident MB", "device memory Δ MB",
                        "prefill vs transformers", "decode vs transformers", "greedy tokens"], rows))
    print("  resident MB: polyvtd's weights + one sequence's caches and activations; transformers' float16 parameters.")
    print("  device memory Δ: NVML's used memory after the runs minus before the process touched the GPU "
          "(includes the driver's context).")
    for note in notes:
        print(f"  {note}")


def run(args, table) -> None:
    if args.device == "gpu":
        return run_gpu(args, table)
    model_path = str(pv.models.resolve(args.model))
    ids = prompt_ids(pv.Transformer.from_pretrained(model_path))
    found, notes = peers(model_path)
    dtypes = args.dtypes or ["q4_1", "int8", "float32"]
    runs = [("llama.cpp", None) for _ in found] + [("polyvtd", as_loaded(model_path, d)) for d in dtypes]
    best = best_of_rounds(runs, model_path, ids, args, notes)
    peer = best.get(("llama.cpp", None))

    def ratio(ours: float, theirs, lower_is_better: bool = False) -> str:
        if theirs is None:
            return "—"
        return f"{(theirs / ours if lower_is_better else ours / theirs):.2f}×"

    rows = []
    for (engine, dtype), got in best.items():
        weights = "Q4_1 (as stored)" if dtype is None else dtype
        mine = engine == "polyvtd"
        rows.append((engine, weights, f"{got['prefill']:,.0f}", f"{got['decode']:,.1f}", f"{got['peak_rss'] / 1e6:,.0f}",
                     ratio(got["prefill"], peer and peer["prefill"]) if mine else "",
                     ratio(got["decode"], peer and peer["decode"]) if mine else "",
                     ratio(got["peak_rss"], peer and peer["peak_rss"], lower_is_better=True) if mine else ""))
    title = (f"SmolLM2-135M-Instruct, CPU, {args.threads} threads, {len(ids)}-token ChatML prompt, "
             f"{args.new_tokens} greedy tokens (best of {args.rounds}×{args.repeats})")
    print(table(title, ["engine", "weights", "prefill tok/s", "decode tok/s", "peak RSS MB",
                        "prefill vs llama.cpp", "decode vs llama.cpp", "RSS: llama.cpp / ours"], rows))
    for note in notes:
        print(f"  {note}")
