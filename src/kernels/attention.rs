//! CPU attention math: RoPE (half-split pairing), per-head Q/K RMSNorm, and softmax attention per
//! (batch item, query head) with grouped KV heads and an optional causal mask, forward and backward.
//!
//! Heads are read in place from row-major projections [rows][heads·head_dim]. `Normal` multiplies
//! with plain f64-accumulating loops; `Tiled` runs one single-threaded GEMM per block of an
//! (item, head) task and `Parallel` runs the same tasks on rayon, gathering their results in task
//! order, so the two are bitwise identical for any thread count.

use super::Schedule;
use rayon::prelude::*;

/// Query rows per score block: bounds the score scratch to BLOCK_ROWS × keys, and lets a causal
/// block skip the keys after its last row.
const BLOCK_ROWS: usize = 64;
/// Below this many multiply-adds the tasks run serially even in `Parallel` (waking the pool
/// costs more than it saves; the tasks and their order are the same either way).
const PARALLEL_MIN_MACS: usize = 1 << 16;

/// How the heads of a projection are laid out and who attends to what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub causal: bool,
}

impl Heads {
    pub fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
    /// The KV head query head `h` reads (GQA: each run of heads/kv_heads query heads shares one).
    fn kv_head(&self, h: usize) -> usize {
        h / (self.heads / self.kv_heads)
    }
    fn scale(&self) -> f32 {
        (1.0 / (self.head_dim as f64).sqrt()) as f32
    }
    /// How many of `keys` keys a query at absolute position `pos` sees.
    fn visible(&self, pos: usize, keys: usize) -> usize {
        if self.causal {
            (pos + 1).min(keys)
        } else {
            keys
        }
    }
}

/// One batch item's keys and values: the same number of rows of `kv_width` values each.
#[derive(Clone, Copy)]
pub struct KeyValues<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
}

/// What the backward reads from a training forward over `batch` sequences of `rows` positions
/// (self-attention from position 0): q [batch·rows][q_width], k and v [batch·rows][kv_width]
/// (after norm and RoPE), the attention output [batch·rows][q_width] and the log-sum-exps
/// [batch][heads][rows] that `forward` returned.
#[derive(Clone, Copy)]
pub struct Forward<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub out: &'a [f32],
    pub lse: &'a [f32],
}

/// A read-only strided matrix: element (r, c) at data[r·rs + c·cs].
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    fn rows(data: &'a [f32], rs: usize) -> Mat<'a> {
        Mat { data, rs, cs: 1 }
    }
    fn t(self) -> Mat<'a> {
        Mat { data: self.data, rs: self.cs, cs: self.rs }
    }
    fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.rs + c * self.cs]
    }
}

/// dst[m×n] (row stride `dst_rs`) = beta·a[m×k]·b[k×n], added to dst when `accumulate`.
#[allow(clippy::too_many_arguments)]
fn matmul(schedule: Schedule, m: usize, n: usize, k: usize, dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, beta: f32, accumulate: bool) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * dst_rs + n <= dst.len(), "dst out of bounds");
    assert!(k > 0, "attention products always have a non-empty inner dimension");
    assert!((m - 1) * a.rs + (k - 1) * a.cs < a.data.len(), "lhs out of bounds");
    assert!((k - 1) * b.rs + (n - 1) * b.cs < b.data.len(), "rhs out of bounds");
    if schedule == Schedule::Normal {
        for i in 0..m {
            for j in 0..n {
                let acc: f64 = (0..k).map(|p| a.at(i, p) as f64 * b.at(p, j) as f64).sum();
                let d = &mut dst[i * dst_rs + j];
                let v = beta as f64 * acc;
                *d = if accumulate { (*d as f64 + v) as f32 } else { v as f32 };
            }
        }
        return;
    }
    // Safety: the asserts above keep every element gemm reads or writes inside its slice, and
    // `dst` is borrowed mutably for the call.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// `task(i)` for i in 0..count, in order; on the rayon pool in `Parallel` when `macs` is worth it.
fn run_tasks<T: Send>(schedule: Schedule, count: usize, macs: usize, task: impl Fn(usize) -> T + Send + Sync) -> Vec<T> {
    if schedule == Schedule::Parallel && count > 1 && macs >= PARALLEL_MIN_MACS {
        (0..count).into_par_iter().map(task).collect()
    } else {
        (0..count).map(task).collect()
    }
}

