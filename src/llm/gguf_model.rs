//! Llama-family models from a GGUF file: the hyper-parameters from its `llama.*` metadata and
//! the tensors under llama.cpp's names, mapped to the HF names `Transformer::build` asks for.
//! Quantised tensors stay in their block format (a Q4_1 model keeps its 4-bit size in memory).

use super::checkpoint::TensorSource;
use super::config::LlamaConfig;
use crate::error::{Error, Result};
use crate::io::gguf::GgufFile;
use crate::layers::Param;
use crate::weights::WeightStore;
use std::sync::{Arc, RwLock};

/// The GGUF name of an HF tensor name, and whether its rows carry llama.cpp's RoPE permutation
/// (Q and K: converted for interleaved RoPE pairs, we use the half-split pairing).
fn gguf_name(hf: &str) -> Option<(String, bool)> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some((name.to_string(), false));
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (block, part) = rest.split_once('.')?;
    let (name, permuted) = match part {
        "input_layernorm.weight" => ("attn_norm.weight", false),
        "post_attention_layernorm.weight" => ("ffn_norm.weight", false),
        "self_attn.q_proj.weight" => ("attn_q.weight", true),
        "self_attn.k_proj.weight" => ("attn_k.weight", true),
        "self_attn.q_proj.bias" => ("attn_q.bias", true),
        "self_attn.k_proj.bias" => ("attn_k.bias", true),
        "self_attn.v_proj.weight" => ("attn_v.weight", false),
        "self_attn.v_proj.bias" => ("attn_v.bias", false),
        "self_attn.o_proj.weight" => ("attn_output.weight", false),
        "self_attn.o_proj.bias" => ("attn_output.bias", false),
        "mlp.gate_proj.weight" => ("ffn_gate.weight", false),
        "mlp.up_proj.weight" => ("ffn_up.weight", false),
        "mlp.down_proj.weight" => ("ffn_down.weight", false),
        _ => return None,
    };
    Some((format!("blk.{block}.{name}"), permuted))
}

pub struct GgufSource {
    pub file: GgufFile,
    heads: usize,
    kv_heads: usize,
}

impl GgufSource {
    pub fn open(path: &std::path::Path) -> Result<(LlamaConfig, GgufSource)> {
        let file = GgufFile::open(path)?;
        let config = config_from_gguf(&file)?;
        let source = GgufSource { heads: config.num_attention_heads, kv_heads: config.num_key_value_heads, file };
        Ok((config, source))
    }

    fn locate(&self, name: &str) -> Result<(String, bool)> {
        gguf_name(name).ok_or_else(|| Error::ModelLoad(format!("{}: no GGUF name for tensor {name:?}", self.file.path().display())))
    }

    /// The rows of a Q or K projection in half-split order: llama.cpp stores each head's rows as
    /// interleaved (pair, half) — row (i·2 + h) of a head holds what HF has at row (h·hd/2 + i).
    fn unpermute(&self, bytes: &[u8], rows: usize, heads: usize) -> Vec<u8> {
        let row_bytes = bytes.len() / rows;
        let head_dim = rows / heads;
        let mut out = vec![0u8; bytes.len()];
        for head in 0..heads {
            for half in 0..2 {
                for i in 0..head_dim / 2 {
                    let src = head * head_dim + i * 2 + half;
                    let dst = head * head_dim + half * head_dim / 2 + i;
                    out[dst * row_bytes..(dst + 1) * row_bytes].copy_from_slice(&bytes[src * row_bytes..(src + 1) * row_bytes]);
                }
            }
        }
        out
    }

    fn store(&self, name: &str, shape: &[usize]) -> Result<WeightStore> {
        let (gguf, permuted) = self.locate(name)?;
        let info = self.file.tensor(&gguf)?;
        let got = info.shape();
        let want: Vec<usize> = shape.to_vec();
        if got.iter().product::<usize>() != want.iter().product::<usize>() || (got.len() == want.len() && got != want) {
            return Err(Error::ModelLoad(format!(
                "{}: tensor {gguf:?} ({name}) has shape {got:?}, the config needs {want:?}",
                self.file.path().display()
            )));
        }
        let bytes = self.file.tensor_bytes(&gguf)?;
        let store = if permuted {
            let heads = if name.contains("q_proj") { self.heads } else { self.kv_heads };
            WeightStore::from_gguf(&self.unpermute(bytes, want[0], heads), info.ggml_type, want)?
        } else {
            WeightStore::from_gguf(bytes, info.ggml_type, want)?
        };
        self.file.release_pages(&gguf)?;
        Ok(store)
    }
}

impl TensorSource for GgufSource {
    fn contains(&self, name: &str) -> bool {
        gguf_name(name).is_some_and(|(g, _)| self.file.tensor(&g).is_ok())
    }
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let mut store = self.store(name, shape)?;
        let dtype = store.dtype();
        store.dequantize(dtype)
    }
    fn param(&self, name: &str, shape: &[usize]) -> Result<Param> {
        Ok(Arc::new(RwLock::new(self.store(name, shape)?)))
    }
}

/// The hyper-parameters of a `general.architecture` = llama (or compatible) GGUF.
pub fn config_from_gguf(file: &GgufFile) -> Result<LlamaConfig> {
    let arch = file.get_str("general.architecture").unwrap_or("llama").to_string();
    let missing = |key: &str| Error::ModelLoad(format!("{}: metadata {key:?} is missing", file.path().display()));
    let int = |key: &str| file.get_u64(&format!("{arch}.{key}")).map(|v| v as usize).ok_or_else(|| missing(&format!("{arch}.{key}")));
    let hidden = int("embedding_length")?;
    let heads = int("attention.head_count")?;
    let vocab = match file.get_u64(&format!("{arch}.vocab_size")) {
        Some(v) => v as usize,
        None => file.get_str_array("tokenizer.ggml.tokens").map(|t| t.len()).ok_or_else(|| missing("tokenizer.ggml.tokens"))?,
    };
    // GGUF's "llama" covers Llama, Mistral and SmolLM; "qwen2" has attention biases.
    let architecture = if arch == "qwen2" { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" };
    let value = serde_json::json!({
        "architectures": [architecture],
        "hidden_size": hidden,
        "intermediate_size": int("feed_forward_length")?,
        "num_hidden_layers": int("block_count")?,
        "num_attention_heads": heads,
        "num_key_value_heads": int("attention.head_count_kv").unwrap_or(heads),
        "head_dim": int("rope.dimension_count").unwrap_or(hidden / heads),
        "rms_norm_eps": file.get_f32(&format!("{arch}.attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
        "rope_theta": file.get_f32(&format!("{arch}.rope.freq_base")).unwrap_or(10000.0),
        "vocab_size": vocab,
        "max_position_embeddings": int("context_length").unwrap_or(2048),
        "tie_word_embeddings": file.tensor("output.weight").is_err(),
        "attention_bias": file.tensor("blk.0.attn_q.bias").is_ok(),
    });
    LlamaConfig::from_value(&value, &file.path().display().to_string())
}
