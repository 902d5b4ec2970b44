"""Saving and loading: the persistence JSON (lossless, deterministic, readable by and from the
reference engine) and safetensors files of the grid's weights; atomic writes; bad files."""

import base64
import json
import pathlib
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import polyvtd as pv
from reference import codecs
from reference.dense import dense_forward
from reference.norm import rmsnorm_forward
from reference.recurrent import lstm_forward

RNG = np.random.default_rng(7)


def dense(i, o, **kw):
    return dict({"type": "dense", "input_height": i, "output_height": o}, **kw)


def conv(kind, **kw):
    return dict({"type": kind, "input_channels": 2, "filters": 3, "kernel_size": 2, "stride": 1, "padding": 1}, **kw)


# The reference's LayerType 0–18 (Metacognition, 19, is outside polyvtd): 19 layer types, each as
# the second slot of a small grid (the first feeds it; (spec, input sample shape)).
LAYER_TYPES = {
    "Dense": (dense(6, 5, activation="tanh", bias=True), (6,)),
    "MultiHeadAttention": ({"type": "mha", "d_model": 8, "num_heads": 2, "num_kv_heads": 1, "seq_length": 3, "qk_norm": True}, (3, 8)),
    "SwiGLU": ({"type": "swiglu", "input_height": 6, "output_height": 10}, (2, 6)),
    "RMSNorm": ({"type": "rmsnorm", "input_height": 6, "epsilon": 1e-3}, (6,)),
    "LayerNorm": ({"type": "layernorm", "input_height": 6, "epsilon": 1e-4}, (6,)),
    "CNN1": (conv("cnn1", input_height=5, activation="relu"), (2, 5)),
    "CNN2": (conv("cnn2", input_height=4, bias=True), (2, 4, 4)),
    "CNN3": (conv("cnn3", input_height=3), (2, 3, 3, 3)),
    "ConvTransposed1D": (conv("convtransposed1d", input_width=4, stride=2, output_padding=1), (2, 4)),
    "ConvTransposed2D": (conv("convtransposed2d", input_height=3, activation="sigmoid"), (2, 3, 3)),
    "ConvTransposed3D": (conv("convtransposed3d", input_height=2), (2, 2, 2, 2)),
    "RNN": ({"type": "rnn", "input_height": 3, "output_height": 4, "seq_length": 3, "activation": "relu"}, (3, 3)),
    "LSTM": ({"type": "lstm", "input_height": 3, "output_height": 4, "seq_length": 3}, (3, 3)),
    "Embedding": ({"type": "embedding", "vocab_size": 10, "embedding_dim": 4, "activation": "gelu"}, (5,)),
    "KMeans": ({"type": "kmeans", "input_height": 4, "num_clusters": 3, "kmeans_temperature": 0.7, "output_mode": "features"}, (4,)),
    "Softmax": ({"type": "softmax", "softmax_type": "masked", "mask": [True, False, True, True, False, True]}, (6,)),
    "Parallel": ({"type": "parallel", "combine_mode": "filter", "gate": dense(6, 2),
                  "parallel_branches": [dense(6, 4, activation="relu"), dense(6, 4, bias=True)]}, (6,)),
    "Sequential": ({"type": "sequential", "sequential_layers": [dense(6, 6), {"type": "residual"},
                                                                 {"type": "layernorm", "input_height": 6}]}, (6,)),
    "Residual": ({"type": "residual"}, (6,)),
}


def network_for(name, compat):
    """A 1×1×1×3 grid: the layer under test at l=1 (fed by a Dense for the layers taking flat
    samples, so a Residual has a skip), and an empty slot (the placeholder the reference skips)."""
    spec, sample = LAYER_TYPES[name]
    layers = [dict(spec, z=0, y=0, x=0, l=1)]
    if len(sample) == 1 and name != "Embedding":
        layers.insert(0, dict(dense(sample[0], sample[0], activation="tanh"), z=0, y=0, x=0, l=0))
    grid = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 3, "layers": layers}
    return pv.VolumetricNetwork.from_spec(grid, seed=11, compat=compat), sample


