//! Small-batch (GEMV-like) forward: one SIMD dot product per output row, straight from float32
//! weights or from the packed codes (see `CodeKernel`: codes are never widened to a float copy,
//! so an int4 layer streams an eighth of the float32 bytes). Dtypes without a code kernel on this
//! CPU decode one row at a time into an L1-sized buffer before the dot product. Kernels live in
//! simd.rs; the choice depends only on dtype, row length and CPU, so `Tiled` and `Parallel`
//! (same rows, same kernels) agree bitwise.

use super::blocks;
use super::simd::{self, f32_dot, f32_dot4, int8_dot, nibble_dot, SIGNED_NIBBLES};
use super::Schedule;
use crate::codec::{Codec, Packed};
use crate::dtype::DType;
use crate::weights::WeightView;
use rayon::prelude::*;

/// Largest batch the fused path handles (above it, decoding a tile once for all rows wins).
pub const MAX_BATCH: usize = 4;
/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 16;

/// Whether a [n][k] weight matrix at this batch size takes the small-batch path.
pub fn applies(batch: usize) -> bool {
    batch <= MAX_BATCH
}

/// How one packed row is dotted with x without widening it first.
#[derive(Clone, Copy)]
enum CodeKernel {
    /// Σ code·x over signed bytes, times `scale`.
    Int8 { scale: f32 },
    /// 4-bit codes through a 16-value table (x split into even/odd positions), times `post_scale`.
    Nibbles { table: [f32; 16], post_scale: f32 },
    /// 2-bit codes through a table of their values (x split into 4 phases). AVX-512 only.
    Crumbs { table: [f32; 16] },
    /// One bit per weight, ±scale. AVX-512 only.
    Bits { scale: f32 },
    /// IEEE half (or, with `bfloat16`, bfloat16) codes. AVX-512 only.
    Half { bfloat16: bool },
    /// (code − zero_point)·x over unsigned bytes, times `scale`. AVX-512 only.
    Uint8 { zero_point: f32, scale: f32 },
    /// OCP FP8 codes of the standard code book (bit-shift decode), times `scale`. AVX-512 only.
    Fp8 { mantissa_shift: u32, rebias: i32, scale: f32 },
    /// GGML blocks (Q4_0, Q4_1, Q8_0), scales inside the row; x comes with its block sums.
    Blocks { dtype: DType },
}

impl CodeKernel {
    /// The kernel for `packed` rows of `k` weights on this CPU, if any. Sub-byte rows must start
    /// on a byte boundary.
    fn select(packed: &Packed, k: usize) -> Option<CodeKernel> {
        let wide = simd::has_avx512();
        let aligned = (k * packed.dtype.bits()).is_multiple_of(8);
        let values = || -> [f32; 16] { std::array::from_fn(|c| if c < 1 << packed.dtype.bits().min(4) { packed.value_of_code(c as u64) } else { 0.0 }) };
        Some(match packed.dtype {
            DType::Int8 => CodeKernel::Int8 { scale: packed.scale },
            DType::Int4 if aligned => CodeKernel::Nibbles { table: SIGNED_NIBBLES, post_scale: packed.scale },
            DType::Uint4 | DType::Fp4 if aligned && wide => CodeKernel::Nibbles { table: values(), post_scale: 1.0 },
            DType::Int2 | DType::Uint2 | DType::Ternary if aligned && wide => CodeKernel::Crumbs { table: values() },
            DType::Binary if aligned && wide => CodeKernel::Bits { scale: packed.scale },
            DType::Float16 if wide => CodeKernel::Half { bfloat16: false },
            DType::BFloat16 if wide => CodeKernel::Half { bfloat16: true },
            DType::Fp8E4M3 if wide && packed.codec == Codec::Standard => CodeKernel::Fp8 { mantissa_shift: 20, rebias: 120, scale: packed.scale },
            DType::Fp8E5M2 if wide && packed.codec == Codec::Standard => CodeKernel::Fp8 { mantissa_shift: 21, rebias: 112, scale: packed.scale },
            // Both code books decode unsigned bytes as (code − zero_point)·scale (Loom: zero point 0).
            DType::Uint8 if wide => CodeKernel::Uint8 { zero_point: packed.zero_point as f32, scale: packed.scale },
            DType::Q4_0 | DType::Q4_1 | DType::Q8_0 => CodeKernel::Blocks { dtype: packed.dtype },
            _ => return None,
        })
    }

    /// x as this kernel reads it: split into interleaved phases (element p·j + m → phase m,
    /// index j) for sub-byte codes; followed by its per-block sums for GGML blocks.
    fn prepare(self, x: &[f32]) -> Vec<Vec<f32>> {
        let phases = |p: usize| (0..p).map(|m| x.iter().skip(m).step_by(p).copied().collect()).collect();
        match self {
            CodeKernel::Nibbles { .. } => phases(2),
            CodeKernel::Crumbs { .. } => phases(4),
            CodeKernel::Blocks { .. } => vec![x.to_vec(), blocks::block_sums(x)],
            _ => phases(1),
        }
    }

