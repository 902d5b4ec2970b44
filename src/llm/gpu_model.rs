//! The GPU-resident token step: a Transformer's weights, KV caches and activations live in VRAM;
//! a prefill or a decode step is recorded into one command encoder and one compute pass and
//! submitted once, and only the chosen token id (greedy, chosen on the GPU) or the logits (when
//! the sampler needs them) come back. Kernels are gpu/decoder.rs's; this file owns their order:
//! - decode: embed → per block [RMSNorm+QKV, attention (RoPE, cache append, online softmax),
//!   O-projection+residual, RMSNorm+gate·up+SiLU·mul, down-projection+residual] → RMSNorm+head →
//!   argmax, 5 dispatches a block;
//! - prefill: the same with register-blocked tiles for the products (split along K, each split
//!   product followed by its reduce), a separate RoPE/append and tiled causal attention.

use std::collections::VecDeque;

use super::config::LlamaConfig;
use crate::error::{Error, Result};
use crate::gpu::decoder::{self, AttentionBuffers, Epilogue, Heads, Product, Prologue, Shared};
use crate::gpu::decoder_step::{self, FlowLayout, StepBuffers, StepModel, Stacked, VectorOffsets};
use crate::gpu::resident::{Range, Recorded, ResidentMatrix, Stack};
use crate::gpu::{context, register_resident_bytes, Context, GpuWeights, ResidentBytes};
use crate::layers::{Layer, Param};
use crate::network::{Coord, VolumetricNetwork};

/// Rows a prefill pass handles at once (longer prompts go in several passes).
const CHUNK: usize = 256;
/// Greedy steps kept submitted ahead of the caller: with two, the GPU has the next step queued
/// while the host reads a token back and hands it to Python, so it never idles between steps.
const AHEAD_STEPS: usize = 2;
/// Dispatches of a prefill pass recorded per submission: the GPU starts on the first ones while
/// the CPU records the rest (recording costs ≈ 2.5 µs a dispatch in wgpu, a pass has ≈ 400).
const PREFILL_DISPATCHES_PER_SUBMIT: usize = 48;
/// Positions the caches first hold; they double (up to the context length) when full.
const FIRST_CAPACITY: usize = 256;
/// How `unfused_reason` starts once a fused step gave up (it is not tried again).
const GAVE_UP: &str = "the fused step gave up";

/// The labels of a product's dispatches: [the product unsplit, its split-K partials, their reduce].
macro_rules! product_labels {
    ($name:literal) => {
        [$name, concat!($name, " (split-K partials)"), concat!($name, " (reduce)")]
    };
}

