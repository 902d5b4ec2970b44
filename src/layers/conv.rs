//! Convolution layers on channels-first samples: CNN1/2/3 (cross-correlation, PyTorch's
//! Conv1d/2d/3d) and ConvTransposed1D/2D/3D (ConvTranspose1d/2d/3d), one struct for both kinds.
//! Weights [filters][input_channels][k…] (the reference's filter-major layout, for both kinds),
//! optional float32 bias, element-wise activation; the math is in kernels/conv.rs, the transposed
//! kind's size rules in conv_transposed.rs.

use super::conv_transposed;
use super::spec::{Build, Fields};
use super::{activated, check_grad, copy_param, new_param, through_activation, Ctx, Device, Grads, Input, Layer, LayerOps, Param, Saved, Shape};
use crate::activation::Activation;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::kernels::conv::{self as kernel, Geometry};
use crate::kernels::Schedule;
use crate::rng::Rng;
use serde_json::{json, Map, Value};

/// What a convolution layer is built from (spatial sizes slowest axis first; batch excluded).
#[derive(Debug, Clone)]
pub struct ConvConfig {
    pub transposed: bool,
    pub input_channels: usize,
    pub filters: usize,
    pub kernel_size: usize,
    pub stride: usize,
    pub padding: usize,
    /// Transposed only: extra output positions at the end of every axis (< stride).
    pub output_padding: usize,
    pub input: Vec<usize>,
    pub activation: Activation,
    pub bias: bool,
}

#[derive(Debug, Clone)]
pub struct Conv {
    pub geometry: Geometry,
    pub filters: usize,
    pub output_padding: usize,
    pub activation: Activation,
    pub weights: Param,
    pub bias: Option<Param>,
}

/// The reference's type name for a kind and number of spatial axes.
fn type_name_of(transposed: bool, axes: usize) -> &'static str {
    match (transposed, axes) {
        (false, 1) => "CNN1",
        (false, 2) => "CNN2",
        (false, _) => "CNN3",
        (true, 1) => "ConvTransposed1D",
        (true, 2) => "ConvTransposed2D",
        (true, _) => "ConvTransposed3D",
    }
}

/// (transposed, spatial axes) of an upper-case type name, if it names a convolution.
pub fn kind_of(upper: &str) -> Option<(bool, usize)> {
    (1..=3).flat_map(|axes| [(false, axes), (true, axes)]).find(|&(t, a)| type_name_of(t, a).to_ascii_uppercase() == upper)
}

/// The build-JSON fields of the spatial sizes, slowest axis first: (input, output).
fn spatial_fields(transposed: bool, axes: usize) -> (&'static [&'static str], &'static [&'static str]) {
    match (transposed, axes) {
        (false, 1) => (&["input_height"], &["output_height"]),
        // The reference's ConvTransposed1D reads widths (input_height is accepted too).
        (true, 1) => (&["input_width"], &["output_width"]),
        (_, 2) => (&["input_height", "input_width"], &["output_height", "output_width"]),
        _ => (&["input_depth", "input_height", "input_width"], &["output_depth", "output_height", "output_width"]),
    }
}

/// ⌊(n + 2p − k)/s⌋ + 1 along one axis (PyTorch's Conv output size); `name` is the input field.
fn output_size(kind: &str, name: &str, n: usize, c: &ConvConfig) -> Result<usize> {
    let padded = n.saturating_add(c.padding.saturating_mul(2));
    if c.kernel_size > padded {
        return Err(Error::Spec(format!(
            "{kind}: kernel_size {} is larger than the padded input ({name} {n} + 2·padding {} = {padded})",
            c.kernel_size, c.padding
        )));
    }
    Ok((padded - c.kernel_size) / c.stride + 1)
}

/// `v` when it stays below u32::MAX (patch tables index with u32), else an error naming `what`.
fn bounded(kind: &str, what: &str, v: Option<usize>) -> Result<usize> {
    v.filter(|&v| v < u32::MAX as usize).ok_or_else(|| Error::Spec(format!("{kind}: {what} is too large")))
}

