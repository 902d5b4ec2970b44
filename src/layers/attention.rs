//! Multi-head attention (type 1, layers.md §3): Q/K/V/O projections from packed weights, optional
//! per-head Q/K RMSNorm, RoPE, grouped KV heads, causal softmax attention; forward and backward.
//! `infer_cached` decodes incrementally against a `KvCache` (attention/kv_cache.rs); both
//! inference forwards run on the GPU (gpu/attention.rs) when the context says so.

mod kv_cache;

pub use kv_cache::KvCache;

use super::spec::{Build, Fields};
use super::{check_grad, copy_param, new_param, Ctx, Device, Grads, Input, Layer, LayerOps, Param, Saved, Shape};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::kernels::attention::{self as core, head_rms_norm, head_rms_norm_backward, Heads, KeyValues, Rope};
use crate::kernels::{dense as kernel, Schedule};
use crate::rng::Rng;
use serde_json::{json, Map, Value};

const KIND: &str = "MultiHeadAttention";

/// Sizes and options. Zero sizes mean "the default" until `Attention::new` resolves them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionConfig {
    pub d_model: usize,
    pub num_heads: usize,
    /// 0 → num_heads.
    pub num_kv_heads: usize,
    /// 0 → d_model / num_heads.
    pub head_dim: usize,
    /// The sequence length the layer is built for (its declared input shape); any length runs.
    pub seq_length: usize,
    /// RoPE base θ (≤ 0 → 10000).
    pub rope_freq_base: f64,
    pub qk_norm: bool,
    /// The Q/K RMSNorm epsilon.
    pub epsilon: f64,
    pub causal: bool,
    pub bias: bool,
    /// The capacity of a `KvCache` made for this layer unless the cache asks for another.
    pub max_seq_len: usize,
}

impl AttentionConfig {
    /// The builder's defaults for `d_model` and `num_heads`.
    pub fn new(d_model: usize, num_heads: usize) -> AttentionConfig {
        AttentionConfig {
            d_model,
            num_heads,
            num_kv_heads: 0,
            head_dim: 0,
            seq_length: 1,
            rope_freq_base: 10000.0,
            qk_norm: false,
            epsilon: 1e-6,
            causal: true,
            bias: true,
            max_seq_len: 2048,
        }
    }

    /// Defaults filled in and every size checked (errors name the fields).
    fn resolved(mut self) -> Result<AttentionConfig> {
        let fail = |msg: String| Err(Error::Spec(format!("{KIND}: {msg}")));
        let (d, h) = (self.d_model, self.num_heads);
        if d == 0 || h == 0 {
            return fail(format!("d_model ({d}) and num_heads ({h}) must be > 0"));
        }
        if self.num_kv_heads == 0 {
            self.num_kv_heads = h;
        }
        if !h.is_multiple_of(self.num_kv_heads) {
            return fail(format!("num_kv_heads ({}) must divide num_heads ({h})", self.num_kv_heads));
        }
        if self.head_dim == 0 {
            if !d.is_multiple_of(h) {
                return fail(format!("num_heads ({h}) must divide d_model ({d}) when head_dim is not given"));
            }
            self.head_dim = d / h;
        }
        self.seq_length = self.seq_length.max(1);
        if !self.rope_freq_base.is_finite() || self.rope_freq_base <= 0.0 {
            self.rope_freq_base = 10000.0;
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return fail(format!("epsilon must be a positive number, got {}", self.epsilon));
        }
        if self.max_seq_len == 0 {
            return fail("max_seq_len must be > 0".into());
        }
        Ok(self)
    }
}

/// The float32 biases of the four projections.
#[derive(Debug, Clone)]
pub struct Biases {
    pub q: Param,
    pub k: Param,
    pub v: Param,
    pub o: Param,
}

/// The Q and K RMSNorm gains, [head_dim] each, shared by all heads.
#[derive(Debug, Clone)]
pub struct QkNorm {
    pub q: Param,
    pub k: Param,
}

