//! Tokenizer, StreamDecoder and ChatTemplate for Python: thin wrappers over src/llm/tokenizer.rs
//! and src/llm/template.rs that release the GIL around encoding and decoding.

use super::errors::{guarded, IntoPyResult};
use crate::error::{Error, Result};
use crate::llm::template::ChatTemplate;
use crate::llm::tokenizer::{GgufVocab, StreamDecoder, Tokenizer};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[pyclass(name = "Tokenizer", module = "polyvtd", frozen)]
pub struct PyTokenizer {
    inner: Arc<Tokenizer>,
}

/// Python ints → token ids, naming the first that is not one.
fn token_ids(ids: &[i64]) -> Result<Vec<u32>> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| u32::try_from(id).map_err(|_| Error::Value(format!("ids[{i}] = {id} is not a token id"))))
        .collect()
}

#[pymethods]
impl PyTokenizer {
    /// A tokenizer.json (same ids as the `tokenizers` package).
    #[staticmethod]
    fn from_file(path: PathBuf) -> PyResult<Self> {
        Ok(PyTokenizer { inner: Arc::new(Tokenizer::from_file(path).py()?) })
    }

    /// A HF model directory: tokenizer.json + tokenizer_config.json + generation_config.json.
    #[staticmethod]
    fn from_dir(path: PathBuf) -> PyResult<Self> {
        Ok(PyTokenizer { inner: Arc::new(Tokenizer::from_dir(path).py()?) })
    }

    /// The tokenizer (and chat template) stored in a GGUF file's metadata.
    #[staticmethod]
    fn from_gguf(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let tokenizer = py.detach(|| guarded(|| Tokenizer::from_gguf(&crate::io::gguf::GgufFile::open(&path)?))).py()?;
        Ok(PyTokenizer { inner: Arc::new(tokenizer) })
    }

    /// A BPE rebuilt from a GGUF-style vocabulary ("gpt2" byte-level or "llama" SentencePiece).
    #[staticmethod]
    #[pyo3(signature = (tokens, merges, token_types = None, model = "gpt2", pre = None, bos_id = None, eos_id = None, unk_id = None, add_bos = false))]
    #[allow(clippy::too_many_arguments)]
    fn from_vocab(
        tokens: Vec<String>,
        merges: Vec<String>,
        token_types: Option<Vec<i32>>,
        model: &str,
        pre: Option<String>,
        bos_id: Option<u32>,
        eos_id: Option<u32>,
        unk_id: Option<u32>,
        add_bos: bool,
    ) -> PyResult<Self> {
        let vocab = GgufVocab { model: model.to_string(), pre, tokens, token_types: token_types.unwrap_or_default(), merges, bos_id, eos_id, unk_id, add_bos };
        Ok(PyTokenizer { inner: Arc::new(Tokenizer::from_vocab(&vocab).py()?) })
    }

    #[pyo3(signature = (text, add_special_tokens = true))]
    fn encode(&self, py: Python<'_>, text: String, add_special_tokens: bool) -> PyResult<Vec<u32>> {
        py.detach(|| guarded(|| self.inner.encode(&text, add_special_tokens))).py()
    }

