"""VolumetricNetwork: building from specs (dict, JSON text, file), traversal order, disabled and
empty slots, spec round trips, shared layer handles, morphing, sizes, display and SpecErrors."""

import json

import numpy as np
import pytest

import polyvtd as pv
from reference.dense import JSON_NAMES, dense_forward, rel_err

_BY_JSON_NAME = {v: k for k, v in JSON_NAMES.items()}

# numerics/network.md §2's example, dense only: the Softmax slot becomes a third Dense layer.
LOOM_EXAMPLE = {
    "depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 3,
    "layers": [
        {"z": 0, "y": 0, "x": 0, "l": 0, "type": "dense", "activation": "relu", "input_height": 4, "output_height": 8},
        {"z": 0, "y": 0, "x": 0, "l": 1, "type": "dense", "activation": "linear", "dtype": "int8",
         "input_height": 8, "output_height": 3},
        {"z": 0, "y": 0, "x": 0, "l": 2, "type": "dense", "activation": "tanh", "input_height": 3,
         "output_height": 3, "bias": True},
    ],
}


# ---- helpers --------------------------------------------------------------------------------------

def inputs(batch, width, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, width)).astype(np.float32)


def numpy_forward(layers, x):
    """Compose the float64 reference over layer handles, in the given order."""
    out = x.astype(np.float64)
    for layer in layers:
        w = layer.weights.dequantize()
        b = layer.bias.master if layer.bias is not None else None
        out = dense_forward(out, w, b, _BY_JSON_NAME[layer.activation])
    return out


def compose(layers, x):
    """Run the layers' own forward one after another (float32, like the network)."""
    out = x
    for layer in layers:
        out = layer.forward(out)
    return out


def structure(spec):
    """The parts of a spec that must survive a round trip, in traversal order."""
    keys = ("z", "y", "x", "l", "activation", "dtype", "input_height", "output_height")
    rows = []
    for entry in spec["layers"]:
        row = tuple(entry.get(k) for k in keys)
        rows.append(row + (entry.get("type", "").lower(), bool(entry.get("bias", False)),
                           bool(entry.get("is_disabled", False))))
    return sorted(rows, key=lambda r: r[:4])


def pad4(n):
    return (n + 3) // 4 * 4


# ---- building ---------------------------------------------------------------------------------------

def test_from_spec_dict_json_text_and_file_agree(tmp_path):
    x = inputs(5, 4)
    from_dict = pv.VolumetricNetwork.from_spec(LOOM_EXAMPLE, seed=3)
    from_text = pv.VolumetricNetwork.from_spec(json.dumps(LOOM_EXAMPLE), seed=3)
    path = tmp_path / "net.json"
    path.write_text(json.dumps(LOOM_EXAMPLE, indent=1))
    from_path = pv.VolumetricNetwork.from_spec(path, seed=3)
    from_str_path = pv.VolumetricNetwork.from_spec(str(path), seed=3)
    y = from_dict.forward(x)
    assert y.shape == (5, 3)
    for other in (from_text, from_path, from_str_path):
        np.testing.assert_array_equal(other.forward(x), y)
    layers = [from_dict.layer(0, 0, 0, l) for l in range(3)]
    assert rel_err(y, numpy_forward(layers, x)) <= 1e-5
    assert [layer.dtype for layer in layers] == ["float32", "int8", "float32"]
    assert [layer.activation for layer in layers] == ["ReLU", "Linear", "Tanh"]
    assert layers[2].bias is not None and layers[0].bias is None


def test_seeded_initialisation_is_reproducible():
    a = pv.VolumetricNetwork.from_spec(LOOM_EXAMPLE, seed=7)
    b = pv.VolumetricNetwork.from_spec(LOOM_EXAMPLE, seed=7)
    c = pv.VolumetricNetwork.from_spec(LOOM_EXAMPLE, seed=8)
    x = inputs(3, 4)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    assert not np.array_equal(a.forward(x), c.forward(x))
    # layer i of the spec is seeded with seed + i, like a Dense built by hand
    np.testing.assert_array_equal(a.layer(0, 0, 0, 0).weights.master,
                                  pv.layers.Dense(4, 8, seed=7).weights.master)
    np.testing.assert_array_equal(a.layer(0, 0, 0, 2).weights.master,
                                  pv.layers.Dense(3, 3, seed=9).weights.master)


