"""VolumetricNetwork: the public face of the native grid (polyvtd._core.Network). Adds spec
loading from dicts, JSON text or files, class-index targets, progress bars and notebook display."""

from __future__ import annotations

import contextlib
import html
import json
import os
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np

from . import _core
from ._arrays import non_negative
from ._progress import epoch_reporter
from .errors import InputError, SpecError

SpecLike = Union[dict, str, "os.PathLike[str]"]


def _spec_text(spec: SpecLike) -> str:
    if isinstance(spec, dict):
        return json.dumps(spec)
    if isinstance(spec, os.PathLike):
        path = os.fspath(spec)
    elif isinstance(spec, str):
        if spec.lstrip().startswith("{") or not os.path.exists(spec):
            try:
                json.loads(spec)
                return spec  # JSON text (the native side requires an object and says so)
            except ValueError:
                if spec.lstrip().startswith(("{", "[")):
                    return spec  # malformed JSON: the native parser names the position
        path = spec
    else:
        raise SpecError(f"spec must be a dict, JSON text or a file path, got {type(spec).__name__}")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise SpecError(f"cannot read network spec file {path!r}: {exc.strerror}") from None


class VolumetricNetwork:
    """A 3-D grid (depth × rows × cols) of cells, each holding ``layers_per_cell`` layer slots
    addressed (z, y, x, l). A forward pass runs the occupied, enabled slots in flat order
    (z, then y, then x, then l), each layer taking the previous one's output."""

    def __init__(self, depth: int = 1, rows: int = 1, cols: int = 1, layers_per_cell: int = 1):
        non_negative(depth=depth, rows=rows, cols=cols, layers_per_cell=layers_per_cell)
        self._net = _core.Network(depth, rows, cols, layers_per_cell)

    @classmethod
    def _wrap(cls, native: "_core.Network") -> "VolumetricNetwork":
        net = cls.__new__(cls)
        net._net = native
        return net

    @classmethod
    def from_spec(cls, spec: SpecLike, *, seed: int = 0, compat: str = "standard") -> "VolumetricNetwork":
        """Build from the reference engine's build JSON: a dict, JSON text or a file path.
        Weights are initialised from ``seed`` (the build JSON carries none)."""
        non_negative(seed=seed)
        return cls._wrap(_core.Network.from_json(_spec_text(spec), seed=seed, compat=compat))

    def to_spec(self) -> dict:
        """The build JSON as a dict (layer structure, activations and dtypes; no weights)."""
        return json.loads(self._net.to_json())

    def to_json(self, indent: Optional[int] = 2) -> str:
        return self._net.to_json(indent)

    # --- saving and loading ------------------------------------------------------------------
    def save(self, path: Union[str, "os.PathLike[str]"], *, masters: bool = False) -> None:
        """Write the network — structure, weights in their dtypes, links, gates, everything — as
        the reference engine's persistence JSON (it reads the file too), atomically. ``masters``:
        also keep the FP32 masters of quantised tensors, so training resumes exactly."""
        _core.save_network(self._net, os.fspath(path), masters)

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"]) -> "VolumetricNetwork":
        """Read a persistence JSON written by ``save`` or by the reference engine."""
        return cls._wrap(_core.load_network(os.fspath(path)))

    def to_persistence_json(self, *, masters: bool = False) -> str:
        """The text ``save`` writes (deterministic: a reloaded network gives the same text)."""
        return _core.network_to_persistence_json(self._net, masters)

    @classmethod
    def from_persistence_json(cls, text: str) -> "VolumetricNetwork":
        return cls._wrap(_core.network_from_persistence_json(text))

    def save_safetensors(self, path: Union[str, "os.PathLike[str]"], *, packed: bool = True, masters: bool = False) -> None:
        """Write the weights (not the structure) as safetensors, named by where they sit
        (``z0.y0.x0.l1.weight``), atomically. ``packed``: each tensor in its own dtype with its
        scale in the metadata (exact); ``packed=False``: float32 values for other tools."""
        _core.save_safetensors(self._net, os.fspath(path), packed, masters)

    def load_safetensors(self, path: Union[str, "os.PathLike[str]"], *, strict: bool = True) -> list:
        """Load weights saved by ``save_safetensors`` (or plain float tensors of the same names,
        or the reference's ``layer_<i>.weights``) into this network, all or nothing; returns the
        names loaded. ``strict``: the file and the network must hold the same tensors."""
        return _core.load_safetensors(self._net, os.fspath(path), strict)

    @property
    def safetensors_names(self) -> list:
        """The names ``save_safetensors`` gives the weights, in traversal order."""
        return _core.safetensors_names(self._net)

    # --- grid -------------------------------------------------------------------------------
    @property
    def dims(self) -> tuple:
        """(depth, rows, cols, layers_per_cell)."""
        return self._net.dims

    def layer(self, z: int, y: int, x: int, l: int) -> Optional[_core.Layer]:
        """The layer at (z, y, x, l) (shared: morphing its weights changes the network), or None."""
        non_negative(z=z, y=y, x=x, l=l)
        return self._net.layer(z, y, x, l)

    def set_layer(self, z: int, y: int, x: int, l: int, layer: _core.Layer) -> None:
        non_negative(z=z, y=y, x=x, l=l)
        self._net.set_layer(z, y, x, l, layer)

    def clear_layer(self, z: int, y: int, x: int, l: int) -> None:
        non_negative(z=z, y=y, x=x, l=l)
        self._net.clear_layer(z, y, x, l)

    def set_disabled(self, z: int, y: int, x: int, l: int, disabled: bool = True) -> None:
        """Disabled layers are skipped: the tensor passes through unchanged."""
        non_negative(z=z, y=y, x=x, l=l)
        self._net.set_disabled(z, y, x, l, disabled)

    def set_link(self, z: int, y: int, x: int, l: int, target: Optional[tuple]) -> None:
        """Remote link: the layer at (z, y, x, l) reads the output of the layer at ``target``
        instead of the previous layer's; a Residual adds it as its skip. A target at or after
        (z, y, x, l) is a feedback loop: ``forward`` refuses it, ``pv.Systolic`` runs it.
        ``None`` removes the link."""
        self._net.set_link(z, y, x, l, None if target is None else tuple(int(v) for v in target))

    def link(self, z: int, y: int, x: int, l: int) -> Optional[tuple]:
        """The remote link target of the layer at (z, y, x, l), or None."""
        return self._net.link(z, y, x, l)

    @property
    def input_shape(self) -> Optional[list]:
        """The sample shape the first active layer is built for (None if it takes any)."""
        return self._net.input_shape

    def output_shape(self, input_shape) -> list:
        """The sample shape the network produces for samples of ``input_shape``."""
        return self._net.output_shape(list(input_shape))

    @property
    def parameters(self) -> list:
        """Every trainable tensor (WeightStore), once each, in traversal order."""
        return self._net.parameters

    def backward(self, x, grad_out, *, mode: str = "parallel") -> tuple:
        """Gradients of ``sum(forward(x) * grad_out)``: ``(grad_input, [one per parameters])``.
        Remote links, residual skips and shared layers are all followed."""
        return self._net.backward(x, grad_out, mode)

    def layers(self) -> list:
        """[((z, y, x, l), layer)] for every occupied slot, in traversal order."""
        return [((z, y, x, l), self._net.layer(z, y, x, l)) for z, y, x, l, *_ in self._net.summary()]

    # --- compute ----------------------------------------------------------------------------
    def forward(self, x, *, mode: str = "parallel", device: str = "cpu") -> np.ndarray:
        """Run ``x`` ([batch, features] or [features]) through the grid; returns [batch, out].
        float32 C-contiguous input is read in place (no copy); anything else is converted once. ``mode``: "normal", "tiled" or
        "parallel"; ``device``: "cpu" or "gpu"."""
        return self._net.forward(x, mode=mode, device=device)

    __call__ = forward

    def morph_all(self, dtype: str) -> None:
        """Convert every layer's weights to ``dtype`` (the FP32 masters are kept)."""
        self._net.morph_all(dtype)

    @property
    def num_params(self) -> int:
        return self._net.num_params

    @property
    def memory_bytes(self) -> int:
        """Bytes the weights hold now: FP32 masters plus packed versions."""
        return self._net.memory_bytes

    @property
    def weight_bytes(self) -> int:
        """Bytes of the weights in the dtypes the layers compute with."""
        return sum(row[7] for row in self._net.summary())

    def copy(self) -> "VolumetricNetwork":
        """A deep copy (its own weight buffers)."""
        return self._wrap(self._net.deep_copy())

    def train(
        self,
        inputs,
        targets,
        *,
        epochs: int = 10,
        lr: float = 0.01,
        batch_size: int = 32,
        loss: str = "mse",
        optimizer: str = "sgd",
        momentum: float = 0.9,
        betas: tuple = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: Optional[float] = None,
        clip_norm: Optional[float] = None,
        schedule: Union[None, str, dict] = None,
        mode: str = "parallel",
        device: str = "cpu",
        seed: int = 0,
        shuffle: bool = True,
        progress: bool = False,
        on_epoch: Optional[Callable[[int, float, float], Any]] = None,
    ) -> "_core.TrainingResult":
        """Train by backprop on mini-batches; returns a TrainingResult.

        ``loss``: "mse" or "cross_entropy" (softmax over logits, PyTorch semantics; targets may
        be one-hot/probabilities [batch, classes] or class indices [batch]).
        ``optimizer``: "sgd", "momentum", "adam", "adamw", "rmsprop".
        ``schedule``: None, "cosine", "linear", "step", "exponential", or a dict such as
        ``{"type": "cosine", "warmup_steps": 10, "min_lr": 1e-4}`` (step: ``step_size``,
        ``gamma``). ``clip_norm`` clips the global L2 norm of the gradients.
        A NaN/inf loss or gradient stops training cleanly (``result.stopped_early`` says why)
        with the last good weights in place.
        """
        if device != "cpu":
            raise InputError(
                f"device={device!r}: training runs on the CPU in this release; use forward(device='gpu') for GPU inference"
            )
        t = self._targets(targets, loss, inputs)
        sched = dict(schedule) if isinstance(schedule, dict) else ({"type": schedule} if schedule else {})
        if sched and "type" not in sched:
            sched["type"] = "constant"  # warm-up / min_lr alone: a constant schedule with them
        unknown = set(sched) - {"type", "step_size", "gamma", "warmup_steps", "min_lr"}
        if unknown:
            raise InputError(f"unknown schedule options {sorted(unknown)}")
        with epoch_reporter("train", epochs, progress, on_epoch) as report:
            return self._net.train(
                inputs, t, int(epochs), float(lr), int(batch_size), loss, optimizer, float(momentum),
                float(betas[0]), float(betas[1]), float(eps), weight_decay, clip_norm,
                sched.get("type"), int(sched.get("step_size", 0)), float(sched.get("gamma", 0.1)),
                int(sched.get("warmup_steps", 0)), float(sched.get("min_lr", 0.0)), mode, int(seed),
                bool(shuffle), report,
            )

    def _targets(self, targets, loss: str, inputs):
        """Class indices become one-hot along the output's last axis for cross-entropy; a 1-D
        target for a network with one output per sample is one column. Everything else passes as
        given (the native side converts and checks it)."""
        t = np.asarray(targets)
        x_shape = np.shape(inputs)
        out_shape = self._net.output_shape(list(x_shape[1:]) if len(x_shape) > 1 else list(x_shape))
        classes = out_shape[-1] if out_shape else 1
        is_ce = loss.lower() in ("cross_entropy", "crossentropy", "ce")
        integral = np.issubdtype(t.dtype, np.integer) or t.dtype == np.bool_ or (
            np.issubdtype(t.dtype, np.floating) and t.size > 0 and np.all(np.isfinite(t)) and np.all(t == np.round(t)))
        if is_ce and classes > 1 and integral and t.ndim >= 1 and list(t.shape[1:]) == list(out_shape[:-1]):
            t = t.astype(np.int64)
            if t.size and (t.min() < 0 or t.max() >= classes):
                raise InputError(f"class index out of range [0, {classes}): got {t.min()}..{t.max()}")
            return np.eye(classes, dtype=np.float32)[t]
        if t.ndim == 1 and list(out_shape) == [1]:
            t = t.reshape(-1, 1)
        return t

    # --- DNA, observers, introspection -------------------------------------------------------
    def dna(self) -> _core.DNA:
        """The network's DNA: per occupied slot its coordinate, type, dtype and unit-length weight
        vector (``pv.compare_dna`` compares two)."""
        return self._net.dna()

    def add_observer(self, callback: Callable[[_core.LayerEvent], Any], *, values: bool = False) -> int:
        """Call ``callback(event)`` after every grid layer's forward (its output) and backward (the
        gradient of its output); ``values=True`` adds the tensor to each event. Returns a handle
        for ``remove_observer``. An exception in the callback stops the pass and is raised by the
        call that ran it; the weights are left as they were before that step. Observers belong to
        this object: ``copy()`` and other handles on the same layers (e.g. each ``pop.best``)
        start without them."""
        return self._net.add_observer(callback, values)

    def remove_observer(self, handle: int) -> None:
        self._net.remove_observer(handle)

    @property
    def observers(self) -> list:
        """Handles of the registered observers."""
        return self._net.observers

    @contextlib.contextmanager
    def observe(self, callback: Callable[[_core.LayerEvent], Any], *, values: bool = False) -> Iterator[int]:
        """``with net.observe(fn): ...`` registers ``fn`` for the block only."""
        handle = self.add_observer(callback, values=values)
        try:
            yield handle
        finally:
            self.remove_observer(handle)

    def blueprint(self, input_shape=None) -> dict:
        """Structure per coordinate: type, activation, dtype, exact parameter count, bytes, the
        sample shapes it reads and produces (for ``input_shape``, default the network's own),
        disabled flag, remote link, and for containers their branches/stages nested; plus totals."""
        shape = None if input_shape is None else [int(v) for v in input_shape]
        return json.loads(self._net.blueprint_json(shape))

    def memory_report(self) -> dict:
        """Weight memory per dtype: tensors computing in it (count, values, bytes of that form) and
        bytes held in it (float32: the FP32 masters; others: packed versions); plus totals
        (``total_bytes == memory_bytes``)."""
        return json.loads(self._net.memory_report_json())

    # --- display ----------------------------------------------------------------------------
    def _rows(self):
        for z, y, x, l, kind, dtype, shape, nbytes, disabled in self._net.summary():
            yield (f"({z},{y},{x},{l})", kind + (" (disabled)" if disabled else ""), dtype,
                   "×".join(map(str, shape)) or "-", nbytes)

    def __repr__(self) -> str:
        d, r, c, l = self.dims
        lines = [f"VolumetricNetwork({d}×{r}×{c}×{l}, {self.num_params:,} params, "
                 f"{self.weight_bytes:,} weight bytes)"]
        rows = list(self._rows())
        # Columns as wide as their longest entry (type names run to "MultiHeadAttention (disabled)").
        widths = [max((len(str(row[i])) for row in rows), default=0) for i in range(4)]
        for coord, kind, dtype, shape, nbytes in rows:
            cells = (f"{value:<{width}}" for value, width in zip((coord, kind, dtype, shape), widths))
            lines.append(f"  {' '.join(cells)} {nbytes:>12,} B")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        d, r, c, l = self.dims
        head = "".join(f"<th>{h}</th>" for h in ("coordinate", "type", "dtype", "shape", "bytes"))
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (coord, kind, dtype, shape, f"{n:,}")) + "</tr>"
            for coord, kind, dtype, shape, n in self._rows()
        )
        return (f"<div><b>VolumetricNetwork</b> {d}×{r}×{c}×{l} · {self.num_params:,} params · "
                f"{self.weight_bytes:,} weight bytes<table><tr>{head}</tr>{body}</table></div>")
