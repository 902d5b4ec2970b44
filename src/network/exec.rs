//! Passes over the grid in traversal order (flat index order z, y, x, l; network.md §3).
//!
//! A pass is first planned: for each active layer, where its input comes from (the previous
//! layer's output, or a remote link target's output) and, for a Residual, its skip (the input the
//! previous layer received, or the remote link target's output). Inference and the training
//! forward run the plan; the backward walks it in reverse and routes each input gradient back to
//! the tensor it came from, so remote links and residuals train end to end. The network's
//! observers (observe.rs) see each step's output and, in the backward, its output gradient.

use super::{Coord, VolumetricNetwork};
use crate::error::{Error, Result};
use crate::kernels::Schedule;
use crate::layers::{Ctx, Device, Grads, Input, Layer, Param, Saved, Shape};
use crate::observe::{LayerEvent, Pass};
use std::collections::HashMap;
use std::sync::Arc;

/// A tensor a layer reads: the network input, or the output of the `i`-th planned step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Input,
    Step(usize),
}

/// One planned layer call.
pub struct PlannedStep {
    pub coord: Coord,
    pub layer: Arc<Layer>,
    pub input: Source,
    pub skip: Option<Source>,
    /// The sample shape this step produces.
    pub shape: Shape,
}

fn is_residual(layer: &Layer) -> bool {
    layer.type_name() == "Residual"
}

/// Resolve routing and shapes for a batch whose samples have shape `input_shape`. Errors name
/// the coordinate whose input does not fit.
pub fn plan(net: &VolumetricNetwork, input_shape: &[usize]) -> Result<Vec<PlannedStep>> {
    let mut steps: Vec<PlannedStep> = Vec::new();
    // What a coordinate hands on: its own output, or for a disabled slot what it passed through.
    let mut output_at: HashMap<Coord, Source> = HashMap::new();
    let mut current = Source::Input;
    let mut previous_input: Option<Source> = None;
    for (c, slot) in net.occupied() {
        if slot.disabled {
            output_at.insert(c, current);
            continue;
        }
        let linked = match slot.link {
            None => None,
            Some(t) => Some(*output_at.get(&t).ok_or_else(|| match net.slot(t) {
                Ok(Some(_)) => Error::Spec(format!(
                    "layer at {c}: remote link target {t} does not come before it in traversal order: a feedback loop, which only the systolic mesh (Systolic) runs"
                )),
                _ => Error::Spec(format!("layer at {c}: remote link target {t} is an empty slot")),
            })?),
        };
        let (input, skip) = if is_residual(&slot.layer) {
            (current, linked.or(previous_input))
        } else {
            (linked.unwrap_or(current), None)
        };
        let shape_of = |s: Source| match s {
            Source::Input => input_shape,
            Source::Step(i) => &steps[i].shape[..],
        };
        let in_shape = shape_of(input);
        let shape = slot.layer.output_shape_in(in_shape, net).map_err(|e| {
            let source = match input {
                Source::Input => format!("the network input has sample shape {in_shape:?}"),
                Source::Step(i) => format!("its input comes from the layer at {} with sample shape {in_shape:?}", steps[i].coord),
            };
            at(c, &slot.layer, append(e, &format!(" ({source})")))
        })?;
        if let Some(s) = skip {
            let (a, b) = (in_shape.iter().product::<usize>(), shape_of(s).iter().product::<usize>());
            if a != b {
                return Err(at(c, &slot.layer, Error::Shape(format!("its skip tensor has {b} values per sample, its input {a}"))));
            }
        }
        previous_input = Some(input);
        current = Source::Step(steps.len());
        output_at.insert(c, current);
        steps.push(PlannedStep { coord: c, layer: slot.layer.clone(), input, skip, shape });
    }
    Ok(steps)
}

/// Tell the network's observers about `step`'s output (forward) or output gradient (backward).
/// Unobserved networks return at the emptiness check.
#[inline]
fn observe(net: &VolumetricNetwork, pass: Pass, step: &PlannedStep, values: &[f32], batch: usize) -> Result<()> {
    if net.observers().is_empty() {
        return Ok(());
    }
    let event = LayerEvent { pass, coord: step.coord, layer_type: step.layer.type_name(), values, batch, shape: &step.shape };
    net.observers().notify(&event)
}

