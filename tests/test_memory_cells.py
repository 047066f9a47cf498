"""Mixed memory (an LSTM cell beside the liquid cell) and the gated baselines (GRU, LSTM):
each against an independent computation with torch's own cells, resets, state-dict round
trips and export."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from velora_ens.models import (
    GatedNetwork,
    InferenceGraph,
    LiquidNCPNetwork,
    LTCCell,
    MixedMemoryCell,
    NCPLiquidCell,
    recurrent_network,
)


def mixed_reference(cell: MixedMemoryCell, x: torch.Tensor, state: torch.Tensor,
                    starts: torch.Tensor | None = None) -> torch.Tensor:
    """torch's LSTMCell, then the liquid cell's own checked one-step forward, per step."""
    H, out = cell.liquid_size, []
    for t in range(x.shape[1]):
        if starts is not None:
            state = state * (1 - starts[:, t:t + 1].float())
        h, c = state.split(H, dim=-1)
        h_lstm, c = cell.lstm(x[:, t], (h, c))
        state = torch.cat([cell.cell(x[:, t], h_lstm)[1], c], dim=-1)
        out.append(state)
    return torch.stack(out, 1)


@pytest.mark.parametrize("make", [lambda: NCPLiquidCell(5, 6, mode="default"),
                                  lambda: NCPLiquidCell(5, 6, mode="no_gate"),
                                  lambda: LTCCell(5, 6)], ids=["cfc", "no_gate", "ltc"])
def test_mixed_memory_matches_torch_lstm_cell_then_the_liquid_step(make):
    torch.manual_seed(0)
    cell = MixedMemoryCell(make()).double()
    x = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, 12, dtype=torch.float64)
    starts = torch.zeros(3, 7)
    starts[1, 3] = 1
    states, last = cell(x, h0, episode_start=starts)
    expected = mixed_reference(cell, x, h0, starts)
    torch.testing.assert_close(states, expected)
    torch.testing.assert_close(last, expected[:, -1])
    # gradients of the fused-per-step maths against the reference's
    weights = torch.randn_like(expected)
    grads = torch.autograd.grad((states * weights).sum(), [x, *cell.parameters()])
    ref = torch.autograd.grad((expected * weights).sum(), [x, *cell.parameters()])
    for a, b in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, b)


def test_mixed_memory_forget_bias_and_a_reset_equal_a_fresh_start():
    torch.manual_seed(1)
    cell = MixedMemoryCell(NCPLiquidCell(3, 4), forget_bias=2.0)
    H = 4
    total = cell.lstm.bias_ih[H:2 * H] + cell.lstm.bias_hh[H:2 * H]
    assert torch.equal(total, torch.full((H,), 2.0))
    x = torch.randn(2, 6, 3)
    starts = torch.zeros(2, 6)
    starts[:, 2] = 1
    states, _ = cell(x, torch.randn(2, 8), episode_start=starts)
    fresh, _ = cell(x[:, 2:])
    torch.testing.assert_close(states[:, 2:], fresh)
    with pytest.raises(ValueError, match="forget_bias must be a finite number"):
        MixedMemoryCell(NCPLiquidCell(3, 4), forget_bias=float("inf"))


@pytest.mark.parametrize("kind", ["cfc", "ltc"])
def test_mixed_memory_network_round_trips_its_state_dict_and_config(kind):
    net = LiquidNCPNetwork(4, 16, 3, cell=kind, mixed_memory=True, seed=3)
    assert net.hidden_size == 2 * net.wiring.counts.command
    assert net.get_config()["mixed_memory"] is True
    assert "mixed_memory" not in LiquidNCPNetwork(4, 16, 3, seed=3).get_config()
    x = torch.randn(2, 5, 4)
    y, h = net(x)
    other = LiquidNCPNetwork(4, 16, 3, cell=kind, mixed_memory=True, seed=8)
    other.load_state_dict(net.state_dict())  # adopts the saved wiring
    assert other.wiring.seed == 3
    y2, h2 = other(x)
    assert torch.equal(y, y2) and torch.equal(h, h2)
    rebuilt = LiquidNCPNetwork(**net.get_config())
    rebuilt.load_state_dict(net.state_dict())
    assert torch.equal(rebuilt(x)[0], y)
    with pytest.raises(RuntimeError, match="lstm"):  # a network without the LSTM refuses
        LiquidNCPNetwork(4, 16, 3, cell=kind, seed=3).load_state_dict(net.state_dict())


def test_mixed_memory_network_steps_as_it_runs_sequences_and_exports():
    torch.manual_seed(2)
    net = LiquidNCPNetwork(4, 16, 3, mixed_memory=True, seed=0)
    x = torch.randn(2, 5, 4)
    y, states = net(x, return_states=True)
    h = None
    for t in range(5):  # one step at a time, with and without gradients
        with torch.set_grad_enabled(t % 2 == 0):
            y_t, h = net(x[:, t], h)
        torch.testing.assert_close(y_t, y[:, t])
        torch.testing.assert_close(h, states[:, t])
    # the motor layer reads the liquid half of the state only
    torch.testing.assert_close(y, net.motor(states[..., :net.wiring.counts.command]))
    torch.testing.assert_close(net.final_state(x), states[:, -1])
    graph = InferenceGraph(net, steps=5)
    y_graph, h_graph = graph(x, net.initial_state(2))
    torch.testing.assert_close(y_graph, y)
    torch.testing.assert_close(h_graph, states[:, -1])


def gated_reference(net: GatedNetwork, x: torch.Tensor, dt: torch.Tensor | None
                    ) -> torch.Tensor:
    """The same weights in torch's whole-sequence nn.GRU / nn.LSTM, time appended."""
    kind = nn.GRU if net.cell_type == "gru" else nn.LSTM
    rnn = kind(net.in_features + 1, net.n_neurons, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(rnn, f"{name}_l0").copy_(getattr(net.cell, name))
    time = torch.ones(*x.shape[:2], 1) if dt is None else dt
    return net.motor(rnn(torch.cat([x, time], dim=-1))[0])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_network_matches_torch_whole_sequence_rnn_with_the_time_appended(cell):
    net = GatedNetwork(3, 8, 2, cell=cell, seed=0)
    x = torch.randn(4, 6, 3)
    dt = torch.rand(4, 6, 1)
    torch.testing.assert_close(net(x)[0], gated_reference(net, x, None))
    torch.testing.assert_close(net(x, dt=dt)[0], gated_reference(net, x, dt))
    assert not torch.allclose(net(x, dt=dt)[0], net(x)[0])  # the time reaches the cell


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_network_resets_steps_and_round_trips(cell):
    net = GatedNetwork(3, 8, 2, cell=cell, seed=5)
    assert net.hidden_size == (16 if cell == "lstm" else 8)
    x = torch.randn(2, 6, 3)
    starts = torch.zeros(2, 6)
    starts[0, 3] = 1
    y, states = net(x, torch.randn(2, net.hidden_size), episode_start=starts,
                    return_states=True)
    fresh, _ = net(x[:1, 3:])
    torch.testing.assert_close(y[:1, 3:], fresh)  # the state after a reset is a fresh one
    h = None
    for t in range(6):
        y_t, h = net(x[:, t], h)
    torch.testing.assert_close(h, net(x)[1])
    torch.testing.assert_close(net.final_state(x), net(x)[1])
    again = GatedNetwork(**net.get_config())
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                 net.state_dict().values(), strict=True))
    other = GatedNetwork(3, 8, 2, cell=cell, seed=6)
    other.load_state_dict(net.state_dict())
    assert torch.equal(other(x)[0], net(x)[0])


