// shaders/decoder_tiles_reduce.wgsl — the second dispatch of a split-K product (decoder_tiles.wgsl):
// one thread per output (row m, column n) sums the SPLITS partial sums in split order (the same
// order every run), with NORM also the row's partial squares, and applies the epilogue
// (decoder_epilogue.wgsl). Workgroups of 64 columns × 4 rows. Prepended: K, MODE, HAS_BIAS, NORM,
// SPLITS. M (rows) is `step.count`.

@group(0) @binding(4) var<storage, read> step: array<u32>;
@group(0) @binding(13) var<storage, read> partials: array<f32>;

@compute @workgroup_size(64, 4, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let n = id.x;
    let m = id.y;
    if (m >= step[1] || n >= p.n) {
        return;
    }
    let squares_at = SPLITS * p.rows_cap * p.columns + m;
    var v = 0.0;
    var v_b = 0.0;
    var squares = 0.0;
    for (var s = 0u; s < SPLITS; s++) {
        let row = (s * p.rows_cap + m) * p.columns;
        v += partials[row + n];
        if (MODE == 2u) {
            v_b += partials[row + p.n + n];
        }
        if (NORM == 1u) {
            squares += partials[squares_at + s * p.rows_cap];
        }
    }
    finish(m, n, v, v_b, norm_scale(squares));
}
