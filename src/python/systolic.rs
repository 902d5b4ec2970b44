//! Systolic for Python: the clock-stepped mesh over a Network (polyvtd/systolic.py wraps it).
//! A mesh runs one call at a time; a call made while another runs (from an on_epoch callback or
//! another thread) is refused instead of deadlocking (the reference's quirk 26). The mesh keeps
//! its own target-propagation state for `step_targetprop` (online learning, bridge.rs).

use super::arrays::{batch, batched, check_finite, contiguous_f32, to_numpy};
use super::errors::{guarded, to_py, IntoPyResult};
use super::layer::zero_filled;
use super::network::{PyNetwork, PyTrainingResult};
use super::targetprop::{config_of, link_dicts, PyTargetPropConfig};
use crate::error::{Error, Result};
use crate::kernels::Schedule;
use crate::layers::sum_gradients;
use crate::network::{Coord, VolumetricNetwork};
use crate::systolic::train::{BpttConfig, Episode};
use crate::systolic::{Buffer, Systolic};
use crate::targetprop::{TargetProp, TargetPropConfig};
use crate::train::{EpochReport, Loss, OptimConfig, OptimizerKind};
use numpy::{PyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::{Mutex, MutexGuard, RwLockReadGuard, TryLockError};

type Array<'py> = Bound<'py, PyArrayDyn<f32>>;

#[pyclass(name = "Systolic", module = "polyvtd._core", frozen)]
pub struct PySystolic {
    net: Py<PyNetwork>,
    mesh: Mutex<Systolic>,
    schedule: Schedule,
    /// Locked only while the mesh's lock is held.
    learner: Mutex<Learner>,
}

/// The mesh's target propagation: created by the first `step_targetprop` (its momentum carries
/// across cycles), and why its last update stopped early.
#[derive(Default)]
struct Learner {
    tp: Option<TargetProp>,
    stopped: Option<String>,
}

/// The bridge's default, as the reference's StepApplyTween: true target propagation (a feedback
/// loop has no chain of derivatives to follow within one cycle).
const MESH_TARGETPROP: TargetPropConfig = TargetPropConfig { use_chain_rule: false, ..TargetPropConfig::DEFAULT };

fn busy() -> PyErr {
    to_py(Error::Value(
        "the mesh is busy with another call (an on_epoch callback or another thread): a mesh runs one call at a time".into(),
    ))
}

impl PySystolic {
    fn mesh(&self) -> PyResult<MutexGuard<'_, Systolic>> {
        match self.mesh.try_lock() {
            Ok(guard) => Ok(guard),
            Err(TryLockError::Poisoned(e)) => Ok(e.into_inner()),
            Err(TryLockError::WouldBlock) => Err(busy()),
        }
    }

    fn net(&self) -> RwLockReadGuard<'_, VolumetricNetwork> {
        self.net.get().grid().read().unwrap()
    }

    fn index(&self, z: usize, y: usize, x: usize, l: usize) -> PyResult<usize> {
        self.net().index(Coord { z, y, x, l }).py()
    }

    fn buffer<'py>(&self, py: Python<'py>, b: Option<&Buffer>, batch: usize) -> PyResult<Option<Array<'py>>> {
        b.map(|b| to_numpy(py, b.data.clone(), &batched(batch, &b.shape))).transpose()
    }
}

