//! Backprop through time over the mesh's captured cycles (targetprop.md §8, StepBackward):
//! gradients on the output cell at chosen cycles flow back one cell and one cycle per step,
//! along the same routes the data took (links, feedback loops, Residual skips, delay stages).
//! Cycles before the captured window count as constants (truncated BPTT).

use super::history::{CellRecord, Run};
use super::route::Origin;
use super::Systolic;
use crate::error::{Error, Result};
use crate::kernels::Schedule;
use crate::layers::{Ctx, Device, Input, Param};
use crate::network::{exec, VolumetricNetwork};
use crate::train::Loss;
use std::collections::BTreeMap;

/// Gradients on the output cell's output, each for one captured cycle.
pub type CycleGrads = Vec<(u64, Vec<f32>)>;

fn add_into(slot: &mut Option<Vec<f32>>, g: Vec<f32>) {
    match slot {
        Some(acc) => acc.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
        None => *slot = Some(g),
    }
}

/// Gradients headed for the previous cycle: per cell, on its output and on the input it consumed.
struct Pending {
    outputs: Vec<Option<Vec<f32>>>,
    consumed: Vec<Option<Vec<f32>>>,
}

impl Pending {
    fn new(cells: usize) -> Pending {
        Pending { outputs: vec![None; cells], consumed: vec![None; cells] }
    }

    /// Route `g` to the tensor `origin` names (the external input takes no gradient).
    fn deposit(&mut self, origin: Origin, g: Vec<f32>) {
        match origin {
            Origin::Input => {}
            Origin::Output(j) => add_into(&mut self.outputs[j], g),
            Origin::Consumed(j) => add_into(&mut self.consumed[j], g),
        }
    }
}

impl Systolic {
    /// The output cell's output after captured `cycle`, and its sample shape.
    pub fn captured_output(&self, net: &VolumetricNetwork, cycle: u64) -> Result<(&[f32], &[usize])> {
        let out = Self::output_index(net)?;
        let record = self.history.get(cycle).ok_or_else(|| self.not_captured(cycle))?;
        let cell = record.cell(out).ok_or_else(|| {
            Error::Value(format!("the output cell {} produced nothing in cycle {cycle}: data had not reached it yet", net.coord_of(out)))
        })?;
        Ok(cell.output())
    }

    fn not_captured(&self, cycle: u64) -> Error {
        let cycles = self.history.cycles();
        match (cycles.front(), cycles.back()) {
            (Some(a), Some(b)) => Error::Value(format!("cycle {cycle} is not in the captured history (cycles {} to {} are)", a.cycle, b.cycle)),
            _ if self.history.capacity() == 0 => {
                Error::Value("the mesh captures no history: create it with history=N or call capture() before stepping".into())
            }
            _ => Error::Value(format!("cycle {cycle} is not in the captured history (nothing captured since the last reset)")),
        }
    }

    /// `loss` between the output after each captured cycle and its target, averaged over the
    /// cycles, and its gradient on each of those outputs. Targets are shaped like the output.
    pub fn cycle_loss(&self, net: &VolumetricNetwork, targets: &[(u64, &[f32])], loss: Loss) -> Result<(f64, CycleGrads)> {
        if targets.is_empty() {
            return Err(Error::Value("no target cycles: give at least one target".into()));
        }
        let share = 1.0 / targets.len() as f64;
        let mut total = 0f64;
        let mut grads = Vec::with_capacity(targets.len());
        for &(cycle, t) in targets {
            let (y, shape) = self.captured_output(net, cycle)?;
            if t.len() != y.len() {
                return Err(Error::Shape(format!(
                    "the target for cycle {cycle} has {} values, but the output has {} (batch {} × sample shape {shape:?})",
                    t.len(),
                    y.len(),
                    self.batch
                )));
            }
            let classes = shape.last().copied().unwrap_or(1).max(1);
            let (value, mut g) = loss.evaluate(y, t, y.len() / classes, classes);
            g.iter_mut().for_each(|v| *v = (*v as f64 * share) as f32);
            total += value * share;
            grads.push((cycle, g));
        }
        Ok((total, grads))
    }

