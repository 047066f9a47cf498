"""Distributions over discrete actions, one small object per space kind.

* :class:`Categoricals`: ``Discrete(n)`` (one categorical over ``n`` logits) and
  ``MultiDiscrete(nvec)`` (independent categoricals, one per entry, over ``sum(nvec)``
  logits), as Stable-Baselines3's ``CategoricalDistribution`` and
  ``MultiCategoricalDistribution``;
* :class:`Bernoullis`: ``MultiBinary(n)``, one independent Bernoulli per bit over ``n``
  logits, as SB3's ``BernoulliDistribution``.

Actions are policy indices: ``0 .. n_d - 1`` per entry (an environment's ``start`` is
added by :class:`agents.driver.spaces.ActionAdapter`), shaped ``(batch,)`` for
``Discrete`` and ``(batch, D)`` otherwise. Log-probabilities and entropies sum over the
entries (the entries are independent given the state).

Soft actor-critic with factorised actions reads the per-entry **tables**: the
log-probabilities of every value of every entry, in groups of equal-size entries shaped
``(..., k, n)``. A ``MultiBinary`` bit is a table of two values (0 and 1), so
:attr:`Bernoullis.tables` is the :class:`Categoricals` layout ``(2,) * n``.

>>> dist = Categoricals((3, 3, 2))
>>> logits = torch.zeros(1, dist.n_outputs)
>>> [tuple(t.shape) for t in dist.log_prob_tables(logits)]
[(1, 2, 3), (1, 1, 2)]
>>> float(dist.entropy(logits)) == math.log(3) * 2 + math.log(2)
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import gymnasium as gym
import torch
from torch.nn import functional as F

__all__ = ["Bernoullis", "Categoricals", "DiscreteActions", "discrete_actions"]


class Categoricals:
    """Independent categoricals over the logits of ``nvec`` entries (``single``: the one
    categorical of a ``Discrete`` space, whose actions have no entry axis)."""

    def __init__(self, nvec: Sequence[int], single: bool = False) -> None:
        self.nvec = tuple(int(n) for n in nvec)
        if single and len(self.nvec) != 1:
            raise ValueError(f"a single categorical has one entry, got nvec={self.nvec}")
        self.single = single
        #: consecutive entries of equal size, as (first entry, count, size)
        self.groups: list[tuple[int, int, int]] = []
        for d, n in enumerate(self.nvec):
            if self.groups and self.groups[-1][2] == n:
                first, count, _ = self.groups[-1]
                self.groups[-1] = (first, count + 1, n)
            else:
                self.groups.append((d, 1, n))

    @property
    def tables(self) -> Categoricals:
        """The layout of the per-entry value tables (these categoricals themselves)."""
        return self

    @property
    def n_outputs(self) -> int:
        """Logits the policy outputs."""
        return sum(self.nvec)

    @property
    def n_entries(self) -> int:
        return len(self.nvec)

    @property
    def action_shape(self) -> tuple[int, ...]:
        return () if self.single else (self.n_entries,)

    @property
    def max_entropy(self) -> float:
        """The entropy of the uniform policy, ``sum_d log n_d``."""
        return sum(math.log(n) for n in self.nvec)

    def split(self, values: torch.Tensor) -> list[torch.Tensor]:
        """``(..., sum(nvec))`` -> one ``(..., k, n)`` tensor per group of equal entries."""
        if len(self.groups) == 1:
            _, count, n = self.groups[0]
            return [values.unflatten(-1, (count, n))]
        parts = values.split([count * n for _, count, n in self.groups], -1)
        return [p.unflatten(-1, (count, n))
                for p, (_, count, n) in zip(parts, self.groups, strict=True)]

    def log_prob_tables(self, logits: torch.Tensor) -> list[torch.Tensor]:
        """Log-probabilities of every value of every entry, per group ``(..., k, n)``."""
        return [F.log_softmax(g, -1) for g in self.split(logits)]

    def _entries(self, actions: torch.Tensor) -> torch.Tensor:
        """Actions as ``(..., D)`` long indices."""
        actions = actions.long()
        return actions.unsqueeze(-1) if self.single else actions

    def _shape(self, entries: torch.Tensor) -> torch.Tensor:
        return entries.squeeze(-1) if self.single else entries

    def gather(self, tables: list[torch.Tensor], entries: torch.Tensor) -> torch.Tensor:
        """The tables' values ``(..., D)`` (``tables`` as :meth:`split`) at ``entries``,
        the actions as long indices ``(..., D)`` (also for a single categorical)."""
        out = [t.gather(-1, entries[..., first:first + count].unsqueeze(-1)).squeeze(-1)
               for t, (first, count, _) in zip(tables, self.groups, strict=True)]
        return out[0] if len(out) == 1 else torch.cat(out, -1)

    def log_prob_entropy(self, logits: torch.Tensor, actions: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of ``actions`` and the entropy, summed over the entries."""
        tables = self.log_prob_tables(logits)
        log_prob = self.gather(tables, self._entries(actions)).sum(-1)
        entropy = sum(-(t.exp() * t).sum((-2, -1)) for t in tables)
        return log_prob, entropy

    def entropy(self, logits: torch.Tensor) -> torch.Tensor:
        return sum(-(t.exp() * t).sum((-2, -1)) for t in self.log_prob_tables(logits))

    def sample(self, logits: torch.Tensor) -> torch.Tensor:
        """One action per row of ``logits`` ``(batch, n_outputs)``."""
        entries = [torch.multinomial(F.softmax(g, -1).reshape(-1, n), 1).reshape(g.shape[:-1])
                   for g, (_, _, n) in zip(self.split(logits), self.groups, strict=True)]
        return self._shape(entries[0] if len(entries) == 1 else torch.cat(entries, -1))

    def mode(self, logits: torch.Tensor) -> torch.Tensor:
        """The most likely value of every entry."""
        entries = [g.argmax(-1) for g in self.split(logits)]
        return self._shape(entries[0] if len(entries) == 1 else torch.cat(entries, -1))

    def one_hot(self, actions: torch.Tensor) -> torch.Tensor:
        """``(n, sum(nvec))``: one one-hot per entry, concatenated (actions ``(n, ...)``)."""
        entries = self._entries(actions).reshape(actions.shape[0], self.n_entries)
        return torch.cat([F.one_hot(entries[:, d], n) for d, n in enumerate(self.nvec)],
                         -1).float()


