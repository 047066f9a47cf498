"""Every standard action space in both agents: the distributions against
``torch.distributions``, the factorised SAC-Discrete against the joint quantities it
stands for (enumerated over every joint action), a one-step bandit each agent learns,
exact resume, ``predict``/``evaluate_policy``, the bad-space messages, and nested
observation spaces."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.evaluation import evaluate_policy
from torch import distributions as D

from agents import LiquidPolicy, LiquidPPO, NeuroFlow, load_agent
from agents.common.actor import LiquidActor
from agents.common.distributions import Bernoullis, Categoricals, discrete_actions
from agents.driver.spaces import ActionAdapter, ObservationEncoder
from agents.neuroflow.losses import actor_loss, soft_greedy_values

TARGETS = {"MultiDiscrete": np.array([3, 1]), "MultiBinary": np.array([1, 0, 1]),
           "Discrete": np.array(2)}


class Bandit(gym.Env):
    """One step per episode; the reward is the number of action entries equal to the
    target (``TARGETS``), so each entry can be learned on its own."""

    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, kind: str = "MultiDiscrete") -> None:
        self.action_space = {
            "MultiDiscrete": gym.spaces.MultiDiscrete([3, 4], start=[1, 0]),
            "MultiBinary": gym.spaces.MultiBinary(3),
            "Discrete": gym.spaces.Discrete(3, start=1)}[kind]
        self.target = TARGETS[kind]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action, self.action_space.dtype)), action
        reward = float(np.sum(np.asarray(action) == self.target))
        return np.zeros(1, np.float32), reward, True, False, {}


for _kind in TARGETS:
    if f"VeloraBandit{_kind}-v0" not in gym.registry:
        gym.register(f"VeloraBandit{_kind}-v0", entry_point=Bandit, kwargs={"kind": _kind})


# ------------------------------------------------------------------ distributions
@pytest.mark.parametrize("nvec", [(5,), (3, 3), (3, 3, 2), (2, 4, 4, 3)])
def test_categoricals_match_torch_distributions(nvec):
    torch.manual_seed(0)
    dist = Categoricals(nvec, single=len(nvec) == 1)
    logits = torch.randn(6, sum(nvec))
    parts = [D.Categorical(logits=p) for p in logits.split(list(nvec), -1)]
    actions = torch.stack([p.sample() for p in parts], -1)
    given = actions[:, 0] if dist.single else actions
    log_prob, entropy = dist.log_prob_entropy(logits, given)
    torch.testing.assert_close(log_prob, sum(p.log_prob(actions[:, d])
                                             for d, p in enumerate(parts)))
    torch.testing.assert_close(entropy, sum(p.entropy() for p in parts))
    torch.testing.assert_close(dist.entropy(logits), entropy)
    mode = torch.stack([p.probs.argmax(-1) for p in parts], -1)
    assert torch.equal(dist.mode(logits), mode[:, 0] if dist.single else mode)
    assert dist.sample(logits).shape == given.shape
    assert dist.max_entropy == pytest.approx(sum(np.log(nvec)))


def test_categorical_samples_follow_the_probabilities():
    dist = Categoricals((3, 2))
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0, 0.0]]).expand(20_000, -1)
    torch.manual_seed(1)
    draws = dist.sample(logits)
    for d, (lo, hi) in enumerate(((0, 3), (3, 5))):
        freq = torch.bincount(draws[:, d], minlength=hi - lo).float() / len(draws)
        torch.testing.assert_close(freq, torch.softmax(logits[0, lo:hi], -1), atol=0.015,
                                   rtol=0)


def test_bernoullis_match_torch_distributions():
    torch.manual_seed(0)
    dist = Bernoullis(4)
    logits = torch.randn(7, 4)
    ref = D.Bernoulli(logits=logits)
    actions = ref.sample()
    log_prob, entropy = dist.log_prob_entropy(logits, actions)
    torch.testing.assert_close(log_prob, ref.log_prob(actions).sum(-1))
    torch.testing.assert_close(entropy, ref.entropy().sum(-1))
    assert torch.equal(dist.mode(logits), (ref.probs > 0.5).long())
    # its value tables are the two-value categoricals of the same bits
    (table,) = dist.log_prob_tables(logits)
    torch.testing.assert_close(table[..., 1], torch.log(ref.probs))
    torch.testing.assert_close(table[..., 0], torch.log1p(-ref.probs))
    torch.manual_seed(2)
    freq = dist.sample(logits[:1].expand(20_000, -1)).float().mean(0)
    torch.testing.assert_close(freq, ref.probs[0], atol=0.015, rtol=0)


@pytest.mark.parametrize("kind", list(TARGETS))
def test_the_actor_acts_in_each_space_and_scores_its_own_actions(kind):
    space = Bandit(kind).action_space
    actor = LiquidActor(3, space, 16, seed=0, distribution="gaussian")
    dist = discrete_actions(space)
    assert actor.action_dim == dist.n_outputs
    out, _ = actor(torch.randn(5, 3))
    action, log_prob = actor.sample(out)
    assert action.shape == (5, *dist.action_shape)
    torch.testing.assert_close(log_prob, actor.log_prob_entropy(out, action)[0])
    adapter = ActionAdapter(space)
    for row in adapter.to_env(actor.act(out, True).numpy()):
        assert space.contains(np.asarray(row, space.dtype))
    np.testing.assert_array_equal(adapter.from_env(adapter.to_env(action.numpy())),
                                  action.numpy())


# ------------------------------------------------------------------ factorised SAC
def _joint(nvec, logits, q_joint):
    """Policy probabilities of every joint action, and the joint table's values."""
    tables = [torch.log_softmax(p, -1) for p in logits.split(list(nvec), -1)]
    combos = list(itertools.product(*(range(n) for n in nvec)))
    log_pi = torch.stack([sum(tables[d][..., a] for d, a in enumerate(c)) for c in combos], -1)
    return log_pi, torch.stack([q_joint[(..., *c)] for c in combos], -1)


