//! The target rule of true target propagation, per layer type: the gap at a layer's output
//! (target − actual) is pushed back to a gap at its input by the reference's weighted
//! combination, input unit j getting Σ_o w(j,o)·gap[o] / Σ_o |w(j,o)| over the pathways with
//! |w(j,o)| ≥ weight_threshold (0 when none reaches it). No derivative is taken: it works where
//! gradients vanish (binary/ternary weights, saturated or dead units). Containers and Residual
//! are walked by walk.rs; this file handles the layers that compute.

use crate::error::Result;
use crate::kernels::conv;
use crate::kernels::dense::backward_input;
use crate::kernels::Schedule;
use crate::layers::kmeans::KMeansOutput;
use crate::layers::{Input, Layer, Param, Saved};
use crate::weights::WeightView;

/// A weight tensor as the layer computes with it (its active dtype decoded), pathways below the
/// threshold zeroed, and the absolute values of what is left.
struct Pathways {
    w: Vec<f32>,
    abs: Vec<f32>,
}

impl Pathways {
    fn of(p: &Param, threshold: f32) -> Result<Pathways> {
        let store = p.read().unwrap();
        let view = store.view()?;
        let mut w = vec![0f32; view.len()];
        view.decode_into(0, &mut w);
        w.iter_mut().filter(|v| v.abs() < threshold).for_each(|v| *v = 0.0);
        let abs = w.iter().map(|v| v.abs()).collect();
        Ok(Pathways { w, abs })
    }
    fn signed(&self) -> WeightView<'_> {
        WeightView::F32(&self.w)
    }
    fn absolute(&self) -> WeightView<'_> {
        WeightView::F32(&self.abs)
    }
}

/// num / den element-wise, `den` repeating over `num` (one sample's or one row's totals);
/// 0 where no pathway arrives (den = 0).
fn normalised(mut num: Vec<f32>, den: &[f32]) -> Vec<f32> {
    for chunk in num.chunks_mut(den.len().max(1)) {
        chunk.iter_mut().zip(den).for_each(|(v, &d)| *v = if d > 0.0 { *v / d } else { 0.0 });
    }
    num
}

/// The weighted combination through one [n][k] matrix for `rows` rows of gaps of width n.
fn through_matrix(p: &Pathways, gap: &[f32], rows: usize, n: usize, k: usize, s: Schedule) -> Vec<f32> {
    let num = backward_input(gap, rows, n, p.signed(), k, s);
    let den = backward_input(&vec![1.0; n], 1, n, p.absolute(), k, s);
    normalised(num, &den)
}

/// Through a stack of gate blocks [gates·n][k] that all see the same gap: their pathways add
/// up in numerator and denominator (the reference's LSTM rule).
fn through_gates(p: &Pathways, gap: &[f32], rows: usize, gates: usize, n: usize, k: usize, s: Schedule) -> Vec<f32> {
    let repeated: Vec<f32> = gap.chunks_exact(n).flat_map(|row| (0..gates).flat_map(move |_| row.iter().copied())).collect();
    let num = backward_input(&repeated, rows, gates * n, p.signed(), k, s);
    let den = backward_input(&vec![1.0; gates * n], 1, gates * n, p.absolute(), k, s);
    normalised(num, &den)
}