impl Conv {
    /// PyTorch's initialisation: W, b ~ U(−1/√fan_in, 1/√fan_in), from `seed`.
    pub fn new(c: ConvConfig, seed: u64, codec: Codec) -> Result<Conv> {
        let axes = c.input.len();
        if !(1..=3).contains(&axes) {
            return Err(Error::Spec(format!("a convolution has 1 to 3 spatial axes, got {axes}")));
        }
        let kind = type_name_of(c.transposed, axes);
        let (input_names, _) = spatial_fields(c.transposed, axes);
        let sizes = [("input_channels", c.input_channels), ("filters", c.filters), ("kernel_size", c.kernel_size), ("stride", c.stride)];
        for (name, v) in sizes.into_iter().chain(input_names.iter().copied().zip(c.input.iter().copied())) {
            if v == 0 {
                return Err(Error::Spec(format!("{kind} needs {name} > 0")));
            }
        }
        if !c.transposed && c.output_padding != 0 {
            return Err(Error::Spec(format!("{kind}: output_padding applies only to ConvTransposed layers, got {}", c.output_padding)));
        }
        let output = input_names
            .iter()
            .zip(&c.input)
            .map(|(name, &n)| if c.transposed { conv_transposed::output_size(kind, name, n, &c) } else { output_size(kind, name, n, &c) })
            .collect::<Result<Vec<usize>>>()?;
        let product = |v: &[usize]| v.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        let taps = bounded(kind, "kernel_size", c.kernel_size.checked_pow(axes as u32))?;
        let width = bounded(kind, "input_channels × kernel taps", c.input_channels.checked_mul(taps))?;
        let count = bounded(kind, "the weight count", c.filters.checked_mul(width))?;
        bounded(kind, "the input size", product(&c.input))?;
        let positions = bounded(kind, "the output size", product(&output).and_then(|p| p.checked_mul(c.filters)))?;
        bounded(kind, "output positions × kernel taps", positions.checked_mul(taps))?;

        let fan_in = if c.transposed { conv_transposed::fan_in(c.filters, taps) } else { width };
        let bound = 1.0 / (fan_in as f32).sqrt();
        let mut rng = Rng::new(seed);
        let w: Vec<f32> = (0..count).map(|_| rng.uniform(bound)).collect();
        let shape = [vec![c.filters, c.input_channels], vec![c.kernel_size; axes]].concat();
        let weights = new_param(w, shape, codec)?;
        let bias = if c.bias {
            let b: Vec<f32> = (0..c.filters).map(|_| rng.uniform(bound)).collect();
            Some(new_param(b, vec![c.filters], Codec::Standard)?)
        } else {
            None
        };
        let geometry = Geometry {
            channels: c.input_channels,
            input: c.input,
            output,
            kernel: c.kernel_size,
            stride: c.stride,
            padding: c.padding,
            transposed: c.transposed,
        };
        Ok(Conv { geometry, filters: c.filters, output_padding: c.output_padding, activation: c.activation, weights, bias })
    }

    /// Build from a build-JSON entry whose `type` is one of the six convolution names.
    pub fn from_spec(f: &Fields, build: Build) -> Result<Conv> {
        let upper = f.str("type")?.to_ascii_uppercase();
        let (transposed, axes) = kind_of(&upper).ok_or_else(|| f.err("type", format!("{upper:?} is not a convolution")))?;
        let kind = type_name_of(transposed, axes);
        let config = ConvConfig {
            transposed,
            input_channels: f.positive("input_channels", 0, kind)?,
            filters: f.positive("filters", 0, kind)?,
            kernel_size: f.positive("kernel_size", 0, kind)?,
            // Absent or 0 means 1 (the reference requires ≥ 1).
            stride: f.usize("stride", 1)?.max(1),
            padding: f.usize("padding", 0)?,
            output_padding: f.usize("output_padding", 0)?,
            input: read_input(f, transposed, axes, kind)?,
            activation: f.activation()?,
            bias: f.bool("bias", false)?,
        };
        let conv = Conv::new(config, build.seed, build.codec).map_err(|e| match e {
            Error::Spec(m) => Error::Spec(format!("{}: {m}", f.context)),
            other => other,
        })?;
        conv.check_given_outputs(f)?;
        Ok(conv)
    }

