//! DType: the reference's 21 weight types (their JSON names and aliases, reference numerics.md §1),
//! GGML's three 32-value block formats beside them, bit widths and integer code ranges.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[allow(non_camel_case_types)] // Q4_0, Q4_1, Q8_0: GGML's own names
pub enum DType {
    Float64 = 0,
    Float32 = 1,
    Float16 = 2,
    BFloat16 = 3,
    Fp8E4M3 = 4,
    Fp8E5M2 = 5,
    Int64 = 6,
    Int32 = 7,
    Int16 = 8,
    Int8 = 9,
    Uint64 = 10,
    Uint32 = 11,
    Uint16 = 12,
    Uint8 = 13,
    Int4 = 14,
    Uint4 = 15,
    Fp4 = 16,
    Int2 = 17,
    Uint2 = 18,
    Ternary = 19,
    Binary = 20,
    /// GGML block formats (codec/ggml_blocks.rs): not in the reference, so not in `ALL`.
    Q4_0 = 21,
    Q4_1 = 22,
    Q8_0 = 23,
}

use DType::*;

/// The broad family decides how a code becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IEEE-style floats stored as themselves (f64, f32, f16, bf16): no scale.
    Float,
    /// Mini-floats with a per-tensor scale (fp8 both, fp4).
    ScaledFloat,
    /// Two's-complement integer codes × scale (int2..int64, ternary).
    Signed,
    /// Unsigned codes with a zero point: (code − zero_point) × scale.
    Unsigned,
    /// One bit per weight: ±scale.
    Binary,
    /// GGML 32-value blocks, each with its own f16 scale (and minimum): no per-tensor scale.
    Block,
}

impl DType {
    /// The reference's dtypes: every shape, both code books, the reference's checkpoints.
    pub const ALL: [DType; 21] = [
        Float64, Float32, Float16, BFloat16, Fp8E4M3, Fp8E5M2, Int64, Int32, Int16, Int8, Uint64,
        Uint32, Uint16, Uint8, Int4, Uint4, Fp4, Int2, Uint2, Ternary, Binary,
    ];

    /// GGML's block formats: rows must be whole blocks, standard (GGML) code book only.
    pub const BLOCKS: [DType; 3] = [Q4_0, Q4_1, Q8_0];