/// Softmax of row[..seen] in place (max subtracted first), zeros after it; returns the row's
/// log-sum-exp.
fn softmax_prefix(row: &mut [f32], seen: usize) -> f32 {
    let (live, masked) = row.split_at_mut(seen);
    masked.fill(0.0);
    let max = live.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    live.iter_mut().for_each(|v| *v -= max);
    exp_in_place(live);
    let sum = lane_sum(live);
    let inv = (1.0 / sum) as f32;
    live.iter_mut().for_each(|v| *v *= inv);
    max + sum.ln() as f32
}

/// Σ values in f64 over 8 interleaved lanes: a fixed order that still vectorises (one running
/// sum would wait on every add).
fn lane_sum(values: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().map(|&v| v as f64).sum();
    for chunk in chunks {
        lanes.iter_mut().zip(chunk).for_each(|(l, &v)| *l += v as f64);
    }
    lanes.iter().sum::<f64>() + rest
}

/// e^x of every value in place, branch-free so the loop vectorises (libm's expf is one call per
/// value and took half the attention time). Same arithmetic at every width and no FMA
/// contraction, so every CPU path gives the same bits.
fn exp_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx2_fma() {
        // Safety: the CPU supports AVX2 (checked above).
        return unsafe { exp_avx2(values) };
    }
    values.iter_mut().for_each(|v| *v = exp(*v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn exp_avx2(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = exp(*v));
}

/// e^x = 2^n·e^f with n = round(x·log₂e) and f = x − n·ln 2 in [−½ ln 2, ½ ln 2], e^f by Cephes'
/// expf polynomial (within 2 ulp). x is clamped to [−87, 88], the normal range of the result.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let f = (x - n * LN2_HI) - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * f + 1.398_199_9e-3) * f + 8.333_452e-3) * f + 4.166_579_6e-2) * f + 1.666_666_5e-1) * f + 5.000_000_1e-1;
    (p * f * f + f + 1.0) * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Attention of `rows` query rows per batch item over that item's keys and values (`kv.len()` is
/// the batch size). q is [batch·rows][q_width]; query row s of an item sits at absolute position
/// `first_pos + s` and key j at position j. Returns the concatenated head outputs
/// [batch·rows][q_width] and every query row's log-sum-exp [batch][heads][rows].
pub fn forward(heads: &Heads, q: &[f32], rows: usize, kv: &[KeyValues], first_pos: usize, schedule: Schedule) -> (Vec<f32>, Vec<f32>) {
    let (h_count, hd, qw) = (heads.heads, heads.head_dim, heads.q_width());
    let batch = kv.len();
    assert_eq!(q.len(), batch * rows * qw);
    let keys = kv.first().map_or(0, |item| item.k.len() / heads.kv_width());
    let macs = 2 * batch * h_count * rows * keys * hd;
    let results = run_tasks(schedule, batch * h_count, macs, |task| {
        let (b, h) = (task / h_count, task % h_count);
        head_forward(heads, &q[b * rows * qw..(b + 1) * rows * qw], rows, kv[b], h, first_pos, schedule)
    });
    let mut out = vec![0f32; batch * rows * qw];
    let mut lse = Vec::with_capacity(batch * h_count * rows);
    for (task, (head_out, head_lse)) in results.into_iter().enumerate() {
        let (b, h) = (task / h_count, task % h_count);
        scatter_head(&mut out, b * rows, qw, h * hd, &head_out, hd, false);
        lse.extend(head_lse);
    }
    (out, lse)
}

/// Copy (or add) `head` [rows][hd] into columns col..col+hd of rows first_row.. of `dst`.
fn scatter_head(dst: &mut [f32], first_row: usize, width: usize, col: usize, head: &[f32], hd: usize, add: bool) {
    for (s, src) in head.chunks_exact(hd).enumerate() {
        let at = (first_row + s) * width + col;
        let to = &mut dst[at..at + hd];
        if add {
            to.iter_mut().zip(src).for_each(|(d, v)| *d += v);
        } else {
            to.copy_from_slice(src);
        }
    }
}

/// One (item, head) task of `forward`: its output [rows][hd] and log-sum-exps [rows].
fn head_forward(heads: &Heads, q: &[f32], rows: usize, kv: KeyValues, h: usize, first_pos: usize, schedule: Schedule) -> (Vec<f32>, Vec<f32>) {
    let (hd, qw, kw) = (heads.head_dim, heads.q_width(), heads.kv_width());
    let g = heads.kv_head(h);
    let keys = kv.k.len() / kw;
    let k_t = Mat::rows(&kv.k[g * hd..], kw).t();
    let v = Mat::rows(&kv.v[g * hd..], kw);
    let mut out = vec![0f32; rows * hd];
    let mut lse = vec![0f32; rows];
    let mut scores = vec![0f32; BLOCK_ROWS.min(rows) * keys];
    for r0 in (0..rows).step_by(BLOCK_ROWS) {
        let n = BLOCK_ROWS.min(rows - r0);
        let width = heads.visible(first_pos + r0 + n - 1, keys);
        let p = &mut scores[..n * width];
        let q_rows = Mat::rows(&q[r0 * qw + h * hd..], qw);
        let decoding = schedule != Schedule::Normal && n <= DECODE_ROWS;
        if decoding {
            row_scores(n, width, hd, p, q_rows, Mat::rows(&kv.k[g * hd..], kw), heads.scale());
        } else {
            matmul(schedule, n, width, hd, p, width, q_rows, k_t, heads.scale(), false);
        }
        for (i, row) in p.chunks_exact_mut(width).enumerate() {
            lse[r0 + i] = softmax_prefix(row, heads.visible(first_pos + r0 + i, keys));
        }
        if decoding {
            weighted_rows(n, width, hd, &mut out[r0 * hd..], p, v);
        } else {
            matmul(schedule, n, hd, width, &mut out[r0 * hd..], hd, Mat::rows(p, width), v, 1.0, false);
        }
    }
    (out, lse)
}

/// Up to this many query rows (decoding), the products are plain dot products and weighted sums:
/// a GEMM call's set-up costs more than such thin products.
const DECODE_ROWS: usize = 4;

/// scores[i][j] = scale·q_i·k_j for n query rows and `width` keys (rows of `hd` values).
fn row_scores(n: usize, width: usize, hd: usize, scores: &mut [f32], q: Mat, k: Mat, scale: f32) {
    for (i, row) in scores.chunks_exact_mut(width).take(n).enumerate() {
        let qi = &q.data[i * q.rs..i * q.rs + hd];
        for (j, score) in row.iter_mut().enumerate() {
            *score = scale * super::simd::f32_dot(qi, &k.data[j * k.rs..j * k.rs + hd]);
        }
    }
}

/// out[i] = Σ_j p[i][j]·v_j for n rows of `width` weights (v rows of `hd` values).
fn weighted_rows(n: usize, width: usize, hd: usize, out: &mut [f32], p: &[f32], v: Mat) {
    for (o, weights) in out.chunks_exact_mut(hd).zip(p.chunks_exact(width)).take(n) {
        o.fill(0.0);
        for (j, &w) in weights.iter().enumerate() {
            super::simd::f32_axpy(w, &v.data[j * v.rs..j * v.rs + hd], o);
        }
    }
}

/// Gradients of self-attention over `batch` sequences of `rows` positions for the gradient
/// `d_out` of its output: (dq [batch·rows][q_width], dk and dv [batch·rows][kv_width]), all
/// with respect to the post-RoPE q and k.
pub fn backward(heads: &Heads, fwd: Forward, d_out: &[f32], batch: usize, rows: usize, schedule: Schedule) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (h_count, hd, qw, kw) = (heads.heads, heads.head_dim, heads.q_width(), heads.kv_width());
    assert_eq!(d_out.len(), batch * rows * qw);
    assert_eq!(fwd.k.len(), batch * rows * kw);
    let macs = 4 * batch * h_count * rows * rows * hd;
    let results = run_tasks(schedule, batch * h_count, macs, |task| {
        let (b, h) = (task / h_count, task % h_count);
        // This item's rows of every tensor, and this head's log-sum-exps.
        let (qs, ks) = (b * rows * qw..(b + 1) * rows * qw, b * rows * kw..(b + 1) * rows * kw);
        let one = Forward { q: &fwd.q[qs.clone()], k: &fwd.k[ks.clone()], v: &fwd.v[ks], out: &fwd.out[qs.clone()], lse: &fwd.lse[task * rows..(task + 1) * rows] };
        head_backward(heads, one, &d_out[qs], rows, h, schedule)
    });
    // Query heads sharing a KV head add their K/V gradients in head order (fixed, so the sum
    // does not depend on which thread ran which task).
    let mut dq = vec![0f32; batch * rows * qw];
    let mut dk = vec![0f32; batch * rows * kw];
    let mut dv = vec![0f32; batch * rows * kw];
    for (task, (hq, hk, hv)) in results.into_iter().enumerate() {
        let (b, h) = (task / h_count, task % h_count);
        let g = heads.kv_head(h);
        scatter_head(&mut dq, b * rows, qw, h * hd, &hq, hd, false);
        scatter_head(&mut dk, b * rows, kw, g * hd, &hk, hd, true);
        scatter_head(&mut dv, b * rows, kw, g * hd, &hv, hd, true);
    }
    (dq, dk, dv)
}

