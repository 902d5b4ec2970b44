//! The PyO3 bindings: the only code that knows Python. Each exposed class has its own file;
//! errors.rs maps core errors to the exception classes defined in python/polyvtd/errors.py.

mod arrays;
mod dna;
mod errors;
mod evolution;
mod gguf;
mod gpu;
mod kv_cache;
mod layer;
mod network;
mod systolic;
mod observer;
mod targetprop;
mod persist;
mod transformer;
mod tokenizer;
mod weights;

use pyo3::prelude::*;

/// The CPU kernels' instruction set: "avx512", "avx2" or "scalar" (capped by POLYVTD_SIMD).
#[pyfunction]
fn simd_level() -> &'static str {
    match crate::kernels::simd::level() {
        crate::kernels::simd::SimdLevel::Avx512 => "avx512",
        crate::kernels::simd::SimdLevel::Avx2 => "avx2",
        crate::kernels::simd::SimdLevel::Scalar => "scalar",
    }
}

#[pymodule]
#[pyo3(name = "_core")]
fn core_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<weights::PyWeightStore>()?;
    m.add_class::<layer::PyLayer>()?;
    m.add_class::<kv_cache::PyKvCache>()?;
    m.add_class::<network::PyNetwork>()?;
    m.add_class::<network::PyTrainingResult>()?;
    m.add_class::<systolic::PySystolic>()?;
    m.add_class::<targetprop::PyTargetProp>()?;
    m.add_class::<targetprop::PyTargetPropConfig>()?;
    m.add_class::<transformer::PyTransformer>()?;
    m.add_class::<transformer::PyDecodeSession>()?;
    m.add_class::<tokenizer::PyTokenizer>()?;
    m.add_class::<tokenizer::PyStreamDecoder>()?;
    m.add_class::<tokenizer::PyChatTemplate>()?;
    m.add_function(wrap_pyfunction!(gpu::gpu_available, m)?)?;
    m.add_function(wrap_pyfunction!(gpu::gpu_info, m)?)?;
    m.add_function(wrap_pyfunction!(gpu::gpu_adapters, m)?)?;
    m.add_function(wrap_pyfunction!(gpu::use_gpu, m)?)?;
    m.add_function(wrap_pyfunction!(gpu::gpu_memory, m)?)?;
    m.add_function(wrap_pyfunction!(gpu::_gpu_destroy_device_for_tests, m)?)?;
    m.add_function(wrap_pyfunction!(weights::dtypes, m)?)?;
    m.add_function(wrap_pyfunction!(weights::block_dtypes, m)?)?;
    m.add_function(wrap_pyfunction!(gguf::gguf_info, m)?)?;
    m.add_function(wrap_pyfunction!(arrays::borrowed_data_ptr, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_class::<dna::PyDna>()?;
    m.add_class::<dna::PyLayerSignature>()?;
    m.add_class::<dna::PyDnaComparison>()?;
    m.add_class::<dna::PyLogicShift>()?;
    m.add_class::<dna::PySpliceReport>()?;
    m.add_function(wrap_pyfunction!(dna::compare_dna, m)?)?;
    m.add_function(wrap_pyfunction!(dna::splice, m)?)?;
    m.add_class::<evolution::PyPopulation>()?;
    m.add_function(wrap_pyfunction!(evolution::neat_mutate, m)?)?;
    m.add_class::<observer::PyLayerEvent>()?;
    m.add_class::<observer::PyLayerStats>()?;
    persist::register(m)?;
    Ok(())
}