#[derive(Debug, Clone)]
pub struct Attention {
    /// Resolved: no zero sizes.
    pub config: AttentionConfig,
    /// [q][d], [kv][d], [kv][d], [d][q] with q = num_heads·head_dim, kv = num_kv_heads·head_dim.
    pub wq: Param,
    pub wk: Param,
    pub wv: Param,
    pub wo: Param,
    pub biases: Option<Biases>,
    pub qk_norm: Option<QkNorm>,
}

/// Q, K, V of a batch after the optional norm and RoPE, and what the norm's backward needs.
struct Projected {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    norm: Option<NormTrace>,
}

/// Q and K before normalising, and 1/rms of each of their heads.
struct NormTrace {
    q_raw: Vec<f32>,
    q_inv_rms: Vec<f32>,
    k_raw: Vec<f32>,
    k_inv_rms: Vec<f32>,
}

/// What the training forward keeps for backward.
struct Trace {
    seq: usize,
    projected: Projected,
    /// The concatenated head outputs (the output projection's input) and their log-sum-exps.
    attn: Vec<f32>,
    lse: Vec<f32>,
}

impl Attention {
    /// PyTorch's Linear initialisation for each projection: weight and bias U(±1/√fan_in) from
    /// `seed`; norm gains start at 1.
    pub fn new(config: AttentionConfig, seed: u64, codec: Codec) -> Result<Attention> {
        let config = config.resolved()?;
        let (d, q, kv) = (config.d_model, config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim);
        let mut rng = Rng::new(seed);
        let mut uniform = |count: usize, fan_in: usize| -> Vec<f32> {
            let bound = 1.0 / (fan_in as f32).sqrt();
            (0..count).map(|_| rng.uniform(bound)).collect()
        };
        let wq = new_param(uniform(q * d, d), vec![q, d], codec)?;
        let wk = new_param(uniform(kv * d, d), vec![kv, d], codec)?;
        let wv = new_param(uniform(kv * d, d), vec![kv, d], codec)?;
        let wo = new_param(uniform(d * q, q), vec![d, q], codec)?;
        let biases = if config.bias {
            Some(Biases {
                q: new_param(uniform(q, d), vec![q], Codec::Standard)?,
                k: new_param(uniform(kv, d), vec![kv], Codec::Standard)?,
                v: new_param(uniform(kv, d), vec![kv], Codec::Standard)?,
                o: new_param(uniform(d, q), vec![d], Codec::Standard)?,
            })
        } else {
            None
        };
        let qk_norm = if config.qk_norm {
            let ones = || new_param(vec![1.0; config.head_dim], vec![config.head_dim], Codec::Standard);
            Some(QkNorm { q: ones()?, k: ones()? })
        } else {
            None
        };
        Ok(Attention { config, wq, wk, wv, wo, biases, qk_norm })
    }

    pub fn from_spec(f: &Fields, build: Build) -> Result<Attention> {
        let config = AttentionConfig {
            d_model: f.positive("d_model", 0, KIND)?,
            num_heads: f.positive("num_heads", 0, KIND)?,
            num_kv_heads: f.usize("num_kv_heads", 0)?,
            head_dim: f.usize("head_dim", 0)?,
            seq_length: f.usize("seq_length", 1)?,
            rope_freq_base: f.f64("rope_freq_base", 10000.0)?,
            qk_norm: f.bool("qk_norm", false)?,
            epsilon: f.f64("epsilon", 1e-6)?,
            causal: f.bool("causal", true)?,
            bias: f.bool("bias", true)?,
            max_seq_len: f.positive("max_seq_len", 2048, KIND)?,
        };
        Attention::new(config, build.seed, build.codec).map_err(|e| match e {
            Error::Spec(msg) => Error::Spec(format!("{}: {msg}", f.context)),
            other => other,
        })
    }

    pub fn heads(&self) -> Heads {
        let c = &self.config;
        Heads { heads: c.num_heads, kv_heads: c.num_kv_heads, head_dim: c.head_dim, causal: c.causal }
    }

