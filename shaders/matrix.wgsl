// shaders/matrix.wgsl — one resident weight matrix (src/gpu/resident.rs) read in its own format.
// A template: {{name}}, {{binding}} and {{format}} are filled in per matrix, so one kernel may
// read several matrices. Rows are whole 32-value blocks; a row's block b starts at block index
// row · blocks_per_row + b. Formats: 0 f32, 1 f16, 2 bf16 (32 values in 32 or 16 words),
// 3 Q4_0 (5 words: d, then 16 bytes of nibbles), 4 Q4_1 (5 words: d | m << 16, nibbles),
// 5 Q8_0 (9 words: d, then 32 signed bytes), 6 codes of {{bits}} ≤ 8 bits (words 0..2^bits hold
// the value of every code, exactly the CPU's, then the codes packed LSB-first). GGML's nibble
// order: byte j holds values j and j + 16. Reads: `_at` one value, `_slice` eight of a block;
// shaders/matrix_dot.wgsl adds the block dot product.
// `{{name}}_base` (words, 0 unless set) is where the matrix starts in its buffer: a kernel that
// binds a whole stack of layers (src/gpu/resident.rs) points it at one layer's matrix.

@group(0) @binding({{binding}}) var<storage, read> {{name}}: array<u32>;

const {{name}}_FORMAT: u32 = {{format}}u;
const {{name}}_BITS: u32 = {{bits}}u;
var<private> {{name}}_base: u32 = 0u;

fn {{name}}_words_per_block() -> u32 {
    switch {{name}}_FORMAT {
        case 0u: { return 32u; }
        case 1u, 2u: { return 16u; }
        case 3u, 4u: { return 5u; }
        case 5u: { return 9u; }
        default: { return {{name}}_BITS; }
    }
}

fn {{name}}_half_pair(word: u32, j: u32) -> f32 {
    if ({{name}}_FORMAT == 1u) {
        return unpack2x16float(word >> (16u * j)).x;
    }
    return bitcast<f32>((word >> (16u * j)) << 16u);
}

// Value (row, k): element access for tiles and table lookups.
fn {{name}}_at(row: u32, k: u32, blocks_per_row: u32) -> f32 {
    let base = {{name}}_base + (row * blocks_per_row + k / 32u) * {{name}}_words_per_block();
    let j = k % 32u;
    switch {{name}}_FORMAT {
        case 0u: { return bitcast<f32>({{name}}[base + j]); }
        case 1u, 2u: { return {{name}}_half_pair({{name}}[base + j / 2u], j % 2u); }
        case 3u, 4u: {
            let dm = unpack2x16float({{name}}[base]);
            let byte = ({{name}}[base + 1u + (j % 16u) / 4u] >> (8u * (j % 4u))) & 0xFFu;
            let q = f32((byte >> (4u * (j / 16u))) & 0xFu);
            if ({{name}}_FORMAT == 3u) {
                return (q - 8.0) * dm.x;
            }
            return q * dm.x + dm.y;
        }
        case 5u: {
            let d = unpack2x16float({{name}}[base]).x;
            let q = bitcast<i32>({{name}}[base + 1u + j / 4u] << (24u - 8u * (j % 4u))) >> 24u;
            return f32(q) * d;
        }
        default: {
            return {{name}}_code_value(base, j);
        }
    }
}