def inputs(name, sample):
    if name == "Embedding":
        return RNG.integers(0, 10, (2, *sample)).astype(np.float32)
    return RNG.standard_normal((2, *sample)).astype(np.float32)


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32))


@pytest.fixture(scope="module")
def nets():
    """One network per (layer type, code book), built once and morphed per dtype."""
    built = {}
    for name in LAYER_TYPES:
        for compat in ("standard", "loom"):
            net, sample = network_for(name, compat)
            built[name, compat] = (net, inputs(name, sample))
    return built


def test_the_matrix_covers_the_reference_layer_types():
    assert len(LAYER_TYPES) == 19 and len(pv.dtypes()) == 21


@pytest.mark.parametrize("dtype", pv.dtypes())
@pytest.mark.parametrize("name", list(LAYER_TYPES))
def test_round_trip_is_bit_exact_and_re_serialises_identically(nets, name, dtype):
    """The reference's 378-permutation claim (19 layer types × 21 dtypes), under both code books."""
    for compat in ("standard", "loom"):
        net, x = nets[name, compat]
        net.morph_all(dtype)
        text = net.to_persistence_json()
        back = pv.VolumetricNetwork.from_persistence_json(text)
        assert back.to_persistence_json() == text, compat
        assert same_bits(back.forward(x), net.forward(x)), compat
        for mine, theirs in zip(net.parameters, back.parameters):
            assert (theirs.dtype, theirs.compat, theirs.shape) == (mine.dtype, mine.compat, mine.shape)
            assert same_bits(theirs.dequantize(), mine.dequantize())


def test_every_slot_is_listed_in_the_references_key_order():
    net, _ = network_for("MultiHeadAttention", "loom")
    doc = json.loads(net.to_persistence_json())
    assert [k for k in doc] == ["id", "depth", "rows", "cols", "layers_per_cell", "layers"]
    assert [(e["l"], e["type"]) for e in doc["layers"]] == [(0, "Dense"), (1, "MultiHeadAttention"), (2, "Dense")]
    for l in (0, 2):
        assert doc["layers"][l] == {"z": 0, "y": 0, "x": 0, "l": l, "type": "Dense", "activation": "ReLU", "dtype": "float32",
                                    "softmax_type": "Standard", "is_disabled": True}
    mha = doc["layers"][1]
    keys = list(mha)
    assert keys[:7] == ["z", "y", "x", "l", "type", "activation", "dtype"]
    assert keys.index("query_dim") < keys.index("weights") < keys.index("native") < keys.index("scale") < keys.index("compat")
    assert keys[-1] == "tensors" and mha["softmax_type"] == "Standard" and mha["native"] is True
    # Q/K norm gains are ours: they ride in `tensors`; the flat blob is the reference's layout.
    assert [t["name"] for t in mha["tensors"]] == ["q_norm", "k_norm"]
    q, kv, d = 8, 4, 8
    assert len(base64.b64decode(mha["weights"])) == 4 * (2 * q * d + 2 * kv * d + q + 2 * kv + d)


