//! Transformer for Python: load a HuggingFace Llama-family directory, full-sequence logits and
//! token generation (the GIL is released around every forward); `network` is the grid it runs on.

use super::arrays::to_numpy;
use super::errors::{guarded, IntoPyResult};
use super::network::PyNetwork;
use crate::dtype::DType;
use crate::layers::Device;
use crate::error::Error;
use crate::llm::{generate_ids, DecodeState, Sampler, SamplingConfig, Transformer};
use std::sync::{Arc, Mutex};
use numpy::PyArrayDyn;
use pyo3::prelude::*;
use std::path::PathBuf;

/// `model` with its token step moved to `device`.
fn on_device(mut model: Transformer, device: Device) -> crate::error::Result<Transformer> {
    if device == Device::Gpu {
        model.use_gpu()?;
    }
    Ok(model)
}

#[pyclass(name = "Transformer", module = "polyvtd._core", frozen)]
pub struct PyTransformer {
    inner: Arc<Transformer>,
}

/// One decoding sequence: the KV caches, the sampler and the ids seen so far. `feed` appends ids
/// (a prompt, a chat turn, or the last sampled token) and returns the next sampled token, so a
/// chat's next turn continues the cache instead of re-encoding the history.
#[pyclass(name = "DecodeSession", module = "polyvtd._core", frozen)]
pub struct PyDecodeSession {
    model: Arc<Transformer>,
    state: Mutex<Session>,
}

struct Session {
    decode: DecodeState,
    sampler: Sampler,
    history: Vec<u32>,
}

#[allow(clippy::too_many_arguments)]
fn sampling(temperature: f32, top_k: usize, top_p: f32, min_p: f32, repetition_penalty: f32, repetition_window: usize, seed: u64) -> SamplingConfig {
    SamplingConfig { temperature, top_k, top_p, min_p, repetition_penalty, repetition_window, seed }
}

#[pymethods]
impl PyDecodeSession {
    /// Append `ids` to the sequence (one batched pass) and sample the next token (not yet fed).
    fn feed(&self, py: Python<'_>, ids: Vec<u32>) -> PyResult<u32> {
        let model = self.model.clone();
        py.detach(|| {
            guarded(|| {
                let mut session = self.state.lock().unwrap();
                if ids.is_empty() {
                    return Err(Error::Value("feed needs at least one token id".into()));
                }
                if session.decode.len() + ids.len() > model.context_length() {
                    return Err(Error::Value(format!(
                        "{} cached + {} new tokens exceed the context length {}",
                        session.decode.len(),
                        ids.len(),
                        model.context_length()
                    )));
                }
                let Session { decode, sampler, history } = &mut *session;
                history.extend_from_slice(&ids);
                model.next_token(decode, &ids, sampler, history)
            })
        })
        .py()
    }

    /// New sampling settings for what follows (the cache is kept).
    #[pyo3(signature = (temperature = 0.0, top_k = 0, top_p = 1.0, min_p = 0.0, repetition_penalty = 1.0,
                        repetition_window = 64, seed = 0))]
    #[allow(clippy::too_many_arguments)]
    fn configure(&self, temperature: f32, top_k: usize, top_p: f32, min_p: f32, repetition_penalty: f32, repetition_window: usize, seed: u64) -> PyResult<()> {
        let sampler = Sampler::new(sampling(temperature, top_k, top_p, min_p, repetition_penalty, repetition_window, seed)).py()?;
        self.state.lock().unwrap().sampler = sampler;
        Ok(())
    }

    /// Forget the sequence (the cache memory is kept for reuse).
    fn reset(&self) {
        let mut session = self.state.lock().unwrap();
        session.decode.reset();
        session.history.clear();
    }

    /// Positions in the cache.
    #[getter]
    fn length(&self) -> usize {
        self.state.lock().unwrap().decode.len()
    }

    #[getter]
    fn context_length(&self) -> usize {
        self.model.context_length()
    }

    /// Per kind of dispatch of a decode step (`rows` = 1) or a prefill pass of `rows` positions:
    /// (label, µs recording, µs in all) (GPU sessions only; see `GpuState::profile`).
    #[pyo3(signature = (repeats = 50, rows = 1))]
    fn gpu_profile(&self, py: Python<'_>, repeats: usize, rows: usize) -> PyResult<Vec<(String, f64, f64)>> {
        let model = self.model.clone();
        py.detach(|| {
            guarded(|| {
                let mut session = self.state.lock().unwrap();
                match (&model.gpu, &mut session.decode) {
                    (Some(gpu), DecodeState::Gpu(state)) => state.profile(gpu, repeats, rows),
                    _ => Err(Error::Value("gpu_profile needs a model loaded with device=\"gpu\"".into())),
                }
            })
        })
        .py()
    }

    /// How this GPU sequence runs a decode step: ("fused", None) — one dispatch whose workgroups
    /// hand each other the step's values through dataflow slots — or ("dispatches", why not
    /// fused); ("cpu", None) on the CPU.
    #[getter]
    fn gpu_step(&self) -> (String, Option<String>) {
        match &self.state.lock().unwrap().decode {
            DecodeState::Gpu(state) => {
                let (kind, why) = state.step_kind();
                (kind.to_string(), why.map(str::to_string))
            }
            DecodeState::Cpu(_) => ("cpu".to_string(), None),
        }
    }

    /// VRAM this sequence holds on the GPU (KV caches and activations; 0 on the CPU).
    #[getter]
    fn gpu_bytes(&self) -> u64 {
        match &self.state.lock().unwrap().decode {
            DecodeState::Gpu(state) => state.bytes(),
            DecodeState::Cpu(_) => 0,
        }
    }
}

