//! GGML's 32-value block formats Q4_0, Q4_1 and Q8_0, bit for bit as ggml-quants.c writes and
//! reads them (`quantize_row_*_ref`, `dequantize_row_*`), and the GGML tensor type ids of GGUF.
//!
//! Blocks run along each row (a row is a whole number of blocks), so the flat stream of a
//! row-major matrix is a plain sequence of blocks. Every product and sum below is one f32
//! operation in ggml's order (never fused), which is what makes the results bit-exact.

use crate::dtype::DType;
use crate::error::{Error, Result};
use half::f16;

const QK: usize = DType::BLOCK_VALUES;

/// The GGML tensor types polyvtd reads (GGUF stores their numeric ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
}

impl GgmlType {
    /// The type for a GGUF id; Err carries ggml's name of an id polyvtd does not read (or
    /// "unknown").
    pub fn from_id(id: u32) -> std::result::Result<GgmlType, &'static str> {
        Ok(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            _ => return Err(UNSUPPORTED_NAMES.iter().find(|(i, _)| *i == id).map_or("unknown", |(_, n)| n)),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q8_0 => "Q8_0",
        }
    }

    /// The polyvtd dtype holding this type's data unchanged.
    pub fn dtype(self) -> DType {
        match self {
            GgmlType::F32 => DType::Float32,
            GgmlType::F16 => DType::Float16,
            GgmlType::BF16 => DType::BFloat16,
            GgmlType::Q4_0 => DType::Q4_0,
            GgmlType::Q4_1 => DType::Q4_1,
            GgmlType::Q8_0 => DType::Q8_0,
        }
    }

    /// Bytes of `n` values (block types: `n` must be whole blocks, see `check_row`).
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        match self.dtype().block_bytes() {
            Some(block) => (n / QK).checked_mul(block),
            None => n.checked_mul(self.dtype().bits() / 8),
        }
    }
}

/// ggml's names for the ids of types polyvtd does not read, for error messages.
const UNSUPPORTED_NAMES: [(u32, &str); 24] = [
    (6, "Q5_0"), (7, "Q5_1"), (9, "Q8_1"), (10, "Q2_K"), (11, "Q3_K"), (12, "Q4_K"), (13, "Q5_K"),
    (14, "Q6_K"), (15, "Q8_K"), (16, "IQ2_XXS"), (17, "IQ2_XS"), (18, "IQ3_XXS"), (19, "IQ1_S"),
    (20, "IQ4_NL"), (21, "IQ3_S"), (22, "IQ2_S"), (23, "IQ4_XS"), (24, "I8"), (25, "I16"),
    (26, "I32"), (27, "I64"), (28, "F64"), (29, "IQ1_M"), (34, "TQ1_0"),
];

/// A block dtype needs rows of whole blocks (the last dimension of `shape`).
pub fn check_row(dtype: DType, shape: &[usize]) -> Result<()> {
    let row = shape.last().copied().unwrap_or(1);
    if dtype.is_block() && !row.is_multiple_of(QK) {
        return Err(Error::DType(format!(
            "{dtype} stores rows in blocks of {QK} values; shape {shape:?} has rows of {row}"
        )));
    }
    Ok(())
}

/// Quantise `values` (a whole number of blocks) as ggml does.
pub fn quantize(values: &[f32], dtype: DType) -> Vec<u8> {
    assert!(values.len().is_multiple_of(QK), "{dtype}: {} values are not whole blocks", values.len());
    let block_bytes = dtype.block_bytes().expect("a block dtype");
    let mut out = vec![0u8; values.len() / QK * block_bytes];
    for (x, block) in values.chunks_exact(QK).zip(out.chunks_exact_mut(block_bytes)) {
        match dtype {
            DType::Q4_0 => quantize_q4_0(x, block),
            DType::Q4_1 => quantize_q4_1(x, block),
            _ => quantize_q8_0(x, block),
        }
    }
    out
}

/// ggml: d = max / −8 with `max` the value of largest magnitude (the first, on ties), codes
/// trunc(x/d + 8.5) capped at 15.
fn quantize_q4_0(x: &[f32], block: &mut [u8]) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    block[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    pack_nibbles(&mut block[2..], |j| ((x[j] * id + 8.5) as i8).min(15) as u8);
}

