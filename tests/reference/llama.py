"""float64 NumPy reference of a HuggingFace Llama-family decoder: RMSNorm, RoPE with half-split
(rotate_half) pairing, grouped KV heads, causal attention, SwiGLU, optional Q/K/V/O biases
(Qwen2), tied or separate LM head; a KV cache for incremental decoding and a greedy loop.

Weights are a dict of HF tensor names → arrays; ``cfg`` is the config.json dict."""

from __future__ import annotations

import numpy as np


def _w(weights, name):
    return np.asarray(weights[name], dtype=np.float64)


def rms_norm(x, gain, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * gain


def rope(x, positions, theta):
    """x [seq, heads, hd] rotated at ``positions`` (pairs i, i + hd/2)."""
    hd = x.shape[-1]
    half = hd // 2
    inv_freq = theta ** (-np.arange(half) * 2.0 / hd)
    angles = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


class Llama:
    def __init__(self, cfg: dict, weights: dict):
        self.cfg, self.w = cfg, weights
        self.heads = cfg["num_attention_heads"]
        self.kv_heads = cfg.get("num_key_value_heads", self.heads)
        self.hd = cfg.get("head_dim") or cfg["hidden_size"] // self.heads
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.theta = cfg.get("rope_theta", 10000.0)
        self.reset()

    def reset(self):
        """Empty the KV cache: one (keys, values) pair per layer, [positions, kv_heads, hd]."""
        n = self.cfg["num_hidden_layers"]
        self.cache = [(np.zeros((0, self.kv_heads, self.hd)), np.zeros((0, self.kv_heads, self.hd))) for _ in range(n)]

    def _linear(self, x, name):
        y = x @ _w(self.w, name + ".weight").T
        bias = name + ".bias"
        return y + _w(self.w, bias) if bias in self.w else y

    def _attention(self, x, layer, first):
        p = f"model.layers.{layer}.self_attn."
        seq = x.shape[0]
        positions = np.arange(first, first + seq)
        q = rope(self._linear(x, p + "q_proj").reshape(seq, self.heads, self.hd), positions, self.theta)
        k = rope(self._linear(x, p + "k_proj").reshape(seq, self.kv_heads, self.hd), positions, self.theta)
        v = self._linear(x, p + "v_proj").reshape(seq, self.kv_heads, self.hd)
        keys, values = self.cache[layer]
        keys, values = np.concatenate([keys, k]), np.concatenate([values, v])
        self.cache[layer] = (keys, values)
        group = self.heads // self.kv_heads
        out = np.zeros((seq, self.heads, self.hd))
        for h in range(self.heads):
            scores = q[:, h] @ keys[:, h // group].T / np.sqrt(self.hd)
            visible = np.arange(keys.shape[0])[None, :] <= positions[:, None]
            scores = np.where(visible, scores, -np.inf)
            probs = np.exp(scores - scores.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            out[:, h] = probs @ values[:, h // group]
        return self._linear(out.reshape(seq, -1), p + "o_proj")

    def _mlp(self, x, layer):
        p = f"model.layers.{layer}.mlp."
        gate = self._linear(x, p + "gate_proj")
        return self._linear(gate / (1.0 + np.exp(-gate)) * self._linear(x, p + "up_proj"), p + "down_proj")

    def forward(self, ids):
        """Logits [len(ids), vocab] of new positions ``ids`` after those already cached."""
        first = self.cache[0][0].shape[0]
        x = _w(self.w, "model.embed_tokens.weight")[np.asarray(ids)]
        for layer in range(self.cfg["num_hidden_layers"]):
            p = f"model.layers.{layer}."
            x = x + self._attention(rms_norm(x, _w(self.w, p + "input_layernorm.weight"), self.eps), layer, first)
            x = x + self._mlp(rms_norm(x, _w(self.w, p + "post_attention_layernorm.weight"), self.eps), layer)
        x = rms_norm(x, _w(self.w, "model.norm.weight"), self.eps)
        head = "model.embed_tokens.weight" if self.cfg.get("tie_word_embeddings") else "lm_head.weight"
        return x @ _w(self.w, head).T

    def logits(self, ids):
        """Full forward of ``ids`` from an empty cache."""
        self.reset()
        return self.forward(ids)

    def greedy(self, ids, steps):
        """``steps`` greedy tokens after ``ids`` (prefill, then one cached step per token)."""
        self.reset()
        logits = self.forward(ids)[-1]
        out = []
        for _ in range(steps):
            out.append(int(np.argmax(logits)))
            logits = self.forward([out[-1]])[-1]
        return out
