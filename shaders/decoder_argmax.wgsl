// shaders/decoder_argmax.wgsl — greedy choice: the index of the largest of n logits (the lowest
// index among equals, NaN never chosen, as the CPU sampler), written to tokens[0] for the next
// step's embedding lookup and for the host to read. One workgroup of WG threads.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(9) var<storage, read_write> tokens: array<u32>;

var<workgroup> best_value: array<f32, WG>;
var<workgroup> best_index: array<u32, WG>;

// Whether candidate (v, i) beats (w, j): larger, or equal with a lower index.
fn beats(v: f32, i: u32, w: f32, j: u32) -> bool {
    return v > w || (v == w && i < j);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    var value = logits[0];
    var index = 0u;
    for (var i = lid; i < p.n; i += WG) {
        let v = logits[i];
        if (beats(v, i, value, index)) {
            value = v;
            index = i;
        }
    }
    best_value[lid] = value;
    best_index[lid] = index;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride && beats(best_value[lid + stride], best_index[lid + stride], best_value[lid], best_index[lid])) {
            best_value[lid] = best_value[lid + stride];
            best_index[lid] = best_index[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        tokens[0] = best_index[0];
    }
}
