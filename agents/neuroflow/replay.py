"""Replay of whole trajectories, sampled as fixed-length sequences for recurrent actors.

Each of the ``n_envs`` environment streams has its own ring of ``capacity`` steps, kept
in the order they happened, so a sequence is a run of consecutive steps of one stream.
A step stores the observation, the action, the reward, the real next observation, the
``terminated`` flag, whether the observation **starts** an episode, and the actor's
recurrent state just before it read the observation (the "stored state" of R2D2). A
buffer built with ``elapsed=True`` also keeps the elapsed time before the observation
(``dt``) and before the real next observation (``next_dt``), for agents that feed it to
their liquid cells.

A sequence may run across an episode boundary: its ``episode_start`` flags go to the
network, which resets the state to zero at that step, so no step ever sees the state of
another episode. A sequence never spans the ring's write position (old and new data).
:func:`unroll_with_burn_in` runs a network over sampled sequences as R2D2 does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["SequenceBatch", "SequenceReplayBuffer", "unroll_with_burn_in"]

# saved field -> attribute
_FIELDS = {"obs": "obs", "next_obs": "next_obs", "actions": "actions", "rewards": "rewards",
           "terminated": "terminated", "episode_start": "episode_start", "states": "states",
           "pos": "pos", "size": "sizes"}
_ELAPSED_FIELDS = {"dt": "dt", "next_dt": "next_dt"}


@dataclass
class SequenceBatch:
    """``B`` sequences of ``T`` steps; every tensor is ``(B, T, ...)`` except
    ``start_state`` ``(B, H)``, the stored actor state before the first step, and the
    elapsed times ``dt`` and ``next_dt`` ``(B, T, 1)`` (``None`` unless the buffer keeps
    them)."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    episode_start: torch.Tensor
    start_state: torch.Tensor
    dt: torch.Tensor | None = None
    next_dt: torch.Tensor | None = None
    masks: torch.Tensor | None = None


