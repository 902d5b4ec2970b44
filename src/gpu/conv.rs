//! Convolution and transposed convolution forward on the GPU (shaders/conv.wgsl): argument
//! checks, the tile shape, and one implicit-GEMM dispatch per call with the weights decoded in
//! the shader.

use super::context::context;
use super::{activation_code, cache, weights, GpuWeights};
use crate::activation::Activation;
use crate::error::{shape_err, Error, Result};
use crate::kernels::conv::Geometry;

const CONV_WGSL: &str = include_str!("../../shaders/conv.wgsl");
const ACTIVATION_WGSL: &str = include_str!("../../shaders/activation.wgsl");

/// The uniform `Params` of shaders/conv.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    input: [u32; 4],
    output: [u32; 4],
    channels: u32,
    filters: u32,
    axes: u32,
    kernel: u32,
    stride: u32,
    padding: u32,
    transposed: u32,
    taps: u32,
    activation: u32,
    has_bias: u32,
    rows: u32,
    width: u32,
    in_len: u32,
    out_len: u32,
    filter_tiles: u32,
    tiles: u32,
}

/// A workgroup of wg_m × wg_n threads computes a (wg_m·rm) rows × (wg_n·rn) filters tile, each
/// thread rm × rn outputs, staging patches and weights through shared memory tk columns at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tile {
    wg_m: u32,
    wg_n: u32,
    rm: u32,
    rn: u32,
    tk: u32,
}

impl Tile {
    fn rows(self) -> u32 {
        self.wg_m * self.rm
    }
    fn filters(self) -> u32 {
        self.wg_n * self.rn
    }
    /// Staged patches and weights, plus the index tables (a word and a vec4 per row and column).
    fn shared_bytes(self) -> u32 {
        (self.rows() + self.filters()) * self.tk * 4 + (self.rows() + self.tk) * 20
    }

    /// A tile as wide as the filters need (up to 64), shrunk until it fits the device's limits.
    fn choose(limits: &wgpu::Limits, filters: usize) -> Tile {
        let mut tile = match filters {
            0..=4 => Tile { wg_m: 64, wg_n: 4, rm: 1, rn: 1, tk: 16 },
            5..=16 => Tile { wg_m: 32, wg_n: 8, rm: 2, rn: 2, tk: 16 },
            _ => Tile { wg_m: 16, wg_n: 16, rm: 4, rn: 4, tk: 16 },
        };
        let max_threads = limits.max_compute_invocations_per_workgroup.max(1);
        while tile.wg_m * tile.wg_n > max_threads
            || tile.wg_m > limits.max_compute_workgroup_size_x.max(1)
            || tile.wg_n > limits.max_compute_workgroup_size_y.max(1)
        {
            if tile.wg_m >= tile.wg_n {
                tile.wg_m /= 2;
            } else {
                tile.wg_n /= 2;
            }
        }
        while tile.shared_bytes() > limits.max_compute_workgroup_storage_size && tile.tk > 1 {
            tile.tk /= 2;
        }
        tile
    }

    /// The WGSL constants the kernel is specialised with.
    fn header(self) -> String {
        let Tile { wg_m, wg_n, rm, rn, tk } = self;
        format!(
            "const WG_M: u32 = {wg_m}u;\nconst WG_N: u32 = {wg_n}u;\nconst RM: u32 = {rm}u;\n\
             const RN: u32 = {rn}u;\nconst TK: u32 = {tk}u;\n"
        )
    }
}

