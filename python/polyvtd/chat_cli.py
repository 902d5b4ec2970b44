"""``python -m polyvtd chat [MODEL]`` (interactive, streaming, multi-turn) and
``python -m polyvtd generate MODEL "prompt"`` (one shot). Prefill and decode speed are shown
after each answer. MODEL defaults to SmolLM2-135M-Instruct (see polyvtd.models)."""

from __future__ import annotations

import argparse
import sys
from typing import Iterable, TextIO


def add_arguments(sub) -> None:
    for name, help_text in (("chat", "interactive streaming chat (/reset, /quit)"),
                            ("generate", "one answer to one prompt")):
        p = sub.add_parser(name, help=help_text)
        if name == "chat":
            p.add_argument("model", nargs="?", default=None, help="path, 'org/name' in the HF cache, or smollm2")
        else:
            p.add_argument("model", help="path, 'org/name' in the HF cache, or smollm2")
            p.add_argument("prompt")
        p.add_argument("--dtype", default=None, help="morph every weight to this dtype (e.g. int8)")
        p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
        p.add_argument("--max-new-tokens", type=int, default=256)
        p.add_argument("--temperature", type=float, default=0.0)
        p.add_argument("--top-k", type=int, default=0)
        p.add_argument("--top-p", type=float, default=1.0)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--system", default=None, help="system prompt")


def _sampling(args) -> dict:
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, seed=args.seed)


def _stream(pieces: Iterable[str], out: TextIO) -> None:
    for piece in pieces:
        out.write(piece)
        out.flush()
    out.write("\n")


def _speed(stats, out: TextIO) -> None:
    out.write(f"[prefill {stats.prompt_tokens} tok at {stats.prefill_tokens_per_s:,.0f} tok/s · "
              f"decode {stats.new_tokens} tok at {stats.decode_tokens_per_s:,.1f} tok/s]\n")


def generate(args, out: TextIO = sys.stdout) -> int:
    from .transformer import Transformer

    model = Transformer.from_pretrained(args.model, dtype=args.dtype, device=args.device)
    messages = ([{"role": "system", "content": args.system}] if args.system else [])
    messages.append({"role": "user", "content": args.prompt})
    _stream(model.generate(messages, stream=True, **_sampling(args)), out)
    _speed(model.last_stats, out)
    return 0


def chat(args, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    from .transformer import Transformer

    model = Transformer.from_pretrained(args.model, dtype=args.dtype, device=args.device)
    session = model.chat(system=args.system)
    out.write(f"{model.name} ({model.dtype}, {args.device}). /reset starts over, /quit ends.\n")
    while True:
        out.write("> ")
        out.flush()
        line = stdin.readline()
        if not line or line.strip() == "/quit":
            return 0
        text = line.strip()
        if text == "/reset":
            session.reset()
            out.write("(new conversation)\n")
            continue
        if not text:
            continue
        _stream(session.send(text, stream=True, **_sampling(args)), out)
        _speed(session.last_stats, out)


def run(args: argparse.Namespace) -> int:
    return {"chat": chat, "generate": generate}[args.command](args)
