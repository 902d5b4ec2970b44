//! SIMD dot products of one weight row with x: float32 rows, and rows of packed codes of every
//! width read in place (int8; 4-bit codes through a 16-value table; 2-bit codes; bits; f16/bf16;
//! uint8). AVX-512 and AVX2+FMA are detected at run time; `gemv.rs` only selects a kernel the
//! CPU has, with scalar fallbacks for float32, int8 and int4 on other CPUs.

/// Instruction-set levels the kernels use, widest last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    Scalar,
    Avx2,
    Avx512,
}

/// The widest level this CPU supports, capped by the environment variable `POLYVTD_SIMD`
/// ("avx512", "avx2" or "scalar"; read once) — a way to run and test the fallback kernels on
/// a machine that has the wider ones.
pub fn level() -> SimdLevel {
    static LEVEL: std::sync::OnceLock<SimdLevel> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var("POLYVTD_SIMD").map(|v| v.to_ascii_lowercase()).as_deref() {
            Ok("scalar") => SimdLevel::Scalar,
            Ok("avx2") => SimdLevel::Avx2,
            _ => SimdLevel::Avx512,
        };
        detected().min(cap)
    })
}

fn detected() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        // F16C (f16 scales of GGML blocks) comes with every AVX2 CPU; checked all the same.
        if has!("avx512f") && has!("avx512bw") && has!("avx2") && has!("fma") && has!("f16c") {
            return SimdLevel::Avx512;
        }
        if has!("avx2") && has!("fma") && has!("f16c") {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Scalar
}

pub fn has_avx512() -> bool {
    level() >= SimdLevel::Avx512
}

