//! A layer's weights in its persistence entry. `weights`/`native`/`scale` are the reference's
//! view: its flat layout (layers/tensors.rs) in the layer's dtype. When that view holds our
//! tensors exactly (same dtype, codes the reference decodes to the same values, one scale) it is
//! all we write;
//! otherwise it carries the values we compute with as float32 (`native: false`, which the
//! reference re-quantises on load) and `tensors` carries each tensor exactly. `tensors` also
//! holds what the reference has no place for: Dense/convolution biases, Q/K norm gains, FP32
//! masters and released-master flags.

use crate::codec::{decode_code, loom_disk, Codec, Packed};
use crate::dtype::{DType, Family};
use crate::error::{Error, Result};
use crate::io::base64;
use crate::io::json_out::Node;
use crate::io::store_image::{check_finite, f32_bytes, f32_values, StoreImage};
use crate::layers::spec::Fields;
use crate::layers::tensors::{named_tensors, reference_layout, Block, Named};
use crate::layers::Layer;
use crate::weights::{WeightStore, WeightView};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// The reference's view of a layer's weights.
pub struct Blob {
    pub bytes: Vec<u8>,
    pub native: bool,
    pub scale: f32,
}

/// What a layer entry carries about its weights.
#[derive(Default)]
pub struct Written {
    pub blob: Option<Blob>,
    /// The code book of the layer's weights (None: no tensors).
    pub compat: Option<Codec>,
    pub records: Vec<Node>,
}

/// The code book a tensor of a layer built with `compat` gets (biases and gains: standard).
fn expected_codec(t: &Named, compat: Codec) -> Codec {
    if t.morphable {
        compat
    } else {
        Codec::Standard
    }
}

/// The layer's dtype and code book: those of its first weight tensor (what `dtype` reports).
fn layer_dtype(tensors: &[Named]) -> (DType, Codec) {
    let first = tensors.iter().find(|t| t.morphable).unwrap_or(&tensors[0]);
    let store = first.param.read().unwrap();
    (store.dtype(), store.codec())
}

/// Whether the reference's flat view can hold every block exactly in `dtype` with one scale.
fn exact_view(layout: &[Block], named: &HashMap<&str, &Named>, images: &HashMap<&str, StoreImage>, dtype: DType, compat: Codec) -> Option<f32> {
    let float = dtype.family() == Family::Float;
    let mut scale = None;
    for block in layout {
        let Block::Tensor { name, .. } = block else {
            if float {
                continue;
            }
            return None;
        };
        let image = &images[name];
        // The reference decodes integer and binary codes as code × scale, as both our code books
        // do (unsigned: when the zero point is 0); its fp8/fp4 tables are its own.
        let same_decoder = matches!(dtype.family(), Family::Signed | Family::Unsigned | Family::Binary);
        let codes_are_the_references = float || image.codec == Codec::Loom && !dtype.is_block() || same_decoder;
        if image.dtype != dtype || image.codec != expected_codec(named[name], compat) || !codes_are_the_references || image.zero_point != 0.0 {
            return None;
        }
        match scale {
            None => scale = Some(image.scale),
            Some(s) if s.to_bits() == image.scale.to_bits() => {}
            Some(_) => return None,
        }
    }
    scale.or(Some(1.0))
}

/// Codes (exact view) or values (float32 view) of a block, appended to `out`.
fn push_codes(store: &WeightStore, start: usize, len: usize, out: &mut Vec<u64>) -> Result<()> {
    match store.view()? {
        WeightView::F32(m) => out.extend(m[start..start + len].iter().map(|v| v.to_bits() as u64)),
        WeightView::Packed(p) => out.extend((start..start + len).map(|i| p.code(i))),
    }
    Ok(())
}

fn push_values(store: &WeightStore, start: usize, len: usize, out: &mut Vec<f32>) -> Result<()> {
    let view = store.view()?;
    let at = out.len();
    out.resize(at + len, 0.0);
    view.decode_into(start, &mut out[at..]);
    Ok(())
}

