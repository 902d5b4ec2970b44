// shaders/matrix.wgsl — one resident weight matrix (src/gpu/resident.rs) read in its own format.
// A template: {{name}}, {{binding}} and {{format}} are filled in per matrix, so one kernel may
// read several matrices. Rows are whole 32-value blocks; a row's block b starts at block index
// row · blocks_per_row + b. Formats: 0 f32, 1 f16, 2 bf16 (32 values in 32 or 16 words),
// 3 Q4_0 (5 words: d, then 16 bytes of nibbles), 4 Q4_1 (5 words: d | m << 16, nibbles),
// 5 Q8_0 (9 words: d, then 32 signed bytes), 6 codes of {{bits}} ≤ 8 bits (words 0..2^bits hold
// the value of every code, exactly the CPU's, then the codes packed LSB-first). GGML's nibble
// order: byte j holds values j and j + 16. shaders/matrix_dot.wgsl adds the block dot product.
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