/// Add `suffix` to an error's message.
pub fn append(e: Error, suffix: &str) -> Error {
    match e {
        Error::Shape(m) => Error::Shape(m + suffix),
        Error::Spec(m) => Error::Spec(m + suffix),
        Error::Value(m) => Error::Value(m + suffix),
        Error::DType(m) => Error::DType(m + suffix),
        other => other,
    }
}

/// Prefix an error with the coordinate and type of the layer it came from.
pub fn at(c: Coord, layer: &Layer, e: Error) -> Error {
    let prefix = format!("layer at {c} ({})", layer.type_name());
    let wrap = |m: String| if m.starts_with("layer at ") { m } else { format!("{prefix}: {m}") };
    match e {
        Error::Shape(m) => Error::Shape(wrap(m)),
        Error::Spec(m) => Error::Spec(wrap(m)),
        Error::Value(m) => Error::Value(wrap(m)),
        Error::DType(m) => Error::DType(wrap(m)),
        other => other,
    }
}

/// The sample shape the whole pass produces for `input_shape`.
pub fn output_shape(net: &VolumetricNetwork, input_shape: &[usize]) -> Result<Shape> {
    Ok(plan(net, input_shape)?.last().map_or_else(|| input_shape.to_vec(), |s| s.shape.clone()))
}

/// The input shape the first active layer declares (None: no layer, or it takes any shape).
pub fn expected_input_shape(net: &VolumetricNetwork) -> Option<Shape> {
    net.active().next().and_then(|(_, l)| l.input_shape())
}

fn check_input(x: &[f32], batch: usize, shape: &[usize]) -> Result<()> {
    Input::new(x, batch, shape).check_len()
}

/// The input (and skip) of `step`, given the outputs of the steps before it.
pub fn input_for<'a>(step: &PlannedStep, x: &'a [f32], shape: &'a [usize], batch: usize, output: impl Fn(usize) -> &'a [f32], steps: &'a [PlannedStep]) -> Input<'a> {
    let tensor = |s: Source| match s {
        Source::Input => (x, shape),
        Source::Step(i) => (output(i), &steps[i].shape[..]),
    };
    let (data, in_shape) = tensor(step.input);
    Input { data, batch, shape: in_shape, skip: step.skip.map(|s| tensor(s).0) }
}

/// Forward for inference; returns the output and its sample shape.
/// For each step, the earlier steps whose output it is the last to read: an inference frees
/// those outputs right after it, so a deep grid holds only the activations still ahead of use.
pub fn last_readers(steps: &[PlannedStep]) -> Vec<Vec<usize>> {
    let mut last = vec![None; steps.len()];
    for (j, step) in steps.iter().enumerate() {
        for source in std::iter::once(step.input).chain(step.skip) {
            if let Source::Step(i) = source {
                last[i] = Some(j);
            }
        }
    }
    let mut freed = vec![Vec::new(); steps.len()];
    for (i, reader) in last.into_iter().enumerate() {
        if let Some(j) = reader {
            freed[j].push(i);
        }
    }
    freed
}

pub fn infer(net: &VolumetricNetwork, x: &[f32], batch: usize, shape: &[usize], schedule: Schedule, device: Device) -> Result<(Vec<f32>, Shape)> {
    check_input(x, batch, shape)?;
    let steps = plan(net, shape)?;
    let ctx = Ctx { schedule, device, links: net, nesting: 0 };
    let freed = last_readers(&steps);
    let mut outputs: Vec<Vec<f32>> = Vec::with_capacity(steps.len());
    for (j, step) in steps.iter().enumerate() {
        let input = input_for(step, x, shape, batch, |i| &outputs[i][..], &steps);
        let y = step.layer.infer(input, &ctx).map_err(|e| at(step.coord, &step.layer, e))?;
        observe(net, Pass::Forward, step, &y, batch)?;
        outputs.push(y);
        freed[j].iter().for_each(|&i| outputs[i] = Vec::new());
    }
    let shape = steps.last().map_or_else(|| shape.to_vec(), |s| s.shape.clone());
    Ok((outputs.pop().unwrap_or_else(|| x.to_vec()), shape))
}

