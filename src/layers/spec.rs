//! A layer's entry in the reference's build JSON (network.md §2) ⇄ `Layer`. Fields are read by
//! hand so an error names the field and where it is; unknown fields are rejected (typos do not
//! pass silently). Weights start from a seed (deterministic, unlike the reference's time seed).

use super::{Attention, Conv, Dense, Layer, Parallel, Recurrent, Residual, Sequential, Softmax, conv};
use crate::activation::Activation;
use crate::codec::Codec;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::coord::Coord;
use serde_json::{json, Map, Value};

/// LayerSpec fields the reference's build JSON defines (all accepted; the ones a layer type does
/// not use are ignored as in the reference), plus our own: `bias`, `is_disabled`, `epsilon`,
/// `rope_freq_base`, `head_dim`, `qk_norm`, `causal`, `output_padding`, `kmeans_temperature`,
/// `seed`, `gate` (a filter gate's layer spec) and `return_sequences`.
pub const LAYER_FIELDS: &[&str] = &[
    "z", "y", "x", "l", "type", "activation", "dtype", "input_height", "input_width", "input_depth",
    "output_height", "output_width", "output_depth", "input_channels", "filters", "kernel_size",
    "stride", "padding", "num_heads", "num_kv_heads", "d_model", "seq_length", "vocab_size",
    "embedding_dim", "num_clusters", "output_mode", "parallel_branches", "combine_mode",
    "sequential_layers", "is_remote_link", "target_z", "target_y", "target_x", "target_l",
    "use_tiling", "tile_size", "softmax_type", "temperature", "softmax_rows", "softmax_cols",
    "entmax_alpha", "mask", "hierarchy_levels", "bias", "is_disabled", "epsilon", "rope_freq_base",
    "head_dim", "qk_norm", "causal", "output_padding", "kmeans_temperature", "seed", "gate",
    "return_sequences", "max_seq_len",
];

/// One JSON object being read, with a description of where it is for error messages.
pub struct Fields<'a> {
    pub obj: &'a Map<String, Value>,
    pub context: String,
}

impl<'a> Fields<'a> {
    pub fn new(obj: &'a Map<String, Value>, context: impl Into<String>) -> Fields<'a> {
        Fields { obj, context: context.into() }
    }
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name).filter(|v| !v.is_null())
    }
    pub fn err(&self, name: &str, msg: impl std::fmt::Display) -> Error {
        Error::Spec(format!("{}: field {name:?} {msg}", self.context))
    }
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    pub fn usize(&self, name: &str, default: usize) -> Result<usize> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.as_i64() {
                Some(i) if i >= 0 => Ok(i as usize),
                _ => Err(self.err(name, format!("must be a non-negative integer, got {v}"))),
            },
        }
    }
    /// A size that must be ≥ 1 (`default` when absent; absent with default 0 is an error).
    pub fn positive(&self, name: &str, default: usize, kind: &str) -> Result<usize> {
        match self.usize(name, default)? {
            0 => Err(self.err(name, format!("must be > 0 for {kind}"))),
            v => Ok(v),
        }
    }
    pub fn f64(&self, name: &str, default: f64) -> Result<f64> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.as_f64().filter(|f| f.is_finite()).ok_or_else(|| self.err(name, format!("must be a finite number, got {v}"))),
        }
    }
    pub fn str(&self, name: &str) -> Result<&'a str> {
        match self.get(name) {
            None => Ok(""),
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(self.err(name, format!("must be a string, got {v}"))),
        }
    }
    pub fn bool(&self, name: &str, default: bool) -> Result<bool> {
        match self.get(name) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.err(name, format!("must be true or false, got {v}"))),
        }
    }
    pub fn list(&self, name: &str) -> Result<&'a [Value]> {
        match self.get(name) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(v) => Err(self.err(name, format!("must be a list, got {v}"))),
        }
    }
    pub fn object(&self, name: &str) -> Result<Option<&'a Map<String, Value>>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(v) => Err(self.err(name, format!("must be an object, got {v}"))),
        }
    }
    pub fn reject_unknown(&self, known: &[&str]) -> Result<()> {
        match self.obj.keys().find(|k| !known.contains(&k.as_str())) {
            Some(key) => Err(Error::Spec(format!("{}: unknown field {key:?}", self.context))),
            None => Ok(()),
        }
    }
    /// `activation`; empty means linear (the reference's JSON default).
    pub fn activation(&self) -> Result<Activation> {
        Activation::parse(self.str("activation")?).map_err(|e| self.err("activation", e))
    }
    /// `dtype`; empty means float32.
    pub fn dtype(&self) -> Result<DType> {
        match self.str("dtype")? {
            "" => Ok(DType::Float32),
            name => DType::parse(name).map_err(|e| Error::DType(format!("{}: field \"dtype\" {e}", self.context))),
        }
    }
}

