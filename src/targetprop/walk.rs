//! One target-estimation pass over a traced forward: from the global target backwards, every
//! layer call gets a target for its output, a link budget and gap, and (when not gated) its
//! weight change; gaps are routed to the tensors each call read (previous layer, remote link,
//! residual skip, container stages and branches), added up where a tensor fed several calls.

use super::config::TargetPropConfig;
use super::rules;
use crate::coord::Coord;
use crate::error::Result;
use crate::layers::parallel::Combine;
use crate::layers::sequential::add_into;
use crate::layers::{Ctx, Input, Layer, Param, Parallel, Saved, Sequential, Shape};
use crate::network::exec::Source;
use std::sync::Arc;

/// One top-level layer call of the pass: its layer, the input (and skip) it read, its training
/// record, and where that input came from (`Source::Step(j)`: node j's output).
pub struct Node<'a> {
    pub coord: Coord,
    pub layer: Arc<Layer>,
    pub input: Input<'a>,
    pub saved: &'a Saved,
    pub source: Source,
    pub skip_source: Option<Source>,
}

/// What the pass found for one layer call (top level: `path` empty; inside a container:
/// "stage 1/branch 0", …).
#[derive(Debug, Clone)]
pub struct Link {
    pub coord: Coord,
    pub path: String,
    pub kind: &'static str,
    /// (cos(actual, target) + 1) / 2, in [0, 1]; 0 when either is all zeros (a dead link).
    pub budget: f32,
    /// RMS of actual − target.
    pub gap: f32,
    /// The budget was below `min_budget`: no update for this call.
    pub gated: bool,
}

/// A top-level call's output (the forward capture) and the target it got (None when nothing
/// read its output).
#[derive(Debug, Clone)]
pub struct Capture {
    pub coord: Coord,
    pub shape: Shape,
    pub actual: Vec<f32>,
    pub target: Option<Vec<f32>>,
}

/// The pass's findings and the weight changes to apply (one entry per contribution; a tensor
/// reached through several calls appears several times).
#[derive(Default)]
pub struct Pass {
    pub links: Vec<Link>,
    pub captures: Vec<Capture>,
    pub changes: Vec<(Param, Vec<f32>)>,
}

/// What a call hands back to the tensors it read: a gap for its input and for its skip.
#[derive(Default)]
struct Back {
    input: Option<Vec<f32>>,
    skip: Option<Vec<f32>>,
}

fn negated(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| -x).collect()
}

pub fn budget(actual: &[f32], target: &[f32]) -> f32 {
    let (mut dot, mut na, mut nt) = (0f64, 0f64, 0f64);
    for (&a, &t) in actual.iter().zip(target) {
        dot += a as f64 * t as f64;
        na += a as f64 * a as f64;
        nt += t as f64 * t as f64;
    }
    if na > 0.0 && nt > 0.0 {
        let cos = (dot / (na.sqrt() * nt.sqrt())).clamp(-1.0, 1.0);
        ((cos + 1.0) / 2.0) as f32
    } else {
        0.0
    }
}

pub fn rms_gap(actual: &[f32], target: &[f32]) -> f32 {
    let sum: f64 = actual.iter().zip(target).map(|(&a, &t)| ((a - t) as f64).powi(2)).sum();
    (sum / actual.len().max(1) as f64).sqrt() as f32
}

/// Where a layer call sits: its grid coordinate, its path inside containers, and the depth
/// scale of its top-level step.
struct Site {
    coord: Coord,
    path: String,
    depth_scale: f32,
}

impl Site {
    fn child(&self, part: &str) -> Site {
        let path = if self.path.is_empty() { part.to_string() } else { format!("{}/{part}", self.path) };
        Site { path, ..*self }
    }
}

struct Walker<'c> {
    config: &'c TargetPropConfig,
    lr: f32,
    batch: usize,
    ctx: Ctx<'c>,
    pass: Pass,
}

