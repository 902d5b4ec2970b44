//! SwiGLU feed-forward block (layers.md §4, quirk 17 fixed): per row x of width h,
//! out = W_down·(act(W_gate·x + b_gate) ⊙ (W_up·x + b_up)) + b_down, with act = SiLU, or ReLU²
//! (BitNet's squared ReLU) when the activation field says "relu2". The three matrices compute
//! from their packed versions; the biases are float32. Inference also runs on the GPU
//! (gpu/swiglu.rs).

use super::spec::{Build, Fields};
use super::{check_grad, copy_param, new_param, Ctx, Device, Grads, Input, Layer, LayerOps, Param, Saved, Shape};
use crate::activation::Activation;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::kernels::rows::row_blocks;
use crate::kernels::{dense as kernel, Schedule};
use crate::rng::Rng;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone)]
pub struct SwiGluBiases {
    pub gate: Param,
    pub up: Param,
    pub down: Param,
}

#[derive(Debug, Clone)]
pub struct SwiGlu {
    /// h: the width of input and output rows.
    pub model_size: usize,
    /// I: the intermediate width.
    pub hidden_size: usize,
    /// `Silu` or `Relu2`.
    pub gate_activation: Activation,
    /// [I][h]
    pub w_gate: Param,
    /// [I][h]
    pub w_up: Param,
    /// [h][I]
    pub w_down: Param,
    pub biases: Option<SwiGluBiases>,
}

/// What the backward needs from the forward: gate and up projections, and their product a.
struct Intermediate {
    gate: Vec<f32>,
    up: Vec<f32>,
    a: Vec<f32>,
}

/// x·Wᵀ (+ b) for `rows` rows of width k, W [n][k] from its active version.
fn project(x: &[f32], rows: usize, k: usize, w: &Param, n: usize, bias: Option<&Param>, schedule: Schedule) -> Result<Vec<f32>> {
    let mut y = kernel::forward(x, rows, k, w.read().unwrap().view()?, n, schedule);
    if let Some(b) = bias {
        let store = b.read().unwrap();
        let b = store.master()?;
        for row in y.chunks_exact_mut(n) {
            row.iter_mut().zip(b).for_each(|(v, &bv)| *v += bv);
        }
    }
    Ok(y)
}

impl SwiGlu {
    /// The gate's non-linearity for an activation field: ReLU² for "relu2", SiLU otherwise
    /// (the reference's JSON default "linear" and its usual "silu" both mean SiLU here).
    fn gate_activation_for(field: Activation) -> Activation {
        match field {
            Activation::Relu2 => Activation::Relu2,
            _ => Activation::Silu,
        }
    }

    /// PyTorch's Linear initialisation for each projection: U(±1/√fan_in) for weights and bias.
    pub fn new(model_size: usize, hidden_size: usize, gate_activation: Activation, bias: bool, seed: u64, codec: Codec) -> Result<SwiGlu> {
        if model_size == 0 || hidden_size == 0 {
            return Err(Error::Spec(format!(
                "SwiGLU needs input_height > 0 and output_height > 0, got {model_size} and {hidden_size}"
            )));
        }
        let (h, i) = (model_size, hidden_size);
        let mut rng = Rng::new(seed);
        let mut uniform = |count: usize, fan_in: usize, shape: Vec<usize>, codec: Codec| {
            let bound = 1.0 / (fan_in as f32).sqrt();
            new_param((0..count).map(|_| rng.uniform(bound)).collect(), shape, codec)
        };
        let w_gate = uniform(i * h, h, vec![i, h], codec)?;
        let w_up = uniform(i * h, h, vec![i, h], codec)?;
        let w_down = uniform(h * i, i, vec![h, i], codec)?;
        let biases = if bias {
            Some(SwiGluBiases {
                gate: uniform(i, h, vec![i], Codec::Standard)?,
                up: uniform(i, h, vec![i], Codec::Standard)?,
                down: uniform(h, i, vec![h], Codec::Standard)?,
            })
        } else {
            None
        };
        Ok(SwiGlu { model_size, hidden_size, gate_activation: SwiGlu::gate_activation_for(gate_activation), w_gate, w_up, w_down, biases })
    }

    /// input_height = h, output_height = I; `bias` defaults to true (the reference has biases).
    pub fn from_spec(f: &Fields, build: Build) -> Result<SwiGlu> {
        let h = f.positive("input_height", 0, "SwiGLU")?;
        let i = f.positive("output_height", 0, "SwiGLU")?;
        SwiGlu::new(h, i, f.activation()?, f.bool("bias", true)?, build.seed, build.codec)
    }

