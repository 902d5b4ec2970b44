//! Codecs: FP32 values ⇄ packed codes for the 21 dtypes and GGML's block formats.
//!
//! `Packed` is the one in-memory representation of a morphed tensor: codes bit-packed LSB-first
//! (element i at bit offset i·bits of the little-endian byte stream; the byte vector is padded
//! with zeros to a multiple of 4 bytes so GPUs can read it as u32 words), plus the per-tensor
//! `scale` and, for unsigned types, a `zero_point`. Two code books exist: `Codec::Standard`
//! (OCP/IEEE floats with round-to-nearest-even, full-range integers, affine unsigned) and
//! `Codec::Loom` (the reference engine's codes, bit for bit: quirks 1–8). Block dtypes (Q4_0,
//! Q4_1, Q8_0) keep GGML's own byte layout in `bytes`, scales inside the blocks, under either
//! code book (the reference has no such formats, so there is only GGML's).

pub mod bits;
pub mod ggml_blocks;
pub mod loom_disk;
pub mod minifloat;

use crate::dtype::{DType, Family};
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Standard,
    Loom,
}

impl Codec {
    pub fn parse(name: &str) -> Result<Codec> {
        match name.to_ascii_lowercase().as_str() {
            "" | "standard" | "default" => Ok(Codec::Standard),
            "loom" | "reference" => Ok(Codec::Loom),
            _ => Err(Error::Value(format!("unknown compat mode {name:?}; expected 'standard' or 'loom'"))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Codec::Standard => "standard",
            Codec::Loom => "loom",
        }
    }
}

static NEXT_PACKED_ID: AtomicU64 = AtomicU64::new(1);

/// A morphed tensor: packed codes + how to turn them back into values.
#[derive(Debug)]
pub struct Packed {
    pub dtype: DType,
    pub codec: Codec,
    /// Number of elements.
    pub n: usize,
    /// Codes, LSB-first, zero padded to a multiple of 4 bytes.
    pub bytes: Vec<u8>,
    pub scale: f32,
    /// Unsigned families only: value = (code − zero_point) · scale.
    pub zero_point: f64,
    /// Unique per packed version (GPU buffers are cached by it).
    pub id: u64,
    /// For dtypes of ≤ 8 bits: byte → the (8 / bits) values it holds, already scaled.
    lut: Vec<f32>,
}

impl Packed {
    /// Build from raw integer codes (each masked to the dtype's bit width).
    pub fn from_codes(
        dtype: DType,
        codec: Codec,
        codes: impl ExactSizeIterator<Item = u64>,
        scale: f32,
        zero_point: f64,
    ) -> Packed {
        let n = codes.len();
        let bytes = bits::pack(dtype.bits(), n, codes);
        let mut packed = Packed {
            dtype,
            codec,
            n,
            bytes,
            scale,
            zero_point,
            id: NEXT_PACKED_ID.fetch_add(1, Ordering::Relaxed),
            lut: Vec::new(),
        };
        if dtype.bits() <= 8 {
            packed.lut = packed.byte_lut();
        }
        packed
    }

    /// Wrap bytes already in this dtype's layout (a float type's little-endian values, or GGML
    /// blocks), e.g. straight from a GGUF file. Sub-byte code dtypes go through `from_codes`.
    pub fn from_bytes(dtype: DType, codec: Codec, n: usize, mut bytes: Vec<u8>) -> Result<Packed> {
        let need = dtype.packed_bytes(n);
        if bytes.len() != need || (dtype.is_block() && !n.is_multiple_of(DType::BLOCK_VALUES)) {
            return Err(Error::Shape(format!("{n} {dtype} values take {need} bytes (whole blocks), got {}", bytes.len())));
        }
        if !dtype.is_block() && dtype.family() != Family::Float {
            return Err(Error::DType(format!("{dtype} codes need a scale: build them with from_codes")));
        }
        bytes.resize(need.next_multiple_of(4), 0);
        Ok(Packed { dtype, codec, n, bytes, scale: 1.0, zero_point: 0.0, id: NEXT_PACKED_ID.fetch_add(1, Ordering::Relaxed), lut: Vec::new() })
    }