    fn transposed(&self) -> bool {
        self.geometry.transposed
    }

    /// Output sizes are computed; any the entry states must agree (the reference requires them).
    fn check_given_outputs(&self, f: &Fields) -> Result<()> {
        let axes = self.geometry.output.len();
        let (_, names) = spatial_fields(self.transposed(), axes);
        for (&name, &expected) in names.iter().zip(&self.geometry.output) {
            // ConvTransposed1D given by heights: its output_height stands for the width.
            let name = if name == "output_width" && axes == 1 && f.usize(name, 0)? == 0 { "output_height" } else { name };
            let given = f.usize(name, 0)?;
            if given != 0 && given != expected {
                return Err(f.err(name, format!("is {given}, but {} with these sizes produces {expected}", self.type_name())));
            }
        }
        Ok(())
    }

    /// The sample shape the layer is built for: [input_channels, spatial…].
    fn sample_shape(&self) -> Shape {
        [vec![self.geometry.channels], self.geometry.input.clone()].concat()
    }

    fn preactivation(&self, x: &Input, schedule: Schedule) -> Result<(Vec<f32>, Shape)> {
        x.check_len()?;
        let shape = self.output_shape(x.shape)?;
        let store = self.weights.read().unwrap();
        let mut y = kernel::forward(x.data, x.batch, &self.geometry, store.view()?, schedule);
        drop(store);
        if let Some(bias) = &self.bias {
            let store = bias.read().unwrap();
            let b = store.master()?;
            for (plane, values) in y.chunks_exact_mut(self.geometry.output_len()).enumerate() {
                let v = b[plane % self.filters];
                values.iter_mut().for_each(|y| *y += v);
            }
        }
        Ok((y, shape))
    }

    /// The activated forward on the GPU: the active weight version and the bias master (what
    /// the CPU adds) decoded in the shader.
    fn infer_gpu(&self, x: &Input) -> Result<Vec<f32>> {
        use crate::gpu::GpuWeights;
        x.check_len()?;
        self.output_shape(x.shape)?;
        let store = self.weights.read().unwrap();
        let bias_store = self.bias.as_ref().map(|b| b.read().unwrap());
        let bias = match &bias_store {
            Some(s) => Some(GpuWeights::F32 { key: s.generation(), values: s.master()? }),
            None => None,
        };
        crate::gpu::conv_forward(x.data, x.batch, &self.geometry, GpuWeights::of(&store)?, bias, self.activation)
    }
}

/// The spatial input sizes of an entry. CNN2/CNN3 (and the transposed kinds alike) take depth
/// and width from the height when they are absent or 0.
fn read_input(f: &Fields, transposed: bool, axes: usize, kind: &str) -> Result<Vec<usize>> {
    if transposed && axes == 1 {
        return match (f.usize("input_width", 0)?, f.usize("input_height", 0)?) {
            (0, 0) => Err(f.err("input_width", format!("must be > 0 for {kind} (input_height is accepted too)"))),
            (0, height) => Ok(vec![height]),
            (width, _) => Ok(vec![width]),
        };
    }
    let height = f.positive("input_height", 0, kind)?;
    let (names, _) = spatial_fields(transposed, axes);
    names
        .iter()
        .map(|&name| match f.usize(name, 0)? {
            0 => Ok(height),
            v => Ok(v),
        })
        .collect()
}

