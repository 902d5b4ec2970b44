// shaders/decoder_attention_decode.wgsl — one decode step's attention, split over the keys
// (flash-decoding): workgroup (head h, split s) takes keys [s·KC, s·KC + KC) ∩ [0, pos], TILE at
// a time staged in workgroup memory by constant-count (so unrolled, batched) coalesced loads and
// folded into an online softmax, and writes its partial (unnormalised Σ p·v, max m, Σ p) to
// `partial`; the O-projection's prologue (decoder_matvec.wgsl, COMBINE) merges the splits. The workgroup that holds position `pos`
// applies RoPE to the new key itself and the first query head of each KV group appends K and V
// to the caches; every workgroup rotates its query. Query head h reads KV head
// h / (heads / kv_heads). Prepended: HD, WG (≥ HD, a multiple of TILE), TILE, KC (a multiple of
// TILE), S_MAX.

struct Params {
    heads: u32,
    kv_heads: u32,
    capacity: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> rope: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read> step: array<u32>;
@group(0) @binding(5) var<storage, read_write> partial: array<f32>;
@group(0) @binding(10) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(11) var<storage, read_write> v_cache: array<f32>;
@group(0) @binding(12) var<storage, read> qkv: array<f32>;

const HALF: u32 = HD / 2u;
const ROW: u32 = HD + 1u;
const LOAD_ITERS: u32 = (TILE * HD + WG - 1u) / WG;
// A key's dot product is split over PARTS threads, each taking HD / PARTS dimensions.
const PARTS: u32 = WG / TILE;
const PART_DIMS: u32 = (HD + PARTS - 1u) / PARTS;

var<workgroup> qs: array<f32, HD>;
var<workgroup> k_new: array<f32, HD>;
var<workgroup> v_new: array<f32, HD>;
var<workgroup> ks: array<f32, TILE * ROW>;
var<workgroup> vs: array<f32, TILE * HD>;
var<workgroup> scores: array<f32, TILE>;
var<workgroup> partial_dots: array<f32, WG>;

// The half-split RoPE rotation of pair i of the head at qkv[at..at + HD], for position pos.
fn rotated(at: u32, pos: u32, i: u32) -> vec2<f32> {
    let cs = rope[pos * HALF + i];
    let a = qkv[at + i];
    let b = qkv[at + i + HALF];
    return vec2<f32>(a * cs.x - b * cs.y, a * cs.y + b * cs.x);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = group.x;
    let split = group.y;
    let pos = step[0];
    let first = split * KC;
    if (first > pos) {
        return;
    }
    let end = min(first + KC, pos + 1u);
    let per_group = p.heads / p.kv_heads;
    let kv_head = h / per_group;
    let width = (p.heads + 2u * p.kv_heads) * HD;
    let cache_head = kv_head * p.capacity * HD;
    let holds_new = end == pos + 1u;

    if (lid < HALF) {
        let q = rotated(h * HD, pos, lid);
        qs[lid] = q.x;
        qs[lid + HALF] = q.y;
        if (holds_new) {
            let k = rotated((p.heads + kv_head) * HD, pos, lid);
            k_new[lid] = k.x;
            k_new[lid + HALF] = k.y;
        }
    }
    if (holds_new && lid < HD) {
        v_new[lid] = qkv[(p.heads + p.kv_heads + kv_head) * HD + lid];
    }
    workgroupBarrier();
    if (holds_new && h % per_group == 0u && lid < HD) {
        k_cache[cache_head + pos * HD + lid] = k_new[lid];
        v_cache[cache_head + pos * HD + lid] = v_new[lid];
    }
    var m = -3.4028235e38;
    var l = 0.0;
    var acc = 0.0;
    for (var t0 = first; t0 < end; t0 += TILE) {
        for (var i = 0u; i < LOAD_ITERS; i++) {
            let e = lid + i * WG;
            let j = e / HD;
            let d = e % HD;
            let key = t0 + j;
            var k = 0.0;
            var v = 0.0;
            if (e < TILE * HD) {
                if (key == pos) {
                    k = k_new[d];
                    v = v_new[d];
                } else if (key < end) {
                    k = k_cache[cache_head + key * HD + d];
                    v = v_cache[cache_head + key * HD + d];
                }
                ks[j * ROW + d] = k;
                vs[e] = v;
            }
        }
        workgroupBarrier();
        let key = lid / PARTS;
        var dot = 0.0;
        for (var i = 0u; i < PART_DIMS; i++) {
            let d = (lid % PARTS) * PART_DIMS + i;
            if (d < HD) {
                dot += qs[d] * ks[key * ROW + d];
            }
        }
        partial_dots[lid] = dot;
        workgroupBarrier();
        if (lid < TILE) {
            var s = -3.4028235e38;
            if (t0 + lid < end) {
                var total = 0.0;
                for (var i = 0u; i < PARTS; i++) {
                    total += partial_dots[lid * PARTS + i];
                }
                s = total * p.scale;
            }
            scores[lid] = s;
        }
        workgroupBarrier();
        fold_tile(min(TILE, end - t0), lid, &m, &l, &acc);
        workgroupBarrier();
    }
    let out = (h * S_MAX + split) * (HD + 2u);
    if (lid < HD) {
        partial[out + lid] = acc;
        if (lid == 0u) {
            partial[out + HD] = m;
            partial[out + HD + 1u] = l;
        }
    }
}
