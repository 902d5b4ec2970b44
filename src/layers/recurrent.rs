//! RNN and LSTM (layers.md §8–9): a sequence [T, in] → every hidden state [T, hidden] (or the last
//! one), computed from the packed w_ih / w_hh with float32 biases; backward is exact, full BPTT.

use super::spec::{Build, Fields};
use super::{check_grad, copy_param, new_param, Ctx, Device, Grads, Input, Layer, LayerOps, Param, Saved, Shape};
use crate::activation::Activation;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::kernels::{dense as kernel, Schedule};
use crate::rng::Rng;
use serde_json::{json, Map, Value};

/// The recurrence. An RNN applies tanh (or ReLU) to W_ih·x_t + W_hh·h_{t−1} + b; an LSTM has
/// four gate blocks stacked i, f, g, o (the reference's order and PyTorch's layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    Rnn(Activation),
    Lstm,
}

impl Cell {
    /// Gate blocks of `hidden` rows in w_ih, w_hh and b.
    fn gates(self) -> usize {
        match self {
            Cell::Rnn(_) => 1,
            Cell::Lstm => 4,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Recurrent {
    pub cell: Cell,
    pub input_size: usize,
    pub hidden_size: usize,
    pub seq_len: usize,
    /// Output every hidden state [T, hidden] (default) or only the last one [hidden].
    pub return_sequences: bool,
    /// [gates·hidden][input]
    pub w_ih: Param,
    /// [gates·hidden][hidden]
    pub w_hh: Param,
    /// [gates·hidden], float32
    pub bias: Param,
}

/// What a forward computes besides its output, kept for BPTT. Rows are (batch item, step).
struct Sequence {
    /// Every hidden state h_t, [batch·T][hidden].
    hidden: Vec<f32>,
    /// LSTM: activated gates i, f, g, o of every step, [batch·T][4·hidden] (empty for an RNN).
    gates: Vec<f32>,
    /// LSTM: every cell state c_t, [batch·T][hidden] (empty for an RNN).
    cells: Vec<f32>,
}

fn sigmoid(v: f32) -> f32 {
    Activation::Sigmoid.apply(v)
}

fn tanh(v: f32) -> f32 {
    Activation::Tanh.apply(v)
}

impl Recurrent {
    /// PyTorch's initialisation: every weight and bias U(−1/√hidden, 1/√hidden), from `seed`.
    pub fn new(cell: Cell, input_size: usize, hidden_size: usize, seq_len: usize, return_sequences: bool, seed: u64, codec: Codec) -> Result<Recurrent> {
        let kind = if cell == Cell::Lstm { "LSTM" } else { "RNN" };
        if input_size == 0 || hidden_size == 0 || seq_len == 0 {
            return Err(Error::Spec(format!(
                "{kind} needs input_height, output_height and seq_length > 0, got {input_size}, {hidden_size} and {seq_len}"
            )));
        }
        if seq_len.checked_mul(input_size.max(hidden_size)).is_none() {
            return Err(Error::Spec(format!("{kind} seq_length {seq_len} is too large")));
        }
        let rows = cell.gates() * hidden_size;
        let mut rng = Rng::new(seed);
        let bound = 1.0 / (hidden_size as f32).sqrt();
        let mut values = |count: usize| -> Vec<f32> { (0..count).map(|_| rng.uniform(bound)).collect() };
        let w_ih = new_param(values(rows * input_size), vec![rows, input_size], codec)?;
        let w_hh = new_param(values(rows * hidden_size), vec![rows, hidden_size], codec)?;
        let bias = new_param(values(rows), vec![rows], Codec::Standard)?;
        Ok(Recurrent { cell, input_size, hidden_size, seq_len, return_sequences, w_ih, w_hh, bias })
    }

    /// From the build JSON: input_height, output_height, seq_length (≤ 0 → 1, as in the
    /// reference), return_sequences; an RNN's activation "relu" selects ReLU, any other is tanh.
    pub fn from_spec(f: &Fields, build: Build, lstm: bool) -> Result<Recurrent> {
        let kind = if lstm { "LSTM" } else { "RNN" };
        let input = f.positive("input_height", 0, kind)?;
        let hidden = f.positive("output_height", 0, kind)?;
        let seq_len = match f.obj.get("seq_length").filter(|v| !v.is_null()) {
            None => 1,
            Some(v) => v.as_i64().ok_or_else(|| f.err("seq_length", format!("must be an integer, got {v}")))?.max(1) as usize,
        };
        let cell = match (lstm, f.activation()?) {
            (true, _) => Cell::Lstm,
            (false, Activation::Relu) => Cell::Rnn(Activation::Relu),
            (false, _) => Cell::Rnn(Activation::Tanh),
        };
        Recurrent::new(cell, input, hidden, seq_len, f.bool("return_sequences", true)?, build.seed, build.codec)
    }

    /// Batch items in `x`, after checking its length and sample shape.
    fn batch(&self, x: &Input) -> Result<usize> {
        x.check_len()?;
        self.output_shape(x.shape)?;
        Ok(x.batch)
    }

    /// The forward over all steps: the input projection of every step in one product, then per
    /// step the recurrent product of h_{t−1} for the whole batch against the packed w_hh.
    fn run(&self, x: &Input, schedule: Schedule) -> Result<Sequence> {
        let batch = self.batch(x)?;
        let (steps, h) = (self.seq_len, self.hidden_size);
        let width = self.cell.gates() * h;
        let mut pre = {
            let store = self.w_ih.read().unwrap();
            kernel::forward(x.data, batch * steps, self.input_size, store.view()?, width, schedule)
        };
        {
            let store = self.bias.read().unwrap();
            let b = store.master()?;
            pre.chunks_exact_mut(width).for_each(|row| row.iter_mut().zip(b).for_each(|(v, &bv)| *v += bv));
        }
        let lstm = self.cell == Cell::Lstm;
        let mut hidden = vec![0f32; batch * steps * h];
        let mut cells = if lstm { vec![0f32; batch * steps * h] } else { Vec::new() };
        let mut h_prev = vec![0f32; batch * h];
        let mut c_prev = vec![0f32; batch * h];
        let store = self.w_hh.read().unwrap();
        let w_hh = store.view()?;
        for t in 0..steps {
            // h_0 = 0: the first step has no recurrent term.
            let recurrent = (t > 0).then(|| kernel::forward(&h_prev, batch, h, w_hh, width, schedule));
            for bi in 0..batch {
                let row = bi * steps + t;
                let gates = &mut pre[row * width..(row + 1) * width];
                if let Some(r) = &recurrent {
                    gates.iter_mut().zip(&r[bi * width..(bi + 1) * width]).for_each(|(g, &v)| *g += v);
                }
                let (hp, cp) = (&mut h_prev[bi * h..(bi + 1) * h], &mut c_prev[bi * h..(bi + 1) * h]);
                match self.cell {
                    Cell::Rnn(act) => hp.iter_mut().zip(gates.iter()).for_each(|(hv, &g)| *hv = act.apply(g)),
                    Cell::Lstm => {
                        // The gate buffer keeps the activated gates for the backward.
                        let (i, rest) = gates.split_at_mut(h);
                        let (f, rest) = rest.split_at_mut(h);
                        let (g, o) = rest.split_at_mut(h);
                        for j in 0..h {
                            (i[j], f[j], g[j], o[j]) = (sigmoid(i[j]), sigmoid(f[j]), tanh(g[j]), sigmoid(o[j]));
                            cp[j] = f[j] * cp[j] + i[j] * g[j];
                            hp[j] = o[j] * tanh(cp[j]);
                        }
                        cells[row * h..(row + 1) * h].copy_from_slice(cp);
                    }
                }
                hidden[row * h..(row + 1) * h].copy_from_slice(hp);
            }
        }
        Ok(Sequence { hidden, gates: if lstm { pre } else { Vec::new() }, cells })
    }

    /// The forward on the GPU (inference only: nothing is kept for BPTT).
    fn infer_gpu(&self, x: &Input) -> Result<Vec<f32>> {
        use crate::gpu::{GpuCell, GpuWeights, SequenceShape};
        let batch = self.batch(x)?;
        let shape = SequenceShape {
            batch,
            steps: self.seq_len,
            input: self.input_size,
            hidden: self.hidden_size,
            return_sequences: self.return_sequences,
        };
        let cell = match self.cell {
            Cell::Rnn(act) => GpuCell::Rnn(act),
            Cell::Lstm => GpuCell::Lstm,
        };
        let (w_ih, w_hh, bias) = (self.w_ih.read().unwrap(), self.w_hh.read().unwrap(), self.bias.read().unwrap());
        crate::gpu::recurrent_forward(x.data, shape, cell, GpuWeights::of(&w_ih)?, GpuWeights::of(&w_hh)?, bias.master()?)
    }

    /// The layer output from all hidden states: all of them, or each item's last.
    fn output(&self, hidden: &[f32], batch: usize) -> Vec<f32> {
        if self.return_sequences {
            return hidden.to_vec();
        }
        let (steps, h) = (self.seq_len, self.hidden_size);
        (0..batch).flat_map(|bi| &hidden[((bi + 1) * steps - 1) * h..(bi + 1) * steps * h]).copied().collect()
    }

    /// dL/dpre for every (item, step) by BPTT, [batch·T][gates·hidden]. `grad_out` is the
    /// gradient of the layer output.
    fn pre_gradients(&self, seq: &Sequence, grad_out: &[f32], batch: usize, schedule: Schedule) -> Result<Vec<f32>> {
        let (steps, h) = (self.seq_len, self.hidden_size);
        let width = self.cell.gates() * h;
        let mut delta = vec![0f32; batch * steps * width];
        let mut step_delta = vec![0f32; batch * width];
        let mut dh_next = vec![0f32; batch * h];
        let mut dc_next = vec![0f32; batch * h];
        let mut dh = vec![0f32; h];
        let store = self.w_hh.read().unwrap();
        let w_hh = store.view()?;
        for t in (0..steps).rev() {
            for bi in 0..batch {
                let row = bi * steps + t;
                // dL/dh_t: from the output (every step, or the last) and from step t + 1.
                let from_output = match (self.return_sequences, t + 1 == steps) {
                    (true, _) => Some(&grad_out[row * h..(row + 1) * h]),
                    (false, true) => Some(&grad_out[bi * h..(bi + 1) * h]),
                    (false, false) => None,
                };
                dh.copy_from_slice(&dh_next[bi * h..(bi + 1) * h]);
                if let Some(g) = from_output {
                    dh.iter_mut().zip(g).for_each(|(d, &v)| *d += v);
                }
                let d = &mut step_delta[bi * width..(bi + 1) * width];
                match self.cell {
                    Cell::Rnn(act) => {
                        let hs = &seq.hidden[row * h..(row + 1) * h];
                        for j in 0..h {
                            // f'(pre) from f(pre): tanh' = 1 − h², relu' = [h > 0].
                            let slope = if act == Activation::Relu { (hs[j] > 0.0) as i32 as f32 } else { 1.0 - hs[j] * hs[j] };
                            d[j] = dh[j] * slope;
                        }
                    }
                    Cell::Lstm => {
                        let gates = &seq.gates[row * width..(row + 1) * width];
                        let (i, f, g, o) = (&gates[..h], &gates[h..2 * h], &gates[2 * h..3 * h], &gates[3 * h..]);
                        let c = &seq.cells[row * h..(row + 1) * h];
                        let dc_carry = &mut dc_next[bi * h..(bi + 1) * h];
                        for j in 0..h {
                            let c_prev = if t > 0 { seq.cells[(row - 1) * h + j] } else { 0.0 };
                            let tc = tanh(c[j]);
                            let dc = dc_carry[j] + dh[j] * o[j] * (1.0 - tc * tc);
                            d[j] = dc * g[j] * i[j] * (1.0 - i[j]);
                            d[h + j] = dc * c_prev * f[j] * (1.0 - f[j]);
                            d[2 * h + j] = dc * i[j] * (1.0 - g[j] * g[j]);
                            d[3 * h + j] = dh[j] * tc * o[j] * (1.0 - o[j]);
                            dc_carry[j] = dc * f[j];
                        }
                    }
                }
                delta[row * width..(row + 1) * width].copy_from_slice(d);
            }
            if t > 0 {
                dh_next = kernel::backward_input(&step_delta, batch, width, w_hh, h, schedule);
            }
        }
        Ok(delta)
    }

    fn kind(&self) -> &'static str {
        if self.cell == Cell::Lstm {
            "LSTM"
        } else {
            "RNN"
        }
    }
}

impl LayerOps for Recurrent {
    fn type_name(&self) -> &'static str {
        self.kind()
    }

    /// [T, in], or any shape holding T·in values (a flat sample) → [T, hidden] or [hidden].
    fn output_shape(&self, input: &[usize]) -> Result<Shape> {
        let want = self.seq_len * self.input_size;
        if input != [self.seq_len, self.input_size] && input.iter().product::<usize>() != want {
            return Err(Error::Shape(format!(
                "{} expects samples of shape [seq_length {}, input {}] (or {} values flat), got sample shape {input:?}",
                self.kind(),
                self.seq_len,
                self.input_size,
                want
            )));
        }
        Ok(if self.return_sequences { vec![self.seq_len, self.hidden_size] } else { vec![self.hidden_size] })
    }

    fn input_shape(&self) -> Option<Shape> {
        Some(vec![self.seq_len, self.input_size])
    }

    fn params(&self) -> Vec<Param> {
        vec![self.w_ih.clone(), self.w_hh.clone(), self.bias.clone()]
    }

    fn morphable(&self) -> Vec<Param> {
        vec![self.w_ih.clone(), self.w_hh.clone()]
    }

    fn activation(&self) -> Option<Activation> {
        match self.cell {
            Cell::Rnn(act) => Some(act),
            Cell::Lstm => None,
        }
    }

    fn infer(&self, x: Input, ctx: &Ctx) -> Result<Vec<f32>> {
        if ctx.device == Device::Gpu {
            return self.infer_gpu(&x);
        }
        Ok(self.output(&self.run(&x, ctx.schedule)?.hidden, x.batch))
    }

    fn forward_train(&self, x: Input, ctx: &Ctx) -> Result<Saved> {
        let seq = self.run(&x, ctx.schedule)?;
        Ok(Saved { post: self.output(&seq.hidden, x.batch), shape: self.output_shape(x.shape)?, state: Box::new(seq) })
    }

    fn backward(&self, x: Input, saved: &Saved, grad_out: &[f32], ctx: &Ctx, need_input: bool) -> Result<Grads> {
        check_grad(self.kind(), grad_out, saved)?;
        let batch = self.batch(&x)?;
        let seq = saved.state::<Sequence>();
        let (steps, h, k) = (self.seq_len, self.hidden_size, self.input_size);
        let (rows, width) = (batch * steps, self.cell.gates() * h);
        let delta = self.pre_gradients(seq, grad_out, batch, ctx.schedule)?;
        let input = if need_input {
            let store = self.w_ih.read().unwrap();
            kernel::backward_input(&delta, rows, width, store.view()?, k, ctx.schedule)
        } else {
            Vec::new()
        };
        // Step t's recurrent input is h_{t−1} (0 at t = 0): the hidden states shifted one step.
        let mut h_prev = vec![0f32; rows * h];
        for bi in 0..batch {
            let item = bi * steps * h;
            h_prev[item + h..item + steps * h].copy_from_slice(&seq.hidden[item..item + (steps - 1) * h]);
        }
        let params = vec![
            (self.w_ih.clone(), kernel::weight_grad(&delta, rows, width, x.data, k, ctx.schedule)),
            (self.w_hh.clone(), kernel::weight_grad(&delta, rows, width, &h_prev, h, ctx.schedule)),
            (self.bias.clone(), kernel::column_sums(&delta, rows, width)),
        ];
        Ok(Grads::new(input, params))
    }

    fn deep_clone(&self) -> Layer {
        Layer::Recurrent(Recurrent { w_ih: copy_param(&self.w_ih), w_hh: copy_param(&self.w_hh), bias: copy_param(&self.bias), ..self.clone() })
    }

    fn spec(&self) -> Map<String, Value> {
        let mut o = Map::new();
        o.insert("type".into(), json!(self.kind()));
        if let Cell::Rnn(act) = self.cell {
            o.insert("activation".into(), json!(act.name()));
        }
        o.insert("input_height".into(), json!(self.input_size));
        o.insert("output_height".into(), json!(self.hidden_size));
        o.insert("seq_length".into(), json!(self.seq_len));
        if !self.return_sequences {
            o.insert("return_sequences".into(), json!(false));
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    fn data(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..len).map(|_| rng.uniform(1.0)).collect()
    }

    /// [output, input gradient, w_ih, w_hh and bias gradients] of one forward + backward.
    fn passes(layer: &Recurrent, x: &[f32], g: &[f32], batch: usize, schedule: Schedule) -> Vec<Vec<f32>> {
        let shape = [layer.seq_len, layer.input_size];
        let ctx = Ctx::standalone(schedule);
        let input = Input::new(x, batch, &shape);
        let saved = layer.forward_train(input, &ctx).unwrap();
        let grads = layer.backward(input, &saved, g, &ctx, true).unwrap();
        let mut out = vec![saved.post, grads.input];
        out.extend(grads.params.into_iter().map(|(_, g)| g));
        out
    }

    fn norm_rel(a: &[f32], b: &[f32]) -> f64 {
        let diff: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
        let norm: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
        (diff / norm).sqrt()
    }

    #[test]
    fn schedules_agree_and_tiled_equals_parallel_bitwise_for_any_thread_count() {
        // Sizes past the kernels' parallel threshold, so the per-step products really split.
        for (cell, hidden, dtype) in [(Cell::Lstm, 192, DType::Int4), (Cell::Rnn(Activation::Tanh), 512, DType::Float32), (Cell::Rnn(Activation::Relu), 512, DType::Fp8E4M3)] {
            let (batch, steps, input) = (16, 4, 32);
            let layer = Recurrent::new(cell, input, hidden, steps, true, 7, Codec::Standard).unwrap();
            for p in layer.morphable() {
                p.write().unwrap().morph(dtype).unwrap();
            }
            let (x, g) = (data(batch * steps * input, 1), data(batch * steps * hidden, 2));
            let tiled = passes(&layer, &x, &g, batch, Schedule::Tiled);
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                assert!(pool.install(|| passes(&layer, &x, &g, batch, Schedule::Parallel)) == tiled, "{cell:?} with {threads} threads");
            }
            let normal = passes(&layer, &x, &g, batch, Schedule::Normal);
            for (a, b) in tiled.iter().zip(&normal) {
                assert!(norm_rel(a, b) <= 1e-6, "{cell:?}: {}", norm_rel(a, b));
            }
        }
    }

    #[test]
    fn last_state_output_is_the_last_step_of_the_sequence_output() {
        let all = Recurrent::new(Cell::Lstm, 3, 5, 4, true, 1, Codec::Standard).unwrap();
        let last = Recurrent { return_sequences: false, ..all.clone() };
        let x = data(2 * 4 * 3, 3);
        let ctx = Ctx::standalone(Schedule::Tiled);
        let seq = all.infer(Input::new(&x, 2, &[4, 3]), &ctx).unwrap();
        let end = last.infer(Input::new(&x, 2, &[12]), &ctx).unwrap();
        assert_eq!(end, [&seq[15..20], &seq[35..40]].concat());
    }
}
