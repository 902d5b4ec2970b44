"""Transformer: a Llama-family decoder (Llama, Mistral, Qwen2, SmolLM...) loaded from a
HuggingFace model directory and laid out on a VolumetricNetwork; logits and token generation."""

from __future__ import annotations

import json
import os
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from . import _core
from .errors import InputError
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

    def __init__(self, native: "_core.Transformer"):
        self._native = native

    @classmethod
    def from_hf_dir(cls, path: Union[str, "os.PathLike[str]"], dtype: Optional[str] = None) -> "Transformer":
        """Load ``config.json`` and ``*.safetensors`` (single or sharded, F32/F16/BF16) from a
        HuggingFace directory; ``dtype`` morphs every weighted layer (e.g. "int8")."""
        return cls(_core.Transformer.from_hf_dir(os.fspath(path), dtype))

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

    def __repr__(self) -> str:
        return repr(self._native)
