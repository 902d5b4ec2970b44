"""DNA signatures, compare_dna and splice against the NumPy references in tests/reference/dna.py;
children own their buffers (quirk 32 fixed); bad inputs raise named errors."""

import numpy as np
import pytest

import polyvtd as pv
from polyvtd import layers as L
from reference import dna as ref

RNG = np.random.default_rng(11)


def mlp(seed, widths=(4, 8, 8, 3), bias=True):
    """Dense layers in one cell; the first with a bias."""
    net = pv.VolumetricNetwork(1, 1, 1, len(widths) - 1)
    for l, (i, o) in enumerate(zip(widths, widths[1:])):
        net.set_layer(0, 0, 0, l, L.Dense(i, o, "tanh", bias=bias and l == 0, seed=seed * 10 + l))
    return net


def masters(layer):
    return [p.master.astype(np.float64) for p in layer.parameters]


def slot_vector(layer):
    return np.concatenate([m.ravel() for m in masters(layer)])


# --- DNA ------------------------------------------------------------------------------------

def test_dna_has_one_normalised_signature_per_occupied_slot():
    net = pv.VolumetricNetwork(1, 2, 1, 2)
    net.set_layer(0, 0, 0, 0, L.Dense(4, 6, bias=True, seed=1))
    net.set_layer(0, 0, 0, 1, L.LayerNorm(6))
    net.set_layer(0, 1, 0, 0, L.Residual())
    net.set_layer(0, 1, 0, 1, L.Softmax())
    net.set_disabled(0, 1, 0, 0)
    dna = net.dna()
    assert len(dna) == 4 and [s.coord for s in dna] == [(0, 0, 0, 0), (0, 0, 0, 1), (0, 1, 0, 0), (0, 1, 0, 1)]
    assert [s.type for s in dna] == ["Dense", "LayerNorm", "Residual", "Softmax"]
    assert (dna[0].z, dna[0].y, dna[0].x, dna[0].l) == (0, 0, 0, 0) and dna[-1].coord == (0, 1, 0, 1)
    np.testing.assert_allclose(dna[0].weights, ref.signature(masters(net.layer(0, 0, 0, 0))), rtol=1e-6)
    np.testing.assert_allclose(dna[1].weights, ref.signature(masters(net.layer(0, 0, 0, 1))), rtol=1e-6)
    assert dna[2].weights.tolist() == [1.0] and dna[3].weights.tolist() == [1.0]
    assert all(s.dtype == "float32" for s in dna)
    assert isinstance(dna.signatures[0], pv.LayerSignature) and "Dense" in repr(dna[0])


def test_dna_indexing_follows_the_sequence_protocol():
    dna = mlp(1).dna()
    assert dna[-1].coord == dna[len(dna) - 1].coord
    with pytest.raises(IndexError):
        dna[3]
    with pytest.raises(IndexError):
        dna[-4]
    assert [s.coord for s in dna] == [s.coord for s in dna.signatures]


def test_container_signatures_concatenate_member_signatures_and_skip_links():
    net = pv.VolumetricNetwork(1, 1, 1, 3)
    net.set_layer(0, 0, 0, 0, L.Dense(4, 4, seed=1))
    a, b, s = L.Dense(4, 4, seed=2), L.Dense(4, 4, bias=True, seed=3), L.RMSNorm(4)
    net.set_layer(0, 0, 0, 1, L.Parallel(a, (0, 0, 0, 0), b, combine="add"))
    net.set_layer(0, 0, 0, 2, L.Sequential(s, L.Dense(4, 4, seed=4)))
    dna = net.dna()
    want = ref.container_signature([ref.signature(masters(a)), ref.signature(masters(b))])
    np.testing.assert_allclose(dna[1].weights, want, rtol=1e-6)
    stage2 = net.layer(0, 0, 0, 2)
    assert dna[2].weights.shape == (4 + 16,)
    assert dna[1].type == "Parallel" and dna[2].type == "Sequential"
    assert stage2.num_params == 20


def test_signature_uses_the_master_and_records_the_dtype():
    a, b = mlp(1), mlp(1)
    b.morph_all("int8")
    da, db = a.dna(), b.dna()
    assert [s.dtype for s in db] == ["int8"] * 3
    np.testing.assert_array_equal(da[1].weights, db[1].weights)
    c = pv.compare_dna(a, b)
    assert c.overall_overlap == 0.0, "different dtypes do not overlap (spec §2)"


# --- compare_dna ----------------------------------------------------------------------------

def test_a_network_overlaps_itself_fully_without_shifts():
    net = mlp(3)
    c = pv.compare_dna(net, net.dna())
    assert c.overall_overlap == pytest.approx(1.0)
    assert list(c.layer_overlaps) == [(0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 0, 2)]
    assert all(v == pytest.approx(1.0) for v in c.layer_overlaps.values())
    assert c.logic_shifts == [] and "overall_overlap=1.0" in repr(c)