    /// The name the reference writes in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Float64 => "float64",
            Float32 => "float32",
            Float16 => "float16",
            BFloat16 => "bfloat16",
            Fp8E4M3 => "fp8e4m3",
            Fp8E5M2 => "fp8e5m2",
            Int64 => "int64",
            Int32 => "int32",
            Int16 => "int16",
            Int8 => "int8",
            Uint64 => "uint64",
            Uint32 => "uint32",
            Uint16 => "uint16",
            Uint8 => "uint8",
            Int4 => "int4",
            Uint4 => "uint4",
            Fp4 => "fp4",
            Int2 => "int2",
            Uint2 => "uint2",
            Ternary => "ternary",
            Binary => "binary",
            Q4_0 => "q4_0",
            Q4_1 => "q4_1",
            Q8_0 => "q8_0",
        }
    }

    /// Parse a name or alias, case-insensitively. Unlike the reference (which maps unknown names
    /// to float32) an unknown name is an error.
    pub fn parse(name: &str) -> Result<DType> {
        let upper = name.trim().to_ascii_uppercase();
        let dtype = match upper.as_str() {
            "FLOAT64" | "FP64" | "F64" => Float64,
            "FLOAT32" | "FP32" | "F32" => Float32,
            "FLOAT16" | "FP16" | "F16" => Float16,
            "BFLOAT16" | "BF16" => BFloat16,
            "FP8E4M3" | "FP8" => Fp8E4M3,
            "FP8E5M2" => Fp8E5M2,
            "INT64" | "I64" => Int64,
            "INT32" | "I32" => Int32,
            "INT16" | "I16" => Int16,
            "INT8" | "I8" => Int8,
            "UINT64" | "U64" => Uint64,
            "UINT32" | "U32" => Uint32,
            "UINT16" | "U16" => Uint16,
            "UINT8" | "U8" => Uint8,
            "INT4" => Int4,
            "UINT4" => Uint4,
            "FP4" | "F4" => Fp4,
            "INT2" => Int2,
            "UINT2" => Uint2,
            "TERNARY" => Ternary,
            "BINARY" => Binary,
            "Q4_0" => Q4_0,
            "Q4_1" => Q4_1,
            "Q8_0" => Q8_0,
            _ => {
                let known: Vec<&str> = DType::ALL.iter().chain(&DType::BLOCKS).map(|d| d.name()).collect();
                return Err(Error::DType(format!(
                    "unknown dtype {name:?}; expected one of {}",
                    known.join(", ")
                )));
            }
        };
        Ok(dtype)
    }

    pub fn from_index(index: u8) -> Option<DType> {
        DType::ALL.iter().chain(&DType::BLOCKS).find(|d| **d as u8 == index).copied()
    }

    pub fn is_block(self) -> bool {
        self.family() == Family::Block
    }

    /// Values per GGML block (the row length must be a multiple of it).
    pub const BLOCK_VALUES: usize = 32;

    /// Bytes of one 32-value block: f16 scale (+ f16 minimum) + the codes.
    pub fn block_bytes(self) -> Option<usize> {
        match self {
            Q4_0 => Some(2 + 16),
            Q4_1 => Some(2 + 2 + 16),
            Q8_0 => Some(2 + 32),
            _ => None,
        }
    }

    /// Storage bits per weight (reference DTypeBits); for block formats the width of one code
    /// (the per-block scales come on top, see `packed_bytes`).
    pub fn bits(self) -> usize {
        match self {
            Float64 | Int64 | Uint64 => 64,
            Float32 | Int32 | Uint32 => 32,
            Float16 | BFloat16 | Int16 | Uint16 => 16,
            Fp8E4M3 | Fp8E5M2 | Int8 | Uint8 | Q8_0 => 8,
            Int4 | Uint4 | Fp4 | Q4_0 | Q4_1 => 4,
            Int2 | Uint2 | Ternary => 2,
            Binary => 1,
        }
    }

    pub fn family(self) -> Family {
        match self {
            Float64 | Float32 | Float16 | BFloat16 => Family::Float,
            Fp8E4M3 | Fp8E5M2 | Fp4 => Family::ScaledFloat,
            Int64 | Int32 | Int16 | Int8 | Int4 | Int2 | Ternary => Family::Signed,
            Uint64 | Uint32 | Uint16 | Uint8 | Uint4 | Uint2 => Family::Unsigned,
            Binary => Family::Binary,
            Q4_0 | Q4_1 | Q8_0 => Family::Block,
        }
    }

    /// Packed bytes for `n` weights (the bytes of the codes alone, before word padding; for block
    /// formats whole blocks, scales included).
    pub fn packed_bytes(self, n: usize) -> usize {
        match self.block_bytes() {
            Some(block) => n.div_ceil(Self::BLOCK_VALUES) * block,
            None => (n * self.bits()).div_ceil(8),
        }
    }

    /// Largest code magnitude of the standard symmetric signed codecs (2^(bits−1) − 1; ternary 1).
    pub fn signed_max_code(self) -> f64 {
        match self {
            Ternary => 1.0,
            _ => (2f64).powi(self.bits() as i32 - 1) - 1.0,
        }
    }

    /// Largest unsigned code (2^bits − 1).
    pub fn unsigned_max_code(self) -> f64 {
        (2f64).powi(self.bits() as i32) - 1.0
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_parse() {
        for d in DType::ALL.into_iter().chain(DType::BLOCKS) {
            assert_eq!(DType::parse(d.name()).unwrap(), d);
            assert_eq!(DType::from_index(d as u8), Some(d));
        }
        assert_eq!(DType::parse("fp8").unwrap(), Fp8E4M3);
        assert_eq!(DType::parse("F4").unwrap(), Fp4);
        assert_eq!(DType::parse("bf16").unwrap(), BFloat16);
        assert!(DType::parse("int3").is_err());
    }

    #[test]
    fn packed_sizes() {
        assert_eq!(Int4.packed_bytes(5), 3);
        assert_eq!(Ternary.packed_bytes(5), 2);
        assert_eq!(Binary.packed_bytes(9), 2);
        assert_eq!(Float64.packed_bytes(3), 24);
        assert_eq!(Q4_0.packed_bytes(64), 36);
        assert_eq!(Q4_1.packed_bytes(32), 20);
        assert_eq!(Q8_0.packed_bytes(96), 102);
    }
}
