//! Dot products of one row of GGML blocks (Q4_0, Q4_1, Q8_0) with float32 x, read straight from
//! the blocks: the codes are widened in registers and each block's partial sum is scaled once.
//!
//! A 4-bit block is value = q·d + m (Q4_0: m = −8·d), so its dot with x is d·Σq·x + m·Σx. The
//! per-block sums Σx (`block_sums`) are computed once per x and shared by every row. AVX-512 and
//! AVX2 kernels are chosen at run time (`simd::level`), with a scalar fallback.

use super::simd;
use crate::dtype::DType;
const QK: usize = DType::BLOCK_VALUES;
/// How far ahead of the block being read the kernels prefetch (bytes).
const PREFETCH_AHEAD: usize = 1024;

/// Σx over each 32-value block of x (x is a whole number of blocks).
pub fn block_sums(x: &[f32]) -> Vec<f32> {
    x.chunks_exact(QK).map(|block| block.iter().sum()).collect()
}

/// out[r] = Σ w_r·x for consecutive rows of `dtype` blocks (`rows` holds `out.len()` rows of
/// x.len() values); `sums` is `block_sums(x)`. One call covers many rows, so the per-call
/// dispatch is paid once per batch of rows, not per row.
pub fn rows_dot(dtype: DType, rows: &[u8], x: &[f32], sums: &[f32], out: &mut [f32]) {
    let layout = Layout::of(dtype);
    assert_eq!(rows.len(), out.len() * x.len() / QK * layout.block_bytes, "{dtype} rows do not match x and out");
    #[cfg(target_arch = "x86_64")]
    {
        // Safety: each kernel runs only when `simd::level` detected its instruction set, and
        // the assert above keeps every row inside `rows`.
        if simd::has_avx512() {
            return unsafe { avx512::rows_dot(layout, rows, x, sums, out) };
        }
        if simd::has_avx2_fma() {
            return unsafe { avx2::rows_dot(layout, rows, x, sums, out) };
        }
    }
    each_row(rows, out, |row| scalar_block_dot(dtype, row, x));
}

/// The values of whole blocks (`out.len()` values from `blocks`), exactly as
/// `ggml_blocks::decode_into` computes them (q·d + m as two roundings, never fused), so either
/// path gives the same bits; this one widens a block per instruction instead of per value.
pub fn decode_blocks(dtype: DType, blocks: &[u8], out: &mut [f32]) {
    let layout = Layout::of(dtype);
    assert_eq!(blocks.len(), out.len() / QK * layout.block_bytes, "{dtype} blocks do not match out");
    assert!(out.len().is_multiple_of(QK), "{dtype} decodes whole blocks");
    #[cfg(target_arch = "x86_64")]
    {
        // Safety: each kernel runs only when its instruction set was detected, and the asserts
        // above keep every block inside `blocks`.
        if simd::has_avx512() {
            return unsafe { avx512::decode_blocks(layout, blocks, out) };
        }
        if simd::has_avx2_fma() {
            return unsafe { avx2::decode_blocks(layout, blocks, out) };
        }
    }
    crate::codec::ggml_blocks::decode_scalar(dtype, blocks, out);
}

/// Where a block keeps its parts.
#[derive(Clone, Copy)]
struct Layout {
    block_bytes: usize,
    /// Offset of the codes (after d, and m for Q4_1).
    codes_at: usize,
    /// Q8_0: 32 signed bytes; otherwise 16 bytes of nibbles (value j low, value j + 16 high).
    bytes: bool,
    /// Q4_1 stores m after d; Q4_0's m is −8·d.
    stored_min: bool,
}

impl Layout {
    /// The layout from its two flags (Q8_0: bytes; Q4_1: stored_min; Q4_0: neither), as a
    /// `const fn` so the SIMD loops can be instantiated per format (const generics).
    const fn new(bytes: bool, stored_min: bool) -> Layout {
        match (bytes, stored_min) {
            (true, _) => Layout { block_bytes: 34, codes_at: 2, bytes: true, stored_min: false },
            (false, true) => Layout { block_bytes: 20, codes_at: 4, bytes: false, stored_min: true },
            (false, false) => Layout { block_bytes: 18, codes_at: 2, bytes: false, stored_min: false },
        }
    }

    fn of(dtype: DType) -> Layout {
        match dtype {
            DType::Q4_0 => Layout::new(false, false),
            DType::Q4_1 => Layout::new(false, true),
            _ => Layout::new(true, false),
        }
    }

    /// (d, m) of `block` (m = 0 for Q8_0), with `half` converting an f16 bit pattern.
    #[inline(always)]
    fn scales(self, block: &[u8], half: impl Fn(u16) -> f32) -> (f32, f32) {
        let half_at = |p: usize| half(u16::from_le_bytes([block[p], block[p + 1]]));
        let d = half_at(0);
        let m = match (self.bytes, self.stored_min) {
            (true, _) => 0.0,
            (false, true) => half_at(2),
            (false, false) => -8.0 * d,
        };
        (d, m)
    }
}

