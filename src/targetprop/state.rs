//! TargetProp: the config, the momentum buffers and what the last update found; `step` runs
//! capture → targets → budgets → update over a batch in mini-batches of `batch_size`.

use super::config::TargetPropConfig;
use super::update::Velocity;
use super::walk::{self, Capture, Link, Node, Pass};
use crate::error::{Error, Result};
use crate::kernels::Schedule;
use crate::layers::{Ctx, Device};
use crate::network::exec::{self, Trace};
use crate::network::VolumetricNetwork;

/// How a step (or a mesh cycle) went.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// Mean squared error of the outputs before the updates (sample-weighted over the
    /// mini-batches that ran; the non-finite loss itself when the first one stopped).
    pub loss: f64,
    /// Local updates applied.
    pub updates: usize,
    /// Why the step stopped before its last mini-batch (weights kept from before it).
    pub stopped: Option<String>,
}

pub struct TargetProp {
    pub config: TargetPropConfig,
    velocity: Velocity,
    links: Vec<Link>,
    captures: Vec<Capture>,
    batch: usize,
}

/// Mean of (y − t)² in f64.
pub fn mse(y: &[f32], t: &[f32]) -> f64 {
    y.iter().zip(t).map(|(&a, &b)| ((a - b) as f64).powi(2)).sum::<f64>() / y.len().max(1) as f64
}

/// The nodes of a traced grid forward over the input `x`.
fn nodes_of<'a>(trace: &'a Trace, x: &'a [f32]) -> Vec<Node<'a>> {
    trace
        .steps
        .iter()
        .zip(&trace.saved)
        .map(|(step, saved)| Node {
            coord: step.coord,
            layer: step.layer.clone(),
            input: exec::input_for(step, x, &trace.input_shape, trace.batch, |j| &trace.saved[j].post[..], &trace.steps),
            saved,
            source: step.input,
            skip_source: step.skip,
        })
        .collect()
}

impl TargetProp {
    pub fn new(config: TargetPropConfig) -> Result<TargetProp> {
        config.validate()?;
        Ok(TargetProp { config, velocity: Velocity::default(), links: Vec::new(), captures: Vec::new(), batch: 0 })
    }

    /// Forget the momentum buffers and the last update's findings.
    pub fn reset(&mut self) {
        self.velocity.clear();
        self.links.clear();
        self.captures.clear();
        self.batch = 0;
    }

    /// Every layer call of the last update: budgets, gaps, gating (containers' members too).
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// The top-level layers' outputs and targets of the last update, in traversal order.
    pub fn captures(&self) -> &[Capture] {
        &self.captures
    }

    /// Samples in the last update's mini-batch.
    pub fn last_batch(&self) -> usize {
        self.batch
    }

    /// Targets for `nodes` from `target`, then the update; returns the stop reason when the
    /// update would have produced a non-finite weight.
    pub fn update(&mut self, nodes: &[Node], target: &[f32], lr: f32, schedule: Schedule, net: &VolumetricNetwork) -> Result<Option<String>> {
        let ctx = Ctx { schedule, device: Device::Cpu, links: net, nesting: 0 };
        let Pass { links, captures, changes } = walk::estimate(&self.config, lr, nodes, target, ctx)?;
        let stopped = self.velocity.apply(changes, self.config.momentum)?;
        if stopped.is_none() {
            self.links = links;
            self.captures = captures;
            self.batch = nodes.last().map_or(0, |n| n.input.batch);
        }
        Ok(stopped)
    }

    /// One pass over `batch` samples of shape `shape` in `x` with targets `target` (the
    /// network's output shape per sample): ⌈batch / batch_size⌉ local updates at rate `lr`
    /// (the config's learning_rate when None).
    #[allow(clippy::too_many_arguments)]
    pub fn step(&mut self, net: &VolumetricNetwork, x: &[f32], batch: usize, shape: &[usize], target: &[f32], lr: Option<f32>, schedule: Schedule) -> Result<StepReport> {
        let lr = self.config.rate(lr)?;
        if net.active().next().is_none() {
            return Err(Error::Value("the network has no active layers to train".into()));
        }
        let out_shape = exec::output_shape(net, shape)?;
        let (in_len, out_len) = (shape.iter().product::<usize>(), out_shape.iter().product::<usize>());
        if batch == 0 || x.len() != batch * in_len {
            return Err(Error::Shape(format!("inputs must hold {batch} samples of shape {shape:?} ({} values), got {}", batch * in_len, x.len())));
        }
        if target.len() != batch * out_len {
            return Err(Error::Shape(format!(
                "targets must have the network's output shape [{batch}, {}] for inputs of sample shape {shape:?}, got {} values",
                out_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
                target.len()
            )));
        }
        let mut report = StepReport { loss: 0.0, updates: 0, stopped: None };
        let (mut total, mut seen) = (0f64, 0usize);
        for start in (0..batch).step_by(self.config.batch_size) {
            let b = self.config.batch_size.min(batch - start);
            let xs = &x[start * in_len..(start + b) * in_len];
            let ts = &target[start * out_len..(start + b) * out_len];
            let trace = exec::forward_train(net, xs, b, shape, schedule)?;
            let loss = mse(trace.output(xs), ts);
            if !loss.is_finite() {
                report.stopped = Some(format!("loss became {loss} on samples {start}..{}; weights kept from before them", start + b));
                if seen == 0 {
                    report.loss = loss;
                    return Ok(report);
                }
                break;
            }
            if let Some(reason) = self.update(&nodes_of(&trace, xs), ts, lr, schedule, net)? {
                report.stopped = Some(format!("on samples {start}..{}: {reason}", start + b));
                if seen == 0 {
                    report.loss = loss;
                    return Ok(report);
                }
                break;
            }
            total += loss * b as f64;
            seen += b;
            report.updates += 1;
        }
        report.loss = total / seen as f64;
        Ok(report)
    }
}
