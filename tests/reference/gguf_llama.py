"""HF-named Llama weights ⇄ a GGUF file as llama.cpp's converter writes it (Q and K rows permuted
for interleaved RoPE pairs, llama.* metadata, a byte-level vocabulary), for the loader tests."""

import numpy as np

NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
FIXED = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
         "lm_head.weight": "output.weight"}


def gguf_name(hf: str) -> str:
    if hf in FIXED:
        return FIXED[hf]
    _, _, block, rest = hf.split(".", 3)
    return f"blk.{block}.{NAMES[rest]}"


def permute(w, heads):
    """llama.cpp's convert_hf_to_gguf permutation of Q/K rows (half-split → interleaved pairs)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, heads):
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write(path, cfg, weights, quant=None):
    """Write `weights` (HF names, float32) as a GGUF; `quant` (a GGMLQuantizationType) quantises
    every matrix whose rows are a multiple of 32."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_rope_freq_base(cfg["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_rope_dimension_count(cfg["hidden_size"] // heads)
    vocab = [chr(ord("A") + i) if i < 26 else chr(ord("a") + i - 26) if i < 52 else f"<|t{i}|>"
             for i in range(cfg["vocab_size"])]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(vocab)
    writer.add_token_types([1 if i < 52 else 3 for i in range(len(vocab))])
    writer.add_token_merges([])
    writer.add_eos_token_id(cfg["vocab_size"] - 1)
    for name, w in weights.items():
        if name.endswith("q_proj.weight"):
            w = permute(w, heads)
        elif name.endswith("k_proj.weight"):
            w = permute(w, kv)
        w = np.ascontiguousarray(w, np.float32)
        if quant is not None and w.ndim == 2 and w.shape[1] % 32 == 0:
            writer.add_tensor(gguf_name(name), gguf.quants.quantize(w, quant), raw_dtype=quant)
        else:
            writer.add_tensor(gguf_name(name), w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def read_hf_weights(path):
    """The HF-named float64 weights of a llama GGUF (dequantised, Q/K rows un-permuted)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    heads = int(reader.fields["llama.attention.head_count"].parts[-1][0])
    kv = int(reader.fields["llama.attention.head_count_kv"].parts[-1][0])
    by_gguf = {}
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        by_gguf[t.name] = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float64)
    weights = {}
    blocks = int(reader.fields["llama.block_count"].parts[-1][0])
    names = list(FIXED) + [f"model.layers.{b}.{n}" for b in range(blocks) for n in NAMES]
    for hf in names:
        g = gguf_name(hf)
        if g not in by_gguf:
            continue
        w = by_gguf[g]
        if hf.endswith("q_proj.weight"):
            w = unpermute(w, heads)
        elif hf.endswith("k_proj.weight"):
            w = unpermute(w, kv)
        weights[hf] = w
    return weights