/// What building a layer needs besides its fields: the seed its weights start from and the
/// quantisation code book.
#[derive(Debug, Clone, Copy)]
pub struct Build {
    pub seed: u64,
    pub codec: Codec,
}

impl Build {
    /// The seed for the `i`-th child of a container (distinct, deterministic).
    pub fn child(self, i: usize) -> Build {
        Build { seed: self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(i as u64 + 1), ..self }
    }
}

/// Build one layer from its JSON object; `context` says where it is ("layer at (0,0,0,1)",
/// "branch 2 of the layer at ..."). The weights are morphed to the entry's `dtype`.
pub fn layer_from_fields(f: &Fields, build: Build) -> Result<Layer> {
    f.reject_unknown(LAYER_FIELDS)?;
    let build = Build { seed: f.usize("seed", build.seed as usize)? as u64, ..build };
    let type_name = f.str("type")?;
    let layer = match type_name.to_ascii_uppercase().as_str() {
        "" | "DENSE" => Layer::Dense(Dense::from_spec(f, build)?),
        "RESIDUAL" => Layer::Residual(Residual),
        "SEQUENTIAL" => Layer::Sequential(Sequential::from_spec(f, build)?),
        "PARALLEL" => Layer::Parallel(Parallel::from_spec(f, build)?),
        "RNN" => Layer::Recurrent(Recurrent::from_spec(f, build, false)?),
        "LSTM" => Layer::Recurrent(Recurrent::from_spec(f, build, true)?),
        "SOFTMAX" => Layer::Softmax(Softmax::from_spec(f, build)?),
        "SWIGLU" => Layer::SwiGlu(super::SwiGlu::from_spec(f, build)?),
        "RMSNORM" => Layer::Norm(super::Norm::from_spec(f, build, super::norm::NormKind::Rms)?),
        "LAYERNORM" => Layer::Norm(super::Norm::from_spec(f, build, super::norm::NormKind::Layer)?),
        "EMBEDDING" => Layer::Embedding(super::Embedding::from_spec(f, build)?),
        "KMEANS" => Layer::KMeans(super::KMeans::from_spec(f, build)?),
        "MULTIHEADATTENTION" | "MHA" | "ATTENTION" => Layer::MultiHeadAttention(Attention::from_spec(f, build)?),
        upper if conv::kind_of(upper).is_some() => Layer::Conv(Conv::from_spec(f, build)?),
        other => return Err(f.err("type", format!("names an unknown layer type {other:?}"))),
    };
    // Containers morph their children from the children's own entries; a dtype on the
    // container itself applies to everything inside it.
    if f.has("dtype") || !is_container(&layer) {
        let dtype = f.dtype()?;
        for p in layer.morphable() {
            p.write().unwrap().morph(dtype)?;
        }
    }
    Ok(layer)
}

/// Build a layer from a JSON object value (as found in `parallel_branches` or a builder).
pub fn layer_from_value(value: &Value, context: String, build: Build) -> Result<Layer> {
    let obj = value.as_object().ok_or_else(|| Error::Spec(format!("{context} must be a JSON object, got {value}")))?;
    layer_from_fields(&Fields::new(obj, context), build)
}

/// The build-JSON entry of a layer, with its weight dtype and without coordinates.
pub fn layer_to_value(layer: &Layer) -> Map<String, Value> {
    let mut spec = layer.spec();
    if is_container(layer) {
        return spec;
    }
    if let Some(p) = layer.morphable().first() {
        spec.insert("dtype".into(), Value::from(p.read().unwrap().dtype().name()));
    }
    spec
}

fn is_container(layer: &Layer) -> bool {
    matches!(layer, Layer::Parallel(_) | Layer::Sequential(_))
}

/// `target_z/y/x/l` of an entry with `is_remote_link: true`.
pub fn link_target(f: &Fields) -> Result<Option<Coord>> {
    if !f.bool("is_remote_link", false)? {
        return Ok(None);
    }
    Ok(Some(Coord { z: f.usize("target_z", 0)?, y: f.usize("target_y", 0)?, x: f.usize("target_x", 0)?, l: f.usize("target_l", 0)? }))
}

/// Write a remote link into a layer entry.
pub fn insert_link(m: &mut Map<String, Value>, target: Coord) {
    m.insert("is_remote_link".into(), json!(true));
    for (k, v) in [("target_z", target.z), ("target_y", target.y), ("target_x", target.x), ("target_l", target.l)] {
        m.insert(k.into(), json!(v));
    }
}