def test_overlaps_match_the_numpy_cosines():
    a, b = mlp(1), mlp(2)
    c = pv.compare_dna(a, b)
    want = {}
    for (coord, la), (_, lb) in zip(a.layers(), b.layers()):
        want[coord] = ref.cosine(ref.signature(masters(la)), ref.signature(masters(lb)))
    for coord, v in want.items():
        assert c.layer_overlaps[coord] == pytest.approx(v, abs=1e-6)
    assert c.overall_overlap == pytest.approx(np.mean(list(want.values())), abs=1e-6)
    assert c.overall_overlap == pytest.approx(a.dna().compare(b.dna()).overall_overlap)


def test_moved_layers_are_reported_as_logic_shifts():
    first, second = L.Dense(6, 6, seed=1), L.Dense(6, 6, seed=2)
    a = pv.VolumetricNetwork(1, 1, 1, 2)
    a.set_layer(0, 0, 0, 0, first)
    a.set_layer(0, 0, 0, 1, second)
    b = pv.VolumetricNetwork(1, 1, 1, 2)
    b.set_layer(0, 0, 0, 0, second)
    b.set_layer(0, 0, 0, 1, first)
    c = pv.compare_dna(a, b)
    shifts = {(s.source, s.target): s.overlap for s in c.logic_shifts}
    assert set(shifts) == {((0, 0, 0, 0), (0, 0, 0, 1)), ((0, 0, 0, 1), (0, 0, 0, 0))}
    assert all(v == pytest.approx(1.0) for v in shifts.values())
    cross = ref.cosine(ref.signature(masters(first)), ref.signature(masters(second)))
    assert c.overall_overlap == pytest.approx(cross, abs=1e-6)
    assert "LogicShift" in repr(c.logic_shifts[0])


def test_only_shared_coordinates_are_compared():
    a = mlp(1)
    b = pv.VolumetricNetwork(2, 1, 1, 3)
    b.set_layer(0, 0, 0, 0, a.layer(0, 0, 0, 0))
    b.set_layer(1, 0, 0, 0, L.Dense(4, 8))
    c = pv.compare_dna(a, b)
    assert list(c.layer_overlaps) == [(0, 0, 0, 0)]
    assert c.overall_overlap == pytest.approx(1.0)
    empty = pv.VolumetricNetwork(1, 1, 1, 1)
    assert pv.compare_dna(a, empty).overall_overlap == 0.0
    assert pv.compare_dna(empty, empty).layer_overlaps == {}


def test_compare_rejects_other_types():
    with pytest.raises(TypeError, match="VolumetricNetwork"):
        pv.compare_dna(mlp(1), "net")


# --- splice ---------------------------------------------------------------------------------

def test_blend_mixes_every_slot_with_alpha():
    a, b = mlp(1), mlp(2)
    child = pv.splice(a, b, blend_alpha=0.3)
    for (_, la), (_, lb), (_, lc) in zip(a.layers(), b.layers(), child.layers()):
        np.testing.assert_allclose(slot_vector(lc), ref.blend(slot_vector(la), slot_vector(lb), 0.3), rtol=1e-5, atol=1e-7)


def test_blend_with_fitnesses_leans_to_the_fitter_parent_by_similarity():
    a, b = mlp(1), mlp(2)
    child, report = pv.splice(a, b, fitness_a=1.0, fitness_b=3.0, report=True)
    for (coord, la), (_, lb), (_, lc) in zip(a.layers(), b.layers(), child.layers()):
        sim = ref.cosine(ref.signature(masters(la)), ref.signature(masters(lb)))
        assert report.similarities[coord] == pytest.approx(sim, abs=1e-6)
        alpha = ref.fitness_alpha(1.0, 3.0, sim)
        np.testing.assert_allclose(slot_vector(lc), ref.blend(slot_vector(la), slot_vector(lb), alpha), rtol=1e-5, atol=1e-6)
    assert report.blended_count == sum(v > 0 for v in report.similarities.values())
    assert report.spliced == [(0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 0, 2)]


def test_point_takes_the_head_from_a_and_the_tail_from_b():
    a, b = mlp(1), mlp(2)
    child = pv.splice(a, b, "point", split_ratio=0.25)
    for (_, la), (_, lb), (_, lc) in zip(a.layers(), b.layers(), child.layers()):
        np.testing.assert_array_equal(slot_vector(lc), ref.point(slot_vector(la), slot_vector(lb), 0.25))
    # The slot's tensors are one vector: the first layer's head is its weights, its tail reaches the bias.
    first = child.layer(0, 0, 0, 0)
    np.testing.assert_array_equal(first.bias.master, b.layer(0, 0, 0, 0).bias.master)


