//! TargetProp and TargetPropConfig for Python: target propagation on a VolumetricNetwork (core
//! in src/targetprop/); budgets and gaps come back as grid-shaped NumPy arrays.

use super::arrays::{batch, batched, check_finite, contiguous_f32, to_numpy};
use super::errors::{guarded, to_py, IntoPyResult};
use super::network::{PyNetwork, PyTrainingResult};
use crate::error::Error;
use crate::kernels::Schedule;
use crate::targetprop::{FieldValue, StepReport, TargetProp, TargetPropConfig};
use numpy::PyArrayDyn;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt};
use std::sync::Mutex;
use std::time::Instant;

const D: TargetPropConfig = TargetPropConfig::DEFAULT;

#[pyclass(name = "TargetPropConfig", module = "polyvtd", frozen, eq)]
#[derive(PartialEq)]
pub struct PyTargetPropConfig {
    pub inner: TargetPropConfig,
}

fn field_value(name: &str, value: &Bound<'_, PyAny>) -> PyResult<FieldValue> {
    if value.is_instance_of::<PyBool>() {
        Ok(FieldValue::Bool(value.extract()?))
    } else if value.is_instance_of::<PyInt>() {
        Ok(FieldValue::Int(value.extract()?))
    } else if value.is_instance_of::<PyFloat>() {
        Ok(FieldValue::Float(value.extract()?))
    } else {
        let kind = value.get_type().name()?;
        Err(to_py(Error::Value(format!("TargetPropConfig field {name:?} must be a bool or a number, got {kind}"))))
    }
}

/// `base` with the entries of `changes` applied (unknown names are errors naming them).
fn with_changes(mut base: TargetPropConfig, changes: &Bound<'_, PyDict>) -> PyResult<TargetPropConfig> {
    for (key, value) in changes.iter() {
        let name: String = key.extract().map_err(|_| to_py(Error::Value(format!("TargetPropConfig field names are strings, got {key}"))))?;
        base.set(&name, field_value(&name, &value)?).py()?;
    }
    base.validate().py()?;
    Ok(base)
}

