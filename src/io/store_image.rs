//! One WeightStore as a checkpoint holds it: the active dtype's codes in the reference's on-disk
//! packing (numerics.md §5), the scale (and zero point) that decode them, the code book, the
//! shape, optionally the FP32 master, and whether the master had been released. Capturing a store
//! and restoring the image gives a store that computes bit for bit the same and captures to the
//! same image.

use crate::codec::{ggml_blocks, loom_disk, Codec};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::weights::{WeightStore, WeightView};

#[derive(Debug, Clone, PartialEq)]
pub struct StoreImage {
    pub dtype: DType,
    pub codec: Codec,
    pub shape: Vec<usize>,
    /// Loom codec: the store's shared scale (the one its version was coded with); standard codec:
    /// the version's scale (1.0 for the float types).
    pub scale: f32,
    /// Unsigned standard codes only: value = (code − zero_point) · scale.
    pub zero_point: f64,
    /// The codes, packed as the reference writes them (float32: the values, little-endian).
    pub data: Vec<u8>,
    /// The FP32 master beside a non-float32 version (when asked for).
    pub master: Option<Vec<f32>>,
    /// The store had dropped its master (inference-only); a restored store drops it again.
    pub released: bool,
}

pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian f32 values; `bytes.len()` must be a multiple of 4 (callers check it).
pub fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// NaN/±Inf never sit in a master (training stops before them): a file holding one is damaged.
pub fn check_finite(values: &[f32], what: &str) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::Value(format!("{what}: value {i} is {}", values[i]))),
        None => Ok(()),
    }
}

impl StoreImage {
    pub fn capture(store: &WeightStore, with_master: bool) -> Result<StoreImage> {
        let (data, scale, zero_point) = match store.view()? {
            WeightView::F32(master) => (f32_bytes(master), store.loom_scale(), 0.0),
            WeightView::Packed(p) => {
                let scale = if store.codec() == Codec::Loom { store.loom_scale() } else { p.scale };
                (loom_disk::encode(p), scale, p.zero_point)
            }
        };
        let released = !store.has_master();
        let master = if with_master && !released && store.dtype() != DType::Float32 { Some(store.master()?.to_vec()) } else { None };
        Ok(StoreImage { dtype: store.dtype(), codec: store.codec(), shape: store.shape().to_vec(), scale, zero_point, data, master, released })
    }

    /// The store this image describes; errors say what does not fit (callers add where it is).
    pub fn restore(&self) -> Result<WeightStore> {
        let n: usize = self.shape.iter().product();
        let need = self.dtype.packed_bytes(n);
        if self.data.len() != need {
            return Err(Error::Shape(format!(
                "holds {} bytes, but {n} {} values of shape {:?} take {need}",
                self.data.len(),
                self.dtype,
                self.shape
            )));
        }
        if let Some(master) = &self.master {
            if master.len() != n {
                return Err(Error::Shape(format!("master holds {} values, the shape {:?} needs {n}", master.len(), self.shape)));
            }
            check_finite(master, "master")?;
        }
        let mut store = if self.dtype == DType::Float32 {
            let values = f32_values(&self.data);
            check_finite(&values, "float32 weights")?;
            WeightStore::restore(self.shape.clone(), self.codec, None, Some(values), self.scale)?
        } else {
            ggml_blocks::check_row(self.dtype, &self.shape)?;
            let packed = loom_disk::decode_with(self.dtype, self.codec, &self.data, n, self.scale, self.zero_point)?;
            WeightStore::restore(self.shape.clone(), self.codec, Some(packed), self.master.clone(), self.scale)?
        };
        if self.released {
            store.release_master()?;
        }
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_and_codec_round_trips_exactly() {
        let w: Vec<f32> = (0..96).map(|i| ((i as f32) * 0.61).sin() * 0.8 - 0.1).collect();
        for codec in [Codec::Standard, Codec::Loom] {
            for dtype in DType::ALL.into_iter().chain(DType::BLOCKS) {
                let mut store = WeightStore::new(w.clone(), vec![3, 32], codec).unwrap();
                store.morph(dtype).unwrap();
                for with_master in [false, true] {
                    let image = StoreImage::capture(&store, with_master).unwrap();
                    let mut back = image.restore().unwrap();
                    assert_eq!(StoreImage::capture(&back, with_master).unwrap(), image, "{dtype} {codec:?}");
                    assert_eq!(back.dequantize(dtype).unwrap(), store.dequantize(dtype).unwrap(), "{dtype}");
                    if with_master {
                        assert_eq!(back.master().unwrap(), store.master().unwrap());
                    }
                }
            }
        }
    }

    #[test]
    fn short_data_and_released_masters() {
        let mut store = WeightStore::new(vec![0.5, -0.25, 1.0, 0.0, 0.3], vec![5], Codec::Standard).unwrap();
        store.morph(DType::Int4).unwrap();
        store.release_master().unwrap();
        let mut image = StoreImage::capture(&store, true).unwrap();
        assert!(image.released && image.master.is_none());
        assert!(!image.restore().unwrap().has_master());
        image.data.pop();
        assert!(matches!(image.restore(), Err(Error::Shape(m)) if m.contains("holds 2 bytes")));
    }
}