/// A training forward: the plan and what each step saved. The network output is the last
/// step's `post` (or the input itself when nothing is active).
pub struct Trace {
    pub steps: Vec<PlannedStep>,
    pub saved: Vec<Saved>,
    pub input_shape: Shape,
    pub batch: usize,
}

impl Trace {
    pub fn output<'a>(&'a self, x: &'a [f32]) -> &'a [f32] {
        self.saved.last().map_or(x, |s| &s.post[..])
    }
    pub fn output_shape(&self) -> &[usize] {
        self.steps.last().map_or(&self.input_shape[..], |s| &s.shape[..])
    }
}

pub fn forward_train(net: &VolumetricNetwork, x: &[f32], batch: usize, shape: &[usize], schedule: Schedule) -> Result<Trace> {
    check_input(x, batch, shape)?;
    let steps = plan(net, shape)?;
    let ctx = Ctx { schedule, device: Device::Cpu, links: net, nesting: 0 };
    let mut saved: Vec<Saved> = Vec::with_capacity(steps.len());
    for step in &steps {
        let input = input_for(step, x, shape, batch, |i| &saved[i].post[..], &steps);
        let s = step.layer.forward_train(input, &ctx).map_err(|e| at(step.coord, &step.layer, e))?;
        observe(net, Pass::Forward, step, &s.post, batch)?;
        saved.push(s);
    }
    Ok(Trace { steps, saved, input_shape: shape.to_vec(), batch })
}

/// Add `g` into the gradient accumulated for `source`.
fn deposit(grads: &mut [Option<Vec<f32>>], input_grad: &mut Option<Vec<f32>>, source: Source, g: Vec<f32>) {
    let slot = match source {
        Source::Input => input_grad,
        Source::Step(i) => &mut grads[i],
    };
    match slot {
        Some(acc) => acc.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
        None => *slot = Some(g),
    }
}

/// Backward over a trace; returns every (tensor, gradient) pair the layers produced (a tensor
/// used twice appears twice) and, when `need_input`, the gradient with respect to the input.
pub fn backward(net: &VolumetricNetwork, trace: &Trace, x: &[f32], grad_out: Vec<f32>, schedule: Schedule, need_input: bool) -> Result<(Vec<(Param, Vec<f32>)>, Vec<f32>)> {
    let ctx = Ctx { schedule, device: Device::Cpu, links: net, nesting: 0 };
    let n = trace.steps.len();
    let mut grads: Vec<Option<Vec<f32>>> = (0..n).map(|_| None).collect();
    let mut input_grad: Option<Vec<f32>> = None;
    if n == 0 {
        return Ok((Vec::new(), grad_out));
    }
    grads[n - 1] = Some(grad_out);
    let mut param_grads = Vec::new();
    for i in (0..n).rev() {
        // A step whose output nobody read gets no gradient and contributes none.
        let Some(g) = grads[i].take() else { continue };
        let step = &trace.steps[i];
        let input = input_for(step, x, &trace.input_shape, trace.batch, |j| &trace.saved[j].post[..], &trace.steps);
        let wants_input = need_input || step.input != Source::Input;
        let Grads { input: gi, skip, params } =
            step.layer.backward(input, &trace.saved[i], &g, &ctx, wants_input).map_err(|e| at(step.coord, &step.layer, e))?;
        observe(net, Pass::Backward, step, &g, trace.batch)?;
        param_grads.extend(params);
        if wants_input && !gi.is_empty() {
            deposit(&mut grads, &mut input_grad, step.input, gi);
        }
        if let (Some(s), false) = (step.skip, skip.is_empty()) {
            if need_input || s != Source::Input {
                deposit(&mut grads, &mut input_grad, s, skip);
            }
        }
    }
    Ok((param_grads, input_grad.unwrap_or_else(|| vec![0.0; x.len()])))
}