#[pymethods]
impl PyTargetPropConfig {
    /// The reference's TweenConfig fields and defaults, plus the weight threshold of the target
    /// rule and the budget below which a link is gated. The defaults are literals so Python
    /// shows them; tests check they equal TargetPropConfig::DEFAULT.
    #[new]
    #[pyo3(signature = (*, batch_size = 1, use_chain_rule = true, gradient_scale = 0.1, depth_scale_factor = 1.1,
        momentum = 0.9, learning_rate = 0.01, activation_clamp = 10.0, weight_threshold = 0.01, min_budget = 0.2))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        batch_size: i64,
        use_chain_rule: bool,
        gradient_scale: f32,
        depth_scale_factor: f32,
        momentum: f32,
        learning_rate: f32,
        activation_clamp: f32,
        weight_threshold: f32,
        min_budget: f32,
    ) -> PyResult<Self> {
        if batch_size < 1 {
            return Err(to_py(Error::Value(format!("TargetPropConfig field \"batch_size\" must be an integer ≥ 1, got {batch_size}"))));
        }
        let inner = TargetPropConfig {
            batch_size: batch_size as usize,
            use_chain_rule,
            gradient_scale,
            depth_scale_factor,
            momentum,
            learning_rate,
            activation_clamp,
            weight_threshold,
            min_budget,
        };
        inner.validate().py()?;
        Ok(PyTargetPropConfig { inner })
    }

    /// A config from a dict of fields (missing ones keep their defaults).
    #[staticmethod]
    fn from_dict(fields: &Bound<'_, PyDict>) -> PyResult<Self> {
        Ok(PyTargetPropConfig { inner: with_changes(D, fields)? })
    }

    /// A copy with some fields changed.
    #[pyo3(signature = (**changes))]
    fn replace(&self, changes: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        Ok(PyTargetPropConfig { inner: match changes { Some(c) => with_changes(self.inner, c)?, None => self.inner } })
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.inner;
        let d = PyDict::new(py);
        d.set_item("batch_size", c.batch_size)?;
        d.set_item("use_chain_rule", c.use_chain_rule)?;
        for (name, value) in [
            ("gradient_scale", c.gradient_scale),
            ("depth_scale_factor", c.depth_scale_factor),
            ("momentum", c.momentum),
            ("learning_rate", c.learning_rate),
            ("activation_clamp", c.activation_clamp),
            ("weight_threshold", c.weight_threshold),
            ("min_budget", c.min_budget),
        ] {
            d.set_item(name, value)?;
        }
        Ok(d)
    }

    #[getter]
    fn batch_size(&self) -> usize {
        self.inner.batch_size
    }
    #[getter]
    fn use_chain_rule(&self) -> bool {
        self.inner.use_chain_rule
    }
    #[getter]
    fn gradient_scale(&self) -> f32 {
        self.inner.gradient_scale
    }
    #[getter]
    fn depth_scale_factor(&self) -> f32 {
        self.inner.depth_scale_factor
    }
    #[getter]
    fn momentum(&self) -> f32 {
        self.inner.momentum
    }
    #[getter]
    fn learning_rate(&self) -> f32 {
        self.inner.learning_rate
    }
    #[getter]
    fn activation_clamp(&self) -> f32 {
        self.inner.activation_clamp
    }
    #[getter]
    fn weight_threshold(&self) -> f32 {
        self.inner.weight_threshold
    }
    #[getter]
    fn min_budget(&self) -> f32 {
        self.inner.min_budget
    }

    fn __repr__(&self) -> String {
        let c = &self.inner;
        format!(
            "TargetPropConfig(batch_size={}, use_chain_rule={}, gradient_scale={}, depth_scale_factor={}, momentum={}, \
             learning_rate={}, activation_clamp={}, weight_threshold={}, min_budget={})",
            c.batch_size,
            if c.use_chain_rule { "True" } else { "False" },
            c.gradient_scale,
            c.depth_scale_factor,
            c.momentum,
            c.learning_rate,
            c.activation_clamp,
            c.weight_threshold,
            c.min_budget
        )
    }
}

#[pyclass(name = "TargetProp", module = "polyvtd", frozen)]
pub struct PyTargetProp {
    net: Py<PyNetwork>,
    state: Mutex<TargetProp>,
    /// Why the last step stopped early.
    stopped: Mutex<Option<String>>,
}

/// The native network behind `net` (a VolumetricNetwork or its native handle).
fn native_network(net: &Bound<'_, PyAny>) -> PyResult<Py<PyNetwork>> {
    if let Ok(n) = net.cast::<PyNetwork>() {
        return Ok(n.clone().unbind());
    }
    match net.getattr("_net").ok().and_then(|inner| inner.cast_into::<PyNetwork>().ok()) {
        Some(n) => Ok(n.unbind()),
        None => Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "TargetProp needs a VolumetricNetwork, got {}",
            net.get_type().name()?
        ))),
    }
}

/// `config` (a TargetPropConfig, a dict of fields changed from `base`, or None for `base`).
pub(crate) fn config_of(config: Option<&Bound<'_, PyAny>>, base: TargetPropConfig) -> PyResult<TargetPropConfig> {
    match config {
        None => Ok(base),
        Some(c) if c.is_none() => Ok(base),
        Some(c) => {
            if let Ok(cfg) = c.cast::<PyTargetPropConfig>() {
                Ok(cfg.get().inner)
            } else if let Ok(d) = c.cast::<PyDict>() {
                with_changes(base, d)
            } else {
                Err(pyo3::exceptions::PyTypeError::new_err(format!(
                    "config must be a TargetPropConfig, a dict or None, got {}",
                    c.get_type().name()?
                )))
            }
        }
    }
}

type Array<'py> = Bound<'py, PyArrayDyn<f32>>;

