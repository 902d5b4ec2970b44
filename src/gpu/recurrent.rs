//! RNN / LSTM forward on the GPU: the input projection of every step in one tiled product
//! (shaders/dense.wgsl), then per step the recurrent product (dense.wgsl again) and the cell
//! (shaders/recurrent.wgsl); all dispatches in one compute pass, one submit, one readback.

use super::context::{context, Dispatch};
use super::dense::tiled_pipeline;
use super::{activation_code, cache, weights, GpuWeights};
use crate::activation::Activation;
use crate::error::{shape_err, Error, Result};

const RECURRENT_WGSL: &str = include_str!("../../shaders/recurrent.wgsl");
const ACTIVATION_WGSL: &str = include_str!("../../shaders/activation.wgsl");

/// The tile shaders/dense.wgsl is specialised with for both products: 8 × 8 threads of 2 × 2
/// outputs, 16 columns of K per stage. 64 threads and 2 KiB of workgroup memory fit every
/// WebGPU device, so no limit check is needed.
const MATMUL_TILE: &str = "const WG_X: u32 = 8u;\nconst WG_Y: u32 = 8u;\nconst RM: u32 = 2u;\nconst RN: u32 = 2u;\nconst TK: u32 = 16u;\n";
/// Output rows and columns of one MATMUL_TILE workgroup.
const TILE_ROWS: usize = 16;
const TILE_COLS: usize = 16;
/// Threads per workgroup of the cell kernel: one (item, hidden unit) each.
const CELL_THREADS: usize = 64;

/// The uniform `Params` of shaders/dense.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MatmulParams {
    batch: u32,
    in_features: u32,
    out_features: u32,
    activation: u32,
    has_bias: u32,
    _pad: [u32; 3],
}

/// The uniform `Params` of shaders/recurrent.wgsl (one per step).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct StepParams {
    batch: u32,
    hidden: u32,
    steps: u32,
    step: u32,
    lstm: u32,
    activation: u32,
    sequences: u32,
    _pad: u32,
}

/// The recurrence: an RNN applies its activation (tanh or ReLU) to the single gate block; an
/// LSTM has four blocks stacked i, f, g, o.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuCell {
    Rnn(Activation),
    Lstm,
}

/// A batch of sequences: x is [batch][steps][input]; the output every hidden state
/// [batch][steps][hidden] or, without `return_sequences`, the last one [batch][hidden].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequenceShape {
    pub batch: usize,
    pub steps: usize,
    pub input: usize,
    pub hidden: usize,
    pub return_sequences: bool,
}

