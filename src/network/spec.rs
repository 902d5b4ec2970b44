//! The reference's build JSON (network.md §2) ⇄ VolumetricNetwork: the grid fields and, per
//! layer entry, its coordinate, `is_disabled` and top-level remote link. The layer itself is read
//! by `layers::spec` (shared with container branches and the Python builders).

use super::{exec, Coord, VolumetricNetwork};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::layers::spec::{insert_link, layer_from_fields, layer_to_value, link_target, Build, Fields};
use serde_json::{json, Value};
use std::sync::Arc;

const TOP_FIELDS: &[&str] = &["id", "depth", "rows", "cols", "layers_per_cell", "layers"];

/// Build a network from the reference's build JSON.
pub fn from_value(spec: &Value, seed: u64, codec: Codec) -> Result<VolumetricNetwork> {
    let obj = spec.as_object().ok_or_else(|| Error::Spec("network spec must be a JSON object".into()))?;
    let top = Fields::new(obj, "network spec");
    top.reject_unknown(TOP_FIELDS)?;
    let mut net = VolumetricNetwork::new(top.usize("depth", 1)?, top.usize("rows", 1)?, top.usize("cols", 1)?, top.usize("layers_per_cell", 1)?)?;
    let mut links = Vec::new();
    for (i, entry) in top.list("layers")?.iter().enumerate() {
        let obj = entry.as_object().ok_or_else(|| Error::Spec(format!("layers[{i}] must be an object")))?;
        let probe = Fields::new(obj, format!("layers[{i}]"));
        let coord = Coord { z: probe.usize("z", 0)?, y: probe.usize("y", 0)?, x: probe.usize("x", 0)?, l: probe.usize("l", 0)? };
        net.index(coord).map_err(|e| Error::Spec(format!("layers[{i}]: {e}")))?;
        let fields = Fields::new(obj, format!("layer at {coord}"));
        // Inside a spec, an unknown dtype name is a spec error like any other bad field.
        let layer = layer_from_fields(&fields, Build { seed: seed.wrapping_add(i as u64), codec }).map_err(|e| match e {
            Error::DType(m) => Error::Spec(m),
            other => other,
        })?;
        net.set_layer(coord, Arc::new(layer))?;
        if fields.bool("is_disabled", false)? {
            net.set_disabled(coord, true)?;
        }
        if let Some(target) = link_target(&fields)? {
            links.push((coord, target));
        }
    }
    for (coord, target) in links {
        net.set_link(coord, Some(target))?;
    }
    // A spec whose widths do not chain is a spec error, whatever input it would get (a grid
    // with feedback links has no one-pass plan: the systolic mesh checks it as it runs).
    if let Some(shape) = exec::expected_input_shape(&net).filter(|_| !net.has_feedback()) {
        exec::plan(&net, &shape).map_err(|e| match e {
            Error::Shape(m) => Error::Spec(m),
            other => other,
        })?;
    }
    Ok(net)
}

pub fn to_value(net: &VolumetricNetwork) -> Value {
    let layers: Vec<Value> = net
        .occupied()
        .map(|(c, s)| {
            let mut m = layer_to_value(&s.layer);
            for (k, v) in [("z", c.z), ("y", c.y), ("x", c.x), ("l", c.l)] {
                m.insert(k.into(), json!(v));
            }
            if s.disabled {
                m.insert("is_disabled".into(), json!(true));
            }
            if let Some(t) = s.link {
                insert_link(&mut m, t);
            }
            Value::Object(m)
        })
        .collect();
    json!({"depth": net.depth, "rows": net.rows, "cols": net.cols, "layers_per_cell": net.layers_per_cell, "layers": layers})
}