impl LayerOps for Conv {
    fn type_name(&self) -> &'static str {
        type_name_of(self.transposed(), self.geometry.input.len())
    }

    /// Samples are [input_channels, spatial…]. A sample of another rank with as many values is
    /// read as those values flattened (the reference passes flat tensors between layers); one of
    /// the same rank must match exactly (a swapped axis is an error, not a silent reshape).
    fn output_shape(&self, input: &[usize]) -> Result<Shape> {
        let want = self.sample_shape();
        let total: usize = want.iter().product();
        let flat = input.len() != want.len() && input.iter().product::<usize>() == total;
        if input != want.as_slice() && !flat {
            return Err(Error::Shape(format!(
                "{} expects samples of shape {want:?} (channels first; or {total} values flattened), got sample shape {input:?}",
                self.type_name()
            )));
        }
        Ok([vec![self.filters], self.geometry.output.clone()].concat())
    }

    fn input_shape(&self) -> Option<Shape> {
        Some(self.sample_shape())
    }

    fn params(&self) -> Vec<Param> {
        let mut p = vec![self.weights.clone()];
        p.extend(self.bias.clone());
        p
    }

    fn morphable(&self) -> Vec<Param> {
        vec![self.weights.clone()]
    }

    fn activation(&self) -> Option<Activation> {
        Some(self.activation)
    }

    fn infer(&self, x: Input, ctx: &Ctx) -> Result<Vec<f32>> {
        if ctx.device == Device::Gpu {
            return self.infer_gpu(&x);
        }
        let (mut y, _) = self.preactivation(&x, ctx.schedule)?;
        self.activation.apply_slice(&mut y);
        Ok(y)
    }

    fn forward_train(&self, x: Input, ctx: &Ctx) -> Result<Saved> {
        let (pre, shape) = self.preactivation(&x, ctx.schedule)?;
        Ok(activated(self.activation, pre, shape))
    }

    fn backward(&self, x: Input, saved: &Saved, grad_out: &[f32], ctx: &Ctx, need_input: bool) -> Result<Grads> {
        check_grad(self.type_name(), grad_out, saved)?;
        x.check_len()?;
        self.output_shape(x.shape)?;
        let positions = self.geometry.output_len();
        if saved.post.len() != x.batch * self.filters * positions {
            return Err(Error::Shape(format!(
                "{} backward: the saved forward holds {} values, but a batch of {} makes {}",
                self.type_name(),
                saved.post.len(),
                x.batch,
                x.batch * self.filters * positions
            )));
        }
        let g = through_activation(self.activation, grad_out, saved.state::<Vec<f32>>());
        let store = self.weights.read().unwrap();
        let grads = kernel::backward(x.data, x.batch, &self.geometry, store.view()?, &g, need_input, ctx.schedule);
        drop(store);
        let mut params = vec![(self.weights.clone(), grads.weights)];
        if let Some(bias) = &self.bias {
            params.push((bias.clone(), kernel::filter_sums(&g, x.batch, self.filters, positions)));
        }
        Ok(Grads::new(grads.input, params))
    }

    fn deep_clone(&self) -> Layer {
        Layer::Conv(Conv { weights: copy_param(&self.weights), bias: self.bias.as_ref().map(copy_param), ..self.clone() })
    }

    fn spec(&self) -> Map<String, Value> {
        let g = &self.geometry;
        let mut o = Map::new();
        o.insert("type".into(), json!(self.type_name()));
        o.insert("activation".into(), json!(self.activation.name()));
        o.insert("input_channels".into(), json!(g.channels));
        o.insert("filters".into(), json!(self.filters));
        o.insert("kernel_size".into(), json!(g.kernel));
        o.insert("stride".into(), json!(g.stride));
        o.insert("padding".into(), json!(g.padding));
        let (inputs, outputs) = spatial_fields(self.transposed(), g.input.len());
        for (names, sizes) in [(inputs, &g.input), (outputs, &g.output)] {
            for (&name, &size) in names.iter().zip(sizes) {
                o.insert(name.into(), json!(size));
            }
        }
        if self.output_padding > 0 {
            o.insert("output_padding".into(), json!(self.output_padding));
        }
        if self.bias.is_some() {
            o.insert("bias".into(), json!(true));
        }
        o
    }
}
