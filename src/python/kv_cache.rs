//! KVCache for Python: one attention layer's keys and values, fed a few positions at a time for
//! incremental decoding (the layer stays shared with any network it sits in).

use super::arrays::{batched, contiguous_f32, forward_args, to_numpy, ForwardArgs};
use super::errors::{guarded, to_py, IntoPyResult};
use super::layer::PyLayer;
use crate::error::{Error, Result};
use crate::layers::attention::{Attention, KvCache};
use crate::layers::{Ctx, Input, Layer};
use numpy::PyArrayDyn;
use pyo3::prelude::*;
use std::sync::{Arc, Mutex};

#[pyclass(name = "KVCache", module = "polyvtd", frozen)]
pub struct PyKvCache {
    layer: Arc<Layer>,
    cache: Mutex<KvCache>,
}

fn attention(layer: &Layer) -> Result<&Attention> {
    match layer {
        Layer::MultiHeadAttention(a) => Ok(a),
        other => Err(Error::Spec(format!("a KV cache needs a MultiHeadAttention layer, got {}", other.type_name()))),
    }
}

fn count(name: &str, value: i64) -> Result<usize> {
    usize::try_from(value).map_err(|_| Error::Value(format!("{name} must be ≥ 1, got {value}")))
}

#[pymethods]
impl PyKvCache {
    /// An empty cache for `batch` sequences through `layer`, holding up to `max_seq_len`
    /// positions each (None: the layer's max_seq_len).
    #[new]
    #[pyo3(signature = (layer, batch = 1, max_seq_len = None))]
    fn new(layer: &PyLayer, batch: i64, max_seq_len: Option<i64>) -> PyResult<Self> {
        let capacity = max_seq_len.map(|m| count("max_seq_len", m)).transpose().py()?;
        let cache = KvCache::new(attention(&layer.inner).py()?, count("batch", batch).py()?, capacity).py()?;
        Ok(PyKvCache { layer: layer.inner.clone(), cache: Mutex::new(cache) })
    }

    /// Feed the next positions of every sequence: x is [batch, S, d_model] (or [batch, d_model]
    /// for one position each); returns the layer's output for them, shaped like x.
    #[pyo3(signature = (x, mode = "parallel"))]
    fn forward<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>, mode: &str) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let x = contiguous_f32(x, "input")?;
        let ForwardArgs { data, batch, shape, schedule, .. } = forward_args(&x, mode, "cpu").py()?;
        let y = py
            .detach(|| {
                guarded(|| {
                    let mut cache = self.cache.lock().map_err(|_| Error::Value("the KV cache was left inconsistent by an earlier failure; reset it".into()))?;
                    attention(&self.layer)?.infer_cached(Input::new(data, batch, &shape), &mut cache, &Ctx::standalone(schedule))
                })
            })
            .py()?;
        to_numpy(py, y, &batched(batch, &shape))
    }

    /// Forget every cached position.
    fn reset(&self) {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).reset();
    }

    /// Positions cached per sequence.
    #[getter]
    fn length(&self) -> PyResult<usize> {
        self.with(|c| c.len())
    }
    #[getter]
    fn max_seq_len(&self) -> PyResult<usize> {
        self.with(|c| c.capacity())
    }
    #[getter]
    fn batch(&self) -> PyResult<usize> {
        self.with(|c| c.batch())
    }

    fn __repr__(&self) -> PyResult<String> {
        self.with(|c| format!("KVCache(batch={}, length={}, max_seq_len={})", c.batch(), c.len(), c.capacity()))
    }
}

impl PyKvCache {
    fn with<T>(&self, read: impl FnOnce(&KvCache) -> T) -> PyResult<T> {
        let cache = self.cache.lock().map_err(|_| to_py(Error::Value("the KV cache was left inconsistent by an earlier failure; reset it".into())))?;
        Ok(read(&cache))
    }
}