// Slice i < 4 of the row's block blk: values 4i..4i+3 (column 0) and 16+4i..16+4i+3 (column 1),
// the eight values one word of Q4 nibbles holds (GGML's byte j holds values j and j + 16). A
// tile decodes a block in four slices: the scale (and Q4_1's minimum) is read once per slice and
// every code word once, instead of twice per value as with `_at`.
fn {{name}}_slice(row: u32, blk: u32, i: u32, blocks_per_row: u32) -> mat2x4<f32> {
    let base = {{name}}_base + (row * blocks_per_row + blk) * {{name}}_words_per_block();
    switch {{name}}_FORMAT {
        case 0u: {
            let lo = base + 4u * i;
            let hi = lo + 16u;
            return mat2x4<f32>(
                bitcast<vec4<f32>>(vec4<u32>({{name}}[lo], {{name}}[lo + 1u], {{name}}[lo + 2u], {{name}}[lo + 3u])),
                bitcast<vec4<f32>>(vec4<u32>({{name}}[hi], {{name}}[hi + 1u], {{name}}[hi + 2u], {{name}}[hi + 3u])),
            );
        }
        case 1u, 2u: {
            let lo = base + 2u * i;
            let hi = lo + 8u;
            return mat2x4<f32>({{name}}_half_quad({{name}}[lo], {{name}}[lo + 1u]), {{name}}_half_quad({{name}}[hi], {{name}}[hi + 1u]));
        }
        case 3u, 4u: {
            let dm = unpack2x16float({{name}}[base]);
            let word = {{name}}[base + 1u + i];
            let shifts = vec4<u32>(0u, 8u, 16u, 24u);
            let q_lo = vec4<f32>((vec4<u32>(word) >> shifts) & vec4<u32>(0xFu));
            let q_hi = vec4<f32>((vec4<u32>(word) >> (shifts + vec4<u32>(4u))) & vec4<u32>(0xFu));
            if ({{name}}_FORMAT == 3u) {
                return mat2x4<f32>((q_lo - 8.0) * dm.x, (q_hi - 8.0) * dm.x);
            }
            return mat2x4<f32>(q_lo * dm.x + dm.y, q_hi * dm.x + dm.y);
        }
        case 5u: {
            let d = unpack2x16float({{name}}[base]).x;
            return mat2x4<f32>({{name}}_signed_bytes({{name}}[base + 1u + i]) * d, {{name}}_signed_bytes({{name}}[base + 5u + i]) * d);
        }
        default: {
            let lo = 4u * i;
            let hi = lo + 16u;
            return mat2x4<f32>(
                vec4<f32>({{name}}_code_value(base, lo), {{name}}_code_value(base, lo + 1u), {{name}}_code_value(base, lo + 2u), {{name}}_code_value(base, lo + 3u)),
                vec4<f32>({{name}}_code_value(base, hi), {{name}}_code_value(base, hi + 1u), {{name}}_code_value(base, hi + 2u), {{name}}_code_value(base, hi + 3u)),
            );
        }
    }
}

// Four consecutive f16 or bf16 values from two words.
fn {{name}}_half_quad(first: u32, second: u32) -> vec4<f32> {
    return vec4<f32>({{name}}_half_pair(first, 0u), {{name}}_half_pair(first, 1u), {{name}}_half_pair(second, 0u), {{name}}_half_pair(second, 1u));
}

// The four signed bytes of a word, lowest first.
fn {{name}}_signed_bytes(word: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(word) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// Table format: the value of code j of the block whose words start at `base` (after the table;
// `base` includes `{{name}}_base`, where the table starts).
fn {{name}}_code_value(base: u32, j: u32) -> f32 {
    let table = 1u << {{name}}_BITS;
    let per_word = 32u / {{name}}_BITS;
    let word = {{name}}[table + base + j / per_word];
    let code = (word >> ((j % per_word) * {{name}}_BITS)) & (table - 1u);
    return bitcast<f32>({{name}}[{{name}}_base + code]);
}

// The first and last words of block `blk` of `row`, loaded only to bring the block into the
// cache before it is needed (the fused step touches its next phase's blocks before it waits at a
// barrier, so the loads after the barrier hit the cache instead of waiting on memory).
// The words are returned as loaded: combining them here would wait for them.
fn {{name}}_touch(row: u32, blk: u32, blocks_per_row: u32) -> vec2<u32> {
    var base = {{name}}_base + (row * blocks_per_row + blk) * {{name}}_words_per_block();
    if ({{name}}_FORMAT >= 6u) {
        base += 1u << {{name}}_BITS;
    }
    return vec2<u32>({{name}}[base], {{name}}[base + {{name}}_words_per_block() - 1u]);
}
