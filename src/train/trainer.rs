//! The training loop: shuffled mini-batches, forward, loss, backward, optional global-norm
//! clipping, optimiser step on the FP32 masters (morphed layers re-morph: quantisation-aware
//! training). A non-finite loss or gradient stops training cleanly with the last good weights.

use super::loss::Loss;
use super::optim::{OptimConfig, Optimizer};
use super::schedule::LrSchedule;
use crate::error::{Error, Result};
use crate::kernels::Schedule;
use crate::layers::{sum_gradients, Param};
use crate::network::{exec, VolumetricNetwork};
use crate::rng::Rng;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub epochs: usize,
    pub lr: f32,
    pub batch_size: usize,
    pub loss: Loss,
    pub optimizer: OptimConfig,
    /// Clip the global L2 norm of all gradients to this value.
    pub clip_norm: Option<f32>,
    pub schedule: LrSchedule,
    pub mode: Schedule,
    pub seed: u64,
    pub shuffle: bool,
}

#[derive(Debug, Clone, Default)]
pub struct TrainingResult {
    /// Mean loss of each completed epoch (sample-weighted over its batches).
    pub loss_history: Vec<f64>,
    pub epoch_times: Vec<f64>,
    pub final_loss: Option<f64>,
    pub steps: usize,
    /// Why training stopped before the last epoch (non-finite loss, gradient, interrupt).
    pub stopped_early: Option<String>,
}

pub struct EpochReport {
    pub epoch: usize,
    pub loss: f64,
    pub seconds: f64,
}

/// Σ v² in 16 f32 lanes per 4096-element chunk, chunks summed in f64: vectorises, and a NaN
/// or ±Inf anywhere makes the result non-finite.
pub(crate) fn sum_of_squares(values: &[f32]) -> f64 {
    values
        .chunks(4096)
        .map(|chunk| {
            let mut lanes = [0f32; 16];
            let mut blocks = chunk.chunks_exact(16);
            for block in &mut blocks {
                for (l, &v) in lanes.iter_mut().zip(block) {
                    *l += v * v;
                }
            }
            let tail: f32 = blocks.remainder().iter().map(|v| v * v).sum();
            lanes.iter().map(|&l| l as f64).sum::<f64>() + tail as f64
        })
        .sum()
}

pub(crate) fn snapshot(params: &[Param], into: &mut Vec<Vec<f32>>) -> Result<()> {
    into.resize(params.len(), Vec::new());
    for (p, buf) in params.iter().zip(into.iter_mut()) {
        let store = p.read().unwrap();
        buf.clear();
        buf.extend_from_slice(store.master()?);
    }
    Ok(())
}

pub(crate) fn restore(params: &[Param], from: &[Vec<f32>]) -> Result<()> {
    for (p, values) in params.iter().zip(from) {
        p.write().unwrap().set_master(values.clone())?;
    }
    Ok(())
}