/// The entry's weight fields for `layer` (containers and weightless layers: none).
pub fn write(layer: &Layer, masters: bool) -> Result<Written> {
    let tensors = named_tensors(layer);
    if tensors.is_empty() {
        return Ok(Written::default());
    }
    let (dtype, compat) = layer_dtype(&tensors);
    let named: HashMap<&str, &Named> = tensors.iter().map(|t| (t.name, t)).collect();
    let mut images = HashMap::new();
    for t in &tensors {
        images.insert(t.name, StoreImage::capture(&t.param.read().unwrap(), masters)?);
    }
    let layout = reference_layout(layer);
    let exact = if layout.is_empty() { None } else { exact_view(&layout, &named, &images, dtype, compat) };
    let blob = if layout.is_empty() {
        None
    } else if let Some(scale) = exact {
        let mut codes = Vec::new();
        for block in &layout {
            match *block {
                Block::Tensor { name, start, len } => push_codes(&named[name].param.read().unwrap(), start, len, &mut codes)?,
                Block::Zeros(len) => codes.extend(std::iter::repeat_n(0, len)),
            }
        }
        let packed = Packed::from_codes(dtype, compat, codes.into_iter(), scale, 0.0);
        Some(Blob { bytes: loom_disk::encode(&packed), native: true, scale })
    } else {
        let mut values = Vec::new();
        for block in &layout {
            match *block {
                Block::Tensor { name, start, len } => push_values(&named[name].param.read().unwrap(), start, len, &mut values)?,
                Block::Zeros(len) => values.resize(values.len() + len, 0.0),
            }
        }
        Some(Blob { bytes: f32_bytes(&values), native: false, scale: 1.0 })
    };
    let in_blob = |name: &str| exact.is_some() && layout.iter().any(|b| matches!(b, Block::Tensor { name: n, .. } if *n == name));
    let mut records = Vec::new();
    for t in &tensors {
        let image = &images[t.name];
        let full = !in_blob(t.name);
        if full || image.master.is_some() || image.released {
            records.push(record(t.name, image, full)?);
        }
    }
    Ok(Written { blob, compat: Some(compat), records })
}

/// One `tensors` entry: the full image, or (for a tensor the reference view holds) only its
/// master / released flag.
fn record(name: &str, image: &StoreImage, full: bool) -> Result<Node> {
    let mut fields = vec![("name".to_string(), Node::Str(name.into()))];
    if full {
        fields.push(("dtype".into(), Node::Str(image.dtype.name().into())));
        fields.push(("compat".into(), Node::Str(image.codec.name().into())));
        fields.push(("shape".into(), Node::Array(image.shape.iter().map(|&d| Node::int(d as u64)).collect())));
        fields.push(("scale".into(), Node::f32(image.scale, "scale")?));
        if image.zero_point != 0.0 {
            fields.push(("zero_point".into(), Node::from_value(&Value::from(image.zero_point))));
        }
        fields.push(("data".into(), Node::Str(base64::encode(&image.data))));
    }
    if let Some(master) = &image.master {
        fields.push(("master".into(), Node::Str(base64::encode(&f32_bytes(master)))));
    }
    if image.released {
        fields.push(("released".into(), Node::Bool(true)));
    }
    Ok(Node::Object(fields))
}

fn load_err(f: &Fields, field: &str, msg: impl std::fmt::Display) -> Error {
    Error::ModelLoad(format!("{}: field {field:?} {msg}", f.context))
}

fn decode_b64(f: &Fields, field: &str, text: &str) -> Result<Vec<u8>> {
    base64::decode(text).map_err(|m| load_err(f, field, m))
}

/// A tensor's codes (or f32 values) gathered from the blocks of the flat view.
fn gather<T: Copy + Default>(layout: &[Block], len_of: &HashMap<&str, usize>, item: impl Fn(usize) -> T) -> HashMap<&'static str, Vec<T>> {
    let mut out: HashMap<&'static str, Vec<T>> = HashMap::new();
    let mut offset = 0;
    for block in layout {
        if let Block::Tensor { name, start, len } = *block {
            let v = out.entry(name).or_insert_with(|| vec![T::default(); len_of[name]]);
            for k in 0..len {
                v[start + k] = item(offset + k);
            }
        }
        offset += block.len();
    }
    out
}

