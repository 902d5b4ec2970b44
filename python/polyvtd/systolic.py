"""Systolic: the clock-stepped mesh over a VolumetricNetwork (the native polyvtd._core.Systolic),
with coordinate helpers, sequence runs and progress bars for backprop-through-time training."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import _core
from ._arrays import non_negative
from ._progress import epoch_reporter
from .errors import InputError
from .network import VolumetricNetwork

Coord = tuple


def _indices(name: str, values: Optional[Sequence[int]]) -> Optional[list]:
    if values is None:
        return None
    out = [int(v) for v in values]
    if any(v < 0 for v in out):
        raise InputError(f"{name} must be integers ≥ 0, got {list(values)!r}")
    return out


class Systolic:
    """Every occupied coordinate of ``net`` is a cell; one clock cycle (``step``) lets every cell
    compute from what its sources held after the previous cycle, then swaps all buffers at once
    (double buffering), so data advances one cell per cycle: a chain of k layers shows an input
    at its output after k cycles.

    A cell reads its remote link target's output if it has one (any coordinate: a target at or
    after the cell closes a feedback loop, delivered one cycle later), else the previous occupied
    coordinate's output; the first cell reads the external input (``set_input``, kept until set
    again). A Residual adds its link target's output (else what its predecessor consumed) to its
    input. A disabled cell passes its input on one cycle later. A cell whose sources hold no data
    yet produces nothing. The weights are the network's own (shared).

    ``history=N`` keeps the last N cycles (each cell's input and training record) for
    ``backward`` / ``history``; ``mode`` is the CPU schedule ("normal", "tiled", "parallel": cells
    of a cycle run side by side; results are identical).
    """

    def __init__(self, net: VolumetricNetwork, *, history: int = 0, mode: str = "parallel"):
        non_negative(history=history)
        self.net = net
        self._mesh = _core.Systolic(net._net, history, mode)

    # --- clocking ---------------------------------------------------------------------------
    def set_input(self, x) -> None:
        """Present ``x`` ([batch, *sample], or one sample) to the first cell from the next cycle
        on. The batch size stays fixed until ``reset``."""
        self._mesh.set_input(x)

    def step(self, x=None, *, cycles: int = 1) -> Optional[np.ndarray]:
        """Set the input to ``x`` (if given), run ``cycles`` clock cycles, return the output."""
        non_negative(cycles=cycles)
        if x is not None:
            self._mesh.set_input(x)
        self._mesh.step(cycles)
        return self._mesh.output()

    def run(self, inputs) -> list:
        """Present ``inputs[t]`` at cycle t ([steps, batch, *sample]); the output after each
        cycle (None where data has not reached the output yet)."""
        return [self.step(x) for x in np.asarray(inputs, dtype=np.float32)]

    def reset(self) -> None:
        """Forget every buffer, the input, the history and the target-propagation momentum; the
        cycle count restarts at 0."""
        self._mesh.reset()

    @property
    def cycle(self) -> int:
        """Cycles run since creation or the last reset."""
        return self._mesh.cycle

    # --- state ------------------------------------------------------------------------------
    def output(self) -> Optional[np.ndarray]:
        """The output cell's buffer ([batch, *out]) after the last cycle, or None."""
        return self._mesh.output()

    @property
    def output_coord(self) -> Coord:
        """The cell whose buffer is the output: the last occupied coordinate."""
        return self._mesh.output_coord

    def state(self, z: int, y: int, x: int, l: int) -> Optional[np.ndarray]:
        """The output of the cell at (z, y, x, l) after the last cycle, or None."""
        non_negative(z=z, y=y, x=x, l=l)
        return self._mesh.state(z, y, x, l)

    def last_input(self, z: int, y: int, x: int, l: int) -> Optional[np.ndarray]:
        """The input the cell at (z, y, x, l) consumed in the last cycle, or None."""
        non_negative(z=z, y=y, x=x, l=l)
        return self._mesh.last_input(z, y, x, l)

    def states(self) -> dict:
        """{(z, y, x, l): output} for every cell holding data."""
        return self._mesh.states()

    # --- history ----------------------------------------------------------------------------
    def capture(self, enabled: bool = True, *, cycles: int = 128) -> None:
        """Start keeping the last ``cycles`` cycles (``enabled=False`` stops and frees them).
        Memory stays bounded: older cycles are dropped."""
        non_negative(cycles=cycles)
        self._mesh.capture(cycles if enabled else 0)

    @property
    def history_size(self) -> int:
        """How many past cycles are kept (0: no capture)."""
        return self._mesh.history_size

    @property
    def captured_cycles(self) -> list:
        """Cycle numbers in the history, oldest first."""
        return self._mesh.captured_cycles

    def history(self, z: int, y: int, x: int, l: int) -> list:
        """[(cycle, input, output)] of the cell at (z, y, x, l) for each captured cycle in which
        it produced (input None: a Residual whose input had no data yet, counted as zeros)."""
        non_negative(z=z, y=y, x=x, l=l)
        return self._mesh.history(z, y, x, l)

    # --- learning ---------------------------------------------------------------------------
    def backward(self, target_or_grad, *, loss: Optional[str] = "mse", cycles: Optional[Sequence[int]] = None) -> tuple:
        """Backprop through the captured cycles: ``(value, grads)``, one gradient per entry of
        ``net.parameters``.

        With ``loss`` ("mse", "cross_entropy") the array holds targets, ``value`` is the loss
        averaged over the cycles; with ``loss=None`` it holds gradients on the output and
        ``value`` is ``sum(output * grad)``. Shaped like one output ([batch, *out]: the last
        captured cycle) or [K, batch, *out] (the last K captured cycles, or ``cycles``).
        Cycles before the captured window count as constants (truncated BPTT)."""
        return self._mesh.backward(target_or_grad, loss, _indices("cycles", cycles))

    def step_targetprop(self, target, *, x=None, lr: Optional[float] = None, config=None) -> Optional[float]:
        """Online learning without backprop through time: set the input to ``x`` (if given), run
        one clock cycle, then let every cell that computed in it take a target-propagation step
        from what it consumed and produced, the output compared with ``target`` ([batch, *out]).
        Returns the output's MSE before the update, or None while data has not reached the
        output (nothing learns yet).

        A cell's target comes back from the cells that read its output within the cycle list;
        what it read over a feedback link counts as external. Gaps are exact in steady state
        (an input held for as many cycles as the path is long). ``config`` (TargetPropConfig,
        dict of its fields, None) defaults to true target propagation (``use_chain_rule=False``,
        as the reference); a different config starts fresh momentum; the whole mesh batch is one
        update. ``lr`` defaults to the config's ``learning_rate``. A non-finite loss or weight
        leaves the weights unchanged (``targetprop_stopped`` says why)."""
        if x is not None:
            self._mesh.set_input(x)
        return self._mesh.step_targetprop(target, lr, config)

    @property
    def targetprop_config(self) -> Optional["_core.TargetPropConfig"]:
        """The config of the mesh's target propagation (None before the first step_targetprop)."""
        return self._mesh.targetprop_config

    @property
    def targetprop_links(self) -> list:
        """Budgets, gaps and gating of every layer call of the last step_targetprop update."""
        return self._mesh.targetprop_links

    @property
    def targetprop_stopped(self) -> Optional[str]:
        """Why the last step_targetprop left the weights unchanged (None: it updated)."""
        return self._mesh.targetprop_stopped

    def train_bptt(
        self,
        inputs,
        targets,
        *,
        target_steps: Optional[Sequence[int]] = None,
        epochs: int = 100,
        lr: float = 0.01,
        loss: str = "mse",
        optimizer: str = "adam",
        momentum: float = 0.9,
        betas: tuple = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: Optional[float] = None,
        clip_norm: Optional[float] = None,
        reset: bool = True,
        progress: bool = False,
        on_epoch: Optional[Callable[[int, float, float], Any]] = None,
    ) -> "_core.TrainingResult":
        """Train by backprop through time. Each epoch presents ``inputs[t]`` at step t
        ([steps, batch, *sample]), scores the outputs after the steps in ``target_steps``
        against ``targets`` ([len(target_steps), batch, *out]; default: the last
        ``len(targets)`` steps), backpropagates through the episode and takes one optimiser
        step. ``reset=False`` continues from the mesh's current state each epoch (online,
        truncated BPTT). A NaN/inf loss or gradient stops training with the last good weights
        (``result.stopped_early`` says why)."""
        non_negative(epochs=epochs)
        steps = _indices("target_steps", target_steps)
        with epoch_reporter("bptt", epochs, progress, on_epoch) as report:
            return self._mesh.train_bptt(
                inputs, targets, steps, int(epochs), float(lr), loss, optimizer, float(momentum),
                float(betas[0]), float(betas[1]), float(eps), weight_decay, clip_norm, bool(reset), report,
            )

    def __repr__(self) -> str:
        return repr(self._mesh)