/// The labels of a prefill stage's `dispatches` from `names` = [one dispatch, the first of two,
/// the second of two].
fn stage_labels(dispatches: usize, names: [&'static str; 3]) -> Vec<&'static str> {
    match dispatches {
        1 => vec![names[0]],
        _ => names[1..].to_vec(),
    }
}

struct Block {
    attn_norm: wgpu::Buffer,
    q: ResidentMatrix,
    k: ResidentMatrix,
    v: ResidentMatrix,
    qkv_bias: Option<wgpu::Buffer>,
    o: ResidentMatrix,
    o_bias: Option<wgpu::Buffer>,
    ffn_norm: wgpu::Buffer,
    gate: ResidentMatrix,
    up: ResidentMatrix,
    down: ResidentMatrix,
}

/// The resident weights of one model (shared by every sequence decoded with it).
pub struct GpuModel {
    ctx: &'static Context,
    hidden: usize,
    intermediate: usize,
    vocab: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rope_theta: f64,
    context_length: usize,
    epsilon: f32,
    embed: ResidentMatrix,
    /// None: tied to the embedding table.
    head: Option<ResidentMatrix>,
    blocks: Vec<Block>,
    final_norm: wgpu::Buffer,
    /// Every layer's q, k, v, o, gate, up, down matrices as stacks (the fused step's), when
    /// each kind shares one format across the layers.
    stacks: Option<[Stack; 7]>,
    /// Every layer's gains and biases in one buffer, for the fused step.
    vectors: wgpu::Buffer,
    offsets: VectorOffsets,
    none: wgpu::Buffer,
    /// Counts the weights in `pv.gpu_memory()` while the model lives.
    _resident: ResidentBytes,
}

fn decoded(param: &Param) -> Result<Vec<f32>> {
    let store = param.read().unwrap();
    let view = store.view()?;
    let mut out = vec![0.0; view.len()];
    view.decode_into(0, &mut out);
    Ok(out)
}

fn matrix(ctx: &Context, label: &str, param: &Param, rows: usize, cols: usize) -> Result<ResidentMatrix> {
    let store = param.read().unwrap();
    ResidentMatrix::upload(ctx, label, GpuWeights::of(&store)?, rows, cols)
}

/// Every layer's matrix of one kind, stacked when they share a format.
fn stacked(ctx: &Context, label: &str, params: &[&Param], rows: usize, cols: usize) -> Result<(Vec<ResidentMatrix>, Option<Stack>)> {
    let stores: Vec<_> = params.iter().map(|p| p.read().unwrap()).collect();
    let weights = stores.iter().map(|s| GpuWeights::of(s)).collect::<Result<Vec<_>>>()?;
    ResidentMatrix::upload_stack(ctx, label, weights, rows, cols)
}

fn vector(ctx: &Context, label: &str, values: &[f32]) -> Result<wgpu::Buffer> {
    ctx.storage(label, values)
}

fn layer_at(net: &VolumetricNetwork, x: usize, l: usize) -> Result<&Layer> {
    net.slot(Coord { z: 0, y: 0, x, l })?
        .map(|slot| &*slot.layer)
        .ok_or_else(|| Error::Value(format!("the transformer grid has no layer at (0,0,{x},{l})")))
}

fn norm_gain(label: &str, layer: &Layer) -> Result<Vec<f32>> {
    match layer {
        Layer::Norm(n) => decoded(&n.gain),
        other => Err(Error::Value(format!("{label}: expected an RMSNorm, found {}", other.type_name()))),
    }
}

impl GpuModel {
    /// Uploads the weights of a transformer laid out as llm/model.rs builds it.
    pub fn upload(config: &LlamaConfig, net: &VolumetricNetwork) -> Result<GpuModel> {
        let ctx = context()?;
        ctx.scoped("uploading the transformer", || GpuModel::build(ctx, config, net))
    }

    fn build(ctx: &'static Context, c: &LlamaConfig, net: &VolumetricNetwork) -> Result<GpuModel> {
        let (d, i) = (c.hidden_size, c.intermediate_size);
        let (q_width, kv_width) = (c.query_width(), c.kv_width());
        let Layer::Embedding(embedding) = layer_at(net, 0, 0)? else {
            return Err(Error::Value("the transformer grid has no embedding at (0,0,0,0)".into()));
        };
        let embed = matrix(ctx, "embedding", &embedding.table, c.vocab_size, d)?;
        let mut attentions = Vec::with_capacity(c.num_hidden_layers);
        let mut mlps = Vec::with_capacity(c.num_hidden_layers);
        let mut attn_norms = Vec::new();
        let mut ffn_norms = Vec::new();
        let (mut qkv_biases, mut o_biases) = (Vec::new(), Vec::new());
        for b in 0..c.num_hidden_layers {
            let x = b + 1;
            let Layer::MultiHeadAttention(attn) = layer_at(net, x, 1)? else {
                return Err(Error::Value(format!("block {b}: no attention at (0,0,{x},1)")));
            };
            let Layer::SwiGlu(mlp) = layer_at(net, x, 4)? else {
                return Err(Error::Value(format!("block {b}: no SwiGLU at (0,0,{x},4)")));
            };
            if let Some(biases) = &attn.biases {
                qkv_biases.push([decoded(&biases.q)?, decoded(&biases.k)?, decoded(&biases.v)?].concat());
                o_biases.push(decoded(&biases.o)?);
            }
            attn_norms.push(norm_gain(&format!("block {b} attention norm"), layer_at(net, x, 0)?)?);
            ffn_norms.push(norm_gain(&format!("block {b} feed-forward norm"), layer_at(net, x, 3)?)?);
            attentions.push(attn);
            mlps.push(mlp);
        }
        let has_biases = !qkv_biases.is_empty();
        if has_biases && qkv_biases.len() != c.num_hidden_layers {
            return Err(Error::Value("some attention layers have biases and others not".into()));
        }
        let stack = |label: &str, params: Vec<&Param>, rows: usize, cols: usize| stacked(ctx, label, &params, rows, cols);
        let (q, q_stack) = stack("q", attentions.iter().map(|a| &a.wq).collect(), q_width, d)?;
        let (k, k_stack) = stack("k", attentions.iter().map(|a| &a.wk).collect(), kv_width, d)?;
        let (v, v_stack) = stack("v", attentions.iter().map(|a| &a.wv).collect(), kv_width, d)?;
        let (o, o_stack) = stack("o", attentions.iter().map(|a| &a.wo).collect(), d, q_width)?;
        let (gate, gate_stack) = stack("gate", mlps.iter().map(|m| &m.w_gate).collect(), i, d)?;
        let (up, up_stack) = stack("up", mlps.iter().map(|m| &m.w_up).collect(), i, d)?;
        let (down, down_stack) = stack("down", mlps.iter().map(|m| &m.w_down).collect(), d, i)?;
        let stacks = match (q_stack, k_stack, v_stack, o_stack, gate_stack, up_stack, down_stack) {
            (Some(q), Some(k), Some(v), Some(o), Some(g), Some(u), Some(dn)) => Some([q, k, v, o, g, u, dn]),
            _ => None,
        };
        let mut blocks = Vec::with_capacity(c.num_hidden_layers);
        let matrices = q.into_iter().zip(k).zip(v).zip(o).zip(gate).zip(up).zip(down);
        for (b, ((((((q, k), v), o), gate), up), down)) in matrices.enumerate() {
            blocks.push(Block {
                attn_norm: vector(ctx, "attention norm", &attn_norms[b])?,
                q,
                k,
                v,
                qkv_bias: qkv_biases.get(b).map(|bias| vector(ctx, "qkv bias", bias)).transpose()?,
                o,
                o_bias: o_biases.get(b).map(|bias| vector(ctx, "o bias", bias)).transpose()?,
                ffn_norm: vector(ctx, "feed-forward norm", &ffn_norms[b])?,
                gate,
                up,
                down,
            });
        }
        let head_column = c.num_hidden_layers + 1;
        let final_gain = norm_gain("final norm", layer_at(net, head_column, 0)?)?;
        let final_norm = vector(ctx, "final norm", &final_gain)?;
        let Layer::Dense(head) = layer_at(net, head_column, 1)? else {
            return Err(Error::Value(format!("the transformer grid has no LM head at (0,0,{head_column},1)")));
        };
        let head = match std::sync::Arc::ptr_eq(&head.weights, &embedding.table) {
            true => None,
            false => Some(matrix(ctx, "lm head", &head.weights, c.vocab_size, d)?),
        };
        // The fused step's vectors: every layer's gains, the final gain, then the biases.
        let layers = c.num_hidden_layers;
        let offsets = VectorOffsets {
            attn_norm: 0,
            ffn_norm: layers * d,
            final_norm: 2 * layers * d,
            biases: has_biases.then_some((2 * layers * d + d, 2 * layers * d + d + layers * (q_width + 2 * kv_width))),
        };
        let all_vectors = [attn_norms.concat(), ffn_norms.concat(), final_gain, qkv_biases.concat(), o_biases.concat()].concat();
        let mut model = GpuModel {
            ctx,
            hidden: d,
            intermediate: i,
            vocab: c.vocab_size,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            rope_theta: c.rope_theta,
            context_length: c.max_position_embeddings,
            epsilon: c.rms_norm_eps as f32,
            embed,
            head,
            blocks,
            final_norm,
            stacks,
            vectors: vector(ctx, "step vectors", &all_vectors)?,
            offsets,
            none: ctx.storage("none", &[0.0; 4])?,
            _resident: register_resident_bytes(0),
        };
        model._resident.set(model.weight_bytes());
        Ok(model)
    }

    /// VRAM held by the weights.
    pub fn weight_bytes(&self) -> u64 {
        let matrices = self.blocks.iter().flat_map(|b| [&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down]);
        let vectors = self.blocks.iter().flat_map(|b| [Some(&b.attn_norm), Some(&b.ffn_norm), b.qkv_bias.as_ref(), b.o_bias.as_ref()]).flatten();
        matrices.chain([&self.embed]).chain(&self.head).map(ResidentMatrix::bytes).sum::<u64>()
            + vectors.chain([&self.final_norm, &self.vectors]).map(|b| b.size()).sum::<u64>()
    }

    fn head(&self) -> &ResidentMatrix {
        self.head.as_ref().unwrap_or(&self.embed)
    }

    /// The model as the fused step reads it, when every kind of matrix is stacked.
    fn step_model(&self) -> Option<StepModel<'_>> {
        let (stacks, b) = (self.stacks.as_ref()?, self.blocks.first()?);
        let firsts = [&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down];
        Some(StepModel {
            layers: self.blocks.len(),
            hidden: self.hidden,
            intermediate: self.intermediate,
            vocab: self.vocab,
            epsilon: self.epsilon,
            matrices: std::array::from_fn(|i| Stacked { first: firsts[i], stack: &stacks[i] }),
            embed: &self.embed,
            head: self.head.as_ref(),
            vectors: &self.vectors,
            offsets: self.offsets,
        })
    }

    /// Bytes of one layer's K (or V) cache for `capacity` positions.
    fn cache_layer_bytes(&self, capacity: usize) -> u64 {
        (self.kv_heads * capacity * self.head_dim * 4) as u64
    }

    fn heads_for(&self, capacity: usize) -> Heads {
        Heads { heads: self.heads, kv_heads: self.kv_heads, head_dim: self.head_dim, capacity }
    }

    fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }

    /// Floats of the split-K partials a prefill pass's products (and `all_logits`' head) need:
    /// the largest of them, as its dispatches run one after the other.
    fn tile_partials_len(&self) -> usize {
        let (d, i, q) = (self.hidden, self.intermediate, self.heads * self.head_dim);
        let products = [
            (d, self.qkv_width(), Epilogue::Concat, true),
            (q, d, Epilogue::Add, false),
            (d, i, Epilogue::SwiGlu, true),
            (i, d, Epilogue::Add, false),
            (d, self.vocab, Epilogue::Store, true),
        ];
        products.into_iter().map(|(k, n, epilogue, norm)| decoder::tiles_partials_len(k, n, epilogue, norm, CHUNK)).max().unwrap_or(0)
    }

    /// A new sequence's state: caches for FIRST_CAPACITY positions (they grow on demand).
    pub fn start(&self) -> Result<GpuState> {
        self.ctx.scoped("allocating a GPU decode state", || GpuState::new(self, FIRST_CAPACITY.min(self.context_length).next_multiple_of(64)))
    }
}

