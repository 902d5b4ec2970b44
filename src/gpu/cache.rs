//! GPU-side caches: uploaded weight buffers (an LRU bounded by total bytes, keyed by master
//! generation or packed id) and compiled compute pipelines (one per kernel + specialisation).

use super::context::{lock, Context};
use super::GpuWeights;
use crate::codec::Packed;
use crate::dtype::{DType, Family};
use crate::error::Result;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

static UPLOADS: AtomicU64 = AtomicU64::new(0);

/// Weight buffers this process has uploaded so far (a cache hit uploads nothing).
pub fn upload_count() -> u64 {
    UPLOADS.load(Ordering::Relaxed)
}

struct Slot<V> {
    value: V,
    bytes: u64,
    last_used: u64,
}

/// A least-recently-used map whose entries carry a size in bytes; the total stays ≤ the budget.
pub(crate) struct ByteLru<K, V> {
    slots: HashMap<K, Slot<V>>,
    total: u64,
    budget: u64,
    clock: u64,
}

impl<K: Hash + Eq + Clone, V> ByteLru<K, V> {
    pub fn new(budget: u64) -> Self {
        ByteLru {
            slots: HashMap::new(),
            total: 0,
            budget,
            clock: 0,
        }
    }

    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.clock += 1;
        let slot = self.slots.get_mut(key)?;
        slot.last_used = self.clock;
        Some(&slot.value)
    }

    /// Inserts (replacing any entry under `key`), evicting the least recently used entries until
    /// the total fits. A value larger than the whole budget is not kept.
    pub fn insert(&mut self, key: K, value: V, bytes: u64) {
        self.remove(&key);
        if bytes > self.budget {
            return;
        }
        while self.total + bytes > self.budget {
            let oldest = self
                .slots
                .iter()
                .min_by_key(|(_, slot)| slot.last_used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(oldest) => self.remove(&oldest),
                None => break,
            }
        }
        self.clock += 1;
        self.total += bytes;
        self.slots.insert(
            key,
            Slot {
                value,
                bytes,
                last_used: self.clock,
            },
        );
    }

    fn remove(&mut self, key: &K) {
        if let Some(slot) = self.slots.remove(key) {
            self.total -= slot.bytes;
        }
    }

    #[cfg(test)]
    pub fn total_bytes(&self) -> u64 {
        self.total
    }
}

/// Masters and packed versions number their keys independently (both count from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum WeightKey {
    Master(u64),
    Packed(u64),
}

/// How a kernel reads a weight buffer: f32 values, or `bits`-wide codes packed LSB-first into
/// u32 words and decoded in the shader (shaders/dense_weights_packed.wgsl; `Decode` values are
/// its DECODE constant).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum WeightFormat {
    F32,
    Packed { bits: u32, decode: Decode },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Decode {
    /// Two's-complement code × scale.
    Signed = 0,
    /// (code − zero_point) × scale.
    Unsigned = 1,
    /// ±scale.
    Binary = 2,
    F16 = 3,
    BF16 = 4,
}

#[derive(Clone)]
pub(crate) struct GpuWeightBuffer {
    pub buffer: wgpu::Buffer,
    pub format: WeightFormat,
    /// Number of weights (guards against a key reused for other weights).
    pub n: usize,
    pub scale: f32,
    pub zero_point: f32,
}

pub(crate) struct WeightCache(ByteLru<WeightKey, GpuWeightBuffer>);

impl WeightCache {
    pub fn for_limits(limits: &wgpu::Limits) -> Self {
        WeightCache(ByteLru::new((1u64 << 30).min(limits.max_buffer_size)))
    }
}

/// The in-shader decode of a packed tensor, where the shader computes exactly the CPU's values:
/// integer codes of ≤ 16 bits convert to f32 exactly and f32 products are correctly rounded, as
/// the CPU's f64 product rounded once. None: the tensor is uploaded decoded.
fn shader_format(packed: &Packed) -> Option<WeightFormat> {
    let bits = packed.dtype.bits() as u32;
    let zero_point_exact =
        packed.zero_point.fract() == 0.0 && packed.zero_point.abs() <= (1 << 24) as f64;
    let decode = match (packed.dtype, packed.dtype.family()) {
        (DType::Float16, _) => Decode::F16,
        (DType::BFloat16, _) => Decode::BF16,
        (DType::Binary, _) => Decode::Binary,
        (_, Family::Signed) if bits <= 16 => Decode::Signed,
        (_, Family::Unsigned) if bits <= 16 && zero_point_exact => Decode::Unsigned,
        _ => return None,
    };
    Some(WeightFormat::Packed { bits, decode })
}

