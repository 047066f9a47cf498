"""Agent tooling: SB3 evaluation and callbacks, TensorBoard keys, video, progress bar,
non-finite training."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from agents import NeuroFlow, NonFiniteTrainingError
from agents.common.callbacks import (
    BaseCallback,
    CheckpointCallback,
    EvalCallback,
    StopTrainingOnRewardThreshold,
    VideoRecorderCallback,
)

SMALL = dict(seed=0, learning_starts=32, batch_size=32, seq_len=4, burn_in=2, actor_neurons=8,
             critic_hidden=(32, 32))


def small(env="CartPoleNoVel-v1", **kw):
    return NeuroFlow(env, **{**SMALL, **kw})


def test_evaluate_policy_matches_a_hand_written_evaluation():
    agent = small()
    agent.learn(100)
    venv = DummyVecEnv([lambda: Monitor(gym.make("CartPoleNoVel-v1"))])
    venv.seed(3)
    rewards, lengths = evaluate_policy(agent, venv, n_eval_episodes=4, deterministic=True,
                                       return_episode_rewards=True)
    # the same episodes by hand: seed 3 on the first reset, the env's own RNG afterwards,
    # the liquid state carried within an episode and reset between them
    env = gym.make("CartPoleNoVel-v1")
    expected = []
    for episode in range(4):
        obs, _ = env.reset(seed=3 if episode == 0 else None)
        state, total, done = None, 0.0, False
        while not done:
            action, state = agent.predict(obs, state, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += reward
            done = terminated or truncated
        expected.append(total)
    assert rewards == expected and lengths == [int(r) for r in expected]


def test_eval_callback_keeps_the_best_model_and_stop_on_threshold_stops(tmp_path):
    agent = small("CartPole-v1")
    stop = StopTrainingOnRewardThreshold(reward_threshold=0.0)  # any evaluation beats it
    callback = EvalCallback(Monitor(gym.make("CartPole-v1")), eval_freq=60, n_eval_episodes=2,
                            best_model_save_path=str(tmp_path / "best"),
                            log_path=str(tmp_path / "eval"), callback_on_new_best=stop)
    agent.learn(500, callback=callback)
    # stopped at the first evaluation, after 60 vector-env steps (SB3 counts calls; an
    # autoreset step is a call but not a transition)
    assert callback.n_calls == 60 and 55 <= agent.num_timesteps <= 60
    data = np.load(tmp_path / "eval" / "evaluations.npz")
    assert data["timesteps"].tolist() == [agent.num_timesteps]
    assert data["results"].shape == (1, 2)
    best = NeuroFlow.load(tmp_path / "best" / "best_model.safetensors")
    assert best.num_timesteps == agent.num_timesteps
    assert callback.best_mean_reward == pytest.approx(data["results"][0].mean())


def test_checkpoint_callback_writes_loadable_files(tmp_path):
    agent = small("Pendulum-v1")
    ckpt = CheckpointCallback(save_freq=40, save_path=tmp_path, name_prefix="pend",
                              save_replay_buffer=True)
    agent.learn(100, callback=ckpt)
    names = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert names == ["pend_40_steps.safetensors", "pend_80_steps.safetensors"]
    resumed = NeuroFlow.load(tmp_path / "pend_80_steps.safetensors")
    assert resumed.num_timesteps == 80 and len(resumed.buffer) == 80
    with pytest.raises(ValueError, match="save_freq"):
        CheckpointCallback(save_freq=0, save_path=tmp_path)


def test_user_callbacks_get_sb3_hooks_in_order():
    class Recorder(BaseCallback):
        def __init__(self):
            super().__init__()
            self.events = []

        def _on_training_start(self):
            self.events.append(("start", self.model.num_timesteps))

        def _on_rollout_start(self):
            self.events.append(("rollout_start",))

        def _on_step(self):
            self.events.append(("step", self.num_timesteps, "new_obs" not in self.locals))
            return self.n_calls < 5

        def _on_rollout_end(self):
            self.events.append(("rollout_end",))

        def _on_training_end(self):
            self.events.append(("end", self.model.num_timesteps))

    rec = Recorder()
    small("Pendulum-v1").learn(100, callback=rec)
    kinds = [e[0] for e in rec.events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert kinds.count("step") == 5 and rec.events[-1] == ("end", 5)
    assert kinds[1:4] == ["rollout_start", "step", "rollout_end"]
    assert "self" in rec.locals and "actions" in rec.locals  # SB3 callbacks read locals


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted(p for p in folder.iterdir() if p.is_dir())
    acc = EventAccumulator(str(runs[-1]))
    acc.Reload()
    return runs, {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
                  for tag in acc.Tags()["scalars"]}


def test_tensorboard_has_sb3_keys_and_one_folder_per_run(tmp_path):
    agent = small("CartPole-v1", tensorboard_log=str(tmp_path))
    callback = EvalCallback(Monitor(gym.make("CartPole-v1")), eval_freq=100, n_eval_episodes=1)
    agent.learn(300, callback=callback, log_interval=1)
    runs, scalars = _scalars(tmp_path)
    assert [r.name for r in runs] == ["NeuroFlow_1"]
    for key in ("rollout/ep_rew_mean", "rollout/ep_len_mean", "train/actor_loss",
                "train/critic_loss", "train/ent_coef", "train/ent_coef_loss",
                "train/q_epistemic", "train/learning_rate", "time/fps", "eval/mean_reward"):
        assert key in scalars, key
        assert all(np.isfinite(v) for _, v in scalars[key])
    # CartPole pays 1 per step: the mean return equals the mean length at every dump
    assert scalars["rollout/ep_rew_mean"] == scalars["rollout/ep_len_mean"]
    assert scalars["rollout/ep_rew_mean"][-1][1] == pytest.approx(agent.mean_episode_return())
    # the critics' spread is the std over the two critics: positive, not a constant
    assert all(v > 0 for _, v in scalars["train/q_epistemic"])
    agent.learn(50)  # continues the same run folder
    agent.learn(50, reset_num_timesteps=True)  # a new run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["NeuroFlow_1", "NeuroFlow_2"]


def test_video_callback_writes_an_mp4_with_frames(tmp_path):
    agent = small("CartPole-v1")
    video = VideoRecorderCallback("CartPole-v1", tmp_path, n_episodes=1, seed=4)
    agent.learn(50, callback=video)
    assert len(video.videos) == 1 and video.videos[0].suffix == ".mp4"
    from moviepy import VideoFileClip

    clip = VideoFileClip(str(video.videos[0]))
    try:
        frames = sum(1 for _ in clip.iter_frames())
        first = clip.get_frame(0)
    finally:
        clip.close()
    # one frame per step plus the reset frame, of CartPole's 600x400 canvas
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=4)
    steps, state, done = 0, None, False
    while not done:
        action, state = agent.predict(obs, state, deterministic=True)
        obs, _, terminated, truncated, _ = env.step(action)
        steps += 1
        done = terminated or truncated
    assert abs(frames - (steps + 1)) <= 1
    assert first.shape == (400, 600, 3) and first.std() > 0
    with pytest.raises(ValueError, match="n_episodes must be an integer >= 1, got 0"):
        VideoRecorderCallback("CartPole-v1", tmp_path, n_episodes=0)
    with pytest.raises(ValueError, match="video_freq must be an integer >= 0, got -1"):
        VideoRecorderCallback("CartPole-v1", tmp_path, video_freq=-1)


def test_progress_bar(capsys):
    agent = small("CartPole-v1").learn(60, progress_bar=True)
    err = capsys.readouterr().err
    assert "60/60" in err
    agent.learn(40, progress_bar=True)  # the bar counts this call's steps
    assert "40/40" in capsys.readouterr().err


def test_non_finite_training_stops_before_the_update_and_keeps_the_checkpoint(tmp_path):
    class HugeReward(gym.Wrapper):
        """Finite but enormous rewards from step 120 on: the critic loss overflows."""

        def __init__(self, env):
            super().__init__(env)
            self.t = 0

        def step(self, action):
            self.t += 1
            obs, reward, terminated, truncated, info = self.env.step(action)
            return obs, (3e38 if self.t >= 120 else reward), terminated, truncated, info

    agent = small(HugeReward(gym.make("Pendulum-v1")))
    ckpt = CheckpointCallback(save_freq=50, save_path=tmp_path)
    snapshots = []

    class Snapshot(BaseCallback):
        def _on_step(self):
            snapshots.append([p.detach().clone() for p in self.model.critics.parameters()])
            return True

    with pytest.raises(NonFiniteTrainingError, match=r"non-finite critic_loss=inf.* at step 1"):
        agent.learn(300, callback=[ckpt, Snapshot()])
    # no parameter was touched by the bad update
    for before, now in zip(snapshots[-1], agent.critics.parameters(), strict=True):
        assert torch.equal(before, now)
    last = NeuroFlow.load(tmp_path / "neuroflow_100_steps.safetensors",
                          env=HugeReward(gym.make("Pendulum-v1")))
    assert all(torch.isfinite(p).all() for p in last.critics.parameters())
