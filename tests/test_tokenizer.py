"""pv.Tokenizer against the HF `tokenizers` package: same ids for the same tokenizer.json, GGUF-style
vocabularies rebuilt to the same ids, model directories, streaming decode of split characters."""

import json

import pytest

import polyvtd as pv

hf = pytest.importorskip("tokenizers")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b  # adds\n\n\tprint(add(1, 2))",
    "Ça va? Größe, naïve café, déjà vu — 東京は大きい。 Привет мир",
    "emoji 🙂🚀👍🏽 and numbers 12345 67.89, 'quotes' we're they've",
] * 20
TEXTS = [
    "Hello world!",
    "  leading   runs of   spaces\n\n\ttabs\t\tand newlines   ",
    "def f(x):\n    return {'a': [x, 2**10]}\n",
    "naïve café — 東京 Привет 👍🏽🚀 mañana",
    "<|im_start|>user\nhi 🙂<|im_end|>\n<|im_start|>assistant\n",
    "unseen: ☃ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ä\u0308",
    "",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small byte-level BPE trained by HF tokenizers, saved as tokenizer.json."""
    tok = hf.Tokenizer(hf.models.BPE())
    tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = hf.decoders.ByteLevel()
    trainer = hf.trainers.BpeTrainer(vocab_size=420, special_tokens=SPECIALS, show_progress=False,
                                     initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return tok, path


def as_vocab(path):
    """The tokenizer.json's vocabulary the way a GGUF file stores it."""
    data = json.loads(path.read_text())
    vocab = data["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    types = [3 if t in SPECIALS else 1 for t in tokens]
    return tokens, merges, types


@pytest.mark.parametrize("text", TEXTS)
def test_same_ids_as_hf_tokenizers(trained, text):
    ref, path = trained
    ours = pv.Tokenizer.from_file(path)
    assert ours.encode(text) == ref.encode(text).ids
    assert ours.decode(ours.encode(text)) == ref.decode(ref.encode(text).ids, skip_special_tokens=False)


def test_special_tokens_and_decode_round_trip(trained):
    ref, path = trained
    ours = pv.Tokenizer.from_file(path)
    text = TEXTS[4]
    ids = ours.encode(text)
    assert ours.token_to_id("<|im_start|>") in ids and ids[0] == ours.token_to_id("<|im_start|>")
    assert ours.decode(ids) == text
    assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True)
    assert ours.vocab_size == ref.get_vocab_size(with_added_tokens=True)
    assert ours.id_to_token(ours.token_to_id("<|im_end|>")) == "<|im_end|>"
    assert ours.token_to_id("no such token") is None


@pytest.mark.parametrize("text", TEXTS)
def test_gguf_vocabulary_gives_the_same_ids(trained, text):
    ref, path = trained
    tokens, merges, types = as_vocab(path)
    ours = pv.Tokenizer.from_vocab(tokens, merges, token_types=types, model="gpt2", pre="smollm",
                                   eos_id=tokens.index("<|im_end|>"))
    assert ours.encode(text) == ref.encode(text).ids
    assert ours.decode(ours.encode(text)) == text
    assert ours.eos_id == tokens.index("<|im_end|>")


def test_gguf_vocabulary_with_bos(trained):
    _, path = trained
    tokens, merges, types = as_vocab(path)
    bos = tokens.index("<|endoftext|>")
    ours = pv.Tokenizer.from_vocab(tokens, merges, token_types=types, bos_id=bos, add_bos=True)
    assert ours.encode("hi")[0] == bos and ours.encode("hi", add_special_tokens=False)[0] != bos
    assert ours.bos_id == bos


def test_model_directory(trained, tmp_path):
    _, path = trained
    (tmp_path / "tokenizer.json").write_text(path.read_text())
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|endoftext|>", "eos_token": {"content": "<|im_end|>"},
        "add_bos_token": True, "chat_template": template}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    tok = pv.Tokenizer.from_dir(tmp_path)
    assert tok.bos_id == 0 and tok.bos_token == "<|endoftext|>"
    assert tok.eos_id == 2 and tok.eos_ids == [2, 0]
    assert tok.chat_template == template
    assert tok.encode("hi")[0] == 0


@pytest.mark.parametrize("text", ["🙂🚀👍🏽", "東京は大きい。Привет", "☃ 𝔘𝔫𝔦 ✓ ☃", TEXTS[3]])
def test_stream_decoder_emits_whole_characters(trained, text):
    _, path = trained
    tok = pv.Tokenizer.from_file(path)
    ids = tok.encode(text)
    stream = tok.stream_decoder()
    pieces = [stream.step(i) for i in ids]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == tok.decode(ids) == text
    partial = [i for i in ids if "\ufffd" in tok.decode([i])]
    if "☃" in text:
        assert partial, "characters unseen in training are split into byte tokens"
    if partial:
        assert "" in pieces, "a byte token that completes no character gives no text"


def test_bad_input_raises_named_errors(trained, tmp_path):
    _, path = trained
    with pytest.raises(pv.ModelLoadError, match="missing.json"):
        pv.Tokenizer.from_file(tmp_path / "missing.json")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(OSError, match="tokenizer.json"):
        pv.Tokenizer.from_dir(tmp_path)
    tok = pv.Tokenizer.from_file(path)
    with pytest.raises(pv.InputError, match="index 1"):
        tok.decode([1, 10**6])
    with pytest.raises(pv.InputError, match=r"ids\[0\]"):
        tok.decode([-1])
    tokens, merges, _ = as_vocab(path)
    with pytest.raises(pv.ModelLoadError, match="mystery"):
        pv.Tokenizer.from_vocab(tokens, merges, pre="mystery")
    with pytest.raises(pv.ModelLoadError, match="merge 0"):
        pv.Tokenizer.from_vocab(tokens, ["nospace"])
