//! Convolutions over 1–3 channels-first spatial axes as patch matrices ("im2col"): `Geometry`
//! says which input position each (output position, kernel tap) reads, and the forward and
//! backward passes multiply patch rows with the packed [filters][channels·taps] weights through
//! `kernels::dense`.
//!
//! Cross-correlation (CNN) reads input o·s + t − p; the transposed convolution is written in its
//! gather form (input (o + p − t)/s where that divides exactly), so it uses the same patch
//! machinery and the same filter-major weight matrix. The backward pass is the exact adjoint of
//! the forward for both: dW = gᵀ·patches, d(patches) = g·W, dx = col2im(d(patches)).
//!
//! Rows (batch × output positions) are cut into chunks whose size depends only on the shape; a
//! chunk's patches are built and multiplied on one task, and weight gradients are summed per
//! fixed group of chunks, then over groups in order. So `Tiled` and `Parallel` are bitwise
//! identical for any thread count, and `Normal` differs only by the dense kernels' f64 sums.

use super::dense;
use super::Schedule;
use crate::weights::WeightView;
use rayon::prelude::*;
use std::ops::Range;

/// Patch values per row chunk (512 KiB: a chunk's patches stay in L2 while they are multiplied).
const CHUNK_VALUES: usize = 1 << 17;
/// Row-chunk limits: enough rows for an efficient GEMM, few enough for chunks on every core.
const MIN_CHUNK_ROWS: usize = 64;
const MAX_CHUNK_ROWS: usize = 4096;
/// Most partial weight gradients kept at once (bounds their memory; one task per group).
const MAX_GROUPS: usize = 16;

/// One convolution's sizes: channels in, spatial input and output sizes (1–3 axes, slowest
/// first), a cubic kernel, stride and zero padding, applied to every axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    pub channels: usize,
    pub input: Vec<usize>,
    pub output: Vec<usize>,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub transposed: bool,
}

impl Geometry {
    /// Kernel taps per channel (kernel^axes).
    pub fn taps(&self) -> usize {
        self.kernel.pow(self.input.len() as u32)
    }
    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }
    pub fn output_len(&self) -> usize {
        self.output.iter().product()
    }
    /// Columns of a patch row = the length of one filter's weight row.
    pub fn width(&self) -> usize {
        self.channels * self.taps()
    }

    /// The input index along `axis` that output index `o` reads through tap `t`, if any.
    fn source(&self, axis: usize, o: usize, t: usize) -> Option<usize> {
        let (s, p) = (self.stride, self.padding);
        let i = if self.transposed {
            // The scatter o = i·s − p + t, inverted: i = (o + p − t)/s when s divides it.
            let shifted = (o + p).checked_sub(t)?;
            if !shifted.is_multiple_of(s) {
                return None;
            }
            shifted / s
        } else {
            (o * s + t).checked_sub(p)?
        };
        (i < self.input[axis]).then_some(i)
    }

    /// For each output position and tap (both row-major over the axes): the flat offset within
    /// one input channel that it reads, or input_len for zero padding (a zero slot after the
    /// channel, so the gather needs no branch). The caller keeps input_len below u32::MAX.
    pub fn sources(&self) -> Vec<u32> {
        let axes = self.input.len();
        let k = self.kernel;
        // per_axis[a][o·k + t]: the input index along axis a, or None.
        let per_axis: Vec<Vec<Option<usize>>> = (0..axes)
            .map(|a| (0..self.output[a]).flat_map(|o| (0..k).map(move |t| (o, t))).map(|(o, t)| self.source(a, o, t)).collect())
            .collect();
        let input_strides: Vec<usize> = (0..axes).map(|a| self.input[a + 1..].iter().product()).collect();
        let taps = self.taps();
        let mut table = vec![self.input_len() as u32; self.output_len() * taps];
        let mut position = vec![0usize; axes];
        for (p, row) in table.chunks_exact_mut(taps).enumerate() {
            let mut rest = p;
            for a in (0..axes).rev() {
                position[a] = rest % self.output[a];
                rest /= self.output[a];
            }
            for (t, entry) in row.iter_mut().enumerate() {
                let mut rest = t;
                let mut offset = Some(0);
                for a in (0..axes).rev() {
                    let tap = rest % k;
                    rest /= k;
                    offset = offset.zip(per_axis[a][position[a] * k + tap]).map(|(sum, i)| sum + i * input_strides[a]);
                }
                if let Some(offset) = offset {
                    *entry = offset as u32;
                }
            }
        }
        table
    }
}

/// How the rows of a batch (batch × output positions) are cut into chunks: fixed by the shape.
struct Chunks {
    rows: usize,
    per_chunk: usize,
}