def test_gated_network_refuses_bad_input_with_the_liquid_networks_messages():
    net = GatedNetwork(3, 8, 2, cell="lstm")
    with pytest.raises(ValueError, match=r"GatedNetwork expected 3 input features"):
        net(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"hidden state of shape \(B, H\) = \(2, 16\)"):
        net(torch.randn(2, 3), torch.zeros(2, 8))
    with pytest.raises(ValueError, match="cell must be one of"):
        GatedNetwork(3, 8, 2, cell="rnn")


def test_recurrent_network_builds_each_cell_and_refuses_liquid_options_for_gated_ones():
    assert isinstance(recurrent_network(3, 8, 2, cell="ltc", seed=0), LiquidNCPNetwork)
    assert isinstance(recurrent_network(3, 8, 2, cell="gru", seed=0), GatedNetwork)
    assert recurrent_network(3, 8, 2, cell="cfc", seed=0, mixed_memory=True).mixed_memory
    with pytest.raises(ValueError, match=r"\['dense_recurrence'\] apply to the liquid cells"):
        recurrent_network(3, 8, 2, cell="lstm", dense_recurrence=True)
    # a self-synapse start of 0.0 is a value asked for (0.0 == False once let it through)
    with pytest.raises(ValueError, match=r"\['self_synapse_init'\] apply to the liquid"):
        recurrent_network(3, 8, 2, cell="gru", self_synapse_init=0.0)
    assert isinstance(recurrent_network(3, 8, 2, cell="gru", dense_recurrence=False,
                                        self_synapse_init=None), GatedNetwork)
    with pytest.raises(ValueError, match="cell must be one of .* got 'rnn'"):
        recurrent_network(3, 8, 2, cell="rnn")


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("algo", ["ppo", "neuroflow"])
def test_gated_cells_in_both_agents_reset_at_episode_starts_and_take_the_elapsed_time(
        algo, cell):
    import numpy as np

    from agents import LiquidPPO, NeuroFlow

    kw = {"elapsed_time_key": "elapsed_time", "elapsed_time_unit": 0.05, "n_envs": 1,
          "normalize_observations": False}
    agent = (LiquidPPO("PendulumNoVelIrregular-v1", cell=cell, seed=0, n_steps=32,
                       batch_size=32, seq_len=8, **kw)
             if algo == "ppo" else
             NeuroFlow("PendulumNoVelIrregular-v1", cell=cell, seed=0, learning_starts=16,
                       batch_size=16, seq_len=4, burn_in=0, **kw))
    agent.learn(48)
    net = agent.actor.net
    assert isinstance(net, GatedNetwork) and net.cell_type == cell
    obs = np.array([[0.3, -0.9, 0.2], [0.8, 0.1, -0.5]], np.float32)
    _, state = agent.predict(obs, deterministic=True)
    _, state = agent.predict(obs, state, deterministic=True)
    fresh = agent.predict(obs, deterministic=True)
    reset = agent.predict(obs, state, episode_start=np.array([True, True]),
                          deterministic=True)
    np.testing.assert_array_equal(reset[0], fresh[0])
    np.testing.assert_array_equal(reset[1], fresh[1])
    # the time, divided by the agent's unit, is the cell's last input
    _, timed = agent.predict(obs, deterministic=True, elapsed_time=np.array([0.1, 0.1]))
    with torch.no_grad():
        x = torch.as_tensor(agent.policy.encoder.encode(obs, True), dtype=torch.float32)
        expected = net.final_state(x, dt=torch.full((2, 1), 2.0))
    np.testing.assert_allclose(timed, expected.numpy(), rtol=1e-6, atol=1e-6)
    assert not np.allclose(timed, fresh[1])