/// out[r] = dot(row r) over the equally long rows of `rows`.
#[inline(always)]
fn each_row(rows: &[u8], out: &mut [f32], dot: impl Fn(&[u8]) -> f32) {
    let row_bytes = rows.len() / out.len().max(1);
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(row_bytes.max(1))) {
        *o = dot(row);
    }
}

fn scalar_block_dot(dtype: DType, row: &[u8], x: &[f32]) -> f32 {
    let mut values = [0f32; QK];
    let block_bytes = dtype.block_bytes().expect("a block dtype");
    row.chunks_exact(block_bytes)
        .zip(x.chunks_exact(QK))
        .map(|(block, xs)| {
            crate::codec::ggml_blocks::decode_scalar(dtype, block, &mut values);
            values.iter().zip(xs).map(|(w, v)| w * v).sum::<f32>()
        })
        .sum()
}

/// What the row loop needs from one instruction set (`avx512::Lanes`, `avx2::Lanes`).
#[cfg(target_arch = "x86_64")]
trait BlockLanes {
    type Acc: Copy;
    unsafe fn zero() -> Self::Acc;
    /// One block's Σ q·x (before d) in lanes, its d and its m.
    unsafe fn block(layout: Layout, at: *const u8, x: *const f32) -> (Self::Acc, f32, f32);
    /// acc + d·partial.
    unsafe fn add_scaled(acc: Self::Acc, d: f32, partial: Self::Acc) -> Self::Acc;
    /// The sum of every lane of a and b.
    unsafe fn total(a: Self::Acc, b: Self::Acc) -> f32;
}

/// `rows_dot` for one instruction set, with the block format as a constant (one loop per
/// format). Inlined into each module's `#[target_feature]` entry point.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn rows_dot_with<L: BlockLanes>(layout: Layout, rows: &[u8], x: &[f32], sums: &[f32], out: &mut [f32]) {
    match (layout.bytes, layout.stored_min) {
        (true, _) => each_row(rows, out, |row| dot_with::<L, true, false>(row, x, sums)),
        (false, true) => each_row(rows, out, |row| dot_with::<L, false, true>(row, x, sums)),
        (false, false) => each_row(rows, out, |row| dot_with::<L, false, false>(row, x, sums)),
    }
}

