// shaders/decoder_step.wgsl — a whole greedy decode step in one dispatch: P workgroups stay
// resident and walk the step's phases (embedding; per layer RMSNorm+QKV, attention, merge+O+
// residual, RMSNorm+gate·up·SiLU, down+residual; RMSNorm+head with per-workgroup argmax; the
// final argmax) without ending one dispatch and starting the next. Each phase hands its work
// items ("groups") out round-robin: workgroup w takes groups w, w + P, …; a product's group is
// WG / lanes rows of `lanes` threads each (LANES_* per phase, chosen by the host); the attention
// work item and the merge of its splits are the dispatched kernels' very functions
// (split_attention.wgsl, merge_splits.wgsl, online_softmax.wgsl, prepended by the host), and so
// is the argmax's reduction (argmax_reduce.wgsl).
//
// Dataflow instead of grid barriers: every value one workgroup writes and another reads within
// the step (the residual stream after each sub-layer, Q|K|V, the attention partials, the SwiGLU
// hidden, the per-workgroup best logits) has a word of its own in `flow`, written once per step
// (the host clears `flow` before each step, and a written word is never 0: see `publish`). A
// reader loads the words it needs together and loads them again while any is still 0, so a
// workgroup starts a phase as soon as the values it reads exist, not when the slowest workgroup
// of the phase before is done, and no phase pays a device-scope release/acquire: each word is
// read with an atomic load of the very location written with an atomic store, which the memory
// model orders by itself. Needs all P workgroups resident at once, which the host ensures by
// choosing P (one per compute unit, or 1 on a CPU adapter); a wait past SPIN_LIMIT sets the
// failure flag, and every later wait of any workgroup then stops at once, so a host that guessed
// wrong gets the flag back (and runs the step as separate dispatches) instead of a hang.
//
// At the start of each phase, a workgroup touches what its first group reads from memory
// (weights, earlier cache rows), so those loads overlap its wait for the phase's inputs.
//
// Matrices (shaders/matrix.wgsl + matrix_dot.wgsl) are stacks of all layers' matrices; a layer
// is selected by pointing `name_base` at it. Prepended: P, L, D, FF, QW, KVW, HEADS, KVH, HD,
// VOCAB, CAP, KC, S_MAX, TILE, SHM, XS4, LANES_QKV, LANES_O, LANES_GU, LANES_DOWN, LANES_HEAD,
// HAS_BIAS, EPS, SCALE, the stacks' strides in words (Q_STRIDE, …), the vectors' offsets
// (ATTN_NORM_AT, …), the dataflow slots' offsets in words (FLOW_X, FLOW_QKV, FLOW_HIDDEN,
// FLOW_PARTIALS, FLOW_BEST), SPIN_LIMIT, and head_row_dot / head_row_touch (the head's block dot
// and touch: its own matrix's or the tied embedding's).

@group(0) @binding(1) var<storage, read> step: array<u32>;
@group(0) @binding(2) var<storage, read_write> tokens: array<u32>;
// [failed, then the dataflow slots (offsets prepended)]
@group(0) @binding(3) var<storage, read_write> flow: array<atomic<u32>>;
@group(0) @binding(8) var<storage, read_write> logits: array<f32>;
@group(0) @binding(10) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(11) var<storage, read_write> v_cache: array<f32>;
@group(0) @binding(12) var<storage, read> rope: array<vec2<f32>>;
// RMSNorm gains and biases of every layer (offsets prepended).
@group(0) @binding(13) var<storage, read> vectors: array<f32>;

const WG: u32 = 256u;
const QKVW: u32 = QW + 2u * KVW;
const ROW: u32 = HD + 1u;
const FAILED: u32 = 0u;
const PARTIAL_WORDS: u32 = HEADS * S_MAX * (HD + 2u);

// An attention tile's keys (TILE × ROW) and values (TILE × HD).
var<workgroup> shm: array<f32, SHM>;
// The staged input vector of a product: vec4s with one pad vec4 after every 32 values, so lanes
// reading the same offset of different blocks hit different banks and a block's values stay
// 16-byte aligned.
var<workgroup> xs: array<vec4<f32>, XS4>;
var<workgroup> red: array<f32, WG>;
var<workgroup> red_b: array<f32, WG>;
// An attention work item's Q, K and V rows (see qkv_at).
var<workgroup> item_qkv: array<f32, 3u * HD>;