    #[pyo3(signature = (ids, skip_special_tokens = false))]
    fn decode(&self, py: Python<'_>, ids: Vec<i64>, skip_special_tokens: bool) -> PyResult<String> {
        let ids = token_ids(&ids).py()?;
        py.detach(|| guarded(|| self.inner.decode(&ids, skip_special_tokens))).py()
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// A decoder fed one id at a time that returns text only once characters are complete.
    #[pyo3(signature = (skip_special_tokens = false))]
    fn stream_decoder(&self, skip_special_tokens: bool) -> PyStreamDecoder {
        PyStreamDecoder { inner: Mutex::new(StreamDecoder::new(self.inner.clone(), skip_special_tokens)) }
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    #[getter]
    fn bos_id(&self) -> Option<u32> {
        self.inner.bos_id()
    }
    #[getter]
    fn eos_id(&self) -> Option<u32> {
        self.inner.eos_id()
    }
    /// Every id that ends generation.
    #[getter]
    fn eos_ids(&self) -> Vec<u32> {
        self.inner.eos_ids().to_vec()
    }
    #[getter]
    fn bos_token(&self) -> Option<String> {
        self.inner.bos_token()
    }
    #[getter]
    fn eos_token(&self) -> Option<String> {
        self.inner.eos_token()
    }
    /// The model's own Jinja chat template, if its files carry one.
    #[getter]
    fn chat_template(&self) -> Option<String> {
        self.inner.chat_template().map(str::to_string)
    }

    fn __repr__(&self) -> String {
        format!("Tokenizer(vocab_size={}, bos_id={:?}, eos_id={:?})", self.inner.vocab_size(), self.inner.bos_id(), self.inner.eos_id())
    }
}

#[pyclass(name = "StreamDecoder", module = "polyvtd", frozen)]
pub struct PyStreamDecoder {
    inner: Mutex<StreamDecoder>,
}

#[pymethods]
impl PyStreamDecoder {
    /// The text this id completes ("" while a character is still partial).
    fn step(&self, id: i64) -> PyResult<String> {
        let id = token_ids(&[id]).py()?[0];
        guarded(|| self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).step(id)).py()
    }

    /// What is still held back at the end (an unfinished character, as U+FFFD); the decoder
    /// starts afresh afterwards.
    fn flush(&self) -> PyResult<String> {
        guarded(|| self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).flush()).py()
    }
}

#[pyclass(name = "ChatTemplate", module = "polyvtd", frozen)]
pub struct PyChatTemplate {
    inner: ChatTemplate,
}

/// [{"role": ..., "content": ...}, ...] → (role, content) pairs, naming the first bad message.
fn turns(messages: &[Bound<'_, PyDict>]) -> PyResult<Vec<(String, String)>> {
    let field = |i: usize, m: &Bound<'_, PyDict>, key: &str| -> PyResult<String> {
        match m.get_item(key)? {
            Some(value) => value.extract::<String>().map_err(|_| super::errors::to_py(Error::Value(format!("messages[{i}]['{key}'] is not a str")))),
            None => Err(super::errors::to_py(Error::Value(format!("messages[{i}] has no '{key}'")))),
        }
    };
    messages.iter().enumerate().map(|(i, m)| Ok((field(i, m, "role")?, field(i, m, "content")?))).collect()
}

#[pymethods]
impl PyChatTemplate {
    /// Compile a Jinja chat template (a syntax error raises SpecError).
    #[new]
    fn new(source: &str) -> PyResult<Self> {
        Ok(PyChatTemplate { inner: ChatTemplate::new(source).py()? })
    }

    #[staticmethod]
    fn chatml() -> Self {
        PyChatTemplate { inner: ChatTemplate::chatml() }
    }

    #[staticmethod]
    fn llama3() -> Self {
        PyChatTemplate { inner: ChatTemplate::llama3() }
    }

    /// The tokenizer's own template, else the Llama-3 or ChatML fallback that fits its vocabulary.
    #[staticmethod]
    fn for_tokenizer(tokenizer: &PyTokenizer) -> PyResult<Self> {
        Ok(PyChatTemplate { inner: ChatTemplate::for_tokenizer(&tokenizer.inner).py()? })
    }

    #[pyo3(signature = (messages, add_generation_prompt = true, bos_token = "", eos_token = ""))]
    fn render(&self, messages: Vec<Bound<'_, PyDict>>, add_generation_prompt: bool, bos_token: &str, eos_token: &str) -> PyResult<String> {
        let turns = turns(&messages)?;
        guarded(|| self.inner.render(&turns, add_generation_prompt, bos_token, eos_token)).py()
    }

    #[getter]
    fn source(&self) -> String {
        self.inner.source().to_string()
    }
}
