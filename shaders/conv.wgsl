// shaders/conv.wgsl — convolution and transposed convolution over 1–3 channels-first spatial axes
// as an implicit GEMM: y[b, f, p] = act(Σ_k patch[b·P + p, k]·W[f, k] + bias[f]), k = c·taps + t.
// The patch matrix is never built: each value is read from x as it is staged, through the rule of
// kernels::conv::Geometry along every axis (conv: input o·s + t − pad; transposed: (o + pad − t)/s
// where s divides it exactly; outside the input: zero). Prepended by src/gpu/conv.rs: the tile constants WG_M,
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

// Index tables, so staging a patch value takes no division: for each row of the tile, where its
// sample starts in x (NONE past the last row) and its output index along each axis; for each
// staged column, where its channel starts within a sample (NONE past the last column) and its
// kernel tap along each axis. Axes are fastest first.
const NONE: u32 = 0xFFFFFFFFu;
var<workgroup> row_base: array<u32, BM>;
var<workgroup> row_out: array<vec4<u32>, BM>;
var<workgroup> col_base: array<u32, TK>;
var<workgroup> col_tap: array<vec4<u32>, TK>;

// `index` (row-major over the axes) split into its index along each axis of `sizes`.
fn split(index: u32, sizes: vec4<u32>) -> vec4<u32> {
    var rest = index;
    var parts = vec4<u32>(0u);
    for (var a = 0u; a < p.axes; a++) {
        parts[a] = rest % sizes[a];
        rest = rest / sizes[a];
    }
    return parts;
}

// The offset within one input channel that output index `o` reads through tap `t`, or NONE when
// the tap falls on padding.
fn source(o: vec4<u32>, t: vec4<u32>) -> u32 {
    var offset = 0u;
    var step = 1u;
    for (var a = 0u; a < p.axes; a++) {
        var i: u32;
        if (p.transposed == 1u) {
            let shifted = o[a] + p.padding;
            if (shifted < t[a] || (shifted - t[a]) % p.stride != 0u) {
                return NONE;
            }
            i = (shifted - t[a]) / p.stride;
        } else {
            let shifted = o[a] * p.stride + t[a];
            if (shifted < p.padding) {
                return NONE;
            }
            i = shifted - p.padding;
        }
        if (i >= p.input[a]) {
            return NONE;
        }
        offset += i * step;
        step *= p.input[a];
    }
    return offset;
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

    for (var r = thread; r < BM; r += THREADS) {
        let m = m0 + r;
        var base = NONE;
        if (m < p.rows) {
            base = (m / p.out_len) * p.channels * p.in_len;
            row_out[r] = split(m % p.out_len, p.output);
        }
        row_base[r] = base;
    }

    for (var k0 = 0u; k0 < p.width; k0 += TK) {
        for (var c = thread; c < TK; c += THREADS) {
            let k = k0 + c;
            var base = NONE;
            if (k < p.width) {
                base = (k / p.taps) * p.in_len;
                col_tap[c] = split(k % p.taps, vec4<u32>(p.kernel));
            }
            col_base[c] = base;
        }
        workgroupBarrier();
        // Consecutive threads take consecutive rows: neighbouring output positions read
        // neighbouring input values.
        for (var l = thread; l < TK * BM; l += THREADS) {
            let r = l % BM;
            let c = l / BM;
            var v = 0.0;
            if (row_base[r] != NONE && col_base[c] != NONE) {
                let s = source(row_out[r], col_tap[c]);
                if (s != NONE) {
                    v = x[row_base[r] + col_base[c] + s];
                }
            }
            xs[l] = v;
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
        // The next column tables and tiles overwrite what this step read.
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
