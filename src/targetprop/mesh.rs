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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation;
    use crate::codec::Codec;
    use crate::layers::{Dense, Layer};
    use crate::network::exec;
    use crate::targetprop::TargetPropConfig;
    use std::sync::Arc;

    /// Dense(4→5) → Dense(5→5) → Dense(5→3) reading the first layer's output by a remote link.
    fn net() -> VolumetricNetwork {
        let mut net = VolumetricNetwork::new(1, 1, 1, 3).unwrap();
        let sizes = [(4, 5, Activation::Tanh), (5, 5, Activation::Tanh), (5, 3, Activation::Linear)];
        for (l, (i, o, act)) in sizes.into_iter().enumerate() {
            let dense = Dense::new(i, o, act, true, 7 + l as u64, Codec::Standard).unwrap();
            net.set_layer(Coord { z: 0, y: 0, x: 0, l }, Arc::new(Layer::Dense(dense))).unwrap();
        }
        net.set_link(Coord { z: 0, y: 0, x: 0, l: 2 }, Some(Coord { z: 0, y: 0, x: 0, l: 0 })).unwrap();
        net
    }

    fn masters(net: &VolumetricNetwork) -> Vec<Vec<f32>> {
        net.params().iter().map(|p| p.read().unwrap().master().unwrap().to_vec()).collect()
    }

    #[test]
    fn a_captured_cycle_updates_exactly_like_a_step() {
        let (x, t) = ([0.5f32, -1.0, 0.25, 2.0], [0.3f32, -0.2, 0.9]);
        for chain in [false, true] {
            let config = TargetPropConfig { use_chain_rule: chain, momentum: 0.5, ..TargetPropConfig::DEFAULT };
            let (stepped, cycled) = (net(), net());
            let mut a = TargetProp::new(config).unwrap();
            let report = a.step(&stepped, &x, 1, &[4], &t, Some(0.1), Schedule::Normal).unwrap();
            let trace = exec::forward_train(&cycled, &x, 1, &[4], Schedule::Normal).unwrap();
            let inputs: Vec<Vec<f32>> =
                trace.steps.iter().map(|s| exec::input_for(s, &x, &[4], 1, |j| &trace.saved[j].post[..], &trace.steps).data.to_vec()).collect();
            let cycle: Vec<CycleInput> = trace
                .steps
                .iter()
                .zip(&inputs)
                .map(|(s, input)| CycleInput { coord: s.coord, input, shape: if s.input == Source::Input { &[4] } else { &[5] }, skip: None, source: s.input, skip_source: None })
                .collect();
            let mut b = TargetProp::new(config).unwrap();
            let cycled_report = b.apply_cycle(&cycled, 1, &cycle, &t, Some(0.1), Schedule::Normal).unwrap();
            assert_eq!(report, cycled_report);
            assert_eq!(masters(&stepped), masters(&cycled));
            assert_ne!(masters(&stepped), masters(&net()));
            // The middle layer's output is read by nobody: it gets no target.
            let targeted: Vec<bool> = b.captures().iter().map(|c| c.target.is_some()).collect();
            assert_eq!(targeted, [true, false, true]);
        }
    }

    #[test]
    fn feedback_sources_get_no_target() {
        let net = net();
        let x = [0.1f32; 5];
        let cycle = [
            CycleInput { coord: Coord { z: 0, y: 0, x: 0, l: 1 }, input: &x, shape: &[5], skip: None, source: Source::Step(1), skip_source: None },
            CycleInput { coord: Coord { z: 0, y: 0, x: 0, l: 2 }, input: &x, shape: &[5], skip: None, source: Source::Step(0), skip_source: None },
        ];
        let mut tp = TargetProp::new(TargetPropConfig { use_chain_rule: false, ..TargetPropConfig::DEFAULT }).unwrap();
        let report = tp.apply_cycle(&net, 1, &cycle, &[0.0; 3], None, Schedule::Normal).unwrap();
        assert_eq!((report.updates, report.stopped), (1, None));
        assert_eq!(tp.captures().len(), 2);
        let bad = tp.apply_cycle(&net, 1, &cycle, &[0.0; 4], None, Schedule::Normal).unwrap_err();
        assert!(bad.to_string().contains("target has 4 values"), "{bad}");
    }
}
