"""Loading a state dict into an NCP network keeps ``wiring`` and ``get_config()`` true to the
masks it holds: the saved wiring is adopted (its seed travels in the state dict), and masks
that the seed does not draw are refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from velora_ens.models import LiquidNCPNetwork, NCPNetwork

KINDS = {
    "cfc": lambda **kw: LiquidNCPNetwork(4, 10, 2, **kw),
    "cfc-sign": lambda **kw: LiquidNCPNetwork(4, 10, 2, sign_constrained=True, **kw),
    "ltc": lambda **kw: LiquidNCPNetwork(4, 10, 2, cell="ltc", **kw),
    "ncp": lambda **kw: NCPNetwork(4, 10, 2, **kw),
}
MASKS = ("inter", "command", "motor", "recurrent")


def output(net, x):
    y = net(x)
    return y[0] if isinstance(y, tuple) else y


def same_wiring(a, b):
    return all(torch.equal(getattr(a.masks, k), getattr(b.masks, k)) for k in MASKS)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seeds", [(1, 2), (None, None)], ids=["seeded", "drawn"])
def test_load_state_dict_adopts_the_saved_wiring(kind, seeds):
    torch.manual_seed(0)
    saved = KINDS[kind](seed=seeds[0])
    fresh = KINDS[kind](seed=seeds[1])
    assert saved.wiring.seed != fresh.wiring.seed
    assert not same_wiring(saved.wiring, fresh.wiring)
    fresh.load_state_dict(saved.state_dict())
    assert fresh.wiring.seed == saved.wiring.seed
    assert fresh.get_config() == saved.get_config()
    assert same_wiring(fresh.wiring, saved.wiring)
    assert fresh.wiring.edges() == saved.wiring.edges()  # polarities included
    x = torch.randn(3, 5, 4)
    torch.testing.assert_close(output(fresh, x), output(saved, x))
    # the configuration now rebuilds what was loaded, without the state dict
    rebuilt = type(saved)(**fresh.get_config())
    assert same_wiring(rebuilt.wiring, saved.wiring)
    assert all(torch.equal(a, b) for (_, a), (_, b) in
               zip(rebuilt.named_buffers(), saved.named_buffers(), strict=True))


def test_adoption_works_inside_a_model_and_keeps_the_global_random_state():
    class Actor(nn.Module):
        def __init__(self, seed):
            super().__init__()
            self.encoder = nn.Linear(3, 4)
            self.net = LiquidNCPNetwork(4, 10, 2, seed=seed)

    saved, fresh = Actor(5), Actor(6)
    state = torch.get_rng_state()
    fresh.load_state_dict(saved.state_dict())
    assert torch.equal(torch.get_rng_state(), state)
    assert fresh.net.get_config() == saved.net.get_config()


def test_adoption_works_for_a_subclass_with_its_own_arguments_and_buffers():
    class Policy(LiquidNCPNetwork):
        def __init__(self, seed, scale):
            super().__init__(4, 10, 2, seed=seed)
            self.register_buffer("scale", torch.tensor(float(scale)))  # not a wiring buffer

    saved, fresh = Policy(1, 2.0), Policy(2, 3.0)
    fresh.load_state_dict(saved.state_dict())
    assert fresh.get_config() == saved.get_config() and float(fresh.scale) == 2.0


@pytest.mark.parametrize("kind", KINDS)
def test_masks_the_seed_does_not_draw_are_refused(kind):
    saved = KINDS[kind](seed=3, sparsity_level=0.2)
    fresh = KINDS[kind](seed=3, sparsity_level=0.7)  # same seed, other masks
    before = [t.clone() for t in fresh.state_dict().values()]
    with pytest.raises(ValueError, match=r"wiring masks \[.*'inter.mask'.*\] are not the ones "
                                         r"seed 3 draws with this network's arguments"):
        fresh.load_state_dict(saved.state_dict())
    # nothing was loaded and the wiring is unchanged
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.state_dict().values(),
                                                 strict=True))
    assert fresh.wiring.sparsity_level == 0.7
    # a seed that does not match the masks next to it
    state = KINDS[kind](seed=3).state_dict()
    state["wiring_seed"] = torch.tensor(4)
    with pytest.raises(ValueError, match="not the ones seed 4 draws"):
        KINDS[kind](seed=9).load_state_dict(state)
    state["wiring_seed"] = torch.tensor(4.0)
    with pytest.raises(ValueError, match="'wiring_seed' must be a one-element integer tensor"):
        KINDS[kind](seed=9).load_state_dict(state)


@pytest.mark.parametrize("kind", KINDS)
def test_a_state_dict_saved_before_the_seed_was_stored(kind):
    old = KINDS[kind](seed=1).state_dict()
    del old["wiring_seed"]
    same = KINDS[kind](seed=1)
    same.load_state_dict(old)  # strict: the missing seed is this network's own
    assert same.wiring.seed == 1
    other = KINDS[kind](seed=2)
    with pytest.raises(ValueError, match="has no 'wiring_seed'.*differ from this network's "
                                         r"wiring \(seed=2\)"):
        other.load_state_dict(old)
    assert other.wiring.seed == 2


def test_another_architecture_is_left_to_load_state_dicts_own_error():
    with pytest.raises(RuntimeError, match="size mismatch"):
        LiquidNCPNetwork(4, 12, 2, seed=0).load_state_dict(
            LiquidNCPNetwork(4, 10, 2, seed=0).state_dict())


def test_the_seed_buffer_stays_int64_under_dtype_casts_and_is_bounded():
    net = LiquidNCPNetwork(4, 10, 2, seed=7).double()
    assert net.wiring_seed.dtype == torch.int64 and int(net.wiring_seed) == 7
    with pytest.raises(ValueError, match="seed must be below 2\\*\\*63"):
        LiquidNCPNetwork(4, 10, 2, seed=2**63)


def test_a_seedless_agent_loads_with_the_wiring_it_was_saved_with(tmp_path):
    from agents import NeuroFlow

    agent = NeuroFlow("Pendulum-v1", seed=None, learning_starts=16, batch_size=16, seq_len=4,
                      burn_in=2, actor_neurons=8, critic_hidden=(16,), critic_encoder="own")
    path = agent.save(tmp_path / "agent")
    loaded = NeuroFlow.load(path)  # builds new networks, drawing other wiring seeds
    for name in ("actor", "critic_encoder"):
        a, b = getattr(agent, name), getattr(loaded, name)
        a, b = (a.net, b.net) if name == "actor" else (a, b)
        assert b.get_config() == a.get_config()
        assert same_wiring(b.wiring, a.wiring)


def test_dense_recurrence_reaches_the_cells_and_survives_a_state_dict_round_trip():
    for cell in ("cfc", "ltc"):
        net = LiquidNCPNetwork(3, 12, 2, cell=cell, seed=4, dense_recurrence=True)
        assert bool(net.command.recurrent_mask.bool().all())  # every pair, self included
        sparse = LiquidNCPNetwork(3, 12, 2, cell=cell, seed=4)
        assert not bool(sparse.command.recurrent_mask.bool().all())
        config = net.get_config()
        assert config["dense_recurrence"] is True
        assert "dense_recurrence" not in sparse.get_config()
        fresh = LiquidNCPNetwork(**config)
        fresh.load_state_dict(net.state_dict())
        x = torch.randn(2, 5, 3)
        assert torch.equal(fresh(x)[0], net(x)[0])
        # the masks are the wiring's: a sparse network refuses the dense weights
        with pytest.raises(ValueError, match="wiring masks"):
            sparse.load_state_dict(net.state_dict())
