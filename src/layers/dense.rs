//! Dense (fully connected) layer: y = f(x·Wᵀ + b), W stored [out][in], bias optional (off by
//! default, as in the reference). Computes from the active dtype's packed weights.

use super::{Device, Grads, Param, Saved};
use crate::activation::Activation;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::kernels::{dense as kernel, Schedule};
use crate::rng::Rng;
use crate::weights::{WeightStore, WeightView};
use std::sync::{Arc, RwLock};

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
        let weights = WeightStore::new(w, vec![output_size, input_size], codec)?;
        let bias = if bias {
            let b: Vec<f32> = (0..output_size).map(|_| rng.uniform(bound)).collect();
            Some(Arc::new(RwLock::new(WeightStore::new(b, vec![output_size], Codec::Standard)?)))
        } else {
            None
        };
        Ok(Dense { input_size, output_size, activation, weights: Arc::new(RwLock::new(weights)), bias })
    }

    pub fn params(&self) -> Vec<Param> {
        let mut p = vec![self.weights.clone()];
        p.extend(self.bias.clone());
        p
    }

    pub fn deep_clone(&self) -> Dense {
        let copy = |p: &Param| Arc::new(RwLock::new(p.read().unwrap().clone()));
        Dense { weights: copy(&self.weights), bias: self.bias.as_ref().map(copy), ..self.clone() }
    }

    fn check_input(&self, x: &[f32], batch: usize) -> Result<()> {
        if x.len() != batch * self.input_size {
            return Err(Error::Shape(format!(
                "Dense expects input width {}, got {} values for batch {batch}",
                self.input_size,
                x.len()
            )));
        }
        Ok(())
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

    fn preactivation(&self, x: &[f32], batch: usize, schedule: Schedule) -> Result<Vec<f32>> {
        self.check_input(x, batch)?;
        let store = self.weights.read().unwrap();
        let mut y = kernel::forward(x, batch, self.input_size, store.view()?, self.output_size, schedule);
        drop(store);
        self.add_bias(&mut y)?;
        Ok(y)
    }

    pub fn infer(&self, x: &[f32], batch: usize, schedule: Schedule, device: Device) -> Result<Vec<f32>> {
        if device == Device::Gpu {
            return self.infer_gpu(x, batch);
        }
        let mut y = self.preactivation(x, batch, schedule)?;
        self.activation.apply_slice(&mut y);
        Ok(y)
    }

    fn infer_gpu(&self, x: &[f32], batch: usize) -> Result<Vec<f32>> {
        self.check_input(x, batch)?;
        let store = self.weights.read().unwrap();
        let weights = match store.view()? {
            WeightView::F32(values) => crate::gpu::GpuWeights::F32 { key: store.generation(), values },
            WeightView::Packed(p) => crate::gpu::GpuWeights::Packed(p),
        };
        let bias_store = self.bias.as_ref().map(|b| b.read().unwrap());
        let bias = match &bias_store {
            Some(s) => Some(s.master()?),
            None => None,
        };
        crate::gpu::dense_forward(x, batch, self.input_size, self.output_size, weights, bias, self.activation)
    }

    pub fn forward_train(&self, x: &[f32], batch: usize, schedule: Schedule) -> Result<Saved> {
        let pre = self.preactivation(x, batch, schedule)?;
        let mut post = pre.clone();
        self.activation.apply_slice(&mut post);
        Ok(Saved { pre, post })
    }

    pub fn backward(&self, x: &[f32], saved: &Saved, grad_out: &[f32], batch: usize, schedule: Schedule, need_input: bool) -> Result<Grads> {
        let (k, n) = (self.input_size, self.output_size);
        if grad_out.len() != batch * n {
            return Err(Error::Shape(format!("Dense gradient has {} values, expected {}", grad_out.len(), batch * n)));
        }
        let g: Vec<f32> = match self.activation {
            Activation::Linear => grad_out.to_vec(),
            Activation::Relu => grad_out.iter().zip(&saved.pre).map(|(&go, &p)| if p > 0.0 { go } else { 0.0 }).collect(),
            act => grad_out.iter().zip(&saved.pre).map(|(&go, &p)| go * act.derivative(p)).collect(),
        };
        let input = if need_input {
            let store = self.weights.read().unwrap();
            kernel::backward_input(&g, batch, n, store.view()?, k, schedule)
        } else {
            Vec::new()
        };
        let mut params = vec![kernel::weight_grad(&g, batch, n, x, k, schedule)];
        if self.bias.is_some() {
            params.push(kernel::column_sums(&g, batch, n));
        }
        Ok(Grads { input, params })
    }
}
