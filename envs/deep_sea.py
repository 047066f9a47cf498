"""bsuite's DeepSea exploration task as a Gymnasium env, and bsuite's "solved" criterion.

DeepSea (Osband et al., https://arxiv.org/abs/1908.03568) is an N x N grid: the agent
starts top left and drops one row per step, moving left or right; the treasure (+1) is at
the bottom right, reached only by choosing "right" in all N steps, each "right" costing
0.01 / N. Which action (0 or 1) means "right" is drawn per cell, so dithering needs about
2^N episodes to find it. The env needs the optional extra ``deepsea`` (bsuite and shimmy);
the criterion functions need only numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import FlattenObservation

__all__ = [
    "INSTALL_HINT",
    "NUM_EPISODES",
    "SOLVED_THRESHOLD",
    "DeepSeaNotInstalled",
    "FlattenGrid",
    "deep_sea_beats_dithering",
    "deep_sea_solved_episode",
    "make_deep_sea",
    "reached_treasure",
]

INSTALL_HINT = 'pip install "velora_ens[deepsea]"'
# bsuite/experiments/deep_sea/sweep.py: NUM_EPISODES = 10000
NUM_EPISODES = 10_000
# bsuite/experiments/deep_sea/analysis.py: find_solution(..., thresh=0.9, ...)
SOLVED_THRESHOLD = 0.9
# bsuite/utils/wrappers.py: _logarithmic_logging, the episodes bsuite's logger records.
_LOG_RATIOS = (1.0, 1.2, 1.4, 1.7, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)


def _is_positive_int(value: object) -> bool:
    return (not isinstance(value, bool) and isinstance(value, int | np.integer)
            and value >= 1)


class DeepSeaNotInstalled(gym.error.DependencyNotInstalled, ModuleNotFoundError):
    """bsuite or shimmy is missing: an ``ImportError`` that ``envs.make_env`` also reports."""


class FlattenGrid(FlattenObservation):
    """Flatten DeepSea's (N, N) one-hot grid into a float32 ``Box(0, 1, (N * N,))``.

    Gymnasium's ``FlattenObservation`` does the flattening (row-major, ``grid.reshape(-1)``);
    this only narrows the bounds, which shimmy declares as ``(-inf, inf)`` because bsuite's
    spec is an unbounded ``Array``.
    """

    def __init__(self, env: gym.Env) -> None:
        space = env.observation_space
        if (not isinstance(space, gym.spaces.Box) or len(space.shape) != 2
                or space.shape[0] != space.shape[1]):
            raise ValueError(f"FlattenGrid needs a square 2-D Box observation space "
                             f"(DeepSea's (N, N) grid), got {space}")
        super().__init__(env)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (space.shape[0] ** 2,), np.float32)


def make_deep_sea(size: int = 20, seed: int | None = 0, *, mapping_seed: int | None = None,
                  render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    """bsuite's ``DeepSea(size)`` through shimmy, with the grid flattened (``FlattenGrid``).

    ``seed`` seeds bsuite's transition/noise generator (used only with
    ``deterministic=False``); ``mapping_seed`` (default: ``seed``) draws which action is
    "right" in each cell. bsuite's own default (``None``) draws the mapping from OS entropy,
    so two envs would differ; its sweep uses ``mapping_seed=42``. The mapping is fixed for
    the env's life: ``reset(seed=...)`` reseeds only the transitions. Other keyword arguments
    (``deterministic``, ``unscaled_move_cost``, ``randomize_actions``) go to bsuite.
    Episodes end with ``terminated=True`` after exactly ``size`` steps (last observation all
    zeros); no time limit is needed. bsuite has no rendering (``render_mode`` must be None).
    """
    if render_mode is not None:
        raise ValueError(f"DeepSea has no render modes, got render_mode={render_mode!r}")
    if not _is_positive_int(size):
        raise ValueError(f"DeepSea size must be an integer >= 1, got {size!r}")
    try:
        from bsuite.environments.deep_sea import DeepSea
        from shimmy.bsuite_compatibility import BSuiteCompatibilityV0
    except ImportError as exc:
        raise DeepSeaNotInstalled(f"DeepSea needs bsuite and shimmy (the 'deepsea' extra): "
                                  f"{INSTALL_HINT} ({exc})") from exc
    if mapping_seed is None:
        mapping_seed = seed
    inner = DeepSea(size=int(size), seed=seed, mapping_seed=mapping_seed, **kwargs)
    return FlattenGrid(BSuiteCompatibilityV0(inner))


def reached_treasure(episode_return: float, unscaled_move_cost: float = 0.01) -> bool:
    """Whether a deterministic DeepSea episode reached the treasure, from its return.

    The treasure (+1) needs N "right" moves costing ``unscaled_move_cost / N`` each, so
    its return is ``1 - unscaled_move_cost`` (0.99); any other episode pays only move
    costs, a return in ``[-unscaled_move_cost, 0]``. The midpoint separates them when the
    cost is below 1. In deterministic DeepSea this is exactly bsuite's "not a bad episode".
    With ``deterministic=False`` the end states add N(0, 1) noise, so the return cannot
    tell: read bsuite's count ``env.unwrapped.bsuite_info()["total_bad_episodes"]``.
    """
    if not 0.0 <= unscaled_move_cost < 1.0:
        raise ValueError(f"unscaled_move_cost must be in [0, 1) for the return to tell, "
                         f"got {unscaled_move_cost!r}")
    if not np.isfinite(episode_return):
        raise ValueError(f"episode_return must be finite, got {episode_return!r}")
    return bool(episode_return > 0.5 * (1.0 - unscaled_move_cost))


def _bsuite_logged(episodes: np.ndarray) -> np.ndarray:
    """Which episode numbers bsuite's default (logarithmic) logger records.

    The same float arithmetic as ``bsuite.utils.wrappers._logarithmic_logging``:
    ``episode == 10**floor(log10(max(1, episode))) * ratio`` for one of the ratios.
    """
    exponent = np.floor(np.log10(np.maximum(1, episodes)))
    special = 10 ** exponent[:, None] * np.asarray(_LOG_RATIOS)[None, :]
    return np.any(episodes[:, None] == special, axis=1)


def deep_sea_solved_episode(bad_episodes: Sequence[bool] | np.ndarray, *,
                            threshold: float = SOLVED_THRESHOLD,
                            num_episodes: int = NUM_EPISODES,
                            log_every: bool = False) -> int | None:
    """The (1-based) episode at which bsuite counts DeepSea as solved, or ``None``.

    ``bad_episodes[i]`` is True when episode ``i + 1`` was bad: bsuite's env marks an episode
    bad when the agent took "left" while on the diagonal (the optimal path), which in the
    deterministic task is the same as missing the treasure (``not reached_treasure(ret)``).
    bsuite's ``experiments/deep_sea/analysis.py`` (0.3.6), ``find_solution``::

        df = df[df.episode <= num_episodes]
        df['avg_bad_episodes'] = df.total_bad_episodes / df.episode
        plt_df = df[df.avg_bad_episodes < thresh].groupby(sweep_vars)['episode']
        plt_df = plt_df.min().reset_index()

    with ``thresh=0.9`` and ``num_episodes=10000``: the first episode where the running
    fraction of bad episodes is below 0.9. Its rows are the episodes bsuite's logger
    records (1..10, 12, 14, 17, 20, 25, 30, 40, ...); ``log_every=True`` checks every
    episode (bsuite's ``Logging(log_every=True)``). A good first episode solves it at 1.
    """
    flags = np.asarray(bad_episodes)
    if flags.ndim != 1:
        raise ValueError(f"bad_episodes must be 1-D, got shape {flags.shape}")
    if flags.dtype != bool:
        if flags.size and not (np.issubdtype(flags.dtype, np.integer)
                               and np.isin(flags, (0, 1)).all()):
            raise ValueError("bad_episodes must be booleans (True = bad episode), got values "
                             f"of dtype {flags.dtype}; from returns use "
                             "[not reached_treasure(r) for r in returns]")
        flags = flags.astype(bool)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    if not _is_positive_int(num_episodes):
        raise ValueError(f"num_episodes must be an integer >= 1, got {num_episodes!r}")
    flags = flags[:num_episodes]
    episodes = np.arange(1, flags.size + 1)
    solved = np.cumsum(flags) / episodes < threshold
    if not log_every:
        solved &= _bsuite_logged(episodes)
    hits = np.flatnonzero(solved)
    return int(episodes[hits[0]]) if hits.size else None


def deep_sea_beats_dithering(solved_episode: int | None, size: int,
                             forgiveness: float = 100.0) -> bool:
    """bsuite's per-size score: solved in fewer than ``2**size + forgiveness`` episodes.

    ``analysis.score``: ``plt_df.solved & (plt_df.episode < 2 ** plt_df['size'] +
    forgiveness)``; the DeepSea score is the mean of this over the sizes 10, 12, ..., 50.
    """
    if not _is_positive_int(size):
        raise ValueError(f"size must be an integer >= 1, got {size!r}")
    return solved_episode is not None and solved_episode < 2 ** size + forgiveness