/// Train `net` on `samples` samples of shape `in_shape` in `x`, with targets `t` shaped like the
/// network's output (the loss reads rows along the output's last axis).
/// `on_epoch` is called after every epoch; returning false stops training (e.g. Ctrl-C).
pub fn train(
    net: &VolumetricNetwork,
    x: &[f32],
    in_shape: &[usize],
    t: &[f32],
    samples: usize,
    config: &TrainConfig,
    on_epoch: &mut dyn FnMut(&EpochReport) -> bool,
) -> Result<TrainingResult> {
    let out_shape = exec::output_shape(net, in_shape)?;
    let params = net.params();
    if params.is_empty() {
        return Err(Error::Value("the network has no active layers with trainable tensors".into()));
    }
    let (in_width, out_width) = (in_shape.iter().product::<usize>(), out_shape.iter().product::<usize>());
    let classes = out_shape.last().copied().unwrap_or(1).max(1);
    if samples == 0 {
        return Err(Error::Value("cannot train on an empty batch (0 samples)".into()));
    }
    if x.len() != samples * in_width || t.len() != samples * out_width {
        return Err(Error::Shape(format!(
            "inputs must be [{samples}, {in_shape:?}] and targets [{samples}, {out_shape:?}], got {} and {} values",
            x.len(),
            t.len()
        )));
    }
    if config.batch_size == 0 {
        return Err(Error::Value("batch_size must be ≥ 1".into()));
    }
    if !(config.lr.is_finite() && config.lr >= 0.0) {
        return Err(Error::Value(format!("lr must be a finite number ≥ 0, got {}", config.lr)));
    }
    let mut optimizer = Optimizer::new(config.optimizer, params.len());
    let batches_per_epoch = samples.div_ceil(config.batch_size);
    let total_steps = batches_per_epoch * config.epochs;
    let mut rng = Rng::new(config.seed);
    let mut order: Vec<usize> = (0..samples).collect();
    let (mut xb, mut tb) = (Vec::new(), Vec::new());
    let mut last_good: Vec<Vec<f32>> = Vec::new();
    let mut result = TrainingResult::default();

    'epochs: for epoch in 0..config.epochs {
        let started = Instant::now();
        if config.shuffle {
            rng.shuffle(&mut order);
        }
        let mut epoch_loss = 0f64;
        for batch_index in 0..batches_per_epoch {
            let rows = &order[batch_index * config.batch_size..((batch_index + 1) * config.batch_size).min(samples)];
            let batch = rows.len();
            let (xs, ts): (&[f32], &[f32]) = if config.shuffle {
                xb.clear();
                tb.clear();
                for &r in rows {
                    xb.extend_from_slice(&x[r * in_width..(r + 1) * in_width]);
                    tb.extend_from_slice(&t[r * out_width..(r + 1) * out_width]);
                }
                (&xb, &tb)
            } else {
                let r0 = rows[0];
                (&x[r0 * in_width..(r0 + batch) * in_width], &t[r0 * out_width..(r0 + batch) * out_width])
            };
            let trace = exec::forward_train(net, xs, batch, in_shape, config.mode)?;
            let (loss, grad) = config.loss.evaluate(trace.output(xs), ts, batch * out_width / classes, classes);
            if !loss.is_finite() {
                if result.steps > 0 {
                    restore(&params, &last_good)?;
                }
                result.stopped_early = Some(format!(
                    "loss became {loss} at epoch {epoch}, batch {batch_index}; weights restored to the last step with a finite loss"
                ));
                break 'epochs;
            }
            let (pairs, _) = exec::backward(net, &trace, xs, grad, config.mode, false)?;
            drop(trace);
            let mut flat = sum_gradients(&params, pairs)?;
            let norm = flat.iter().flatten().map(|g| sum_of_squares(g)).sum::<f64>().sqrt();
            if !norm.is_finite() {
                result.stopped_early = Some(format!(
                    "gradient became non-finite (or overflowed f32) at epoch {epoch}, batch {batch_index}; weights kept from before this step"
                ));
                break 'epochs;
            }
            if let Some(max_norm) = config.clip_norm {
                if norm > max_norm as f64 {
                    let factor = (max_norm as f64 / (norm + 1e-12)) as f32;
                    flat.iter_mut().flatten().flatten().for_each(|g| *g *= factor);
                }
            }
            snapshot(&params, &mut last_good)?;
            let lr = config.schedule.lr(config.lr, result.steps, total_steps, epoch);
            optimizer.begin_step();
            for (i, (p, g)) in params.iter().zip(&flat).enumerate() {
                if let Some(g) = g {
                    p.write().unwrap().update_master(|w| optimizer.update(i, w, g, lr))?;
                }
            }
            result.steps += 1;
            epoch_loss += loss * batch as f64;
        }
        let seconds = started.elapsed().as_secs_f64();
        let mean = epoch_loss / samples as f64;
        result.loss_history.push(mean);
        result.epoch_times.push(seconds);
        result.final_loss = Some(mean);
        if !on_epoch(&EpochReport { epoch, loss: mean, seconds }) {
            result.stopped_early = Some(format!("interrupted after epoch {epoch}"));
            break;
        }
    }
    Ok(result)
}
