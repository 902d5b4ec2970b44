//! Transformer: a Llama-family decoder laid out on a `VolumetricNetwork`, so the model is an
//! ordinary network (inspect, morph, run it layer by layer). Full-sequence logits run the grid's
//! own forward; decoding runs the same plan with one `KvCache` per attention layer.
//!
//! Coordinate scheme: a 1 × 1 × (L + 2) grid of 6-slot cells, one column per stage:
//! - column 0: (0,0,0,0) Embedding;
//! - column b + 1 (block b): l0 RMSNorm, l1 MultiHeadAttention, l2 Residual, l3 RMSNorm,
//!   l4 SwiGLU, l5 Residual. A Residual in the grid adds the input of the layer before it, which
//!   here would be the normed tensor; so each Residual carries a remote link to the tensor its
//!   half started from: l2 → the previous column's output, l5 → l2;
//! - column L + 1: l0 final RMSNorm, l1 Dense LM head (tied: the embedding table's `Param`).

use super::checkpoint::{Checkpoint, TensorSource};
use super::gguf_model::GgufSource;
use super::config::LlamaConfig;
use super::gpu_model::{GpuModel, GpuState};
use super::sampler::Sampler;
use crate::activation::Activation;
use crate::codec::Codec;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kernels::Schedule;
use crate::layers::attention::{AttentionConfig, Biases, KvCache};
use crate::layers::norm::NormKind;
use crate::layers::{new_param, Attention, Ctx, Dense, Device, Embedding, Input, Layer, Norm, Param, Residual, SwiGlu};
use crate::network::exec::{self, Source};
use crate::network::{Coord, VolumetricNetwork};
use std::path::Path;
use std::sync::Arc;

/// Slots per cell: a block's six layers.
const SLOTS: usize = 6;

pub struct Transformer {
    pub config: LlamaConfig,
    pub network: VolumetricNetwork,
    pub schedule: Schedule,
    /// Present when the model runs on the GPU: its resident weights (the grid keeps its own).
    pub gpu: Option<GpuModel>,
}

/// One decoding sequence: the per-attention-layer KV caches on the CPU, or the GPU state.
pub enum DecodeState {
    Cpu(Vec<KvCache>),
    Gpu(Box<GpuState>),
}