/// The GPU buffer for `weights`: cached, or uploaded now (and cached).
pub(crate) fn weight_buffer(ctx: &Context, weights: GpuWeights<'_>) -> Result<GpuWeightBuffer> {
    let (key, n) = match weights {
        GpuWeights::F32 { key, values } => (WeightKey::Master(key), values.len()),
        GpuWeights::Packed(p) => (WeightKey::Packed(p.id), p.n),
    };
    let mut cache = lock(&ctx.weights);
    if let Some(hit) = cache.0.get(&key).filter(|hit| hit.n == n) {
        return Ok(hit.clone());
    }
    let decoded;
    let (format, bytes, scale, zero_point): (WeightFormat, &[u8], f32, f32) = match weights {
        GpuWeights::F32 { values, .. } => {
            (WeightFormat::F32, bytemuck::cast_slice(values), 1.0, 0.0)
        }
        GpuWeights::Packed(p) => match shader_format(p) {
            Some(format) => (format, &p.bytes, p.scale, p.zero_point as f32),
            // Float32 codes are little-endian f32 values already.
            None if p.dtype == DType::Float32 => (WeightFormat::F32, &p.bytes, 1.0, 0.0),
            // No in-shader decode for this dtype (fp8, fp4, f64, 32/64-bit integers, or a
            // fractional zero point): decode once on the CPU, to the very values the CPU kernels
            // compute with, and cache that f32 copy under the packed id.
            None => {
                decoded = p.decode_all();
                (WeightFormat::F32, bytemuck::cast_slice(&decoded), 1.0, 0.0)
            }
        },
    };
    let usage = wgpu::BufferUsages::STORAGE;
    let buffer = ctx.scoped("uploading weights", || {
        ctx.buffer_with("polyvtd weights", bytes, usage)
    })?;
    UPLOADS.fetch_add(1, Ordering::Relaxed);
    let entry = GpuWeightBuffer {
        buffer,
        format,
        n,
        scale,
        zero_point,
    };
    cache.0.insert(key, entry.clone(), bytes.len() as u64);
    Ok(entry)
}

/// Compiled pipelines by (kernel, specialisation header).
#[derive(Default)]
pub(crate) struct PipelineCache(HashMap<(&'static str, String), wgpu::ComputePipeline>);

/// The pipeline for the WGSL `header` + `body` (entry point `main`, layout derived from the
/// shader), compiled on first use. `header` holds every generated constant, so
/// (kernel, header) names the source.
pub(crate) fn pipeline(
    ctx: &Context,
    kernel: &'static str,
    header: String,
    body: &[&str],
) -> Result<wgpu::ComputePipeline> {
    let mut cache = lock(&ctx.pipelines);
    let key = (kernel, header);
    if let Some(pipeline) = cache.0.get(&key) {
        return Ok(pipeline.clone());
    }
    let source = [key.1.as_str()]
        .iter()
        .chain(body)
        .copied()
        .collect::<String>();
    let pipeline = ctx.scoped(&format!("compiling the {kernel} kernel"), || {
        let module = ctx
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kernel),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        Ok(ctx
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            }))
    })?;
    cache.0.insert(key, pipeline.clone());
    Ok(pipeline)
}

#[cfg(test)]
mod tests {
    use super::ByteLru;

    #[test]
    fn lru_evicts_least_recently_used_to_stay_within_budget() {
        let mut lru = ByteLru::new(100);
        lru.insert("a", 1, 40);
        lru.insert("b", 2, 40);
        assert_eq!(lru.get(&"a"), Some(&1)); // "b" is now the oldest
        lru.insert("c", 3, 40);
        assert_eq!(lru.get(&"b"), None);
        assert_eq!(lru.get(&"a"), Some(&1));
        assert_eq!(lru.get(&"c"), Some(&3));
        assert_eq!(lru.total_bytes(), 80);
        lru.insert("a", 4, 10); // replacing frees the old size
        assert_eq!(lru.total_bytes(), 50);
        lru.insert("huge", 5, 101); // larger than the budget: not kept, nothing evicted
        assert_eq!(lru.get(&"huge"), None);
        assert_eq!(lru.total_bytes(), 50);
    }
}
