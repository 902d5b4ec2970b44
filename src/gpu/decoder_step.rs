//! The fused decode step (shaders/decoder_step.wgsl): a whole greedy token step as one dispatch
//! whose workgroups stay resident and wait for the values they read (each written once per step
//! into a dataflow slot of its own), instead of one dispatch per kernel. It reads every layer's
//! matrices from stacks (resident.rs `Stack`) and its caches from one buffer per K and V, so a
//! model can use it only when its layers share formats; the separate kernels (decoder.rs) remain
//! the path for everything else.

use super::cache;
use super::context::Context;
use super::decoder::{decode_partials_len, keys_per_split, splits, Heads, ARGMAX_REDUCE_WGSL, MERGE_SPLITS_WGSL, ONLINE_SOFTMAX_WGSL, SPLIT_ATTENTION_WGSL};
use super::resident::{bind_ranges, Range, Recorded, ResidentMatrix, Scale, Stack};
use crate::error::{Error, Result};

const STEP_WGSL: &str = include_str!("../../shaders/decoder_step.wgsl");
const THREADS: usize = 256;
/// Keys an attention work item stages at once: a whole split of up to 512 positions' caches
/// (decoder.rs's keys_per_split), so a work item folds one tile. Its 16.5 KiB of workgroup memory
/// (with the rest ≈ 21 KiB) is past WebGPU's default 16 KiB, within what GPUs and lavapipe offer
/// (`unsupported` checks the adapter's limit).
const TILE: usize = 32;
/// Most lanes per row for a phase too big to give each workgroup a single group of rows.
const HEAD_LANES: usize = 9;
/// Passes of a wait for a dataflow word before the step gives up (≈ tens of ms: far beyond any
/// real wait, far below a driver's watchdog).
const SPIN_LIMIT: u32 = 1 << 20;
/// Storage buffers the kernel binds.
const STORAGE_BINDINGS: u32 = 17;
/// Resident workgroups on a GPU: one per compute unit of the largest GPUs we run on (an H100
/// has 132). A GPU that cannot hold them all at once makes a wait give up, and the sequence
/// falls back to separate dispatches.
const GPU_WORKGROUPS: usize = 128;
/// Why a sequence runs separate dispatches when `workgroups` chose none.
pub(crate) const NOT_CHOSEN: &str = "the fused step is used on NVIDIA GPUs and CPU adapters (where it was verified); \
     set POLYVTD_GPU_STEP=fused to use it here, or =dispatches to turn it off";

/// One stacked matrix kind: every layer's matrix in `stack`, formatted like `first`.
pub(crate) struct Stacked<'a> {
    pub first: &'a ResidentMatrix,
    pub stack: &'a Stack,
}

/// Where each layer's RMSNorm gains and biases sit in the `vectors` buffer (in floats).
#[derive(Clone, Copy, Debug)]
pub(crate) struct VectorOffsets {
    pub attn_norm: usize,
    pub ffn_norm: usize,
    pub final_norm: usize,
    /// Present when the model has Q/K/V and O biases.
    pub biases: Option<(usize, usize)>,
}

/// The model as the fused step sees it.
pub(crate) struct StepModel<'a> {
    pub layers: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub epsilon: f32,
    /// q, k, v, o, gate, up, down.
    pub matrices: [Stacked<'a>; 7],
    pub embed: &'a ResidentMatrix,
    /// None: tied to the embedding.
    pub head: Option<&'a ResidentMatrix>,
    pub vectors: &'a wgpu::Buffer,
    pub offsets: VectorOffsets,
}

/// A sequence's buffers the step reads and writes. `flow` (FlowLayout::words long, cleared
/// before each step) holds the failure flag and the dataflow slots.
pub(crate) struct StepBuffers<'a> {
    pub step: &'a wgpu::Buffer,
    pub tokens: &'a wgpu::Buffer,
    pub flow: &'a wgpu::Buffer,
    pub logits: &'a wgpu::Buffer,
    pub k_cache: &'a wgpu::Buffer,
    pub v_cache: &'a wgpu::Buffer,
    pub rope: &'a wgpu::Buffer,
}