impl DecodeState {
    /// Positions decoded so far.
    pub fn len(&self) -> usize {
        match self {
            DecodeState::Cpu(caches) => caches.first().map_or(0, KvCache::len),
            DecodeState::Gpu(state) => state.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Start a new sequence (memory is kept).
    pub fn reset(&mut self) {
        match self {
            DecodeState::Cpu(caches) => caches.iter_mut().for_each(KvCache::reset),
            DecodeState::Gpu(state) => state.reset(),
        }
    }
}

fn cell(x: usize, l: usize) -> Coord {
    Coord { z: 0, y: 0, x, l }
}

/// A parameter loaded from `source` (packed when the source's tensor is).
fn load(source: &dyn TensorSource, name: &str, shape: &[usize]) -> Result<Param> {
    source.param(name, shape)
}

fn rms_norm(source: &dyn TensorSource, name: &str, c: &LlamaConfig) -> Result<Layer> {
    let gain = load(source, name, &[c.hidden_size])?;
    Ok(Layer::Norm(Norm { kind: NormKind::Rms, size: c.hidden_size, epsilon: c.rms_norm_eps, gain, shift: None }))
}

fn attention(source: &dyn TensorSource, prefix: &str, c: &LlamaConfig) -> Result<Layer> {
    let (d, q, kv) = (c.hidden_size, c.query_width(), c.kv_width());
    let name = |proj: &str, part: &str| format!("{prefix}.self_attn.{proj}_proj.{part}");
    let config = AttentionConfig {
        num_kv_heads: c.num_key_value_heads,
        head_dim: c.head_dim,
        rope_freq_base: c.rope_theta,
        bias: c.attention_bias,
        max_seq_len: c.max_position_embeddings,
        ..AttentionConfig::new(d, c.num_attention_heads)
    };
    let biases = if c.attention_bias {
        // Qwen2 has Q/K/V biases but none on the output projection: a missing one is zero.
        let o = match source.contains(&name("o", "bias")) {
            true => load(source, &name("o", "bias"), &[d])?,
            false => new_param(vec![0.0; d], vec![d], Codec::Standard)?,
        };
        Some(Biases { q: load(source, &name("q", "bias"), &[q])?, k: load(source, &name("k", "bias"), &[kv])?, v: load(source, &name("v", "bias"), &[kv])?, o })
    } else {
        None
    };
    Ok(Layer::MultiHeadAttention(Attention {
        config,
        wq: load(source, &name("q", "weight"), &[q, d])?,
        wk: load(source, &name("k", "weight"), &[kv, d])?,
        wv: load(source, &name("v", "weight"), &[kv, d])?,
        wo: load(source, &name("o", "weight"), &[d, q])?,
        biases,
        qk_norm: None,
    }))
}

fn feed_forward(source: &dyn TensorSource, prefix: &str, c: &LlamaConfig) -> Result<Layer> {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let name = |proj: &str| format!("{prefix}.mlp.{proj}_proj.weight");
    Ok(Layer::SwiGlu(SwiGlu {
        model_size: h,
        hidden_size: i,
        gate_activation: Activation::Silu,
        w_gate: load(source, &name("gate"), &[i, h])?,
        w_up: load(source, &name("up"), &[i, h])?,
        w_down: load(source, &name("down"), &[h, i])?,
        biases: None,
    }))
}

impl Transformer {
    /// Load a HuggingFace model directory (config.json + safetensors); `dtype` morphs every
    /// weighted layer after loading.
    pub fn from_hf_dir(dir: &Path, dtype: Option<DType>) -> Result<Transformer> {
        let config = LlamaConfig::from_file(&dir.join("config.json"))?;
        let checkpoint = Checkpoint::open(dir)?;
        let model = Transformer::build(config, &checkpoint)?;
        if let Some(dtype) = dtype {
            model.network.morph_all(dtype)?;
        }
        Ok(model)
    }

    /// Load a GGUF file (llama-family metadata; quantised tensors stay in their block format);
    /// `dtype` morphs every weighted layer after loading.
    pub fn from_gguf(path: &Path, dtype: Option<DType>) -> Result<Transformer> {
        let (config, source) = GgufSource::open(path)?;
        let model = Transformer::build(config, &source)?;
        if let Some(dtype) = dtype {
            // Quantised GGUF tensors have no float32 master: decode one to convert from, morph,
            // and drop it again, one tensor at a time, so the model keeps only the new dtype's
            // bytes and the peak holds one decoded tensor, not all of them.
            for p in model.network.morphable_params() {
                let mut store = p.write().unwrap();
                let packed_only = !store.has_master();
                if packed_only {
                    let stored = store.dtype();
                    store.unpack(stored)?;
                }
                store.morph(dtype)?;
                if packed_only && dtype != DType::Float32 {
                    store.release_master()?;
                }
            }
        }
        crate::heap::release_free_pages();
        Ok(model)
    }

    /// Lay the model out on the grid (see the module doc), weights from `source`.
    pub fn build(config: LlamaConfig, source: &dyn TensorSource) -> Result<Transformer> {
        let c = &config;
        let blocks = c.num_hidden_layers;
        let mut net = VolumetricNetwork::new(1, 1, blocks + 2, SLOTS)?;
        let table = load(source, "model.embed_tokens.weight", &[c.vocab_size, c.hidden_size])?;
        let embedding = Embedding { vocab_size: c.vocab_size, dim: c.hidden_size, activation: Activation::Linear, table: table.clone() };
        net.set_layer(cell(0, 0), Arc::new(Layer::Embedding(embedding)))?;
        for b in 0..blocks {
            let (x, prefix) = (b + 1, format!("model.layers.{b}"));
            let block_input = if b == 0 { cell(0, 0) } else { cell(b, 5) };
            let layers = [
                rms_norm(source, &format!("{prefix}.input_layernorm.weight"), c)?,
                attention(source, &prefix, c)?,
                Layer::Residual(Residual),
                rms_norm(source, &format!("{prefix}.post_attention_layernorm.weight"), c)?,
                feed_forward(source, &prefix, c)?,
                Layer::Residual(Residual),
            ];
            for (l, layer) in layers.into_iter().enumerate() {
                net.set_layer(cell(x, l), Arc::new(layer))?;
            }
            net.set_link(cell(x, 2), Some(block_input))?;
            net.set_link(cell(x, 5), Some(cell(x, 2)))?;
        }
        let head_column = blocks + 1;
        net.set_layer(cell(head_column, 0), Arc::new(rms_norm(source, "model.norm.weight", c)?))?;
        // Some tied checkpoints still carry lm_head.weight (a copy); tying means sharing.
        let head = match c.tie_word_embeddings {
            true => table,
            false => load(source, "lm_head.weight", &[c.vocab_size, c.hidden_size])?,
        };
        let dense = Dense { input_size: c.hidden_size, output_size: c.vocab_size, activation: Activation::Linear, weights: head, bias: None };
        net.set_layer(cell(head_column, 1), Arc::new(Layer::Dense(dense)))?;
        Ok(Transformer { config, network: net, schedule: Schedule::Parallel, gpu: None })
    }

    /// Moves the token step to the GPU: the weights are uploaded and every later sequence,
    /// prefill and decode step runs there.
    pub fn use_gpu(&mut self) -> Result<()> {
        self.gpu = Some(GpuModel::upload(&self.config, &self.network)?);
        Ok(())
    }

    /// The most positions a sequence (prompt + generated) may have.
    pub fn context_length(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// Token ids as the network's float input; each must be in the vocabulary.
    fn input(&self, ids: &[u32]) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(Error::Value("no token ids given".into()));
        }
        let vocab = self.config.vocab_size;
        if let Some((i, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return Err(Error::Value(format!("token id {id} at position {i} is outside the vocabulary (size {vocab})")));
        }
        Ok(ids.iter().map(|&id| id as f32).collect())
    }

    /// Logits [len × vocab] of every position: one forward of the grid, no cache (on the GPU:
    /// the prefill path through a fresh sequence).
    pub fn logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        if ids.len() > self.context_length() {
            return Err(Error::Value(format!("{} tokens exceed the context length {}", ids.len(), self.context_length())));
        }
        if let Some(gpu) = &self.gpu {
            return gpu.start()?.all_logits(gpu, ids);
        }
        let x = self.input(ids)?;
        Ok(exec::infer(&self.network, &x, 1, &[ids.len()], self.schedule, Device::Cpu)?.0)
    }

    /// Empty KV caches for one sequence.
    pub fn start(&self) -> Result<DecodeState> {
        if let Some(gpu) = &self.gpu {
            return Ok(DecodeState::Gpu(Box::new(gpu.start()?)));
        }
        let caches = self
            .network
            .active()
            .filter_map(|(_, layer)| match &**layer {
                Layer::MultiHeadAttention(a) => Some(KvCache::new(a, 1, Some(self.context_length()))),
                _ => None,
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(DecodeState::Cpu(caches))
    }

    /// Feeds `ids` (a prompt, a turn, or the last chosen token) and picks the next token with
    /// `sampler`. On the GPU a greedy choice is made there and only its id comes back; other
    /// sampling reads the logits back and samples them as on the CPU.
    pub fn next_token(&self, state: &mut DecodeState, ids: &[u32], sampler: &mut Sampler, history: &[u32]) -> Result<u32> {
        if let (Some(gpu), DecodeState::Gpu(gpu_state)) = (&self.gpu, &mut *state) {
            self.check_fits(gpu_state.len(), ids.len())?;
            if sampler.is_greedy() {
                return gpu_state.greedy(gpu, ids);
            }
            let mut logits = gpu_state.logits(gpu, ids)?;
            return Ok(sampler.sample(&mut logits, history));
        }
        let mut logits = self.decode(state, ids)?;
        Ok(sampler.sample(&mut logits, history))
    }

    fn check_fits(&self, used: usize, more: usize) -> Result<()> {
        if used + more > self.context_length() {
            return Err(Error::Value(format!(
                "{more} more tokens do not fit the context: {used} of at most {} positions are used",
                self.context_length()
            )));
        }
        Ok(())
    }

    /// Feed a prompt (all positions in one batched pass); returns the last position's logits.
    pub fn prefill(&self, state: &mut DecodeState, ids: &[u32]) -> Result<Vec<f32>> {
        self.decode(state, ids)
    }

    /// Feed one token; returns its logits.
    pub fn step(&self, state: &mut DecodeState, id: u32) -> Result<Vec<f32>> {
        self.decode(state, &[id])
    }

    /// Run the grid's plan for the new positions, attention layers against their caches. The
    /// last column (final norm, head) is row-wise, so it only sees the last position.
    fn decode(&self, state: &mut DecodeState, ids: &[u32]) -> Result<Vec<f32>> {
        let x = self.input(ids)?;
        self.check_fits(state.len(), ids.len())?;
        let caches = match state {
            DecodeState::Cpu(caches) => caches,
            DecodeState::Gpu(gpu_state) => {
                let gpu = self.gpu.as_ref().ok_or_else(|| Error::Value("a GPU decode state given to a CPU model".into()))?;
                return gpu_state.logits(gpu, ids);
            }
        };
        let input_shape = [ids.len()];
        let steps = exec::plan(&self.network, &input_shape)?;
        let head_column = self.network.cols - 1;
        let ctx = Ctx { schedule: self.schedule, device: Device::Cpu, links: &self.network, nesting: 0 };
        let freed = exec::last_readers(&steps);
        let mut outputs: Vec<(Vec<f32>, Vec<usize>)> = Vec::with_capacity(steps.len());
        let mut caches = caches.iter_mut();
        for (j, step) in steps.iter().enumerate() {
            let tensor = |s: Source| match s {
                Source::Input => (&x[..], &input_shape[..]),
                Source::Step(i) => (&outputs[i].0[..], &outputs[i].1[..]),
            };
            let (mut data, shape) = tensor(step.input);
            let mut shape = shape.to_vec();
            if step.coord.x == head_column && shape[0] > 1 {
                let width = data.len() / shape[0];
                data = &data[data.len() - width..];
                shape[0] = 1;
            }
            let input = Input { data, batch: 1, shape: &shape, skip: step.skip.map(|s| tensor(s).0) };
            let y = match &*step.layer {
                Layer::MultiHeadAttention(a) => {
                    let cache = caches.next().ok_or_else(|| Error::Value("the network has more attention layers than the decode state".into()))?;
                    a.infer_cached(input, cache, &ctx)
                }
                layer => layer.infer(input, &ctx),
            }
            .map_err(|e| exec::at(step.coord, &step.layer, e))?;
            let out_shape = step.layer.output_shape(&shape)?;
            outputs.push((y, out_shape));
            freed[j].iter().for_each(|&i| outputs[i].0 = Vec::new());
        }
        Ok(outputs.pop().map(|(y, _)| y).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use std::collections::HashMap;

    /// Random tensors of whatever shape is asked for (a model with the config's shapes).
    struct RandomSource(std::cell::RefCell<HashMap<String, Vec<f32>>>);

    impl TensorSource for RandomSource {
        fn contains(&self, _: &str) -> bool {
            false
        }
        fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
            let mut rng = Rng::new(self.0.borrow().len() as u64 + 1);
            let n: usize = shape.iter().product();
            let gain = name.ends_with("norm.weight");
            let v: Vec<f32> = (0..n).map(|_| if gain { 1.0 + rng.uniform(0.1) } else { rng.uniform(0.3) }).collect();
            self.0.borrow_mut().insert(name.into(), v.clone());
            Ok(v)
        }
    }

    fn tiny(tied: bool, bias: bool) -> Transformer {
        let json = serde_json::json!({"architectures": ["LlamaForCausalLM"], "hidden_size": 32, "intermediate_size": 48,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 40,
            "tie_word_embeddings": tied, "attention_bias": bias, "max_position_embeddings": 24});
        let config = LlamaConfig::from_value(&json, "test").unwrap();
        Transformer::build(config, &RandomSource(Default::default())).unwrap()
    }

    #[test]
    fn cached_decoding_matches_the_full_forward() {
        for (tied, bias) in [(false, false), (true, true)] {
            let model = tiny(tied, bias);
            let ids: Vec<u32> = vec![3, 17, 5, 39, 0, 22, 8, 8, 11];
            let full = model.logits(&ids).unwrap();
            let vocab = 40;
            let mut state = model.start().unwrap();
            let mut rows = vec![model.prefill(&mut state, &ids[..4]).unwrap()];
            rows.extend(ids[4..].iter().map(|&id| model.step(&mut state, id).unwrap()));
            for (i, row) in rows.iter().enumerate() {
                let want = &full[(i + 3) * vocab..(i + 4) * vocab];
                let err = row.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(err < 1e-4, "position {}: {err}", i + 3);
            }
            assert_eq!(state.len(), ids.len());
        }
    }

    #[test]
    fn tied_head_shares_the_embedding_tensor() {
        let model = tiny(true, false);
        let head = model.network.slot(cell(3, 1)).unwrap().unwrap().layer.params()[0].clone();
        let table = model.network.slot(cell(0, 0)).unwrap().unwrap().layer.params()[0].clone();
        assert!(Arc::ptr_eq(&head, &table));
    }

    #[test]
    fn bad_ids_and_context_overflow_are_errors() {
        let model = tiny(false, false);
        assert!(matches!(model.logits(&[40]), Err(Error::Value(m)) if m.contains("token id 40 at position 0")));
        let mut state = model.start().unwrap();
        model.prefill(&mut state, &[1; 20]).unwrap();
        assert!(matches!(model.prefill(&mut state, &[1; 5]), Err(Error::Value(m)) if m.contains("context")));
    }
}