    fn rows(&self, x: &Input) -> Result<usize> {
        x.check_len()?;
        self.output_shape(x.shape)?;
        Ok(x.data.len() / self.model_size)
    }

    fn intermediate(&self, x: &[f32], rows: usize, schedule: Schedule) -> Result<Intermediate> {
        let (h, i) = (self.model_size, self.hidden_size);
        let b = self.biases.as_ref();
        let (gate, up) = schedule.both(
            || project(x, rows, h, &self.w_gate, i, b.map(|b| &b.gate), schedule),
            || project(x, rows, h, &self.w_up, i, b.map(|b| &b.up), schedule),
        );
        let (gate, up) = (gate?, up?);
        let act = self.gate_activation;
        let mut a = vec![0f32; gate.len()];
        row_blocks(schedule, &mut a, i, i, |rows, out| {
            let range = rows.start * i..rows.end * i;
            for ((a, &g), &u) in out.iter_mut().zip(&gate[range.clone()]).zip(&up[range]) {
                *a = act.apply(g) * u;
            }
        });
        Ok(Intermediate { gate, up, a })
    }

    fn output(&self, a: &[f32], rows: usize, schedule: Schedule) -> Result<Vec<f32>> {
        let down_bias = self.biases.as_ref().map(|b| &b.down);
        project(a, rows, self.hidden_size, &self.w_down, self.model_size, down_bias, schedule)
    }

    /// The forward on the GPU, from the tensors the CPU computes with: the projections' active
    /// versions and the biases' float32 masters.
    fn infer_gpu(&self, x: &Input) -> Result<Vec<f32>> {
        use crate::gpu::{GpuWeights, SwiGluWeights};
        let rows = self.rows(x)?;
        let [gate, up, down] = [&self.w_gate, &self.w_up, &self.w_down].map(|p| p.read().unwrap());
        let bias_stores = self.biases.as_ref().map(|b| [&b.gate, &b.up, &b.down].map(|p| p.read().unwrap()));
        let biases = match &bias_stores {
            Some([gate, up, down]) => Some([gate.master()?, up.master()?, down.master()?]),
            None => None,
        };
        let weights = SwiGluWeights { gate: GpuWeights::of(&gate)?, up: GpuWeights::of(&up)?, down: GpuWeights::of(&down)?, biases };
        crate::gpu::swiglu_forward(x.data, rows, self.model_size, self.hidden_size, &weights, self.gate_activation)
    }
}

impl LayerOps for SwiGlu {
    fn type_name(&self) -> &'static str {
        "SwiGLU"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Shape> {
        match input.last() {
            Some(&last) if last == self.model_size => Ok(input.to_vec()),
            _ => Err(Error::Shape(format!(
                "SwiGLU expects rows of width {} along the last axis, got sample shape {input:?}",
                self.model_size
            ))),
        }
    }

    fn input_shape(&self) -> Option<Shape> {
        Some(vec![self.model_size])
    }

    fn params(&self) -> Vec<Param> {
        let mut p = self.morphable();
        if let Some(b) = &self.biases {
            p.extend([b.gate.clone(), b.up.clone(), b.down.clone()]);
        }
        p
    }

    fn morphable(&self) -> Vec<Param> {
        vec![self.w_gate.clone(), self.w_up.clone(), self.w_down.clone()]
    }

    fn infer(&self, x: Input, ctx: &Ctx) -> Result<Vec<f32>> {
        if ctx.device == Device::Gpu {
            return self.infer_gpu(&x);
        }
        let rows = self.rows(&x)?;
        let mid = self.intermediate(x.data, rows, ctx.schedule)?;
        self.output(&mid.a, rows, ctx.schedule)
    }

    fn forward_train(&self, x: Input, ctx: &Ctx) -> Result<Saved> {
        let rows = self.rows(&x)?;
        let mid = self.intermediate(x.data, rows, ctx.schedule)?;
        let post = self.output(&mid.a, rows, ctx.schedule)?;
        Ok(Saved { post, shape: x.shape.to_vec(), state: Box::new(mid) })
    }

