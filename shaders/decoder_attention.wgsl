// shaders/decoder_attention.wgsl — causal attention of new positions against the KV cache, one
// workgroup per (query head, new position t): keys are scored WG at a time and folded into a
// running (online) softmax, so any context length runs in fixed workgroup memory; query head h
// reads KV head h / (heads / kv_heads) (GQA). With FUSED (a decode step, one new position) the
// workgroup also applies RoPE to its query and to the new key itself and the first query head of
// each group appends K and V to the caches, so no separate RoPE dispatch is needed; without it
// (prefill) decoder_rope_kv.wgsl has done both. Prepended: HD, WG (≥ HD), FUSED.

struct Params {
    heads: u32,
    kv_heads: u32,
    capacity: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> rope: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read> step: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(10) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(11) var<storage, read_write> v_cache: array<f32>;
@group(0) @binding(12) var<storage, read> qkv: array<f32>;

const HALF: u32 = HD / 2u;

var<workgroup> qs: array<f32, HD>;
var<workgroup> k_new: array<f32, HD>;
var<workgroup> v_new: array<f32, HD>;
var<workgroup> scores: array<f32, WG>;

// Rotate the head at qkv[at..at + HD] for position pos into qs / k_new (threads i < HALF).
fn rotate_into_q(at: u32, pos: u32, i: u32) {
    let cs = rope[pos * HALF + i];
    let a = qkv[at + i];
    let b = qkv[at + i + HALF];
    qs[i] = a * cs.x - b * cs.y;
    qs[i + HALF] = a * cs.y + b * cs.x;
}

fn rotate_into_k(at: u32, pos: u32, i: u32) {
    let cs = rope[pos * HALF + i];
    let a = qkv[at + i];
    let b = qkv[at + i + HALF];
    k_new[i] = a * cs.x - b * cs.y;
    k_new[i + HALF] = a * cs.y + b * cs.x;
}

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
    let k_at = row + (p.heads + kv_head) * HD;
    let v_at = row + (p.heads + p.kv_heads + kv_head) * HD;
    let cache_head = kv_head * p.capacity * HD;

    if (FUSED == 1u) {
        if (lid < HALF) {
            rotate_into_q(row + h * HD, pos, lid);
            rotate_into_k(k_at, pos, lid);
        }
        if (lid < HD) {
            v_new[lid] = qkv[v_at + lid];
        }
        workgroupBarrier();
        if (h % per_group == 0u && lid < HD) {
            k_cache[cache_head + pos * HD + lid] = k_new[lid];
            v_cache[cache_head + pos * HD + lid] = v_new[lid];
        }
    } else if (lid < HD) {
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
            if (FUSED == 1u && j == pos) {
                for (var d = 0u; d < HD; d++) {
                    dot += qs[d] * k_new[d];
                }
            } else {
                let key = cache_head + j * HD;
                for (var d = 0u; d < HD; d++) {
                    dot += qs[d] * k_cache[key + d];
                }
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
                let key = j0 + i;
                var v = 0.0;
                if (FUSED == 1u && key == pos) {
                    v = v_new[lid];
                } else {
                    v = v_cache[cache_head + key * HD + lid];
                }
                acc += weight * v;
            }
        }
        m = tile_max;
        workgroupBarrier();
    }
    if (lid < HD) {
        out[(t * p.heads + h) * HD + lid] = acc / l;
    }
}