impl Walker<'_> {
    /// An estimated target: actual + step, clamped to ±activation_clamp.
    fn clamped(&self, actual: &[f32], step: &[f32], scale: f32) -> Vec<f32> {
        let c = self.config.activation_clamp;
        actual.iter().zip(step).map(|(&a, &s)| (a + scale * s).clamp(-c, c)).collect()
    }

    /// Record a call's budget and gap; returns its learning rate (0 when gated).
    fn record(&mut self, site: &Site, kind: &'static str, actual: &[f32], target: &[f32]) -> f32 {
        let b = budget(actual, target);
        let gated = b < self.config.min_budget;
        self.pass.links.push(Link { coord: site.coord, path: site.path.clone(), kind, budget: b, gap: rms_gap(actual, target), gated });
        if gated {
            0.0
        } else {
            self.lr * (0.5 + 0.5 * b) * site.depth_scale
        }
    }

    /// Weight changes −rate·g/batch from a call's weight gradients `params` (summed over the
    /// batch by the layer's backward).
    fn change(&mut self, params: Vec<(Param, Vec<f32>)>, rate: f32) {
        if rate == 0.0 {
            return;
        }
        let factor = -rate / self.batch as f32;
        for (p, mut g) in params {
            g.iter_mut().for_each(|v| *v *= factor);
            self.pass.changes.push((p, g));
        }
    }

    /// Target mode: the call of `layer` on `x` (record `saved`) should move its output by
    /// `gap`. Leaves record a link and take a local step on ½‖y − target‖²; containers split
    /// the gap over their members.
    fn visit(&mut self, layer: &Arc<Layer>, x: Input, saved: &Saved, gap: Vec<f32>, site: &Site) -> Result<Back> {
        let target: Vec<f32> = saved.post.iter().zip(&gap).map(|(a, g)| a + g).collect();
        let rate = self.record(site, layer.type_name(), &saved.post, &target);
        match &**layer {
            Layer::Sequential(_) => self.sequential(x, saved, gap, site),
            Layer::Parallel(p) => self.parallel(p, x, saved, gap, site),
            Layer::Residual(_) => Ok(Back { skip: x.skip.map(|_| gap.clone()), input: Some(gap) }),
            leaf => {
                if rate > 0.0 && !leaf.params().is_empty() {
                    let grads = leaf.backward(x, saved, &negated(&gap), &self.ctx, false)?;
                    self.change(grads.params, rate);
                }
                Ok(Back { input: rules::push_back(leaf, &x, saved, &gap, self.config.weight_threshold, self.ctx.schedule)?, skip: None })
            }
        }
    }

    fn sequential(&mut self, x: Input, saved: &Saved, gap: Vec<f32>, site: &Site) -> Result<Back> {
        let views = Sequential::stage_views(&x, saved);
        let Some(last) = views.len().checked_sub(1) else { return Ok(Back { input: Some(gap), skip: None }) };
        let mut gaps: Vec<Option<Vec<f32>>> = (0..views.len()).map(|_| None).collect();
        gaps[last] = Some(gap);
        let mut input_gap = None;
        for k in (0..views.len()).rev() {
            let Some(mut g) = gaps[k].take() else { continue };
            let v = &views[k];
            if k != last {
                let target = self.clamped(&v.saved.post, &g, 1.0);
                g = target.iter().zip(&v.saved.post).map(|(t, a)| t - a).collect();
            }
            let back = self.visit(v.layer, v.input, v.saved, g, &site.child(&format!("stage {}", v.index)))?;
            // Stage k reads stage k − 1's output; its skip is stage k − 1's input.
            if let Some(b) = back.input {
                add_into(if k == 0 { &mut input_gap } else { &mut gaps[k - 1] }, b);
            }
            if let Some(s) = back.skip {
                match k {
                    0 => {}
                    1 => add_into(&mut input_gap, s),
                    _ => add_into(&mut gaps[k - 2], s),
                }
            }
        }
        Ok(Back { input: input_gap, skip: None })
    }

    /// Branch i's target: its output moved so that the combination moves by `gap` (its slice
    /// for concat, gap/n each for add, the whole gap for avg and filter). Branch input gaps add
    /// up (concat, add) or average (avg, filter); the filter gate gets its own target, the
    /// logit change that favours the branches whose outputs align with the gap.
    fn parallel(&mut self, p: &Parallel, x: Input, saved: &Saved, gap: Vec<f32>, site: &Site) -> Result<Back> {
        let views = Parallel::branch_views(saved);
        let n = views.branches.len();
        let input = Input { skip: None, ..x };
        let sizes: Vec<usize> = views.branches.iter().map(|(_, s)| s.post.len() / x.batch).collect();
        let total: usize = sizes.iter().sum();
        let mut input_gap: Option<Vec<f32>> = None;
        for (i, (layer, branch)) in views.branches.iter().enumerate() {
            let share: Vec<f32> = match p.combine {
                Combine::Concat | Combine::GridScatter => {
                    let offset: usize = sizes[..i].iter().sum();
                    (0..x.batch).flat_map(|b| gap[b * total + offset..b * total + offset + sizes[i]].iter().copied()).collect()
                }
                Combine::Add => gap.iter().map(|g| g / n as f32).collect(),
                Combine::Avg | Combine::Filter => gap.clone(),
            };
            let target = self.clamped(&branch.post, &share, 1.0);
            let g = target.iter().zip(&branch.post).map(|(t, a)| t - a).collect();
            let back = self.visit(layer, input, branch, g, &site.child(&format!("branch {i}")))?;
            if let Some(mut b) = back.input {
                if matches!(p.combine, Combine::Avg | Combine::Filter) {
                    b.iter_mut().for_each(|v| *v /= n as f32);
                }
                add_into(&mut input_gap, b);
            }
        }
        if let (Some(gate), Some((gate_saved, probs))) = (&p.gate, views.gate) {
            let rows = probs.len() / n;
            let size = gap.len() / rows;
            let mut logits = vec![0f32; rows * n];
            for r in 0..rows {
                let dy = &gap[r * size..(r + 1) * size];
                let align: Vec<f64> = views
                    .branches
                    .iter()
                    .map(|(_, s)| s.post[r * size..(r + 1) * size].iter().zip(dy).map(|(&v, &g)| v as f64 * g as f64).sum())
                    .collect();
                let pr = &probs[r * n..(r + 1) * n];
                let mean: f64 = pr.iter().zip(&align).map(|(&q, &a)| q as f64 * a).sum();
                for i in 0..n {
                    logits[r * n + i] = (pr[i] as f64 * (align[i] - mean)) as f32;
                }
            }
            let target = self.clamped(&gate_saved.post, &logits, 1.0);
            let g = target.iter().zip(&gate_saved.post).map(|(t, a)| t - a).collect();
            // The gate routes; only the branches pass targets on to the input.
            self.visit(gate, input, gate_saved, g, &site.child("gate"))?;
        }
        Ok(Back { input: input_gap, skip: None })
    }
}