impl Chunks {
    fn new(batch: usize, g: &Geometry) -> Chunks {
        let per_chunk = (CHUNK_VALUES / g.width().max(1)).clamp(MIN_CHUNK_ROWS, MAX_CHUNK_ROWS);
        Chunks { rows: batch * g.output_len(), per_chunk }
    }
    fn count(&self) -> usize {
        self.rows.div_ceil(self.per_chunk)
    }
    fn range(&self, i: usize) -> Range<usize> {
        i * self.per_chunk..((i + 1) * self.per_chunk).min(self.rows)
    }
    /// (chunk, row within it) of a global row.
    fn locate(&self, row: usize) -> (usize, usize) {
        (row / self.per_chunk, row % self.per_chunk)
    }
}

/// `task(i)` for i in 0..count, in order, on the rayon pool for `Parallel`.
fn map_tasks<T: Send>(schedule: Schedule, count: usize, task: impl Fn(usize) -> T + Send + Sync) -> Vec<T> {
    if schedule == Schedule::Parallel {
        (0..count).into_par_iter().map(task).collect()
    } else {
        (0..count).map(task).collect()
    }
}

/// `fill(i, piece)` over consecutive `len`-value pieces of `data`, on the pool for `Parallel`.
fn fill_pieces(schedule: Schedule, data: &mut [f32], len: usize, fill: impl Fn(usize, &mut [f32]) + Send + Sync) {
    if schedule == Schedule::Parallel {
        data.par_chunks_mut(len).enumerate().for_each(|(i, piece)| fill(i, piece));
    } else {
        data.chunks_mut(len).enumerate().for_each(|(i, piece)| fill(i, piece));
    }
}

/// Patch rows `rows` of batch `x` ([batch][channels][input positions]): row b·P + p holds, for
/// each channel and tap, the input value that output position p of sample b reads (0 in padding).
fn patches(x: &[f32], g: &Geometry, sources: &[u32], rows: Range<usize>) -> Vec<f32> {
    let (positions, in_len, taps, width) = (g.output_len(), g.input_len(), g.taps(), g.width());
    // The current sample, each channel followed by the zero that padding taps read.
    let plane = in_len + 1;
    let mut staged = vec![0f32; g.channels * plane];
    let mut staged_sample = usize::MAX;
    let mut out = vec![0f32; rows.len() * width];
    for (row, r) in out.chunks_exact_mut(width).zip(rows) {
        let (b, p) = (r / positions, r % positions);
        if b != staged_sample {
            let sample = &x[b * g.channels * in_len..(b + 1) * g.channels * in_len];
            for (dst, src) in staged.chunks_exact_mut(plane).zip(sample.chunks_exact(in_len)) {
                dst[..in_len].copy_from_slice(src);
            }
            staged_sample = b;
        }
        let reads = &sources[p * taps..(p + 1) * taps];
        for (dst, channel) in row.chunks_exact_mut(taps).zip(staged.chunks_exact(plane)) {
            for (d, &s) in dst.iter_mut().zip(reads) {
                *d = channel[s as usize];
            }
        }
    }
    out
}

/// [rows][cols] → [cols][rows] (chunk-sized buffers, so it stays in cache).
fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    for (r, row) in src.chunks_exact(cols.max(1)).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
    out
}

/// Rows `rows` of the channels-first gradient g ([batch][filters][positions]) as a row-major
/// [rows][filters] matrix: contiguous runs per filter, then a local transpose.
fn gradient_rows(grad: &[f32], positions: usize, filters: usize, rows: Range<usize>) -> Vec<f32> {
    let n = rows.len();
    let mut by_filter = vec![0f32; filters * n];
    for (f, dst) in by_filter.chunks_exact_mut(n.max(1)).enumerate() {
        let mut r = rows.start;
        while r < rows.end {
            let (b, p) = (r / positions, r % positions);
            let run = (positions - p).min(rows.end - r);
            let src = (b * filters + f) * positions + p;
            dst[r - rows.start..r - rows.start + run].copy_from_slice(&grad[src..src + run]);
            r += run;
        }
    }
    transpose(&by_filter, filters, n)
}

/// Global rows [start, start + out.len()) of column `col`, from per-chunk buffers laid out
/// [column][row within the chunk].
fn gather_column(chunks: &Chunks, parts: &[Vec<f32>], col: usize, start: usize, out: &mut [f32]) {
    let mut done = 0;
    while done < out.len() {
        let (chunk, row) = chunks.locate(start + done);
        let len = chunks.range(chunk).len();
        let run = (len - row).min(out.len() - done);
        out[done..done + run].copy_from_slice(&parts[chunk][col * len + row..col * len + row + run]);
        done += run;
    }
}

