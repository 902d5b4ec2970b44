//! The grid's weights as a safetensors file. One tensor per weight store, named by where it sits
//! — `z0.y0.x0.l1.weight`, container members `….branch0.q_proj`, `….stage2.weight`, `….gate.weight`
//! — in traversal order (the header lists them in that order too; the reference's order is Go's
//! random map order, quirk 27). A layer placed twice is written once, links not at all.
//!
//! Packed (default): each tensor in its own dtype — float32/float64/float16/bfloat16 and the
//! 8–64-bit integer codes as F32/F64/F16/BF16/I*/U*, standard fp8 as F8_E4M3/F8_E5M2, standard
//! fp4 as F4 (low nibble first), everything else (sub-byte codes, the reference's fp8/fp4 code
//! books, GGML blocks) as U8 bytes in polyvtd's LSB-first packing; `__metadata__` holds per
//! tensor its dtype, code book, logical shape and scale, so a reload is exact. `packed=false`
//! writes every tensor as the F32 values the layer computes with and no metadata.
//!
//! Loading: a tensor with our metadata comes back exactly; a plain tensor (F32/F64/F16/BF16/F8/F4
//! and integers, converted numerically) replaces the master and the layer keeps its dtype. The
//! reference's names (`layer_<flat index>.weights`, its flat layout) are read too.

use super::{Coord, VolumetricNetwork};
use crate::codec::{bits, minifloat, Codec, Packed};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::io::atomic;
use crate::io::json_out::Node;
use crate::io::store_image::{check_finite, f32_bytes, f32_values};
use crate::layers::member::Member;
use crate::layers::tensors::{named_tensors, reference_layout, Block};
use crate::layers::{Layer, Param};
use crate::weights::{WeightStore, WeightView};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// Every weight store of the grid with its name, in traversal order.
pub fn named_params(net: &VolumetricNetwork) -> Vec<(String, Param)> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (c, slot) in net.occupied() {
        walk(&slot.layer, format!("z{}.y{}.x{}.l{}", c.z, c.y, c.x, c.l), &mut seen, &mut out);
    }
    out
}

fn walk(layer: &Arc<Layer>, prefix: String, seen: &mut HashSet<*const Layer>, out: &mut Vec<(String, Param)>) {
    if !seen.insert(Arc::as_ptr(layer)) {
        return;
    }
    let member = |m: &Member, prefix: String, seen: &mut HashSet<*const Layer>, out: &mut Vec<(String, Param)>| {
        if let Member::Own(l) = m {
            walk(l, prefix, seen, out);
        }
    };
    match &**layer {
        Layer::Parallel(p) => {
            for (i, b) in p.branches.iter().enumerate() {
                member(b, format!("{prefix}.branch{i}"), seen, out);
            }
            if let Some(g) = &p.gate {
                walk(g, format!("{prefix}.gate"), seen, out);
            }
        }
        Layer::Sequential(s) => {
            for (i, stage) in s.stages.iter().enumerate() {
                member(&stage.member, format!("{prefix}.stage{i}"), seen, out);
            }
        }
        other => out.extend(named_tensors(other).into_iter().map(|t| (format!("{prefix}.{}", t.name), t.param))),
    }
}

/// The safetensors dtype a store is written as, and whether its bytes keep the logical shape.
fn file_dtype(dtype: DType, codec: Codec, n: usize) -> (Dtype, bool) {
    let standard = codec == Codec::Standard;
    match dtype {
        DType::Float32 => (Dtype::F32, true),
        DType::Float64 => (Dtype::F64, true),
        DType::Float16 => (Dtype::F16, true),
        DType::BFloat16 => (Dtype::BF16, true),
        DType::Int64 => (Dtype::I64, true),
        DType::Int32 => (Dtype::I32, true),
        DType::Int16 => (Dtype::I16, true),
        DType::Int8 => (Dtype::I8, true),
        DType::Uint64 => (Dtype::U64, true),
        DType::Uint32 => (Dtype::U32, true),
        DType::Uint16 => (Dtype::U16, true),
        DType::Uint8 => (Dtype::U8, true),
        DType::Fp8E4M3 if standard => (Dtype::F8_E4M3, true),
        DType::Fp8E5M2 if standard => (Dtype::F8_E5M2, true),
        DType::Fp4 if standard && n.is_multiple_of(2) => (Dtype::F4, true),
        _ => (Dtype::U8, false),
    }
}

