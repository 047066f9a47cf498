"""What the networks see of an environment's spaces: observations as flat float vectors,
actions scaled between the policy's range and the environment's.

Observations are preprocessed as Stable-Baselines3's vector policies do
(``stable_baselines3.common.preprocessing.preprocess_obs``):

* ``Box`` (1-D): as given;
* ``Discrete(n, start)``: one-hot of ``obs - start`` (``n`` entries);
* ``MultiDiscrete(nvec)``: one one-hot per entry, concatenated (``sum(nvec)`` entries);
* ``MultiBinary(n)``: the bits as floats;
* ``Dict`` and ``Tuple`` of these: each part encoded, concatenated in the space's order
  (a ``Dict``'s keys are sorted by Gymnasium).

Images and other multi-dimensional ``Box`` observations are refused (no feature
extractor yet). Actions: ``Box`` actions live in ``[-1, 1]`` for the policy and are
rescaled to the bounds when stepping the environment; ``Discrete(n, start)`` actions are
indices ``0 .. n-1`` for the policy and ``start + index`` for the environment.

>>> enc = ObservationEncoder(gym.spaces.Discrete(3, start=1))
>>> enc.encode(np.array([1, 3]), batched=True)
array([[1., 0., 0.],
       [0., 0., 1.]], dtype=float32)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["ActionAdapter", "ObservationEncoder", "check_action_space"]

_SPACES = "Box (1-D), Discrete, MultiDiscrete, MultiBinary, or a Dict/Tuple of these"


def check_action_space(space: gym.Space) -> None:
    """Refuse action spaces the agents cannot act in, naming the space and what was
    expected: ``Box`` (1-D, finite bounds), ``Discrete``, ``MultiDiscrete`` (1-D) or
    ``MultiBinary`` (1-D)."""
    if isinstance(space, gym.spaces.Discrete):
        if space.n < 2:
            raise ValueError(f"Discrete action space needs at least 2 actions, got {space}")
        return
    if isinstance(space, gym.spaces.Box):
        if len(space.shape) != 1:
            raise ValueError(f"Box action space must be 1-D, got shape {space.shape}")
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ValueError(
                f"Box action space must have finite bounds, got {space}: the policy acts in "
                "[-1, 1] and rescales to the bounds; give the env finite bounds (e.g. "
                "gymnasium.wrappers.RescaleAction or ClipAction around it)")
        return
    if isinstance(space, gym.spaces.MultiDiscrete):
        if space.nvec.ndim != 1 or space.nvec.size == 0 or np.any(space.nvec < 1):
            raise ValueError(f"MultiDiscrete action space must be 1-D with every entry "
                             f">= 1, got {space} (nvec {space.nvec.tolist()})")
        return
    if isinstance(space, gym.spaces.MultiBinary):
        if len(space.shape) != 1 or space.shape[0] < 1:
            raise ValueError(f"MultiBinary action space must be 1-D, got shape {space.shape}")
        return
    raise ValueError(f"the agents support Box, Discrete, MultiDiscrete and MultiBinary "
                     f"action spaces, got {type(space).__name__} ({space})")


class ObservationEncoder:
    """Turns observations of ``space`` into float vectors of size :attr:`dim`."""

    def __init__(self, space: gym.Space) -> None:
        self.space = space
        self.dim = self._dim(space)
        self.identity = isinstance(space, gym.spaces.Box)

    @classmethod
    def _dim(cls, space: gym.Space) -> int:
        if isinstance(space, gym.spaces.Box):
            if len(space.shape) != 1:
                kind = "image" if len(space.shape) == 3 else "multi-dimensional"
                raise ValueError(
                    f"the agents need 1-D vector observations, got {kind} observations of "
                    f"shape {space.shape} ({space}); add a feature extractor or flatten them "
                    "first")
            return int(space.shape[0])
        if isinstance(space, gym.spaces.Discrete):
            return int(space.n)
        if isinstance(space, gym.spaces.MultiDiscrete):
            if space.nvec.ndim != 1:
                raise ValueError(f"MultiDiscrete observations must be 1-D, got {space}")
            return int(space.nvec.sum())
        if isinstance(space, gym.spaces.MultiBinary):
            if len(space.shape) != 1:
                raise ValueError(f"MultiBinary observations must be 1-D, got {space}")
            return int(space.shape[0])
        if isinstance(space, gym.spaces.Dict):
            return sum(cls._dim(s) for s in space.spaces.values())
        if isinstance(space, gym.spaces.Tuple):
            return sum(cls._dim(s) for s in space.spaces)
        raise ValueError(f"unsupported observation space {space}; expected {_SPACES}")

    # ------------------------------------------------------------------ batching
    def is_batched(self, obs: Any) -> bool:
        """Whether ``obs`` holds several observations (``predict``'s single-or-batch rule)."""
        space = self.space
        if isinstance(space, gym.spaces.Dict):
            key = next(iter(space.spaces))
            return ObservationEncoder(space[key]).is_batched(_part(obs, key, space))
        if isinstance(space, gym.spaces.Tuple):
            return ObservationEncoder(space[0]).is_batched(_part(obs, 0, space))
        if isinstance(space, gym.spaces.Discrete):
            return np.ndim(obs) == 1
        return np.ndim(obs) == 2

    # ------------------------------------------------------------------ encoding
    def encode(self, obs: Any, batched: bool) -> np.ndarray:
        """``(n, dim)`` vectors of a batch (``batched``) or ``(dim,)`` of one observation.

        A ``Box`` observation is returned as given (no copy). Values outside a discrete
        space raise ``ValueError`` naming the value."""
        if self.identity:
            return obs if isinstance(obs, np.ndarray) else np.asarray(obs)
        out = self._encode(self.space, obs if batched else _add_batch(self.space, obs))
        return out if batched else out[0]

    @classmethod
    def _encode(cls, space: gym.Space, obs: Any) -> np.ndarray:
        if isinstance(space, gym.spaces.Box):
            arr = np.asarray(obs, dtype=np.float32)
            if arr.ndim != 2 or arr.shape[1] != space.shape[0]:
                raise ValueError(f"expected observations of shape (n, {space.shape[0]}) for "
                                 f"{space}, got {arr.shape}")
            return arr
        if isinstance(space, gym.spaces.Discrete):
            return _one_hot(np.asarray(obs).reshape(-1), int(space.start), int(space.n), space)
        if isinstance(space, gym.spaces.MultiDiscrete):
            arr = np.asarray(obs)
            if arr.ndim != 2 or arr.shape[1] != len(space.nvec):
                raise ValueError(f"expected observations of shape (n, {len(space.nvec)}) for "
                                 f"{space}, got {arr.shape}")
            starts = np.broadcast_to(getattr(space, "start", 0), space.nvec.shape)
            return np.concatenate([_one_hot(arr[:, k], int(starts[k]), int(n), space)
                                   for k, n in enumerate(space.nvec)], axis=1)
        if isinstance(space, gym.spaces.MultiBinary):
            arr = np.asarray(obs)
            if arr.ndim != 2 or arr.shape[1] != space.shape[0] \
                    or not np.isin(arr, (0, 1)).all():
                raise ValueError(f"expected (n, {space.shape[0]}) arrays of 0/1 for {space}, "
                                 f"got {arr!r:.80}")
            return arr.astype(np.float32)
        if isinstance(space, gym.spaces.Dict):
            return np.concatenate([cls._encode(s, _part(obs, k, space))
                                   for k, s in space.spaces.items()], axis=1)
        if isinstance(space, gym.spaces.Tuple):
            return np.concatenate([cls._encode(s, _part(obs, i, space))
                                   for i, s in enumerate(space.spaces)], axis=1)
        raise ValueError(f"unsupported observation space {space}; expected {_SPACES}")


def _part(obs: Any, key: Any, space: gym.Space) -> Any:
    try:
        return obs[key]
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"expected an observation of {space} with part {key!r}, got "
                         f"{obs!r:.80}") from None


