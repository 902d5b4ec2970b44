//! Each layer's tensors by name (the keys of checkpoints and safetensors files) and the
//! reference's flat weight layout (layers.md: one Master per layer holding every block in a fixed
//! order, e.g. MHA = Wq | Wk | Wv | Wo | bq | bk | bv | bo). Containers own no tensors here: their
//! members are layers of their own.

use super::recurrent::Cell;
use super::{Layer, Param};

/// One tensor of a layer. `morphable`: converted by `morph` (weights); the others (biases, Q/K
/// norm gains) stay float32 with the standard code book.
pub struct Named {
    pub name: &'static str,
    pub param: Param,
    pub morphable: bool,
}

/// A run of the reference's flat layout: `len` values of a tensor from `start`, or zeros where
/// the reference has a block this layer does not (biases of a bias-free MHA or SwiGLU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    Tensor { name: &'static str, start: usize, len: usize },
    Zeros(usize),
}

impl Block {
    pub fn len(&self) -> usize {
        match self {
            Block::Tensor { len, .. } | Block::Zeros(len) => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn named(name: &'static str, param: &Param, morphable: bool) -> Named {
    Named { name, param: param.clone(), morphable }
}

/// The layer's own tensors, in the order of its `params()`.
pub fn named_tensors(layer: &Layer) -> Vec<Named> {
    let mut out = Vec::new();
    match layer {
        Layer::Dense(l) => {
            out.push(named("weight", &l.weights, true));
            out.extend(l.bias.iter().map(|b| named("bias", b, false)));
        }
        Layer::Conv(l) => {
            out.push(named("weight", &l.weights, true));
            out.extend(l.bias.iter().map(|b| named("bias", b, false)));
        }
        Layer::Norm(l) => {
            out.push(named("weight", &l.gain, true));
            out.extend(l.shift.iter().map(|b| named("bias", b, true)));
        }
        Layer::MultiHeadAttention(l) => {
            for (name, p) in [("q_proj", &l.wq), ("k_proj", &l.wk), ("v_proj", &l.wv), ("o_proj", &l.wo)] {
                out.push(named(name, p, true));
            }
            if let Some(b) = &l.biases {
                for (name, p) in [("q_bias", &b.q), ("k_bias", &b.k), ("v_bias", &b.v), ("o_bias", &b.o)] {
                    out.push(named(name, p, false));
                }
            }
            if let Some(n) = &l.qk_norm {
                out.extend([named("q_norm", &n.q, false), named("k_norm", &n.k, false)]);
            }
        }
        Layer::SwiGlu(l) => {
            for (name, p) in [("gate_proj", &l.w_gate), ("up_proj", &l.w_up), ("down_proj", &l.w_down)] {
                out.push(named(name, p, true));
            }
            if let Some(b) = &l.biases {
                for (name, p) in [("gate_bias", &b.gate), ("up_bias", &b.up), ("down_bias", &b.down)] {
                    out.push(named(name, p, false));
                }
            }
        }
        Layer::Recurrent(l) => {
            out.extend([named("weight_ih", &l.w_ih, true), named("weight_hh", &l.w_hh, true), named("bias", &l.bias, false)]);
        }
        Layer::Embedding(l) => out.push(named("weight", &l.table, true)),
        Layer::KMeans(l) => out.push(named("centroids", &l.centroids, true)),
        Layer::Softmax(_) | Layer::Residual(_) | Layer::Parallel(_) | Layer::Sequential(_) => {}
    }
    out
}

fn whole(name: &'static str, p: &Param) -> Block {
    Block::Tensor { name, start: 0, len: p.read().unwrap().len() }
}

/// The reference's flat weight layout of this layer (empty: the reference stores no weights).
/// Tensors outside it (Dense/convolution biases, Q/K norm gains) are not part of it.
pub fn reference_layout(layer: &Layer) -> Vec<Block> {
    let optional = |name: &'static str, p: Option<&Param>, len: usize| p.map_or(Block::Zeros(len), |p| whole(name, p));
    match layer {
        Layer::Dense(l) => vec![whole("weight", &l.weights)],
        Layer::Conv(l) => vec![whole("weight", &l.weights)],
        Layer::Norm(l) => {
            let mut v = vec![whole("weight", &l.gain)];
            v.extend(l.shift.iter().map(|b| whole("bias", b)));
            v
        }
        Layer::MultiHeadAttention(l) => {
            let c = &l.config;
            let (d, q, kv) = (c.d_model, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
            let b = l.biases.as_ref();
            vec![
                whole("q_proj", &l.wq),
                whole("k_proj", &l.wk),
                whole("v_proj", &l.wv),
                whole("o_proj", &l.wo),
                optional("q_bias", b.map(|b| &b.q), q),
                optional("k_bias", b.map(|b| &b.k), kv),
                optional("v_bias", b.map(|b| &b.v), kv),
                optional("o_bias", b.map(|b| &b.o), d),
            ]
        }
        Layer::SwiGlu(l) => {
            let (h, i) = (l.model_size, l.hidden_size);
            let b = l.biases.as_ref();
            vec![
                whole("gate_proj", &l.w_gate),
                whole("up_proj", &l.w_up),
                whole("down_proj", &l.w_down),
                optional("gate_bias", b.map(|b| &b.gate), i),
                optional("up_bias", b.map(|b| &b.up), i),
                optional("down_bias", b.map(|b| &b.down), h),
            ]
        }
        Layer::Recurrent(l) => {
            // RNN: W_ih | W_hh | b. LSTM: per gate (i, f, g, o) its rows of W_ih | W_hh | b.
            let (h, input) = (l.hidden_size, l.input_size);
            let gates = if l.cell == Cell::Lstm { 4 } else { 1 };
            (0..gates)
                .flat_map(|g| {
                    [
                        Block::Tensor { name: "weight_ih", start: g * h * input, len: h * input },
                        Block::Tensor { name: "weight_hh", start: g * h * h, len: h * h },
                        Block::Tensor { name: "bias", start: g * h, len: h },
                    ]
                })
                .collect()
        }
        Layer::Embedding(l) => vec![whole("weight", &l.table)],
        Layer::KMeans(l) => vec![whole("centroids", &l.centroids)],
        Layer::Softmax(_) | Layer::Residual(_) | Layer::Parallel(_) | Layer::Sequential(_) => Vec::new(),
    }
}
