// shaders/decoder_step.wgsl — a whole greedy decode step in one dispatch: P workgroups stay
// resident and walk the step's phases (embedding; per layer RMSNorm+QKV, attention, merge+O+
// residual, RMSNorm+gate·up·SiLU, down+residual; RMSNorm+head with per-workgroup argmax; the
// final argmax), meeting at a grid barrier between phases instead of ending one dispatch and
// starting the next. Each phase hands its work items ("groups") out round-robin: workgroup w
// takes groups w, w + P, …, so a phase computes exactly what the separate kernels
// (decoder_matvec.wgsl, decoder_attention_decode.wgsl, decoder_argmax.wgsl) compute; the
// attention work item and the merge of its splits are their very functions
// (split_attention.wgsl, merge_splits.wgsl, online_softmax.wgsl, prepended by the host).
//
// The grid barrier: every thread's storage writes are released at device scope
// (storageBarrier), then thread 0 counts its workgroup in and spins on the counter until all P
// have arrived, then acquires. It needs all P workgroups resident at once, which the host
// ensures by choosing P (one per compute unit, or 1 on a CPU adapter); a spin that runs past
// SPIN_LIMIT sets the failure flag and every barrier after it falls through, so a host that
// guessed wrong gets a flag back (and runs the step as separate dispatches) instead of a hang.
//
// Matrices (shaders/matrix.wgsl + matrix_dot.wgsl) are stacks of all layers' matrices; a layer
// is selected by pointing `name_base` at it. Prepended: P, L, D, FF, QW, KVW, HEADS, KVH, HD,
// VOCAB, CAP, KC, S_MAX, TILE, SHM, LANES_D, LANES_QW, LANES_FF, HAS_BIAS, EPS, SCALE, the
// stacks' strides in words (Q_STRIDE, …), the vectors' offsets (ATTN_NORM_AT, …), SPIN_LIMIT,
// and head_row_dot (the head's block dot: its own matrix's or the tied embedding's).

@group(0) @binding(1) var<storage, read> step: array<u32>;
@group(0) @binding(2) var<storage, read_write> tokens: array<u32>;
// [arrivals, failed]
@group(0) @binding(3) var<storage, read_write> grid: array<atomic<u32>>;
// What one workgroup writes and others read within the step is accessed atomically (f32 bits):
// plain storage loads may be served from a compute unit's own cache, which a device-scope
// barrier does not make coherent unless the buffer is (and WGSL has no coherent qualifier).
@group(0) @binding(4) var<storage, read_write> x: array<atomic<u32>>;
@group(0) @binding(5) var<storage, read_write> qkv: array<atomic<u32>>;
@group(0) @binding(6) var<storage, read_write> partial: array<atomic<u32>>;
@group(0) @binding(7) var<storage, read_write> hidden: array<atomic<u32>>;
@group(0) @binding(8) var<storage, read_write> logits: array<f32>;
// Per workgroup: its best logit's bits and index.
@group(0) @binding(9) var<storage, read_write> best: array<atomic<u32>>;
@group(0) @binding(10) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(11) var<storage, read_write> v_cache: array<f32>;
@group(0) @binding(12) var<storage, read> rope: array<vec2<f32>>;
// RMSNorm gains and biases of every layer (offsets prepended).
@group(0) @binding(13) var<storage, read> vectors: array<f32>;

const WG: u32 = 256u;
const QKVW: u32 = QW + 2u * KVW;
const ROW: u32 = HD + 1u;

// The staged input vector (one pad every 32 values against bank conflicts) of a product, or an
// attention tile's keys (TILE × ROW) and values (TILE × HD).
var<workgroup> shm: array<f32, SHM>;
var<workgroup> red: array<f32, WG>;
var<workgroup> red_b: array<f32, WG>;
// Indices of the argmax reduction (a u32 bit-cast to f32 may be flushed as a subnormal).
var<workgroup> red_index: array<u32, WG>;

var<private> lid: u32;
var<private> barriers: u32 = 0u;

fn xs_at(i: u32) -> f32 {
    return shm[i + i / 32u];
}

fn set_xs(i: u32, v: f32) {
    shm[i + i / 32u] = v;
}

fn x_at(i: u32) -> f32 {
    return bitcast<f32>(atomicLoad(&x[i]));
}

fn set_x(i: u32, v: f32) {
    atomicStore(&x[i], bitcast<u32>(v));
}

fn qkv_at(i: u32) -> f32 {
    return bitcast<f32>(atomicLoad(&qkv[i]));
}

fn partial_at(i: u32) -> f32 {
    return bitcast<f32>(atomicLoad(&partial[i]));
}

fn set_partial(i: u32, v: f32) {
    atomicStore(&partial[i], bitcast<u32>(v));
}

fn hidden_at(i: u32) -> f32 {
    return bitcast<f32>(atomicLoad(&hidden[i]));
}

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

