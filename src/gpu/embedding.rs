//! Embedding lookup on the GPU (shaders/embedding.wgsl): checked token ids in, the rows of the
//! packed table decoded in the shader and activated, one dispatch and one submit per call.

use super::context::context;
use super::{activation_code, cache, weights, GpuWeights};
use crate::activation::Activation;
use crate::error::{shape_err, Result};

const EMBEDDING_WGSL: &str = include_str!("../../shaders/embedding.wgsl");
const ACTIVATION_WGSL: &str = include_str!("../../shaders/activation.wgsl");
/// Threads per workgroup: one output value each (every device allows 64).
const THREADS: usize = 64;

/// The uniform `Params` of shaders/embedding.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    positions: u32,
    dim: u32,
    activation: u32,
    _pad: u32,
}

/// y[p] = act(table row ids[p]) for a table [vocab][dim]; every id must be < vocab (the layer
/// checks the ids it was given and names a bad one).
pub fn embedding_forward(ids: &[u32], table: GpuWeights<'_>, dim: usize, activation: Activation) -> Result<Vec<f32>> {
    if dim == 0 || !table.len().is_multiple_of(dim) {
        return shape_err(format!("embedding_forward: the table holds {} values, not whole rows of {dim}", table.len()));
    }
    let vocab = table.len() / dim;
    if let Some((p, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
        return shape_err(format!("embedding_forward: id {id} at position {p} is past the table's {vocab} rows"));
    }
    let out_len = ids.len() * dim;
    // The kernel indexes with u32.
    if out_len > u32::MAX as usize || table.len() > u32::MAX as usize {
        return shape_err(format!("embedding_forward: {} positions × {dim} or the table of {} values pass 2^32 − 1", ids.len(), table.len()));
    }
    let ctx = context()?;
    if out_len == 0 {
        return Ok(Vec::new());
    }
    let loader = weights::loader("table", 2);
    let header = format!("const WG: u32 = {THREADS}u;\n");
    let pipeline = cache::pipeline(ctx, "embedding", header, &[ACTIVATION_WGSL, &loader, EMBEDDING_WGSL])?;
    let params = Params { positions: ids.len() as u32, dim: dim as u32, activation: activation_code(activation), _pad: 0 };
    let table = weights::tensor(ctx, table)?;
    ctx.scoped("embedding forward", || {
        let params = ctx.uniform("embedding params", &params)?;
        let ids = ctx.buffer_with("embedding ids", bytemuck::cast_slice(ids), wgpu::BufferUsages::STORAGE)?;
        let y = ctx.output("embedding y", out_len)?;
        let grid = ctx.grid(out_len.div_ceil(THREADS))?;
        ctx.dispatch_and_read(&pipeline, &[&params, &ids, &table.buffer, &y], grid, &y, out_len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn ids_past_the_table_are_errors_before_any_gpu_work() {
        let table = [0f32; 12];
        let result = embedding_forward(&[0, 3, 2], GpuWeights::F32 { key: 0, values: &table }, 4, Activation::Linear);
        assert!(matches!(result, Err(Error::Shape(message)) if message.contains("id 3 at position 1 is past the table's 3 rows")));
    }
}
