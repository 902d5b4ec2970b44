//! The target-propagation bridge (targetprop.md §8, the reference's StepApplyTween): one clock
//! cycle, then one local update of every cell from what it consumed and produced in that cycle,
//! so the mesh learns online without backprop through time.
//!
//! A cell's target comes back from the cells that read its output in the same cycle list (its
//! chained successor, a remote link to a later cell); what a cell read over a feedback link (a
//! source at or after it) counts as external and sends nothing back. The mesh reads the previous
//! cycle's buffers, so the gap pushed to a source is exact in steady state (an input held for as
//! many cycles as the path is long), as in the reference.

use super::route::{self, Origin, Route};
use super::{Buffer, Signal, Systolic};
use crate::error::{Error, Result};
use crate::kernels::Schedule;
use crate::network::exec::Source;
use crate::network::VolumetricNetwork;
use crate::targetprop::{CycleInput, StepReport, TargetProp};
use std::collections::HashMap;
use std::sync::Arc;

/// What a computing cell reads in the coming cycle, resolved before the cycle replaces it.
struct Read<'r> {
    route: &'r Route,
    input: Buffer,
    skip: Option<Buffer>,
    /// Where `input` came from (None: a Residual's missing input, counted as zeros).
    input_from: Option<Origin>,
}

impl Systolic {
    /// One clock cycle, then `tp`'s update of every cell that computed in it at rate `lr` (the
    /// config's learning_rate when None), the output cell's output compared with `target`
    /// (`batch × output sample` values). `Ok(None)`: data has not reached the output cell yet,
    /// the cycle ran and nothing learned. A wrong target changes nothing (checked before the
    /// cycle); a non-finite loss or weight keeps the weights (`StepReport::stopped`).
    pub fn step_targetprop(&mut self, net: &VolumetricNetwork, tp: &mut TargetProp, target: &[f32], lr: Option<f32>, schedule: Schedule) -> Result<Option<StepReport>> {
        tp.config.rate(lr)?;
        let routes = route::routes(net)?;
        let last = routes.last().ok_or_else(|| Error::Value("the network has no layers: the mesh has no cells to clock".into()))?;
        if last.disabled {
            return Err(Error::Spec(format!(
                "the mesh's output cell at {} is disabled (it passes its input on): target propagation needs an output layer that computes",
                last.coord
            )));
        }
        let reads: Vec<Read> = routes.iter().filter(|r| !r.disabled).filter_map(|r| self.read(r)).collect();
        let reaches_output = reads.last().is_some_and(|r| r.route.index == last.index);
        if reaches_output {
            let read = &reads[reads.len() - 1];
            let out_shape = last.layer.output_shape_in(&read.input.shape, net)?;
            let expected = self.batch * out_shape.iter().product::<usize>();
            if target.len() != expected {
                return Err(Error::Shape(format!(
                    "the target has {} values; the output cell at {} produces {expected} (batch {} × sample shape {out_shape:?})",
                    target.len(),
                    last.coord,
                    self.batch
                )));
            }
        }
        self.step(net, schedule)?;
        if !reaches_output {
            return Ok(None);
        }
        let cycle = cycle_inputs(&reads, &routes);
        tp.apply_cycle(net, self.batch, &cycle, target, lr, schedule).map(Some)
    }

    /// What the cell of `r` consumes this cycle; None when it produces nothing.
    fn read<'r>(&self, r: &'r Route) -> Option<Read<'r>> {
        let skip = r.skip.and_then(|s| self.resolve(s)).cloned();
        match (self.resolve(r.input).cloned(), &skip) {
            (Some(input), _) => Some(Read { route: r, input, skip, input_from: Some(r.input) }),
            (None, Some(s)) => {
                let zeros = Arc::new(Signal { data: vec![0.0; s.data.len()], shape: s.shape.clone() });
                Some(Read { route: r, input: zeros, skip, input_from: None })
            }
            (None, None) => None,
        }
    }
}

