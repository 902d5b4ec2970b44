//! Text ↔ token ids through the HF `tokenizers` crate (same ids as the Python package): from a
//! tokenizer.json, a model directory (plus its config files), or a GGUF vocabulary rebuilt as BPE.

use crate::error::{Error, Result};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::sync::Arc;
use tokenizers::tokenizer::step_decode_stream;

/// A tokenizer plus what a model directory says around it (BOS/EOS ids, chat template).
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: Option<u32>,
    /// Every id that ends generation (generation_config.json may list several).
    eos_ids: Vec<u32>,
    chat_template: Option<String>,
}

/// A GGUF file's `tokenizer.ggml.*` metadata: enough to rebuild the BPE tokenizer.
#[derive(Clone, Debug, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: "gpt2" (byte-level BPE) or "llama" (SentencePiece-style BPE).
    pub model: String,
    /// `tokenizer.ggml.pre`: names the pre-tokenizer regex ("gpt2", "smollm", "llama-bpe", ...).
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    /// Per token: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte. Empty: all normal.
    pub token_types: Vec<i32>,
    /// "left right" pairs, highest priority first. Empty for "llama": derived from the vocabulary.
    pub merges: Vec<String>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub add_bos: bool,
}

const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// Pre-tokenizer regexes by the llama.cpp `pre` names, as the HF tokenizer.json of those models has
/// them. GPT-2's own regex lives inside the ByteLevel pre-tokenizer (`use_regex`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn load_err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::ModelLoad(format!("{}: {what}", path.display()))
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| load_err(path, e))?;
    serde_json::from_str(&text).map_err(|e| load_err(path, format!("not valid JSON: {e}")))
}

/// A special token in tokenizer_config.json is either "text" or {"content": "text", ...}.
fn token_text(value: Option<&Value>) -> Option<&str> {
    match value? {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content")?.as_str(),
        _ => None,
    }
}

/// `chat_template` is a string, or a list of {"name", "template"} of which "default" is the chat one.
fn chat_template_of(config: &Value) -> Option<String> {
    match config.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(named) => named
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
        _ => None,
    }
}

/// `eos_token_id` is one id or a list of them.
fn ids_of(value: Option<&Value>) -> Vec<u32> {
    match value {
        Some(Value::Number(n)) => n.as_u64().map(|id| vec![id as u32]).unwrap_or_default(),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_u64).map(|id| id as u32).collect(),
        _ => Vec::new(),
    }
}

fn bos_template(bos: &str, bos_id: u32) -> Value {
    let special = |t: &str| json!({"SpecialToken": {"id": t, "type_id": 0}});
    let seq = |s: &str| json!({"Sequence": {"id": s, "type_id": 0}});
    json!({
        "type": "TemplateProcessing",
        "single": [special(bos), seq("A")],
        "pair": [special(bos), seq("A"), special(bos), seq("B")],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    })
}

