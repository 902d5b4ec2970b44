// shaders/swiglu.wgsl — the gate and up projections of SwiGLU fused with its product:
// a[b, o] = act(Σ_i x[b, i]·Wg[o, i] + bg[o]) · (Σ_i x[b, i]·Wu[o, i] + bu[o]), act = SiLU or ReLU²
// (by code, shaders/activation.wgsl). The tiling of shaders/dense.wgsl with two weight tiles: one
// pass over x feeds both products. Prepended by src/gpu/swiglu.rs: the tile constants WG_X, WG_Y,
// RM, RN, TK, the loaders load_gate and load_up (shaders/weights.wgsl, bindings 2 and 3) and
// shaders/activation.wgsl. Every thread reaches every barrier; loads and stores are
// bounds-checked instead.

struct Params {
    rows: u32,
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
@group(0) @binding(4) var<storage, read> gate_bias: array<f32>;
@group(0) @binding(5) var<storage, read> up_bias: array<f32>;
@group(0) @binding(6) var<storage, read_write> a: array<f32>;

const BM: u32 = WG_Y * RM;
const BN: u32 = WG_X * RN;
const THREADS: u32 = WG_X * WG_Y;

var<workgroup> xs: array<f32, TK * BM>;
var<workgroup> gs: array<f32, TK * BN>;
var<workgroup> us: array<f32, TK * BN>;

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) thread: u32,
) {
    let k_total = params.in_features;
    let m0 = group.y * BM;
    let n0 = group.x * BN;
    var gate: array<f32, RM * RN>;
    var up: array<f32, RM * RN>;
    var xr: array<f32, RM>;

    for (var k0 = 0u; k0 < k_total; k0 += TK) {
        // Consecutive threads take consecutive k of one row: coalesced global reads.
        for (var l = thread; l < TK * BM; l += THREADS) {
            let m = m0 + l / TK;
            let k = k0 + l % TK;
            var v = 0.0;
            if (m < params.rows && k < k_total) {
                v = x[m * k_total + k];
            }
            xs[(l % TK) * BM + l / TK] = v;
        }
        for (var l = thread; l < TK * BN; l += THREADS) {
            let n = n0 + l / TK;
            let k = k0 + l % TK;
            var g = 0.0;
            var u = 0.0;
            if (n < params.out_features && k < k_total) {
                g = load_gate(n * k_total + k);
                u = load_up(n * k_total + k);
            }
            gs[(l % TK) * BN + l / TK] = g;
            us[(l % TK) * BN + l / TK] = u;
        }
        workgroupBarrier();
        for (var k = 0u; k < TK; k++) {
            for (var i = 0u; i < RM; i++) {
                xr[i] = xs[k * BM + local.y + i * WG_Y];
            }
            for (var j = 0u; j < RN; j++) {
                let g = gs[k * BN + local.x + j * WG_X];
                let u = us[k * BN + local.x + j * WG_X];
                for (var i = 0u; i < RM; i++) {
                    gate[i * RN + j] += xr[i] * g;
                    up[i * RN + j] += xr[i] * u;
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < RM; i++) {
        let m = m0 + local.y + i * WG_Y;
        for (var j = 0u; j < RN; j++) {
            let n = n0 + local.x + j * WG_X;
            if (m < params.rows && n < params.out_features) {
                var g = gate[i * RN + j];
                var u = up[i * RN + j];
                if (params.has_bias != 0u) {
                    g += gate_bias[n];
                    u += up_bias[n];
                }
                a[m * params.out_features + n] = activate(g, params.activation) * u;
            }
        }
    }
}