def test_self_synapse_init_sets_only_the_heads_self_synapses():
    plain = LiquidNCPNetwork(4, 20, 2, seed=4, dense_recurrence=True)
    torch.manual_seed(0)
    a = LiquidNCPNetwork(4, 20, 2, seed=4, dense_recurrence=True, self_synapse_init=0.5)
    torch.manual_seed(0)
    b = LiquidNCPNetwork(4, 20, 2, seed=4, dense_recurrence=True)
    cell, ref = a.liquid_cell, b.liquid_cell
    H = cell.n_hidden
    w, w_ref = cell.recurrent_weight.detach(), ref.recurrent_weight.detach()
    changed = torch.zeros_like(w, dtype=torch.bool)
    for head in (0, 1):  # ff1, ff2: the diagonal of their blocks
        changed[head * H:(head + 1) * H].diagonal().fill_(True)
    assert torch.equal(w[changed], torch.full((2 * H,), 0.5))
    assert torch.equal(w[~changed], w_ref[~changed])  # the rest is the same draw
    assert a.get_config()["self_synapse_init"] == 0.5
    assert "self_synapse_init" not in plain.get_config()
    rebuilt = LiquidNCPNetwork(**a.get_config())
    rebuilt.load_state_dict(a.state_dict())
    x = torch.randn(3, 5, 4)
    assert torch.equal(rebuilt(x)[0], a(x)[0])
    # the fused scan's gradient against the plain autograd loop
    x = torch.randn(3, 7, 4)
    weights = torch.randn(3, 7, 2)
    fused = torch.autograd.grad((a(x)[0] * weights).sum(), list(a.parameters()))
    cell.fused = False
    loop = torch.autograd.grad((a(x)[0] * weights).sum(), list(a.parameters()))
    for g, r in zip(fused, loop, strict=True):
        torch.testing.assert_close(g, r)


