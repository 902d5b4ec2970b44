// shaders/decoder_step.wgsl — a whole greedy decode step in one dispatch: P workgroups stay
// resident and walk the step's phases (embedding; per layer RMSNorm+QKV, attention, merge+O+
// residual, RMSNorm+gate·up·SiLU, down+residual; RMSNorm+head with per-workgroup argmax; the
// final argmax), meeting at a grid barrier between phases instead of ending one dispatch and
// starting the next. Each phase hands its work items ("groups") out round-robin: workgroup w
// takes groups w, w + P, …; a product's group is WG / lanes rows of `lanes` threads each
// (LANES_* per phase, chosen by the host); the attention work item and the merge of its splits
// are the dispatched kernels' very functions (split_attention.wgsl, merge_splits.wgsl,
// online_softmax.wgsl, prepended by the host), and so is the argmax's reduction
// (argmax_reduce.wgsl).
//
// The grid barrier: every thread's storage writes are released at device scope
// (storageBarrier), then thread 0 counts its workgroup in and spins on the counter until all P
// have arrived, then acquires. Between arriving and waiting, each workgroup touches what its
// first group of the next phase will read from memory (weights, earlier cache rows), so those
// loads overlap the wait. The barrier needs all P workgroups resident at once, which the host
// ensures by choosing P (one per compute unit, or 1 on a CPU adapter); a spin that runs past
// SPIN_LIMIT sets the failure flag and lets every barrier after it through, so a host that
// guessed wrong gets a flag back (and runs the step as separate dispatches) instead of a hang.
//
// Matrices (shaders/matrix.wgsl + matrix_dot.wgsl) are stacks of all layers' matrices; a layer
// is selected by pointing `name_base` at it. Prepended: P, L, D, FF, QW, KVW, HEADS, KVH, HD,
// VOCAB, CAP, KC, S_MAX, TILE, SHM, XS4, LANES_QKV, LANES_O, LANES_GU, LANES_DOWN, LANES_HEAD,
// HAS_BIAS, EPS, SCALE, the stacks' strides in words (Q_STRIDE, …), the vectors' offsets
// (ATTN_NORM_AT, …), SPIN_LIMIT, and head_row_dot / head_row_touch (the head's block dot and
// touch: its own matrix's or the tied embedding's).

@group(0) @binding(1) var<storage, read> step: array<u32>;
@group(0) @binding(2) var<storage, read_write> tokens: array<u32>;
// [arrivals, failed]
@group(0) @binding(3) var<storage, read_write> grid: array<atomic<u32>>;
// What one workgroup writes and others read within the step is accessed atomically (f32 bits).
// Plain loads may be served from a compute unit's own cache, which a device-scope barrier does
// not make coherent unless the buffer is (WGSL has no coherent qualifier), and the compiler may
// move them across the barrier: with plain loads from buffers written once per step, greedy
// tokens still went wrong on the H100, at random.
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

// An attention tile's keys (TILE × ROW) and values (TILE × HD).
var<workgroup> shm: array<f32, SHM>;
// The staged input vector of a product: vec4s with one pad vec4 after every 32 values, so lanes
// reading the same offset of different blocks hit different banks and a block's values stay
// 16-byte aligned.
var<workgroup> xs: array<vec4<f32>, XS4>;
var<workgroup> red: array<f32, WG>;
var<workgroup> red_b: array<f32, WG>;

var<private> lid: u32;
var<private> barriers: u32 = 0u;
// What the touches of the next phase's data loaded: `pending` between a barrier's halves, then
// folded into `touched` (see `touch_*` and the end of main).
var<private> pending: vec4<u32>;
var<private> touched: vec4<u32>;

fn xs4_at(i: u32) -> vec4<f32> {
    return xs[i / 4u + i / 32u];
}

