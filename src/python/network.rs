//! VolumetricNetwork and TrainingResult for Python (the Python class in polyvtd/network.py wraps
//! this one and adds spec loading from dicts/paths, progress bars and HTML display).

use super::arrays::{batch, batched, check_finite, contiguous_f32, forward_args, to_numpy, ForwardArgs};
use super::errors::{guarded, to_py, IntoPyResult};
use super::layer::{describe, zero_filled, PyLayer};
use super::weights::PyWeightStore;
use crate::layers::sum_gradients;
use crate::codec::Codec;
use crate::dtype::DType;
use crate::error::Error;
use crate::kernels::Schedule;
use crate::network::{exec, spec, Coord, VolumetricNetwork};
use crate::train::{self, Loss, LrSchedule, OptimConfig, OptimizerKind, TrainConfig};
use numpy::PyArrayDyn;
use pyo3::prelude::*;
use std::sync::RwLock;

#[pyclass(name = "Network", module = "polyvtd._core", frozen)]
pub struct PyNetwork {
    pub inner: RwLock<VolumetricNetwork>,
}

fn coord(z: usize, y: usize, x: usize, l: usize) -> Coord {
    Coord { z, y, x, l }
}

#[pyclass(name = "TrainingResult", module = "polyvtd", frozen, get_all)]
pub struct PyTrainingResult {
    /// Mean loss of each completed epoch.
    pub loss_history: Vec<f64>,
    /// Seconds each epoch took.
    pub epoch_times: Vec<f64>,
    /// Loss of the last completed epoch (None when no epoch ran).
    pub final_loss: Option<f64>,
    /// Optimisation steps taken.
    pub steps: usize,
    /// Why training stopped early (non-finite loss/gradient, interrupt), or None.
    pub stopped_early: Option<String>,
}

#[pymethods]
impl PyTrainingResult {
    fn __repr__(&self) -> String {
        format!(
            "TrainingResult(epochs={}, final_loss={}, steps={}, time={:.3}s{})",
            self.loss_history.len(),
            self.final_loss.map_or("None".into(), |l| format!("{l:.6}")),
            self.steps,
            self.epoch_times.iter().sum::<f64>().max(0.0),
            self.stopped_early.as_ref().map_or(String::new(), |s| format!(", stopped_early={s:?}"))
        )
    }
}

#[pymethods]
impl PyNetwork {
    #[new]
    fn new(depth: usize, rows: usize, cols: usize, layers_per_cell: usize) -> PyResult<Self> {
        Ok(PyNetwork { inner: RwLock::new(VolumetricNetwork::new(depth, rows, cols, layers_per_cell).py()?) })
    }