class Bernoullis:
    """One independent Bernoulli per bit, over ``n`` logits (``P(bit = 1) =
    sigmoid(logit)``)."""

    single = False

    def __init__(self, n: int) -> None:
        self.n = int(n)
        self.tables = Categoricals((2,) * self.n)

    @property
    def n_outputs(self) -> int:
        return self.n

    @property
    def n_entries(self) -> int:
        return self.n

    @property
    def action_shape(self) -> tuple[int, ...]:
        return (self.n,)

    @property
    def max_entropy(self) -> float:
        return self.n * math.log(2)

    def log_prob_tables(self, logits: torch.Tensor) -> list[torch.Tensor]:
        """``(..., n, 2)``: the log-probabilities of 0 and of 1 for every bit."""
        return [torch.stack([F.logsigmoid(-logits), F.logsigmoid(logits)], -1)]

    def log_prob_entropy(self, logits: torch.Tensor, actions: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        log_prob = -F.binary_cross_entropy_with_logits(logits, actions.to(logits.dtype),
                                                       reduction="none").sum(-1)
        return log_prob, self.entropy(logits)

    def entropy(self, logits: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        return F.binary_cross_entropy_with_logits(logits, p, reduction="none").sum(-1)

    def sample(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(logits)).long()

    def mode(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits > 0).long()

    def one_hot(self, actions: torch.Tensor) -> torch.Tensor:
        return self.tables.one_hot(actions)


DiscreteActions = Categoricals | Bernoullis


def discrete_actions(space: gym.Space) -> DiscreteActions | None:
    """The distribution of a discrete action space (``None`` for ``Box``)."""
    if isinstance(space, gym.spaces.Discrete):
        return Categoricals((int(space.n),), single=True)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return Categoricals(space.nvec.reshape(-1).tolist())
    if isinstance(space, gym.spaces.MultiBinary):
        return Bernoullis(int(math.prod(space.shape)))
    return None