fn set_xs(i: u32, v: f32) {
    xs[i / 4u + i / 32u][i % 4u] = v;
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

// A grid barrier in two halves, so a workgroup can start loading the next phase's data (`touch_*`)
// between arriving and waiting: grid_arrive releases this workgroup's writes and counts it in;
// grid_wait spins until every workgroup has arrived, then acquires.
fn grid_arrive() {
    barriers += 1u;
    storageBarrier();
    workgroupBarrier();
    if (lid == 0u) {
        atomicAdd(&grid[0], 1u);
    }
}

fn grid_wait() {
    if (lid == 0u) {
        let arrived = barriers * P;
        for (var spin = 0u; spin < SPIN_LIMIT; spin++) {
            if (atomicLoad(&grid[0]) >= arrived) {
                break;
            }
            if (spin + 1u == SPIN_LIMIT) {
                // Giving up: the flag for the host, and a count past every later barrier's
                // (one word to poll).
                atomicStore(&grid[1], 1u);
                atomicMax(&grid[0], 0x80000000u);
            }
        }
    }
    storageBarrier();
    workgroupBarrier();
    // Only now is what the touches loaded needed (not before the arrival, which would wait).
    touched ^= pending;
}

fn grid_sync() {
    grid_arrive();
    grid_wait();
}

// The sum over the workgroup of each thread's `value`: 32 partial sums of 8, then every thread
// adds the 32 (two barriers instead of a tree's eight).
fn workgroup_total(value: f32) -> f32 {
    red[lid] = value;
    workgroupBarrier();
    if (lid < 32u) {
        var part = 0.0;
        for (var i = 0u; i < WG / 32u; i++) {
            part += red[lid * (WG / 32u) + i];
        }
        red_b[lid] = part;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < 32u; i++) {
        total += red_b[i];
    }
    workgroupBarrier();
    return total;
}

// The row thread lid works on in group g of a phase whose rows take `lanes` threads each (any
// count ≤ 32, WG / lanes rows a group); past every row for the threads left over.
fn row_of(g: u32, lanes: u32) -> u32 {
    let rows_per = WG / lanes;
    return select(0xFFFFFFFFu, g * rows_per + lid / lanes, lid < rows_per * lanes);
}

// (Σ a, Σ b) over each run of `lanes` threads, valid in the run's first thread: one barrier, then
// the first thread adds the run's values (a tree would take log2(lanes) barriers).
fn lane_totals(a: f32, b: f32, lanes: u32) -> vec2<f32> {
    red[lid] = a;
    red_b[lid] = b;
    workgroupBarrier();
    var totals = vec2<f32>(0.0);
    if (lid % lanes == 0u && lid + lanes <= WG) {
        for (var i = 0u; i < lanes; i++) {
            totals += vec2<f32>(red[lid + i], red_b[lid + i]);
        }
    }
    workgroupBarrier();
    return totals;
}

// x (D values) times the RMSNorm gain at vectors[gain_at..] into the staged vector; returns the
// norm's scale 1/rms(x), which the phase applies to its row totals (the norm scales a whole row,
// so the products need not wait for it).
//
// Here and below, loops run a constant number of times and load unconditionally (indices clamped
// into range, results masked with select): a load under a branch cannot be issued before the
// previous iteration's, so each would wait a whole memory round trip in turn.
fn stage_gained_x(gain_at: u32) -> f32 {
    var squares = 0.0;
    for (var i = 0u; i < (D + WG - 1u) / WG; i++) {
        let e = lid + i * WG;
        let v = x_at(min(e, D - 1u));
        let gain = vectors[gain_at + min(e, D - 1u)];
        if (e < D) {
            set_xs(e, v * gain);
            squares += v * v;
        }
    }
    // workgroup_total's barriers also publish the staged vector.
    return 1.0 / sqrt(workgroup_total(squares) / f32(D) + EPS);
}

// Touches bring what a workgroup's first group of the next phase reads from memory (weights that
// no phase writes, cache rows of earlier steps) into its cache before it waits at the barrier.
fn touch_qkv(l: u32, wg: u32) {
    wq_base = l * Q_STRIDE;
    wk_base = l * K_STRIDE;
    wv_base = l * V_STRIDE;
    let row = row_of(wg, LANES_QKV);
    let blk = min(lid % LANES_QKV, D / 32u - 1u);
    if (row < QW) {
        pending = vec4<u32>(wq_touch(row, blk, D / 32u), 0u, 0u);
    } else if (row < QW + KVW) {
        pending = vec4<u32>(wk_touch(row - QW, blk, D / 32u), 0u, 0u);
    } else if (row < QKVW) {
        pending = vec4<u32>(wv_touch(row - QW - KVW, blk, D / 32u), 0u, 0u);
    }
}

fn touch_attention(l: u32, wg: u32) {
    let pos = step[0];
    let splits = pos / KC + 1u;
    // Rows before `pos` only: the row at `pos` is written in the phase.
    let key = (wg % splits) * KC + lid / HD;
    if (wg < HEADS * splits && key < pos) {
        let kv_head = (wg / splits) / (HEADS / KVH);
        let at = (l * KVH + kv_head) * CAP * HD + key * HD + lid % HD;
        pending = vec4<u32>(bitcast<u32>(k_cache[at]), bitcast<u32>(v_cache[at]), 0u, 0u);
    }
}

fn touch_o(l: u32, wg: u32) {
    wo_base = l * O_STRIDE;
    let row = row_of(wg, LANES_O);
    if (row < D) {
        pending = vec4<u32>(wo_touch(row, min(lid % LANES_O, QW / 32u - 1u), QW / 32u), 0u, 0u);
    }
}

fn touch_gate_up(l: u32, wg: u32) {
    wgate_base = l * GATE_STRIDE;
    wup_base = l * UP_STRIDE;
    let row = row_of(wg, LANES_GU);
    if (row < FF) {
        let blk = min(lid % LANES_GU, D / 32u - 1u);
        pending = vec4<u32>(wgate_touch(row, blk, D / 32u), wup_touch(row, blk, D / 32u));
    }
}

fn touch_down(l: u32, wg: u32) {
    wdown_base = l * DOWN_STRIDE;
    let row = row_of(wg, LANES_DOWN);
    if (row < D) {
        pending = vec4<u32>(wdown_touch(row, min(lid % LANES_DOWN, FF / 32u - 1u), FF / 32u), 0u, 0u);
    }
}

fn touch_head(wg: u32) {
    let row = row_of(wg, LANES_HEAD);
    if (row < VOCAB) {
        pending = vec4<u32>(head_row_touch(row, min(lid % LANES_HEAD, D / 32u - 1u), D / 32u), 0u, 0u);
    }
}

fn phase_embedding(wg: u32) {
    let token = tokens[0];
    for (var e = wg * WG + lid; e < D; e += P * WG) {
        set_x(e, emb_at(token, e, D / 32u));
    }
}

fn phase_qkv(l: u32, wg: u32) {
    let inv = stage_gained_x(ATTN_NORM_AT + l * D);
    wq_base = l * Q_STRIDE;
    wk_base = l * K_STRIDE;
    wv_base = l * V_STRIDE;
    let rows_per = WG / LANES_QKV;
    let lane = lid % LANES_QKV;
    for (var g = wg; g * rows_per < QKVW; g += P) {
        let row = row_of(g, LANES_QKV);
        var acc = 0.0;
        for (var i = 0u; i < (D / 32u + LANES_QKV - 1u) / LANES_QKV; i++) {
            let blk = lane + i * LANES_QKV;
            let b = min(blk, D / 32u - 1u);
            var dot = 0.0;
            if (row < QW) {
                dot = wq_block_dot(row, b, D / 32u, 0u);
            } else if (row < QW + KVW) {
                dot = wk_block_dot(row - QW, b, D / 32u, 0u);
            } else {
                dot = wv_block_dot(min(row, QKVW - 1u) - QW - KVW, b, D / 32u, 0u);
            }
            acc += select(0.0, dot, row < QKVW && blk < D / 32u);
        }
        let total = lane_totals(acc, 0.0, LANES_QKV).x * inv;
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
    let rows_per = WG / LANES_O;
    let lane = lid % LANES_O;
    for (var g = wg; g * rows_per < D; g += P) {
        let row = row_of(g, LANES_O);
        var acc = 0.0;
        for (var i = 0u; i < (QW / 32u + LANES_O - 1u) / LANES_O; i++) {
            let blk = lane + i * LANES_O;
            let dot = wo_block_dot(min(row, D - 1u), min(blk, QW / 32u - 1u), QW / 32u, 0u);
            acc += select(0.0, dot, row < D && blk < QW / 32u);
        }
        let total = lane_totals(acc, 0.0, LANES_O).x;
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
    let inv = stage_gained_x(FFN_NORM_AT + l * D);
    wgate_base = l * GATE_STRIDE;
    wup_base = l * UP_STRIDE;
    let rows_per = WG / LANES_GU;
    let lane = lid % LANES_GU;
    for (var g = wg; g * rows_per < FF; g += P) {
        let row = row_of(g, LANES_GU);
        var acc = 0.0;
        var acc_b = 0.0;
        for (var i = 0u; i < (D / 32u + LANES_GU - 1u) / LANES_GU; i++) {
            let blk = lane + i * LANES_GU;
            let r = min(row, FF - 1u);
            let b = min(blk, D / 32u - 1u);
            let valid = row < FF && blk < D / 32u;
            acc += select(0.0, wgate_block_dot(r, b, D / 32u, 0u), valid);
            acc_b += select(0.0, wup_block_dot(r, b, D / 32u, 0u), valid);
        }
        let totals = lane_totals(acc, acc_b, LANES_GU) * inv;
        if (lane == 0u && row < FF) {
            atomicStore(&hidden[row], bitcast<u32>(silu(totals.x) * totals.y));
        }
    }
}

fn phase_down(l: u32, wg: u32) {
    for (var i = 0u; i < (FF + WG - 1u) / WG; i++) {
        let e = lid + i * WG;
        let v = hidden_at(min(e, FF - 1u));
        if (e < FF) {
            set_xs(e, v);
        }
    }
    workgroupBarrier();
    wdown_base = l * DOWN_STRIDE;
    let rows_per = WG / LANES_DOWN;
    let lane = lid % LANES_DOWN;
    for (var g = wg; g * rows_per < D; g += P) {
        let row = row_of(g, LANES_DOWN);
        var acc = 0.0;
        for (var i = 0u; i < (FF / 32u + LANES_DOWN - 1u) / LANES_DOWN; i++) {
            let blk = lane + i * LANES_DOWN;
            let dot = wdown_block_dot(min(row, D - 1u), min(blk, FF / 32u - 1u), FF / 32u, 0u);
            acc += select(0.0, dot, row < D && blk < FF / 32u);
        }
        let total = lane_totals(acc, 0.0, LANES_DOWN).x;
        if (lane == 0u && row < D) {
            set_x(row, x_at(row) + total);
        }
    }
}

fn phase_head(wg: u32) {
    let inv = stage_gained_x(FINAL_NORM_AT);
    let rows_per = WG / LANES_HEAD;
    let lane = lid % LANES_HEAD;
    var value = -3.4028235e38;
    var index = 0xFFFFFFFFu;
    for (var g = wg; g * rows_per < VOCAB; g += P) {
        let row = row_of(g, LANES_HEAD);
        var acc = 0.0;
        for (var i = 0u; i < (D / 32u + LANES_HEAD - 1u) / LANES_HEAD; i++) {
            let blk = lane + i * LANES_HEAD;
            let dot = head_row_dot(min(row, VOCAB - 1u), min(blk, D / 32u - 1u), D / 32u);
            acc += select(0.0, dot, row < VOCAB && blk < D / 32u);
        }
        var total = acc * inv;
        if (LANES_HEAD > 1u) {
            total = lane_totals(acc, 0.0, LANES_HEAD).x * inv;
        }
        if (lane == 0u && row < VOCAB) {
            logits[row] = total;
            if (beats(total, row, value, index)) {
                value = total;
                index = row;
            }
        }
    }
    let chosen = workgroup_best(value, index, lid);
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
    let chosen = workgroup_best(value, index, lid);
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
    grid_arrive();
    touch_qkv(0u, wg);
    grid_wait();
    for (var l = 0u; l < L; l++) {
        phase_qkv(l, wg);
        grid_arrive();
        touch_attention(l, wg);
        grid_wait();
        phase_attention(l, wg);
        grid_arrive();
        touch_o(l, wg);
        grid_wait();
        phase_o(l, wg);
        grid_arrive();
        touch_gate_up(l, wg);
        grid_wait();
        phase_gate_up(l, wg);
        grid_arrive();
        touch_down(l, wg);
        grid_wait();
        phase_down(l, wg);
        grid_arrive();
        if (l + 1u < L) {
            touch_qkv(l + 1u, wg);
        } else {
            touch_head(wg);
        }
        grid_wait();
    }
    phase_head(wg);
    grid_sync();
    if (wg == 0u) {
        phase_argmax();
    }
    // step[2] is always 0, so this never stores; but the compiler cannot know that, so it keeps
    // the touches' loads.
    if (step[2] != 0u) {
        logits[lid] = bitcast<f32>(touched.x ^ touched.y ^ touched.z ^ touched.w);
    }
}