    /// Positions per sample: [S, d] → S, [d] → 1, a flattened [seq_length·d] → seq_length.
    fn sequence(&self, shape: &[usize]) -> Result<usize> {
        let (d, seq) = (self.config.d_model, self.config.seq_length);
        match *shape {
            [s, w] if w == d && s > 0 => Ok(s),
            [w] if w == d => Ok(1),
            [w] if w == seq * d => Ok(seq),
            _ => Err(Error::Shape(format!("{KIND} expects samples of shape [seq, {d}] or [{d}] (d_model {d}), got {shape:?}"))),
        }
    }

    /// Positions per sample of a batch whose length has been checked.
    fn checked_sequence(&self, x: &Input) -> Result<usize> {
        x.check_len()?;
        if x.batch == 0 {
            return Err(Error::Value(format!("{KIND} got an empty batch")));
        }
        self.sequence(x.shape)
    }

    /// y[rows][n] = x·Wᵀ + b through the packed-weight kernel.
    fn linear(x: &[f32], rows: usize, w: &Param, b: Option<&Param>, n: usize, schedule: Schedule) -> Result<Vec<f32>> {
        let store = w.read().unwrap();
        let mut y = kernel::forward(x, rows, x.len() / rows, store.view()?, n, schedule);
        if let Some(b) = b {
            let bias = b.read().unwrap();
            let bias = bias.master()?;
            y.chunks_exact_mut(n).for_each(|row| row.iter_mut().zip(bias).for_each(|(v, &bv)| *v += bv));
        }
        Ok(y)
    }

    /// Q, K, V of `rows` rows (sequences of `seq` positions starting at `first_pos`), normalised
    /// and rotated; `keep` keeps what the norm's backward needs.
    fn project(&self, x: &[f32], rows: usize, seq: usize, first_pos: usize, schedule: Schedule, keep: bool) -> Result<Projected> {
        let heads = self.heads();
        let (qw, kw) = (heads.q_width(), heads.kv_width());
        let bias = |pick: fn(&Biases) -> &Param| self.biases.as_ref().map(pick);
        let (q, (k, v)) = schedule.both(
            || Self::linear(x, rows, &self.wq, bias(|b| &b.q), qw, schedule),
            || schedule.both(|| Self::linear(x, rows, &self.wk, bias(|b| &b.k), kw, schedule), || Self::linear(x, rows, &self.wv, bias(|b| &b.v), kw, schedule)),
        );
        let (mut q, mut k, v) = (q?, k?, v?);
        let mut norm = None;
        if let Some(gains) = &self.qk_norm {
            let (q_raw, k_raw) = if keep { (q.clone(), k.clone()) } else { (Vec::new(), Vec::new()) };
            let q_inv_rms = head_rms_norm(&mut q, gains.q.read().unwrap().master()?, self.config.epsilon);
            let k_inv_rms = head_rms_norm(&mut k, gains.k.read().unwrap().master()?, self.config.epsilon);
            norm = keep.then_some(NormTrace { q_raw, q_inv_rms, k_raw, k_inv_rms });
        }
        let rope = Rope::new(heads.head_dim, self.config.rope_freq_base, first_pos, seq);
        rope.rotate(&mut q, qw, false);
        rope.rotate(&mut k, kw, false);
        Ok(Projected { q, k, v, norm })
    }

    /// The output projection of the concatenated heads.
    fn output(&self, attn: &[f32], rows: usize, schedule: Schedule) -> Result<Vec<f32>> {
        Self::linear(attn, rows, &self.wo, self.biases.as_ref().map(|b| &b.o), self.config.d_model, schedule)
    }

    /// Each sample attends within itself, from position 0.
    fn forward_full(&self, x: &Input, schedule: Schedule, keep: bool) -> Result<(Vec<f32>, Trace)> {
        let seq = self.checked_sequence(x)?;
        let rows = x.batch * seq;
        let projected = self.project(x.data, rows, seq, 0, schedule, keep)?;
        let kw = self.heads().kv_width();
        let items: Vec<KeyValues> = (0..x.batch)
            .map(|b| {
                let span = b * seq * kw..(b + 1) * seq * kw;
                KeyValues { k: &projected.k[span.clone()], v: &projected.v[span] }
            })
            .collect();
        let (attn, lse) = core::forward(&self.heads(), &projected.q, seq, &items, 0, schedule);
        let y = self.output(&attn, rows, schedule)?;
        Ok((y, Trace { seq, projected, attn, lse }))
    }

