"""WeightStore: both code books against the NumPy reference (tests/reference/codecs.py), packed
byte layouts, sizes, morph / unpack / release_master, and hypothesis round-trip properties."""

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import polyvtd as pv
from reference import codecs as ref

DTYPES = ref.DTYPES
SUB_BYTE = [d for d in DTYPES if ref.BITS[d] < 8]


# ---- helpers --------------------------------------------------------------------------------------

def weights(seed=0, n=257, spread=1.0, kind="normal"):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(n) * spread
    if kind == "positive":
        w = np.abs(w)
    elif kind == "negative":
        w = -np.abs(w)
    elif kind == "zeros":
        w[::5] = 0.0
    return w.astype(np.float32)


def bits_of(a):
    return np.asarray(a, dtype=np.float32).view(np.uint32)


def assert_same_f32(got, expected, ulps=0):
    """Bitwise equal float32 arrays, or within ``ulps`` units in the last place."""
    got = np.asarray(got, dtype=np.float32).ravel()
    expected = np.asarray(expected, dtype=np.float32).ravel()
    assert got.shape == expected.shape
    if ulps == 0:
        bad = np.nonzero(bits_of(got) != bits_of(expected))[0]
    else:
        spacing = np.spacing(np.maximum(np.abs(got), np.abs(expected)))
        bad = np.nonzero(np.abs(got.astype(np.float64) - expected) > ulps * spacing)[0]
    assert bad.size == 0, f"{bad.size} mismatches, first at {bad[0]}: {got[bad[0]]!r} vs {expected[bad[0]]!r}"


def scale_ulps(dtype):
    """binary/ternary scales are mean|w|: the library sums |w| sequentially in f64, the reference
    with math.fsum (exactly rounded); the two f64 means differ by far less than an f32 ulp, but
    their f32 roundings may land on either side of a rounding boundary: at most 1 f32 ulp."""
    return 1 if dtype in ("binary", "ternary") else 0


def pad4(n):
    return (n + 3) // 4 * 4


# ---- the dtype list -------------------------------------------------------------------------------

def test_dtypes_lists_all_21_in_enum_order():
    assert pv.dtypes() == DTYPES


@pytest.mark.parametrize("alias,name", [
    ("FP8", "fp8e4m3"), ("bf16", "bfloat16"), ("F4", "fp4"), ("i8", "int8"), ("U16", "uint16"),
    ("fp64", "float64"), ("Float16", "float16"), (" int4 ", "int4"), ("TERNARY", "ternary"),
])
def test_dtype_aliases_parse_case_insensitively(alias, name):
    w = weights(1, 33)
    store = pv.WeightStore(w)
    assert_same_f32(store.dequantize(alias), store.dequantize(name))
    store.morph(alias)
    assert store.dtype == name


# ---- standard code book vs the reference ----------------------------------------------------------

