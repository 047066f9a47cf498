"""On-policy storage for a recurrent agent: one rollout of ``n_steps`` rows per copy.

Rows are stored time-major ``(n_steps, n_envs, ...)``, one per step of the vector env,
including Gymnasium's NEXT_STEP reset rows (``valid`` false: no transition; masked out
of every loss). Beside each row the buffer keeps the recurrent states the networks had
*before* acting on it, so training can cut the rollout into windows of ``seq_len`` rows
that start from a known state: no padding, and resets happen inside the networks at
episode starts.

>>> buf = RolloutBuffer(n_steps=4, n_envs=2, obs_dim=3, action_shape=(), state_sizes=(5,))
>>> buf.windows(buf.obs, 2).shape        # (n_envs * n_steps // seq_len, seq_len, obs_dim)
torch.Size([4, 2, 3])
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["RolloutBuffer"]

# the tensors stored per row (shapes and dtypes are set in the constructor)
_FIELDS = ("obs", "actions", "rewards", "episode_start", "valid", "terminated", "dones",
           "values", "log_probs", "next_values", "dt")


class RolloutBuffer:
    """One rollout of ``n_steps`` rows for ``n_envs`` copies.

    Args:
        n_steps: rows per copy.
        n_envs: environment copies (columns).
        obs_dim: encoded (and normalised) observation size.
        action_shape: ``()`` for indices, ``(|A|,)`` for vectors.
        state_sizes: sizes of the recurrent states stored per row (actor, critic).
        device: where the tensors live.
    """

    def __init__(self, n_steps: int, n_envs: int, obs_dim: int, action_shape: tuple[int, ...],
                 state_sizes: tuple[int, ...], device: torch.device | str = "cpu") -> None:
        self.n_steps, self.n_envs = n_steps, n_envs
        shape = (n_steps, n_envs)
        f32, flag = torch.float32, torch.bool
        self.obs = torch.zeros(*shape, obs_dim, device=device)
        self.actions = torch.zeros(*shape, *action_shape, device=device,
                                   dtype=torch.int64 if action_shape == () else f32)
        for name in ("rewards", "values", "log_probs", "next_values"):
            setattr(self, name, torch.zeros(shape, dtype=f32, device=device))
        self.dt = torch.ones(*shape, 1, dtype=f32, device=device)  # elapsed time per row
        for name in ("episode_start", "valid", "terminated", "dones"):
            setattr(self, name, torch.zeros(shape, dtype=flag, device=device))
        self.states = [torch.zeros(*shape, size, device=device) for size in state_sizes]
        self.advantages = torch.zeros(shape, dtype=f32, device=device)
        self.returns = torch.zeros(shape, dtype=f32, device=device)
        self.pos = 0

    @property
    def full(self) -> bool:
        return self.pos == self.n_steps

    def reset(self) -> None:
        """Start a new rollout (the tensors are overwritten row by row)."""
        self.pos = 0

    def add(self, row: dict[str, torch.Tensor], states: list[torch.Tensor]) -> None:
        """Store one row: ``row`` has every field of :data:`_FIELDS` except
        ``next_values`` (the truncation bootstrap values may be given under that name;
        zero otherwise) and ``dt`` (the observations' elapsed times; 1 otherwise);
        ``states`` are the networks' states before the row."""
        if self.full:
            raise RuntimeError("the rollout is full; call reset() first")
        t = self.pos
        for name in _FIELDS:
            target = getattr(self, name)
            target[t] = row[name] if name in row else (1 if name == "dt" else 0)
        for target, state in zip(self.states, states, strict=True):
            target[t] = state
        self.pos += 1

    def windows(self, x: torch.Tensor, seq_len: int) -> torch.Tensor:
        """``(n_steps, n_envs, ...)`` -> ``(n_envs * n_steps // seq_len, seq_len, ...)``:
        window ``k`` of copy ``i`` is rows ``[k seq_len, (k + 1) seq_len)`` of column
        ``i`` (windows of one copy are consecutive)."""
        columns = x.transpose(0, 1)  # (n_envs, n_steps, ...)
        return columns.reshape(self.n_envs * (self.n_steps // seq_len), seq_len,
                               *x.shape[2:])

    def window_starts(self, per_row: torch.Tensor, seq_len: int) -> torch.Tensor:
        """The rows that start each window of :meth:`windows`: ``(n_windows, ...)``."""
        return self.windows(per_row, seq_len)[:, 0]

    # ------------------------------------------------------------------ saving
    def state_tensors(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The filled rows as named tensors (``ppo_rollout.<field>``) and a JSON note."""
        t = self.pos
        tensors = {f"ppo_rollout.{name}": getattr(self, name)[:t] for name in _FIELDS}
        tensors.update({f"ppo_rollout.state{i}": s[:t] for i, s in enumerate(self.states)})
        return {"rollout_rows": t}, tensors

    def load_state_tensors(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor],
                           source: Any) -> None:
        """Restore what :meth:`state_tensors` gave; ``source`` names the file in errors."""
        t = int(meta["rollout_rows"])
        if not 0 <= t <= self.n_steps:
            raise ValueError(f"{source}: the saved rollout has {t} rows, more than this "
                             f"agent's n_steps={self.n_steps}")
        named = {name: getattr(self, name) for name in _FIELDS}
        named.update({f"state{i}": s for i, s in enumerate(self.states)})
        for name, target in named.items():
            value = tensors[f"ppo_rollout.{name}"]
            if tuple(value.shape) != (t, *target.shape[1:]):
                raise ValueError(f"{source}: the saved rollout's {name} has shape "
                                 f"{tuple(value.shape)}, expected {(t, *target.shape[1:])} "
                                 "(n_envs or the networks differ)")
            target[:t] = value.to(target.device, target.dtype)
        self.pos = t
