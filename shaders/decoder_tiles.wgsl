// shaders/decoder_tiles.wgsl — a decoder's many-row products Y = X·Wᵀ (prefill), split along K:
// workgroup (x, y, z) computes output column tile x, rows 64·y.. over the 32-value blocks
// z·BLOCKS_PER_SPLIT.. (BLOCKS_PER_SPLIT of them, the last split what is left), thread (x, y) of
// its 16 × 16 the 4 × 4 outputs of rows 4y.., columns 4x.. in vec4 registers. A k-step is one
// whole block: X (64 rows × 32) and W (64 columns × 32) are staged in workgroup memory (16 KiB:
// WebGPU's default), each thread loading two vec4s of X and decoding one slice (8 values) of one
// column's block from its resident format (shaders/matrix.wgsl as a, b, c); each k then costs a
// thread two vec4 reads of workgroup memory for its 16 multiply-adds. With SPLITS = 1 the outputs go through the epilogue
// (decoder_epilogue.wgsl) at once; otherwise they are written to `partials` [split][row][columns]
// and decoder_tiles_reduce.wgsl sums the splits.
// Columns of a tile: MODE 3 runs over a's, b's, then c's rows; MODE 2 (SwiGLU) takes 32 rows of a
// and the same 32 of b, thread x's columns being a's rows 2x, 2x + 1 and b's same two, so a thread
// holds both factors of its outputs.
// With NORM each row of X is RMS-normalised (gain γ) on the way: (x·r⊙γ)·Wᵀ = r·(x·(γ⊙W)ᵀ), so γ
// multiplies the staged W, each thread sums the squares of the X values it stages, the four
// threads staging a row add theirs at the end, and r applies in the epilogue (a split's partial
// squares go after the partial sums, written by column tile 0).
// Prepended: K, MODE, HAS_BIAS, NORM, SPLITS, BLOCKS_PER_SPLIT. M (rows of X) is `step.count`;
// workgroups past it return at once.

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> gain: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> step: array<u32>;
@group(0) @binding(13) var<storage, read_write> partials: array<f32>;

const BM: u32 = 64u;
const BN: u32 = 64u;
const TK: u32 = 32u;
const BLOCKS: u32 = K / 32u;
const ROW_VEC4S: u32 = K / 4u;

// Transposed tiles, [k][rows 4r..4r + 3] and [k][columns 4c..4c + 3]: a thread's four rows
// (columns) are one vector.
var<workgroup> xt: array<vec4<f32>, TK * BM / 4u>;
var<workgroup> wt: array<vec4<f32>, TK * BN / 4u>;

// Slice i (shaders/matrix.wgsl) of block blk of column c of column tile `tile`; zeros past W.
fn weight_slice(tile: u32, c: u32, blk: u32, i: u32) -> mat2x4<f32> {
    let zero = mat2x4<f32>(vec4<f32>(0.0), vec4<f32>(0.0));
    if (MODE == 2u) {
        let row = tile * 32u + 2u * (c / 4u) + c % 2u;
        if (row >= p.a_rows) {
            return zero;
        }
        if (c % 4u < 2u) {
            return a_slice(row, blk, i, BLOCKS);
        }
        return b_slice(row, blk, i, BLOCKS);
    }
    let n = tile * BN + c;
    if (n >= p.n) {
        return zero;
    }
    if (MODE == 3u) {
        if (n < p.a_rows) {
            return a_slice(n, blk, i, BLOCKS);
        } else if (n < p.a_rows + p.b_rows) {
            return b_slice(n - p.a_rows, blk, i, BLOCKS);
        }
        return c_slice(n - p.a_rows - p.b_rows, blk, i, BLOCKS);
    }
    return a_slice(n, blk, i, BLOCKS);
}

