//! Introspection of a network: its blueprint (structure, shapes and parameter counts per
//! coordinate, containers nested; reference dna_evolution.md §9 ExtractNetworkBlueprint) and
//! where its weight memory goes, per dtype (FP32 masters and packed versions).

use crate::dna::{layer_dtype, layer_params};
use crate::dtype::DType;
use crate::layers::member::Member;
use crate::layers::{Layer, Links, Shape};
use crate::network::exec::{self, Source};
use crate::network::VolumetricNetwork;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};

fn coord_value(c: crate::coord::Coord) -> Value {
    json!([c.z, c.y, c.x, c.l])
}

/// Bytes of the form a layer's tensors compute from (codes and scales of the active dtype).
fn active_bytes(layer: &Layer) -> usize {
    layer_params(layer).iter().map(|p| {
        let s = p.read().unwrap();
        s.size_in_bytes(s.dtype())
    }).sum()
}

/// A layer's entry (without coordinates): type, activation, dtype, exact parameter count and
/// bytes, the shapes it reads and produces when known, and its members for containers.
fn describe(layer: &Layer, input: Option<&Shape>, links: &dyn Links) -> Map<String, Value> {
    let output = input.and_then(|s| layer.output_shape_in(s, links).ok());
    let mut m = Map::new();
    m.insert("type".into(), json!(layer.type_name()));
    m.insert("activation".into(), json!(layer.activation().map(|a| a.name())));
    m.insert("dtype".into(), json!(layer_dtype(layer).name()));
    m.insert("parameters".into(), json!(layer_params(layer).iter().map(|p| p.read().unwrap().len()).sum::<usize>()));
    m.insert("bytes".into(), json!(active_bytes(layer)));
    m.insert("input_shape".into(), json!(input));
    m.insert("output_shape".into(), json!(output));
    match layer {
        Layer::Parallel(p) => {
            m.insert("combine_mode".into(), json!(p.combine.name()));
            let branches: Vec<Value> = p.branches.iter().map(|b| member(b, input, links)).collect();
            m.insert("branches".into(), Value::Array(branches));
            if let Some(g) = &p.gate {
                m.insert("gate".into(), Value::Object(describe(g, input, links)));
            }
        }
        Layer::Sequential(s) => {
            let mut shape = input.cloned();
            let mut stages = Vec::new();
            for stage in &s.stages {
                let mut entry = member_map(&stage.member, shape.as_ref(), links);
                entry.insert("disabled".into(), json!(stage.disabled));
                if !stage.disabled {
                    shape = entry.get("output_shape").and_then(|v| serde_json::from_value(v.clone()).ok());
                }
                stages.push(Value::Object(entry));
            }
            m.insert("stages".into(), Value::Array(stages));
        }
        _ => {}
    }
    m
}

fn member(m: &Member, input: Option<&Shape>, links: &dyn Links) -> Value {
    Value::Object(member_map(m, input, links))
}

/// A container member: its own layer's entry, or a link with the shape the linked layer gives.
fn member_map(m: &Member, input: Option<&Shape>, links: &dyn Links) -> Map<String, Value> {
    match m {
        Member::Own(layer) => describe(layer, input, links),
        Member::Link(target) => {
            let output = links.layer_at(*target).ok().and_then(|l| input.and_then(|s| l.output_shape_in(s, links).ok()));
            let mut e = Map::new();
            e.insert("type".into(), json!("link"));
            e.insert("target".into(), coord_value(*target));
            e.insert("input_shape".into(), json!(input));
            e.insert("output_shape".into(), json!(output));
            e
        }
    }
}

/// The blueprint as JSON. Shapes come from planning a pass on samples of `input_shape` (or the
/// network's own input shape); they are null where unknown (disabled slots, no shape, or a
/// network that does not run on that shape).
pub fn blueprint(net: &VolumetricNetwork, input_shape: Option<&[usize]>) -> Value {
    let input = input_shape.map(<[usize]>::to_vec).or_else(|| exec::expected_input_shape(net));
    let steps = input.as_ref().and_then(|s| exec::plan(net, s).ok());
    let mut inputs: HashMap<crate::coord::Coord, Shape> = HashMap::new();
    if let (Some(steps), Some(x)) = (&steps, &input) {
        for step in steps {
            let shape = match step.input {
                Source::Input => x.clone(),
                Source::Step(i) => steps[i].shape.clone(),
            };
            inputs.insert(step.coord, shape);
        }
    }
    let layers: Vec<Value> = net
        .occupied()
        .map(|(c, slot)| {
            let mut entry = Map::new();
            for (k, v) in [("z", c.z), ("y", c.y), ("x", c.x), ("l", c.l)] {
                entry.insert(k.into(), json!(v));
            }
            entry.extend(describe(&slot.layer, inputs.get(&c), net));
            entry.insert("disabled".into(), json!(slot.disabled));
            entry.insert("link".into(), slot.link.map_or(Value::Null, coord_value));
            Value::Object(entry)
        })
        .collect();
    let output = match (&steps, &input) {
        (Some(steps), Some(x)) => Some(steps.last().map_or_else(|| x.clone(), |s| s.shape.clone())),
        _ => None,
    };
    json!({
        "dims": [net.depth, net.rows, net.cols, net.layers_per_cell],
        "total_layers": layers.len(),
        "active_layers": net.active().count(),
        "total_parameters": net.num_params(),
        "input_shape": input,
        "output_shape": output,
        "layers": layers,
    })
}

#[derive(Default)]
struct DTypeRow {
    tensors: usize,
    parameters: usize,
    active_bytes: usize,
    held_bytes: usize,
}

/// Weight memory per dtype, every tensor counted once: per dtype, the tensors that compute in
/// it (count, values, bytes of that form) and the bytes held in it (float32: the masters;
/// other dtypes: their packed versions, whether active or cached); plus the totals.
pub fn memory_report(net: &VolumetricNetwork) -> Value {
    let mut rows: BTreeMap<DType, DTypeRow> = BTreeMap::new();
    let (mut master_bytes, mut packed_bytes) = (0usize, 0usize);
    for p in net.params() {
        let s = p.read().unwrap();
        let row = rows.entry(s.dtype()).or_default();
        row.tensors += 1;
        row.parameters += s.len();
        row.active_bytes += s.size_in_bytes(s.dtype());
        if s.has_master() {
            master_bytes += 4 * s.len();
            rows.entry(DType::Float32).or_default().held_bytes += 4 * s.len();
        }
        for (dtype, bytes) in s.held_versions() {
            packed_bytes += bytes;
            rows.entry(dtype).or_default().held_bytes += bytes;
        }
    }
    let dtypes: Map<String, Value> = rows
        .into_iter()
        .map(|(d, r)| {
            let row = json!({"tensors": r.tensors, "parameters": r.parameters, "active_bytes": r.active_bytes, "held_bytes": r.held_bytes});
            (d.name().to_string(), row)
        })
        .collect();
    json!({
        "total_bytes": master_bytes + packed_bytes,
        "master_bytes": master_bytes,
        "packed_bytes": packed_bytes,
        "dtypes": dtypes,
    })
}
