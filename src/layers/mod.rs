//! Layers: one file per family, each implementing `LayerOps`; the `Layer` enum lists them.
//! Weighted layers hold their tensors as `Param`s (shared, lockable WeightStores) so a Python
//! handle, the network and remote links all see the same weights.
//!
//! Shapes: a pass carries a batch of samples; `Input::shape` is the shape of one sample (batch
//! excluded) and the data is `batch × product(shape)` values, row-major. Each layer says what it
//! makes of a sample shape in `output_shape`, which is also its input check.

pub mod attention;
pub mod conv;
pub mod conv_transposed;
pub mod dense;
pub mod member;
pub mod parallel;
pub mod residual;
pub mod sequential;
pub mod recurrent;
pub mod softmax;
pub mod embedding;
pub mod kmeans;
pub mod norm;
pub mod spec;
pub mod swiglu;
pub mod tensors;

use crate::activation::Activation;
use crate::coord::Coord;
use crate::error::{Error, Result};
use crate::kernels::Schedule;
use crate::weights::WeightStore;
use serde_json::{Map, Value};
use std::any::Any;
use std::sync::{Arc, RwLock};

pub use attention::Attention;
pub use conv::Conv;
pub use dense::Dense;
pub use parallel::Parallel;
pub use residual::Residual;
pub use sequential::Sequential;
pub use recurrent::Recurrent;
pub use softmax::Softmax;
pub use embedding::Embedding;
pub use kmeans::KMeans;
pub use norm::Norm;
pub use swiglu::SwiGlu;

pub type Param = Arc<RwLock<WeightStore>>;

/// The shape of one sample (batch dimension excluded).
pub type Shape = Vec<usize>;

/// Where a forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Gpu,
}

impl Device {
    pub fn parse(name: &str) -> Result<Device> {
        match name.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "gpu" | "wgpu" => Ok(Device::Gpu),
            _ => Err(Error::Value(format!("unknown device {name:?}; expected 'cpu' or 'gpu'"))),
        }
    }
}

/// Finds the grid layer a remote link points at (containers resolve links when they run, so a
/// link always reaches whatever layer sits at its target now).
pub trait Links: Sync {
    fn layer_at(&self, target: Coord) -> Result<Arc<Layer>>;
    /// How many containers deep the caller is (shape checks use it to stop link cycles).
    fn depth(&self) -> u32 {
        0
    }
}

/// For layers used outside a grid: every link lookup fails with a clear message.
pub struct NoLinks;

impl Links for NoLinks {
    fn layer_at(&self, target: Coord) -> Result<Arc<Layer>> {
        Err(Error::Spec(format!("remote link to {target} needs a network to resolve it; this layer runs on its own")))
    }
}

/// How a pass runs: loop structure, device, and where remote links resolve.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub schedule: Schedule,
    pub device: Device,
    pub links: &'a dyn Links,
    /// How many containers deep this call is (guards against remote-link cycles).
    pub nesting: u32,
}

impl Ctx<'static> {
    /// A CPU context for a layer on its own (no grid to resolve links in).
    pub fn standalone(schedule: Schedule) -> Ctx<'static> {
        Ctx { schedule, device: Device::Cpu, links: &NoLinks, nesting: 0 }
    }
}

/// One batch flowing into a layer. `skip` is the tensor a Residual adds (network.md §4): inside a
/// Sequential the input of the previous stage, in the grid the input of the previous layer (or
/// the output of the remote-link target).
#[derive(Clone, Copy)]
pub struct Input<'a> {
    pub data: &'a [f32],
    pub batch: usize,
    pub shape: &'a [usize],
    pub skip: Option<&'a [f32]>,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [f32], batch: usize, shape: &'a [usize]) -> Input<'a> {
        Input { data, batch, shape, skip: None }
    }
    /// Values in one sample.
    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Check that the data holds `batch × product(shape)` values.
    pub fn check_len(&self) -> Result<()> {
        let want = self.batch * self.sample_len();
        if self.data.len() != want {
            return Err(Error::Shape(format!(
                "input has {} values but batch {} × sample shape {:?} needs {want}",
                self.data.len(),
                self.batch,
                self.shape
            )));
        }
        Ok(())
    }
}

