//! Transformer for Python: load a HuggingFace Llama-family directory, full-sequence logits and
//! token generation (the GIL is released around every forward); `network` is the grid it runs on.

use super::arrays::to_numpy;
use super::errors::{guarded, IntoPyResult};
use super::network::PyNetwork;
use crate::dtype::DType;
use crate::error::Error;
use crate::llm::{generate_ids, SamplingConfig, Transformer};
use numpy::PyArrayDyn;
use pyo3::prelude::*;
use std::path::PathBuf;

#[pyclass(name = "Transformer", module = "polyvtd._core", frozen)]
pub struct PyTransformer {
    inner: Transformer,
}

#[pymethods]
impl PyTransformer {
    /// Load config.json and the safetensors checkpoint of `path`; `dtype` morphs every
    /// weighted layer.
    #[staticmethod]
    #[pyo3(signature = (path, dtype = None))]
    fn from_hf_dir(py: Python<'_>, path: PathBuf, dtype: Option<&str>) -> PyResult<Self> {
        let dtype = dtype.map(DType::parse).transpose().py()?;
        let inner = py.detach(|| guarded(|| Transformer::from_hf_dir(&path, dtype))).py()?;
        Ok(PyTransformer { inner })
    }

    /// Logits of every position, [len, vocab].
    fn logits<'py>(&self, py: Python<'py>, ids: Vec<u32>) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let len = ids.len();
        let y = py.detach(|| guarded(|| self.inner.logits(&ids))).py()?;
        to_numpy(py, y, &[len, self.inner.config.vocab_size])
    }

    /// Generate up to `max_new_tokens` ids after `ids` (a stop id that ends generation is
    /// included); greedy when temperature is 0, else seeded sampling.
    #[pyo3(signature = (ids, max_new_tokens = 32, temperature = 0.0, top_k = 0, top_p = 1.0, min_p = 0.0,
                        repetition_penalty = 1.0, repetition_window = 64, seed = 0, stop_ids = None))]
    #[allow(clippy::too_many_arguments)]
    fn generate_ids(
        &self,
        py: Python<'_>,
        ids: Vec<u32>,
        max_new_tokens: usize,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        min_p: f32,
        repetition_penalty: f32,
        repetition_window: usize,
        seed: u64,
        stop_ids: Option<Vec<u32>>,
    ) -> PyResult<Vec<u32>> {
        let sampling = SamplingConfig { temperature, top_k, top_p, min_p, repetition_penalty, repetition_window, seed };
        let stop = stop_ids.unwrap_or_default();
        py.detach(|| guarded(|| generate_ids(&self.inner, &ids, max_new_tokens, sampling, &stop, |_| true))).py()
    }

    /// The grid the model runs on (its layers and weights are the model's own).
    #[getter]
    fn network(&self) -> PyNetwork {
        PyNetwork::wrap(self.inner.network.clone())
    }

    /// The model's hyper-parameters as JSON text.
    fn config_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.inner.config).map_err(|e| Error::Value(e.to_string())).py()
    }

    fn __repr__(&self) -> String {
        let c = &self.inner.config;
        format!(
            "Transformer({}, layers={}, hidden={}, heads={}/{}, vocab={})",
            c.architecture, c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.vocab_size
        )
    }
}