fn deposit(flows: &mut [Option<Vec<f32>>], source: Option<Source>, gap: Option<Vec<f32>>) {
    if let (Some(Source::Step(j)), Some(g)) = (source, gap) {
        add_into(&mut flows[j], g);
    }
}

/// The pass over `nodes` (in traversal order; the last one's output is compared with
/// `target`) at learning rate `lr`. Chain-rule mode sends the descent direction back through
/// each layer's backward and targets lie `gradient_scale` along it; target mode pushes gaps
/// back through the weights (rules.rs). A node's rate is scaled by depth_scale_factor^k, k its
/// distance (in nodes) from the last one.
pub fn estimate(config: &TargetPropConfig, lr: f32, nodes: &[Node], target: &[f32], ctx: Ctx) -> Result<Pass> {
    let Some(last) = nodes.len().checked_sub(1) else { return Ok(Pass::default()) };
    let batch = nodes[last].input.batch;
    let mut walker = Walker { config, lr, batch, ctx, pass: Pass::default() };
    let mut flows: Vec<Option<Vec<f32>>> = (0..nodes.len()).map(|_| None).collect();
    flows[last] = Some(target.iter().zip(&nodes[last].saved.post).map(|(t, y)| t - y).collect());
    for (i, node) in nodes.iter().enumerate().rev() {
        let actual = &node.saved.post;
        let Some(flow) = flows[i].take() else {
            walker.pass.captures.push(Capture { coord: node.coord, shape: node.saved.shape.clone(), actual: actual.clone(), target: None });
            continue;
        };
        let site = Site { coord: node.coord, path: String::new(), depth_scale: config.depth_scale_factor.powi((last - i) as i32) };
        let node_target = if i == last {
            target.to_vec()
        } else {
            let step = if config.use_chain_rule { config.gradient_scale } else { 1.0 };
            walker.clamped(actual, &flow, step)
        };
        walker.pass.captures.push(Capture { coord: node.coord, shape: node.saved.shape.clone(), actual: actual.clone(), target: Some(node_target.clone()) });
        let back = if config.use_chain_rule {
            let rate = walker.record(&site, node.layer.type_name(), actual, &node_target);
            let wants_input = node.source != Source::Input;
            let grads = node.layer.backward(node.input, node.saved, &negated(&flow), &walker.ctx, wants_input)?;
            walker.change(grads.params, rate);
            let keep = |g: Vec<f32>| (!g.is_empty()).then(|| negated(&g));
            Back { input: keep(grads.input), skip: keep(grads.skip) }
        } else {
            let gap: Vec<f32> = node_target.iter().zip(actual).map(|(t, a)| t - a).collect();
            walker.visit(&node.layer, node.input, node.saved, gap, &site)?
        };
        deposit(&mut flows, Some(node.source), back.input);
        deposit(&mut flows, node.skip_source, back.skip);
    }
    walker.pass.captures.reverse();
    Ok(walker.pass)
}
