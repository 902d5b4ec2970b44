//! Differentiable k-means (layers.md §11, quirk 20 fixed: one vector per sample, every dtype
//! works): soft assignments a = softmax(−‖x − c_k‖² / 2τ²) to K centroids [K][F]; the output
//! is a ("probabilities") or the expected centroid Σ_k a_k c_k ("features"), then the layer's
//! activation. The centroids compute from their packed version.

use super::spec::{Build, Fields};
use super::{check_grad, copy_param, new_param, through_activation, Ctx, Device, Grads, Input, Layer, LayerOps, Param, Saved, Shape};
use crate::activation::Activation;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::kernels::rows::row_blocks;
use crate::kernels::{dense as kernel, Schedule};
use crate::rng::Rng;
use crate::weights::WeightView;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KMeansOutput {
    /// The K assignment probabilities.
    Probabilities,
    /// The assignment-weighted centroid, in the input's shape.
    Features,
}

impl KMeansOutput {
    pub fn parse(name: &str) -> Result<KMeansOutput> {
        match name.to_ascii_lowercase().as_str() {
            "" | "probabilities" => Ok(KMeansOutput::Probabilities),
            "features" => Ok(KMeansOutput::Features),
            _ => Err(Error::Spec(format!("unknown output mode {name:?}; expected \"probabilities\" or \"features\""))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            KMeansOutput::Probabilities => "probabilities",
            KMeansOutput::Features => "features",
        }
    }
}

#[derive(Debug, Clone)]
pub struct KMeans {
    /// F: values per sample.
    pub features: usize,
    pub clusters: usize,
    /// τ > 0.
    pub temperature: f64,
    pub output: KMeansOutput,
    pub activation: Activation,
    /// [K][F]
    pub centroids: Param,
}

/// What the backward needs: the assignments, and the output before the activation (kept only
/// when the activation is not linear; otherwise it equals the output).
struct Assigned {
    a: Vec<f32>,
    pre: Option<Vec<f32>>,
}

/// ‖c_k‖² of every centroid row, decoded a row at a time.
fn squared_norms(view: WeightView, k: usize, f: usize, schedule: Schedule) -> Vec<f64> {
    let mut norms = vec![0f64; k];
    row_blocks(schedule, &mut norms, 1, f, |rows, out| {
        let mut row = vec![0f32; f];
        for (c, n) in rows.zip(out) {
            view.decode_into(c * f, &mut row);
            *n = row.iter().map(|&v| v as f64 * v as f64).sum();
        }
    });
    norms
}

impl KMeans {
    /// Centroids start N(0, 1) (data is expected roughly standardised).
    pub fn new(features: usize, clusters: usize, temperature: f64, output: KMeansOutput, activation: Activation, seed: u64, codec: Codec) -> Result<KMeans> {
        if features == 0 || clusters == 0 {
            return Err(Error::Spec(format!(
                "KMeans needs input_height > 0 and num_clusters > 0, got {features} and {clusters}"
            )));
        }
        let mut rng = Rng::new(seed);
        let centroids = new_param((0..clusters * features).map(|_| rng.normal()).collect(), vec![clusters, features], codec)?;
        Ok(KMeans { features, clusters, temperature, output, activation, centroids })
    }

    /// input_height = F, num_clusters = K, kmeans_temperature = τ (0 or absent: 1), output_mode.
    pub fn from_spec(f: &Fields, build: Build) -> Result<KMeans> {
        let features = f.positive("input_height", 0, "KMeans")?;
        let clusters = f.positive("num_clusters", 0, "KMeans")?;
        let temperature = f.f64("kmeans_temperature", 0.0)?;
        if temperature < 0.0 {
            return Err(f.err("kmeans_temperature", format!("must be > 0 (or 0 for 1.0), got {temperature}")));
        }
        let temperature = if temperature == 0.0 { 1.0 } else { temperature };
        let output = KMeansOutput::parse(f.str("output_mode")?).map_err(|e| f.err("output_mode", e))?;
        KMeans::new(features, clusters, temperature, output, f.activation()?, build.seed, build.codec)
    }

    fn rows(&self, x: &Input) -> Result<usize> {
        x.check_len()?;
        self.output_shape(x.shape)?;
        Ok(x.batch)
    }

