//! Language-model inference: tokenization and chat templates (more parts join as they land).

pub mod template;
pub mod tokenizer;
