"""Plain-NumPy reference of polyvtd's two weight code books, written from docs/compat.md
(``compat="standard"``) and the reference engine's numerics.md §3–§5 (``compat="loom"``).

Nothing here is translated from the Rust: the mini-floats are enumerated (every code's value is
listed, the nearest one chosen, ties to the even mantissa code), the Loom truncating formats are
written as "truncate to k significant bits" on the value, and bit packing goes through
``np.packbits``.

Conventions
- Input weights are converted to float32 first (``WeightStore`` stores an f32 master).
- ``*_encode`` return raw codes as ``uint64`` (masked to the dtype's bit width, two's complement
  for the signed families), so packing can be checked byte for byte.
- ``*_quantize`` return the dequantised float32 values (what every kernel computes with).
"""

from __future__ import annotations

import math

import numpy as np

DTYPES = [
    "float64", "float32", "float16", "bfloat16", "fp8e4m3", "fp8e5m2",
    "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8",
    "int4", "uint4", "fp4", "int2", "uint2", "ternary", "binary",
]

BITS = {
    "float64": 64, "int64": 64, "uint64": 64,
    "float32": 32, "int32": 32, "uint32": 32,
    "float16": 16, "bfloat16": 16, "int16": 16, "uint16": 16,
    "fp8e4m3": 8, "fp8e5m2": 8, "int8": 8, "uint8": 8,
    "int4": 4, "uint4": 4, "fp4": 4,
    "int2": 2, "uint2": 2, "ternary": 2,
    "binary": 1,
}

FLOAT = ("float64", "float32", "float16", "bfloat16")
SCALED_FLOAT = ("fp8e4m3", "fp8e5m2", "fp4")
SIGNED = ("int64", "int32", "int16", "int8", "int4", "int2", "ternary")
UNSIGNED = ("uint64", "uint32", "uint16", "uint8", "uint4", "uint2")


def family(dtype: str) -> str:
    for name, members in (("float", FLOAT), ("scaled_float", SCALED_FLOAT), ("signed", SIGNED),
                          ("unsigned", UNSIGNED)):
        if dtype in members:
            return name
    if dtype == "binary":
        return "binary"
    raise KeyError(dtype)


def _f32(w) -> np.ndarray:
    return np.asarray(w, dtype=np.float32).ravel()


def _mask(bits: int) -> int:
    return (1 << bits) - 1


def _max_abs(w: np.ndarray) -> float:
    return float(np.max(np.abs(w))) if w.size else 0.0


def mean_abs(w) -> float:
    """mean |w| in float64, exactly rounded (math.fsum). The library sums sequentially in f64;
    after the cast to f32 the two can differ by at most one f32 ulp (see tests)."""
    w = _f32(w)
    if w.size == 0:
        return 0.0
    return math.fsum(np.abs(w.astype(np.float64)).tolist()) / w.size


def _scale_or_one(s: float) -> np.float32:
    """compat.md: 'A scale that would be 0 or non-finite (all-zero weights) is 1.0. The scale is
    stored as f32' — so the check applies to the stored f32 value."""
    s32 = np.float32(s)
    if not (np.isfinite(s32) and s32 > 0):
        return np.float32(1.0)
    return s32


def _float_to_int_codes(q: np.ndarray, bits: int) -> np.ndarray:
    """Integer-valued float64 codes → two's-complement raw codes masked to ``bits`` (int64
    saturating at the ends, NaN → 0, as a float → integer conversion that cannot overflow)."""
    q = np.where(np.isnan(q), 0.0, q)
    hi = q >= 2.0**63
    lo = q < -(2.0**63)
    qi = np.where(hi | lo, 0.0, q).astype(np.int64)
    qi[hi] = np.iinfo(np.int64).max
    qi[lo] = np.iinfo(np.int64).min
    codes = qi.view(np.uint64)
    if bits < 64:
        codes = codes & np.uint64(_mask(bits))
    return codes


