//! GGUF files (llama.cpp's model format, versions 2 and 3), memory-mapped: the metadata
//! key/values, the tensor directory and zero-copy access to each tensor's bytes.
//!
//! Layout: "GGUF", u32 version, u64 tensor count, u64 key/value count, the key/values, the tensor
//! infos (name, dims innermost first, ggml type id, offset into the data section), then the data
//! section at the next multiple of `general.alignment` (default 32). All little-endian. Every
//! malformed byte is an `Error::ModelLoad` naming the path and offset; nothing here panics.

use crate::codec::ggml_blocks::GgmlType;
use crate::error::{Error, Result};
use crate::weights::WeightStore;
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// GGML tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays may nest; a deeper chain is a corrupted file, not a model.
const MAX_ARRAY_DEPTH: usize = 8;

/// One metadata value (GGUF value types 0–12).
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// Any integer type that fits in u64 (negative values do not).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v as u64),
            GgufValue::U16(v) => Some(v as u64),
            GgufValue::U32(v) => Some(v as u64),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type that fits in i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v as i64),
            GgufValue::I16(v) => Some(v as i64),
            GgufValue::I32(v) => Some(v as i64),
            GgufValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }
}

/// One tensor of the directory. `dims` are GGUF's (innermost first); `shape()` is row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    pub nbytes: usize,
}

impl TensorInfo {
    /// Row-major shape (GGUF's dims reversed): a [rows, row length] matrix is dims [row length, rows].
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
    pub fn len(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An open GGUF file: the parsed header over the mapped bytes.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    version: u32,
    alignment: u64,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<TensorInfo>,
    data_start: usize,
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref().to_path_buf();
        let io_err = |e: std::io::Error| Error::ModelLoad(format!("{}: {e}", path.display()));
        let file = std::fs::File::open(&path).map_err(io_err)?;
        // Safety: the map is read-only; like every mmap reader (llama.cpp included) we assume the
        // file is not truncated or rewritten by another process while it is open.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        GgufFile::parse(path, map)
    }

    fn parse(path: PathBuf, map: Mmap) -> Result<GgufFile> {
        let mut r = Reader { bytes: &map, pos: 0, path: &path };
        let magic = r.take(4, "the magic")?;
        if magic != MAGIC {
            return Err(r.error_at(0, &format!("not a GGUF file: magic {magic:02x?}, expected \"GGUF\"")));
        }
        let version = r.u32("the version")?;
        if !(2..=3).contains(&version) {
            let hint = if version.swap_bytes() <= 3 { " (a big-endian file?)" } else { "" };
            return Err(r.error_at(4, &format!("GGUF version {version} is not supported (2 and 3 are){hint}")));
        }
        let tensor_count = r.u64("the tensor count")?;
        let kv_count = r.u64("the metadata count")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = r.string("a metadata key")?;
            let value_type = r.u32(&format!("the type of metadata {key:?}"))?;
            let value = r.value(value_type, &key, 0)?;
            metadata.insert(key, value);
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v.as_u64().filter(|a| a.is_power_of_two()).ok_or_else(|| {
                Error::ModelLoad(format!("{}: general.alignment {v:?} is not a power of two", path.display()))
            })?,
        };
        let mut infos = Vec::new();
        for _ in 0..tensor_count {
            infos.push(r.tensor_info()?);
        }
        let data_start = (r.pos as u64).next_multiple_of(alignment);
        let file_len = map.len() as u64;
        if data_start > file_len && !infos.is_empty() {
            return Err(r.error_at(r.pos, &format!("the data section starts at byte {data_start}, past the end")));
        }
        let data_len = file_len.saturating_sub(data_start);
        let mut tensors = Vec::with_capacity(infos.len());
        let mut seen = std::collections::HashSet::new();
        for (info, info_offset) in infos {
            if !seen.insert(info.name.clone()) {
                return Err(r.error_at(info_offset, &format!("tensor {:?} appears twice", info.name)));
            }
            let end = info.offset.checked_add(info.nbytes as u64);
            if !info.offset.is_multiple_of(alignment) || end.is_none_or(|end| end > data_len) {
                return Err(r.error_at(
                    info_offset,
                    &format!(
                        "tensor {:?}: data at offset {} (+{} bytes) is misaligned (alignment {alignment}) or past the end \
                         of the data section ({data_len} bytes from byte {data_start})",
                        info.name, info.offset, info.nbytes
                    ),
                ));
            }
            tensors.push(info);
        }
        Ok(GgufFile { path, map, version, alignment, metadata, tensors, data_start: data_start as usize })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn version(&self) -> u32 {
        self.version
    }
    pub fn alignment(&self) -> u64 {
        self.alignment
    }
    /// Every key/value, sorted by key.
    pub fn metadata_all(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }
    pub fn metadata(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.metadata(key)?.as_u64()
    }
    /// F32 or F64 values (the latter rounded), or any integer.
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        match self.metadata(key)? {
            GgufValue::F32(v) => Some(*v),
            GgufValue::F64(v) => Some(*v as f32),
            v => v.as_i64().map(|i| i as f32),
        }
    }
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.metadata(key)? {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }
    /// An array of strings (e.g. `tokenizer.ggml.tokens`).
    pub fn get_str_array(&self, key: &str) -> Option<Vec<&str>> {
        match self.metadata(key)? {
            GgufValue::Array(items) => items.iter().map(|v| if let GgufValue::String(s) = v { Some(s.as_str()) } else { None }).collect(),
            _ => None,
        }
    }
    /// An array of integers that fit in i32 (e.g. `tokenizer.ggml.token_type`).
    pub fn get_i32_array(&self, key: &str) -> Option<Vec<i32>> {
        match self.metadata(key)? {
            GgufValue::Array(items) => items.iter().map(|v| v.as_i64().and_then(|i| i32::try_from(i).ok())).collect(),
            _ => None,
        }
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }
    pub fn tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::ModelLoad(format!("{}: no tensor named {name:?}", self.path.display())))
    }
    /// The tensor's bytes in the file, without a copy.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.tensor(name)?;
        let start = self.data_start + info.offset as usize;
        Ok(&self.map[start..start + info.nbytes])
    }
    /// The tensor as a weight store (see `WeightStore::from_gguf`: quantised tensors stay packed).
    pub fn weight_store(&self, name: &str) -> Result<WeightStore> {
        let info = self.tensor(name)?;
        let store = WeightStore::from_gguf(self.tensor_bytes(name)?, info.ggml_type, info.shape())?;
        self.release_pages(name)?;
        Ok(store)
    }

    /// Drop a tensor's mapped pages from this process's resident set once its bytes have been
    /// copied: otherwise a whole model would count twice (map + copy) at the peak of loading.
    /// Reading the tensor again simply re-reads the file.
    pub fn release_pages(&self, name: &str) -> Result<()> {
        let info = self.tensor(name)?;
        // Safety: the map is a private read-only file mapping that is never written, so dropped
        // pages refault with the same bytes; any slice borrowed from it stays valid.
        #[cfg(unix)]
        unsafe {
            // Advice only: a kernel that declines it costs memory, not correctness.
            let _ = self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, self.data_start + info.offset as usize, info.nbytes);
        }
        Ok(())
    }
}