// Row m of a thread's outputs, its lanes the tile's columns 4·lx + j (MODE 2: a's rows 2·lx,
// 2·lx + 1, then b's same rows), and the squares of the row's X over this split's K.
fn emit(tile: u32, split: u32, lx: u32, m: u32, acc: vec4<f32>, squares: f32) {
    if (SPLITS == 1u) {
        let r = norm_scale(squares);
        if (MODE == 2u) {
            let n = tile * 32u + 2u * lx;
            if (n < p.n) {
                finish(m, n, acc.x, acc.z, r);
            }
            if (n + 1u < p.n) {
                finish(m, n + 1u, acc.y, acc.w, r);
            }
        } else {
            for (var j = 0u; j < 4u; j++) {
                let n = tile * BN + 4u * lx + j;
                if (n < p.n) {
                    finish(m, n, acc[j], 0.0, r);
                }
            }
        }
        return;
    }
    let row = (split * p.rows_cap + m) * p.columns;
    if (MODE == 2u) {
        let n = tile * 32u + 2u * lx;
        if (n < p.n) {
            partials[row + n] = acc.x;
            partials[row + p.n + n] = acc.z;
        }
        if (n + 1u < p.n) {
            partials[row + n + 1u] = acc.y;
            partials[row + p.n + n + 1u] = acc.w;
        }
    } else {
        for (var j = 0u; j < 4u; j++) {
            let n = tile * BN + 4u * lx + j;
            if (n < p.n) {
                partials[row + n] = acc[j];
            }
        }
    }
    if (NORM == 1u && tile == 0u && lx == 0u) {
        partials[SPLITS * p.rows_cap * p.columns + split * p.rows_cap + m] = squares;
    }
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) thread: u32,
) {
    let m_total = step[1];
    let m0 = group.y * BM;
    if (m0 >= m_total) {
        return;
    }
    // 4 × 4 outputs per thread in vec4 registers (private arrays indexed in loops can end up in
    // local memory): row 4·y + i of the tile is acc_i, its columns 4·x.. the vector's lanes.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    // With NORM: Σx² of the values this thread staged (row thread % 64, a quarter of each block).
    var staged_squares = 0.0;
    // Staging roles. X: row thread % 64, values 8·(thread / 64).. of the block (consecutive threads
    // store consecutive rows: no bank conflicts). W: column thread / 4, slice thread % 4 (a
    // column's four threads read its block's words together).
    let xm = thread % BM;
    let xk = 8u * (thread / BM);
    let wc = thread / 4u;
    let wi = thread % 4u;

    // A constant count of k-steps (unrolled); the last split skips the blocks past K.
    for (var s = 0u; s < BLOCKS_PER_SPLIT; s++) {
        let blk = group.z * BLOCKS_PER_SPLIT + s;
        if (blk < BLOCKS) {
            var x_lo = vec4<f32>(0.0);
            var x_hi = vec4<f32>(0.0);
            if (m0 + xm < m_total) {
                let at = (m0 + xm) * ROW_VEC4S + blk * 8u + xk / 4u;
                x_lo = x[at];
                x_hi = x[at + 1u];
            }
            if (NORM == 1u) {
                staged_squares += dot(x_lo, x_lo) + dot(x_hi, x_hi);
            }
            var w = weight_slice(group.x, wc, blk, wi);
            if (NORM == 1u) {
                w = mat2x4<f32>(w[0] * gain[blk * 8u + wi], w[1] * gain[blk * 8u + 4u + wi]);
            }
            for (var e = 0u; e < 4u; e++) {
                xt[(xk + e) * 16u + xm / 4u][xm % 4u] = x_lo[e];
                xt[(xk + 4u + e) * 16u + xm / 4u][xm % 4u] = x_hi[e];
                wt[(4u * wi + e) * 16u + wc / 4u][wc % 4u] = w[0][e];
                wt[(16u + 4u * wi + e) * 16u + wc / 4u][wc % 4u] = w[1][e];
            }
            workgroupBarrier();
            for (var k = 0u; k < TK; k++) {
                let a = xt[k * 16u + local.y];
                let b = wt[k * 16u + local.x];
                acc0 += a.x * b;
                acc1 += a.y * b;
                acc2 += a.z * b;
                acc3 += a.w * b;
            }
            workgroupBarrier();
        }
    }

    // The squares of rows 4·y.. (lanes): the four quarters staged by threads r, r + 64, r + 128 and
    // r + 192, gathered through xt (free after the last k-step's barrier), added in that order.
    var squares = vec4<f32>(0.0);
    if (NORM == 1u) {
        xt[thread / 4u][thread % 4u] = staged_squares;
        workgroupBarrier();
        squares = xt[local.y] + xt[local.y + 16u] + xt[local.y + 32u] + xt[local.y + 48u];
    }
    let rows = vec4<u32>(0u, 1u, 2u, 3u) + (m0 + 4u * local.y);
    if (rows.x < m_total) {
        emit(group.x, group.z, local.x, rows.x, acc0, squares.x);
    }
    if (rows.y < m_total) {
        emit(group.x, group.z, local.x, rows.y, acc1, squares.y);
    }
    if (rows.z < m_total) {
        emit(group.x, group.z, local.x, rows.z, acc2, squares.z);
    }
    if (rows.w < m_total) {
        emit(group.x, group.z, local.x, rows.w, acc3, squares.w);
    }
}
