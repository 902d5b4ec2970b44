//! NEAT for Python: neat_mutate and the Population the Python NEATPopulation drives (the
//! Python side calls the fitness function; ranking and breeding run here without the GIL).

use super::errors::{guarded, to_py, IntoPyResult};
use super::network::PyNetwork;
use crate::error::Error;
use crate::evolve::{mutate, GenerationStats, NeatConfig, Population};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Mutex;

/// A NEAT config from its JSON object text (fields checked by the core).
fn config(text: &str) -> PyResult<NeatConfig> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| to_py(Error::Value(format!("NEAT config is not valid JSON: {e}"))))?;
    NeatConfig::from_value(&value).py()
}

fn stats_dict<'py>(py: Python<'py>, s: &GenerationStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("generation", s.generation)?;
    d.set_item("best", s.best)?;
    d.set_item("mean", s.mean)?;
    d.set_item("worst", s.worst)?;
    d.set_item("nan_count", s.nan_count)?;
    d.set_item("size", s.size)?;
    Ok(d)
}

/// A mutated copy of `net` (NEATMutate); `config_json` is a NEAT config object.
#[pyfunction]
pub fn neat_mutate(py: Python<'_>, net: &PyNetwork, config_json: &str) -> PyResult<PyNetwork> {
    let cfg = config(config_json)?;
    let net = net.inner.read().unwrap();
    let child = py.detach(|| guarded(|| mutate(&net, &cfg))).py()?;
    Ok(PyNetwork::wrap(child))
}

#[pyclass(name = "Population", module = "polyvtd._core", frozen)]
pub struct PyPopulation {
    inner: Mutex<Population>,
}

#[pymethods]
impl PyPopulation {
    #[new]
    fn new(py: Python<'_>, seed: &PyNetwork, size: usize, config_json: &str) -> PyResult<Self> {
        let cfg = config(config_json)?;
        let net = seed.inner.read().unwrap();
        let population = py.detach(|| guarded(|| Population::new(&net, size, cfg))).py()?;
        Ok(PyPopulation { inner: Mutex::new(population) })
    }

    /// Handles on the members (their layers are the population's own), best first once ranked.
    fn networks(&self) -> Vec<PyNetwork> {
        self.inner.lock().unwrap().members.iter().map(|n| PyNetwork::wrap(n.clone())).collect()
    }

    #[getter]
    fn fitnesses(&self) -> Vec<Option<f64>> {
        self.inner.lock().unwrap().fitness.clone()
    }

    #[getter]
    fn best_fitness(&self) -> Option<f64> {
        self.inner.lock().unwrap().best_fitness()
    }

    fn best(&self) -> PyNetwork {
        PyNetwork::wrap(self.inner.lock().unwrap().best().clone())
    }

    #[getter]
    fn generation(&self) -> usize {
        self.inner.lock().unwrap().generation
    }

    #[getter]
    fn size(&self) -> usize {
        self.inner.lock().unwrap().members.len()
    }

    #[getter]
    fn history<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.inner.lock().unwrap().history.iter().map(|s| stats_dict(py, s)).collect()
    }

    /// Rank by `scores` (one per member, in `networks()` order) and breed the next generation.
    /// `networks` are the handles the scores were computed on: what the fitness function did
    /// to them (training, morphing, new layers) is kept.
    fn advance<'py>(&self, py: Python<'py>, scores: Vec<f64>, networks: Vec<PyRef<'py, PyNetwork>>) -> PyResult<Bound<'py, PyDict>> {
        let mut population = self.inner.lock().unwrap();
        if networks.len() != population.members.len() {
            return Err(to_py(Error::Shape(format!("got {} networks for a population of {}", networks.len(), population.members.len()))));
        }
        let evaluated: Vec<_> = networks.iter().map(|n| n.inner.read().unwrap().clone()).collect();
        let population = &mut *population;
        let stats = py
            .detach(|| {
                guarded(|| {
                    let before = std::mem::replace(&mut population.members, evaluated);
                    population.advance(&scores).inspect_err(|_| population.members = before)
                })
            })
            .py()?;
        stats_dict(py, &stats)
    }

    /// The reference's summary line of the last generation ("Gen g | best=… avg=… worst=… pop=n").
    fn summary(&self) -> String {
        let population = self.inner.lock().unwrap();
        match population.history.last() {
            Some(s) => s.summary(),
            None => format!("Gen 0 | not evaluated yet | pop={}", population.members.len()),
        }
    }
}