/// Filters in a [filters][channels·taps] weight matrix.
fn filters_of(g: &Geometry, w: WeightView) -> usize {
    assert!(g.width() > 0 && w.len().is_multiple_of(g.width()), "weights are [filters][channels·taps]");
    w.len() / g.width()
}

/// Pre-activation y[batch][filters][output positions] of `x` ([batch][channels][input
/// positions]) with weights `w` ([filters][channels·taps]).
pub fn forward(x: &[f32], batch: usize, g: &Geometry, w: WeightView, schedule: Schedule) -> Vec<f32> {
    let filters = filters_of(g, w);
    assert_eq!(x.len(), batch * g.channels * g.input_len());
    let sources = g.sources();
    let chunks = Chunks::new(batch, g);
    // Each chunk's [row][filter] product, transposed to [filter][row] while it is in cache.
    let products = map_tasks(schedule, chunks.count(), |i| {
        let rows = chunks.range(i);
        let n = rows.len();
        transpose(&dense::forward(&patches(x, g, &sources, rows), n, g.width(), w, filters, schedule), n, filters)
    });
    // Channels-first: each (sample, filter) plane is a few contiguous runs of chunk columns.
    let positions = g.output_len();
    let mut y = vec![0f32; batch * filters * positions];
    fill_pieces(schedule, &mut y, positions.max(1), |plane, out| {
        let (b, f) = (plane / filters, plane % filters);
        gather_column(&chunks, &products, f, b * positions, out);
    });
    y
}

/// Gradients of one convolution: dL/dx (empty when not asked for) and dL/dW.
pub struct Gradients {
    pub input: Vec<f32>,
    pub weights: Vec<f32>,
}

/// Backward for `grad` = dL/d(pre-activation) ([batch][filters][output positions]), with the
/// forward's `x` and `w`.
pub fn backward(
    x: &[f32],
    batch: usize,
    g: &Geometry,
    w: WeightView,
    grad: &[f32],
    need_input: bool,
    schedule: Schedule,
) -> Gradients {
    let (positions, width, filters) = (g.output_len(), g.width(), filters_of(g, w));
    assert_eq!(x.len(), batch * g.channels * g.input_len());
    assert_eq!(grad.len(), batch * filters * positions);
    let sources = g.sources();
    let chunks = Chunks::new(batch, g);
    let count = chunks.count();
    let groups = count.clamp(1, MAX_GROUPS);
    // Each group: its chunks in order, summing their weight gradients and keeping their patch
    // gradients for col2im.
    let per_group = map_tasks(schedule, groups, |group| {
        let mut dw = vec![0f32; filters * width];
        let mut dpatches = Vec::new();
        for i in group * count / groups..(group + 1) * count / groups {
            let rows = chunks.range(i);
            let n = rows.len();
            let g_rows = gradient_rows(grad, positions, filters, rows.clone());
            let part = dense::weight_grad(&g_rows, n, filters, &patches(x, g, &sources, rows), width, schedule);
            dw.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
            if need_input {
                dpatches.push(dense::backward_input(&g_rows, n, filters, w, width, schedule));
            }
        }
        (dw, dpatches)
    });
    let mut weights = vec![0f32; filters * width];
    let mut dpatches = Vec::with_capacity(count);
    for (dw, rows) in per_group {
        weights.iter_mut().zip(&dw).for_each(|(a, b)| *a += b);
        dpatches.extend(rows);
    }
    let input = if need_input { col2im(&dpatches, &chunks, g, &sources, batch, schedule) } else { Vec::new() };
    Gradients { input, weights }
}

/// The adjoint of `patches`: every patch-row gradient added back onto the input position it was
/// read from. One task per (sample, channel) plane, rows in order, so sums are deterministic.
fn col2im(dpatches: &[Vec<f32>], chunks: &Chunks, g: &Geometry, sources: &[u32], batch: usize, schedule: Schedule) -> Vec<f32> {
    let (positions, in_len, taps, width) = (g.output_len(), g.input_len(), g.taps(), g.width());
    let mut dx = vec![0f32; batch * g.channels * in_len];
    fill_pieces(schedule, &mut dx, in_len.max(1), |plane, out| {
        let (b, c) = (plane / g.channels, plane % g.channels);
        for p in 0..positions {
            let (chunk, row) = chunks.locate(b * positions + p);
            let values = &dpatches[chunk][row * width + c * taps..row * width + (c + 1) * taps];
            for (&v, &s) in values.iter().zip(&sources[p * taps..(p + 1) * taps]) {
                if (s as usize) < in_len {
                    out[s as usize] += v;
                }
            }
        }
    });
    dx
}