/// One sequence on the GPU: caches, activations, and the recorded prefill and decode programs.
pub struct GpuState {
    len: usize,
    capacity: usize,
    step: wgpu::Buffer,
    tokens: wgpu::Buffer,
    x: wgpu::Buffer,
    qkv: wgpu::Buffer,
    attn: wgpu::Buffer,
    /// The split decode attention's partial softmaxes (sized by the capacity).
    partials: wgpu::Buffer,
    h: wgpu::Buffer,
    /// The split-K partial tiles of the prefill products, shared by all of them.
    tile_partials: wgpu::Buffer,
    logits: wgpu::Buffer,
    /// Every layer's K (and V) cache, layer l's at l · cache_layer_bytes.
    k_cache: wgpu::Buffer,
    v_cache: wgpu::Buffer,
    rope: wgpu::Buffer,
    /// The fused step's failure flag (word 0, read back with each token) and dataflow slots
    /// (decoder_step.rs FlowLayout; only the flag without a fused step), cleared before each step.
    flow: wgpu::Buffer,
    /// The fused step's resident workgroups; None where it is not used on this adapter.
    workgroups: Option<usize>,
    /// Where chosen tokens come back with the fused step's failure flag: slot 0 for a step read
    /// at once, 1 + position % AHEAD_STEPS for a step submitted ahead.
    token_staging: Vec<wgpu::Buffer>,
    logits_staging: wgpu::Buffer,
    /// Greedy steps already submitted, in order from position `len`: each feeds the token the
    /// step before it chose (left on the GPU for the embedding).
    ahead: VecDeque<Ahead>,
    /// The token the last greedy step chose (the input `ahead` assumed).
    last_chosen: Option<u32>,
    prefill: Vec<Recorded>,
    decode: Vec<Recorded>,
    /// The decode step as one dispatch (decoder_step.wgsl), when the model and adapter allow it
    /// and it has not given up; else `decode` runs.
    fused: Option<Recorded>,
    /// Why `fused` is None.
    unfused_reason: Option<String>,
    /// What each dispatch of the prefill and decode programs computes (for `profile`).
    prefill_labels: Vec<&'static str>,
    decode_labels: Vec<&'static str>,
    /// Counts this sequence's buffers in `pv.gpu_memory()` while it lives.
    resident: ResidentBytes,
}

