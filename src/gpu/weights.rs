//! Weight tensors on the GPU: one self-describing storage buffer per tensor, decoded in the shader
//! by the loader shaders/weights.wgsl generates. The buffer holds an 8-word header (kind, bits,
//! scale, zero point, data offset), for codes of ≤ 8 bits the value of every code (so fp8, fp4,
//! ternary, Loom's and the standard codecs all decode through one table, to the CPU's exact
//! values), then the packed bytes exactly as the CPU holds them. 64- and 32-bit integer codes and
//! float64 are decoded once at upload, to the same f32 values the CPU kernels use.

use super::cache::{GpuTensor, WeightKey, UPLOADS};
use super::context::{lock, Context};
use super::GpuWeights;
use crate::codec::Packed;
use crate::dtype::{DType, Family};
use crate::error::Result;
use std::sync::atomic::Ordering;

const WEIGHTS_WGSL: &str = include_str!("../../shaders/weights.wgsl");
const HEADER_WORDS: usize = 8;

/// The `kind` word of a weight buffer (shaders/weights.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    F32 = 0,
    Table = 1,
    Signed16 = 2,
    Unsigned16 = 3,
    F16 = 4,
    BF16 = 5,
    Q4_0 = 6,
    Q4_1 = 7,
    Q8_0 = 8,
}

/// The WGSL that binds tensor `name` at `binding` of group 0 and defines `load_<name>(e) -> f32`.
pub(crate) fn loader(name: &str, binding: u32) -> String {
    WEIGHTS_WGSL
        .replace("{{name}}", name)
        .replace("{{binding}}", &binding.to_string())
}

/// How `packed` goes to the GPU: its kind, and the value table (kind Table only).
fn kind_of(packed: &Packed) -> Option<Kind> {
    let kind = match packed.dtype {
        DType::Float32 => Kind::F32,
        DType::Float16 => Kind::F16,
        DType::BFloat16 => Kind::BF16,
        DType::Q4_0 => Kind::Q4_0,
        DType::Q4_1 => Kind::Q4_1,
        DType::Q8_0 => Kind::Q8_0,
        dtype if dtype.bits() <= 8 => Kind::Table,
        // 16-bit codes: the f32 product of an exact integer and the scale is the CPU's value.
        DType::Int16 => Kind::Signed16,
        DType::Uint16 if packed.zero_point.fract() == 0.0 => Kind::Unsigned16,
        _ => return None,
    };
    debug_assert!(kind != Kind::Table || packed.dtype.family() != Family::Block);
    Some(kind)
}

/// The buffer contents for `weights`: header, table, data.
fn buffer_words(weights: GpuWeights<'_>) -> Vec<u32> {
    let header = |kind: Kind, bits: u32, scale: f32, zero_point: f32, table: usize| {
        let mut words = vec![0u32; HEADER_WORDS];
        words[..5].copy_from_slice(&[
            kind as u32,
            bits,
            scale.to_bits(),
            zero_point.to_bits(),
            (HEADER_WORDS + table) as u32,
        ]);
        words
    };
    let (mut words, data): (Vec<u32>, &[u8]) = match weights {
        GpuWeights::F32 { values, .. } => {
            let mut words = header(Kind::F32, 32, 1.0, 0.0, 0);
            words.extend(values.iter().map(|v| v.to_bits()));
            return words;
        }
        GpuWeights::Packed(p) => match kind_of(p) {
            Some(Kind::Table) => {
                let codes = 1u64 << p.dtype.bits();
                let mut words = header(Kind::Table, p.dtype.bits() as u32, p.scale, 0.0, codes as usize);
                words.extend((0..codes).map(|code| p.value_of_code(code).to_bits()));
                (words, &p.bytes)
            }
            Some(kind) => (
                header(kind, p.dtype.bits() as u32, p.scale, p.zero_point as f32, 0),
                &p.bytes,
            ),
            None => {
                let mut words = header(Kind::F32, 32, 1.0, 0.0, 0);
                words.extend(p.decode_all().iter().map(|v| v.to_bits()));
                return words;
            }
        },
    };
    // Packed bytes are zero padded to whole words already.
    words.extend(data.chunks(4).map(|c| {
        let mut word = [0u8; 4];
        word[..c.len()].copy_from_slice(c);
        u32::from_le_bytes(word)
    }));
    words
}

/// The GPU buffer for `weights`: cached (by master generation or packed id), or uploaded now.
pub(crate) fn tensor(ctx: &Context, weights: GpuWeights<'_>) -> Result<GpuTensor> {
    let (key, n) = match weights {
        GpuWeights::F32 { key, values } => (WeightKey::Master(key), values.len()),
        GpuWeights::Packed(p) => (WeightKey::Packed(p.id), p.n),
    };
    let mut cache = lock(&ctx.weights);
    if let Some(hit) = cache.get(&key).filter(|hit| hit.n == n) {
        return Ok(hit.clone());
    }
    let words = buffer_words(weights);
    let bytes: &[u8] = bytemuck::cast_slice(&words);
    let buffer = ctx.scoped("uploading weights", || {
        ctx.buffer_with("polyvtd weights", bytes, wgpu::BufferUsages::STORAGE)
    })?;
    UPLOADS.fetch_add(1, Ordering::Relaxed);
    let entry = GpuTensor { buffer, n };
    cache.insert(key, entry.clone(), bytes.len() as u64);
    Ok(entry)
}
