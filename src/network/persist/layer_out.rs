//! Layer → persistence entry: the reference's keys in its order (with its conventions: string
//! `softmax_type`, `activation` and `dtype` always present, norms' `output_height`, MHA's
//! `query_dim`), containers recursively, then our extra keys.

use super::weights;
use super::{EXTRA_KEYS, REFERENCE_KEYS};
use crate::coord::Coord;
use crate::error::Result;
use crate::io::base64;
use crate::io::json_out::Node;
use crate::layers::member::Member;
use crate::layers::spec::layer_to_value;
use crate::layers::{Layer, Softmax};
use crate::network::Slot;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The reference's Softmax type names by build-JSON index.
const SOFTMAX_NAMES: [&str; 10] = ["Standard", "Grid", "Hierarchical", "Temperature", "Gumbel", "Masked", "Sparse", "Adaptive", "Mixture", "Entmax"];

pub struct Writer {
    masters: bool,
    /// Layers written so far (by identity) and where: a layer placed twice is written twice and
    /// the second entry names the first (`same_layer_as`), so a reload shares it again.
    seen: HashMap<*const Layer, String>,
}

/// What the reference writes for a slot nobody configured, disabled so its forward skips it
/// (our empty slots pass the tensor through; the reference's untouched slots crash).
pub fn empty_slot(c: Coord) -> Node {
    let mut fields = coordinates(c);
    fields.extend([
        ("type".into(), Node::Str("Dense".into())),
        ("activation".into(), Node::Str("ReLU".into())),
        ("dtype".into(), Node::Str("float32".into())),
        ("softmax_type".into(), Node::Str("Standard".into())),
        ("is_disabled".into(), Node::Bool(true)),
    ]);
    Node::Object(fields)
}

fn coordinates(c: Coord) -> Vec<(String, Node)> {
    [("z", c.z), ("y", c.y), ("x", c.x), ("l", c.l)].into_iter().map(|(k, v)| (k.to_string(), Node::int(v as u64))).collect()
}

fn link_fields(fields: &mut BTreeMap<String, Node>, t: Coord) {
    fields.insert("is_remote_link".into(), Node::Bool(true));
    for (k, v) in [("target_z", t.z), ("target_y", t.y), ("target_x", t.x), ("target_l", t.l)] {
        fields.insert(k.into(), Node::int(v as u64));
    }
}

/// Fields in the reference's key order, then our keys in EXTRA_KEYS order, then any other
/// build-spec field a layer writes (sorted), `tensors` last.
fn ordered(mut fields: BTreeMap<String, Node>) -> Node {
    let tensors = fields.remove("tensors");
    let mut out = Vec::new();
    for key in REFERENCE_KEYS.iter().chain(EXTRA_KEYS) {
        if let Some(v) = fields.remove(*key) {
            out.push((key.to_string(), v));
        }
    }
    out.extend(fields);
    out.extend(tensors.map(|t| ("tensors".to_string(), t)));
    Node::Object(out)
}

impl Writer {
    pub fn new(masters: bool) -> Writer {
        Writer { masters, seen: HashMap::new() }
    }

    /// A grid slot's entry: its layer with coordinates, disabled flag and remote link.
    pub fn slot(&mut self, c: Coord, slot: &Slot) -> Result<Node> {
        let mut fields = self.layer_fields(&slot.layer, c.to_string())?;
        for (k, v) in coordinates(c) {
            fields.insert(k, v);
        }
        if slot.disabled {
            fields.insert("is_disabled".into(), Node::Bool(true));
        }
        if let Some(t) = slot.link {
            link_fields(&mut fields, t);
        }
        Ok(ordered(fields))
    }

    /// A container member: its own layer (coordinates 0, as the reference writes them) or a link.
    fn member(&mut self, m: &Member, path: String, disabled: bool) -> Result<Node> {
        let mut fields = match m {
            Member::Own(layer) => self.layer_fields(layer, path)?,
            Member::Link(t) => {
                let mut f = BTreeMap::new();
                for (k, v) in [("type", "Dense"), ("activation", "Linear"), ("dtype", "float32"), ("softmax_type", "Standard")] {
                    f.insert(k.to_string(), Node::Str(v.into()));
                }
                link_fields(&mut f, *t);
                f
            }
        };
        for (k, v) in coordinates(Coord::ORIGIN) {
            fields.insert(k, v);
        }
        if disabled {
            fields.insert("is_disabled".into(), Node::Bool(true));
        }
        Ok(ordered(fields))
    }