def _float_to_uint_codes(q: np.ndarray, bits: int) -> np.ndarray:
    """Non-negative integer-valued float64 codes → unsigned raw codes (saturating at 2^64 − 1)."""
    q = np.where(np.isnan(q), 0.0, np.maximum(q, 0.0))
    hi = q >= 2.0**64
    codes = np.where(hi, 0.0, q).astype(np.uint64)
    codes[hi] = np.iinfo(np.uint64).max
    if bits < 64:
        codes = codes & np.uint64(_mask(bits))
    return codes


def sign_extend(codes: np.ndarray, bits: int) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.uint64)
    if bits == 64:
        return codes.view(np.int64)
    c = codes.astype(np.int64)
    return np.where(c >= (1 << (bits - 1)), c - (1 << bits), c)


# ---- mini-float tables (enumerated) -------------------------------------------------------------

def _ocp_value(code: int, exp_bits: int, man_bits: int, bias: int) -> float:
    """Value of a non-negative OCP/IEEE-style mini-float magnitude code (subnormals included)."""
    e = code >> man_bits
    m = code & ((1 << man_bits) - 1)
    if e == 0:
        return math.ldexp(m / (1 << man_bits), 1 - bias)
    return math.ldexp(1.0 + m / (1 << man_bits), e - bias)


def _ocp_table(exp_bits: int, man_bits: int, bias: int, max_finite: float) -> np.ndarray:
    """The finite magnitudes of a format, indexed by magnitude code (sign bit clear)."""
    values = [_ocp_value(c, exp_bits, man_bits, bias) for c in range(1 << (exp_bits + man_bits))]
    return np.array([v for v in values if v <= max_finite], dtype=np.float64)


#: OCP E4M3 (bias 7, subnormals, 0x7F = NaN, max 448): magnitudes for codes 0x00..0x7E.
E4M3_MAGNITUDES = _ocp_table(4, 3, 7, 448.0)
#: OCP E5M2 (bias 15, exponent 31 = Inf/NaN, max 57344): magnitudes for codes 0x00..0x7B.
E5M2_MAGNITUDES = _ocp_table(5, 2, 15, 57344.0)
#: OCP E2M1 (FP4): {0, .5, 1, 1.5, 2, 3, 4, 6} for codes 0..7.
E2M1_MAGNITUDES = _ocp_table(2, 1, 1, 6.0)

STANDARD_MINIFLOAT = {
    # dtype: (magnitudes, sign bit, largest finite magnitude)
    "fp8e4m3": (E4M3_MAGNITUDES, 0x80, 448.0),
    "fp8e5m2": (E5M2_MAGNITUDES, 0x80, 57344.0),
    "fp4": (E2M1_MAGNITUDES, 0x8, 6.0),
}


def nearest_even(values: np.ndarray, magnitudes: np.ndarray) -> np.ndarray:
    """Index of the nearest magnitude for each non-negative value (float64), ties to the even
    code (= even mantissa: the mantissa's last bit is the code's last bit). Brute force over all
    codes, in chunks."""
    values = np.asarray(values, dtype=np.float64)
    out = np.empty(values.shape, dtype=np.int64)
    flat_in, flat_out = values.ravel(), out.ravel()
    even = (np.arange(magnitudes.size) % 2) == 0
    for start in range(0, flat_in.size, 4096):
        v = flat_in[start:start + 4096]
        d = np.abs(v[:, None] - magnitudes[None, :])
        best = d == d.min(axis=1, keepdims=True)
        best_even = best & even[None, :]
        flat_out[start:start + 4096] = np.where(best_even.any(axis=1), best_even.argmax(axis=1),
                                                best.argmax(axis=1))
    return out


# ---- bfloat16 / float16 -------------------------------------------------------------------------

def _round_sig_bits(a: np.ndarray, sig_bits: int, min_exp: int, mode: str) -> np.ndarray:
    """Round non-negative finite float64 values to ``sig_bits`` significant bits (an exponent
    floor ``min_exp`` gives the subnormal grid): mode 'even' (RNE) or 'trunc' (toward zero)."""
    a = np.asarray(a, dtype=np.float64)
    _, e = np.frexp(a)  # a = m·2^e, m in [0.5, 1)  ⇒ unbiased exponent e − 1
    e = np.maximum(e - 1, min_exp)
    step = np.ldexp(1.0, e - (sig_bits - 1))
    scaled = a / step  # exact: division by a power of two
    n = np.rint(scaled) if mode == "even" else np.floor(scaled)
    return n * step


