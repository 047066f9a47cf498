"""Training callbacks with Stable-Baselines3's interface.

Any SB3 callback works with NeuroFlow (``BaseCallback`` subclasses with SB3's hook names,
``CallbackList``, ``StopTrainingOnRewardThreshold``, ...). This module re-exports the
ones that work unchanged and adds those whose SB3 versions assume SB3's file formats or
extra packages:

* :class:`EvalCallback`: SB3's (best model kept, ``evaluations.npz``), without the
  warning that a Gymnasium vector env is not an SB3 ``VecEnv``, and passing the elapsed
  time between observations to ``predict`` for agents built with ``elapsed_time_key``;
* :class:`CheckpointCallback`: saves ``.safetensors`` agents (optionally with the replay
  buffer, for exact resume) every ``save_freq`` steps;
* :class:`VideoRecorderCallback`: mp4 files of deterministic episodes through Gymnasium's
  ``RecordVideo`` (moviepy);
* :class:`ProgressBarCallback`: a tqdm bar (SB3's needs ``rich`` as well);
* :class:`StopTrainingOnSignal`: Ctrl-C (SIGINT) or SIGTERM ends ``learn`` cleanly after
  the current step, so that the agent can be saved and resumed exactly.

Interrupting and resuming, from Python::

    stop = StopTrainingOnSignal()
    agent.learn(100_000, callback=[stop, ...])
    if stop.received is not None:                    # Ctrl-C: the agent is consistent
        agent.save("interrupted", include_buffer=True)
    ...
    agent = NeuroFlow.load("interrupted")
    agent.learn(100_000 - agent.num_timesteps)       # finishes the interrupted call

The second ``learn`` call ends where the interrupted one would have, so it continues that
call (its learning-rate and clip-range schedules), and the result is the uninterrupted
run's, bit for bit on the CPU.
"""

from __future__ import annotations

import os
import signal
import threading
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
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from agents.common.evaluation import elapsed_time_kwargs
from envs import make_env
from velora_ens._validation import check_int

__all__ = [
    "BaseCallback",
    "CallbackList",
    "CheckpointCallback",
    "ConvertCallback",
    "EvalCallback",
    "ProgressBarCallback",
    "StopTrainingOnRewardThreshold",
    "StopTrainingOnSignal",
    "VideoRecorderCallback",
    "make_callback",
]


class _ReportedElapsedTime(VecEnvWrapper):
    """An SB3 ``VecEnv`` that keeps the elapsed time each copy's current observation came
    with: ``info[key]`` after a step, the reset's info after an (automatic) reset."""

    def __init__(self, venv: VecEnv, key: str) -> None:
        super().__init__(venv)
        self.key = key
        self.times = np.ones(self.num_envs)

    def _read(self, infos: list[dict[str, Any]], where: str) -> np.ndarray:
        for i, info in enumerate(infos):
            if self.key not in info:
                raise ValueError(f"EvalCallback: the evaluation env's info has no {self.key!r} "
                                 f"at {where} (copy {i}); the agent reads the time since the "
                                 f"previous observation from there (elapsed_time_key="
                                 f"{self.key!r}): build eval_env as the training env")
        return np.array([float(info[self.key]) for info in infos])

    def reset(self) -> Any:
        obs = self.venv.reset()
        self.times = self._read(self.unwrapped.reset_infos, "reset")
        return obs

    def step_wait(self) -> Any:
        obs, rewards, dones, infos = self.venv.step_wait()
        reset_infos = self.unwrapped.reset_infos
        current = [reset_infos[i] if done else info
                   for i, (done, info) in enumerate(zip(dones, infos, strict=True))]
        self.times = self._read(current, "a step")
        return obs, rewards, dones, infos


class _TimedPredict:
    """The agent, with ``predict`` handed the evaluation env's elapsed times."""

    def __init__(self, agent: Any, env: _ReportedElapsedTime) -> None:
        self._agent, self._env = agent, env

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, np.ndarray]:
        return self._agent.predict(observation, state, episode_start, deterministic,
                                   elapsed_time=self._env.times)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._agent, name)