/// Layer calls of an update as dicts: coord, path, type, budget, gap, gated.
pub(crate) fn link_dicts<'py>(py: Python<'py>, links: &[crate::targetprop::Link]) -> PyResult<Vec<Bound<'py, PyDict>>> {
    links
        .iter()
        .map(|l| {
            let d = PyDict::new(py);
            d.set_item("coord", (l.coord.z, l.coord.y, l.coord.x, l.coord.l))?;
            d.set_item("path", &l.path)?;
            d.set_item("type", l.kind)?;
            d.set_item("budget", l.budget)?;
            d.set_item("gap", l.gap)?;
            d.set_item("gated", l.gated)?;
            Ok(d)
        })
        .collect()
}

impl PyTargetProp {
    /// One `step` with the arrays checked and the GIL released.
    fn run_step(&self, py: Python<'_>, x: &Bound<'_, PyAny>, target: &Bound<'_, PyAny>, lr: Option<f32>, mode: &str) -> PyResult<StepReport> {
        let schedule = Schedule::parse(mode).py()?;
        let (x, t) = (contiguous_f32(x, "inputs")?, contiguous_f32(target, "targets")?);
        let (xd, xb, x_shape) = batch(&x, "inputs").py()?;
        let (td, tb, t_shape) = batch(&t, "targets").py()?;
        if xb != tb {
            return Err(to_py(Error::Shape(format!("inputs have {xb} samples but targets have {tb}"))));
        }
        check_finite(xd, x_shape.iter().product(), "inputs").py()?;
        check_finite(td, t_shape.iter().product(), "targets").py()?;
        let net = self.net.get().read();
        let mut guard = self.state.lock().unwrap();
        let state: &mut TargetProp = &mut guard;
        let report = py.detach(|| guarded(|| state.step(&net, xd, xb, &x_shape, td, lr, schedule))).py()?;
        self.stopped.lock().unwrap().clone_from(&report.stopped);
        Ok(report)
    }

    /// A grid-shaped array of one value per top-level layer of the last update (NaN elsewhere).
    fn grid_array<'py>(&self, py: Python<'py>, value: impl Fn(&crate::targetprop::Link) -> f32) -> PyResult<Array<'py>> {
        let net = self.net.get().read();
        let mut out = vec![f32::NAN; net.depth * net.rows * net.cols * net.layers_per_cell];
        let state = self.state.lock().unwrap();
        for link in state.links().iter().filter(|l| l.path.is_empty()) {
            if let Ok(i) = net.index(link.coord) {
                out[i] = value(link);
            }
        }
        to_numpy(py, out, &[net.depth, net.rows, net.cols, net.layers_per_cell])
    }

    /// {(z, y, x, l): array [batch, *shape]} of the last update's outputs, or of its targets
    /// (layers whose output nobody read have none).
    fn captured<'py>(&self, py: Python<'py>, targets: bool) -> PyResult<Bound<'py, PyDict>> {
        let state = self.state.lock().unwrap();
        let d = PyDict::new(py);
        for c in state.captures() {
            let values = if targets { c.target.clone() } else { Some(c.actual.clone()) };
            if let Some(values) = values {
                let key = (c.coord.z, c.coord.y, c.coord.x, c.coord.l);
                d.set_item(key, to_numpy(py, values, &batched(state.last_batch(), &c.shape))?)?;
            }
        }
        Ok(d)
    }
}

#[pymethods]
impl PyTargetProp {
    /// Target propagation on `net` (shared: updates change its weights). `config`: a
    /// TargetPropConfig, a dict of its fields, or None for the defaults.
    #[new]
    #[pyo3(signature = (net, config = None))]
    fn new(net: &Bound<'_, PyAny>, config: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let net = native_network(net)?;
        let state = TargetProp::new(config_of(config, D)?).py()?;
        Ok(PyTargetProp { net, state: Mutex::new(state), stopped: Mutex::new(None) })
    }

    #[getter]
    fn config(&self) -> PyTargetPropConfig {
        PyTargetPropConfig { inner: self.state.lock().unwrap().config }
    }