def _marginals(nvec, logits, q_joint):
    """``Q_d(a_d) = E_{a_-d ~ pi_-d} Q(a)``, concatenated over the entries."""
    probs = [torch.softmax(p, -1) for p in logits.split(list(nvec), -1)]
    out = []
    for d in range(len(nvec)):
        q = q_joint
        for e in reversed(range(len(nvec))):  # average out the other entries, last first
            if e != d:
                q = (q * probs[e].reshape(probs[e].shape[:1] + (1,) * e + (-1,)
                                          + (1,) * (q.dim() - 2 - e))).sum(1 + e)
        out.append(q)
    return torch.cat(out, -1)


def test_factorised_targets_and_policy_loss_are_the_joint_ones():
    """With each entry's values the marginals of a joint ``Q`` under the policy, the
    target's ``V(s')`` is the joint ``E_pi Q + alpha H(pi)`` and the policy loss has the
    gradient of the joint ``E_pi[alpha log pi - Q]``, both enumerated over every joint
    action."""
    torch.manual_seed(0)
    nvec, batch, alpha = (3, 2, 4), 5, torch.tensor(0.3)
    dist = Categoricals(nvec)
    logits = torch.randn(batch, sum(nvec), requires_grad=True)
    q_joint = torch.randn(batch, *nvec)
    q_marg = _marginals(nvec, logits.detach(), q_joint)

    log_pi, q_all = _joint(nvec, logits, q_joint)
    joint_value = (log_pi.exp() * (q_all - alpha * log_pi)).sum(-1)

    class Actor:  # what the losses read of an actor
        discrete, choices = True, dist

    # V(s') as soft_td_targets computes it (its discrete branch, written out)
    value = sum((lp.exp() * (q / dist.n_entries - alpha * lp)).sum((-2, -1))
                for q, lp in zip(dist.split(q_marg), dist.log_prob_tables(logits),
                                 strict=True))
    torch.testing.assert_close(value, joint_value)

    class Critics:  # one member whose values are the marginals
        def __call__(self, x):
            return q_marg.unsqueeze(0)

        def reduce(self, q, how):
            return q[0]

    loss, entropy = actor_loss(Actor(), Critics(), logits, torch.zeros(batch, 1), alpha)
    torch.testing.assert_close(entropy, -(log_pi.exp() * log_pi).sum(-1).detach())
    joint_loss = (log_pi.exp() * (alpha * log_pi - q_all)).sum(-1).mean()
    grad, = torch.autograd.grad(loss, logits)
    joint_grad, = torch.autograd.grad(joint_loss, logits)
    torch.testing.assert_close(grad, joint_grad)


