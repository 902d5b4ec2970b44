//! RMSNorm / LayerNorm forward on the GPU (shaders/norm.wgsl): one workgroup per row, γ and β
//! decoded in the shader from their packed versions, one submit per call.

use super::context::context;
use super::{cache, weights, GpuWeights};
use crate::error::{shape_err, Result};

const NORM_WGSL: &str = include_str!("../../shaders/norm.wgsl");

/// The uniform `Params` of shaders/norm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    width: u32,
    centered: u32,
    epsilon: f32,
    has_shift: u32,
    _pad: [u32; 3],
}

/// y = (x − μ)·(E[(x − μ)²] + ε)^−½·γ + β for every row of `gain.len()` values of x; μ is the
/// row mean when `centered` (LayerNorm) and 0 otherwise (RMSNorm, whose β is None).
pub fn norm_forward(
    x: &[f32],
    gain: GpuWeights<'_>,
    shift: Option<GpuWeights<'_>>,
    centered: bool,
    epsilon: f64,
) -> Result<Vec<f32>> {
    let width = gain.len();
    if width == 0 || !x.len().is_multiple_of(width) || shift.is_some_and(|s| s.len() != width) {
        return shape_err(format!(
            "norm_forward: x has {} values, gain {width} and shift {:?}; x must be whole rows of the gain's width",
            x.len(),
            shift.map(|s| s.len())
        ));
    }
    let ctx = context()?;
    let rows = x.len() / width;
    if rows == 0 {
        return Ok(Vec::new());
    }
    // The largest power of two up to 256 threads that the device allows.
    let limit = ctx.limits.max_compute_invocations_per_workgroup.min(ctx.limits.max_compute_workgroup_size_x).clamp(1, 256);
    let threads = 1u32 << (31 - limit.leading_zeros());
    let source = [weights::loader("gain", 2), weights::loader("shift", 3)].concat();
    let pipeline = cache::pipeline(ctx, "norm", format!("const WG: u32 = {threads}u;\n"), &[super::WORKGROUP_WGSL, &source, NORM_WGSL])?;
    let params = Params {
        rows: rows as u32,
        width: width as u32,
        centered: centered as u32,
        epsilon: epsilon as f32,
        has_shift: shift.is_some() as u32,
        _pad: [0; 3],
    };
    let gain = weights::tensor(ctx, gain)?;
    // Without a β the kernel never reads it, but the binding must exist.
    let shift = weights::tensor(ctx, shift.unwrap_or(GpuWeights::F32 { key: 0, values: &[] }))?;
    ctx.scoped("norm forward", || {
        let params = ctx.uniform("norm params", &params)?;
        let x_buffer = ctx.storage("norm x", x)?;
        let y = ctx.output("norm y", x.len())?;
        let grid = ctx.grid(rows)?;
        ctx.dispatch_and_read(&pipeline, &[&params, &x_buffer, &gain.buffer, &shift.buffer, &y], grid, &y, x.len())
    })
}
