"""polyvtd: a volumetric neural engine — 3-D grids of layers whose weights live in any of 21
dtypes and are computed from their packed form, on the CPU (three schedules) or a GPU (wgpu)."""

from . import _core, layers, models
from ._core import (
    ChatTemplate,
    KVCache,
    Layer,
    StreamDecoder,
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
from .network import VolumetricNetwork

load = VolumetricNetwork.load
from .transformer import Transformer

__version__ = _core.__version__

__all__ = [
    "VolumetricNetwork",
    "load",
    "Transformer",
    "WeightStore",
    "Layer",
    "KVCache",
    "Tokenizer",
    "StreamDecoder",
    "ChatTemplate",
    "TrainingResult",
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
    *errors.__all__,
]
