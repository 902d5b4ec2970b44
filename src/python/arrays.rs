//! NumPy ⇄ core: inputs are borrowed (float32, C-contiguous: the Python layer converts anything
//! else first), outputs are moved into NumPy arrays without copying.

use crate::error::{Error, Result};
use numpy::{PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;

/// A borrowed [rows, width] view of a float32 C-contiguous array (1-D means one row).
pub fn rows<'a>(array: &'a PyReadonlyArrayDyn<'_, f32>, what: &str) -> Result<(&'a [f32], usize, usize)> {
    let shape = array.shape().to_vec();
    let data = array.as_slice().map_err(|_| {
        Error::Shape(format!("{what} must be a C-contiguous float32 array (convert with np.ascontiguousarray)"))
    })?;
    let (batch, width) = match shape.as_slice() {
        [w] => (1, *w),
        [b, w] => (*b, *w),
        _ => return Err(Error::Shape(format!("{what} must be 1-D [features] or 2-D [batch, features], got shape {shape:?}"))),
    };
    if batch == 0 {
        return Err(Error::Value(format!("{what} is an empty batch (shape {shape:?})")));
    }
    Ok((data, batch, width))
}

/// Reject NaN/±Inf, naming the first bad element.
pub fn check_finite(data: &[f32], width: usize, what: &str) -> Result<()> {
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::Value(format!(
            "{what} contains {} at row {}, column {}",
            data[i],
            i / width.max(1),
            i % width.max(1)
        )));
    }
    Ok(())
}

/// Move a Vec into a NumPy array of the given shape (no copy).
pub fn to_numpy<'py>(py: Python<'py>, data: Vec<f32>, shape: &[usize]) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    PyArray1::from_vec(py, data).reshape(shape.to_vec())
}

/// The address the native side reads for this array (proof of zero-copy input in the tests).
#[pyfunction]
pub fn borrowed_data_ptr(array: PyReadonlyArrayDyn<'_, f32>) -> PyResult<usize> {
    let (data, _, _) = rows(&array, "array").map_err(super::errors::to_py)?;
    Ok(data.as_ptr() as usize)
}