/// Where the step's dataflow slots sit in its `flow` buffer, in words: word 0 is the failure
/// flag; then every value one workgroup writes and others read within a step, each in a word of
/// its own, so a word is written once per step and 0 (the cleared state) means "not yet".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlowLayout {
    /// The residual stream: the embedding, then after each layer's attention and MLP (2L + 1 × D).
    pub x: usize,
    /// Each layer's Q|K|V row.
    pub qkv: usize,
    /// Each layer's SwiGLU hidden row.
    pub hidden: usize,
    /// Each layer's attention partials (decoder.rs's decode_partials_len).
    pub partials: usize,
    /// Each workgroup's best logit's bits and index.
    pub best: usize,
    pub words: usize,
}

impl FlowLayout {
    pub(crate) fn of(m: &StepModel<'_>, heads: Heads, workgroups: usize) -> FlowLayout {
        let qkv_width = (heads.heads + 2 * heads.kv_heads) * heads.head_dim;
        let x = 1;
        let qkv = x + (2 * m.layers + 1) * m.hidden;
        let hidden = qkv + m.layers * qkv_width;
        let partials = hidden + m.layers * m.intermediate;
        let best = partials + m.layers * decode_partials_len(heads);
        FlowLayout { x, qkv, hidden, partials, best, words: best + 2 * workgroups }
    }
}

/// Workgroups the fused step runs on this adapter, or None for separate dispatches.
/// `POLYVTD_GPU_STEP` = `fused` or `dispatches` decides; by default the fused step runs where it
/// was verified: NVIDIA GPUs (GPU_WORKGROUPS) and CPU adapters (one workgroup: with three or more
/// workgroups waiting on each other's values, lavapipe gave wrong tokens without tripping the
/// spin limit, even with a thread for each). `POLYVTD_STEP_WORKGROUPS` overrides the count.
pub(crate) fn workgroups(ctx: &Context) -> Option<usize> {
    let cpu = ctx.info.device_type == "Cpu";
    let chosen = match std::env::var("POLYVTD_GPU_STEP").ok().as_deref() {
        Some("dispatches") => false,
        Some("fused") => true,
        _ => cpu || ctx.info.name.to_uppercase().contains("NVIDIA"),
    };
    let requested = std::env::var("POLYVTD_STEP_WORKGROUPS").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0);
    chosen.then(|| requested.unwrap_or(if cpu { 1 } else { GPU_WORKGROUPS }))
}

/// Floats of workgroup memory an attention tile needs.
fn tile_floats(heads: Heads) -> usize {
    TILE * (heads.head_dim + 1) + TILE * heads.head_dim
}

/// vec4s of the staged vector, one pad vec4 per 32 values.
fn staged_vec4s(m: &StepModel<'_>, heads: Heads) -> usize {
    let widest = m.hidden.max(m.intermediate).max(heads.heads * heads.head_dim).next_multiple_of(32);
    widest / 4 + widest / 32
}

/// Lanes sharing each of `rows` rows of width k in a phase: a divisor of the row's 32-value
/// blocks (≤ 32, so no lane idles on a partial last round), the most that still let every
/// workgroup finish its rows in one group of THREADS / lanes rows, since a group costs a
/// reduction. When none does (the LM head), the largest ≤ HEAD_LANES: consecutive lanes read
/// consecutive blocks of a row, so a warp's loads share cache lines, where a thread per row would
/// scatter them.
fn lanes(rows: usize, k: usize, workgroups: usize) -> usize {
    let blocks = (k / 32).max(1);
    let divisors: Vec<usize> = (1..=blocks.min(32)).rev().filter(|l| blocks.is_multiple_of(*l)).collect();
    let one_group = divisors.iter().copied().find(|&lanes| rows.div_ceil(THREADS / lanes) <= workgroups);
    one_group.unwrap_or_else(|| divisors.into_iter().find(|&l| l <= HEAD_LANES).unwrap_or(1))
}