class SequenceReplayBuffer:
    """Per-environment rings of transitions, sampled as sequences.

    Args:
        capacity: steps kept per environment stream.
        n_envs: number of streams.
        obs_dim: observation size.
        action_dim: action size (1 for a discrete action index).
        state_dim: size of the actor's recurrent state.
        elapsed: also keep the elapsed times ``dt`` and ``next_dt`` of every step.
        mask_dim: also keep this many bootstrap masks per step (one per critic member,
            drawn once when the step is stored; 0: none).
    """

    def __init__(self, capacity: int, n_envs: int, obs_dim: int, action_dim: int,
                 state_dim: int, elapsed: bool = False, mask_dim: int = 0) -> None:
        if capacity < 1 or n_envs < 1:
            raise ValueError(f"capacity and n_envs must be >= 1, got {capacity}, {n_envs}")
        self.capacity, self.n_envs = int(capacity), int(n_envs)
        # One record per step holds every field side by side, so that sampling gathers
        # one array once instead of seven; the fields are views into it.
        widths = {"obs": obs_dim, "next_obs": obs_dim, "actions": action_dim, "rewards": 0,
                  "terminated": 0, "episode_start": 0, "states": state_dim}
        self.elapsed = bool(elapsed)
        if self.elapsed:
            widths.update(dt=1, next_dt=1)
        self.mask_dim = int(mask_dim)
        if self.mask_dim:
            widths["masks"] = self.mask_dim
        self._fields = {**_FIELDS, **(_ELAPSED_FIELDS if self.elapsed else {}),
                        **({"masks": "masks"} if self.mask_dim else {})}
        self._records = np.zeros((self.n_envs, self.capacity,
                                  sum(max(w, 1) for w in widths.values())), np.float32)
        self._columns: dict[str, int | slice] = {}
        start = 0
        for name, width in widths.items():
            column = start if width == 0 else slice(start, start + width)
            self._columns[name] = column
            start += max(width, 1)
        self.obs = self._records[..., self._columns["obs"]]
        self.next_obs = self._records[..., self._columns["next_obs"]]
        self.actions = self._records[..., self._columns["actions"]]
        self.rewards = self._records[..., self._columns["rewards"]]
        self.terminated = self._records[..., self._columns["terminated"]]
        self.episode_start = self._records[..., self._columns["episode_start"]]
        self.states = self._records[..., self._columns["states"]]
        if self.elapsed:
            self.dt = self._records[..., self._columns["dt"]]
            self.next_dt = self._records[..., self._columns["next_dt"]]
        if self.mask_dim:
            self.masks = self._records[..., self._columns["masks"]]
        self.pos = np.zeros(self.n_envs, np.int64)  # next write index per stream
        self.sizes = np.zeros(self.n_envs, np.int64)  # steps held per stream

    def __len__(self) -> int:
        return int(self.sizes.sum())

    def size(self) -> int:
        """Transitions held, over every stream (Stable-Baselines3's ``size()``)."""
        return len(self)

    def add(self, env_ids: np.ndarray, obs: np.ndarray, actions: np.ndarray,
            rewards: np.ndarray, next_obs: np.ndarray, terminated: np.ndarray,
            episode_start: np.ndarray, states: np.ndarray, dt: np.ndarray | None = None,
            next_dt: np.ndarray | None = None, masks: np.ndarray | None = None) -> None:
        """Append one step to each stream in ``env_ids`` (arrays are indexed like
        ``env_ids``); ``dt`` and ``next_dt`` are required exactly when the buffer keeps
        elapsed times, ``masks`` ``(n, mask_dim)`` when it keeps masks."""
        if (dt is None or next_dt is None) == self.elapsed:
            raise ValueError("this buffer " + ("keeps" if self.elapsed else "does not keep")
                             + " elapsed times: give dt and next_dt "
                             + ("" if self.elapsed else "only ") + "when built with "
                             "elapsed=True")
        if (masks is None) != (self.mask_dim == 0):
            raise ValueError(f"this buffer keeps {self.mask_dim} masks per step: give masks "
                             "exactly when mask_dim > 0")
        env_ids = np.asarray(env_ids, dtype=np.int64)
        if env_ids.size == 0:
            return
        pos = self.pos[env_ids]
        n = len(env_ids)
        fields = [obs, next_obs, actions, rewards, terminated, episode_start, states]
        if self.elapsed:
            fields += [dt, next_dt]
        if self.mask_dim:
            fields.append(masks)
        # the fields side by side, in the record's column order, written at once
        self._records[env_ids, pos] = np.concatenate(
            [np.reshape(np.asarray(field), (n, -1)) for field in fields], axis=1)
        self.pos[env_ids] = (pos + 1) % self.capacity
        self.sizes[env_ids] = np.minimum(self.sizes[env_ids] + 1, self.capacity)

    def can_sample(self, length: int) -> bool:
        """Whether some stream holds at least ``length`` consecutive steps."""
        return bool((self.sizes >= length).any())

    def sample_indices(self, n_sequences: int, length: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Streams ``(B,)`` and ring indices ``(B, length)`` of uniformly drawn sequences.

        Every window of ``length`` consecutive stored steps is equally likely.
        """
        if self.n_envs == 1:  # the common case, without the per-stream bookkeeping
            size = int(self.sizes[0])
            total = max(size - length + 1, 0)
        else:
            windows = np.clip(self.sizes - length + 1, 0, None)
            total = int(windows.sum())
        if total == 0:
            raise ValueError(f"no stream holds {length} steps yet (sizes {self.sizes.tolist()})")
        flat = rng.integers(0, total, size=n_sequences)
        if self.n_envs == 1:
            env = np.zeros(n_sequences, np.int64)
            start = flat + (int(self.pos[0]) - size) % self.capacity
        else:
            ends = np.cumsum(windows)
            env = np.searchsorted(ends, flat, side="right")
            start = flat - (ends - windows)[env] + (self.pos[env] - self.sizes[env]) % self.capacity
        idx = start[:, None] + np.arange(length)
        return env, idx % self.capacity

    def sample(self, n_sequences: int, length: int, rng: np.random.Generator,
               device: torch.device | str = "cpu") -> SequenceBatch:
        """``n_sequences`` sequences of ``length`` consecutive steps as tensors."""
        env, idx = self.sample_indices(n_sequences, length, rng)
        # (B, L, record): one gather, from the flattened rings
        records = np.take(self._records.reshape(-1, self._records.shape[-1]),
                          (env[:, None] * self.capacity + idx).ravel(), axis=0
                          ).reshape(*idx.shape, -1)
        columns = self._columns

        def t(name: str, steps: slice = slice(None)) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(records[:, steps, columns[name]]),
                                   device=device)

        return SequenceBatch(
            obs=t("obs"),
            actions=t("actions"),
            rewards=t("rewards"),
            next_obs=t("next_obs"),
            terminated=t("terminated"),
            episode_start=t("episode_start"),
            start_state=t("states", 0),
            dt=t("dt") if self.elapsed else None,
            next_dt=t("next_dt") if self.elapsed else None,
            masks=t("masks") if self.mask_dim else None,
        )

    # ------------------------------------------------------------------ saving
    def state_tensors(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The contents as named tensors (``buffer.<field>``) and a JSON note; before the
        rings wrap around, only their filled start is stored."""
        wrapped = bool((self.sizes == self.capacity).any() or (self.pos != self.sizes).any())
        stored = self.capacity if wrapped else int(self.sizes.max())
        tensors = {}
        for field, attribute in self._fields.items():
            value = getattr(self, attribute)
            if value.ndim >= 2:  # (n_envs, capacity, ...) arrays; pos and size are (n_envs,)
                value = value[:, :stored]
            tensors[f"buffer.{field}"] = torch.from_numpy(np.ascontiguousarray(value))
        return {"buffer_steps_stored": stored}, tensors

    def load_state_tensors(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor],
                           source: Any) -> None:
        """Restore what :meth:`state_tensors` gave; ``source`` names the file in errors."""
        for field, attribute in self._fields.items():
            if f"buffer.{field}" not in tensors:
                hint = (" (it was saved by an agent without elapsed_time_key)"
                        if field in _ELAPSED_FIELDS else "")
                raise ValueError(f"{source}: the saved replay buffer has no {field!r}{hint}")
            value = tensors[f"buffer.{field}"].numpy()
            target = getattr(self, attribute)
            if value.ndim >= 2:
                if value.shape[0] != target.shape[0] or value.shape[2:] != target.shape[2:] \
                        or value.shape[1] > target.shape[1]:
                    raise ValueError(f"{source}: the saved replay buffer's {field} has shape "
                                     f"{value.shape}, which does not fit this agent's "
                                     f"{target.shape} (buffer_size or n_envs differ)")
                target[:, :value.shape[1]] = value
            elif value.shape != target.shape:
                raise ValueError(f"{source}: the saved replay buffer's {field} has shape "
                                 f"{value.shape}, this agent's {target.shape} (n_envs differ)")
            else:
                target[...] = value


def unroll_with_burn_in(net: torch.nn.Module, obs: torch.Tensor, episode_start: torch.Tensor,
                        state: torch.Tensor, burn_in: int, dt: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Refresh the stored ``state`` over the first ``burn_in`` steps without gradients,
    then run the trained steps; returns their outputs and states ``(B, T - burn_in, ...)``
    (R2D2). ``net`` is a liquid network or actor (``final_state`` and a sequence call);
    ``dt``: the elapsed times of all the steps ``(B, T, 1)`` (``None``: the cells'
    default)."""
    if burn_in:
        with torch.no_grad():
            state = net.final_state(obs[:, :burn_in], state,
                                    episode_start=episode_start[:, :burn_in],
                                    dt=None if dt is None else dt[:, :burn_in])
    return net(obs[:, burn_in:], state, episode_start=episode_start[:, burn_in:],
               return_states=True, dt=None if dt is None else dt[:, burn_in:])
