"""DNA comparison and splicing: ``compare_dna`` measures how much two networks' weights overlap
per coordinate (and where layers moved), ``splice`` crosses two parents into a child."""

from __future__ import annotations

from typing import Union

from . import _core
from ._arrays import non_negative
from .network import VolumetricNetwork

DNALike = Union[_core.DNA, VolumetricNetwork]


def _dna(x: DNALike, name: str) -> _core.DNA:
    if isinstance(x, _core.DNA):
        return x
    if isinstance(x, VolumetricNetwork):
        return x.dna()
    raise TypeError(f"{name} must be a DNA or a VolumetricNetwork, got {type(x).__name__}")


def compare_dna(a: DNALike, b: DNALike) -> _core.DNAComparison:
    """Overlap of two networks (or their DNAs): ``overall_overlap`` (mean over the coordinates both
    occupy), ``layer_overlaps`` {(z, y, x, l): cosine} and ``logic_shifts`` (a slot of ``a`` whose
    best match in ``b``, overlap > 0.8, sits at another coordinate). Overlap is 0 between layers of
    different type, dtype or size."""
    return _core.compare_dna(_dna(a, "a"), _dna(b, "b"))


def splice(
    a: VolumetricNetwork,
    b: VolumetricNetwork,
    mode: str = "blend",
    *,
    blend_alpha: float = 0.5,
    split_ratio: float = 0.5,
    fitness_a: float = 0.0,
    fitness_b: float = 0.0,
    seed: int = 0,
    report: bool = False,
):
    """A child shaped like ``a`` (its own buffers, nothing shared with either parent) whose
    weights cross ``a``'s with ``b``'s at every coordinate where both hold a layer of the same
    type and tensor shapes (a slot's tensors taken as one vector):

    - ``"blend"``: ``a·(1−α) + b·α`` with ``α = blend_alpha``, or with fitnesses given
      ``α = fitness_b/(fitness_a+fitness_b) · (0.5 + 0.5·overlap)`` (leaning to the fitter parent,
      less so where the parents differ);
    - ``"point"``: the first ``⌊n·split_ratio⌋`` weights from ``a``, the rest from ``b``;
    - ``"uniform"``: each weight from ``a`` with probability ``fitness_a/(fitness_a+fitness_b)``
      (½ without fitnesses), drawn from ``seed``.

    Fitnesses must be ≥ 0. With ``report=True`` returns ``(child, SpliceReport)``."""
    for name, net in (("a", a), ("b", b)):
        if not isinstance(net, VolumetricNetwork):
            raise TypeError(f"{name} must be a VolumetricNetwork, got {type(net).__name__}")
    non_negative(seed=seed)
    child, rep = _core.splice(a._net, b._net, mode, float(blend_alpha), float(split_ratio),
                              float(fitness_a), float(fitness_b), int(seed))
    net = VolumetricNetwork._wrap(child)
    return (net, rep) if report else net
