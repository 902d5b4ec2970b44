//! Mini-float codecs: f16/bf16, FP8 E4M3/E5M2, FP4 E2M1 — the standard (OCP / IEEE, round to
//! nearest even) forms and the reference's truncating forms (`Codec::Loom`, quirks 3 and 4).

use half::{bf16, f16};
use std::sync::OnceLock;

// ---- standard (IEEE / OCP) --------------------------------------------------------------------

pub fn f16_encode(v: f32) -> u16 {
    f16::from_f32(v).to_bits()
}
pub fn f16_decode(code: u16) -> f32 {
    f16::from_bits(code).to_f32()
}
pub fn bf16_encode(v: f32) -> u16 {
    bf16::from_f32(v).to_bits()
}
pub fn bf16_decode(code: u16) -> f32 {
    f32::from_bits((code as u32) << 16)
}

/// An OCP mini-float format: `exp_bits` exponent bits, `man_bits` mantissa bits, IEEE-style
/// subnormals; `max` is the largest finite value (E4M3: 448, no infinities; E5M2: 57344).
struct MiniFloat {
    exp_bits: u32,
    man_bits: u32,
    bias: i32,
    max: f32,
}

const E4M3: MiniFloat = MiniFloat { exp_bits: 4, man_bits: 3, bias: 7, max: 448.0 };
const E5M2: MiniFloat = MiniFloat { exp_bits: 5, man_bits: 2, bias: 15, max: 57344.0 };
const E2M1: MiniFloat = MiniFloat { exp_bits: 2, man_bits: 1, bias: 1, max: 6.0 };

impl MiniFloat {
    /// Value of a non-negative magnitude code (sign bit cleared); no NaN handling here.
    fn magnitude(&self, code: u32) -> f32 {
        let e = (code >> self.man_bits) as i32;
        let m = (code & ((1 << self.man_bits) - 1)) as f32;
        let frac = m / (1u32 << self.man_bits) as f32;
        if e == 0 {
            frac * 2f32.powi(1 - self.bias)
        } else {
            (1.0 + frac) * 2f32.powi(e - self.bias)
        }
    }

    /// The finite magnitudes, indexed by magnitude code (monotone increasing).
    fn magnitudes(&self) -> Vec<f32> {
        (0..=self.max_finite_code()).map(|c| self.magnitude(c)).collect()
    }

    /// Round to the nearest representable magnitude, ties to an even mantissa; values past the
    /// largest finite value saturate (the scaled-quantisation convention; no overflow to NaN).
    fn encode(&self, mags: &[f32], v: f64) -> u32 {
        let sign = if v.is_sign_negative() { 1u32 << (self.exp_bits + self.man_bits) } else { 0 };
        if v.is_nan() {
            return self.nan_code();
        }
        let a = v.abs().min(self.max as f64);
        let max_code = (mags.len() - 1) as u32;
        // Largest code whose magnitude is <= a, then the nearer of it and its upper neighbour.
        let below = (mags.partition_point(|&m| m as f64 <= a) - 1) as u32;
        let code = if below == max_code {
            below
        } else {
            let (d_lo, d_hi) = (a - mags[below as usize] as f64, mags[below as usize + 1] as f64 - a);
            if d_lo < d_hi || (d_lo == d_hi && below & 1 == 0) {
                below
            } else {
                below + 1
            }
        };
        sign | code
    }

    fn max_finite_code(&self) -> u32 {
        let all = (1u32 << (self.exp_bits + self.man_bits)) - 1;
        // The largest code whose magnitude is ≤ max (E4M3: 0x7E, E5M2: 0x7B, E2M1: 0x7).
        (0..=all).rev().find(|&c| self.magnitude(c) <= self.max).unwrap()
    }

    /// E4M3 and E5M2 have NaN codes (all ones); E2M1 has none, so NaN encodes as zero.
    fn nan_code(&self) -> u32 {
        if self.exp_bits == 2 {
            0
        } else {
            (1u32 << (self.exp_bits + self.man_bits + 1)) - 1
        }
    }

