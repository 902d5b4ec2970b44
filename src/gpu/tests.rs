//! GPU tests: the dense kernels against a plain f64 CPU loop (every activation, with and without
//! bias, odd and tile-sized shapes, f32 masters and packed weights of every dtype), the weight
//! cache, and errors as values. They skip only when no adapter exists.

use super::context::{context, select_adapter};
use super::*;
use crate::codec::{encode_loom, encode_standard, loom_auto_scale, Packed};
use crate::dtype::DType;
use crate::error::Error;
use std::sync::Mutex;

/// The tests share one device and the global upload counter: they run one at a time (GPU tests
/// outside this module take the lock too).
pub(crate) static SERIAL: Mutex<()> = Mutex::new(());

fn gpu_or_skip(test: &str) -> bool {
    if gpu_available() {
        return true;
    }
    let reason = gpu_info().err().map(|e| e.to_string()).unwrap_or_default();
    eprintln!("no GPU adapter: skipping {test} ({reason})");
    false
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f64 / (1u64 << 23) as f64 - 1.0) as f32
        })
        .collect()
}

fn act_f64(activation: Activation, v: f64) -> f64 {
    match activation {
        Activation::Relu => v.max(0.0),
        Activation::Silu => v / (1.0 + (-v).exp()),
        Activation::Gelu => {
            let u = (2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v);
            0.5 * v * (1.0 + u.tanh())
        }
        Activation::GeluExact => 0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2)),
        Activation::Tanh => v.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        Activation::LeakyRelu => {
            if v >= 0.0 {
                v
            } else {
                0.01 * v
            }
        }
        Activation::Relu2 => v.max(0.0).powi(2),
        Activation::Linear => v,
    }
}

struct Case<'a> {
    batch: usize,
    in_features: usize,
    out_features: usize,
    x: &'a [f32],
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    activation: Activation,
}

impl Case<'_> {
    fn reference(&self) -> Vec<f64> {
        let (k, n) = (self.in_features, self.out_features);
        let mut y = Vec::with_capacity(self.batch * n);
        for b in 0..self.batch {
            for o in 0..n {
                let mut sum: f64 = (0..k)
                    .map(|i| self.x[b * k + i] as f64 * self.w[o * k + i] as f64)
                    .sum();
                sum += self.bias.map_or(0.0, |bias| bias[o] as f64);
                y.push(act_f64(self.activation, sum));
            }
        }
        y
    }

    fn run(&self, weights: GpuWeights<'_>) -> Vec<f32> {
        dense_forward(
            self.x,
            self.batch,
            self.in_features,
            self.out_features,
            weights,
            self.bias,
            self.activation,
        )
        .unwrap_or_else(|e| panic!("dense_forward failed: {e}"))
    }

    /// max |gpu − ref| / max |ref|.
    fn check(&self, weights: GpuWeights<'_>, what: &str) {
        let gpu = self.run(weights);
        let reference = self.reference();
        assert_eq!(gpu.len(), reference.len());
        let scale = reference.iter().fold(1e-30f64, |m, r| m.max(r.abs()));
        let err = gpu
            .iter()
            .zip(&reference)
            .fold(0f64, |m, (g, r)| m.max((*g as f64 - r).abs()));
        let (b, k, n) = (self.batch, self.in_features, self.out_features);
        let bias = self.bias.is_some();
        assert!(
            err / scale <= 1e-5,
            "{what} {b}×{k}×{n} {:?} bias={bias}: relative error {:.2e}",
            self.activation,
            err / scale
        );
    }
}

const SHAPES: [(usize, usize, usize); 4] = [(3, 37, 19), (64, 256, 256), (1, 256, 7), (17, 9, 130)];

/// Runs `check` for every shape × activation × bias, with weights `w(shape index, values)`.
fn for_every_case(mut check: impl FnMut(&Case<'_>, usize)) {
    for (s, &(batch, in_features, out_features)) in SHAPES.iter().enumerate() {
        let x = values(batch * in_features, 1 + s as u64);
        let w = values(out_features * in_features, 100 + s as u64);
        let bias = values(out_features, 200 + s as u64);
        for activation in Activation::ALL {
            for bias in [None, Some(&bias[..])] {
                let case = Case {
                    batch,
                    in_features,
                    out_features,
                    x: &x,
                    w: &w,
                    bias,
                    activation,
                };
                check(&case, s);
            }
        }
    }
}

#[test]
fn f32_weights_match_the_cpu_for_every_activation() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !gpu_or_skip("f32_weights_match_the_cpu_for_every_activation") {
        return;
    }
    for_every_case(|case, s| {
        case.check(
            GpuWeights::F32 {
                key: u64::MAX - s as u64,
                values: case.w,
            },
            "f32",
        )
    });
}

#[test]
fn packed_weights_match_the_cpu_for_every_dtype() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !gpu_or_skip("packed_weights_match_the_cpu_for_every_dtype") {
        return;
    }
    let mut packed: Vec<Vec<Packed>> = vec![Vec::new(); SHAPES.len()];
    for_every_case(|case, s| {
        if packed[s].is_empty() {
            packed[s] = DType::ALL
                .iter()
                .map(|&d| encode_standard(case.w, d))
                .collect();
            for d in [DType::Int8, DType::Int4, DType::Uint8, DType::Uint4, DType::Fp8E4M3, DType::Fp4] {
                packed[s].push(encode_loom(case.w, d, loom_auto_scale(case.w, d)));
            }
            // GGML blocks need rows of whole 32-value blocks.
            if case.in_features.is_multiple_of(DType::BLOCK_VALUES) {
                for d in [DType::Q4_0, DType::Q4_1, DType::Q8_0] {
                    let blocks = crate::codec::ggml_blocks::quantize(case.w, d);
                    packed[s].push(Packed::from_bytes(d, crate::codec::Codec::Standard, case.w.len(), blocks).unwrap());
                }
            }
        }
        for p in &packed[s] {
            let decoded = p.decode_all();
            let case = Case {
                w: &decoded,
                ..*case
            };
            case.check(
                GpuWeights::Packed(p),
                &format!("{} ({})", p.dtype, p.codec.name()),
            );
        }
    });
}

