"""pv.Transformer on tiny random Llama/Qwen2 checkpoints written here (config.json + safetensors):
logits and greedy tokens against the NumPy reference, cached decoding, biases, tied heads,
shards, morphing, seeded sampling and named errors for malformed checkpoints."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

import polyvtd as pv
from reference.llama import Llama

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 64,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
}
PROMPT = [1, 5, 9, 33, 2, 63, 17, 17, 40]


def random_weights(cfg, seed=0, qkv_bias=False):
    rng = np.random.default_rng(seed)
    d, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg.get("head_dim") or d // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    w = {"model.embed_tokens.weight": rng.normal(0, 1, (v, d)), "model.norm.weight": 1 + 0.1 * rng.normal(size=d)}
    if not cfg.get("tie_word_embeddings"):
        w["lm_head.weight"] = rng.normal(0, 0.2, (v, d))
    for b in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{b}."
        shapes = {"self_attn.q_proj.weight": (q, d), "self_attn.k_proj.weight": (kv, d), "self_attn.v_proj.weight": (kv, d),
                  "self_attn.o_proj.weight": (d, q), "mlp.gate_proj.weight": (i, d), "mlp.up_proj.weight": (i, d),
                  "mlp.down_proj.weight": (d, i)}
        if qkv_bias:
            shapes.update({"self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,), "self_attn.v_proj.bias": (kv,)})
        for name, shape in shapes.items():
            w[p + name] = rng.normal(0, 0.2, shape)
        w[p + "input_layernorm.weight"] = 1 + 0.1 * rng.normal(size=d)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.normal(size=d)
    return {k: v.astype(np.float32) for k, v in w.items()}


def write(path, cfg, weights, shards=1, dtype=np.float32):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg))
    names = sorted(weights)
    if shards == 1:
        save_file({k: weights[k].astype(dtype) for k in names}, str(path / "model.safetensors"))
        return path
    weight_map = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = names[s::shards]
        save_file({k: weights[k].astype(dtype) for k in part}, str(path / file))
        weight_map.update({k: file for k in part})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


def assert_logits_close(got, want, rtol=1e-5):
    assert got.shape == want.shape
    for pos, (g, w) in enumerate(zip(got, want)):
        err = np.abs(g - w).max() / np.abs(w).max()
        assert err <= rtol, f"position {pos}: relative error {err:.2e}"


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    weights = random_weights(CONFIG)
    path = write(tmp_path_factory.mktemp("llama"), CONFIG, weights)
    return pv.Transformer.from_hf_dir(path), Llama(CONFIG, weights)


def test_logits_match_the_reference_at_every_position(llama):
    model, ref = llama
    assert_logits_close(model.logits(PROMPT), ref.logits(PROMPT))


def test_greedy_tokens_match_the_reference_for_16_steps(llama):
    model, ref = llama
    assert model.generate_ids(PROMPT, max_new_tokens=16) == ref.greedy(PROMPT, 16)


def test_cached_decoding_equals_the_full_forward(llama):
    model, _ = llama
    new = model.generate_ids(PROMPT, max_new_tokens=12)
    full = model.logits(PROMPT + new)
    assert list(np.argmax(full[len(PROMPT) - 1:-1], axis=1)) == new


def test_the_network_is_an_ordinary_grid_giving_the_same_logits(llama):
    model, _ = llama
    net = model.network
    assert net.dims == (1, 1, 4, 6)
    assert [layer.type for _, layer in net.layers()][:7] == [
        "Embedding", "RMSNorm", "MultiHeadAttention", "Residual", "RMSNorm", "SwiGLU", "Residual"]
    assert net.link(0, 0, 1, 2) == (0, 0, 0, 0) and net.link(0, 0, 2, 5) == (0, 0, 2, 2)
    y = net.forward(np.asarray([PROMPT], dtype=np.float32))
    np.testing.assert_allclose(y[0], model.logits(PROMPT), rtol=0, atol=1e-5)
    assert model.config["num_key_value_heads"] == 2 and model.config["head_dim"] == 8


def test_stop_ids_end_generation_and_are_returned(llama):
    model, _ = llama
    greedy = model.generate_ids(PROMPT, max_new_tokens=8)
    assert model.generate_ids(PROMPT, max_new_tokens=8, stop_ids=[greedy[2]]) == greedy[: greedy.index(greedy[2]) + 1]
    assert model.generate_ids(PROMPT, max_new_tokens=0) == []


def test_seeded_sampling_is_reproducible(llama):
    model, _ = llama
    kw = dict(max_new_tokens=16, temperature=1.3, top_k=20, top_p=0.95, min_p=0.01, repetition_penalty=1.2)
    a = model.generate_ids(PROMPT, seed=7, **kw)
    assert a == model.generate_ids(PROMPT, seed=7, **kw)
    assert any(model.generate_ids(PROMPT, seed=s, **kw) != a for s in (8, 9, 10))
    with pytest.raises(pv.InputError, match="top_p"):
        model.generate_ids(PROMPT, top_p=0.0, temperature=1.0)


def test_qwen2_biases_go_to_the_bias_slots(tmp_path):
    cfg = {**CONFIG, "architectures": ["Qwen2ForCausalLM"]}
    weights = random_weights(cfg, seed=1, qkv_bias=True)
    model = pv.Transformer.from_hf_dir(write(tmp_path, cfg, weights))
    attn = model.network.layer(0, 0, 1, 1)
    wq, wk, wv, wo, bq, bk, bv, bo = attn.parameters
    np.testing.assert_array_equal(wq.master, weights["model.layers.0.self_attn.q_proj.weight"])
    np.testing.assert_array_equal(bq.master, weights["model.layers.0.self_attn.q_proj.bias"])
    np.testing.assert_array_equal(bv.master, weights["model.layers.0.self_attn.v_proj.bias"])
    assert not bo.master.any()
    assert_logits_close(model.logits(PROMPT), Llama(cfg, weights).logits(PROMPT))


def test_tied_embeddings_share_one_tensor(tmp_path):
    cfg = {**CONFIG, "tie_word_embeddings": True}
    weights = random_weights(cfg, seed=2)
    model = pv.Transformer.from_hf_dir(write(tmp_path, cfg, weights))
    assert_logits_close(model.logits(PROMPT), Llama(cfg, weights).logits(PROMPT))
    net = model.network
    net.layer(0, 0, 0, 0).weights.morph("int8")
    assert net.layer(0, 0, 3, 1).weights.dtype == "int8"


def test_sharded_f16_checkpoint(tmp_path):
    weights = random_weights(CONFIG, seed=3)
    model = pv.Transformer.from_hf_dir(write(tmp_path, CONFIG, weights, shards=3, dtype=np.float16))
    rounded = {k: v.astype(np.float16).astype(np.float32) for k, v in weights.items()}
    assert_logits_close(model.logits(PROMPT), Llama(CONFIG, rounded).logits(PROMPT))


def test_int8_model_runs_close_to_float32(llama, tmp_path):
    model, ref = llama
    weights = random_weights(CONFIG)
    q8 = pv.Transformer.from_hf_dir(write(tmp_path, CONFIG, weights), dtype="int8")
    assert q8.network.layer(0, 0, 1, 1).dtype == "int8"
    got, want = q8.logits(PROMPT), ref.logits(PROMPT)
    assert np.isfinite(got).all()
    assert np.mean(np.argmax(got, 1) == np.argmax(want, 1)) >= 0.75
    assert len(q8.generate_ids(PROMPT, max_new_tokens=4)) == 4


def test_malformed_checkpoints_raise_named_errors(tmp_path):
    weights = random_weights(CONFIG, seed=4)
    with pytest.raises(pv.ModelLoadError, match="config.json"):
        pv.Transformer.from_hf_dir(tmp_path / "nowhere")
    bad = dict(weights)
    del bad["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(pv.ModelLoadError, match=r"model.layers.1.mlp.up_proj.weight.*\[64, 32\]"):
        pv.Transformer.from_hf_dir(write(tmp_path / "missing", CONFIG, bad))
    bad = {**weights, "model.norm.weight": np.ones(31, np.float32)}
    with pytest.raises(pv.ModelLoadError, match=r"model.norm.weight.*\[31\].*\[32\]"):
        pv.Transformer.from_hf_dir(write(tmp_path / "shape", CONFIG, bad))
    path = write(tmp_path / "cut", CONFIG, weights)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(pv.ModelLoadError, match="model.safetensors"):
        pv.Transformer.from_hf_dir(path)
    with pytest.raises(pv.ModelLoadError, match="architectures"):
        pv.Transformer.from_hf_dir(write(tmp_path / "arch", {**CONFIG, "architectures": ["GPT2LMHeadModel"]}, weights))
    assert issubclass(pv.ModelLoadError, OSError) and issubclass(pv.ModelLoadError, ValueError)


def test_bad_ids_and_overlong_prompts_are_input_errors(llama):
    model, _ = llama
    with pytest.raises(pv.InputError, match="token id 64 at position 1"):
        model.logits([3, 64])
    with pytest.raises(pv.InputError, match="context length 128"):
        model.generate_ids([1] * 129)
    with pytest.raises(pv.InputError, match="non-negative"):
        model.logits([-1])


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def write_tokenizer(path):
    """A byte-level BPE trained by HF `tokenizers` (the reference tokenizer), saved with the
    tokenizer_config.json (ChatML template, EOS) and generation_config.json a HF checkpoint has."""
    hf = pytest.importorskip("tokenizers")
    tok = hf.Tokenizer(hf.models.BPE())
    tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = hf.decoders.ByteLevel()
    trainer = hf.trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                     show_progress=False, initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["The capital of France is Paris. Größe 🙂 def f(x): return x"] * 30, trainer)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|im_end|>", "bos_token": None, "chat_template": CHATML}))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": tok.token_to_id("<|im_end|>")}))
    return tok


def test_a_complete_checkpoint_round_trips_text(tmp_path):
    """config + safetensors + tokenizer: text → the HF tokenizer's ids → logits equal to the
    NumPy reference at every position → the reference's greedy tokens → their text."""
    cfg = {**CONFIG, "vocab_size": 300}
    weights = random_weights(cfg, seed=5)
    path = write(tmp_path / "full", cfg, weights)
    hf_tok = write_tokenizer(path)
    model, ref = pv.Transformer.from_pretrained(path), Llama(cfg, weights)
    text = "The capital of France is 🙂"
    ids = hf_tok.encode(text).ids
    assert model.tokenizer.encode(text) == ids
    assert_logits_close(model.logits(ids), ref.logits(ids))
    eos = hf_tok.token_to_id("<|im_end|>")
    want = ref.greedy(ids, 12)
    want = want[: want.index(eos)] if eos in want else want
    assert model.generate(text, max_new_tokens=12) == hf_tok.decode(want)
    messages = [{"role": "user", "content": "Paris?"}]
    assert model.render(messages) == "<|im_start|>user\nParis?<|im_end|>\n<|im_start|>assistant\n"
    chat_ids = hf_tok.encode(model.render(messages)).ids
    want = ref.greedy(chat_ids, 6)
    want = want[: want.index(eos)] if eos in want else want
    assert model.generate(messages, max_new_tokens=6) == hf_tok.decode(want)