def bf16_rne(w) -> np.ndarray:
    """float32 → bfloat16 (round to nearest even, overflow → ±Inf) as uint16 codes."""
    w = _f32(w)
    a = np.abs(w.astype(np.float64))
    finite = np.isfinite(a)
    r = np.where(finite, _round_sig_bits(np.where(finite, a, 0.0), 8, -126, "even"), a)
    with np.errstate(over="ignore"):
        r32 = np.copysign(r, w).astype(np.float32)  # 2^128 overflows to Inf, as it must
    return (r32.view(np.uint32) >> np.uint32(16)).astype(np.uint16)


def bf16_decode(codes) -> np.ndarray:
    return (np.asarray(codes, dtype=np.uint64).astype(np.uint32) << np.uint32(16)).view(np.float32)


def f16_decode(codes) -> np.ndarray:
    return np.asarray(codes, dtype=np.uint64).astype(np.uint16).view(np.float16).astype(np.float32)


# ---- standard code book -------------------------------------------------------------------------

def standard_scale(w, dtype: str) -> tuple[np.float32, float]:
    """(scale, zero_point) of the standard codec for ``dtype`` (compat.md's table)."""
    w = _f32(w)
    fam = family(dtype)
    if fam == "float":
        return np.float32(1.0), 0.0
    if fam == "scaled_float":
        return _scale_or_one(_max_abs(w) / STANDARD_MINIFLOAT[dtype][2]), 0.0
    if dtype in ("ternary", "binary"):
        return _scale_or_one(mean_abs(w)), 0.0
    bits = BITS[dtype]
    if fam == "signed":
        return _scale_or_one(_max_abs(w) / (2.0 ** (bits - 1) - 1.0)), 0.0
    # unsigned: affine over [min(w, 0), max(w, 0)]
    q_max = 2.0**bits - 1.0
    w64 = w.astype(np.float64)
    lo = min(0.0, float(w64.min())) if w.size else 0.0
    hi = max(0.0, float(w64.max())) if w.size else 0.0
    scale = _scale_or_one((hi - lo) / q_max)
    zero_point = float(np.clip(np.rint(-lo / np.float64(scale)), 0.0, q_max))
    return scale, zero_point


def standard_encode(w, dtype: str) -> tuple[np.ndarray, np.float32, float]:
    """(raw codes as uint64, scale, zero_point) of the standard codec."""
    w = _f32(w)
    fam = family(dtype)
    bits = BITS[dtype]
    scale, zero_point = standard_scale(w, dtype)
    s = np.float64(scale)
    if dtype == "float64":
        return w.astype(np.float64).view(np.uint64), scale, zero_point
    if dtype == "float32":
        return w.view(np.uint32).astype(np.uint64), scale, zero_point
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return w.astype(np.float16).view(np.uint16).astype(np.uint64), scale, zero_point
    if dtype == "bfloat16":
        return bf16_rne(w).astype(np.uint64), scale, zero_point
    if fam == "scaled_float":
        mags, sign_bit, max_finite = STANDARD_MINIFLOAT[dtype]
        q = w.astype(np.float64) / s  # the code division runs in f64
        idx = nearest_even(np.minimum(np.abs(q), max_finite), mags)
        codes = idx.astype(np.uint64) | np.where(np.signbit(q), np.uint64(sign_bit), np.uint64(0))
        return codes.astype(np.uint64), scale, zero_point
    if fam == "signed":
        max_code = 1.0 if dtype == "ternary" else 2.0 ** (bits - 1) - 1.0
        min_code = -1.0 if dtype == "ternary" else -max_code - 1.0
        q = np.clip(np.rint(w.astype(np.float64) / s), min_code, max_code)
        return _float_to_int_codes(q, bits), scale, zero_point
    if fam == "unsigned":
        q_max = 2.0**bits - 1.0
        q = np.clip(np.rint(w.astype(np.float64) / s) + zero_point, 0.0, q_max)
        return _float_to_uint_codes(q, bits), scale, zero_point
    # binary: 1 iff w ≥ 0 (so −0.0 → 1)
    return (w >= 0).astype(np.uint64), scale, zero_point


