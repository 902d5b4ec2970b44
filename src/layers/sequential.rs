//! Sequential: stages run in order on the running tensor (network.md §5.2). Each stage receives
//! as skip the input of the stage before it, so [Dense, Residual] is Dense(x) + x. Disabled
//! stages are skipped in forward and backward alike.

use super::member::{in_member, nested, Member};
use super::spec::{Build, Fields};
use super::{check_grad, Ctx, Grads, Input, Layer, LayerOps, Links, NoLinks, Param, Saved, Shape};
use crate::error::{Error, Result};
use serde_json::{json, Map, Value};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Stage {
    pub member: Member,
    pub disabled: bool,
}

#[derive(Debug, Clone)]
pub struct Sequential {
    pub stages: Vec<Stage>,
}

/// One executed stage: the layer that ran (links resolved) and what it saved.
struct StageRun {
    index: usize,
    layer: Arc<Layer>,
    saved: Saved,
}

impl Sequential {
    pub fn new(stages: Vec<Stage>) -> Result<Sequential> {
        if stages.is_empty() {
            return Err(Error::Spec("Sequential needs at least one stage (field \"sequential_layers\")".into()));
        }
        Ok(Sequential { stages })
    }

    pub fn from_spec(f: &Fields, build: Build) -> Result<Sequential> {
        let mut stages = Vec::new();
        for (i, entry) in f.list("sequential_layers")?.iter().enumerate() {
            let context = format!("{}: stage {i}", f.context);
            let member = Member::from_value(entry, context.clone(), build.child(i))?;
            let disabled = entry.get("is_disabled").and_then(Value::as_bool).unwrap_or(false);
            stages.push(Stage { member, disabled });
        }
        Sequential::new(stages).map_err(|e| Error::Spec(format!("{}: {e}", f.context)))
    }

    fn enabled(&self) -> impl Iterator<Item = (usize, &Stage)> {
        self.stages.iter().enumerate().filter(|(_, s)| !s.disabled)
    }

    /// Data and shape of stage `k`'s input among the runs (k = 0: the container's input).
    fn stage_input<'a>(x: &Input<'a>, runs: &'a [StageRun], k: usize) -> (&'a [f32], &'a [usize]) {
        match k {
            0 => (x.data, x.shape),
            _ => (&runs[k - 1].saved.post[..], &runs[k - 1].saved.shape[..]),
        }
    }

    fn input_of<'a>(x: &Input<'a>, runs: &'a [StageRun], k: usize) -> Input<'a> {
        let (data, shape) = Self::stage_input(x, runs, k);
        let skip = (k > 0).then(|| Self::stage_input(x, runs, k - 1).0);
        Input { data, batch: x.batch, shape, skip }
    }
}

/// One stage as it ran in a training forward: its index among the stages, the layer (links
/// resolved), the input it received (skip included) and its record.
pub struct StageView<'a> {
    pub index: usize,
    pub layer: &'a Arc<Layer>,
    pub input: Input<'a>,
    pub saved: &'a Saved,
}

impl Sequential {
    /// The stages a training forward ran, in order (target propagation walks them backwards).
    pub fn stage_views<'a>(x: &Input<'a>, saved: &'a Saved) -> Vec<StageView<'a>> {
        let runs = saved.state::<Vec<StageRun>>();
        (0..runs.len())
            .map(|k| StageView { index: runs[k].index, layer: &runs[k].layer, input: Self::input_of(x, runs, k), saved: &runs[k].saved })
            .collect()
    }
}