fn grid_sync() {
    barriers += 1u;
    storageBarrier();
    workgroupBarrier();
    if (lid == 0u) {
        atomicAdd(&grid[0], 1u);
        let arrived = barriers * P;
        for (var spin = 0u; spin < SPIN_LIMIT; spin++) {
            if (atomicLoad(&grid[0]) >= arrived || atomicLoad(&grid[1]) != 0u) {
                break;
            }
            if (spin + 1u == SPIN_LIMIT) {
                atomicStore(&grid[1], 1u);
            }
        }
    }
    storageBarrier();
    workgroupBarrier();
}

// The sum over the workgroup of each thread's `value`.
fn workgroup_total(value: f32) -> f32 {
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

// (Σ a, Σ b) over each run of `lanes` threads, valid in the run's first thread.
fn lane_totals(a: f32, b: f32, lanes: u32) -> vec2<f32> {
    red[lid] = a;
    red_b[lid] = b;
    workgroupBarrier();
    let lane = lid % lanes;
    for (var stride = lanes / 2u; stride > 0u; stride /= 2u) {
        if (lane < stride) {
            red[lid] += red[lid + stride];
            red_b[lid] += red_b[lid + stride];
        }
        workgroupBarrier();
    }
    let totals = vec2<f32>(red[lid], red_b[lid]);
    workgroupBarrier();
    return totals;
}

// x (D values) RMS-normalised with the gain at vectors[gain_at..] into the staged vector.
fn stage_normalised_x(gain_at: u32) {
    var squares = 0.0;
    for (var e = lid; e < D; e += WG) {
        let v = x_at(e);
        set_xs(e, v);
        squares += v * v;
    }
    let inv = 1.0 / sqrt(workgroup_total(squares) / f32(D) + EPS);
    for (var e = lid; e < D; e += WG) {
        set_xs(e, xs_at(e) * inv * vectors[gain_at + e]);
    }
    workgroupBarrier();
}

fn phase_embedding(wg: u32) {
    let token = tokens[0];
    for (var e = wg * WG + lid; e < D; e += P * WG) {
        set_x(e, emb_at(token, e, D / 32u));
    }
}

fn phase_qkv(l: u32, wg: u32) {
    stage_normalised_x(ATTN_NORM_AT + l * D);
    wq_base = l * Q_STRIDE;
    wk_base = l * K_STRIDE;
    wv_base = l * V_STRIDE;
    let rows_per = WG / LANES_D;
    let lane = lid % LANES_D;
    for (var g = wg; g * rows_per < QKVW; g += P) {
        let row = g * rows_per + lid / LANES_D;
        var acc = 0.0;
        if (row < QKVW) {
            for (var blk = lane; blk < D / 32u; blk += LANES_D) {
                if (row < QW) {
                    acc += wq_block_dot(row, blk, D / 32u, 0u);
                } else if (row < QW + KVW) {
                    acc += wk_block_dot(row - QW, blk, D / 32u, 0u);
                } else {
                    acc += wv_block_dot(row - QW - KVW, blk, D / 32u, 0u);
                }
            }
        }
        let total = lane_totals(acc, 0.0, LANES_D).x;
        if (lane == 0u && row < QKVW) {
            var v = total;
            if (HAS_BIAS == 1u) {
                v += vectors[QKV_BIAS_AT + l * QKVW + row];
            }
            atomicStore(&qkv[row], bitcast<u32>(v));
        }
    }
}

// The attention tile (shaders/split_attention.wgsl) in shm: keys TILE × ROW, then values.
fn set_tile(j: u32, d: u32, k: f32, v: f32) {
    shm[j * ROW + d] = k;
    shm[TILE * ROW + j * HD + d] = v;
}

fn tile_k(j: u32, d: u32) -> f32 {
    return shm[j * ROW + d];
}

fn tile_v(j: u32, d: u32) -> f32 {
    return shm[TILE * ROW + j * HD + d];
}

fn phase_attention(l: u32, wg: u32) {
    let pos = step[0];
    let splits = pos / KC + 1u;
    for (var g = wg; g < HEADS * splits; g += P) {
        attend_split(g / splits, g % splits, pos, HEADS, KVH, CAP, l * KVH * CAP * HD, SCALE, lid);
    }
}

fn phase_o(l: u32, wg: u32) {
    merge_splits(lid, step[0] / KC + 1u);
    workgroupBarrier();
    wo_base = l * O_STRIDE;
    let rows_per = WG / LANES_QW;
    let lane = lid % LANES_QW;
    for (var g = wg; g * rows_per < D; g += P) {
        let row = g * rows_per + lid / LANES_QW;
        var acc = 0.0;
        if (row < D) {
            for (var blk = lane; blk < QW / 32u; blk += LANES_QW) {
                acc += wo_block_dot(row, blk, QW / 32u, 0u);
            }
        }
        let total = lane_totals(acc, 0.0, LANES_QW).x;
        if (lane == 0u && row < D) {
            var v = total;
            if (HAS_BIAS == 1u) {
                v += vectors[O_BIAS_AT + l * D + row];
            }
            set_x(row, x_at(row) + v);
        }
    }
}

fn phase_gate_up(l: u32, wg: u32) {
    stage_normalised_x(FFN_NORM_AT + l * D);
    wgate_base = l * GATE_STRIDE;
    wup_base = l * UP_STRIDE;
    let rows_per = WG / LANES_D;
    let lane = lid % LANES_D;
    for (var g = wg; g * rows_per < FF; g += P) {
        let row = g * rows_per + lid / LANES_D;
        var acc = 0.0;
        var acc_b = 0.0;
        if (row < FF) {
            for (var blk = lane; blk < D / 32u; blk += LANES_D) {
                acc += wgate_block_dot(row, blk, D / 32u, 0u);
                acc_b += wup_block_dot(row, blk, D / 32u, 0u);
            }
        }
        let totals = lane_totals(acc, acc_b, LANES_D);
        if (lane == 0u && row < FF) {
            atomicStore(&hidden[row], bitcast<u32>(silu(totals.x) * totals.y));
        }
    }
}

fn phase_down(l: u32, wg: u32) {
    for (var e = lid; e < FF; e += WG) {
        set_xs(e, hidden_at(e));
    }
    workgroupBarrier();
    wdown_base = l * DOWN_STRIDE;
    let rows_per = WG / LANES_FF;
    let lane = lid % LANES_FF;
    for (var g = wg; g * rows_per < D; g += P) {
        let row = g * rows_per + lid / LANES_FF;
        var acc = 0.0;
        if (row < D) {
            for (var blk = lane; blk < FF / 32u; blk += LANES_FF) {
                acc += wdown_block_dot(row, blk, FF / 32u, 0u);
            }
        }
        let total = lane_totals(acc, 0.0, LANES_FF).x;
        if (lane == 0u && row < D) {
            set_x(row, x_at(row) + total);
        }
    }
}

// Whether candidate (v, i) beats (w, j): larger, or equal with a lower index (NaN never wins).
fn beats(v: f32, i: u32, w: f32, j: u32) -> bool {
    return v > w || (v == w && i < j);
}

// The best (value, index) over the workgroup's threads, valid in thread 0.
fn workgroup_best(value: f32, index: u32) -> vec2<u32> {
    red[lid] = value;
    red_index[lid] = index;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride && beats(red[lid + stride], red_index[lid + stride], red[lid], red_index[lid])) {
            red[lid] = red[lid + stride];
            red_index[lid] = red_index[lid + stride];
        }
        workgroupBarrier();
    }
    let chosen = vec2<u32>(bitcast<u32>(red[0]), red_index[0]);
    workgroupBarrier();
    return chosen;
}