/// The cycles `values` apply to: `cycles` when given, else the last captured cycle (values
/// shaped like one output) or the last K captured cycles (values [K, batch, ...]).
fn target_cycles(mesh: &Systolic, net: &VolumetricNetwork, values_shape: &[usize], cycles: Option<Vec<u64>>) -> Result<Vec<u64>> {
    if let Some(c) = cycles {
        if c.is_empty() {
            return Err(Error::Value("cycles is empty: name at least one captured cycle".into()));
        }
        return Ok(c);
    }
    let last = mesh.history().cycles().back().map(|r| r.cycle).ok_or_else(|| {
        Error::Value("no captured cycles: create the mesh with history=N (or call capture()) and step it first".into())
    })?;
    let (_, shape) = mesh.captured_output(net, last)?;
    let one = shape.len() + 1;
    if values_shape.len() == one {
        return Ok(vec![last]);
    }
    if values_shape.len() != one + 1 {
        return Err(Error::Shape(format!(
            "expected one output's shape [batch, {shape:?}] or a sequence [cycles, batch, {shape:?}], got {values_shape:?}"
        )));
    }
    let k = values_shape[0] as u64;
    let captured = mesh.history().cycles().len() as u64;
    if k == 0 || k > captured {
        return Err(Error::Value(format!("{k} cycles of values, but {captured} cycles are captured")));
    }
    Ok(((last + 1 - k)..=last).collect())
}

#[pymethods]
impl PySystolic {
    #[new]
    #[pyo3(signature = (net, history = 0, mode = "parallel"))]
    fn new(net: Py<PyNetwork>, history: usize, mode: &str) -> PyResult<Self> {
        let schedule = Schedule::parse(mode).py()?;
        let mesh = Systolic::new(&net.get().grid().read().unwrap(), history);
        Ok(PySystolic { net, mesh: Mutex::new(mesh), schedule, learner: Mutex::default() })
    }

    /// Present `x` ([batch, *sample], or one sample) to the first cell from the next cycle on.
    fn set_input(&self, x: &Bound<'_, PyAny>) -> PyResult<()> {
        let x = contiguous_f32(x, "input")?;
        let (data, n, shape) = batch(&x, "input").py()?;
        check_finite(data, shape.iter().product(), "input").py()?;
        self.mesh()?.set_input(data.to_vec(), n, &shape).py()
    }

    /// Run `cycles` clock cycles.
    #[pyo3(signature = (cycles = 1))]
    fn step(&self, py: Python<'_>, cycles: usize) -> PyResult<()> {
        let mut mesh = self.mesh()?;
        let net = self.net();
        let mesh = &mut *mesh;
        let schedule = self.schedule;
        py.detach(|| guarded(|| (0..cycles).try_for_each(|_| mesh.step(&net, schedule)))).py()
    }

