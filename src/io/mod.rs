//! File formats below the network: GGUF (llama.cpp's format), the building blocks of the
//! reference's persistence JSON (base64, ordered JSON, one weight store's on-disk image) and
//! atomic writes.

pub mod atomic;
pub mod base64;
pub mod gguf;
pub mod json_out;
pub mod store_image;