    /// Gradients of Σ_c ⟨y_c, g_c⟩ over (cycle c, g_c) pairs, y_c the output cell's output after
    /// captured cycle c, with respect to every tensor the captured cells used. A tensor used by
    /// several cells or cycles appears once per use; `sum_gradients` adds them up.
    pub fn backward(&self, net: &VolumetricNetwork, output_grads: CycleGrads, schedule: Schedule) -> Result<Vec<(Param, Vec<f32>)>> {
        let out = Self::output_index(net)?;
        let mut injected: BTreeMap<u64, Option<Vec<f32>>> = BTreeMap::new();
        for (cycle, g) in output_grads {
            let (y, shape) = self.captured_output(net, cycle)?;
            if g.len() != y.len() {
                return Err(Error::Shape(format!(
                    "the gradient for cycle {cycle} has {} values, but the output has {} (batch {} × sample shape {shape:?})",
                    g.len(),
                    y.len(),
                    self.batch
                )));
            }
            add_into(injected.entry(cycle).or_default(), g);
        }
        let ctx = Ctx { schedule, device: Device::Cpu, links: net, nesting: 0 };
        let cells = self.outputs.len();
        let mut now = Pending::new(cells);
        let mut params = Vec::new();
        for record in self.history.cycles().iter().rev() {
            if let Some(Some(g)) = injected.remove(&record.cycle) {
                add_into(&mut now.outputs[out], g);
            }
            let mut before = Pending::new(cells);
            for cell in &record.cells {
                let grad_out = now.outputs[cell.index].take();
                let grad_consumed = now.consumed[cell.index].take();
                if grad_out.is_none() && grad_consumed.is_none() {
                    continue;
                }
                let (mut grad_in, grad_skip) = match grad_out {
                    Some(g) => cell_backward(cell, g, self.batch, &ctx, &mut params)?,
                    None => (None, None),
                };
                if let Some(g) = grad_consumed {
                    add_into(&mut grad_in, g);
                }
                if let (Some(g), Some(_)) = (grad_in, &cell.input) {
                    before.deposit(cell.input_from, g);
                }
                if let (Some(g), Some(origin), Some(_)) = (grad_skip, cell.skip_from, &cell.skip) {
                    before.deposit(origin, g);
                }
            }
            now = before;
        }
        Ok(params)
    }
}

/// One cell's backward in one cycle: (gradient on its input, on its skip), its tensors'
/// gradients appended to `params`.
#[allow(clippy::type_complexity)]
fn cell_backward(cell: &CellRecord, g: Vec<f32>, batch: usize, ctx: &Ctx, params: &mut Vec<(Param, Vec<f32>)>) -> Result<(Option<Vec<f32>>, Option<Vec<f32>>)> {
    let (layer, saved) = match &cell.run {
        Run::Passed => return Ok((Some(g), None)),
        Run::Computed { layer, saved } => (layer, saved),
    };
    let zeros;
    let (data, shape): (&[f32], &[usize]) = match (&cell.input, &cell.skip) {
        (Some(x), _) => (&x.data, &x.shape),
        (None, Some(s)) => {
            zeros = vec![0f32; s.data.len()];
            (&zeros, &s.shape)
        }
        (None, None) => return Err(Error::Value(format!("layer at {}: a captured cell without inputs", cell.coord))),
    };
    let x = Input { data, batch, shape, skip: cell.skip.as_ref().map(|s| &s.data[..]) };
    let wants_input = cell.input.is_some() && cell.input_from != Origin::Input;
    let grads = layer.backward(x, saved, &g, ctx, wants_input).map_err(|e| exec::at(cell.coord, layer, e))?;
    params.extend(grads.params);
    let non_empty = |v: Vec<f32>| Some(v).filter(|v| !v.is_empty());
    Ok((non_empty(grads.input), non_empty(grads.skip)))
}