    /// Incremental decoding: the new positions of each sequence in `x` (any count ≥ 1, at the
    /// positions after those already cached) are appended to `cache`, and attend to everything
    /// cached. Samples are [S, d] or [d]; the batch must be the cache's.
    pub fn infer_cached(&self, x: Input, cache: &mut KvCache, ctx: &Ctx) -> Result<Vec<f32>> {
        let seq = self.checked_sequence(&x)?;
        cache.check_fits(self, x.batch, seq)?;
        if ctx.device == Device::Gpu {
            let items: Vec<(&[f32], &[f32])> = cache.items().iter().map(|kv| (kv.k, kv.v)).collect();
            let out = self.forward_gpu(x.data, x.batch, seq, Some(&items))?;
            cache.append(&out.keys, &out.values, seq);
            return Ok(out.y);
        }
        let first_pos = cache.len();
        let projected = self.project(x.data, x.batch * seq, seq, first_pos, ctx.schedule, false)?;
        cache.append(&projected.k, &projected.v, seq);
        let (attn, _) = core::forward(&self.heads(), &projected.q, seq, &cache.items(), first_pos, ctx.schedule);
        self.output(&attn, x.batch * seq, ctx.schedule)
    }

    /// The forward on the GPU (gpu::attention_forward), from the tensors the CPU computes with:
    /// the projections' active versions, the biases' and norm gains' float32 masters.
    fn forward_gpu(&self, x: &[f32], batch: usize, seq: usize, past: Option<&[(&[f32], &[f32])]>) -> Result<crate::gpu::AttentionOutput> {
        use crate::gpu::{AttentionShape, AttentionWeights, GpuWeights};
        let c = &self.config;
        let shape = AttentionShape {
            d_model: c.d_model,
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            causal: c.causal,
            rope_base: c.rope_freq_base,
            epsilon: c.epsilon,
        };
        let [wq, wk, wv, wo] = [&self.wq, &self.wk, &self.wv, &self.wo].map(|p| p.read().unwrap());
        let bias_stores = self.biases.as_ref().map(|b| [&b.q, &b.k, &b.v, &b.o].map(|p| p.read().unwrap()));
        let biases = match &bias_stores {
            Some([q, k, v, o]) => Some([q.master()?, k.master()?, v.master()?, o.master()?]),
            None => None,
        };
        let gain_stores = self.qk_norm.as_ref().map(|n| [&n.q, &n.k].map(|p| p.read().unwrap()));
        let qk_norm = match &gain_stores {
            Some([q, k]) => Some([
                GpuWeights::F32 { key: q.generation(), values: q.master()? },
                GpuWeights::F32 { key: k.generation(), values: k.master()? },
            ]),
            None => None,
        };
        let weights = AttentionWeights { q: GpuWeights::of(&wq)?, k: GpuWeights::of(&wk)?, v: GpuWeights::of(&wv)?, o: GpuWeights::of(&wo)?, biases, qk_norm };
        crate::gpu::attention_forward(&shape, &weights, x, batch, seq, past)
    }
}

impl Attention {
    /// The attention mixing transposed: for `g` in the concatenated-heads layout
    /// [batch·seq][q_width], Σ_t A[t][s]·g_t for every key position s, in the value layout
    /// [batch·seq][kv_width] (query heads sharing a KV head add up). `saved` is this layer's
    /// training record; target propagation pushes targets along the value path with it.
    pub fn mix_transposed(&self, saved: &Saved, g: &[f32], batch: usize, schedule: Schedule) -> Vec<f32> {
        let t = saved.state::<Trace>();
        let p = &t.projected;
        let fwd = core::Forward { q: &p.q, k: &p.k, v: &p.v, out: &t.attn, lse: &t.lse };
        core::backward(&self.heads(), fwd, g, batch, t.seq, schedule).2
    }
}