impl LayerOps for Sequential {
    fn type_name(&self) -> &'static str {
        "Sequential"
    }
    fn output_shape(&self, input: &[usize]) -> Result<Shape> {
        self.output_shape_in(input, &NoLinks)
    }
    fn output_shape_in(&self, input: &[usize], links: &dyn Links) -> Result<Shape> {
        let mut shape = input.to_vec();
        for (i, stage) in self.enabled() {
            shape = stage.member.output_shape(&shape, links).map_err(|e| in_member("stage", i, &stage.member, e))?;
        }
        Ok(shape)
    }
    fn input_shape(&self) -> Option<Shape> {
        match &self.enabled().next()?.1.member {
            Member::Own(layer) => layer.input_shape(),
            Member::Link(_) => None,
        }
    }
    fn params(&self) -> Vec<Param> {
        self.stages.iter().flat_map(|s| s.member.params()).collect()
    }
    fn morphable(&self) -> Vec<Param> {
        self.stages.iter().flat_map(|s| s.member.morphable()).collect()
    }
    fn infer(&self, x: Input, ctx: &Ctx) -> Result<Vec<f32>> {
        x.check_len()?;
        let inner = nested(ctx)?;
        let (mut current, mut shape) = (x.data.to_vec(), x.shape.to_vec());
        let mut previous: Option<Vec<f32>> = None;
        for (i, stage) in self.enabled() {
            let layer = stage.member.resolve(ctx.links).map_err(|e| in_member("stage", i, &stage.member, e))?;
            let input = Input { data: &current, batch: x.batch, shape: &shape, skip: previous.as_deref() };
            let next_shape = layer.output_shape_in(&shape, ctx.links).map_err(|e| in_member("stage", i, &stage.member, e))?;
            let y = layer.infer(input, &inner).map_err(|e| in_member("stage", i, &stage.member, e))?;
            previous = Some(std::mem::replace(&mut current, y));
            shape = next_shape;
        }
        Ok(current)
    }
    fn forward_train(&self, x: Input, ctx: &Ctx) -> Result<Saved> {
        x.check_len()?;
        let inner = nested(ctx)?;
        let mut runs: Vec<StageRun> = Vec::new();
        for (i, stage) in self.enabled() {
            let layer = stage.member.resolve(ctx.links).map_err(|e| in_member("stage", i, &stage.member, e))?;
            let input = Self::input_of(&x, &runs, runs.len());
            let saved = layer.forward_train(input, &inner).map_err(|e| in_member("stage", i, &stage.member, e))?;
            runs.push(StageRun { index: i, layer, saved });
        }
        // The output is copied out of the last run, which backward still needs.
        let (post, shape) = Self::stage_input(&x, &runs, runs.len());
        Ok(Saved { post: post.to_vec(), shape: shape.to_vec(), state: Box::new(runs) })
    }
    fn backward(&self, x: Input, saved: &Saved, grad_out: &[f32], ctx: &Ctx, need_input: bool) -> Result<Grads> {
        check_grad("Sequential", grad_out, saved)?;
        let inner = nested(ctx)?;
        let runs = saved.state::<Vec<StageRun>>();
        // extra[k]: gradient for stage k's input that arrived through a later stage's skip.
        let mut extra: Vec<Option<Vec<f32>>> = (0..runs.len()).map(|_| None).collect();
        let mut grad = grad_out.to_vec();
        let mut params = Vec::new();
        for k in (0..runs.len()).rev() {
            let run = &runs[k];
            let member = &self.stages[run.index].member;
            let wants_input = k > 0 || need_input;
            let g = run
                .layer
                .backward(Self::input_of(&x, runs, k), &run.saved, &grad, &inner, wants_input)
                .map_err(|e| in_member("stage", run.index, member, e))?;
            params.extend(g.params);
            if !g.skip.is_empty() && k > 0 {
                add_into(&mut extra[k - 1], g.skip);
            }
            grad = g.input;
            if let Some(e) = extra[k].take() {
                if grad.is_empty() {
                    grad = e;
                } else {
                    grad.iter_mut().zip(&e).for_each(|(a, b)| *a += b);
                }
            }
        }
        let input = if need_input && !grad.is_empty() { grad } else if need_input { vec![0.0; x.data.len()] } else { Vec::new() };
        Ok(Grads::new(input, params))
    }
    fn deep_clone(&self) -> Layer {
        let stages = self.stages.iter().map(|s| Stage { member: s.member.deep_clone(), disabled: s.disabled }).collect();
        Layer::Sequential(Sequential { stages })
    }
    fn spec(&self) -> Map<String, Value> {
        let stages: Vec<Value> = self
            .stages
            .iter()
            .map(|s| {
                let mut m = s.member.to_value();
                if s.disabled {
                    m.insert("is_disabled".into(), json!(true));
                }
                Value::Object(m)
            })
            .collect();
        let mut o = Map::new();
        o.insert("type".into(), json!("Sequential"));
        o.insert("sequential_layers".into(), Value::Array(stages));
        o
    }
}

/// Add `g` into an optional accumulator.
pub fn add_into(acc: &mut Option<Vec<f32>>, g: Vec<f32>) {
    match acc {
        Some(a) => a.iter_mut().zip(&g).for_each(|(x, y)| *x += y),
        None => *acc = Some(g),
    }
}
