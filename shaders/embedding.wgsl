// shaders/embedding.wgsl — embedding lookup: y[p, j] = act(table[ids[p], j]), one thread per
// output value, the table decoded in the shader from its packed version. Prepended: WG,
// shaders/activation.wgsl and the loader of tensor `table` at binding 2 (shaders/weights.wgsl).
// Workgroups fold into y past the grid limit.

struct Params {
    positions: u32,
    dim: u32,
    activation: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
) {
    let e = (group.x + group.y * groups.x) * WG + local.x;
    if (e >= p.positions * p.dim) {
        return;
    }
    let position = e / p.dim;
    y[e] = activate(load_table(ids[position] * p.dim + e % p.dim), p.activation);
}