struct Tensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// The bytes of a store's active dtype (LSB-first packing; float32: the master).
fn store_bytes(store: &WeightStore) -> Result<Vec<u8>> {
    Ok(match store.view()? {
        WeightView::F32(m) => f32_bytes(m),
        WeightView::Packed(p) => p.bytes[..p.dtype.packed_bytes(p.n)].to_vec(),
    })
}

fn metadata_of(store: &WeightStore) -> Result<String> {
    let scale = match store.view()? {
        WeightView::Packed(p) if store.codec() == Codec::Standard => p.scale,
        _ => store.loom_scale(),
    };
    let mut fields = vec![
        ("dtype".to_string(), Node::Str(store.dtype().name().into())),
        ("compat".into(), Node::Str(store.codec().name().into())),
        ("shape".into(), Node::Array(store.shape().iter().map(|&d| Node::int(d as u64)).collect())),
        ("scale".into(), Node::f32(scale, "scale")?),
    ];
    if let WeightView::Packed(p) = store.view()? {
        if p.zero_point != 0.0 {
            fields.push(("zero_point".into(), Node::from_value(&Value::from(p.zero_point))));
        }
    }
    if !store.has_master() {
        fields.push(("released".into(), Node::Bool(true)));
    }
    Ok(Node::Object(fields).compact())
}

/// Write the grid's weights to `path` atomically.
pub fn save(net: &VolumetricNetwork, path: &Path, packed: bool, masters: bool) -> Result<()> {
    let mut tensors = Vec::new();
    let mut metadata = Vec::new();
    for (name, param) in named_params(net) {
        let store = param.read().unwrap();
        if !packed {
            let mut values = vec![0f32; store.len()];
            store.view()?.decode_into(0, &mut values);
            tensors.push(Tensor { name, dtype: Dtype::F32, shape: store.shape().to_vec(), data: f32_bytes(&values) });
            continue;
        }
        let data = store_bytes(&store)?;
        let (dtype, logical) = file_dtype(store.dtype(), store.codec(), store.len());
        let shape = if logical { store.shape().to_vec() } else { vec![data.len()] };
        metadata.push((name.clone(), Node::Str(metadata_of(&store)?)));
        let master = if masters && store.dtype() != DType::Float32 && store.has_master() {
            Some(Tensor { name: format!("{name}.master"), dtype: Dtype::F32, shape: store.shape().to_vec(), data: f32_bytes(store.master()?) })
        } else {
            None
        };
        tensors.push(Tensor { name, dtype, shape, data });
        tensors.extend(master);
    }
    let mut header = Vec::new();
    if !metadata.is_empty() {
        header.push(("__metadata__".to_string(), Node::Object(metadata)));
    }
    let mut offset = 0usize;
    for t in &tensors {
        let end = offset + t.data.len();
        header.push((
            t.name.clone(),
            Node::Object(vec![
                ("dtype".into(), Node::Str(format!("{:?}", t.dtype))),
                ("shape".into(), Node::Array(t.shape.iter().map(|&d| Node::int(d as u64)).collect())),
                ("data_offsets".into(), Node::Array(vec![Node::int(offset as u64), Node::int(end as u64)])),
            ]),
        ));
        offset = end;
    }
    let mut head = Node::Object(header).compact().into_bytes();
    head.resize(head.len().next_multiple_of(8), b' ');
    let mut bytes = Vec::with_capacity(8 + head.len() + offset);
    bytes.extend((head.len() as u64).to_le_bytes());
    bytes.extend(head);
    for t in &tensors {
        bytes.extend(&t.data);
    }
    atomic::write(path, &bytes)
}

fn load_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::ModelLoad(format!("{}: {msg}", path.display()))
}

