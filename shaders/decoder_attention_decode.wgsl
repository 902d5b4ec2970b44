// shaders/decoder_attention_decode.wgsl — one decode step's attention, split over the keys
// (flash-decoding): workgroup (head h, split s) runs shaders/split_attention.wgsl's work item with
// the tile in its own workgroup arrays; the O-projection's prologue (decoder_matvec.wgsl,
// COMBINE) merges the splits. Prepended: HD, WG (≥ HD, a multiple of TILE), TILE, KC (a
// multiple of TILE), S_MAX.

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

const ROW: u32 = HD + 1u;

var<workgroup> ks: array<f32, TILE * ROW>;
var<workgroup> vs: array<f32, TILE * HD>;
var<workgroup> red: array<f32, WG>;

fn qkv_at(i: u32) -> f32 {
    return qkv[i];
}

fn set_partial(i: u32, v: f32) {
    partial[i] = v;
}

fn set_tile(j: u32, d: u32, k: f32, v: f32) {
    ks[j * ROW + d] = k;
    vs[j * HD + d] = v;
}

fn tile_k(j: u32, d: u32) -> f32 {
    return ks[j * ROW + d];
}

fn tile_v(j: u32, d: u32) -> f32 {
    return vs[j * HD + d];
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pos = step[0];
    if (group.y * KC > pos) {
        return;
    }
    attend_split(group.x, group.y, pos, p.heads, p.kv_heads, p.capacity, 0u, p.scale, lid);
}
