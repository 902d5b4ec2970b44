//! The WebGPU backend's public face: adapters, availability and info, the GPU memory polyvtd
//! holds, the weights a kernel reads, and the layer forwards. Submodules: context (adapter,
//! device, error capture, dispatch), cache (weight buffers, resident-bytes accounting,
//! pipelines), weights (packed tensors decoded in the shader), one module per kernel family.
//! WGSL sources live in /shaders.

mod attention;
mod cache;
mod context;
mod conv;
pub(crate) mod decoder;
pub(crate) mod decoder_step;
mod dense;
mod embedding;
mod kmeans;
mod norm;
mod recurrent;
pub(crate) mod resident;
mod softmax;
mod swiglu;
mod weights;
#[cfg(test)]
pub(crate) mod tests;

pub use attention::{attention_forward, AttentionOutput, AttentionShape, AttentionWeights};
pub use cache::{register_resident_bytes, upload_count, ResidentBytes};
pub(crate) use context::{context, Context};
pub use conv::conv_forward;
pub use dense::dense_forward;
pub use embedding::embedding_forward;
pub use kmeans::kmeans_forward;
pub use norm::norm_forward;
pub use recurrent::{recurrent_forward, GpuCell, SequenceShape};
pub use softmax::{softmax_forward, SoftmaxMap};
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

/// One adapter wgpu sees (see `gpu_adapters`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuAdapter {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
}

/// The bytes of GPU buffers polyvtd holds now: uploaded weight tensors, and buffers other owners
/// registered (`register_resident_bytes`). Per-call scratch buffers are freed with their call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuMemory {
    pub weights_bytes: u64,
    pub weights_tensors: usize,
    pub other_bytes: u64,
    pub total_bytes: u64,
}

/// True when a GPU context can be (or already was) created and its device is not lost. Never
/// panics.
pub fn gpu_available() -> bool {
    context::context().and_then(|ctx| ctx.check_lost()).is_ok()
}

/// The adapter and limits of the process-wide context (created on first use).
pub fn gpu_info() -> Result<GpuInfo> {
    Ok(context::context()?.info.clone())
}

/// Every adapter wgpu sees (without creating the context); empty when there is none.
pub fn gpu_adapters() -> Vec<GpuAdapter> {
    context::adapters()
}

/// Creates the context on the adapter whose name contains `adapter` (case-insensitive; None: the
/// POLYVTD_ADAPTER or default choice) and returns its info. Once created, the context stays on
/// its adapter: naming another one is a `GpuUnavailable` error that names the adapter in use.
pub fn use_gpu(adapter: Option<&str>) -> Result<GpuInfo> {
    Ok(context::use_adapter(adapter)?.info.clone())
}

/// The GPU memory polyvtd holds; all zero before the context exists (this does not create it).
/// Buffers of weights dropped or replaced since the last GPU call are released first.
pub fn gpu_memory() -> GpuMemory {
    let (weights_bytes, weights_tensors) = context::existing()
        .map(|ctx| context::lock(&ctx.weights).held())
        .unwrap_or((0, 0));
    let other_bytes = cache::registered_bytes();
    GpuMemory {
        weights_bytes,
        weights_tensors,
        other_bytes,
        total_bytes: weights_bytes + other_bytes,
    }
}

/// Destroys the context's device so that tests can check how a lost device is reported; every
/// later GPU call in this process fails with `GpuUnavailable`.
pub fn destroy_device_for_tests() -> Result<()> {
    context::context()?.destroy_device()
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

/// Sums and maxima over a workgroup, for kernels that reduce rows (softmax, k-means, norms).
pub(crate) const WORKGROUP_WGSL: &str = include_str!("../../shaders/workgroup.wgsl");

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
