// shaders/workgroup.wgsl — sums and maxima over one workgroup, shared by the softmax, k-means and
// norm kernels. Prepended: WG (threads per workgroup, a power of two). Every thread of the workgroup
// calls them; each returns the same value to all threads through workgroupUniformLoad, so a
// kernel may branch or loop on the result around further barriers (the bisection of entmax).

// The lowest finite f32: the identity of a maximum (WGSL has no infinity literal).
const LOWEST: f32 = -3.4028234663852886e38;

var<workgroup> partial: array<f32, WG>;

// Tree reduction of each thread's `value` with `op` (0 sum, 1 maximum) in workgroup memory.
fn workgroup_reduce(lid: u32, value: f32, op: u32) -> f32 {
    partial[lid] = value;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            let other = partial[lid + stride];
            partial[lid] = select(partial[lid] + other, max(partial[lid], other), op == 1u);
        }
        workgroupBarrier();
    }
    let total = workgroupUniformLoad(&partial[0]);
    // The next reduction overwrites partial[0]: every thread has read it first.
    workgroupBarrier();
    return total;
}

fn workgroup_sum(lid: u32, value: f32) -> f32 {
    return workgroup_reduce(lid, value, 0u);
}

fn workgroup_max(lid: u32, value: f32) -> f32 {
    return workgroup_reduce(lid, value, 1u);
}
