//! Embedding lookup (layers.md §10): every input value is a token id; each id becomes its row of
//! the table [vocab][dim], decoded from the active packed version, then the layer's activation
//! (as in the reference). Ids that are not integers in [0, vocab) are errors (the reference
//! outputs zeros for them).

use super::spec::{Build, Fields};
use super::{check_grad, copy_param, new_param, through_activation, Ctx, Device, Grads, Input, Layer, LayerOps, Param, Saved, Shape};
use crate::activation::Activation;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::kernels::rows::row_blocks;
use crate::kernels::Schedule;
use crate::rng::Rng;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone)]
pub struct Embedding {
    pub vocab_size: usize,
    pub dim: usize,
    pub activation: Activation,
    /// [vocab][dim]
    pub table: Param,
}

/// What the backward needs: the ids, and the looked-up rows before the activation (kept only
/// when the activation is not linear; otherwise they equal the output).
struct Lookup {
    ids: Vec<usize>,
    pre: Option<Vec<f32>>,
}

impl Embedding {
    /// Rows start N(0, 1), as torch.nn.Embedding.
    pub fn new(vocab_size: usize, dim: usize, activation: Activation, seed: u64, codec: Codec) -> Result<Embedding> {
        if vocab_size == 0 || dim == 0 {
            return Err(Error::Spec(format!(
                "Embedding needs vocab_size > 0 and embedding_dim > 0, got {vocab_size} and {dim}"
            )));
        }
        let mut rng = Rng::new(seed);
        let table = new_param((0..vocab_size * dim).map(|_| rng.normal()).collect(), vec![vocab_size, dim], codec)?;
        Ok(Embedding { vocab_size, dim, activation, table })
    }

    pub fn from_spec(f: &Fields, build: Build) -> Result<Embedding> {
        let vocab = f.positive("vocab_size", 0, "Embedding")?;
        let dim = f.positive("embedding_dim", 0, "Embedding")?;
        Embedding::new(vocab, dim, f.activation()?, build.seed, build.codec)
    }

    /// The token ids of a batch; names the first value that is not one, and where it is.
    fn token_ids(&self, x: &Input) -> Result<Vec<usize>> {
        x.check_len()?;
        let vocab = self.vocab_size;
        x.data
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                // `v as usize` saturates, so the range check is exact for any vocabulary size.
                if v >= 0.0 && v.fract() == 0.0 && (v as usize) < vocab {
                    Ok(v as usize)
                } else {
                    Err(Error::Value(format!(
                        "Embedding input {v} at {} is not a token id (an integer in [0, {vocab}))",
                        position(i, x)
                    )))
                }
            })
            .collect()
    }

    /// The table rows of `ids`, one after another.
    fn gather(&self, ids: &[usize], schedule: Schedule) -> Result<Vec<f32>> {
        let d = self.dim;
        let store = self.table.read().unwrap();
        let view = store.view()?;
        let mut out = vec![0f32; ids.len() * d];
        row_blocks(schedule, &mut out, d, d, |rows, chunk| {
            for (r, row) in rows.zip(chunk.chunks_exact_mut(d)) {
                view.decode_into(ids[r] * d, row);
            }
        });
        Ok(out)
    }

    /// The lookup on the GPU: ids checked here, rows decoded and activated in the shader.
    fn infer_gpu(&self, x: &Input) -> Result<Vec<f32>> {
        let ids = self
            .token_ids(x)?
            .into_iter()
            .map(|id| u32::try_from(id).map_err(|_| Error::Shape(format!("Embedding token id {id} is past what the GPU indexes (2^32 − 1)"))))
            .collect::<Result<Vec<u32>>>()?;
        let store = self.table.read().unwrap();
        crate::gpu::embedding_forward(&ids, crate::gpu::GpuWeights::of(&store)?, self.dim, self.activation)
    }

    /// f(values) on the row blocks (the activation is the costly part of a lookup).
    fn activate(&self, values: &mut [f32], schedule: Schedule) {
        if self.activation != Activation::Linear {
            row_blocks(schedule, values, self.dim, self.dim, |_, chunk| self.activation.apply_slice(chunk));
        }
    }

    /// Σ of the output-gradient rows of each id, in position order: ids are counting-sorted
    /// (stable), and each table row sums its own positions, so every schedule and thread
    /// count adds the same values in the same order.
    fn table_grad(&self, ids: &[usize], g: &[f32], schedule: Schedule) -> Vec<f32> {
        let d = self.dim;
        let mut starts = vec![0usize; self.vocab_size + 1];
        ids.iter().for_each(|&id| starts[id + 1] += 1);
        for v in 0..self.vocab_size {
            starts[v + 1] += starts[v];
        }
        let mut next = starts.clone();
        let mut positions = vec![0usize; ids.len()];
        for (p, &id) in ids.iter().enumerate() {
            positions[next[id]] = p;
            next[id] += 1;
        }
        let mut grad = vec![0f32; self.vocab_size * d];
        row_blocks(schedule, &mut grad, d, d, |rows, chunk| {
            let mut acc = vec![0f64; d];
            for (id, row) in rows.zip(chunk.chunks_exact_mut(d)) {
                acc.iter_mut().for_each(|a| *a = 0.0);
                for &p in &positions[starts[id]..starts[id + 1]] {
                    acc.iter_mut().zip(&g[p * d..(p + 1) * d]).for_each(|(a, &v)| *a += v as f64);
                }
                row.iter_mut().zip(&acc).for_each(|(r, &a)| *r = a as f32);
            }
        });
        grad
    }
}