def test_loom_compat_network():
    net = pv.VolumetricNetwork.from_spec(LOOM_EXAMPLE, seed=3, compat="loom")
    weights = net.layer(0, 0, 0, 1).weights
    assert weights.compat == "loom"
    w = weights.master
    assert weights.scale == np.float32(np.abs(w).max()) / np.float32(127)


# ---- traversal ------------------------------------------------------------------------------------

# coordinates in flat order (z, then y, then x, then l: l fastest) and the widths chained along it
FLAT_ORDER = [(0, 0, 0, 1), (0, 0, 1, 0), (0, 0, 1, 1), (0, 1, 0, 1), (1, 0, 0, 0), (1, 1, 1, 1)]
WIDTHS = [5, 6, 7, 4, 3, 8, 2]


def scattered_network(insert_order):
    net = pv.VolumetricNetwork(2, 2, 2, 2)
    layers = {}
    for i in insert_order:
        layer = pv.layers.Dense(WIDTHS[i], WIDTHS[i + 1], ["tanh", "relu", "silu"][i % 3], bias=True, seed=i)
        net.set_layer(*FLAT_ORDER[i], layer)
        layers[FLAT_ORDER[i]] = layer
    return net, [layers[c] for c in FLAT_ORDER]


@pytest.mark.parametrize("insert_order", [[5, 4, 3, 2, 1, 0], [3, 0, 5, 1, 4, 2]])
def test_traversal_is_flat_order_not_insertion_order(insert_order):
    net, ordered = scattered_network(insert_order)
    assert net.dims == (2, 2, 2, 2)
    assert [coord for coord, _ in net.layers()] == FLAT_ORDER
    x = inputs(4, 5)
    y = net.forward(x)
    assert y.shape == (4, 2)
    np.testing.assert_array_equal(y, compose(ordered, x))
    assert rel_err(y, numpy_forward(ordered, x)) <= 1e-5
    assert [tuple(e[k] for k in "zyxl") for e in net.to_spec()["layers"]] == FLAT_ORDER


def test_traversal_from_a_spec_listed_out_of_order():
    entries = [
        {"z": 1, "y": 0, "x": 0, "l": 0, "input_height": 6, "output_height": 2, "activation": "sigmoid"},
        {"z": 0, "y": 1, "x": 0, "l": 0, "input_height": 3, "output_height": 6, "activation": "relu"},
        {"z": 0, "y": 0, "x": 1, "l": 0, "input_height": 4, "output_height": 3, "activation": "tanh"},
    ]
    net = pv.VolumetricNetwork.from_spec({"depth": 2, "rows": 2, "cols": 2, "layers_per_cell": 1,
                                          "layers": entries})
    ordered = [net.layer(0, 0, 1, 0), net.layer(0, 1, 0, 0), net.layer(1, 0, 0, 0)]
    x = inputs(3, 4)
    np.testing.assert_array_equal(net.forward(x), compose(ordered, x))


def test_disabled_layers_are_skipped():
    net, ordered = scattered_network(range(6))
    square = pv.layers.Dense(7, 7, "tanh", seed=40)
    net.set_layer(0, 0, 1, 1, square)  # replaces the 7→4 layer, so a 7→4 layer follows it:
    net.set_layer(0, 1, 0, 0, pv.layers.Dense(7, 4, seed=41))
    chain = [ordered[0], ordered[1], square, net.layer(0, 1, 0, 0)] + ordered[3:]
    x = inputs(3, 5)
    np.testing.assert_array_equal(net.forward(x), compose(chain, x))
    net.set_disabled(0, 0, 1, 1)
    without = compose([c for c in chain if c is not square], x)
    np.testing.assert_array_equal(net.forward(x), without)
    assert "(disabled)" in repr(net)
    assert net.to_spec()["layers"][2]["is_disabled"] is True
    net.set_disabled(0, 0, 1, 1, False)
    np.testing.assert_array_equal(net.forward(x), compose(chain, x))