    /// The raw code of element i (masked to the bit width, not sign-extended).
    pub fn code(&self, i: usize) -> u64 {
        bits::read(&self.bytes, self.dtype.bits(), i)
    }

    /// The value a single code stands for: exactly what every kernel computes with.
    pub fn value_of_code(&self, code: u64) -> f32 {
        decode_code(self.dtype, self.codec, code, self.scale, self.zero_point)
    }

    /// Bytes the codes occupy (without the 4-byte word padding) plus the scale (and zero point).
    pub fn size_in_bytes(&self) -> usize {
        let meta = match self.dtype.family() {
            Family::Float | Family::Block => 0,
            Family::Unsigned => 12,
            _ => 4,
        };
        self.dtype.packed_bytes(self.n) + meta
    }

    /// Decode elements [start, start + out.len()) into `out`.
    pub fn decode_into(&self, start: usize, out: &mut [f32]) {
        assert!(start + out.len() <= self.n, "decode range past the end");
        let b = &self.bytes;
        match self.dtype {
            DType::Float32 => {
                for (j, o) in out.iter_mut().enumerate() {
                    let p = 4 * (start + j);
                    *o = f32::from_le_bytes([b[p], b[p + 1], b[p + 2], b[p + 3]]);
                }
            }
            DType::Float64 => {
                for (j, o) in out.iter_mut().enumerate() {
                    let p = 8 * (start + j);
                    *o = f64::from_le_bytes(b[p..p + 8].try_into().unwrap()) as f32;
                }
            }
            DType::Float16 | DType::BFloat16 => {
                let codes: &[u16] = bytemuck::cast_slice(&b[..]);
                let codes = &codes[start..start + out.len()];
                if self.dtype == DType::Float16 {
                    use half::slice::HalfFloatSliceExt;
                    let halfs: &[half::f16] = bytemuck::cast_slice(codes);
                    halfs.convert_to_f32_slice(out);
                } else {
                    for (o, &c) in out.iter_mut().zip(codes) {
                        *o = minifloat::bf16_decode(c);
                    }
                }
            }
            _ if self.dtype.is_block() => ggml_blocks::decode_into(self.dtype, &self.bytes, start, out),
            _ if self.dtype.bits() <= 8 => self.decode_lut(start, out),
            _ => {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = self.value_of_code(self.code(start + j));
                }
            }
        }
    }

    pub fn decode_all(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.n];
        self.decode_into(0, &mut out);
        out
    }

    fn decode_lut(&self, start: usize, out: &mut [f32]) {
        match 8 / self.dtype.bits() {
            1 => self.decode_lut_fixed::<1>(start, out),
            2 => self.decode_lut_fixed::<2>(start, out),
            4 => self.decode_lut_fixed::<4>(start, out),
            _ => self.decode_lut_fixed::<8>(start, out),
        }
    }

    /// `PER_BYTE` values per byte, known at compile time so each byte is one fixed-size copy.
    fn decode_lut_fixed<const PER_BYTE: usize>(&self, start: usize, out: &mut [f32]) {
        let mut i = 0;
        // Head: elements before the next byte boundary.
        while i < out.len() && !(start + i).is_multiple_of(PER_BYTE) {
            out[i] = self.value_of_code(self.code(start + i));
            i += 1;
        }
        let first_byte = (start + i) / PER_BYTE;
        let whole = (out.len() - i) / PER_BYTE;
        let lut: &[[f32; PER_BYTE]] = bytemuck::cast_slice(&self.lut);
        let body = &mut out[i..i + whole * PER_BYTE];
        for (chunk, &byte) in body.chunks_exact_mut(PER_BYTE).zip(&self.bytes[first_byte..first_byte + whole]) {
            chunk.copy_from_slice(&lut[byte as usize]);
        }
        i += whole * PER_BYTE;
        while i < out.len() {
            out[i] = self.value_of_code(self.code(start + i));
            i += 1;
        }
    }

    fn byte_lut(&self) -> Vec<f32> {
        let bits = self.dtype.bits();
        let per_byte = 8 / bits;
        let mask = (1u64 << bits) - 1;
        let mut lut = Vec::with_capacity(256 * per_byte);
        for byte in 0..256u64 {
            for j in 0..per_byte {
                lut.push(self.value_of_code((byte >> (j * bits)) & mask));
            }
        }
        lut
    }
}

