//! The systolic (step) mesh, targetprop.md §8: every occupied coordinate of a grid is a cell
//! that, once per clock cycle, computes from what its sources held after the previous cycle and
//! writes a fresh buffer (double buffering), so data advances one cell per cycle and remote
//! links to a cell at or after the reader close loops across cycles. Backprop through the
//! captured cycles is in bptt.rs, the training loop in train.rs, online target propagation in
//! bridge.rs.
//!
//! Rules (route.rs): a cell reads its remote link target's output, else the previous occupied
//! coordinate's, else (the first cell) the external input, which stays as set until set again.
//! A Residual adds a skip: its link target's output, else the input its predecessor consumed. A
//! disabled cell passes its input on one cycle later. A cell none of whose sources holds data
//! produces nothing; a Residual with only a skip counts its missing input as zeros.

pub mod bptt;
pub mod bridge;
pub mod history;
pub mod route;
pub mod train;

use crate::error::{Error, Result};
use crate::kernels::Schedule;
use crate::layers::{Ctx, Device, Input, Shape};
use crate::network::{exec, VolumetricNetwork};
use history::{CellRecord, CycleRecord, History, Run};
use rayon::prelude::*;
use route::{Origin, Route};
use std::sync::Arc;

/// One batch of values a cell holds: the batch is the mesh's, `shape` one sample's.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub data: Vec<f32>,
    pub shape: Shape,
}

/// Buffers are shared between the mesh's state, its consumers and the history (no copies).
pub type Buffer = Arc<Signal>;

pub struct Systolic {
    /// Samples per buffer (0 until the first input).
    batch: usize,
    input: Option<Buffer>,
    /// Per flat index: the cell's output after the last cycle.
    outputs: Vec<Option<Buffer>>,
    /// Per flat index: the main input the cell consumed in the last cycle.
    consumed: Vec<Option<Buffer>>,
    cycle: u64,
    history: History,
}

/// What one cell produced in a cycle.
struct Produced {
    output: Buffer,
    consumed: Option<Buffer>,
    record: Option<CellRecord>,
}

impl Systolic {
    /// A mesh over a grid of `net`'s size, keeping the last `history` cycles (0: none).
    pub fn new(net: &VolumetricNetwork, history: usize) -> Systolic {
        let slots = net.depth * net.rows * net.cols * net.layers_per_cell;
        Systolic { batch: 0, input: None, outputs: vec![None; slots], consumed: vec![None; slots], cycle: 0, history: History::new(history) }
    }