def test_is_disabled_in_a_spec():
    spec = json.loads(json.dumps(LOOM_EXAMPLE))
    spec["layers"][2]["is_disabled"] = True
    net = pv.VolumetricNetwork.from_spec(spec, seed=3)
    x = inputs(2, 4)
    np.testing.assert_array_equal(net.forward(x), compose([net.layer(0, 0, 0, 0), net.layer(0, 0, 0, 1)], x))
    again = pv.VolumetricNetwork.from_spec(net.to_spec(), seed=3)
    np.testing.assert_array_equal(again.forward(x), net.forward(x))


def test_empty_slots_pass_the_tensor_through():
    x = inputs(3, 4)
    empty = pv.VolumetricNetwork(1, 2, 1, 3)
    np.testing.assert_array_equal(empty.forward(x), x)
    assert empty.num_params == 0 and empty.weight_bytes == 0 and empty.layers() == []
    assert empty.layer(0, 1, 0, 2) is None
    gap = pv.VolumetricNetwork(1, 1, 1, 5)
    a, b = pv.layers.Dense(4, 6, "relu", seed=1), pv.layers.Dense(6, 2, seed=2)
    gap.set_layer(0, 0, 0, 1, a)
    gap.set_layer(0, 0, 0, 4, b)
    np.testing.assert_array_equal(gap.forward(x), compose([a, b], x))
    gap.clear_layer(0, 0, 0, 4)
    assert gap.layer(0, 0, 0, 4) is None
    np.testing.assert_array_equal(gap.forward(x), a.forward(x))


# ---- spec round trip -----------------------------------------------------------------------------

def test_to_spec_and_to_json_round_trip():
    net, _ = scattered_network([2, 0, 1, 5, 3, 4])
    net.layer(0, 0, 1, 0).weights.morph("int4")
    net.layer(1, 1, 1, 1).weights.morph("fp8e5m2")
    spec = net.to_spec()
    assert (spec["depth"], spec["rows"], spec["cols"], spec["layers_per_cell"]) == (2, 2, 2, 2)
    assert [e["dtype"] for e in spec["layers"]] == ["float32", "int4", "float32", "float32", "float32", "fp8e5m2"]
    assert [e["activation"] for e in spec["layers"]] == ["Tanh", "ReLU", "Silu", "Tanh", "ReLU", "Silu"]
    assert all(e["type"] == "Dense" and e["bias"] is True for e in spec["layers"])
    for text in (net.to_json(), net.to_json(indent=None), net.to_json(indent=4)):
        assert json.loads(text) == spec
    assert "\n  " in net.to_json() and "\n" not in net.to_json(indent=None)
    rebuilt = pv.VolumetricNetwork.from_spec(net.to_json())
    assert structure(rebuilt.to_spec()) == structure(spec)
    assert rebuilt.dims == net.dims
    assert [layer.dtype for _, layer in rebuilt.layers()] == [layer.dtype for _, layer in net.layers()]


def test_loom_example_round_trips():
    net = pv.VolumetricNetwork.from_spec(LOOM_EXAMPLE)
    spec = net.to_spec()
    assert structure(spec) == structure({"layers": [
        dict(e, activation=JSON_NAMES[e["activation"]], type="Dense", dtype=e.get("dtype", "float32"))
        for e in LOOM_EXAMPLE["layers"]]})


# ---- shared handles, morphing, sizes ---------------------------------------------------------------

def test_layer_handle_shares_weights_with_the_network():
    net = pv.VolumetricNetwork.from_spec(LOOM_EXAMPLE, seed=3)
    x = inputs(6, 4)
    before = net.forward(x)
    handle = net.layer(0, 0, 0, 0)
    handle.weights.morph("int4")
    after = net.forward(x)
    assert not np.array_equal(after, before)
    assert net.layer(0, 0, 0, 0).dtype == "int4"
    assert net.to_spec()["layers"][0]["dtype"] == "int4"
    assert rel_err(after, numpy_forward([net.layer(0, 0, 0, l) for l in range(3)], x)) <= 1e-5


def test_set_layer_shares_the_python_layer():
    net = pv.VolumetricNetwork(1, 1, 1, 1)
    layer = pv.layers.Dense(4, 3, "silu", seed=1)
    net.set_layer(0, 0, 0, 0, layer)
    x = inputs(2, 4)
    layer.weights.morph("binary")
    np.testing.assert_array_equal(net.forward(x), layer.forward(x))
    assert net.layer(0, 0, 0, 0).dtype == "binary"