    /// da = dy·W_down; d_up = da ⊙ act(gate); d_gate = da ⊙ up ⊙ act'(gate); each projection's
    /// weight gradient is (its output gradient)ᵀ·(its input), and dx sums the two input products.
    fn backward(&self, x: Input, saved: &Saved, grad_out: &[f32], ctx: &Ctx, need_input: bool) -> Result<Grads> {
        check_grad("SwiGLU", grad_out, saved)?;
        let rows = self.rows(&x)?;
        let (h, i, s) = (self.model_size, self.hidden_size, ctx.schedule);
        let mid = saved.state::<Intermediate>();
        let da = kernel::backward_input(grad_out, rows, h, self.w_down.read().unwrap().view()?, i, s);
        let act = self.gate_activation;
        let mut d_up = vec![0f32; da.len()];
        row_blocks(s, &mut d_up, i, i, |rows, out| {
            let range = rows.start * i..rows.end * i;
            for ((d, &g), &gate) in out.iter_mut().zip(&da[range.clone()]).zip(&mid.gate[range]) {
                *d = g * act.apply(gate);
            }
        });
        let mut d_gate = vec![0f32; da.len()];
        row_blocks(s, &mut d_gate, i, i, |rows, out| {
            let range = rows.start * i..rows.end * i;
            let terms = da[range.clone()].iter().zip(&mid.gate[range.clone()]).zip(&mid.up[range]);
            for (d, ((&g, &gate), &up)) in out.iter_mut().zip(terms) {
                *d = g * up * act.derivative(gate);
            }
        });
        let input = if need_input {
            let mut dx = kernel::backward_input(&d_up, rows, i, self.w_up.read().unwrap().view()?, h, s);
            let via_gate = kernel::backward_input(&d_gate, rows, i, self.w_gate.read().unwrap().view()?, h, s);
            dx.iter_mut().zip(&via_gate).for_each(|(a, b)| *a += b);
            dx
        } else {
            Vec::new()
        };
        let mut params = vec![
            (self.w_gate.clone(), kernel::weight_grad(&d_gate, rows, i, x.data, h, s)),
            (self.w_up.clone(), kernel::weight_grad(&d_up, rows, i, x.data, h, s)),
            (self.w_down.clone(), kernel::weight_grad(grad_out, rows, h, &mid.a, i, s)),
        ];
        if let Some(b) = &self.biases {
            params.push((b.gate.clone(), kernel::column_sums(&d_gate, rows, i)));
            params.push((b.up.clone(), kernel::column_sums(&d_up, rows, i)));
            params.push((b.down.clone(), kernel::column_sums(grad_out, rows, h)));
        }
        Ok(Grads::new(input, params))
    }

    fn deep_clone(&self) -> Layer {
        let biases = self.biases.as_ref().map(|b| SwiGluBiases { gate: copy_param(&b.gate), up: copy_param(&b.up), down: copy_param(&b.down) });
        Layer::SwiGlu(SwiGlu {
            w_gate: copy_param(&self.w_gate),
            w_up: copy_param(&self.w_up),
            w_down: copy_param(&self.w_down),
            biases,
            ..self.clone()
        })
    }

    fn spec(&self) -> Map<String, Value> {
        let mut o = Map::new();
        o.insert("type".into(), json!("SwiGLU"));
        o.insert("activation".into(), json!(self.gate_activation.name()));
        o.insert("input_height".into(), json!(self.model_size));
        o.insert("output_height".into(), json!(self.hidden_size));
        o.insert("bias".into(), json!(self.biases.is_some()));
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 16777216.0) * 2.0 - 1.0).collect()
    }

    #[test]
    fn tiled_and_parallel_are_bitwise_identical_for_any_thread_count() {
        let (rows, h, i) = (150, 96, 200);
        for dtype in [DType::Float32, DType::Int4] {
            let layer = SwiGlu::new(h, i, Activation::Silu, true, 3, Codec::Standard).unwrap();
            for p in layer.morphable() {
                p.write().unwrap().morph(dtype).unwrap();
            }
            let x = data(rows * h, 1);
            let g = data(rows * h, 2);
            let shape = [h];
            let run = |schedule: Schedule| {
                let ctx = Ctx::standalone(schedule);
                let input = Input::new(&x, rows, &shape);
                let saved = layer.forward_train(input, &ctx).unwrap();
                let grads = layer.backward(input, &saved, &g, &ctx, true).unwrap();
                let params: Vec<Vec<f32>> = grads.params.into_iter().map(|(_, v)| v).collect();
                (saved.post, grads.input, params)
            };
            let tiled = run(Schedule::Tiled);
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                assert_eq!(pool.install(|| run(Schedule::Parallel)), tiled, "{dtype} with {threads} threads");
            }
        }
    }
}
