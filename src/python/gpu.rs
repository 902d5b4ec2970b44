//! The GPU device for Python: availability, adapters and the choice of one, info, the GPU memory
//! polyvtd holds, and the lost-device test hook.

use super::errors::IntoPyResult;
use crate::gpu::GpuInfo;
use pyo3::prelude::*;
use pyo3::types::PyDict;

#[pyfunction]
pub fn gpu_available(py: Python<'_>) -> bool {
    py.detach(crate::gpu::gpu_available)
}

#[pyfunction]
pub fn gpu_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let info = py.detach(crate::gpu::gpu_info).py()?;
    info_dict(py, info)
}

/// Every adapter wgpu sees: [{"name", "backend", "device_type", "driver"}, ...].
#[pyfunction]
pub fn gpu_adapters(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
    py.detach(crate::gpu::gpu_adapters)
        .into_iter()
        .map(|adapter| {
            let d = PyDict::new(py);
            d.set_item("name", adapter.name)?;
            d.set_item("backend", adapter.backend)?;
            d.set_item("device_type", adapter.device_type)?;
            d.set_item("driver", adapter.driver)?;
            Ok(d)
        })
        .collect()
}

/// Creates the GPU context on the adapter whose name contains `adapter` (case-insensitive) and
/// returns gpu_info(); after the context exists, only its own adapter may be named.
#[pyfunction]
#[pyo3(signature = (adapter = None))]
pub fn use_gpu<'py>(py: Python<'py>, adapter: Option<&str>) -> PyResult<Bound<'py, PyDict>> {
    let info = py.detach(|| crate::gpu::use_gpu(adapter)).py()?;
    info_dict(py, info)
}

/// Bytes of the GPU buffers polyvtd holds: weights_bytes, weights_tensors, other_bytes,
/// total_bytes.
#[pyfunction]
pub fn gpu_memory(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let memory = py.detach(crate::gpu::gpu_memory);
    let d = PyDict::new(py);
    d.set_item("weights_bytes", memory.weights_bytes)?;
    d.set_item("weights_tensors", memory.weights_tensors)?;
    d.set_item("other_bytes", memory.other_bytes)?;
    d.set_item("total_bytes", memory.total_bytes)?;
    Ok(d)
}

/// Test hook: destroys the GPU device (as a driver reset would); every later GPU call in this
/// process raises GpuUnavailableError.
#[pyfunction]
pub fn _gpu_destroy_device_for_tests(py: Python<'_>) -> PyResult<()> {
    py.detach(crate::gpu::destroy_device_for_tests).py()
}

fn info_dict(py: Python<'_>, info: GpuInfo) -> PyResult<Bound<'_, PyDict>> {
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
