//! The dense forward on the GPU: argument checks, tile sizes from the device limits, kernel
//! specialisation, and one encoder / compute pass / submit per call, read back through staging.
//! Also `dense_step`: a dense projection as a recorded `Step` (gpu/context.rs) that other
//! forwards chain with their own kernels in one pass.

use super::context::{context, Context, Step};
use super::{activation_code, cache, weights, GpuWeights};
use crate::activation::Activation;
use crate::error::{shape_err, Error, Result};

const DENSE_WGSL: &str = include_str!("../../shaders/dense.wgsl");
const ACTIVATION_WGSL: &str = include_str!("../../shaders/activation.wgsl");

/// The uniform `Params` of shaders/dense.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub batch: u32,
    pub in_features: u32,
    pub out_features: u32,
    pub activation: u32,
    pub has_bias: u32,
    pub _pad: [u32; 3],
}

/// A workgroup of wg_x × wg_y threads computes a (wg_y·rm) × (wg_x·rn) output tile, each thread
/// rm × rn outputs, staging x and W through shared memory tk columns of K at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tile {
    wg_x: u32,
    wg_y: u32,
    rm: u32,
    rn: u32,
    tk: u32,
}

impl Tile {
    pub(crate) fn rows(self) -> u32 {
        self.wg_y * self.rm
    }
    pub(crate) fn cols(self) -> u32 {
        self.wg_x * self.rn
    }
    /// Workgroup memory with `weight_tiles` weight tiles staged beside the x tile.
    fn shared_bytes(self, weight_tiles: u32) -> u32 {
        (self.rows() + weight_tiles * self.cols()) * self.tk * 4
    }

    /// A tile shape for `batch` rows, shrunk until it fits the device's workgroup limits.
    pub(crate) fn choose(limits: &wgpu::Limits, batch: usize) -> Tile {
        Tile::choose_with(limits, batch, 1)
    }

    /// As `choose`, for a kernel that stages `weight_tiles` weight tiles (one per weight tensor
    /// it multiplies by) beside the x tile.
    pub(crate) fn choose_with(limits: &wgpu::Limits, batch: usize, weight_tiles: u32) -> Tile {
        let mut tile = match batch {
            0..=4 => Tile {
                wg_x: 64,
                wg_y: 4,
                rm: 1,
                rn: 1,
                tk: 32,
            },
            5..=16 => Tile {
                wg_x: 32,
                wg_y: 8,
                rm: 2,
                rn: 2,
                tk: 16,
            },
            _ => Tile {
                wg_x: 16,
                wg_y: 16,
                rm: 4,
                rn: 4,
                tk: 16,
            },
        };
        let max_threads = limits.max_compute_invocations_per_workgroup.max(1);
        while tile.wg_x * tile.wg_y > max_threads
            || tile.wg_x > limits.max_compute_workgroup_size_x.max(1)
            || tile.wg_y > limits.max_compute_workgroup_size_y.max(1)
        {
            if tile.wg_x >= tile.wg_y {
                tile.wg_x /= 2;
            } else {
                tile.wg_y /= 2;
            }
        }
        while tile.shared_bytes(weight_tiles) > limits.max_compute_workgroup_storage_size && tile.tk > 1 {
            tile.tk /= 2;
        }
        tile
    }

    /// The WGSL constants the kernel is specialised with.
    pub(crate) fn header(self) -> String {
        let Tile {
            wg_x,
            wg_y,
            rm,
            rn,
            tk,
        } = self;
        format!(
            "const WG_X: u32 = {wg_x}u;\nconst WG_Y: u32 = {wg_y}u;\nconst RM: u32 = {rm}u;\n\
             const RN: u32 = {rn}u;\nconst TK: u32 = {tk}u;\n"
        )
    }
}

/// The tiled kernel of shaders/dense.wgsl with the tile constants `tile_header`: a dense layer, or with `gated` SwiGLU's fused
/// gate/up (bindings: 0 params, 1 x, 2 W (gate), 3 its bias, 4 y, and when gated 5 W_up, 6 its
/// bias).
pub(crate) fn tiled_pipeline(ctx: &Context, tile_header: &str, gated: bool) -> Result<wgpu::ComputePipeline> {
    let up = match gated {
        true => weights::loader("up", 5)
            + "@group(0) @binding(6) var<storage, read> up_biases: array<f32>;\n\
               fn up_bias(n: u32) -> f32 { return up_biases[n]; }\n",
        false => "fn load_up(e: u32) -> f32 { return 0.0; }\nfn up_bias(n: u32) -> f32 { return 0.0; }\n".into(),
    };
    let header = format!("{tile_header}const GATED: u32 = {}u;\n", gated as u32);
    // Its loops run to constants or checked sizes and it divides only by constants.
    cache::bounded_pipeline(ctx, "dense", header, &[&weights::loader("w", 2), &up, ACTIVATION_WGSL, DENSE_WGSL])
}

