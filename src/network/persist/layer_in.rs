//! Persistence entry → Layer. Leaves are built by the build-spec reader (layers/spec.rs) from the
//! entry without its persistence-only keys, then get their weights (weights.rs); containers are
//! assembled here so members can be links or layers shared with an earlier entry.

use super::weights;
use super::{EXTRA_KEYS, REFERENCE_KEYS};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::layers::member::Member;
use crate::layers::parallel::Combine;
use crate::layers::sequential::Stage;
use crate::layers::spec::{layer_from_value, link_target, Build, Fields, LAYER_FIELDS};
use crate::layers::{Layer, Parallel, Sequential};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Keys of an entry that are about persistence, not the layer's configuration.
const PERSISTENCE_ONLY: &[&str] = &[
    "weights", "native", "scale", "tensors", "compat", "gumbel_draws", "query_dim", "gumbel_noise",
    "same_layer_as", "dtype", "meta_rules", "meta_observed_layer", "parallel_branches",
    "combine_mode", "sequential_layers", "gate",
];

#[derive(Default)]
pub struct Reader {
    /// Layers built so far, by the path the writer names them with (`same_layer_as`).
    built: HashMap<String, Arc<Layer>>,
}

/// The reference's entry for a slot nobody configured: a Dense without sizes or weights.
pub fn is_empty_slot(f: &Fields) -> Result<bool> {
    let dense = matches!(f.str("type")?.to_ascii_uppercase().as_str(), "" | "DENSE");
    Ok(dense
        && f.usize("input_height", 0)? == 0
        && f.usize("output_height", 0)? == 0
        && f.str("weights")?.is_empty()
        && !f.has("tensors")
        && !f.bool("is_remote_link", false)?)
}

fn err(e: Error) -> Error {
    match e {
        Error::ModelLoad(_) => e,
        other => Error::ModelLoad(other.to_string()),
    }
}

impl Reader {
    /// The layer an entry describes; `path` is where it sits (as the writer names it), `seed`
    /// initialises weights the entry does not carry.
    pub fn layer(&mut self, f: &Fields, path: String, seed: u64) -> Result<Arc<Layer>> {
        let known = |k: &str| REFERENCE_KEYS.contains(&k) || EXTRA_KEYS.contains(&k) || LAYER_FIELDS.contains(&k);
        if let Some(key) = f.obj.keys().find(|k| !known(k)) {
            return Err(Error::ModelLoad(format!("{}: unknown field {key:?}", f.context)));
        }
        let first = f.str("same_layer_as")?;
        if !first.is_empty() {
            return self.built.get(first).cloned().ok_or_else(|| {
                Error::ModelLoad(format!("{}: field \"same_layer_as\" names {first:?}, which no earlier entry is", f.context))
            });
        }
        let kind = f.str("type")?.to_ascii_uppercase();
        let layer = match kind.as_str() {
            "PARALLEL" => self.parallel(f, &path, seed)?,
            "SEQUENTIAL" => self.sequential(f, &path, seed)?,
            "META" | "METACOGNITION" => {
                return Err(Error::ModelLoad(format!(
                    "{}: Metacognition layers (the reference's self-modifying wrapper) are outside what polyvtd runs",
                    f.context
                )))
            }
            _ => self.leaf(f, seed)?,
        };
        let layer = Arc::new(layer);
        self.built.insert(path, layer.clone());
        Ok(layer)
    }

    fn member(&mut self, value: &Value, context: String, path: String, seed: u64) -> Result<(Member, bool)> {
        let obj = value.as_object().ok_or_else(|| Error::ModelLoad(format!("{context} must be an object, got {value}")))?;
        let f = Fields::new(obj, context);
        let disabled = f.bool("is_disabled", false).map_err(err)?;
        match link_target(&f).map_err(err)? {
            Some(target) => Ok((Member::Link(target), disabled)),
            None => Ok((Member::Own(self.layer(&f, path, seed)?), disabled)),
        }
    }

    fn parallel(&mut self, f: &Fields, path: &str, seed: u64) -> Result<Layer> {
        let combine = Combine::parse(f.str("combine_mode")?).map_err(|e| Error::ModelLoad(format!("{}: {e}", f.context)))?;
        let mut branches = Vec::new();
        for (i, entry) in f.list("parallel_branches")?.iter().enumerate() {
            let (m, _) = self.member(entry, format!("{}: branch {i}", f.context), format!("{path}/branch {i}"), seed.wrapping_add(i as u64 + 1))?;
            branches.push(m);
        }
        let gate = match f.object("gate")? {
            Some(obj) => {
                let g = Fields::new(obj, format!("{}: gate", f.context));
                Some(self.layer(&g, format!("{path}/gate"), seed.wrapping_add(branches.len() as u64 + 1))?)
            }
            None => None,
        };
        Parallel::new(branches, combine, gate).map(Layer::Parallel).map_err(|e| Error::ModelLoad(format!("{}: {e}", f.context)))
    }

    fn sequential(&mut self, f: &Fields, path: &str, seed: u64) -> Result<Layer> {
        let mut stages = Vec::new();
        for (i, entry) in f.list("sequential_layers")?.iter().enumerate() {
            let (member, disabled) = self.member(entry, format!("{}: stage {i}", f.context), format!("{path}/stage {i}"), seed.wrapping_add(i as u64 + 1))?;
            stages.push(Stage { member, disabled });
        }
        Sequential::new(stages).map(Layer::Sequential).map_err(|e| Error::ModelLoad(format!("{}: {e}", f.context)))
    }

    /// A layer without members: configuration from the build-spec reader, then its weights.
    fn leaf(&mut self, f: &Fields, seed: u64) -> Result<Layer> {
        let compat = match f.str("compat")? {
            // No code book named: a file of the reference, whose codes are its own.
            "" => Codec::Loom,
            name => Codec::parse(name).map_err(|e| Error::ModelLoad(format!("{}: field \"compat\" {e}", f.context)))?,
        };
        let spec: Map<String, Value> = f.obj.iter().filter(|(k, _)| !PERSISTENCE_ONLY.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
        let layer = layer_from_value(&Value::Object(spec), f.context.clone(), Build { seed, codec: compat }).map_err(err)?;
        if let Layer::MultiHeadAttention(a) = &layer {
            let query = a.config.num_heads * a.config.head_dim;
            let given = f.usize("query_dim", 0)?;
            if given != 0 && given != query {
                return Err(Error::ModelLoad(format!(
                    "{}: field \"query_dim\" is {given}, but polyvtd's query width is num_heads · head_dim = {query}",
                    f.context
                )));
            }
        }
        if let Layer::Softmax(s) = &layer {
            s.set_gumbel_draws(f.usize("gumbel_draws", 0)? as u64);
        }
        weights::install(&layer, f, compat)?;
        Ok(layer)
    }
}
