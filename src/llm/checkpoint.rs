//! Checkpoint: the `*.safetensors` files of a HuggingFace model directory (one file, or shards
//! listed by `model.safetensors.index.json`), memory-mapped; tensors are read by name as f32
//! (from F32, F16 or BF16) after their shape has been checked.

use crate::codec::Codec;
use crate::layers::{new_param, Param};
use crate::error::{Error, Result};
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

const INDEX: &str = "model.safetensors.index.json";

/// One mapped file and its parsed header.
struct Shard {
    path: PathBuf,
    map: Mmap,
    /// Bytes before the tensor data (the 8-byte length and the JSON header).
    data_start: usize,
    metadata: Metadata,
}

/// Where a model's tensors come from, by HuggingFace name: a checkpoint on disk, or a map in tests.
pub trait TensorSource {
    fn contains(&self, name: &str) -> bool;
    /// The tensor `name` as f32, checked to have `shape`; errors name the tensor and the shape.
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;
    /// The tensor as a weight store: a float32 master by default; a source whose tensors are
    /// quantised (GGUF) keeps them packed.
    fn param(&self, name: &str, shape: &[usize]) -> Result<Param> {
        new_param(self.tensor(name, shape)?, shape.to_vec(), Codec::Standard)
    }
}

pub struct Checkpoint {
    shards: Vec<Shard>,
    /// Tensor name → the shard holding it.
    location: HashMap<String, usize>,
}

fn load_err(msg: String) -> Error {
    Error::ModelLoad(msg)
}

impl Shard {
    fn open(path: PathBuf) -> Result<Shard> {
        let file = File::open(&path).map_err(|e| load_err(format!("cannot open {}: {e}", path.display())))?;
        // Safety: the map is read-only; a checkpoint changed on disk while loaded is the caller's
        // problem (as for every memory-mapped loader).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| load_err(format!("cannot map {}: {e}", path.display())))?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&map).map_err(|e| load_err(format!("{} is not a valid safetensors file (truncated or corrupt?): {e:?}", path.display())))?;
        Ok(Shard { path, map, data_start: 8 + header_len, metadata })
    }
}

impl Checkpoint {
    /// Open the safetensors files of the model directory `dir`.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let index = dir.join(INDEX);
        let files = if index.is_file() {
            shard_files(&index)?
        } else {
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| load_err(format!("cannot read model directory {}: {e}", dir.display())))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(load_err(format!("{} holds no *.safetensors file", dir.display())));
            }
            found.into_iter().map(|name| (name, None)).collect()
        };
        let mut shards = Vec::new();
        let mut location = HashMap::new();
        for (path, expected) in files {
            let shard = Shard::open(dir.join(&path))?;
            for name in shard.metadata.tensors().into_keys() {
                location.insert(name, shards.len());
            }
            if let Some(names) = expected {
                if let Some(missing) = names.iter().find(|n| shard.metadata.info(n).is_none()) {
                    return Err(load_err(format!("{INDEX} places {missing:?} in {}, which does not hold it", shard.path.display())));
                }
            }
            shards.push(shard);
        }
        Ok(Checkpoint { shards, location })
    }
}

impl TensorSource for Checkpoint {
    fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let shard = &self.shards[*self.location.get(name).ok_or_else(|| {
            load_err(format!("the checkpoint has no tensor {name:?} (expected shape {shape:?})"))
        })?];
        let info = shard.metadata.info(name).expect("the location map lists only tensors of the shard");
        if info.shape != shape {
            return Err(load_err(format!("tensor {name:?} in {} has shape {:?}, expected {shape:?}", shard.path.display(), info.shape)));
        }
        let (start, end) = info.data_offsets;
        let bytes = &shard.map[shard.data_start + start..shard.data_start + end];
        let values: Vec<f32> = match info.dtype {
            Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => {
                return Err(load_err(format!("tensor {name:?} in {} has dtype {other:?}; supported: F32, F16, BF16", shard.path.display())))
            }
        };
        Ok(values)
    }
}

/// The shard files an index names, each with the tensors it should hold.
fn shard_files(index: &Path) -> Result<Vec<(PathBuf, Option<Vec<String>>)>> {
    let source = index.display();
    let text = std::fs::read_to_string(index).map_err(|e| load_err(format!("cannot read {source}: {e}")))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| load_err(format!("{source} is not valid JSON: {e}")))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| load_err(format!("{source}: field \"weight_map\" is missing or not an object")))?;
    let mut files: Vec<(PathBuf, Option<Vec<String>>)> = Vec::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| load_err(format!("{source}: weight_map[{tensor:?}] must be a file name, got {file}")))?;
        let file = PathBuf::from(file);
        match files.iter_mut().find(|(f, _)| *f == file) {
            Some((_, Some(names))) => names.push(tensor.clone()),
            _ => files.push((file, Some(vec![tensor.clone()]))),
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}
