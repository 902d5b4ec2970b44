// RMSNorm / LayerNorm over rows of `width` values, as the CPU path computes them: one workgroup
// per row, two passes over the row (the mean, then the centred variance E[(x − μ)²]), each
// summed by a tree reduction in workgroup memory. RMSNorm is the uncentred case (μ = 0, β = 0).
// The header defines WG (threads per workgroup, a power of two).

struct Params {
    rows: u32,
    width: u32,
    centered: u32,
    epsilon: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gain: array<f32>;
@group(0) @binding(3) var<storage, read> shift: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

var<workgroup> partial: array<f32, WG>;

// The sum over the workgroup of each thread's `value` (called by every thread).
fn workgroup_sum(lid: u32, value: f32) -> f32 {
    partial[lid] = value;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    let lid = local.x;
    let base = group.x * p.width;
    let n = f32(p.width);
    var sum = 0.0;
    for (var i = lid; i < p.width; i += WG) {
        sum += x[base + i];
    }
    let mean = select(0.0, workgroup_sum(lid, sum) / n, p.centered == 1u);
    var squares = 0.0;
    for (var i = lid; i < p.width; i += WG) {
        let d = x[base + i] - mean;
        squares += d * d;
    }
    let inv = 1.0 / sqrt(workgroup_sum(lid, squares) / n + p.epsilon);
    for (var i = lid; i < p.width; i += WG) {
        y[base + i] = (x[base + i] - mean) * inv * gain[i] + shift[i];
    }
}