    /// out[r] = the dot product of row r of `rows` (consecutive rows of packed codes) with x (as
    /// `prepare` laid it out).
    fn dot_rows(self, rows: &[u8], x: &[Vec<f32>], out: &mut [f32]) {
        match self {
            // One call for all the rows: per-row calls would cost as much as a short row.
            CodeKernel::Blocks { dtype } => blocks::rows_dot(dtype, rows, &x[0], &x[1], out),
            _ => {
                let row_bytes = rows.len() / out.len().max(1);
                out.iter_mut().zip(rows.chunks_exact(row_bytes.max(1))).for_each(|(o, row)| *o = self.dot(row, x));
            }
        }
    }

    /// The dot product of one row's codes with x.
    fn dot(self, codes: &[u8], x: &[Vec<f32>]) -> f32 {
        match self {
            CodeKernel::Blocks { dtype } => {
                let mut dot = [0f32];
                blocks::rows_dot(dtype, codes, &x[0], &x[1], &mut dot);
                dot[0]
            }
            CodeKernel::Int8 { scale } => int8_dot(codes, &x[0]) * scale,
            CodeKernel::Nibbles { table, post_scale } => nibble_dot(codes, &x[0], &x[1], &table) * post_scale,
            // Safety (all below): `select` picks these only when AVX-512 was detected.
            #[cfg(target_arch = "x86_64")]
            CodeKernel::Crumbs { table } => unsafe { simd::avx512::crumb_dot(codes, [&x[0], &x[1], &x[2], &x[3]], &table) },
            #[cfg(target_arch = "x86_64")]
            CodeKernel::Bits { scale } => unsafe { simd::avx512::bits_dot(codes, &x[0], scale) },
            #[cfg(target_arch = "x86_64")]
            CodeKernel::Half { bfloat16 } => unsafe { simd::avx512::half_dot(codes, &x[0], bfloat16) },
            #[cfg(target_arch = "x86_64")]
            CodeKernel::Uint8 { zero_point, scale } => unsafe { simd::avx512::uint8_dot(codes, &x[0], zero_point) * scale },
            #[cfg(target_arch = "x86_64")]
            CodeKernel::Fp8 { mantissa_shift, rebias, scale } => unsafe { simd::avx512::fp8_dot(codes, &x[0], mantissa_shift, rebias) * scale },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("AVX-512 kernels are never selected off x86-64"),
        }
    }
}

/// y[b×n] = x[b×k]·Wᵀ for the weights `applies` accepts.
pub fn forward(x: &[f32], b: usize, k: usize, w: WeightView, n: usize, schedule: Schedule) -> Vec<f32> {
    match w {
        WeightView::F32(weights) => f32_forward(x, b, k, weights, n, schedule),
        WeightView::Packed(p) => packed_forward(x, b, k, p, n, schedule),
    }
}

/// Rows are taken four at a time: four weight streams in flight keep the memory system busy
/// (one stream per dot product reaches about half the bandwidth).
fn f32_forward(x: &[f32], b: usize, k: usize, weights: &[f32], n: usize, schedule: Schedule) -> Vec<f32> {
    let row_outputs = |o: usize| -> [f32; MAX_BATCH] {
        let mut out = [0f32; MAX_BATCH];
        let row = &weights[o * k..(o + 1) * k];
        for (bi, slot) in out.iter_mut().enumerate().take(b) {
            *slot = f32_dot(row, &x[bi * k..(bi + 1) * k]);
        }
        out
    };
    let group_outputs = |o: usize| -> [[f32; MAX_BATCH]; 4] {
        let mut out = [[0f32; MAX_BATCH]; 4];
        let rows: [&[f32]; 4] = std::array::from_fn(|r| &weights[(o + r) * k..(o + r + 1) * k]);
        for bi in 0..b {
            let dots = f32_dot4(rows, &x[bi * k..(bi + 1) * k]);
            for r in 0..4 {
                out[r][bi] = dots[r];
            }
        }
        out
    };
    let fill = |first_row: usize, chunk: &mut [[f32; MAX_BATCH]]| {
        let mut j = 0;
        while j + 4 <= chunk.len() {
            chunk[j..j + 4].copy_from_slice(&group_outputs(first_row + j));
            j += 4;
        }
        for (r, slot) in chunk.iter_mut().enumerate().skip(j) {
            *slot = row_outputs(first_row + r);
        }
    };
    over_row_chunks(b, n, schedule, fill)
}