/// Why this model cannot run as a fused step on this adapter, if it cannot.
pub(crate) fn unsupported(ctx: &Context, m: &StepModel<'_>, heads: Heads) -> Option<String> {
    let limits = &ctx.limits;
    if limits.max_storage_buffers_per_shader_stage < STORAGE_BINDINGS {
        return Some(format!("the adapter binds {} storage buffers per stage, the fused step {STORAGE_BINDINGS}", limits.max_storage_buffers_per_shader_stage));
    }
    // merge_splits.wgsl's four per-(head, split) arrays, split_attention.wgsl's q, k and v and
    // scores, the work item's staged Q|K|V rows.
    let heads_floats = 4 * heads.heads * splits(heads.capacity) + 6 * heads.head_dim + TILE;
    // red, red_b and argmax_reduce.wgsl's values and indices: THREADS each.
    let bytes = 4 * (tile_floats(heads) + 4 * staged_vec4s(m, heads) + 4 * THREADS + heads_floats);
    if bytes as u32 > limits.max_compute_workgroup_storage_size {
        return Some(format!("the fused step needs {bytes} bytes of workgroup memory, the adapter has {}", limits.max_compute_workgroup_storage_size));
    }
    if (limits.max_compute_invocations_per_workgroup as usize) < THREADS || heads.head_dim > THREADS || heads.head_dim % 2 == 1 {
        return Some("the fused step needs 256 threads per workgroup and an even head_dim ≤ 256".into());
    }
    None
}

/// The fused step for a sequence whose caches hold `heads.capacity` positions, on `workgroups`
/// resident workgroups; `b.flow` must hold FlowLayout::of(m, heads, workgroups).words words.
pub(crate) fn fused_step(ctx: &Context, m: &StepModel<'_>, heads: Heads, b: &StepBuffers<'_>, workgroups: usize) -> Result<Recorded> {
    if let Some(why) = unsupported(ctx, m, heads) {
        return Err(Error::Gpu(why));
    }
    let [q, k, v, o, gate, up, down] = &m.matrices;
    let words = |s: &Stacked<'_>| s.stack.stride / 4;
    let o_ = &m.offsets;
    let (qkv_bias, o_bias) = o_.biases.unwrap_or((0, 0));
    let q_width = heads.heads * heads.head_dim;
    let flow = FlowLayout::of(m, heads, workgroups);
    let header = format!(
        "const P: u32 = {workgroups}u;\nconst L: u32 = {}u;\nconst D: u32 = {}u;\nconst FF: u32 = {}u;\nconst QW: u32 = {q_width}u;\n\
         const KVW: u32 = {}u;\nconst HEADS: u32 = {}u;\nconst KVH: u32 = {}u;\nconst HD: u32 = {}u;\nconst VOCAB: u32 = {}u;\n\
         const CAP: u32 = {}u;\nconst KC: u32 = {}u;\nconst S_MAX: u32 = {}u;\nconst TILE: u32 = {TILE}u;\nconst SHM: u32 = {}u;\nconst XS4: u32 = {}u;\n\
         const LANES_QKV: u32 = {}u;\nconst LANES_O: u32 = {}u;\nconst LANES_GU: u32 = {}u;\nconst LANES_DOWN: u32 = {}u;\n\
         const LANES_HEAD: u32 = {}u;\nconst HAS_BIAS: u32 = {}u;\n\
         const EPS: f32 = {:e};\nconst SCALE: f32 = {:e};\nconst SPIN_LIMIT: u32 = {SPIN_LIMIT}u;\n\
         const Q_STRIDE: u32 = {}u;\nconst K_STRIDE: u32 = {}u;\nconst V_STRIDE: u32 = {}u;\nconst O_STRIDE: u32 = {}u;\n\
         const GATE_STRIDE: u32 = {}u;\nconst UP_STRIDE: u32 = {}u;\nconst DOWN_STRIDE: u32 = {}u;\n\
         const ATTN_NORM_AT: u32 = {}u;\nconst FFN_NORM_AT: u32 = {}u;\nconst FINAL_NORM_AT: u32 = {}u;\n\
         const QKV_BIAS_AT: u32 = {qkv_bias}u;\nconst O_BIAS_AT: u32 = {o_bias}u;\n\
         const FLOW_X: u32 = {}u;\nconst FLOW_QKV: u32 = {}u;\nconst FLOW_HIDDEN: u32 = {}u;\nconst FLOW_PARTIALS: u32 = {}u;\nconst FLOW_BEST: u32 = {}u;\n\
         fn head_row_dot(row: u32, blk: u32, blocks: u32) -> f32 {{ return {head}_block_dot(row, blk, blocks, 0u); }}\n\
         fn head_row_touch(row: u32, blk: u32, blocks: u32) -> vec2<u32> {{ return {head}_touch(row, blk, blocks); }}\n",
        m.layers,
        m.hidden,
        m.intermediate,
        heads.kv_heads * heads.head_dim,
        heads.heads,
        heads.kv_heads,
        heads.head_dim,
        m.vocab,
        heads.capacity,
        keys_per_split(heads.capacity),
        splits(heads.capacity),
        tile_floats(heads),
        staged_vec4s(m, heads),
        lanes(q_width + 2 * heads.kv_heads * heads.head_dim, m.hidden, workgroups),
        lanes(m.hidden, q_width, workgroups),
        lanes(m.intermediate, m.hidden, workgroups),
        lanes(m.hidden, m.intermediate, workgroups),
        lanes(m.vocab, m.hidden, workgroups),
        o_.biases.is_some() as u32,
        m.epsilon,
        (1.0 / (heads.head_dim as f64).sqrt()) as f32,
        words(q),
        words(k),
        words(v),
        words(o),
        words(gate),
        words(up),
        words(down),
        o_.attn_norm,
        o_.ffn_norm,
        o_.final_norm,
        flow.x,
        flow.qkv,
        flow.hidden,
        flow.partials,
        flow.best,
        head = if m.head.is_some() { "head" } else { "emb" },
    );
    let names = ["wq", "wk", "wv", "wo", "wgate", "wup", "wdown"];
    let mut sources: Vec<String> = m.matrices.iter().zip(names).zip(14u32..).map(|((s, name), binding)| s.first.source(name, binding, true)).collect();
    sources.push(m.embed.source("emb", 21, true));
    if let Some(head) = m.head {
        sources.push(head.source("head", 22, true));
    }
    let key: Vec<String> = m.matrices.iter().map(|s| s.first.format_key()).chain([m.embed.format_key()]).chain(m.head.map(|h| h.format_key())).collect();
    let mut parts: Vec<&str> = sources.iter().map(String::as_str).collect();
    parts.extend([ONLINE_SOFTMAX_WGSL, SPLIT_ATTENTION_WGSL, MERGE_SPLITS_WGSL, ARGMAX_REDUCE_WGSL, STEP_WGSL]);
    let pipeline = cache::bounded_pipeline(ctx, "decoder_step", format!("{header}// {}\n", key.join(",")), &parts)?;

    let w = Range::whole;
    let mut entries = vec![
        (1, w(b.step)),
        (2, w(b.tokens)),
        (3, w(b.flow)),
        (8, w(b.logits)),
        (10, w(b.k_cache)),
        (11, w(b.v_cache)),
        (12, w(b.rope)),
        (13, w(m.vectors)),
    ];
    entries.extend(m.matrices.iter().zip(14u32..).map(|(s, binding)| (binding, w(&s.stack.buffer))));
    entries.push((21, m.embed.range()));
    if let Some(head) = m.head {
        entries.push((22, head.range()));
    }
    let group = bind_ranges(ctx, &pipeline, &entries);
    Ok(Recorded { pipeline, group, grid: (workgroups as u32, 1, 1), scale: Scale::Fixed })
}

