// shaders/matrix_dot.wgsl — the block dot product of a matrix from shaders/matrix.wgsl (same
// template parameters), for kernels that stage the input vector in workgroup memory: they define
// `xs_at(i)`, the vector's element i.

// Σ_j W[row, 32·blk + j] · xs_at(x0 + 32·blk + j) · xs_at(x0 + 32·blk + j) over one block.
fn {{name}}_block_dot(row: u32, blk: u32, blocks_per_row: u32, x0: u32) -> f32 {
    let base = {{name}}_base + (row * blocks_per_row + blk) * {{name}}_words_per_block();
    let xb = x0 + blk * 32u;
    var s = 0.0;
    switch {{name}}_FORMAT {
        case 0u: {
            for (var j = 0u; j < 32u; j++) {
                s += bitcast<f32>({{name}}[base + j]) * xs_at(xb + j);
            }
            return s;
        }
        case 1u, 2u: {
            for (var j = 0u; j < 16u; j++) {
                let word = {{name}}[base + j];
                s += {{name}}_half_pair(word, 0u) * xs_at(xb + 2u * j) + {{name}}_half_pair(word, 1u) * xs_at(xb + 2u * j + 1u);
            }
            return s;
        }
        case 3u, 4u: {
            let dm = unpack2x16float({{name}}[base]);
            var sx = 0.0;
            for (var i = 0u; i < 4u; i++) {
                let word = {{name}}[base + 1u + i];
                for (var b = 0u; b < 4u; b++) {
                    let byte = (word >> (8u * b)) & 0xFFu;
                    let j = xb + 4u * i + b;
                    let lo = xs_at(j);
                    let hi = xs_at(j + 16u);
                    s += f32(byte & 0xFu) * lo + f32(byte >> 4u) * hi;
                    sx += lo + hi;
                }
            }
            // Q4_0 codes are q − 8, Q4_1 values q·d + m: both fold into d·Σq·x + c·Σx.
            if ({{name}}_FORMAT == 3u) {
                return dm.x * (s - 8.0 * sx);
            }
            return dm.x * s + dm.y * sx;
        }
        case 5u: {
            let d = unpack2x16float({{name}}[base]).x;
            for (var i = 0u; i < 8u; i++) {
                let word = {{name}}[base + 1u + i];
                for (var b = 0u; b < 4u; b++) {
                    s += f32(bitcast<i32>(word << (24u - 8u * b)) >> 24u) * xs_at(xb + 4u * i + b);
                }
            }
            return d * s;
        }
        default: {
            for (var j = 0u; j < 32u; j++) {
                s += {{name}}_code_value(base, j) * xs_at(xb + j);
            }
            return s;
        }
    }
}