/// The fused step's `flow` buffer of `words` words (decoder_step.rs FlowLayout).
fn flow_buffer(ctx: &Context, words: usize) -> Result<wgpu::Buffer> {
    use wgpu::BufferUsages as U;
    ctx.empty_buffer("fused step dataflow", (words * 4).next_multiple_of(16) as u64, U::STORAGE | U::COPY_SRC | U::COPY_DST)
}

/// cos and sin of RoPE's angle for every position < capacity and pair, computed in f64 as the
/// CPU's kernels/attention.rs does.
fn rope_table(m: &GpuModel, capacity: usize) -> Vec<f32> {
    let half = m.head_dim / 2;
    let base = if m.rope_theta > 0.0 { m.rope_theta } else { 10000.0 };
    let mut table = Vec::with_capacity(capacity * half * 2);
    for pos in 0..capacity {
        for i in 0..half {
            let angle = pos as f64 * base.powf(-2.0 * i as f64 / m.head_dim as f64);
            table.push(angle.cos() as f32);
            table.push(angle.sin() as f32);
        }
    }
    table
}

impl GpuState {
    fn new(m: &GpuModel, capacity: usize) -> Result<GpuState> {
        use wgpu::BufferUsages as U;
        let ctx = m.ctx;
        let f32s = |label: &str, len: usize, usage: U| ctx.empty_buffer(label, (len * 4) as u64, usage);
        let cache_bytes = m.cache_layer_bytes(capacity) * m.blocks.len().max(1) as u64;
        let cache_usage = U::STORAGE | U::COPY_SRC | U::COPY_DST;
        let workgroups = decoder_step::workgroups(ctx);
        let mut state = GpuState {
            len: 0,
            capacity,
            step: f32s("step", 4, U::STORAGE | U::COPY_DST)?,
            tokens: f32s("tokens", CHUNK, U::STORAGE | U::COPY_DST | U::COPY_SRC)?,
            x: f32s("x", CHUNK * m.hidden, U::STORAGE)?,
            qkv: f32s("qkv", CHUNK * m.qkv_width(), U::STORAGE)?,
            attn: f32s("attention", CHUNK * m.heads * m.head_dim, U::STORAGE)?,
            partials: f32s("attention partials", decoder::decode_partials_len(m.heads_for(capacity)), U::STORAGE)?,
            h: f32s("h", CHUNK * m.intermediate, U::STORAGE)?,
            tile_partials: f32s("tile partials", m.tile_partials_len().max(4), U::STORAGE)?,
            logits: f32s("logits", m.vocab, U::STORAGE | U::COPY_SRC)?,
            k_cache: ctx.empty_buffer("k cache", cache_bytes, cache_usage)?,
            v_cache: ctx.empty_buffer("v cache", cache_bytes, cache_usage)?,
            rope: ctx.storage("rope", &rope_table(m, capacity))?,
            flow: flow_buffer(ctx, 1)?,
            workgroups,
            token_staging: (0..=AHEAD_STEPS).map(|_| f32s("token staging", 4, U::MAP_READ | U::COPY_DST)).collect::<Result<_>>()?,
            logits_staging: f32s("logits staging", m.vocab, U::MAP_READ | U::COPY_DST)?,
            prefill: Vec::new(),
            decode: Vec::new(),
            fused: None,
            unfused_reason: None,
            prefill_labels: Vec::new(),
            decode_labels: Vec::new(),
            ahead: VecDeque::new(),
            last_chosen: None,
            resident: register_resident_bytes(0),
        };
        state.record_programs(m)?;
        state.resident.set(state.bytes());
        Ok(state)
    }

    /// Positions decoded so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Start a new sequence (buffers are kept).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// VRAM held by this sequence (caches and activations).
    pub fn bytes(&self) -> u64 {
        let buffers = [&self.step, &self.tokens, &self.x, &self.qkv, &self.attn, &self.partials, &self.h, &self.tile_partials, &self.logits, &self.rope];
        let fused = [&self.flow, &self.k_cache, &self.v_cache];
        buffers.iter().chain(&fused).map(|b| b.size()).sum::<u64>()
    }

