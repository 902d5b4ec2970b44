// shaders/dense.wgsl — tiled dense forward: y[b, o] = act(Σ_i x[b, i]·W[o, i] + bias[o]), and
// with GATED SwiGLU's fused gate/up: y = act(x·W_gate + b_gate)·(x·W_up + b_up), one pass over x
// feeding both products. Prepended by src/gpu/dense.rs: the tile constants WG_X, WG_Y, RM, RN,
// TK, GATED, the weight loader of shaders/weights.wgsl for tensor `w` at binding 2
// (`load_w(flat index)`), `load_up` and `up_bias` (the up tensor at 5 and its bias at 6 when
// GATED, zeros otherwise) and shaders/activation.wgsl.
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
var<workgroup> us: array<f32, TK * BN * GATED + 1u>;

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
    var acc_up: array<f32, RM * RN>;
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
            var u = 0.0;
            if (n < params.out_features && k < k_total) {
                v = load_w(n * k_total + k);
                if (GATED == 1u) {
                    u = load_up(n * k_total + k);
                }
            }
            ws[(l % TK) * BN + l / TK] = v;
            if (GATED == 1u) {
                us[(l % TK) * BN + l / TK] = u;
            }
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
                if (GATED == 1u) {
                    let u = us[k * BN + local.x + j * WG_X];
                    for (var i = 0u; i < RM; i++) {
                        acc_up[i * RN + j] += a[i] * u;
                    }
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
                var u = acc_up[i * RN + j];
                if (params.has_bias != 0u) {
                    v += bias[n];
                    u += up_bias(n);
                }
                v = activate(v, params.activation);
                if (GATED == 1u) {
                    v *= u;
                }
                y[m * params.out_features + n] = v;
            }
        }
    }
}