/// A plain tensor's values as f32 (integers converted numerically, F4 as OCP E2M1).
fn plain_values(dtype: Dtype, data: &[u8], n: usize) -> std::result::Result<Vec<f32>, String> {
    let width = dtype.bitsize();
    let need = (n * width).div_ceil(8);
    if data.len() != need {
        return Err(format!("holds {} bytes, {n} {dtype:?} values take {need}", data.len()));
    }
    let code = |i: usize| bits::read(data, width, i);
    let values = (0..n).map(|i| {
        let c = code(i);
        match dtype {
            Dtype::F32 => f32::from_bits(c as u32),
            Dtype::F64 => f64::from_bits(c) as f32,
            Dtype::F16 => minifloat::f16_decode(c as u16),
            Dtype::BF16 => minifloat::bf16_decode(c as u16),
            Dtype::F8_E4M3 => minifloat::fp8_e4m3_decode(c as u8),
            Dtype::F8_E5M2 => minifloat::fp8_e5m2_decode(c as u8),
            Dtype::F4 => minifloat::fp4_decode(c as u8),
            Dtype::I8 => c as u8 as i8 as f32,
            Dtype::I16 => c as u16 as i16 as f32,
            Dtype::I32 => c as u32 as i32 as f32,
            Dtype::I64 => c as i64 as f32,
            _ => c as f32,
        }
    });
    match dtype {
        Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16 | Dtype::F8_E4M3 | Dtype::F8_E5M2 | Dtype::F4 | Dtype::I8 | Dtype::I16 | Dtype::I32 | Dtype::I64 | Dtype::U8 | Dtype::U16 | Dtype::U32 | Dtype::U64 => {
            Ok(values.collect())
        }
        other => Err(format!("has dtype {other:?}, which polyvtd does not read as weights")),
    }
}

/// A tensor saved with our metadata, restored exactly.
fn exact_store(meta: &str, data: &[u8], master: Option<Vec<f32>>) -> std::result::Result<WeightStore, String> {
    let m: Value = serde_json::from_str(meta).map_err(|e| format!("metadata is not valid JSON: {e}"))?;
    let field = |k: &str| m.get(k).ok_or_else(|| format!("metadata lacks {k:?}"));
    let dtype = DType::parse(field("dtype")?.as_str().unwrap_or("")).map_err(|e| e.to_string())?;
    let codec = Codec::parse(field("compat")?.as_str().unwrap_or("")).map_err(|e| e.to_string())?;
    let shape: Vec<usize> = field("shape")?.as_array().map(|a| a.iter().filter_map(|d| d.as_u64().map(|d| d as usize)).collect()).unwrap_or_default();
    let scale = field("scale")?.as_f64().ok_or("metadata scale is not a number")? as f32;
    let zero_point = m.get("zero_point").and_then(Value::as_f64).unwrap_or(0.0);
    let n: usize = shape.iter().product();
    let need = dtype.packed_bytes(n);
    if data.len() != need {
        return Err(format!("holds {} bytes, {n} {dtype} values of shape {shape:?} take {need}", data.len()));
    }
    let mut store = if dtype == DType::Float32 {
        let values = f32_values(data);
        check_finite(&values, "float32 weights").map_err(|e| e.to_string())?;
        WeightStore::restore(shape, codec, None, Some(values), scale)
    } else {
        crate::codec::ggml_blocks::check_row(dtype, &shape).map_err(|e| e.to_string())?;
        let packed = if dtype.is_block() {
            Packed::from_bytes(dtype, codec, n, data.to_vec())
        } else {
            Ok(Packed::from_codes(dtype, codec, (0..n).map(|i| bits::read(data, dtype.bits(), i)), scale, zero_point))
        };
        packed.and_then(|p| WeightStore::restore(shape, codec, Some(p), master, scale))
    }
    .map_err(|e| e.to_string())?;
    if m.get("released").and_then(Value::as_bool).unwrap_or(false) {
        store.release_master().map_err(|e| e.to_string())?;
    }
    Ok(store)
}

/// A copy of `param`'s store with `values` as its master (re-morphed to its dtype).
fn with_master(param: &Param, values: Vec<f32>) -> Result<WeightStore> {
    check_finite(&values, "values")?;
    let mut store = param.read().unwrap().clone();
    if !store.has_master() {
        store.unpack(store.dtype())?;
    }
    store.set_master(values)?;
    Ok(store)
}