/// h_t = cell(x_t·W_ihᵀ + b + h_{t−1}·W_hhᵀ) from h_0 = 0 (and c_0 = 0), W_ih [gates·hidden][input]
/// and W_hh [gates·hidden][hidden] decoded in the shader, b float32 [gates·hidden].
pub fn recurrent_forward(
    x: &[f32],
    shape: SequenceShape,
    cell: GpuCell,
    w_ih: GpuWeights<'_>,
    w_hh: GpuWeights<'_>,
    bias: &[f32],
) -> Result<Vec<f32>> {
    check(x, shape, cell, w_ih, w_hh, bias)?;
    let SequenceShape { batch, steps, input, hidden, return_sequences } = shape;
    let (width, rows) = (gates(cell) * hidden, batch * steps);
    let ctx = context()?;
    if batch == 0 {
        return Ok(Vec::new());
    }
    let max_groups = ctx.limits.max_compute_workgroups_per_dimension as usize;
    let input_grid = (width.div_ceil(TILE_COLS), rows.div_ceil(TILE_ROWS));
    if input_grid.0 > max_groups || input_grid.1 > max_groups {
        return Err(Error::Gpu(format!(
            "recurrent_forward: {rows} rows × {width} gate values need {}×{} workgroups; this GPU dispatches at most {max_groups} per dimension (split the batch)",
            input_grid.0, input_grid.1
        )));
    }
    let recurrent_grid = (input_grid.0 as u32, batch.div_ceil(TILE_ROWS) as u32, 1);
    let input_grid = (input_grid.0 as u32, input_grid.1 as u32, 1);
    let cell_grid = ctx.grid((batch * hidden).div_ceil(CELL_THREADS))?;
    let matmul = tiled_pipeline(ctx, MATMUL_TILE, false)?;
    let step_kernel = cache::pipeline(ctx, "recurrent-step", format!("const WG: u32 = {CELL_THREADS}u;\n"), &[ACTIVATION_WGSL, RECURRENT_WGSL])?;
    let w_ih = weights::tensor(ctx, w_ih)?;
    let w_hh = weights::tensor(ctx, w_hh)?;
    let product = |batch: usize, in_features: usize, has_bias: bool| MatmulParams {
        batch: batch as u32,
        in_features: in_features as u32,
        out_features: width as u32,
        activation: activation_code(Activation::Linear),
        has_bias: has_bias as u32,
        _pad: [0; 3],
    };
    let (lstm, activation) = match cell {
        GpuCell::Rnn(activation) => (0, activation_code(activation)),
        GpuCell::Lstm => (1, 0),
    };
    let out_len = if return_sequences { rows * hidden } else { batch * hidden };
    ctx.scoped("recurrent forward", || {
        let input_params = ctx.uniform("recurrent input params", &product(rows, input, true))?;
        let recurrent_params = ctx.uniform("recurrent params", &product(batch, hidden, false))?;
        let step_params = (0..steps)
            .map(|step| {
                let params = StepParams {
                    batch: batch as u32,
                    hidden: hidden as u32,
                    steps: steps as u32,
                    step: step as u32,
                    lstm,
                    activation,
                    sequences: return_sequences as u32,
                    _pad: 0,
                };
                ctx.uniform("recurrent step params", &params)
            })
            .collect::<Result<Vec<_>>>()?;
        let x = ctx.storage("recurrent x", x)?;
        let bias = ctx.storage("recurrent bias", bias)?;
        // The recurrent product has no bias, but the binding must exist.
        let no_bias = ctx.storage("recurrent no bias", &[])?;
        let pre = ctx.output("recurrent input projection", rows * width)?;
        let recurrent = ctx.output("recurrent product", batch * width)?;
        let state = ctx.output("recurrent hidden state", batch * hidden)?;
        let cells = ctx.output("recurrent cell state", batch * hidden)?;
        let out = ctx.output("recurrent output", out_len)?;
        let input_bindings = [&input_params, &x, &w_ih.buffer, &bias, &pre];
        let recurrent_bindings = [&recurrent_params, &state, &w_hh.buffer, &no_bias, &recurrent];
        let step_bindings: Vec<[&wgpu::Buffer; 6]> =
            step_params.iter().map(|params| [params, &pre, &recurrent, &state, &cells, &out]).collect();
        let mut dispatches = vec![Dispatch { pipeline: &matmul, bindings: &input_bindings, grid: input_grid }];
        for (step, bindings) in step_bindings.iter().enumerate() {
            if step > 0 {
                dispatches.push(Dispatch { pipeline: &matmul, bindings: &recurrent_bindings, grid: recurrent_grid });
            }
            dispatches.push(Dispatch { pipeline: &step_kernel, bindings, grid: cell_grid });
        }
        ctx.run_and_read(&dispatches, &out, out_len)
    })
}

fn gates(cell: GpuCell) -> usize {
    match cell {
        GpuCell::Rnn(_) => 1,
        GpuCell::Lstm => 4,
    }
}

fn check(x: &[f32], shape: SequenceShape, cell: GpuCell, w_ih: GpuWeights<'_>, w_hh: GpuWeights<'_>, bias: &[f32]) -> Result<()> {
    let SequenceShape { batch, steps, input, hidden, .. } = shape;
    if steps == 0 || input == 0 || hidden == 0 {
        return shape_err(format!("recurrent_forward: steps {steps}, input {input} and hidden {hidden} must all be > 0"));
    }
    let width = gates(cell) * hidden;
    let expected = [
        ("x", x.len(), batch * steps * input, "batch × steps × input"),
        ("W_ih", w_ih.len(), width * input, "gates·hidden × input"),
        ("W_hh", w_hh.len(), width * hidden, "gates·hidden × hidden"),
        ("the bias", bias.len(), width, "gates·hidden"),
    ];
    for (what, got, want, formula) in expected {
        if got != want {
            return shape_err(format!("recurrent_forward: {what} has {got} values, expected {formula} = {want} ({shape:?}, {cell:?})"));
        }
    }
    // The kernels index with u32.
    if [x.len(), w_ih.len(), w_hh.len(), batch * steps * width].iter().any(|&len| len > u32::MAX as usize) {
        return shape_err("recurrent_forward: more than 2^32 − 1 values in one tensor");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_of_the_wrong_size_are_named_before_any_gpu_work() {
        let shape = SequenceShape { batch: 2, steps: 3, input: 4, hidden: 5, return_sequences: true };
        let (w_ih, w_hh, bias) = (vec![0f32; 20 * 4], vec![0f32; 20 * 4], vec![0f32; 20]);
        let weights = |values| GpuWeights::F32 { key: 0, values };
        let result = recurrent_forward(&[0.0; 24], shape, GpuCell::Lstm, weights(&w_ih), weights(&w_hh), &bias);
        assert!(matches!(result, Err(Error::Shape(message)) if message.contains("W_hh has 80 values, expected gates·hidden × hidden = 100")));
    }
}
