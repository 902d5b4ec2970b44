//! RMSNorm / LayerNorm forward on the GPU (shaders/norm.wgsl): one workgroup per row, one
//! encoder / compute pass / submit per call, read back through staging.

use super::cache;
use super::context::context;
use crate::error::{shape_err, Error, Result};

const NORM_WGSL: &str = include_str!("../../shaders/norm.wgsl");

/// The uniform `Params` of shaders/norm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    width: u32,
    centered: u32,
    epsilon: f32,
}

/// y = (x − μ)·(E[(x − μ)²] + ε)^−½·γ + β for every row of `gain.len()` values of x; μ is the
/// row mean when `centered` (LayerNorm) and 0 otherwise (RMSNorm, with β all zeros).
pub fn norm_forward(x: &[f32], gain: &[f32], shift: &[f32], centered: bool, epsilon: f64) -> Result<Vec<f32>> {
    let width = gain.len();
    if width == 0 || !x.len().is_multiple_of(width) || shift.len() != width {
        return shape_err(format!(
            "norm_forward: x has {} values, gain {width} and shift {}; x must be whole rows of the gain's width",
            x.len(),
            shift.len()
        ));
    }
    let ctx = context()?;
    let rows = x.len() / width;
    if rows == 0 {
        return Ok(Vec::new());
    }
    let max_groups = ctx.limits.max_compute_workgroups_per_dimension as usize;
    if rows > max_groups {
        return Err(Error::Gpu(format!(
            "norm_forward: {rows} rows need as many workgroups; this GPU dispatches at most {max_groups} (split the batch)"
        )));
    }
    // The largest power of two up to 256 threads that the device allows.
    let limit = ctx.limits.max_compute_invocations_per_workgroup.min(ctx.limits.max_compute_workgroup_size_x).clamp(1, 256);
    let threads = 1u32 << (31 - limit.leading_zeros());
    let pipeline = cache::pipeline(ctx, "norm", format!("const WG: u32 = {threads}u;\n"), &[NORM_WGSL])?;
    let params = Params { rows: rows as u32, width: width as u32, centered: centered as u32, epsilon: epsilon as f32 };
    ctx.scoped("norm forward", || {
        use wgpu::BufferUsages as U;
        let params = ctx.buffer_with("norm params", bytemuck::bytes_of(&params), U::UNIFORM)?;
        let x_buffer = ctx.buffer_with("norm x", bytemuck::cast_slice(x), U::STORAGE)?;
        let gain = ctx.buffer_with("norm gain", bytemuck::cast_slice(gain), U::STORAGE)?;
        let shift = ctx.buffer_with("norm shift", bytemuck::cast_slice(shift), U::STORAGE)?;
        let y = ctx.empty_buffer("norm y", (x.len() * 4) as u64, U::STORAGE | U::COPY_SRC)?;
        ctx.dispatch_and_read(&pipeline, &[&params, &x_buffer, &gain, &shift, &y], (rows as u32, 1, 1), &y, x.len())
    })
}
