// shaders/dense_weights_packed.wgsl — the dense kernel's weight loader for packed codes, read
// straight from the packed bytes as u32 words: element e is the BITS-wide field at bit offset
// e·BITS, LSB-first (so rows may start mid-word). Prepended constants: BITS (1, 2, 4, 8 or 16)
// and DECODE (src/gpu/cache.rs `Decode`): 0 two's complement × scale, 1 (code − zero_point) ×
// scale, 2 binary ±scale, 3 IEEE half, 4 bfloat16.

@group(0) @binding(2) var<storage, read> w: array<u32>;

const PER_WORD: u32 = 32u / BITS;
const MASK: u32 = (1u << BITS) - 1u;

fn load_w(e: u32) -> f32 {
    let code = (w[e / PER_WORD] >> ((e % PER_WORD) * BITS)) & MASK;
    switch DECODE {
        case 0u: {
            return f32(bitcast<i32>(code << (32u - BITS)) >> (32u - BITS)) * params.scale;
        }
        case 1u: {
            return (f32(code) - params.zero_point) * params.scale;
        }
        case 2u: {
            return select(-params.scale, params.scale, code == 1u);
        }
        case 3u: {
            return unpack2x16float(code).x;
        }
        default: {
            return bitcast<f32>(code << 16u);
        }
    }
}
