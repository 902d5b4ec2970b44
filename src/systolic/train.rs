//! Training the mesh by backprop through time: each epoch feeds an input sequence one cycle at a
//! time, scores the output at the target cycles, backpropagates through the captured episode
//! and takes one optimiser step (the FP32 masters; morphed layers re-morph). A non-finite loss
//! or gradient stops training cleanly with the last good weights.

use super::Systolic;
use crate::error::{Error, Result};
use crate::kernels::Schedule;
use crate::layers::sum_gradients;
use crate::network::VolumetricNetwork;
use crate::train::optim::Optimizer;
use crate::train::trainer::{restore, snapshot, sum_of_squares};
use crate::train::{EpochReport, Loss, OptimConfig, TrainingResult};
use std::time::Instant;

/// An input sequence and the targets for some of its steps.
pub struct Episode<'a> {
    /// `steps` inputs of `batch × product(shape)` values, one per cycle.
    pub inputs: &'a [f32],
    pub steps: usize,
    pub batch: usize,
    pub shape: &'a [usize],
    /// One target (shaped like the output) per entry of `target_steps`, in that order.
    pub targets: &'a [f32],
    /// The episode steps (0-based) whose output is scored.
    pub target_steps: &'a [usize],
}

#[derive(Debug, Clone)]
pub struct BpttConfig {
    /// Optimiser steps (one episode each).
    pub epochs: usize,
    pub lr: f32,
    pub loss: Loss,
    pub optimizer: OptimConfig,
    /// Clip the global L2 norm of the gradients to this value.
    pub clip_norm: Option<f32>,
    pub mode: Schedule,
    /// Start every episode from an empty mesh (false: continue from the current state, whose
    /// past counts as a constant: truncated BPTT for online learning).
    pub reset: bool,
}

impl Episode<'_> {
    fn check(&self) -> Result<()> {
        let sample: usize = self.shape.iter().product();
        if self.steps == 0 || self.batch == 0 {
            return Err(Error::Value("an episode needs at least one step and one sample".into()));
        }
        if self.inputs.len() != self.steps * self.batch * sample {
            return Err(Error::Shape(format!(
                "inputs have {} values; {} steps × batch {} × sample shape {:?} need {}",
                self.inputs.len(),
                self.steps,
                self.batch,
                self.shape,
                self.steps * self.batch * sample
            )));
        }
        if self.target_steps.is_empty() {
            return Err(Error::Value("no target steps: give at least one target".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for &s in self.target_steps {
            if s >= self.steps {
                return Err(Error::Value(format!("target step {s} is outside the episode's {} steps", self.steps)));
            }
            if !seen.insert(s) {
                return Err(Error::Value(format!("target step {s} is given twice")));
            }
        }
        if !self.targets.len().is_multiple_of(self.target_steps.len()) {
            return Err(Error::Shape(format!(
                "targets have {} values, not a multiple of the {} target steps",
                self.targets.len(),
                self.target_steps.len()
            )));
        }
        Ok(())
    }
}

impl Systolic {
    /// Train `net` through this mesh on `episode` (see `BpttConfig`). The history keeps at
    /// least the episode while training and the last `history` cycles afterwards.
    pub fn train_bptt(
        &mut self,
        net: &VolumetricNetwork,
        episode: &Episode,
        config: &BpttConfig,
        on_epoch: &mut dyn FnMut(&EpochReport) -> bool,
    ) -> Result<TrainingResult> {
        episode.check()?;
        if !(config.lr.is_finite() && config.lr >= 0.0) {
            return Err(Error::Value(format!("lr must be a finite number ≥ 0, got {}", config.lr)));
        }
        if net.params().is_empty() {
            return Err(Error::Value("the network has no trainable tensors".into()));
        }
        let keep = self.history.capacity();
        self.history.set_capacity(keep.max(episode.steps));
        let result = self.bptt_epochs(net, episode, config, on_epoch);
        self.history.set_capacity(keep);
        result
    }

    /// Feed the episode's inputs, one per cycle.
    fn run_episode(&mut self, net: &VolumetricNetwork, episode: &Episode, mode: Schedule) -> Result<()> {
        let width = episode.inputs.len() / episode.steps;
        for x in episode.inputs.chunks_exact(width) {
            self.set_input(x.to_vec(), episode.batch, episode.shape)?;
            self.step(net, mode)?;
        }
        Ok(())
    }

    fn bptt_epochs(&mut self, net: &VolumetricNetwork, episode: &Episode, config: &BpttConfig, on_epoch: &mut dyn FnMut(&EpochReport) -> bool) -> Result<TrainingResult> {
        let params = net.params();
        let mut optimizer = Optimizer::new(config.optimizer, params.len());
        let mut last_good: Vec<Vec<f32>> = Vec::new();
        let mut result = TrainingResult::default();
        let per_target = episode.targets.len() / episode.target_steps.len();
        for epoch in 0..config.epochs {
            let started = Instant::now();
            if config.reset {
                self.reset();
            } else {
                self.history.clear();
            }
            self.run_episode(net, episode, config.mode)?;
            let first = self.cycle - episode.steps as u64 + 1;
            let targets: Vec<(u64, &[f32])> =
                episode.target_steps.iter().zip(episode.targets.chunks_exact(per_target)).map(|(&s, t)| (first + s as u64, t)).collect();
            let (loss, grads) = self.cycle_loss(net, &targets, config.loss)?;
            if !loss.is_finite() {
                if result.steps > 0 {
                    restore(&params, &last_good)?;
                }
                result.stopped_early = Some(format!("loss became {loss} at epoch {epoch}; weights restored to the last step with a finite loss"));
                break;
            }
            let mut flat = sum_gradients(&params, self.backward(net, grads, config.mode)?)?;
            let norm = flat.iter().flatten().map(|g| sum_of_squares(g)).sum::<f64>().sqrt();
            if !norm.is_finite() {
                result.stopped_early = Some(format!("gradient became non-finite (or overflowed f32) at epoch {epoch}; weights kept from before this step"));
                break;
            }
            if let Some(max_norm) = config.clip_norm.filter(|&m| norm > m as f64) {
                let factor = (max_norm as f64 / (norm + 1e-12)) as f32;
                flat.iter_mut().flatten().flatten().for_each(|g| *g *= factor);
            }
            snapshot(&params, &mut last_good)?;
            optimizer.begin_step();
            for (i, (p, g)) in params.iter().zip(&flat).enumerate() {
                if let Some(g) = g {
                    p.write().unwrap().update_master(|w| optimizer.update(i, w, g, config.lr))?;
                }
            }
            result.steps += 1;
            let seconds = started.elapsed().as_secs_f64();
            result.loss_history.push(loss);
            result.epoch_times.push(seconds);
            result.final_loss = Some(loss);
            if !on_epoch(&EpochReport { epoch, loss, seconds }) {
                result.stopped_early = Some(format!("interrupted after epoch {epoch}"));
                break;
            }
        }
        Ok(result)
    }
}
