//! NumPy ⇄ core: float32 C-contiguous inputs are borrowed in place; anything else (float64,
//! lists, strided or Fortran-ordered views) is converted once with numpy.ascontiguousarray.
//! Outputs are moved into NumPy arrays without copying.

use crate::error::{Error, Result};
use crate::kernels::Schedule;
use crate::layers::Device;
use numpy::{PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// `obj` itself when it is a float32 C-contiguous array (no copy), else a converted copy.
pub fn contiguous_f32<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<PyReadonlyArrayDyn<'py, f32>> {
    if let Ok(array) = obj.cast::<PyArrayDyn<f32>>() {
        if array.is_c_contiguous() {
            return Ok(array.readonly());
        }
    }
    let py = obj.py();
    let kwargs = PyDict::new(py);
    kwargs.set_item("dtype", "float32")?;
    let converted = py
        .import("numpy")?
        .call_method("ascontiguousarray", (obj,), Some(&kwargs))
        .map_err(|e| super::errors::to_py(Error::Value(format!("{what} cannot be converted to a float32 array: {e}"))))?;
    Ok(converted.cast_into::<PyArrayDyn<f32>>().map_err(PyErr::from)?.readonly())
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

/// A borrowed batch: data, batch size (the first axis; 1-D means one sample) and sample shape.
pub fn batch<'a>(array: &'a PyReadonlyArrayDyn<'_, f32>, what: &str) -> Result<(&'a [f32], usize, Vec<usize>)> {
    let shape = array.shape().to_vec();
    let data = match array.as_slice() {
        Ok(data) if array.is_c_contiguous() => data,
        _ => return Err(Error::Shape(format!("{what} must be a C-contiguous float32 array"))),
    };
    let (batch, sample) = match shape.split_first() {
        None => return Err(Error::Shape(format!("{what} must have at least one axis, got a scalar"))),
        Some((&n, [])) => (1, vec![n]),
        Some((&b, rest)) => (b, rest.to_vec()),
    };
    if batch == 0 || data.is_empty() {
        return Err(Error::Value(format!("{what} is empty (shape {shape:?})")));
    }
    Ok((data, batch, sample))
}

/// What every forward call takes: the borrowed, finite-checked batch, schedule and device.
pub struct ForwardArgs<'a> {
    pub data: &'a [f32],
    pub batch: usize,
    pub shape: Vec<usize>,
    pub schedule: Schedule,
    pub device: Device,
}

pub fn forward_args<'a>(x: &'a PyReadonlyArrayDyn<'_, f32>, mode: &str, device: &str) -> Result<ForwardArgs<'a>> {
    let schedule = Schedule::parse(mode)?;
    let device = Device::parse(device)?;
    let (data, batch, shape) = batch(x, "input")?;
    check_finite(data, shape.iter().product(), "input")?;
    Ok(ForwardArgs { data, batch, shape, schedule, device })
}

/// `[batch] + sample shape`, the shape of a batch going back to NumPy.
pub fn batched(batch: usize, sample: &[usize]) -> Vec<usize> {
    [&[batch][..], sample].concat()
}

/// Move a Vec into a NumPy array of the given shape (no copy).
pub fn to_numpy<'py>(py: Python<'py>, data: Vec<f32>, shape: &[usize]) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    PyArray1::from_vec(py, data).reshape(shape.to_vec())
}

/// The address the native side reads for this array (proof of zero-copy input in the tests).
#[pyfunction]
pub fn borrowed_data_ptr(array: &Bound<'_, PyAny>) -> PyResult<usize> {
    let array = contiguous_f32(array, "array")?;
    let (data, _, _) = batch(&array, "array").map_err(super::errors::to_py)?;
    Ok(data.as_ptr() as usize)
}
