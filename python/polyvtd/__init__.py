"""polyvtd: a volumetric neural engine — 3-D grids of layers whose weights live in any of 21
dtypes and are computed from their packed form, on the CPU (three schedules) or a GPU (wgpu)."""

from . import _core, layers, models
from ._core import (
    DNA,
    ChatTemplate,
    DNAComparison,
    KVCache,
    Layer,
    LayerEvent,
    LayerSignature,
    LayerStats,
    LogicShift,
    SpliceReport,
    StreamDecoder,
    TargetProp,
    TargetPropConfig,
    Tokenizer,
    TrainingResult,
    WeightStore,
    block_dtypes,
    dtypes,
    gguf_info,
    gpu_adapters,
    gpu_available,
    gpu_info,
    gpu_memory,
    simd_level,
    use_gpu,
)
from . import errors
from .errors import *  # noqa: F403  (the exception classes; listed in errors.__all__)
from .dna import compare_dna, splice
from .evolution import NEATConfig, NEATPopulation, neat_mutate
from .network import VolumetricNetwork
from .systolic import Systolic

load = VolumetricNetwork.load
from .transformer import Transformer

__version__ = _core.__version__

__all__ = [
    "VolumetricNetwork",
    "Systolic",
    "load",
    "Transformer",
    "WeightStore",
    "Layer",
    "KVCache",
    "Tokenizer",
    "StreamDecoder",
    "ChatTemplate",
    "TrainingResult",
    "TargetProp",
    "TargetPropConfig",
    "layers",
    "models",
    "dtypes",
    "block_dtypes",
    "gguf_info",
    "gpu_available",
    "gpu_info",
    "gpu_adapters",
    "use_gpu",
    "gpu_memory",
    "simd_level",
    "DNA",
    "LayerSignature",
    "DNAComparison",
    "LogicShift",
    "SpliceReport",
    "compare_dna",
    "splice",
    "NEATConfig",
    "NEATPopulation",
    "neat_mutate",
    "LayerEvent",
    "LayerStats",
    *errors.__all__,
]
