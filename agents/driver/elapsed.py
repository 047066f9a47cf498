"""The elapsed time between observations, read from the environment's ``info``.

Liquid cells take a per-sample elapsed time ``dt`` (1 by default). An environment with
irregular timing (for instance :class:`envs.IrregularTiming`) reports, with every
observation, the time since the previous one in ``info[key]``; an agent built with
``elapsed_time_key=key`` reads it at every step through :class:`ElapsedTime` and feeds
``info[key] / elapsed_time_unit`` to its liquid networks as ``dt`` (so a step of
``elapsed_time_unit`` is the cells' default of 1).

>>> reader = ElapsedTime("elapsed_time", unit=0.05, n_envs=2)
>>> reader.read({"elapsed_time": np.array([0.05, 0.15]),
...              "_elapsed_time": np.array([True, True])}, step=7).tolist()
[1.0, 3.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from velora_ens._validation import check_number

__all__ = ["ElapsedTime"]


class ElapsedTime:
    """Reads ``info[key]`` of every copy and scales it by ``1 / unit``.

    Args:
        key: the info key (``envs.ELAPSED_TIME_KEY``, ``"elapsed_time"``, for
            :class:`envs.IrregularTiming`).
        unit: the elapsed time that the cells see as 1 (e.g. the task's nominal step).
        n_envs: environment copies.
    """

    def __init__(self, key: str, unit: float, n_envs: int) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError(f"elapsed_time_key must be a non-empty string, got {key!r}")
        self.key, self.n_envs = key, n_envs
        self.unit = check_number("elapsed_time_unit", unit, 0.0, strict=True)

    def read(self, info: dict[str, Any], step: int, rows: np.ndarray | None = None
             ) -> np.ndarray:
        """``dt`` of every copy ``(n_envs,)`` from a vector env's ``info`` (``rows``: the
        copies that must have it, all by default; the others get 1)."""
        rows = np.arange(self.n_envs) if rows is None else np.asarray(rows)
        values = info.get(self.key)
        present = info.get(f"_{self.key}", None if values is None else
                            np.ones(self.n_envs, bool))
        missing = rows if values is None else rows[~np.asarray(present, bool)[rows]]
        if len(missing):
            raise ValueError(f"the environment's info has no {self.key!r} at step {step} "
                             f"(copies {missing.tolist()}); elapsed_time_key={self.key!r} "
                             "reads the time since the previous observation from there "
                             "(wrap the task in envs.IrregularTiming, or build the agent "
                             "without elapsed_time_key)")
        dt = np.ones(self.n_envs, np.float32)
        got = np.asarray(values, dtype=np.float64)[rows]
        bad = ~np.isfinite(got) | (got < 0)
        if bad.any():
            i = int(rows[np.flatnonzero(bad)[0]])
            raise ValueError(f"the environment reported an elapsed time of "
                             f"{float(values[i])!r} in info[{self.key!r}] at step {step} "
                             f"(copy {i}); expected a finite number >= 0")
        dt[rows] = (got / self.unit).astype(np.float32)
        return dt

    def after_step(self, info: dict[str, Any], episode_start: np.ndarray, same_step: bool,
                   step: int, final_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The elapsed times a vector env reported in a step, ``(n_envs,)`` each:

        * of the observations the next step acts on (1 where one starts an episode: the
          state is reset there anyway);
        * of each copy's real next observation, the successor a target bootstraps from.
          They are the same, except for the copies ``final_rows`` (truncated episodes)
          when the env resets within the step (``same_step``, Gymnasium's ``SAME_STEP``
          autoreset): their final observation's time is in ``info["final_info"]``.
        """
        acting = self.read(info, step, np.flatnonzero(~np.asarray(episode_start, bool)))
        real = acting.copy()
        final_rows = np.asarray(final_rows, np.int64)
        if same_step and len(final_rows):
            real[final_rows] = self.read(info.get("final_info", {}), step, final_rows
                                         )[final_rows]
        return acting, real