impl Tokenizer {
    /// A tokenizer.json exactly as HF reads it. BOS/EOS are unknown without the config files.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path.as_ref();
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| load_err(path, e))?;
        Ok(Tokenizer { inner, bos_id: None, eos_ids: Vec::new(), chat_template: None })
    }

    /// A HF model directory: tokenizer.json, plus tokenizer_config.json (bos/eos tokens,
    /// add_bos_token, chat_template), chat_template.jinja and generation_config.json (eos ids win
    /// over the config's eos token) where present.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Tokenizer> {
        let dir = dir.as_ref();
        let mut tok = Tokenizer::from_file(dir.join("tokenizer.json"))?;
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.exists() { read_json(&config_path)? } else { Value::Null };
        let generation_path = dir.join("generation_config.json");
        let generation = if generation_path.exists() { read_json(&generation_path)? } else { Value::Null };

        tok.bos_id = ids_of(generation.get("bos_token_id"))
            .first()
            .copied()
            .or_else(|| token_text(config.get("bos_token")).and_then(|t| tok.inner.token_to_id(t)));
        tok.eos_ids = ids_of(generation.get("eos_token_id"));
        if tok.eos_ids.is_empty() {
            tok.eos_ids = token_text(config.get("eos_token")).and_then(|t| tok.inner.token_to_id(t)).into_iter().collect();
        }
        let template_file = dir.join("chat_template.jinja");
        tok.chat_template = if template_file.exists() {
            Some(std::fs::read_to_string(&template_file).map_err(|e| load_err(&template_file, e))?)
        } else {
            chat_template_of(&config)
        };
        if config.get("add_bos_token").and_then(Value::as_bool) == Some(true) {
            tok.ensure_bos_prepended(&config_path)?;
        }
        Ok(tok)
    }

    /// The tokenizer a GGUF file describes in its `tokenizer.ggml.*` metadata, with the file's
    /// Jinja chat template (`tokenizer.chat_template`) when it has one.
    pub fn from_gguf(file: &crate::io::gguf::GgufFile) -> Result<Tokenizer> {
        let strings = |key: &str| file.get_str_array(key).map(|items| items.into_iter().map(String::from).collect::<Vec<_>>());
        let id = |key: &str| file.get_u64(key).map(|v| v as u32);
        let tokens = strings("tokenizer.ggml.tokens")
            .ok_or_else(|| Error::ModelLoad(format!("{}: no tokenizer.ggml.tokens in the metadata", file.path().display())))?;
        let vocab = GgufVocab {
            model: file.get_str("tokenizer.ggml.model").unwrap_or("gpt2").to_string(),
            pre: file.get_str("tokenizer.ggml.pre").map(String::from),
            tokens,
            token_types: file.get_i32_array("tokenizer.ggml.token_type").unwrap_or_default(),
            merges: strings("tokenizer.ggml.merges").unwrap_or_default(),
            bos_id: id("tokenizer.ggml.bos_token_id"),
            eos_id: id("tokenizer.ggml.eos_token_id"),
            unk_id: id("tokenizer.ggml.unknown_token_id"),
            add_bos: matches!(file.metadata("tokenizer.ggml.add_bos_token"), Some(crate::io::gguf::GgufValue::Bool(true))),
        };
        let mut tokenizer = Tokenizer::from_vocab(&vocab)?;
        tokenizer.chat_template = file.get_str("tokenizer.chat_template").map(String::from);
        // Building goes through a JSON description several times the tokenizer's own size.
        crate::heap::release_free_pages();
        Ok(tokenizer)
    }

    /// A byte-level ("gpt2") or SentencePiece-style ("llama", byte fallback) BPE rebuilt from a
    /// GGUF vocabulary; control tokens become added special tokens, user-defined ones added tokens.
    pub fn from_vocab(vocab: &GgufVocab) -> Result<Tokenizer> {
        let json = tokenizer_json(vocab)?;
        let inner: tokenizers::Tokenizer = json
            .to_string()
            .parse()
            .map_err(|e| Error::ModelLoad(format!("GGUF vocabulary ({} tokens): {e}", vocab.tokens.len())))?;
        let eos_ids = vocab.eos_id.into_iter().collect();
        Ok(Tokenizer { inner, bos_id: vocab.bos_id, eos_ids, chat_template: None })
    }

    /// add_bos_token asks for BOS in front of every encoding; install a template that adds it
    /// unless tokenizer.json's post-processor already does.
    fn ensure_bos_prepended(&mut self, config_path: &Path) -> Result<()> {
        let Some(bos_id) = self.bos_id else {
            return Err(load_err(config_path, "add_bos_token is true but no bos_token is known"));
        };
        if self.encode("", true)?.first() == Some(&bos_id) {
            return Ok(());
        }
        let bos = self.id_to_token(bos_id).ok_or_else(|| load_err(config_path, format!("bos id {bos_id} is not in the vocabulary")))?;
        let processor: tokenizers::PostProcessorWrapper = serde_json::from_value(bos_template(&bos, bos_id)).map_err(|e| load_err(config_path, e))?;
        self.inner.with_post_processor(Some(processor));
        Ok(())
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, add_special_tokens).map_err(|e| Error::Value(format!("encoding failed: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Ids past the vocabulary are an error (HF would drop them silently).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.check_ids(ids)?;
        self.inner.decode(ids, skip_special_tokens).map_err(|e| Error::Value(format!("decoding failed: {e}")))
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let size = self.vocab_size();
        match ids.iter().position(|&id| id as usize >= size) {
            Some(i) => Err(Error::Value(format!("token id {} at index {i} is outside the vocabulary of {size}", ids[i]))),
            None => Ok(()),
        }
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
    /// Including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_ids.first().copied()
    }
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }
    /// The model's own Jinja chat template, if its files carry one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
    pub fn set_chat_template(&mut self, source: Option<String>) {
        self.chat_template = source;
    }
    pub fn bos_token(&self) -> Option<String> {
        self.bos_id.and_then(|id| self.id_to_token(id))
    }
    pub fn eos_token(&self) -> Option<String> {
        self.eos_id().and_then(|id| self.id_to_token(id))
    }
}

