//! SwiGLU forward on the GPU: gate and up projections fused with act(gate)·up in one kernel
//! (shaders/dense.wgsl, GATED), then the down projection (the dense kernel); one pass, one readback.

use super::context::{context, Context, Step};
use super::dense::{dense_step, tiled_pipeline, Linear, Params, Tile};
use super::{activation_code, weights, GpuWeights};
use crate::activation::Activation;
use crate::error::{shape_err, Error, Result};


/// The three projections (gate and up [hidden][model], down [model][hidden], any dtype, decoded
/// in the shader) and their float32 biases.
#[derive(Clone, Copy)]
pub struct SwiGluWeights<'a> {
    pub gate: GpuWeights<'a>,
    pub up: GpuWeights<'a>,
    pub down: GpuWeights<'a>,
    pub biases: Option<[&'a [f32]; 3]>,
}

/// y = W_down·(act(W_gate·x + b_gate) ⊙ (W_up·x + b_up)) + b_down for each of the `rows` rows of
/// x ([rows][model]); act is SiLU or ReLU².
pub fn swiglu_forward(
    x: &[f32],
    rows: usize,
    model: usize,
    hidden: usize,
    weights: &SwiGluWeights<'_>,
    activation: Activation,
) -> Result<Vec<f32>> {
    check(x, rows, model, hidden, weights)?;
    let ctx = context()?;
    if rows == 0 {
        return Ok(Vec::new());
    }
    ctx.scoped("swiglu forward", || {
        let x = ctx.storage("swiglu x", x)?;
        let a = ctx.output("swiglu gated", rows * hidden)?;
        let y = ctx.output("swiglu y", rows * model)?;
        let biases = weights.biases.map(|[gate, up, down]| ([gate, up], down));
        let steps = [
            gate_up_step(ctx, &x, &a, rows, model, hidden, weights, biases.map(|b| b.0), activation)?,
            dense_step(
                ctx,
                &a,
                &y,
                Linear {
                    rows,
                    in_features: hidden,
                    out_features: model,
                    weights: weights.down,
                    bias: biases.map(|b| b.1),
                    activation: Activation::Linear,
                },
            )?,
        ];
        ctx.run_steps(&steps, &y, rows * model)
    })
}

/// The fused gate/up kernel writing a = act(gate)·up ([rows][hidden]) to `a`.
#[allow(clippy::too_many_arguments)]
fn gate_up_step(
    ctx: &Context,
    x: &wgpu::Buffer,
    a: &wgpu::Buffer,
    rows: usize,
    model: usize,
    hidden: usize,
    weights: &SwiGluWeights<'_>,
    biases: Option<[&[f32]; 2]>,
    activation: Activation,
) -> Result<Step> {
    let tile = Tile::choose_with(&ctx.limits, rows, 2);
    let grid = (hidden.div_ceil(tile.cols() as usize), rows.div_ceil(tile.rows() as usize));
    let max_groups = ctx.limits.max_compute_workgroups_per_dimension as usize;
    if grid.0 > max_groups || grid.1 > max_groups {
        return Err(Error::Gpu(format!(
            "swiglu_forward: {rows}×{hidden} gated values need {}×{} workgroups; this GPU \
             dispatches at most {max_groups} per dimension (split the batch)",
            grid.0, grid.1
        )));
    }
    let pipeline = tiled_pipeline(ctx, &tile.header(), true)?;
    let params = Params {
        batch: rows as u32,
        in_features: model as u32,
        out_features: hidden as u32,
        activation: activation_code(activation),
        has_bias: biases.is_some() as u32,
        _pad: [0; 3],
    };
    // Without biases the kernel never reads them, but the bindings must exist.
    let [gate_bias, up_bias] = biases.unwrap_or([&[], &[]]);
    Ok(Step {
        pipeline,
        buffers: vec![
            ctx.uniform("swiglu params", &params)?,
            x.clone(),
            weights::tensor(ctx, weights.gate)?.buffer,
            ctx.storage("swiglu gate bias", gate_bias)?,
            a.clone(),
            weights::tensor(ctx, weights.up)?.buffer,
            ctx.storage("swiglu up bias", up_bias)?,
        ],
        grid: (grid.0 as u32, grid.1 as u32, 1),
    })
}

fn check(x: &[f32], rows: usize, model: usize, hidden: usize, w: &SwiGluWeights<'_>) -> Result<()> {
    if model == 0 || hidden == 0 || x.len() != rows * model {
        return shape_err(format!(
            "swiglu_forward: x has {} values, expected rows × model = {rows} × {model} (model and hidden {hidden} > 0)",
            x.len()
        ));
    }
    for (name, tensor, want) in [("W_gate", w.gate, hidden * model), ("W_up", w.up, hidden * model), ("W_down", w.down, model * hidden)] {
        if tensor.len() != want {
            return shape_err(format!("swiglu_forward: {name} holds {} values, expected {want}", tensor.len()));
        }
    }
    if let Some(biases) = w.biases {
        for (name, bias, want) in [("b_gate", biases[0], hidden), ("b_up", biases[1], hidden), ("b_down", biases[2], model)] {
            if bias.len() != want {
                return shape_err(format!("swiglu_forward: {name} has {} values, expected {want}", bias.len()));
            }
        }
    }
    // The kernels index with u32.
    if [x.len(), rows * hidden, model * hidden].iter().any(|&len| len > u32::MAX as usize) {
        return shape_err("swiglu_forward: more than 2^32 − 1 values in one tensor");
    }
    Ok(())
}