    /// Bind every kernel of the prefill and decode programs to this state's buffers.
    fn record_programs(&mut self, m: &GpuModel) -> Result<()> {
        let ctx = m.ctx;
        let shared = Shared { step: &self.step, none: &m.none };
        let heads = m.heads_for(self.capacity);
        let eps = m.epsilon;
        let mut prefill = vec![decoder::embed(ctx, &shared, &m.embed, &self.tokens, &self.x, CHUNK)?];
        let mut decode = vec![decoder::embed(ctx, &shared, &m.embed, &self.tokens, &self.x, 1)?];
        let mut labels = vec!["embedding"];
        let mut prefill_labels = vec!["embedding"];
        let layer_bytes = m.cache_layer_bytes(self.capacity);
        for (b, block) in m.blocks.iter().enumerate() {
            let layer = |cache| Range { buffer: cache, offset: b as u64 * layer_bytes, size: layer_bytes };
            let qkv = Product { matrices: &[&block.q, &block.k, &block.v], epilogue: Epilogue::Concat, x: &self.x, y: &self.qkv, bias: block.qkv_bias.as_ref() };
            let attention = AttentionBuffers { qkv: &self.qkv, k_cache: layer(&self.k_cache), v_cache: layer(&self.v_cache), rope: &self.rope, out: &self.attn };
            let split_attention = AttentionBuffers { out: &self.partials, ..attention };
            let o = Product { matrices: &[&block.o], epilogue: Epilogue::Add, x: &self.attn, y: &self.x, bias: block.o_bias.as_ref() };
            let o_merged = Product { x: &self.partials, ..o };
            let gate_up = Product { matrices: &[&block.gate, &block.up], epilogue: Epilogue::SwiGlu, x: &self.x, y: &self.h, bias: None };
            let down = Product { matrices: &[&block.down], epilogue: Epilogue::Add, x: &self.h, y: &self.x, bias: None };
            let partials = &self.tile_partials;
            let stages = [
                (decoder::tiles(ctx, &shared, &qkv, Some((&block.attn_norm, eps)), CHUNK, partials)?, product_labels!("norm + QKV")),
                (vec![decoder::rope_kv(ctx, &shared, heads, &attention, CHUNK)?], ["RoPE + cache append"; 3]),
                (vec![decoder::attention(ctx, &shared, heads, &attention, CHUNK)?], ["attention"; 3]),
                (decoder::tiles(ctx, &shared, &o, None, CHUNK, partials)?, product_labels!("O + residual")),
                (decoder::tiles(ctx, &shared, &gate_up, Some((&block.ffn_norm, eps)), CHUNK, partials)?, product_labels!("norm + gate·up·SiLU")),
                (decoder::tiles(ctx, &shared, &down, None, CHUNK, partials)?, product_labels!("down + residual")),
            ];
            for (dispatches, names) in stages {
                prefill_labels.extend(stage_labels(dispatches.len(), names));
                prefill.extend(dispatches);
            }
            labels.extend(["norm + QKV", "attention", "O + residual", "norm + gate·up·SiLU", "down + residual"]);
            decode.extend([
                decoder::matvec(ctx, &shared, &qkv, Prologue::Norm(&block.attn_norm, eps), false)?,
                decoder::attention_decode(ctx, &shared, heads, &split_attention)?,
                decoder::matvec(ctx, &shared, &o_merged, Prologue::Combine(heads), false)?,
                decoder::matvec(ctx, &shared, &gate_up, Prologue::Norm(&block.ffn_norm, eps), false)?,
                decoder::matvec(ctx, &shared, &down, Prologue::Plain, false)?,
            ]);
        }
        let head = Product { matrices: &[m.head()], epilogue: Epilogue::Store, x: &self.x, y: &self.logits, bias: None };
        for (program, last_row) in [(&mut prefill, true), (&mut decode, false)] {
            program.push(decoder::matvec(ctx, &shared, &head, Prologue::Norm(&m.final_norm, eps), last_row)?);
            program.push(decoder::argmax(ctx, &self.logits, m.vocab, &self.tokens)?);
        }
        labels.extend(["norm + LM head", "argmax"]);
        prefill_labels.extend(["norm + LM head (last row)", "argmax"]);
        self.prefill = prefill;
        self.decode = decode;
        self.decode_labels = labels;
        self.prefill_labels = prefill_labels;
        self.record_fused(m)
    }

    /// The fused step for the current capacity, unless the model, the adapter or the user
    /// (`POLYVTD_GPU_STEP`) rules it out, or it already gave up.
    fn record_fused(&mut self, m: &GpuModel) -> Result<()> {
        self.fused = None;
        if self.unfused_reason.as_deref().is_some_and(|why| why.starts_with(GAVE_UP)) {
            return Ok(());
        }
        let heads = m.heads_for(self.capacity);
        let reason = match (m.step_model(), self.workgroups) {
            (_, None) if std::env::var("POLYVTD_GPU_STEP").is_ok_and(|v| v == "dispatches") => Some("POLYVTD_GPU_STEP=dispatches".to_string()),
            (_, None) => Some(decoder_step::NOT_CHOSEN.to_string()),
            (None, _) => Some("the layers' matrices differ in format".to_string()),
            (Some(sm), Some(workgroups)) => match decoder_step::unsupported(m.ctx, &sm, heads) {
                Some(why) => Some(why),
                None => {
                    self.flow = flow_buffer(m.ctx, FlowLayout::of(&sm, heads, workgroups).words)?;
                    let buffers = StepBuffers {
                        step: &self.step,
                        tokens: &self.tokens,
                        flow: &self.flow,
                        logits: &self.logits,
                        k_cache: &self.k_cache,
                        v_cache: &self.v_cache,
                        rope: &self.rope,
                    };
                    self.fused = Some(decoder_step::fused_step(m.ctx, &sm, heads, &buffers, workgroups)?);
                    None
                }
            },
        };
        self.unfused_reason = reason;
        Ok(())
    }

    /// How decode steps run: "fused" (one dispatch) or "dispatches", and why not fused.
    pub fn step_kind(&self) -> (&'static str, Option<&str>) {
        match &self.fused {
            Some(_) => ("fused", None),
            None => ("dispatches", self.unfused_reason.as_deref()),
        }
    }

