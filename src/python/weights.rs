//! WeightStore for Python: a handle on a shared store (the same one a layer computes with).

use super::arrays::{check_finite, contiguous_f32, to_numpy};
use super::errors::{guarded, IntoPyResult};
use crate::codec::{loom_disk, Codec};
use crate::dtype::DType;
use crate::layers::Param;
use crate::weights::WeightStore;
use numpy::{PyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::sync::{Arc, RwLock};

/// The reference's 21 dtypes: any shape, both code books, the GPU's in-shader decode.
#[pyfunction]
pub fn dtypes() -> Vec<&'static str> {
    DType::ALL.iter().map(|d| d.name()).collect()
}

/// GGML's block formats, accepted wherever a dtype is: rows must be whole 32-value blocks.
#[pyfunction]
pub fn block_dtypes() -> Vec<&'static str> {
    DType::BLOCKS.iter().map(|d| d.name()).collect()
}

pub fn parse_dtype(name: Option<&str>, store: &WeightStore) -> PyResult<DType> {
    match name {
        None => Ok(store.dtype()),
        Some(n) => DType::parse(n).py(),
    }
}

#[pyclass(name = "WeightStore", module = "polyvtd", frozen)]
pub struct PyWeightStore {
    pub inner: Param,
}

impl PyWeightStore {
    pub fn wrap(inner: Param) -> PyWeightStore {
        PyWeightStore { inner }
    }
}

#[pymethods]
impl PyWeightStore {
    /// WeightStore(master, compat="standard"): master is any float array (copied once).
    #[new]
    #[pyo3(signature = (master, compat = "standard"))]
    fn new(master: &Bound<'_, PyAny>, compat: &str) -> PyResult<Self> {
        let codec = Codec::parse(compat).py()?;
        let master = contiguous_f32(master, "master")?;
        let shape = master.shape().to_vec();
        let values = master.as_slice().map_err(PyErr::from)?.to_vec();
        check_finite(&values, *shape.last().unwrap_or(&1), "master").py()?;
        let store = WeightStore::new(values, shape, codec).py()?;
        Ok(PyWeightStore { inner: Arc::new(RwLock::new(store)) })
    }

    /// Build a store from a Loom on-disk weight blob (reference numerics.md §5).
    #[staticmethod]
    #[pyo3(signature = (data, dtype, shape, scale))]
    fn from_loom_bytes(data: &[u8], dtype: &str, shape: Vec<usize>, scale: f32) -> PyResult<Self> {
        let dtype = DType::parse(dtype).py()?;
        let n = shape.iter().product();
        let packed = loom_disk::decode(dtype, data, n, scale).py()?;
        let store = WeightStore::from_packed(packed, shape).py()?;
        Ok(PyWeightStore { inner: Arc::new(RwLock::new(store)) })
    }

    /// One tensor of a GGUF file: F32 becomes the master, F16/BF16/Q4_0/Q4_1/Q8_0 stay packed
    /// without a master (inference-only; `unpack` rebuilds one).
    #[staticmethod]
    fn from_gguf_tensor(py: Python<'_>, path: std::path::PathBuf, name: &str) -> PyResult<Self> {
        let store = py.detach(|| guarded(|| crate::io::gguf::GgufFile::open(&path)?.weight_store(name))).py()?;
        Ok(PyWeightStore { inner: Arc::new(RwLock::new(store)) })
    }

