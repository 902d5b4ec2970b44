//! The one error type of the core. Every fallible core function returns `Result<T>`; the Python
//! bindings map each variant to one named exception (src/python/errors.rs).

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// An array or tensor has the wrong shape (names what was expected and what came).
    #[error("{0}")]
    Shape(String),
    /// A network spec (JSON or builder arguments) is invalid; names the field and coordinate.
    #[error("{0}")]
    Spec(String),
    /// Unknown dtype name or an operation not defined for a dtype.
    #[error("{0}")]
    DType(String),
    /// A value is out of its domain (NaN input, negative epoch count, empty batch...).
    #[error("{0}")]
    Value(String),
    /// No usable GPU adapter, or the device was lost.
    #[error("{0}")]
    GpuUnavailable(String),
    /// A GPU operation failed after the device was obtained.
    #[error("{0}")]
    Gpu(String),
    /// A model cannot be loaded: a missing, truncated or malformed file, an unknown
    /// architecture, a missing or mis-shaped tensor (names the path, field, tensor or offset).
    #[error("{0}")]
    ModelLoad(String),
    /// A file cannot be written (names the path; an existing file is left as it was).
    #[error("{0}")]
    Io(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for the shape checks of the GPU entry points.
pub fn shape_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Shape(msg.into()))
}
