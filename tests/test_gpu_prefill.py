"""The GPU prefill path (register tiles split along K with their reduce, tiled causal attention)
against the CPU model and the NumPy reference, on tiny checkpoints wide enough to split K:
K = 160 (two splits, the second shorter), 352 (three, the last shorter), 96 (one split of three
blocks), head dims past one 64-dim chunk, prompts whose rows are not multiples of the 16-row query
tiles or the 64-row product tiles, a prompt of one pass plus one row, every epilogue with biases,
and every resident weight format."""

import numpy as np
import pytest

import polyvtd as pv
from reference.llama import Llama
from test_llama import CONFIG, assert_logits_close, random_weights, write

pytestmark = pytest.mark.skipif(
    not pv.gpu_available(), reason="no GPU adapter found by wgpu (install mesa-vulkan-drivers for lavapipe)"
)

CHUNK = 256  # rows of one prefill pass (src/llm/gpu_model.rs)
# K = 160 for Q/K/V, O, gate·up and the all-rows LM head (5 blocks: splits of 3 + 2 blocks),
# K = 352 for down (11 blocks: 4 + 4 + 3); Q/K/V, O biases; five query heads on one KV head.
WIDE = dict(CONFIG, architectures=["Qwen2ForCausalLM"], hidden_size=160, intermediate_size=352,
            num_attention_heads=5, num_key_value_heads=1, max_position_embeddings=CHUNK + 64)


def prompt(length, seed=0):
    return [int(t) for t in np.random.default_rng(seed).integers(0, CONFIG["vocab_size"], length)]


def checkpoint(root, name, cfg, seed, biases=False):
    weights = random_weights(cfg, seed=seed, qkv_bias=biases)
    if biases:  # the O projection's bias too: the residual epilogue with a bias
        rng = np.random.default_rng(seed + 100)
        for b in range(cfg["num_hidden_layers"]):
            weights[f"model.layers.{b}.self_attn.o_proj.bias"] = rng.normal(0, 0.2, cfg["hidden_size"]).astype(np.float32)
    return write(root / name, cfg, weights), weights


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    return checkpoint(tmp_path_factory.mktemp("gpu_prefill"), "wide", WIDE, seed=21, biases=True)


def pair(path, dtype=None):
    return pv.Transformer.from_hf_dir(path, dtype), pv.Transformer.from_hf_dir(path, dtype, device="gpu")


def reference(cfg, weights):
    return Llama(cfg, {k: v.astype(np.float64) for k, v in weights.items()})


@pytest.mark.parametrize("length", [1, 17, 65])
def test_split_products_give_the_cpu_logits_at_every_position(wide, length):
    path, weights = wide
    cpu, gpu = pair(path)
    ids = prompt(length, seed=length)
    logits = gpu.logits(ids)
    assert logits.shape == (length, WIDE["vocab_size"])
    assert_logits_close(logits, cpu.logits(ids), rtol=1e-5)
    assert_logits_close(logits, reference(WIDE, weights).logits(ids), rtol=1e-5)


def test_a_prompt_of_one_pass_and_one_row(wide):
    path, _ = wide
    cpu, gpu = pair(path)
    ids = prompt(CHUNK + 1, seed=3)
    # 1e-4: f32 rounding over 257 positions nears 1e-5 on the CPU's side too (the bar).
    assert_logits_close(gpu.logits(ids), cpu.logits(ids), rtol=1e-4)
    assert gpu.generate_ids(ids, 6) == cpu.generate_ids(ids, 6)


def test_a_session_prefills_again_after_cached_positions(wide):
    # Later turns are prefill passes that start past position 0: their query tiles see the cache.
    path, _ = wide
    cpu, gpu = pair(path, "q8_0")
    turns = [prompt(17, seed=5), prompt(40, seed=6), prompt(3, seed=7)]
    got = []
    for model in (cpu, gpu):
        session = model._native.session()
        got.append([session.feed(turn) for turn in turns])
    assert got[0] == got[1]


@pytest.mark.parametrize("dtype", [None, "float16", "bfloat16", "q4_0", "q4_1", "q8_0", "int4"])
def test_every_resident_format_through_the_prefill(wide, dtype):
    # The tiles decode each format a slice of 8 values at a time; the CPU uses the same values.
    path, _ = wide
    cpu, gpu = pair(path, dtype)
    ids = prompt(33, seed=11)
    assert_logits_close(gpu.logits(ids), cpu.logits(ids), rtol=1e-5)
    assert gpu.generate_ids(ids, 4) == cpu.generate_ids(ids, 4)


@pytest.mark.parametrize("head_dim", [80, 256])
def test_head_dims_staged_in_several_chunks(tmp_path, head_dim):
    # 80: a 64-dim chunk and a 16-dim one; 256: four chunks. K = 64 and 96 (three blocks, unsplit).
    cfg = dict(CONFIG, hidden_size=64, intermediate_size=96, num_attention_heads=2, num_key_value_heads=1,
               head_dim=head_dim, num_hidden_layers=1)
    path, weights = checkpoint(tmp_path, f"hd{head_dim}", cfg, seed=head_dim)
    cpu, gpu = pair(path)
    ids = prompt(40, seed=head_dim)
    logits = gpu.logits(ids)
    assert_logits_close(logits, cpu.logits(ids), rtol=1e-5)
    assert_logits_close(logits, reference(cfg, weights).logits(ids), rtol=1e-5)


def prefill_labels(path):
    session = pv.Transformer.from_hf_dir(path, device="gpu")._native.session()
    session.feed(prompt(9))
    return [name for name, _, _ in session.gpu_profile(1, rows=20)]


PRODUCTS = ["norm + QKV", "O + residual", "norm + gate·up·SiLU", "down + residual"]


def test_the_profile_labels_split_products_and_their_reduce(wide, tmp_path):
    labels = prefill_labels(wide[0])
    layers = WIDE["num_hidden_layers"]
    for product in PRODUCTS:
        assert f"{product} (split-K partials) ×{layers}" in labels
        assert f"{product} (reduce) ×{layers}" in labels
    assert f"attention ×{layers}" in labels and f"RoPE + cache append ×{layers}" in labels
    # K ≤ 128 everywhere: every product is one dispatch, its epilogue in the tiles.
    labels = prefill_labels(checkpoint(tmp_path, "narrow", CONFIG, seed=1)[0])
    assert all(f"{product} ×{CONFIG['num_hidden_layers']}" in labels for product in PRODUCTS)
    assert not any("reduce" in label for label in labels)