@pytest.mark.parametrize("kind", ["normal", "positive", "negative", "zeros"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_standard_dequantize_matches_reference(dtype, kind):
    w = weights(seed=DTYPES.index(dtype), n=263, spread=0.3, kind=kind)
    expected, scale, zero_point = ref.standard_quantize(w, dtype)
    store = pv.WeightStore(w)
    assert_same_f32(store.scale_of(dtype), scale, scale_ulps(dtype))
    assert_same_f32(store.dequantize(dtype), expected, scale_ulps(dtype))
    store.morph(dtype)
    assert store.dtype == dtype
    assert_same_f32(store.scale, scale, scale_ulps(dtype))
    assert store.zero_point == zero_point
    assert_same_f32(store.dequantize(), expected, scale_ulps(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_standard_dequantize_keeps_shape_and_wide_dynamic_range(dtype):
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((6, 11)) * 10.0 ** rng.uniform(-4, 4, (6, 11))).astype(np.float32)
    if dtype == "float16":
        w = np.clip(w, -6e4, 6e4)
    store = pv.WeightStore(w)
    got = store.dequantize(dtype)
    assert got.shape == (6, 11) and got.dtype == np.float32
    assert_same_f32(got, ref.standard_quantize(w, dtype)[0], scale_ulps(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_standard_packed_bytes_match_reference_lsb_packing(dtype):
    w = weights(seed=3, n=131, spread=2.0)
    codes, _, _ = ref.standard_encode(w, dtype)
    assert pv.WeightStore(w).packed_bytes(dtype) == ref.pack_lsb(codes, ref.BITS[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_float64_input_is_stored_as_float32_master(dtype):
    w64 = np.random.default_rng(5).standard_normal(40)
    a, b = pv.WeightStore(w64), pv.WeightStore(w64.astype(np.float32))
    assert a.master.dtype == np.float32
    assert_same_f32(a.dequantize(dtype), b.dequantize(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_zero_weights_get_scale_one(dtype):
    store = pv.WeightStore(np.zeros(9, np.float32))
    assert store.scale_of(dtype) == 1.0
    # binary has no zero: as documented (±scale, 1 iff w ≥ 0) all-zero weights become +1.0
    assert np.all(store.dequantize(dtype) == (1.0 if dtype == "binary" else 0.0))
    store.morph(dtype)
    assert store.zero_point == 0.0


# ---- known vectors (worked out by hand from compat.md) --------------------------------------------

KNOWN = [
    # dtype, weights, packed bytes (LSB-first), dequantised values
    ("int4", [1, -1, 7], b"\xf1\x07", [1, -1, 7]),
    ("int2", [1, -1, 0.4, -0.6], b"\xcd", [1, -1, 0, -1]),
    ("ternary", [2, -2, 0, 0.6, -0.4], b"\x4d\x00", [1, -1, 0, 1, 0]),  # mean|w| = 1
    ("binary", [0.5, -0.25, 0.0, -0.0, -1, 2, 3, -4, 5], b"\x6d\x01", None),
    ("uint4", [0, 3, 15], b"\x30\x0f", [0, 3, 15]),
    ("uint4", [-1, 0, 14], b"\x10\x0f", [-1, 0, 14]),  # zero point 1
    ("int16", [1, -1], b"\xff\x7f\x01\x80", [1, -1]),  # full range: ±32767
    ("fp4", [6, 5, 2.5, 0.25, -0.75, -6], b"\x67\x04\xfa", [6, 4, 2, 0, -1, -6]),
    ("fp8e4m3", [448, 1.0625, 1.1875, -1, 2**-9, -0.0], b"\x7e\x38\x3a\xb8\x01\x80",
     [448, 1, 1.25, -1, 2**-9, -0.0]),
    ("fp8e5m2", [57344, 1, 1.125, 2**-16, -3.5], b"\x7b\x3c\x3c\x01\xc3", [57344, 1, 1, 2**-16, -3.5]),
    ("float16", [1, -2, 2**-24, 70000, 1 + 2**-11, 1 + 3 * 2**-11],
     b"\x00\x3c\x00\xc0\x01\x00\x00\x7c\x00\x3c\x02\x3c", [1, -2, 2**-24, np.inf, 1, 1 + 2**-9]),
    ("bfloat16", [1 + 1.5 * 2**-8, 1 + 2**-8, 1 + 3 * 2**-8], b"\x81\x3f\x80\x3f\x82\x3f",
     [1 + 2**-7, 1, 1 + 2**-6]),
]


@pytest.mark.parametrize("dtype,w,packed,values", KNOWN, ids=[f"{k[0]}-{i}" for i, k in enumerate(KNOWN)])
def test_known_vectors(dtype, w, packed, values):
    store = pv.WeightStore(np.array(w, dtype=np.float32))
    assert store.packed_bytes(dtype) == packed
    deq = store.dequantize(dtype)
    if values is None:  # binary: ±mean|w| = ±15.75/9
        values = np.where(np.array(w) >= 0, 1.75, -1.75)
    np.testing.assert_allclose(deq, np.array(values, dtype=np.float32), rtol=1e-6, atol=0)
    # signed zeros survive in the sign bit (fp8 −0.0 is code 0x80)
    np.testing.assert_array_equal(np.signbit(deq), np.signbit(np.array(values, dtype=np.float32)))


def test_known_int4_example_from_the_issue():
    assert pv.WeightStore(np.array([1, -1, 7], np.float32)).packed_bytes("int4") == b"\xf1\x07"


def test_uint8_affine_zero_point():
    store = pv.WeightStore(np.array([-1, 0, 1], np.float32))
    store.morph("uint8")
    scale = np.float32(2 / 255)
    assert store.scale == scale
    assert store.zero_point == np.rint(1 / np.float64(scale))
    codes = store.packed_bytes()
    assert codes[0] == 0 and codes[1] == store.zero_point
    np.testing.assert_allclose(store.dequantize(), [-1, 0, 1], atol=float(scale) / 2)


def test_scale_is_per_target_dtype():
    w = weights(2, 100)
    m = np.float64(np.abs(w).max())
    store = pv.WeightStore(w)
    assert store.scale_of("int8") == np.float32(m / 127)
    assert store.scale_of("int4") == np.float32(m / 7)
    assert store.scale_of("int16") == np.float32(m / 32767)  # full range, not ±127
    assert store.scale_of("int2") == np.float32(m)
    assert store.scale_of("fp8e4m3") == np.float32(m / 448)
    assert store.scale_of("fp8e5m2") == np.float32(m / 57344)
    assert store.scale_of("fp4") == np.float32(m / 6)
    for d in ("float64", "float32", "float16", "bfloat16"):
        assert store.scale_of(d) == 1.0
    # morphing int8 then int4 gives each its own scale (the reference's quirk 1 is not copied)
    store.morph("int8")
    store.morph("int4")
    assert store.scale == np.float32(m / 7)
    assert np.abs(store.dequantize("int4")).max() == pytest.approx(m, rel=1e-6)


# ---- sizes and memory -----------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 100, 1001])
@pytest.mark.parametrize("dtype", DTYPES)
def test_size_in_bytes(dtype, n):
    store = pv.WeightStore(np.linspace(-1, 1, n, dtype=np.float32))
    meta = {"float": 0, "unsigned": 12}.get(ref.family(dtype), 4)
    expected = 4 * n if dtype == "float32" else math.ceil(n * ref.BITS[dtype] / 8) + meta
    assert store.size_in_bytes(dtype) == expected
    store.morph(dtype)  # same answer once the version exists
    assert store.size_in_bytes() == expected
    # the bounds the issue asks for
    bound = {4: math.ceil(n / 2), 2: math.ceil(n / 4), 1: math.ceil(n / 8)}.get(ref.BITS[dtype])
    if bound is not None:
        assert store.size_in_bytes(dtype) <= bound + 64


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d != "float32"])
def test_memory_bytes_counts_master_and_word_padded_versions(dtype):
    n = 37
    store = pv.WeightStore(np.linspace(-1, 1, n, dtype=np.float32))
    assert store.memory_bytes == 4 * n
    store.morph(dtype)
    packed = pad4(math.ceil(n * ref.BITS[dtype] / 8))
    assert store.memory_bytes == 4 * n + packed
    store.release_master()
    assert store.memory_bytes == packed
    assert not store.has_master


def test_store_basic_properties():
    w = weights(4, 12).reshape(3, 4)
    store = pv.WeightStore(w)
    assert store.shape == [3, 4] and len(store) == 12
    assert store.dtype == "float32" and store.compat == "standard" and store.has_master
    assert store.scale == 1.0 and store.zero_point == 0.0
    np.testing.assert_array_equal(store.master, w)
    assert "shape=[3, 4]" in repr(store) and "float32" in repr(store)
    # the master is a copy: changing the returned array does not change the store
    m = store.master
    m[:] = 0
    np.testing.assert_array_equal(store.master, w)


# ---- morph / unpack / release_master --------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_unpack_rebuilds_master_from_the_version(dtype):
    w = weights(6, 50)
    store = pv.WeightStore(w)
    deq = store.dequantize(dtype)
    store.dequantize("int8" if dtype != "int8" else "int4")  # another cached version
    store.unpack(dtype)
    assert_same_f32(store.master, deq)
    assert_same_f32(store.dequantize(dtype), deq)
    # other versions were dropped (they came from the old master): only this one is held;
    # unpack("float32") leaves the master, and so the int8 version, untouched
    held = pad4(50) if dtype == "float32" else pad4(math.ceil(50 * ref.BITS[dtype] / 8))
    assert store.memory_bytes == 4 * 50 + held
    store.unpack(dtype)  # idempotent
    assert_same_f32(store.master, deq)
    # a later morph quantises the new master
    other = "int4" if dtype != "int4" else "int8"
    assert_same_f32(store.dequantize(other), ref.standard_quantize(deq, other)[0], scale_ulps(other))


def test_release_master_lifecycle():
    w = weights(8, 10)
    store = pv.WeightStore(w)
    with pytest.raises(pv.InputError):
        store.release_master()  # float32 weights are the master itself
    store.morph("int4")
    deq = store.dequantize()
    store.release_master()
    assert not store.has_master
    assert store.memory_bytes == pad4(5)
    assert_same_f32(store.dequantize(), deq)  # the active version still answers
    assert_same_f32(store.dequantize("int4"), deq)
    for call in (lambda: store.master, lambda: store.dequantize("int8"), lambda: store.morph("float32"),
                 lambda: store.morph("uint8")):
        with pytest.raises(pv.InputError):
            call()
    store.unpack("int4")
    assert store.has_master
    assert_same_f32(store.master, deq)
    store.morph("float32")
    assert store.dtype == "float32"


def test_release_master_keeps_a_layer_computing():
    layer = pv.layers.Dense(8, 5, "tanh", dtype="int4", seed=3)
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    before = layer.forward(x)
    layer.weights.release_master()
    np.testing.assert_array_equal(layer.forward(x), before)


@pytest.mark.parametrize("call", ["morph", "unpack", "dequantize", "size_in_bytes", "scale_of",
                                  "packed_bytes", "loom_bytes"])
def test_unknown_dtype_raises_dtype_error(call):
    store = pv.WeightStore(weights(9, 8))
    with pytest.raises(pv.DTypeError) as info:
        getattr(store, call)("int3")
    assert isinstance(info.value, TypeError) and isinstance(info.value, pv.PolyError)
    assert "int3" in str(info.value)
    assert store.dtype == "float32"


def test_unknown_compat_raises_input_error():
    with pytest.raises(pv.InputError):
        pv.WeightStore(weights(), compat="pytorch")


# ---- edge cases that once were bugs -------------------------------------------------------------

def test_fp8_code_is_rne_of_the_f64_quotient():
    # scale = 1/448 (as f32); w[1]/scale = 0.32812501140870… in f64, just above the midpoint
    # 0.328125 of 0.3125 and 0.34375: RNE must give 0.34375·scale.
    w = np.array([1.0, 0.0007324219332076609], dtype=np.float32)
    q = np.float64(w[1]) / np.float64(np.float32(1 / 448))
    assert 0.328125 < q < 0.328125 + 1e-7
    got = pv.WeightStore(w).dequantize("fp8e4m3")
    assert got[1] == np.float32(0.34375 * np.float64(np.float32(1 / 448)))


@pytest.mark.parametrize("dtype,w", [
    ("int8", [1e-44, -6e-45, 3e-45]),  # subnormal weights
    ("uint8", [1e-44, -6e-45, 3e-45]),
    ("fp8e4m3", [1e-44, -6e-45, 3e-45]),
    ("int64", [1e-30, -5e-31]),  # normal f32 weights: 1e-30 / (2^63 − 1) underflows
    ("uint32", [1e-36, 0.0]),
])
def test_tiny_weights_never_get_a_zero_scale(dtype, w):
    store = pv.WeightStore(np.array(w, dtype=np.float32))
    assert store.scale_of(dtype) > 0.0


def test_loom_bytes_defaults_to_the_active_dtype():
    store = pv.WeightStore(weights(), compat="loom")
    store.morph("int8")
    assert store.loom_bytes() == store.loom_bytes("int8")


# ---- hypothesis: round-trip error bounds ----------------------------------------------------------

def finite_arrays(max_value=1e6, min_size=1, max_size=48):
    """Finite float32 arrays. Magnitudes below 1e-20 are flushed to 0: for those the library
    stored a scale of 0.0 (see test_tiny_weights_never_get_a_zero_scale)."""
    elements = st.floats(min_value=-max_value, max_value=max_value, width=32, allow_nan=False,
                         allow_infinity=False, allow_subnormal=False)
    elements = elements.map(lambda v: 0.0 if abs(v) < 1e-20 else v)
    return hnp.arrays(np.float32, st.integers(min_size, max_size), elements=elements)


def error_bound(dtype, w, scale):
    """Largest |w − dequantised| the codec allows, element-wise (float64)."""
    a = np.abs(w.astype(np.float64))
    m = a.max()
    s = float(scale)
    tiny = 2.0**-22 * m  # the final f32 rounding of code × scale
    if dtype in ("float64", "float32"):
        return np.zeros_like(a)
    if dtype == "float16":
        return np.maximum(a * 2.0**-11, 2.0**-25)
    if dtype == "bfloat16":
        return a * 2.0**-8
    if dtype == "fp8e4m3":
        return np.maximum(a * 2.0**-4, s * 2.0**-10) * (1 + 1e-6) + tiny
    if dtype == "fp8e5m2":
        return np.maximum(a * 2.0**-3, s * 2.0**-17) * (1 + 1e-6) + tiny
    if dtype == "fp4":
        return np.maximum(a * 0.25, s * 0.25) * (1 + 1e-6) + tiny
    if dtype == "ternary":  # rounds inside ±1.5·s, clamps to ±s beyond
        return np.maximum(0.5 * s, a - s) * (1 + 1e-6) + tiny
    if dtype == "binary":
        return a + s
    return np.full_like(a, 0.5 * s * (1 + 1e-5) + tiny)  # integers: half a step


@pytest.mark.parametrize("dtype", DTYPES)
@given(w=finite_arrays())
def test_round_trip_error_is_bounded(dtype, w):
    if dtype == "float16":
        w = np.clip(w, -6e4, 6e4)
    store = pv.WeightStore(w)
    deq = store.dequantize(dtype).astype(np.float64)
    scale = store.scale_of(dtype)
    err = np.abs(deq - w)
    assert np.all(err <= error_bound(dtype, w, scale)), (err, scale)
    if dtype == "binary":
        np.testing.assert_array_equal(deq, np.where(w >= 0, scale, -scale))
    if dtype in ("ternary", "int2", "int4", "int8", "fp4", "fp8e4m3"):
        assert np.all(np.sign(deq) * np.sign(w) >= 0)  # never flips a sign


@pytest.mark.parametrize("dtype", [d for d in DTYPES if ref.family(d) in ("signed", "unsigned", "binary")])
@given(w=finite_arrays())
def test_integer_codecs_match_reference_exactly(dtype, w):
    expected, scale, zero_point = ref.standard_quantize(w, dtype)
    store = pv.WeightStore(w)
    store.morph(dtype)
    assert_same_f32(store.scale, scale, scale_ulps(dtype))
    assert store.zero_point == zero_point
    assert_same_f32(store.dequantize(), expected, scale_ulps(dtype))
    if scale_ulps(dtype) == 0:
        codes, _, _ = ref.standard_encode(w, dtype)
        assert store.packed_bytes() == ref.pack_lsb(codes, ref.BITS[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@given(w=finite_arrays())
def test_unpack_then_dequantize_is_idempotent(dtype, w):
    store = pv.WeightStore(w)
    store.unpack(dtype)
    first = store.master
    assert_same_f32(store.dequantize(dtype), first)
    store.unpack(dtype)
    assert_same_f32(store.master, first)
    # quantising the unpacked values again (fresh store, fresh scale) gives them back, up to
    # the f32 rounding of the recomputed scale. Not for ternary: its absmean scale of {−s, 0, s}
    # values is (nonzero fraction)·s, so only the code pattern (the signs) is preserved. Not for
    # the affine unsigned codes either: when the zero point rounds, the top code may be clamped
    # (w = [1e6, −1e6] in uint2 → [±666666.7]) and the recomputed range is narrower.
    if ref.family(dtype) == "unsigned":
        return
    if not np.all(np.isfinite(first)):  # float16 overflow (|w| ≥ 65520 → inf): not a valid master
        with pytest.raises(pv.InputError, match="master contains"):
            pv.WeightStore(first)
        return
    again = pv.WeightStore(first).dequantize(dtype)
    if dtype == "ternary":
        np.testing.assert_array_equal(np.sign(again), np.sign(first))
    else:
        np.testing.assert_allclose(again, first, rtol=2.0**-22, atol=0)


# ---- Loom code book --------------------------------------------------------------------------------

def loom_scale_for(w, dtype):
    """The scale a fresh Loom store ends up with after morphing to ``dtype`` first."""
    return np.float32(1.0) if dtype == "float32" else ref.loom_auto_scale(w, dtype)


@pytest.mark.parametrize("kind", ["normal", "positive", "negative"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_loom_first_morph_matches_reference(dtype, kind):
    w = weights(seed=30 + DTYPES.index(dtype), n=211, spread=0.7, kind=kind)
    store = pv.WeightStore(w, compat="loom")
    assert store.compat == "loom"
    store.morph(dtype)
    scale = loom_scale_for(w, dtype)
    assert_same_f32(store.scale, scale, scale_ulps(dtype))
    expected = ref.loom_quantize(w, dtype, store.scale)
    assert_same_f32(store.dequantize(), expected)
    codes = ref.loom_encode(w, dtype, store.scale)
    assert store.loom_bytes(dtype) == ref.loom_disk_pack(codes, ref.BITS[dtype])
    # in memory the codes keep polyvtd's own LSB-first packing
    assert store.packed_bytes(dtype) == ref.pack_lsb(codes, ref.BITS[dtype])


def test_loom_auto_scales_follow_the_reference_table():
    w = weights(11, 64)
    m = np.float32(np.abs(w).max())
    expected = {"int4": m / np.float32(7), "uint4": m / np.float32(7), "fp4": m / np.float32(3),
                "int2": m, "uint2": m, "ternary": m, "int8": m / np.float32(127),
                "float16": m / np.float32(127), "int32": m / np.float32(127),
                "binary": np.float32(np.abs(w.astype(np.float64)).mean())}
    for dtype, scale in expected.items():
        store = pv.WeightStore(w, compat="loom")
        assert_same_f32(store.scale_of(dtype), scale, scale_ulps(dtype))


def test_loom_shared_scale_int8_then_int4_clips():
    w = np.array([1.27, -0.5, 0.7, 0.05, -1.0], dtype=np.float32)
    store = pv.WeightStore(w, compat="loom")
    store.morph("int8")
    s = store.scale
    assert s == np.float32(np.float32(1.27) / np.float32(127))
    store.morph("int4")
    assert store.scale == s  # reused (quirk 1)
    deq = store.dequantize()
    assert_same_f32(deq, ref.loom_quantize(w, "int4", s))
    np.testing.assert_array_equal(deq, (np.array([7, -8, 7, 5, -8]) * np.float64(s)).astype(np.float32))


def test_loom_float32_morph_does_not_choose_the_scale_but_float16_does():
    w = weights(12, 40)
    m = np.float32(np.abs(w).max())
    a = pv.WeightStore(w, compat="loom")
    a.morph("float32")
    a.morph("int4")
    assert a.scale == m / np.float32(7)
    b = pv.WeightStore(w, compat="loom")
    b.morph("float16")
    assert b.scale == m / np.float32(127)  # quirk: float16 overwrites the scale…
    assert_same_f32(b.dequantize(), ref.loom_quantize(w, "float16", 1.0))  # …but ignores it
    b.morph("int4")
    assert b.scale == m / np.float32(127)


def test_loom_unsigned_quirks():
    w = np.array([-1.0, -0.5, 0.25, 1.0], dtype=np.float32)
    s = np.float32(1.0) / np.float32(127)
    u16 = pv.WeightStore(w, compat="loom").dequantize("uint16")
    np.testing.assert_array_equal(u16, ref.loom_quantize(w, "uint16", s))
    assert np.all(u16 > 0)  # |round(w/s)|: negative weights come back positive
    np.testing.assert_allclose(u16, np.abs(w), rtol=0, atol=float(s) / 2)
    u8 = pv.WeightStore(w, compat="loom").dequantize("uint8")
    np.testing.assert_array_equal(u8[:2], [0, 0])  # uint8 clamps negatives to 0


def test_loom_int8_wraps_when_an_earlier_morph_chose_a_small_scale():
    # binary first: scale = mean|w| ≈ 1.001, so 1000/scale ≈ 999 → wraps modulo 256
    w = np.concatenate([[1000.0], np.full(999, 0.001)]).astype(np.float32)
    store = pv.WeightStore(w, compat="loom")
    store.morph("binary")
    s = store.scale
    store.morph("int8")
    code = int(ref._round_half_away(np.float32(1000) / np.float32(s)))
    wrapped = (code + 128) % 256 - 128
    assert wrapped < 0
    assert store.dequantize()[0] == np.float32(wrapped * np.float64(s))
    assert_same_f32(store.dequantize(), ref.loom_quantize(w, "int8", s))


@given(w=finite_arrays())
def test_loom_int8_wrap_is_unreachable_with_the_auto_scale(w):
    store = pv.WeightStore(w, compat="loom")
    store.morph("int8")
    codes = np.frombuffer(store.loom_bytes("int8"), dtype=np.int8)
    expected = ref.loom_encode(w, "int8", store.scale).astype(np.uint8).view(np.int8)
    np.testing.assert_array_equal(codes, expected)
    m = np.abs(w).max()
    if m > 1e-30:  # (a subnormal scale has too few bits for the argument)
        assert np.abs(codes.astype(int)).max() == 127
        err = np.abs(store.dequantize().astype(np.float64) - w)
        assert np.all(err <= 0.5 * float(store.scale) * (1 + 1e-5) + 2.0**-22 * m)


@pytest.mark.parametrize("dtype,w,blob", [
    ("int4", [1, -1, 7], b"\x1f\x70"),  # element 2k in the high nibble
    ("uint4", [0, 7, 3.5], b"\x07\x40"),  # scale 1, round(3.5) = 4 (half away from zero)
    ("ternary", [1, -1, 0, 1, -1], bytes([0b01110001, 0b11000000])),  # −1 → 0b11
    ("int2", [1, -1, 0, -0.6], bytes([0b01110011])),
    ("binary", [1, -1, 1], bytes([0b10100000])),
    ("int8", [127, -127, -0.5], b"\x7f\x81\xff"),  # round(−0.5) = −1
])
def test_loom_bytes_known_vectors(dtype, w, blob):
    assert pv.WeightStore(np.array(w, np.float32), compat="loom").loom_bytes(dtype) == blob


def test_loom_truncating_float_formats():
    w = np.array([1 + 1.5 * 2**-11, 1e-6, 1e5, -(1 + 1.5 * 2**-8)], dtype=np.float32)
    f16 = pv.WeightStore(w, compat="loom").dequantize("float16")
    np.testing.assert_array_equal(f16, [1.0, 0.0, np.inf, -(1 + 6 * 2**-10)])  # truncated, flushed, Inf
    bf16 = pv.WeightStore(w, compat="loom").dequantize("bfloat16")
    assert bf16[0] == 1.0 and bf16[3] == -1.0  # upper 16 bits, no rounding
    assert pv.WeightStore(w).dequantize("float16")[1] != 0.0  # the standard codec keeps subnormals


def test_loom_fp4_table_and_first_closer_encoder():
    w = np.array([3.0, 0.375, 2.5, -5.0, -0.0, 0.9], dtype=np.float32)  # scale = max/3 = 1.6667
    store = pv.WeightStore(w, compat="loom")
    s = store.scale_of("fp4")
    assert s == np.float32(5.0) / np.float32(3.0)
    deq = store.dequantize("fp4")
    assert_same_f32(deq, ref.loom_quantize(w, "fp4", s))
    assert deq[3] == np.float32(-3.0) * np.float32(s)  # |u| > 3 → ±3, never the ±Inf codes
    exact = pv.WeightStore(np.array([3.0, 0.375, 2.5, 0.875, -2.9], np.float32), compat="loom")
    exact.morph("fp4")
    assert exact.scale == 1.0
    # 0.375 is a tie between 0 and 0.75 → the earlier code (0); 2.5 tie 2|3 → 2;
    # 0.875 tie 0.75|1.0 → 0.75 (first strictly closer wins)
    np.testing.assert_array_equal(exact.dequantize(), [3.0, 0.0, 2.0, 0.75, -3.0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_from_loom_bytes_round_trips_bit_for_bit(dtype):
    w = weights(seed=50 + DTYPES.index(dtype), n=45, spread=0.4).reshape(5, 9)
    store = pv.WeightStore(w, compat="loom")
    store.morph(dtype)
    blob = store.loom_bytes(dtype)
    back = pv.WeightStore.from_loom_bytes(blob, dtype, [5, 9], store.scale)
    assert back.dtype == dtype and back.compat == "loom" and back.shape == [5, 9]
    assert back.loom_bytes(dtype) == blob
    assert_same_f32(back.dequantize(), store.dequantize())
    assert_same_f32(back.master, store.dequantize())  # the master is rebuilt from the codes
    assert back.scale == store.scale


@pytest.mark.parametrize("dtype,blob,values", [
    ("fp8e4m3", b"\x7f\x01\xff\x38", [480.0, 1.125 * 2**-10, -480.0, 1.0]),
    ("fp8e5m2", b"\x01\x7c\x3c\xfc", [1.25 * 2**-15, np.inf, 1.0, -np.inf]),
    ("fp4", b"\x15\xd0", [0.75, 3.0, -3.0, 0.0]),
    ("int4", b"\x8f", [-8.0, -1.0]),
    ("uint4", b"\x8f", [8.0, 15.0]),
    ("ternary", bytes([0b11010010]), [-1.0, 1.0, 0.0, -2.0]),
])
def test_from_loom_bytes_decodes_the_reference_quirks(dtype, blob, values):
    store = pv.WeightStore.from_loom_bytes(blob, dtype, [len(values)], 1.0)
    np.testing.assert_array_equal(store.dequantize(), np.array(values, dtype=np.float32))


def test_from_loom_bytes_fp4_inf_and_nan_codes():
    store = pv.WeightStore.from_loom_bytes(b"\x67", "fp4", [2], 2.0)
    deq = store.dequantize()
    assert deq[0] == np.inf and np.isnan(deq[1])


def test_from_loom_bytes_rejects_short_blobs():
    with pytest.raises(pv.InputError):
        pv.WeightStore.from_loom_bytes(b"\x01", "int4", [4], 1.0)
    with pytest.raises(pv.InputError):
        pv.WeightStore.from_loom_bytes(b"\x01\x02\x03", "float32", [1], 1.0)
    with pytest.raises(pv.DTypeError):
        pv.WeightStore.from_loom_bytes(b"\x01", "int3", [1], 1.0)


@pytest.mark.parametrize("dtype", SUB_BYTE + ["int8", "uint8", "fp8e4m3", "fp8e5m2", "int16", "bfloat16"])
@given(data=st.data())
def test_from_loom_bytes_decodes_any_blob_like_the_reference(dtype, data):
    per_byte = max(1, 8 // ref.BITS[dtype])
    width = max(1, ref.BITS[dtype] // 8)
    nbytes = data.draw(st.integers(1, 12)) * width
    blob = data.draw(st.binary(min_size=nbytes, max_size=nbytes))
    scale = data.draw(st.sampled_from([1.0, 0.5, 0.0123]))
    n = nbytes * per_byte // width
    store = pv.WeightStore.from_loom_bytes(blob, dtype, [n], scale)
    expected = ref.loom_decode(ref.loom_disk_unpack(blob, dtype, n), dtype, scale)
    np.testing.assert_array_equal(store.dequantize(), expected)
    assert store.loom_bytes(dtype) == blob  # a full blob re-encodes to the same bytes
