// shaders/argmax_reduce.wgsl — the best (value, index) over a workgroup's candidates: larger, or
// equal with a lower index (a NaN never beats anything), as the CPU sampler chooses. Shared by
// the argmax kernel (decoder_argmax.wgsl) and the fused step's LM head and final argmax
// (decoder_step.wgsl); the including kernel provides WG (a power of two).

var<workgroup> best_value: array<f32, WG>;
// Indices apart from the values: a u32 bit-cast to f32 may be flushed as a subnormal.
var<workgroup> best_index: array<u32, WG>;

// Whether candidate (v, i) beats (w, j).
fn beats(v: f32, i: u32, w: f32, j: u32) -> bool {
    return v > w || (v == w && i < j);
}

// The best of every thread's (value, index), as (value bits, index), valid in every thread.
fn workgroup_best(value: f32, index: u32, lid: u32) -> vec2<u32> {
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
    let chosen = vec2<u32>(bitcast<u32>(best_value[0]), best_index[0]);
    workgroupBarrier();
    return chosen;
}