/// The tokenizer.json HF would write for this vocabulary; parsing it reuses the crate's own
/// (de)serialisation instead of a second construction path.
fn tokenizer_json(vocab: &GgufVocab) -> Result<Value> {
    let llama = match vocab.model.as_str() {
        "gpt2" => false,
        "llama" => true,
        other => return Err(Error::ModelLoad(format!("GGUF tokenizer.ggml.model {other:?} is not supported (gpt2 or llama)"))),
    };
    if !vocab.token_types.is_empty() && vocab.token_types.len() != vocab.tokens.len() {
        return Err(Error::ModelLoad(format!(
            "GGUF tokenizer.ggml.token_type has {} entries for {} tokens",
            vocab.token_types.len(),
            vocab.tokens.len()
        )));
    }
    for (name, id) in [("bos", vocab.bos_id), ("eos", vocab.eos_id), ("unk", vocab.unk_id)] {
        if let Some(id) = id.filter(|&id| id as usize >= vocab.tokens.len()) {
            return Err(Error::ModelLoad(format!("GGUF {name} token id {id} is outside the {} tokens", vocab.tokens.len())));
        }
    }
    let mut ids = Map::new();
    let mut added = Vec::new();
    for (id, token) in vocab.tokens.iter().enumerate() {
        ids.entry(token.clone()).or_insert(json!(id));
        let kind = vocab.token_types.get(id).copied().unwrap_or(1);
        if kind == TOKEN_TYPE_CONTROL || kind == TOKEN_TYPE_USER_DEFINED {
            added.push(json!({"id": id, "content": token, "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": false, "special": kind == TOKEN_TYPE_CONTROL}));
        }
    }
    let merges = if llama && vocab.merges.is_empty() { merges_from_vocab(&vocab.tokens) } else { parse_merges(&vocab.merges)? };
    let unk = vocab.unk_id.map(|id| vocab.tokens[id as usize].clone());
    let post_processor = match (vocab.add_bos, vocab.bos_id) {
        (true, Some(id)) => bos_template(&vocab.tokens[id as usize], id),
        (true, None) => return Err(Error::ModelLoad("GGUF asks to add BOS but has no bos token id".into())),
        _ => Value::Null,
    };
    let (normalizer, pre_tokenizer, decoder) = if llama { sentencepiece_parts() } else { byte_level_parts(vocab.pre.as_deref())? };
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": post_processor, "decoder": decoder,
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": llama, "byte_fallback": llama, "ignore_merges": false,
                  "vocab": ids, "merges": merges},
    }))
}

fn parse_merges(merges: &[String]) -> Result<Vec<Value>> {
    merges
        .iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((left, right)) => Ok(json!([left, right])),
            None => Err(Error::ModelLoad(format!("GGUF merge {i} ({m:?}) is not \"left right\""))),
        })
        .collect()
}

/// SentencePiece GGUFs carry scores instead of merges: every split of a token into two vocabulary
/// pieces is a merge, ranked by the merged token's id (SentencePiece ids follow descending score),
/// as transformers' GGUF converter does.
fn merges_from_vocab(tokens: &[String]) -> Vec<Value> {
    let ids: std::collections::HashMap<&str, usize> = tokens.iter().enumerate().rev().map(|(i, t)| (t.as_str(), i)).collect();
    let mut merges = Vec::new();
    for (merged, token) in tokens.iter().enumerate() {
        let mut local: Vec<(usize, usize, &str, &str)> = token
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (left, right) = token.split_at(at);
                Some((*ids.get(left)?, *ids.get(right)?, left, right))
            })
            .collect();
        local.sort();
        merges.extend(local.into_iter().map(|(_, _, l, r)| (merged, l, r)));
    }
    merges.sort_by_key(|&(merged, _, _)| merged);
    merges.into_iter().map(|(_, l, r)| json!([l, r])).collect()
}

/// Llama-2-style: spaces become "▁" with one prepended, byte fallback for unknown characters.
fn sentencepiece_parts() -> (Value, Value, Value) {
    let normalizer = json!({"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]});
    let decoder = json!({"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]});
    (normalizer, Value::Null, decoder)
}

fn byte_level_parts(pre: Option<&str>) -> Result<(Value, Value, Value)> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |regex: &str| json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false});
    let pre_tokenizer = match pre.unwrap_or("default") {
        "default" | "gpt2" | "smollm" => byte_level(true),
        "llama-bpe" | "llama3" => json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)]}),
        "qwen2" => json!({"type": "Sequence", "pretokenizers": [split(QWEN2_REGEX), byte_level(false)]}),
        other => {
            return Err(Error::ModelLoad(format!(
                "GGUF tokenizer.ggml.pre {other:?} is not supported (default, gpt2, smollm, llama-bpe, llama3, qwen2)"
            )))
        }
    };
    Ok((Value::Null, pre_tokenizer, byte_level(true)))
}