    /// Everything about a layer except where it sits.
    fn layer_fields(&mut self, layer: &Arc<Layer>, path: String) -> Result<BTreeMap<String, Node>> {
        let first = match self.seen.get(&Arc::as_ptr(layer)) {
            Some(first) => Some(first.clone()),
            None => {
                self.seen.insert(Arc::as_ptr(layer), path.clone());
                None
            }
        };
        let mut fields = BTreeMap::new();
        fields.insert("type".into(), Node::Str(layer.type_name().into()));
        fields.insert("softmax_type".into(), Node::Str("Standard".into()));
        match &**layer {
            Layer::Parallel(p) => {
                fields.insert("combine_mode".into(), Node::Str(p.combine.name().into()));
                let mut branches = Vec::new();
                for (i, b) in p.branches.iter().enumerate() {
                    branches.push(self.member(b, format!("{path}/branch {i}"), false)?);
                }
                fields.insert("parallel_branches".into(), Node::Array(branches));
                if let Some(gate) = &p.gate {
                    fields.insert("gate".into(), self.member(&Member::Own(gate.clone()), format!("{path}/gate"), false)?);
                }
            }
            Layer::Sequential(s) => {
                let mut stages = Vec::new();
                for (i, stage) in s.stages.iter().enumerate() {
                    stages.push(self.member(&stage.member, format!("{path}/stage {i}"), stage.disabled)?);
                }
                fields.insert("sequential_layers".into(), Node::Array(stages));
            }
            other => self.leaf_fields(other, &mut fields)?,
        }
        fields.entry("activation".into()).or_insert_with(|| Node::Str("Linear".into()));
        fields.entry("dtype".into()).or_insert_with(|| Node::Str("float32".into()));
        if let Some(first) = first {
            fields.insert("same_layer_as".into(), Node::Str(first));
        }
        Ok(fields)
    }

    fn leaf_fields(&mut self, layer: &Layer, fields: &mut BTreeMap<String, Node>) -> Result<()> {
        for (key, value) in layer_to_value(layer) {
            let node = match (key.as_str(), &value) {
                ("softmax_type", Value::Number(n)) => Node::Str(SOFTMAX_NAMES[n.as_u64().unwrap_or(0) as usize].into()),
                _ => Node::from_value(&value),
            };
            fields.insert(key, node);
        }
        match layer {
            // The reference normalises over output_height and sizes the gains by input_height.
            Layer::Norm(n) => {
                fields.insert("output_height".into(), Node::int(n.size as u64));
            }
            // The reference's query width (ours is always num_heads · head_dim).
            Layer::MultiHeadAttention(a) => {
                fields.insert("query_dim".into(), Node::int((a.config.num_heads * a.config.head_dim) as u64));
            }
            Layer::Softmax(s) => gumbel_draws(s, fields),
            _ => {}
        }
        let written = weights::write(layer, self.masters)?;
        if let Some(blob) = written.blob {
            fields.insert("weights".into(), Node::Str(base64::encode(&blob.bytes)));
            fields.insert("native".into(), Node::Bool(blob.native));
            fields.insert("scale".into(), Node::f32(blob.scale, "scale")?);
        }
        if let Some(codec) = written.compat {
            fields.insert("compat".into(), Node::Str(codec.name().into()));
        }
        if !written.records.is_empty() {
            fields.insert("tensors".into(), Node::Array(written.records));
        }
        Ok(())
    }
}

/// A Gumbel softmax's draw count, so a reloaded layer draws the noise the original would next.
fn gumbel_draws(s: &Softmax, fields: &mut BTreeMap<String, Node>) {
    let draws = s.gumbel_draws();
    if draws > 0 {
        fields.insert("gumbel_draws".into(), Node::int(draws));
    }
}