/// Whatever a layer keeps from its training forward for its backward (its own type inside).
pub type State = Box<dyn Any + Send + Sync>;

/// What a training forward returns: the output, its sample shape, and the layer's saved state.
pub struct Saved {
    pub post: Vec<f32>,
    pub shape: Shape,
    pub state: State,
}

impl Saved {
    /// The layer's own state; a mismatch is a programming error inside one layer file.
    pub fn state<T: 'static>(&self) -> &T {
        self.state.downcast_ref::<T>().expect("a layer's backward receives the state its own forward saved")
    }
}

/// Gradients of one layer: the input gradient (empty when not asked for), the skip gradient
/// (Residual only; empty otherwise) and one gradient per trainable tensor it touched. The same
/// `Param` may appear more than once (shared layers, remote links); callers add them up.
pub struct Grads {
    pub input: Vec<f32>,
    pub skip: Vec<f32>,
    pub params: Vec<(Param, Vec<f32>)>,
}

impl Grads {
    pub fn new(input: Vec<f32>, params: Vec<(Param, Vec<f32>)>) -> Grads {
        Grads { input, skip: Vec::new(), params }
    }
}

/// What every layer family implements.
pub trait LayerOps: Send + Sync {
    /// The reference's type name (LayerType String()).
    fn type_name(&self) -> &'static str;
    /// The sample shape this layer produces from `input`; an error says why `input` does not fit.
    fn output_shape(&self, input: &[usize]) -> Result<Shape>;
    /// `output_shape` where remote links can be resolved (containers override it).
    fn output_shape_in(&self, input: &[usize], _links: &dyn Links) -> Result<Shape> {
        self.output_shape(input)
    }
    /// The sample shape the layer is built for, when it fixes one (the network's expected input).
    fn input_shape(&self) -> Option<Shape>;
    /// Trainable tensors the layer owns (containers: their children's; remote links excluded).
    fn params(&self) -> Vec<Param>;
    /// The tensors `morph_all` converts (biases and norm gains stay float32).
    fn morphable(&self) -> Vec<Param>;
    /// The element-wise activation the layer applies, if it has one.
    fn activation(&self) -> Option<Activation> {
        None
    }
    /// Forward for inference.
    fn infer(&self, x: Input, ctx: &Ctx) -> Result<Vec<f32>> {
        Ok(self.forward_train(x, ctx)?.post)
    }
    /// Forward that keeps what `backward` needs.
    fn forward_train(&self, x: Input, ctx: &Ctx) -> Result<Saved>;
    /// `need_input`: whether the caller uses `Grads::input` (the first layer's is skipped).
    fn backward(&self, x: Input, saved: &Saved, grad_out: &[f32], ctx: &Ctx, need_input: bool) -> Result<Grads>;
    /// A deep copy (fresh weight buffers; remote links still point at coordinates).
    fn deep_clone(&self) -> Layer;
    /// The layer's build-JSON fields (reference names), without coordinates.
    fn spec(&self) -> Map<String, Value>;
}

/// Every layer type. Add a family: its file, its variant here, its arm in `ops` and in
/// `spec::layer_from_fields`.
#[derive(Debug, Clone)]
pub enum Layer {
    Dense(Dense),
    Residual(Residual),
    Sequential(Sequential),
    Parallel(Parallel),
    Recurrent(Recurrent),
    Softmax(Softmax),
    SwiGlu(SwiGlu),
    /// RMSNorm and LayerNorm.
    Norm(Norm),
    Embedding(Embedding),
    KMeans(KMeans),
    MultiHeadAttention(Attention),
    /// CNN1/2/3 and ConvTransposed1D/2D/3D.
    Conv(Conv),
}

