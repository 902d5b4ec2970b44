//! Softmax layer (layers.md §12), all ten variants: normalised per last-axis row of each sample
//! (never across the batch) or per grid group, at temperature T, with exact backward passes.

use super::spec::{Build, Fields};
use super::{check_grad, Ctx, Device, Grads, Input, Layer, LayerOps, Param, Saved, Shape};
use crate::error::{Error, Result};
use crate::gpu::SoftmaxMap;
use crate::kernels::softmax::{entmax, entmax_vjp, softmax, softmax_vjp, sparsemax};
use crate::kernels::Schedule;
use crate::rng::Rng;
use rayon::prelude::*;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};

/// The variants, in the order of their build-JSON integer (`softmax_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Standard,
    Grid,
    Hierarchical,
    Temperature,
    Gumbel,
    Masked,
    Sparse,
    Adaptive,
    Mixture,
    Entmax,
}

impl Kind {
    const ALL: [Kind; 10] = [
        Kind::Standard,
        Kind::Grid,
        Kind::Hierarchical,
        Kind::Temperature,
        Kind::Gumbel,
        Kind::Masked,
        Kind::Sparse,
        Kind::Adaptive,
        Kind::Mixture,
        Kind::Entmax,
    ];

    /// The reference's String() name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Standard => "Standard",
            Kind::Grid => "Grid",
            Kind::Hierarchical => "Hierarchical",
            Kind::Temperature => "Temperature",
            Kind::Gumbel => "Gumbel",
            Kind::Masked => "Masked",
            Kind::Sparse => "Sparse",
            Kind::Adaptive => "Adaptive",
            Kind::Mixture => "Mixture",
            Kind::Entmax => "Entmax",
        }
    }

    fn index(self) -> usize {
        Kind::ALL.iter().position(|&k| k == self).expect("every kind is listed")
    }

    /// `softmax_type`: the integer of the build JSON or the name (any case; "sparsemax" too).
    fn parse(value: &Value) -> std::result::Result<Kind, String> {
        let expected = "expected 0..9 or standard, grid, hierarchical, temperature, gumbel, masked, sparse, adaptive, mixture, entmax";
        match value {
            Value::Number(n) => n.as_u64().and_then(|i| Kind::ALL.get(i as usize).copied()).ok_or_else(|| format!("is {n}; {expected}")),
            Value::String(s) => {
                let lower = s.to_ascii_lowercase();
                let name = if lower == "sparsemax" { "sparse" } else { lower.as_str() };
                Kind::ALL.iter().copied().find(|k| k.name().eq_ignore_ascii_case(name)).ok_or_else(|| format!("is {s:?}; {expected}"))
            }
            other => Err(format!("must be an integer or a name, got {other}")),
        }
    }
}

/// Gumbel forwards so far: each forward draws the noise of the next count (a deep copy goes on
/// from the same count, so it repeats the original's sequence).
#[derive(Debug, Default)]
struct Draws(AtomicU64);

impl Clone for Draws {
    fn clone(&self) -> Draws {
        Draws(AtomicU64::new(self.0.load(Ordering::Relaxed)))
    }
}

/// Adaptive: the per-row temperature never falls below T·this (constant rows stay finite).
const MIN_SPREAD: f64 = 1e-6;
/// Mixture: the temperature factors of its three equally weighted components (shaders/softmax.wgsl
/// mixes the same three).
const MIXTURE_FACTORS: [f64; 3] = [0.5, 1.0, 2.0];
/// Below this many values a pass runs on one thread (waking the pool costs more).
const PARALLEL_MIN_VALUES: usize = 1 << 14;

#[derive(Debug, Clone)]
pub struct Softmax {
    pub kind: Kind,
    /// T > 0 (the build JSON's 0 means 1); logits are divided by it in every variant.
    pub temperature: f64,
    pub rows: usize,
    pub cols: usize,
    pub hierarchy_levels: Vec<usize>,
    pub mask: Vec<bool>,
    /// α in [1, 2] (the build JSON's 0 means 1.5).
    pub entmax_alpha: f64,
    /// Gumbel noise seed.
    pub seed: u64,
    draws: Draws,
}

