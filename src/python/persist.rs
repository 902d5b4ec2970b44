//! Checkpoints for Python: the persistence JSON (text or file) and safetensors files of a
//! Network (polyvtd/network.py wraps these as methods and `polyvtd.load`).

use super::errors::{guarded, IntoPyResult};
use super::network::PyNetwork;
use crate::network::{persist, safetensors};
use pyo3::prelude::*;
use std::path::PathBuf;

/// The persistence JSON of `net` (masters: keep the FP32 masters of quantised tensors).
#[pyfunction]
#[pyo3(signature = (net, masters = false))]
fn network_to_persistence_json(py: Python<'_>, net: &PyNetwork, masters: bool) -> PyResult<String> {
    let net = net.inner.read().unwrap();
    py.detach(|| guarded(|| persist::to_text(&net, masters))).py()
}

#[pyfunction]
fn network_from_persistence_json(py: Python<'_>, text: &str) -> PyResult<PyNetwork> {
    let net = py.detach(|| guarded(|| persist::from_text(text, "persistence JSON"))).py()?;
    Ok(PyNetwork::wrap(net))
}

/// Write the persistence JSON to `path` atomically.
#[pyfunction]
#[pyo3(signature = (net, path, masters = false))]
fn save_network(py: Python<'_>, net: &PyNetwork, path: PathBuf, masters: bool) -> PyResult<()> {
    let net = net.inner.read().unwrap();
    py.detach(|| guarded(|| persist::save(&net, &path, masters))).py()
}

#[pyfunction]
fn load_network(py: Python<'_>, path: PathBuf) -> PyResult<PyNetwork> {
    let net = py.detach(|| guarded(|| persist::load(&path))).py()?;
    Ok(PyNetwork::wrap(net))
}

/// Write the grid's weights to a safetensors file atomically.
#[pyfunction]
#[pyo3(signature = (net, path, packed = true, masters = false))]
fn save_safetensors(py: Python<'_>, net: &PyNetwork, path: PathBuf, packed: bool, masters: bool) -> PyResult<()> {
    let net = net.inner.read().unwrap();
    py.detach(|| guarded(|| safetensors::save(&net, &path, packed, masters))).py()
}

/// Load weights from a safetensors file into `net` (all or nothing); returns the names loaded.
#[pyfunction]
#[pyo3(signature = (net, path, strict = true))]
fn load_safetensors(py: Python<'_>, net: &PyNetwork, path: PathBuf, strict: bool) -> PyResult<Vec<String>> {
    let net = net.inner.read().unwrap();
    py.detach(|| guarded(|| safetensors::load(&net, &path, strict))).py()
}

/// The safetensors names of the grid's weights, in traversal order.
#[pyfunction]
fn safetensors_names(net: &PyNetwork) -> Vec<String> {
    safetensors::named_params(&net.inner.read().unwrap()).into_iter().map(|(name, _)| name).collect()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(network_to_persistence_json, m)?)?;
    m.add_function(wrap_pyfunction!(network_from_persistence_json, m)?)?;
    m.add_function(wrap_pyfunction!(save_network, m)?)?;
    m.add_function(wrap_pyfunction!(load_network, m)?)?;
    m.add_function(wrap_pyfunction!(save_safetensors, m)?)?;
    m.add_function(wrap_pyfunction!(load_safetensors, m)?)?;
    m.add_function(wrap_pyfunction!(safetensors_names, m)?)?;
    Ok(())
}
