// shaders/decoder_rope_kv.wgsl — for each new position t < step.count (position step[0] + t) of
// the [Q | K | V] rows: RoPE (half-split pairs, cos/sin from the host's f64 table) on every query
// and key head in place, then K and V appended to the caches [kv_head][capacity][HD].
// Prepended: HD (head width).

struct Params {
    heads: u32,
    kv_heads: u32,
    capacity: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> rope: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read> step: array<u32>;
@group(0) @binding(5) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(10) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(11) var<storage, read_write> v_cache: array<f32>;

const HALF: u32 = HD / 2u;

// 256 threads: a row's pairs (SmolLM2: 384) take one or two rounds, each a memory round trip.
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = group.x;
    if (t >= step[1]) {
        return;
    }
    let pos = step[0] + t;
    let row = t * (p.heads + 2u * p.kv_heads) * HD;
    for (var e = lid; e < (p.heads + p.kv_heads) * HALF; e += 256u) {
        let head = e / HALF;
        let i = e % HALF;
        let at = row + head * HD + i;
        let cs = rope[pos * HALF + i];
        let a = qkv[at];
        let b = qkv[at + HALF];
        qkv[at] = a * cs.x - b * cs.y;
        qkv[at + HALF] = a * cs.y + b * cs.x;
    }
    storageBarrier();
    workgroupBarrier();
    for (var e = lid; e < p.kv_heads * HD; e += 256u) {
        let kv_head = e / HD;
        let d = e % HD;
        let cached = (kv_head * p.capacity + pos) * HD + d;
        k_cache[cached] = qkv[row + p.heads * HD + e];
        v_cache[cached] = qkv[row + (p.heads + p.kv_heads) * HD + e];
    }
}