impl Layer {
    pub fn ops(&self) -> &dyn LayerOps {
        match self {
            Layer::Dense(l) => l,
            Layer::Residual(l) => l,
            Layer::Sequential(l) => l,
            Layer::Parallel(l) => l,
            Layer::Recurrent(l) => l,
            Layer::Softmax(l) => l,
            Layer::SwiGlu(l) => l,
            Layer::Norm(l) => l,
            Layer::Embedding(l) => l,
            Layer::KMeans(l) => l,
            Layer::MultiHeadAttention(l) => l,
            Layer::Conv(l) => l,
        }
    }
    pub fn type_name(&self) -> &'static str {
        self.ops().type_name()
    }
    pub fn output_shape(&self, input: &[usize]) -> Result<Shape> {
        self.ops().output_shape(input)
    }
    pub fn output_shape_in(&self, input: &[usize], links: &dyn Links) -> Result<Shape> {
        self.ops().output_shape_in(input, links)
    }
    pub fn input_shape(&self) -> Option<Shape> {
        self.ops().input_shape()
    }
    pub fn params(&self) -> Vec<Param> {
        self.ops().params()
    }
    pub fn morphable(&self) -> Vec<Param> {
        self.ops().morphable()
    }
    pub fn activation(&self) -> Option<Activation> {
        self.ops().activation()
    }
    pub fn infer(&self, x: Input, ctx: &Ctx) -> Result<Vec<f32>> {
        self.ops().infer(x, ctx)
    }
    pub fn forward_train(&self, x: Input, ctx: &Ctx) -> Result<Saved> {
        self.ops().forward_train(x, ctx)
    }
    pub fn backward(&self, x: Input, saved: &Saved, grad_out: &[f32], ctx: &Ctx, need_input: bool) -> Result<Grads> {
        self.ops().backward(x, saved, grad_out, ctx, need_input)
    }
    pub fn deep_clone(&self) -> Layer {
        self.ops().deep_clone()
    }
    pub fn spec(&self) -> Map<String, Value> {
        self.ops().spec()
    }
}

/// A fresh float32 parameter tensor.
pub fn new_param(values: Vec<f32>, shape: Vec<usize>, codec: crate::codec::Codec) -> Result<Param> {
    Ok(Arc::new(RwLock::new(WeightStore::new(values, shape, codec)?)))
}

/// A parameter with its own copy of the buffers.
pub fn copy_param(p: &Param) -> Param {
    Arc::new(RwLock::new(p.read().unwrap().clone()))
}

/// Check a gradient's length against the output the forward produced.
pub fn check_grad(kind: &str, grad_out: &[f32], saved: &Saved) -> Result<()> {
    if grad_out.len() != saved.post.len() {
        return Err(Error::Shape(format!(
            "{kind} gradient has {} values, but the layer produced {}",
            grad_out.len(),
            saved.post.len()
        )));
    }
    Ok(())
}

/// The training record of a layer whose output is f(pre): the activated output, with `pre`
/// kept for the backward's f'(pre).
pub fn activated(activation: Activation, pre: Vec<f32>, shape: Shape) -> Saved {
    let mut post = pre.clone();
    activation.apply_slice(&mut post);
    Saved { post, shape, state: Box::new(pre) }
}

/// grad_out ⊙ f'(pre): the gradient before an element-wise activation.
pub fn through_activation(activation: Activation, grad_out: &[f32], pre: &[f32]) -> Vec<f32> {
    match activation {
        Activation::Linear => grad_out.to_vec(),
        Activation::Relu => grad_out.iter().zip(pre).map(|(&g, &p)| if p > 0.0 { g } else { 0.0 }).collect(),
        act => grad_out.iter().zip(pre).map(|(&g, &p)| g * act.derivative(p)).collect(),
    }
}

/// Sum (tensor, gradient) pairs into one gradient per entry of `params` (a shared tensor can
/// appear several times); entries that got no gradient are None.
pub fn sum_gradients(params: &[Param], pairs: Vec<(Param, Vec<f32>)>) -> Result<Vec<Option<Vec<f32>>>> {
    let index: std::collections::HashMap<*const RwLock<WeightStore>, usize> =
        params.iter().enumerate().map(|(i, p)| (Arc::as_ptr(p), i)).collect();
    let mut sums: Vec<Option<Vec<f32>>> = (0..params.len()).map(|_| None).collect();
    for (p, g) in pairs {
        let i = *index.get(&Arc::as_ptr(&p)).ok_or_else(|| {
            Error::Value("a layer produced a gradient for a tensor outside the network (a remote link into another network?)".into())
        })?;
        match &mut sums[i] {
            Some(acc) => acc.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
            slot => *slot = Some(g),
        }
    }
    Ok(sums)
}