class EvalCallback(_SB3EvalCallback):
    """SB3's ``EvalCallback``: every ``eval_freq`` calls, ``n_eval_episodes`` episodes on
    ``eval_env``; the best model is saved to ``best_model_save_path/best_model.safetensors``
    and the results to ``log_path/evaluations.npz``; ``callback_on_new_best`` (for example
    :class:`StopTrainingOnRewardThreshold`) runs on each new best. For an agent built with
    ``elapsed_time_key``, ``predict`` gets ``info[elapsed_time_key]`` of the evaluation env
    (SB3's ``evaluate_policy`` alone cannot pass it).

    ``seed`` (ours): evaluation ``k`` (counting those in ``evaluations_results``) resets the
    evaluation env with ``seed + k``, so its episodes do not depend on the evaluations
    before it (a resumed run evaluates on the episodes the uninterrupted one did). Other
    arguments are SB3's."""

    def __init__(self, eval_env: Any, *args: Any, seed: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(eval_env, *args, **kwargs)
        self.seed = None if seed is None else check_int("seed", seed, 0)

    def restore(self, log_path: str | os.PathLike, n_calls: int) -> None:
        """Continue a run's evaluations: the results in its ``evaluations.npz`` (and the
        best mean reward among them), after ``n_calls`` steps of its agent."""
        data = np.load(Path(log_path) / "evaluations.npz")
        self.evaluations_timesteps = data["timesteps"].tolist()
        self.evaluations_results = data["results"].tolist()
        self.evaluations_length = data["ep_lengths"].tolist()
        means = [float(np.mean(r)) for r in self.evaluations_results]
        self.best_mean_reward = max(means, default=-np.inf)
        self.last_mean_reward = means[-1] if means else -np.inf
        self.n_calls = int(n_calls)

    def _init_callback(self) -> None:
        key = getattr(self.model, "elapsed_time_key", None)
        if key is not None and not isinstance(self.eval_env, _ReportedElapsedTime):
            self.eval_env = _ReportedElapsedTime(self.eval_env, key)
        with warnings.catch_warnings():  # a Gymnasium vector env is not an SB3 VecEnv
            warnings.filterwarnings("ignore", message="Training and eval env are not of the "
                                                      "same type")
            super()._init_callback()

    def _on_step(self) -> bool:
        if (self.seed is not None and self.eval_freq > 0
                and self.n_calls % self.eval_freq == 0):
            self.eval_env.seed(self.seed + len(self.evaluations_results))
        if not isinstance(self.eval_env, _ReportedElapsedTime):
            return super()._on_step()
        agent = self.model
        self.model = _TimedPredict(agent, self.eval_env)
        try:
            return super()._on_step()
        finally:
            self.model = agent


class StopTrainingOnSignal(BaseCallback):
    """Stop ``learn`` after the current step and its updates when the process receives
    one of ``signals`` (Ctrl-C's SIGINT and SIGTERM by default), instead of letting the
    signal interrupt it wherever it is: the agent is then in a state that
    ``save(path, include_buffer=True)`` resumes exactly (see the module docstring).
    :attr:`received` is the signal's number, or ``None``. A second signal of the same kind
    acts at once, as it would without this callback. The handlers are installed while
    ``learn`` runs (in the main thread only) and restored after it."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM),
                 verbose: int = 0) -> None:
        super().__init__(verbose)
        self.signals = tuple(signals)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _on_training_start(self) -> None:
        self.received = None
        if threading.current_thread() is not threading.main_thread():
            return  # Python delivers signals to the main thread only
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))  # a second one acts

    def _on_step(self) -> bool:
        return self.received is None

    def _on_training_end(self) -> None:
        self.restore_handlers()

    def restore_handlers(self) -> None:
        """Put back the handlers ``learn`` found (done when it ends; call it yourself if
        ``learn`` raised)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


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
    ``video_folder`` (named ``step-<num_timesteps>-episode-<k>.mp4``); ``env_kwargs`` and
    ``wrapper`` build the env as :func:`envs.make_env` does."""

    def __init__(self, env_id: str, video_folder: str | os.PathLike, video_freq: int = 0,
                 n_episodes: int = 1, at_end: bool = True, seed: int = 0,
                 verbose: int = 0, *, env_kwargs: dict[str, Any] | None = None,
                 wrapper: Any = None) -> None:
        super().__init__(verbose)
        check_int("video_freq", video_freq, 0)
        check_int("n_episodes", n_episodes, 1)
        self.env_id, self.video_folder = env_id, Path(video_folder)
        self.env_kwargs, self.wrapper = env_kwargs, wrapper
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
                               n_episodes=self.n_episodes, seed=self.seed,
                               env_kwargs=self.env_kwargs, wrapper=self.wrapper)
        self.videos += written
        if self.verbose >= 1:
            print("Video: " + ", ".join(str(p) for p in written))
        return written


def renders_rgb(env_id: str, env_kwargs: dict[str, Any] | None = None,
                wrapper: Any = None) -> bool:
    """Whether ``env_id`` (built by :func:`envs.make_env` with ``env_kwargs`` and
    ``wrapper``) declares the ``rgb_array`` render mode that videos need (bsuite's DeepSea
    and most of POPGym, for some, have no rendering)."""
    env = make_env(env_id, env_kwargs=env_kwargs, wrapper=wrapper)
    try:
        return "rgb_array" in env.metadata.get("render_modes", [])
    finally:
        env.close()


def record_video(model: Any, env_id: str, folder: str | os.PathLike, name_prefix: str = "video",
                 n_episodes: int = 1, seed: int = 0, deterministic: bool = True, *,
                 env_kwargs: dict[str, Any] | None = None, wrapper: Any = None) -> list[Path]:
    """Play ``n_episodes`` episodes of ``model`` on ``env_id`` (with ``env_kwargs`` and
    ``wrapper``, as :func:`envs.make_env` takes them) rendered to mp4 through Gymnasium's
    ``RecordVideo``; returns the files written."""
    check_int("n_episodes", n_episodes, 1)
    if not renders_rgb(env_id, env_kwargs, wrapper):
        raise ValueError(f"{env_id} has no 'rgb_array' render mode, so no video can be "
                         "recorded")
    folder = Path(folder)
    # off-screen rendering: SDL (pygame, used by Gymnasium's classic-control renderers)
    # needs no display with the dummy video driver
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    env = make_env(env_id, env_kwargs=env_kwargs, wrapper=wrapper, render_mode="rgb_array")
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
