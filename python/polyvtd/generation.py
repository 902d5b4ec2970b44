"""Text generation on top of a native decode session: prompt rendering, EOS and stop strings,
streaming text pieces that never split a character, speed figures, and multi-turn chat that
continues the KV cache instead of re-encoding the history."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

from .errors import InputError

SAMPLING_DEFAULTS = dict(temperature=0.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0,
                         repetition_window=64, seed=0)


@dataclass
class Stats:
    """What the last answer cost: prompt tokens and the prefill time, new tokens and the decode
    time."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    #: why the answer ended: "eos", "stop" (a stop string), "length" (max_new_tokens or context)
    finish_reason: str = ""

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.new_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0


def sampling_options(options: dict) -> tuple:
    """Split generate()'s keyword arguments into sampling settings and the rest."""
    unknown = set(options) - set(SAMPLING_DEFAULTS)
    if unknown:
        raise InputError(f"unknown generation options {sorted(unknown)}")
    return {**SAMPLING_DEFAULTS, **options}


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of `text` could still become the start of a stop string."""
    keep = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                keep = max(keep, n)
                break
    return keep


def stream_tokens(session, tokenizer, prompt_ids: list, max_new_tokens: int, stop: Sequence[str],
                  stats: Stats) -> Iterator[str]:
    """Feed `prompt_ids`, then yield text pieces until EOS, a stop string (not included) or
    `max_new_tokens`. The session ends holding every token it was fed."""
    if max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be ≥ 0, got {max_new_tokens}")
    if not prompt_ids:
        raise InputError("the prompt encodes to no tokens")
    eos = set(tokenizer.eos_ids)
    decoder = tokenizer.stream_decoder(skip_special_tokens=True)
    stats.prompt_tokens, stats.new_tokens = len(prompt_ids), 0
    started = time.perf_counter()
    token = session.feed(prompt_ids)
    stats.prefill_seconds = time.perf_counter() - started
    stats.decode_seconds = 0.0
    text, emitted = "", 0
    stats.finish_reason = "length"
    while stats.new_tokens < max_new_tokens and token not in eos:
        stats.new_tokens += 1
        text += decoder.step(token)
        cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
        if cut >= 0:
            stats.finish_reason = "stop"
            if cut > emitted:
                yield text[emitted:cut]
            break
        safe = len(text) - _held_back(text, stop)
        if safe > emitted:
            yield text[emitted:safe]
            emitted = safe
        if stats.new_tokens == max_new_tokens or session.length >= session.context_length:
            break
        started = time.perf_counter()
        token = session.feed([token])
        stats.decode_seconds += time.perf_counter() - started
    else:
        if token in eos:
            stats.finish_reason = "eos"
    if stats.finish_reason != "stop":
        # A character cut off by the end comes out as U+FFFD, as a whole-sequence decode gives it.
        text += decoder.flush()
        if len(text) > emitted:
            yield text[emitted:]


class ChatSession:
    """A conversation whose turns extend one KV cache: each ``send`` renders only the new turn
    (the template's output for the history so far is a prefix of the output with the new turn)
    and feeds just those tokens."""

    def __init__(self, model, system: Optional[str] = None):
        self._model = model
        self._system = system
        self.last_stats = Stats()
        self.reset()

    def reset(self) -> None:
        """Start over (the cache memory is kept)."""
        self.messages = [{"role": "system", "content": self._system}] if self._system else []
        self._rendered = ""
        self._session = self._model._native.session()

    def send(self, text: str, *, max_new_tokens: int = 256, stop: Sequence[str] = (), stream: bool = False,
             **sampling):
        """Add a user turn and answer it; ``stream=True`` returns an iterator of text pieces."""
        self._session.configure(**sampling_options(sampling))
        self.messages.append({"role": "user", "content": text})
        prompt = self._model.render(self.messages)
        if not prompt.startswith(self._rendered):
            raise InputError("this chat template does not render turns incrementally; use generate()")
        new_ids = self._model.tokenizer.encode(prompt[len(self._rendered):], add_special_tokens=not self._rendered)
        self._rendered_prompt = prompt
        pieces = self._answer(new_ids, max_new_tokens, stop)
        return pieces if stream else "".join(pieces)

    def _answer(self, new_ids, max_new_tokens, stop) -> Iterator[str]:
        reply = ""
        for piece in stream_tokens(self._session, self._model.tokenizer, new_ids, max_new_tokens, stop,
                                   self.last_stats):
            reply += piece
            yield piece
        self.messages.append({"role": "assistant", "content": reply})
        closed = self._model.render(self.messages, add_generation_prompt=False)
        prompt = self._rendered_prompt
        self._rendered = closed
        if self.last_stats.finish_reason == "eos" and closed.startswith(prompt + reply):
            # The cache holds the prompt and every reply token (the EOS was sampled, not fed):
            # feed only the template's end of the turn.
            suffix = closed[len(prompt) + len(reply):]
            if suffix:
                self._session.feed(self._model.tokenizer.encode(suffix, add_special_tokens=False))
        else:
            # Cut short (length or stop string): the cache and the text disagree at the end, so
            # this one turn is re-encoded.
            self._session.reset()
            self._session.feed(self._model.tokenizer.encode(closed, add_special_tokens=True))