/// y[b][f][output positions] = act(conv(x[b], W[f]) + bias[f]) for x [batch][channels][input
/// positions] and W [filters][channels][taps] (either kind, as kernels::conv::forward computes
/// it), weights and bias decoded in the shader.
pub fn conv_forward(
    x: &[f32],
    batch: usize,
    g: &Geometry,
    weights: GpuWeights<'_>,
    bias: Option<GpuWeights<'_>>,
    activation: Activation,
) -> Result<Vec<f32>> {
    let filters = check_shapes(x, batch, g, weights, bias)?;
    let ctx = context()?;
    let rows = batch * g.output_len();
    if rows == 0 || filters == 0 {
        return Ok(Vec::new());
    }
    let tile = Tile::choose(&ctx.limits, filters);
    let filter_tiles = filters.div_ceil(tile.filters() as usize);
    let tiles = rows.div_ceil(tile.rows() as usize) * filter_tiles;
    let grid = ctx.grid(tiles)?;
    // Fastest axis first, unused axes 1.
    let fastest_first = |sizes: &[usize]| {
        let mut v = [1u32; 4];
        for (slot, &n) in v.iter_mut().zip(sizes.iter().rev()) {
            *slot = n as u32;
        }
        v
    };
    let params = Params {
        input: fastest_first(&g.input),
        output: fastest_first(&g.output),
        channels: g.channels as u32,
        filters: filters as u32,
        axes: g.input.len() as u32,
        kernel: g.kernel as u32,
        stride: g.stride as u32,
        padding: g.padding as u32,
        transposed: g.transposed as u32,
        taps: g.taps() as u32,
        activation: activation_code(activation),
        has_bias: bias.is_some() as u32,
        rows: rows as u32,
        width: g.width() as u32,
        in_len: g.input_len() as u32,
        out_len: g.output_len() as u32,
        filter_tiles: filter_tiles as u32,
        tiles: tiles as u32,
    };
    let source = [weights::loader("w", 2), weights::loader("bias", 3)].concat();
    let pipeline = cache::pipeline(ctx, "conv", tile.header(), &[&source, ACTIVATION_WGSL, CONV_WGSL])?;
    let w = weights::tensor(ctx, weights)?;
    // Without a bias the kernel never reads it, but the binding must exist.
    let bias = weights::tensor(ctx, bias.unwrap_or(GpuWeights::F32 { key: 0, values: &[] }))?;
    ctx.scoped("conv forward", || {
        let params = ctx.uniform("conv params", &params)?;
        let x = ctx.storage("conv x", x)?;
        let out_len = rows * filters;
        let y = ctx.output("conv y", out_len)?;
        ctx.dispatch_and_read(&pipeline, &[&params, &x, &w.buffer, &bias.buffer, &y], grid, &y, out_len)
    })
}

/// The filter count, after checking every size against the others and against the kernel's u32
/// indexing.
fn check_shapes(x: &[f32], batch: usize, g: &Geometry, weights: GpuWeights<'_>, bias: Option<GpuWeights<'_>>) -> Result<usize> {
    let axes = g.input.len();
    if !(1..=3).contains(&axes) || g.output.len() != axes {
        return shape_err(format!(
            "conv_forward: input sizes {:?} and output sizes {:?} must name the same 1 to 3 spatial axes",
            g.input, g.output
        ));
    }
    if g.kernel == 0 || g.stride == 0 || g.channels == 0 {
        return shape_err(format!(
            "conv_forward: kernel {}, stride {} and channels {} must all be > 0",
            g.kernel, g.stride, g.channels
        ));
    }
    if Some(x.len()) != batch.checked_mul(g.channels).and_then(|n| n.checked_mul(g.input_len())) {
        return shape_err(format!(
            "conv_forward: x has {} values, expected batch × channels × input positions = {batch} × {} × {}",
            x.len(),
            g.channels,
            g.input_len()
        ));
    }
    let width = g.width();
    if !weights.len().is_multiple_of(width) {
        return shape_err(format!(
            "conv_forward: weights hold {} values, not a whole number of filters of channels × taps = {} × {}",
            weights.len(),
            g.channels,
            g.taps()
        ));
    }
    let filters = weights.len() / width;
    if let Some(bias) = bias.filter(|b| b.len() != filters) {
        return shape_err(format!("conv_forward: bias has {} values, expected one per filter ({filters})", bias.len()));
    }
    // The kernel indexes with u32, including o·stride + tap and o + padding along every axis.
    let reach = g.output.iter().map(|&o| o.saturating_mul(g.stride).saturating_add(g.kernel).saturating_add(g.padding));
    let sizes = [x.len(), weights.len(), batch.saturating_mul(g.output_len()).saturating_mul(filters), g.input_len().saturating_add(1)];
    if sizes.into_iter().chain(reach).any(|n| n > u32::MAX as usize) {
        return Err(Error::Shape("conv_forward: more than 2^32 − 1 values in one tensor or along one axis".into()));
    }
    Ok(filters)
}

