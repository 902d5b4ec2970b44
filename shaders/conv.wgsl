// shaders/conv.wgsl — convolution and transposed convolution over 1–3 channels-first spatial axes
// as an implicit GEMM: y[b, f, p] = act(Σ_k patch[b·P + p, k]·W[f, k] + bias[f]), k = c·taps + t.
// The patch matrix is never built: each value is read from x as it is staged, through the rule of
// kernels::conv::Geometry (conv: input o·s + t − pad; transposed: (o + pad − t)/s where s divides
// it exactly; outside the input: zero). Prepended by src/gpu/conv.rs: the tile constants WG_M,
// WG_N, RM, RN, TK, the loaders load_w (binding 2) and load_bias (binding 3) of
// shaders/weights.wgsl, and shaders/activation.wgsl.
// A workgroup computes a BM (rows: sample × output position) × BN (filters) tile; thread (tx, ty)
// owns rows tx + i·WG_M and filters ty + j·WG_N, so neighbouring threads store neighbouring
// output positions of one channels-first plane. Tiles fold into y past the grid limit.

struct Params {
    // Spatial sizes, fastest axis first (unused axes are 1).
    input: vec4<u32>,
    output: vec4<u32>,
    channels: u32,
    filters: u32,
    axes: u32,
    kernel: u32,
    stride: u32,
    padding: u32,
    transposed: u32,
    taps: u32,
    activation: u32,
    has_bias: u32,
    rows: u32,
    width: u32,
    in_len: u32,
    out_len: u32,
    filter_tiles: u32,
    tiles: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const BM: u32 = WG_M * RM;
const BN: u32 = WG_N * RN;
const THREADS: u32 = WG_M * WG_N;

var<workgroup> xs: array<f32, TK * BM>;
var<workgroup> ws: array<f32, TK * BN>;

// The offset within one input channel that output position `position` reads through kernel tap
// `tap` (both row-major over the axes), or in_len when the tap falls on padding.
fn source(position: u32, tap: u32) -> u32 {
    var pos = position;
    var rest = tap;
    var offset = 0u;
    var step = 1u;
    for (var a = 0u; a < p.axes; a++) {
        let o = pos % p.output[a];
        pos = pos / p.output[a];
        let t = rest % p.kernel;
        rest = rest / p.kernel;
        var i: u32;
        if (p.transposed == 1u) {
            let shifted = o + p.padding;
            if (shifted < t || (shifted - t) % p.stride != 0u) {
                return p.in_len;
            }
            i = (shifted - t) / p.stride;
        } else {
            let shifted = o * p.stride + t;
            if (shifted < p.padding) {
                return p.in_len;
            }
            i = shifted - p.padding;
        }
        if (i >= p.input[a]) {
            return p.in_len;
        }
        offset += i * step;
        step *= p.input[a];
    }
    return offset;
}

// Patch value (row m, column k): 0 outside the matrix and on padding taps.
fn patch_value(m: u32, k: u32) -> f32 {
    if (m >= p.rows || k >= p.width) {
        return 0.0;
    }
    let s = source(m % p.out_len, k % p.taps);
    if (s >= p.in_len) {
        return 0.0;
    }
    return x[((m / p.out_len) * p.channels + k / p.taps) * p.in_len + s];
}

@compute @workgroup_size(WG_M, WG_N, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) thread: u32,
) {
    let tile = group.x + group.y * groups.x;
    if (tile >= p.tiles) {
        return;
    }
    // Neighbouring workgroups share patch rows (the filter tile varies fastest).
    let m0 = (tile / p.filter_tiles) * BM;
    let n0 = (tile % p.filter_tiles) * BN;
    var acc: array<f32, RM * RN>;
    var a: array<f32, RM>;

    for (var k0 = 0u; k0 < p.width; k0 += TK) {
        // Consecutive threads take consecutive rows: neighbouring output positions read
        // neighbouring input values.
        for (var l = thread; l < TK * BM; l += THREADS) {
            xs[l] = patch_value(m0 + l % BM, k0 + l / BM);
        }
        // Consecutive threads take consecutive k of one filter: consecutive weights.
        for (var l = thread; l < TK * BN; l += THREADS) {
            let n = n0 + l / TK;
            let k = k0 + l % TK;
            var v = 0.0;
            if (n < p.filters && k < p.width) {
                v = load_w(n * p.width + k);
            }
            ws[(l % TK) * BN + l / TK] = v;
        }
        workgroupBarrier();
        for (var k = 0u; k < TK; k++) {
            for (var i = 0u; i < RM; i++) {
                a[i] = xs[k * BM + local.x + i * WG_M];
            }
            for (var j = 0u; j < RN; j++) {
                let b = ws[k * BN + local.y + j * WG_N];
                for (var i = 0u; i < RM; i++) {
                    acc[i * RN + j] += a[i] * b;
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < RM; i++) {
        let m = m0 + local.x + i * WG_M;
        if (m >= p.rows) {
            continue;
        }
        let sample = m / p.out_len;
        let position = m % p.out_len;
        for (var j = 0u; j < RN; j++) {
            let n = n0 + local.y + j * WG_N;
            if (n < p.filters) {
                var v = acc[i * RN + j];
                if (p.has_bias == 1u) {
                    v += load_bias(n);
                }
                y[(sample * p.filters + n) * p.out_len + position] = activate(v, p.activation);
            }
        }
    }
}
