"""``python -m polyvtd.bench llm``: SmolLM2-135M-Instruct on the CPU — prefill and decode speed
and weight memory for a ~105-token prompt and 64 greedy tokens, per weight dtype (Q4_1 as shipped,
then morphed copies)."""

from __future__ import annotations

import time

import polyvtd as pv

PROMPT = ("Here is a short story about a lighthouse keeper who finds a message in a bottle. "
          "Tell it in a calm voice, with vivid details about the sea, the weather, the light, the "
          "old stone tower and the long nights, and end it with a surprising discovery that changes "
          "how the keeper sees the world around him forever.")


def run(args, table) -> None:
    rows = []
    for dtype in args.dtypes:
        model = pv.Transformer.from_pretrained(args.model, dtype=None if dtype == "q4_1" else dtype)
        ids = model.tokenizer.encode(PROMPT)
        session = model._native.session()
        started = time.perf_counter()
        token = session.feed(ids)
        prefill = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(args.new_tokens - 1):
            token = session.feed([token])
        decode = time.perf_counter() - started
        rows.append((dtype, len(ids), f"{len(ids) / prefill:,.0f}", f"{(args.new_tokens - 1) / decode:,.1f}",
                     f"{model.memory_bytes / 1e6:,.1f}"))
        print(table(f"SmolLM2-135M-Instruct, CPU, {args.new_tokens} greedy tokens",
                    ["weights", "prompt tokens", "prefill tok/s", "decode tok/s", "weight MB"], rows[-1:]), flush=True)
