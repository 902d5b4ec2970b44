//! Parallel: every branch gets the same input; outputs are combined per sample (network.md
//! §5.1) by `add`, `avg`, `concat`, `grid_scatter` (the concatenation viewed as
//! [branches, …branch shape]) or `filter` (a gate layer's softmax over the branches weights them,
//! per sample — or per row when the gate gives each sample several rows of logits, e.g. one per
//! token: a token-level mixture of experts). Backward goes through every branch and, for
//! `filter`, through the gate too.

use super::member::{in_member, nested, Member};
use super::sequential::add_into;
use super::spec::{layer_from_value, layer_to_value, Build, Fields};
use super::{check_grad, Ctx, Grads, Input, Layer, LayerOps, Links, NoLinks, Param, Saved, Shape};
use crate::error::{Error, Result};
use serde_json::{json, Map, Value};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    Add,
    Avg,
    Concat,
    GridScatter,
    Filter,
}

impl Combine {
    pub fn parse(name: &str) -> Result<Combine> {
        match name.to_ascii_lowercase().as_str() {
            "add" | "sum" => Ok(Combine::Add),
            "avg" | "average" | "mean" => Ok(Combine::Avg),
            "" | "concat" => Ok(Combine::Concat),
            "grid_scatter" => Ok(Combine::GridScatter),
            "filter" => Ok(Combine::Filter),
            other => Err(Error::Spec(format!(
                "unknown combine_mode {other:?}; expected add, avg, concat, grid_scatter or filter"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Combine::Add => "add",
            Combine::Avg => "avg",
            Combine::Concat => "concat",
            Combine::GridScatter => "grid_scatter",
            Combine::Filter => "filter",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Parallel {
    pub branches: Vec<Member>,
    pub combine: Combine,
    /// `filter` only: maps the input to one logit per branch (per sample).
    pub gate: Option<Arc<Layer>>,
}

/// What the training forward keeps: each branch's layer and record, the gate's record and the
/// gate probabilities [gated rows × branches].
struct Runs {
    branches: Vec<(Arc<Layer>, Saved)>,
    gate: Option<(Saved, Vec<f32>)>,
}

impl Parallel {
    pub fn new(branches: Vec<Member>, combine: Combine, gate: Option<Arc<Layer>>) -> Result<Parallel> {
        if branches.is_empty() {
            return Err(Error::Spec("Parallel needs at least one branch (field \"parallel_branches\")".into()));
        }
        match (combine, &gate) {
            (Combine::Filter, None) => Err(Error::Spec("combine_mode \"filter\" needs a gate layer (field \"gate\")".into())),
            (c, Some(_)) if c != Combine::Filter => Err(Error::Spec(format!("field \"gate\" is only used by combine_mode \"filter\", not {:?}", c.name()))),
            _ => Ok(Parallel { branches, combine, gate }),
        }
    }

    pub fn from_spec(f: &Fields, build: Build) -> Result<Parallel> {
        let combine = Combine::parse(f.str("combine_mode")?).map_err(|e| f.err("combine_mode", e))?;
        let mut branches = Vec::new();
        for (i, entry) in f.list("parallel_branches")?.iter().enumerate() {
            branches.push(Member::from_value(entry, format!("{}: branch {i}", f.context), build.child(i))?);
        }
        let gate = match f.object("gate")? {
            Some(obj) => Some(Arc::new(layer_from_value(&Value::Object(obj.clone()), format!("{}: gate", f.context), build.child(usize::MAX - 1))?)),
            None => None,
        };
        Parallel::new(branches, combine, gate).map_err(|e| Error::Spec(format!("{}: {e}", f.context)))
    }

    fn branch_shapes(&self, input: &[usize], links: &dyn Links) -> Result<Vec<Shape>> {
        self.branches
            .iter()
            .enumerate()
            .map(|(i, b)| b.output_shape(input, links).map_err(|e| in_member("branch", i, b, e)))
            .collect()
    }

    /// The combined sample shape, checking that the branches fit the combine mode.
    fn combined_shape(&self, shapes: &[Shape]) -> Result<Shape> {
        let sizes: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
        match self.combine {
            Combine::Concat => Ok(vec![sizes.iter().sum()]),
            Combine::Add | Combine::Avg | Combine::Filter | Combine::GridScatter => {
                if sizes.iter().any(|&s| s != sizes[0]) {
                    let list: Vec<String> = shapes.iter().enumerate().map(|(i, s)| format!("branch {i}: {s:?}")).collect();
                    return Err(Error::Shape(format!(
                        "combine_mode {:?} needs branches of equal size, got {}",
                        self.combine.name(),
                        list.join(", ")
                    )));
                }
                Ok(match self.combine {
                    Combine::GridScatter => [&[shapes.len()][..], &shapes[0]].concat(),
                    _ => shapes[0].clone(),
                })
            }
        }
    }

    /// Check that the gate gives each sample R rows of one logit per branch and that each
    /// branch output splits into R equal rows.
    fn check_gate(&self, gate_shape: &[usize], branch_size: usize) -> Result<()> {
        let (n, logits) = (self.branches.len(), gate_shape.iter().product::<usize>());
        if logits == 0 || logits % n != 0 || branch_size % (logits / n) != 0 {
            return Err(Error::Shape(format!(
                "the filter gate must output one logit per branch ({n} per sample, or per row of the branch outputs), \
                 its output sample shape is {gate_shape:?} and the branches give {branch_size} values per sample"
            )));
        }
        Ok(())
    }

    /// Softmax over each row of `n` gate logits.
    fn gate_probabilities(&self, logits: &[f32]) -> Vec<f32> {
        let n = self.branches.len();
        let mut p = logits.to_vec();
        for row in p.chunks_exact_mut(n) {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let mut sum = 0f64;
            for v in row.iter_mut() {
                *v = (*v - max).exp();
                sum += *v as f64;
            }
            row.iter_mut().for_each(|v| *v = (*v as f64 / sum) as f32);
        }
        p
    }

    /// Combine branch outputs (each `batch × size_i`) into the container's output.
    fn combine_outputs(&self, outs: &[&[f32]], batch: usize, gate: Option<&[f32]>) -> Vec<f32> {
        let n = outs.len();
        match self.combine {
            Combine::Concat | Combine::GridScatter => {
                let mut y = Vec::with_capacity(outs.iter().map(|o| o.len()).sum());
                for b in 0..batch {
                    for o in outs {
                        let size = o.len() / batch;
                        y.extend_from_slice(&o[b * size..(b + 1) * size]);
                    }
                }
                y
            }
            Combine::Add | Combine::Avg => {
                let mut y = outs[0].to_vec();
                for o in &outs[1..] {
                    y.iter_mut().zip(*o).for_each(|(a, b)| *a += b);
                }
                if self.combine == Combine::Avg {
                    let inv = 1.0 / n as f32;
                    y.iter_mut().for_each(|v| *v *= inv);
                }
                y
            }
            Combine::Filter => {
                let p = gate.expect("filter runs with gate probabilities");
                let rows = p.len() / n;
                let size = outs[0].len() / rows;
                let mut y = vec![0f32; outs[0].len()];
                for (i, o) in outs.iter().enumerate() {
                    for b in 0..rows {
                        let w = p[b * n + i];
                        y[b * size..(b + 1) * size].iter_mut().zip(&o[b * size..(b + 1) * size]).for_each(|(a, &v)| *a += w * v);
                    }
                }
                y
            }
        }
    }

    /// The gradient each branch's output receives from `grad_out`.
    fn branch_grad(&self, i: usize, size: usize, sizes: &[usize], grad_out: &[f32], batch: usize, gate: Option<&[f32]>) -> Vec<f32> {
        let n = self.branches.len();
        match self.combine {
            Combine::Concat | Combine::GridScatter => {
                let (offset, total) = (sizes[..i].iter().sum::<usize>(), sizes.iter().sum::<usize>());
                (0..batch).flat_map(|b| grad_out[b * total + offset..b * total + offset + size].iter().copied()).collect()
            }
            Combine::Add => grad_out.to_vec(),
            Combine::Avg => grad_out.iter().map(|g| g / n as f32).collect(),
            Combine::Filter => {
                let p = gate.expect("filter runs with gate probabilities");
                let rows = p.len() / n;
                let size = grad_out.len() / rows;
                (0..rows).flat_map(|b| grad_out[b * size..(b + 1) * size].iter().map(move |&g| g * p[b * n + i])).collect()
            }
        }
    }
}

/// What a training forward of a Parallel ran: each branch's layer (links resolved) and record,
/// and for `filter` the gate's record with its probabilities [gated rows × branches].
pub struct BranchViews<'a> {
    pub branches: Vec<(&'a Arc<Layer>, &'a Saved)>,
    pub gate: Option<(&'a Saved, &'a [f32])>,
}

impl Parallel {
    /// The branches a training forward ran (target propagation splits targets over them).
    pub fn branch_views<'a>(saved: &'a Saved) -> BranchViews<'a> {
        let runs = saved.state::<Runs>();
        BranchViews {
            branches: runs.branches.iter().map(|(layer, s)| (layer, s)).collect(),
            gate: runs.gate.as_ref().map(|(s, p)| (s, &p[..])),
        }
    }
}

impl LayerOps for Parallel {
    fn type_name(&self) -> &'static str {
        "Parallel"
    }
    fn output_shape(&self, input: &[usize]) -> Result<Shape> {
        self.output_shape_in(input, &NoLinks)
    }
    fn output_shape_in(&self, input: &[usize], links: &dyn Links) -> Result<Shape> {
        let shapes = self.branch_shapes(input, links)?;
        if let Some(gate) = &self.gate {
            let gate_shape = gate.output_shape_in(input, links).map_err(|e| Error::Shape(format!("gate: {e}")))?;
            self.check_gate(&gate_shape, shapes[0].iter().product())?;
        }
        self.combined_shape(&shapes)
    }
    fn input_shape(&self) -> Option<Shape> {
        self.branches.iter().find_map(|b| match b {
            Member::Own(layer) => layer.input_shape(),
            Member::Link(_) => None,
        })
    }
    fn params(&self) -> Vec<Param> {
        let mut p: Vec<Param> = self.branches.iter().flat_map(Member::params).collect();
        p.extend(self.gate.iter().flat_map(|g| g.params()));
        p
    }
    fn morphable(&self) -> Vec<Param> {
        let mut p: Vec<Param> = self.branches.iter().flat_map(Member::morphable).collect();
        p.extend(self.gate.iter().flat_map(|g| g.morphable()));
        p
    }
    fn forward_train(&self, x: Input, ctx: &Ctx) -> Result<Saved> {
        x.check_len()?;
        let inner = nested(ctx)?;
        let shapes = self.branch_shapes(x.shape, ctx.links)?;
        let shape = self.combined_shape(&shapes)?;
        let input = Input { skip: None, ..x };
        let mut branches = Vec::with_capacity(self.branches.len());
        for (i, member) in self.branches.iter().enumerate() {
            let layer = member.resolve(ctx.links).map_err(|e| in_member("branch", i, member, e))?;
            let saved = layer.forward_train(input, &inner).map_err(|e| in_member("branch", i, member, e))?;
            branches.push((layer, saved));
        }
        let gate = match &self.gate {
            Some(g) => {
                let saved = g.forward_train(input, &inner).map_err(|e| Error::Shape(format!("gate: {e}")))?;
                self.check_gate(&saved.shape, shapes[0].iter().product())?;
                let p = self.gate_probabilities(&saved.post);
                Some((saved, p))
            }
            None => None,
        };
        let outs: Vec<&[f32]> = branches.iter().map(|(_, s)| &s.post[..]).collect();
        let post = self.combine_outputs(&outs, x.batch, gate.as_ref().map(|(_, p)| &p[..]));
        Ok(Saved { post, shape, state: Box::new(Runs { branches, gate }) })
    }
    fn backward(&self, x: Input, saved: &Saved, grad_out: &[f32], ctx: &Ctx, need_input: bool) -> Result<Grads> {
        check_grad("Parallel", grad_out, saved)?;
        let inner = nested(ctx)?;
        let runs = saved.state::<Runs>();
        let input = Input { skip: None, ..x };
        let probs = runs.gate.as_ref().map(|(_, p)| &p[..]);
        let sizes: Vec<usize> = runs.branches.iter().map(|(_, s)| s.post.len() / x.batch).collect();
        let mut dx: Option<Vec<f32>> = None;
        let mut params = Vec::new();
        for (i, (layer, branch)) in runs.branches.iter().enumerate() {
            let g = self.branch_grad(i, sizes[i], &sizes, grad_out, x.batch, probs);
            let grads = layer.backward(input, branch, &g, &inner, need_input).map_err(|e| in_member("branch", i, &self.branches[i], e))?;
            params.extend(grads.params);
            if need_input {
                add_into(&mut dx, grads.input);
            }
        }
        if let (Some(gate), Some((gate_saved, p))) = (&self.gate, &runs.gate) {
            // d(logit) = p ⊙ (dp − Σ p·dp), with dp_i = ⟨grad_out_r, branch_i(x)_r⟩ per gated row r.
            let n = self.branches.len();
            let rows = p.len() / n;
            let size = grad_out.len() / rows;
            let mut dlogits = vec![0f32; rows * n];
            for b in 0..rows {
                let dy = &grad_out[b * size..(b + 1) * size];
                let dp: Vec<f64> = runs
                    .branches
                    .iter()
                    .map(|(_, s)| s.post[b * size..(b + 1) * size].iter().zip(dy).map(|(&v, &g)| v as f64 * g as f64).sum())
                    .collect();
                let pb = &p[b * n..(b + 1) * n];
                let mean: f64 = pb.iter().zip(&dp).map(|(&pi, &d)| pi as f64 * d).sum();
                for i in 0..n {
                    dlogits[b * n + i] = (pb[i] as f64 * (dp[i] - mean)) as f32;
                }
            }
            let grads = gate.backward(input, gate_saved, &dlogits, &inner, need_input).map_err(|e| Error::Shape(format!("gate: {e}")))?;
            params.extend(grads.params);
            if need_input {
                add_into(&mut dx, grads.input);
            }
        }
        Ok(Grads::new(if need_input { dx.unwrap_or_default() } else { Vec::new() }, params))
    }
    fn deep_clone(&self) -> Layer {
        Layer::Parallel(Parallel {
            branches: self.branches.iter().map(Member::deep_clone).collect(),
            combine: self.combine,
            gate: self.gate.as_ref().map(|g| Arc::new(g.deep_clone())),
        })
    }
    fn spec(&self) -> Map<String, Value> {
        let mut o = Map::new();
        o.insert("type".into(), json!("Parallel"));
        o.insert("combine_mode".into(), json!(self.combine.name()));
        o.insert("parallel_branches".into(), Value::Array(self.branches.iter().map(|b| Value::Object(b.to_value())).collect()));
        if let Some(g) = &self.gate {
            o.insert("gate".into(), Value::Object(layer_to_value(g)));
        }
        o
    }
}
