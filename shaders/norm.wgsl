// RMSNorm / LayerNorm over rows of `width` values, as the CPU path computes them: one workgroup
// per row, two passes over the row (the mean, then the centred variance E[(x − μ)²]), each
// summed by shaders/workgroup.wgsl's tree reduction. RMSNorm is the uncentred case (μ = 0, β = 0).
// Prepended: WG (threads per workgroup, a power of two) and the weight loaders load_gain and
// load_shift (shaders/weights.wgsl, bindings 2 and 3). Rows fold into y past the grid limit.

struct Params {
    rows: u32,
    width: u32,
    centered: u32,
    epsilon: f32,
    has_shift: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
) {
    let lid = local.x;
    let row = group.x + group.y * groups.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.width;
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
        var shift = 0.0;
        if (p.has_shift == 1u) {
            shift = load_shift(i);
        }
        y[base + i] = (x[base + i] - mean) * inv * load_gain(i) + shift;
    }
}
