// shaders/softmax.wgsl — the Softmax layer's ten variants (src/layers/softmax.rs defines them),
// one workgroup per normalised vector ("domain") of `len` values; domains fold into y past the
// grid limit. Prepended: WG and shaders/workgroup.wgsl. The CPU maps each domain in f64; here
// it is f32 throughout, which keeps parity within 1e-5 (relative to the largest probability).
// Kinds (src/gpu/softmax.rs `SoftmaxMap`): 0 softmax (standard, grid, temperature, Gumbel, masked
// when `has_mask`, entmax α = 1), 1 adaptive, 2 mixture, 3 hierarchical, 4 sparsemax, 5 1.5-entmax,
// 6 α-entmax by bisection. The sparse maps renormalise like the CPU's entmax (the sum is 1 up
// to rounding for sparsemax, which the CPU leaves as is).

struct Params {
    domains: u32,
    len: u32,
    kind: u32,
    group: u32,
    temperature: f32,
    alpha: f32,
    has_noise: u32,
    has_mask: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> noise: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// Adaptive: the per-row temperature never falls below T·this (src/layers/softmax.rs MIN_SPREAD).
const MIN_SPREAD: f32 = 1e-6;

var<private> base: u32;
var<private> lid: u32;
// The logits are z = x_at(i) / scale: scale is T, or T·σ for the adaptive variant.
var<private> scale: f32;

// Value i of this domain (plus its Gumbel noise, drawn on the CPU as the CPU path draws it).
fn x_at(i: u32) -> f32 {
    var v = x[base + i];
    if (p.has_noise == 1u) {
        v += noise[base + i];
    }
    return v;
}

fn z(i: u32) -> f32 {
    return x_at(i) / scale;
}

fn kept(i: u32) -> bool {
    return p.has_mask == 0u || mask[i] != 0u;
}

// softmax(z) over the kept positions; masked positions get 0.
fn softmax_map() {
    var m = LOWEST;
    for (var i = lid; i < p.len; i += WG) {
        if (kept(i)) {
            m = max(m, z(i));
        }
    }
    m = workgroup_max(lid, m);
    var s = 0.0;
    for (var i = lid; i < p.len; i += WG) {
        if (kept(i)) {
            s += exp(z(i) - m);
        }
    }
    s = workgroup_sum(lid, s);
    for (var i = lid; i < p.len; i += WG) {
        y[base + i] = select(0.0, exp(z(i) - m) / s, kept(i));
    }
}

// σ = max(std, 1e-6) from the population standard deviation of the domain (two passes).
fn spread() -> f32 {
    let n = f32(p.len);
    var s = 0.0;
    for (var i = lid; i < p.len; i += WG) {
        s += x_at(i);
    }
    let mean = workgroup_sum(lid, s) / n;
    var squares = 0.0;
    for (var i = lid; i < p.len; i += WG) {
        let d = x_at(i) - mean;
        squares += d * d;
    }
    return max(sqrt(workgroup_sum(lid, squares) / n), MIN_SPREAD);
}

// The mean of softmax(z / f) over the factors f = 0.5, 1, 2; max(z / f) = max(z) / f.
fn mixture_map() {
    var m = LOWEST;
    for (var i = lid; i < p.len; i += WG) {
        m = max(m, z(i));
    }
    m = workgroup_max(lid, m);
    var s = vec3<f32>(0.0);
    for (var i = lid; i < p.len; i += WG) {
        let d = z(i) - m;
        s += exp(vec3<f32>(d / 0.5, d, d / 2.0));
    }
    s = vec3<f32>(workgroup_sum(lid, s.x), workgroup_sum(lid, s.y), workgroup_sum(lid, s.z));
    for (var i = lid; i < p.len; i += WG) {
        let d = z(i) - m;
        let parts = exp(vec3<f32>(d / 0.5, d, d / 2.0)) / s;
        y[base + i] = (parts.x + parts.y + parts.z) / 3.0;
    }
}

fn group_mean(g: u32) -> f32 {
    var s = 0.0;
    for (var i = g * p.group; i < (g + 1u) * p.group; i++) {
        s += z(i);
    }
    return s / f32(p.group);
}

// p = q_g · r_gi: q = softmax over the groups of their means, r_g = softmax within group g. One
// thread per group (hierarchy groups are short); the groups' q through workgroup reductions.
fn hierarchical_map() {
    let groups = p.len / p.group;
    var m = LOWEST;
    for (var g = lid; g < groups; g += WG) {
        m = max(m, group_mean(g));
    }
    m = workgroup_max(lid, m);
    var s = 0.0;
    for (var g = lid; g < groups; g += WG) {
        s += exp(group_mean(g) - m);
    }
    s = workgroup_sum(lid, s);
    for (var g = lid; g < groups; g += WG) {
        let q = exp(group_mean(g) - m) / s;
        let first = g * p.group;
        let last = first + p.group;
        var gm = LOWEST;
        for (var i = first; i < last; i++) {
            gm = max(gm, z(i));
        }
        var gs = 0.0;
        for (var i = first; i < last; i++) {
            gs += exp(z(i) - gm);
        }
        for (var i = first; i < last; i++) {
            y[base + i] = q * exp(z(i) - gm) / gs;
        }
    }
}

// d^(1/(α−1)) for d > 0, else 0; exact for sparsemax and 1.5-entmax (pow goes through log2).
fn entmax_power(d: f32, power: f32) -> f32 {
    if (d <= 0.0) {
        return 0.0;
    }
    switch p.kind {
        case 4u: {
            return d;
        }
        case 5u: {
            return d * d;
        }
        default: {
            return pow(d, power);
        }
    }
}

// α-entmax on v = (α − 1)·(z − max z): p = max(v − τ, 0)^(1/(α−1)) with Σ p = 1. τ lies in
// [−1, −(1/n)^(α−1)] and is bisected until the interval stops shrinking, as on the CPU. For
// α = 2 (sparsemax) and 1.5 the exact τ then comes from the support {v > τ} in closed form (the
// CPU finds the same support by sorting); other α use the bisected τ, as the CPU does.
fn entmax_map(alpha: f32) {
    var m = LOWEST;
    for (var i = lid; i < p.len; i += WG) {
        m = max(m, z(i));
    }
    m = workgroup_max(lid, m);
    let power = 1.0 / (alpha - 1.0);
    var lo = -1.0;
    var hi = -pow(1.0 / f32(p.len), alpha - 1.0);
    // At most 2^8 halvings: f32 runs out of values between lo and hi long before.
    for (var step = 0u; step < 256u; step++) {
        let mid = 0.5 * (lo + hi);
        if (mid <= lo || mid >= hi) {
            break;
        }
        var mass = 0.0;
        for (var i = lid; i < p.len; i += WG) {
            mass += entmax_power((alpha - 1.0) * (z(i) - m) - mid, power);
        }
        if (workgroup_sum(lid, mass) >= 1.0) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    var tau = lo;
    if (p.kind != 6u) {
        var k = 0.0;
        var s = 0.0;
        for (var i = lid; i < p.len; i += WG) {
            let v = (alpha - 1.0) * (z(i) - m);
            if (v > lo) {
                k += 1.0;
                s += v;
            }
        }
        k = workgroup_sum(lid, k);
        s = workgroup_sum(lid, s);
        if (p.kind == 4u) {
            tau = (s - 1.0) / k;
        } else {
            // τ = mean − √((1 − k·var)/k) over the support, the variance centred (f32 keeps it).
            let mean = s / k;
            var squares = 0.0;
            for (var i = lid; i < p.len; i += WG) {
                let v = (alpha - 1.0) * (z(i) - m);
                if (v > lo) {
                    squares += (v - mean) * (v - mean);
                }
            }
            let variance = workgroup_sum(lid, squares) / k;
            tau = mean - sqrt(max((1.0 - k * variance) / k, 0.0));
        }
    }
    var total = 0.0;
    for (var i = lid; i < p.len; i += WG) {
        let v = entmax_power((alpha - 1.0) * (z(i) - m) - tau, power);
        y[base + i] = v;
        total += v;
    }
    total = workgroup_sum(lid, total);
    for (var i = lid; i < p.len; i += WG) {
        y[base + i] = y[base + i] / total;
    }
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
) {
    let d = group.x + group.y * groups.x;
    if (d >= p.domains) {
        return;
    }
    base = d * p.len;
    lid = local.x;
    scale = p.temperature;
    switch p.kind {
        case 0u: {
            softmax_map();
        }
        case 1u: {
            scale = p.temperature * spread();
            softmax_map();
        }
        case 2u: {
            mixture_map();
        }
        case 3u: {
            hierarchical_map();
        }
        case 4u: {
            entmax_map(2.0);
        }
        case 5u: {
            entmax_map(1.5);
        }
        default: {
            entmax_map(p.alpha);
        }
    }
}
