//! NEATConfig (reference dna_evolution.md §4, DefaultNEATConfig): mutation rates, the layer
//! types a node mutation may create and their defaults, read from a JSON object whose fields
//! are checked one by one (errors name the field).

use crate::error::{Error, Result};
use crate::layers::Layer;
use serde_json::{Map, Value};

/// The layer types a node mutation can create (the reference's AllowedLayerTypes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeType {
    Dense,
    Rnn,
    Lstm,
    RmsNorm,
    SwiGlu,
    Mha,
    LayerNorm,
    Cnn1,
    Cnn2,
    Cnn3,
    ConvT1d,
    ConvT2d,
    ConvT3d,
    Embedding,
    KMeans,
    Softmax,
    Residual,
}

impl NodeType {
    pub const ALL: [NodeType; 17] = [
        NodeType::Dense, NodeType::Rnn, NodeType::Lstm, NodeType::RmsNorm, NodeType::SwiGlu, NodeType::Mha,
        NodeType::LayerNorm, NodeType::Cnn1, NodeType::Cnn2, NodeType::Cnn3, NodeType::ConvT1d, NodeType::ConvT2d,
        NodeType::ConvT3d, NodeType::Embedding, NodeType::KMeans, NodeType::Softmax, NodeType::Residual,
    ];

