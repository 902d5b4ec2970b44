//! The reference's build JSON (network.md §2) ⇄ VolumetricNetwork. Fields are read by hand so an
//! error names the field and the coordinate; unknown fields are rejected (typos do not pass
//! silently). Layer weights are initialised from `seed` (deterministic, unlike the reference's
//! time seed); the build JSON carries no weights.

use super::{Coord, VolumetricNetwork};
use crate::activation::Activation;
use crate::codec::Codec;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::layers::{Dense, Layer};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// LayerSpec fields the reference's build JSON defines (all accepted; the ones a layer type does
/// not use are ignored as in the reference), plus our `bias` and `is_disabled`.
const LAYER_FIELDS: &[&str] = &[
    "z", "y", "x", "l", "type", "activation", "dtype", "input_height", "input_width", "input_depth",
    "output_height", "output_width", "output_depth", "input_channels", "filters", "kernel_size",
    "stride", "padding", "num_heads", "num_kv_heads", "d_model", "seq_length", "vocab_size",
    "embedding_dim", "num_clusters", "output_mode", "parallel_branches", "combine_mode",
    "sequential_layers", "is_remote_link", "target_z", "target_y", "target_x", "target_l",
    "use_tiling", "tile_size", "softmax_type", "temperature", "softmax_rows", "softmax_cols",
    "entmax_alpha", "mask", "hierarchy_levels", "bias", "is_disabled",
];
const TOP_FIELDS: &[&str] = &["id", "depth", "rows", "cols", "layers_per_cell", "layers"];

struct Fields<'a> {
    obj: &'a Map<String, Value>,
    context: String,
}

impl<'a> Fields<'a> {
    fn usize(&self, name: &str, default: usize) -> Result<usize> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => match v.as_i64() {
                Some(i) if i >= 0 => Ok(i as usize),
                _ => Err(Error::Spec(format!("{}: field {name:?} must be a non-negative integer, got {v}", self.context))),
            },
        }
    }
    fn str(&self, name: &str) -> Result<&'a str> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(""),
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(Error::Spec(format!("{}: field {name:?} must be a string, got {v}", self.context))),
        }
    }
    fn bool(&self, name: &str) -> Result<bool> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(Error::Spec(format!("{}: field {name:?} must be true or false, got {v}", self.context))),
        }
    }
    fn reject_unknown(&self, known: &[&str]) -> Result<()> {
        for key in self.obj.keys() {
            if !known.contains(&key.as_str()) {
                return Err(Error::Spec(format!("{}: unknown field {key:?}", self.context)));
            }
        }
        Ok(())
    }
}

/// Build a network from the reference's build JSON.
pub fn from_value(spec: &Value, seed: u64, codec: Codec) -> Result<VolumetricNetwork> {
    let obj = spec.as_object().ok_or_else(|| Error::Spec("network spec must be a JSON object".into()))?;
    let top = Fields { obj, context: "network spec".into() };
    top.reject_unknown(TOP_FIELDS)?;
    let mut net = VolumetricNetwork::new(
        top.usize("depth", 1)?,
        top.usize("rows", 1)?,
        top.usize("cols", 1)?,
        top.usize("layers_per_cell", 1)?,
    )?;
    let layers = match obj.get("layers") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(a)) => &a[..],
        Some(v) => return Err(Error::Spec(format!("network spec: field \"layers\" must be a list, got {v}"))),
    };
    for (i, entry) in layers.iter().enumerate() {
        let obj = entry.as_object().ok_or_else(|| Error::Spec(format!("layers[{i}] must be an object")))?;
        let probe = Fields { obj, context: format!("layers[{i}]") };
        let coord = Coord { z: probe.usize("z", 0)?, y: probe.usize("y", 0)?, x: probe.usize("x", 0)?, l: probe.usize("l", 0)? };
        let fields = Fields { obj, context: format!("layer at {coord}") };
        net.index(coord)?;
        let layer = layer_from_fields(&fields, seed.wrapping_add(i as u64), codec)?;
        net.set_layer(coord, Arc::new(layer))?;
        if fields.bool("is_disabled")? {
            net.set_disabled(coord, true)?;
        }
    }
    net.validate_chain()?;
    Ok(net)
}

fn layer_from_fields(f: &Fields, seed: u64, codec: Codec) -> Result<Layer> {
    f.reject_unknown(LAYER_FIELDS)?;
    let type_name = f.str("type")?;
    let activation = Activation::parse(f.str("activation")?).map_err(|e| Error::Spec(format!("{}: field \"activation\": {e}", f.context)))?;
    let dtype_name = f.str("dtype")?;
    let dtype = if dtype_name.is_empty() {
        DType::Float32
    } else {
        DType::parse(dtype_name).map_err(|e| Error::Spec(format!("{}: field \"dtype\": {e}", f.context)))?
    };
    let layer = match type_name.to_ascii_uppercase().as_str() {
        "" | "DENSE" => {
            let (inp, out) = (f.usize("input_height", 0)?, f.usize("output_height", 0)?);
            for (name, v) in [("input_height", inp), ("output_height", out)] {
                if v == 0 {
                    return Err(Error::Spec(format!("{}: Dense needs field {name:?} > 0", f.context)));
                }
            }
            Layer::Dense(Dense::new(inp, out, activation, f.bool("bias")?, seed, codec)?)
        }
        other => {
            return Err(Error::Spec(format!(
                "{}: field \"type\": layer type {other:?} is not part of this build (available: Dense)",
                f.context
            )))
        }
    };
    for p in layer.morphable() {
        p.write().unwrap().morph(dtype)?;
    }
    Ok(layer)
}

/// The build JSON of a layer (the reference's field names and String() spellings).
pub fn layer_to_value(layer: &Layer, coord: Coord, disabled: bool) -> Value {
    let mut obj = match layer {
        Layer::Dense(d) => {
            let mut o = json!({
                "type": "Dense",
                "activation": d.activation.name(),
                "dtype": d.weights.read().unwrap().dtype().name(),
                "input_height": d.input_size,
                "output_height": d.output_size,
            });
            if d.bias.is_some() {
                o["bias"] = json!(true);
            }
            o
        }
    };
    let m = obj.as_object_mut().unwrap();
    for (k, v) in [("z", coord.z), ("y", coord.y), ("x", coord.x), ("l", coord.l)] {
        m.insert(k.into(), json!(v));
    }
    if disabled {
        m.insert("is_disabled".into(), json!(true));
    }
    obj
}

pub fn to_value(net: &VolumetricNetwork) -> Value {
    let layers: Vec<Value> = net.occupied().map(|(c, s)| layer_to_value(&s.layer, c, s.disabled)).collect();
    json!({
        "depth": net.depth,
        "rows": net.rows,
        "cols": net.cols,
        "layers_per_cell": net.layers_per_cell,
        "layers": layers,
    })
}
