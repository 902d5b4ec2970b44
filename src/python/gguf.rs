//! gguf_info(path) for Python: a GGUF file's metadata (as Python values) and tensor directory.

use super::errors::{guarded, IntoPyResult};
use crate::io::gguf::{GgufFile, GgufValue};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use pyo3::IntoPyObjectExt;

fn to_python(py: Python<'_>, value: &GgufValue) -> PyResult<Py<PyAny>> {
    match value {
        GgufValue::U8(v) => v.into_py_any(py),
        GgufValue::I8(v) => v.into_py_any(py),
        GgufValue::U16(v) => v.into_py_any(py),
        GgufValue::I16(v) => v.into_py_any(py),
        GgufValue::U32(v) => v.into_py_any(py),
        GgufValue::I32(v) => v.into_py_any(py),
        GgufValue::U64(v) => v.into_py_any(py),
        GgufValue::I64(v) => v.into_py_any(py),
        GgufValue::F32(v) => v.into_py_any(py),
        GgufValue::F64(v) => v.into_py_any(py),
        GgufValue::Bool(v) => v.into_py_any(py),
        GgufValue::String(v) => v.into_py_any(py),
        GgufValue::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_python(py, item)?)?;
            }
            list.into_py_any(py)
        }
    }
}

/// {"version", "alignment", "metadata": {key: value}, "tensors": [(name, shape, type, nbytes)]};
/// shapes are row-major (GGUF's dims reversed), types GGML's names ("Q4_1"). `keys` limits the
/// metadata to those keys (a vocabulary as Python strings takes tens of MB).
#[pyfunction]
#[pyo3(signature = (path, keys = None))]
pub fn gguf_info(py: Python<'_>, path: std::path::PathBuf, keys: Option<Vec<String>>) -> PyResult<Bound<'_, PyDict>> {
    let file = py.detach(|| guarded(|| GgufFile::open(&path))).py()?;
    let info = PyDict::new(py);
    info.set_item("version", file.version())?;
    info.set_item("alignment", file.alignment())?;
    let metadata = PyDict::new(py);
    for (key, value) in file.metadata_all() {
        if keys.as_ref().is_none_or(|wanted| wanted.contains(key)) {
            metadata.set_item(key, to_python(py, value)?)?;
        }
    }
    info.set_item("metadata", metadata)?;
    let tensors = PyList::empty(py);
    for t in file.tensors() {
        tensors.append((t.name.as_str(), t.shape(), t.ggml_type.name(), t.nbytes))?;
    }
    info.set_item("tensors", tensors)?;
    Ok(info)
}