pub fn has_avx2_fma() -> bool {
    level() >= SimdLevel::Avx2
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

/// y[i] += a·x[i].
pub fn f32_axpy(a: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // Safety: the CPU supports AVX2 and FMA (checked above).
        return unsafe { avx2::f32_axpy(a, x, y) };
    }
    y.iter_mut().zip(x).for_each(|(acc, &v)| *acc += a * v);
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

/// The signed values of the 16 int4 codes (two's complement nibbles).
pub const SIGNED_NIBBLES: [f32; 16] = [0., 1., 2., 3., 4., 5., 6., 7., -8., -7., -6., -5., -4., -3., -2., -1.];

/// Σ over bytes j of table[lo(code_j)]·even[j] + table[hi(code_j)]·odd[j]. Without AVX-512 only
/// the signed int4 table is supported (AVX2 kernel), which is all `gemv.rs` selects there.
pub fn nibble_dot(codes: &[u8], even: &[f32], odd: &[f32], table: &[f32; 16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // Safety: the CPU supports AVX-512F/BW (checked above).
        return unsafe { avx512::nibble_dot(codes, even, odd, table) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() && *table == SIGNED_NIBBLES {
        // Safety: the CPU supports AVX2 and FMA (checked above).
        return unsafe { avx2::int4_dot(codes, even, odd) };
    }
    scalar_nibble_dot(codes, even, odd, table, 0)
}

fn scalar_nibble_dot(codes: &[u8], even: &[f32], odd: &[f32], table: &[f32; 16], from: usize) -> f32 {
    (from..codes.len()).map(|j| table[(codes[j] & 0xF) as usize] * even[j] + table[(codes[j] >> 4) as usize] * odd[j]).sum()
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
    pub unsafe fn f32_axpy(a: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let av = _mm256_set1_ps(a);
        let mut i = 0;
        while i + 8 <= n {
            let at = y.as_mut_ptr().add(i);
            _mm256_storeu_ps(at, _mm256_fmadd_ps(av, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(at)));
            i += 8;
        }
        y[i..n].iter_mut().zip(&x[i..n]).for_each(|(acc, &v)| *acc += a * v);
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
        hsum(total) + super::scalar_nibble_dot(&codes[..n], even, odd, &super::SIGNED_NIBBLES, j)
    }
}

/// AVX-512 kernels. Callers of the `pub` ones must have checked `has_avx512()`.
#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use std::arch::x86_64::*;

    /// 16 signed bytes → 16 f32 lanes.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn widen16(bytes: __m128i) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes))
    }

    /// 16 codes 0..15 (one per byte) → their table values, with one vpermps.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn lookup16(codes: __m128i, table: __m512) -> __m512 {
        _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(codes), table)
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn sum(acc: &[__m512]) -> f32 {
        let mut total = acc[0];
        for &a in &acc[1..] {
            total = _mm512_add_ps(total, a);
        }
        _mm512_reduce_add_ps(total)
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn int8_dot(codes: &[u8], x: &[f32]) -> f32 {
        let n = codes.len().min(x.len());
        let mut acc = [_mm512_setzero_ps(); 2];
        let mut i = 0;
        while i + 32 <= n {
            let c0 = _mm_loadu_si128(codes.as_ptr().add(i) as *const __m128i);
            let c1 = _mm_loadu_si128(codes.as_ptr().add(i + 16) as *const __m128i);
            acc[0] = _mm512_fmadd_ps(widen16(c0), _mm512_loadu_ps(x.as_ptr().add(i)), acc[0]);
            acc[1] = _mm512_fmadd_ps(widen16(c1), _mm512_loadu_ps(x.as_ptr().add(i + 16)), acc[1]);
            i += 32;
        }
        sum(&acc) + (i..n).map(|j| codes[j] as i8 as f32 * x[j]).sum::<f32>()
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn nibble_dot(codes: &[u8], even: &[f32], odd: &[f32], table: &[f32; 16]) -> f32 {
        let n = codes.len().min(even.len()).min(odd.len());
        let values = _mm512_loadu_ps(table.as_ptr());
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
                a[0] = _mm512_fmadd_ps(lookup16(_mm256_castsi256_si128(lo), values), _mm512_loadu_ps(e), a[0]);
                a[1] = _mm512_fmadd_ps(lookup16(_mm256_extracti128_si256(lo, 1), values), _mm512_loadu_ps(e.add(16)), a[1]);
                a[2] = _mm512_fmadd_ps(lookup16(_mm256_castsi256_si128(hi), values), _mm512_loadu_ps(o), a[2]);
                a[3] = _mm512_fmadd_ps(lookup16(_mm256_extracti128_si256(hi, 1), values), _mm512_loadu_ps(o.add(16)), a[3]);
            }
            j += 64;
        }
        sum(&acc) + super::scalar_nibble_dot(&codes[..n], even, odd, table, j)
    }

    /// 2-bit codes, element 4j+m at bits 2m of byte j; `phases[m][j]` = x[4j+m].
    ///
    /// # Safety
    /// The CPU must support AVX-512F/BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn crumb_dot(codes: &[u8], phases: [&[f32]; 4], table: &[f32; 16]) -> f32 {
        let n = phases.iter().fold(codes.len(), |m, p| m.min(p.len()));
        let values = _mm512_loadu_ps(table.as_ptr());
        let mask = _mm_set1_epi8(0x03);
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut j = 0;
        while j + 16 <= n {
            let c = _mm_loadu_si128(codes.as_ptr().add(j) as *const __m128i);
            acc[0] = _mm512_fmadd_ps(lookup16(_mm_and_si128(c, mask), values), _mm512_loadu_ps(phases[0].as_ptr().add(j)), acc[0]);
            acc[1] = _mm512_fmadd_ps(lookup16(_mm_and_si128(_mm_srli_epi16(c, 2), mask), values), _mm512_loadu_ps(phases[1].as_ptr().add(j)), acc[1]);
            acc[2] = _mm512_fmadd_ps(lookup16(_mm_and_si128(_mm_srli_epi16(c, 4), mask), values), _mm512_loadu_ps(phases[2].as_ptr().add(j)), acc[2]);
            acc[3] = _mm512_fmadd_ps(lookup16(_mm_and_si128(_mm_srli_epi16(c, 6), mask), values), _mm512_loadu_ps(phases[3].as_ptr().add(j)), acc[3]);
            j += 16;
        }
        let tail: f32 = (j..n)
            .map(|b| (0..4).map(|m| table[((codes[b] >> (2 * m)) & 3) as usize] * phases[m][b]).sum::<f32>())
            .sum();
        sum(&acc) + tail
    }

    /// 1 bit per weight (LSB-first): +scale where set, −scale where clear.
    ///
    /// # Safety
    /// The CPU must support AVX-512F/BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn bits_dot(codes: &[u8], x: &[f32], scale: f32) -> f32 {
        let n = x.len().min(codes.len() * 8);
        let (pos, neg) = (_mm512_set1_ps(scale), _mm512_set1_ps(-scale));
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 64 <= n {
            for (q, a) in acc.iter_mut().enumerate() {
                let at = i + 16 * q;
                let bits = u16::from_le_bytes([codes[at / 8], codes[at / 8 + 1]]);
                let w = _mm512_mask_blend_ps(bits, neg, pos);
                *a = _mm512_fmadd_ps(w, _mm512_loadu_ps(x.as_ptr().add(at)), *a);
            }
            i += 64;
        }
        let tail: f32 = (i..n).map(|e| if codes[e / 8] >> (e % 8) & 1 == 1 { scale } else { -scale } * x[e]).sum();
        sum(&acc) + tail
    }

    /// 16-bit float codes (little-endian byte pairs): IEEE half (widened exactly by vcvtph2ps)
    /// or, with `bfloat16`, the upper half of an f32 (widened by a 16-bit shift).
    ///
    /// # Safety
    /// The CPU must support AVX-512F/BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn half_dot(codes: &[u8], x: &[f32], bfloat16: bool) -> f32 {
        let n = x.len().min(codes.len() / 2);
        let mut acc = [_mm512_setzero_ps(); 2];
        let mut i = 0;
        while i + 32 <= n {
            for (q, a) in acc.iter_mut().enumerate() {
                let at = i + 16 * q;
                let h = _mm256_loadu_si256(codes.as_ptr().add(2 * at) as *const __m256i);
                let w = if bfloat16 {
                    _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
                } else {
                    _mm512_cvtph_ps(h)
                };
                *a = _mm512_fmadd_ps(w, _mm512_loadu_ps(x.as_ptr().add(at)), *a);
            }
            i += 32;
        }
        let scalar = |e: usize| {
            let code = u16::from_le_bytes([codes[2 * e], codes[2 * e + 1]]);
            if bfloat16 { f32::from_bits((code as u32) << 16) } else { half::f16::from_bits(code).to_f32() }
        };
        sum(&acc) + (i..n).map(|e| scalar(e) * x[e]).sum::<f32>()
    }

    /// Σ decode(code)·x over OCP FP8 codes (the caller multiplies by the scale). Shifting the 7
    /// magnitude bits to f32 position `mantissa_shift` (20: E4M3, 21: E5M2) gives the value
    /// times 2^−`rebias` exactly, subnormals included; one multiply by 2^rebias restores it.
    /// Valid for the standard code book, whose encoder never writes NaN/Inf codes.
    ///
    /// # Safety
    /// The CPU must support AVX-512F/BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn fp8_dot(codes: &[u8], x: &[f32], mantissa_shift: u32, rebias: i32) -> f32 {
        let n = codes.len().min(x.len());
        let factor = _mm512_set1_ps(2f32.powi(rebias));
        let (sign_mask, magnitude_mask) = (_mm512_set1_epi32(0x80), _mm512_set1_epi32(0x7F));
        let shift = _mm512_set1_epi32(mantissa_shift as i32);
        let mut acc = [_mm512_setzero_ps(); 2];
        let mut i = 0;
        while i + 32 <= n {
            for (q, a) in acc.iter_mut().enumerate() {
                let at = i + 16 * q;
                let c = _mm512_cvtepu8_epi32(_mm_loadu_si128(codes.as_ptr().add(at) as *const __m128i));
                let sign = _mm512_slli_epi32(_mm512_and_si512(c, sign_mask), 24);
                let magnitude = _mm512_sllv_epi32(_mm512_and_si512(c, magnitude_mask), shift);
                let w = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_or_si512(sign, magnitude)), factor);
                *a = _mm512_fmadd_ps(w, _mm512_loadu_ps(x.as_ptr().add(at)), *a);
            }
            i += 32;
        }
        let scalar = |c: u8| {
            let bits = ((c as u32 & 0x80) << 24) | ((c as u32 & 0x7F) << mantissa_shift);
            f32::from_bits(bits) * 2f32.powi(rebias)
        };
        sum(&acc) + (i..n).map(|e| scalar(codes[e]) * x[e]).sum::<f32>()
    }

    /// Σ (code − zero_point)·x over unsigned bytes (the caller multiplies by the scale).
    ///
    /// # Safety
    /// The CPU must support AVX-512F/BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn uint8_dot(codes: &[u8], x: &[f32], zero_point: f32) -> f32 {
        let n = codes.len().min(x.len());
        let zp = _mm512_set1_ps(zero_point);
        let mut acc = [_mm512_setzero_ps(); 2];
        let mut i = 0;
        while i + 32 <= n {
            for (q, a) in acc.iter_mut().enumerate() {
                let at = i + 16 * q;
                let c = _mm_loadu_si128(codes.as_ptr().add(at) as *const __m128i);
                let w = _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(c)), zp);
                *a = _mm512_fmadd_ps(w, _mm512_loadu_ps(x.as_ptr().add(at)), *a);
            }
            i += 32;
        }
        sum(&acc) + (i..n).map(|e| (codes[e] as f32 - zero_point) * x[e]).sum::<f32>()
    }
}
