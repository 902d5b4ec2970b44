//! DNA for Python: a network's signatures (DNA, LayerSignature), their comparison
//! (DNAComparison, LogicShift) and splicing two networks (splice, SpliceReport).

use super::arrays::to_numpy;
use super::errors::{guarded, IntoPyResult};
use super::network::PyNetwork;
use crate::coord::Coord;
use crate::dna::{self, Comparison, LayerSignature, LogicShift};
use crate::evolve::{splice as core_splice, Crossover, SpliceConfig, SpliceReport};
use numpy::PyArrayDyn;
use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;

type CoordTuple = (usize, usize, usize, usize);

fn tuple(c: Coord) -> CoordTuple {
    (c.z, c.y, c.x, c.l)
}

/// {(z, y, x, l): value} in the given order.
fn coord_dict<'py>(py: Python<'py>, pairs: &[(Coord, f64)]) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (c, v) in pairs {
        d.set_item(tuple(*c), v)?;
    }
    Ok(d)
}

/// One slot's signature: coordinate, type, dtype and unit-length weight vector.
#[pyclass(name = "LayerSignature", module = "polyvtd", frozen)]
pub struct PyLayerSignature {
    sig: LayerSignature,
}

#[pymethods]
impl PyLayerSignature {
    #[getter]
    fn coord(&self) -> CoordTuple {
        tuple(self.sig.coord)
    }
    #[getter]
    fn z(&self) -> usize {
        self.sig.coord.z
    }
    #[getter]
    fn y(&self) -> usize {
        self.sig.coord.y
    }
    #[getter]
    fn x(&self) -> usize {
        self.sig.coord.x
    }
    #[getter]
    fn l(&self) -> usize {
        self.sig.coord.l
    }
    #[getter(r#type)]
    fn layer_type(&self) -> &str {
        &self.sig.layer_type
    }
    #[getter]
    fn dtype(&self) -> &'static str {
        self.sig.dtype.name()
    }
    /// The unit-L2 weight vector (a float32 copy).
    #[getter]
    fn weights<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        to_numpy(py, self.sig.weights.clone(), &[self.sig.weights.len()])
    }
    fn __repr__(&self) -> String {
        format!("LayerSignature({} {} {}, {} values)", self.sig.coord, self.sig.layer_type, self.sig.dtype.name(), self.sig.weights.len())
    }
}

/// A network's DNA: one signature per occupied slot, in traversal order (a sequence).
#[pyclass(name = "DNA", module = "polyvtd", frozen, sequence)]
pub struct PyDna {
    pub sigs: Arc<Vec<LayerSignature>>,
}

impl PyDna {
    pub fn of(py: Python<'_>, net: &PyNetwork) -> PyResult<PyDna> {
        let net = net.inner.read().unwrap();
        let sigs = py.detach(|| guarded(|| dna::extract(&net))).py()?;
        Ok(PyDna { sigs: Arc::new(sigs) })
    }
}

#[pymethods]
impl PyDna {
    fn __len__(&self) -> usize {
        self.sigs.len()
    }
    fn __getitem__(&self, index: isize) -> PyResult<PyLayerSignature> {
        let n = self.sigs.len() as isize;
        let i = if index < 0 { index + n } else { index };
        if !(0..n).contains(&i) {
            return Err(PyIndexError::new_err(format!("DNA index {index} out of range for {n} signatures")));
        }
        Ok(PyLayerSignature { sig: self.sigs[i as usize].clone() })
    }
    #[getter]
    fn signatures(&self) -> Vec<PyLayerSignature> {
        self.sigs.iter().map(|s| PyLayerSignature { sig: s.clone() }).collect()
    }
    /// The overlap with another DNA (same as compare_dna(self, other)).
    fn compare(&self, py: Python<'_>, other: &PyDna) -> PyDnaComparison {
        compare_dna(py, self, other)
    }
    fn __repr__(&self) -> String {
        format!("DNA({} signatures)", self.sigs.len())
    }
}

