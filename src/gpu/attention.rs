//! MultiHeadAttention forward on the GPU: Q/K/V projections (the dense kernel), per-head Q/K
//! RMSNorm + RoPE (shaders/rope.wgsl), streaming-softmax attention (shaders/attention.wgsl) and
//! the output projection, recorded into one compute pass with one submit and one readback.

use super::context::{context, Context, Step};
use super::dense::{dense_step, Linear};
use super::{cache, weights, GpuWeights};
use crate::activation::Activation;
use crate::error::{shape_err, Error, Result};

const ATTENTION_WGSL: &str = include_str!("../../shaders/attention.wgsl");
const ROPE_WGSL: &str = include_str!("../../shaders/rope.wgsl");

/// Threads per workgroup of both kernels (fewer where the device allows fewer).
const THREADS: u32 = 64;

/// Sizes and options of the layer (as resolved by layers::attention: no zero sizes).
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub d_model: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub causal: bool,
    pub rope_base: f64,
    /// The Q/K RMSNorm epsilon.
    pub epsilon: f64,
}

impl AttentionShape {
    fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }
    fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// The tensors the forward reads: projections [q][d], [kv][d], [kv][d], [d][q] (any dtype,
/// decoded in the shader), float32 biases of the four, and the Q and K norm gains [head_dim].
#[derive(Clone, Copy)]
pub struct AttentionWeights<'a> {
    pub q: GpuWeights<'a>,
    pub k: GpuWeights<'a>,
    pub v: GpuWeights<'a>,
    pub o: GpuWeights<'a>,
    pub biases: Option<[&'a [f32]; 4]>,
    pub qk_norm: Option<[GpuWeights<'a>; 2]>,
}

/// The output rows, and with a cache the new positions' keys and values (after norm and RoPE)
/// [batch·seq][kv_width] for the cache to append; empty without one.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionOutput {
    pub y: Vec<f32>,
    pub keys: Vec<f32>,
    pub values: Vec<f32>,
}

/// The uniform `Params` of shaders/rope.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RopeParams {
    rows: u32,
    seq: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    qk_norm: u32,
    epsilon: f32,
    export_kv: u32,
    export_at: u32,
    _pad: [u32; 3],
}

/// The uniform `Params` of shaders/attention.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AttendParams {
    rows: u32,
    past: u32,
    heads: u32,
    group: u32,
    q_width: u32,
    kv_width: u32,
    causal: u32,
    blocks: u32,
    scale: f32,
    items: u32,
    _pad: [u32; 2],
}

/// The attention kernel's block: BQ query rows per workgroup, keys staged BK at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    head_dim: u32,
    rows: u32,
    keys: u32,
    threads: u32,
}

impl Block {
    fn shared_bytes(self) -> u64 {
        let (hd, bq, bk) = (self.head_dim as u64, self.rows as u64, self.keys as u64);
        4 * (bq * hd + 2 * bk * hd + bq * bk + 3 * bq)
    }

    /// Up to 16 query rows (fewer when decoding a few positions: no idle rows) and 16–64 keys
    /// per tile, halved (keys first) until the tiles fit the device's workgroup memory.
    fn choose(limits: &wgpu::Limits, head_dim: usize, rows: usize) -> Result<Block> {
        let bq = rows.next_power_of_two().min(16) as u32;
        let threads = THREADS
            .min(limits.max_compute_invocations_per_workgroup)
            .min(limits.max_compute_workgroup_size_x)
            .max(1);
        let mut block = Block { head_dim: head_dim as u32, rows: bq, keys: (256 / bq).clamp(16, 64), threads };
        let budget = limits.max_compute_workgroup_storage_size as u64;
        while block.shared_bytes() > budget {
            if block.keys > 1 {
                block.keys /= 2;
            } else if block.rows > 1 {
                block.rows /= 2;
            } else {
                return Err(Error::Gpu(format!(
                    "attention: head_dim {head_dim} needs {} bytes of workgroup memory; this GPU \
                     has {budget}",
                    block.shared_bytes()
                )));
            }
        }
        Ok(block)
    }

    fn header(self) -> String {
        let Block { head_dim, rows, keys, threads } = self;
        format!("const HD: u32 = {head_dim}u;\nconst BQ: u32 = {rows}u;\nconst BK: u32 = {keys}u;\nconst WG: u32 = {threads}u;\n")
    }
}