/// Two blocks per iteration into two accumulators (the FMA latency chain is the limit).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot_with<L: BlockLanes, const BYTES: bool, const STORED_MIN: bool>(row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    let layout = const { Layout::new(BYTES, STORED_MIN) };
    let blocks = sums.len().min(x.len() / QK).min(row.len() / layout.block_bytes);
    let (row, x) = (row.as_ptr(), x.as_ptr());
    let (mut acc0, mut acc1) = (L::zero(), L::zero());
    let (mut min0, mut min1) = (0f32, 0f32);
    let mut b = 0;
    while b + 2 <= blocks {
        // Rows lie back to back: ask for the bytes about three rows ahead now, so the stream
        // from memory does not wait on the hardware prefetcher (paired runs from DRAM with two
        // threads: never slower, at times a quarter faster).
        _mm_prefetch::<_MM_HINT_T0>(row.add(b * layout.block_bytes + PREFETCH_AHEAD) as *const i8);
        let (p0, d0, m0) = L::block(layout, row.add(b * layout.block_bytes), x.add(b * QK));
        let (p1, d1, m1) = L::block(layout, row.add((b + 1) * layout.block_bytes), x.add((b + 1) * QK));
        acc0 = L::add_scaled(acc0, d0, p0);
        acc1 = L::add_scaled(acc1, d1, p1);
        min0 += m0 * sums[b];
        min1 += m1 * sums[b + 1];
        b += 2;
    }
    if b < blocks {
        let (p0, d0, m0) = L::block(layout, row.add(b * layout.block_bytes), x.add(b * QK));
        acc0 = L::add_scaled(acc0, d0, p0);
        min0 += m0 * sums[b];
    }
    L::total(acc0, acc1) + (min0 + min1)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Layout, QK};
    use std::arch::x86_64::*;

    /// The block's 32 codes as integers, values 0..16 and 16..32.
    #[inline(always)]
    unsafe fn codes(layout: Layout, block: *const u8) -> (__m512i, __m512i) {
        let codes = block.add(layout.codes_at);
        if layout.bytes {
            (_mm512_cvtepi8_epi32(_mm_loadu_si128(codes as *const __m128i)), _mm512_cvtepi8_epi32(_mm_loadu_si128(codes.add(16) as *const __m128i)))
        } else {
            let c = _mm512_cvtepu8_epi32(_mm_loadu_si128(codes as *const __m128i));
            (_mm512_and_si512(c, _mm512_set1_epi32(0x0F)), _mm512_srli_epi32(c, 4))
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,f16c")]
    pub(super) unsafe fn decode_blocks(layout: Layout, blocks: &[u8], out: &mut [f32]) {
        for (block, values) in blocks.chunks_exact(layout.block_bytes).zip(out.chunks_exact_mut(QK)) {
            let (d, m) = layout.scales(block, |bits| _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))));
            let (w0, w1) = codes(layout, block.as_ptr());
            // The scalar decode's arithmetic: Q4_0 (q − 8)·d, Q4_1 q·d + m, Q8_0 q·d.
            let value = |w: __m512i| {
                let (dv, mv) = (_mm512_set1_ps(d), _mm512_set1_ps(m));
                match (layout.bytes, layout.stored_min) {
                    (false, false) => _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(w, _mm512_set1_epi32(8))), dv),
                    (false, true) => _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(w), dv), mv),
                    (true, _) => _mm512_mul_ps(_mm512_cvtepi32_ps(w), dv),
                }
            };
            _mm512_storeu_ps(values.as_mut_ptr(), value(w0));
            _mm512_storeu_ps(values.as_mut_ptr().add(16), value(w1));
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,f16c")]
    pub(super) unsafe fn rows_dot(layout: Layout, rows: &[u8], x: &[f32], sums: &[f32], out: &mut [f32]) {
        super::rows_dot_with::<Lanes>(layout, rows, x, sums, out)
    }

    /// 16 f32 lanes.
    struct Lanes;

    impl super::BlockLanes for Lanes {
        type Acc = __m512;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn block(layout: Layout, block: *const u8, x: *const f32) -> (__m512, f32, f32) {
            let (d, m) = layout.scales(std::slice::from_raw_parts(block, 4), |bits| _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))));
            let (w0, w1) = codes(layout, block);
            let partial = _mm512_fmadd_ps(_mm512_cvtepi32_ps(w1), _mm512_loadu_ps(x.add(16)), _mm512_mul_ps(_mm512_cvtepi32_ps(w0), _mm512_loadu_ps(x)));
            (partial, d, m)
        }
        #[inline(always)]
        unsafe fn add_scaled(acc: __m512, d: f32, partial: __m512) -> __m512 {
            _mm512_fmadd_ps(_mm512_set1_ps(d), partial, acc)
        }
        #[inline(always)]
        unsafe fn total(a: __m512, b: __m512) -> f32 {
            _mm512_reduce_add_ps(_mm512_add_ps(a, b))
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Layout, QK};
    use std::arch::x86_64::*;

    /// The block's 32 codes as two registers of 16 bytes, in x order.
    #[inline(always)]
    unsafe fn codes(layout: Layout, block: *const u8) -> (__m128i, __m128i) {
        let codes = block.add(layout.codes_at);
        if layout.bytes {
            (_mm_loadu_si128(codes as *const __m128i), _mm_loadu_si128(codes.add(16) as *const __m128i))
        } else {
            let (c, low) = (_mm_loadu_si128(codes as *const __m128i), _mm_set1_epi8(0x0F));
            (_mm_and_si128(c, low), _mm_and_si128(_mm_srli_epi16(c, 4), low))
        }
    }

    /// 8 bytes, zero- or sign-extended, as 8 f32 lanes.
    #[inline(always)]
    unsafe fn widen8(bytes: __m128i, signed: bool) -> __m256 {
        _mm256_cvtepi32_ps(if signed { _mm256_cvtepi8_epi32(bytes) } else { _mm256_cvtepu8_epi32(bytes) })
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn decode_blocks(layout: Layout, blocks: &[u8], out: &mut [f32]) {
        for (block, values) in blocks.chunks_exact(layout.block_bytes).zip(out.chunks_exact_mut(QK)) {
            let (d, m) = layout.scales(block, |bits| _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))));
            let (first, second) = codes(layout, block.as_ptr());
            // The scalar decode's arithmetic: Q4_0 (q − 8)·d, Q4_1 q·d + m, Q8_0 q·d.
            let value = |eight: __m128i| {
                let (dv, mv) = (_mm256_set1_ps(d), _mm256_set1_ps(m));
                let q = if layout.bytes { _mm256_cvtepi8_epi32(eight) } else { _mm256_cvtepu8_epi32(eight) };
                match (layout.bytes, layout.stored_min) {
                    (false, false) => _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, _mm256_set1_epi32(8))), dv),
                    (false, true) => _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(q), dv), mv),
                    (true, _) => _mm256_mul_ps(_mm256_cvtepi32_ps(q), dv),
                }
            };
            let at = values.as_mut_ptr();
            _mm256_storeu_ps(at, value(first));
            _mm256_storeu_ps(at.add(8), value(_mm_unpackhi_epi64(first, first)));
            _mm256_storeu_ps(at.add(16), value(second));
            _mm256_storeu_ps(at.add(24), value(_mm_unpackhi_epi64(second, second)));
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows_dot(layout: Layout, rows: &[u8], x: &[f32], sums: &[f32], out: &mut [f32]) {
        super::rows_dot_with::<Lanes>(layout, rows, x, sums, out)
    }

    /// 8 f32 lanes.
    struct Lanes;

    impl super::BlockLanes for Lanes {
        type Acc = __m256;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn block(layout: Layout, block: *const u8, x: *const f32) -> (__m256, f32, f32) {
            let (d, m) = layout.scales(std::slice::from_raw_parts(block, 4), |bits| _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))));
            let (first, second) = codes(layout, block);
            let signed = layout.bytes;
            let mut partial = _mm256_mul_ps(widen8(first, signed), _mm256_loadu_ps(x));
            partial = _mm256_fmadd_ps(widen8(_mm_unpackhi_epi64(first, first), signed), _mm256_loadu_ps(x.add(8)), partial);
            partial = _mm256_fmadd_ps(widen8(second, signed), _mm256_loadu_ps(x.add(16)), partial);
            partial = _mm256_fmadd_ps(widen8(_mm_unpackhi_epi64(second, second), signed), _mm256_loadu_ps(x.add(24)), partial);
            (partial, d, m)
        }
        #[inline(always)]
        unsafe fn add_scaled(acc: __m256, d: f32, partial: __m256) -> __m256 {
            _mm256_fmadd_ps(_mm256_set1_ps(d), partial, acc)
        }
        #[inline(always)]
        unsafe fn total(a: __m256, b: __m256) -> f32 {
            let v = _mm256_add_ps(a, b);
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ggml_blocks;

    #[test]
    fn simd_decode_gives_the_scalar_bits() {
        let w: Vec<f32> = (0..5 * QK).map(|i| ((i as f32 * 0.37).sin() * 2.1) - 0.3).collect();
        for dtype in DType::BLOCKS {
            let blocks = ggml_blocks::quantize(&w, dtype);
            let (mut fast, mut plain) = (vec![0f32; w.len()], vec![0f32; w.len()]);
            ggml_blocks::decode_scalar(dtype, &blocks, &mut plain);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            decode_blocks(dtype, &blocks, &mut fast);
            assert_eq!(bits(&fast), bits(&plain), "{dtype}");
            #[cfg(target_arch = "x86_64")]
            if simd::has_avx2_fma() {
                fast.fill(0.0);
                // Safety: AVX2 was detected.
                unsafe { avx2::decode_blocks(Layout::of(dtype), &blocks, &mut fast) };
                assert_eq!(bits(&fast), bits(&plain), "{dtype} AVX2");
            }
        }
    }

    #[test]
    fn block_dot_matches_the_decoded_row_at_every_simd_level() {
        let k = 7 * QK;
        let w: Vec<f32> = (0..k).map(|i| ((i as f32 * 0.61).sin() * 1.3) + 0.2).collect();
        let x: Vec<f32> = (0..k).map(|i| ((i * 7919 % 113) as f32 / 56.0) - 1.0).collect();
        let sums = block_sums(&x);
        for dtype in DType::BLOCKS {
            assert_eq!(Some(Layout::of(dtype).block_bytes), dtype.block_bytes());
            let row = ggml_blocks::quantize(&w, dtype);
            let mut deq = vec![0f32; k];
            ggml_blocks::decode_into(dtype, &row, 0, &mut deq);
            let exact: f64 = deq.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
            let scale: f64 = deq.iter().zip(&x).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
            // Two copies of the row: every kernel must give both the same dot product.
            let rows = [row.clone(), row].concat();
            let mut results = [[0f32; 2]; 4];
            rows_dot(dtype, &rows, &x, &sums, &mut results[0]);
            each_row(&rows, &mut results[1], |r| scalar_block_dot(dtype, r, &x));
            #[cfg(target_arch = "x86_64")]
            unsafe {
                if simd::has_avx2_fma() {
                    avx2::rows_dot(Layout::of(dtype), &rows, &x, &sums, &mut results[2]);
                }
                if simd::has_avx512() {
                    avx512::rows_dot(Layout::of(dtype), &rows, &x, &sums, &mut results[3]);
                }
            }
            for r in results.iter().flatten() {
                assert!((*r as f64 - exact).abs() <= 1e-6 * scale, "{dtype}: {r} vs {exact}");
            }
        }
    }
}