impl Clone for Packed {
    /// A copy is a version of its own (a new id): dropping one never retires the other's device
    /// copy.
    fn clone(&self) -> Packed {
        Packed {
            dtype: self.dtype,
            codec: self.codec,
            n: self.n,
            bytes: self.bytes.clone(),
            scale: self.scale,
            zero_point: self.zero_point,
            id: NEXT_PACKED_ID.fetch_add(1, Ordering::Relaxed),
            lut: self.lut.clone(),
        }
    }
}

impl Drop for Packed {
    fn drop(&mut self) {
        device_copies::retire(DeviceKey::Packed(self.id));
    }
}

/// What a device (GPU) copy of a tensor is keyed by: a WeightStore's float32 master by its
/// generation, or a packed version by its id (both count from 1, independently).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceKey {
    Master(u64),
    Packed(u64),
}

/// Which tensors have a device copy, and which of those were dropped or replaced since. The GPU
/// cache marks what it uploads and drains the retired keys on its next access; codec and weights
/// only report drops, so they never depend on the GPU code above them.
pub mod device_copies {
    use super::DeviceKey;
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Mutex, MutexGuard};

    struct Copies {
        resident: BTreeSet<DeviceKey>,
        retired: Vec<DeviceKey>,
    }

    static COPIES: Mutex<Copies> = Mutex::new(Copies { resident: BTreeSet::new(), retired: Vec::new() });
    /// `resident.len()`, readable without the lock: a CPU-only process (or a training step that
    /// re-morphs every tensor) pays one atomic load per drop.
    static RESIDENT: AtomicUsize = AtomicUsize::new(0);

    fn copies() -> MutexGuard<'static, Copies> {
        // Every statement below leaves the sets consistent, so a poisoned lock is still usable.
        COPIES.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `key` now has a device copy.
    pub fn mark_resident(key: DeviceKey) {
        let mut copies = copies();
        copies.resident.insert(key);
        RESIDENT.store(copies.resident.len(), Ordering::Release);
    }

    /// `key`'s device copy was freed by its holder (evicted): nothing to retire later.
    pub fn forget(key: DeviceKey) {
        let mut copies = copies();
        copies.resident.remove(&key);
        RESIDENT.store(copies.resident.len(), Ordering::Release);
    }

    /// The tensor behind `key` is gone (dropped, or its master replaced): its device copy, if it
    /// has one, is retired.
    pub fn retire(key: DeviceKey) {
        if RESIDENT.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut copies = copies();
        if copies.resident.remove(&key) {
            copies.retired.push(key);
            RESIDENT.store(copies.resident.len(), Ordering::Release);
        }
    }

    /// The keys retired since the last call: their device copies can be freed.
    pub fn take_retired() -> Vec<DeviceKey> {
        std::mem::take(&mut copies().retired)
    }
}

/// Sign-extend a `bits`-wide two's-complement code.
pub fn sign_extend(code: u64, bits: usize) -> i64 {
    if bits == 64 {
        code as i64
    } else {
        let shift = 64 - bits;
        ((code << shift) as i64) >> shift
    }
}