/// Attention of `batch` sequences of `seq` positions (x: [batch·seq][d_model]). Without `past`
/// each sequence attends within itself from position 0. With `past` (one (keys, values) pair per
/// sequence, each [len][kv_width] for the same len) the new positions come after the cached ones
/// and attend to them too, and their keys and values come back with the output.
pub fn attention_forward(
    shape: &AttentionShape,
    weights: &AttentionWeights<'_>,
    x: &[f32],
    batch: usize,
    seq: usize,
    past: Option<&[(&[f32], &[f32])]>,
) -> Result<AttentionOutput> {
    let past_len = check(shape, weights, x, batch, seq, past)?;
    let ctx = context()?;
    let (d, kw) = (shape.d_model, shape.kv_width());
    let rows = batch * seq;
    let export = past.is_some();
    let result_len = rows * d + if export { 2 * rows * kw } else { 0 };
    let result = ctx.scoped("attention forward", || {
        let result = ctx.output("attention result", result_len)?;
        let steps = record(ctx, shape, weights, x, batch, seq, past, past_len, &result)?;
        ctx.run_steps(&steps, &result, result_len)
    })?;
    let (y, kv) = result.split_at(rows * d);
    let (keys, values) = kv.split_at(kv.len() / 2);
    Ok(AttentionOutput { y: y.to_vec(), keys: keys.to_vec(), values: values.to_vec() })
}

/// The six dispatches of one forward: Q, K, V projections, norm + RoPE, attention, output
/// projection (into the start of `result`; with a cache, the new keys and values follow it).
#[allow(clippy::too_many_arguments)]
fn record(
    ctx: &Context,
    shape: &AttentionShape,
    w: &AttentionWeights<'_>,
    x: &[f32],
    batch: usize,
    seq: usize,
    past: Option<&[(&[f32], &[f32])]>,
    past_len: usize,
    result: &wgpu::Buffer,
) -> Result<Vec<Step>> {
    let (d, hd, qw, kw) = (shape.d_model, shape.head_dim, shape.q_width(), shape.kv_width());
    let rows = batch * seq;
    let x = ctx.storage("attention x", x)?;
    let (q, k, v) = (ctx.output("attention q", rows * qw)?, ctx.output("attention k", rows * kw)?, ctx.output("attention v", rows * kw)?);
    let attn = ctx.output("attention heads", rows * qw)?;
    let bias = |i: usize| w.biases.map(|b| b[i]);
    let linear = |weights, bias, in_features, out_features| Linear {
        rows,
        in_features,
        out_features,
        weights,
        bias,
        activation: Activation::Linear,
    };
    let mut steps = vec![
        dense_step(ctx, &x, &q, linear(w.q, bias(0), d, qw))?,
        dense_step(ctx, &x, &k, linear(w.k, bias(1), d, kw))?,
        dense_step(ctx, &x, &v, linear(w.v, bias(2), d, kw))?,
    ];

    let threads = THREADS
        .min(ctx.limits.max_compute_invocations_per_workgroup)
        .min(ctx.limits.max_compute_workgroup_size_x)
        .max(1);
    let loaders = [weights::loader("q_gain", 6), weights::loader("k_gain", 7)].concat();
    let rope_pipeline = cache::pipeline(ctx, "attention-rope", format!("const WG: u32 = {threads}u;\n"), &[&loaders, ROPE_WGSL])?;
    // Without the norm the kernel never reads the gains, but the bindings must exist.
    let none = GpuWeights::F32 { key: 0, values: &[] };
    let [q_gain, k_gain] = w.qk_norm.unwrap_or([none, none]);
    let rope_params = RopeParams {
        rows: rows as u32,
        seq: seq as u32,
        heads: shape.heads as u32,
        kv_heads: shape.kv_heads as u32,
        head_dim: hd as u32,
        qk_norm: w.qk_norm.is_some() as u32,
        epsilon: shape.epsilon as f32,
        export_kv: past.is_some() as u32,
        export_at: (rows * d) as u32,
        _pad: [0; 3],
    };
    let slots = rows * (shape.heads + shape.kv_heads);
    steps.push(Step {
        pipeline: rope_pipeline,
        buffers: vec![
            ctx.uniform("attention rope params", &rope_params)?,
            q.clone(),
            k.clone(),
            v.clone(),
            ctx.storage("attention rope angles", &rope_angles(hd, shape.rope_base, past_len, seq))?,
            result.clone(),
            weights::tensor(ctx, q_gain)?.buffer,
            weights::tensor(ctx, k_gain)?.buffer,
        ],
        grid: ctx.grid(slots.div_ceil(threads as usize))?,
    });

    let block = Block::choose(&ctx.limits, hd, seq)?;
    let attend_pipeline = cache::pipeline(ctx, "attention", block.header(), &[ATTENTION_WGSL])?;
    let blocks = seq.div_ceil(block.rows as usize);
    let attend_params = AttendParams {
        rows: seq as u32,
        past: past_len as u32,
        heads: shape.heads as u32,
        group: (shape.heads / shape.kv_heads) as u32,
        q_width: qw as u32,
        kv_width: kw as u32,
        causal: shape.causal as u32,
        blocks: blocks as u32,
        scale: (1.0 / (hd as f64).sqrt()) as f32,
        items: batch as u32,
        _pad: [0; 2],
    };
    // Cached keys of every item, then their values.
    let items = past.unwrap_or(&[]);
    let cached: Vec<f32> = items.iter().flat_map(|(keys, _)| keys.iter()).chain(items.iter().flat_map(|(_, values)| values.iter())).copied().collect();
    steps.push(Step {
        pipeline: attend_pipeline,
        buffers: vec![ctx.uniform("attention params", &attend_params)?, q, k, v, ctx.storage("attention cache", &cached)?, attn.clone()],
        grid: ctx.grid(batch * shape.heads * blocks)?,
    });

    steps.push(dense_step(ctx, &attn, result, linear(w.o, bias(3), qw, d))?);
    Ok(steps)
}

