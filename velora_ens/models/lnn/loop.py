"""The time loop every liquid cell runs: one step or a sequence, with episode resets.

A cell supplies its ``step(drive_t, h, dt_t) -> h_new`` and its per-step input
("drive", already computed for every step at once); :func:`unroll` zeroes the state
where an episode starts, steps, and collects the states. The CfC cell's fused scan
(:mod:`velora_ens.models.lnn.scan`) is a separate, hand-differentiated path; this loop
is the plain-autograd one, also the path a ``torch.jit.trace`` records.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["Step", "unroll"]

Step = Callable[[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor | None], torch.Tensor]
"""``step(drive_t, h, dt_t) -> h_new``: one step from that step's drive tensors."""


def unroll(
    step: Step,
    drive: tuple[torch.Tensor, ...],
    h: torch.Tensor,
    dt: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    *,
    time_dim: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``step`` for one step or along ``time_dim``; returns ``(states, h_last)``.

    ``keep`` is ``1 - episode_start`` (see :func:`~velora_ens.models.lnn.inputs.as_keep_mask`):
    before each step, ``h = h * keep_t`` where it is given. ``dt`` is the elapsed time
    (``None``: the step's default).

    * ``time_dim=None``: ``drive``, ``dt`` and ``keep`` are one step; returns
      ``(h_new, h_new)``.
    * ``time_dim=d``: they are sequences along dimension ``d`` (``drive`` must hold at
      least one tensor); returns every step's state stacked along ``d`` and the last one.
    """
    if time_dim is None:
        if keep is not None:
            h = h * keep
        h = step(drive, h, dt)
        return h, h
    # unbind, not indexing: a trace then records the sequence length and refuses another
    # one instead of silently running the traced number of steps.
    per_step = [d.unbind(time_dim) for d in drive]
    dt_t = None if dt is None else dt.unbind(time_dim)
    keep_t = None if keep is None else keep.unbind(time_dim)
    out = []
    for t in range(len(per_step[0])):
        if keep_t is not None:
            h = h * keep_t[t]
        h = step(tuple(d[t] for d in per_step), h, None if dt_t is None else dt_t[t])
        out.append(h)
    return torch.stack(out, time_dim), h
