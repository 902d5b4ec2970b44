//! Bit packing: element i of a `bits`-wide code stream at bit offset i·bits, LSB-first in
//! little-endian bytes; output padded with zeros to a multiple of 4 bytes (u32 words).

pub fn pack(bits: usize, n: usize, codes: impl Iterator<Item = u64>) -> Vec<u8> {
    let len = (n * bits).div_ceil(8).div_ceil(4) * 4;
    let mut out = vec![0u8; len];
    match bits {
        8 => pack_whole::<1>(&mut out, codes),
        16 => pack_whole::<2>(&mut out, codes),
        32 => pack_whole::<4>(&mut out, codes),
        64 => pack_whole::<8>(&mut out, codes),
        _ => pack_sub_byte(&mut out, bits, codes),
    }
    out
}

/// Codes of `W` whole bytes, little-endian (W known at compile time: one fixed-size copy each).
fn pack_whole<const W: usize>(out: &mut [u8], codes: impl Iterator<Item = u64>) {
    for (chunk, code) in out.chunks_exact_mut(W).zip(codes) {
        chunk.copy_from_slice(&code.to_le_bytes()[..W]);
    }
}

fn pack_sub_byte(out: &mut [u8], bits: usize, codes: impl Iterator<Item = u64>) {
    let mask = (1u64 << bits) - 1;
    for (i, code) in codes.enumerate() {
        let bit = i * bits;
        out[bit / 8] |= ((code & mask) as u8) << (bit % 8);
    }
}

pub fn read(bytes: &[u8], bits: usize, i: usize) -> u64 {
    if bits >= 8 {
        let width = bits / 8;
        let mut word = [0u8; 8];
        word[..width].copy_from_slice(&bytes[i * width..(i + 1) * width]);
        u64::from_le_bytes(word)
    } else {
        let bit = i * bits;
        ((bytes[bit / 8] >> (bit % 8)) as u64) & ((1u64 << bits) - 1)
    }
}
