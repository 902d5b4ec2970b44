//! KvCache: one attention layer's keys and values (after Q/K norm and RoPE) for each sequence
//! of a batch, for incremental decoding; memory grows with the positions fed, up to a capacity.

use super::{Attention, KIND};
use crate::error::{Error, Result};
use crate::kernels::attention::KeyValues;

#[derive(Debug, Clone)]
pub struct KvCache {
    batch: usize,
    capacity: usize,
    kv_width: usize,
    /// Per sequence: [len][kv_width] keys and values.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    /// An empty cache for `batch` sequences through `layer`, holding up to `capacity` positions
    /// each (None: the layer's max_seq_len).
    pub fn new(layer: &Attention, batch: usize, capacity: Option<usize>) -> Result<KvCache> {
        let capacity = capacity.unwrap_or(layer.config.max_seq_len);
        if batch == 0 || capacity == 0 {
            return Err(Error::Value(format!("a KV cache needs batch ≥ 1 and max_seq_len ≥ 1, got {batch} and {capacity}")));
        }
        Ok(KvCache { batch, capacity, kv_width: layer.heads().kv_width(), keys: vec![Vec::new(); batch], values: vec![Vec::new(); batch], len: 0 })
    }

    /// Positions cached per sequence.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Forget every position (the memory is kept for the next sequence).
    pub fn reset(&mut self) {
        self.keys.iter_mut().chain(&mut self.values).for_each(Vec::clear);
        self.len = 0;
    }

    /// Whether `seq` more positions of a `batch`-sequence input through `layer` fit.
    pub(super) fn check_fits(&self, layer: &Attention, batch: usize, seq: usize) -> Result<()> {
        if layer.heads().kv_width() != self.kv_width {
            return Err(Error::Shape(format!(
                "this KV cache holds keys {} wide, but the {KIND} layer makes keys {} wide",
                self.kv_width,
                layer.heads().kv_width()
            )));
        }
        if batch != self.batch {
            return Err(Error::Shape(format!("the KV cache holds {} sequences, the input has batch {batch}", self.batch)));
        }
        if self.len + seq > self.capacity {
            return Err(Error::Shape(format!(
                "a sequence of {seq} positions does not fit the KV cache: it holds {} of at most {} (reset it or make a larger one)",
                self.len, self.capacity
            )));
        }
        Ok(())
    }

    /// Append `seq` positions per sequence from k and v ([batch·seq][kv_width]).
    pub(super) fn append(&mut self, k: &[f32], v: &[f32], seq: usize) {
        let span = seq * self.kv_width;
        for (b, (keys, values)) in self.keys.iter_mut().zip(&mut self.values).enumerate() {
            keys.extend_from_slice(&k[b * span..(b + 1) * span]);
            values.extend_from_slice(&v[b * span..(b + 1) * span]);
        }
        self.len += seq;
    }

    /// Every sequence's cached keys and values.
    pub(super) fn items(&self) -> Vec<KeyValues<'_>> {
        self.keys.iter().zip(&self.values).map(|(k, v)| KeyValues { k, v }).collect()
    }
}
