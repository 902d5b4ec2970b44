//! Layer for Python: a handle on a layer (shared with any network it was placed in). Layers are
//! built from their build-JSON entry (the Python builders in polyvtd/layers.py write it), so the
//! JSON reader is the one place that knows each layer's fields.

use super::arrays::{batch, batched, contiguous_f32, forward_args, to_numpy, ForwardArgs};
use super::errors::{guarded, to_py, IntoPyResult};
use super::weights::PyWeightStore;
use crate::codec::Codec;
use crate::error::Error;
use crate::kernels::Schedule;
use crate::layers::spec::{layer_from_value, layer_to_value, Build};
use crate::coord::Coord;
use crate::layers::member::Member;
use crate::layers::parallel::Combine;
use crate::layers::sequential::Stage;
use crate::layers::{sum_gradients, Ctx, Input, Layer, Parallel, Param, Sequential};
use numpy::PyArrayDyn;
use pyo3::prelude::*;
use std::sync::Arc;

type Array<'py> = Bound<'py, PyArrayDyn<f32>>;

#[pyclass(name = "Layer", module = "polyvtd", frozen)]
pub struct PyLayer {
    pub inner: Arc<Layer>,
}

/// One row of a network or layer summary: (type, dtype, weight shape, weight bytes).
pub fn describe(layer: &Layer) -> (String, String, Vec<usize>, usize) {
    let (dtype, shape) = match layer.morphable().first() {
        Some(p) => {
            let s = p.read().unwrap();
            (s.dtype().name().to_string(), s.shape().to_vec())
        }
        None => ("-".into(), vec![]),
    };
    let bytes = layer
        .params()
        .iter()
        .map(|p| {
            let s = p.read().unwrap();
            s.size_in_bytes(s.dtype())
        })
        .sum();
    (layer.type_name().into(), dtype, shape, bytes)
}

#[pymethods]
impl PyLayer {
    /// A layer from its build-JSON entry (JSON text); weights start from `seed`.
    #[staticmethod]
    #[pyo3(signature = (spec, seed = 0, compat = "standard"))]
    fn from_spec(spec: &str, seed: u64, compat: &str) -> PyResult<Self> {
        let codec = Codec::parse(compat).py()?;
        let value: serde_json::Value =
            serde_json::from_str(spec).map_err(|e| to_py(Error::Spec(format!("layer spec is not valid JSON: {e}"))))?;
        let layer = guarded(|| layer_from_value(&value, "layer spec".into(), Build { seed, codec })).py()?;
        Ok(PyLayer { inner: Arc::new(layer) })
    }

    /// A Sequential over `stages`: Layers (shared, not copied) or (z, y, x, l) remote links.
    #[staticmethod]
    fn sequential(stages: Vec<Bound<'_, PyAny>>) -> PyResult<Self> {
        let stages = stages.iter().map(|m| Ok(Stage { member: member(m)?, disabled: false })).collect::<PyResult<Vec<_>>>()?;
        Ok(PyLayer { inner: Arc::new(Layer::Sequential(Sequential::new(stages).py()?)) })
    }

    /// A Parallel over `branches` (Layers or (z, y, x, l) remote links), combined by `combine`;
    /// `gate` (filter only) maps the input to one logit per branch.
    #[staticmethod]
    #[pyo3(signature = (branches, combine = "concat", gate = None))]
    fn parallel(branches: Vec<Bound<'_, PyAny>>, combine: &str, gate: Option<&PyLayer>) -> PyResult<Self> {
        let branches = branches.iter().map(member).collect::<PyResult<Vec<_>>>()?;
        let combine = Combine::parse(combine).py()?;
        let layer = Parallel::new(branches, combine, gate.map(|g| g.inner.clone())).py()?;
        Ok(PyLayer { inner: Arc::new(Layer::Parallel(layer)) })
    }

    /// Morph every weight tensor of the layer (not biases) to `dtype`.
    fn morph(&self, py: Python<'_>, dtype: &str) -> PyResult<()> {
        let dtype = crate::dtype::DType::parse(dtype).py()?;
        let tensors = self.inner.morphable();
        py.detach(|| guarded(|| tensors.iter().try_for_each(|p| p.write().unwrap().morph(dtype)))).py()
    }

