"""float64 NumPy reference of the Softmax layer's ten variants: the forward per normalised
vector ("domain": a last-axis row of a sample, or a grid group) and the backward dx = Jᵀ·dy with
each variant's Jacobian J written out as a matrix. Entmax and sparsemax thresholds come from
bisection (independent of the sort-based algorithms the layer uses)."""

from __future__ import annotations

import numpy as np

KINDS = ("standard", "grid", "hierarchical", "temperature", "gumbel", "masked", "sparse", "adaptive",
         "mixture", "entmax")
MIXTURE_FACTORS = (0.5, 1.0, 2.0)
MIN_SPREAD = 1e-6


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def _softmax_jacobian(p):
    return np.diag(p) - np.outer(p, p)


def entmax(z, alpha):
    """alpha-entmax of a vector for alpha in [1, 2]: p = max((alpha−1)·z − tau, 0)^(1/(alpha−1)),
    tau by 200 bisection steps (alpha = 1 is softmax; alpha = 2 is sparsemax)."""
    if alpha == 1.0:
        return softmax(z)
    y = (alpha - 1.0) * (z - z.max())
    power = 1.0 / (alpha - 1.0)
    lo, hi = -1.0, 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.sum(np.maximum(y - mid, 0.0) ** power) >= 1.0:
            lo = mid
        else:
            hi = mid
    p = np.maximum(y - lo, 0.0) ** power
    return p / p.sum()


def _entmax_jacobian(p, alpha):
    w = np.where(p > 0, np.abs(p) ** (2.0 - alpha), 0.0)
    return np.diag(w) - np.outer(w, w) / w.sum()


def _hierarchy(z, m):
    """(q over groups, r within groups) of the two-level hierarchical softmax."""
    groups = z.reshape(-1, m)
    q = softmax(groups.mean(axis=1))
    r = np.stack([softmax(g) for g in groups])
    return q, r


def _hierarchical_jacobian(z, m):
    q, r = _hierarchy(z, m)
    n = z.size
    jq = _softmax_jacobian(q) / m  # d q_g / d z_j = (diag q − q qᵀ)[g, group(j)] / m
    jac = np.zeros((n, n))
    for i in range(n):
        g = i // m
        for j in range(n):
            h = j // m
            d_r = r[g, i % m] * ((i == j) - r[g, j % m]) if g == h else 0.0
            jac[i, j] = r[g, i % m] * jq[g, h] + q[g] * d_r
    return jac


class Variant:
    """One configured Softmax: the domain split and the per-domain map and Jacobian."""

    def __init__(self, kind="standard", temperature=1.0, rows=0, cols=0, hierarchy_levels=None, mask=None,
                 entmax_alpha=1.5):
        self.kind = KINDS[kind] if isinstance(kind, int) else kind.lower()
        self.t = float(temperature) or 1.0
        self.rows, self.cols = rows, cols
        self.levels = list(hierarchy_levels or [])
        self.mask = None if mask is None or len(mask) == 0 else np.asarray(mask, dtype=bool)
        self.alpha = float(entmax_alpha) or 1.5

    def domain_len(self, sample_shape):
        sample = int(np.prod(sample_shape))
        row = sample_shape[-1]
        if self.kind == "grid" and (self.rows or self.cols):
            return self.cols or sample // self.rows
        return row

    def group_len(self, row):
        if self.levels:
            return self.levels[-1]
        if self.rows or self.cols:
            return self.cols or row // self.rows
        return row

    def map(self, x):
        t = self.t
        if self.kind in ("sparse", "entmax"):
            return entmax(x / t, 2.0 if self.kind == "sparse" else self.alpha)
        if self.kind == "masked" and self.mask is not None:
            p = np.zeros_like(x)
            p[self.mask] = softmax(x[self.mask] / t)
            return p
        if self.kind == "adaptive":
            return softmax(x / (t * max(x.std(), MIN_SPREAD)))
        if self.kind == "mixture":
            return np.mean([softmax(x / (t * f)) for f in MIXTURE_FACTORS], axis=0)
        if self.kind == "hierarchical":
            q, r = _hierarchy(x / t, self.group_len(x.size))
            return (q[:, None] * r).reshape(-1)
        return softmax(x / t)

    def jacobian(self, x):
        """d map(x) / dx."""
        t = self.t
        if self.kind in ("sparse", "entmax"):
            alpha = 2.0 if self.kind == "sparse" else self.alpha
            return _entmax_jacobian(entmax(x / t, alpha), alpha) / t
        if self.kind == "masked" and self.mask is not None:
            jac = np.zeros((x.size, x.size))
            keep = np.flatnonzero(self.mask)
            jac[np.ix_(keep, keep)] = _softmax_jacobian(softmax(x[keep] / t)) / t
            return jac
        if self.kind == "adaptive":
            n, mean, std = x.size, x.mean(), x.std()
            sigma = max(std, MIN_SPREAD)
            d_sigma = (x - mean) / (n * sigma) if std > MIN_SPREAD else np.zeros_like(x)
            du_dx = np.eye(n) / (t * sigma) - np.outer(x, d_sigma) / (t * sigma ** 2)
            return _softmax_jacobian(softmax(x / (t * sigma))) @ du_dx
        if self.kind == "mixture":
            return np.mean([_softmax_jacobian(softmax(x / (t * f))) / (t * f) for f in MIXTURE_FACTORS], axis=0)
        if self.kind == "hierarchical":
            return _hierarchical_jacobian(x / t, self.group_len(x.size)) / t
        return _softmax_jacobian(softmax(x / t)) / t

    def forward(self, x, noise=None):
        """x [batch, *sample] (+ Gumbel noise of the same shape) → probabilities, same shape."""
        x = np.asarray(x, dtype=np.float64)
        if noise is not None:
            x = x + np.asarray(noise, dtype=np.float64)
        flat = x.reshape(-1, self.domain_len(x.shape[1:]))
        return np.stack([self.map(d) for d in flat]).reshape(x.shape)

    def backward(self, x, dy, noise=None):
        """dL/dx for upstream gradient dy = dL/dp."""
        x = np.asarray(x, dtype=np.float64)
        if noise is not None:
            x = x + np.asarray(noise, dtype=np.float64)
        n = self.domain_len(x.shape[1:])
        flat, grads = x.reshape(-1, n), np.asarray(dy, dtype=np.float64).reshape(-1, n)
        return np.stack([self.jacobian(d).T @ g for d, g in zip(flat, grads)]).reshape(x.shape)