def standard_decode(codes, dtype: str, scale, zero_point: float = 0.0) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.uint64).ravel()
    bits = BITS[dtype]
    s = np.float64(np.float32(scale))
    fam = family(dtype)
    if dtype == "float64":
        return codes.view(np.float64).astype(np.float32)
    if dtype == "float32":
        return codes.astype(np.uint32).view(np.float32)
    if dtype == "float16":
        return f16_decode(codes)
    if dtype == "bfloat16":
        return bf16_decode(codes)
    if fam == "scaled_float":
        mags, sign_bit, _ = STANDARD_MINIFLOAT[dtype]
        mag_code = (codes & np.uint64(sign_bit - 1)).astype(np.int64)
        nan = mag_code >= mags.size
        # E5M2 0x7C is Inf; every other non-finite code is NaN (E4M3 0x7F, E5M2 0x7D..0x7F).
        inf = (dtype == "fp8e5m2") & (mag_code == 0x7C)
        mag = np.where(nan, np.nan, mags[np.minimum(mag_code, mags.size - 1)])
        mag = np.where(inf, np.inf, mag)
        value = np.where((codes & np.uint64(sign_bit)) != 0, -mag, mag)
        return (value * s).astype(np.float32)
    if fam == "signed":
        return (sign_extend(codes, bits).astype(np.float64) * s).astype(np.float32)
    if fam == "unsigned":
        return ((codes.astype(np.float64) - zero_point) * s).astype(np.float32)
    return np.where(codes & np.uint64(1), s, -s).astype(np.float32)


def standard_quantize(w, dtype: str) -> tuple[np.ndarray, np.float32, float]:
    """(dequantised float32 values, scale, zero_point) of the standard codec."""
    codes, scale, zero_point = standard_encode(w, dtype)
    return standard_decode(codes, dtype, scale, zero_point), scale, zero_point


# ---- Loom code book (numerics.md §3–§5) ---------------------------------------------------------

def loom_auto_scale(w, dtype: str) -> np.float32:
    """§3.1: the scale the reference picks on a first morph (arithmetic in f32)."""
    w = _f32(w)
    if w.size == 0:
        return np.float32(1.0)
    if dtype == "binary":
        m = np.float32(mean_abs(w))
        return np.float32(1.0) if m == 0 else m
    max_abs = np.float32(_max_abs(w))
    if max_abs == 0:
        return np.float32(1.0)
    divisor = {"int4": 7, "uint4": 7, "fp4": 3, "int2": 1, "uint2": 1, "ternary": 1}.get(dtype, 127)
    return np.float32(max_abs / np.float32(divisor))


def _round_half_away(u: np.ndarray) -> np.ndarray:
    """Go's math.Round on f32 values: half away from zero (evaluated exactly in f64)."""
    u = np.asarray(u, dtype=np.float64)
    return np.copysign(np.floor(np.abs(u) + 0.5), u)


#: the reference's FP4 table (quirk 4), by code; codes 6/7 and 14/15 are Inf/NaN.
LOOM_FP4_TABLE = np.array([0.0, 0.75, 1.0, 1.5, 2.0, 3.0, np.inf, np.nan,
                           -0.0, -0.75, -1.0, -1.5, -2.0, -3.0, -np.inf, np.nan], dtype=np.float32)
#: the order the reference's encoder scans the finite codes in (first strictly closer wins).
LOOM_FP4_SCAN = np.array([0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x8, 0x9, 0xA, 0xB, 0xC, 0xD])


