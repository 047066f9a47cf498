"""Stable-Baselines3's documented usage examples with the algorithm swapped for NeuroFlow.

Each test is an example from SB3's docs (``docs/guide/quickstart.md`` and
``docs/guide/examples.md``, SB3 2.x) as a user would paste it, with only these changes:

* the algorithm's name (``SAC``/``DQN``/``A2C``/``PPO``/``TD3`` -> ``NeuroFlow``) and the
  import of a policy class (SB3's ``MlpPolicy.load`` -> ``LiquidPolicy.load``);
* far fewer timesteps and evaluation episodes, so the suite stays fast;
* box2d and PyBullet tasks replaced by classic-control ones (those packages are extras),
  screen rendering (``render("human")``, ``render_mode="human"``) and plotting left out;
* arguments that only SB3's algorithms have (``action_noise``, ``policy_kwargs``) left out.

Everything else (``"MlpPolicy"``, SB3's ``make_vec_env``/``SubprocVecEnv``/
``VecNormalize``, ``model.get_env()`` as an SB3 ``VecEnv`` with ``obs = vec_env.reset()``
and four-tuple ``step``, SB3's callbacks, ``save``/``load`` without a suffix,
``save_replay_buffer``, ``get_parameters``, ``evaluate_policy``) is SB3's code as is.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.results_plotter import load_results, ts2xy
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnv, VecNormalize

from agents import NeuroFlow
from agents.common.policy import LiquidPolicy


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write files in the working directory


def test_getting_started():
    env = gym.make("CartPole-v1", render_mode="rgb_array")

    model = NeuroFlow("MlpPolicy", env, verbose=1)
    model.learn(total_timesteps=300)

    vec_env = model.get_env()
    obs = vec_env.reset()
    for _i in range(300):
        action, _state = model.predict(obs, deterministic=True)
        obs, reward, done, info = vec_env.step(action)
        # VecEnv resets automatically

    assert isinstance(vec_env, VecEnv) and obs.shape == (1, 4)
    assert model.num_timesteps == 300


def test_getting_started_one_line():
    model = NeuroFlow("MlpPolicy", "CartPole-v1").learn(200)
    assert model.num_timesteps == 200


def test_basic_usage_training_saving_loading():
    # Create environment
    env = gym.make("CartPole-v1", render_mode="rgb_array")

    # Instantiate the agent
    model = NeuroFlow("MlpPolicy", env, verbose=1)
    # Train the agent and display a progress bar
    model.learn(total_timesteps=int(2e2), progress_bar=True)
    # Save the agent
    model.save("dqn_lunar")
    del model  # delete trained model to demonstrate loading

    # Load the trained agent
    model = NeuroFlow.load("dqn_lunar", env=env)

    # Evaluate the agent
    mean_reward, std_reward = evaluate_policy(model, model.get_env(), n_eval_episodes=3)

    # Enjoy trained agent
    vec_env = model.get_env()
    obs = vec_env.reset()
    episodes = 0
    for _i in range(300):
        action, _states = model.predict(obs, deterministic=True)
        obs, rewards, dones, info = vec_env.step(action)
        episodes += int(dones.sum())
        if dones[0]:
            assert "terminal_observation" in info[0] and "episode" in info[0]

    assert os.path.isfile("dqn_lunar.safetensors") and mean_reward > 0
    assert model.num_timesteps == 200 and episodes > 0


def make_env(env_id: str, rank: int, seed: int = 0):
    """Utility function for multiprocessed env (SB3's example, without render_mode)."""
    def _init():
        env = gym.make(env_id)
        env.reset(seed=seed + rank)
        return env
    set_random_seed(seed)
    return _init


def test_multiprocessing_vectorized_environments():
    env_id = "CartPole-v1"
    num_cpu = 2  # Number of processes to use
    # Create the vectorized environment
    vec_env = SubprocVecEnv([make_env(env_id, i) for i in range(num_cpu)])

    model = NeuroFlow("MlpPolicy", vec_env, verbose=1)
    model.learn(total_timesteps=240)

    obs = vec_env.reset()
    for _ in range(50):
        action, _states = model.predict(obs)
        obs, rewards, dones, info = vec_env.step(action)

    assert model.get_env() is vec_env and model.num_timesteps >= 240
    assert model.replay_buffer.size() == model.num_timesteps
    vec_env.close()

    # Stable Baselines provides you with make_vec_env() helper
    env = make_vec_env(env_id, n_envs=num_cpu, seed=0, vec_env_cls=SubprocVecEnv)
    NeuroFlow("MlpPolicy", env).learn(200)
    env.close()


def test_multiprocessing_with_off_policy_algorithms():
    vec_env = make_vec_env("Pendulum-v1", n_envs=4, seed=0)

    # We collect 4 transitions per call to `env.step()`
    # and performs 2 gradient steps per call to `env.step()`
    model = NeuroFlow("MlpPolicy", vec_env, train_freq=1, gradient_steps=2, verbose=1)
    model.learn(total_timesteps=400)

    assert model.utd_ratio == 0.5
    # two updates per vector-env step once learning starts at 100 transitions
    assert model.n_updates == 2 * (400 - 100) // 4 + 2


class SaveOnBestTrainingRewardCallback(BaseCallback):
    """
    Callback for saving a model (the check is done every ``check_freq`` steps)
    based on the training reward (in practice, we recommend using ``EvalCallback``).
    """
    def __init__(self, check_freq: int, log_dir: str, verbose: int = 1):
        super().__init__(verbose)
        self.check_freq = check_freq
        self.log_dir = log_dir
        self.save_path = os.path.join(log_dir, "best_model")
        self.best_mean_reward = -np.inf

    def _init_callback(self) -> None:
        # Create folder if needed
        if self.save_path is not None:
            os.makedirs(self.save_path, exist_ok=True)

    def _on_step(self) -> bool:
        if self.n_calls % self.check_freq == 0:

            # Retrieve training reward
            x, y = ts2xy(load_results(self.log_dir), "timesteps")
            if len(x) > 0:
                # Mean training reward over the last 100 episodes
                mean_reward = np.mean(y[-100:])
                if self.verbose >= 1:
                    print(f"Num timesteps: {self.num_timesteps}")
                    print(f"Best mean reward: {self.best_mean_reward:.2f} - Last mean reward "
                          f"per episode: {mean_reward:.2f}")

                # New best model, you could save the agent here
                if mean_reward > self.best_mean_reward:
                    self.best_mean_reward = mean_reward
                    # Example for saving best model
                    if self.verbose >= 1:
                        print(f"Saving new best model to {self.save_path}")
                    self.model.save(self.save_path)

        return True


def test_callbacks_monitoring_training():
    # Create log dir
    log_dir = "tmp/"
    os.makedirs(log_dir, exist_ok=True)

    # Create and wrap the environment
    env = gym.make("Pendulum-v1")
    env = Monitor(env, log_dir)

    model = NeuroFlow("MlpPolicy", env, verbose=0)
    # Create the callback: check every 100 steps
    callback = SaveOnBestTrainingRewardCallback(check_freq=100, log_dir=log_dir)
    # Train the agent
    timesteps = 5e2
    model.learn(total_timesteps=int(timesteps), callback=callback)

    assert len(load_results(log_dir)) == 2  # two 200-step episodes in monitor.csv
    # saved at a check once the first episode is in monitor.csv
    assert NeuroFlow.load("tmp/best_model", env=env).num_timesteps >= 200


def test_callbacks_evaluate_agent_performance():
    env_id = "Pendulum-v1"
    n_training_envs = 1
    n_eval_envs = 5

    # Create log dir where evaluation results will be saved
    eval_log_dir = "./eval_logs/"
    os.makedirs(eval_log_dir, exist_ok=True)

    # Initialize a vectorized training environment with default parameters
    train_env = make_vec_env(env_id, n_envs=n_training_envs, seed=0)

    # Separate evaluation env, with different parameters passed via env_kwargs
    # Eval environments can be vectorized to speed up evaluation.
    eval_env = make_vec_env(env_id, n_envs=n_eval_envs, seed=0,
                            env_kwargs={'g': 0.7})

    # Create a callback that evaluates an agent for 5 episodes every 200 training environment
    # steps.
    eval_callback = EvalCallback(eval_env, best_model_save_path=eval_log_dir,
                                 log_path=eval_log_dir, eval_freq=max(200 // n_training_envs, 1),
                                 n_eval_episodes=5, deterministic=True,
                                 render=False)

    model = NeuroFlow("MlpPolicy", train_env)
    model.learn(400, callback=eval_callback)

    results = np.load("eval_logs/evaluations.npz")
    assert results["timesteps"].tolist() == [200, 400]
    assert results["results"].shape == (2, 5)
    assert NeuroFlow.load("eval_logs/best_model", env=train_env).num_timesteps in (200, 400)


def test_normalizing_input_features():
    vec_env = make_vec_env("Pendulum-v1", n_envs=1)
    # Automatically normalize the input features and reward
    vec_env = VecNormalize(vec_env, norm_obs=True, norm_reward=True, clip_obs=10.0)

    model = NeuroFlow("MlpPolicy", vec_env)
    model.learn(total_timesteps=200)

    # Don't forget to save the VecNormalize statistics when saving the agent
    log_dir = "logs"
    model.save(os.path.join(log_dir, "ppo_halfcheetah"))
    stats_path = os.path.join(log_dir, "vec_normalize.pkl")
    vec_env.save(stats_path)

    # To demonstrate loading
    assert model.get_vec_normalize_env() is vec_env
    del model, vec_env

    # Load the saved statistics
    vec_env = make_vec_env("Pendulum-v1", n_envs=1)
    vec_env = VecNormalize.load(stats_path, vec_env)
    #  do not update them at test time
    vec_env.training = False
    # reward normalization is not needed at test time
    vec_env.norm_reward = False

    # Load the agent
    model = NeuroFlow.load(os.path.join(log_dir, "ppo_halfcheetah"), env=vec_env)
    assert model.num_timesteps == 200 and vec_env.obs_rms.count > 200


def linear_schedule(initial_value: float) -> Callable[[float], float]:
    """
    Linear learning rate schedule.
    """
    def func(progress_remaining: float) -> float:
        """
        Progress will decrease from 1 (beginning) to 0.
        """
        return progress_remaining * initial_value

    return func


def test_learning_rate_schedule():
    # Initial learning rate of 0.001
    model = NeuroFlow("MlpPolicy", "CartPole-v1", learning_rate=linear_schedule(0.001),
                      verbose=1)
    rates = []
    model.learn(total_timesteps=200, callback=lambda _l, _g: rates.append(
        (model.num_timesteps, model.optimizer.param_groups[0]["lr"])) or True)
    # By default, `reset_num_timesteps` is True, in which case the learning rate schedule resets.
    # progress_remaining = 1.0 - (num_timesteps / total_timesteps)
    model.learn(total_timesteps=100, reset_num_timesteps=True)

    # set before each step's updates (from learning_starts=100 on): 0.001 * (1 - t / 200)
    for t, lr in rates:
        if t >= 100:
            assert lr == pytest.approx(0.001 * (1 - t / 200))
    assert model.num_timesteps == 100


def test_advanced_saving_and_loading(capsys):
    # Create the model and the training environment
    model = NeuroFlow("MlpPolicy", "Pendulum-v1", verbose=1,
                      learning_rate=1e-3)

    # train the model
    model.learn(total_timesteps=300)

    # save the model
    model.save("sac_pendulum")

    # the saved model does not contain the replay buffer
    loaded_model = NeuroFlow.load("sac_pendulum")
    print(f"The loaded_model has {loaded_model.replay_buffer.size()} transitions in its buffer")

    # now save the replay buffer too
    model.save_replay_buffer("sac_replay_buffer")

    # load it into the loaded_model
    loaded_model.load_replay_buffer("sac_replay_buffer")

    # now the loaded replay is not empty anymore
    print(f"The loaded_model has {loaded_model.replay_buffer.size()} transitions in its buffer")

    # Save the policy independently from the model
    # Note: if you don't save the complete model with `model.save()`
    # you cannot continue training afterward
    policy = model.policy
    policy.save("sac_policy_pendulum")

    # Retrieve the environment
    env = model.get_env()

    # Evaluate the policy
    mean_reward, std_reward = evaluate_policy(policy, env, n_eval_episodes=2, deterministic=True)

    print(f"mean_reward={mean_reward:.2f} +/- {std_reward}")

    # Load the policy independently from the model
    saved_policy = LiquidPolicy.load("sac_policy_pendulum")

    # Evaluate the loaded policy
    mean_reward2, std_reward = evaluate_policy(saved_policy, env, n_eval_episodes=2,
                                               deterministic=True)

    print(f"mean_reward={mean_reward2:.2f} +/- {std_reward}")

    out = capsys.readouterr().out
    assert "has 0 transitions" in out and "has 300 transitions" in out
    np.testing.assert_array_equal(loaded_model.replay_buffer.obs, model.replay_buffer.obs)
    # the saved policy is the same network (evaluate_policy's episodes are not seeded)
    obs = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_array_equal(saved_policy.predict(obs, deterministic=True)[0],
                                  model.predict(obs, deterministic=True)[0])


def mutate(params: dict[str, th.Tensor]) -> dict[str, th.Tensor]:
    """Mutate parameters by adding normal noise to them"""
    return dict((name, param + th.randn_like(param)) for name, param in params.items())


def test_accessing_and_modifying_model_parameters():
    # Create policy with a small network
    model = NeuroFlow(
        "MlpPolicy",
        "CartPole-v1",
        actor_neurons=8,
        seed=0,
        learning_rate=0.05,
    )

    # Use traditional actor-critic policy gradient updates to
    # find good initial parameters
    model.learn(total_timesteps=200)

    # Include only the actor's trained variables (NeuroFlow names them "actor.<...>"; the
    # state dict also holds the wiring's masks, which are buffers): only these ones
    # affect the action.
    # NOTE: you can retrieve those parameters using model.get_parameters() too
    trained = dict(model.policy.named_parameters())
    mean_params = dict(
        (key, value)
        for key, value in model.policy.state_dict().items()
        if ("actor" in key and key in trained)
    )
    assert mean_params and set(mean_params) <= set(model.get_parameters()["policy"])

    # population size of 4 individuals
    pop_size = 4
    # Keep top 50%
    n_elite = pop_size // 2
    # Retrieve the environment
    vec_env = model.get_env()

    for _iteration in range(1):
        # Create population of candidates and evaluate them
        population = []
        for _population_i in range(pop_size):
            candidate = mutate(mean_params)
            # Load new policy parameters to agent.
            # Tell function that it should only update parameters
            # we give it (policy parameters)
            model.policy.load_state_dict(candidate, strict=False)
            # Evaluate the candidate
            fitness, _ = evaluate_policy(model, vec_env, n_eval_episodes=2)
            population.append((candidate, fitness))
        # Take top candidates and use average over their parameters as next mean parameter
        top_candidates = sorted(population, key=lambda x: x[1], reverse=True)[:n_elite]
        mean_params = dict(
            (
                name,
                th.stack([candidate[0][name] for candidate in top_candidates]).mean(dim=0),
            )
            for name in mean_params.keys()
        )
        mean_fitness = sum(top_candidate[1] for top_candidate in top_candidates) / n_elite
        print(f"Mean top fitness: {mean_fitness:.2f}")

    model.policy.load_state_dict(mean_params, strict=False)
    for name, value in mean_params.items():
        assert th.equal(model.get_parameters()["policy"][name], value)
