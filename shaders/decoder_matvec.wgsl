// shaders/decoder_matvec.wgsl — a decoder's one-row products y = W·x read straight from resident
// matrices (shaders/matrix.wgsl + matrix_dot.wgsl as a, b, c), with what comes before fused in
// front and the next operation fused behind (MODE): 0 store (+ bias), 1 add into y (+ bias: the
// residual), 2 SwiGLU: y = silu(a·x)·(b·x), 3 the concatenated [a; b; c]·x + bias (Q, K, V).
// In front: with COMBINE, x is the split attention's partial softmaxes
// (decoder_attention_decode.wgsl), merged by shaders/merge_splits.wgsl; with NORM, x is RMS-normalised with gain γ.
// LANES (a power of two) threads share a row, each taking blocks lane, lane + LANES, …; ROWS
// rows at a time, REPEAT times per workgroup (amortising the prologue over more rows).
// x is row `step.count − 1` of its buffer when last_row (a prefill's last position), else row 0.
// Loops that load run a constant number of times (guarded inside), so the compiler unrolls them
// and issues their loads together instead of waiting out each one's latency in turn.
// Prepended: LANES, ROWS, REPEAT, K, NORM, MODE, HAS_BIAS, COMBINE, HD, KC, S_MAX.

struct Params {
    rows: u32,
    a_rows: u32,
    b_rows: u32,
    last_row: u32,
    epsilon: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gain: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

const WG: u32 = LANES * ROWS;
const BLOCKS: u32 = K / 32u;
const X_ITERS: u32 = (K + WG - 1u) / WG;
const BLOCK_ITERS: u32 = (BLOCKS + LANES - 1u) / LANES;
const HEADS: u32 = K / HD;

// x as vec4s with one pad vec4 after every 32 values: lanes reading the same offset of
// different blocks hit different banks, and a block's values stay 16-byte aligned.
var<workgroup> xs: array<vec4<f32>, K / 4u + K / 32u>;
var<workgroup> red: array<f32, WG>;
var<workgroup> red_b: array<f32, WG>;

fn xs_at(i: u32) -> f32 {
    return xs[i / 4u + i / 32u][i % 4u];
}

fn xs4_at(i: u32) -> vec4<f32> {
    return xs[i / 4u + i / 32u];
}

fn set_xs(i: u32, v: f32) {
    xs[i / 4u + i / 32u][i % 4u] = v;
}

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

// The sum over the workgroup of each thread's `value` (a tree in `red`).
fn workgroup_total(lid: u32, value: f32) -> f32 {
    red[lid] = value;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            red[lid] += red[lid + stride];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

// The split attention's partials, for merge_splits (shaders/merge_splits.wgsl): x holds them,
// all written by the attention's dispatch before this one starts.
fn partial_bits(i: u32) -> u32 {
    return bitcast<u32>(x[i]);
}

fn wait_again(unwritten: bool, spin: u32) -> bool {
    return false;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    var x0 = 0u;
    if (p.last_row == 1u) {
        x0 = (step[1] - 1u) * K;
    }
    if (COMBINE == 1u) {
        merge_splits(lid, (step[0] + KC) / KC);
    } else {
        var squares = 0.0;
        for (var i = 0u; i < X_ITERS; i++) {
            let e = lid + i * WG;
            if (e < K) {
                let v = x[x0 + e];
                set_xs(e, v);
                squares += v * v;
            }
        }
        if (NORM == 1u) {
            let inv = 1.0 / sqrt(workgroup_total(lid, squares) / f32(K) + p.epsilon);
            for (var i = 0u; i < X_ITERS; i++) {
                let e = lid + i * WG;
                if (e < K) {
                    set_xs(e, xs_at(e) * inv * gain[e]);
                }
            }
        }
    }
    workgroupBarrier();

    let lane = lid % LANES;
    let first_row = (group.x + group.y * groups.x) * ROWS * REPEAT + lid / LANES;
    for (var r = 0u; r < REPEAT; r++) {
        let row = first_row + r * ROWS;
        var acc = 0.0;
        var acc_b = 0.0;
        for (var i = 0u; i < BLOCK_ITERS; i++) {
            let blk = lane + i * LANES;
            if (row < p.rows && blk < BLOCKS) {
                switch MODE {
                    case 2u: {
                        acc += a_block_dot(row, blk, BLOCKS, 0u);
                        acc_b += b_block_dot(row, blk, BLOCKS, 0u);
                    }
                    case 3u: {
                        if (row < p.a_rows) {
                            acc += a_block_dot(row, blk, BLOCKS, 0u);
                        } else if (row < p.a_rows + p.b_rows) {
                            acc += b_block_dot(row - p.a_rows, blk, BLOCKS, 0u);
                        } else {
                            acc += c_block_dot(row - p.a_rows - p.b_rows, blk, BLOCKS, 0u);
                        }
                    }
                    default: {
                        acc += a_block_dot(row, blk, BLOCKS, 0u);
                    }
                }
            }
        }
        red[lid] = acc;
        red_b[lid] = acc_b;
        workgroupBarrier();
        for (var stride = LANES / 2u; stride > 0u; stride /= 2u) {
            if (lane < stride) {
                red[lid] += red[lid + stride];
                red_b[lid] += red_b[lid + stride];
            }
            workgroupBarrier();
        }
        if (lane == 0u && row < p.rows) {
            let total = red[lid];
            var v = total;
            if (HAS_BIAS == 1u && MODE != 2u) {
                v += bias[row];
            }
            switch MODE {
                case 1u: {
                    y[row] += v;
                }
                case 2u: {
                    y[row] = silu(total) * red_b[lid];
                }
                default: {
                    y[row] = v;
                }
            }
        }
        workgroupBarrier();
    }
}