/// One (item, head) task of `backward` (fwd holds this item's rows and this head's
/// log-sum-exps): this head's dq, and its contributions to dk and dv, each [rows][hd].
/// P is recomputed from the log-sum-exps rather than stored (memory stays O(rows), not rows²).
fn head_backward(heads: &Heads, fwd: Forward, d_out: &[f32], rows: usize, h: usize, schedule: Schedule) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (hd, qw, kw) = (heads.head_dim, heads.q_width(), heads.kv_width());
    let (g, scale) = (heads.kv_head(h), heads.scale());
    let k = Mat::rows(&fwd.k[g * hd..], kw);
    let v = Mat::rows(&fwd.v[g * hd..], kw);
    let (mut dq, mut dk, mut dv) = (vec![0f32; rows * hd], vec![0f32; rows * hd], vec![0f32; rows * hd]);
    let block = BLOCK_ROWS.min(rows) * rows;
    let (mut p, mut ds) = (vec![0f32; block], vec![0f32; block]);
    for r0 in (0..rows).step_by(BLOCK_ROWS) {
        let n = BLOCK_ROWS.min(rows - r0);
        let width = heads.visible(r0 + n - 1, rows);
        let (p, ds) = (&mut p[..n * width], &mut ds[..n * width]);
        let q_block = Mat::rows(&fwd.q[r0 * qw + h * hd..], qw);
        let do_block = Mat::rows(&d_out[r0 * qw + h * hd..], qw);
        matmul(schedule, n, width, hd, p, width, q_block, k.t(), scale, false);
        for (i, row) in p.chunks_exact_mut(width).enumerate() {
            let (live, masked) = row.split_at_mut(heads.visible(r0 + i, rows));
            let lse = fwd.lse[r0 + i];
            live.iter_mut().for_each(|s| *s -= lse);
            exp_in_place(live);
            masked.fill(0.0);
        }
        // dV += Pᵀ·dO; dP = dO·Vᵀ; dS = P ⊙ (dP − rowsum(dO ⊙ O)); dQ = dS·K·scale; dK += dSᵀ·Q·scale.
        matmul(schedule, width, hd, n, &mut dv, hd, Mat::rows(p, width).t(), do_block, 1.0, true);
        matmul(schedule, n, width, hd, ds, width, do_block, v.t(), 1.0, false);
        for i in 0..n {
            let at = (r0 + i) * qw + h * hd;
            let dot: f64 = d_out[at..at + hd].iter().zip(&fwd.out[at..at + hd]).map(|(&a, &b)| a as f64 * b as f64).sum();
            let row = i * width..(i + 1) * width;
            ds[row.clone()].iter_mut().zip(&p[row]).for_each(|(d, &pv)| *d = pv * (*d - dot as f32));
        }
        matmul(schedule, n, hd, width, &mut dq[r0 * hd..], hd, Mat::rows(ds, width), k, scale, false);
        matmul(schedule, width, hd, n, &mut dk, hd, Mat::rows(ds, width).t(), q_block, scale, true);
    }
    (dq, dk, dv)
}