/// cos then sin of (first + s)·base^(−2i/hd) for s < positions and i < hd/2, computed in f64 as
/// kernels::attention::Rope computes its table.
fn rope_angles(head_dim: usize, base: f64, first: usize, positions: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let angle = |pos: usize, i: usize| pos as f64 * base.powf(-2.0 * i as f64 / head_dim as f64);
    let turns = || (first..first + positions).flat_map(move |pos| (0..half).map(move |i| angle(pos, i)));
    turns().map(|a| a.cos() as f32).chain(turns().map(|a| a.sin() as f32)).collect()
}

/// Checks every size; returns the cached positions per sequence.
fn check(
    shape: &AttentionShape,
    w: &AttentionWeights<'_>,
    x: &[f32],
    batch: usize,
    seq: usize,
    past: Option<&[(&[f32], &[f32])]>,
) -> Result<usize> {
    let (d, hd, qw, kw) = (shape.d_model, shape.head_dim, shape.q_width(), shape.kv_width());
    if d == 0 || hd == 0 || shape.heads == 0 || shape.kv_heads == 0 || !shape.heads.is_multiple_of(shape.kv_heads) {
        return shape_err(format!(
            "attention_forward: d_model {d}, head_dim {hd}, heads {} and kv_heads {} must be > 0 \
             with kv_heads dividing heads",
            shape.heads, shape.kv_heads
        ));
    }
    if batch == 0 || seq == 0 || x.len() != batch * seq * d {
        return shape_err(format!(
            "attention_forward: x has {} values, expected batch × seq × d_model = {batch} × {seq} × {d} (all > 0)",
            x.len()
        ));
    }
    for (name, tensor, want) in [("wq", w.q, qw * d), ("wk", w.k, kw * d), ("wv", w.v, kw * d), ("wo", w.o, d * qw)] {
        if tensor.len() != want {
            return shape_err(format!("attention_forward: {name} holds {} values, expected {want}", tensor.len()));
        }
    }
    if let Some(biases) = w.biases {
        for (name, bias, want) in [("bq", biases[0], qw), ("bk", biases[1], kw), ("bv", biases[2], kw), ("bo", biases[3], d)] {
            if bias.len() != want {
                return shape_err(format!("attention_forward: {name} has {} values, expected {want}", bias.len()));
            }
        }
    }
    if let Some(gains) = w.qk_norm.filter(|g| g.iter().any(|g| g.len() != hd)) {
        return shape_err(format!(
            "attention_forward: the Q/K norm gains hold {} and {} values, expected head_dim {hd}",
            gains[0].len(),
            gains[1].len()
        ));
    }
    let past_len = match past {
        None => 0,
        Some(items) => {
            if items.len() != batch {
                return shape_err(format!("attention_forward: the cache holds {} sequences, the input has batch {batch}", items.len()));
            }
            let len = items.first().map_or(0, |(keys, _)| keys.len() / kw);
            if let Some(b) = items.iter().position(|(keys, values)| keys.len() != len * kw || values.len() != len * kw) {
                return shape_err(format!(
                    "attention_forward: cached sequence {b} holds {} keys and {} values, expected {len} positions × kv_width {kw}",
                    items[b].0.len(),
                    items[b].1.len()
                ));
            }
            len
        }
    };
    // The kernels index with u32: the largest buffers are the result (output rows, then new
    // keys and values), q and the cache.
    let rows = batch * seq;
    let largest = [rows * (d + 2 * kw), rows * qw, 2 * batch * past_len * kw];
    if largest.iter().any(|&len| len > u32::MAX as usize) {
        return shape_err("attention_forward: more than 2^32 − 1 values in one tensor");
    }
    Ok(past_len)
}

#[cfg(test)]
mod tests {
    use super::Block;

    #[test]
    fn blocks_fit_webgpu_default_and_downlevel_limits() {
        for limits in [wgpu::Limits::default(), wgpu::Limits::downlevel_defaults()] {
            for head_dim in [1, 7, 64, 128, 256, 1024] {
                for rows in [1, 3, 16, 100] {
                    let block = Block::choose(&limits, head_dim, rows).unwrap();
                    assert!(block.shared_bytes() <= limits.max_compute_workgroup_storage_size as u64, "{block:?}");
                    assert!(block.rows as usize <= rows.next_power_of_two(), "{block:?}");
                }
            }
        }
    }
}