    fn decode(&self, code: u32) -> f32 {
        let sign_bit = 1u32 << (self.exp_bits + self.man_bits);
        let mag_code = code & (sign_bit - 1);
        let value = if mag_code > self.max_finite_code() {
            // E4M3: 0x7F is NaN; E5M2: exponent 31 is Inf (mantissa 0) or NaN.
            if self.exp_bits == 5 && mag_code == 0x7C {
                f32::INFINITY
            } else {
                f32::NAN
            }
        } else {
            self.magnitude(mag_code)
        };
        if code & sign_bit != 0 {
            -value
        } else {
            value
        }
    }
}

fn magnitude_table(format: &MiniFloat, cell: &'static OnceLock<Vec<f32>>) -> &'static [f32] {
    cell.get_or_init(|| format.magnitudes())
}
static E4M3_MAGS: OnceLock<Vec<f32>> = OnceLock::new();
static E5M2_MAGS: OnceLock<Vec<f32>> = OnceLock::new();
static E2M1_MAGS: OnceLock<Vec<f32>> = OnceLock::new();

/// Encoders take the f64 quotient w/scale so rounding happens once, at the mini-float.
pub fn fp8_e4m3_encode(v: f64) -> u8 {
    E4M3.encode(magnitude_table(&E4M3, &E4M3_MAGS), v) as u8
}
pub fn fp8_e4m3_decode(code: u8) -> f32 {
    E4M3.decode(code as u32)
}
pub fn fp8_e5m2_encode(v: f64) -> u8 {
    E5M2.encode(magnitude_table(&E5M2, &E5M2_MAGS), v) as u8
}
pub fn fp8_e5m2_decode(code: u8) -> f32 {
    E5M2.decode(code as u32)
}
/// OCP E2M1: magnitudes {0, 0.5, 1, 1.5, 2, 3, 4, 6}; bit 3 is the sign.
pub fn fp4_encode(v: f64) -> u8 {
    E2M1.encode(magnitude_table(&E2M1, &E2M1_MAGS), v) as u8
}
pub fn fp4_decode(code: u8) -> f32 {
    E2M1.decode(code as u32 & 0xF)
}

// ---- reference (Loom) forms: truncation, its own tables ------------------------------------------

/// Reference float16 encode: subnormals flush to zero, overflow (and NaN) to Inf, mantissa
/// truncated.
pub fn loom_f16_encode(v: f32) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp32 = ((bits >> 23) & 0xFF) as i32;
    let e = exp32 - 127 + 15;
    if bits & 0x7FFF_FFFF == 0 || e <= 0 {
        return sign;
    }
    if e >= 31 {
        return sign | 0x7C00;
    }
    sign | ((e as u16) << 10) | ((bits >> 13) & 0x3FF) as u16
}

/// Reference bfloat16 encode: the upper 16 bits (truncation).
pub fn loom_bf16_encode(v: f32) -> u16 {
    (v.to_bits() >> 16) as u16
}

/// Reference E4M3 encode: truncation, no subnormals, saturation code s|0x7F.
pub fn loom_fp8_e4m3_encode(v: f32) -> u8 {
    let bits = v.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let e = ((bits >> 23) & 0xFF) as i32 - 120;
    if bits & 0x7FFF_FFFF == 0 || e <= 0 {
        return sign;
    }
    if e >= 15 {
        return sign | 0x7F;
    }
    sign | ((e as u8) << 3) | ((bits >> 20) & 0x7) as u8
}

/// Reference E4M3 decode: no NaN (0x7F = 480) and subnormals read as (1 + m/8)·2^−10.
pub fn loom_fp8_e4m3_decode(code: u8) -> f32 {
    let e = ((code >> 3) & 0xF) as i32;
    let m = (code & 0x7) as f32;
    let mag = if e == 0 && m == 0.0 {
        0.0
    } else if e == 0 {
        (1.0 + m / 8.0) * 2f32.powi(-10)
    } else {
        (1.0 + m / 8.0) * 2f32.powi(e - 7)
    };
    if code & 0x80 != 0 {
        -mag
    } else {
        mag
    }
}

