//! Differentiable k-means forward on the GPU (shaders/kmeans.wgsl): one workgroup per sample,
//! centroids decoded in the shader from their packed version, one dispatch and one submit per call.

use super::context::context;
use super::softmax::threads_for;
use super::WORKGROUP_WGSL;
use super::{activation_code, cache, weights, GpuWeights};
use crate::activation::Activation;
use crate::error::{shape_err, Error, Result};

const KMEANS_WGSL: &str = include_str!("../../shaders/kmeans.wgsl");
const ACTIVATION_WGSL: &str = include_str!("../../shaders/activation.wgsl");

/// The uniform `Params` of shaders/kmeans.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    features: u32,
    clusters: u32,
    features_out: u32,
    activation: u32,
    scale: f32,
    _pad: [u32; 2],
}

/// For every sample of `features` values of x: a = softmax(−‖x − c_k‖² / 2τ²) over the centroids
/// [K][features]; the output is act(a) ([K] per sample) or, with `features_out`, act(Σ_k a_k c_k)
/// ([features] per sample).
pub fn kmeans_forward(
    x: &[f32],
    features: usize,
    centroids: GpuWeights<'_>,
    temperature: f64,
    features_out: bool,
    activation: Activation,
) -> Result<Vec<f32>> {
    if features == 0 || !x.len().is_multiple_of(features) || centroids.is_empty() || !centroids.len().is_multiple_of(features) {
        return shape_err(format!(
            "kmeans_forward: x has {} values and the centroids {}; both must be whole rows of {features} features",
            x.len(),
            centroids.len()
        ));
    }
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(Error::Value(format!("kmeans_forward: the temperature must be > 0, got {temperature}")));
    }
    let (rows, clusters) = (x.len() / features, centroids.len() / features);
    let out_len = rows * if features_out { features } else { clusters };
    // The kernel indexes with u32.
    if [x.len(), centroids.len(), rows * clusters].iter().any(|&len| len > u32::MAX as usize) {
        return shape_err("kmeans_forward: more than 2^32 − 1 values in one tensor");
    }
    let ctx = context()?;
    if rows == 0 {
        return Ok(Vec::new());
    }
    let threads = threads_for(ctx, clusters.max(if features_out { features } else { 0 }));
    let loader = weights::loader("c", 2);
    let header = format!("const WG: u32 = {threads}u;\n");
    let pipeline = cache::pipeline(ctx, "kmeans", header, &[WORKGROUP_WGSL, ACTIVATION_WGSL, &loader, KMEANS_WGSL])?;
    let params = Params {
        rows: rows as u32,
        features: features as u32,
        clusters: clusters as u32,
        features_out: features_out as u32,
        activation: activation_code(activation),
        scale: (1.0 / (2.0 * temperature * temperature)) as f32,
        _pad: [0; 2],
    };
    let c = weights::tensor(ctx, centroids)?;
    ctx.scoped("kmeans forward", || {
        let params = ctx.uniform("kmeans params", &params)?;
        let x_buffer = ctx.storage("kmeans x", x)?;
        let a = ctx.output("kmeans assignments", rows * clusters)?;
        let y = ctx.output("kmeans y", out_len)?;
        let grid = ctx.grid(rows)?;
        ctx.dispatch_and_read(&pipeline, &[&params, &x_buffer, &c.buffer, &a, &y], grid, &y, out_len)
    })
}
