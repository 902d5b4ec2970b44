// shaders/matrix_dot.wgsl — the block dot product of a matrix from shaders/matrix.wgsl (same
// template parameters), for kernels that stage the input vector in workgroup memory: they define
// `xs4_at(i)`, the vector's elements i … i + 3 (i a multiple of 4).

// Σ_j W[row, 32·blk + j] · x[x0 + 32·blk + j] over one block, four values at a time: the staged
// x is read as vec4s (xs4_at(i), i a multiple of 4) and the weights decoded a word at a time, so a
// block costs a few dozen vector operations instead of 32 scalar rounds of index arithmetic.
fn {{name}}_block_dot(row: u32, blk: u32, blocks_per_row: u32, x0: u32) -> f32 {
    let base = {{name}}_base + (row * blocks_per_row + blk) * {{name}}_words_per_block();
    let xb = x0 + blk * 32u;
    var s = vec4<f32>(0.0);
    switch {{name}}_FORMAT {
        case 0u: {
            for (var i = 0u; i < 8u; i++) {
                let w = base + 4u * i;
                s += bitcast<vec4<f32>>(vec4<u32>({{name}}[w], {{name}}[w + 1u], {{name}}[w + 2u], {{name}}[w + 3u])) * xs4_at(xb + 4u * i);
            }
        }
        case 1u, 2u: {
            for (var i = 0u; i < 8u; i++) {
                s += {{name}}_half_quad({{name}}[base + 2u * i], {{name}}[base + 2u * i + 1u]) * xs4_at(xb + 4u * i);
            }
        }
        case 3u, 4u: {
            let dm = unpack2x16float({{name}}[base]);
            let shifts = vec4<u32>(0u, 8u, 16u, 24u);
            var sx = vec4<f32>(0.0);
            for (var i = 0u; i < 4u; i++) {
                let word = vec4<u32>({{name}}[base + 1u + i]);
                let lo = xs4_at(xb + 4u * i);
                let hi = xs4_at(xb + 16u + 4u * i);
                s += vec4<f32>((word >> shifts) & vec4<u32>(0xFu)) * lo + vec4<f32>((word >> (shifts + vec4<u32>(4u))) & vec4<u32>(0xFu)) * hi;
                sx += lo + hi;
            }
            // Q4_0 codes are q − 8, Q4_1 values q·d + m: both fold into d·Σq·x + c·Σx.
            let q = dot(s, vec4<f32>(1.0));
            let total = dot(sx, vec4<f32>(1.0));
            if ({{name}}_FORMAT == 3u) {
                return dm.x * (q - 8.0 * total);
            }
            return dm.x * q + dm.y * total;
        }
        case 5u: {
            let d = unpack2x16float({{name}}[base]).x;
            for (var i = 0u; i < 8u; i++) {
                s += {{name}}_signed_bytes({{name}}[base + 1u + i]) * xs4_at(xb + 4u * i);
            }
            return d * dot(s, vec4<f32>(1.0));
        }
        default: {
            for (var i = 0u; i < 8u; i++) {
                let j = 4u * i;
                let w = vec4<f32>({{name}}_code_value(base, j), {{name}}_code_value(base, j + 1u), {{name}}_code_value(base, j + 2u), {{name}}_code_value(base, j + 3u));
                s += w * xs4_at(xb + j);
            }
        }
    }
    return dot(s, vec4<f32>(1.0));
}