    /// Records one decode step (one new row) into `encoder`: the fused dispatch, or the
    /// dispatch program without its head and argmax unless `head`. A step without the head runs
    /// as dispatches even where the fused step exists, since its caller's head reads `x`, which
    /// the fused step does not write (its residual stream lives in the dataflow slots). The
    /// dataflow slots are cleared either way, so the failure flag reads 0 after a step that did
    /// not use them.
    fn record_decode(&self, encoder: &mut wgpu::CommandEncoder, positions: usize, head: bool) {
        encoder.clear_buffer(&self.flow, 0, None);
        let mut pass = encoder.begin_compute_pass(&Default::default());
        match (&self.fused, head) {
            (Some(fused), true) => fused.record(&mut pass, 1, positions),
            _ => {
                let body = if head { &self.decode[..] } else { &self.decode[..self.decode.len() - 2] };
                body.iter().for_each(|d| d.record(&mut pass, 1, positions));
            }
        }
    }

    /// Copies the chosen token and the fused step's failure flag to token staging `slot`.
    fn copy_token(&self, encoder: &mut wgpu::CommandEncoder, slot: usize) {
        encoder.copy_buffer_to_buffer(&self.tokens, 0, &self.token_staging[slot], 0, 4);
        encoder.copy_buffer_to_buffer(&self.flow, 0, &self.token_staging[slot], 4, 4);
    }

    /// After a fused step gave up (its workgroups could not all be resident): the state runs
    /// separate dispatches from now on.
    fn give_up_fused(&mut self) {
        self.fused = None;
        self.unfused_reason = Some(format!("{GAVE_UP}: its workgroups were not all resident at once"));
    }

    /// Makes room for `needed` positions: bigger caches (the old positions copied over), a longer
    /// RoPE table, and the programs bound again.
    fn reserve(&mut self, m: &GpuModel, needed: usize) -> Result<()> {
        if needed <= self.capacity {
            return Ok(());
        }
        if needed > m.context_length {
            return Err(Error::Value(format!("{needed} positions exceed the context length {}", m.context_length)));
        }
        // Whole 64-position runs keep every layer's cache range at a bindable offset.
        let capacity = (self.capacity * 2).max(needed).min(m.context_length).next_multiple_of(64);
        let ctx = m.ctx;
        use wgpu::BufferUsages as U;
        let usage = U::STORAGE | U::COPY_SRC | U::COPY_DST;
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        // Rows written so far, by the caller's steps and by those submitted ahead (queued before
        // this copy).
        let filled = (self.len + self.ahead.len()) as u64;
        let grow = |old: &wgpu::Buffer, encoder: &mut wgpu::CommandEncoder| -> Result<wgpu::Buffer> {
            let new = ctx.empty_buffer("kv cache", m.cache_layer_bytes(capacity) * m.blocks.len().max(1) as u64, usage)?;
            // Layout [layer][kv_head][capacity][head_dim]: each head's filled rows move on their own.
            let row_bytes = (m.head_dim * 4) as u64;
            for head in 0..(m.blocks.len() * m.kv_heads) as u64 {
                let from = head * self.capacity as u64 * row_bytes;
                let to = head * capacity as u64 * row_bytes;
                encoder.copy_buffer_to_buffer(old, from, &new, to, filled * row_bytes);
            }
            Ok(new)
        };
        let k = grow(&self.k_cache, &mut encoder)?;
        let v = grow(&self.v_cache, &mut encoder)?;
        ctx.queue.submit([encoder.finish()]);
        self.k_cache = k;
        self.v_cache = v;
        self.rope = ctx.storage("rope", &rope_table(m, capacity))?;
        self.partials = ctx.empty_buffer("attention partials", (decoder::decode_partials_len(m.heads_for(capacity)) * 4) as u64, U::STORAGE)?;
        self.capacity = capacity;
        self.record_programs(m)?;
        self.resident.set(self.bytes());
        Ok(())
    }

    /// Feeds `ids` at the next positions; returns the greedy choice, made on the GPU. The step
    /// that would feed that choice is submitted before returning, so the GPU runs it while the
    /// caller handles the token and the CPU records nothing in between; when the caller feeds
    /// exactly that token next (a greedy generation does), only its result is read.
    pub fn greedy(&mut self, m: &GpuModel, ids: &[u32]) -> Result<u32> {
        m.ctx.scoped("a GPU decode step", || {
            let continues = matches!((self.ahead.front(), ids), (Some(a), &[id]) if a.position == self.len && self.last_chosen == Some(id));
            let mut token = if continues {
                let ahead = self.ahead.pop_front().expect("checked above");
                self.len += 1;
                self.read_token(m, ahead.slot, Some(ahead.submission))?
            } else {
                self.drain(m)?;
                self.submit(m, ids, true)?;
                self.read_token(m, 0, None)?
            };
            if token.is_none() {
                // The steps queued behind it fed its garbage: discard them, undo the step, rerun it.
                self.drain(m)?;
                self.give_up_fused();
                self.len -= 1;
                self.submit(m, &ids[ids.len() - 1..], true)?;
                token = self.read_token(m, 0, None)?;
            }
            let token = token.ok_or_else(|| Error::Gpu("a decode step without the fused kernel reported a give-up".into()))?;
            self.last_chosen = Some(token);
            self.submit_ahead(m)?;
            Ok(token)
        })
    }

    /// Feeds `ids` at the next positions; returns the last position's logits.
    pub fn logits(&mut self, m: &GpuModel, ids: &[u32]) -> Result<Vec<f32>> {
        m.ctx.scoped("a GPU decode step", || {
            self.drain(m)?;
            self.submit(m, ids, false)?;
            if ids.len() == 1 && self.read_token(m, 0, None)?.is_none() {
                self.give_up_fused();
                self.len -= 1;
                self.submit(m, ids, false)?;
            }
            m.ctx.read_f32(&self.logits_staging, m.vocab)
        })
    }