var<private> lid: u32;
// Where the current layer's attention partials sit in `flow` (for set_partial / partial_bits).
var<private> partials_at: u32;
// Set once this thread saw the step give up: its waits stop at once from then on.
var<private> gave_up: bool = false;
// What the touches of a phase's data loaded: `pending` during the phase, then folded into
// `touched` (see `touch_*` and the end of main).
var<private> pending: vec4<u32>;
var<private> touched: vec4<u32>;

// Slot k of the residual stream: 0 the embedding, 2l + 1 after layer l's attention, 2l + 2 after
// its MLP.
fn x_slot(k: u32) -> u32 {
    return FLOW_X + k * D;
}

fn xs4_at(i: u32) -> vec4<f32> {
    return xs[i / 4u + i / 32u];
}

fn set_xs(i: u32, v: f32) {
    xs[i / 4u + i / 32u][i % 4u] = v;
}

// Writes a dataflow word. A written word is never 0, the mark of "not yet written": f32 +0.0 is
// stored as −0.0, which every use here treats alike (sums, products, norms, comparisons).
fn publish(i: u32, v: f32) {
    let bits = bitcast<u32>(v);
    atomicStore(&flow[i], select(bits, 0x80000000u, bits == 0u));
}

// A dataflow word's bits as they are now: 0 while it is not yet written.
fn flow_bits(i: u32) -> u32 {
    return atomicLoad(&flow[i]);
}

// Whether a pass that read an unwritten word should load again: yes until the step gives up (this
// thread waited SPIN_LIMIT passes, or saw another's give-up in the flag, checked every 64).
fn wait_again(unwritten: bool, spin: u32) -> bool {
    if (!unwritten || gave_up) {
        return false;
    }
    if (spin + 1u >= SPIN_LIMIT) {
        atomicStore(&flow[FAILED], 1u);
        gave_up = true;
    } else if (spin % 64u == 63u && atomicLoad(&flow[FAILED]) != 0u) {
        gave_up = true;
    }
    return !gave_up;
}

// Word i's value, given the bits an earlier load found: waits only if they were unwritten (so a
// caller can issue the load early and use it late).
fn flow_value(i: u32, loaded: u32) -> f32 {
    var bits = loaded;
    for (var spin = 0u; wait_again(bits == 0u, spin); spin++) {
        bits = flow_bits(i);
    }
    return bitcast<f32>(bits);
}

fn partial_bits(i: u32) -> u32 {
    return flow_bits(partials_at + i);
}

fn set_partial(i: u32, v: f32) {
    publish(partials_at + i, v);
}

// The attention work item's own Q, K and V rows (split_attention.wgsl reads only its head's),
// staged by phase_attention.
fn qkv_at(i: u32) -> f32 {
    if (i < QW) {
        return item_qkv[i % HD];
    }
    if (i < QW + KVW) {
        return item_qkv[HD + i % HD];
    }
    return item_qkv[2u * HD + i % HD];
}

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
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

// Residual-stream slot `slot` (D values) times the RMSNorm gain at vectors[gain_at..] into the
// staged vector; returns the norm's scale 1/rms(x), which the phase applies to its row totals
// (the norm scales a whole row, so the products need not wait for it).
//
// Here and below, loops run a constant number of times and load unconditionally (indices clamped
// into range, results masked with select): a load under a branch cannot be issued before the
// previous iteration's, so each would wait a whole memory round trip in turn. For the same reason
// a pass over dataflow words loads them all, and only then is run again if any was unwritten.
fn stage_gained_x(slot: u32, gain_at: u32) -> f32 {
    var squares = 0.0;
    for (var spin = 0u; ; spin++) {
        var unwritten = false;
        squares = 0.0;
        for (var i = 0u; i < (D + WG - 1u) / WG; i++) {
            let e = lid + i * WG;
            let bits = flow_bits(slot + min(e, D - 1u));
            let gain = vectors[gain_at + min(e, D - 1u)];
            unwritten = unwritten || bits == 0u;
            let v = bitcast<f32>(bits);
            if (e < D) {
                set_xs(e, v * gain);
                squares += v * v;
            }
        }
        if (!wait_again(unwritten, spin)) {
            break;
        }
    }
    // workgroup_total's barriers also publish the staged vector.
    return 1.0 / sqrt(workgroup_total(squares) / f32(D) + EPS);
}