/// Per-task scratch vectors (f64), reused across the domains one task handles.
#[derive(Default)]
struct Scratch {
    /// The domain's input (plus its Gumbel noise).
    x: Vec<f64>,
    /// The logits the variant normalises: x / T (adaptive: x / (T·σ)).
    z: Vec<f64>,
    p: Vec<f64>,
    dy: Vec<f64>,
    dz: Vec<f64>,
    part: Vec<f64>,
    tmp: Vec<f64>,
    sorted: Vec<f64>,
}

/// Fill `dst` with `src` widened to f64.
fn widen(dst: &mut Vec<f64>, src: &[f32]) {
    dst.clear();
    dst.extend(src.iter().map(|&v| v as f64));
}

impl Softmax {
    pub fn from_spec(f: &Fields, build: Build) -> Result<Softmax> {
        let kind = match f.obj.get("softmax_type").filter(|v| !v.is_null()) {
            None => Kind::Standard,
            Some(v) => Kind::parse(v).map_err(|msg| f.err("softmax_type", msg))?,
        };
        let temperature = match f.f64("temperature", 0.0)? {
            0.0 => 1.0,
            t if t > 0.0 => t,
            t => return Err(f.err("temperature", format!("must be > 0 (0 means 1), got {t}"))),
        };
        let entmax_alpha = match f.f64("entmax_alpha", 0.0)? {
            0.0 => 1.5,
            a if (1.0..=2.0).contains(&a) => a,
            a => return Err(f.err("entmax_alpha", format!("must be in [1, 2] (0 means 1.5), got {a}"))),
        };
        let hierarchy_levels = f
            .list("hierarchy_levels")?
            .iter()
            .map(|v| v.as_u64().filter(|&n| n > 0).map(|n| n as usize).ok_or_else(|| f.err("hierarchy_levels", format!("must hold positive integers, got {v}"))))
            .collect::<Result<Vec<usize>>>()?;
        let mask = f
            .list("mask")?
            .iter()
            .map(|v| v.as_bool().ok_or_else(|| f.err("mask", format!("must hold true/false values, got {v}"))))
            .collect::<Result<Vec<bool>>>()?;
        if !mask.is_empty() && !mask.contains(&true) {
            return Err(f.err("mask", "excludes every position; keep at least one"));
        }
        Ok(Softmax {
            kind,
            temperature,
            rows: f.usize("softmax_rows", 0)?,
            cols: f.usize("softmax_cols", 0)?,
            hierarchy_levels,
            mask,
            entmax_alpha,
            // The seed is written back to the spec, whose integers are read as i64.
            seed: build.seed & i64::MAX as u64,
            draws: Draws::default(),
        })
    }

    /// Gumbel forwards run so far (the next one draws noise number `gumbel_draws()`).
    pub fn gumbel_draws(&self) -> u64 {
        self.draws.0.load(Ordering::Relaxed)
    }

    /// Continue a Gumbel noise sequence from draw `count` (a reloaded layer goes on where it was).
    pub fn set_gumbel_draws(&self, count: u64) {
        self.draws.0.store(count, Ordering::Relaxed);
    }

    /// Values per normalised vector ("domain") of a sample of `shape`; consecutive domains tile
    /// the batch. Grid groups run over the sample's values, every other variant over its rows.
    fn domain_len(&self, shape: &[usize]) -> Result<usize> {
        let sample: usize = shape.iter().product();
        let row = shape.last().copied().unwrap_or(1);
        if sample == 0 {
            return Err(Error::Shape(format!("Softmax needs at least one value per row, got sample shape {shape:?}")));
        }
        match self.kind {
            Kind::Grid if self.rows > 0 || self.cols > 0 => self.group_len(sample, "sample"),
            Kind::Hierarchical => {
                self.hierarchy_group(row)?;
                Ok(row)
            }
            Kind::Masked if !self.mask.is_empty() && self.mask.len() != row => Err(Error::Shape(format!(
                "Softmax mask has {} positions but the rows have {row} (sample shape {shape:?})",
                self.mask.len()
            ))),
            _ => Ok(row),
        }
    }

    /// Values per group when `len` values are split by softmax_rows × softmax_cols (cols values
    /// per group; with only rows, len/rows).
    fn group_len(&self, len: usize, what: &str) -> Result<usize> {
        let (rows, cols) = (self.rows, self.cols);
        let group = if cols > 0 { cols } else { len / rows.max(1) };
        let fits = group > 0 && len.is_multiple_of(group) && (rows == 0 || cols == 0 || rows.checked_mul(cols) == Some(len));
        if !fits {
            return Err(Error::Shape(format!(
                "Softmax softmax_rows {rows} × softmax_cols {cols} does not split a {what} of {len} values"
            )));
        }
        Ok(group)
    }