    /// One pass over the batch (⌈batch / batch_size⌉ local updates); returns the mean squared
    /// error before the updates. A non-finite loss or weight stops it with the last good weights
    /// (`stopped_early` says why; the loss returned is then the last one measured).
    #[pyo3(signature = (x, target, *, lr = None, mode = "parallel"))]
    fn step(&self, py: Python<'_>, x: &Bound<'_, PyAny>, target: &Bound<'_, PyAny>, lr: Option<f32>, mode: &str) -> PyResult<f64> {
        Ok(self.run_step(py, x, target, lr, mode)?.loss)
    }

    /// `epochs` steps over (x, target); returns a TrainingResult (one loss per epoch). Stops
    /// early on a non-finite loss or weight, or when `on_epoch(epoch, loss, seconds)` raises.
    #[pyo3(signature = (x, target, *, epochs = 10, lr = None, mode = "parallel", on_epoch = None))]
    #[allow(clippy::too_many_arguments)]
    fn train(&self, py: Python<'_>, x: &Bound<'_, PyAny>, target: &Bound<'_, PyAny>, epochs: i64, lr: Option<f32>, mode: &str, on_epoch: Option<Py<PyAny>>) -> PyResult<PyTrainingResult> {
        if epochs < 0 {
            return Err(to_py(Error::Value(format!("epochs must be ≥ 0, got {epochs}"))));
        }
        let mut result = PyTrainingResult { loss_history: Vec::new(), epoch_times: Vec::new(), final_loss: None, steps: 0, stopped_early: None };
        for epoch in 0..epochs as usize {
            let started = Instant::now();
            let report = self.run_step(py, x, target, lr, mode)?;
            result.steps += report.updates;
            if let Some(reason) = &report.stopped {
                result.stopped_early = Some(format!("epoch {epoch}: {reason}"));
                break;
            }
            let seconds = started.elapsed().as_secs_f64();
            result.loss_history.push(report.loss);
            result.epoch_times.push(seconds);
            result.final_loss = Some(report.loss);
            py.check_signals()?;
            if let Some(f) = &on_epoch {
                f.call1(py, (epoch, report.loss, seconds))?;
            }
        }
        Ok(result)
    }

    /// Link budgets of the last update: float32 [depth, rows, cols, layers_per_cell], the
    /// budget (cos(output, target) + 1)/2 ∈ [0, 1] of each top-level layer; NaN where no layer
    /// took part (empty or disabled slot, or no target reached it). `.reshape(-1)` is the
    /// reference's flat layer index.
    #[getter]
    fn link_budgets<'py>(&self, py: Python<'py>) -> PyResult<Array<'py>> {
        self.grid_array(py, |l| l.budget)
    }

    /// RMS gaps ‖output − target‖ / √n of the last update, laid out like `link_budgets`.
    #[getter]
    fn gaps<'py>(&self, py: Python<'py>) -> PyResult<Array<'py>> {
        self.grid_array(py, |l| l.gap)
    }

    /// Every layer call of the last update, containers' members included: dicts with coord,
    /// path ("" at the top level, e.g. "stage 1/branch 0" inside containers), type, budget,
    /// gap and gated (budget below min_budget: no update).
    #[getter]
    fn links<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        link_dicts(py, self.state.lock().unwrap().links())
    }

    /// The forward capture of the last update: {(z, y, x, l): output [batch, *shape]} for every
    /// top-level layer that ran.
    #[getter]
    fn activations<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.captured(py, false)
    }

    /// The targets of the last update, keyed and shaped like `activations` (a layer whose
    /// output nobody read has none).
    #[getter]
    fn targets<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.captured(py, true)
    }

    /// Why the last step or train stopped early (None: it did not).
    #[getter]
    fn stopped_early(&self) -> Option<String> {
        self.stopped.lock().unwrap().clone()
    }

    /// Forget the momentum buffers and the last update's findings.
    fn reset(&self) {
        self.state.lock().unwrap().reset();
        *self.stopped.lock().unwrap() = None;
    }

    fn __repr__(&self) -> String {
        let c = self.state.lock().unwrap().config;
        format!("TargetProp(mode={}, learning_rate={}, batch_size={})", if c.use_chain_rule { "chain_rule" } else { "target" }, c.learning_rate, c.batch_size)
    }
}