// Touches bring what a workgroup's first group of a phase reads from memory (weights that no
// phase writes, cache rows of earlier steps) into its cache while it waits for the phase's inputs.
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

// A word of every 32-byte sector (8 floats) of the keys and values of the first tile of the
// workgroup's attention work item: a sector is what a touch brings in.
fn touch_attention(l: u32, wg: u32) {
    let pos = step[0];
    let splits = pos / KC + 1u;
    let per_key = WG / TILE;
    // Rows before `pos` only: the row at `pos` is written in the phase.
    let key = (wg % splits) * KC + lid / per_key;
    if (wg < HEADS * splits && key < pos) {
        let kv_head = (wg / splits) / (HEADS / KVH);
        let at = (l * KVH + kv_head) * CAP * HD + key * HD + min((lid % per_key) * max(HD / per_key, 8u), HD - 1u);
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

// By workgroup 0 alone: it also writes the next token into tokens[0] at the end of the step, so
// its program order keeps this read before that write (a read in another workgroup would be
// ordered against it by nothing but the atomics' causality).
fn phase_embedding(wg: u32) {
    if (wg != 0u) {
        return;
    }
    let token = tokens[0];
    for (var e = lid; e < D; e += WG) {
        publish(x_slot(0u) + e, emb_at(token, e, D / 32u));
    }
}

fn phase_qkv(l: u32, wg: u32) {
    let inv = stage_gained_x(x_slot(2u * l), ATTN_NORM_AT + l * D);
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
            publish(FLOW_QKV + l * QKVW + row, v);
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

// Work item (head, split)'s Q row and its KV head's K and V rows into item_qkv.
fn stage_item_qkv(l: u32, h: u32) {
    let kv_head = h / (HEADS / KVH);
    let rows = FLOW_QKV + l * QKVW;
    for (var spin = 0u; ; spin++) {
        var unwritten = false;
        for (var i = 0u; i < (3u * HD + WG - 1u) / WG; i++) {
            let e = lid + i * WG;
            let part = min(e, 3u * HD - 1u) / HD;
            let at = select(select(QW + KVW + kv_head * HD, QW + kv_head * HD, part == 1u), h * HD, part == 0u);
            let bits = flow_bits(rows + at + e % HD);
            unwritten = unwritten || bits == 0u;
            if (e < 3u * HD) {
                item_qkv[e] = bitcast<f32>(bits);
            }
        }
        if (!wait_again(unwritten, spin)) {
            break;
        }
    }
    workgroupBarrier();
}

fn phase_attention(l: u32, wg: u32) {
    let pos = step[0];
    let splits = pos / KC + 1u;
    partials_at = FLOW_PARTIALS + l * PARTIAL_WORDS;
    for (var g = wg; g < HEADS * splits; g += P) {
        stage_item_qkv(l, g / splits);
        attend_split(g / splits, g % splits, pos, HEADS, KVH, CAP, l * KVH * CAP * HD, SCALE, lid);
    }
}

fn phase_o(l: u32, wg: u32) {
    let rows_per = WG / LANES_O;
    if (wg * rows_per >= D) {
        return;
    }
    partials_at = FLOW_PARTIALS + l * PARTIAL_WORDS;
    merge_splits(lid, step[0] / KC + 1u);
    workgroupBarrier();
    wo_base = l * O_STRIDE;
    let lane = lid % LANES_O;
    for (var g = wg; g * rows_per < D; g += P) {
        let row = row_of(g, LANES_O);
        // The residual, loaded now and used after the products.
        let residual_at = x_slot(2u * l) + min(row, D - 1u);
        let residual = flow_bits(residual_at);
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
            publish(x_slot(2u * l + 1u) + row, flow_value(residual_at, residual) + v);
        }
    }
}

fn phase_gate_up(l: u32, wg: u32) {
    let inv = stage_gained_x(x_slot(2u * l + 1u), FFN_NORM_AT + l * D);
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
            publish(FLOW_HIDDEN + l * FF + row, silu(totals.x) * totals.y);
        }
    }
}

