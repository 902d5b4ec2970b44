// shaders/decoder_matvec.wgsl — a decoder's one-row products y = W·x read straight from resident
// matrices (shaders/matrix.wgsl + matrix_dot.wgsl as a, b, c), with the RMSNorm of x fused in
// front and the next operation fused behind (MODE): 0 store (+ bias), 1 add into y (the
// residual), 2 SwiGLU: y = silu(a·x)·(b·x), 3 the concatenated [a; b; c]·x + bias (Q, K, V).
// A bias is added before the residual add too. Prepended: LANES threads share a row (each takes blocks lane, lane + LANES, …), ROWS rows per
// workgroup, K (the row width), NORM (1: x is RMS-normalised with gain γ first), MODE and
// HAS_BIAS.
// x is row `step.count − 1` of its buffer when LAST_ROW (a prefill's last position), else row 0.

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

var<workgroup> xs: array<f32, K>;
var<workgroup> xsum: array<f32, BLOCKS>;
var<workgroup> red: array<f32, WG>;
var<workgroup> red_b: array<f32, WG>;

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

// The sum over the workgroup of each thread's `value`.
fn workgroup_total(lid: u32, value: f32) -> f32 {
    red[lid] = value;
    workgroupBarrier();
    if (lid < 32u) {
        var s = 0.0;
        for (var i = lid; i < WG; i += 32u) {
            s += red[i];
        }
        red_b[lid] = s;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < min(32u, WG); i++) {
        total += red_b[i];
    }
    workgroupBarrier();
    return total;
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
    var squares = 0.0;
    for (var i = lid; i < K; i += WG) {
        let v = x[x0 + i];
        xs[i] = v;
        squares += v * v;
    }
    if (NORM == 1u) {
        let inv = 1.0 / sqrt(workgroup_total(lid, squares) / f32(K) + p.epsilon);
        for (var i = lid; i < K; i += WG) {
            xs[i] = xs[i] * inv * gain[i];
        }
    }
    workgroupBarrier();
    for (var blk = lid; blk < BLOCKS; blk += WG) {
        var s = 0.0;
        for (var j = 0u; j < 32u; j++) {
            s += xs[blk * 32u + j];
        }
        xsum[blk] = s;
    }
    workgroupBarrier();

    let lane = lid % LANES;
    let row = (group.x + group.y * groups.x) * ROWS + lid / LANES;
    var acc = 0.0;
    var acc_b = 0.0;
    if (row < p.rows) {
        for (var blk = lane; blk < BLOCKS; blk += LANES) {
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
    if (lane == 0u && row < p.rows) {
        var total = 0.0;
        var total_b = 0.0;
        for (var i = 0u; i < LANES; i++) {
            total += red[lid + i];
            total_b += red_b[lid + i];
        }
        switch MODE {
            case 1u: {
                var v = total;
                if (HAS_BIAS == 1u) {
                    v += bias[row];
                }
                y[row] += v;
            }
            case 2u: {
                y[row] = silu(total) * total_b;
            }
            default: {
                var v = total;
                if (HAS_BIAS == 1u) {
                    v += bias[row];
                }
                y[row] = v;
            }
        }
    }
}