    /// Hierarchical: values per group of a row of `row` values (the last hierarchy level, else
    /// from softmax_rows/cols, else the whole row).
    fn hierarchy_group(&self, row: usize) -> Result<usize> {
        match self.hierarchy_levels.last() {
            Some(&m) if row.is_multiple_of(m) => Ok(m),
            Some(&m) => Err(Error::Shape(format!("Softmax hierarchy level {m} does not divide the rows of {row} values"))),
            None if self.rows > 0 || self.cols > 0 => self.group_len(row, "row"),
            None => Ok(row),
        }
    }

    /// The noise a Gumbel forward adds to domain `d`: −log(−log u), u uniform (≥ 1e−10), from a
    /// stream of its own (seed, draw, domain), so any split of the work draws the same values.
    fn gumbel_noise(&self, draw: u64, d: usize, out: &mut [f32]) {
        let stream = self.seed ^ draw.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ (d as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
        let mut rng = Rng::new(stream);
        for v in out {
            *v = -(-rng.next_f64().max(1e-10).ln()).ln() as f32;
        }
    }

    /// s.z and s.p of one domain from its input in s.x.
    fn map(&self, s: &mut Scratch) {
        let Scratch { x, z, p, part, tmp, sorted, .. } = s;
        let scale = match self.kind {
            Kind::Adaptive => self.temperature * spread(x).1,
            _ => self.temperature,
        };
        z.clear();
        z.extend(x.iter().map(|&v| v / scale));
        p.resize(z.len(), 0.0);
        match self.kind {
            Kind::Sparse => sparsemax(z, p, sorted),
            Kind::Entmax => entmax(z, self.entmax_alpha, p, sorted),
            Kind::Masked if !self.mask.is_empty() => {
                part.clear();
                part.extend(z.iter().zip(&self.mask).filter(|(_, &keep)| keep).map(|(&v, _)| v));
                tmp.resize(part.len(), 0.0);
                softmax(part, tmp);
                let mut kept = tmp.iter();
                for (pi, &keep) in p.iter_mut().zip(&self.mask) {
                    *pi = if keep { *kept.next().expect("one value per kept position") } else { 0.0 };
                }
            }
            Kind::Mixture => {
                p.iter_mut().for_each(|v| *v = 0.0);
                part.resize(z.len(), 0.0);
                for factor in MIXTURE_FACTORS {
                    tmp.clear();
                    tmp.extend(z.iter().map(|&v| v / factor));
                    softmax(tmp, part);
                    p.iter_mut().zip(part.iter()).for_each(|(a, &b)| *a += b / MIXTURE_FACTORS.len() as f64);
                }
            }
            Kind::Hierarchical => hierarchical(z, self.hierarchy_group(z.len()).expect("checked by output_shape"), p, part),
            _ => softmax(z, p),
        }
    }

    /// s.dz = dL/dx of one domain from its input in s.x and upstream gradient in s.dy (the
    /// forward is recomputed in f64).
    fn vjp(&self, s: &mut Scratch) {
        self.map(s);
        let Scratch { x, z, p, dy, dz, part, tmp, .. } = s;
        dz.resize(p.len(), 0.0);
        // dL/dz first.
        match self.kind {
            Kind::Sparse => entmax_vjp(p, 2.0, dy, dz),
            Kind::Entmax => entmax_vjp(p, self.entmax_alpha, dy, dz),
            Kind::Mixture => {
                dz.iter_mut().for_each(|v| *v = 0.0);
                part.resize(z.len(), 0.0);
                for factor in MIXTURE_FACTORS {
                    tmp.clear();
                    tmp.extend(z.iter().map(|&v| v / factor));
                    softmax(tmp, part);
                    softmax_vjp(part, dy, tmp);
                    let weight = 1.0 / (factor * MIXTURE_FACTORS.len() as f64);
                    dz.iter_mut().zip(tmp.iter()).for_each(|(a, &b)| *a += b * weight);
                }
            }
            Kind::Hierarchical => hierarchical_vjp(z, self.hierarchy_group(z.len()).expect("checked by output_shape"), dy, dz, part),
            // Masked positions have p = 0, so they get none and do not enter ⟨dy, p⟩.
            _ => softmax_vjp(p, dy, dz),
        }
        // Then through z = x / T (adaptive: x / (T·σ(x))).
        let t = self.temperature;
        match self.kind {
            Kind::Adaptive => adaptive_chain(x, t, dz),
            _ => dz.iter_mut().for_each(|v| *v /= t),
        }
    }

    /// Run `each(domain, scratch, its output values)` over the domains of a pass, serially or
    /// spread over the rayon pool (domains are independent: the split never changes a result).
    fn for_each_domain(&self, schedule: Schedule, len: usize, out: &mut [f32], each: impl Fn(usize, &mut Scratch, &mut [f32]) + Sync + Send) {
        if schedule == Schedule::Parallel && out.len() >= PARALLEL_MIN_VALUES {
            out.par_chunks_mut(len).enumerate().for_each_init(Scratch::default, |s, (d, o)| each(d, s, o));
        } else {
            let mut s = Scratch::default();
            out.chunks_mut(len).enumerate().for_each(|(d, o)| each(d, &mut s, o));
        }
    }

    /// The noise of this forward (a fresh draw) for the Gumbel variant, empty for the others.
    fn draw_noise(&self, len: usize, values: usize, schedule: Schedule) -> Vec<f32> {
        if self.kind != Kind::Gumbel {
            return Vec::new();
        }
        let draw = self.draws.0.fetch_add(1, Ordering::Relaxed);
        let mut noise = vec![0f32; values];
        self.for_each_domain(schedule, len, &mut noise, |d, _, out| self.gumbel_noise(draw, d, out));
        noise
    }

    /// The forward pass; returns (p, the Gumbel noise it added: empty for other variants).
    fn run(&self, x: &Input, schedule: Schedule) -> Result<(Vec<f32>, Vec<f32>)> {
        x.check_len()?;
        let len = self.domain_len(x.shape)?;
        let noise = self.draw_noise(len, x.data.len(), schedule);
        let mut out = vec![0f32; x.data.len()];
        self.for_each_domain(schedule, len, &mut out, |d, s, p| {
            self.load(s, d, len, x.data, &noise);
            self.map(s);
            p.iter_mut().zip(&s.p).for_each(|(o, &v)| *o = v as f32);
        });
        Ok((out, noise))
    }

    /// The forward on the GPU: the same domains, noise drawn here as `run` draws it, and each
    /// variant's map (shaders/softmax.wgsl, in f32).
    fn run_gpu(&self, x: &Input, schedule: Schedule) -> Result<Vec<f32>> {
        x.check_len()?;
        let len = self.domain_len(x.shape)?;
        let map = match self.kind {
            Kind::Sparse => SoftmaxMap::Sparsemax,
            Kind::Entmax if self.entmax_alpha == 1.0 => SoftmaxMap::Softmax { mask: None },
            Kind::Entmax if self.entmax_alpha == 2.0 => SoftmaxMap::Sparsemax,
            Kind::Entmax => SoftmaxMap::Entmax { alpha: self.entmax_alpha },
            Kind::Masked if !self.mask.is_empty() => SoftmaxMap::Softmax { mask: Some(&self.mask) },
            Kind::Adaptive => SoftmaxMap::Adaptive,
            Kind::Mixture => SoftmaxMap::Mixture,
            Kind::Hierarchical => SoftmaxMap::Hierarchical { group: self.hierarchy_group(len)? },
            Kind::Standard | Kind::Grid | Kind::Temperature | Kind::Gumbel | Kind::Masked => SoftmaxMap::Softmax { mask: None },
        };
        let noise = self.draw_noise(len, x.data.len(), schedule);
        let noise = (!noise.is_empty()).then_some(noise.as_slice());
        crate::gpu::softmax_forward(x.data, len, self.temperature, map, noise)
    }

    /// s.x = domain d of `data`, plus its Gumbel noise when there is any.
    fn load(&self, s: &mut Scratch, d: usize, len: usize, data: &[f32], noise: &[f32]) {
        let range = d * len..(d + 1) * len;
        widen(&mut s.x, &data[range.clone()]);
        if !noise.is_empty() {
            s.x.iter_mut().zip(&noise[range]).for_each(|(v, &g)| *v += g as f64);
        }
    }
}

/// (std(x), σ = max(std(x), 1e−6)): the population standard deviation and the adaptive
/// temperature factor.
fn spread(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let std = (x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
    (std, std.max(MIN_SPREAD))
}

/// Adaptive: turn dL/dz into dL/dx for z = x/(T·σ), σ = max(std(x), 1e−6):
/// dx_k = dz_k/(Tσ) − ⟨dz, x⟩/(Tσ²)·∂σ/∂x_k with ∂σ/∂x_k = (x_k − mean)/(nσ) while std > 1e−6
/// (0 on the clamp).
fn adaptive_chain(x: &[f64], t: f64, dz: &mut [f64]) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let (std, sigma) = spread(x);
    // dz sums to 0 (a softmax VJP), so centring x in ⟨dz, x⟩ changes nothing but the rounding.
    let dot: f64 = dz.iter().zip(x).map(|(g, v)| g * (v - mean)).sum();
    let through_sigma = if std > MIN_SPREAD { dot / (t * sigma * sigma * n * sigma) } else { 0.0 };
    for (d, &v) in dz.iter_mut().zip(x) {
        *d = *d / (t * sigma) - through_sigma * (v - mean);
    }
}

/// Two-level hierarchical softmax of z in groups of m: p = q_g · r_gi with q = softmax over
/// groups of the group means, r_g = softmax within group g.
fn hierarchical(z: &[f64], m: usize, p: &mut [f64], q: &mut Vec<f64>) {
    group_probabilities(z, m, q);
    for ((zg, pg), &qg) in z.chunks(m).zip(p.chunks_mut(m)).zip(q.iter()) {
        softmax(zg, pg);
        pg.iter_mut().for_each(|v| *v *= qg);
    }
}

/// q = softmax of the group means of z (groups of m).
fn group_probabilities(z: &[f64], m: usize, q: &mut Vec<f64>) {
    let means: Vec<f64> = z.chunks(m).map(|g| g.iter().sum::<f64>() / m as f64).collect();
    q.resize(means.len(), 0.0);
    softmax(&means, q);
}

/// Hierarchical VJP: within group g, r_g receives q_g·dy_g (softmax VJP); q receives
/// ⟨dy_g, r_g⟩ per group (softmax VJP), and each group mean passes 1/m of it to its members.
fn hierarchical_vjp(z: &[f64], m: usize, dy: &[f64], dz: &mut [f64], q: &mut Vec<f64>) {
    group_probabilities(z, m, q);
    let (mut r, mut scaled) = (vec![0.0; m], vec![0.0; m]);
    let mut dq = vec![0.0; q.len()];
    for (g, ((zg, dyg), dzg)) in z.chunks(m).zip(dy.chunks(m)).zip(dz.chunks_mut(m)).enumerate() {
        softmax(zg, &mut r);
        dq[g] = dyg.iter().zip(&r).map(|(a, b)| a * b).sum();
        scaled.iter_mut().zip(dyg).for_each(|(s, &d)| *s = d * q[g]);
        softmax_vjp(&r, &scaled, dzg);
    }
    let mut ds = vec![0.0; q.len()];
    softmax_vjp(q, &dq, &mut ds);
    for (dzg, &dsg) in dz.chunks_mut(m).zip(&ds) {
        dzg.iter_mut().for_each(|v| *v += dsg / m as f64);
    }
}

impl LayerOps for Softmax {
    fn type_name(&self) -> &'static str {
        "Softmax"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Shape> {
        self.domain_len(input)?;
        Ok(input.to_vec())
    }

