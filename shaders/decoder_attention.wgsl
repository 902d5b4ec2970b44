// shaders/decoder_attention.wgsl — a prefill's causal attention of new positions against the KV
// cache (RoPE and the cache append done by decoder_rope_kv.wgsl), one workgroup per (query head,
// new position t): keys are scored WG at a time and folded into a running (online) softmax, so
// any context length runs in fixed workgroup memory; query head h reads KV head
// h / (heads / kv_heads) (GQA). Decode steps use decoder_attention_decode.wgsl. Prepended: HD,
// WG (≥ HD).

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

var<workgroup> qs: array<f32, HD>;
var<workgroup> scores: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = group.x;
    let t = group.y;
    if (t >= step[1]) {
        return;
    }
    let pos = step[0] + t;
    let per_group = p.heads / p.kv_heads;
    let kv_head = h / per_group;
    let row = t * (p.heads + 2u * p.kv_heads) * HD;
    let cache_head = kv_head * p.capacity * HD;
    if (lid < HD) {
        qs[lid] = qkv[row + h * HD + lid];
    }
    workgroupBarrier();

    var m = -3.4028235e38;
    var l = 0.0;
    var acc = 0.0;
    for (var j0 = 0u; j0 <= pos; j0 += WG) {
        let j = j0 + lid;
        var s = -3.4028235e38;
        if (j <= pos) {
            var dot = 0.0;
            let key = cache_head + j * HD;
            for (var d = 0u; d < HD; d++) {
                dot += qs[d] * k_cache[key + d];
            }
            s = dot * p.scale;
        }
        scores[lid] = s;
        workgroupBarrier();
        let count = min(WG, pos + 1u - j0);
        var tile_max = m;
        for (var i = 0u; i < count; i++) {
            tile_max = max(tile_max, scores[i]);
        }
        let correction = exp(m - tile_max);
        l *= correction;
        acc *= correction;
        for (var i = 0u; i < count; i++) {
            let weight = exp(scores[i] - tile_max);
            l += weight;
            if (lid < HD) {
                acc += weight * v_cache[cache_head + (j0 + i) * HD + lid];
            }
        }
        m = tile_max;
        workgroupBarrier();
    }
    if (lid < HD) {
        out[(t * p.heads + h) * HD + lid] = acc / l;
    }
}