    /// Soft assignments [rows][K]: logits −(‖x‖² − 2x·c_k + ‖c_k‖²)/(2τ²), softmax per row.
    fn assign(&self, x: &[f32], rows: usize, view: WeightView, schedule: Schedule) -> Vec<f32> {
        let (f, k) = (self.features, self.clusters);
        let dots = kernel::forward(x, rows, f, view, k, schedule);
        let c_norms = squared_norms(view, k, f, schedule);
        let scale = 1.0 / (2.0 * self.temperature * self.temperature);
        let mut a = vec![0f32; rows * k];
        row_blocks(schedule, &mut a, k, k + f, |rows, out| {
            let mut logits = vec![0f64; k];
            for (r, ar) in rows.zip(out.chunks_exact_mut(k)) {
                let x_norm: f64 = x[r * f..(r + 1) * f].iter().map(|&v| v as f64 * v as f64).sum();
                for ((l, &dot), &c_norm) in logits.iter_mut().zip(&dots[r * k..(r + 1) * k]).zip(&c_norms) {
                    *l = -(x_norm - 2.0 * dot as f64 + c_norm) * scale;
                }
                let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = logits.iter().map(|&l| (l - max).exp()).sum();
                for (a, &l) in ar.iter_mut().zip(&logits) {
                    *a = ((l - max).exp() / total) as f32;
                }
            }
        });
        a
    }

    /// The output before the activation, and the assignments.
    fn preactivation(&self, x: &Input, schedule: Schedule) -> Result<(Vec<f32>, Vec<f32>)> {
        let rows = self.rows(x)?;
        let store = self.centroids.read().unwrap();
        let view = store.view()?;
        let a = self.assign(x.data, rows, view, schedule);
        let pre = match self.output {
            KMeansOutput::Probabilities => a.clone(),
            KMeansOutput::Features => kernel::backward_input(&a, rows, self.clusters, view, self.features, schedule),
        };
        Ok((pre, a))
    }
}

impl LayerOps for KMeans {
    fn type_name(&self) -> &'static str {
        "KMeans"
    }

    /// One vector of F values per sample ([F], or any shape holding F values).
    fn output_shape(&self, input: &[usize]) -> Result<Shape> {
        if input.iter().product::<usize>() != self.features {
            return Err(Error::Shape(format!(
                "KMeans expects samples of {} features, got sample shape {input:?}",
                self.features
            )));
        }
        Ok(match self.output {
            KMeansOutput::Probabilities => vec![self.clusters],
            KMeansOutput::Features => input.to_vec(),
        })
    }

    fn input_shape(&self) -> Option<Shape> {
        Some(vec![self.features])
    }

    fn params(&self) -> Vec<Param> {
        vec![self.centroids.clone()]
    }

    fn morphable(&self) -> Vec<Param> {
        self.params()
    }

    fn activation(&self) -> Option<Activation> {
        Some(self.activation)
    }

    fn infer(&self, x: Input, ctx: &Ctx) -> Result<Vec<f32>> {
        if ctx.device == Device::Gpu {
            self.rows(&x)?;
            let store = self.centroids.read().unwrap();
            let features_out = self.output == KMeansOutput::Features;
            return crate::gpu::kmeans_forward(x.data, self.features, crate::gpu::GpuWeights::of(&store)?, self.temperature, features_out, self.activation);
        }
        let (mut y, _) = self.preactivation(&x, ctx.schedule)?;
        self.activation.apply_slice(&mut y);
        Ok(y)
    }

    fn forward_train(&self, x: Input, ctx: &Ctx) -> Result<Saved> {
        let (pre, a) = self.preactivation(&x, ctx.schedule)?;
        let shape = self.output_shape(x.shape)?;
        if self.activation == Activation::Linear {
            return Ok(Saved { post: pre, shape, state: Box::new(Assigned { a, pre: None }) });
        }
        let mut post = pre.clone();
        self.activation.apply_slice(&mut post);
        Ok(Saved { post, shape, state: Box::new(Assigned { a, pre: Some(pre) }) })
    }