def test_soft_greedy_values_are_the_value_of_acting_softmax_per_entry():
    torch.manual_seed(0)
    alpha = torch.tensor(0.5)
    for nvec in ((4,), (3, 3, 2)):
        dist = Categoricals(nvec)
        q = torch.randn(6, sum(nvec))
        expected = 0
        for part in q.split(list(nvec), -1):
            p = torch.softmax(part / alpha, -1)
            expected = expected + (p * part).sum(-1) / len(nvec) \
                - alpha * (p * torch.log(p)).sum(-1)
        torch.testing.assert_close(soft_greedy_values(dist, q, alpha), expected)


# ------------------------------------------------------------------ agents
def ppo(env, **kw):
    return LiquidPPO(env, **{**dict(seed=0, n_steps=64, batch_size=64, n_epochs=4,
                                    learning_rate=3e-3, actor_neurons=8, critic_neurons=8),
                             **kw})


def neuroflow(env, **kw):
    return NeuroFlow(env, **{**dict(seed=0, learning_starts=64, batch_size=32, seq_len=1,
                                    learning_rate=2e-3, actor_neurons=8,
                                    critic_hidden=(32, 32)), **kw})


@pytest.mark.parametrize("kind", ["MultiDiscrete", "MultiBinary"])
@pytest.mark.parametrize("make, steps", [(ppo, 1600), (neuroflow, 600)])
def test_each_agent_learns_a_one_step_bandit(kind, make, steps):
    agent = make(f"VeloraBandit{kind}-v0")
    before, _ = evaluate_policy(agent, Bandit(kind), 20, deterministic=True, warn=False)
    agent.learn(steps)
    mean, _ = evaluate_policy(agent, Bandit(kind), 20, deterministic=True, warn=False)
    assert mean == TARGETS[kind].size > before
    action, _ = agent.predict(np.zeros(1, np.float32), deterministic=True)
    np.testing.assert_array_equal(action, TARGETS[kind])
    batch, _ = agent.predict(np.zeros((3, 1), np.float32), deterministic=True)
    assert batch.shape == (3, *TARGETS[kind].shape)


@pytest.mark.parametrize("kind", list(TARGETS))
@pytest.mark.parametrize("make, steps, extra", [
    (ppo, 40, {"n_steps": 16, "batch_size": 16}),
    (neuroflow, 70, {"exploration": "thompson", "critic_head": "liquid"}),
    (neuroflow, 70, {"exploration": "ucb", "n_critics": 3, "target_q": "member"}),
    (neuroflow, 70, {"exploration": "disagreement", "critic_head": "batch"}),
])
def test_resume_is_exact_in_each_space(tmp_path, kind, make, steps, extra):
    env_id = f"VeloraBandit{kind}-v0"
    uninterrupted = make(env_id, **extra)
    uninterrupted.learn(steps)
    uninterrupted.learn(steps)
    first = make(env_id, **extra)
    first.learn(steps)
    path = first.save(tmp_path / "ckpt", include_buffer=True)
    torch.manual_seed(7)
    resumed = load_agent(path)
    resumed.learn(steps)
    assert resumed.last_losses == uninterrupted.last_losses
    assert resumed.num_timesteps == uninterrupted.num_timesteps
    for a, b in zip(uninterrupted.actor.parameters(), resumed.actor.parameters(), strict=True):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(resumed.driver.action_log.array(),
                                  uninterrupted.driver.action_log.array())


@pytest.mark.parametrize("kind", ["MultiDiscrete", "MultiBinary"])
@pytest.mark.parametrize("make", [ppo, neuroflow])
def test_saved_agents_and_policy_files_act_alike_in_each_space(tmp_path, kind, make):
    agent = make(f"VeloraBandit{kind}-v0", **({"n_steps": 16, "batch_size": 16}
                                              if make is ppo else {}))
    agent.learn(80)
    obs = np.array([[0.0], [0.5], [-0.5]], np.float32)
    expected, state = agent.predict(obs, deterministic=True)
    loaded = load_agent(agent.save(tmp_path / "agent"))
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], expected)
    policy = LiquidPolicy.load(agent.policy.save(tmp_path / "policy"))
    assert policy.action_space == agent.action_space
    action, policy_state = policy.predict(obs, deterministic=True)
    np.testing.assert_array_equal(action, expected)
    np.testing.assert_array_equal(policy_state, state)


