//! GPU-side caches: uploaded weight buffers (an LRU bounded by total bytes, keyed by master
//! generation or packed id; filled by weights.rs; a tensor's buffer is freed once its owner drops
//! or replaces it) and compiled compute pipelines (one per kernel + specialisation).

use super::context::{lock, Context};
use crate::codec::{device_copies, DeviceKey};
use crate::error::Result;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) static UPLOADS: AtomicU64 = AtomicU64::new(0);
static REGISTERED: AtomicU64 = AtomicU64::new(0);

/// Weight buffers this process has uploaded so far (a cache hit uploads nothing).
pub fn upload_count() -> u64 {
    UPLOADS.load(Ordering::Relaxed)
}

/// GPU buffers held outside the weight cache (a GPU-resident model's activations or KV cache),
/// counted in `gpu_memory()` while this guard lives; dropping it removes them from the count.
#[derive(Debug)]
pub struct ResidentBytes {
    bytes: u64,
}

/// Counts `bytes` of GPU buffers that the caller holds until the returned guard is dropped.
pub fn register_resident_bytes(bytes: u64) -> ResidentBytes {
    REGISTERED.fetch_add(bytes, Ordering::Relaxed);
    ResidentBytes { bytes }
}

impl ResidentBytes {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The owner's buffers grew or shrank to `bytes` in all.
    pub fn set(&mut self, bytes: u64) {
        REGISTERED.fetch_add(bytes, Ordering::Relaxed);
        REGISTERED.fetch_sub(self.bytes, Ordering::Relaxed);
        self.bytes = bytes;
    }
}

