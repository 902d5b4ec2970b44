//! GPU-side caches: uploaded weight buffers (an LRU bounded by total bytes, keyed by master
//! generation or packed id; filled by weights.rs) and compiled compute pipelines (one per
//! kernel + specialisation).

use super::context::{lock, Context};
use crate::error::Result;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) static UPLOADS: AtomicU64 = AtomicU64::new(0);

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

/// A weight tensor uploaded by weights::tensor.
#[derive(Clone)]
pub(crate) struct GpuTensor {
    pub buffer: wgpu::Buffer,
    /// Number of weights (guards against a key reused for other weights).
    pub n: usize,
}

pub(crate) struct WeightCache(ByteLru<WeightKey, GpuTensor>);

impl WeightCache {
    pub fn for_limits(limits: &wgpu::Limits) -> Self {
        WeightCache(ByteLru::new((1u64 << 30).min(limits.max_buffer_size)))
    }
    pub fn get(&mut self, key: &WeightKey) -> Option<&GpuTensor> {
        self.0.get(key)
    }
    pub fn insert(&mut self, key: WeightKey, tensor: GpuTensor, bytes: u64) {
        self.0.insert(key, tensor, bytes)
    }
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
