//! The WebGPU backend's public face: availability and adapter info, the weights a kernel reads,
//! and the layer forwards. Submodules: context (adapter, device, error capture, dispatch),
//! cache (weight buffers and pipelines), weights (packed tensors decoded in the shader), one
//! module per kernel family. WGSL sources live in /shaders.

mod attention;
mod cache;
mod context;
mod dense;
mod norm;
mod swiglu;
mod weights;
#[cfg(test)]
pub(crate) mod tests;

pub use attention::{attention_forward, AttentionOutput, AttentionShape, AttentionWeights};
pub use cache::upload_count;
pub use dense::dense_forward;
pub use norm::norm_forward;
pub use swiglu::{swiglu_forward, SwiGluWeights};

use crate::activation::Activation;
use crate::error::Result;

/// What the process-wide GPU context runs on, and the limits kernels are sized from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_compute_workgroup_size_x: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_storage_size: u32,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
}

/// True when a GPU context can be (or already was) created. Never panics.
pub fn gpu_available() -> bool {
    context::context().is_ok()
}

/// The adapter and limits of the process-wide context (created on first use).
pub fn gpu_info() -> Result<GpuInfo> {
    Ok(context::context()?.info.clone())
}

/// The weights a kernel reads: the float32 master (key = WeightStore::generation()) or a packed
/// version (key = Packed::id), decoded in the shader.
#[derive(Clone, Copy, Debug)]
pub enum GpuWeights<'a> {
    F32 { key: u64, values: &'a [f32] },
    Packed(&'a crate::codec::Packed),
}

impl<'a> GpuWeights<'a> {
    /// The version `store` computes with now.
    pub fn of(store: &'a crate::weights::WeightStore) -> Result<GpuWeights<'a>> {
        Ok(match store.view()? {
            crate::weights::WeightView::F32(values) => GpuWeights::F32 { key: store.generation(), values },
            crate::weights::WeightView::Packed(p) => GpuWeights::Packed(p),
        })
    }

    pub fn len(&self) -> usize {
        match self {
            GpuWeights::F32 { values, .. } => values.len(),
            GpuWeights::Packed(p) => p.n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The activation codes of shaders/activation.wgsl.
pub(crate) fn activation_code(activation: Activation) -> u32 {
    match activation {
        Activation::Relu => 0,
        Activation::Silu => 1,
        Activation::Gelu => 2,
        Activation::GeluExact => 3,
        Activation::Tanh => 4,
        Activation::Sigmoid => 5,
        Activation::LeakyRelu => 6,
        Activation::Relu2 => 7,
        Activation::Linear => 8,
    }
}
