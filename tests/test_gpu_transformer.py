"""pv.Transformer with device="gpu": weights, KV cache and activations in VRAM, one submission per
prefill or decode step. Against the CPU model and the NumPy reference on tiny random checkpoints
(lavapipe in CI): logits of every position, greedy and seeded-sampled tokens for 32 steps across
dtypes, biases and tied heads, GGUF blocks, prompts longer than a prefill pass and caches that
grow, chat sessions that continue their cache, GPU memory released with the model, named errors."""

import json
import os
import sys

import numpy as np
import pytest

import polyvtd as pv
from reference import gguf_llama
from reference.llama import Llama
from test_gpu_device import rss_bytes, run_child
from test_llama import CONFIG, PROMPT, assert_logits_close, random_weights, write

pytestmark = pytest.mark.skipif(
    not pv.gpu_available(), reason="no GPU adapter found by wgpu (install mesa-vulkan-drivers for lavapipe)"
)

QWEN2 = dict(CONFIG, architectures=["Qwen2ForCausalLM"])
TIED = dict(CONFIG, tie_word_embeddings=True)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """name → (path, config, weights) of three tiny models: Llama, Qwen2 (Q/K/V biases), tied head."""
    root = tmp_path_factory.mktemp("gpu_llm")
    made = {}
    for name, cfg, bias in [("llama", CONFIG, False), ("qwen2", QWEN2, True), ("tied", TIED, False)]:
        weights = random_weights(cfg, seed=len(made) + 5, qkv_bias=bias)
        made[name] = (write(root / name, cfg, weights), cfg, weights)
    return made


def pair(path, dtype=None):
    return pv.Transformer.from_hf_dir(path, dtype), pv.Transformer.from_hf_dir(path, dtype, device="gpu")


def test_logits_of_every_position_match_the_cpu_and_the_reference(checkpoints):
    path, cfg, weights = checkpoints["llama"]
    cpu, gpu = pair(path)
    assert gpu.device == "gpu" and cpu.device == "cpu"
    logits = gpu.logits(PROMPT)
    assert logits.shape == (len(PROMPT), cfg["vocab_size"]) and logits.dtype == np.float32
    assert_logits_close(logits, cpu.logits(PROMPT), rtol=1e-5)
    reference = Llama(cfg, {k: v.astype(np.float64) for k, v in weights.items()})
    assert_logits_close(logits, reference.logits(PROMPT), rtol=1e-5)


@pytest.mark.parametrize("model", ["llama", "qwen2", "tied"])
@pytest.mark.parametrize("dtype", [None, "q4_1", "float16", "bfloat16", "int4", "q8_0", "fp8"])
def test_greedy_tokens_equal_the_cpu_for_32_steps(checkpoints, model, dtype):
    path, _, _ = checkpoints[model]
    cpu, gpu = pair(path, dtype)
    assert_logits_close(gpu.logits(PROMPT), cpu.logits(PROMPT), rtol=1e-5)
    assert gpu.generate_ids(PROMPT, 32) == cpu.generate_ids(PROMPT, 32)


def test_sampling_reads_the_logits_back_and_matches_the_cpu(checkpoints):
    path, _, _ = checkpoints["qwen2"]
    cpu, gpu = pair(path, "q4_1")
    options = dict(temperature=0.9, top_k=20, top_p=0.95, repetition_penalty=1.2, seed=11)
    assert gpu.generate_ids(PROMPT, 32, **options) == cpu.generate_ids(PROMPT, 32, **options)


def test_quantised_gguf_blocks_run_on_the_gpu(checkpoints, tmp_path):
    gguf = pytest.importorskip("gguf")
    _, cfg, weights = checkpoints["llama"]
    for quant in ["Q4_0", "Q4_1", "Q8_0"]:
        path = gguf_llama.write(tmp_path / f"{quant}.gguf", cfg, weights, getattr(gguf.GGMLQuantizationType, quant))
        cpu, gpu = pv.Transformer.from_gguf(path), pv.Transformer.from_gguf(path, device="gpu")
        assert_logits_close(gpu.logits(PROMPT), cpu.logits(PROMPT), rtol=1e-5)
        assert gpu.generate_ids(PROMPT, 32) == cpu.generate_ids(PROMPT, 32)
        assert 0 < gpu.gpu_weight_bytes < 0.5 * 4 * sum(w.size for w in weights.values())


def test_long_prompts_span_several_passes_and_the_cache_grows(tmp_path):
    # 300 positions: two prefill passes (256 rows each at most) and a cache grown past 256.
    cfg = dict(CONFIG, max_position_embeddings=400)
    path = write(tmp_path / "long", cfg, random_weights(cfg, seed=9))
    cpu, gpu = pair(path, "int8")
    prompt = [(7 * i + 3) % cfg["vocab_size"] for i in range(300)]
    assert gpu.generate_ids(prompt, 40) == cpu.generate_ids(prompt, 40)
    assert_logits_close(gpu.logits(prompt)[-3:], cpu.logits(prompt)[-3:], rtol=1e-5)


