// shaders/dense.wgsl — tiled dense forward: y[b, o] = act(Σ_i x[b, i]·W[o, i] + bias[o]).
// Prepended by src/gpu/dense.rs: the tile constants WG_X, WG_Y, RM, RN, TK, the weight loader
// of shaders/weights.wgsl for tensor `w` at binding 2 (`load_w(flat index)`) and shaders/activation.wgsl.
// A workgroup computes a BM × BN output tile; thread (tx, ty) owns rows ty + i·WG_Y and columns
// tx + j·WG_X. x and W pass through shared memory TK columns of K at a time, stored k-major so
// the inner loop reads consecutive addresses across threads. Every thread reaches every barrier;
// loads and stores are bounds-checked instead.

struct Params {
    batch: u32,
    in_features: u32,
    out_features: u32,
    activation: u32,
    has_bias: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const BM: u32 = WG_Y * RM;
const BN: u32 = WG_X * RN;
const THREADS: u32 = WG_X * WG_Y;

var<workgroup> xs: array<f32, TK * BM>;
var<workgroup> ws: array<f32, TK * BN>;

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) thread: u32,
) {
    let k_total = params.in_features;
    let m0 = group.y * BM;
    let n0 = group.x * BN;
    var acc: array<f32, RM * RN>;
    var a: array<f32, RM>;

    for (var k0 = 0u; k0 < k_total; k0 += TK) {
        // Consecutive threads take consecutive k of one row: coalesced global reads.
        for (var l = thread; l < TK * BM; l += THREADS) {
            let m = m0 + l / TK;
            let k = k0 + l % TK;
            var v = 0.0;
            if (m < params.batch && k < k_total) {
                v = x[m * k_total + k];
            }
            xs[(l % TK) * BM + l / TK] = v;
        }
        for (var l = thread; l < TK * BN; l += THREADS) {
            let n = n0 + l / TK;
            let k = k0 + l % TK;
            var v = 0.0;
            if (n < params.out_features && k < k_total) {
                v = load_w(n * k_total + k);
            }
            ws[(l % TK) * BN + l / TK] = v;
        }
        workgroupBarrier();
        for (var k = 0u; k < TK; k++) {
            for (var i = 0u; i < RM; i++) {
                a[i] = xs[k * BM + local.y + i * WG_Y];
            }
            for (var j = 0u; j < RN; j++) {
                let b = ws[k * BN + local.x + j * WG_X];
                for (var i = 0u; i < RM; i++) {
                    acc[i * RN + j] += a[i] * b;
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < RM; i++) {
        let m = m0 + local.y + i * WG_Y;
        for (var j = 0u; j < RN; j++) {
            let n = n0 + local.x + j * WG_X;
            if (m < params.batch && n < params.out_features) {
                var v = acc[i * RN + j];
                if (params.has_bias != 0u) {
                    v += bias[n];
                }
                y[m * params.out_features + n] = activate(v, params.activation);
            }
        }
    }
}