#[test]
fn activations_are_accurate_pointwise() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !gpu_or_skip("activations_are_accurate_pointwise") {
        return;
    }
    // y = act(x · 1) for x over [-12, 12): the activation alone.
    let x: Vec<f32> = (0..256)
        .map(|i| (i as f32 - 128.0) * 0.09375 + 0.01)
        .collect();
    for activation in Activation::ALL {
        let y = dense_forward(
            &x,
            256,
            1,
            1,
            GpuWeights::F32 {
                key: u64::MAX - 100,
                values: &[1.0],
            },
            None,
            activation,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let worst = x.iter().zip(&y).fold(0f64, |m, (&v, &g)| {
            let r = act_f64(activation, v as f64);
            m.max((g as f64 - r).abs() / r.abs().max(1.0))
        });
        eprintln!("{activation:?}: max abs error (relative above 1) {worst:.2e}");
        assert!(worst <= 4e-7, "{activation:?}: {worst:.2e}");
    }
}

#[test]
fn second_call_with_the_same_weights_uploads_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !gpu_or_skip("second_call_with_the_same_weights_uploads_nothing") {
        return;
    }
    let (x, w) = (values(2 * 8, 7), values(8 * 5, 8));
    let packed = encode_standard(&w, DType::Int4);
    let call = |weights| {
        dense_forward(&x, 2, 8, 5, weights, None, Activation::Linear).map(|_| upload_count())
    };
    let master = GpuWeights::F32 {
        key: u64::MAX - 200,
        values: &w,
    };
    let before = upload_count();
    assert_eq!(call(master), Ok(before + 1));
    assert_eq!(call(master), Ok(before + 1));
    assert_eq!(call(GpuWeights::Packed(&packed)), Ok(before + 2));
    assert_eq!(call(GpuWeights::Packed(&packed)), Ok(before + 2));
    let repacked = encode_standard(&w, DType::Int4); // a new version: a new id
    assert_eq!(call(GpuWeights::Packed(&repacked)), Ok(before + 3));
}

#[test]
fn empty_dimensions_give_empty_outputs_or_the_bias() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !gpu_or_skip("empty_dimensions_give_empty_outputs_or_the_bias") {
        return;
    }
    let no_weights = GpuWeights::F32 {
        key: u64::MAX - 400,
        values: &[],
    };
    let y = dense_forward(
        &[],
        2,
        0,
        3,
        no_weights,
        Some(&[1.0, -2.0, 3.0]),
        Activation::Relu,
    );
    assert_eq!(y, Ok(vec![1.0, 0.0, 3.0, 1.0, 0.0, 3.0]));
    assert_eq!(
        dense_forward(&[], 0, 4, 0, no_weights, None, Activation::Relu),
        Ok(vec![])
    );
}

#[test]
fn wrong_shapes_are_shape_errors() {
    let w = [0.0f32; 6];
    let weights = GpuWeights::F32 { key: 1, values: &w };
    let run = |x: &[f32], batch, bias: Option<&[f32]>| {
        dense_forward(x, batch, 3, 2, weights, bias, Activation::Relu)
    };
    assert!(matches!(run(&[0.0; 5], 2, None), Err(Error::Shape(_))));
    assert!(matches!(
        run(&[0.0; 6], 2, Some(&[0.0; 3])),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        dense_forward(&[0.0; 3], 1, 3, 3, weights, None, Activation::Relu),
        Err(Error::Shape(_))
    ));
}

#[test]
fn device_errors_are_values_and_the_device_survives_them() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !gpu_or_skip("device_errors_are_values_and_the_device_survives_them") {
        return;
    }
    let Ok(ctx) = context() else {
        unreachable!("gpu_available() said yes")
    };
    // MAP_READ may only be combined with COPY_DST: a validation error.
    let invalid = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE;
    let result = ctx.scoped("a bad buffer", || ctx.empty_buffer("bad", 64, invalid));
    match result {
        Err(Error::Gpu(message)) => {
            eprintln!("captured: {message}");
            assert!(message.starts_with("a bad buffer: "), "{message}");
        }
        other => panic!("expected Error::Gpu, got {:?}", other.map(|_| ())),
    }
    let y = dense_forward(
        &[1.0, 2.0],
        1,
        2,
        1,
        GpuWeights::F32 {
            key: u64::MAX - 300,
            values: &[3.0, 4.0],
        },
        None,
        Activation::Linear,
    );
    assert_eq!(y, Ok(vec![11.0]));
}

#[test]
fn unknown_adapter_names_are_reported() {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let result = pollster::block_on(select_adapter(&instance, Some("no-such-adapter-42")));
    match result {
        Err(message) => assert!(message.starts_with("no GPU adapter found: "), "{message}"),
        Ok(adapter) => panic!("matched {:?}", adapter.get_info().name),
    }
}

#[test]
fn gpu_info_describes_the_adapter() {
    if !gpu_or_skip("gpu_info_describes_the_adapter") {
        return;
    }
    let info = gpu_info().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{info:?}");
    assert!(!info.name.is_empty() && !info.backend.is_empty());
    assert!(
        info.max_compute_invocations_per_workgroup >= 1 && info.max_storage_buffer_binding_size > 0
    );
}
