// shaders/rope.wgsl — the step between the Q/K/V projections and attention, as
// src/kernels/attention.rs computes it: each head of q and k RMS-normalised and scaled by its gain
// (when the layer has Q/K norm), then turned by RoPE with half-split pairing (element i < hd/2
// with i + hd/2; an odd last element stays), in place. When `export_kv` is set, the new keys and
// values are also copied after the output rows of `result` (for the caller's KV cache).
// One thread per (row, head slot): slots 0..heads are query heads, the rest KV heads. Prepended
// by src/gpu/attention.rs: WG and the loaders load_q_gain / load_k_gain (bindings 6 and 7).
// The angle table holds cos, then sin, of position (first + s)·base^(−2i/hd) for [s][i].

struct Params {
    rows: u32,
    seq: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    qk_norm: u32,
    epsilon: f32,
    export_kv: u32,
    export_at: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> q: array<f32>;
@group(0) @binding(2) var<storage, read_write> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> angles: array<f32>;
@group(0) @binding(5) var<storage, read_write> result: array<f32>;

// WGSL passes no storage pointers: the head's tensor is chosen by a flag.
fn read_head(is_q: bool, i: u32) -> f32 {
    if (is_q) {
        return q[i];
    }
    return k[i];
}

fn write_head(is_q: bool, i: u32, x: f32) {
    if (is_q) {
        q[i] = x;
    } else {
        k[i] = x;
    }
}

fn head_gain(is_q: bool, i: u32) -> f32 {
    if (is_q) {
        return load_q_gain(i);
    }
    return load_k_gain(i);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let slots = p.heads + p.kv_heads;
    let t = (wg.x + wg.y * groups.x) * WG + lid;
    if (t >= p.rows * slots) {
        return;
    }
    let row = t / slots;
    let slot = t % slots;
    let is_q = slot < p.heads;
    let hd = p.head_dim;
    var base = row * p.heads * hd + slot * hd;
    if (!is_q) {
        base = (row * p.kv_heads + slot - p.heads) * hd;
    }

    // 1/rms of the head, or 1 without the norm (then no multiply touches the values).
    var inv = 1.0;
    if (p.qk_norm != 0u) {
        var squares = 0.0;
        for (var i = 0u; i < hd; i++) {
            let x = read_head(is_q, base + i);
            squares += x * x;
        }
        inv = 1.0 / sqrt(squares / f32(hd) + p.epsilon);
    }
    let half = hd / 2u;
    let s = row % p.seq;
    for (var i = 0u; i < hd - half; i++) {
        // i < half: the pair (i, i + half); past it, the unpaired last element of an odd head.
        let lo = select(hd - 1u, i, i < half);
        var a = read_head(is_q, base + lo);
        if (p.qk_norm != 0u) {
            a = a * inv * head_gain(is_q, lo);
        }
        if (i == half) {
            write_head(is_q, base + lo, a);
            continue;
        }
        var b = read_head(is_q, base + i + half);
        if (p.qk_norm != 0u) {
            b = b * inv * head_gain(is_q, i + half);
        }
        let c = angles[s * half + i];
        let sn = angles[(p.seq + s) * half + i];
        write_head(is_q, base + i, a * c - b * sn);
        write_head(is_q, base + i + half, a * sn + b * c);
    }

    if (p.export_kv != 0u && !is_q) {
        let kv_rows = p.rows * p.kv_heads * hd;
        for (var i = 0u; i < hd; i++) {
            result[p.export_at + base + i] = k[base + i];
            result[p.export_at + kv_rows + base + i] = v[base + i];
        }
    }
}
