//! Layers: one file per family; `Layer` dispatches. Weighted layers hold their tensors as `Param`s
//! (shared, lockable WeightStores) so a Python handle and the network see the same weights.

pub mod dense;

use crate::error::Result;
use crate::kernels::Schedule;
use crate::weights::WeightStore;
use std::sync::{Arc, RwLock};

pub use dense::Dense;

pub type Param = Arc<RwLock<WeightStore>>;

/// Where a forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Gpu,
}

impl Device {
    pub fn parse(name: &str) -> crate::error::Result<Device> {
        match name.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "gpu" | "wgpu" => Ok(Device::Gpu),
            _ => Err(crate::error::Error::Value(format!("unknown device {name:?}; expected 'cpu' or 'gpu'"))),
        }
    }
}

/// What a training forward keeps for the backward pass.
pub struct Saved {
    pub pre: Vec<f32>,
    pub post: Vec<f32>,
}

/// Gradients of one layer: input gradient (empty when not asked for) and one gradient per
/// `params()` entry (same order).
pub struct Grads {
    pub input: Vec<f32>,
    pub params: Vec<Vec<f32>>,
}

#[derive(Debug, Clone)]
pub enum Layer {
    Dense(Dense),
}

impl Layer {
    /// The reference's type name (LayerType String()).
    pub fn type_name(&self) -> &'static str {
        match self {
            Layer::Dense(_) => "Dense",
        }
    }
    pub fn input_size(&self) -> usize {
        match self {
            Layer::Dense(d) => d.input_size,
        }
    }
    pub fn output_size(&self) -> usize {
        match self {
            Layer::Dense(d) => d.output_size,
        }
    }
    /// Trainable tensors, in the order `Grads::params` uses.
    pub fn params(&self) -> Vec<Param> {
        match self {
            Layer::Dense(d) => d.params(),
        }
    }
    /// Tensors that `morph_all` converts (biases stay float32).
    pub fn morphable(&self) -> Vec<Param> {
        match self {
            Layer::Dense(d) => vec![d.weights.clone()],
        }
    }
    pub fn infer(&self, x: &[f32], batch: usize, schedule: Schedule, device: Device) -> Result<Vec<f32>> {
        match self {
            Layer::Dense(d) => d.infer(x, batch, schedule, device),
        }
    }
    pub fn forward_train(&self, x: &[f32], batch: usize, schedule: Schedule) -> Result<Saved> {
        match self {
            Layer::Dense(d) => d.forward_train(x, batch, schedule),
        }
    }
    /// `need_input`: whether the caller uses `Grads::input` (the first layer's is skipped).
    pub fn backward(&self, x: &[f32], saved: &Saved, grad_out: &[f32], batch: usize, schedule: Schedule, need_input: bool) -> Result<Grads> {
        match self {
            Layer::Dense(d) => d.backward(x, saved, grad_out, batch, schedule, need_input),
        }
    }
    /// A deep copy (fresh weight buffers).
    pub fn deep_clone(&self) -> Layer {
        match self {
            Layer::Dense(d) => Layer::Dense(d.deep_clone()),
        }
    }
}
