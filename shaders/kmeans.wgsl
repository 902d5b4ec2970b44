// shaders/kmeans.wgsl — differentiable k-means forward (src/layers/kmeans.rs defines it), one
// workgroup per sample: a = softmax(−‖x − c_k‖² / 2τ²) over the K centroids, then the output a
// ("probabilities") or Σ_k a_k c_k ("features"), activated. Prepended: WG, shaders/workgroup.wgsl,
// shaders/activation.wgsl and the loader of tensor `c` at binding 2 (shaders/weights.wgsl).
// The CPU forms the logits in f64 from ‖x‖², x·c_k and ‖c_k‖²; here each distance is summed
// directly in f32 (no cancellation), which keeps parity within 1e-5. Samples fold into y past
// the grid limit.

struct Params {
    rows: u32,
    features: u32,
    clusters: u32,
    features_out: u32,
    activation: u32,
    // 1 / (2τ²)
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
// The assignments of every sample, [rows][K] (scratch: logits, then exponentials, then a).
@group(0) @binding(3) var<storage, read_write> a: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
) {
    let lid = local.x;
    let r = group.x + group.y * groups.x;
    if (r >= p.rows) {
        return;
    }
    let f_count = p.features;
    let k_count = p.clusters;
    let xr = r * f_count;
    let ar = r * k_count;
    // Each thread keeps its own clusters' values in a, so these passes need no barrier.
    var m = LOWEST;
    for (var k = lid; k < k_count; k += WG) {
        var distance = 0.0;
        for (var f = 0u; f < f_count; f++) {
            let d = x[xr + f] - load_c(k * f_count + f);
            distance += d * d;
        }
        let logit = -distance * p.scale;
        a[ar + k] = logit;
        m = max(m, logit);
    }
    m = workgroup_max(lid, m);
    var s = 0.0;
    for (var k = lid; k < k_count; k += WG) {
        let e = exp(a[ar + k] - m);
        a[ar + k] = e;
        s += e;
    }
    s = workgroup_sum(lid, s);
    for (var k = lid; k < k_count; k += WG) {
        let v = a[ar + k] / s;
        a[ar + k] = v;
        if (p.features_out == 0u) {
            y[ar + k] = activate(v, p.activation);
        }
    }
    if (p.features_out == 1u) {
        // Every thread reads every cluster's assignment now.
        storageBarrier();
        for (var f = lid; f < f_count; f += WG) {
            var v = 0.0;
            for (var k = 0u; k < k_count; k++) {
                v += a[ar + k] * load_c(k * f_count + f);
            }
            y[xr + f] = activate(v, p.activation);
        }
    }
}
