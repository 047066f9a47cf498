"""Training callbacks with Stable-Baselines3's interface.

Any SB3 callback works with NeuroFlow (``BaseCallback`` subclasses with SB3's hook names,
``CallbackList``, ``StopTrainingOnRewardThreshold``, ...). This module re-exports the
ones that work unchanged and adds those whose SB3 versions assume SB3's file formats or
extra packages:

* :class:`EvalCallback`: SB3's (best model kept, ``evaluations.npz``), without the
  warning that a Gymnasium vector env is not an SB3 ``VecEnv``;
* :class:`CheckpointCallback`: saves ``.safetensors`` agents (optionally with the replay
  buffer, for exact resume) every ``save_freq`` steps;
* :class:`VideoRecorderCallback`: mp4 files of deterministic episodes through Gymnasium's
  ``RecordVideo`` (moviepy);
* :class:`ProgressBarCallback`: a tqdm bar (SB3's needs ``rich`` as well).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import (
    BaseCallback,
    CallbackList,
    ConvertCallback,
    StopTrainingOnRewardThreshold,
)
from stable_baselines3.common.callbacks import EvalCallback as _SB3EvalCallback

from agents.evaluation import elapsed_time_kwargs
from velora_ens._validation import check_int

__all__ = [
    "BaseCallback",
    "CallbackList",
    "CheckpointCallback",
    "ConvertCallback",
    "EvalCallback",
    "ProgressBarCallback",
    "StopTrainingOnRewardThreshold",
    "VideoRecorderCallback",
    "make_callback",
]


class EvalCallback(_SB3EvalCallback):
    """SB3's ``EvalCallback``: every ``eval_freq`` calls, ``n_eval_episodes`` episodes on
    ``eval_env``; the best model is saved to ``best_model_save_path/best_model.safetensors``
    and the results to ``log_path/evaluations.npz``; ``callback_on_new_best`` (for example
    :class:`StopTrainingOnRewardThreshold`) runs on each new best."""

    def _init_callback(self) -> None:
        if getattr(self.model, "elapsed_time_key", None) is not None:
            warnings.warn("EvalCallback evaluates through Stable-Baselines3's evaluate_policy, "
                          "which cannot pass the elapsed time between observations to "
                          "predict: this agent (elapsed_time_key="
                          f"{self.model.elapsed_time_key!r}) is evaluated as if every step "
                          "took one unit; call agents.evaluate_policy from a callback for "
                          "the real timing", UserWarning, stacklevel=2)
        with warnings.catch_warnings():  # a Gymnasium vector env is not an SB3 VecEnv
            warnings.filterwarnings("ignore", message="Training and eval env are not of the "
                                                      "same type")
            super()._init_callback()


class CheckpointCallback(BaseCallback):
    """Save the agent every ``save_freq`` calls (vector env steps) as
    ``<save_path>/<name_prefix>_<num_timesteps>_steps.safetensors``; with
    ``save_replay_buffer=True`` the file also holds what an exact resume needs."""

    def __init__(self, save_freq: int, save_path: str | os.PathLike,
                 name_prefix: str = "neuroflow", save_replay_buffer: bool = False,
                 verbose: int = 0) -> None:
        super().__init__(verbose)
        check_int("save_freq", save_freq, 1)
        self.save_freq, self.save_path = save_freq, Path(save_path)
        self.name_prefix, self.save_replay_buffer = name_prefix, save_replay_buffer
        self.last_path: Path | None = None

    def _init_callback(self) -> None:
        self.save_path.mkdir(parents=True, exist_ok=True)

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            path = self.save_path / f"{self.name_prefix}_{self.num_timesteps}_steps.safetensors"
            self.last_path = self.model.save(path, include_buffer=self.save_replay_buffer)
            if self.verbose >= 1:
                print(f"Saving model checkpoint to {self.last_path}")
        return True


class VideoRecorderCallback(BaseCallback):
    """Every ``video_freq`` calls (and at the end of training when ``at_end``), play
    ``n_episodes`` deterministic episodes of ``env_id`` and write them as mp4 files to
    ``video_folder`` (named ``step-<num_timesteps>-episode-<k>.mp4``)."""

    def __init__(self, env_id: str, video_folder: str | os.PathLike, video_freq: int = 0,
                 n_episodes: int = 1, at_end: bool = True, seed: int = 0,
                 verbose: int = 0) -> None:
        super().__init__(verbose)
        check_int("video_freq", video_freq, 0)
        check_int("n_episodes", n_episodes, 1)
        self.env_id, self.video_folder = env_id, Path(video_folder)
        self.video_freq, self.n_episodes, self.at_end, self.seed = (
            video_freq, n_episodes, at_end, seed)
        self.videos: list[Path] = []

    def _on_step(self) -> bool:
        if self.video_freq and self.n_calls % self.video_freq == 0:
            self.record()
        return True

    def _on_training_end(self) -> None:
        if self.at_end:
            self.record()

    def record(self) -> list[Path]:
        """Record the episodes now; returns the mp4 files written."""
        written = record_video(self.model, self.env_id, self.video_folder,
                               name_prefix=f"step-{self.num_timesteps}",
                               n_episodes=self.n_episodes, seed=self.seed)
        self.videos += written
        if self.verbose >= 1:
            print("Video: " + ", ".join(str(p) for p in written))
        return written


def record_video(model: Any, env_id: str, folder: str | os.PathLike, name_prefix: str = "video",
                 n_episodes: int = 1, seed: int = 0, deterministic: bool = True) -> list[Path]:
    """Play ``n_episodes`` episodes of ``model`` on ``env_id`` rendered to mp4 through
    Gymnasium's ``RecordVideo``; returns the files written."""
    check_int("n_episodes", n_episodes, 1)
    folder = Path(folder)
    # off-screen rendering: SDL (pygame, used by Gymnasium's classic-control renderers)
    # needs no display with the dummy video driver
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    env = gym.make(env_id, render_mode="rgb_array")
    with warnings.catch_warnings():  # one folder holds the videos of many recordings
        warnings.filterwarnings("ignore", message=".*Overwriting existing videos")
        env = gym.wrappers.RecordVideo(env, str(folder), episode_trigger=lambda _: True,
                                       name_prefix=name_prefix, disable_logger=True)
    try:
        for episode in range(n_episodes):
            obs, info = env.reset(seed=seed + episode)
            state, start, done, step = None, np.ones(1, bool), False, 0
            while not done:
                action, state = model.predict(obs, state=state, episode_start=start,
                                              deterministic=deterministic,
                                              **elapsed_time_kwargs(model, info, episode, step))
                obs, _, terminated, truncated, info = env.step(action)
                start = np.zeros(1, bool)
                done, step = terminated or truncated, step + 1
    finally:
        env.close()
    return sorted(folder.glob(f"{name_prefix}-episode-*.mp4"))