/// Reference E5M2 encode: truncation, no subnormals, overflow to Inf.
pub fn loom_fp8_e5m2_encode(v: f32) -> u8 {
    let bits = v.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let e = ((bits >> 23) & 0xFF) as i32 - 112;
    if bits & 0x7FFF_FFFF == 0 || e <= 0 {
        return sign;
    }
    if e >= 31 {
        return sign | 0x7C;
    }
    sign | ((e as u8) << 2) | ((bits >> 21) & 0x3) as u8
}

/// Reference E5M2 decode: exponent 0 with a mantissa is read as if normal with exponent 0.
pub fn loom_fp8_e5m2_decode(code: u8) -> f32 {
    let e = ((code >> 2) & 0x1F) as i32;
    let m = (code & 0x3) as f32;
    let mag = if e == 31 {
        if m == 0.0 {
            f32::INFINITY
        } else {
            f32::NAN
        }
    } else if e == 0 && m == 0.0 {
        0.0
    } else {
        (1.0 + m / 4.0) * 2f32.powi(e - 15)
    };
    if code & 0x80 != 0 {
        -mag
    } else {
        mag
    }
}

/// The reference's FP4 table (quirk 4): not OCP E2M1.
pub const LOOM_FP4_TABLE: [f32; 16] = [
    0.0, 0.75, 1.0, 1.5, 2.0, 3.0, f32::INFINITY, f32::NAN, -0.0, -0.75, -1.0, -1.5, -2.0, -3.0,
    f32::NEG_INFINITY, f32::NAN,
];

/// Reference FP4 encode: first finite code with a strictly smaller distance wins.
pub fn loom_fp4_encode(u: f32) -> u8 {
    const ORDER: [u8; 12] = [0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x8, 0x9, 0xA, 0xB, 0xC, 0xD];
    let mut best = ORDER[0];
    let mut best_dist = (u - LOOM_FP4_TABLE[0]).abs();
    for &code in &ORDER[1..] {
        let dist = (u - LOOM_FP4_TABLE[code as usize]).abs();
        if dist < best_dist {
            best = code;
            best_dist = dist;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ocp_e4m3_known_codes() {
        assert_eq!(fp8_e4m3_encode(448.0), 0x7E);
        assert_eq!(fp8_e4m3_encode(1e6), 0x7E);
        assert_eq!(fp8_e4m3_encode(-1.0), 0xB8);
        assert_eq!(fp8_e4m3_decode(0x01), 2f32.powi(-9));
        assert!(fp8_e4m3_decode(0x7F).is_nan());
        // 1.0625 is halfway between 1.0 (mantissa 0, even) and 1.125: ties to even.
        assert_eq!(fp8_e4m3_encode(1.0625), 0x38);
        assert_eq!(fp8_e4m3_encode(1.1875), 0x3A);
    }

    #[test]
    fn ocp_e5m2_and_fp4() {
        assert_eq!(fp8_e5m2_decode(fp8_e5m2_encode(57344.0)), 57344.0);
        assert_eq!(fp8_e5m2_decode(0x7C), f32::INFINITY);
        let fp4: Vec<f32> = (0..8).map(fp4_decode).collect();
        assert_eq!(fp4, vec![0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
        assert_eq!(fp4_encode(5.0), 0x6); // tie 4 | 6 → even mantissa (4.0)
        assert_eq!(fp4_encode(2.5), 0x4); // tie 2 | 3 → 2.0
        assert_eq!(fp4_encode(-7.0), 0xF);
    }

    #[test]
    fn loom_forms_follow_the_spec() {
        assert_eq!(loom_fp8_e4m3_decode(0x7F), 480.0);
        assert_eq!(loom_fp8_e4m3_encode(300.0), 0x7F);
        assert_eq!(loom_fp8_e4m3_decode(0x01), 1.125 * 2f32.powi(-10));
        assert_eq!(loom_fp4_encode(0.375), 0x0);
        assert_eq!(loom_fp4_encode(-5.0), 0xD);
        assert_eq!(loom_f16_encode(1.0 + 2f32.powi(-11) * 1.5), 0x3C00); // truncates
        assert_eq!(loom_bf16_encode(1.0 + 2f32.powi(-8) * 1.5), 0x3F80);
    }
}