def _add_batch(space: gym.Space, obs: Any) -> Any:
    if isinstance(space, gym.spaces.Dict):
        return {k: _add_batch(s, _part(obs, k, space)) for k, s in space.spaces.items()}
    if isinstance(space, gym.spaces.Tuple):
        return tuple(_add_batch(s, _part(obs, i, space)) for i, s in enumerate(space.spaces))
    return np.asarray(obs)[None]


def _one_hot(values: np.ndarray, start: int, n: int, space: gym.Space) -> np.ndarray:
    index = values - start
    ok = np.issubdtype(values.dtype, np.integer) or np.all(np.mod(values, 1) == 0)
    if not ok or np.any(index < 0) or np.any(index >= n):
        raise ValueError(f"observation {values.tolist()!r:.80} is outside {space}: expected "
                         f"integers in [{start}, {start + n - 1}]")
    out = np.zeros((len(values), n), np.float32)
    out[np.arange(len(values)), index.astype(np.int64)] = 1.0
    return out


class ActionAdapter:
    """Scales actions between the policy's range and the environment's ``space``: Box
    vectors between ``[-1, 1]`` and the bounds; Discrete and MultiDiscrete indices between
    ``0 ..`` and ``start ..``; MultiBinary bits as the space's dtype."""

    def __init__(self, space: gym.Space) -> None:
        check_action_space(space)
        self.space = space
        self.discrete = not isinstance(space, gym.spaces.Box)
        start = (getattr(space, "start", 0)
                 if isinstance(space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)) else 0)
        self.start = np.asarray(start, np.int64)
        self.shifted = bool(np.any(self.start != 0))

    def to_env(self, action: np.ndarray) -> np.ndarray:
        """Policy actions (``[-1, 1]`` vectors or indices) to what the environment takes."""
        if self.discrete:
            action = np.asarray(action)
            if isinstance(self.space, gym.spaces.MultiBinary):
                return action.astype(self.space.dtype)
            return action.astype(np.int64) + self.start if self.shifted else \
                action.astype(np.int64)
        low, high = self.space.low, self.space.high
        return (low + 0.5 * (action + 1.0) * (high - low)).astype(self.space.dtype)

    def from_env(self, action: np.ndarray) -> np.ndarray:
        """Environment actions to the policy's range (the inverse of :meth:`to_env`)."""
        if self.discrete:
            action = np.asarray(action).astype(np.int64)
            return action - self.start if self.shifted else action
        low, high = self.space.low, self.space.high
        return 2.0 * (action - low) / (high - low) - 1.0

    def sample(self, n: int) -> np.ndarray:
        """``n`` uniformly random actions in the policy's range, from the space's seeded
        generator."""
        return np.stack([self.from_env(np.asarray(self.space.sample())) for _ in range(n)])