/// code → value for every dtype and both code books.
pub fn decode_code(dtype: DType, codec: Codec, code: u64, scale: f32, zero_point: f64) -> f32 {
    let bits = dtype.bits();
    let loom = codec == Codec::Loom;
    match dtype {
        DType::Float64 => f64::from_bits(code) as f32,
        DType::Float32 => f32::from_bits(code as u32),
        DType::Float16 => minifloat::f16_decode(code as u16),
        DType::BFloat16 => minifloat::bf16_decode(code as u16),
        DType::Fp8E4M3 if loom => minifloat::loom_fp8_e4m3_decode(code as u8) * scale,
        DType::Fp8E5M2 if loom => minifloat::loom_fp8_e5m2_decode(code as u8) * scale,
        DType::Fp4 if loom => minifloat::LOOM_FP4_TABLE[code as usize & 0xF] * scale,
        DType::Fp8E4M3 => minifloat::fp8_e4m3_decode(code as u8) * scale,
        DType::Fp8E5M2 => minifloat::fp8_e5m2_decode(code as u8) * scale,
        DType::Fp4 => minifloat::fp4_decode(code as u8) * scale,
        DType::Binary => {
            if code & 1 == 1 {
                scale
            } else {
                -scale
            }
        }
        _ => match dtype.family() {
            Family::Signed => (sign_extend(code, bits) as f64 * scale as f64) as f32,
            Family::Unsigned => ((code as f64 - zero_point) * scale as f64) as f32,
            _ => unreachable!("float families handled above; blocks decode in ggml_blocks"),
        },
    }
}

/// Encode `values` into `dtype` with the standard code book (scale chosen per dtype). Block dtypes
/// need a whole number of blocks (`ggml_blocks::check_row` says so for a shape).
pub fn encode_standard(values: &[f32], dtype: DType) -> Packed {
    if dtype.is_block() {
        let blocks = ggml_blocks::quantize(values, dtype);
        return Packed::from_bytes(dtype, Codec::Standard, values.len(), blocks).expect("quantize writes whole blocks");
    }
    let max_abs = values.iter().fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
    // The scale is stored as f32: a value that underflows (tiny weights) or is not finite
    // becomes 1.0, as for all-zero weights.
    let nonzero_or_one = |s: f64| {
        let stored = s as f32;
        if stored > 0.0 && stored.is_finite() { stored as f64 } else { 1.0 }
    };
    match dtype.family() {
        Family::Float => pack_codes(dtype, values, 1.0, 0.0, |v| match dtype {
            DType::Float64 => (v as f64).to_bits(),
            DType::Float32 => v.to_bits() as u64,
            DType::Float16 => minifloat::f16_encode(v) as u64,
            _ => minifloat::bf16_encode(v) as u64,
        }),
        Family::ScaledFloat => {
            let (max_code, encode): (f64, fn(f64) -> u8) = match dtype {
                DType::Fp8E4M3 => (448.0, minifloat::fp8_e4m3_encode),
                DType::Fp8E5M2 => (57344.0, minifloat::fp8_e5m2_encode),
                _ => (6.0, minifloat::fp4_encode),
            };
            let scale = nonzero_or_one(max_abs as f64 / max_code);
            pack_codes(dtype, values, scale, 0.0, |v| encode(v as f64 / scale) as u64)
        }
        Family::Signed => {
            let max_code = dtype.signed_max_code();
            let min_code = if dtype == DType::Ternary { -1.0 } else { -max_code - 1.0 };
            let scale = if dtype == DType::Ternary {
                nonzero_or_one(mean_abs(values))
            } else {
                nonzero_or_one(max_abs as f64 / max_code)
            };
            let mask = bit_mask(dtype.bits());
            pack_codes(dtype, values, scale, 0.0, |v| {
                let q = (v as f64 / scale).round_half_even().clamp(min_code, max_code);
                (q as i64 as u64) & mask
            })
        }
        Family::Unsigned => {
            let (lo, hi) = values.iter().fold((0f64, 0f64), |(lo, hi), &v| (lo.min(v as f64), hi.max(v as f64)));
            let q_max = dtype.unsigned_max_code();
            let scale = nonzero_or_one((hi - lo) / q_max);
            let zero_point = (-lo / scale).round_half_even().clamp(0.0, q_max);
            pack_codes(dtype, values, scale, zero_point, |v| ((v as f64 / scale).round_half_even() + zero_point).clamp(0.0, q_max) as u64)
        }
        Family::Binary => pack_codes(dtype, values, nonzero_or_one(mean_abs(values)), 0.0, |v| (v >= 0.0) as u64),
        Family::Block => unreachable!("blocks returned above"),
    }
}