/// A cursor over the file's bytes whose every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn error_at(&self, offset: usize, msg: &str) -> Error {
        Error::ModelLoad(format!("{}: at byte offset {offset}: {msg}", self.path.display()))
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left {
            return Err(self.error_at(
                self.pos,
                &format!("truncated file: {what} needs {n} bytes, {left} left (file has {})", self.bytes.len()),
            ));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N as u64, what)?.try_into().expect("took N bytes"))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.error_at(at, &format!("{what} is not UTF-8")))
    }

    fn value(&mut self, value_type: u32, key: &str, depth: usize) -> Result<GgufValue> {
        let what = format!("metadata {key:?}");
        let at = self.pos;
        Ok(match value_type {
            0 => GgufValue::U8(u8::from_le_bytes(self.array(&what)?)),
            1 => GgufValue::I8(i8::from_le_bytes(self.array(&what)?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => GgufValue::U32(self.u32(&what)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => match self.array::<1>(&what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.error_at(at, &format!("{what}: bool byte {b} is neither 0 nor 1"))),
            },
            8 => GgufValue::String(self.string(&what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.error_at(at, &format!("{what}: arrays nested deeper than {MAX_ARRAY_DEPTH}")));
                }
                let item_type = self.u32(&what)?;
                let count = self.u64(&what)?;
                // Every item takes at least one byte: a larger count is a corrupted file (and
                // must not become a huge allocation).
                let left = (self.bytes.len() - self.pos) as u64;
                if count > left {
                    return Err(self.error_at(at, &format!("truncated file: {what} claims {count} items, {left} bytes left")));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(item_type, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(&what)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(&what)?)),
            t => return Err(self.error_at(at, &format!("{what}: unknown value type {t}"))),
        })
    }

    /// One tensor info and the byte offset it starts at (for later errors).
    fn tensor_info(&mut self) -> Result<(TensorInfo, usize)> {
        let at = self.pos;
        let name = self.string("a tensor name")?;
        let what = format!("tensor {name:?}");
        let n_dims = self.u32(&what)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(self.error_at(at, &format!("{what} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")));
        }
        let dims = (0..n_dims).map(|_| self.u64(&what)).collect::<Result<Vec<u64>>>()?;
        let type_id = self.u32(&what)?;
        let ggml_type = GgmlType::from_id(type_id).map_err(|name_of_type| {
            self.error_at(
                at,
                &format!("{what} has ggml type {type_id} ({name_of_type}), not supported: polyvtd reads F32, F16, BF16, Q4_0, Q4_1, Q8_0"),
            )
        })?;
        let offset = self.u64(&what)?;
        let count = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).filter(|&c| c <= isize::MAX as u64);
        let nbytes = count.and_then(|c| ggml_type.bytes_for(c as usize));
        let Some(nbytes) = nbytes else {
            return Err(self.error_at(at, &format!("{what}: dims {dims:?} are too large")));
        };
        if ggml_type.dtype().is_block() && !dims[0].is_multiple_of(crate::dtype::DType::BLOCK_VALUES as u64) {
            return Err(self.error_at(at, &format!("{what}: {} rows of {} values are not whole 32-value blocks", ggml_type.name(), dims[0])));
        }
        Ok((TensorInfo { name, dims, ggml_type, offset, nbytes }, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ggml_blocks;
    use crate::dtype::DType;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    /// A v3 file: a string, a u32, a nested i32 array, and a Q8_0 [2 × 32] tensor.
    fn sample_file() -> (Vec<u8>, Vec<u8>) {
        let w: Vec<f32> = (0..64).map(|i| (i as f32 * 0.3).sin()).collect();
        let blocks = ggml_blocks::quantize(&w, DType::Q8_0);
        let mut f = b"GGUF".to_vec();
        f.extend(3u32.to_le_bytes());
        f.extend(1u64.to_le_bytes());
        f.extend(3u64.to_le_bytes());
        string(&mut f, "general.architecture");
        f.extend(8u32.to_le_bytes());
        string(&mut f, "llama");
        string(&mut f, "llama.block_count");
        f.extend(4u32.to_le_bytes());
        f.extend(30u32.to_le_bytes());
        string(&mut f, "nested");
        f.extend(9u32.to_le_bytes());
        f.extend(9u32.to_le_bytes());
        f.extend(1u64.to_le_bytes());
        f.extend(5u32.to_le_bytes());
        f.extend(2u64.to_le_bytes());
        f.extend((-7i32).to_le_bytes());
        f.extend(9i32.to_le_bytes());
        string(&mut f, "w");
        f.extend(2u32.to_le_bytes());
        f.extend(32u64.to_le_bytes());
        f.extend(2u64.to_le_bytes());
        f.extend(8u32.to_le_bytes());
        f.extend(0u64.to_le_bytes());
        f.resize(f.len().next_multiple_of(32), 0);
        f.extend(&blocks);
        (f, blocks)
    }

    fn open_bytes(bytes: &[u8], name: &str) -> Result<GgufFile> {
        let path = std::env::temp_dir().join(format!("polyvtd-gguf-{}-{name}.gguf", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let opened = GgufFile::open(&path);
        std::fs::remove_file(&path).unwrap();
        opened
    }

    #[test]
    fn reads_metadata_and_tensors() {
        let (bytes, blocks) = sample_file();
        let f = open_bytes(&bytes, "ok").unwrap();
        assert_eq!((f.version(), f.alignment()), (3, 32));
        assert_eq!(f.get_str("general.architecture"), Some("llama"));
        assert_eq!(f.get_u64("llama.block_count"), Some(30));
        let nested = GgufValue::Array(vec![GgufValue::Array(vec![GgufValue::I32(-7), GgufValue::I32(9)])]);
        assert_eq!(f.metadata("nested"), Some(&nested));
        let t = f.tensor("w").unwrap();
        assert_eq!((t.shape(), t.ggml_type, t.nbytes), (vec![2, 32], GgmlType::Q8_0, 68));
        assert_eq!(f.tensor_bytes("w").unwrap(), &blocks[..]);
        assert_eq!(f.weight_store("w").unwrap().dtype(), DType::Q8_0);
    }

    #[test]
    fn every_truncation_is_a_named_error() {
        let (bytes, _) = sample_file();
        for len in 0..bytes.len() {
            match open_bytes(&bytes[..len], "cut") {
                Err(Error::ModelLoad(msg)) => assert!(msg.contains("byte offset"), "{len}: {msg}"),
                other => panic!("{len} bytes: {:?}", other.map(|f| f.tensors().len())),
            }
        }
    }

    #[test]
    fn unsupported_tensor_types_are_named() {
        let (mut bytes, _) = sample_file();
        let type_at = bytes.windows(4).rposition(|w| w == 8u32.to_le_bytes()).unwrap();
        bytes[type_at..type_at + 4].copy_from_slice(&12u32.to_le_bytes());
        let err = open_bytes(&bytes, "q4k").err().unwrap().to_string();
        assert!(err.contains("Q4_K") && err.contains("byte offset"), "{err}");
    }
}
