//! LlamaConfig: the hyper-parameters of a Llama-family decoder (Llama, Mistral, Qwen2, SmolLM...)
//! read from a HuggingFace `config.json`; every error names the file and the field.

use crate::error::{Error, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::Path;

/// Architectures laid out as Llama blocks (RMSNorm → attention → RMSNorm → SwiGLU, RoPE).
const ARCHITECTURES: &[&str] = &["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlamaConfig {
    pub architecture: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub vocab_size: usize,
    pub tie_word_embeddings: bool,
    /// Q/K/V (and, when the checkpoint has it, O) projection biases: Qwen2 always has them.
    pub attention_bias: bool,
    /// The context length: the KV cache holds at most this many positions.
    pub max_position_embeddings: usize,
}

/// One config.json being read, named in every error.
struct Reader<'a> {
    obj: &'a Map<String, Value>,
    source: &'a str,
}

impl Reader<'_> {
    fn err(&self, field: &str, msg: impl std::fmt::Display) -> Error {
        Error::ModelLoad(format!("{}: field {field:?} {msg}", self.source))
    }
    fn get(&self, field: &str) -> Option<&Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }
    fn size(&self, field: &str, default: Option<usize>) -> Result<usize> {
        match (self.get(field), default) {
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.err(field, "is missing")),
            (Some(v), _) => match v.as_u64() {
                Some(n) if n > 0 => Ok(n as usize),
                _ => Err(self.err(field, format!("must be a positive integer, got {v}"))),
            },
        }
    }
    fn number(&self, field: &str, default: f64) -> Result<f64> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v.as_f64().filter(|f| f.is_finite() && *f > 0.0).ok_or_else(|| self.err(field, format!("must be a positive number, got {v}"))),
        }
    }
    fn flag(&self, field: &str, default: bool) -> Result<bool> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.err(field, format!("must be true or false, got {v}"))),
        }
    }
}

impl LlamaConfig {
    /// Read `config.json` at `path`.
    pub fn from_file(path: &Path) -> Result<LlamaConfig> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::ModelLoad(format!("cannot read {source}: {e}")))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| Error::ModelLoad(format!("{source} is not valid JSON: {e}")))?;
        LlamaConfig::from_value(&value, &source)
    }

    /// Read a parsed config; `source` names it in errors.
    pub fn from_value(value: &Value, source: &str) -> Result<LlamaConfig> {
        let obj = value.as_object().ok_or_else(|| Error::ModelLoad(format!("{source} must hold a JSON object")))?;
        let r = Reader { obj, source };
        let architecture = match r.get("architectures") {
            Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).find(|n| ARCHITECTURES.contains(n)).map(str::to_string),
            _ => None,
        }
        .ok_or_else(|| r.err("architectures", format!("names no supported architecture (supported: {})", ARCHITECTURES.join(", "))))?;
        if let Some(act) = r.get("hidden_act") {
            if act.as_str() != Some("silu") {
                return Err(r.err("hidden_act", format!("is {act}; only \"silu\" (SwiGLU) is supported")));
            }
        }
        if let Some(scaling) = r.get("rope_scaling") {
            return Err(r.err("rope_scaling", format!("is {scaling}; scaled RoPE is not supported")));
        }
        let hidden_size = r.size("hidden_size", None)?;
        let num_attention_heads = r.size("num_attention_heads", None)?;
        let num_key_value_heads = r.size("num_key_value_heads", Some(num_attention_heads))?;
        if !num_attention_heads.is_multiple_of(num_key_value_heads) {
            return Err(r.err("num_key_value_heads", format!("({num_key_value_heads}) must divide num_attention_heads ({num_attention_heads})")));
        }
        if r.get("head_dim").is_none() && !hidden_size.is_multiple_of(num_attention_heads) {
            return Err(r.err("num_attention_heads", format!("({num_attention_heads}) must divide hidden_size ({hidden_size}) when head_dim is absent")));
        }
        let head_dim = r.size("head_dim", Some(hidden_size / num_attention_heads))?;
        Ok(LlamaConfig {
            hidden_size,
            intermediate_size: r.size("intermediate_size", None)?,
            num_hidden_layers: r.size("num_hidden_layers", None)?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: r.number("rms_norm_eps", 1e-6)?,
            rope_theta: r.number("rope_theta", 10000.0)?,
            vocab_size: r.size("vocab_size", None)?,
            tie_word_embeddings: r.flag("tie_word_embeddings", false)?,
            attention_bias: r.flag("attention_bias", architecture == "Qwen2ForCausalLM")?,
            max_position_embeddings: r.size("max_position_embeddings", Some(2048))?,
            architecture,
        })
    }

    /// H·head_dim: the width of the concatenated query heads.
    pub fn query_width(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }
    /// Hkv·head_dim: the width of keys and values.
    pub fn kv_width(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 64})
    }

    #[test]
    fn defaults_follow_hf_and_qwen2_has_biases() {
        let c = LlamaConfig::from_value(&base(), "config.json").unwrap();
        assert_eq!((c.head_dim, c.attention_bias, c.rope_theta, c.rms_norm_eps), (8, true, 10000.0, 1e-6));
        assert_eq!((c.query_width(), c.kv_width()), (32, 16));
    }

    #[test]
    fn errors_name_file_and_field() {
        let mut v = base();
        v["num_key_value_heads"] = json!(3);
        let e = LlamaConfig::from_value(&v, "m/config.json").unwrap_err();
        assert!(matches!(&e, Error::ModelLoad(m) if m.starts_with("m/config.json: field \"num_key_value_heads\"")), "{e}");
        let mut v = base();
        v["architectures"] = json!(["GPT2LMHeadModel"]);
        assert!(matches!(LlamaConfig::from_value(&v, "c").unwrap_err(), Error::ModelLoad(m) if m.contains("architectures")));
        let mut v = base();
        v.as_object_mut().unwrap().remove("vocab_size");
        assert!(matches!(LlamaConfig::from_value(&v, "c").unwrap_err(), Error::ModelLoad(m) if m.contains("\"vocab_size\" is missing")));
    }
}