#[cfg(test)]
mod tests {
    use super::{conv_forward, Tile};
    use crate::activation::Activation;
    use crate::codec::encode_standard;
    use crate::dtype::DType;
    use crate::gpu::{gpu_available, GpuWeights};
    use crate::kernels::conv::{self as cpu, Geometry};
    use crate::kernels::Schedule;
    use crate::weights::WeightView;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 16777216.0) - 0.5).collect()
    }

    /// Stride, padding and (transposed) output padding on 1–3 axes of both kinds, with filter
    /// counts on each side of the tile widths and odd position counts.
    fn geometries() -> Vec<(Geometry, usize)> {
        let g = |channels, input: Vec<usize>, output: Vec<usize>, kernel, stride, padding, transposed| Geometry { channels, input, output, kernel, stride, padding, transposed };
        vec![
            (g(3, vec![9], vec![5], 3, 2, 1, false), 4),
            (g(2, vec![6, 5], vec![6, 5], 3, 1, 1, false), 7),
            (g(2, vec![4, 3, 5], vec![2, 1, 2], 2, 2, 0, false), 3),
            // (n − 1)·s − 2p + k + output_padding: 4·2 − 2 + 4 + 1 = 11
            (g(3, vec![5], vec![11], 4, 2, 1, true), 2),
            (g(2, vec![3, 4], vec![6, 8], 3, 2, 1, true), 20),
            (g(2, vec![2, 3, 2], vec![2, 3, 2], 3, 1, 1, true), 5),
        ]
    }

    #[test]
    fn matches_the_cpu_kernel_for_both_kinds_and_every_axis_count() {
        if !gpu_available() {
            eprintln!("no GPU adapter: skipping the conv GPU test");
            return;
        }
        for (i, (g, filters)) in geometries().into_iter().enumerate() {
            let batch = 3;
            let x = data(batch * g.channels * g.input_len(), i as u32);
            let master = data(filters * g.width(), 100 + i as u32);
            let bias = data(filters, 200 + i as u32);
            let packed = encode_standard(&master, DType::Int4);
            // Keys far above any master's generation, one per tensor (the upload cache is keyed by them).
            let key = u64::MAX - 1000 - 2 * i as u64;
            let bias_weights = GpuWeights::F32 { key: key - 1, values: &bias };
            for (view, weights) in [(WeightView::F32(&master), GpuWeights::F32 { key, values: &master }), (WeightView::Packed(&packed), GpuWeights::Packed(&packed))] {
                let mut expected = cpu::forward(&x, batch, &g, view, Schedule::Normal);
                for (plane, values) in expected.chunks_exact_mut(g.output_len()).enumerate() {
                    values.iter_mut().for_each(|v| *v += bias[plane % filters]);
                }
                Activation::Silu.apply_slice(&mut expected);
                let got = conv_forward(&x, batch, &g, weights, Some(bias_weights), Activation::Silu).unwrap();
                assert_eq!(got.len(), expected.len(), "{g:?}");
                let err = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                let top = expected.iter().map(|v| v.abs()).fold(0.0, f32::max);
                assert!(err <= 1e-5 * top, "{g:?} with {} weights: {err} of {top}", view.dtype());
            }
        }
    }

    #[test]
    fn wrong_shapes_are_errors_naming_the_sizes() {
        let g = Geometry { channels: 2, input: vec![5], output: vec![3], kernel: 3, stride: 1, padding: 0, transposed: false };
        let w = data(2 * 6, 1);
        let weights = GpuWeights::F32 { key: 0, values: &w };
        let err = conv_forward(&data(9, 0), 1, &g, weights, None, Activation::Linear).unwrap_err();
        assert!(err.to_string().contains("x has 9 values"), "{err}");
        let err = conv_forward(&data(10, 0), 1, &g, GpuWeights::F32 { key: 0, values: &w[..7] }, None, Activation::Linear).unwrap_err();
        assert!(err.to_string().contains("weights hold 7 values"), "{err}");
        let err = conv_forward(&data(10, 0), 1, &g, weights, Some(GpuWeights::F32 { key: 0, values: &w[..3] }), Activation::Linear).unwrap_err();
        assert!(err.to_string().contains("bias has 3 values"), "{err}");
    }

    #[test]
    fn tiles_fit_webgpu_default_and_downlevel_limits() {
        for limits in [wgpu::Limits::default(), wgpu::Limits::downlevel_defaults()] {
            for filters in [1, 4, 5, 16, 17, 300] {
                let t = Tile::choose(&limits, filters);
                assert!(t.wg_m * t.wg_n <= limits.max_compute_invocations_per_workgroup, "{t:?}");
                assert!(t.wg_m <= limits.max_compute_workgroup_size_x && t.wg_n <= limits.max_compute_workgroup_size_y, "{t:?}");
                assert!(t.shared_bytes() <= limits.max_compute_workgroup_storage_size, "{t:?}");
            }
        }
    }
}
