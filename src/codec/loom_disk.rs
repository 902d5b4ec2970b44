//! The reference's on-disk native packing (numerics.md §5): the byte blobs its JSON and `.entity`
//! checkpoints carry. Multi-byte codes little-endian; sub-byte codes MSB-first (element 2k in the
//! high nibble; element 4k+j at shift 6−2j; binary element 8k+j at bit 7−j) — the opposite of
//! our in-memory LSB-first order (quirk 5), so blobs are re-ordered on the way in and out.

use super::{Codec, Packed};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Encode a packed tensor's codes as the reference writes them (block dtypes, which the reference
/// lacks: their GGML blocks as they are).
pub fn encode(packed: &Packed) -> Vec<u8> {
    let bits = packed.dtype.bits();
    if bits >= 8 || packed.dtype.is_block() {
        return packed.bytes[..packed.dtype.packed_bytes(packed.n)].to_vec();
    }
    let per_byte = 8 / bits;
    let mut out = vec![0u8; packed.n.div_ceil(per_byte)];
    for i in 0..packed.n {
        let code = packed.code(i) as u8;
        let shift = 8 - bits * (i % per_byte + 1);
        out[i / per_byte] |= code << shift;
    }
    out
}

/// Decode a reference blob of `n` elements into a packed tensor with the given scale. Padding
/// elements the reference would materialise (quirk 8) are dropped: `n` is the tensor length.
pub fn decode(dtype: DType, blob: &[u8], n: usize, scale: f32) -> Result<Packed> {
    decode_with(dtype, Codec::Loom, blob, n, scale, 0.0)
}

/// `decode` for codes of either code book (polyvtd's checkpoints use the same on-disk order for
/// standard codes, with the unsigned types' zero point).
pub fn decode_with(dtype: DType, codec: Codec, blob: &[u8], n: usize, scale: f32, zero_point: f64) -> Result<Packed> {
    let bits = dtype.bits();
    let need = dtype.packed_bytes(n);
    if blob.len() < need {
        return Err(Error::Value(format!(
            "{dtype} blob holds {} bytes, {n} elements need {need}",
            blob.len()
        )));
    }
    if dtype.is_block() {
        return Packed::from_bytes(dtype, codec, n, blob[..need].to_vec());
    }
    let per_byte = 8 / bits.min(8);
    let codes = (0..n).map(|i| {
        if bits >= 8 {
            super::bits::read(blob, bits, i)
        } else {
            let shift = 8 - bits * (i % per_byte + 1);
            ((blob[i / per_byte] >> shift) as u64) & ((1u64 << bits) - 1)
        }
    });
    Ok(Packed::from_codes(dtype, codec, codes.collect::<Vec<_>>().into_iter(), scale, zero_point))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_byte_orders_follow_the_reference() {
        let int4 = Packed::from_codes(DType::Int4, Codec::Loom, [1u64, 0xF, 7].into_iter(), 1.0, 0.0);
        assert_eq!(encode(&int4), vec![0x1F, 0x70]);
        let tern = Packed::from_codes(DType::Ternary, Codec::Loom, [1u64, 3, 0, 1, 3].into_iter(), 1.0, 0.0);
        assert_eq!(encode(&tern), vec![0b01_11_00_01, 0b11_00_00_00]);
        let bin = Packed::from_codes(DType::Binary, Codec::Loom, [1u64, 0, 1].into_iter(), 1.0, 0.0);
        assert_eq!(encode(&bin), vec![0b1010_0000]);
        for p in [int4, tern, bin] {
            let back = decode(p.dtype, &encode(&p), p.n, 1.0).unwrap();
            assert_eq!(back.bytes, p.bytes);
        }
    }
}