fn packed_forward(x: &[f32], b: usize, k: usize, packed: &Packed, n: usize, schedule: Schedule) -> Vec<f32> {
    let Some(kernel) = CodeKernel::select(packed, k) else {
        return decoded_rows_forward(x, b, k, packed, n, schedule);
    };
    // x[bi] laid out for the kernel once per call.
    let split: Vec<Vec<Vec<f32>>> = x.chunks_exact(k).map(|row| kernel.prepare(row)).collect();
    let row_bytes = packed.dtype.packed_bytes(k);
    over_row_chunks(b, n, schedule, |first_row, chunk| {
        let rows = &packed.bytes[first_row * row_bytes..(first_row + chunk.len()) * row_bytes];
        let mut dots = [0f32; ROWS_PER_TASK];
        for (bi, xs) in split.iter().enumerate() {
            kernel.dot_rows(rows, xs, &mut dots[..chunk.len()]);
            chunk.iter_mut().zip(&dots).for_each(|(slot, &d)| slot[bi] = d);
        }
    })
}

/// Any packed dtype: decode each row into a buffer that stays in L1, then dot it with x.
fn decoded_rows_forward(x: &[f32], b: usize, k: usize, packed: &Packed, n: usize, schedule: Schedule) -> Vec<f32> {
    let fill = |first_row: usize, chunk: &mut [[f32; MAX_BATCH]]| {
        let mut row = vec![0f32; k];
        for (r, slot) in chunk.iter_mut().enumerate() {
            packed.decode_into((first_row + r) * k, &mut row);
            for bi in 0..b {
                slot[bi] = f32_dot(&row, &x[bi * k..(bi + 1) * k]);
            }
        }
    };
    over_row_chunks(b, n, schedule, fill)
}

/// Run `fill(first_row, results)` over chunks of ROWS_PER_TASK output rows (on the rayon pool
/// for `Parallel`; the chunks are the same either way) and lay the results out as y[b×n].
fn over_row_chunks(b: usize, n: usize, schedule: Schedule, fill: impl Fn(usize, &mut [[f32; MAX_BATCH]]) + Sync) -> Vec<f32> {
    let mut yt = vec![[0f32; MAX_BATCH]; n];
    if schedule == Schedule::Parallel {
        yt.par_chunks_mut(ROWS_PER_TASK).enumerate().for_each(|(t, chunk)| fill(t * ROWS_PER_TASK, chunk));
    } else {
        yt.chunks_mut(ROWS_PER_TASK).enumerate().for_each(|(t, chunk)| fill(t * ROWS_PER_TASK, chunk));
    }
    transpose_out(&yt, b, n)
}

/// Per-row results [n][batch] → y[batch×n].
fn transpose_out(yt: &[[f32; MAX_BATCH]], b: usize, n: usize) -> Vec<f32> {
    let mut y = vec![0f32; b * n];
    for (o, vals) in yt.iter().enumerate() {
        for bi in 0..b {
            y[bi * n + o] = vals[bi];
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_standard;

    #[test]
    fn fused_matches_decoded_dot() {
        // k = 70: sub-byte rows start mid-byte (decode path); 64 and 200: aligned (code kernels,
        // with loop tails); 96: whole GGML blocks.
        for k in [70, 64, 200, 96] {
            let (b, n) = (3, 37);
            let x: Vec<f32> = (0..b * k).map(|i| ((i * 7919 % 113) as f32 / 56.0) - 1.0).collect();
            let w: Vec<f32> = (0..n * k).map(|i| ((i * 104729 % 211) as f32 / 105.0) - 1.0).collect();
            let blocks = if k % DType::BLOCK_VALUES == 0 { &DType::BLOCKS[..] } else { &[] };
            let books = DType::ALL.into_iter().chain(blocks.iter().copied()).flat_map(|d| {
                [encode_standard(&w, d), crate::codec::encode_loom(&w, d, crate::codec::loom_auto_scale(&w, d))]
            });
            for p in books {
                let (dtype, deq) = (p.dtype, p.decode_all());
                let view = if dtype == DType::Float32 { WeightView::F32(&w) } else { WeightView::Packed(&p) };
                let tiled = forward(&x, b, k, view, n, Schedule::Tiled);
                assert_eq!(tiled, forward(&x, b, k, view, n, Schedule::Parallel), "{dtype} k={k}");
                for bi in 0..b {
                    for o in 0..n {
                        let r: f64 = (0..k).map(|i| x[bi * k + i] as f64 * deq[o * k + i] as f64).sum();
                        let scale: f64 = (0..k).map(|i| (x[bi * k + i] as f64 * deq[o * k + i] as f64).abs()).sum();
                        assert!((tiled[bi * n + o] as f64 - r).abs() <= 1e-6 * (scale + 1e-30), "{dtype} k={k} {bi} {o}");
                    }
                }
            }
        }
    }
}
