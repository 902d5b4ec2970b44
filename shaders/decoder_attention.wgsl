// shaders/decoder_attention.wgsl — a prefill's causal attention of the new rows against the KV
// cache (RoPE and the cache append done by decoder_rope_kv.wgsl), tiled both ways: one workgroup
// of 256 threads per (query head, BQ = 16 new rows), keys TILE = 16 at a time. Thread (q, j) =
// (t / 16, t % 16) computes the score of row q and key j (a dot over the head's dims, vec4 reads
// of workgroup memory) and its weight under the row's new running maximum; then, as (row q,
// lane j), it folds the tile into the row's online softmax (maximum and sum, the same in the
// row's 16 threads) and accumulates the row's outputs 4·lane.. of every DC dims. Row t (position
// step[0] + t) sees the keys ≤ its position; rows past step.count are computed masked and not
// written. Query head h reads KV head h / (heads / kv_heads) (GQA). The head's dims are staged
// DC ≤ 64 at a time (NCH chunks; DC a multiple of 4, zeros past the head), so workgroup memory
// stays within WebGPU's default 16 KiB for any head_dim ≤ 256. Decode steps use
// decoder_attention_decode.wgsl. Prepended: HD, DC, NCH.

struct Params {
    heads: u32,
    kv_heads: u32,
    capacity: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(4) var<storage, read> step: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(10) var<storage, read> k_cache: array<f32>;
@group(0) @binding(11) var<storage, read> v_cache: array<f32>;
@group(0) @binding(12) var<storage, read> qkv: array<f32>;

const BQ: u32 = 16u;
const TILE: u32 = 16u;
const THREADS: u32 = BQ * TILE;
const DC4: u32 = DC / 4u;
// Q and K rows padded by one vector: eight keys' same dims lie in different banks.
const ROW4: u32 = DC4 + 1u;
const LOADS: u32 = (TILE * DC + THREADS - 1u) / THREADS;
const MASKED: f32 = -3.4028235e38;

var<workgroup> qs: array<vec4<f32>, BQ * ROW4>;
var<workgroup> ks: array<vec4<f32>, TILE * ROW4>;
var<workgroup> vs: array<vec4<f32>, TILE * DC4>;
var<workgroup> scores: array<f32, BQ * TILE>;
var<workgroup> weights: array<f32, BQ * TILE>;

// Dims c·DC.. of the query rows q0.. (zeros past the pass's rows or the head).
fn stage_q(c: u32, q0: u32, h: u32, rows: u32, lid: u32) {
    let width = (p.heads + 2u * p.kv_heads) * HD;
    for (var i = 0u; i < LOADS; i++) {
        let e = lid + i * THREADS;
        let r = e / DC;
        let dim = c * DC + e % DC;
        if (e < BQ * DC) {
            var v = 0.0;
            if (q0 + r < rows && dim < HD) {
                v = qkv[(q0 + r) * width + h * HD + dim];
            }
            qs[r * ROW4 + (e % DC) / 4u][e % 4u] = v;
        }
    }
}

// Dims c·DC.. of the keys (with_k) and the values (with_v) t0.. (zeros past `last`, the last key
// any row of the workgroup sees). Loads are issued unconditionally (index clamped, value masked)
// so a thread's loads go out together.
fn stage_kv(c: u32, t0: u32, head: u32, last: u32, lid: u32, with_k: bool, with_v: bool) {
    for (var i = 0u; i < LOADS; i++) {
        let e = lid + i * THREADS;
        let r = e / DC;
        let dim = c * DC + e % DC;
        let inside = t0 + r <= last && dim < HD;
        let at = head + min(t0 + r, last) * HD + min(dim, HD - 1u);
        let k = k_cache[at];
        let v = v_cache[at];
        if (e < TILE * DC) {
            if (with_k) {
                ks[r * ROW4 + (e % DC) / 4u][e % 4u] = select(0.0, k, inside);
            }
            if (with_v) {
                vs[e / 4u][e % 4u] = select(0.0, v, inside);
            }
        }
    }
}

// Σ_j weight(q, j) · V[j] at the staged dims 4·lane.. of row q (lanes past the chunk: zeros).
fn weighted_values(q: u32, lane: u32) -> vec4<f32> {
    var sum = vec4<f32>(0.0);
    if (lane < DC4) {
        for (var j = 0u; j < TILE; j++) {
            sum += weights[q * TILE + j] * vs[j * DC4 + lane];
        }
    }
    return sum;
}

// Output dims c·DC + 4·lane.. of row t (those inside the chunk and the head).
fn write_out(c: u32, t: u32, h: u32, lane: u32, acc: vec4<f32>) {
    for (var e = 0u; e < 4u; e++) {
        let d = 4u * lane + e;
        if (d < DC && c * DC + d < HD) {
            out[(t * p.heads + h) * HD + c * DC + d] = acc[e];
        }
    }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = group.x;
    let q0 = group.y * BQ;
    let rows = step[1];
    if (q0 >= rows) {
        return;
    }
    let q = lid / TILE;
    let j = lid % TILE;
    let t = q0 + q;
    let pos = step[0] + t;
    let live = t < rows;
    let last = step[0] + min(q0 + BQ, rows) - 1u;
    let head = (h / (p.heads / p.kv_heads)) * p.capacity * HD;
    if (NCH == 1u) {
        stage_q(0u, q0, h, rows, lid);
    }

    var m = MASKED;
    var l = 0.0;
    // Row q's outputs at dims c·DC + 4·j..: chunk c's in acc_c.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var t0 = 0u; t0 <= last; t0 += TILE) {
        var score = 0.0;
        for (var c = 0u; c < NCH; c++) {
            if (NCH > 1u) {
                stage_q(c, q0, h, rows, lid);
            }
            stage_kv(c, t0, head, last, lid, true, NCH == 1u);
            workgroupBarrier();
            for (var d = 0u; d < DC4; d++) {
                score += dot(qs[q * ROW4 + d], ks[j * ROW4 + d]);
            }
            if (NCH > 1u) {
                workgroupBarrier();
            }
        }
        let visible = live && t0 + j <= pos;
        scores[lid] = select(MASKED, score * p.scale, visible);
        workgroupBarrier();

        var tile_max = m;
        for (var k = 0u; k < TILE; k++) {
            tile_max = max(tile_max, scores[q * TILE + k]);
        }
        let correction = exp(m - tile_max);
        m = tile_max;
        weights[lid] = select(0.0, exp(scores[lid] - tile_max), visible);
        workgroupBarrier();

        var sum = 0.0;
        for (var k = 0u; k < TILE; k++) {
            sum += weights[q * TILE + k];
        }
        l = l * correction + sum;
        acc0 *= correction;
        acc1 *= correction;
        acc2 *= correction;
        acc3 *= correction;
        for (var c = 0u; c < NCH; c++) {
            if (NCH > 1u) {
                stage_kv(c, t0, head, last, lid, false, true);
                workgroupBarrier();
            }
            let add = weighted_values(q, j);
            switch c {
                case 0u: {
                    acc0 += add;
                }
                case 1u: {
                    acc1 += add;
                }
                case 2u: {
                    acc2 += add;
                }
                default: {
                    acc3 += add;
                }
            }
            workgroupBarrier();
        }
    }
    if (live) {
        write_out(0u, t, h, j, acc0 / l);
        if (NCH > 1u) {
            write_out(1u, t, h, j, acc1 / l);
        }
        if (NCH > 2u) {
            write_out(2u, t, h, j, acc2 / l);
        }
        if (NCH > 3u) {
            write_out(3u, t, h, j, acc3 / l);
        }
    }
}
