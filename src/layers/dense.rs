//! Dense (fully connected) layer: y = f(x·Wᵀ + b), W stored [out][in], bias optional (off by
//! default, as in the reference). Computes from the active dtype's packed weights.

use super::spec::{Build, Fields};
use super::{activated, check_grad, copy_param, new_param, through_activation, Ctx, Device, Grads, Input, Layer, LayerOps, Param, Saved, Shape};
use crate::activation::Activation;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::kernels::{dense as kernel, Schedule};
use crate::rng::Rng;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone)]
pub struct Dense {
    pub input_size: usize,
    pub output_size: usize,
    pub activation: Activation,
    pub weights: Param,
    pub bias: Option<Param>,
}

impl Dense {
    /// PyTorch's Linear initialisation: W, b ~ U(−1/√in, 1/√in), from `seed`.
    pub fn new(input_size: usize, output_size: usize, activation: Activation, bias: bool, seed: u64, codec: Codec) -> Result<Dense> {
        if input_size == 0 || output_size == 0 {
            return Err(Error::Spec(format!(
                "Dense needs input_height > 0 and output_height > 0, got {input_size} and {output_size}"
            )));
        }
        let mut rng = Rng::new(seed);
        let bound = 1.0 / (input_size as f32).sqrt();
        let w: Vec<f32> = (0..input_size * output_size).map(|_| rng.uniform(bound)).collect();
        let weights = new_param(w, vec![output_size, input_size], codec)?;
        let bias = if bias {
            let b: Vec<f32> = (0..output_size).map(|_| rng.uniform(bound)).collect();
            Some(new_param(b, vec![output_size], Codec::Standard)?)
        } else {
            None
        };
        Ok(Dense { input_size, output_size, activation, weights, bias })
    }

    pub fn from_spec(f: &Fields, build: Build) -> Result<Dense> {
        let input = f.positive("input_height", 0, "Dense")?;
        let output = f.positive("output_height", 0, "Dense")?;
        Dense::new(input, output, f.activation()?, f.bool("bias", false)?, build.seed, build.codec)
    }

    /// Rows of width `input_size` in a batch: the last axis when it is `input_size` wide
    /// (PyTorch's Linear), else the whole sample flattened (e.g. after a convolution).
    fn rows(&self, x: &Input) -> Result<usize> {
        x.check_len()?;
        self.output_shape(x.shape)?;
        Ok(x.data.len() / self.input_size)
    }

    fn preactivation(&self, x: &Input, schedule: Schedule) -> Result<(Vec<f32>, Shape)> {
        let rows = self.rows(x)?;
        let store = self.weights.read().unwrap();
        let mut y = kernel::forward(x.data, rows, self.input_size, store.view()?, self.output_size, schedule);
        drop(store);
        self.add_bias(&mut y)?;
        Ok((y, self.output_shape(x.shape)?))
    }

    fn add_bias(&self, y: &mut [f32]) -> Result<()> {
        if let Some(bias) = &self.bias {
            let store = bias.read().unwrap();
            let b = store.master()?;
            for row in y.chunks_exact_mut(self.output_size) {
                row.iter_mut().zip(b).for_each(|(v, &bv)| *v += bv);
            }
        }
        Ok(())
    }

    fn infer_gpu(&self, x: &Input) -> Result<Vec<f32>> {
        let rows = self.rows(x)?;
        let store = self.weights.read().unwrap();
        let weights = crate::gpu::GpuWeights::of(&store)?;
        let bias_store = self.bias.as_ref().map(|b| b.read().unwrap());
        let bias = match &bias_store {
            Some(s) => Some(s.master()?),
            None => None,
        };
        crate::gpu::dense_forward(x.data, rows, self.input_size, self.output_size, weights, bias, self.activation)
    }
}

impl LayerOps for Dense {
    fn type_name(&self) -> &'static str {
        "Dense"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Shape> {
        match input.split_last() {
            Some((&last, rest)) if last == self.input_size => Ok([rest, &[self.output_size]].concat()),
            _ if input.iter().product::<usize>() == self.input_size => Ok(vec![self.output_size]),
            _ => Err(Error::Shape(format!(
                "Dense expects samples of width {} (last axis or flattened), got sample shape {input:?}",
                self.input_size
            ))),
        }
    }

    fn input_shape(&self) -> Option<Shape> {
        Some(vec![self.input_size])
    }

    fn params(&self) -> Vec<Param> {
        let mut p = vec![self.weights.clone()];
        p.extend(self.bias.clone());
        p
    }

    fn morphable(&self) -> Vec<Param> {
        vec![self.weights.clone()]
    }

    fn activation(&self) -> Option<Activation> {
        Some(self.activation)
    }

    fn infer(&self, x: Input, ctx: &Ctx) -> Result<Vec<f32>> {
        if ctx.device == Device::Gpu {
            return self.infer_gpu(&x);
        }
        let (mut y, _) = self.preactivation(&x, ctx.schedule)?;
        self.activation.apply_slice(&mut y);
        Ok(y)
    }

    fn forward_train(&self, x: Input, ctx: &Ctx) -> Result<Saved> {
        let (pre, shape) = self.preactivation(&x, ctx.schedule)?;
        Ok(activated(self.activation, pre, shape))
    }

    fn backward(&self, x: Input, saved: &Saved, grad_out: &[f32], ctx: &Ctx, need_input: bool) -> Result<Grads> {
        check_grad("Dense", grad_out, saved)?;
        let (k, n) = (self.input_size, self.output_size);
        let rows = self.rows(&x)?;
        let g = through_activation(self.activation, grad_out, saved.state::<Vec<f32>>());
        let input = if need_input {
            let store = self.weights.read().unwrap();
            kernel::backward_input(&g, rows, n, store.view()?, k, ctx.schedule)
        } else {
            Vec::new()
        };
        let mut params = vec![(self.weights.clone(), kernel::weight_grad(&g, rows, n, x.data, k, ctx.schedule))];
        if let Some(bias) = &self.bias {
            params.push((bias.clone(), kernel::column_sums(&g, rows, n)));
        }
        Ok(Grads::new(input, params))
    }

    fn deep_clone(&self) -> Layer {
        Layer::Dense(Dense { weights: copy_param(&self.weights), bias: self.bias.as_ref().map(copy_param), ..self.clone() })
    }

    fn spec(&self) -> Map<String, Value> {
        let mut o = Map::new();
        o.insert("type".into(), json!("Dense"));
        o.insert("activation".into(), json!(self.activation.name()));
        o.insert("input_height".into(), json!(self.input_size));
        o.insert("output_height".into(), json!(self.output_size));
        if self.bias.is_some() {
            o.insert("bias".into(), json!(true));
        }
        o
    }
}
