//! gpu_available() and gpu_info() for Python.

use super::errors::IntoPyResult;
use pyo3::prelude::*;
use pyo3::types::PyDict;

#[pyfunction]
pub fn gpu_available(py: Python<'_>) -> bool {
    py.detach(crate::gpu::gpu_available)
}

#[pyfunction]
pub fn gpu_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let info = py.detach(crate::gpu::gpu_info).py()?;
    let d = PyDict::new(py);
    d.set_item("name", info.name)?;
    d.set_item("backend", info.backend)?;
    d.set_item("device_type", info.device_type)?;
    d.set_item("driver", info.driver)?;
    let limits = PyDict::new(py);
    limits.set_item("max_compute_workgroup_size_x", info.max_compute_workgroup_size_x)?;
    limits.set_item("max_compute_invocations_per_workgroup", info.max_compute_invocations_per_workgroup)?;
    limits.set_item("max_compute_workgroup_storage_size", info.max_compute_workgroup_storage_size)?;
    limits.set_item("max_storage_buffer_binding_size", info.max_storage_buffer_binding_size)?;
    limits.set_item("max_buffer_size", info.max_buffer_size)?;
    d.set_item("limits", limits)?;
    Ok(d)
}
