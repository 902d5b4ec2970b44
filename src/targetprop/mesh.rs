//! The bridge for a clock-stepped (systolic) mesh learning online: one cycle's captured
//! per-coordinate inputs become one target-propagation update (see the module header).

use super::state::{mse, StepReport, TargetProp};
use super::walk::Node;
use crate::coord::Coord;
use crate::error::{Error, Result};
use crate::kernels::Schedule;
use crate::layers::{Ctx, Device, Input, Saved};
use crate::network::exec::{at, Source};
use crate::network::VolumetricNetwork;

/// What one coordinate consumed in a cycle: its input (and Residual skip) and where they came
/// from. `Source::Step(j)` names entry j of the same cycle list (it must come earlier; a later
/// one is a feedback link from the previous cycle and gets no target back); `Source::Input` is
/// anything from outside the cycle.
pub struct CycleInput<'a> {
    pub coord: Coord,
    pub input: &'a [f32],
    /// One sample's shape.
    pub shape: &'a [usize],
    pub skip: Option<&'a [f32]>,
    pub source: Source,
    pub skip_source: Option<Source>,
}

/// Feedback from a later entry (or itself) comes from the previous cycle: treated as external.
fn within_cycle(source: Source, own: usize) -> Source {
    match source {
        Source::Step(j) if j < own => source,
        _ => Source::Input,
    }
}

impl TargetProp {
    /// One online update from a mesh cycle: every entry of `cycle` (traversal order, `batch`
    /// samples each) is re-run with its layer's training forward on the input it consumed —
    /// giving the output the mesh computed from it and the record the local update needs — and
    /// the last entry's output is compared with `target`. Then targets, budgets, gaps and
    /// updates exactly as in `step`, at rate `lr` (the config's learning_rate when None).
    pub fn apply_cycle(&mut self, net: &VolumetricNetwork, batch: usize, cycle: &[CycleInput], target: &[f32], lr: Option<f32>, schedule: Schedule) -> Result<StepReport> {
        let lr = self.config.rate(lr)?;
        if cycle.is_empty() {
            return Err(Error::Value("a mesh cycle needs at least one captured layer".into()));
        }
        let ctx = Ctx { schedule, device: Device::Cpu, links: net, nesting: 0 };
        let mut layers = Vec::with_capacity(cycle.len());
        let mut saved: Vec<Saved> = Vec::with_capacity(cycle.len());
        for c in cycle {
            let slot = net.slot(c.coord)?.ok_or_else(|| Error::Spec(format!("mesh cycle: no layer at {}", c.coord)))?;
            if slot.disabled {
                return Err(Error::Spec(format!("mesh cycle: the layer at {} is disabled (a disabled layer passes its input on; leave it out)", c.coord)));
            }
            let input = Input { data: c.input, batch, shape: c.shape, skip: c.skip };
            saved.push(slot.layer.forward_train(input, &ctx).map_err(|e| at(c.coord, &slot.layer, e))?);
            layers.push(slot.layer.clone());
        }
        let output = &saved[saved.len() - 1].post;
        if target.len() != output.len() {
            return Err(Error::Shape(format!(
                "mesh cycle: the target has {} values, the output layer at {} produced {}",
                target.len(),
                cycle[cycle.len() - 1].coord,
                output.len()
            )));
        }
        let loss = mse(output, target);
        if !loss.is_finite() {
            return Ok(StepReport { loss, updates: 0, stopped: Some(format!("the mesh output's loss is {loss}; weights unchanged")) });
        }
        let nodes: Vec<Node> = cycle
            .iter()
            .zip(&saved)
            .zip(layers)
            .enumerate()
            .map(|(i, ((c, s), layer))| Node {
                coord: c.coord,
                layer,
                input: Input { data: c.input, batch, shape: c.shape, skip: c.skip },
                saved: s,
                source: within_cycle(c.source, i),
                skip_source: c.skip_source.map(|s| within_cycle(s, i)),
            })
            .collect();
        let stopped = self.update(&nodes, target, lr, schedule, net)?;
        Ok(StepReport { loss, updates: usize::from(stopped.is_none()), stopped })
    }
}
