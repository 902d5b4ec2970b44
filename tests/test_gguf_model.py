"""pv.Transformer from GGUF files written here the way llama.cpp's converter writes them: the
same logits as the HF checkpoint of the same weights and as the NumPy reference, quantised
tensors kept packed, the tokenizer and template from the metadata."""

import numpy as np
import pytest

import polyvtd as pv
from reference import gguf_llama
from reference.llama import Llama
from test_llama import CONFIG, PROMPT, assert_logits_close, random_weights, write

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def weights():
    return random_weights(CONFIG, seed=3)


def test_gguf_logits_equal_the_hf_checkpoint_and_the_reference(weights, tmp_path):
    from_hf = pv.Transformer.from_hf_dir(write(tmp_path / "hf", CONFIG, weights))
    from_gguf = pv.Transformer.from_gguf(gguf_llama.write(tmp_path / "m.gguf", CONFIG, weights))
    assert_logits_close(from_gguf.logits(PROMPT), from_hf.logits(PROMPT))
    reference = Llama(CONFIG, {k: v.astype(np.float64) for k, v in weights.items()})
    assert_logits_close(from_gguf.logits(PROMPT), reference.logits(PROMPT))
    assert from_gguf.generate_ids(PROMPT, 12) == reference.greedy(PROMPT, 12)


@pytest.mark.parametrize("quant", ["Q8_0", "Q4_0", "Q4_1"])
def test_quantised_gguf_computes_from_its_blocks(weights, tmp_path, quant):
    path = gguf_llama.write(tmp_path / f"{quant}.gguf", CONFIG, weights, getattr(gguf.GGMLQuantizationType, quant))
    model = pv.Transformer.from_gguf(path)
    reference = Llama(CONFIG, gguf_llama.read_hf_weights(path))
    assert_logits_close(model.logits(PROMPT), reference.logits(PROMPT), rtol=1e-4)
    f32 = pv.Transformer.from_gguf(gguf_llama.write(tmp_path / "f32.gguf", CONFIG, weights))
    assert model.memory_bytes < 0.5 * f32.memory_bytes  # blocks stay packed, no float32 copy


def test_metadata_tokenizer_and_text_generation(weights, tmp_path):
    model = pv.Transformer.from_gguf(gguf_llama.write(tmp_path / "m.gguf", CONFIG, weights))
    assert model.tokenizer.encode("ABba", add_special_tokens=False) == [0, 1, 27, 26]
    assert model.tokenizer.eos_ids == [CONFIG["vocab_size"] - 1]
    text = model.generate("ABC", max_new_tokens=5)
    assert isinstance(text, str) and model.last_stats.prompt_tokens == 3
    assert "".join(model.generate("ABC", max_new_tokens=5, stream=True)) == text


def test_broken_gguf_is_a_model_load_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 5)
    with pytest.raises(pv.ModelLoadError, match="bad.gguf"):
        pv.Transformer.from_gguf(bad)


def test_cli_and_llm_bench_run_on_a_gguf(weights, tmp_path, capsys):
    import argparse
    import io

    from polyvtd import bench, chat_cli

    long_context = dict(CONFIG, max_position_embeddings=512)  # the bench prompt is ~240 tokens here
    path = str(gguf_llama.write(tmp_path / "m.gguf", long_context, weights))
    options = dict(dtype=None, device="cpu", max_new_tokens=4, temperature=0.0, top_k=0, top_p=1.0, seed=0, system=None)
    out = io.StringIO()
    chat_cli.generate(argparse.Namespace(command="generate", model=path, prompt="ABC", **options), out)
    assert "decode" in out.getvalue() and "tok/s" in out.getvalue()
    out = io.StringIO()
    chat_cli.chat(argparse.Namespace(command="chat", model=path, **options), io.StringIO("AB\n/reset\nBA\n/quit\n"), out)
    assert out.getvalue().count("[prefill") == 2 and "(new conversation)" in out.getvalue()
    bench.main(["llm", "--model", path, "--dtypes", "q4_1", "int8", "--new-tokens", "3"])
    assert "decode tok/s" in capsys.readouterr().out
