"""NumPy references for DNA, splicing and observer statistics (reference dna_evolution.md §1–3,
§9), written from the spec's formulas in float64."""

import numpy as np


def normalize(v):
    v = np.asarray(v, dtype=np.float64)
    n = np.sqrt(np.sum(v * v))
    return np.zeros_like(v) if n == 0 else v / n


def signature(tensors):
    """A weighted layer's signature: all its tensors concatenated, unit length; [1.0] if none."""
    if not tensors:
        return np.ones(1)
    return normalize(np.concatenate([np.ravel(t) for t in tensors]))


def container_signature(member_signatures):
    """A container's signature: its members' signatures concatenated, unit length."""
    return normalize(np.concatenate(member_signatures))


def cosine(a, b):
    """Spec §2 for vectors of the same type and dtype: 1 if both are zero, 0 if one is."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return 0.0
    za, zb = not a.any(), not b.any()
    if za and zb:
        return 1.0
    if za or zb:
        return 0.0
    return float(np.clip(a @ b, -1.0, 1.0))


def blend(wa, wb, alpha):
    return np.asarray(wa, np.float64) * (1 - alpha) + np.asarray(wb, np.float64) * alpha


def fitness_alpha(fitness_a, fitness_b, similarity):
    return fitness_b / (fitness_a + fitness_b) * (0.5 + 0.5 * similarity)


def point(wa, wb, ratio):
    split = min(int(np.floor(len(wa) * ratio)), len(wa))
    return np.concatenate([wa[:split], wb[split:]])


def stats(values):
    """Observer statistics: mean, population std, max, min, count |v| > 1e-6, count."""
    v = np.asarray(values, np.float64).ravel()
    mean = v.mean()
    return {
        "avg": mean,
        "std": float(np.sqrt(max(0.0, np.mean(v * v) - mean * mean))),
        "max": float(v.max()),
        "min": float(v.min()),
        "active": int(np.sum(np.abs(v) > 1e-6)),
        "total": v.size,
    }
