//! The reference's persistence JSON (persistence.md §1), lossless: `net.save(path)` /
//! `load(path)`. Every grid slot is listed in flat order with the reference's keys in its order
//! (empty slots as the disabled placeholders the reference skips), weights as base64 in their
//! native dtype; what the reference drops — remote links, filter gates, masks, epsilons, Q/K norms,
//! biases, code books, masters — rides in extra keys the reference ignores. Writing is
//! deterministic: a reloaded network writes the same bytes.

mod layer_in;
mod layer_out;
mod weights;

use super::{exec, Coord, VolumetricNetwork};
use crate::error::{Error, Result};
use crate::io::atomic;
use crate::io::json_out::Node;
use crate::layers::spec::Fields;
use serde_json::Value;
use std::path::Path;

/// Layer keys the reference writes, in its order (`~` keys omitted when zero/empty).
pub const REFERENCE_KEYS: &[&str] = &[
    "z", "y", "x", "l", "type", "activation", "dtype", "input_height", "input_width", "input_depth",
    "output_height", "output_width", "output_depth", "input_channels", "filters", "kernel_size",
    "stride", "padding", "output_padding", "num_heads", "num_kv_heads", "head_dim", "query_dim",
    "d_model", "seq_length", "rope_freq_base", "vocab_size", "embedding_dim", "num_clusters",
    "kmeans_temperature", "output_mode", "softmax_type", "temperature", "softmax_rows",
    "softmax_cols", "entmax_alpha", "gumbel_noise", "weights", "native", "scale",
    "parallel_branches", "combine_mode", "sequential_layers", "use_tiling", "tile_size",
    "is_disabled", "meta_rules", "meta_observed_layer",
];

/// Our keys (the reference's reader ignores unknown keys), written after the reference's in this
/// order, `tensors` last.
pub const EXTRA_KEYS: &[&str] = &[
    "bias", "causal", "compat", "epsilon", "gate", "gumbel_draws", "hierarchy_levels",
    "is_remote_link", "mask", "max_seq_len", "qk_norm", "return_sequences", "same_layer_as", "seed",
    "target_z", "target_y", "target_x", "target_l", "tensors",
];

const TOP_KEYS: &[&str] = &["id", "depth", "rows", "cols", "layers_per_cell", "layers"];

/// The persistence JSON of `net`; `masters`: also keep the FP32 masters of quantised tensors
/// (training then resumes exactly; without them a reload trains from the dequantised values).
pub fn to_text(net: &VolumetricNetwork, masters: bool) -> Result<String> {
    let mut writer = layer_out::Writer::new(masters);
    let mut layers = Vec::new();
    for index in 0..net.depth * net.rows * net.cols * net.layers_per_cell {
        let coord = net.coord_of(index);
        layers.push(match net.slot(coord)? {
            Some(slot) => writer.slot(coord, slot)?,
            None => layer_out::empty_slot(coord),
        });
    }
    let top = Node::Object(vec![
        ("id".into(), Node::Str("network".into())),
        ("depth".into(), Node::int(net.depth as u64)),
        ("rows".into(), Node::int(net.rows as u64)),
        ("cols".into(), Node::int(net.cols as u64)),
        ("layers_per_cell".into(), Node::int(net.layers_per_cell as u64)),
        ("layers".into(), Node::Array(layers)),
    ]);
    Ok(top.pretty())
}

/// Write `net` to `path` atomically.
pub fn save(net: &VolumetricNetwork, path: &Path, masters: bool) -> Result<()> {
    atomic::write(path, to_text(net, masters)?.as_bytes())
}

/// Read a persistence JSON (ours or the reference's); `source` names it in errors.
pub fn from_text(text: &str, source: &str) -> Result<VolumetricNetwork> {
    read(text).map_err(|e| Error::ModelLoad(format!("{source}: {e}")))
}

pub fn load(path: &Path) -> Result<VolumetricNetwork> {
    let bytes = atomic::read(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| Error::ModelLoad(format!("{}: not UTF-8 text: {e}", path.display())))?;
    from_text(text, &path.display().to_string())
}

fn read(text: &str) -> Result<VolumetricNetwork> {
    let value: Value = serde_json::from_str(text).map_err(|e| Error::ModelLoad(format!("not valid JSON: {e}")))?;
    let obj = value.as_object().ok_or_else(|| Error::ModelLoad("the persistence JSON must be an object".into()))?;
    let top = Fields::new(obj, "network");
    top.reject_unknown(TOP_KEYS)?;
    for key in ["depth", "rows", "cols", "layers_per_cell"] {
        if !top.has(key) {
            return Err(Error::ModelLoad(format!("network: field {key:?} is missing")));
        }
    }
    let mut net = VolumetricNetwork::new(top.usize("depth", 0)?, top.usize("rows", 0)?, top.usize("cols", 0)?, top.usize("layers_per_cell", 0)?)?;
    let mut reader = layer_in::Reader::default();
    let mut links = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, entry) in top.list("layers")?.iter().enumerate() {
        let obj = entry.as_object().ok_or_else(|| Error::ModelLoad(format!("layers[{i}] must be an object")))?;
        let probe = Fields::new(obj, format!("layers[{i}]"));
        let coord = Coord { z: probe.usize("z", 0)?, y: probe.usize("y", 0)?, x: probe.usize("x", 0)?, l: probe.usize("l", 0)? };
        net.index(coord).map_err(|e| Error::ModelLoad(format!("layers[{i}]: {e}")))?;
        if !seen.insert(coord) {
            return Err(Error::ModelLoad(format!("layers[{i}]: slot {coord} is listed twice")));
        }
        let f = Fields::new(obj, format!("layer at {coord}"));
        if layer_in::is_empty_slot(&f)? {
            continue;
        }
        let layer = reader.layer(&f, coord.to_string(), i as u64)?;
        net.set_layer(coord, layer)?;
        if f.bool("is_disabled", false)? {
            net.set_disabled(coord, true)?;
        }
        if let Some(target) = crate::layers::spec::link_target(&f)? {
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