/// A slot of the first network whose weights best match another coordinate of the second.
#[pyclass(name = "LogicShift", module = "polyvtd", frozen, get_all)]
pub struct PyLogicShift {
    pub source: CoordTuple,
    pub target: CoordTuple,
    pub overlap: f64,
}

#[pymethods]
impl PyLogicShift {
    fn __repr__(&self) -> String {
        format!("LogicShift({:?} -> {:?}, overlap={:.4})", self.source, self.target, self.overlap)
    }
}

#[pyclass(name = "DNAComparison", module = "polyvtd", frozen)]
pub struct PyDnaComparison {
    result: Comparison,
}

#[pymethods]
impl PyDnaComparison {
    /// Mean overlap over the coordinates both networks occupy.
    #[getter]
    fn overall_overlap(&self) -> f64 {
        self.result.overall
    }
    /// {(z, y, x, l): cosine overlap} for every coordinate both networks occupy.
    #[getter]
    fn layer_overlaps<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        coord_dict(py, &self.result.layer_overlaps)
    }
    #[getter]
    fn logic_shifts(&self) -> Vec<PyLogicShift> {
        let shift = |s: &LogicShift| PyLogicShift { source: tuple(s.source), target: tuple(s.target), overlap: s.overlap };
        self.result.logic_shifts.iter().map(shift).collect()
    }
    fn __repr__(&self) -> String {
        format!(
            "DNAComparison(overall_overlap={:.4}, {} layers, {} logic shifts)",
            self.result.overall,
            self.result.layer_overlaps.len(),
            self.result.logic_shifts.len()
        )
    }
}

#[pyfunction]
pub fn compare_dna(py: Python<'_>, a: &PyDna, b: &PyDna) -> PyDnaComparison {
    let (a, b) = (a.sigs.clone(), b.sigs.clone());
    PyDnaComparison { result: py.detach(|| dna::compare(&a, &b)) }
}

#[pyclass(name = "SpliceReport", module = "polyvtd", frozen)]
pub struct PySpliceReport {
    report: SpliceReport,
}

#[pymethods]
impl PySpliceReport {
    /// {(z, y, x, l): overlap of the parents' signatures} for every coordinate both occupy.
    #[getter]
    fn similarities<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        coord_dict(py, &self.report.similarities)
    }
    /// How many of those coordinates overlap positively (the reference's BlendedCount).
    #[getter]
    fn blended_count(&self) -> usize {
        self.report.blended_count
    }
    /// The coordinates whose weights were crossed (same type and tensor shapes in both).
    #[getter]
    fn spliced(&self) -> Vec<CoordTuple> {
        self.report.spliced.iter().map(|&c| tuple(c)).collect()
    }
    fn __repr__(&self) -> String {
        format!("SpliceReport({} spliced, blended_count={})", self.report.spliced.len(), self.report.blended_count)
    }
}

/// A child shaped like `a` whose weights cross `a`'s with `b`'s (see polyvtd.splice).
#[pyfunction]
#[pyo3(signature = (a, b, mode = "blend", blend_alpha = 0.5, split_ratio = 0.5, fitness_a = 0.0, fitness_b = 0.0, seed = 0))]
#[allow(clippy::too_many_arguments)]
pub fn splice(
    py: Python<'_>,
    a: &PyNetwork,
    b: &PyNetwork,
    mode: &str,
    blend_alpha: f64,
    split_ratio: f64,
    fitness_a: f64,
    fitness_b: f64,
    seed: u64,
) -> PyResult<(PyNetwork, PySpliceReport)> {
    let cfg = SpliceConfig { mode: Crossover::parse(mode).py()?, blend_alpha, split_ratio, fitness_a, fitness_b, seed };
    let (na, nb) = (a.inner.read().unwrap(), b.inner.read().unwrap());
    let (child, report) = py.detach(|| guarded(|| core_splice(&na, &nb, &cfg))).py()?;
    Ok((PyNetwork::wrap(child), PySpliceReport { report }))
}