    fn input_shape(&self) -> Option<Shape> {
        None
    }

    fn params(&self) -> Vec<Param> {
        Vec::new()
    }

    fn morphable(&self) -> Vec<Param> {
        Vec::new()
    }

    fn infer(&self, x: Input, ctx: &Ctx) -> Result<Vec<f32>> {
        if ctx.device == Device::Gpu {
            return self.run_gpu(&x, ctx.schedule);
        }
        Ok(self.run(&x, ctx.schedule)?.0)
    }

    fn forward_train(&self, x: Input, ctx: &Ctx) -> Result<Saved> {
        let (post, noise) = self.run(&x, ctx.schedule)?;
        Ok(Saved { post, shape: x.shape.to_vec(), state: Box::new(noise) })
    }

    fn backward(&self, x: Input, saved: &Saved, grad_out: &[f32], ctx: &Ctx, need_input: bool) -> Result<Grads> {
        check_grad("Softmax", grad_out, saved)?;
        if !need_input {
            return Ok(Grads::new(Vec::new(), Vec::new()));
        }
        x.check_len()?;
        let len = self.domain_len(x.shape)?;
        let noise = saved.state::<Vec<f32>>();
        let mut dx = vec![0f32; x.data.len()];
        self.for_each_domain(ctx.schedule, len, &mut dx, |d, s, out| {
            self.load(s, d, len, x.data, noise);
            widen(&mut s.dy, &grad_out[d * len..(d + 1) * len]);
            self.vjp(s);
            out.iter_mut().zip(&s.dz).for_each(|(o, &v)| *o = v as f32);
        });
        Ok(Grads::new(dx, Vec::new()))
    }

