"""NEAT: the config (every field has an effect), neat_mutate (seeded, the parent untouched,
structural changes keep the network runnable), NEATPopulation (reproducible, improves a small
regression task, fitness exceptions and NaN scores handled, children own their buffers)."""

import numpy as np
import pytest

import polyvtd as pv
from polyvtd import layers as L

RNG = np.random.default_rng(3)
QUIET = dict(weight_perturb_rate=0.0, activation_mut_rate=0.0, node_mutate_rate=0.0, layer_toggle_rate=0.0,
              connection_add_rate=0.0, connection_drop_rate=0.0)


def only(**rates):
    """A config with every mutation off except `rates` (and any other field given)."""
    return {**QUIET, **rates}


def chain(widths=(4, 8, 8, 8, 2)):
    """Dense layers in one cell: 4→8 (relu), 8→8 (tanh) ×2, 8→2."""
    net = pv.VolumetricNetwork(1, 1, 1, len(widths) - 1)
    acts = ["relu"] + ["tanh"] * (len(widths) - 3) + ["linear"]
    for l, (i, o) in enumerate(zip(widths, widths[1:])):
        net.set_layer(0, 0, 0, l, L.Dense(i, o, acts[l], seed=l + 1))
    return net


def weights(net):
    return [p.master.copy() for p in net.parameters]


def types(net):
    return [layer.type for _, layer in net.layers()]


X = RNG.standard_normal((6, 4)).astype(np.float32)


# --- config ---------------------------------------------------------------------------------

def test_defaults_are_the_reference_defaults():
    c = pv.NEATConfig()
    assert (c.weight_perturb_rate, c.weight_perturb_scale, c.node_mutate_rate) == (0.8, 0.05, 0.1)
    assert (c.connection_add_rate, c.connection_drop_rate, c.activation_mut_rate, c.layer_toggle_rate) == (0.05, 0.02, 0.1, 0.02)
    assert (c.default_num_heads, c.default_in_channels, c.default_kernel_size, c.default_num_clusters) == (4, 1, 3, 8)
    assert len(c.allowed_layer_types) == 17 and c.seed == 0 and c.input_shape is None and c.token_vocab is None


@pytest.mark.parametrize("config, match", [
    ({"node_mutate_rate": 1.5}, "node_mutate_rate"),
    ({"weight_perturb_scale": -0.1}, "weight_perturb_scale"),
    ({"default_kernel_size": 4}, "default_kernel_size"),
    ({"default_num_heads": 0}, "default_num_heads"),
    ({"allowed_layer_types": ["Dense", "Parallel"]}, "Parallel"),
    ({"input_shape": [4, 0]}, "input_shape"),
    ({"seed": -1}, "seed"),
    ({"token_vocab": 0}, "token_vocab"),
    ({"mutation_rate": 0.5}, "mutation_rate"),
])
def test_bad_configs_name_the_field(config, match):
    with pytest.raises(pv.InputError, match=match):
        pv.neat_mutate(chain(), config)


def test_config_must_be_a_config_or_dict():
    with pytest.raises(TypeError, match="NEATConfig"):
        pv.neat_mutate(chain(), [("seed", 1)])
    with pytest.raises(TypeError, match="VolumetricNetwork"):
        pv.neat_mutate("net", {})


# --- neat_mutate ----------------------------------------------------------------------------

def test_mutation_returns_a_new_network_and_leaves_the_parent_alone():
    parent = chain()
    before = weights(parent)
    child = pv.neat_mutate(parent, pv.NEATConfig(weight_perturb_rate=1.0, node_mutate_rate=0.5, seed=4))
    for got, want in zip(weights(parent), before):
        np.testing.assert_array_equal(got, want)
    assert types(parent) == ["Dense"] * 4
    for p in child.parameters:
        p.set_master(p.master * 0)
    for got, want in zip(weights(parent), before):
        np.testing.assert_array_equal(got, want)


