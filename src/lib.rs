//! polyvtd core: dtypes, codecs, weight stores, kernels, layers, the volumetric network, training,
//! the GPU backend, model files, LLM inference. Dependencies point down this list (python →
//! llm/train/targetprop → network → layers → kernels/gpu → io → weights → codec → dtype/activation/error).

pub mod activation;
pub mod codec;
pub mod coord;
pub mod dtype;
pub mod error;
pub mod gpu;
pub mod heap;
pub mod io;
pub mod kernels;
pub mod layers;
pub mod llm;
pub mod network;
pub mod rng;
pub mod targetprop;
pub mod train;
pub mod weights;

#[cfg(feature = "python")]
mod python;
