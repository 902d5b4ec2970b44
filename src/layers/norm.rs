//! RMSNorm and LayerNorm over the last axis (layers.md §5, quirk 18 fixed: the axis is the
//! layer's size, the variance is two-pass E[(x−μ)²], epsilon is a field for both). The gain γ
//! and LayerNorm's shift β are the layer's weights: morphable, decoded from the active packed
//! version on every call.

use super::spec::{Build, Fields};
use super::{check_grad, copy_param, new_param, Ctx, Device, Grads, Input, Layer, LayerOps, Param, Saved, Shape};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::kernels::rows::{row_blocks, sum_partials};
use crate::kernels::Schedule;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// y = x / sqrt(mean(x²) + ε) · γ
    Rms,
    /// y = (x − μ) / sqrt(E[(x − μ)²] + ε) · γ + β
    Layer,
}

impl NormKind {
    pub fn name(self) -> &'static str {
        match self {
            NormKind::Rms => "RMSNorm",
            NormKind::Layer => "LayerNorm",
        }
    }
    /// The usual defaults: 1e-6 for RMSNorm (the reference's, and Llama's), 1e-5 for LayerNorm
    /// (the reference's fixed value, and PyTorch's).
    pub fn default_epsilon(self) -> f64 {
        match self {
            NormKind::Rms => 1e-6,
            NormKind::Layer => 1e-5,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Norm {
    pub kind: NormKind,
    pub size: usize,
    pub epsilon: f64,
    pub gain: Param,
    /// LayerNorm's β (None for RMSNorm).
    pub shift: Option<Param>,
}

/// Per row: the mean subtracted (0 for RMSNorm) and 1/sqrt(variance + ε).
type RowStats = [f64; 2];

/// A small weight vector decoded from its active version.
fn decode(p: &Param) -> Result<Vec<f32>> {
    let store = p.read().unwrap();
    let view = store.view()?;
    let mut out = vec![0f32; view.len()];
    view.decode_into(0, &mut out);
    Ok(out)
}

impl Norm {
    /// γ = 1 (and β = 0), as PyTorch initialises them.
    pub fn new(kind: NormKind, size: usize, epsilon: f64, codec: Codec) -> Result<Norm> {
        if size == 0 {
            return Err(Error::Spec(format!("{} needs a size > 0", kind.name())));
        }
        let gain = new_param(vec![1.0; size], vec![size], codec)?;
        let shift = match kind {
            NormKind::Layer => Some(new_param(vec![0.0; size], vec![size], codec)?),
            NormKind::Rms => None,
        };
        Ok(Norm { kind, size, epsilon, gain, shift })
    }

    /// The size is `input_height` (the reference sizes the weights by it), or `output_height`
    /// when only that is given.
    pub fn from_spec(f: &Fields, build: Build, kind: NormKind) -> Result<Norm> {
        let name = kind.name();
        let size = match (f.usize("input_height", 0)?, f.usize("output_height", 0)?) {
            (0, 0) => {
                return Err(f.err("input_height", format!("must be > 0 for {name} (the size of the normalised last axis)")))
            }
            (0, n) | (n, 0) => n,
            (a, b) if a == b => a,
            (a, b) => {
                return Err(f.err("output_height", format!("is {b} but input_height is {a}; {name} keeps the size of the last axis")))
            }
        };
        let epsilon = f.f64("epsilon", kind.default_epsilon())?;
        if epsilon <= 0.0 {
            return Err(f.err("epsilon", format!("must be > 0 for {name}, got {epsilon}")));
        }
        Norm::new(kind, size, epsilon, build.codec)
    }

    /// Rows of the normalised axis in a batch.
    fn rows(&self, x: &Input) -> Result<usize> {
        x.check_len()?;
        self.output_shape(x.shape)?;
        Ok(x.data.len() / self.size)
    }

    /// γ and β as the layer computes with them (β = 0 for RMSNorm).
    fn decoded(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let shift = match &self.shift {
            Some(p) => decode(p)?,
            None => vec![0.0; self.size],
        };
        Ok((decode(&self.gain)?, shift))
    }

    fn row_stats(&self, x: &[f32]) -> RowStats {
        let n = x.len() as f64;
        let mean = match self.kind {
            NormKind::Layer => lane_sum(x, |v| v) / n,
            NormKind::Rms => 0.0,
        };
        let m = mean as f32;
        let var = lane_sum(x, |v| (v - m) * (v - m)) / n;
        [mean, 1.0 / (var + self.epsilon).sqrt()]
    }

    /// y and each row's statistics.
    fn normalize(&self, x: &[f32], schedule: Schedule) -> Result<(Vec<f32>, Vec<RowStats>)> {
        let n = self.size;
        let (gain, shift) = self.decoded()?;
        let mut y = vec![0f32; x.len()];
        let stats = row_blocks(schedule, &mut y, n, n, |rows, out| {
            rows.zip(out.chunks_exact_mut(n))
                .map(|(r, yr)| {
                    let xr = &x[r * n..(r + 1) * n];
                    let [mean, inv] = self.row_stats(xr);
                    let (m, s) = (mean as f32, inv as f32);
                    for (((y, &v), &g), &b) in yr.iter_mut().zip(xr).zip(&gain).zip(&shift) {
                        *y = (v - m) * s * g + b;
                    }
                    [mean, inv]
                })
                .collect::<Vec<_>>()
        });
        Ok((y, stats.concat()))
    }
}

impl LayerOps for Norm {
    fn type_name(&self) -> &'static str {
        self.kind.name()
    }

    fn output_shape(&self, input: &[usize]) -> Result<Shape> {
        match input.last() {
            Some(&last) if last == self.size => Ok(input.to_vec()),
            _ => Err(Error::Shape(format!(
                "{} normalises a last axis of size {}, got sample shape {input:?}",
                self.kind.name(),
                self.size
            ))),
        }
    }

    fn input_shape(&self) -> Option<Shape> {
        Some(vec![self.size])
    }

    fn params(&self) -> Vec<Param> {
        let mut p = vec![self.gain.clone()];
        p.extend(self.shift.clone());
        p
    }

    fn morphable(&self) -> Vec<Param> {
        self.params()
    }

    fn infer(&self, x: Input, ctx: &Ctx) -> Result<Vec<f32>> {
        self.rows(&x)?;
        if ctx.device == Device::Gpu {
            use crate::gpu::GpuWeights;
            let gain = self.gain.read().unwrap();
            let shift = self.shift.as_ref().map(|s| s.read().unwrap());
            let shift = shift.as_deref().map(GpuWeights::of).transpose()?;
            return crate::gpu::norm_forward(x.data, GpuWeights::of(&gain)?, shift, self.kind == NormKind::Layer, self.epsilon);
        }
        Ok(self.normalize(x.data, ctx.schedule)?.0)
    }

    fn forward_train(&self, x: Input, ctx: &Ctx) -> Result<Saved> {
        self.rows(&x)?;
        let (post, stats) = self.normalize(x.data, ctx.schedule)?;
        Ok(Saved { post, shape: x.shape.to_vec(), state: Box::new(stats) })
    }

    /// With x̂ = (x − μ)·inv and h = dy·γ: dγ = Σ dy·x̂, dβ = Σ dy,
    /// dx = inv·(h − mean(h) − x̂·mean(h·x̂)) (RMSNorm: without the mean(h) term).
    fn backward(&self, x: Input, saved: &Saved, grad_out: &[f32], ctx: &Ctx, need_input: bool) -> Result<Grads> {
        check_grad(self.kind.name(), grad_out, saved)?;
        self.rows(&x)?;
        let n = self.size;
        let stats = saved.state::<Vec<RowStats>>();
        let (gain, _) = self.decoded()?;
        let centered = self.kind == NormKind::Layer;
        let mut dx = vec![0f32; x.data.len()];
        let partials = row_blocks(ctx.schedule, &mut dx, n, n, |rows, out| {
            // dγ in [..n], dβ in [n..] for this block's rows.
            let mut acc = vec![0f64; 2 * n];
            for (r, dxr) in rows.zip(out.chunks_exact_mut(n)) {
                let (xr, gr) = (&x.data[r * n..(r + 1) * n], &grad_out[r * n..(r + 1) * n]);
                let [mean, inv] = stats[r];
                let (mut sum_h, mut sum_hx) = (0f64, 0f64);
                for i in 0..n {
                    let (xh, g) = ((xr[i] as f64 - mean) * inv, gr[i] as f64);
                    let h = g * gain[i] as f64;
                    sum_h += h;
                    sum_hx += h * xh;
                    acc[i] += g * xh;
                    acc[n + i] += g;
                }
                let mean_h = if centered { sum_h / n as f64 } else { 0.0 };
                let mean_hx = sum_hx / n as f64;
                for (i, d) in dxr.iter_mut().enumerate() {
                    let xh = (xr[i] as f64 - mean) * inv;
                    *d = (inv * (gr[i] as f64 * gain[i] as f64 - mean_h - xh * mean_hx)) as f32;
                }
            }
            acc
        });
        let sums = sum_partials(&partials, 2 * n);
        let mut params = vec![(self.gain.clone(), sums[..n].to_vec())];
        if let Some(shift) = &self.shift {
            params.push((shift.clone(), sums[n..].to_vec()));
        }
        Ok(Grads::new(if need_input { dx } else { Vec::new() }, params))
    }

    fn deep_clone(&self) -> Layer {
        Layer::Norm(Norm { gain: copy_param(&self.gain), shift: self.shift.as_ref().map(copy_param), ..self.clone() })
    }

    fn spec(&self) -> Map<String, Value> {
        let mut o = Map::new();
        o.insert("type".into(), json!(self.kind.name()));
        o.insert("input_height".into(), json!(self.size));
        o.insert("epsilon".into(), json!(self.epsilon));
        o
    }
}

/// Σ f(v) in 16 f32 lanes per 1024-value chunk, chunks added in f64: vectorises, and the
/// order is fixed by the row alone (the same in every schedule).
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    x.chunks(1024)
        .map(|chunk| {
            let mut lanes = [0f32; 16];
            let mut blocks = chunk.chunks_exact(16);
            for block in &mut blocks {
                lanes.iter_mut().zip(block).for_each(|(l, &v)| *l += f(v));
            }
            let tail: f64 = blocks.remainder().iter().map(|&v| f(v) as f64).sum();
            lanes.iter().map(|&l| l as f64).sum::<f64>() + tail
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 16777216.0) * 4.0 - 2.0).collect()
    }

    #[test]
    fn tiled_and_parallel_are_bitwise_identical_for_any_thread_count() {
        let (rows, n) = (700, 96);
        for kind in [NormKind::Rms, NormKind::Layer] {
            let norm = Norm::new(kind, n, kind.default_epsilon(), Codec::Standard).unwrap();
            norm.gain.write().unwrap().set_master(data(n, 7)).unwrap();
            let x = data(rows * n, 1);
            let g = data(rows * n, 2);
            let shape = [n];
            let run = |schedule: Schedule| {
                let ctx = Ctx::standalone(schedule);
                let input = Input::new(&x, rows, &shape);
                let saved = norm.forward_train(input, &ctx).unwrap();
                let grads = norm.backward(input, &saved, &g, &ctx, true).unwrap();
                let params: Vec<Vec<f32>> = grads.params.into_iter().map(|(_, v)| v).collect();
                (saved.post, grads.input, params)
            };
            let tiled = run(Schedule::Tiled);
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                assert_eq!(pool.install(|| run(Schedule::Parallel)), tiled, "{kind:?} with {threads} threads");
            }
            let normal = run(Schedule::Normal);
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-6 * (1.0 + y.abs()));
            assert!(close(&normal.0, &tiled.0) && close(&normal.1, &tiled.1));
            assert!(normal.2.iter().zip(&tiled.2).all(|(a, b)| close(a, b)));
        }
    }
}
