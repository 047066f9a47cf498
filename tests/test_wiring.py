"""NCP wiring: layer counts, AutoNCP fan-outs, sampling without replacement, orphans,
polarity, seeding, config round trip, graph export and input validation."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from velora_ens.wiring import Wiring

SIZES = [
    (4, 10, 1, 0.5),
    (3, 2, 1, 0.5),
    (8, 20, 3, 0.3),
    (2, 7, 7, 0.0),
    (16, 50, 4, 0.8),
    (5, 12, 2, 0.95),
    (1, 3, 1, 0.1),
]


def expected_counts(in_f: int, n: int, out_f: int, sparsity: float):
    """ncps AutoNCP counts with n = inter + command neurons (SPEC "Wiring")."""
    command = max(int(0.4 * n), 1)
    inter = n - command
    d = 1.0 - sparsity
    return {
        "command": command,
        "inter": inter,
        "sensory_fanout": max(int(inter * d), 1),
        "inter_fanout": max(int(command * d), 1),
        "recurrent": min(max(int(command * d * 2), 1), command * command),
        "motor_fanin": max(int(command * d), 1),
    }


def dense(mask: torch.Tensor) -> np.ndarray:
    return mask.numpy().astype(np.int64)


@pytest.mark.parametrize("in_f,n,out_f,sparsity", SIZES)
def test_counts_and_shapes(in_f, n, out_f, sparsity):
    w = Wiring(in_f, n, out_f, sparsity_level=sparsity, seed=3)
    masks, counts = w.data()
    exp = expected_counts(in_f, n, out_f, sparsity)
    assert counts.sensory == in_f
    assert counts.motor == out_f
    assert counts.command == exp["command"]
    assert counts.inter == exp["inter"]
    assert counts.inter + counts.command == n
    assert counts.inter >= 1 and counts.command >= 1
    assert tuple(masks.inter.shape) == (in_f, counts.inter)
    assert tuple(masks.command.shape) == (counts.inter, counts.command)
    assert tuple(masks.motor.shape) == (counts.command, out_f)
    assert tuple(masks.recurrent.shape) == (counts.command, counts.command)
    for m in (masks.inter, masks.command, masks.motor, masks.recurrent):
        assert m.dtype == torch.int8
    s = w.synapses
    assert s.sensory_fanout == exp["sensory_fanout"]
    assert s.inter_fanout == exp["inter_fanout"]
    assert s.recurrent_command == exp["recurrent"]
    assert s.motor_fanin == exp["motor_fanin"]


@pytest.mark.parametrize("in_f,n,out_f,sparsity", SIZES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fanouts_follow_autoncp_rules(in_f, n, out_f, sparsity, seed):
    w = Wiring(in_f, n, out_f, sparsity_level=sparsity, seed=seed)
    masks, counts = w.data()
    exp = expected_counts(in_f, n, out_f, sparsity)
    inter, command, motor, rec = (dense(m) != 0 for m in
                                  (masks.inter, masks.command, masks.motor, masks.recurrent))
    # Every sensory neuron reaches at least sensory_fanout distinct inter neurons
    # (exactly that many before orphan repair, which can only add synapses).
    assert (inter.sum(1) >= exp["sensory_fanout"]).all()
    # Every inter neuron reaches at least inter_fanout command neurons.
    assert (command.sum(1) >= exp["inter_fanout"]).all()
    # Every motor neuron receives at least motor_fanin command neurons.
    assert (motor.sum(0) >= exp["motor_fanin"]).all()
    # Recurrent command synapses: exactly the promised number of distinct pairs.
    assert rec.sum() == exp["recurrent"]

    # Orphan repair adds, per orphan destination, the same number of synapses
    # (the mean fan-in), so the surplus over the drawn fan-outs is a multiple of it.
    def surplus_ok(m: np.ndarray, n_src: int, n_dst: int, fan: int, by_src: bool) -> bool:
        total = m.sum()
        if by_src:
            base, mean = n_src * fan, max(int(round(n_src * fan / n_dst)), 1)
            repair = min(mean, n_src)
        else:
            base, mean = n_dst * fan, max(int(round(n_dst * fan / n_src)), 1)
            repair = min(mean, n_dst)
        return total >= base and (total - base) % repair == 0

    assert surplus_ok(inter, in_f, counts.inter, exp["sensory_fanout"], True)
    assert surplus_ok(command, counts.inter, counts.command, exp["inter_fanout"], True)
    assert surplus_ok(motor, counts.command, out_f, exp["motor_fanin"], False)


def test_fanouts_exact_at_zero_sparsity():
    """With density 1 every sensory -> inter and inter -> command synapse exists and
    every motor neuron reads every command neuron: fan-outs are exact."""
    w = Wiring(5, 10, 3, sparsity_level=0.0, seed=11)
    masks, counts = w.data()
    assert (dense(masks.inter) != 0).all()
    assert (dense(masks.command) != 0).all()
    assert (dense(masks.motor) != 0).all()
    assert (dense(masks.recurrent) != 0).sum() == min(2 * counts.command, counts.command ** 2)


def test_fanouts_exact_without_orphans():
    """In a large dense-enough wiring no orphan repair is needed: each source then has
    exactly the drawn fan-out (this also shows sampling is without replacement)."""
    w = Wiring(30, 60, 5, sparsity_level=0.5, seed=5)
    masks, counts = w.data()
    exp = expected_counts(30, 60, 5, 0.5)
    inter = dense(masks.inter) != 0
    command = dense(masks.command) != 0
    motor = dense(masks.motor) != 0
    # 30 sources x 18 synapses over 36 destinations (and 36 x 12 over 24): an orphan
    # destination has probability ~2^-30, so no repair happened.
    assert inter.sum(0).min() >= 1
    assert (inter.sum(1) == exp["sensory_fanout"]).all()
    assert (command.sum(1) == exp["inter_fanout"]).all()
    # command -> motor is drawn per motor neuron (fan-in); orphan command neurons
    # (about 1 in 32 here) then get extra motor synapses, so only ">=" holds.
    assert (motor.sum(0) >= exp["motor_fanin"]).all()


@pytest.mark.parametrize("in_f,n,out_f,sparsity", SIZES)
@pytest.mark.parametrize("seed", [0, 7])
def test_no_orphans(in_f, n, out_f, sparsity, seed):
    masks, counts = Wiring(in_f, n, out_f, sparsity_level=sparsity, seed=seed).data()
    inter, command, motor, rec = (dense(m) != 0 for m in
                                  (masks.inter, masks.command, masks.motor, masks.recurrent))
    assert inter.any(1).all(), "a sensory neuron has no outgoing synapse"
    assert inter.any(0).all(), "an inter neuron has no incoming synapse"
    assert command.any(1).all(), "an inter neuron has no outgoing synapse"
    assert command.any(0).all(), "a command neuron has no incoming synapse (from inter)"
    assert (motor.any(1) | rec.any(1)).all(), "a command neuron has no outgoing synapse"
    assert motor.any(1).all(), "a command neuron does not reach the motor layer"
    assert motor.any(0).all(), "a motor neuron has no incoming synapse"


def test_polarity_values_and_both_signs():
    w = Wiring(20, 60, 6, sparsity_level=0.3, seed=2)
    masks, _ = w.data()
    allv = []
    for m in (masks.inter, masks.command, masks.motor, masks.recurrent):
        vals = set(np.unique(dense(m)).tolist())
        assert vals <= {-1, 0, 1}
        allv.append(dense(m)[dense(m) != 0])
        # every layer of a large wiring has both excitatory and inhibitory synapses
        assert {-1, 1} <= vals
    allv = np.concatenate(allv)
    frac = (allv == 1).mean()
    assert 0.35 < frac < 0.65  # fair coin for polarity


def test_edges_are_unique_and_match_masks():
    w = Wiring(6, 15, 3, sparsity_level=0.4, seed=9)
    masks, counts = w.data()
    edges = w.edges()
    pairs = [(s, d) for s, d, _ in edges]
    assert len(pairs) == len(set(pairs)), "duplicate synapse"
    names = w.neuron_names()
    assert [len(names[k]) for k in ("sensory", "inter", "command", "motor")] == [
        counts.sensory, counts.inter, counts.command, counts.motor]
    all_names = [n for layer in names.values() for n in layer]
    assert len(all_names) == len(set(all_names))
    index = {name: (layer, i) for layer, lst in names.items() for i, name in enumerate(lst)}
    table = {("sensory", "inter"): masks.inter, ("inter", "command"): masks.command,
             ("command", "command"): masks.recurrent, ("command", "motor"): masks.motor}
    # every edge is a mask entry with that polarity
    seen = {k: np.zeros(m.shape, dtype=bool) for k, m in table.items()}
    for src, dst, pol in edges:
        (ls, i), (ld, j) = index[src], index[dst]
        m = table[(ls, ld)]
        assert pol in (-1, 1)
        assert int(m[i, j]) == pol
        seen[(ls, ld)][i, j] = True
    # every mask entry is an edge
    for k, m in table.items():
        np.testing.assert_array_equal(seen[k], dense(m) != 0)
    total = sum(int((dense(m) != 0).sum()) for m in table.values())
    assert len(edges) == total == w.n_connections
    # adjacency lists: every neuron present, outgoing synapses == edges from it
    adj = w.adjacency_lists()
    assert set(adj) == set(all_names)
    rebuilt = sorted((s, d, p) for s, lst in adj.items() for d, p in lst)
    assert rebuilt == sorted(edges)
    assert all(adj[m] == [] for m in names["motor"])


def test_same_seed_same_masks_different_seed_different_masks():
    a = Wiring(8, 20, 3, seed=42).data()[0]
    b = Wiring(8, 20, 3, seed=42).data()[0]
    for k in ("inter", "command", "motor", "recurrent"):
        assert torch.equal(getattr(a, k), getattr(b, k))
    for other in (0, 1, 43, 2**31 - 2):
        c = Wiring(8, 20, 3, seed=other).data()[0]
        assert any(not torch.equal(getattr(a, k), getattr(c, k))
                   for k in ("inter", "command", "motor", "recurrent"))


def test_masks_ignore_and_preserve_global_numpy_state():
    np.random.seed(0)
    a = Wiring(8, 20, 3, seed=5).data()[0]
    np.random.seed(999)
    np.random.rand(17)
    before = np.random.get_state()
    b = Wiring(8, 20, 3, seed=5).data()[0]
    after = np.random.get_state()
    for k in ("inter", "command", "motor", "recurrent"):
        assert torch.equal(getattr(a, k), getattr(b, k))
    # building a wiring does not draw from the global numpy generator
    assert before[0] == after[0]
    np.testing.assert_array_equal(before[1], after[1])
    assert before[2:] == after[2:]
    # ... not even with seed=None (which draws from torch instead)
    before = np.random.get_state()
    Wiring(8, 20, 3, seed=None)
    after = np.random.get_state()
    np.testing.assert_array_equal(before[1], after[1])
    assert before[2:] == after[2:]


def test_seed_none_reproducible_under_torch_manual_seed():
    torch.manual_seed(77)
    np.random.seed(1)
    a = Wiring(8, 20, 3)
    torch.manual_seed(77)
    np.random.seed(2)
    b = Wiring(8, 20, 3)
    assert a.seed == b.seed
    for k in ("inter", "command", "motor", "recurrent"):
        assert torch.equal(getattr(a.masks, k), getattr(b.masks, k))
    # the drawn seed is recorded and rebuilds the same wiring
    c = Wiring.from_config(a.get_config())
    for k in ("inter", "command", "motor", "recurrent"):
        assert torch.equal(getattr(a.masks, k), getattr(c.masks, k))
    # a different torch seed gives a different wiring
    torch.manual_seed(78)
    d = Wiring(8, 20, 3)
    assert d.seed != a.seed


@pytest.mark.parametrize("seed", [0, 123, None])
def test_config_round_trip(seed):
    w = Wiring(6, 13, 2, sparsity_level=0.35, seed=seed)
    cfg = w.get_config()
    text = json.dumps(cfg)
    back = Wiring.from_config(json.loads(text))
    assert back.get_config() == cfg
    for k in ("inter", "command", "motor", "recurrent"):
        assert torch.equal(getattr(w.masks, k), getattr(back.masks, k))
    assert back.counts == w.counts and back.synapses == w.synapses
    assert back.edges() == w.edges()
    # pickling keeps the masks too (networks are saved with the wiring)
    again = pickle.loads(pickle.dumps(w))
    for k in ("inter", "command", "motor", "recurrent"):
        assert torch.equal(getattr(w.masks, k), getattr(again.masks, k))


def test_from_config_rejects_bad_keys():
    cfg = Wiring(4, 10, 1, seed=0).get_config()
    bad = dict(cfg, extra=1)
    with pytest.raises(ValueError, match="extra"):
        Wiring.from_config(bad)
    missing = {k: v for k, v in cfg.items() if k != "seed"}
    with pytest.raises(ValueError, match="seed"):
        Wiring.from_config(missing)


def test_numpy_integer_sizes_accepted():
    a = Wiring(np.int64(4), np.int32(10), np.int64(1), seed=np.int64(3))
    b = Wiring(4, 10, 1, seed=3)
    assert torch.equal(a.masks.inter, b.masks.inter)
    json.dumps(a.get_config())


@pytest.mark.parametrize(
    "args,kwargs,fragments",
    [
        ((4, 10, 1), {"sparsity_level": 1.0}, ["sparsity_level", "1.0"]),
        ((4, 10, 1), {"sparsity_level": 1.5}, ["sparsity_level", "1.5"]),
        ((4, 10, 1), {"sparsity_level": -0.1}, ["sparsity_level", "-0.1"]),
        ((4, 10, 1), {"sparsity_level": "0.5"}, ["sparsity_level", "'0.5'"]),
        ((4, 1, 1), {}, ["n_neurons", "1"]),
        ((4, 0, 1), {}, ["n_neurons", "0"]),
        ((4, 3, 5), {}, ["n_neurons=3", "out_features=5"]),
        ((4.0, 10, 1), {}, ["in_features", "4.0"]),
        ((4, 10.5, 1), {}, ["n_neurons", "10.5"]),
        ((4, 10, "1"), {}, ["out_features", "'1'"]),
        ((0, 10, 1), {}, ["in_features", "0"]),
        ((4, 10, 0), {}, ["out_features", "0"]),
        ((True, 10, 1), {}, ["in_features", "True"]),
        ((4, 10, 1), {"seed": -1}, ["seed", "-1"]),
        ((4, 10, 1), {"seed": 1.5}, ["seed", "1.5"]),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_value(args, kwargs, fragments):
    with pytest.raises(ValueError) as info:
        Wiring(*args, **kwargs)
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"


# ------------------------------------------------------------------ dense recurrence
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.8])
def test_dense_recurrence_connects_every_command_pair_and_keeps_the_other_masks(sparsity):
    sparse = Wiring(3, 20, 2, sparsity_level=sparsity, seed=5)
    dense = Wiring(3, 20, 2, sparsity_level=sparsity, seed=5, dense_recurrence=True)
    c = dense.counts.command
    assert sparse.masks.recurrent.count_nonzero() < c * c  # the NCP's recurrence is sparse
    assert dense.masks.recurrent.shape == (c, c)
    assert int(dense.masks.recurrent.count_nonzero()) == c * c
    assert set(dense.masks.recurrent.unique().tolist()) == {-1, 1}  # both polarities drawn
    assert dense.synapses.recurrent_command == c * c
    for k in ("inter", "command", "motor"):  # drawn before the recurrence: unchanged
        assert torch.equal(getattr(sparse.masks, k), getattr(dense.masks, k))
    assert (dense.n_connections - sparse.n_connections
            == c * c - int(sparse.masks.recurrent.count_nonzero()))
    assert "dense_recurrence=True" in repr(dense) and "dense_recurrence" not in repr(sparse)


def test_dense_recurrence_round_trips_through_the_config():
    dense = Wiring(4, 10, 1, seed=2, dense_recurrence=True)
    cfg = json.loads(json.dumps(dense.get_config()))
    assert cfg["dense_recurrence"] is True
    back = Wiring.from_config(cfg)
    assert back.dense_recurrence
    for k in ("inter", "command", "motor", "recurrent"):
        assert torch.equal(getattr(dense.masks, k), getattr(back.masks, k))
    # a sparse wiring's config is what it was before the option existed
    assert "dense_recurrence" not in Wiring(4, 10, 1, seed=2).get_config()


def test_dense_recurrence_must_be_a_boolean():
    with pytest.raises(ValueError, match="dense_recurrence must be True or False, got 'yes'"):
        Wiring(4, 10, 1, dense_recurrence="yes")