fn phase_head(wg: u32) {
    stage_normalised_x(FINAL_NORM_AT);
    let rows_per = WG / LANES_D;
    let lane = lid % LANES_D;
    var value = -3.4028235e38;
    var index = 0xFFFFFFFFu;
    for (var g = wg; g * rows_per < VOCAB; g += P) {
        let row = g * rows_per + lid / LANES_D;
        var acc = 0.0;
        if (row < VOCAB) {
            for (var blk = lane; blk < D / 32u; blk += LANES_D) {
                acc += head_row_dot(row, blk, D / 32u);
            }
        }
        let total = lane_totals(acc, 0.0, LANES_D).x;
        if (lane == 0u && row < VOCAB) {
            logits[row] = total;
            if (beats(total, row, value, index)) {
                value = total;
                index = row;
            }
        }
    }
    let chosen = workgroup_best(value, index);
    if (lid == 0u) {
        atomicStore(&best[2u * wg], chosen.x);
        atomicStore(&best[2u * wg + 1u], chosen.y);
    }
}

fn phase_argmax() {
    var value = -3.4028235e38;
    var index = 0xFFFFFFFFu;
    for (var w = lid; w < P; w += WG) {
        let v = bitcast<f32>(atomicLoad(&best[2u * w]));
        let i = atomicLoad(&best[2u * w + 1u]);
        if (beats(v, i, value, index)) {
            value = v;
            index = i;
        }
    }
    let chosen = workgroup_best(value, index);
    if (lid == 0u) {
        // All logits NaN: token 0, as decoder_argmax.wgsl.
        tokens[0] = select(chosen.y, 0u, chosen.y == 0xFFFFFFFFu);
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    lid = local;
    let wg = group.x;
    phase_embedding(wg);
    grid_sync();
    for (var l = 0u; l < L; l++) {
        phase_qkv(l, wg);
        grid_sync();
        phase_attention(l, wg);
        grid_sync();
        phase_o(l, wg);
        grid_sync();
        phase_gate_up(l, wg);
        grid_sync();
        phase_down(l, wg);
        grid_sync();
    }
    phase_head(wg);
    grid_sync();
    if (wg == 0u) {
        phase_argmax();
    }
}