/// "sample b, index [..]" for flat position `i` of a batch.
fn position(i: usize, x: &Input) -> String {
    let per_sample = x.sample_len().max(1);
    let (sample, mut rest) = (i / per_sample, i % per_sample);
    let mut index = vec![0usize; x.shape.len()];
    for (slot, &size) in index.iter_mut().zip(x.shape).rev() {
        *slot = rest % size;
        rest /= size;
    }
    format!("sample {sample}, index {index:?}")
}

impl LayerOps for Embedding {
    fn type_name(&self) -> &'static str {
        "Embedding"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Shape> {
        Ok([input, &[self.dim]].concat())
    }

    fn input_shape(&self) -> Option<Shape> {
        None
    }

    fn params(&self) -> Vec<Param> {
        vec![self.table.clone()]
    }

    fn morphable(&self) -> Vec<Param> {
        self.params()
    }

    fn activation(&self) -> Option<Activation> {
        Some(self.activation)
    }

    fn infer(&self, x: Input, ctx: &Ctx) -> Result<Vec<f32>> {
        if ctx.device == Device::Gpu {
            return self.infer_gpu(&x);
        }
        let ids = self.token_ids(&x)?;
        let mut y = self.gather(&ids, ctx.schedule)?;
        self.activate(&mut y, ctx.schedule);
        Ok(y)
    }

    fn forward_train(&self, x: Input, ctx: &Ctx) -> Result<Saved> {
        let ids = self.token_ids(&x)?;
        let pre = self.gather(&ids, ctx.schedule)?;
        let shape = self.output_shape(x.shape)?;
        if self.activation == Activation::Linear {
            return Ok(Saved { post: pre, shape, state: Box::new(Lookup { ids, pre: None }) });
        }
        let mut post = pre.clone();
        self.activate(&mut post, ctx.schedule);
        Ok(Saved { post, shape, state: Box::new(Lookup { ids, pre: Some(pre) }) })
    }

    /// The table gets each position's gradient in its id's row (repeats add up); ids are not
    /// differentiable, so the input gradient is zero.
    fn backward(&self, x: Input, saved: &Saved, grad_out: &[f32], ctx: &Ctx, need_input: bool) -> Result<Grads> {
        check_grad("Embedding", grad_out, saved)?;
        let lookup = saved.state::<Lookup>();
        let g = through_activation(self.activation, grad_out, lookup.pre.as_deref().unwrap_or(&saved.post));
        let input = if need_input { vec![0f32; x.data.len()] } else { Vec::new() };
        Ok(Grads::new(input, vec![(self.table.clone(), self.table_grad(&lookup.ids, &g, ctx.schedule))]))
    }

    fn deep_clone(&self) -> Layer {
        Layer::Embedding(Embedding { table: copy_param(&self.table), ..self.clone() })
    }

    fn spec(&self) -> Map<String, Value> {
        let mut o = Map::new();
        o.insert("type".into(), json!("Embedding"));
        o.insert("activation".into(), json!(self.activation.name()));
        o.insert("vocab_size".into(), json!(self.vocab_size));
        o.insert("embedding_dim".into(), json!(self.dim));
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    #[test]
    fn tiled_and_parallel_are_bitwise_identical_for_any_thread_count() {
        let (vocab, dim, positions) = (300, 64, 5000);
        let layer = Embedding::new(vocab, dim, Activation::Tanh, 5, Codec::Standard).unwrap();
        layer.table.write().unwrap().morph(DType::Fp8E4M3).unwrap();
        // Repeated ids, so rows accumulate many positions.
        let x: Vec<f32> = (0..positions).map(|i| ((i * 7919) % vocab) as f32).collect();
        let g: Vec<f32> = (0..positions * dim).map(|i| ((i * 31) % 97) as f32 / 97.0 - 0.5).collect();
        let shape = [positions];
        let run = |schedule: Schedule| {
            let ctx = Ctx::standalone(schedule);
            let input = Input::new(&x, 1, &shape);
            let saved = layer.forward_train(input, &ctx).unwrap();
            let grads = layer.backward(input, &saved, &g, &ctx, false).unwrap();
            (saved.post, grads.params.into_iter().map(|(_, v)| v).collect::<Vec<_>>())
        };
        let tiled = run(Schedule::Tiled);
        assert_eq!(run(Schedule::Normal), tiled);
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            assert_eq!(pool.install(|| run(Schedule::Parallel)), tiled, "{threads} threads");
        }
    }

    #[test]
    fn bad_ids_name_value_and_position() {
        let layer = Embedding::new(10, 4, Activation::Linear, 0, Codec::Standard).unwrap();
        let shape = [2, 3];
        let x = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 1.0];
        let err = layer.infer(Input::new(&x, 2, &shape), &Ctx::standalone(Schedule::Tiled)).unwrap_err();
        assert_eq!(err, Error::Value("Embedding input 10 at sample 1, index [1, 1] is not a token id (an integer in [0, 10))".into()));
    }
}
