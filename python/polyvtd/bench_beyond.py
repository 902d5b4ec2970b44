"""``python -m polyvtd.bench beyond``: persistence, target propagation and the clock-stepped mesh
on the dense benchmark's MLP (128→512→512→8). The persistence JSON is timed beside the reference
engine's serialise/deserialise (``welvet``, when installed) in the same run; target propagation
and mesh cycles beside our own backprop step and one-pass forward on the same network."""

from __future__ import annotations

import numpy as np

import polyvtd as pv

from .bench import MLP, _fmt_ms, _fmt_ratio, _spec, _table, _welvet, timeit


def _welvet_net(welvet, spec, dtype):
    net = welvet.Network(spec)
    if dtype != "float32":
        welvet.utils.morph_all_layers(net._handle, getattr(welvet.DType, dtype.upper()))
    return net


def persistence_table(welvet, dtypes, budget) -> str:
    """Our persistence JSON written and read back against the reference's serialise/deserialise."""
    rows = []
    for dtype in dtypes:
        net = pv.VolumetricNetwork.from_spec(_spec(MLP), seed=1)
        net.morph_all(dtype)
        text = net.to_persistence_json()
        write = timeit(net.to_persistence_json, budget)
        read = timeit(lambda: pv.VolumetricNetwork.from_persistence_json(text), budget)
        cells = [dtype, f"{len(text):,}", _fmt_ms(write), _fmt_ms(read)]
        if welvet is not None:
            reference = _welvet_net(welvet, _spec(MLP), dtype)  # kept alive: it owns the handle
            handle = reference._handle
            wire = welvet.utils.serialize_network(handle)
            w_write = timeit(lambda: welvet.utils.serialize_network(handle), budget)
            w_read = timeit(lambda: welvet.utils.deserialize_network(wire), budget)
            cells += [f"{len(wire):,}", _fmt_ms(w_write), _fmt_ms(w_read), _fmt_ratio(w_write, write), _fmt_ratio(w_read, read)]
        rows.append(cells)
    header = ["dtype", "our JSON bytes", "our write ms", "our read ms"]
    if welvet is not None:
        header += ["welvet bytes", "welvet write ms", "welvet read ms", "write vs welvet", "read vs welvet"]
    return _table("Persistence JSON of the MLP 128→512→512→8", header, rows)


def step_table(budget, rng) -> str:
    """One sample: a target-propagation step beside a backprop step, and a mesh cycle beside a
    one-pass forward, on the same network. (welvet is no peer here: its mesh step panics on
    this MLP after the first cycle, aborting the process — the reference's quirk 26 — and
    apply_tween needs that step.)"""
    x = rng.standard_normal((1, MLP[0])).astype(np.float32)
    y = rng.standard_normal((1, MLP[-1])).astype(np.float32)
    net = pv.VolumetricNetwork.from_spec(_spec(MLP), seed=1)
    tp = pv.TargetProp(net, pv.TargetPropConfig(use_chain_rule=False))
    tp_step = timeit(lambda: tp.step(x, y, lr=1e-4), budget)
    chain = pv.TargetProp(pv.VolumetricNetwork.from_spec(_spec(MLP), seed=1))
    chain_step = timeit(lambda: chain.step(x, y, lr=1e-4), budget)
    backprop = pv.VolumetricNetwork.from_spec(_spec(MLP), seed=1)
    backprop_step = timeit(lambda: backprop.train(x, y, epochs=1, lr=1e-4, batch_size=1), budget)
    plain = pv.VolumetricNetwork.from_spec(_spec(MLP), seed=1)
    forward = timeit(lambda: plain.forward(x), budget)
    mesh = pv.Systolic(pv.VolumetricNetwork.from_spec(_spec(MLP), seed=1))
    mesh.set_input(x)
    cycle = timeit(mesh.step, budget)
    rows = [
        ["target propagation step, true targets", _fmt_ms(tp_step), "backprop step", _fmt_ms(backprop_step), _fmt_ratio(backprop_step, tp_step)],
        ["target propagation step, chain rule", _fmt_ms(chain_step), "backprop step", _fmt_ms(backprop_step), _fmt_ratio(backprop_step, chain_step)],
        ["systolic mesh: one clock cycle", _fmt_ms(cycle), "one-pass forward", _fmt_ms(forward), _fmt_ratio(forward, cycle)],
    ]
    header = ["step", "ms", "peer (ours)", "peer ms", "peer / step"]
    return _table("One sample through the MLP 128→512→512→8 (float32)", header, rows)


def run(args) -> None:
    welvet = None if args.no_welvet else _welvet()
    print(f"polyvtd {pv.__version__}, welvet {getattr(welvet, '__version__', 'not installed')}\n", flush=True)
    print(persistence_table(welvet, ("float32", "float16", "int8", "int4", "binary"), args.budget), flush=True)
    print(step_table(args.budget, np.random.default_rng(0)), flush=True)