    /// The token a step chose, or None when its fused kernel gave up waiting.
    fn read_token(&self, m: &GpuModel, slot: usize, submission: Option<wgpu::SubmissionIndex>) -> Result<Option<u32>> {
        let words = m.ctx.read_f32_after(&self.token_staging[slot], 2, submission)?;
        Ok((words[1].to_bits() == 0).then_some(words[0].to_bits()))
    }

    /// Keeps AHEAD_STEPS greedy steps submitted after position `len`, each feeding the choice of
    /// the one before (still on the GPU), its token copied to its own staging slot. None past the
    /// context length.
    fn submit_ahead(&mut self, m: &GpuModel) -> Result<()> {
        while self.ahead.len() < AHEAD_STEPS {
            let position = self.len + self.ahead.len();
            if position + 1 > m.context_length {
                return Ok(());
            }
            self.reserve(m, position + 1)?;
            let ctx = m.ctx;
            ctx.queue.write_buffer(&self.step, 0, bytemuck::cast_slice(&[position as u32, 1, 0, 0]));
            let slot = 1 + position % AHEAD_STEPS;
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            self.record_decode(&mut encoder, position + 1, true);
            self.copy_token(&mut encoder, slot);
            let submission = ctx.queue.submit([encoder.finish()]);
            self.ahead.push_back(Ahead { position, slot, submission });
        }
        Ok(())
    }

    /// Waits for the steps submitted ahead that will not be used (their cache rows from `len` on
    /// are rewritten by the next real steps).
    fn drain(&mut self, m: &GpuModel) -> Result<()> {
        while let Some(ahead) = self.ahead.pop_front() {
            if self.read_token(m, ahead.slot, Some(ahead.submission))?.is_none() {
                // Its results are discarded anyway; later steps run as separate dispatches.
                self.give_up_fused();
            }
        }
        Ok(())
    }

    /// Feeds `ids` from an empty sequence and returns every position's logits [len × vocab]
    /// (the prefill path, with the head applied to every row).
    pub fn all_logits(&mut self, m: &GpuModel, ids: &[u32]) -> Result<Vec<f32>> {
        let ctx = m.ctx;
        ctx.scoped("GPU logits", || {
            self.check_ids(m, ids)?;
            self.drain(m)?;
            self.reset();
            self.reserve(m, ids.len())?;
            let rows = ids.len().min(CHUNK);
            let out = ctx.output("all logits", rows * m.vocab)?;
            let staging = ctx.empty_buffer("all logits staging", (rows * m.vocab * 4) as u64, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST)?;
            let shared = Shared { step: &self.step, none: &m.none };
            let head = Product { matrices: &[m.head()], epilogue: Epilogue::Store, x: &self.x, y: &out, bias: None };
            let head = decoder::tiles(ctx, &shared, &head, Some((&m.final_norm, m.epsilon)), rows, &self.tile_partials)?;
            let mut all = Vec::with_capacity(ids.len() * m.vocab);
            for chunk in ids.chunks(CHUNK) {
                let bytes = (chunk.len() * m.vocab * 4) as u64;
                self.run(m, chunk, Tail::Rows { head: &head, out: &out, staging: &staging, bytes })?;
                all.extend(ctx.read_f32(&staging, chunk.len() * m.vocab)?);
            }
            Ok(all)
        })
    }

    fn check_ids(&self, m: &GpuModel, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::Value("no token ids given".into()));
        }
        if let Some((i, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= m.vocab) {
            return Err(Error::Value(format!("token id {id} at position {i} is outside the vocabulary (size {})", m.vocab)));
        }
        Ok(())
    }

    /// Submits `ids` in passes of at most CHUNK rows; the last one copies the token (`greedy`)
    /// or the logits to staging.
    fn submit(&mut self, m: &GpuModel, ids: &[u32], greedy: bool) -> Result<()> {
        self.check_ids(m, ids)?;
        self.reserve(m, self.len + ids.len())?;
        let chunks: Vec<&[u32]> = ids.chunks(CHUNK).collect();
        for (n, chunk) in chunks.iter().enumerate() {
            let tail = match (n + 1 == chunks.len(), greedy) {
                (false, _) => Tail::Nothing,
                (true, true) => Tail::Token,
                (true, false) => Tail::Logits,
            };
            self.run(m, chunk, tail)?;
        }
        Ok(())
    }

    /// One submission: the rows of `ids` through the blocks, then `tail`.
    fn run(&mut self, m: &GpuModel, ids: &[u32], tail: Tail<'_>) -> Result<()> {
        let ctx = m.ctx;
        let rows = ids.len();
        ctx.queue.write_buffer(&self.step, 0, bytemuck::cast_slice(&[self.len as u32, rows as u32, 0, 0]));
        ctx.queue.write_buffer(&self.tokens, 0, bytemuck::cast_slice(ids));
        let positions = self.len + rows;
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        let with_head = matches!(tail, Tail::Token | Tail::Logits);
        if rows == 1 {
            self.record_decode(&mut encoder, positions, with_head);
        } else {
            // The last two dispatches are the head and the argmax.
            let body = if with_head { &self.prefill[..] } else { &self.prefill[..self.prefill.len() - 2] };
            let mut parts = body.chunks(PREFILL_DISPATCHES_PER_SUBMIT).peekable();
            while let Some(part) = parts.next() {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                part.iter().for_each(|d| d.record(&mut pass, rows, positions));
                drop(pass);
                if parts.peek().is_some() {
                    let recorded = std::mem::replace(&mut encoder, ctx.device.create_command_encoder(&Default::default()));
                    ctx.queue.submit([recorded.finish()]);
                }
            }
        }
        if let Tail::Rows { head, .. } = tail {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            head.iter().for_each(|d| d.record(&mut pass, rows, positions));
        }
        match tail {
            Tail::Token => self.copy_token(&mut encoder, 0),
            Tail::Logits => {
                encoder.copy_buffer_to_buffer(&self.logits, 0, &self.logits_staging, 0, (m.vocab * 4) as u64);
                self.copy_token(&mut encoder, 0);
            }
            Tail::Rows { out, staging, bytes, .. } => encoder.copy_buffer_to_buffer(out, 0, staging, 0, bytes),
            Tail::Nothing => {}
        }
        ctx.queue.submit([encoder.finish()]);
        self.len += rows;
        Ok(())
    }
}