impl LayerOps for Attention {
    fn type_name(&self) -> &'static str {
        KIND
    }

    fn output_shape(&self, input: &[usize]) -> Result<Shape> {
        self.sequence(input)?;
        Ok(input.to_vec())
    }

    fn input_shape(&self) -> Option<Shape> {
        let (d, seq) = (self.config.d_model, self.config.seq_length);
        Some(if seq > 1 { vec![seq, d] } else { vec![d] })
    }

    fn params(&self) -> Vec<Param> {
        let mut p = self.morphable();
        if let Some(b) = &self.biases {
            p.extend([b.q.clone(), b.k.clone(), b.v.clone(), b.o.clone()]);
        }
        if let Some(n) = &self.qk_norm {
            p.extend([n.q.clone(), n.k.clone()]);
        }
        p
    }

    fn morphable(&self) -> Vec<Param> {
        vec![self.wq.clone(), self.wk.clone(), self.wv.clone(), self.wo.clone()]
    }

    fn infer(&self, x: Input, ctx: &Ctx) -> Result<Vec<f32>> {
        if ctx.device == Device::Gpu {
            let seq = self.checked_sequence(&x)?;
            return Ok(self.forward_gpu(x.data, x.batch, seq, None)?.y);
        }
        Ok(self.forward_full(&x, ctx.schedule, false)?.0)
    }

    fn forward_train(&self, x: Input, ctx: &Ctx) -> Result<Saved> {
        let (post, trace) = self.forward_full(&x, ctx.schedule, true)?;
        Ok(Saved { post, shape: x.shape.to_vec(), state: Box::new(trace) })
    }

    fn backward(&self, x: Input, saved: &Saved, grad_out: &[f32], ctx: &Ctx, need_input: bool) -> Result<Grads> {
        check_grad(KIND, grad_out, saved)?;
        let t = saved.state::<Trace>();
        let (heads, s, d) = (self.heads(), ctx.schedule, self.config.d_model);
        let (qw, kw, rows) = (heads.q_width(), heads.kv_width(), x.batch * t.seq);
        let d_attn = kernel::backward_input(grad_out, rows, d, self.wo.read().unwrap().view()?, qw, s);
        let p = &t.projected;
        let fwd = core::Forward { q: &p.q, k: &p.k, v: &p.v, out: &t.attn, lse: &t.lse };
        let (mut dq, mut dk, dv) = core::backward(&heads, fwd, &d_attn, x.batch, t.seq, s);
        // RoPE is a rotation: its transpose (the inverse turn) carries the gradient back.
        let rope = Rope::new(heads.head_dim, self.config.rope_freq_base, 0, t.seq);
        rope.rotate(&mut dq, qw, true);
        rope.rotate(&mut dk, kw, true);
        let mut gain_grads = Vec::new();
        if let (Some(gains), Some(n)) = (&self.qk_norm, &p.norm) {
            let (dq_raw, d_gain_q) = head_rms_norm_backward(&n.q_raw, &n.q_inv_rms, gains.q.read().unwrap().master()?, &dq);
            let (dk_raw, d_gain_k) = head_rms_norm_backward(&n.k_raw, &n.k_inv_rms, gains.k.read().unwrap().master()?, &dk);
            (dq, dk) = (dq_raw, dk_raw);
            gain_grads = vec![(gains.q.clone(), d_gain_q), (gains.k.clone(), d_gain_k)];
        }
        let mut params = vec![
            (self.wq.clone(), kernel::weight_grad(&dq, rows, qw, x.data, d, s)),
            (self.wk.clone(), kernel::weight_grad(&dk, rows, kw, x.data, d, s)),
            (self.wv.clone(), kernel::weight_grad(&dv, rows, kw, x.data, d, s)),
            (self.wo.clone(), kernel::weight_grad(grad_out, rows, d, &t.attn, qw, s)),
        ];
        if let Some(b) = &self.biases {
            params.push((b.q.clone(), kernel::column_sums(&dq, rows, qw)));
            params.push((b.k.clone(), kernel::column_sums(&dk, rows, kw)));
            params.push((b.v.clone(), kernel::column_sums(&dv, rows, kw)));
            params.push((b.o.clone(), kernel::column_sums(grad_out, rows, d)));
        }
        params.extend(gain_grads);
        let input = if need_input {
            // dx = dQ·Wq + dK·Wk + dV·Wv, added in that order.
            let mut dx = kernel::backward_input(&dq, rows, qw, self.wq.read().unwrap().view()?, d, s);
            for (g, w, n) in [(&dk, &self.wk, kw), (&dv, &self.wv, kw)] {
                let part = kernel::backward_input(g, rows, n, w.read().unwrap().view()?, d, s);
                dx.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
            }
            dx
        } else {
            Vec::new()
        };
        Ok(Grads::new(input, params))
    }

    fn deep_clone(&self) -> Layer {
        Layer::MultiHeadAttention(Attention {
            wq: copy_param(&self.wq),
            wk: copy_param(&self.wk),
            wv: copy_param(&self.wv),
            wo: copy_param(&self.wo),
            biases: self.biases.as_ref().map(|b| Biases { q: copy_param(&b.q), k: copy_param(&b.k), v: copy_param(&b.v), o: copy_param(&b.o) }),
            qk_norm: self.qk_norm.as_ref().map(|n| QkNorm { q: copy_param(&n.q), k: copy_param(&n.k) }),
            ..self.clone()
        })
    }

    fn spec(&self) -> Map<String, Value> {
        let c = &self.config;
        let mut o = Map::new();
        o.insert("type".into(), json!(KIND));
        o.insert("d_model".into(), json!(c.d_model));
        o.insert("num_heads".into(), json!(c.num_heads));
        o.insert("num_kv_heads".into(), json!(c.num_kv_heads));
        o.insert("head_dim".into(), json!(c.head_dim));
        o.insert("seq_length".into(), json!(c.seq_length));
        o.insert("rope_freq_base".into(), json!(c.rope_freq_base));
        o.insert("qk_norm".into(), json!(c.qk_norm));
        o.insert("epsilon".into(), json!(c.epsilon));
        o.insert("causal".into(), json!(c.causal));
        o.insert("bias".into(), json!(c.bias));
        o.insert("max_seq_len".into(), json!(c.max_seq_len));
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(qk_norm: bool) -> Attention {
        let config = AttentionConfig { num_kv_heads: 2, qk_norm, ..AttentionConfig::new(32, 4) };
        Attention::new(config, 7, Codec::Standard).unwrap()
    }

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 16777216.0) - 0.5).collect()
    }

    /// Forward output, input gradient and every parameter gradient under `schedule`.
    fn run(l: &Attention, x: &[f32], g: &[f32], batch: usize, shape: &[usize], schedule: Schedule) -> Vec<Vec<f32>> {
        let ctx = Ctx::standalone(schedule);
        let input = Input::new(x, batch, shape);
        let saved = l.forward_train(input, &ctx).unwrap();
        let grads = l.backward(input, &saved, g, &ctx, true).unwrap();
        let mut all = vec![saved.post, grads.input];
        all.extend(grads.params.into_iter().map(|(_, g)| g));
        all
    }

    #[test]
    fn tiled_and_parallel_layer_passes_are_bitwise_identical_for_any_thread_count() {
        for qk_norm in [false, true] {
            let l = layer(qk_norm);
            let (batch, shape) = (4, [80, 32]);
            let (x, g) = (data(batch * 80 * 32, 1), data(batch * 80 * 32, 2));
            let tiled = run(&l, &x, &g, batch, &shape, Schedule::Tiled);
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let parallel = pool.install(|| run(&l, &x, &g, batch, &shape, Schedule::Parallel));
                assert_eq!(tiled, parallel, "qk_norm {qk_norm}, {threads} threads");
            }
        }
    }

    #[test]
    fn prefill_then_decode_matches_the_full_sequence() {
        let l = layer(true);
        let (batch, seq, d) = (2, 9, 32);
        let x = data(batch * seq * d, 3);
        let ctx = Ctx::standalone(Schedule::Tiled);
        let full = l.infer(Input::new(&x, batch, &[seq, d]), &ctx).unwrap();
        let mut cache = KvCache::new(&l, batch, Some(seq)).unwrap();
        let prefill = 5;
        let gather = |from: usize, to: usize| -> Vec<f32> { (0..batch).flat_map(|b| x[(b * seq + from) * d..(b * seq + to) * d].to_vec()).collect() };
        let mut got = vec![l.infer_cached(Input::new(&gather(0, prefill), batch, &[prefill, d]), &mut cache, &ctx).unwrap()];
        for s in prefill..seq {
            got.push(l.infer_cached(Input::new(&gather(s, s + 1), batch, &[d]), &mut cache, &ctx).unwrap());
        }
        assert_eq!(cache.len(), seq);
        for b in 0..batch {
            let mut row = got[0][b * prefill * d..(b + 1) * prefill * d].to_vec();
            got[1..].iter().for_each(|step| row.extend_from_slice(&step[b * d..(b + 1) * d]));
            let want = &full[b * seq * d..(b + 1) * seq * d];
            let err = row.iter().zip(want).map(|(a, w)| (a - w).abs()).fold(0f32, f32::max);
            assert!(err < 1e-5, "item {b}: {err}");
        }
        let overflow = l.infer_cached(Input::new(&gather(0, 1), batch, &[d]), &mut cache, &ctx);
        assert!(matches!(overflow, Err(Error::Shape(m)) if m.contains("9")));
    }

    /// max |a − b| / max |b|.
    fn rel_err(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let err = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        err / b.iter().map(|y| y.abs()).fold(f32::MIN_POSITIVE, f32::max)
    }

    #[test]
    fn gpu_prefill_and_decode_match_the_cpu_and_fill_the_same_cache() {
        let _serial = crate::gpu::tests::SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        if !crate::gpu::gpu_available() {
            eprintln!("no GPU adapter: skipping the GPU KV cache test");
            return;
        }
        let l = layer(true);
        for p in l.morphable() {
            p.write().unwrap().morph(crate::dtype::DType::Int4).unwrap();
        }
        let (batch, seq, d) = (2, 9, 32);
        let x = data(batch * seq * d, 5);
        let cpu = Ctx::standalone(Schedule::Tiled);
        let gpu = Ctx { device: Device::Gpu, ..cpu };
        let full = l.infer(Input::new(&x, batch, &[seq, d]), &cpu).unwrap();
        assert!(rel_err(&l.infer(Input::new(&x, batch, &[seq, d]), &gpu).unwrap(), &full) <= 1e-5);
        let gather = |from: usize, to: usize| -> Vec<f32> { (0..batch).flat_map(|b| x[(b * seq + from) * d..(b * seq + to) * d].to_vec()).collect() };
        // Prefill 5 positions, then 2, then one at a time; the CPU cache is fed the same.
        let (mut on_gpu, mut on_cpu) = (KvCache::new(&l, batch, Some(seq)).unwrap(), KvCache::new(&l, batch, Some(seq)).unwrap());
        for (from, to) in [(0, 5), (5, 7), (7, 8), (8, 9)] {
            let (part, shape) = (gather(from, to), [to - from, d]);
            let input = Input::new(&part, batch, &shape);
            let got = l.infer_cached(input, &mut on_gpu, &gpu).unwrap();
            let want = l.infer_cached(input, &mut on_cpu, &cpu).unwrap();
            assert!(rel_err(&got, &want) <= 1e-5, "positions {from}..{to}");
            for b in 0..batch {
                let full_rows = &full[(b * seq + from) * d..(b * seq + to) * d];
                assert!(rel_err(&got[b * (to - from) * d..(b + 1) * (to - from) * d], full_rows) <= 1e-5);
            }
        }
        for (g, c) in on_gpu.items().iter().zip(&on_cpu.items()) {
            assert!(rel_err(g.k, c.k) <= 1e-5 && rel_err(g.v, c.v) <= 1e-5);
        }
    }
}
