//! LLM inference on the grid: tokenization and chat templates, HF config and checkpoint
//! loading, the Transformer laid out on a VolumetricNetwork with KV-cache decoding, sampling and
//! the generation loop.

pub mod checkpoint;
pub mod config;
pub mod generate;
pub mod gguf_model;
pub mod gpu_model;
pub mod model;
pub mod sampler;
pub mod template;
pub mod tokenizer;

pub use checkpoint::{Checkpoint, TensorSource};
pub use config::LlamaConfig;
pub use generate::generate_ids;
pub use model::{DecodeState, Transformer};
pub use sampler::{Sampler, SamplingConfig};