/// Per-filter sums of g[batch][filters][positions] (the bias gradient), in f64, in order.
pub fn filter_sums(grad: &[f32], batch: usize, filters: usize, positions: usize) -> Vec<f32> {
    let mut acc = vec![0f64; filters];
    for (plane, values) in grad.chunks_exact(positions.max(1)).take(batch * filters).enumerate() {
        acc[plane % filters] += values.iter().map(|&v| v as f64).sum::<f64>();
    }
    acc.into_iter().map(|a| a as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_standard;
    use crate::dtype::DType;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 16777216.0) - 0.5).collect()
    }

    fn geometry(input: Vec<usize>, output: Vec<usize>, kernel: usize, stride: usize, padding: usize, transposed: bool) -> Geometry {
        Geometry { channels: 3, input, output, kernel, stride, padding, transposed }
    }

    /// Direct scatter-form reference of the 1-D transposed convolution (spec/layers.md §7).
    fn scatter_1d(x: &[f32], g: &Geometry, w: &[f32], filters: usize) -> Vec<f32> {
        let (l, out, k) = (g.input[0], g.output[0], g.kernel);
        let mut y = vec![0f64; filters * out];
        for f in 0..filters {
            for c in 0..g.channels {
                for i in 0..l {
                    for t in 0..k {
                        let o = (i * g.stride + t) as isize - g.padding as isize;
                        if (0..out as isize).contains(&o) {
                            y[f * out + o as usize] += x[c * l + i] as f64 * w[(f * g.channels + c) * k + t] as f64;
                        }
                    }
                }
            }
        }
        y.into_iter().map(|v| v as f32).collect()
    }

    #[test]
    fn transposed_gather_equals_the_scatter_form() {
        // L = 5, s = 2, p = 1, k = 4, output_padding 1: out = 4·2 − 2 + 4 + 1 = 11
        let g = geometry(vec![5], vec![11], 4, 2, 1, true);
        let (x, w) = (data(3 * 5, 1), data(2 * 3 * 4, 2));
        let y = forward(&x, 1, &g, WeightView::F32(&w), Schedule::Normal);
        let expected = scatter_1d(&x, &g, &w, 2);
        for (a, b) in y.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    /// (forward, input gradient, weight gradient) under `schedule` on a pool of `threads`.
    fn run(g: &Geometry, batch: usize, w: WeightView, schedule: Schedule, threads: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let filters = w.len() / g.width();
        let x = data(batch * g.channels * g.input_len(), 3);
        let grad = data(batch * filters * g.output_len(), 4);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let y = forward(&x, batch, g, w, schedule);
            let grads = backward(&x, batch, g, w, &grad, true, schedule);
            (y, grads.input, grads.weights)
        })
    }

    #[test]
    fn tiled_and_parallel_are_bitwise_identical_on_one_and_three_threads() {
        // A 2-D conv over 6 row chunks, a padded 1-D conv over 20 chunks in 16 groups (some
        // groups sum two chunks), and a strided 3-D transposed conv.
        let conv = Geometry { channels: 32, input: vec![20, 17], output: vec![18, 15], kernel: 3, stride: 1, padding: 0, transposed: false };
        let wide = Geometry { channels: 256, input: vec![30], output: vec![32], kernel: 9, stride: 1, padding: 5, transposed: false };
        let transposed = Geometry { channels: 2, input: vec![3, 4, 2], output: vec![7, 9, 5], kernel: 3, stride: 2, padding: 0, transposed: true };
        for (g, batch, filters) in [(conv, 9, 6), (wide, 40, 4), (transposed, 5, 3)] {
            let master = data(filters * g.width(), 5);
            let packed = encode_standard(&master, DType::Int4);
            for w in [WeightView::F32(&master), WeightView::Packed(&packed)] {
                let tiled = run(&g, batch, w, Schedule::Tiled, 1);
                for threads in [1, 3] {
                    assert_eq!(run(&g, batch, w, Schedule::Parallel, threads), tiled, "{g:?} on {threads} threads");
                }
                let normal = run(&g, batch, w, Schedule::Normal, 1);
                for (a, b) in [(&normal.0, &tiled.0), (&normal.1, &tiled.1), (&normal.2, &tiled.2)] {
                    let err = a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
                    let top = a.iter().map(|v| v.abs()).fold(0.0, f32::max);
                    assert!(err <= 1e-5 * top, "normal vs tiled: {err} of {top}");
                }
            }
        }
    }
}
