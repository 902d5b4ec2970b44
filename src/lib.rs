//! polyvtd core: dtypes, codecs, weight stores, kernels, layers, the volumetric network, training,
//! target propagation, the systolic mesh, DNA/evolution, observers and introspection, the GPU
//! backend, model files, LLM inference. Dependencies point down this list (python →
//! llm/systolic/targetprop/train/evolve → dna/introspect → network → observe/layers →
//! kernels/gpu → io → weights → codec → dtype/activation/error).

pub mod activation;
pub mod codec;
pub mod coord;
pub mod dna;
pub mod dtype;
pub mod error;
pub mod evolve;
pub mod gpu;
pub mod heap;
pub mod introspect;
pub mod io;
pub mod kernels;
pub mod layers;
pub mod llm;
pub mod network;
pub mod observe;
pub mod rng;
pub mod systolic;
pub mod targetprop;
pub mod train;
pub mod weights;

#[cfg(feature = "python")]
mod python;