    /// Build from the reference's build JSON text.
    #[staticmethod]
    #[pyo3(signature = (text, seed = 0, compat = "standard"))]
    fn from_json(text: &str, seed: u64, compat: &str) -> PyResult<Self> {
        let codec = Codec::parse(compat).py()?;
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| to_py(Error::Spec(format!("network spec is not valid JSON: {e}"))))?;
        Ok(PyNetwork { inner: RwLock::new(spec::from_value(&value, seed, codec).py()?) })
    }

    #[pyo3(signature = (indent = None))]
    fn to_json(&self, indent: Option<usize>) -> PyResult<String> {
        let value = spec::to_value(&self.inner.read().unwrap());
        let text = match indent {
            None => serde_json::to_string(&value),
            Some(n) => {
                let pad = vec![b' '; n];
                let formatter = serde_json::ser::PrettyFormatter::with_indent(&pad);
                let mut out = Vec::new();
                let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
                serde::Serialize::serialize(&value, &mut ser).map(|_| String::from_utf8(out).expect("JSON is UTF-8"))
            }
        };
        text.map_err(|e| to_py(Error::Spec(e.to_string())))
    }

    /// The sample shape the first active layer is built for (None: no layer, or any shape).
    #[getter]
    fn input_shape(&self) -> Option<Vec<usize>> {
        exec::expected_input_shape(&self.inner.read().unwrap())
    }

    /// The sample shape the network produces for samples of `input_shape`.
    fn output_shape(&self, input_shape: Vec<usize>) -> PyResult<Vec<usize>> {
        exec::output_shape(&self.inner.read().unwrap(), &input_shape).py()
    }

    /// Make the layer at (z, y, x, l) read the output of the layer at `target` (a remote link;
    /// a Residual takes it as its skip). None removes the link.
    #[pyo3(signature = (z, y, x, l, target))]
    fn set_link(&self, z: usize, y: usize, x: usize, l: usize, target: Option<(usize, usize, usize, usize)>) -> PyResult<()> {
        let target = target.map(|(a, b, c, d)| coord(a, b, c, d));
        self.inner.write().unwrap().set_link(coord(z, y, x, l), target).py()
    }

    /// The remote link target of the layer at (z, y, x, l), if any.
    fn link(&self, z: usize, y: usize, x: usize, l: usize) -> PyResult<Option<(usize, usize, usize, usize)>> {
        let net = self.inner.read().unwrap();
        Ok(net.slot(coord(z, y, x, l)).py()?.and_then(|s| s.link).map(|t| (t.z, t.y, t.x, t.l)))
    }

    #[getter]
    fn dims(&self) -> (usize, usize, usize, usize) {
        let n = self.inner.read().unwrap();
        (n.depth, n.rows, n.cols, n.layers_per_cell)
    }

    /// The layer at (z, y, x, l), or None for an empty slot.
    fn layer(&self, z: usize, y: usize, x: usize, l: usize) -> PyResult<Option<PyLayer>> {
        let net = self.inner.read().unwrap();
        Ok(net.slot(coord(z, y, x, l)).py()?.map(|s| PyLayer { inner: s.layer.clone() }))
    }

    /// Place `layer` at (z, y, x, l); the network shares it with the Python handle.
    fn set_layer(&self, z: usize, y: usize, x: usize, l: usize, layer: &PyLayer) -> PyResult<()> {
        self.inner.write().unwrap().set_layer(coord(z, y, x, l), layer.inner.clone()).py()
    }

    fn clear_layer(&self, z: usize, y: usize, x: usize, l: usize) -> PyResult<()> {
        self.inner.write().unwrap().clear(coord(z, y, x, l)).py()
    }

    #[pyo3(signature = (z, y, x, l, disabled = true))]
    fn set_disabled(&self, z: usize, y: usize, x: usize, l: usize, disabled: bool) -> PyResult<()> {
        self.inner.write().unwrap().set_disabled(coord(z, y, x, l), disabled).py()
    }

    /// Occupied slots in traversal order: (z, y, x, l, type, dtype, weight shape, bytes, disabled).
    #[allow(clippy::type_complexity)]
    fn summary(&self) -> Vec<(usize, usize, usize, usize, String, String, Vec<usize>, usize, bool)> {
        let net = self.inner.read().unwrap();
        net.occupied()
            .map(|(c, s)| {
                let (kind, dtype, shape, bytes) = describe(&s.layer);
                (c.z, c.y, c.x, c.l, kind, dtype, shape, bytes, s.disabled)
            })
            .collect()
    }

    #[pyo3(signature = (x, mode = "parallel", device = "cpu"))]
    fn forward<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>, mode: &str, device: &str) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let x = contiguous_f32(x, "input")?;
        let ForwardArgs { data, batch, shape, schedule, device } = forward_args(&x, mode, device).py()?;
        let net = self.inner.read().unwrap();
        let (y, out_shape) = py.detach(|| guarded(|| exec::infer(&net, data, batch, &shape, schedule, device))).py()?;
        to_numpy(py, y, &batched(batch, &out_shape))
    }

    /// Every trainable tensor of the grid, once each, in traversal order.
    #[getter]
    fn parameters(&self) -> Vec<PyWeightStore> {
        self.inner.read().unwrap().params().into_iter().map(PyWeightStore::wrap).collect()
    }

    /// Gradients of ⟨forward(x), grad_out⟩: (grad_input, [gradient per entry of `parameters`]).
    #[pyo3(signature = (x, grad_out, mode = "parallel"))]
    fn backward<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>, grad_out: &Bound<'py, PyAny>, mode: &str) -> PyResult<(Bound<'py, PyArrayDyn<f32>>, Vec<Bound<'py, PyArrayDyn<f32>>>)> {
        let (x, grad_out) = (contiguous_f32(x, "input")?, contiguous_f32(grad_out, "grad_out")?);
        let schedule = Schedule::parse(mode).py()?;
        let (data, n, shape) = batch(&x, "input").py()?;
        let (grad, grad_n, grad_shape) = batch(&grad_out, "grad_out").py()?;
        let net = self.inner.read().unwrap();
        let params = net.params();
        let (input_grad, grads) = py
            .detach(|| {
                guarded(|| {
                    let trace = exec::forward_train(&net, data, n, &shape, schedule)?;
                    let out_shape = trace.output_shape();
                    if grad_n != n || grad_shape.iter().product::<usize>() != out_shape.iter().product::<usize>() {
                        return Err(Error::Shape(format!(
                            "grad_out must have the output's shape {:?}, got {:?}",
                            batched(n, out_shape),
                            batched(grad_n, &grad_shape)
                        )));
                    }
                    let (pairs, input_grad) = exec::backward(&net, &trace, data, grad.to_vec(), schedule, true)?;
                    Ok((input_grad, zero_filled(&params, sum_gradients(&params, pairs)?)))
                })
            })
            .py()?;
        let shapes: Vec<Vec<usize>> = params.iter().map(|p| p.read().unwrap().shape().to_vec()).collect();
        let grads = grads.into_iter().zip(shapes).map(|(g, s)| to_numpy(py, g, &s)).collect::<PyResult<Vec<_>>>()?;
        Ok((to_numpy(py, input_grad, &batched(n, &shape))?, grads))
    }

    fn morph_all(&self, py: Python<'_>, dtype: &str) -> PyResult<()> {
        let dtype = DType::parse(dtype).py()?;
        let net = self.inner.read().unwrap();
        py.detach(|| guarded(|| net.morph_all(dtype))).py()
    }

    #[getter]
    fn num_params(&self) -> usize {
        self.inner.read().unwrap().num_params()
    }

    #[getter]
    fn memory_bytes(&self) -> usize {
        self.inner.read().unwrap().memory_bytes()
    }

    /// A copy with its own weight buffers.
    fn deep_copy(&self) -> PyNetwork {
        PyNetwork { inner: RwLock::new(self.inner.read().unwrap().deep_clone()) }
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (x, t, epochs, lr, batch_size, loss, optimizer, momentum, beta1, beta2, eps,
        weight_decay, clip_norm, schedule, step_size, gamma, warmup_steps, min_lr, mode, seed, shuffle, on_epoch))]
    fn train(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        t: &Bound<'_, PyAny>,
        epochs: i64,
        lr: f32,
        batch_size: i64,
        loss: &str,
        optimizer: &str,
        momentum: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: Option<f32>,
        clip_norm: Option<f32>,
        schedule: Option<&str>,
        step_size: usize,
        gamma: f32,
        warmup_steps: usize,
        min_lr: f32,
        mode: &str,
        seed: u64,
        shuffle: bool,
        on_epoch: Py<PyAny>,
    ) -> PyResult<PyTrainingResult> {
        if epochs < 0 {
            return Err(to_py(Error::Value(format!("epochs must be ≥ 0, got {epochs}"))));
        }
        if batch_size < 1 {
            return Err(to_py(Error::Value(format!("batch_size must be ≥ 1, got {batch_size}"))));
        }
        if let Some(c) = clip_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(to_py(Error::Value(format!("clip_norm must be a positive number, got {c}"))));
            }
        }
        let (x, t) = (contiguous_f32(x, "inputs")?, contiguous_f32(t, "targets")?);
        let (xd, xb, x_shape) = batch(&x, "inputs").py()?;
        let (td, tb, t_shape) = batch(&t, "targets").py()?;
        if xb != tb {
            return Err(to_py(Error::Shape(format!("inputs have {xb} samples but targets have {tb}"))));
        }
        check_finite(xd, x_shape.iter().product(), "inputs").py()?;
        check_finite(td, t_shape.iter().product(), "targets").py()?;
        let mut optim = OptimConfig::new(OptimizerKind::parse(optimizer).py()?);
        optim.momentum = momentum;
        optim.beta1 = beta1;
        optim.beta2 = beta2;
        optim.eps = eps;
        if let Some(wd) = weight_decay {
            optim.weight_decay = wd;
        }
        let config = TrainConfig {
            epochs: epochs as usize,
            lr,
            batch_size: batch_size as usize,
            loss: Loss::parse(loss).py()?,
            optimizer: optim,
            clip_norm,
            schedule: match schedule {
                None => LrSchedule::constant(),
                Some(name) => LrSchedule::parse(name, step_size, gamma, warmup_steps, min_lr).py()?,
            },
            mode: Schedule::parse(mode).py()?,
            seed,
            shuffle,
        };
        let net = self.inner.read().unwrap();
        if net.active().next().is_none() {
            return Err(to_py(Error::Value("the network has no active layers to train".into())));
        }
        let out_shape = exec::output_shape(&net, &x_shape).py()?;
        if out_shape.iter().product::<usize>() != t_shape.iter().product::<usize>() {
            return Err(to_py(Error::Shape(format!(
                "the network maps samples of shape {x_shape:?} to {out_shape:?}, but the targets' samples have shape {t_shape:?}"
            ))));
        }
        let mut callback_error: Option<PyErr> = None;
        let result = py.detach(|| {
            guarded(|| {
                let mut report = |r: &train::EpochReport| {
                    Python::attach(|py| {
                        let outcome = py.check_signals().and_then(|_| on_epoch.call1(py, (r.epoch, r.loss, r.seconds)));
                        match outcome {
                            Ok(_) => true,
                            Err(e) => {
                                callback_error = Some(e);
                                false
                            }
                        }
                    })
                };
                train::train(&net, xd, &x_shape, td, xb, &config, &mut report)
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
}

impl PyNetwork {
    /// A Python handle on `net` (its layers, and so their weights, stay shared with whoever
    /// else holds them, e.g. a Transformer).
    pub fn wrap(net: VolumetricNetwork) -> PyNetwork {
        PyNetwork { inner: RwLock::new(net) }
    }
}