/// Rotary position embedding with half-split (NeoX) pairing: in each head, element i < hd/2
/// pairs with i + hd/2 and both turn by pos·base^(−2i/hd). (With an odd head_dim the last
/// element has no partner and stays as it is.)
pub struct Rope {
    half: usize,
    head_dim: usize,
    /// cos and sin per (position − first, i), computed in f64.
    cos: Vec<f32>,
    sin: Vec<f32>,
    positions: usize,
}

impl Rope {
    /// The angles of positions first..first + positions.
    pub fn new(head_dim: usize, base: f64, first: usize, positions: usize) -> Rope {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for pos in first..first + positions {
            for i in 0..half {
                let angle = pos as f64 * base.powf(-2.0 * i as f64 / head_dim as f64);
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Rope { half, head_dim, cos, sin, positions }
    }

    /// Rotate every head of every row of `data` ([rows][width]) in place; row r is at position
    /// first + r mod positions (consecutive sequences of `positions` rows). `inverse` turns the
    /// other way: the transpose of the rotation, which is what carries a gradient back.
    pub fn rotate(&self, data: &mut [f32], width: usize, inverse: bool) {
        let sign = if inverse { -1.0 } else { 1.0 };
        for (r, row) in data.chunks_exact_mut(width).enumerate() {
            let at = (r % self.positions) * self.half;
            let (cos, sin) = (&self.cos[at..at + self.half], &self.sin[at..at + self.half]);
            for head in row.chunks_exact_mut(self.head_dim) {
                let (lo, hi) = head.split_at_mut(self.half);
                for i in 0..self.half {
                    let (a, b, s) = (lo[i], hi[i], sign * sin[i]);
                    lo[i] = a * cos[i] - b * s;
                    hi[i] = a * s + b * cos[i];
                }
            }
        }
    }
}

/// RMS-normalise every `gain.len()`-wide head of `data` in place and multiply by the shared
/// `gain`; returns 1/rms of every head (in row order) for the backward.
pub fn head_rms_norm(data: &mut [f32], gain: &[f32], eps: f64) -> Vec<f32> {
    data.chunks_exact_mut(gain.len())
        .map(|head| {
            let mean_sq = head.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / gain.len() as f64;
            let inv = 1.0 / (mean_sq + eps).sqrt();
            head.iter_mut().zip(gain).for_each(|(v, &g)| *v = (*v as f64 * inv * g as f64) as f32);
            inv as f32
        })
        .collect()
}

/// Backward of `head_rms_norm` for output gradient `grad`, given the heads before normalising
/// (`raw`) and their 1/rms: (gradient of raw, gradient of gain summed over all heads).
/// With y = g·v·r, r = (mean(v²) + eps)^−½: dv = r·g·dy − v·r³/hd·Σ(g·dy·v), dg = Σ dy·v·r.
pub fn head_rms_norm_backward(raw: &[f32], inv_rms: &[f32], gain: &[f32], grad: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let hd = gain.len();
    let mut d_raw = vec![0f32; raw.len()];
    let mut d_gain = vec![0f64; hd];
    for (((v, dy), d), &r) in raw.chunks_exact(hd).zip(grad.chunks_exact(hd)).zip(d_raw.chunks_exact_mut(hd)).zip(inv_rms) {
        let r = r as f64;
        let dot: f64 = (0..hd).map(|i| gain[i] as f64 * dy[i] as f64 * v[i] as f64).sum();
        let coeff = r * r * r * dot / hd as f64;
        for i in 0..hd {
            d[i] = (r * gain[i] as f64 * dy[i] as f64 - v[i] as f64 * coeff) as f32;
            d_gain[i] += dy[i] as f64 * v[i] as f64 * r;
        }
    }
    (d_raw, d_gain.into_iter().map(|g| g as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 16777216.0) - 0.5).collect()
    }

    fn rel(a: &[f32], b: &[f32]) -> f64 {
        let num = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt();
        let den = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
        num / den
    }

    struct Case {
        heads: Heads,
        batch: usize,
        rows: usize,
        q: Vec<f32>,
        k: Vec<f32>,
        v: Vec<f32>,
        d_out: Vec<f32>,
    }

    fn case(causal: bool) -> Case {
        // 150 rows: three score blocks, the last one partial; 4 query heads over 2 KV heads.
        let heads = Heads { heads: 4, kv_heads: 2, head_dim: 16, causal };
        let (batch, rows) = (3, 150);
        Case {
            heads,
            batch,
            rows,
            q: data(batch * rows * heads.q_width(), 1),
            k: data(batch * rows * heads.kv_width(), 2),
            v: data(batch * rows * heads.kv_width(), 3),
            d_out: data(batch * rows * heads.q_width(), 4),
        }
    }

    fn run(c: &Case, schedule: Schedule) -> [Vec<f32>; 5] {
        let kw = c.heads.kv_width();
        let kv: Vec<KeyValues> = (0..c.batch)
            .map(|b| KeyValues { k: &c.k[b * c.rows * kw..(b + 1) * c.rows * kw], v: &c.v[b * c.rows * kw..(b + 1) * c.rows * kw] })
            .collect();
        let (out, lse) = forward(&c.heads, &c.q, c.rows, &kv, 0, schedule);
        let fwd = Forward { q: &c.q, k: &c.k, v: &c.v, out: &out, lse: &lse };
        let (dq, dk, dv) = backward(&c.heads, fwd, &c.d_out, c.batch, c.rows, schedule);
        [out, lse, dq, dk, dv]
    }

    #[test]
    fn tiled_and_parallel_are_bitwise_identical_for_any_thread_count() {
        for causal in [true, false] {
            let c = case(causal);
            let tiled = run(&c, Schedule::Tiled);
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let parallel = pool.install(|| run(&c, Schedule::Parallel));
                assert_eq!(tiled, parallel, "causal {causal}, {threads} threads");
            }
        }
    }

