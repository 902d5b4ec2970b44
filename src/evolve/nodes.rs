//! Node mutation's new layers: a fresh layer of a given type sized for the slot it replaces
//! (the sample shape the slot reads and the one it must hand on), built through the build JSON
//! so every type's own checks and initialisation apply. The caller keeps a candidate only when
//! the whole network still plans with it (mutate.rs).

use super::config::{NeatConfig, NodeType};
use crate::codec::Codec;
use crate::dna::layer_dtype;
use crate::dtype::DType;
use crate::layers::spec::{layer_from_value, Build};
use crate::layers::{Layer, Shape};
use serde_json::{json, Map, Value};

/// What the replaced slot reads and hands on, and the vocabulary of the token ids it reads (when
/// it reads the network input and the config says the input is token ids).
pub struct SlotFrame {
    pub input: Shape,
    pub output: Shape,
    pub token_vocab: Option<usize>,
}

impl SlotFrame {
    fn width(shape: &[usize]) -> usize {
        shape.last().copied().unwrap_or(1)
    }
    fn count(shape: &[usize]) -> usize {
        shape.iter().product()
    }
}

/// The most even split of `m` into `axes` factors, slowest axis first (12 → [3, 4]).
fn factorize(m: usize, axes: usize) -> Vec<usize> {
    if axes <= 1 {
        return vec![m];
    }
    let target = ((m as f64).powf(1.0 / axes as f64) + 1e-9).floor() as usize;
    let first = (1..=target.max(1)).rev().find(|&d| m.is_multiple_of(d)).unwrap_or(1);
    [vec![first], factorize(m / first, axes - 1)].concat()
}

/// The build-JSON entry of a `kind` layer for `frame`, or None when the type cannot be sized
/// for it (e.g. an Embedding where the slot does not read token ids).
fn entry(kind: NodeType, frame: &SlotFrame, old: &Layer, cfg: &NeatConfig) -> Option<Value> {
    let (input, output) = (&frame.input, &frame.output);
    let (d_in, n_in) = (SlotFrame::width(input), SlotFrame::count(input));
    let (d_out, n_out) = (SlotFrame::width(output), SlotFrame::count(output));
    let activation = old.activation().map_or("Linear", |a| a.name());
    let spec = match kind {
        NodeType::Dense if input[..input.len().saturating_sub(1)] == output[..output.len().saturating_sub(1)] => {
            json!({"type": "Dense", "input_height": d_in, "output_height": d_out, "activation": activation})
        }
        NodeType::Dense => json!({"type": "Dense", "input_height": n_in, "output_height": n_out, "activation": activation}),
        NodeType::Rnn | NodeType::Lstm => {
            let (steps, width) = if input.len() == 2 { (input[0], input[1]) } else { (1, n_in) };
            let (hidden, sequences) = if output.len() == 2 && output[0] == steps { (output[1], true) } else { (n_out, false) };
            json!({"type": kind.name(), "input_height": width, "output_height": hidden, "seq_length": steps,
                   "return_sequences": sequences, "activation": activation})
        }
        NodeType::RmsNorm | NodeType::LayerNorm => json!({"type": kind.name(), "input_height": d_in}),
        NodeType::SwiGlu => json!({"type": "SwiGLU", "input_height": d_in, "output_height": 2 * d_in}),
        NodeType::Mha => {
            let heads = (1..=cfg.default_num_heads.min(d_in)).rev().find(|&h| d_in.is_multiple_of(h))?;
            json!({"type": "MultiHeadAttention", "d_model": d_in, "num_heads": heads, "seq_length": n_in / d_in})
        }
        NodeType::Cnn1 | NodeType::Cnn2 | NodeType::Cnn3 | NodeType::ConvT1d | NodeType::ConvT2d | NodeType::ConvT3d => {
            let axes = kind.conv_axes();
            let (channels, spatial) = if input.len() == axes + 1 {
                (input[0], input[1..].to_vec())
            } else if n_in.is_multiple_of(cfg.default_in_channels) {
                (cfg.default_in_channels, factorize(n_in / cfg.default_in_channels, axes))
            } else {
                return None;
            };
            // Stride 1 and padding k/2 keep every spatial size (k odd); the filters fill the output.
            let positions: usize = spatial.iter().product();
            if !n_out.is_multiple_of(positions) {
                return None;
            }
            let mut m = Map::new();
            m.insert("type".into(), json!(kind.name()));
            m.insert("input_channels".into(), json!(channels));
            m.insert("filters".into(), json!(n_out / positions));
            m.insert("kernel_size".into(), json!(cfg.default_kernel_size));
            m.insert("padding".into(), json!(cfg.default_kernel_size / 2));
            m.insert("activation".into(), json!(activation));
            let names: &[&str] = match (kind, axes) {
                (NodeType::ConvT1d, _) => &["input_width"],
                (_, 1) => &["input_height"],
                (_, 2) => &["input_height", "input_width"],
                _ => &["input_depth", "input_height", "input_width"],
            };
            for (name, size) in names.iter().zip(&spatial) {
                m.insert((*name).into(), json!(size));
            }
            Value::Object(m)
        }
        NodeType::Embedding => {
            let vocab = frame.token_vocab?;
            n_out.is_multiple_of(n_in).then_some(())?;
            json!({"type": "Embedding", "vocab_size": vocab, "embedding_dim": n_out / n_in, "activation": activation})
        }
        NodeType::KMeans => {
            let mode = if *output == [cfg.default_num_clusters] { "probabilities" } else { "features" };
            json!({"type": "KMeans", "input_height": n_in, "num_clusters": cfg.default_num_clusters,
                   "output_mode": mode, "kmeans_temperature": 1.0, "activation": activation})
        }
        NodeType::Softmax => json!({"type": "Softmax"}),
        NodeType::Residual => json!({"type": "Residual"}),
    };
    Some(spec)
}

/// A fresh `kind` layer for `frame`, initialised from `seed`, computing in the replaced layer's
/// dtype where that dtype can hold its tensors (else float32). None when it cannot be built.
pub fn build(kind: NodeType, frame: &SlotFrame, old: &Layer, cfg: &NeatConfig, seed: u64, codec: Codec) -> Option<Layer> {
    let spec = entry(kind, frame, old, cfg)?;
    let layer = layer_from_value(&spec, format!("new {} layer", kind.name()), Build { seed, codec }).ok()?;
    let dtype = layer_dtype(old);
    if dtype == DType::Float32 {
        return Some(layer);
    }
    let morphable = layer.morphable();
    let fits = morphable.iter().all(|p| p.read().unwrap().clone().morph(dtype).is_ok());
    if fits {
        for p in &morphable {
            p.write().unwrap().morph(dtype).ok()?;
        }
    }
    Some(layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_are_as_even_as_possible() {
        assert_eq!(factorize(12, 2), vec![3, 4]);
        assert_eq!(factorize(16, 2), vec![4, 4]);
        assert_eq!(factorize(64, 3), vec![4, 4, 4]);
        assert_eq!(factorize(7, 3), vec![1, 1, 7]);
    }
}