    /// The layer's type name (as `Layer::type_name` reports it).
    pub fn name(self) -> &'static str {
        match self {
            NodeType::Dense => "Dense",
            NodeType::Rnn => "RNN",
            NodeType::Lstm => "LSTM",
            NodeType::RmsNorm => "RMSNorm",
            NodeType::SwiGlu => "SwiGLU",
            NodeType::Mha => "MultiHeadAttention",
            NodeType::LayerNorm => "LayerNorm",
            NodeType::Cnn1 => "CNN1",
            NodeType::Cnn2 => "CNN2",
            NodeType::Cnn3 => "CNN3",
            NodeType::ConvT1d => "ConvTransposed1D",
            NodeType::ConvT2d => "ConvTransposed2D",
            NodeType::ConvT3d => "ConvTransposed3D",
            NodeType::Embedding => "Embedding",
            NodeType::KMeans => "KMeans",
            NodeType::Softmax => "Softmax",
            NodeType::Residual => "Residual",
        }
    }

    /// Case-insensitive; "MHA" and "Attention" name MultiHeadAttention.
    pub fn parse(name: &str) -> Result<NodeType> {
        let upper = name.to_ascii_uppercase();
        if matches!(upper.as_str(), "MHA" | "ATTENTION") {
            return Ok(NodeType::Mha);
        }
        NodeType::ALL.into_iter().find(|t| t.name().to_ascii_uppercase() == upper).ok_or_else(|| {
            let known: Vec<&str> = NodeType::ALL.iter().map(|t| t.name()).collect();
            Error::Value(format!(
                "allowed_layer_types: {name:?} is not a layer type a node mutation can create; expected one of {}",
                known.join(", ")
            ))
        })
    }

    pub fn of(layer: &Layer) -> Option<NodeType> {
        NodeType::ALL.into_iter().find(|t| t.name() == layer.type_name())
    }

    /// Number of spatial axes of a convolution type (0 for the others).
    pub fn conv_axes(self) -> usize {
        match self {
            NodeType::Cnn1 | NodeType::ConvT1d => 1,
            NodeType::Cnn2 | NodeType::ConvT2d => 2,
            NodeType::Cnn3 | NodeType::ConvT3d => 3,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NeatConfig {
    /// Per layer: probability of adding U(−scale, scale) to every weight.
    pub weight_perturb_rate: f64,
    pub weight_perturb_scale: f64,
    /// Per layer: probability of replacing it by a fresh layer of another allowed type.
    pub node_mutate_rate: f64,
    /// Per network: probability of adding one remote link, and of removing one.
    pub connection_add_rate: f64,
    pub connection_drop_rate: f64,
    /// Per layer: probability of drawing a new activation.
    pub activation_mut_rate: f64,
    /// Per layer: probability of flipping its disabled flag.
    pub layer_toggle_rate: f64,
    pub allowed_layer_types: Vec<NodeType>,
    /// Attention heads of a new MultiHeadAttention (lowered until they divide its width).
    pub default_num_heads: usize,
    /// Channels a new convolution reads from a flat input.
    pub default_in_channels: usize,
    /// Kernel size of a new convolution (odd: the layer keeps its input's size).
    pub default_kernel_size: usize,
    /// Centroids of a new KMeans.
    pub default_num_clusters: usize,
    /// The input sample shape structural mutations keep the network valid for (None: the
    /// network's own input shape).
    pub input_shape: Option<Vec<usize>>,
    /// The network input is token ids below this bound: a slot reading the input may become an
    /// Embedding of this many rows (None: no Embedding is created).
    pub token_vocab: Option<usize>,
    pub seed: u64,
}

impl Default for NeatConfig {
    /// The reference's DefaultNEATConfig (seed 0 instead of the clock).
    fn default() -> NeatConfig {
        NeatConfig {
            weight_perturb_rate: 0.8,
            weight_perturb_scale: 0.05,
            node_mutate_rate: 0.1,
            connection_add_rate: 0.05,
            connection_drop_rate: 0.02,
            activation_mut_rate: 0.1,
            layer_toggle_rate: 0.02,
            allowed_layer_types: NodeType::ALL.to_vec(),
            default_num_heads: 4,
            default_in_channels: 1,
            default_kernel_size: 3,
            default_num_clusters: 8,
            input_shape: None,
            token_vocab: None,
            seed: 0,
        }
    }
}

const RATES: [&str; 7] = [
    "weight_perturb_rate", "node_mutate_rate", "connection_add_rate", "connection_drop_rate",
    "activation_mut_rate", "layer_toggle_rate", "weight_perturb_scale",
];
const SIZES: [&str; 4] = ["default_num_heads", "default_in_channels", "default_kernel_size", "default_num_clusters"];

fn field_err(name: &str, msg: impl std::fmt::Display) -> Error {
    Error::Value(format!("NEAT config field {name:?} {msg}"))
}

fn positive(name: &str, v: &Value) -> Result<usize> {
    v.as_u64().filter(|&n| n > 0).map(|n| n as usize).ok_or_else(|| field_err(name, format!("must be a positive integer, got {v}")))
}

impl NeatConfig {
    /// Read a JSON object; absent fields keep their defaults, unknown ones are errors.
    pub fn from_value(value: &Value) -> Result<NeatConfig> {
        let obj: &Map<String, Value> = value.as_object().ok_or_else(|| Error::Value("a NEAT config must be a JSON object".into()))?;
        let mut c = NeatConfig::default();
        for (name, v) in obj.iter().filter(|(_, v)| !v.is_null()) {
            let number = || v.as_f64().ok_or_else(|| field_err(name, format!("must be a number, got {v}")));
            match name.as_str() {
                "weight_perturb_rate" => c.weight_perturb_rate = number()?,
                "weight_perturb_scale" => c.weight_perturb_scale = number()?,
                "node_mutate_rate" => c.node_mutate_rate = number()?,
                "connection_add_rate" => c.connection_add_rate = number()?,
                "connection_drop_rate" => c.connection_drop_rate = number()?,
                "activation_mut_rate" => c.activation_mut_rate = number()?,
                "layer_toggle_rate" => c.layer_toggle_rate = number()?,
                "default_num_heads" => c.default_num_heads = positive(name, v)?,
                "default_in_channels" => c.default_in_channels = positive(name, v)?,
                "default_kernel_size" => c.default_kernel_size = positive(name, v)?,
                "default_num_clusters" => c.default_num_clusters = positive(name, v)?,
                "seed" => c.seed = v.as_u64().ok_or_else(|| field_err(name, format!("must be a non-negative integer, got {v}")))?,
                "allowed_layer_types" => {
                    let list = v.as_array().ok_or_else(|| field_err(name, format!("must be a list of layer type names, got {v}")))?;
                    c.allowed_layer_types = list
                        .iter()
                        .map(|t| t.as_str().ok_or_else(|| field_err(name, format!("must hold type names, got {t}"))).and_then(NodeType::parse))
                        .collect::<Result<_>>()?;
                }
                "token_vocab" => c.token_vocab = Some(positive(name, v)?),
                "input_shape" => {
                    let list = v.as_array().ok_or_else(|| field_err(name, format!("must be a list of sizes, got {v}")))?;
                    c.input_shape = Some(list.iter().map(|s| positive(name, s)).collect::<Result<_>>()?);
                }
                _ => {
                    let mut known: Vec<&str> = RATES.iter().chain(&SIZES).copied().collect();
                    known.extend(["allowed_layer_types", "input_shape", "token_vocab", "seed"]);
                    return Err(Error::Value(format!("unknown NEAT config field {name:?}; known fields: {}", known.join(", "))));
                }
            }
        }
        c.check()?;
        Ok(c)
    }

    /// Rates are probabilities, the scale a finite non-negative number, the kernel odd.
    pub fn check(&self) -> Result<()> {
        let values = [
            self.weight_perturb_rate, self.node_mutate_rate, self.connection_add_rate, self.connection_drop_rate,
            self.activation_mut_rate, self.layer_toggle_rate,
        ];
        for (name, v) in RATES.iter().zip(values) {
            if !(0.0..=1.0).contains(&v) {
                return Err(field_err(name, format!("is a probability and must be in [0, 1], got {v}")));
            }
        }
        if !(self.weight_perturb_scale.is_finite() && self.weight_perturb_scale >= 0.0) {
            return Err(field_err("weight_perturb_scale", format!("must be a finite number ≥ 0, got {}", self.weight_perturb_scale)));
        }
        for (name, v) in SIZES.iter().zip([self.default_num_heads, self.default_in_channels, self.default_kernel_size, self.default_num_clusters]) {
            if v == 0 {
                return Err(field_err(name, "must be a positive integer, got 0"));
            }
        }
        if self.default_kernel_size.is_multiple_of(2) {
            return Err(field_err("default_kernel_size", format!("must be odd (a new convolution keeps its input's size), got {}", self.default_kernel_size)));
        }
        if let Some(shape) = &self.input_shape {
            if shape.is_empty() || shape.contains(&0) {
                return Err(field_err("input_shape", format!("must list positive sizes, got {shape:?}")));
            }
        }
        Ok(())
    }

    /// Whether any mutation may change the network's structure (these need an input shape).
    pub fn structural(&self) -> bool {
        self.node_mutate_rate > 0.0 || self.layer_toggle_rate > 0.0 || self.connection_add_rate > 0.0 || self.connection_drop_rate > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_read_and_checked() {
        let c = NeatConfig::from_value(&json!({"node_mutate_rate": 0.5, "allowed_layer_types": ["dense", "MHA"], "seed": 7})).unwrap();
        assert_eq!((c.node_mutate_rate, c.seed), (0.5, 7));
        assert_eq!(c.allowed_layer_types, vec![NodeType::Dense, NodeType::Mha]);
        for bad in [json!({"node_mutate_rate": 1.5}), json!({"default_kernel_size": 4}), json!({"colour": 1}), json!({"allowed_layer_types": ["Parallel"]})] {
            assert!(matches!(NeatConfig::from_value(&bad), Err(Error::Value(_))), "{bad}");
        }
    }
}