#[cfg(test)]
mod tests {
    use super::{lanes, THREADS};

    #[test]
    fn smollm2_phases_take_one_group_per_workgroup_with_whole_rounds_of_blocks() {
        // 576-wide rows have 18 blocks, 1 536-wide rows 48.
        assert_eq!(lanes(960, 576, 128), 18); // QKV: 14 rows a group, 69 groups
        assert_eq!(lanes(576, 576, 128), 18); // O
        assert_eq!(lanes(1536, 576, 128), 18); // gate·up: 110 groups
        assert_eq!(lanes(576, 1536, 128), 24); // down: 2 blocks a lane
        assert_eq!(lanes(1536, 576, 64), 9); // fewer workgroups: fewer lanes, more rows a group
        assert_eq!(lanes(49_152, 576, 128), 9); // the LM head takes many groups a workgroup anyway
    }

    #[test]
    fn lanes_divide_the_blocks_and_fit_a_workgroup() {
        for k in (32..=4096).step_by(32) {
            for rows in [1, 7, 64, 960, 5000, 100_000] {
                for workgroups in [1, 2, 33, 128] {
                    let l = lanes(rows, k, workgroups);
                    assert!((1..=32).contains(&l) && (k / 32) % l == 0 && l <= THREADS, "k {k}, rows {rows}, P {workgroups}: {l}");
                }
            }
        }
    }
}