/// The stores the reference view (`weights`, `native`, `scale`) describes.
fn from_blob(f: &Fields, layout: &[Block], tensors: &[Named], compat: Codec) -> Result<HashMap<&'static str, WeightStore>> {
    let text = f.str("weights")?;
    let bytes = decode_b64(f, "weights", text)?;
    let dtype = match f.str("dtype")? {
        "" => DType::Float32,
        name => DType::parse(name).map_err(|e| load_err(f, "dtype", e))?,
    };
    let native = f.bool("native", false)?;
    let scale = f.f64("scale", 0.0)? as f32;
    let total: usize = layout.iter().map(Block::len).sum();
    let len_of: HashMap<&str, usize> = tensors.iter().map(|t| (t.name, t.param.read().unwrap().len())).collect();
    let need = if native { dtype.packed_bytes(total) } else { 4 * total };
    if bytes.len() != need {
        let what = if native { format!("{total} {dtype} weights") } else { format!("{total} float32 weights (native: false)") };
        return Err(load_err(f, "weights", format!("holds {} bytes, but the layer's {what} take {need} (truncated or the wrong layer?)", bytes.len())));
    }
    let mut stores = HashMap::new();
    let store_for = |t: &Named, restored: Result<WeightStore>| restored.map_err(|e| load_err(f, "weights", format!("({}): {e}", t.name)));
    if native && dtype != DType::Float32 {
        let all = loom_disk::decode_with(dtype, compat, &bytes, total, scale, 0.0).map_err(|e| load_err(f, "weights", e))?;
        let codes = gather(layout, &len_of, |i| all.code(i));
        for t in tensors.iter().filter(|t| codes.contains_key(t.name)) {
            let shape = t.param.read().unwrap().shape().to_vec();
            let c = codes[t.name].iter().copied();
            let store = if t.morphable {
                WeightStore::restore(shape, compat, Some(Packed::from_codes(dtype, compat, c, scale, 0.0)), None, scale)
            } else if dtype.family() == Family::Float {
                WeightStore::restore(shape, Codec::Standard, Some(Packed::from_codes(dtype, Codec::Standard, c, 1.0, 0.0)), None, 1.0)
            } else if matches!(dtype.family(), Family::Signed | Family::Unsigned | Family::Binary) {
                // Biases keep the standard code book: for these families its codes mean what the
                // reference's mean (code × scale).
                WeightStore::restore(shape, Codec::Standard, Some(Packed::from_codes(dtype, Codec::Standard, c, scale, 0.0)), None, 1.0)
            } else {
                // fp8/fp4 biases and gains become float32: the values the reference's codes stand for.
                let values = c.map(|code| decode_code(dtype, compat, code, scale, 0.0)).collect();
                WeightStore::new(values, shape, Codec::Standard)
            };
            stores.insert(t.name, store_for(t, store)?);
        }
    } else {
        let values = f32_values(&bytes);
        check_finite(&values, "weights").map_err(|e| load_err(f, "weights", e))?;
        let per_tensor = gather(layout, &len_of, |i| values[i]);
        // The reference's legacy form: float32 masters, morphed on load with the entry's scale
        // (an absent or zero scale means "choose one", where the reference divides by zero).
        let loom_scale = if native || scale == 0.0 { 1.0 } else { scale };
        for t in tensors.iter().filter(|t| per_tensor.contains_key(t.name)) {
            let shape = t.param.read().unwrap().shape().to_vec();
            let master = per_tensor[t.name].clone();
            let store = if t.morphable {
                WeightStore::restore(shape, compat, None, Some(master), if native { scale } else { loom_scale }).and_then(|mut s| {
                    s.morph(dtype)?;
                    Ok(s)
                })
            } else {
                WeightStore::new(master, shape, Codec::Standard)
            };
            stores.insert(t.name, store_for(t, store)?);
        }
    }
    Ok(stores)
}

/// A full `tensors` entry as a store image.
fn image_of(r: &Fields) -> Result<StoreImage> {
    let dtype = DType::parse(r.str("dtype")?).map_err(|e| load_err(r, "dtype", e))?;
    let codec = Codec::parse(r.str("compat")?).map_err(|e| load_err(r, "compat", e))?;
    let shape = r
        .list("shape")?
        .iter()
        .map(|v| v.as_u64().map(|d| d as usize).ok_or_else(|| load_err(r, "shape", format!("must hold non-negative integers, got {v}"))))
        .collect::<Result<Vec<usize>>>()?;
    Ok(StoreImage {
        dtype,
        codec,
        shape,
        scale: r.f64("scale", 1.0)? as f32,
        zero_point: r.f64("zero_point", 0.0)?,
        data: decode_b64(r, "data", r.str("data")?)?,
        master: None,
        released: false,
    })
}