    /// The dtype's codes as the reference writes them to disk (numerics.md §5).
    #[pyo3(signature = (dtype = None))]
    fn loom_bytes<'py>(&self, py: Python<'py>, dtype: Option<&str>) -> PyResult<Bound<'py, PyBytes>> {
        let mut store = self.inner.write().unwrap();
        let dtype = parse_dtype(dtype, &store)?;
        let bytes = if dtype == DType::Float32 {
            store.master().py()?.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()
        } else {
            loom_disk::encode(&*store.version(dtype).py()?)
        };
        Ok(PyBytes::new(py, &bytes))
    }

    /// Make `dtype` the one the owning layer computes with.
    fn morph(&self, py: Python<'_>, dtype: &str) -> PyResult<()> {
        let dtype = DType::parse(dtype).py()?;
        py.detach(|| guarded(|| self.inner.write().unwrap().morph(dtype))).py()
    }

    /// Rebuild the FP32 master from `dtype`'s packed version.
    fn unpack(&self, py: Python<'_>, dtype: &str) -> PyResult<()> {
        let dtype = DType::parse(dtype).py()?;
        py.detach(|| guarded(|| self.inner.write().unwrap().unpack(dtype))).py()
    }

    /// Exactly the values a layer computing in `dtype` (default: the active one) uses.
    #[pyo3(signature = (dtype = None))]
    fn dequantize<'py>(&self, py: Python<'py>, dtype: Option<&str>) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let dtype = parse_dtype(dtype, &self.inner.read().unwrap())?;
        let inner = &self.inner;
        let (values, shape) = py
            .detach(|| {
                guarded(|| {
                    let mut store = inner.write().unwrap();
                    Ok((store.dequantize(dtype)?, store.shape().to_vec()))
                })
            })
            .py()?;
        to_numpy(py, values, &shape)
    }

    /// Bytes the weights take stored as `dtype` (default: the active one).
    #[pyo3(signature = (dtype = None))]
    fn size_in_bytes(&self, dtype: Option<&str>) -> PyResult<usize> {
        let store = self.inner.read().unwrap();
        let dtype = parse_dtype(dtype, &store)?;
        Ok(store.size_in_bytes(dtype))
    }

    /// Replace the FP32 master (same number of values); morphed versions are rebuilt.
    fn set_master(&self, values: &Bound<'_, PyAny>) -> PyResult<()> {
        let values = super::arrays::contiguous_f32(values, "master")?;
        let data = values.as_slice().map_err(PyErr::from)?.to_vec();
        super::arrays::check_finite(&data, data.len(), "master").py()?;
        self.inner.write().unwrap().set_master(data).py()
    }

    /// Drop the FP32 master (inference only); `unpack` brings it back.
    fn release_master(&self) -> PyResult<()> {
        self.inner.write().unwrap().release_master().py()
    }

    /// The scale of `dtype`'s version (default: the active dtype; 1.0 for float types).
    #[pyo3(signature = (dtype = None))]
    fn scale_of(&self, dtype: Option<&str>) -> PyResult<f32> {
        let mut store = self.inner.write().unwrap();
        let dtype = parse_dtype(dtype, &store)?;
        store.scale(dtype).py()
    }

    /// The packed codes of `dtype` (default: active) as raw bytes (LSB-first bit packing).
    #[pyo3(signature = (dtype = None))]
    fn packed_bytes<'py>(&self, py: Python<'py>, dtype: Option<&str>) -> PyResult<Bound<'py, PyBytes>> {
        let mut store = self.inner.write().unwrap();
        let dtype = parse_dtype(dtype, &store)?;
        if dtype == DType::Float32 {
            let master: Vec<u8> = store.master().py()?.iter().flat_map(|v| v.to_le_bytes()).collect();
            return Ok(PyBytes::new(py, &master));
        }
        let packed = store.version(dtype).py()?;
        Ok(PyBytes::new(py, &packed.bytes[..dtype.packed_bytes(packed.n)]))
    }

    #[getter]
    fn scale(&self) -> PyResult<f32> {
        self.scale_of(None)
    }

    /// Unsigned dtypes: the zero point of the active version (0 otherwise).
    #[getter]
    fn zero_point(&self) -> PyResult<f64> {
        let mut store = self.inner.write().unwrap();
        let dtype = store.dtype();
        if dtype == DType::Float32 {
            return Ok(0.0);
        }
        Ok(store.version(dtype).py()?.zero_point)
    }

    #[getter]
    fn master<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let store = self.inner.read().unwrap();
        let values = store.master().py()?.to_vec();
        to_numpy(py, values, store.shape())
    }

    #[getter]
    fn dtype(&self) -> &'static str {
        self.inner.read().unwrap().dtype().name()
    }

    #[getter]
    fn shape(&self) -> Vec<usize> {
        self.inner.read().unwrap().shape().to_vec()
    }

    #[getter]
    fn compat(&self) -> &'static str {
        self.inner.read().unwrap().codec().name()
    }

    #[getter]
    fn has_master(&self) -> bool {
        self.inner.read().unwrap().has_master()
    }

    /// Bytes held right now (master if kept + cached packed versions).
    #[getter]
    fn memory_bytes(&self) -> usize {
        self.inner.read().unwrap().memory_bytes()
    }

    fn __len__(&self) -> usize {
        self.inner.read().unwrap().len()
    }

    fn __repr__(&self) -> String {
        let s = self.inner.read().unwrap();
        format!(
            "WeightStore(shape={:?}, dtype={}, bytes={}, master={}, compat={})",
            s.shape(),
            s.dtype(),
            s.size_in_bytes(s.dtype()),
            if s.has_master() { "kept" } else { "released" },
            s.codec().name()
        )
    }
}