/// y[b, o] = act( Σ_i x[b, i] · W[o, i] + bias[o] ), W row-major [out_features][in_features].
pub fn dense_forward(
    x: &[f32],
    batch: usize,
    in_features: usize,
    out_features: usize,
    weights: GpuWeights<'_>,
    bias: Option<&[f32]>,
    activation: Activation,
) -> Result<Vec<f32>> {
    check_shapes(x, batch, in_features, out_features, weights, bias)?;
    let ctx = context()?;
    if batch == 0 || out_features == 0 {
        return Ok(Vec::new());
    }
    ctx.scoped("dense forward", || {
        let x = ctx.storage("dense x", x)?;
        let out_len = batch * out_features;
        let y = ctx.output("dense y", out_len)?;
        let layer = Linear { rows: batch, in_features, out_features, weights, bias, activation };
        let step = dense_step(ctx, &x, &y, layer)?;
        ctx.run_steps(&[step], &y, out_len)
    })
}

/// A dense projection of `rows` rows: y = act(x·Wᵀ + bias).
#[derive(Clone, Copy)]
pub(crate) struct Linear<'a> {
    pub rows: usize,
    pub in_features: usize,
    pub out_features: usize,
    pub weights: GpuWeights<'a>,
    pub bias: Option<&'a [f32]>,
    pub activation: Activation,
}

/// Records `layer` reading rows of `x` and writing its rows·out_features outputs to the start
/// of `y` (buffers the caller made, so steps can feed each other). Call inside `ctx.scoped`.
pub(crate) fn dense_step(ctx: &Context, x: &wgpu::Buffer, y: &wgpu::Buffer, layer: Linear<'_>) -> Result<Step> {
    let Linear { rows, in_features, out_features, weights, bias, activation } = layer;
    if weights.len() != in_features * out_features || bias.is_some_and(|b| b.len() != out_features) {
        return shape_err(format!(
            "dense step: weights hold {} values and bias {:?}, expected out_features × in_features = \
             {out_features} × {in_features} and {out_features}",
            weights.len(),
            bias.map(<[f32]>::len)
        ));
    }
    let tile = Tile::choose(&ctx.limits, rows);
    let grid = (
        out_features.div_ceil(tile.cols() as usize),
        rows.div_ceil(tile.rows() as usize),
    );
    let max_groups = ctx.limits.max_compute_workgroups_per_dimension as usize;
    if grid.0 > max_groups || grid.1 > max_groups {
        return Err(Error::Gpu(format!(
            "dense_forward: {rows}×{out_features} outputs need {}×{} workgroups; this GPU \
             dispatches at most {max_groups} per dimension (split the batch)",
            grid.0, grid.1
        )));
    }
    let w = weights::tensor(ctx, weights)?;
    let pipeline = tiled_pipeline(ctx, &tile.header(), false)?;
    let params = Params {
        batch: rows as u32,
        in_features: in_features as u32,
        out_features: out_features as u32,
        activation: activation_code(activation),
        has_bias: bias.is_some() as u32,
        _pad: [0; 3],
    };
    let params = ctx.uniform("dense params", &params)?;
    // Without a bias the kernel never reads it, but the binding must exist.
    let bias = ctx.storage("dense bias", bias.unwrap_or(&[]))?;
    Ok(Step {
        pipeline,
        buffers: vec![params, x.clone(), w.buffer, bias, y.clone()],
        grid: (grid.0 as u32, grid.1 as u32, 1),
    })
}

fn check_shapes(
    x: &[f32],
    batch: usize,
    in_features: usize,
    out_features: usize,
    weights: GpuWeights<'_>,
    bias: Option<&[f32]>,
) -> Result<()> {
    if x.len() != batch * in_features {
        return shape_err(format!(
            "dense_forward: x has {} values, expected batch × in_features = {batch} × {in_features}",
            x.len()
        ));
    }
    let n = match weights {
        GpuWeights::F32 { values, .. } => values.len(),
        GpuWeights::Packed(p) => p.n,
    };
    if n != in_features * out_features {
        return shape_err(format!(
            "dense_forward: weights hold {n} values, expected out_features × in_features = \
             {out_features} × {in_features}"
        ));
    }
    if let Some(bias) = bias.filter(|b| b.len() != out_features) {
        return shape_err(format!(
            "dense_forward: bias has {} values, expected {out_features}",
            bias.len()
        ));
    }
    // The kernels index with u32.
    if [x.len(), n, batch * out_features]
        .iter()
        .any(|&len| len > u32::MAX as usize)
    {
        return shape_err("dense_forward: more than 2^32 − 1 values in one tensor");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Tile;

    #[test]
    fn tiles_fit_webgpu_default_and_downlevel_limits() {
        for limits in [wgpu::Limits::default(), wgpu::Limits::downlevel_defaults()] {
            for batch in [1, 3, 8, 17, 64, 1000] {
                for weight_tiles in [1, 2] {
                    let t = Tile::choose_with(&limits, batch, weight_tiles);
                    assert!(
                        t.wg_x * t.wg_y <= limits.max_compute_invocations_per_workgroup,
                        "{t:?}"
                    );
                    assert!(
                        t.shared_bytes(weight_tiles) <= limits.max_compute_workgroup_storage_size,
                        "{t:?}"
                    );
                }
            }
        }
    }
}