    #[test]
    fn normal_agrees_with_tiled() {
        for causal in [true, false] {
            let c = case(causal);
            let (normal, tiled) = (run(&c, Schedule::Normal), run(&c, Schedule::Tiled));
            for (n, t) in normal.iter().zip(&tiled) {
                assert!(rel(t, n) < 1e-6, "causal {causal}: {}", rel(t, n));
            }
        }
    }

    #[test]
    fn decoding_one_row_at_a_time_matches_the_whole_sequence() {
        let c = case(true);
        let (qw, kw, rows) = (c.heads.q_width(), c.heads.kv_width(), c.rows);
        let kv = [KeyValues { k: &c.k[..rows * kw], v: &c.v[..rows * kw] }];
        let (whole, _) = forward(&c.heads, &c.q[..rows * qw], rows, &kv, 0, Schedule::Tiled);
        for s in [0, 1, 70, rows - 1] {
            let seen = [KeyValues { k: &c.k[..(s + 1) * kw], v: &c.v[..(s + 1) * kw] }];
            let (one, _) = forward(&c.heads, &c.q[s * qw..(s + 1) * qw], 1, &seen, s, Schedule::Tiled);
            assert!(rel(&one, &whole[s * qw..(s + 1) * qw]) < 1e-6, "row {s}");
        }
    }

    #[test]
    fn exp_matches_f64_to_a_few_ulp_on_every_cpu_path() {
        let mut xs: Vec<f32> = (0..20001).map(|i| -87.0 + i as f32 * (175.0 / 20000.0)).collect();
        xs.extend([0.0, -0.0, 1e-8, -1e-8, 0.5, -0.5]);
        let mut got = xs.clone();
        exp_in_place(&mut got);
        for (&x, &e) in xs.iter().zip(&got) {
            let want = (x as f64).exp();
            assert!(((e as f64 - want) / want).abs() < 2.5e-7, "exp({x}) = {e}, want {want}");
        }
        let scalar: Vec<f32> = xs.iter().map(|&x| exp(x)).collect();
        assert_eq!(got, scalar);
    }

    #[test]
    fn rope_inverse_undoes_the_rotation() {
        let rope = Rope::new(6, 10000.0, 3, 5);
        let original = data(10 * 12, 5);
        let mut x = original.clone();
        rope.rotate(&mut x, 12, false);
        assert!(rel(&x, &original) > 1e-2);
        rope.rotate(&mut x, 12, true);
        assert!(rel(&x, &original) < 1e-6);
    }
}
