//! Passes over the grid in traversal order (flat index order: z, y, x, l; reference network.md §3):
//! inference, the training forward that keeps what backward needs, and the backward pass.

use super::{Coord, VolumetricNetwork};
use crate::error::{Error, Result};
use crate::kernels::Schedule;
use crate::layers::{Device, Grads, Layer, Saved};
use std::sync::Arc;

/// The width a layer receives must be its input width. `previous` is the layer that produced
/// the input (None: the network input), so the message can name both ends.
fn check_width(c: Coord, layer: &Layer, got: usize, batch: usize, previous: Option<Coord>) -> Result<()> {
    if got == batch * layer.input_size() {
        return Ok(());
    }
    let width = got / batch.max(1);
    let source = match previous {
        None => format!("the input has width {width} (batch {batch})"),
        Some(p) => format!("the layer before it at {p} outputs width {width}"),
    };
    Err(Error::Shape(format!("layer at {c} ({}) expects input width {}, but {source}", layer.type_name(), layer.input_size())))
}

/// Forward for inference: each layer gets the previous layer's post-activation output.
pub fn infer(net: &VolumetricNetwork, x: &[f32], batch: usize, schedule: Schedule, device: Device) -> Result<Vec<f32>> {
    let mut current: Option<(Coord, Vec<f32>)> = None;
    for (c, layer) in net.active() {
        let input = current.as_ref().map_or(x, |(_, v)| &v[..]);
        check_width(c, layer, input.len(), batch, current.as_ref().map(|(p, _)| *p))?;
        current = Some((c, layer.infer(input, batch, schedule, device)?));
    }
    Ok(current.map_or_else(|| x.to_vec(), |(_, v)| v))
}

/// One layer's parameter gradients, in `Layer::params` order.
pub type ParamGrads = Vec<Vec<f32>>;

/// One layer's record from a training forward.
pub struct Step {
    pub coord: Coord,
    pub layer: Arc<Layer>,
    pub saved: Saved,
}

/// Training forward: returns each active layer's record; the network output is the last `post`.
pub fn forward_train(net: &VolumetricNetwork, x: &[f32], batch: usize, schedule: Schedule) -> Result<Vec<Step>> {
    let mut steps: Vec<Step> = Vec::new();
    for (c, layer) in net.active() {
        let input = steps.last().map_or(x, |s| &s.saved.post[..]);
        check_width(c, layer, input.len(), batch, steps.last().map(|s| s.coord))?;
        let saved = layer.forward_train(input, batch, schedule)?;
        steps.push(Step { coord: c, layer: layer.clone(), saved });
    }
    Ok(steps)
}

/// Backward over the records in reverse order; returns each layer's parameter gradients (in
/// forward order, matching `Layer::params`) and, when `need_input` is set, the gradient with
/// respect to the network input (empty otherwise).
pub fn backward(steps: &[Step], x: &[f32], grad_out: Vec<f32>, batch: usize, schedule: Schedule, need_input: bool) -> Result<(Vec<ParamGrads>, Vec<f32>)> {
    let mut param_grads = Vec::with_capacity(steps.len());
    let mut grad = grad_out;
    for (i, step) in steps.iter().enumerate().rev() {
        let input = if i == 0 { x } else { &steps[i - 1].saved.post[..] };
        let Grads { input: grad_input, params } = step.layer.backward(input, &step.saved, &grad, batch, schedule, need_input || i > 0)?;
        grad = grad_input;
        param_grads.push(params);
    }
    param_grads.reverse();
    Ok((param_grads, grad))
}
