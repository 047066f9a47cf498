"""Schedules of a hyperparameter over one ``learn`` call, as Stable-Baselines3 and RL Zoo
write them.

A schedule is a function of the progress remaining: 1 at the start of a ``learn`` call,
0 at its end. Every algorithm reads its scheduled settings (learning rate, clip range,
...) through :func:`as_schedule`, so the three spellings below mean the same everywhere:

* a number: constant;
* ``"lin_<x>"`` (RL Zoo): ``x`` times the progress remaining, e.g. ``"lin_1e-3"``;
* a callable ``f(progress_remaining) -> float`` (SB3).

>>> lr = as_schedule("lin_1e-3", "learning_rate")
>>> lr(1.0), lr(0.5)
(0.001, 0.0005)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["CheckedSchedule", "Schedule", "as_schedule", "constant_schedule", "linear_schedule",
           "progress_remaining"]

Schedule = Callable[[float], float]


def constant_schedule(value: float) -> Schedule:
    """A schedule that always returns ``value``."""
    value = float(value)
    return lambda progress_remaining: value


def linear_schedule(spec: str, name: str = "learning_rate") -> Schedule:
    """RL Zoo's ``"lin_<x>"``: ``x`` times the progress remaining."""
    try:
        if not spec.startswith("lin_"):
            raise ValueError
        start = float(spec[4:])
    except ValueError:
        raise ValueError(f"{name} {spec!r} is not a schedule; expected 'lin_<number>', "
                         f"e.g. 'lin_1e-3', a number or a callable") from None
    if not start > 0:
        raise ValueError(f"{name} {spec!r}: the initial value must be > 0")
    return lambda progress_remaining: progress_remaining * start


class CheckedSchedule:
    """A schedule whose values are checked when it is called; ``constant`` says whether it
    was given as a plain number (so nothing needs updating during training)."""

    def __init__(self, schedule: Schedule, name: str, minimum: float, constant: bool) -> None:
        self.schedule, self.name, self.minimum, self.constant = schedule, name, minimum, constant

    def __call__(self, progress_remaining: float) -> float:
        result = self.schedule(progress_remaining)
        if isinstance(result, bool) or not isinstance(result, (int, float)) \
                or not result >= self.minimum or not math.isfinite(result):
            raise ValueError(f"the {self.name} schedule returned {result!r} at progress "
                             f"remaining {progress_remaining:.3f}; expected a number >= "
                             f"{self.minimum:g}")
        return float(result)


def as_schedule(value: Any, name: str, *, minimum: float = 0.0) -> CheckedSchedule:
    """``value`` (a number > ``minimum``, ``"lin_<x>"`` or a callable) as a
    :class:`CheckedSchedule`: a value that is not a finite number >= ``minimum`` raises a
    ``ValueError`` naming ``name`` and the progress."""
    if isinstance(value, CheckedSchedule):
        return value
    if isinstance(value, str):
        return CheckedSchedule(linear_schedule(value, name), name, minimum, False)
    if callable(value):
        return CheckedSchedule(value, name, minimum, False)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not value > minimum:
        raise ValueError(f"{name} must be a number > {minimum:g}, 'lin_<number>' or a schedule "
                         f"(a callable of the remaining progress), got {value!r}")
    return CheckedSchedule(constant_schedule(value), name, minimum, True)


def progress_remaining(num_timesteps: int, first_step: int, total_timesteps: int) -> float:
    """SB3's progress remaining in a ``learn`` call that started at ``first_step`` and
    runs ``total_timesteps`` steps: 1 at its start, 0 at its end."""
    return max(0.0, 1.0 - (num_timesteps - first_step) / total_timesteps)