/// Standard-code-book packing: codes stream straight into the bit packer (no code vector).
fn pack_codes(dtype: DType, values: &[f32], scale: f64, zero_point: f64, code: impl Fn(f32) -> u64) -> Packed {
    Packed::from_codes(dtype, Codec::Standard, values.iter().map(|&v| code(v)), scale as f32, zero_point)
}

/// The reference's automatic scale for a first morph (numerics.md §3.1).
pub fn loom_auto_scale(values: &[f32], dtype: DType) -> f32 {
    let max_abs = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    if values.is_empty() {
        return 1.0;
    }
    if dtype == DType::Binary {
        let mean = mean_abs(values) as f32;
        return if mean == 0.0 { 1.0 } else { mean };
    }
    if max_abs == 0.0 {
        return 1.0;
    }
    match dtype {
        DType::Int4 | DType::Uint4 => max_abs / 7.0,
        DType::Fp4 => max_abs / 3.0,
        DType::Int2 | DType::Uint2 | DType::Ternary => max_abs,
        _ => max_abs / 127.0,
    }
}

/// Encode with the reference's code book and the given (already chosen) scale (§3.2).
pub fn encode_loom(values: &[f32], dtype: DType, scale: f32) -> Packed {
    if dtype.is_block() {
        let blocks = ggml_blocks::quantize(values, dtype);
        return Packed::from_bytes(dtype, Codec::Loom, values.len(), blocks).expect("quantize writes whole blocks");
    }
    let mask = bit_mask(dtype.bits());
    // Go's math.Round: half away from zero, on the f32 quotient.
    let q = |v: f32| (v / scale).round() as f64;
    let signed = |r: f64| (r as i64 as u64) & mask;
    let codes: Vec<u64> = values
        .iter()
        .map(|&v| match dtype {
            DType::Float64 => (v as f64).to_bits(),
            DType::Float32 => v.to_bits() as u64,
            DType::Float16 => minifloat::loom_f16_encode(v) as u64,
            DType::BFloat16 => minifloat::loom_bf16_encode(v) as u64,
            DType::Fp8E4M3 => minifloat::loom_fp8_e4m3_encode(v / scale) as u64,
            DType::Fp8E5M2 => minifloat::loom_fp8_e5m2_encode(v / scale) as u64,
            DType::Fp4 => {
                let s = if scale == 0.0 { 1.0 } else { scale };
                minifloat::loom_fp4_encode(v / s) as u64
            }
            DType::Int64 | DType::Int32 | DType::Int16 => signed(q(v)),
            DType::Uint64 | DType::Uint32 | DType::Uint16 => (q(v).abs() as u64) & mask,
            DType::Int8 => signed(q(v)), // wraps modulo 256 (quirk 2)
            DType::Uint8 => q(v).clamp(0.0, 255.0) as u64,
            DType::Int4 => signed(q(v).clamp(-8.0, 7.0)),
            DType::Uint4 => q(v).clamp(0.0, 15.0) as u64,
            DType::Int2 => signed(q(v).clamp(-2.0, 1.0)),
            DType::Uint2 => q(v).clamp(0.0, 3.0) as u64,
            DType::Ternary => signed(q(v).clamp(-1.0, 1.0)),
            DType::Binary => (v / scale >= 0.0) as u64,
            DType::Q4_0 | DType::Q4_1 | DType::Q8_0 => unreachable!("blocks returned above"),
        })
        .collect();
    Packed::from_codes(dtype, Codec::Loom, codes.into_iter(), scale, 0.0)
}