    #[getter(r#type)]
    fn kind(&self) -> &'static str {
        self.inner.type_name()
    }
    /// The sample shape the layer is built for (None when it takes several shapes).
    #[getter]
    fn input_shape(&self) -> Option<Vec<usize>> {
        self.inner.input_shape()
    }
    /// The sample shape it produces from samples of `input_shape`.
    fn output_shape(&self, input_shape: Vec<usize>) -> PyResult<Vec<usize>> {
        self.inner.output_shape(&input_shape).py()
    }
    #[getter]
    fn activation(&self) -> Option<&'static str> {
        self.inner.activation().map(|a| a.name())
    }
    #[getter]
    fn dtype(&self) -> String {
        describe(&self.inner).1
    }
    /// The main weight tensor (None for weightless layers).
    #[getter]
    fn weights(&self) -> Option<PyWeightStore> {
        self.inner.morphable().into_iter().next().map(PyWeightStore::wrap)
    }
    /// The Dense or convolution bias, if it has one.
    #[getter]
    fn bias(&self) -> Option<PyWeightStore> {
        match &*self.inner {
            Layer::Dense(d) => d.bias.clone().map(PyWeightStore::wrap),
            Layer::Conv(c) => c.bias.clone().map(PyWeightStore::wrap),
            // Families without one bias tensor (the allow covers builds where none exist yet).
            _ => None,
        }
    }
    /// Every trainable tensor, in the order `backward` returns their gradients.
    #[getter]
    fn parameters(&self) -> Vec<PyWeightStore> {
        self.inner.params().into_iter().map(PyWeightStore::wrap).collect()
    }
    #[getter]
    fn num_params(&self) -> usize {
        self.inner.params().iter().map(|p| p.read().unwrap().len()).sum()
    }

    /// Forward one batch (first axis = batch).
    #[pyo3(signature = (x, mode = "parallel", device = "cpu"))]
    fn forward<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>, mode: &str, device: &str) -> PyResult<Array<'py>> {
        let x = contiguous_f32(x, "input")?;
        let ForwardArgs { data, batch, shape, schedule, device } = forward_args(&x, mode, device).py()?;
        let layer = self.inner.clone();
        let (y, out_shape) = py
            .detach(|| {
                guarded(|| {
                    let out_shape = layer.output_shape(&shape)?;
                    let ctx = Ctx { device, ..Ctx::standalone(schedule) };
                    Ok((layer.infer(Input::new(data, batch, &shape), &ctx)?, out_shape))
                })
            })
            .py()?;
        to_numpy(py, y, &batched(batch, &out_shape))
    }

    /// Gradients for upstream gradient `grad_out` at input `x`: (grad_input, [gradient per entry
    /// of `parameters`]). Runs the training forward first.
    #[pyo3(signature = (x, grad_out, mode = "parallel"))]
    fn backward<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>, grad_out: &Bound<'py, PyAny>, mode: &str) -> PyResult<(Array<'py>, Vec<Array<'py>>)> {
        let (x, grad_out) = (contiguous_f32(x, "input")?, contiguous_f32(grad_out, "grad_out")?);
        let schedule = Schedule::parse(mode).py()?;
        let (data, n, shape) = batch(&x, "input").py()?;
        let (grad, grad_n, grad_shape) = batch(&grad_out, "grad_out").py()?;
        let layer = self.inner.clone();
        let params = layer.params();
        let (input_grad, param_grads) = py
            .detach(|| {
                guarded(|| {
                    let out_shape = layer.output_shape(&shape)?;
                    if grad_n != n || grad_shape.iter().product::<usize>() != out_shape.iter().product::<usize>() {
                        return Err(Error::Shape(format!(
                            "{} backward expects grad_out of shape {:?} for this input, got {:?}",
                            layer.type_name(),
                            batched(n, &out_shape),
                            batched(grad_n, &grad_shape)
                        )));
                    }
                    let ctx = Ctx::standalone(schedule);
                    let input = Input::new(data, n, &shape);
                    let saved = layer.forward_train(input, &ctx)?;
                    let grads = layer.backward(input, &saved, grad, &ctx, true)?;
                    Ok((grads.input, zero_filled(&params, sum_gradients(&params, grads.params)?)))
                })
            })
            .py()?;
        let shapes: Vec<Vec<usize>> = params.iter().map(|p| p.read().unwrap().shape().to_vec()).collect();
        let param_grads = param_grads.into_iter().zip(shapes).map(|(g, s)| to_numpy(py, g, &s)).collect::<PyResult<Vec<_>>>()?;
        Ok((to_numpy(py, input_grad, &batched(n, &shape))?, param_grads))
    }

    /// The layer's build-JSON entry (as a JSON string; no coordinates).
    fn spec_json(&self) -> String {
        serde_json::Value::Object(layer_to_value(&self.inner)).to_string()
    }

    fn __repr__(&self) -> String {
        let (kind, dtype, shape, bytes) = describe(&self.inner);
        let activation = self.activation().map_or(String::new(), |a| format!(", activation={a}"));
        format!("{kind}(input_shape={:?}{activation}, dtype={dtype}, weights={shape:?}, bytes={bytes})", self.inner.input_shape())
    }
}

/// Per-tensor gradients with zeros for tensors that got none (their output was unused).
pub fn zero_filled(params: &[Param], sums: Vec<Option<Vec<f32>>>) -> Vec<Vec<f32>> {
    params.iter().zip(sums).map(|(p, g)| g.unwrap_or_else(|| vec![0.0; p.read().unwrap().len()])).collect()
}

/// A container member from Python: a Layer, or a (z, y, x, l) remote link.
fn member(obj: &Bound<'_, PyAny>) -> PyResult<Member> {
    if let Ok(layer) = obj.cast::<PyLayer>() {
        return Ok(Member::Own(layer.get().inner.clone()));
    }
    match obj.extract::<(usize, usize, usize, usize)>() {
        Ok((z, y, x, l)) => Ok(Member::Link(Coord { z, y, x, l })),
        Err(_) => Err(to_py(Error::Spec(format!(
            "a container member must be a Layer or a (z, y, x, l) remote-link coordinate, got {}",
            obj.repr().map_or_else(|_| "?".into(), |r| r.to_string())
        )))),
    }
}