def test_a_session_continues_its_cache_across_turns(checkpoints):
    path, _, _ = checkpoints["llama"]
    cpu, gpu = pair(path)
    turns = [PROMPT, [3, 4, 5], [61, 2]]
    got = []
    for model in (cpu, gpu):
        session, tokens = model._native.session(), []
        for turn in turns:
            token = session.feed(turn)
            for _ in range(5):
                tokens.append(token)
                token = session.feed([token])
        got.append((tokens, session.length))
    assert got[0] == got[1]
    assert got[1][1] == sum(map(len, turns)) + 15


def greedy_tokens(model, steps=32):
    session = model._native.session()
    tokens = [session.feed(PROMPT)]
    for _ in range(steps - 1):
        tokens.append(session.feed([tokens[-1]]))
    return tokens, session.gpu_step


@pytest.mark.parametrize("model,dtype", [("llama", None), ("qwen2", "q4_1"), ("tied", "int4")])
def test_the_fused_step_and_separate_dispatches_choose_the_same_tokens(checkpoints, monkeypatch, model, dtype):
    path, _, _ = checkpoints[model]
    cpu, gpu = pair(path, dtype)
    fused, kind = greedy_tokens(gpu)
    assert kind == ("fused", None)  # lavapipe: one resident workgroup walks every phase
    monkeypatch.setenv("POLYVTD_GPU_STEP", "dispatches")
    dispatched, kind = greedy_tokens(gpu)
    assert kind == ("dispatches", "POLYVTD_GPU_STEP=dispatches")
    assert fused == dispatched == cpu.generate_ids(PROMPT, 32)


def test_sessions_on_the_cpu_report_no_gpu_step(checkpoints):
    path, _, _ = checkpoints["llama"]
    cpu, _ = pair(path)
    assert cpu._native.session().gpu_step == ("cpu", None)


def test_the_profile_names_every_kind_of_dispatch(checkpoints):
    path, cfg, _ = checkpoints["llama"]
    _, gpu = pair(path)
    session = gpu._native.session()
    session.feed(PROMPT)
    times = session.gpu_profile(2)
    labels = [name for name, _, _ in times]
    layers = cfg["num_hidden_layers"]
    # P: the fused step's resident workgroups (1 on a CPU adapter such as lavapipe, 128 on NVIDIA).
    assert labels[0].startswith("fused step (P = ") and labels[1] == "whole step as dispatches"
    assert f"attention ×{layers}" in labels and "argmax ×1" in labels
    assert all(record >= 0 and np.isfinite(total) for _, record, total in times)
    prefill = [name for name, _, _ in session.gpu_profile(2, rows=7)]
    assert f"RoPE + cache append ×{layers}" in prefill and "norm + LM head (last row) ×1" in prefill
    assert session.length == len(PROMPT)  # profiling leaves the sequence as it was
    with pytest.raises(pv.InputError, match="rows"):
        session.gpu_profile(1, rows=0)
    assert session.gpu_bytes > 0


def test_models_dropped_20_times_release_their_gpu_memory(checkpoints):
    path, _, _ = checkpoints["tied"]
    baseline = pv.gpu_memory()["total_bytes"]
    rss = []
    for round_ in range(20):
        model = pv.Transformer.from_hf_dir(path, "q4_1", device="gpu")
        model.generate_ids(PROMPT, 4)
        assert pv.gpu_memory()["total_bytes"] > baseline
        del model
        assert pv.gpu_memory()["total_bytes"] == baseline, f"round {round_}"
        rss.append(rss_bytes())
    # A leaked model (its host copy alone) would add ≈ 0.2 MB a round: 3 MB over 15 rounds.
    assert rss[-1] - rss[4] < 3 * 2**20


def test_bad_input_raises_named_errors(checkpoints):
    path, cfg, _ = checkpoints["llama"]
    _, gpu = pair(path)
    with pytest.raises(pv.InputError, match="outside the vocabulary"):
        gpu.generate_ids([1, cfg["vocab_size"]], 2)
    with pytest.raises(pv.InputError, match="context"):
        gpu.generate_ids([1] * (cfg["max_position_embeddings"] + 1), 2)
    with pytest.raises(pv.InputError, match="device"):
        pv.Transformer.from_pretrained(str(path), device="tpu")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="hides the Vulkan drivers through the Linux loader")
def test_no_adapter_is_a_gpu_unavailable_error(checkpoints):
    path, _, _ = checkpoints["llama"]
    missing = "/nonexistent/polyvtd_no_driver.json"
    got = run_child(f"""
        import json, polyvtd as pv
        try:
            pv.Transformer.from_hf_dir({json.dumps(os.fspath(path))}, device="gpu")
            print(json.dumps({{"error": None}}))
        except pv.GpuUnavailableError as e:
            print(json.dumps({{"error": str(e)}}))
    """, VK_ICD_FILENAMES=missing, VK_DRIVER_FILES=missing, WGPU_BACKEND="vulkan", POLYVTD_ADAPTER="")
    assert got["error"] and got["error"].startswith("no GPU adapter found")