/// ggml: d = (max − min)/15, m = min, codes trunc((x − min)/d + 0.5) capped at 15.
fn quantize_q4_1(x: &[f32], block: &mut [u8]) {
    let (min, max) = x.iter().fold((f32::MAX, -f32::MAX), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    block[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    block[2..4].copy_from_slice(&f16::from_f32(min).to_le_bytes());
    pack_nibbles(&mut block[4..], |j| (((x[j] - min) * id + 0.5) as i8).min(15) as u8);
}

/// ggml: d = amax/127, codes roundf(x/d) (half away from zero).
fn quantize_q8_0(x: &[f32], block: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    block[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for (q, &v) in block[2..].iter_mut().zip(x) {
        *q = (v * id).round() as i8 as u8;
    }
}

/// Byte j holds value j in its low nibble and value j + 16 in its high nibble.
fn pack_nibbles(codes: &mut [u8], code: impl Fn(usize) -> u8) {
    for (j, byte) in codes.iter_mut().enumerate() {
        *byte = code(j) | (code(j + QK / 2) << 4);
    }
}

/// Decode values [start, start + out.len()) of a block stream: partial blocks at either end
/// through a scratch block, the whole blocks between them by the SIMD decoder.
pub fn decode_into(dtype: DType, bytes: &[u8], start: usize, out: &mut [f32]) {
    let block_bytes = dtype.block_bytes().expect("a block dtype");
    let block_at = |b: usize| &bytes[b * block_bytes..(b + 1) * block_bytes];
    let mut scratch = [0f32; QK];
    let mut i = 0;
    while i < out.len() {
        let (b, within) = ((start + i) / QK, (start + i) % QK);
        let whole = if within == 0 { (out.len() - i) / QK } else { 0 };
        if whole > 0 {
            let span = whole * QK;
            crate::kernels::blocks::decode_blocks(dtype, &bytes[b * block_bytes..(b + whole) * block_bytes], &mut out[i..i + span]);
            i += span;
        } else {
            let take = (QK - within).min(out.len() - i);
            decode_block(dtype, block_at(b), &mut scratch);
            out[i..i + take].copy_from_slice(&scratch[within..within + take]);
            i += take;
        }
    }
}

/// Decode whole blocks one value at a time (the reference the SIMD decoder must match).
pub fn decode_scalar(dtype: DType, blocks: &[u8], out: &mut [f32]) {
    let block_bytes = dtype.block_bytes().expect("a block dtype");
    for (block, values) in blocks.chunks_exact(block_bytes).zip(out.chunks_exact_mut(QK)) {
        decode_block(dtype, block, values.try_into().expect("whole blocks"));
    }
}

/// The 32 values of one block, exactly as ggml's `dequantize_row_*`.
fn decode_block(dtype: DType, block: &[u8], out: &mut [f32; QK]) {
    let half_at = |p: usize| f16::from_le_bytes([block[p], block[p + 1]]).to_f32();
    let d = half_at(0);
    match dtype {
        DType::Q4_0 => unpack_nibbles(&block[2..], out, |q| (q as i32 - 8) as f32 * d),
        DType::Q4_1 => {
            let m = half_at(2);
            unpack_nibbles(&block[4..], out, |q| q as f32 * d + m)
        }
        _ => {
            for (o, &q) in out.iter_mut().zip(&block[2..]) {
                *o = q as i8 as f32 * d;
            }
        }
    }
}

fn unpack_nibbles(codes: &[u8], out: &mut [f32; QK], value: impl Fn(u8) -> f32) {
    for (j, &byte) in codes.iter().enumerate() {
        out[j] = value(byte & 0x0F);
        out[j + QK / 2] = value(byte >> 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 * 0.37).sin() * 1.7) - 0.2).collect()
    }

    #[test]
    fn round_trip_error_is_within_half_a_step_per_block() {
        let v = sample(96);
        for dtype in DType::BLOCKS {
            let bytes = quantize(&v, dtype);
            assert_eq!(bytes.len(), dtype.packed_bytes(v.len()));
            let mut back = vec![0f32; v.len()];
            decode_into(dtype, &bytes, 0, &mut back);
            for (x, b) in v.chunks(QK).zip(back.chunks(QK)) {
                let range = x.iter().fold(0f32, |m, v| m.max(v.abs())) * 2.0;
                let step = range / if dtype == DType::Q8_0 { 254.0 } else { 15.0 };
                for (a, c) in x.iter().zip(b) {
                    assert!((a - c).abs() <= step * 0.51 + 1e-3, "{dtype}: {a} vs {c}");
                }
            }
        }
    }

    #[test]
    fn partial_ranges_decode_the_same_values() {
        let v = sample(128);
        for dtype in DType::BLOCKS {
            let bytes = quantize(&v, dtype);
            let mut all = vec![0f32; 128];
            decode_into(dtype, &bytes, 0, &mut all);
            for start in [0, 5, 31, 33, 64] {
                let mut part = vec![0f32; 128 - start - 7];
                decode_into(dtype, &bytes, start, &mut part);
                assert_eq!(part, all[start..start + part.len()], "{dtype} from {start}");
            }
        }
    }

    #[test]
    fn q4_0_uses_the_signed_extreme_and_all_zero_blocks_stay_zero() {
        let mut v = vec![0f32; 64];
        v[3] = -4.0;
        v[7] = 2.0;
        let bytes = quantize(&v, DType::Q4_0);
        assert_eq!(f16::from_le_bytes([bytes[0], bytes[1]]).to_f32(), 0.5); // −4 / −8
        let mut back = vec![1f32; 64];
        decode_into(DType::Q4_0, &bytes, 0, &mut back);
        assert_eq!((back[3], back[7], back[40]), (-4.0, 2.0, 0.0));
    }

    #[test]
    fn rows_must_be_whole_blocks() {
        assert!(check_row(DType::Q8_0, &[4, 64]).is_ok());
        let err = check_row(DType::Q4_1, &[4, 48]).unwrap_err().to_string();
        assert!(err.contains("[4, 48]"), "{err}");
        assert!(check_row(DType::Int4, &[3, 5]).is_ok());
    }
}
