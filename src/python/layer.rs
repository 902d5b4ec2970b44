//! Layer for Python: a handle on a layer (shared with any network it was placed in).

use super::arrays::{contiguous_f32, forward_args, rows, to_numpy, ForwardArgs};
use super::errors::{guarded, IntoPyResult};
use super::weights::PyWeightStore;
use crate::activation::Activation;
use crate::codec::Codec;
use crate::dtype::DType;
use crate::kernels::Schedule;
use crate::layers::{Dense, Layer};
use crate::network::{spec, Coord};
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
    let params = layer.params();
    let (dtype, shape) = match params.first() {
        Some(p) => {
            let s = p.read().unwrap();
            (s.dtype().name().to_string(), s.shape().to_vec())
        }
        None => ("-".into(), vec![]),
    };
    let bytes = params.iter().map(|p| {
        let s = p.read().unwrap();
        s.size_in_bytes(s.dtype())
    });
    (layer.type_name().into(), dtype, shape, bytes.sum())
}

#[pymethods]
impl PyLayer {
    /// A Dense layer: y = activation(x·Wᵀ [+ b]); W initialised U(±1/√in) from `seed`.
    #[staticmethod]
    #[pyo3(signature = (input_size, output_size, activation = "linear", bias = false, dtype = "float32", seed = 0, compat = "standard"))]
    fn dense(input_size: usize, output_size: usize, activation: &str, bias: bool, dtype: &str, seed: u64, compat: &str) -> PyResult<Self> {
        let activation = Activation::parse(activation).py()?;
        let dtype = DType::parse(dtype).py()?;
        let codec = Codec::parse(compat).py()?;
        let dense = Dense::new(input_size, output_size, activation, bias, seed, codec).py()?;
        dense.weights.write().unwrap().morph(dtype).py()?;
        Ok(PyLayer { inner: Arc::new(Layer::Dense(dense)) })
    }

    #[getter(r#type)]
    fn kind(&self) -> &'static str {
        self.inner.type_name()
    }
    #[getter]
    fn input_size(&self) -> usize {
        self.inner.input_size()
    }
    #[getter]
    fn output_size(&self) -> usize {
        self.inner.output_size()
    }
    #[getter]
    fn activation(&self) -> &'static str {
        match &*self.inner {
            Layer::Dense(d) => d.activation.name(),
        }
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
    #[getter]
    fn bias(&self) -> Option<PyWeightStore> {
        match &*self.inner {
            Layer::Dense(d) => d.bias.clone().map(PyWeightStore::wrap),
        }
    }
    #[getter]
    fn num_params(&self) -> usize {
        self.inner.params().iter().map(|p| p.read().unwrap().len()).sum()
    }

    /// Forward one layer on [batch, input_size] float32 input.
    #[pyo3(signature = (x, mode = "parallel", device = "cpu"))]
    fn forward<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>, mode: &str, device: &str) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let x = contiguous_f32(x, "input")?;
        let ForwardArgs { data, batch, width, schedule, device } = forward_args(&x, mode, device).py()?;
        let layer = self.inner.clone();
        let y = py
            .detach(|| {
                guarded(|| {
                    if width != layer.input_size() {
                        return Err(crate::error::Error::Shape(format!(
                            "{} expects input width {}, got {width}",
                            layer.type_name(),
                            layer.input_size()
                        )));
                    }
                    layer.infer(data, batch, schedule, device)
                })
            })
            .py()?;
        to_numpy(py, y, &[batch, self.inner.output_size()])
    }

    /// Gradients for upstream gradient `grad_out` at input `x`: (grad_input, [grad per
    /// parameter: weights [out, in], then bias if any]). Runs the training forward first.
    #[pyo3(signature = (x, grad_out, mode = "parallel"))]
    fn backward<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        grad_out: &Bound<'py, PyAny>,
        mode: &str,
    ) -> PyResult<(Array<'py>, Vec<Array<'py>>)> {
        let (x, grad_out) = (contiguous_f32(x, "input")?, contiguous_f32(grad_out, "grad_out")?);
        let schedule = Schedule::parse(mode).py()?;
        let (data, batch, width) = rows(&x, "input").py()?;
        let (grad, grad_batch, grad_width) = rows(&grad_out, "grad_out").py()?;
        let layer = self.inner.clone();
        let grads = py
            .detach(|| {
                guarded(|| {
                    if width != layer.input_size() || grad_batch != batch || grad_width != layer.output_size() {
                        return Err(crate::error::Error::Shape(format!(
                            "{} backward expects x [{batch}, {}] and grad_out [{batch}, {}], got [{batch}, {width}] and [{grad_batch}, {grad_width}]",
                            layer.type_name(),
                            layer.input_size(),
                            layer.output_size()
                        )));
                    }
                    let saved = layer.forward_train(data, batch, schedule)?;
                    layer.backward(data, &saved, grad, batch, schedule, true)
                })
            })
            .py()?;
        let shapes: Vec<Vec<usize>> = self.inner.params().iter().map(|p| p.read().unwrap().shape().to_vec()).collect();
        let params = grads
            .params
            .into_iter()
            .zip(shapes)
            .map(|(g, shape)| to_numpy(py, g, &shape))
            .collect::<PyResult<Vec<_>>>()?;
        Ok((to_numpy(py, grads.input, &[batch, self.inner.input_size()])?, params))
    }

    /// The layer's build-JSON entry (as a JSON string; coordinates 0).
    fn spec_json(&self) -> String {
        spec::layer_to_value(&self.inner, Coord { z: 0, y: 0, x: 0, l: 0 }, false).to_string()
    }

    fn __repr__(&self) -> String {
        let (kind, dtype, shape, bytes) = describe(&self.inner);
        format!(
            "{kind}({} → {}, activation={}, dtype={dtype}, weights={shape:?}, bytes={bytes})",
            self.inner.input_size(),
            self.inner.output_size(),
            self.activation()
        )
    }
}