/// Turns ids into text as they are generated: a piece comes out only once it is complete UTF-8,
/// so characters split over several byte-level tokens appear whole.
pub struct StreamDecoder {
    tokenizer: Arc<Tokenizer>,
    skip_special_tokens: bool,
    /// The tokenizers crate's stream state: the ids still needed for context, the text already
    /// given out for them, and where that text's ids end.
    ids: Vec<u32>,
    prefix: String,
    prefix_index: usize,
}

impl StreamDecoder {
    pub fn new(tokenizer: Arc<Tokenizer>, skip_special_tokens: bool) -> StreamDecoder {
        StreamDecoder { tokenizer, skip_special_tokens, ids: Vec::new(), prefix: String::new(), prefix_index: 0 }
    }

    /// The text this id completes ("" while a character is still partial).
    pub fn step(&mut self, id: u32) -> Result<String> {
        self.tokenizer.check_ids(&[id])?;
        let piece = step_decode_stream(
            &self.tokenizer.inner,
            vec![id],
            self.skip_special_tokens,
            &mut self.ids,
            &mut self.prefix,
            &mut self.prefix_index,
        )
        .map_err(|e| Error::Value(format!("stream decoding failed at token {id}: {e}")))?;
        Ok(piece.unwrap_or_default())
    }

    /// The text still held back at the end of generation (a character whose remaining bytes
    /// never came), decoded as the whole-sequence decode would (invalid bytes become U+FFFD);
    /// the decoder starts afresh afterwards.
    pub fn flush(&mut self) -> Result<String> {
        let text = self
            .tokenizer
            .inner
            .decode(&self.ids, self.skip_special_tokens)
            .map_err(|e| Error::Value(format!("stream decoding failed at the end: {e}")))?;
        let rest = text.get(self.prefix.len()..).unwrap_or_default().to_string();
        self.ids.clear();
        self.prefix.clear();
        self.prefix_index = 0;
        Ok(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte-level BPE over the 256 byte symbols plus a few merges and one control token.
    fn tiny_gpt2() -> GgufVocab {
        let bytes: Vec<String> = (0u8..=255).map(byte_symbol).collect();
        let mut tokens = bytes;
        tokens.extend(["he", "ll", "hell", "hello", "<|end|>"].map(String::from));
        let mut token_types = vec![1; tokens.len()];
        *token_types.last_mut().unwrap() = TOKEN_TYPE_CONTROL;
        GgufVocab {
            model: "gpt2".into(),
            tokens,
            token_types,
            merges: ["h e", "l l", "he ll", "hell o"].map(String::from).to_vec(),
            eos_id: Some(260),
            ..Default::default()
        }
    }

    /// GPT-2's printable stand-in for a byte, as the ByteLevel pre-tokenizer maps it.
    fn byte_symbol(b: u8) -> String {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        if printable {
            char::from_u32(b as u32).unwrap().to_string()
        } else {
            let shifted = (0u8..=255)
                .filter(|&c| !((b'!'..=b'~').contains(&c) || (0xA1..=0xAC).contains(&c) || (0xAE..=0xFF).contains(&c)))
                .position(|c| c == b)
                .unwrap();
            char::from_u32(256 + shifted as u32).unwrap().to_string()
        }
    }

    #[test]
    fn gguf_vocab_encodes_merges_and_special_tokens() {
        let tok = Tokenizer::from_vocab(&tiny_gpt2()).unwrap();
        assert_eq!(tok.encode("hello<|end|>", true).unwrap(), vec![259, 260]);
        assert_eq!(tok.decode(&[259, 260], true).unwrap(), "hello");
        assert_eq!(tok.eos_id(), Some(260));
    }

    #[test]
    fn stream_pieces_are_whole_characters() {
        let tok = Arc::new(Tokenizer::from_vocab(&tiny_gpt2()).unwrap());
        let ids = tok.encode("hé🙂!", false).unwrap();
        let mut stream = StreamDecoder::new(tok.clone(), false);
        let pieces: Vec<String> = ids.iter().map(|&id| stream.step(id).unwrap()).collect();
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')));
        assert_eq!(pieces.concat(), tok.decode(&ids, false).unwrap());
    }

    #[test]
    fn bad_vocabularies_and_ids_are_errors() {
        let mut vocab = tiny_gpt2();
        vocab.pre = Some("mystery".into());
        assert!(matches!(Tokenizer::from_vocab(&vocab), Err(Error::ModelLoad(m)) if m.contains("mystery")));
        let tok = Tokenizer::from_vocab(&tiny_gpt2()).unwrap();
        assert!(matches!(tok.decode(&[5, 9999], false), Err(Error::Value(m)) if m.contains("index 1")));
    }
}
