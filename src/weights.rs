//! WeightStore: the FP32 master of one weight tensor, its cached morphed (packed) versions and
//! the dtype the owning layer computes with.
//!
//! Standard codec: every version gets its own scale, computed from the master for that dtype.
//! Loom codec: one shared scale chosen by the first non-float32 morph and reused afterwards
//! (the reference's behaviour, quirk 1), so Loom checkpoints round-trip bit for bit.
//! Block dtypes (GGML Q4_0/Q4_1/Q8_0) carry their scales per block under either codec.

use crate::codec::ggml_blocks::{self, GgmlType};
use crate::codec::{self, device_copies, Codec, DeviceKey, Packed};
use crate::dtype::DType;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

#[derive(Debug)]
pub struct WeightStore {
    master: Option<Vec<f32>>,
    shape: Vec<usize>,
    codec: Codec,
    /// The dtype the owning layer computes with.
    active: DType,
    versions: BTreeMap<DType, Arc<Packed>>,
    /// Loom codec only: the shared scale (starts at 1.0 = "not chosen yet").
    loom_scale: f32,
    /// Changes whenever the master changes (GPU copies of float32 weights are keyed by it).
    generation: u64,
}

impl Clone for WeightStore {
    /// A copy owns its master: a generation of its own, so training or dropping one never retires
    /// the other's GPU copy. Packed versions are shared until either store replaces them.
    fn clone(&self) -> WeightStore {
        WeightStore {
            master: self.master.clone(),
            shape: self.shape.clone(),
            codec: self.codec,
            active: self.active,
            versions: self.versions.clone(),
            loom_scale: self.loom_scale,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl Drop for WeightStore {
    fn drop(&mut self) {
        device_copies::retire(DeviceKey::Master(self.generation));
    }
}

/// What kernels read: the float32 master itself or a packed version.
#[derive(Clone, Copy)]
pub enum WeightView<'a> {
    F32(&'a [f32]),
    Packed(&'a Packed),
}

impl WeightView<'_> {
    pub fn len(&self) -> usize {
        match self {
            WeightView::F32(w) => w.len(),
            WeightView::Packed(p) => p.n,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn dtype(&self) -> DType {
        match self {
            WeightView::F32(_) => DType::Float32,
            WeightView::Packed(p) => p.dtype,
        }
    }
    /// Values [start, start + out.len()) as f32 (a copy for float32, a decode otherwise).
    pub fn decode_into(&self, start: usize, out: &mut [f32]) {
        match self {
            WeightView::F32(w) => out.copy_from_slice(&w[start..start + out.len()]),
            WeightView::Packed(p) => p.decode_into(start, out),
        }
    }
}

impl WeightStore {
    pub fn new(master: Vec<f32>, shape: Vec<usize>, codec: Codec) -> Result<WeightStore> {
        let count: usize = shape.iter().product();
        if count != master.len() {
            return Err(Error::Shape(format!(
                "weight shape {shape:?} holds {count} values, got {}",
                master.len()
            )));
        }
        Ok(WeightStore {
            master: Some(master),
            shape,
            codec,
            active: DType::Float32,
            versions: BTreeMap::new(),
            loom_scale: 1.0,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Install a version read from a checkpoint as the active one (the master is rebuilt from it).
    pub fn from_packed(packed: Packed, shape: Vec<usize>) -> Result<WeightStore> {
        let mut store = WeightStore::new(packed.decode_all(), shape, packed.codec)?;
        if packed.codec == Codec::Loom && packed.dtype != DType::Float32 {
            store.loom_scale = packed.scale;
        }
        store.active = packed.dtype;
        if packed.dtype != DType::Float32 {
            store.versions.insert(packed.dtype, Arc::new(packed));
        }
        Ok(store)
    }

    /// A store as a checkpoint describes it: the active dtype's version (`None`: float32, the
    /// master is the weights), the master (`None`: rebuilt from the version) and, for the Loom
    /// codec, the shared scale its next morphs use.
    pub fn restore(shape: Vec<usize>, codec: Codec, version: Option<Packed>, master: Option<Vec<f32>>, loom_scale: f32) -> Result<WeightStore> {
        let master = match (master, &version) {
            (Some(m), _) => m,
            (None, Some(p)) => p.decode_all(),
            (None, None) => return Err(Error::Value("a float32 store needs its master values".into())),
        };
        let mut store = WeightStore::new(master, shape, codec)?;
        store.loom_scale = if codec == Codec::Loom { loom_scale } else { 1.0 };
        if let Some(p) = version {
            if p.n != store.len() || p.codec != codec {
                return Err(Error::Shape(format!(
                    "a {} version of {} {} values does not fit a {} store of shape {:?}",
                    p.dtype, p.n, p.codec.name(), codec.name(), store.shape
                )));
            }
            store.active = p.dtype;
            store.versions.insert(p.dtype, Arc::new(p));
        }
        Ok(store)
    }

    /// The Loom codec's shared scale (1.0 until a first non-float32 morph chooses it; always 1.0
    /// under the standard codec).
    pub fn loom_scale(&self) -> f32 {
        self.loom_scale
    }

    /// A tensor as a GGUF file stores it (`bytes` in `ggml_type`'s layout, `shape` row-major,
    /// i.e. GGUF's dims reversed): F32 becomes the master; F16, BF16 and the block types become
    /// their packed version alone, without a master (inference-only: memory stays at the file's
    /// size; `unpack` rebuilds a master for training).
    pub fn from_gguf(bytes: &[u8], ggml_type: GgmlType, shape: Vec<usize>) -> Result<WeightStore> {
        let n: usize = shape.iter().product();
        let dtype = ggml_type.dtype();
        ggml_blocks::check_row(dtype, &shape)?;
        if dtype == DType::Float32 {
            let expected = 4 * n;
            if bytes.len() != expected {
                return Err(Error::Shape(format!("F32 tensor of shape {shape:?} takes {expected} bytes, got {}", bytes.len())));
            }
            let master = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            return WeightStore::new(master, shape, Codec::Standard);
        }
        let packed = Packed::from_bytes(dtype, Codec::Standard, n, bytes.to_vec())?;
        Ok(WeightStore {
            master: None,
            shape,
            codec: Codec::Standard,
            active: dtype,
            versions: BTreeMap::from([(dtype, Arc::new(packed))]),
            loom_scale: 1.0,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
        })
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn codec(&self) -> Codec {
        self.codec
    }
    pub fn dtype(&self) -> DType {
        self.active
    }
    pub fn generation(&self) -> u64 {
        self.generation
    }
    pub fn has_master(&self) -> bool {
        self.master.is_some()
    }

    pub fn master(&self) -> Result<&[f32]> {
        self.master.as_deref().ok_or_else(|| {
            Error::Value("the FP32 master was released; call unpack(dtype) to rebuild it".into())
        })
    }

    /// The packed version for `dtype`, creating it from the master if needed.
    pub fn version(&mut self, dtype: DType) -> Result<Arc<Packed>> {
        if let Some(p) = self.versions.get(&dtype) {
            return Ok(p.clone());
        }
        let master = self.master.as_deref().ok_or_else(|| {
            Error::Value("the FP32 master was released; call unpack(dtype) to rebuild it".into())
        })?;
        ggml_blocks::check_row(dtype, &self.shape)?;
        let packed = match self.codec {
            Codec::Standard => codec::encode_standard(master, dtype),
            Codec::Loom => {
                // The reference never changes a float32 store's scale, and chooses one only
                // while it is still exactly 1.0.
                if dtype != DType::Float32 && !dtype.is_block() && self.loom_scale == 1.0 && !master.is_empty() {
                    self.loom_scale = codec::loom_auto_scale(master, dtype);
                }
                codec::encode_loom(master, dtype, self.loom_scale)
            }
        };
        let packed = Arc::new(packed);
        self.versions.insert(dtype, packed.clone());
        Ok(packed)
    }

    /// Make `dtype` the one the layer computes with (creating its packed version).
    pub fn morph(&mut self, dtype: DType) -> Result<()> {
        if dtype != DType::Float32 {
            self.version(dtype)?;
        } else if self.master.is_none() {
            return Err(Error::Value(
                "cannot morph to float32: the FP32 master was released; unpack first".into(),
            ));
        }
        self.active = dtype;
        Ok(())
    }

    /// The scale of a dtype's version (1.0 for the float types and float32).
    pub fn scale(&mut self, dtype: DType) -> Result<f32> {
        if dtype == DType::Float32 {
            return Ok(1.0);
        }
        Ok(self.version(dtype)?.scale)
    }

    /// Exactly the values a layer computing in `dtype` uses.
    pub fn dequantize(&mut self, dtype: DType) -> Result<Vec<f32>> {
        if dtype == DType::Float32 {
            return Ok(self.master()?.to_vec());
        }
        Ok(self.version(dtype)?.decode_all())
    }

    /// Rebuild the master from `dtype`'s version; other versions are dropped (they were made from
    /// the old master), this one is kept.
    pub fn unpack(&mut self, dtype: DType) -> Result<()> {
        if dtype == DType::Float32 {
            self.master()?;
            return Ok(());
        }
        let packed = self.version(dtype)?;
        self.master = Some(packed.decode_all());
        self.versions.retain(|d, _| *d == dtype);
        self.new_generation();
        Ok(())
    }

    /// Drop the FP32 master (inference-only): memory is then the packed version alone.
    pub fn release_master(&mut self) -> Result<()> {
        if self.active == DType::Float32 {
            return Err(Error::Value(
                "float32 weights are the master itself; morph to another dtype before releasing it".into(),
            ));
        }
        self.version(self.active)?;
        self.versions.retain(|d, _| *d == self.active);
        self.master = None;
        device_copies::retire(DeviceKey::Master(self.generation));
        Ok(())
    }

    /// The master changed: its GPU copy (keyed by the old generation) is retired.
    fn new_generation(&mut self) {
        device_copies::retire(DeviceKey::Master(self.generation));
        self.generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes the weights take when stored as `dtype` (codes + scale/zero point).
    pub fn size_in_bytes(&self, dtype: DType) -> usize {
        if dtype == DType::Float32 {
            4 * self.len()
        } else {
            self.versions.get(&dtype).map(|p| p.size_in_bytes()).unwrap_or_else(|| {
                let meta = match dtype.family() {
                    crate::dtype::Family::Float | crate::dtype::Family::Block => 0,
                    crate::dtype::Family::Unsigned => 12,
                    _ => 4,
                };
                dtype.packed_bytes(self.len()) + meta
            })
        }
    }

    /// Bytes held right now: the master (if kept) plus every cached packed version.
    pub fn memory_bytes(&self) -> usize {
        self.master.as_ref().map_or(0, |m| 4 * m.len())
            + self.versions.values().map(|p| p.bytes.len()).sum::<usize>()
    }

    /// The packed versions held now: (dtype, bytes), in dtype order.
    pub fn held_versions(&self) -> Vec<(DType, usize)> {
        self.versions.iter().map(|(d, p)| (*d, p.bytes.len())).collect()
    }

    /// What kernels read for the active dtype.
    pub fn view(&self) -> Result<WeightView<'_>> {
        if self.active == DType::Float32 {
            return Ok(WeightView::F32(self.master()?));
        }
        match self.versions.get(&self.active) {
            Some(p) => Ok(WeightView::Packed(p)),
            None => Err(Error::Value(format!("no {} version; morph first", self.active))),
        }
    }

    /// Apply `update` to the master (training), then re-morph the active dtype so the layer keeps
    /// computing from fresh packed codes (quantisation-aware training).
    pub fn update_master(&mut self, update: impl FnOnce(&mut [f32])) -> Result<()> {
        let master = self.master.as_mut().ok_or_else(|| {
            Error::Value("cannot train: the FP32 master was released; unpack first".into())
        })?;
        update(master);
        self.versions.clear();
        self.new_generation();
        if self.active != DType::Float32 {
            self.version(self.active)?;
        }
        Ok(())
    }

    /// Replace the master wholesale (e.g. restoring last good weights).
    pub fn set_master(&mut self, values: Vec<f32>) -> Result<()> {
        if values.len() != self.len() {
            return Err(Error::Shape(format!(
                "new master has {} values, the store holds {}",
                values.len(),
                self.len()
            )));
        }
        self.master = Some(values);
        self.update_master(|_| {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn morph_release_unpack_cycle() {
        let w: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) / 10.0).collect();
        let mut s = WeightStore::new(w.clone(), vec![8, 8], Codec::Standard).unwrap();
        s.morph(DType::Int4).unwrap();
        let deq = s.dequantize(DType::Int4).unwrap();
        s.release_master().unwrap();
        assert_eq!(s.memory_bytes(), 32);
        assert!(s.morph(DType::Float32).is_err());
        s.unpack(DType::Int4).unwrap();
        assert_eq!(s.master().unwrap(), &deq[..]);
    }

    #[test]
    fn update_remorphs_active_dtype() {
        let mut s = WeightStore::new(vec![0.5, -0.25, 1.0, 0.0], vec![4], Codec::Standard).unwrap();
        s.morph(DType::Int8).unwrap();
        let before = s.view().unwrap().len();
        s.update_master(|m| m[0] = -2.0).unwrap();
        let deq = s.dequantize(DType::Int8).unwrap();
        assert_eq!(before, 4);
        assert_eq!(deq[0], -2.0);
    }

    #[test]
    fn block_dtypes_need_whole_blocks_per_row() {
        let w: Vec<f32> = (0..96).map(|i| i as f32 / 7.0 - 6.0).collect();
        let mut rows_of_48 = WeightStore::new(w.clone(), vec![2, 48], Codec::Standard).unwrap();
        assert!(matches!(rows_of_48.morph(DType::Q4_1), Err(Error::DType(_))));
        let mut rows_of_32 = WeightStore::new(w, vec![3, 32], Codec::Loom).unwrap();
        rows_of_32.morph(DType::Q8_0).unwrap();
        assert_eq!(rows_of_32.size_in_bytes(DType::Q8_0), 3 * 34);
    }

    #[test]
    fn gguf_blocks_load_without_master() {
        let w: Vec<f32> = (0..64).map(|i| (i as f32).cos()).collect();
        let blocks = ggml_blocks::quantize(&w, DType::Q4_0);
        let mut s = WeightStore::from_gguf(&blocks, GgmlType::Q4_0, vec![2, 32]).unwrap();
        assert!(!s.has_master());
        assert_eq!((s.dtype(), s.memory_bytes()), (DType::Q4_0, 36));
        assert_eq!(s.dequantize(DType::Q4_0).unwrap(), codec::encode_standard(&w, DType::Q4_0).decode_all());
        assert!(WeightStore::from_gguf(&blocks[..30], GgmlType::Q4_0, vec![2, 32]).is_err());
    }
}
