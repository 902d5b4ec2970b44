//! Small-batch (GEMV-like) forward: one SIMD dot product per output row, straight from float32
//! weights or packed int8/int4 codes (Σ code·x in f32 lanes, times the tensor scale — codes are
//! never widened to a float copy, so an int4 layer streams an eighth of the float32 bytes).
//! AVX-512 or AVX2+FMA is picked at run time; other CPUs use scalar loops (same math, different
//! summation order).

use super::Schedule;
use crate::codec::Packed;
use crate::dtype::DType;
use crate::weights::WeightView;
use rayon::prelude::*;

/// Largest batch the fused path handles (above it, decoding a tile once for all rows wins).
pub const MAX_BATCH: usize = 4;
/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 64;

/// Whether weights of this view (a [n][k] matrix) can use the small-batch path.
pub fn applies(w: WeightView, k: usize, batch: usize) -> bool {
    batch <= MAX_BATCH
        && match w {
            WeightView::F32(_) => true,
            WeightView::Packed(p) => match p.dtype {
                DType::Int8 => true,
                DType::Int4 => k.is_multiple_of(2),
                _ => false,
            },
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
    let mut yt = vec![[0f32; MAX_BATCH]; n];
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
    if schedule == Schedule::Parallel {
        yt.par_chunks_mut(ROWS_PER_TASK).enumerate().for_each(|(t, chunk)| fill(t * ROWS_PER_TASK, chunk));
    } else {
        yt.chunks_mut(ROWS_PER_TASK).enumerate().for_each(|(t, chunk)| fill(t * ROWS_PER_TASK, chunk));
    }
    transpose_out(&yt, b, n)
}

fn packed_forward(x: &[f32], b: usize, k: usize, packed: &Packed, n: usize, schedule: Schedule) -> Vec<f32> {
    // int4 rows hold element pairs per byte: split x into even and odd positions once.
    let split: Vec<(Vec<f32>, Vec<f32>)> = if packed.dtype == DType::Int4 {
        x.chunks_exact(k)
            .map(|row| (row.iter().step_by(2).copied().collect(), row.iter().skip(1).step_by(2).copied().collect()))
            .collect()
    } else {
        Vec::new()
    };
    let row_bytes = packed.dtype.packed_bytes(k);
    let scale = packed.scale;
    let row_outputs = |o: usize| -> [f32; MAX_BATCH] {
        let codes = &packed.bytes[o * row_bytes..(o + 1) * row_bytes];
        let mut out = [0f32; MAX_BATCH];
        for (bi, slot) in out.iter_mut().enumerate().take(b) {
            let dot = match packed.dtype {
                DType::Int8 => int8_dot(codes, &x[bi * k..(bi + 1) * k]),
                _ => int4_dot(codes, &split[bi].0, &split[bi].1),
            };
            *slot = dot * scale;
        }
        out
    };
    by_rows(b, n, schedule, row_outputs)
}

/// Evaluate `row_outputs(o)` for every output row (in parallel blocks for `Parallel`) and lay
/// the results out as y[b×n].
fn by_rows(b: usize, n: usize, schedule: Schedule, row_outputs: impl Fn(usize) -> [f32; MAX_BATCH] + Sync) -> Vec<f32> {
    let mut yt = vec![[0f32; MAX_BATCH]; n];
    if schedule == Schedule::Parallel {
        yt.par_chunks_mut(ROWS_PER_TASK).enumerate().for_each(|(t, chunk)| {
            for (j, slot) in chunk.iter_mut().enumerate() {
                *slot = row_outputs(t * ROWS_PER_TASK + j);
            }
        });
    } else {
        yt.iter_mut().enumerate().for_each(|(o, slot)| *slot = row_outputs(o));
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

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Σ w[i]·x[i].
pub fn f32_dot(w: &[f32], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // Safety: the CPU supports AVX2 and FMA (checked above).
        return unsafe { avx2::f32_dot(w, x) };
    }
    w.iter().zip(x).map(|(&a, &b)| a * b).sum()
}

/// Four dot products of equally long rows with one x (x loaded once per lane group).
pub fn f32_dot4(rows: [&[f32]; 4], x: &[f32]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // Safety: the CPU supports AVX2 and FMA (checked above).
        return unsafe { avx2::f32_dot4(rows, x) };
    }
    rows.map(|row| row.iter().zip(x).map(|(&a, &b)| a * b).sum())
}

/// Σ code[i]·x[i] over signed 8-bit codes.
pub fn int8_dot(codes: &[u8], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // Safety: the CPU supports AVX-512F/BW (checked above).
        return unsafe { avx512::int8_dot(codes, x) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // Safety: the CPU supports AVX2 and FMA (checked above).
        return unsafe { avx2::int8_dot(codes, x) };
    }
    codes.iter().zip(x).map(|(&c, &v)| c as i8 as f32 * v).sum()
}

/// Σ over bytes j of lo(code_j)·even[j] + hi(code_j)·odd[j], nibbles signed (int4 pairs).
pub fn int4_dot(codes: &[u8], even: &[f32], odd: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // Safety: the CPU supports AVX-512F/BW (checked above).
        return unsafe { avx512::int4_dot(codes, even, odd) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // Safety: the CPU supports AVX2 and FMA (checked above).
        return unsafe { avx2::int4_dot(codes, even, odd) };
    }
    scalar_int4_dot(codes, even, odd, 0)
}

fn nibble(v: u8) -> f32 {
    (((v & 0xF) ^ 8) as i32 - 8) as f32
}

fn scalar_int4_dot(codes: &[u8], even: &[f32], odd: &[f32], from: usize) -> f32 {
    (from..codes.len()).map(|j| nibble(codes[j]) * even[j] + nibble(codes[j] >> 4) * odd[j]).sum()
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// 8 signed bytes → 8 f32 lanes.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn widen8(bytes: __m128i) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn f32_dot(w: &[f32], x: &[f32]) -> f32 {
        let n = w.len().min(x.len());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (u, a) in acc.iter_mut().enumerate() {
                let off = i + 8 * u;
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(w.as_ptr().add(off)), _mm256_loadu_ps(x.as_ptr().add(off)), *a);
            }
            i += 32;
        }
        let mut sum = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
        while i < n {
            sum += w[i] * x[i];
            i += 1;
        }
        sum
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn f32_dot4(rows: [&[f32]; 4], x: &[f32]) -> [f32; 4] {
        let n = x.len();
        debug_assert!(rows.iter().all(|r| r.len() == n));
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        let mut i = 0;
        while i + 16 <= n {
            let x0 = _mm256_loadu_ps(x.as_ptr().add(i));
            let x1 = _mm256_loadu_ps(x.as_ptr().add(i + 8));
            for (a, row) in acc.iter_mut().zip(rows) {
                a[0] = _mm256_fmadd_ps(_mm256_loadu_ps(row.as_ptr().add(i)), x0, a[0]);
                a[1] = _mm256_fmadd_ps(_mm256_loadu_ps(row.as_ptr().add(i + 8)), x1, a[1]);
            }
            i += 16;
        }
        let mut out = [0f32; 4];
        for ((o, a), row) in out.iter_mut().zip(acc).zip(rows) {
            *o = hsum(_mm256_add_ps(a[0], a[1])) + (i..n).map(|j| row[j] * x[j]).sum::<f32>();
        }
        out
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn int8_dot(codes: &[u8], x: &[f32]) -> f32 {
        let n = codes.len().min(x.len());
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            let c = _mm_loadu_si128(codes.as_ptr().add(i) as *const __m128i);
            a0 = _mm256_fmadd_ps(widen8(c), _mm256_loadu_ps(x.as_ptr().add(i)), a0);
            a1 = _mm256_fmadd_ps(widen8(_mm_srli_si128(c, 8)), _mm256_loadu_ps(x.as_ptr().add(i + 8)), a1);
            i += 16;
        }
        let mut sum = hsum(_mm256_add_ps(a0, a1));
        while i < n {
            sum += codes[i] as i8 as f32 * x[i];
            i += 1;
        }
        sum
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn int4_dot(codes: &[u8], even: &[f32], odd: &[f32]) -> f32 {
        let n = codes.len().min(even.len()).min(odd.len());
        let mask = _mm_set1_epi8(0x0F);
        let eight = _mm_set1_epi8(8);
        let signed = |v: __m128i| _mm_sub_epi8(_mm_xor_si128(v, eight), eight);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut j = 0;
        while j + 16 <= n {
            let c = _mm_loadu_si128(codes.as_ptr().add(j) as *const __m128i);
            let lo = signed(_mm_and_si128(c, mask));
            let hi = signed(_mm_and_si128(_mm_srli_epi16(c, 4), mask));
            let (e, o) = (even.as_ptr().add(j), odd.as_ptr().add(j));
            acc[0] = _mm256_fmadd_ps(widen8(lo), _mm256_loadu_ps(e), acc[0]);
            acc[1] = _mm256_fmadd_ps(widen8(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(e.add(8)), acc[1]);
            acc[2] = _mm256_fmadd_ps(widen8(hi), _mm256_loadu_ps(o), acc[2]);
            acc[3] = _mm256_fmadd_ps(widen8(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(o.add(8)), acc[3]);
            j += 16;
        }
        let total = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        hsum(total) + super::scalar_int4_dot(&codes[..n], even, odd, j)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// 16 signed bytes → 16 f32 lanes.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn widen16(bytes: __m128i) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes))
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn int8_dot(codes: &[u8], x: &[f32]) -> f32 {
        let n = codes.len().min(x.len());
        let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 32 <= n {
            let c0 = _mm_loadu_si128(codes.as_ptr().add(i) as *const __m128i);
            let c1 = _mm_loadu_si128(codes.as_ptr().add(i + 16) as *const __m128i);
            a0 = _mm512_fmadd_ps(widen16(c0), _mm512_loadu_ps(x.as_ptr().add(i)), a0);
            a1 = _mm512_fmadd_ps(widen16(c1), _mm512_loadu_ps(x.as_ptr().add(i + 16)), a1);
            i += 32;
        }
        let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
        while i < n {
            sum += codes[i] as i8 as f32 * x[i];
            i += 1;
        }
        sum
    }

    /// Nibble codes 0..15 → their signed values as f32 with one table permute (vpermps), so the
    /// nibble needs no sign extension or int→float conversion.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn nibble_values(nibbles: __m128i, table: __m512) -> __m512 {
        _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(nibbles), table)
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn int4_dot(codes: &[u8], even: &[f32], odd: &[f32]) -> f32 {
        let n = codes.len().min(even.len()).min(odd.len());
        let table = _mm512_setr_ps(0., 1., 2., 3., 4., 5., 6., 7., -8., -7., -6., -5., -4., -3., -2., -1.);
        let mask = _mm256_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); 8];
        let mut j = 0;
        // 64 code bytes (128 weights) per iteration: eight independent accumulators.
        while j + 64 <= n {
            for half in 0..2 {
                let at = j + 32 * half;
                let c = _mm256_loadu_si256(codes.as_ptr().add(at) as *const __m256i);
                let lo = _mm256_and_si256(c, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16(c, 4), mask);
                let (e, o) = (even.as_ptr().add(at), odd.as_ptr().add(at));
                let a = &mut acc[4 * half..4 * half + 4];
                a[0] = _mm512_fmadd_ps(nibble_values(_mm256_castsi256_si128(lo), table), _mm512_loadu_ps(e), a[0]);
                a[1] = _mm512_fmadd_ps(nibble_values(_mm256_extracti128_si256(lo, 1), table), _mm512_loadu_ps(e.add(16)), a[1]);
                a[2] = _mm512_fmadd_ps(nibble_values(_mm256_castsi256_si128(hi), table), _mm512_loadu_ps(o), a[2]);
                a[3] = _mm512_fmadd_ps(nibble_values(_mm256_extracti128_si256(hi, 1), table), _mm512_loadu_ps(o.add(16)), a[3]);
            }
            j += 64;
        }
        let sum4 = |a: &[__m512]| _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
        let total = _mm512_add_ps(sum4(&acc[..4]), sum4(&acc[4..]));
        _mm512_reduce_add_ps(total) + super::scalar_int4_dot(&codes[..n], even, odd, j)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_standard;

    #[test]
    fn fused_matches_decoded_dot() {
        let (b, k, n) = (3, 70, 37);
        let x: Vec<f32> = (0..b * k).map(|i| ((i * 7919 % 113) as f32 / 56.0) - 1.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 104729 % 211) as f32 / 105.0) - 1.0).collect();
        for dtype in [DType::Float32, DType::Int8, DType::Int4] {
            let p = encode_standard(&w, dtype);
            let deq = p.decode_all();
            let view = if dtype == DType::Float32 { WeightView::F32(&w) } else { WeightView::Packed(&p) };
            for schedule in [Schedule::Tiled, Schedule::Parallel] {
                let y = forward(&x, b, k, view, n, schedule);
                for bi in 0..b {
                    for o in 0..n {
                        let r: f64 = (0..k).map(|i| x[bi * k + i] as f64 * deq[o * k + i] as f64).sum();
                        assert!((y[bi * n + o] as f64 - r).abs() < 1e-5 * (1.0 + r.abs()), "{dtype} {bi} {o}");
                    }
                }
            }
        }
    }
}