#[pymethods]
impl PyTransformer {
    /// Load config.json and the safetensors checkpoint of `path`; `dtype` morphs every
    /// weighted layer.
    #[staticmethod]
    #[pyo3(signature = (path, dtype = None, device = "cpu"))]
    fn from_hf_dir(py: Python<'_>, path: PathBuf, dtype: Option<&str>, device: &str) -> PyResult<Self> {
        let dtype = dtype.map(DType::parse).transpose().py()?;
        let device = Device::parse(device).py()?;
        let inner = py.detach(|| guarded(|| on_device(Transformer::from_hf_dir(&path, dtype)?, device))).py()?;
        Ok(PyTransformer { inner: Arc::new(inner) })
    }

    /// Load a llama-family GGUF file; quantised tensors stay in their block format. `dtype`
    /// morphs every weighted layer.
    #[staticmethod]
    #[pyo3(signature = (path, dtype = None, device = "cpu"))]
    fn from_gguf(py: Python<'_>, path: PathBuf, dtype: Option<&str>, device: &str) -> PyResult<Self> {
        let dtype = dtype.map(DType::parse).transpose().py()?;
        let device = Device::parse(device).py()?;
        let inner = py.detach(|| guarded(|| on_device(Transformer::from_gguf(&path, dtype)?, device))).py()?;
        Ok(PyTransformer { inner: Arc::new(inner) })
    }

    /// A new decoding sequence with these sampling settings.
    #[pyo3(signature = (temperature = 0.0, top_k = 0, top_p = 1.0, min_p = 0.0, repetition_penalty = 1.0,
                        repetition_window = 64, seed = 0))]
    #[allow(clippy::too_many_arguments)]
    fn session(&self, py: Python<'_>, temperature: f32, top_k: usize, top_p: f32, min_p: f32, repetition_penalty: f32, repetition_window: usize, seed: u64) -> PyResult<PyDecodeSession> {
        let sampler = Sampler::new(sampling(temperature, top_k, top_p, min_p, repetition_penalty, repetition_window, seed)).py()?;
        let model = self.inner.clone();
        let decode = py.detach(|| guarded(|| model.start())).py()?;
        Ok(PyDecodeSession { model: self.inner.clone(), state: Mutex::new(Session { decode, sampler, history: Vec::new() }) })
    }

    /// Bytes the weights hold (packed versions and any float32 masters).
    #[getter]
    fn memory_bytes(&self) -> usize {
        self.inner.network.memory_bytes()
    }

    /// "cpu" or "gpu": where sequences run.
    #[getter]
    fn device(&self) -> &'static str {
        if self.inner.gpu.is_some() { "gpu" } else { "cpu" }
    }

    /// VRAM the resident weights hold (0 on the CPU).
    #[getter]
    fn gpu_weight_bytes(&self) -> u64 {
        self.inner.gpu.as_ref().map_or(0, |g| g.weight_bytes())
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
        let sampling = sampling(temperature, top_k, top_p, min_p, repetition_penalty, repetition_window, seed);
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
