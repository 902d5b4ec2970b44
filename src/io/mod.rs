//! Model files read from disk: GGUF (llama.cpp's format).

pub mod gguf;