/// The gap at the input of `layer` for the gap `gap` at its output, or None when the input is
/// not continuous (token ids). `x` and `saved` are the layer's input and training record.
pub fn push_back(layer: &Layer, x: &Input, saved: &Saved, gap: &[f32], threshold: f32, s: Schedule) -> Result<Option<Vec<f32>>> {
    Ok(Some(match layer {
        Layer::Dense(d) => {
            let rows = x.data.len() / d.input_size;
            through_matrix(&Pathways::of(&d.weights, threshold)?, gap, rows, d.output_size, d.input_size, s)
        }
        Layer::Conv(c) => {
            let p = Pathways::of(&c.weights, threshold)?;
            let g = &c.geometry;
            let per_sample = c.filters * g.output_len();
            let num = conv::backward(x.data, x.batch, g, p.signed(), gap, true, s).input;
            let first = &x.data[..g.channels * g.input_len()];
            let den = conv::backward(first, 1, g, p.absolute(), &vec![1.0; per_sample], true, s).input;
            normalised(num, &den)
        }
        Layer::Recurrent(r) => recurrent(r, x, gap, threshold, s)?,
        Layer::SwiGlu(l) => {
            let (h, i) = (l.model_size, l.hidden_size);
            let rows = x.data.len() / h;
            let down = Pathways::of(&l.w_down, threshold)?;
            let hidden = through_matrix(&down, gap, rows, h, i, s);
            // The gate and the up projection both read x: two blocks seeing the same gap.
            let (gate, up) = (Pathways::of(&l.w_gate, threshold)?, Pathways::of(&l.w_up, threshold)?);
            let mut num = backward_input(&hidden, rows, i, gate.signed(), h, s);
            let via_up = backward_input(&hidden, rows, i, up.signed(), h, s);
            num.iter_mut().zip(&via_up).for_each(|(a, b)| *a += b);
            let mut den = backward_input(&vec![1.0; i], 1, i, gate.absolute(), h, s);
            let den_up = backward_input(&vec![1.0; i], 1, i, up.absolute(), h, s);
            den.iter_mut().zip(&den_up).for_each(|(a, b)| *a += b);
            normalised(num, &den)
        }
        Layer::MultiHeadAttention(a) => {
            // The value path: back through Wo, the attention mixing (its probabilities are the
            // pathway weights between positions) and Wv. Queries and keys carry no target.
            let heads = a.heads();
            let (d, qw, kw) = (a.config.d_model, heads.q_width(), heads.kv_width());
            let rows = x.data.len() / d;
            let concat = through_matrix(&Pathways::of(&a.wo, threshold)?, gap, rows, d, qw, s);
            let mixed = a.mix_transposed(saved, &concat, x.batch, s);
            let totals = a.mix_transposed(saved, &vec![1.0; rows * qw], x.batch, s);
            let values = normalised_each(mixed, &totals);
            through_matrix(&Pathways::of(&a.wv, threshold)?, &values, rows, kw, d, s)
        }
        Layer::Norm(n) => {
            // A diagonal map: each unit's only pathway is its gain, so the gap passes on with
            // the gain's sign (nothing where |γ| is below the threshold).
            let gain = Pathways::of(&n.gain, threshold)?;
            let den = gain.abs.clone();
            normalised(gap.chunks_exact(n.size).flat_map(|row| row.iter().zip(&gain.w).map(|(g, w)| g * w)).collect(), &den)
        }
        Layer::KMeans(k) => match k.output {
            // Logit k grows as x moves towards centroid k: the centroids are the pathways.
            KMeansOutput::Probabilities => {
                let rows = x.data.len() / k.features;
                through_matrix(&Pathways::of(&k.centroids, threshold)?, gap, rows, k.clusters, k.features, s)
            }
            KMeansOutput::Features => gap.to_vec(),
        },
        // No weights: every unit is its own pathway.
        Layer::Softmax(_) | Layer::Residual(_) => gap.to_vec(),
        Layer::Embedding(_) => return Ok(None),
        Layer::Sequential(_) | Layer::Parallel(_) => unreachable!("containers are walked by walk.rs"),
    }))
}

/// num / den element-wise over equal lengths.
fn normalised_each(num: Vec<f32>, den: &[f32]) -> Vec<f32> {
    num.iter().zip(den).map(|(&v, &d)| if d > 0.0 { v / d } else { 0.0 }).collect()
}

/// RNN/LSTM: per step, the hidden gap (the output's gap for that step plus what step t + 1
/// pushes back through W_hh) goes to x_t through W_ih; LSTM gate blocks add up.
fn recurrent(r: &crate::layers::Recurrent, x: &Input, gap: &[f32], threshold: f32, s: Schedule) -> Result<Vec<f32>> {
    let (steps, h, k, batch) = (r.seq_len, r.hidden_size, r.input_size, x.batch);
    let gates = if r.cell == crate::layers::recurrent::Cell::Lstm { 4 } else { 1 };
    let (w_ih, w_hh) = (Pathways::of(&r.w_ih, threshold)?, Pathways::of(&r.w_hh, threshold)?);
    let mut hidden = vec![0f32; batch * steps * h];
    let mut carry = vec![0f32; batch * h];
    for t in (0..steps).rev() {
        for b in 0..batch {
            let own: Option<&[f32]> = match (r.return_sequences, t + 1 == steps) {
                (true, _) => Some(&gap[(b * steps + t) * h..(b * steps + t + 1) * h]),
                (false, true) => Some(&gap[b * h..(b + 1) * h]),
                (false, false) => None,
            };
            let row = &mut hidden[(b * steps + t) * h..(b * steps + t + 1) * h];
            row.copy_from_slice(&carry[b * h..(b + 1) * h]);
            if let Some(own) = own {
                row.iter_mut().zip(own).for_each(|(a, &g)| *a += g);
            }
        }
        if t > 0 {
            let now: Vec<f32> = (0..batch).flat_map(|b| hidden[(b * steps + t) * h..(b * steps + t + 1) * h].iter().copied()).collect();
            carry = through_gates(&w_hh, &now, batch, gates, h, h, s);
        }
    }
    Ok(through_gates(&w_ih, &hidden, batch * steps, gates, h, k, s))
}