class ProgressBarCallback(BaseCallback):
    """A tqdm progress bar over the ``learn`` call's timesteps."""

    def __init__(self) -> None:
        super().__init__()
        self.pbar = None

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        # SB3's convention: the step count the learn call ends at
        total = self.locals["total_timesteps"] - self.model.num_timesteps
        self.pbar = tqdm(total=total, unit="step", dynamic_ncols=True, mininterval=0.5)
        self._start = self.model.num_timesteps

    def _on_step(self) -> bool:
        done = self.model.num_timesteps - self._start
        self.pbar.update(done - self.pbar.n)
        return True

    def _on_training_end(self) -> None:
        self.pbar.refresh()
        self.pbar.close()


def make_callback(callback: Any, progress_bar: bool = False) -> BaseCallback:
    """SB3's conversion: ``None``, a function ``f(locals, globals) -> bool``, a callback or
    a list of callbacks, plus a progress bar if asked, as one callback."""
    if isinstance(callback, list):
        callback = CallbackList(callback)
    elif callback is None:
        callback = CallbackList([])
    elif not isinstance(callback, BaseCallback):
        if not callable(callback):
            raise ValueError(f"callback must be a BaseCallback, a list of them, a function "
                             f"callback(locals, globals) -> bool or None, got "
                             f"{type(callback).__name__}")
        callback = ConvertCallback(callback)
    if progress_bar:
        callback = CallbackList([callback, ProgressBarCallback()])
    return callback