    /// The output cell's buffer after the last cycle, or None before data reaches it.
    fn output<'py>(&self, py: Python<'py>) -> PyResult<Option<Array<'py>>> {
        let mesh = self.mesh()?;
        let net = self.net();
        self.buffer(py, mesh.output(&net).py()?, mesh.batch())
    }

    /// The output of the cell at (z, y, x, l) after the last cycle, or None.
    fn state<'py>(&self, py: Python<'py>, z: usize, y: usize, x: usize, l: usize) -> PyResult<Option<Array<'py>>> {
        let i = self.index(z, y, x, l)?;
        let mesh = self.mesh()?;
        self.buffer(py, mesh.state(i), mesh.batch())
    }

    /// The input the cell at (z, y, x, l) consumed in the last cycle, or None.
    fn last_input<'py>(&self, py: Python<'py>, z: usize, y: usize, x: usize, l: usize) -> PyResult<Option<Array<'py>>> {
        let i = self.index(z, y, x, l)?;
        let mesh = self.mesh()?;
        self.buffer(py, mesh.consumed(i), mesh.batch())
    }

    /// {(z, y, x, l): output} for every cell holding data.
    fn states<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let mesh = self.mesh()?;
        let net = self.net();
        let out = PyDict::new(py);
        for (c, _) in net.occupied() {
            if let Some(b) = mesh.state(net.index(c).py()?) {
                out.set_item((c.z, c.y, c.x, c.l), to_numpy(py, b.data.clone(), &batched(mesh.batch(), &b.shape))?)?;
            }
        }
        Ok(out)
    }

    /// Forget every buffer, the input, the history and the target-propagation momentum.
    fn reset(&self) -> PyResult<()> {
        let mut mesh = self.mesh()?;
        mesh.reset();
        *self.learner.lock().unwrap() = Learner::default();
        Ok(())
    }

    /// One clock cycle, then target propagation of every cell from what it consumed and
    /// produced in it, the output compared with `target` ([batch, *out]). Returns the output's
    /// mean squared error before the update, or None while data has not reached the output.
    /// `config` (TargetPropConfig, dict, None) replaces the mesh's state when it differs.
    #[pyo3(signature = (target, lr = None, config = None))]
    fn step_targetprop(&self, py: Python<'_>, target: &Bound<'_, PyAny>, lr: Option<f32>, config: Option<&Bound<'_, PyAny>>) -> PyResult<Option<f64>> {
        let target = contiguous_f32(target, "target")?;
        let (data, _, shape) = batch(&target, "target").py()?;
        check_finite(data, shape.iter().product(), "target").py()?;
        let mut mesh = self.mesh()?;
        let mut learner = self.learner.lock().unwrap();
        let config = match (config, &learner.tp) {
            (None, Some(tp)) => tp.config,
            (config, _) => config_of(config, MESH_TARGETPROP)?,
        };
        // A new config starts fresh state, kept only if the call succeeds (a failed call changes nothing).
        let (mut tp, reused) = match learner.tp.take() {
            Some(tp) if tp.config == config => (tp, true),
            previous => {
                learner.tp = previous;
                (TargetProp::new(config).py()?, false)
            }
        };
        let net = self.net();
        let (mesh, schedule) = (&mut *mesh, self.schedule);
        let result = py.detach(|| guarded(|| mesh.step_targetprop(&net, &mut tp, data, lr, schedule)));
        if reused || result.is_ok() {
            learner.tp = Some(tp);
        }
        let report = result.py()?;
        learner.stopped = report.as_ref().and_then(|r| r.stopped.clone());
        Ok(report.map(|r| r.loss))
    }

    /// The config of the mesh's target propagation (None before the first step_targetprop).
    #[getter]
    fn targetprop_config(&self) -> PyResult<Option<PyTargetPropConfig>> {
        let _mesh = self.mesh()?;
        Ok(self.learner.lock().unwrap().tp.as_ref().map(|tp| PyTargetPropConfig { inner: tp.config }))
    }

    /// Every layer call of the last step_targetprop update: dicts with coord, path, type,
    /// budget, gap and gated.
    #[getter]
    fn targetprop_links<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let _mesh = self.mesh()?;
        let learner = self.learner.lock().unwrap();
        link_dicts(py, learner.tp.as_ref().map_or(&[], |tp| tp.links()))
    }

    /// Why the last step_targetprop left the weights unchanged (a non-finite loss or weight).
    #[getter]
    fn targetprop_stopped(&self) -> PyResult<Option<String>> {
        let _mesh = self.mesh()?;
        Ok(self.learner.lock().unwrap().stopped.clone())
    }

    /// Cycles run since creation or the last reset.
    #[getter]
    fn cycle(&self) -> PyResult<u64> {
        Ok(self.mesh()?.cycle())
    }

    /// How many past cycles the mesh keeps (0: no capture).
    #[getter]
    fn history_size(&self) -> PyResult<usize> {
        Ok(self.mesh()?.history().capacity())
    }

    /// Keep the last `cycles` cycles from now on (0 stops capturing and frees the history).
    fn capture(&self, cycles: usize) -> PyResult<()> {
        self.mesh()?.set_history(cycles);
        Ok(())
    }

    /// The cycle numbers in the captured history, oldest first.
    #[getter]
    fn captured_cycles(&self) -> PyResult<Vec<u64>> {
        Ok(self.mesh()?.history().cycles().iter().map(|r| r.cycle).collect())
    }

    /// The coordinate whose buffer is the mesh's output (the last occupied slot).
    #[getter]
    fn output_coord(&self) -> PyResult<(usize, usize, usize, usize)> {
        let net = self.net();
        let c = net.coord_of(Systolic::output_index(&net).py()?);
        Ok((c.z, c.y, c.x, c.l))
    }

    /// [(cycle, input, output)] of the cell at (z, y, x, l) for every captured cycle in which it
    /// produced (input None: a Residual whose input had no data yet counted it as zeros).
    #[allow(clippy::type_complexity)]
    fn history<'py>(&self, py: Python<'py>, z: usize, y: usize, x: usize, l: usize) -> PyResult<Vec<(u64, Option<Array<'py>>, Array<'py>)>> {
        let i = self.index(z, y, x, l)?;
        let mesh = self.mesh()?;
        let n = mesh.batch();
        let mut out = Vec::new();
        for record in mesh.history().cycles() {
            if let Some(cell) = record.cell(i) {
                let (y, shape) = cell.output();
                out.push((record.cycle, self.buffer(py, cell.input.as_ref(), n)?, to_numpy(py, y.to_vec(), &batched(n, shape))?));
            }
        }
        Ok(out)
    }

    /// Backprop through the captured cycles. With `loss` ("mse", "cross_entropy") `values` are
    /// targets and the result is (mean loss over the cycles, gradients); with None they are
    /// gradients on the output and the result is (Σ⟨output, values⟩, gradients). Gradients come
    /// one per entry of the network's `parameters`.
    #[pyo3(signature = (values, loss = None, cycles = None))]
    fn backward<'py>(&self, py: Python<'py>, values: &Bound<'py, PyAny>, loss: Option<&str>, cycles: Option<Vec<u64>>) -> PyResult<(f64, Vec<Array<'py>>)> {
        let loss = loss.map(Loss::parse).transpose().py()?;
        let values = contiguous_f32(values, "values")?;
        let (data, _, shape) = batch(&values, "values").py()?;
        check_finite(data, shape.iter().product(), "values").py()?;
        let values_shape = values.shape().to_vec();
        let mesh = self.mesh()?;
        let net = self.net();
        let schedule = self.schedule;
        let params = net.params();
        let (value, grads) = py
            .detach(|| {
                guarded(|| {
                    let cycles = target_cycles(&mesh, &net, &values_shape, cycles)?;
                    if !data.len().is_multiple_of(cycles.len()) {
                        return Err(Error::Shape(format!("{} values do not split over {} cycles", data.len(), cycles.len())));
                    }
                    let per = data.len() / cycles.len();
                    let pairs: Vec<(u64, &[f32])> = cycles.iter().copied().zip(data.chunks_exact(per)).collect();
                    let (value, grads) = match loss {
                        Some(loss) => mesh.cycle_loss(&net, &pairs, loss)?,
                        None => {
                            let mut dot = 0f64;
                            for &(c, g) in &pairs {
                                let (y, shape) = mesh.captured_output(&net, c)?;
                                if y.len() != g.len() {
                                    return Err(Error::Shape(format!(
                                        "the gradient for cycle {c} has {} values, but the output has {} (batch {} × sample shape {shape:?})",
                                        g.len(),
                                        y.len(),
                                        mesh.batch()
                                    )));
                                }
                                dot += y.iter().zip(g).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>();
                            }
                            (dot, pairs.iter().map(|&(c, g)| (c, g.to_vec())).collect())
                        }
                    };
                    let pairs = mesh.backward(&net, grads, schedule)?;
                    Ok((value, zero_filled(&params, sum_gradients(&params, pairs)?)))
                })
            })
            .py()?;
        let shapes: Vec<Vec<usize>> = params.iter().map(|p| p.read().unwrap().shape().to_vec()).collect();
        let grads = grads.into_iter().zip(shapes).map(|(g, s)| to_numpy(py, g, &s)).collect::<PyResult<Vec<_>>>()?;
        Ok((value, grads))
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (inputs, targets, target_steps, epochs, lr, loss, optimizer, momentum, beta1, beta2, eps,
        weight_decay, clip_norm, reset, on_epoch))]
    fn train_bptt(
        &self,
        py: Python<'_>,
        inputs: &Bound<'_, PyAny>,
        targets: &Bound<'_, PyAny>,
        target_steps: Option<Vec<usize>>,
        epochs: usize,
        lr: f32,
        loss: &str,
        optimizer: &str,
        momentum: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: Option<f32>,
        clip_norm: Option<f32>,
        reset: bool,
        on_epoch: Py<PyAny>,
    ) -> PyResult<PyTrainingResult> {
        if let Some(c) = clip_norm.filter(|c| !(c.is_finite() && *c > 0.0)) {
            return Err(to_py(Error::Value(format!("clip_norm must be a positive number, got {c}"))));
        }
        let (inputs, targets) = (contiguous_f32(inputs, "inputs")?, contiguous_f32(targets, "targets")?);
        let (xd, steps, step_shape) = batch(&inputs, "inputs").py()?;
        let (td, k, _) = batch(&targets, "targets").py()?;
        let (&n, sample) = step_shape.split_first().filter(|(_, sample)| !sample.is_empty()).ok_or_else(|| {
            to_py(Error::Shape(format!("inputs must be [steps, batch, *sample] (3 axes or more), got shape {:?}", inputs.shape())))
        })?;
        check_finite(xd, sample.iter().product::<usize>().max(1), "inputs").py()?;
        check_finite(td, td.len() / k, "targets").py()?;
        let target_steps = match target_steps {
            Some(s) if s.len() != k => {
                return Err(to_py(Error::Shape(format!("{} target steps but targets for {k}", s.len()))));
            }
            Some(s) => s,
            None if k > steps => return Err(to_py(Error::Shape(format!("targets for {k} steps, but the inputs have {steps}")))),
            None => (steps - k..steps).collect(),
        };
        let mut optim = OptimConfig::new(OptimizerKind::parse(optimizer).py()?);
        (optim.momentum, optim.beta1, optim.beta2, optim.eps) = (momentum, beta1, beta2, eps);
        if let Some(wd) = weight_decay {
            optim.weight_decay = wd;
        }
        let config = BpttConfig { epochs, lr, loss: Loss::parse(loss).py()?, optimizer: optim, clip_norm, mode: self.schedule, reset };
        let episode = Episode { inputs: xd, steps, batch: n, shape: sample, targets: td, target_steps: &target_steps };
        let mut mesh = self.mesh()?;
        let mesh = &mut *mesh;
        let net = self.net();
        let mut callback_error: Option<PyErr> = None;
        let result = py.detach(|| {
            guarded(|| {
                let mut report = |r: &EpochReport| {
                    Python::attach(|py| match py.check_signals().and_then(|_| on_epoch.call1(py, (r.epoch, r.loss, r.seconds))) {
                        Ok(_) => true,
                        Err(e) => {
                            callback_error = Some(e);
                            false
                        }
                    })
                };
                mesh.train_bptt(&net, &episode, &config, &mut report)
            })
        });
        if let Some(err) = callback_error {
            return Err(err);
        }
        let r = result.py()?;
        Ok(PyTrainingResult {
            loss_history: r.loss_history,
            epoch_times: r.epoch_times,
            final_loss: r.final_loss,
            steps: r.steps,
            stopped_early: r.stopped_early,
        })
    }

    fn __repr__(&self) -> PyResult<String> {
        let mesh = self.mesh()?;
        let net = self.net();
        let cells = net.occupied().count();
        let holding = net.occupied().filter(|(c, _)| net.index(*c).is_ok_and(|i| mesh.state(i).is_some())).count();
        Ok(format!(
            "Systolic(cells={cells}, holding data={holding}, cycle={}, batch={}, history={})",
            mesh.cycle(),
            mesh.batch(),
            mesh.history().capacity()
        ))
    }
}