impl Drop for ResidentBytes {
    fn drop(&mut self) {
        REGISTERED.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Bytes registered through `register_resident_bytes` and not yet dropped.
pub(crate) fn registered_bytes() -> u64 {
    REGISTERED.load(Ordering::Relaxed)
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
    /// the total fits; returns the evicted keys. A value larger than the whole budget is not kept
    /// (and `key` is among the returned keys).
    pub fn insert(&mut self, key: K, value: V, bytes: u64) -> Vec<K> {
        self.remove(&key);
        if bytes > self.budget {
            return vec![key];
        }
        let mut evicted = Vec::new();
        while self.total + bytes > self.budget {
            let oldest = self
                .slots
                .iter()
                .min_by_key(|(_, slot)| slot.last_used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(oldest) => {
                    self.remove(&oldest);
                    evicted.push(oldest);
                }
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
        evicted
    }

    pub fn remove(&mut self, key: &K) {
        if let Some(slot) = self.slots.remove(key) {
            self.total -= slot.bytes;
        }
    }

    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }
}

/// Masters and packed versions number their keys independently (both count from 1).
pub(crate) type WeightKey = DeviceKey;

/// A weight tensor uploaded by weights::tensor.
#[derive(Clone)]
pub(crate) struct GpuTensor {
    pub buffer: wgpu::Buffer,
    /// Number of weights (guards against a key reused for other weights).
    pub n: usize,
}

/// Uploaded weight tensors. Each access first frees the buffers of tensors dropped or replaced
/// since (codec::device_copies), so a dropped model's GPU memory goes with it.
pub(crate) struct WeightCache(ByteLru<WeightKey, GpuTensor>);

impl WeightCache {
    pub fn for_limits(limits: &wgpu::Limits) -> Self {
        WeightCache(ByteLru::new((1u64 << 30).min(limits.max_buffer_size)))
    }
    pub fn get(&mut self, key: &WeightKey) -> Option<&GpuTensor> {
        self.release_retired();
        self.0.get(key)
    }
    /// Keeps `tensor` under `key`, accounted at its buffer's real size (at least `bytes`).
    pub fn insert(&mut self, key: WeightKey, tensor: GpuTensor, bytes: u64) {
        self.release_retired();
        let bytes = bytes.max(tensor.buffer.size());
        device_copies::mark_resident(key);
        for evicted in self.0.insert(key, tensor, bytes) {
            device_copies::forget(evicted);
        }
    }
    /// (bytes, tensors) held now.
    pub fn held(&mut self) -> (u64, usize) {
        self.release_retired();
        (self.0.total_bytes(), self.0.len())
    }
    fn release_retired(&mut self) {
        for key in device_copies::take_retired() {
            self.0.remove(&key);
        }
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
    compile(ctx, kernel, header, body, wgpu::ShaderRuntimeChecks::checked())
}

/// `pipeline` for kernels whose every loop has a constant or host-checked bound and whose every
/// divisor is a constant or host-checked non-zero (decoder, dense, SwiGLU): wgpu's injected loop
/// counters, which keep drivers from unrolling loops, and division guards are left out. Buffer
/// bounds checks stay.
pub(crate) fn bounded_pipeline(
    ctx: &Context,
    kernel: &'static str,
    header: String,
    body: &[&str],
) -> Result<wgpu::ComputePipeline> {
    let mut checks = wgpu::ShaderRuntimeChecks::checked();
    checks.force_loop_bounding = false;
    checks.int_div_checks = false;
    compile(ctx, kernel, header, body, checks)
}

fn compile(
    ctx: &Context,
    kernel: &'static str,
    header: String,
    body: &[&str],
    checks: wgpu::ShaderRuntimeChecks,
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
        let descriptor = wgpu::ShaderModuleDescriptor {
            label: Some(kernel),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        };
        // SAFETY: `checks` keeps buffer bounds checks; what it drops is only dropped by
        // `bounded_pipeline`, whose callers' kernels meet its conditions.
        let module = unsafe { ctx.device.create_shader_module_trusted(descriptor, checks) };
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
    use super::super::context::{context, lock};
    use super::{register_resident_bytes, registered_bytes, ByteLru, GpuTensor, WeightKey};
    use crate::codec::{encode_standard, Codec};
    use crate::dtype::DType;
    use crate::weights::{WeightStore, WeightView};

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

    #[test]
    fn registered_bytes_follow_their_guards() {
        let before = registered_bytes();
        let mut model = register_resident_bytes(100);
        let cache = register_resident_bytes(28);
        assert_eq!(registered_bytes(), before + 128);
        model.set(40);
        assert_eq!((model.bytes(), registered_bytes()), (40, before + 68));
        drop(cache);
        drop(model);
        assert_eq!(registered_bytes(), before);
    }

    #[test]
    fn dropped_or_replaced_weights_release_their_buffers() {
        let Ok(ctx) = context() else {
            eprintln!("no GPU adapter: skipping dropped_or_replaced_weights_release_their_buffers");
            return;
        };
        // Buffers go straight into the cache: the upload counter that gpu::tests checks stays put.
        let upload = |key: WeightKey| {
            let buffer = ctx
                .buffer_with("test weights", &[0; 16], wgpu::BufferUsages::STORAGE)
                .unwrap_or_else(|e| panic!("{e}"));
            lock(&ctx.weights).insert(key, GpuTensor { buffer, n: 4 }, 16);
        };
        let cached = |key: WeightKey| lock(&ctx.weights).get(&key).is_some();
        let master_of = |s: &WeightStore| WeightKey::Master(s.generation());

        let packed = encode_standard(&[0.5, -1.0, 0.25], DType::Int8);
        let key = WeightKey::Packed(packed.id);
        upload(key);
        let copy = packed.clone(); // a version of its own: dropping it keeps the original's buffer
        drop(copy);
        assert!(cached(key));
        drop(packed);
        assert!(!cached(key));

        let mut store = WeightStore::new(vec![1.0, 2.0, 3.0], vec![3], Codec::Standard).unwrap_or_else(|e| panic!("{e}"));
        let first = master_of(&store);
        upload(first);
        let twin = store.clone(); // its own master, its own generation
        upload(master_of(&twin));
        store.update_master(|m| m[0] = -1.0).unwrap_or_else(|e| panic!("{e}"));
        assert!(!cached(first) && cached(master_of(&twin)));
        upload(master_of(&store));
        store.morph(DType::Int4).unwrap_or_else(|e| panic!("{e}"));
        let int4 = match store.view() {
            Ok(WeightView::Packed(p)) => WeightKey::Packed(p.id),
            _ => panic!("a store morphed to int4 computes with its int4 version"),
        };
        upload(int4);
        store.release_master().unwrap_or_else(|e| panic!("{e}"));
        assert!(!cached(master_of(&store)) && cached(int4));
        drop(store);
        assert!(!cached(int4));
        let twin_key = master_of(&twin);
        drop(twin);
        assert!(!cached(twin_key));
    }
}