def test_mutation_is_reproducible_from_the_seed():
    config = {"weight_perturb_rate": 1.0, "node_mutate_rate": 0.5, "activation_mut_rate": 0.5, "seed": 9}
    a, b = pv.neat_mutate(chain(), config), pv.neat_mutate(chain(), config)
    c = pv.neat_mutate(chain(), {**config, "seed": 10})
    assert types(a) == types(b)
    for x, y in zip(weights(a), weights(b)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.forward(X), b.forward(X))
    assert not np.array_equal(a.forward(X), c.forward(X))


def test_nothing_changes_with_every_rate_zero():
    parent = chain()
    child = pv.neat_mutate(parent, only())
    for x, y in zip(weights(child), weights(parent)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(child.forward(X), parent.forward(X))


@pytest.mark.parametrize("scale", [0.05, 0.5])
def test_weight_perturbation_adds_bounded_uniform_noise(scale):
    parent = chain()
    child = pv.neat_mutate(parent, only(weight_perturb_rate=1.0, weight_perturb_scale=scale, seed=1))
    deltas = np.concatenate([(c - p).ravel() for c, p in zip(weights(child), weights(parent))])
    assert np.all(np.abs(deltas) <= scale * (1 + 1e-6)) and np.all(deltas != 0)
    assert np.abs(deltas).max() > 0.9 * scale and abs(deltas.mean()) < 0.1 * scale


def test_perturbation_rate_is_a_per_layer_probability():
    parent = chain((4,) + (4,) * 40)
    child = pv.neat_mutate(parent, only(weight_perturb_rate=0.5, seed=2))
    changed = [not np.array_equal(c, p) for c, p in zip(weights(child), weights(parent))]
    assert 10 < sum(changed) < 30


def test_activation_mutation_draws_from_the_reference_list():
    seen = set()
    for seed in range(12):
        child = pv.neat_mutate(chain(), only(activation_mut_rate=1.0, seed=seed))
        seen.update(layer.activation for _, layer in child.layers())
        for x, y in zip(weights(child), weights(chain())):
            np.testing.assert_array_equal(x, y)
    assert seen == {"ReLU", "Silu", "GELU", "Tanh", "Sigmoid", "Linear"}


def test_node_mutation_replaces_every_layer_and_keeps_the_network_running():
    allowed = set(pv.NEATConfig().allowed_layer_types)
    for seed in range(8):
        child = pv.neat_mutate(chain(), only(node_mutate_rate=1.0, seed=seed))
        assert "Dense" not in types(child) and set(types(child)) <= allowed
        assert child.forward(X).shape == (6, 2)


def test_allowed_layer_types_limit_what_a_node_becomes():
    child = pv.neat_mutate(chain(), only(node_mutate_rate=1.0, allowed_layer_types=["LayerNorm"]))
    assert types(child) == ["Dense", "LayerNorm", "LayerNorm", "Dense"], "only the 8→8 slots fit a norm"
    assert child.forward(X).shape == (6, 2)


def test_num_heads_default_is_lowered_until_it_divides_the_width():
    import json

    for heads, want in [(4, 4), (3, 2), (16, 8)]:
        child = pv.neat_mutate(chain(), only(node_mutate_rate=1.0, allowed_layer_types=["MHA"], default_num_heads=heads))
        assert types(child) == ["Dense", "MultiHeadAttention", "MultiHeadAttention", "Dense"]
        assert json.loads(child.layer(0, 0, 0, 1).spec_json())["num_heads"] == want


def test_quirk_32_new_convolutions_have_their_true_weight_count():
    import json

    child = pv.neat_mutate(chain(), only(node_mutate_rate=1.0, allowed_layer_types=["CNN1"], default_kernel_size=5))
    assert types(child) == ["CNN1"] * 3 + ["Dense"], "2 outputs cannot come from 4 positions"
    for _, cnn in child.layers()[:3]:
        spec = json.loads(cnn.spec_json())
        want = [spec["filters"], spec["input_channels"], 5]
        assert cnn.weights.shape == want and cnn.weights.master.size == np.prod(want), "filters × in_channels × k, not k²"
    assert child.layer(0, 0, 0, 0).weights.shape == [2, 1, 5], "a flat input of 4 is 1 channel × 4; 2 filters fill 8"
    two = pv.neat_mutate(chain(), only(node_mutate_rate=1.0, allowed_layer_types=["CNN1"], default_in_channels=2))
    assert two.layer(0, 0, 0, 0).weights.shape == [4, 2, 3], "2 channels × 2 positions; 4 filters fill 8"
    assert child.forward(X).shape == two.forward(X).shape == (6, 2)


def test_new_layers_keep_the_replaced_layer_s_dtype():
    parent = chain()
    parent.morph_all("int8")
    child = pv.neat_mutate(parent, only(node_mutate_rate=1.0, allowed_layer_types=["CNN2"]))
    assert child.layer(0, 0, 0, 1).type == "CNN2" and child.layer(0, 0, 0, 1).dtype == "int8"


def test_num_clusters_sizes_new_kmeans_layers():
    eight = pv.neat_mutate(chain(), only(node_mutate_rate=1.0, allowed_layer_types=["KMeans"], default_num_clusters=8))
    assert eight.layer(0, 0, 0, 1).weights.shape == [8, 8]
    three = pv.neat_mutate(chain(), only(node_mutate_rate=1.0, allowed_layer_types=["KMeans"], default_num_clusters=3))
    assert three.layer(0, 0, 0, 1).weights.shape == [3, 8], "feature mode keeps the width"
    assert eight.forward(X).shape == three.forward(X).shape == (6, 2)


def test_embeddings_need_token_input():
    ids = np.array([[1, 2, 9, 0]], dtype=np.float32)
    child = pv.neat_mutate(chain(), only(node_mutate_rate=1.0, allowed_layer_types=["Embedding"], token_vocab=10))
    assert types(child) == ["Embedding", "Dense", "Dense", "Dense"], "only the slot reading the input"
    assert child.layer(0, 0, 0, 0).weights.shape == [10, 2]
    assert child.forward(ids).shape == (1, 2)
    unchanged = pv.neat_mutate(chain(), only(node_mutate_rate=1.0, allowed_layer_types=["Embedding"]))
    assert types(unchanged) == ["Dense"] * 4


def test_toggles_only_disable_layers_the_network_can_do_without():
    child = pv.neat_mutate(chain(), only(layer_toggle_rate=1.0))
    summary = child._net.summary()
    assert [row[8] for row in summary] == [False, True, True, False]
    assert child.forward(X).shape == (6, 2)
    back = pv.neat_mutate(child, only(layer_toggle_rate=1.0))
    assert not any(row[8] for row in back._net.summary())


def test_connection_add_links_a_slot_to_another_layer():
    child = pv.neat_mutate(chain(), only(connection_add_rate=1.0, seed=1))
    containers = [e for e in child.blueprint()["layers"] if e["type"] == "Parallel"]
    assert len(containers) == 1
    own, link = containers[0]["branches"]
    assert containers[0]["combine_mode"] == "add" and link["type"] == "link"
    assert child.forward(X).shape == (6, 2)
    # The link runs the target's own weights: changing them changes the output.
    z, y, x, l = link["target"]
    before = child.forward(X)
    target = child.layer(z, y, x, l)
    target.weights.set_master(target.weights.master * 2)
    assert not np.allclose(child.forward(X), before)


def test_connection_drop_removes_a_link():
    linked = pv.neat_mutate(chain(), only(connection_add_rate=1.0, seed=1))
    dropped = pv.neat_mutate(linked, only(connection_drop_rate=1.0, seed=1))
    assert types(dropped) == ["Dense"] * 4
    np.testing.assert_array_equal(dropped.forward(X), chain().forward(X))
    slot_link = chain()
    slot_link.set_layer(0, 0, 0, 2, L.Residual())
    slot_link.set_link(0, 0, 0, 2, (0, 0, 0, 0))
    assert pv.neat_mutate(slot_link, only(connection_drop_rate=1.0)).link(0, 0, 0, 2) is None


def test_structural_mutations_need_an_input_shape():
    net = pv.VolumetricNetwork(1, 1, 1, 2)
    net.set_layer(0, 0, 0, 0, L.Softmax())
    net.set_layer(0, 0, 0, 1, L.Dense(8, 8, seed=1))
    with pytest.raises(pv.InputError, match="input_shape"):
        pv.neat_mutate(net, only(node_mutate_rate=1.0))
    child = pv.neat_mutate(net, only(node_mutate_rate=1.0, input_shape=[2, 8]))
    assert child.forward(RNG.standard_normal((3, 2, 8)).astype(np.float32)).shape == (3, 2, 8)
    perturbed = pv.neat_mutate(net, only(weight_perturb_rate=1.0))      # weights alone need no shape
    assert not np.array_equal(perturbed.layer(0, 0, 0, 1).weights.master, net.layer(0, 0, 0, 1).weights.master)
    with pytest.raises(pv.InputError, match="does not run on input shape"):
        pv.neat_mutate(net, only(node_mutate_rate=1.0, input_shape=[5]))


def test_heavy_mutation_always_yields_a_runnable_network():
    net = pv.VolumetricNetwork(1, 2, 1, 3)
    net.set_layer(0, 0, 0, 0, L.Dense(6, 8, "relu", seed=1))
    net.set_layer(0, 0, 0, 1, L.LayerNorm(8))
    net.set_layer(0, 0, 0, 2, L.MultiHeadAttention(8, 2, seed=2))
    net.set_layer(0, 1, 0, 0, L.Parallel(L.Dense(8, 8, seed=3), L.SwiGLU(8, 16, seed=4), combine="avg"))
    net.set_layer(0, 1, 0, 1, L.Residual())
    net.set_layer(0, 1, 0, 2, L.Dense(8, 3, seed=5))
    x = RNG.standard_normal((2, 6)).astype(np.float32)
    current = net
    for seed in range(10):
        config = {"weight_perturb_rate": 0.5, "activation_mut_rate": 0.5, "node_mutate_rate": 0.5,
                  "layer_toggle_rate": 0.3, "connection_add_rate": 0.8, "connection_drop_rate": 0.3, "seed": seed}
        current = pv.neat_mutate(current, config)
        assert current.forward(x).shape == (2, 3)
        assert np.isfinite(current.forward(x)).all()


# --- population -----------------------------------------------------------------------------

def regression_task():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = np.tanh(x @ rng.standard_normal((4, 2))).astype(np.float32)
    seed = pv.VolumetricNetwork(1, 1, 1, 2)
    seed.set_layer(0, 0, 0, 0, L.Dense(4, 8, "tanh", seed=1))
    seed.set_layer(0, 0, 0, 1, L.Dense(8, 2, "tanh", seed=2))

    def fitness(net):
        assert isinstance(net, pv.VolumetricNetwork)
        return -float(np.mean((net.forward(x) - y) ** 2))

    return seed, fitness


def test_evolution_improves_a_small_regression_task():
    seed, fitness = regression_task()
    pop = pv.NEATPopulation(seed, 16, pv.NEATConfig(weight_perturb_scale=0.1, seed=3))
    history = pop.evolve(fitness, generations=25)
    best = [h["best"] for h in history]
    assert len(history) == 25 and pop.generation == 25
    assert all(b1 >= b0 for b0, b1 in zip(best, best[1:])), "elites are kept: the best never gets worse"
    # The bar: the best member's MSE is at most 40% of the seed network's (0.72 → about 0.15).
    assert -pop.best_fitness <= 0.4 * -fitness(seed)
    assert pop.best_fitness == best[-1] == pop.fitnesses[0]
    assert fitness(pop.best) == pytest.approx(pop.best_fitness)
    assert pop.summary().startswith("Gen 24 | best=") and pop.summary().endswith("pop=16")
    assert "generation=25" in repr(pop) and len(pop) == 16


def test_populations_are_reproducible_from_the_seed():
    seed, fitness = regression_task()
    runs = [pv.NEATPopulation(seed, 8, {"seed": 5}).evolve(fitness, 4) for _ in range(2)]
    assert runs[0] == runs[1]
    other = pv.NEATPopulation(seed, 8, {"seed": 6}).evolve(fitness, 4)
    assert other != runs[0]


def test_members_start_as_distinct_mutations_of_the_seed():
    seed, fitness = regression_task()
    pop = pv.NEATPopulation(seed, 6, {"seed": 1})
    scores = pop.evaluate(fitness)
    assert len(set(scores)) == 6 and fitness(seed) not in scores
    assert pop.fitnesses == [None] * 6 and pop.best_fitness is None and pop.history == []


def test_fitness_exceptions_propagate_and_leave_the_population_unchanged():
    seed, fitness = regression_task()
    pop = pv.NEATPopulation(seed, 8, {"seed": 2})
    pop.evolve(fitness, 1)
    before = ([weights(n) for n in pop.networks], pop.fitnesses, pop.generation)
    calls = []

    def failing(net):
        calls.append(1)
        if len(calls) == 5:
            raise KeyError("broken fitness")
        return fitness(net)

    with pytest.raises(KeyError, match="broken fitness"):
        pop.evolve(failing, 3)
    assert (pop.fitnesses, pop.generation) == before[1:]
    for now, then in zip([weights(n) for n in pop.networks], before[0]):
        for a, b in zip(now, then):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="member 0"):
        pop.evolve(lambda net: "good", 1)


