// shaders/decoder_attention.wgsl — a prefill's causal attention of new positions against the KV
// cache (RoPE and the cache append done by decoder_rope_kv.wgsl), one workgroup per (query head,
// new position t): keys TILE at a time are staged in workgroup memory by constant-count
// (unrolled, batched) coalesced loads and folded into a running (online) softmax, so any context
// length runs in fixed workgroup memory; query head h reads KV head h / (heads / kv_heads) (GQA).
// Decode steps use decoder_attention_decode.wgsl. Prepended: HD, WG (≥ HD, ≥ TILE), TILE.

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

const ROW: u32 = HD + 1u;
const LOAD_ITERS: u32 = (TILE * HD + WG - 1u) / WG;

var<workgroup> qs: array<f32, HD>;
var<workgroup> ks: array<f32, TILE * ROW>;
var<workgroup> vs: array<f32, TILE * HD>;
var<workgroup> scores: array<f32, TILE>;

fn tile_v(j: u32, d: u32) -> f32 {
    return vs[j * HD + d];
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = group.x;
    let t = group.y;
    if (t >= step[1]) {
        return;
    }
    let pos = step[0] + t;
    let kv_head = h / (p.heads / p.kv_heads);
    let cache_head = kv_head * p.capacity * HD;
    if (lid < HD) {
        qs[lid] = qkv[t * (p.heads + 2u * p.kv_heads) * HD + h * HD + lid];
    }
    workgroupBarrier();

    var m = -3.4028235e38;
    var l = 0.0;
    var acc = 0.0;
    for (var t0 = 0u; t0 <= pos; t0 += TILE) {
        for (var i = 0u; i < LOAD_ITERS; i++) {
            let e = lid + i * WG;
            let j = e / HD;
            var k = 0.0;
            var v = 0.0;
            if (e < TILE * HD) {
                if (t0 + j <= pos) {
                    k = k_cache[cache_head + t0 * HD + e];
                    v = v_cache[cache_head + t0 * HD + e];
                }
                ks[j * ROW + e % HD] = k;
                vs[e] = v;
            }
        }
        workgroupBarrier();
        if (lid < TILE) {
            var s = -3.4028235e38;
            if (t0 + lid <= pos) {
                var dot = 0.0;
                for (var d = 0u; d < HD; d++) {
                    dot += qs[d] * ks[lid * ROW + d];
                }
                s = dot * p.scale;
            }
            scores[lid] = s;
        }
        workgroupBarrier();
        fold_tile(min(TILE, pos + 1u - t0), lid, &m, &l, &acc);
        workgroupBarrier();
    }
    if (lid < HD) {
        out[(t * p.heads + h) * HD + lid] = acc / l;
    }
}
