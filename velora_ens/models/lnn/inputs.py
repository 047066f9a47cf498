"""Validation and normalisation of the inputs every liquid cell and network takes.

One place decides the accepted shapes, so the CfC cell, the LTC cell and the networks
raise the same clear errors:

* features ``x``: ``(B, F)`` for one step or ``(B, L, F)`` for a sequence;
* hidden state ``h``: ``(B, H)``;
* elapsed time ``dt``: a number, or a tensor of shape ``(B,)``/``(B, 1)`` (one value per
  sample) or, for sequences, ``(B, L)``/``(B, L, 1)`` (one value per sample and step);
* ``episode_start``: ``(B,)`` for one step, ``(B, L)`` for a sequence; truthy entries
  reset the state to zero *before* that step is processed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = ["CellInputs", "as_elapsed_time", "as_features", "as_keep_mask", "as_state",
           "cell_inputs"]


def as_features(x: Any, in_features: int, like: torch.Tensor, who: str) -> torch.Tensor:
    """Return ``x`` as a floating tensor on ``like``'s device and dtype, rank 2 or 3."""
    if isinstance(x, np.ndarray) or not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{who} expected a tensor of shape (B, {in_features}) or "
                             f"(B, L, {in_features}), got {type(x).__name__}") from err
    if x.dim() not in (2, 3):
        raise ValueError(
            f"{who} expected input of rank 2 (B, {in_features}) or rank 3 (B, L, {in_features}), "
            f"got shape {tuple(x.shape)} (rank {x.dim()})"
        )
    if x.shape[-1] != in_features:
        raise ValueError(
            f"{who} expected {in_features} input features in the last dimension, "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0 or (x.dim() == 3 and x.shape[1] == 0):
        raise ValueError(f"{who} got an empty input of shape {tuple(x.shape)}")
    if x.dtype != like.dtype or x.device != like.device:
        x = x.to(device=like.device, dtype=like.dtype)
    return x


def as_state(h: Any, batch: int, hidden: int, like: torch.Tensor, who: str) -> torch.Tensor:
    """Return the hidden state ``(B, H)``; zeros when ``h`` is ``None``."""
    if h is None:
        return like.new_zeros(batch, hidden)
    if not isinstance(h, torch.Tensor):
        h = torch.as_tensor(np.asarray(h))
    if tuple(h.shape) != (batch, hidden):
        raise ValueError(
            f"{who} expected a hidden state of shape (B, H) = ({batch}, {hidden}), "
            f"got {tuple(h.shape)}"
        )
    if h.dtype != like.dtype or h.device != like.device:
        h = h.to(device=like.device, dtype=like.dtype)
    return h


def as_elapsed_time(
    dt: Any, batch: int, steps: int | None, like: torch.Tensor, who: str
) -> torch.Tensor | None:
    """Elapsed times as ``(B, 1)`` (one step) or ``(B, L, 1)`` (sequence); ``None`` means 1.

    A per-sample tensor is **never** broadcast along the hidden dimension (the ncps
    bug where ``(B,)`` silently lines up with ``H`` when ``B == H``).
    """
    if dt is None:
        return None
    if isinstance(dt, (int, float)) and not isinstance(dt, bool):
        t = like.new_full((batch, 1) if steps is None else (batch, steps, 1), float(dt))
    else:
        t = dt if isinstance(dt, torch.Tensor) else torch.as_tensor(np.asarray(dt))
        t = t.to(device=like.device, dtype=like.dtype)
        shape = tuple(t.shape)
        if steps is None:
            if shape in ((batch,), (batch, 1)):
                t = t.reshape(batch, 1)
            elif shape in ((), (1,)):
                t = t.reshape(1, 1).expand(batch, 1)
            else:
                raise ValueError(
                    f"{who} expected dt to be a number or of shape (B,) or (B, 1) with "
                    f"B={batch}, got {shape}"
                )
        else:
            if shape in ((batch, steps), (batch, steps, 1)):
                t = t.reshape(batch, steps, 1)
            elif shape in ((batch,), (batch, 1)):
                t = t.reshape(batch, 1, 1).expand(batch, steps, 1)
            elif shape in ((), (1,)):
                t = t.reshape(1, 1, 1).expand(batch, steps, 1)
            else:
                raise ValueError(
                    f"{who} expected dt to be a number or of shape (B, L), (B, L, 1), (B,) or "
                    f"(B, 1) with B={batch}, L={steps}, got {shape}"
                )
    message = f"{who} expected finite, non-negative elapsed times dt"
    if torch.compiler.is_compiling():
        # A compiled graph cannot branch on values: it checks them when it runs (a
        # RuntimeError with the same message) instead of breaking the graph here.
        torch._assert_async((torch.isfinite(t) & (t >= 0)).all(), message)
        return t
    values = _unwrapped(t)
    if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
        raise ValueError(message)
    return t


def _unwrapped(t: torch.Tensor) -> torch.Tensor:
    """The plain tensor under ``torch.func`` wrappers (``vmap``'s holds every batch's
    values), so that checks on values also run inside those transforms, where branching on
    a batched tensor is an error."""
    while torch._C._functorch.is_functorch_wrapped_tensor(t):
        t = torch._C._functorch.get_unwrapped(t)
    return t


def as_keep_mask(
    episode_start: Any, batch: int, steps: int | None, like: torch.Tensor, who: str
) -> torch.Tensor | None:
    """``1 - episode_start`` as ``(B, 1)`` or ``(B, L, 1)``; ``None`` when nothing resets."""
    if episode_start is None:
        return None
    s = episode_start if isinstance(episode_start, torch.Tensor) else torch.as_tensor(
        np.asarray(episode_start))
    expected = (batch,) if steps is None else (batch, steps)
    if tuple(s.shape) not in (expected, expected + (1,)):
        raise ValueError(
            f"{who} expected episode_start of shape {expected}, got {tuple(s.shape)}"
        )
    s = s.to(device=like.device)
    keep = (s == 0).to(like.dtype).reshape(expected + (1,))
    return keep


class CellInputs(NamedTuple):
    """A cell's ``forward`` arguments, checked and converted (:func:`cell_inputs`)."""

    x: torch.Tensor               # (B, F) or (B, L, F)
    h: torch.Tensor               # (B, H)
    dt: torch.Tensor | None       # (B, 1) or (B, L, 1)
    keep: torch.Tensor | None     # 1 - episode_start, (B, 1) or (B, L, 1)
    steps: int | None             # L, or None for one step


def cell_inputs(cell: Any, x: Any, h: Any, dt: Any, episode_start: Any, like: torch.Tensor
                ) -> CellInputs:
    """Every argument of a cell's ``forward(x, h, dt, episode_start)`` checked against
    the cell's ``in_features`` and ``n_hidden``, and converted to ``like``'s dtype and
    device; errors name the cell's class."""
    who = type(cell).__name__
    x = as_features(x, cell.in_features, like, who)
    batch = x.shape[0]
    steps = x.shape[1] if x.dim() == 3 else None
    return CellInputs(x, as_state(h, batch, cell.n_hidden, like, who),
                      as_elapsed_time(dt, batch, steps, like, who),
                      as_keep_mask(episode_start, batch, steps, like, who), steps)