def test_nan_scores_rank_last_and_stay_out_of_the_statistics():
    seed, fitness = regression_task()
    pop = pv.NEATPopulation(seed, 8, {"seed": 2})
    order = iter(range(8))
    scores = [np.nan, 1.0, 3.0, np.nan, 2.0, 0.5, np.float32(4.0), np.array(-1.0)]
    stats = pop.evolve(lambda net: scores[next(order)], 1)[0]
    assert (stats["best"], stats["worst"], stats["nan_count"], stats["size"]) == (4.0, -1.0, 2, 8)
    assert stats["mean"] == pytest.approx(np.mean([1.0, 3.0, 2.0, 0.5, 4.0, -1.0]))
    assert pop.fitnesses[:2] == [4.0, 3.0] and pop.fitnesses[2:] == [None] * 6
    all_nan = pop.evolve(lambda net: float("nan"), 1)[0]
    assert np.isnan(all_nan["best"]) and all_nan["nan_count"] == 8
    assert pop.networks[0].forward(np.zeros((1, 4), np.float32)).shape == (1, 2)


def test_what_the_fitness_function_does_to_a_member_is_kept():
    seed, fitness = regression_task()
    pop = pv.NEATPopulation(seed, 4, only(weight_perturb_rate=1.0, seed=1))

    def zero_first_layer(net):
        w = net.layer(0, 0, 0, 0).weights
        w.set_master(np.zeros_like(w.master))
        return fitness(net)

    pop.evolve(zero_first_layer, 1)
    assert not pop.networks[0].layer(0, 0, 0, 0).weights.master.any()


def test_children_own_their_buffers():
    seed, fitness = regression_task()
    seed_weights = weights(seed)
    pop = pv.NEATPopulation(seed, 8, {"seed": 4})
    pop.evolve(fitness, 2)
    nets = pop.networks
    children_before = [weights(n) for n in nets[2:]]
    for p in nets[0].parameters + nets[1].parameters:   # the two elites
        p.set_master(p.master + 1.0)
    for net, before in zip(nets[2:], children_before):
        for a, b in zip(weights(net), before):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(weights(seed), seed_weights):
        np.testing.assert_array_equal(a, b)


def test_bad_population_arguments():
    seed, fitness = regression_task()
    with pytest.raises(pv.InputError, match="size"):
        pv.NEATPopulation(seed, 0)
    with pytest.raises(TypeError, match="seed must be a VolumetricNetwork"):
        pv.NEATPopulation(None, 4)
    with pytest.raises(pv.InputError, match="generations"):
        pv.NEATPopulation(seed, 2).evolve(fitness, -1)
