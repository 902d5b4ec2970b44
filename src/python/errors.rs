//! Core `Error` → the named Python exception (classes live in polyvtd/errors.py so they can
//! derive from both PolyError and the matching builtin). Panics are caught at the boundary.

use crate::error::Error;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyType;

fn class_name(err: &Error) -> &'static str {
    match err {
        Error::Shape(_) => "ShapeError",
        Error::Spec(_) => "SpecError",
        Error::DType(_) => "DTypeError",
        Error::Value(_) => "InputError",
        Error::GpuUnavailable(_) => "GpuUnavailableError",
        Error::Gpu(_) => "GpuError",
        Error::ModelLoad(_) => "ModelLoadError",
        Error::Io(_) => "SaveError",
    }
}

pub fn to_py(err: Error) -> PyErr {
    Python::attach(|py| {
        let class = py
            .import("polyvtd.errors")
            .and_then(|m| m.getattr(class_name(&err)))
            .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
        match class {
            Ok(class) => PyErr::from_type(class, err.to_string()),
            Err(_) => PyRuntimeError::new_err(err.to_string()),
        }
    })
}

pub trait IntoPyResult<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for crate::error::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// Run core code on a rayon worker, with a panic guard: a bug surfaces as a PolyError, never as
/// an abort. On a worker, the parallel loops inside split their work by stealing; called from
/// the Python thread instead, every loop would wake the pool and block on it (hundreds of times
/// per LLM token), and the Python thread would compete with the workers for the cores.
pub fn guarded<T: Send>(f: impl FnOnce() -> crate::error::Result<T> + Send) -> crate::error::Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rayon::scope(|_| f()))) {
        Ok(result) => result,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Value(format!("internal error (please report): {msg}")))
        }
    }
}