    /// da = g (probabilities) or g·Cᵀ (features, which also gives dC += aᵀ·g); the softmax
    /// Jacobian gives d = a ⊙ (da − Σ_j a_j da_j) / τ²; then dx = d·C − x·Σ_k d_k and
    /// dC_k += Σ_rows d_k·x − c_k·Σ_rows d_k.
    fn backward(&self, x: Input, saved: &Saved, grad_out: &[f32], ctx: &Ctx, need_input: bool) -> Result<Grads> {
        check_grad("KMeans", grad_out, saved)?;
        let rows = self.rows(&x)?;
        let (f, k, s) = (self.features, self.clusters, ctx.schedule);
        let state = saved.state::<Assigned>();
        let g = through_activation(self.activation, grad_out, state.pre.as_deref().unwrap_or(&saved.post));
        let store = self.centroids.read().unwrap();
        let view = store.view()?;
        let (da, mut d_centroids) = match self.output {
            KMeansOutput::Probabilities => (g, vec![0f32; k * f]),
            KMeansOutput::Features => (kernel::forward(&g, rows, f, view, k, s), kernel::weight_grad(&state.a, rows, k, &g, f, s)),
        };
        let inv_t2 = 1.0 / (self.temperature * self.temperature);
        let mut d = vec![0f32; rows * k];
        row_blocks(s, &mut d, k, k, |rows, out| {
            for (r, dr) in rows.zip(out.chunks_exact_mut(k)) {
                let (ar, gr) = (&state.a[r * k..(r + 1) * k], &da[r * k..(r + 1) * k]);
                let mean: f64 = ar.iter().zip(gr).map(|(&a, &g)| a as f64 * g as f64).sum();
                for ((d, &a), &g) in dr.iter_mut().zip(ar).zip(gr) {
                    *d = (a as f64 * (g as f64 - mean) * inv_t2) as f32;
                }
            }
        });
        let input = if need_input {
            let mut dx = kernel::backward_input(&d, rows, k, view, f, s);
            row_blocks(s, &mut dx, f, f + k, |rows, out| {
                for (r, dxr) in rows.zip(out.chunks_exact_mut(f)) {
                    let total: f64 = d[r * k..(r + 1) * k].iter().map(|&v| v as f64).sum();
                    dxr.iter_mut().zip(&x.data[r * f..(r + 1) * f]).for_each(|(dx, &xv)| *dx = (*dx as f64 - xv as f64 * total) as f32);
                }
            });
            dx
        } else {
            Vec::new()
        };
        let pull = kernel::weight_grad(&d, rows, k, x.data, f, s);
        let totals = kernel::column_sums(&d, rows, k);
        row_blocks(s, &mut d_centroids, f, f, |clusters, out| {
            let mut centroid = vec![0f32; f];
            for (c, dc) in clusters.zip(out.chunks_exact_mut(f)) {
                view.decode_into(c * f, &mut centroid);
                let terms = pull[c * f..(c + 1) * f].iter().zip(&centroid);
                dc.iter_mut().zip(terms).for_each(|(dc, (&p, &cv))| *dc += p - cv * totals[c]);
            }
        });
        drop(store);
        Ok(Grads::new(input, vec![(self.centroids.clone(), d_centroids)]))
    }

    fn deep_clone(&self) -> Layer {
        Layer::KMeans(KMeans { centroids: copy_param(&self.centroids), ..self.clone() })
    }

    fn spec(&self) -> Map<String, Value> {
        let mut o = Map::new();
        o.insert("type".into(), json!("KMeans"));
        o.insert("activation".into(), json!(self.activation.name()));
        o.insert("input_height".into(), json!(self.features));
        o.insert("num_clusters".into(), json!(self.clusters));
        o.insert("kmeans_temperature".into(), json!(self.temperature));
        o.insert("output_mode".into(), json!(self.output.name()));
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 16777216.0) * 4.0 - 2.0).collect()
    }

    #[test]
    fn tiled_and_parallel_are_bitwise_identical_for_any_thread_count() {
        let (rows, f, k) = (400, 48, 130);
        for (output, dtype) in [(KMeansOutput::Probabilities, DType::Int8), (KMeansOutput::Features, DType::Uint4)] {
            let layer = KMeans::new(f, k, 3.0, output, Activation::Sigmoid, 1, Codec::Standard).unwrap();
            layer.centroids.write().unwrap().morph(dtype).unwrap();
            let x = data(rows * f, 1);
            let shape = [f];
            let out_len = rows * layer.output_shape(&shape).unwrap()[0];
            let g = data(out_len, 2);
            let run = |schedule: Schedule| {
                let ctx = Ctx::standalone(schedule);
                let input = Input::new(&x, rows, &shape);
                let saved = layer.forward_train(input, &ctx).unwrap();
                let grads = layer.backward(input, &saved, &g, &ctx, true).unwrap();
                (saved.post, grads.input, grads.params.into_iter().map(|(_, v)| v).collect::<Vec<_>>())
            };
            let tiled = run(Schedule::Tiled);
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                assert_eq!(pool.install(|| run(Schedule::Parallel)), tiled, "{output:?} with {threads} threads");
            }
        }
    }
}
