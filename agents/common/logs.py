"""An agent's training logs through Stable-Baselines3's logger.

:class:`TrainingLog` holds the logger (the user's, set with ``set_logger``, which every
``learn`` call keeps; otherwise one made by ``learn`` with the agent's ``verbose`` and
``tensorboard_log``, a new run folder per run), sums what each update reports, and
writes SB3's keys every ``log_interval`` episodes: ``time/`` (episodes, fps, elapsed time,
total steps), ``rollout/`` (mean return and length of the last 100 episodes) and
``train/`` (the updates' means since the last write, the learning rate, the number of
updates).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["TrainingLog"]


class TrainingLog:
    """The logger and the running sums of the updates' values between two writes."""

    def __init__(self) -> None:
        self.logger: Any = None  # an SB3 Logger
        self.custom = False      # set by the user: kept by every learn call
        self._sums: dict[str, float] = {}
        self._count = 0

    def set_logger(self, logger: Any) -> None:
        """Use ``logger`` (SB3's ``configure(folder, formats)``) from now on."""
        for name in ("record", "dump"):
            if not callable(getattr(logger, name, None)):
                raise ValueError(f"set_logger expects a Stable-Baselines3 Logger (from "
                                 f"stable_baselines3.common.logger.configure), got "
                                 f"{type(logger).__name__}")
        self.logger, self.custom = logger, True

    def start(self, verbose: int, tensorboard_log: str | None, name: str, new_run: bool,
              continue_run: bool = False) -> None:
        """At the start of ``learn``: keep the user's logger; otherwise make one: a new
        TensorBoard run folder when ``new_run`` or there is none yet, or the latest
        folder again when ``continue_run`` (a resumed learn call)."""
        if self.custom or (self.logger is not None and not new_run):
            return
        from stable_baselines3.common.utils import configure_logger

        self.logger = configure_logger(verbose, tensorboard_log, name, not continue_run)

    def add(self, values: dict[str, float]) -> None:
        """One update's values (``train/<key>``, or the key's own section)."""
        for key, value in values.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        self._count += 1

    def write(self, *, episodes: int, timesteps: int, first_step: int, start_time: float,
              ep_info: Iterable[dict[str, float]], learning_rate: float,
              n_updates: int) -> None:
        """Record SB3's keys and write them (TensorBoard, stdout with verbose=1, ...)."""
        elapsed = max(time.perf_counter() - start_time, 1e-9)
        log, ep_info = self.logger, list(ep_info)
        log.record("time/episodes", episodes, exclude="tensorboard")
        log.record("time/fps", int((timesteps - first_step) / elapsed))
        log.record("time/time_elapsed", int(elapsed), exclude="tensorboard")
        log.record("time/total_timesteps", timesteps, exclude="tensorboard")
        if ep_info:
            log.record("rollout/ep_rew_mean", float(np.mean([e["r"] for e in ep_info])))
            log.record("rollout/ep_len_mean", float(np.mean([e["l"] for e in ep_info])))
        if self._count:
            for key, total in self._sums.items():
                # a key with its own section ("rollout/intrinsic_reward") keeps it
                log.record(key if "/" in key else f"train/{key}", total / self._count)
            log.record("train/learning_rate", learning_rate)
            log.record("train/n_updates", n_updates, exclude="tensorboard")
        self._sums, self._count = {}, 0
        log.dump(step=timesteps)
