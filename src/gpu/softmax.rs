//! Softmax-family maps on the GPU (shaders/softmax.wgsl): one workgroup per normalised vector,
//! one dispatch and one submit per call. The Softmax layer chooses the map of each variant.

use super::WORKGROUP_WGSL;
use super::cache;
use super::context::{context, Context};
use crate::error::{shape_err, Error, Result};

const SOFTMAX_WGSL: &str = include_str!("../../shaders/softmax.wgsl");

/// What each normalised vector ("domain") of logits z = (x + noise) / T becomes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SoftmaxMap<'a> {
    /// softmax(z); with a mask (one flag per domain position) over the kept positions only,
    /// the others 0.
    Softmax { mask: Option<&'a [bool]> },
    /// softmax(z / σ), σ = max(std(x), 1e-6) per domain.
    Adaptive,
    /// The mean of softmax(z / f) for f = 0.5, 1, 2.
    Mixture,
    /// softmax over groups of `group` values of their means, times softmax within each group.
    Hierarchical { group: usize },
    Sparsemax,
    /// α-entmax for 1 < α < 2 (1.5 in closed form).
    Entmax { alpha: f64 },
}

/// The uniform `Params` of shaders/softmax.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    domains: u32,
    len: u32,
    kind: u32,
    group: u32,
    temperature: f32,
    alpha: f32,
    has_noise: u32,
    has_mask: u32,
}

/// Threads per workgroup: a power of two from 32 to 256 that covers `len` values where it can,
/// within the device's limits (several threads per value only idle).
pub(crate) fn threads_for(ctx: &Context, len: usize) -> u32 {
    let limit = ctx.limits.max_compute_invocations_per_workgroup.min(ctx.limits.max_compute_workgroup_size_x).clamp(1, 256);
    let wanted = (len.clamp(32, 256) as u32).next_power_of_two();
    wanted.min(1u32 << (31 - limit.leading_zeros()))
}

/// `map` applied to every run of `len` values of x (plus `noise`, Gumbel's, when given) at
/// temperature `temperature`.
pub fn softmax_forward(x: &[f32], len: usize, temperature: f64, map: SoftmaxMap<'_>, noise: Option<&[f32]>) -> Result<Vec<f32>> {
    check(x, len, temperature, map, noise)?;
    let ctx = context()?;
    let domains = x.len() / len;
    if domains == 0 {
        return Ok(Vec::new());
    }
    let (kind, group, alpha, mask) = match map {
        SoftmaxMap::Softmax { mask } => (0, 0, 0.0, mask),
        SoftmaxMap::Adaptive => (1, 0, 0.0, None),
        SoftmaxMap::Mixture => (2, 0, 0.0, None),
        SoftmaxMap::Hierarchical { group } => (3, group, 0.0, None),
        SoftmaxMap::Sparsemax => (4, 0, 2.0, None),
        SoftmaxMap::Entmax { alpha } if alpha == 1.5 => (5, 0, alpha, None),
        SoftmaxMap::Entmax { alpha } => (6, 0, alpha, None),
    };
    let threads = threads_for(ctx, len);
    let pipeline = cache::pipeline(ctx, "softmax", format!("const WG: u32 = {threads}u;\n"), &[WORKGROUP_WGSL, SOFTMAX_WGSL])?;
    let params = Params {
        domains: domains as u32,
        len: len as u32,
        kind,
        group: group as u32,
        temperature: temperature as f32,
        alpha: alpha as f32,
        has_noise: noise.is_some() as u32,
        has_mask: mask.is_some() as u32,
    };
    let mask: Vec<u32> = mask.unwrap_or(&[]).iter().map(|&keep| keep as u32).collect();
    ctx.scoped("softmax forward", || {
        let params = ctx.uniform("softmax params", &params)?;
        let x_buffer = ctx.storage("softmax x", x)?;
        // Bindings the kernel does not read (no noise, no mask) must still exist.
        let noise = ctx.storage("softmax noise", noise.unwrap_or(&[]))?;
        let mask = ctx.buffer_with("softmax mask", bytemuck::cast_slice(&mask), wgpu::BufferUsages::STORAGE)?;
        let y = ctx.output("softmax y", x.len())?;
        let grid = ctx.grid(domains)?;
        ctx.dispatch_and_read(&pipeline, &[&params, &x_buffer, &noise, &mask, &y], grid, &y, x.len())
    })
}

fn check(x: &[f32], len: usize, temperature: f64, map: SoftmaxMap<'_>, noise: Option<&[f32]>) -> Result<()> {
    if len == 0 || !x.len().is_multiple_of(len) {
        return shape_err(format!("softmax_forward: x has {} values, not a whole number of domains of {len}", x.len()));
    }
    if x.len() > u32::MAX as usize {
        return shape_err("softmax_forward: more than 2^32 − 1 values in one call");
    }
    if let Some(noise) = noise.filter(|n| n.len() != x.len()) {
        return shape_err(format!("softmax_forward: noise has {} values, x has {}", noise.len(), x.len()));
    }
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(Error::Value(format!("softmax_forward: temperature must be > 0, got {temperature}")));
    }
    match map {
        SoftmaxMap::Softmax { mask: Some(mask) } if mask.len() != len || !mask.contains(&true) => shape_err(format!(
            "softmax_forward: the mask has {} positions ({} kept) for domains of {len}; it needs one per position and at least one kept",
            mask.len(),
            mask.iter().filter(|&&keep| keep).count()
        )),
        SoftmaxMap::Hierarchical { group } if group == 0 || !len.is_multiple_of(group) => {
            shape_err(format!("softmax_forward: hierarchy groups of {group} do not split domains of {len}"))
        }
        SoftmaxMap::Entmax { alpha } if !(alpha > 1.0 && alpha < 2.0) => {
            Err(Error::Value(format!("softmax_forward: entmax α must be in (1, 2) (1 is softmax, 2 sparsemax), got {alpha}")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape_message(result: Result<Vec<f32>>) -> String {
        match result {
            Err(Error::Shape(message)) => message,
            other => panic!("expected a shape error, got {other:?}"),
        }
    }

    #[test]
    fn arguments_that_do_not_fit_are_errors_before_any_gpu_work() {
        let x = [0.5f32; 12];
        assert!(shape_message(softmax_forward(&x, 5, 1.0, SoftmaxMap::Mixture, None)).contains("12 values"));
        let mask = [true, false, true];
        assert!(shape_message(softmax_forward(&x, 6, 1.0, SoftmaxMap::Softmax { mask: Some(&mask) }, None)).contains("mask has 3 positions"));
        assert!(shape_message(softmax_forward(&x, 6, 1.0, SoftmaxMap::Hierarchical { group: 4 }, None)).contains("groups of 4"));
        assert!(shape_message(softmax_forward(&x, 6, 1.0, SoftmaxMap::Adaptive, Some(&[0.0; 6]))).contains("noise has 6 values"));
        let alpha = softmax_forward(&x, 6, 1.0, SoftmaxMap::Entmax { alpha: 2.0 }, None);
        assert!(matches!(alpha, Err(Error::Value(message)) if message.contains("got 2")));
    }
}
