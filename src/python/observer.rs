//! Observers for Python: a Python callable registered on a network receives a LayerEvent
//! (mode, coordinate, layer type, shape, LayerStats, optionally the tensor) after each grid
//! layer's forward and backward. An exception in the callable stops the pass; the network's
//! binding raises it once the pass has returned (weights are untouched).

use super::arrays::{batched, to_numpy};
use super::errors::to_py;
use super::network::PyNetwork;
use crate::error::{Error, Result};
use crate::observe::{LayerEvent, Observer, Stats};
use numpy::PyArrayDyn;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::{Arc, Mutex};

/// Where a callback's exception waits for the binding that started the pass.
pub type CallbackError = Arc<Mutex<Option<PyErr>>>;

#[pyclass(name = "LayerStats", module = "polyvtd", frozen, get_all)]
pub struct PyLayerStats {
    pub avg: f64,
    pub std: f64,
    pub max: f64,
    pub min: f64,
    /// Values with |v| > 1e-6.
    pub active: usize,
    pub total: usize,
}

#[pymethods]
impl PyLayerStats {
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("avg", self.avg)?;
        d.set_item("std", self.std)?;
        d.set_item("max", self.max)?;
        d.set_item("min", self.min)?;
        d.set_item("active", self.active)?;
        d.set_item("total", self.total)?;
        Ok(d)
    }
    fn __repr__(&self) -> String {
        format!("LayerStats(avg={:.4}, std={:.4}, max={:.4}, min={:.4}, active={}/{})", self.avg, self.std, self.max, self.min, self.active, self.total)
    }
}

impl From<Stats> for PyLayerStats {
    fn from(s: Stats) -> PyLayerStats {
        PyLayerStats { avg: s.avg, std: s.std, max: s.max, min: s.min, active: s.active, total: s.total }
    }
}

#[pyclass(name = "LayerEvent", module = "polyvtd", frozen, get_all)]
pub struct PyLayerEvent {
    /// "forward" (the layer's output) or "backward" (the gradient of its output).
    pub mode: &'static str,
    pub coord: (usize, usize, usize, usize),
    pub layer_type: &'static str,
    /// [batch] + the sample shape.
    pub shape: Vec<usize>,
    pub stats: Py<PyLayerStats>,
    /// The tensor itself when the observer asked for values, else None.
    pub values: Option<Py<PyArrayDyn<f32>>>,
}

#[pymethods]
impl PyLayerEvent {
    /// The reference's event JSON layout: mode, z, y, x, l, layer_type, stats.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("mode", self.mode)?;
        let (z, y, x, l) = self.coord;
        for (k, v) in [("z", z), ("y", y), ("x", x), ("l", l)] {
            d.set_item(k, v)?;
        }
        d.set_item("layer_type", self.layer_type)?;
        d.set_item("stats", self.stats.bind(py).borrow().to_dict(py)?)?;
        Ok(d)
    }
    fn __repr__(&self, py: Python<'_>) -> String {
        format!("LayerEvent({} {:?} {} {:?}, {})", self.mode, self.coord, self.layer_type, self.shape, self.stats.bind(py).borrow().__repr__())
    }
}

struct PyHook {
    callback: Py<PyAny>,
    values: bool,
    error: CallbackError,
}

impl PyHook {
    fn event(&self, py: Python<'_>, e: &LayerEvent) -> PyResult<PyLayerEvent> {
        let shape = batched(e.batch, e.shape);
        let values = match self.values {
            true => Some(to_numpy(py, e.values.to_vec(), &shape)?.unbind()),
            false => None,
        };
        Ok(PyLayerEvent {
            mode: e.pass.name(),
            coord: (e.coord.z, e.coord.y, e.coord.x, e.coord.l),
            layer_type: e.layer_type,
            shape,
            stats: Py::new(py, PyLayerStats::from(e.stats()))?,
            values,
        })
    }
}

impl Observer for PyHook {
    fn observe(&self, e: &LayerEvent) -> Result<()> {
        Python::attach(|py| {
            let outcome = self.event(py, e).and_then(|event| self.callback.call1(py, (event,)));
            outcome.map(|_| ()).map_err(|err| {
                let msg = format!("observer callback raised during the {} pass at the layer at {} ({}): {err}", e.pass.name(), e.coord, e.layer_type);
                self.error.lock().unwrap().get_or_insert(err);
                Error::Value(msg)
            })
        })
    }
}

/// Register `callback` on `net`; returns its handle.
pub fn add(net: &PyNetwork, callback: &Bound<'_, PyAny>, values: bool) -> PyResult<u64> {
    if !callback.is_callable() {
        return Err(PyTypeError::new_err(format!("an observer must be callable, got {}", callback.get_type().name()?)));
    }
    let hook = PyHook { callback: callback.clone().unbind(), values, error: net.callback_error.clone() };
    let mut inner = net.inner.try_write().map_err(|_| busy())?;
    Ok(inner.add_observer(Arc::new(hook)))
}

pub fn remove(net: &PyNetwork, handle: u64) -> PyResult<()> {
    let mut inner = net.inner.try_write().map_err(|_| busy())?;
    if !inner.remove_observer(handle) {
        return Err(to_py(Error::Value(format!("no observer with handle {handle} on this network (handles: {:?})", inner.observers().handles()))));
    }
    Ok(())
}

fn busy() -> PyErr {
    to_py(Error::Value("cannot add or remove observers while the network is running (e.g. from inside an observer)".into()))
}