def test_self_synapse_init_refuses_the_ltc_cell_and_bad_values():
    with pytest.raises(ValueError, match="self_synapse_init applies to the CfC cell"):
        LiquidNCPNetwork(4, 20, 2, cell="ltc", self_synapse_init=0.5)
    with pytest.raises(ValueError, match="self_synapse_init must be a finite number"):
        LiquidNCPNetwork(4, 20, 2, self_synapse_init=float("nan"))


class SymbolTask(gym.Env):
    """Four symbols in (one-hot), four actions out: the shapes of the memory probe, so that
    LiquidPPO builds the actor network it builds for such a task."""

    observation_space = gym.spaces.Box(0.0, 1.0, (4,))
    action_space = gym.spaces.Discrete(4)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(4, np.float32), {}

    def step(self, action):
        return np.zeros(4, np.float32), 0.0, True, False, {}


def delay_accuracy(net: nn.Module, delay: int, steps: int, seed: int = 0) -> float:
    """Train ``net`` (inputs ``(B, T, 4)`` -> logits ``(B, T, 4)``) with Adam to output the
    symbol shown ``delay`` steps ago (batch 32, length 32, learning rate 1e-2); its
    held-out accuracy once it reaches 0.99 or after ``steps`` steps (chance: 0.25)."""
    torch.manual_seed(seed)
    gen, held_out = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(99)

    def batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        symbols = torch.randint(0, 4, (n, 32), generator=generator)
        return nn.functional.one_hot(symbols, 4).float(), symbols[:, :-delay]

    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    accuracy = 0.0
    for step in range(1, steps + 1):
        x, y = batch(32, gen)
        logits = net(x)[0][:, delay:]
        loss = nn.functional.cross_entropy(logits.reshape(-1, 4), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            x, y = batch(256, held_out)
            with torch.no_grad():
                accuracy = (net(x)[0][:, delay:].argmax(-1) == y).float().mean().item()
            if accuracy >= 0.99:
                break
    return accuracy


def test_the_agents_default_liquid_network_remembers_eight_steps_back():
    """The memory probe at K=8 on the actor network LiquidPPO builds by default (the
    network the memory benchmark's ``liquid-agent`` row measures): solved within 1,000
    steps, where the sparse NCP recurrence of the old defaults stays far from it."""
    from agents import LiquidPPO

    default = LiquidPPO("MlpPolicy", SymbolTask(), seed=0).actor.net
    assert isinstance(default, LiquidNCPNetwork)
    assert delay_accuracy(default, 8, 1000) >= 0.99
    old = LiquidPPO("MlpPolicy", SymbolTask(), seed=0, actor_dense_recurrence=False,
                    actor_neurons=32).actor.net
    assert delay_accuracy(old, 8, 1000) < 0.9


def test_a_cfc_mode_refuses_the_ltc_cell():
    """The LTC cell has no modes: a CfC mode with it is refused, not silently ignored."""
    with pytest.raises(ValueError, match="mode applies to the CfC cell .* got 'carry'"):
        LiquidNCPNetwork(4, 20, 2, cell="ltc", mode="carry")
    net = LiquidNCPNetwork(4, 20, 2, cell="ltc")  # the default mode stays accepted
    assert net.get_config()["cell"] == "ltc"