    /// Cycles run since creation or the last reset.
    pub fn cycle(&self) -> u64 {
        self.cycle
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// Keep the last `cycles` cycles from now on (0 stops capturing and frees the history).
    pub fn set_history(&mut self, cycles: usize) {
        self.history.set_capacity(cycles);
    }

    /// Forget every buffer, the input and the history; the cycle count restarts at 0.
    pub fn reset(&mut self) {
        self.batch = 0;
        self.input = None;
        self.outputs.iter_mut().chain(self.consumed.iter_mut()).for_each(|b| *b = None);
        self.cycle = 0;
        self.history.clear();
    }

    /// Present `data` (`batch` samples of `shape`) to the first cell from the next cycle on.
    /// The batch size is fixed until `reset` (every buffer carries it).
    pub fn set_input(&mut self, data: Vec<f32>, batch: usize, shape: &[usize]) -> Result<()> {
        Input::new(&data, batch, shape).check_len()?;
        if batch == 0 {
            return Err(Error::Value("the mesh input is empty (batch 0)".into()));
        }
        if self.batch != 0 && batch != self.batch {
            return Err(Error::Shape(format!(
                "the mesh carries batches of {} samples; got an input of {batch} (reset() the mesh to change the batch size)",
                self.batch
            )));
        }
        self.batch = batch;
        self.input = Some(Arc::new(Signal { data, shape: shape.to_vec() }));
        Ok(())
    }

    /// The external input as last set.
    pub fn input(&self) -> Option<&Buffer> {
        self.input.as_ref()
    }

    /// The output of the cell at flat `index` after the last cycle.
    pub fn state(&self, index: usize) -> Option<&Buffer> {
        self.outputs.get(index).and_then(|b| b.as_ref())
    }

    /// The main input the cell at flat `index` consumed in the last cycle.
    pub fn consumed(&self, index: usize) -> Option<&Buffer> {
        self.consumed.get(index).and_then(|b| b.as_ref())
    }

    /// The mesh's output cell: the last occupied coordinate in traversal order.
    pub fn output_index(net: &VolumetricNetwork) -> Result<usize> {
        let (coord, _) = net.occupied().last().ok_or_else(|| Error::Value("the network has no layers: the mesh has no cells".into()))?;
        net.index(coord)
    }

    /// The output cell's buffer after the last cycle (None until data has reached it).
    pub fn output(&self, net: &VolumetricNetwork) -> Result<Option<&Buffer>> {
        Ok(self.state(Self::output_index(net)?))
    }

    fn resolve(&self, origin: Origin) -> Option<&Buffer> {
        match origin {
            Origin::Input => self.input.as_ref(),
            Origin::Output(j) => self.outputs[j].as_ref(),
            Origin::Consumed(j) => self.consumed[j].as_ref(),
        }
    }

    /// One clock cycle: every cell computes from the previous cycle's buffers, then all buffers
    /// are replaced at once. On error nothing changes. Cells run side by side for `Parallel`
    /// (each reads only the previous buffers, so the results are the same for every schedule).
    pub fn step(&mut self, net: &VolumetricNetwork, schedule: Schedule) -> Result<()> {
        let routes = route::routes(net)?;
        if routes.is_empty() {
            return Err(Error::Value("the network has no layers: the mesh has no cells to clock".into()));
        }
        let capture = self.history.capacity() > 0;
        let run = |r: &Route| self.run_cell(r, net, schedule, capture);
        let produced: Vec<Option<Produced>> = if schedule == Schedule::Parallel {
            routes.par_iter().map(run).collect::<Result<_>>()?
        } else {
            routes.iter().map(run).collect::<Result<_>>()?
        };
        let mut next_outputs = vec![None; self.outputs.len()];
        let mut next_consumed = vec![None; self.consumed.len()];
        let mut records = Vec::new();
        for (r, p) in routes.iter().zip(produced) {
            match p {
                Some(p) => {
                    next_outputs[r.index] = Some(p.output);
                    next_consumed[r.index] = p.consumed;
                    records.extend(p.record);
                }
                None => {
                    next_outputs[r.index] = self.outputs[r.index].take();
                    next_consumed[r.index] = self.consumed[r.index].take();
                }
            }
        }
        self.outputs = next_outputs;
        self.consumed = next_consumed;
        self.cycle += 1;
        if capture {
            self.history.push(CycleRecord { cycle: self.cycle, cells: records });
        }
        Ok(())
    }

    fn run_cell(&self, r: &Route, net: &VolumetricNetwork, schedule: Schedule, capture: bool) -> Result<Option<Produced>> {
        let input = self.resolve(r.input).cloned();
        let skip = r.skip.and_then(|s| self.resolve(s)).cloned();
        let record = |run: Run| CellRecord { index: r.index, coord: r.coord, input_from: r.input, skip_from: r.skip, input: input.clone(), skip: skip.clone(), run };
        if r.disabled {
            return Ok(input.clone().map(|x| Produced { output: x.clone(), consumed: Some(x), record: capture.then(|| record(Run::Passed)) }));
        }
        // Only a Residual has a skip; with no input yet it adds the skip to zeros.
        let zeros;
        let (data, shape, from): (&[f32], &[usize], Origin) = match (&input, &skip, r.skip) {
            (Some(x), _, _) => (&x.data, &x.shape, r.input),
            (None, Some(s), Some(origin)) => {
                zeros = vec![0f32; s.data.len()];
                (&zeros, &s.shape, origin)
            }
            _ => return Ok(None),
        };
        let x = Input { data, batch: self.batch, shape, skip: skip.as_ref().map(|s| &s.data[..]) };
        let ctx = Ctx { schedule, device: Device::Cpu, links: net, nesting: 0 };
        let explain = |e| exec::at(r.coord, &r.layer, exec::append(e, &format!(" (its input is {}, sample shape {shape:?})", route::describe(from, net))));
        let (output, run) = if capture {
            let saved = r.layer.forward_train(x, &ctx).map_err(explain)?;
            let output = Arc::new(Signal { data: saved.post.clone(), shape: saved.shape.clone() });
            (output, Some(Run::Computed { layer: r.layer.clone(), saved }))
        } else {
            let out_shape = r.layer.output_shape_in(shape, net).map_err(explain)?;
            let data = r.layer.infer(x, &ctx).map_err(explain)?;
            (Arc::new(Signal { data, shape: out_shape }), None)
        };
        Ok(Some(Produced { output, consumed: input.clone(), record: run.map(record) }))
    }
}

#[cfg(test)]
mod tests;