/// Round half to even without a libm call (baseline x86-64 has no SSE4.1 `roundsd`): adding
/// and removing 2^52 rounds |x| < 2^52 to an integer in the default rounding mode.
trait RoundHalfEven {
    fn round_half_even(self) -> f64;
}

impl RoundHalfEven for f64 {
    #[inline]
    fn round_half_even(self) -> f64 {
        const TWO_52: f64 = 4_503_599_627_370_496.0;
        if self.abs() < TWO_52 {
            ((self.abs() + TWO_52) - TWO_52).copysign(self)
        } else {
            self
        }
    }
}

fn bit_mask(bits: usize) -> u64 {
    if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

fn mean_abs(values: &[f32]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().map(|v| v.abs() as f64).sum::<f64>() / values.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 * 0.37).sin() * 1.7) - 0.2).collect()
    }

    #[test]
    fn standard_round_trip_error_is_bounded_by_half_a_step() {
        let v = sample(257);
        for d in DType::ALL {
            let p = encode_standard(&v, d);
            let back = p.decode_all();
            let max_abs = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            let bound = match d {
                DType::Float64 | DType::Float32 => 0.0,
                DType::Float16 => max_abs * 2f32.powi(-11),
                DType::BFloat16 => max_abs * 2f32.powi(-8),
                DType::Fp8E4M3 => max_abs * 2f32.powi(-4),
                DType::Fp8E5M2 => max_abs * 2f32.powi(-3),
                DType::Fp4 => p.scale * 1.0,
                DType::Ternary | DType::Binary => max_abs + p.scale,
                _ => p.scale * 0.5 + 1e-6 * max_abs,
            };
            for (a, b) in v.iter().zip(&back) {
                assert!((a - b).abs() <= bound * 1.0001, "{d}: {a} vs {b} (bound {bound})");
            }
        }
    }

    #[test]
    fn lut_decode_matches_per_element_decode_at_any_offset() {
        let v = sample(101);
        for d in DType::ALL.into_iter().filter(|d| d.bits() <= 8) {
            let p = encode_standard(&v, d);
            for start in 0..9 {
                let mut out = vec![0.0; 101 - start - 3];
                p.decode_into(start, &mut out);
                for (j, o) in out.iter().enumerate() {
                    assert_eq!(o.to_bits(), p.value_of_code(p.code(start + j)).to_bits(), "{d}");
                }
            }
        }
    }

    #[test]
    fn round_half_even_matches_std() {
        for &x in &[0.5, 1.5, 2.5, -0.5, -2.5, 3.49999, -7.5, 1e15 + 0.5, 4.6e18, -0.0, 127.5] {
            assert_eq!(x.round_half_even().to_bits(), x.round_ties_even().to_bits(), "{x}");
        }
    }

    #[test]
    fn int4_packs_two_per_byte_low_nibble_first() {
        let p = Packed::from_codes(DType::Int4, Codec::Standard, [1u64, 0xF, 7].into_iter(), 1.0, 0.0);
        assert_eq!(&p.bytes[..2], &[0xF1, 0x07]);
        assert_eq!(p.bytes.len() % 4, 0);
        assert_eq!(p.decode_all(), vec![1.0, -1.0, 7.0]);
    }

    #[test]
    fn loom_int8_then_int4_reuse_scale_and_clip() {
        let v = vec![1.27, -0.5, 0.7];
        let s = loom_auto_scale(&v, DType::Int8);
        assert!((s - 0.01).abs() < 1e-7);
        let p = encode_loom(&v, DType::Int4, s);
        assert_eq!(sign_extend(p.code(0), 4), 7);
        assert_eq!(sign_extend(p.code(1), 4), -8);
    }
}