fn phase_down(l: u32, wg: u32) {
    let hidden = FLOW_HIDDEN + l * FF;
    for (var spin = 0u; ; spin++) {
        var unwritten = false;
        for (var i = 0u; i < (FF + WG - 1u) / WG; i++) {
            let e = lid + i * WG;
            let bits = flow_bits(hidden + min(e, FF - 1u));
            unwritten = unwritten || bits == 0u;
            if (e < FF) {
                set_xs(e, bitcast<f32>(bits));
            }
        }
        if (!wait_again(unwritten, spin)) {
            break;
        }
    }
    workgroupBarrier();
    wdown_base = l * DOWN_STRIDE;
    let rows_per = WG / LANES_DOWN;
    let lane = lid % LANES_DOWN;
    for (var g = wg; g * rows_per < D; g += P) {
        let row = row_of(g, LANES_DOWN);
        let residual_at = x_slot(2u * l + 1u) + min(row, D - 1u);
        let residual = flow_bits(residual_at);
        var acc = 0.0;
        for (var i = 0u; i < (FF / 32u + LANES_DOWN - 1u) / LANES_DOWN; i++) {
            let blk = lane + i * LANES_DOWN;
            let dot = wdown_block_dot(min(row, D - 1u), min(blk, FF / 32u - 1u), FF / 32u, 0u);
            acc += select(0.0, dot, row < D && blk < FF / 32u);
        }
        let total = lane_totals(acc, 0.0, LANES_DOWN).x;
        if (lane == 0u && row < D) {
            publish(x_slot(2u * l + 2u) + row, flow_value(residual_at, residual) + total);
        }
    }
}

fn phase_head(wg: u32) {
    let inv = stage_gained_x(x_slot(2u * L), FINAL_NORM_AT);
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
        publish(FLOW_BEST + 2u * wg, bitcast<f32>(chosen.x));
        // The index + 1 (never 0); "none" (0xFFFFFFFF) stays as it is.
        atomicStore(&flow[FLOW_BEST + 2u * wg + 1u], select(chosen.y + 1u, chosen.y, chosen.y == 0xFFFFFFFFu));
    }
}

// The best of the workgroups' candidates, by workgroup 0.
fn phase_argmax() {
    var value = -3.4028235e38;
    var index = 0xFFFFFFFFu;
    for (var i = 0u; i < (P + WG - 1u) / WG; i++) {
        let w = min(lid + i * WG, P - 1u);
        var v = flow_bits(FLOW_BEST + 2u * w);
        var n = flow_bits(FLOW_BEST + 2u * w + 1u);
        for (var spin = 0u; wait_again(v == 0u || n == 0u, spin); spin++) {
            v = flow_bits(FLOW_BEST + 2u * w);
            n = flow_bits(FLOW_BEST + 2u * w + 1u);
        }
        let candidate = select(n - 1u, n, n == 0xFFFFFFFFu);
        if (beats(bitcast<f32>(v), candidate, value, index)) {
            value = bitcast<f32>(v);
            index = candidate;
        }
    }
    let chosen = workgroup_best(value, index, lid);
    if (lid == 0u) {
        // All logits NaN: token 0, as decoder_argmax.wgsl.
        tokens[0] = select(chosen.y, 0u, chosen.y == 0xFFFFFFFFu);
    }
}

// Between phases: what the phase's touch loaded is folded in (needed only now, after the phase's
// own loads were issued), and the workgroup's shared arrays are free again.
fn next_phase() {
    touched ^= pending;
    workgroupBarrier();
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    lid = local;
    let wg = group.x;
    phase_embedding(wg);
    next_phase();
    for (var l = 0u; l < L; l++) {
        touch_qkv(l, wg);
        phase_qkv(l, wg);
        next_phase();
        touch_attention(l, wg);
        phase_attention(l, wg);
        next_phase();
        touch_o(l, wg);
        phase_o(l, wg);
        next_phase();
        touch_gate_up(l, wg);
        phase_gate_up(l, wg);
        next_phase();
        touch_down(l, wg);
        phase_down(l, wg);
        next_phase();
    }
    touch_head(wg);
    phase_head(wg);
    next_phase();
    if (wg == 0u) {
        phase_argmax();
    }
    // step[2] is always 0, so this never stores; but the compiler cannot know that, so it keeps
    // the touches' loads.
    if (step[2] != 0u) {
        logits[lid] = bitcast<f32>(touched.x ^ touched.y ^ touched.z ^ touched.w);
    }
}