    fn deep_clone(&self) -> Layer {
        Layer::Softmax(self.clone())
    }

    fn spec(&self) -> Map<String, Value> {
        let mut o = Map::new();
        o.insert("type".into(), json!("Softmax"));
        o.insert("softmax_type".into(), json!(self.kind.index()));
        if self.temperature != 1.0 {
            o.insert("temperature".into(), json!(self.temperature));
        }
        for (key, value) in [("softmax_rows", self.rows), ("softmax_cols", self.cols)] {
            if value > 0 {
                o.insert(key.into(), json!(value));
            }
        }
        if !self.hierarchy_levels.is_empty() {
            o.insert("hierarchy_levels".into(), json!(self.hierarchy_levels));
        }
        if !self.mask.is_empty() {
            o.insert("mask".into(), json!(self.mask));
        }
        if self.entmax_alpha != 1.5 {
            o.insert("entmax_alpha".into(), json!(self.entmax_alpha));
        }
        if self.kind == Kind::Gumbel {
            o.insert("seed".into(), json!(self.seed));
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::layers::spec::Fields;

    fn layer(kind: usize) -> Softmax {
        let mask: Vec<bool> = (0..512).map(|i| i % 3 != 1).collect();
        let spec = json!({"softmax_type": kind, "temperature": 0.7, "softmax_cols": 128, "hierarchy_levels": [8, 64],
                          "mask": mask, "entmax_alpha": if kind == 9 { 1.3 } else { 0.0 }});
        Softmax::from_spec(&Fields::new(spec.as_object().unwrap(), "test"), Build { seed: 3, codec: Codec::Standard }).unwrap()
    }

    /// (output, input gradient) of a fresh copy (same Gumbel draw every time).
    fn passes(layer: &Softmax, x: &[f32], g: &[f32], schedule: Schedule) -> (Vec<f32>, Vec<f32>) {
        let layer = layer.clone();
        let ctx = Ctx::standalone(schedule);
        let input = Input::new(x, 64, &[512]);
        let saved = layer.forward_train(input, &ctx).unwrap();
        let dx = layer.backward(input, &saved, g, &ctx, true).unwrap().input;
        (saved.post, dx)
    }

    #[test]
    fn every_variant_is_bitwise_identical_across_schedules_and_thread_counts() {
        let mut rng = Rng::new(5);
        let x: Vec<f32> = (0..64 * 512).map(|_| rng.uniform(3.0)).collect();
        let g: Vec<f32> = (0..64 * 512).map(|_| rng.uniform(1.0)).collect();
        for kind in 0..10 {
            let softmax = layer(kind);
            let tiled = passes(&softmax, &x, &g, Schedule::Tiled);
            assert!(tiled.0.iter().all(|v| v.is_finite()) && tiled.1.iter().all(|v| v.is_finite()));
            assert_eq!(passes(&softmax, &x, &g, Schedule::Normal), tiled, "{:?}", softmax.kind);
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                assert!(pool.install(|| passes(&softmax, &x, &g, Schedule::Parallel)) == tiled, "{:?} with {threads} threads", softmax.kind);
            }
        }
    }

    #[test]
    fn gumbel_draws_fresh_noise_each_forward_and_a_copy_repeats_it() {
        let softmax = layer(4);
        let x = vec![0.5f32; 512];
        let ctx = Ctx::standalone(Schedule::Tiled);
        let copy = softmax.clone();
        let first = softmax.infer(Input::new(&x, 1, &[512]), &ctx).unwrap();
        let second = softmax.infer(Input::new(&x, 1, &[512]), &ctx).unwrap();
        assert_ne!(first, second);
        assert_eq!(copy.infer(Input::new(&x, 1, &[512]), &ctx).unwrap(), first);
    }
}