/// Load the grid's weights from `path` (all or nothing); returns the names loaded. `strict`:
/// every tensor of the file must match a weight of the network and every weight must be loaded.
pub fn load(net: &VolumetricNetwork, path: &Path, strict: bool) -> Result<Vec<String>> {
    let bytes = atomic::read(path)?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| load_err(path, format!("not a valid safetensors file (truncated or corrupt?): {e}")))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| load_err(path, e))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let targets: BTreeMap<String, Param> = named_params(net).into_iter().collect();
    let mut stores: Vec<(String, Param, WeightStore)> = Vec::new();
    let mut names: Vec<String> = file.names().into_iter().map(String::from).collect();
    names.sort();
    for name in &names {
        let view = file.tensor(name).map_err(|e| load_err(path, e))?;
        let n: usize = view.shape().iter().product();
        let context = |msg: String| load_err(path, format!("tensor {name:?} {msg}"));
        // A master is read with its tensor.
        if name.strip_suffix(".master").is_some_and(|b| metadata.contains_key(b) && targets.contains_key(b)) {
            continue;
        }
        if let Some(param) = targets.get(name) {
            let expected = param.read().unwrap().shape().to_vec();
            let store = match metadata.get(name) {
                Some(meta) => {
                    let master = match file.tensor(&format!("{name}.master")) {
                        Ok(m) => Some(plain_values(m.dtype(), m.data(), m.shape().iter().product()).map_err(|e| context(format!("master {e}")))?),
                        Err(_) => None,
                    };
                    exact_store(meta, view.data(), master).map_err(context)?
                }
                None => {
                    if view.shape() != expected.as_slice() && !(view.shape().len() == 1 && n == expected.iter().product::<usize>()) {
                        return Err(context(format!("has shape {:?}, the network's tensor {expected:?}", view.shape())));
                    }
                    with_master(param, plain_values(view.dtype(), view.data(), n).map_err(context)?).map_err(|e| context(e.to_string()))?
                }
            };
            if store.shape() != expected.as_slice() {
                return Err(context(format!("has shape {:?}, the network's tensor {expected:?}", store.shape())));
            }
            stores.push((name.clone(), param.clone(), store));
        } else if let Some(loaded) = reference_tensor(net, name, view.dtype(), view.data(), n).map_err(context)? {
            stores.extend(loaded);
        } else if strict {
            let example = targets.keys().next().map_or(String::new(), |k| format!(" (names look like {k:?})"));
            return Err(context(format!("matches no weight of the network{example}")));
        }
    }
    if strict {
        let loaded: HashSet<&str> = stores.iter().map(|(n, _, _)| n.as_str()).collect();
        let missing: Vec<&String> = targets.keys().filter(|k| !loaded.contains(k.as_str())).collect();
        if let Some(first) = missing.first() {
            return Err(load_err(path, format!("holds no tensor {first:?} ({} of the network's weights are missing)", missing.len())));
        }
    }
    let mut names = Vec::new();
    for (name, param, store) in stores {
        *param.write().unwrap() = store;
        names.push(name);
    }
    Ok(names)
}

/// The reference's `layer_<flat index>.weights` (its whole flat layout, as values): the stores it
/// fills, named as ours. None when `name` is not of that form.
#[allow(clippy::type_complexity)]
fn reference_tensor(net: &VolumetricNetwork, name: &str, dtype: Dtype, data: &[u8], n: usize) -> std::result::Result<Option<Vec<(String, Param, WeightStore)>>, String> {
    let Some(index) = name.strip_prefix("layer_").and_then(|r| r.strip_suffix(".weights")).and_then(|i| i.parse::<usize>().ok()) else {
        return Ok(None);
    };
    let slots = net.depth * net.rows * net.cols * net.layers_per_cell;
    if index >= slots {
        return Err(format!("names slot {index}, but the grid has {slots}"));
    }
    let c: Coord = net.coord_of(index);
    let layer = net.slot(c).map_err(|e| e.to_string())?.map(|s| s.layer.clone()).ok_or_else(|| format!("names the empty slot {c}"))?;
    let layout = reference_layout(&layer);
    let total: usize = layout.iter().map(Block::len).sum();
    if total == 0 || n != total {
        return Err(format!("holds {n} values; the {} layer at {c} has {total} in the reference's layout", layer.type_name()));
    }
    let values = plain_values(dtype, data, n)?;
    let tensors: HashMap<&str, Param> = named_tensors(&layer).into_iter().map(|t| (t.name, t.param)).collect();
    let mut per_tensor: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
    let mut offset = 0;
    for block in &layout {
        if let Block::Tensor { name: t, start, len } = *block {
            let v = per_tensor.entry(t).or_insert_with(|| vec![0.0; tensors[t].read().unwrap().len()]);
            v[start..start + len].copy_from_slice(&values[offset..offset + len]);
        }
        offset += block.len();
    }
    let prefix = format!("z{}.y{}.x{}.l{}", c.z, c.y, c.x, c.l);
    per_tensor
        .into_iter()
        .map(|(t, v)| with_master(&tensors[t], v).map(|s| (format!("{prefix}.{t}"), tensors[t].clone(), s)).map_err(|e| e.to_string()))
        .collect::<std::result::Result<Vec<_>, String>>()
        .map(Some)
}
