// shaders/attention.wgsl — softmax attention of a batch of query rows over their item's keys, as
// src/kernels/attention.rs defines it: scores scale·q·k, grouped KV heads (query head h reads KV
// head h / group), keys after a query's own position masked when causal, outputs concatenated
// per head [item·rows][q_width]. One workgroup per (item, head, block of BQ query rows); keys pass
// through workgroup memory BK at a time with a streaming (online) softmax: each row keeps its
// running maximum and sum, and rescales its accumulated output when the maximum grows.
// Keys 0..past come from the cache buffer (item-major keys, then values), the rest from this
// call's k and v. Prepended by src/gpu/attention.rs: HD (head_dim), BQ, BK, WG (threads).
// Every thread reaches every barrier; loads and stores are bounds-checked instead.

struct Params {
    rows: u32,
    past: u32,
    heads: u32,
    group: u32,
    q_width: u32,
    kv_width: u32,
    causal: u32,
    blocks: u32,
    scale: f32,
    items: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> cached: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

// Below every real score: marks masked keys and starts each row's maximum.
const MASKED: f32 = -3.0e38;
// Output entries (row, dim) of the block each thread accumulates.
const PER_THREAD: u32 = (BQ * HD + WG - 1u) / WG;

var<workgroup> qs: array<f32, BQ * HD>;
var<workgroup> ks: array<f32, BK * HD>;
var<workgroup> vs: array<f32, BK * HD>;
var<workgroup> scores: array<f32, BQ * BK>;
var<workgroup> row_max: array<f32, BQ>;
var<workgroup> row_sum: array<f32, BQ>;
var<workgroup> row_rescale: array<f32, BQ>;

// Element d of KV head g of key j of item b (0 ≤ j < past + rows).
fn key(b: u32, j: u32, g: u32, d: u32) -> f32 {
    if (j < p.past) {
        return cached[(b * p.past + j) * p.kv_width + g * HD + d];
    }
    return k[(b * p.rows + j - p.past) * p.kv_width + g * HD + d];
}

fn value(b: u32, j: u32, g: u32, d: u32) -> f32 {
    if (j < p.past) {
        return cached[((p.items + b) * p.past + j) * p.kv_width + g * HD + d];
    }
    return v[(b * p.rows + j - p.past) * p.kv_width + g * HD + d];
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let id = wg.x + wg.y * groups.x;
    if (id >= p.items * p.heads * p.blocks) {
        return;
    }
    let block = id % p.blocks;
    let h = (id / p.blocks) % p.heads;
    let b = id / (p.blocks * p.heads);
    let g = h / p.group;
    let r0 = block * BQ;
    let n = min(BQ, p.rows - r0);
    let keys = p.past + p.rows;
    // The block's last row (position past + r0 + n − 1) sees the most keys.
    var limit = keys;
    if (p.causal != 0u) {
        limit = min(p.past + r0 + n, keys);
    }

    for (var l = tid; l < BQ * HD; l += WG) {
        let r = l / HD;
        var x = 0.0;
        if (r < n) {
            x = q[(b * p.rows + r0 + r) * p.q_width + h * HD + l % HD];
        }
        qs[l] = x;
    }
    if (tid < BQ) {
        row_max[tid] = MASKED;
        row_sum[tid] = 0.0;
    }
    var acc: array<f32, PER_THREAD>;

    for (var k0 = 0u; k0 < limit; k0 += BK) {
        // The previous tile's readers are done with ks, vs and scores.
        workgroupBarrier();
        for (var l = tid; l < BK * HD; l += WG) {
            let j = k0 + l / HD;
            var kx = 0.0;
            var vx = 0.0;
            if (j < limit) {
                kx = key(b, j, g, l % HD);
                vx = value(b, j, g, l % HD);
            }
            ks[l] = kx;
            vs[l] = vx;
        }
        workgroupBarrier();
        for (var l = tid; l < BQ * BK; l += WG) {
            let r = l / BK;
            let c = l % BK;
            var visible = keys;
            if (p.causal != 0u) {
                visible = min(p.past + r0 + r + 1u, keys);
            }
            var s = MASKED;
            if (r < n && k0 + c < visible) {
                var dot = 0.0;
                for (var d = 0u; d < HD; d++) {
                    dot += qs[r * HD + d] * ks[c * HD + d];
                }
                s = p.scale * dot;
            }
            scores[l] = s;
        }
        workgroupBarrier();
        // One thread per row: the new maximum, the tile's weights e^(s − max), the rescaled sum.
        if (tid < BQ) {
            let old = row_max[tid];
            var m = old;
            for (var c = 0u; c < BK; c++) {
                m = max(m, scores[tid * BK + c]);
            }
            var sum = 0.0;
            for (var c = 0u; c < BK; c++) {
                let s = scores[tid * BK + c];
                let e = select(0.0, exp(s - m), s > MASKED);
                scores[tid * BK + c] = e;
                sum += e;
            }
            // A row's first visible tile turns the start value into its real maximum: e^(−∞) = 0.
            let rescale = exp(old - m);
            row_rescale[tid] = rescale;
            row_sum[tid] = row_sum[tid] * rescale + sum;
            row_max[tid] = m;
        }
        workgroupBarrier();
        for (var i = 0u; i < PER_THREAD; i++) {
            let e = tid + i * WG;
            if (e < BQ * HD) {
                let r = e / HD;
                let d = e % HD;
                var a = acc[i] * row_rescale[r];
                for (var c = 0u; c < BK; c++) {
                    a += scores[r * BK + c] * vs[c * HD + d];
                }
                acc[i] = a;
            }
        }
    }

    workgroupBarrier();
    for (var i = 0u; i < PER_THREAD; i++) {
        let e = tid + i * WG;
        let r = e / HD;
        if (e < BQ * HD && r < n) {
            out[(b * p.rows + r0 + r) * p.q_width + h * HD + e % HD] = acc[i] / row_sum[r];
        }
    }
}
