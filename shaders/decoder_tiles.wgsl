// shaders/decoder_tiles.wgsl — a decoder's many-row products Y = X·Wᵀ (prefill): register-blocked
// tiles, each of WG_X × WG_Y threads computing 4 × 4 outputs, X and W staged through workgroup
// memory TK columns of K at a time, W decoded from its resident format while staging
// (shaders/matrix.wgsl as a, b, c). The fused epilogue (MODE) is as in decoder_matvec.wgsl:
// 0 store (+ bias), 1 add into Y, 2 SwiGLU silu(X·aᵀ)·(X·bᵀ), 3 [X·aᵀ | X·bᵀ | X·cᵀ] + bias.
// With NORM each row of X is RMS-normalised (gain γ) on the way: RMSNorm scales a row, so
// (x·r⊙γ)·Wᵀ = r·(x·(γ⊙W)ᵀ); γ is folded into the staged W tile, each thread sums the squares of
// its rows from the staged X tile as it multiplies, and the epilogue applies r = (Σx²/K + ε)^−½.
// Staging loops run a constant number of times (unrolled: their loads are issued together).
// Prepended: WG_X, WG_Y, RM = RN = 4, TK, K, MODE, HAS_BIAS, NORM. M (rows of X) is `step.count`;
// workgroups past it return at once.

struct Params {
    n: u32,
    a_rows: u32,
    b_rows: u32,
    epsilon: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gain: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

const BM: u32 = WG_Y * RM;
const BN: u32 = WG_X * RN;
const THREADS: u32 = WG_X * WG_Y;
const BLOCKS: u32 = K / 32u;
const X_LOADS: u32 = (TK * BM + THREADS - 1u) / THREADS;
const W_LOADS: u32 = (TK * BN + THREADS - 1u) / THREADS;

var<workgroup> xt: array<f32, TK * BM>;
var<workgroup> wt: array<f32, TK * BN>;
var<workgroup> wt_b: array<f32, TK * BN>;

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

// W[n, k] of the output column n: for MODE 3 the columns run over a's, b's, then c's rows.
fn weight(n: u32, k: u32) -> f32 {
    if (MODE == 3u) {
        if (n < p.a_rows) {
            return a_at(n, k, BLOCKS);
        } else if (n < p.a_rows + p.b_rows) {
            return b_at(n - p.a_rows, k, BLOCKS);
        }
        return c_at(n - p.a_rows - p.b_rows, k, BLOCKS);
    }
    return a_at(n, k, BLOCKS);
}

// The epilogue for one row m of a thread's outputs: columns n0, n0 + WG_X, … (the vector's lanes).
fn store_row(m: u32, n0: u32, acc: vec4<f32>, acc_b: vec4<f32>, squares: f32, m_total: u32) {
    if (m >= m_total) {
        return;
    }
    var r = 1.0;
    if (NORM == 1u) {
        r = 1.0 / sqrt(squares / f32(K) + p.epsilon);
    }
    for (var j = 0u; j < 4u; j++) {
        let n = n0 + j * WG_X;
        if (n < p.n) {
            let at = m * p.n + n;
            let v = acc[j] * r;
            switch MODE {
                case 1u: {
                    var out = v;
                    if (HAS_BIAS == 1u) {
                        out += bias[n];
                    }
                    y[at] += out;
                }
                case 2u: {
                    y[at] = silu(v) * (acc_b[j] * r);
                }
                default: {
                    var out = v;
                    if (HAS_BIAS == 1u) {
                        out += bias[n];
                    }
                    y[at] = out;
                }
            }
        }
    }
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) thread: u32,
) {
    let m_total = step[1];
    let m0 = group.y * BM;
    let n0 = group.x * BN;
    if (m0 >= m_total) {
        return;
    }
    // 4 × 4 outputs per thread in vec4 registers (private arrays indexed in loops can end up in
    // local memory): row i of the thread's block is acc[i], its columns the vector's lanes.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var gate0 = vec4<f32>(0.0);
    var gate1 = vec4<f32>(0.0);
    var gate2 = vec4<f32>(0.0);
    var gate3 = vec4<f32>(0.0);
    var squares = vec4<f32>(0.0);

    for (var k0 = 0u; k0 < K; k0 += TK) {
        // Consecutive threads take consecutive k of one row: coalesced global reads.
        for (var i = 0u; i < X_LOADS; i++) {
            let l = thread + i * THREADS;
            let m = m0 + l / TK;
            let k = k0 + l % TK;
            var v = 0.0;
            if (l < TK * BM && m < m_total && k < K) {
                v = x[m * K + k];
            }
            if (l < TK * BM) {
                xt[(l % TK) * BM + l / TK] = v;
            }
        }
        for (var i = 0u; i < W_LOADS; i++) {
            let l = thread + i * THREADS;
            let n = n0 + l / TK;
            let k = k0 + l % TK;
            var v = 0.0;
            var v_b = 0.0;
            if (l < TK * BN && n < p.n && k < K) {
                v = weight(n, k);
                if (MODE == 2u) {
                    v_b = b_at(n, k, BLOCKS);
                }
                if (NORM == 1u) {
                    let g = gain[k];
                    v *= g;
                    v_b *= g;
                }
            }
            if (l < TK * BN) {
                wt[(l % TK) * BN + l / TK] = v;
                wt_b[(l % TK) * BN + l / TK] = v_b;
            }
        }
        workgroupBarrier();
        for (var k = 0u; k < TK; k++) {
            let xr = k * BM + local.y;
            let a = vec4<f32>(xt[xr], xt[xr + WG_Y], xt[xr + 2u * WG_Y], xt[xr + 3u * WG_Y]);
            squares += a * a;
            let wr = k * BN + local.x;
            let w = vec4<f32>(wt[wr], wt[wr + WG_X], wt[wr + 2u * WG_X], wt[wr + 3u * WG_X]);
            acc0 += a.x * w;
            acc1 += a.y * w;
            acc2 += a.z * w;
            acc3 += a.w * w;
            if (MODE == 2u) {
                let u = vec4<f32>(wt_b[wr], wt_b[wr + WG_X], wt_b[wr + 2u * WG_X], wt_b[wr + 3u * WG_X]);
                gate0 += a.x * u;
                gate1 += a.y * u;
                gate2 += a.z * u;
                gate3 += a.w * u;
            }
        }
        workgroupBarrier();
    }

    store_row(m0 + local.y, n0 + local.x, acc0, gate0, squares.x, m_total);
    store_row(m0 + local.y + WG_Y, n0 + local.x, acc1, gate1, squares.y, m_total);
    store_row(m0 + local.y + 2u * WG_Y, n0 + local.x, acc2, gate2, squares.z, m_total);
    store_row(m0 + local.y + 3u * WG_Y, n0 + local.x, acc3, gate3, squares.w, m_total);
}