# ------------------------------------------------------------------ bad spaces
@pytest.mark.parametrize("space, fragment", [
    (gym.spaces.Box(-np.inf, np.inf, (1,)), r"finite bounds.*RescaleAction"),
    (gym.spaces.Box(np.float32([-1, 0]), np.float32([1, np.inf])), "finite bounds"),
    (gym.spaces.MultiDiscrete([[2, 3], [2, 2]]), r"MultiDiscrete action space must be 1-D"),
    (gym.spaces.MultiBinary([2, 2]), r"MultiBinary action space must be 1-D"),
    (gym.spaces.Discrete(1), "at least 2 actions"),
    (gym.spaces.Text(4), r"Box, Discrete, MultiDiscrete and MultiBinary.*got Text"),
])
@pytest.mark.parametrize("make", [ppo, neuroflow])
def test_bad_action_spaces_get_one_clear_message(space, fragment, make):
    env = Bandit()
    env.action_space = space
    with pytest.raises(ValueError, match=fragment):
        make(env)


# ------------------------------------------------------------------ nested observations
def test_nested_observations_are_encoded_part_by_part_in_the_space_order():
    """A worked example of the documented encoding (agents.driver.spaces): Dict keys in
    sorted order, Tuple parts in order, each part encoded on its own, recursively."""
    space = gym.spaces.Dict({
        "z": gym.spaces.Tuple((gym.spaces.Discrete(3, start=1),
                               gym.spaces.Dict({"bits": gym.spaces.MultiBinary(2),
                                                "pos": gym.spaces.Box(-1, 1, (1,))}))),
        "a": gym.spaces.MultiDiscrete([2, 3])})
    obs = {"a": np.array([1, 0]),
           "z": (3, {"pos": np.array([0.5], np.float32), "bits": np.array([1, 0])})}
    encoder = ObservationEncoder(space)
    expected = [0, 1, 1, 0, 0,   # a: one-hot of 1 in 2, of 0 in 3
                0, 0, 1,         # z[0]: 3 - start 1 = index 2 of 3
                1, 0,            # z[1]["bits"]
                0.5]             # z[1]["pos"]
    assert encoder.dim == len(expected)
    np.testing.assert_array_equal(encoder.encode(obs, batched=False), expected)
    with pytest.raises(ValueError, match=r"outside Discrete\(3, start=1\)"):
        encoder.encode({**obs, "z": (0, obs["z"][1])}, batched=False)


class Nested(Bandit):
    """The bandit with nested observations, drawn from the env's own seeded generator."""

    def __init__(self) -> None:
        super().__init__()
        self.observation_space = nested_space()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.observation_space.seed(seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        _, reward, *rest = super().step(action)
        return self.observation_space.sample(), reward, *rest


def nested_space() -> gym.Space:
    return gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Dict(
        {"v": gym.spaces.Box(-1, 1, (2,)), "m": gym.spaces.MultiDiscrete([2, 2])})))


if "VeloraNested-v0" not in gym.registry:
    gym.register("VeloraNested-v0", entry_point=Nested)


@pytest.mark.parametrize("make", [ppo, neuroflow])
def test_agents_train_save_and_resume_exactly_on_nested_observations(tmp_path, make):
    extra = {"n_steps": 16, "batch_size": 16} if make is ppo else {}
    uninterrupted = make("VeloraNested-v0", **extra)
    uninterrupted.learn(50)
    uninterrupted.learn(50)
    first = make("VeloraNested-v0", **extra)
    first.learn(50)
    resumed = load_agent(first.save(tmp_path / "ckpt", include_buffer=True))
    resumed.learn(50)
    assert resumed.last_losses == uninterrupted.last_losses
    for a, b in zip(uninterrupted.actor.parameters(), resumed.actor.parameters(), strict=True):
        assert torch.equal(a, b)
    space = nested_space()
    space.seed(3)
    obs = space.sample()
    action, _ = resumed.predict(obs, deterministic=True)
    assert Nested().action_space.contains(action)
    np.testing.assert_array_equal(action, uninterrupted.predict(obs, deterministic=True)[0])
