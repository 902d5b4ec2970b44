// shaders/weights.wgsl — the loader of one weight tensor, decoded in the shader from the buffer
// src/gpu/weights.rs uploads. A template: {{name}} and {{binding}} are filled in per tensor, so a
// kernel may read several tensors, each with `load_{{name}}(flat index) -> f32`.
// Buffer layout (u32 words): 0 kind, 1 bits, 2 scale (f32 bits), 3 zero point (f32 bits),
// 4 offset of the data in words, 5..7 unused; kind TABLE: words 8.. hold the value of every code;
// then the data: f32 values, codes packed LSB-first (rows may start mid-word), or GGML blocks.
// Kinds: 0 f32, 1 table (codes of ≤ 8 bits), 2 signed 16-bit × scale, 3 (unsigned 16-bit − zero
// point) × scale, 4 IEEE half, 5 bfloat16, 6 Q4_0, 7 Q4_1, 8 Q8_0 (GGML's bytes as stored).

@group(0) @binding({{binding}}) var<storage, read> {{name}}_words: array<u32>;

fn {{name}}_byte(b: u32) -> u32 {
    return ({{name}}_words[{{name}}_words[4] + b / 4u] >> ((b % 4u) * 8u)) & 0xFFu;
}

fn {{name}}_half(b: u32) -> f32 {
    return unpack2x16float({{name}}_byte(b) | ({{name}}_byte(b + 1u) << 8u)).x;
}

fn {{name}}_code16(e: u32) -> u32 {
    return ({{name}}_words[{{name}}_words[4] + e / 2u] >> ((e % 2u) * 16u)) & 0xFFFFu;
}

fn load_{{name}}(e: u32) -> f32 {
    let data = {{name}}_words[4];
    let scale = bitcast<f32>({{name}}_words[2]);
    switch {{name}}_words[0] {
        case 0u: {
            return bitcast<f32>({{name}}_words[data + e]);
        }
        case 1u: {
            let bits = {{name}}_words[1];
            let per_word = 32u / bits;
            let code = ({{name}}_words[data + e / per_word] >> ((e % per_word) * bits)) & ((1u << bits) - 1u);
            return bitcast<f32>({{name}}_words[8u + code]);
        }
        case 2u: {
            return f32(bitcast<i32>({{name}}_code16(e) << 16u) >> 16u) * scale;
        }
        case 3u: {
            return (f32({{name}}_code16(e)) - bitcast<f32>({{name}}_words[3])) * scale;
        }
        case 4u: {
            return unpack2x16float({{name}}_code16(e)).x;
        }
        case 5u: {
            return bitcast<f32>({{name}}_code16(e) << 16u);
        }
        case 6u: {
            let base = (e / 32u) * 18u;
            let j = e % 32u;
            let q = ({{name}}_byte(base + 2u + j % 16u) >> (4u * (j / 16u))) & 0xFu;
            return (f32(q) - 8.0) * {{name}}_half(base);
        }
        case 7u: {
            let base = (e / 32u) * 20u;
            let j = e % 32u;
            let q = ({{name}}_byte(base + 4u + j % 16u) >> (4u * (j / 16u))) & 0xFu;
            return f32(q) * {{name}}_half(base) + {{name}}_half(base + 2u);
        }
        default: {
            let base = (e / 32u) * 34u;
            let q = bitcast<i32>({{name}}_byte(base + 2u + e % 32u) << 24u) >> 24u;
            return f32(q) * {{name}}_half(base);
        }
    }
}