def _loom_truncated_minifloat(u: np.ndarray, man_bits: int, bias: int, min_normal_exp: int,
                              overflow_exp: int, sign_bit: int, overflow_code: int) -> np.ndarray:
    """The reference's FP8 encoders as value operations: |u| below 2^min_normal_exp → ±0 (no
    subnormals); |u| ≥ 2^overflow_exp (or NaN/Inf) → ``overflow_code``; else the exponent and the
    mantissa truncated to ``man_bits`` bits."""
    u = np.asarray(u, dtype=np.float32)
    a = np.abs(u.astype(np.float64))
    sign = np.where(np.signbit(u), np.uint64(sign_bit), np.uint64(0))
    _, e = np.frexp(np.where(np.isfinite(a), a, 1.0))
    e = e - 1  # a = 1.f · 2^e
    mantissa = np.floor(np.ldexp(np.where(np.isfinite(a), a, 0.0), man_bits - e)) - (1 << man_bits)
    code = ((e + bias).astype(np.int64) << man_bits) + mantissa.astype(np.int64)
    zero = a < 2.0**min_normal_exp
    over = ~np.isfinite(a) | (a >= 2.0**overflow_exp)
    code = np.where(zero, 0, np.where(over, overflow_code, code))
    return code.astype(np.uint64) | sign


def loom_encode(w, dtype: str, scale) -> np.ndarray:
    """§3.2: raw codes of the reference's code book for an already chosen scale."""
    w = _f32(w)
    scale = np.float32(scale)
    bits = BITS[dtype]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        u = w / scale  # f32 quotient
        r = _round_half_away(u)
    if dtype == "float64":
        return w.astype(np.float64).view(np.uint64)
    if dtype == "float32":
        return w.view(np.uint32).astype(np.uint64)
    if dtype == "float16":
        # truncate to 11 significant bits; |w| < 2^-14 → ±0 (subnormals flushed), ≥ 2^16 → ±Inf
        a = np.abs(w.astype(np.float64))
        finite = np.isfinite(a)
        t = np.where(finite, _round_sig_bits(np.where(finite, a, 0.0), 11, -1000, "trunc"), np.inf)
        t = np.where(a < 2.0**-14, 0.0, np.where(~finite | (a >= 2.0**16), np.inf, t))
        return np.copysign(t, w).astype(np.float16).view(np.uint16).astype(np.uint64)
    if dtype == "bfloat16":
        return (w.view(np.uint32) >> np.uint32(16)).astype(np.uint64)  # the upper 16 bits
    if dtype == "fp8e4m3":
        return _loom_truncated_minifloat(u, 3, 7, -6, 8, 0x80, 0x7F)
    if dtype == "fp8e5m2":
        return _loom_truncated_minifloat(u, 2, 15, -14, 16, 0x80, 0x7C)
    if dtype == "fp4":
        s = np.float32(1.0) if scale == 0 else scale
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            u4 = (w / s).astype(np.float32)
            d = np.abs(u4[:, None] - LOOM_FP4_TABLE[LOOM_FP4_SCAN][None, :])  # f32 distances
        return LOOM_FP4_SCAN[np.argmin(d, axis=1)].astype(np.uint64)  # first minimum wins
    if dtype in ("int64", "int32", "int16", "int8"):
        return _float_to_int_codes(r, bits)  # no clamp: int8 wraps modulo 256 (quirk 2)
    if dtype in ("uint64", "uint32", "uint16"):
        return _float_to_uint_codes(np.abs(r), bits)  # |round(w/s)| (quirk 2)
    clamp = {"uint8": (0, 255), "int4": (-8, 7), "uint4": (0, 15), "int2": (-2, 1),
             "uint2": (0, 3), "ternary": (-1, 1)}
    if dtype in clamp:
        lo, hi = clamp[dtype]
        with np.errstate(invalid="ignore"):
            q = np.clip(r, lo, hi)
        return _float_to_int_codes(q, bits)
    with np.errstate(invalid="ignore"):
        return (u >= 0).astype(np.uint64)  # binary


def _loom_fp8_e4m3_value(code: int) -> float:
    e, m = (code >> 3) & 0xF, code & 0x7
    if e == 0 and m == 0:
        mag = 0.0
    elif e == 0:
        mag = (1 + m / 8) * 2.0**-10  # quirk 3: not the OCP subnormal m·2^-9
    else:
        mag = (1 + m / 8) * 2.0 ** (e - 7)  # no NaN: 0x7F → 480
    return -mag if code & 0x80 else mag