/// The cycle list `TargetProp::apply_cycle` takes: each read with its sources as positions in
/// the list (a source outside it, or at or after the reader, is external).
fn cycle_inputs<'a>(reads: &'a [Read], routes: &[Route]) -> Vec<CycleInput<'a>> {
    let position: HashMap<usize, usize> = reads.iter().enumerate().map(|(p, r)| (r.route.index, p)).collect();
    let route_of: HashMap<usize, &Route> = routes.iter().map(|r| (r.index, r)).collect();
    let source = |origin: Origin| -> Source {
        // A Residual's default skip is what its predecessor consumed: that tensor's producer.
        let origin = match origin {
            Origin::Consumed(j) => route_of.get(&j).map_or(Origin::Input, |r| r.input),
            o => o,
        };
        match origin {
            Origin::Output(j) => position.get(&j).map_or(Source::Input, |&p| Source::Step(p)),
            Origin::Input | Origin::Consumed(_) => Source::Input,
        }
    };
    reads
        .iter()
        .map(|r| CycleInput {
            coord: r.route.coord,
            input: &r.input.data,
            shape: &r.input.shape,
            skip: r.skip.as_ref().map(|s| &s.data[..]),
            source: r.input_from.map_or(Source::Input, source),
            skip_source: r.route.skip.map(source),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation;
    use crate::codec::Codec;
    use crate::layers::{Dense, Layer, Residual};
    use crate::network::Coord;
    use crate::targetprop::TargetPropConfig;

    fn at(l: usize) -> Coord {
        Coord { l, ..Coord::ORIGIN }
    }

    /// x → Dense(3→3, tanh) → Residual (default skip: x) → Dense(3→2).
    fn net() -> VolumetricNetwork {
        let mut net = VolumetricNetwork::new(1, 1, 1, 3).unwrap();
        net.set_layer(at(0), Arc::new(Layer::Dense(Dense::new(3, 3, Activation::Tanh, true, 3, Codec::Standard).unwrap()))).unwrap();
        net.set_layer(at(1), Arc::new(Layer::Residual(Residual))).unwrap();
        net.set_layer(at(2), Arc::new(Layer::Dense(Dense::new(3, 2, Activation::Linear, true, 4, Codec::Standard).unwrap()))).unwrap();
        net
    }

    fn masters(net: &VolumetricNetwork) -> Vec<Vec<f32>> {
        net.params().iter().map(|p| p.read().unwrap().master().unwrap().to_vec()).collect()
    }

    const X: [f32; 6] = [0.5, -1.0, 0.25, 2.0, 0.1, -0.3];
    const T: [f32; 4] = [0.3, -0.2, 0.9, 0.4];

    #[test]
    fn in_steady_state_a_cycle_updates_exactly_like_a_grid_step() {
        for chain in [false, true] {
            let config = TargetPropConfig { use_chain_rule: chain, momentum: 0.5, batch_size: 2, ..TargetPropConfig::DEFAULT };
            let (stepped, meshed) = (net(), net());
            let report = TargetProp::new(config).unwrap().step(&stepped, &X, 2, &[3], &T, Some(0.1), Schedule::Normal).unwrap();
            let mut tp = TargetProp::new(config).unwrap();
            let mut mesh = Systolic::new(&meshed, 0);
            mesh.set_input(X.to_vec(), 2, &[3]).unwrap();
            // Data needs three cycles to reach the output; the third sees a settled pipeline.
            for _ in 0..2 {
                assert_eq!(mesh.step_targetprop(&meshed, &mut tp, &T, Some(0.1), Schedule::Normal).unwrap(), None);
            }
            assert_eq!(masters(&meshed), masters(&net()));
            let cycled = mesh.step_targetprop(&meshed, &mut tp, &T, Some(0.1), Schedule::Normal).unwrap();
            assert_eq!(cycled, Some(report));
            assert_eq!(masters(&meshed), masters(&stepped));
            assert_ne!(masters(&meshed), masters(&net()));
        }
    }

    #[test]
    fn a_wrong_target_or_a_disabled_output_changes_nothing() {
        let net = net();
        let mut tp = TargetProp::new(TargetPropConfig::DEFAULT).unwrap();
        let mut mesh = Systolic::new(&net, 0);
        mesh.set_input(X.to_vec(), 2, &[3]).unwrap();
        mesh.step(&net, Schedule::Normal).unwrap();
        mesh.step(&net, Schedule::Normal).unwrap();
        let err = mesh.step_targetprop(&net, &mut tp, &[0.0; 3], None, Schedule::Normal).unwrap_err();
        assert!(err.to_string().contains("target has 3 values; the output cell at (0,0,0,2) produces 4"), "{err}");
        assert_eq!(mesh.cycle(), 2);
        let err = mesh.step_targetprop(&net, &mut tp, &T, Some(-1.0), Schedule::Normal).unwrap_err();
        assert!(err.to_string().contains("lr"), "{err}");
        let mut off = net.clone();
        off.set_disabled(at(2), true).unwrap();
        let err = mesh.step_targetprop(&off, &mut tp, &T, None, Schedule::Normal).unwrap_err();
        assert!(err.to_string().contains("output cell at (0,0,0,2) is disabled"), "{err}");
        assert_eq!((mesh.cycle(), masters(&net)), (2, masters(&self::net())));
    }
}
