"""NEAT evolution: ``NEATConfig``, ``neat_mutate`` (one mutated copy) and ``NEATPopulation``
(rank by a Python fitness function, keep the best quarter, breed the rest). Mutation and
breeding run natively; this module calls the fitness function."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from . import _core
from .errors import InputError
from .network import VolumetricNetwork

LAYER_TYPES = (
    "Dense", "RNN", "LSTM", "RMSNorm", "SwiGLU", "MultiHeadAttention", "LayerNorm", "CNN1", "CNN2", "CNN3",
    "ConvTransposed1D", "ConvTransposed2D", "ConvTransposed3D", "Embedding", "KMeans", "Softmax", "Residual",
)


@dataclasses.dataclass
class NEATConfig:
    """Mutation settings (defaults: the reference's DefaultNEATConfig, with seed 0).

    Per slot, in traversal order, each with its own draw: ``weight_perturb_rate`` (add
    U(−``weight_perturb_scale``, +scale) to every weight), ``activation_mut_rate`` (a new activation
    from ReLU, SiLU, GELU, Tanh, Sigmoid, Linear), ``node_mutate_rate`` (a fresh layer of another
    type in ``allowed_layer_types`` sized for the slot), ``layer_toggle_rate`` (flip its disabled
    flag). Per network: ``connection_add_rate`` (a slot also runs another slot's layer on its input:
    a remote-link branch combined by "add") and ``connection_drop_rate`` (remove a remote link).
    Structural mutations happen only where the network still runs on ``input_shape`` (default:
    the network's own) and keeps its output shape. ``default_num_heads`` (lowered until it divides
    the width), ``default_in_channels`` (for flat inputs), ``default_kernel_size`` (odd) and
    ``default_num_clusters`` size new attention, convolution and KMeans layers. ``token_vocab``:
    the network input is token ids below this bound, so the slot reading it may become an
    Embedding with that many rows (None: no Embedding is created)."""

    weight_perturb_rate: float = 0.8
    weight_perturb_scale: float = 0.05
    node_mutate_rate: float = 0.1
    connection_add_rate: float = 0.05
    connection_drop_rate: float = 0.02
    activation_mut_rate: float = 0.1
    layer_toggle_rate: float = 0.02
    allowed_layer_types: Sequence[str] = LAYER_TYPES
    default_num_heads: int = 4
    default_in_channels: int = 1
    default_kernel_size: int = 3
    default_num_clusters: int = 8
    input_shape: Optional[Sequence[int]] = None
    token_vocab: Optional[int] = None
    seed: int = 0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["allowed_layer_types"] = list(self.allowed_layer_types)
        d["input_shape"] = None if self.input_shape is None else [int(v) for v in self.input_shape]
        return d


ConfigLike = Union[NEATConfig, dict, None]
_FIELDS = tuple(f.name for f in dataclasses.fields(NEATConfig))


def _config(config: ConfigLike) -> NEATConfig:
    if config is None:
        return NEATConfig()
    if isinstance(config, NEATConfig):
        return config
    if isinstance(config, dict):
        unknown = sorted(set(config) - set(_FIELDS))
        if unknown:
            raise InputError(f"unknown NEAT config field(s) {unknown}; known fields: {', '.join(_FIELDS)}")
        return NEATConfig(**config)
    raise TypeError(f"config must be a NEATConfig, a dict or None, got {type(config).__name__}")


def _config_json(config: ConfigLike) -> str:
    checked = _config(config)
    try:
        return json.dumps(checked.to_dict())
    except (TypeError, ValueError) as exc:
        raise InputError(f"NEAT config cannot be read: {exc}") from None


def neat_mutate(net: VolumetricNetwork, config: ConfigLike = None) -> VolumetricNetwork:
    """A mutated copy of ``net`` (its own buffers; ``net`` is unchanged), drawn from
    ``config.seed``."""
    if not isinstance(net, VolumetricNetwork):
        raise TypeError(f"net must be a VolumetricNetwork, got {type(net).__name__}")
    return VolumetricNetwork._wrap(_core.neat_mutate(net._net, _config_json(config)))


def _score(value: Any, index: int) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, np.ndarray) and value.size == 1 and np.issubdtype(value.dtype, np.number):
        return float(value.reshape(()))
    raise TypeError(f"the fitness function returned {type(value).__name__} for member {index}; expected a number")


class NEATPopulation:
    """``size`` mutated copies of ``seed`` (each from its own seed drawn from ``config.seed``).

    ``evolve(fitness, generations)`` calls ``fitness(network)`` for every member (higher is
    better; NaN ranks last), keeps the best quarter unchanged and replaces the rest with mutated
    blends of two random elites. What the fitness function does to a member (e.g. training it)
    stays. If it raises, the exception propagates and the population is left as it was before
    that generation."""

    def __init__(self, seed: VolumetricNetwork, size: int, config: ConfigLike = None):
        if not isinstance(seed, VolumetricNetwork):
            raise TypeError(f"seed must be a VolumetricNetwork, got {type(seed).__name__}")
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise InputError(f"size must be an integer ≥ 1, got {size!r}")
        self.config = _config(config)
        self._pop = _core.Population(seed._net, int(size), _config_json(self.config))

    @property
    def networks(self) -> list:
        """The members, best first once a generation has been evaluated."""
        return [VolumetricNetwork._wrap(n) for n in self._pop.networks()]

    @property
    def fitnesses(self) -> list:
        """Each member's last score (None for children bred since)."""
        return self._pop.fitnesses

    @property
    def best(self) -> VolumetricNetwork:
        """The best member of the last evaluated generation (kept unchanged as an elite)."""
        return VolumetricNetwork._wrap(self._pop.best())

    @property
    def best_fitness(self) -> Optional[float]:
        return self._pop.best_fitness

    @property
    def generation(self) -> int:
        """Generations evaluated so far."""
        return self._pop.generation

    @property
    def history(self) -> list:
        """Per generation: {"generation", "best", "mean", "worst", "nan_count", "size"}."""
        return self._pop.history

    def __len__(self) -> int:
        return self._pop.size

    def summary(self) -> str:
        """"Gen g | best=… avg=… worst=… pop=n" for the last generation."""
        return self._pop.summary()

    def evaluate(self, fitness: Callable[[VolumetricNetwork], Any]) -> list:
        """Score every member without breeding: [fitness(member) for member in networks]."""
        return [_score(fitness(net), i) for i, net in enumerate(self.networks)]

    def evolve(
        self,
        fitness: Callable[[VolumetricNetwork], Any],
        generations: int = 1,
        *,
        progress: bool = False,
        on_generation: Optional[Callable[[dict], Any]] = None,
    ) -> list:
        """Run ``generations`` rounds of evaluate → rank → breed; returns their statistics
        (also appended to ``history``). ``on_generation(stats)`` is called after each."""
        if isinstance(generations, bool) or not isinstance(generations, numbers.Integral) or generations < 0:
            raise InputError(f"generations must be an integer ≥ 0, got {generations!r}")
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(generations), desc="evolve", unit="gen")
        done = []
        try:
            for _ in range(int(generations)):
                nets = self.networks
                scores = [_score(fitness(net), i) for i, net in enumerate(nets)]
                stats = self._pop.advance(scores, [n._net for n in nets])
                done.append(stats)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(best=f"{stats['best']:.4g}")
                if on_generation is not None:
                    on_generation(stats)
        finally:
            if bar is not None:
                bar.close()
        return done

    def __repr__(self) -> str:
        best = self.best_fitness
        shown = "None" if best is None else ("nan" if math.isnan(best) else f"{best:.6g}")
        return f"NEATPopulation(size={len(self)}, generation={self.generation}, best_fitness={shown})"