impl GpuState {
    /// Time of each kind of dispatch of a decode step (`rows` = 1) or of a prefill pass of
    /// `rows` new positions, at the current position: each kind's dispatches recorded `repeats`
    /// times into one pass and run to completion. Per kind: (label, µs recording the commands on
    /// the CPU, µs from the start of recording to the results, less an empty pass's time).
    /// "whole step" is the full program. The cache rows from the current position on are
    /// overwritten (the next real step writes them again); the length is unchanged.
    pub fn profile(&mut self, m: &GpuModel, repeats: usize, rows: usize) -> Result<Vec<(String, f64, f64)>> {
        let ctx = m.ctx;
        let repeats = repeats.max(1);
        if rows == 0 || rows > CHUNK {
            return Err(Error::Value(format!("profile rows must be in 1..={CHUNK}, got {rows}")));
        }
        ctx.scoped("profiling the GPU programs", || {
            self.drain(m)?;
            self.reserve(m, self.len + rows)?;
            ctx.queue.write_buffer(&self.step, 0, bytemuck::cast_slice(&[self.len as u32, rows as u32, 0, 0]));
            let labels = if rows == 1 { &self.decode_labels } else { &self.prefill_labels };
            let everything: Vec<usize> = (0..labels.len()).collect();
            // Warm-up: the GPU raises its clocks under sustained load.
            self.time_pass(ctx, &everything, repeats * 10, rows)?;
            let (_, empty) = self.time_pass(ctx, &[], repeats, rows)?;
            let mut kinds: Vec<&'static str> = Vec::new();
            for label in labels {
                if !kinds.contains(label) {
                    kinds.push(label);
                }
            }
            let (record, total) = self.time_pass(ctx, &everything, repeats, rows)?;
            let mut times = vec![("whole step".to_string(), record, total - empty)];
            if let (1, Some(fused)) = (rows, &self.fused) {
                times[0].0 = "whole step as dispatches".to_string();
                let (record, total) = self.time_fused(ctx, fused, repeats)?;
                times.insert(0, (format!("fused step (P = {})", fused.grid.0), record, total - empty));
            }
            for kind in kinds {
                let members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == kind).collect();
                let (record, total) = self.time_pass(ctx, &members, repeats, rows)?;
                times.push((format!("{kind} ×{}", members.len()), record, total - empty));
            }
            times.push(("empty pass: submit + readback".to_string(), 0.0, empty));
            Ok(times)
        })
    }

    /// (µs recording, µs in all) per repeat of the fused step, each in a pass of its own after
    /// its dataflow slots are cleared.
    fn time_fused(&self, ctx: &Context, fused: &Recorded, repeats: usize) -> Result<(f64, f64)> {
        let started = std::time::Instant::now();
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        for _ in 0..repeats {
            encoder.clear_buffer(&self.flow, 0, None);
            fused.record(&mut encoder.begin_compute_pass(&Default::default()), 1, self.len + 1);
        }
        self.copy_token(&mut encoder, 0);
        let commands = encoder.finish();
        let recorded = started.elapsed().as_secs_f64();
        ctx.queue.submit([commands]);
        if ctx.read_f32(&self.token_staging[0], 2)?[1].to_bits() != 0 {
            return Err(Error::Gpu(format!("{GAVE_UP} while profiling: its workgroups were not all resident at once")));
        }
        let per = |seconds: f64| seconds * 1e6 / repeats as f64;
        Ok((per(recorded), per(started.elapsed().as_secs_f64())))
    }

    /// (µs recording, µs in all) per repeat of one pass recording the `members` of the decode
    /// (`rows` = 1) or prefill program `repeats` times.
    fn time_pass(&self, ctx: &Context, members: &[usize], repeats: usize, rows: usize) -> Result<(f64, f64)> {
        let program = if rows == 1 { &self.decode } else { &self.prefill };
        let started = std::time::Instant::now();
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for _ in 0..repeats {
                members.iter().for_each(|&i| program[i].record(&mut pass, rows, self.len + rows));
            }
        }
        encoder.copy_buffer_to_buffer(&self.tokens, 0, &self.token_staging[0], 0, 4);
        let commands = encoder.finish();
        let recorded = started.elapsed().as_secs_f64();
        ctx.queue.submit([commands]);
        ctx.read_f32(&self.token_staging[0], 1)?;
        let per = |seconds: f64| seconds * 1e6 / repeats as f64;
        Ok((per(recorded), per(started.elapsed().as_secs_f64())))
    }
}

/// A greedy step submitted ahead of being asked for.
struct Ahead {
    position: usize,
    slot: usize,
    submission: wgpu::SubmissionIndex,
}

/// What a submission ends with.
enum Tail<'a> {
    Nothing,
    /// Head, argmax, and the token copied to staging.
    Token,
    /// Head on the last row, its logits copied to staging.
    Logits,
    /// `head`'s dispatches on every row into `out`, `bytes` of it copied to `staging`.
    Rows { head: &'a [Recorded], out: &'a wgpu::Buffer, staging: &'a wgpu::Buffer, bytes: u64 },
}