/// Install the weights an entry describes into `layer` (built from the same entry), all or none.
pub fn install(layer: &Layer, f: &Fields, compat: Codec) -> Result<()> {
    let tensors = named_tensors(layer);
    let records = f.list("tensors")?;
    if tensors.is_empty() {
        if !f.str("weights")?.is_empty() || !records.is_empty() {
            return Err(Error::ModelLoad(format!("{}: a {} layer has no weights, but the entry carries some", f.context, layer.type_name())));
        }
        return Ok(());
    }
    let by_name: HashMap<&str, &Named> = tensors.iter().map(|t| (t.name, t)).collect();
    let mut parsed = BTreeMap::new();
    for (i, value) in records.iter().enumerate() {
        let obj = value.as_object().ok_or_else(|| load_err(f, "tensors", format!("entry {i} must be an object")))?;
        let name = Fields::new(obj, format!("{}: tensors[{i}]", f.context)).str("name")?.to_string();
        let context = format!("{}: tensor {name:?}", f.context);
        let r = Fields::new(obj, context);
        r.reject_unknown(&["name", "dtype", "compat", "shape", "scale", "zero_point", "data", "master", "released"])
            .map_err(|e| Error::ModelLoad(e.to_string()))?;
        let Some(t) = by_name.get(name.as_str()) else {
            let known: Vec<&str> = tensors.iter().map(|t| t.name).collect();
            return Err(Error::ModelLoad(format!("{}: no tensor named {name:?} in a {} layer (it has {})", f.context, layer.type_name(), known.join(", "))));
        };
        if parsed.insert(t.name, obj).is_some() {
            return Err(Error::ModelLoad(format!("{}: tensor {name:?} is listed twice", f.context)));
        }
    }
    let layout = reference_layout(layer);
    let has_data = |name: &str| parsed.get(name).is_some_and(|o| o.get("data").is_some_and(|d| !d.is_null()));
    let blob_needed = layout.iter().any(|b| matches!(b, Block::Tensor { name, .. } if !has_data(name)));
    let mut stores = if blob_needed && !f.str("weights")?.is_empty() { from_blob(f, &layout, &tensors, compat)? } else { HashMap::new() };
    for (&name, obj) in &parsed {
        let r = Fields::new(obj, format!("{}: tensor {name:?}", f.context));
        let mut image = if has_data(name) {
            image_of(&r)?
        } else {
            let store = stores.get(name).ok_or_else(|| load_err(&r, "data", "is missing, and the entry's weights do not hold this tensor"))?;
            StoreImage::capture(store, false)?
        };
        let expected = by_name[name].param.read().unwrap().shape().to_vec();
        if image.shape != expected {
            return Err(load_err(&r, "shape", format!("is {:?}, but the layer's {name} has shape {expected:?}", image.shape)));
        }
        let master = r.str("master")?;
        if !master.is_empty() {
            let bytes = decode_b64(&r, "master", master)?;
            if !bytes.len().is_multiple_of(4) {
                return Err(load_err(&r, "master", format!("holds {} bytes, not whole float32 values", bytes.len())));
            }
            image.master = Some(f32_values(&bytes));
        }
        image.released = r.bool("released", false)?;
        stores.insert(name, image.restore().map_err(|e| Error::ModelLoad(format!("{}: {e}", r.context)))?);
    }
    // Tensors the entry says nothing about keep their initial values, in the entry's dtype.
    let dtype = match f.str("dtype")? {
        "" => DType::Float32,
        name => DType::parse(name).map_err(|e| load_err(f, "dtype", e))?,
    };
    for t in tensors.iter().filter(|t| t.morphable && !stores.contains_key(t.name)) {
        t.param.write().unwrap().morph(dtype).map_err(|e| load_err(f, "dtype", e))?;
    }
    for (name, store) in stores {
        *by_name[name].param.write().unwrap() = store;
    }
    Ok(())
}