def test_masters_make_training_resume_exactly(tmp_path):
    spec = {"layers": [dense(4, 6, activation="tanh", z=0, y=0, x=0, l=0), dense(6, 2, z=0, y=0, x=0, l=1)],
            "depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 2}
    x, t = RNG.standard_normal((16, 4)).astype(np.float32), RNG.standard_normal((16, 2)).astype(np.float32)
    net = pv.VolumetricNetwork.from_spec(spec, seed=2)
    net.morph_all("int4")
    net.save(tmp_path / "with.json", masters=True)
    net.save(tmp_path / "without.json")
    with_masters, without = pv.load(tmp_path / "with.json"), pv.load(tmp_path / "without.json")
    for p, q, r in zip(net.parameters, with_masters.parameters, without.parameters):
        assert np.array_equal(p.master, q.master)
        assert np.array_equal(r.master, p.dequantize())  # without: the dequantised values
    assert with_masters.to_persistence_json(masters=True) == net.to_persistence_json(masters=True)
    for n in (net, with_masters):
        n.train(x, t, epochs=2, lr=0.05, batch_size=8, shuffle=False)
    assert same_bits(with_masters.forward(x), net.forward(x))
    # A released master stays released.
    net.layer(0, 0, 0, 0).weights.release_master()
    again = pv.VolumetricNetwork.from_persistence_json(net.to_persistence_json())
    assert not again.layer(0, 0, 0, 0).weights.has_master and again.layer(0, 0, 0, 1).weights.has_master


def test_links_gates_disabled_and_shared_layers_survive():
    net = pv.VolumetricNetwork(1, 2, 1, 3)
    first = pv.layers.from_spec(dense(6, 6, activation="tanh"), seed=1)
    net.set_layer(0, 0, 0, 0, first)
    net.set_layer(0, 0, 0, 1, pv.layers.from_spec({"type": "parallel", "combine_mode": "filter", "gate": dense(6, 2),
                                                    "parallel_branches": [dense(6, 6), {"is_remote_link": True, "target_z": 0,
                                                                                         "target_y": 0, "target_x": 0, "target_l": 0}]}, seed=2))
    net.set_layer(0, 0, 0, 2, pv.layers.from_spec({"type": "residual"}))
    net.set_link(0, 0, 0, 2, (0, 0, 0, 0))
    net.set_layer(0, 1, 0, 0, first)  # the same layer placed twice
    net.set_layer(0, 1, 0, 1, pv.layers.from_spec({"type": "sequential", "sequential_layers": [
        dense(6, 6), dict(dense(6, 6), is_disabled=True), {"type": "residual"}]}, seed=3))
    net.set_layer(0, 1, 0, 2, pv.layers.from_spec(dense(6, 6), seed=4))
    net.set_disabled(0, 1, 0, 2)
    x = RNG.standard_normal((3, 6)).astype(np.float32)
    back = pv.VolumetricNetwork.from_persistence_json(net.to_persistence_json())
    assert same_bits(back.forward(x), net.forward(x))
    assert back.link(0, 0, 0, 2) == (0, 0, 0, 0)
    assert [row[-1] for row in back._net.summary()] == [row[-1] for row in net._net.summary()]
    gate = json.loads(back.layer(0, 0, 0, 1).spec_json())
    assert gate["combine_mode"] == "filter" and gate["parallel_branches"][1]["is_remote_link"] is True
    assert json.loads(back.layer(0, 1, 0, 1).spec_json())["sequential_layers"][1]["is_disabled"] is True
    # Still one layer at two coordinates: morphing one handle changes both slots.
    back.layer(0, 0, 0, 0).morph("int8")
    assert back.layer(0, 1, 0, 0).dtype == "int8"
    assert back.to_persistence_json() != net.to_persistence_json()


@pytest.mark.parametrize("combine", ["add", "avg", "concat", "grid_scatter", "filter"])
def test_every_parallel_combine_mode_survives(combine):
    gate = {"gate": dense(6, 3)} if combine == "filter" else {}
    spec = {"layers": [dict({"type": "parallel", "combine_mode": combine, "z": 0, "y": 0, "x": 0, "l": 0,
                              "parallel_branches": [dense(6, 4, activation="relu"), dense(6, 4, bias=True),
                                                    {"type": "sequential", "sequential_layers": [dense(6, 4), dense(4, 4), {"type": "residual"}]}]},
                             **gate)]}
    net = pv.VolumetricNetwork.from_spec(spec, seed=9)
    net.morph_all("int8")
    x = RNG.standard_normal((3, 6)).astype(np.float32)
    back = pv.VolumetricNetwork.from_persistence_json(net.to_persistence_json())
    assert same_bits(back.forward(x), net.forward(x))
    assert json.loads(back.layer(0, 0, 0, 0).spec_json())["combine_mode"] == combine


def test_gumbel_noise_goes_on_where_it_was():
    net = pv.VolumetricNetwork.from_spec({"layers": [{"type": "softmax", "softmax_type": "gumbel", "z": 0, "y": 0, "x": 0, "l": 0}]}, seed=5)
    x = RNG.standard_normal((2, 5)).astype(np.float32)
    net.forward(x)
    back = pv.VolumetricNetwork.from_persistence_json(net.to_persistence_json())
    assert same_bits(back.forward(x), net.forward(x))


# --- a file in the reference's format, written by hand from the spec ---------------------------

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def reference_file():
    """persistence.md §1 as the reference writes it: every slot in flat order, string softmax_type,
    weights in their native packing (int4: high nibble first), one flat layout per layer."""
    rng = np.random.default_rng(3)
    w_int4 = rng.uniform(-0.5, 0.5, (5, 4)).astype(np.float32)
    scale = codecs.loom_auto_scale(w_int4, "int4")
    codes = codecs.loom_encode(w_int4.ravel(), "int4", scale)
    packed = codecs.loom_disk_pack(codes, 4)
    w_f32 = rng.standard_normal((3, 5)).astype(np.float32)
    gain = rng.uniform(0.5, 1.5, 3).astype(np.float32)
    h, i = 2, 3
    lstm = {g: (rng.standard_normal((h, i)), rng.standard_normal((h, h)), rng.standard_normal(h)) for g in "ifgo"}
    lstm_flat = np.concatenate([np.concatenate([a.ravel(), b.ravel(), c]) for a, b, c in lstm.values()]).astype(np.float32)
    legacy = rng.standard_normal((3, 3)).astype(np.float32)
    base = {"activation": "Linear", "softmax_type": "Standard"}
    layers = [
        dict(base, z=0, y=0, x=0, l=0, type="Dense", dtype="int4", input_height=4, output_height=5, seq_length=1,
             weights=b64(packed), native=True, scale=float(scale)),
        dict(base, z=0, y=0, x=0, l=1, type="Dense", activation="Tanh", dtype="float32", input_height=5, output_height=3,
             seq_length=1, weights=b64(w_f32.tobytes()), native=True, scale=1),
        dict(base, z=0, y=0, x=0, l=2, type="RMSNorm", dtype="float32", input_height=3, output_height=3, seq_length=1,
             weights=b64(gain.tobytes()), native=True, scale=1),
        dict(base, z=0, y=0, x=0, l=3, type="Dense", activation="ReLU", dtype="float32"),  # untouched slot
        dict(base, z=0, y=0, x=0, l=4, type="Dense", dtype="int8", input_height=3, output_height=3, seq_length=1,
             weights=b64(legacy.tobytes())),  # legacy: float32 master, native omitted, no scale
        dict(base, z=0, y=0, x=0, l=5, type="Softmax", dtype="float32", seq_length=1, temperature=2),
    ]
    text = json.dumps({"id": "network", "depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 6, "layers": layers}, indent=2)
    lstm_layer = dict(base, z=0, y=0, x=0, l=0, type="LSTM", dtype="float32", input_height=i, output_height=h, seq_length=2,
                      weights=b64(lstm_flat.tobytes()), native=True, scale=1)
    lstm_text = json.dumps({"id": "network", "depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 1, "layers": [lstm_layer]})
    return text, lstm_text, dict(w_int4=codecs.loom_decode(codes, "int4", scale).reshape(5, 4), w_f32=w_f32, gain=gain,
                                  legacy=legacy, lstm=lstm)


def test_reads_a_file_in_the_reference_format():
    text, lstm_text, ref = reference_file()
    net = pv.VolumetricNetwork.from_persistence_json(text)
    assert [row[4] for row in net._net.summary()] == ["Dense", "Dense", "RMSNorm", "Dense", "Softmax"]
    int4, f32, norm, legacy = (net.layer(0, 0, 0, l) for l in (0, 1, 2, 4))
    assert int4.dtype == "int4" and int4.weights.compat == "loom"
    assert np.array_equal(int4.weights.dequantize(), ref["w_int4"])
    assert np.array_equal(f32.weights.master, ref["w_f32"]) and np.array_equal(norm.weights.master, ref["gain"])
    # Legacy entry: the master as written, morphed with an automatic scale (the reference would
    # divide by its missing scale).
    assert np.array_equal(legacy.weights.master, ref["legacy"]) and legacy.dtype == "int8"
    assert legacy.weights.scale == pytest.approx(np.abs(ref["legacy"]).max() / 127)
    x = RNG.standard_normal((4, 4)).astype(np.float32)
    h = dense_forward(x, ref["w_int4"])
    h = dense_forward(h, ref["w_f32"], activation="tanh")
    h = rmsnorm_forward(h, ref["gain"], 1e-6)
    h = dense_forward(h, legacy.weights.dequantize())
    z = h.astype(np.float64) / 2
    expected = np.exp(z - z.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(net.forward(x), expected, rtol=2e-5, atol=1e-6)
    # LSTM: per gate (i, f, g, o) its W_ih | W_hh | b.
    lstm_net = pv.VolumetricNetwork.from_persistence_json(lstm_text)
    w_ih = np.concatenate([ref["lstm"][g][0] for g in "ifgo"])
    w_hh = np.concatenate([ref["lstm"][g][1] for g in "ifgo"])
    b = np.concatenate([ref["lstm"][g][2] for g in "ifgo"])
    xs = RNG.standard_normal((2, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(lstm_net.forward(xs), lstm_forward(xs, w_ih, w_hh, b), rtol=1e-5, atol=1e-6)


def test_reference_flat_layouts_of_attention_and_swiglu():
    """MHA: Wq | Wk | Wv | Wo | bq | bk | bv | bo; SwiGLU: Wgate | Wup | Wdown | bgate | bup | bdown."""
    rng = np.random.default_rng(5)
    d, heads, kv_heads, hd = 8, 2, 1, 4
    q, kv = heads * hd, kv_heads * hd
    mha = [rng.standard_normal(shape).astype(np.float32) for shape in ((q, d), (kv, d), (kv, d), (d, q), (q,), (kv,), (kv,), (d,))]
    h, i = d, 6
    swiglu = [rng.standard_normal(shape).astype(np.float32) for shape in ((i, h), (i, h), (h, i), (i,), (i,), (h,))]
    flat = lambda parts: b64(np.concatenate([p.ravel() for p in parts]).tobytes())
    base = {"z": 0, "y": 0, "x": 0, "activation": "Linear", "dtype": "float32", "softmax_type": "Standard", "native": True, "scale": 1}
    layers = [dict(base, l=0, type="MultiHeadAttention", num_heads=heads, num_kv_heads=kv_heads, head_dim=hd, query_dim=q,
                   d_model=d, seq_length=3, weights=flat(mha)),
              dict(base, l=1, type="SwiGLU", input_height=h, output_height=i, seq_length=1, weights=flat(swiglu))]
    text = json.dumps({"id": "network", "depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 2, "layers": layers})
    net = pv.VolumetricNetwork.from_persistence_json(text)
    for l, expected in ((0, mha), (1, swiglu)):
        got = [p.master for p in net.layer(0, 0, 0, l).parameters]
        assert len(got) == len(expected) and all(np.array_equal(a, b) for a, b in zip(got, expected))
    bad = json.loads(text)
    bad["layers"][0]["query_dim"] = 6
    with pytest.raises(pv.ModelLoadError, match="query_dim"):
        pv.VolumetricNetwork.from_persistence_json(json.dumps(bad))


def test_a_reference_file_writes_back_its_own_weights():
    text, _, _ = reference_file()
    back = json.loads(pv.VolumetricNetwork.from_persistence_json(text).to_persistence_json())
    original = json.loads(text)
    for l in (0, 1, 2):
        for key in ("weights", "native", "dtype", "input_height", "output_height"):
            assert back["layers"][l][key] == original["layers"][l][key], (l, key)
        assert np.float32(back["layers"][l]["scale"]) == np.float32(original["layers"][l]["scale"])


try:  # the reference engine's Python package (optional: the bench extra installs it)
    import welvet
except ImportError:
    welvet = None


@pytest.mark.skipif(welvet is None, reason="the reference engine (welvet) is not installed")
def test_the_reference_engine_reads_our_files_and_we_read_its():
    spec = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 3, "layers": [
        dict(dense(4, 6, activation="tanh"), z=0, y=0, x=0, l=0, dtype="int8"),
        dict(dense(6, 5), z=0, y=0, x=0, l=1, dtype="ternary"),
        dict(dense(5, 3, activation="relu"), z=0, y=0, x=0, l=2)]}
    x = RNG.standard_normal((1, 4)).astype(np.float32)
    ours = pv.VolumetricNetwork.from_spec(spec, seed=4, compat="loom")
    handle = welvet.deserialize_network(ours.to_persistence_json())
    theirs = np.array(welvet.forward_polymorphic(handle, x.ravel().tolist(), [1, 4]), dtype=np.float32)
    np.testing.assert_allclose(theirs.reshape(1, 3), ours.forward(x), rtol=1e-5, atol=1e-6)
    # And a file the reference wrote, read back here (after a forward: serialised before its
    # first one, the reference writes scale 1 beside codes morphed with another scale).
    handle = welvet.build_network(json.dumps(spec))
    theirs = np.array(welvet.forward_polymorphic(handle, x.ravel().tolist(), [1, 4]), dtype=np.float32)
    back = pv.VolumetricNetwork.from_persistence_json(welvet.serialize_network(handle))
    np.testing.assert_allclose(back.forward(x), theirs.reshape(1, 3), rtol=1e-5, atol=1e-6)


# --- safetensors ---------------------------------------------------------------------------------

def header(path):
    data = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n])


@pytest.mark.parametrize("compat", ["standard", "loom"])
def test_safetensors_round_trip_every_dtype(tmp_path, nets, compat):
    net, x = nets["Parallel", compat]
    names = net.safetensors_names
    assert names == ["z0.y0.x0.l0.weight", "z0.y0.x0.l1.branch0.weight", "z0.y0.x0.l1.branch1.weight",
                     "z0.y0.x0.l1.branch1.bias", "z0.y0.x0.l1.gate.weight"]
    other, _ = network_for("Parallel", compat)
    for dtype in pv.dtypes():
        net.morph_all(dtype)
        path = tmp_path / f"{dtype}.safetensors"
        net.save_safetensors(path)
        head = header(path)
        assert [k for k in head if k != "__metadata__"] == names  # traversal order
        meta = json.loads(head["__metadata__"]["z0.y0.x0.l0.weight"])
        assert meta["dtype"] == dtype and meta["shape"] == [6, 6]
        assert other.load_safetensors(path) == sorted(names)
        assert same_bits(other.forward(x), net.forward(x)), dtype
        assert other.to_persistence_json() == net.to_persistence_json()
    # Masters ride along as `<name>.master` when asked for.
    net.morph_all("int4")
    net.save_safetensors(tmp_path / "masters.safetensors", masters=True)
    assert "z0.y0.x0.l0.weight.master" in header(tmp_path / "masters.safetensors")
    other.load_safetensors(tmp_path / "masters.safetensors")
    for mine, theirs in zip(net.parameters, other.parameters):
        assert np.array_equal(mine.master, theirs.master)
    # Standard fp4 is safetensors' F4 (two per byte, low nibble first).
    if compat == "standard":
        net.morph_all("fp4")
        net.save_safetensors(tmp_path / "fp4.safetensors")
        assert header(tmp_path / "fp4.safetensors")["z0.y0.x0.l0.weight"]["dtype"] == "F4"


def test_safetensors_plain_floats_and_the_references_names(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    net, x = network_for("LSTM", "standard")
    net.morph_all("int8")
    net.save_safetensors(tmp_path / "plain.safetensors", packed=False)
    loaded = st.load_file(str(tmp_path / "plain.safetensors"))
    assert loaded["z0.y0.x0.l1.weight_ih"].dtype == np.float32
    np.testing.assert_array_equal(loaded["z0.y0.x0.l1.weight_ih"], net.layer(0, 0, 0, 1).weights.dequantize())
    # Plain tensors replace the masters; the layers keep their dtype.
    fresh, _ = network_for("LSTM", "standard")
    fresh.morph_all("int8")
    fresh.load_safetensors(tmp_path / "plain.safetensors")
    assert fresh.layer(0, 0, 0, 1).dtype == "int8"
    np.testing.assert_array_equal(fresh.layer(0, 0, 0, 1).weights.master, loaded["z0.y0.x0.l1.weight_ih"])
    # The reference's export: `layer_<flat index>.weights`, its flat layout, F32.
    layer = net.layer(0, 0, 0, 1)
    w_ih, w_hh, b = (p.dequantize() for p in layer.parameters)
    h = 4
    flat = np.concatenate([np.concatenate([w_ih[g * h:(g + 1) * h].ravel(), w_hh[g * h:(g + 1) * h].ravel(), b[g * h:(g + 1) * h]])
                           for g in range(4)])
    st.save_file({"layer_1.weights": flat.astype(np.float32)}, str(tmp_path / "ref.safetensors"))
    target, x2 = network_for("LSTM", "standard")
    assert target.load_safetensors(tmp_path / "ref.safetensors", strict=False) == [
        "z0.y0.x0.l1.bias", "z0.y0.x0.l1.weight_hh", "z0.y0.x0.l1.weight_ih"]
    for mine, theirs in zip(target.layer(0, 0, 0, 1).parameters, (w_ih, w_hh, b)):
        np.testing.assert_array_equal(mine.master, theirs)


def test_safetensors_errors_leave_the_network_unchanged(tmp_path):
    net, sample = network_for("Dense", "standard")
    x = inputs("Dense", sample)
    before = net.forward(x)
    net.save_safetensors(tmp_path / "a.safetensors")
    other, _ = network_for("SwiGLU", "standard")
    with pytest.raises(pv.ModelLoadError, match="matches no weight"):
        other.load_safetensors(tmp_path / "a.safetensors")
    narrow = pv.VolumetricNetwork.from_spec({"layers": [dict(dense(6, 4), z=0, y=0, x=0, l=0)]})
    with pytest.raises(pv.ModelLoadError, match=r"z0.y0.x0.l0.weight.*shape \[6, 6\].*\[4, 6\]"):
        narrow.load_safetensors(tmp_path / "a.safetensors", strict=False)
    data = (tmp_path / "a.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-7])
    with pytest.raises(pv.ModelLoadError, match="cut.safetensors"):
        net.load_safetensors(tmp_path / "cut.safetensors")
    assert same_bits(net.forward(x), before)


def test_safetensors_strict_needs_every_weight(tmp_path):
    one = pv.VolumetricNetwork.from_spec({"layers": [dict(dense(6, 6), z=0, y=0, x=0, l=0)], "layers_per_cell": 2})
    one.save_safetensors(tmp_path / "one.safetensors")
    two = pv.VolumetricNetwork.from_spec({"layers": [dict(dense(6, 6), z=0, y=0, x=0, l=0), dict(dense(6, 6), z=0, y=0, x=0, l=1)],
                                          "layers_per_cell": 2})
    with pytest.raises(pv.ModelLoadError, match=r"z0.y0.x0.l1.weight.*1 of the network's weights are missing"):
        two.load_safetensors(tmp_path / "one.safetensors")
    assert two.load_safetensors(tmp_path / "one.safetensors", strict=False) == ["z0.y0.x0.l0.weight"]


# --- files: atomic writes, bad input ---------------------------------------------------------------

def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    net, _ = network_for("Dense", "standard")
    path = tmp_path / "net.json"
    path.write_text("old")
    net.save(path)
    net.save_safetensors(tmp_path / "net.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.json", "net.safetensors"]
    assert pv.load(str(path)).to_persistence_json() == path.read_text()
    with pytest.raises(pv.SaveError, match="no-such-folder"):
        net.save(tmp_path / "no-such-folder" / "x.json")
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-folder" / "inside").write_text("keep")
    with pytest.raises(pv.SaveError, match="a-folder"):
        net.save(tmp_path / "a-folder")
    assert (tmp_path / "a-folder" / "inside").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-folder", "net.json", "net.safetensors"]


def test_a_write_failing_midway_keeps_the_old_file(tmp_path):
    """The file-size limit stops the write part-way (EFBIG): the old file stays whole."""
    path = tmp_path / "net.json"
    path.write_text("the old file")
    script = textwrap.dedent(f"""
        import resource, signal, sys
        import polyvtd as pv
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        net = pv.VolumetricNetwork.from_spec({{"layers": [{{"type": "dense", "input_height": 300, "output_height": 300,
                                               "z": 0, "y": 0, "x": 0, "l": 0}}]}})
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            net.save({str(path)!r})
        except pv.SaveError as e:
            print("SaveError", e)
            sys.exit(0)
        sys.exit(1)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "SaveError" in done.stdout, done.stdout + done.stderr
    assert path.read_text() == "the old file"
    assert [p.name for p in tmp_path.iterdir()] == ["net.json"]


def test_bad_files_raise_named_errors(tmp_path):
    net, _ = network_for("Dense", "standard")
    net.morph_all("int4")
    good = json.loads(net.to_persistence_json())

    def load(doc):
        return pv.VolumetricNetwork.from_persistence_json(json.dumps(doc) if not isinstance(doc, str) else doc)

    with pytest.raises(pv.ModelLoadError, match="not valid JSON"):
        load('{"depth": 1, ')
    bad = json.loads(json.dumps(good))
    bad["layers"][1]["dtype"] = "int3"
    with pytest.raises(pv.ModelLoadError, match=r"layer at \(0,0,0,1\).*dtype.*int3"):
        load(bad)
    bad = json.loads(json.dumps(good))
    bad["layers"][1]["weights"] = bad["layers"][1]["weights"][:-3]
    with pytest.raises(pv.ModelLoadError, match=r"\"weights\".*base64"):
        load(bad)
    bad = json.loads(json.dumps(good))
    bad["layers"][1]["weights"] = base64.b64encode(base64.b64decode(bad["layers"][1]["weights"])[:-4]).decode()
    with pytest.raises(pv.ModelLoadError, match=r"\"weights\" holds .* bytes"):
        load(bad)
    bad = json.loads(json.dumps(good))
    bad["layers"][1]["tensors"][0]["shape"] = [5, 5]
    with pytest.raises(pv.ModelLoadError, match=r"tensor \"bias\".*shape"):
        load(bad)
    bad = json.loads(json.dumps(good))
    bad["layers"][1]["tensors"][0]["name"] = "nope"
    with pytest.raises(pv.ModelLoadError, match="no tensor named \"nope\""):
        load(bad)
    bad = json.loads(json.dumps(good))
    bad["layers"][1]["wieghts"] = "AAAA"
    with pytest.raises(pv.ModelLoadError, match="unknown field \"wieghts\""):
        load(bad)
    bad = json.loads(json.dumps(good))
    bad["layers"][1]["type"] = "Metacognition"
    with pytest.raises(pv.ModelLoadError, match="Metacognition"):
        load(bad)
    with pytest.raises(pv.ModelLoadError, match="no-file.json") as e:
        pv.load(tmp_path / "no-file.json")
    assert isinstance(e.value, OSError)