def _loom_fp8_e5m2_value(code: int) -> float:
    e, m = (code >> 2) & 0x1F, code & 0x3
    if e == 31:
        mag = math.inf if m == 0 else math.nan
    elif e == 0 and m == 0:
        mag = 0.0
    else:
        mag = (1 + m / 4) * 2.0 ** (e - 15)  # exponent 0 read as a normal (quirk 3)
    return -mag if code & 0x80 else mag


LOOM_E4M3_TABLE = np.array([_loom_fp8_e4m3_value(c) for c in range(256)], dtype=np.float32)
LOOM_E5M2_TABLE = np.array([_loom_fp8_e5m2_value(c) for c in range(256)], dtype=np.float32)


def loom_decode(codes, dtype: str, scale) -> np.ndarray:
    """§4: code → value (× scale) for the reference's code book."""
    codes = np.asarray(codes, dtype=np.uint64).ravel()
    scale = np.float32(scale)
    bits = BITS[dtype]
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype in ("float64", "float32", "float16", "bfloat16"):
            return standard_decode(codes, dtype, 1.0)
        if dtype == "fp8e4m3":
            return LOOM_E4M3_TABLE[codes.astype(np.int64) & 0xFF] * scale
        if dtype == "fp8e5m2":
            return LOOM_E5M2_TABLE[codes.astype(np.int64) & 0xFF] * scale
        if dtype == "fp4":
            return LOOM_FP4_TABLE[codes.astype(np.int64) & 0xF] * scale
        if dtype == "binary":
            return np.where(codes & np.uint64(1), scale, -scale).astype(np.float32)
        if family(dtype) == "signed":
            return (sign_extend(codes, bits).astype(np.float64) * np.float64(scale)).astype(np.float32)
        return (codes.astype(np.float64) * np.float64(scale)).astype(np.float32)


def loom_quantize(w, dtype: str, scale) -> np.ndarray:
    """Dequantised values of the reference's code book with the given scale."""
    return loom_decode(loom_encode(w, dtype, scale), dtype, scale)


# ---- byte layouts -------------------------------------------------------------------------------

def _code_bits(codes, bits: int) -> np.ndarray:
    """[n, bits] array of each code's bits, least significant first."""
    codes = np.asarray(codes, dtype=np.uint64).ravel()
    return ((codes[:, None] >> np.arange(bits, dtype=np.uint64)[None, :]) & np.uint64(1)).astype(np.uint8)


def pack_lsb(codes, bits: int) -> bytes:
    """polyvtd's in-memory packing: element i at bit offset i·bits, LSB-first, little-endian;
    ⌈n·bits/8⌉ bytes (without the word padding)."""
    codes = np.asarray(codes, dtype=np.uint64).ravel()
    if bits >= 8:
        return codes.astype("<u8").view(np.uint8).reshape(-1, 8)[:, : bits // 8].tobytes()
    return np.packbits(_code_bits(codes, bits).ravel(), bitorder="little").tobytes()


def loom_disk_pack(codes, bits: int) -> bytes:
    """The reference's on-disk order (§5): multi-byte codes little-endian; sub-byte codes
    MSB-first (element 2k in the high nibble, 4k+j at shift 6−2j, binary 8k+j at bit 7−j)."""
    codes = np.asarray(codes, dtype=np.uint64).ravel()
    if bits >= 8:
        return pack_lsb(codes, bits)
    msb_first = _code_bits(codes, bits)[:, ::-1]
    return np.packbits(msb_first.ravel(), bitorder="big").tobytes()


def loom_disk_unpack(data: bytes, dtype: str, n: int) -> np.ndarray:
    """Inverse of ``loom_disk_pack`` for ``n`` elements (padding elements dropped)."""
    bits = BITS[dtype]
    raw = np.frombuffer(bytes(data), dtype=np.uint8)
    if bits >= 8:
        width = bits // 8
        padded = np.zeros((n, 8), dtype=np.uint8)
        padded[:, :width] = raw[: n * width].reshape(n, width)
        return padded.view("<u8").ravel().astype(np.uint64)
    stream = np.unpackbits(raw, bitorder="big")[: n * bits].reshape(n, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint64)
    return (stream.astype(np.uint64) * weights[None, :]).sum(axis=1).astype(np.uint64)