def test_uniform_picks_each_weight_from_a_parent_at_the_fitness_ratio():
    a, b = mlp(1, widths=(32, 32, 32)), mlp(2, widths=(32, 32, 32))
    child = pv.splice(a, b, "uniform", fitness_a=3.0, fitness_b=1.0, seed=5)
    wa, wb, wc = (slot_vector(n.layer(0, 0, 0, 1)) for n in (a, b, child))
    from_a = wc == wa
    assert np.all(from_a | (wc == wb))
    assert from_a.mean() == pytest.approx(0.75, abs=0.05)
    again = pv.splice(a, b, "uniform", fitness_a=3.0, fitness_b=1.0, seed=5)
    other = pv.splice(a, b, "uniform", fitness_a=3.0, fitness_b=1.0, seed=6)
    np.testing.assert_array_equal(slot_vector(again.layer(0, 0, 0, 1)), wc)
    assert not np.array_equal(slot_vector(other.layer(0, 0, 0, 1)), wc)
    half = slot_vector(pv.splice(a, b, "uniform", seed=1).layer(0, 0, 0, 1))
    assert (half == wa).mean() == pytest.approx(0.5, abs=0.06)


def test_slots_that_differ_in_type_or_shape_keep_parent_a():
    a = mlp(1)
    b = pv.VolumetricNetwork(1, 1, 1, 4)
    b.set_layer(0, 0, 0, 0, L.Dense(4, 8, "tanh", seed=5))           # no bias: different tensors
    b.set_layer(0, 0, 0, 1, L.LayerNorm(8))                           # different type
    b.set_layer(0, 0, 0, 2, L.Dense(8, 3, seed=6))                    # same shapes: crossed
    b.set_layer(0, 0, 0, 3, L.Dense(3, 3, seed=7))                    # not in a
    child, report = pv.splice(a, b, blend_alpha=1.0, report=True)
    assert report.spliced == [(0, 0, 0, 2)]
    assert set(report.similarities) == {(0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 0, 2)}
    assert report.similarities[(0, 0, 0, 1)] == 0.0
    for l in (0, 1):
        np.testing.assert_array_equal(slot_vector(child.layer(0, 0, 0, l)), slot_vector(a.layer(0, 0, 0, l)))
    np.testing.assert_array_equal(child.layer(0, 0, 0, 2).weights.master, b.layer(0, 0, 0, 2).weights.master)
    assert child.dims == a.dims and "spliced" in repr(report)


def test_splice_keeps_the_child_runnable_and_in_a_s_dtypes():
    a, b = mlp(1), mlp(2)
    a.morph_all("int8")
    child = pv.splice(a, b)
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    assert child.forward(x).shape == (5, 3)
    assert [layer.dtype for _, layer in child.layers()] == ["int8"] * 3


def container_net(seed):
    net = pv.VolumetricNetwork(1, 1, 1, 2)
    net.set_layer(0, 0, 0, 0, L.Parallel(L.Dense(4, 4, seed=seed), L.Dense(4, 4, seed=seed + 1), combine="add"))
    net.set_layer(0, 0, 0, 1, L.Sequential(L.Dense(4, 4, seed=seed + 2), L.LayerNorm(4)))
    return net


def all_masters(net):
    return [p.master.copy() for p in net.parameters]


def test_quirk_32_children_never_share_buffers_with_their_parents():
    a, b = container_net(1), container_net(10)
    child = pv.splice(a, b, "point", split_ratio=1.0)     # every weight from a: equal values, own buffers
    copy = a.copy()
    before_child, before_copy = all_masters(child), all_masters(copy)
    for x, y in zip(before_child, all_masters(a)):
        np.testing.assert_array_equal(x, y)
    for p in a.parameters + b.parameters:                  # change every parent tensor in place
        p.set_master(p.master + 1.0)
    for got, want in zip(all_masters(child), before_child):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(all_masters(copy), before_copy):
        np.testing.assert_array_equal(got, want)
    for p in child.parameters:                             # and the other way round
        p.set_master(p.master * 0)
    assert all(np.any(m != 0) for m in all_masters(a))


def test_splice_crosses_container_members():
    a, b = container_net(1), container_net(10)
    child = pv.splice(a, b, blend_alpha=0.5)
    for pa, pb, pc in zip(a.parameters, b.parameters, child.parameters):
        np.testing.assert_allclose(pc.master, (pa.master + pb.master) / 2, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "crossover"}, "crossover mode"),
    ({"blend_alpha": 1.5}, "blend_alpha"),
    ({"split_ratio": -0.1}, "split_ratio"),
    ({"fitness_a": -1.0}, "fitness_a"),
    ({"fitness_b": float("nan")}, "fitness_b"),
])
def test_splice_rejects_bad_settings(kwargs, match):
    with pytest.raises(pv.InputError, match=match):
        pv.splice(mlp(1), mlp(2), **kwargs)


def test_splice_rejects_bad_arguments():
    with pytest.raises(pv.SpecError, match="seed"):
        pv.splice(mlp(1), mlp(2), seed=-1)
    with pytest.raises(TypeError, match="b must be a VolumetricNetwork"):
        pv.splice(mlp(1), None)
