//! The reference's build JSON (network.md §2) ⇄ VolumetricNetwork: the grid fields and, per
//! layer entry, its coordinate, `is_disabled` and top-level remote link. The layer itself is read
//! by `layers::spec` (shared with container branches and the Python builders).

use super::{exec, Coord, VolumetricNetwork};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::layers::spec::{layer_from_fields, layer_to_value, Build, Fields};
use serde_json::{json, Map, Value};
use std::sync::Arc;

const TOP_FIELDS: &[&str] = &["id", "depth", "rows", "cols", "layers_per_cell", "layers"];

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
        let layer = layer_from_fields(&fields, Build { seed: seed.wrapping_add(i as u64), codec })?;
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
    if let Some(shape) = exec::expected_input_shape(&net) {
        exec::plan(&net, &shape)?;
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
