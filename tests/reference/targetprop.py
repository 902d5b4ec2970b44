"""Plain NumPy target propagation over a chain of Dense layers (what src/targetprop/ computes):
forward capture, targets in both modes (chain rule; true target propagation with the
weighted-combination rule and its weight threshold), clamp, link budgets, gaps, gating, depth
scaling, mini-batches and the momentum update. float64 throughout."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ACTIVATIONS = {
    "linear": (lambda v: v, lambda v: np.ones_like(v)),
    "tanh": (np.tanh, lambda v: 1.0 - np.tanh(v) ** 2),
    "relu": (lambda v: np.maximum(v, 0.0), lambda v: (v > 0).astype(np.float64)),
}

DEFAULTS = dict(batch_size=1, use_chain_rule=True, gradient_scale=0.1, depth_scale_factor=1.1,
                momentum=0.9, learning_rate=0.01, activation_clamp=10.0, weight_threshold=0.01,
                min_budget=0.2)


@dataclass
class DenseLayer:
    w: np.ndarray  # [out, in]
    b: np.ndarray | None
    activation: str = "linear"
    vw: np.ndarray | None = field(default=None, repr=False)
    vb: np.ndarray | None = field(default=None, repr=False)


def budget(actual, target):
    na, nt = np.linalg.norm(actual), np.linalg.norm(target)
    if na == 0 or nt == 0:
        return 0.0
    return (np.clip(np.dot(actual.ravel(), target.ravel()) / (na * nt), -1, 1) + 1) / 2


def rms_gap(actual, target):
    return float(np.sqrt(np.mean((actual - target) ** 2)))


def weighted_combination(gap, w, threshold):
    """Input gap [rows, in] for output gap [rows, out] through w [out, in]: Σ_o w·gap / Σ_o |w|
    over pathways with |w| ≥ threshold (0 where none)."""
    kept = np.where(np.abs(w) >= threshold, w, 0.0)
    den = np.abs(kept).sum(axis=0)
    num = gap @ kept
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def update_once(layers, x, t, cfg, lr):
    """One local update on the mini-batch (x, t); returns (loss, targets, budgets, gaps)."""
    acts, pres = [x], []
    for layer in layers:
        pre = acts[-1] @ layer.w.T + (layer.b if layer.b is not None else 0.0)
        pres.append(pre)
        acts.append(ACTIVATIONS[layer.activation][0](pre))
    y, n, batch = acts[-1], len(layers), x.shape[0]
    loss = float(np.mean((y - t) ** 2))
    flow = t - y
    targets, budgets, gaps, changes = [None] * n, [None] * n, [None] * n, [None] * n
    clamp = cfg["activation_clamp"]
    for i in reversed(range(n)):
        layer, actual, x_in = layers[i], acts[i + 1], acts[i]
        if i == n - 1:
            target = t
        else:
            step = cfg["gradient_scale"] if cfg["use_chain_rule"] else 1.0
            target = np.clip(actual + step * flow, -clamp, clamp)
        targets[i], budgets[i], gaps[i] = target, budget(actual, target), rms_gap(actual, target)
        rate = 0.0 if budgets[i] < cfg["min_budget"] else lr * (0.5 + 0.5 * budgets[i]) * cfg["depth_scale_factor"] ** (n - 1 - i)
        signal = flow if cfg["use_chain_rule"] else target - actual
        delta = -signal * ACTIVATIONS[layer.activation][1](pres[i])  # ∂(½‖y − target‖²)/∂pre
        changes[i] = (-rate / batch * (delta.T @ x_in), -rate / batch * delta.sum(axis=0))
        if cfg["use_chain_rule"]:
            flow = -(delta @ layer.w)
        else:
            flow = weighted_combination(target - actual, layer.w, cfg["weight_threshold"])
    for layer, (dw, db) in zip(layers, changes):
        mu = cfg["momentum"]
        layer.vw = (mu * layer.vw if layer.vw is not None else 0.0) + (1 - mu) * dw
        layer.w = layer.w + layer.vw
        if layer.b is not None:
            layer.vb = (mu * layer.vb if layer.vb is not None else 0.0) + (1 - mu) * db
            layer.b = layer.b + layer.vb
    return loss, targets, budgets, gaps


def step(layers, x, t, cfg=None, lr=None):
    """A step over the batch in mini-batches of batch_size; returns (mean loss, findings of the
    last mini-batch: targets, budgets, gaps). Layers are updated in place."""
    cfg = {**DEFAULTS, **(cfg or {})}
    lr = cfg["learning_rate"] if lr is None else lr
    total, found = 0.0, None
    for start in range(0, x.shape[0], cfg["batch_size"]):
        xs, ts = x[start:start + cfg["batch_size"]], t[start:start + cfg["batch_size"]]
        loss, *found = update_once(layers, xs, ts, cfg, lr)
        total += loss * xs.shape[0]
    return total / x.shape[0], found