def test_copy_is_deep():
    net = pv.VolumetricNetwork.from_spec(LOOM_EXAMPLE, seed=3)
    x = inputs(3, 4)
    clone = net.copy()
    np.testing.assert_array_equal(clone.forward(x), net.forward(x))
    clone.morph_all("binary")
    assert net.layer(0, 0, 0, 0).dtype == "float32"
    assert not np.array_equal(clone.forward(x), net.forward(x))


@pytest.mark.parametrize("dtype", ["int8", "int4", "fp4", "ternary", "uint2", "bfloat16"])
def test_morph_all(dtype):
    net = pv.VolumetricNetwork.from_spec(LOOM_EXAMPLE, seed=3)
    net.morph_all(dtype)
    layers = [layer for _, layer in net.layers()]
    assert all(layer.dtype == dtype for layer in layers)
    assert layers[2].bias.dtype == "float32"  # biases are not morphed
    x = inputs(5, 4)
    assert rel_err(net.forward(x), numpy_forward(layers, x)) <= 1e-5
    with pytest.raises(pv.DTypeError):
        net.morph_all("int5")


def test_sizes():
    net = pv.VolumetricNetwork.from_spec(LOOM_EXAMPLE, seed=3)
    counts = [4 * 8, 8 * 3, 3 * 3, 3]  # weights, then the bias of the last layer
    assert net.num_params == sum(counts)
    assert net.weight_bytes == 4 * 32 + (24 + 4) + 4 * 9 + 4 * 3  # layer 1 is int8 + its scale
    assert net.memory_bytes == 4 * sum(counts) + pad4(8 * 3)  # masters + the int8 codes
    net.morph_all("float32")
    assert net.weight_bytes == 4 * sum(counts)
    assert net.memory_bytes == 4 * sum(counts) + pad4(8 * 3)  # the int8 version stays cached
    net.morph_all("int4")
    assert net.weight_bytes == (16 + 4) + (12 + 4) + (5 + 4) + 4 * 3
    int4 = pad4(16) + pad4(12) + pad4(5)
    assert net.memory_bytes == 4 * sum(counts) + int4 + pad4(8 * 3)
    assert net.num_params == sum(counts)


def test_repr_and_html_name_coordinates_types_dtypes_and_bytes():
    net = pv.VolumetricNetwork(1, 1, 2, 2)
    net.set_layer(0, 0, 0, 1, pv.layers.Dense(300, 10, dtype="int8", seed=1))
    net.set_layer(0, 0, 1, 0, pv.layers.Dense(10, 4, "relu", bias=True, seed=2))
    text = repr(net)
    assert "1×1×2×2" in text and "3,044 params" in text
    assert "(0,0,0,1)" in text and "(0,0,1,0)" in text and "Dense" in text
    assert "int8" in text and "float32" in text and "10×300" in text
    assert "3,004 B" in text  # 3000 int8 codes + the 4-byte scale
    assert f"{net.weight_bytes:,} weight bytes" in text
    page = net._repr_html_()
    assert page.startswith("<div>") and "<table>" in page
    for fragment in ("(0,0,0,1)", "(0,0,1,0)", "Dense", "int8", "float32", "3,004", "10×300"):
        assert fragment in page


# ---- spec errors ----------------------------------------------------------------------------------

def spec_with(*layers, **grid):
    base = {"depth": 1, "rows": 1, "cols": 1, "layers_per_cell": 2}
    base.update(grid)
    base["layers"] = list(layers)
    return base


def dense(l, inp, out, **extra):
    return dict({"z": 0, "y": 0, "x": 0, "l": l, "type": "dense", "input_height": inp, "output_height": out},
                **extra)


def spec_error(spec):
    with pytest.raises(pv.SpecError) as info:
        pv.VolumetricNetwork.from_spec(spec)
    assert isinstance(info.value, ValueError) and isinstance(info.value, pv.PolyError)
    return str(info.value)


def test_unknown_dtype_names_coordinate_and_field():
    msg = spec_error(spec_with(dense(0, 4, 3), dense(1, 3, 3, dtype="int3")))
    assert "(0,0,0,1)" in msg and "dtype" in msg and "int3" in msg


def test_unknown_activation_names_coordinate_and_field():
    msg = spec_error(spec_with(dense(0, 4, 3), dense(1, 3, 3, activation="softplus")))
    assert "(0,0,0,1)" in msg and "activation" in msg


