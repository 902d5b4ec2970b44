// shaders/decoder_epilogue.wgsl — the output stage of a decoder's many-row products, shared by
// decoder_tiles.wgsl (a product whose K is not split) and decoder_tiles_reduce.wgsl (after a
// split), with the parameters both read. MODE 0 store (+ bias), 1 add into Y (+ bias: the
// residual), 2 SwiGLU silu(a)·b, 3 [a | b | c] (+ bias); every sum first times its row's RMSNorm
// scale r (1 without NORM). Prepended: K, MODE, HAS_BIAS, NORM.

struct Params {
    // Output columns: the rows of W (a's for MODE 2, all three matrices' for MODE 3).
    n: u32,
    a_rows: u32,
    b_rows: u32,
    epsilon: f32,
    // Partial sums per row of a split product: n, or 2n for MODE 2 (a's, then b's).
    columns: u32,
    // Rows the partials are laid out for (the most a pass has).
    rows_cap: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

// RMSNorm's scale r = (Σx²/K + ε)^−½ of a row whose squares sum to `squares`.
fn norm_scale(squares: f32) -> f32 {
    if (NORM == 1u) {
        return 1.0 / sqrt(squares / f32(K) + p.epsilon);
    }
    return 1.0;
}

fn with_bias(v: f32, n: u32) -> f32 {
    if (HAS_BIAS == 1u) {
        return v + bias[n];
    }
    return v;
}

// Output (m, n) from the row's sums v (and v_b, SwiGLU's second product) and its norm scale r.
fn finish(m: u32, n: u32, v: f32, v_b: f32, r: f32) {
    let at = m * p.n + n;
    switch MODE {
        case 1u: {
            y[at] += with_bias(v * r, n);
        }
        case 2u: {
            y[at] = silu(v * r) * (v_b * r);
        }
        default: {
            y[at] = with_bias(v * r, n);
        }
    }
}
