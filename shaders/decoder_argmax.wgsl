// shaders/decoder_argmax.wgsl — greedy choice: the index of the largest of n logits (the lowest
// index among equals, NaN never chosen, as the CPU sampler), written to tokens[0] for the next
// step's embedding lookup and for the host to read. One workgroup of WG threads; the reduction
// is shaders/argmax_reduce.wgsl (prepended by the host).

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(9) var<storage, read_write> tokens: array<u32>;

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
    let chosen = workgroup_best(value, index, lid);
    if (lid == 0u) {
        tokens[0] = chosen.y;
    }
}