def test_missing_input_height_names_field_and_coordinate():
    entry = dense(1, 3, 3)
    del entry["input_height"]
    msg = spec_error(spec_with(dense(0, 4, 3), entry))
    assert "input_height" in msg and "(0,0,0,1)" in msg


def test_width_mismatch_names_both_coordinates():
    msg = spec_error(spec_with(dense(0, 4, 3), dense(1, 5, 2)))
    assert "(0,0,0,0)" in msg and "(0,0,0,1)" in msg and "3" in msg and "5" in msg


@pytest.mark.parametrize("coord,axis", [((0, 0, 0, 2), "l"), ((0, 0, 1, 0), "x"), ((0, 3, 0, 0), "y"),
                                        ((2, 0, 0, 0), "z")])
def test_coordinate_outside_the_grid(coord, axis):
    entry = dict(dense(0, 4, 3), **dict(zip("zyxl", coord)))
    msg = spec_error(spec_with(entry))
    assert "({},{},{},{})".format(*coord) in msg and f"{axis} must be" in msg


def test_unknown_fields_are_named():
    msg = spec_error(spec_with(dense(0, 4, 3, inptu_height=4)))
    assert "inptu_height" in msg and "(0,0,0,0)" in msg
    assert "colour" in spec_error(dict(spec_with(dense(0, 4, 3)), colour="red"))


@pytest.mark.parametrize("field,value", [("input_height", "4"), ("bias", "yes"), ("activation", 3),
                                         ("output_height", -2)])
def test_wrongly_typed_fields_are_named(field, value):
    msg = spec_error(spec_with(dense(0, 4, 3, **{field: value})))
    assert field in msg


def test_unsupported_layer_type():
    msg = spec_error(spec_with(dense(0, 4, 3, type="hypernet")))
    assert "type" in msg and "(0,0,0,0)" in msg


@pytest.mark.parametrize("spec,fragment", [
    ([1, 2], "dict"),
    (42, "dict"),
    ({"depth": 0}, "depth"),
    ({"layers": {"l": 0}}, "layers"),
    ({"layers": [[1]]}, "layers[0]"),
])
def test_malformed_specs(spec, fragment):
    assert fragment in spec_error(spec)


def test_json_file_holding_a_list_is_rejected(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    assert "object" in spec_error(path)


def test_invalid_json_text():
    assert "JSON" in spec_error('{"depth": 1, "layers": [}')


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.json"
    assert "nope.json" in spec_error(missing)
    assert "nope.json" in spec_error(str(missing))


def test_json_text_that_is_not_an_object_is_a_spec_error():
    spec_error("[1, 2]")


def test_json_text_that_is_not_an_object_is_reported_as_such():
    assert "file" not in spec_error("[1, 2]")


def test_layer_handle_outside_the_grid():
    net = pv.VolumetricNetwork(1, 1, 1, 2)
    with pytest.raises(pv.SpecError, match=r"\(0,0,0,2\)"):
        net.layer(0, 0, 0, 2)
    with pytest.raises(pv.SpecError):
        net.set_layer(0, 1, 0, 0, pv.layers.Dense(2, 2))
    with pytest.raises(pv.SpecError, match="no layer"):
        net.set_disabled(0, 0, 0, 1)


def test_forward_width_mismatch_names_both_coordinates():
    net = pv.VolumetricNetwork.from_spec(LOOM_EXAMPLE, seed=3)
    net.set_disabled(0, 0, 0, 1)  # now 4→8 feeds the 3→3 layer
    with pytest.raises(pv.ShapeError) as info:
        net.forward(inputs(4, 4))
    assert "(0,0,0,2)" in str(info.value) and "(0,0,0,0)" in str(info.value)


def test_forward_width_mismatch_after_editing_is_a_shape_error():
    net = pv.VolumetricNetwork.from_spec(LOOM_EXAMPLE, seed=3)
    net.set_disabled(0, 0, 0, 1)
    with pytest.raises(pv.ShapeError, match=r"\(0,0,0,2\)"):
        net.forward(inputs(4, 4))
    with pytest.raises(pv.ShapeError, match=r"\(0,0,0,2\)"):  # training plans the pass first
        net.train(inputs(4, 4), np.zeros((4, 3), np.float32), epochs=1)
