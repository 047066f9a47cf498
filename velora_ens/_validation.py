"""Argument checks shared by the wiring, the cells and the networks."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_bool", "check_int", "check_number"]


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is ``True`` or ``False`` (not 0, 1 or a string); else raise a
    ``ValueError`` naming the argument and the value."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_int(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= ``minimum``; else raise a
    ``ValueError`` naming the argument, the value and what was expected."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, minimum: float, maximum: float | None = None, *,
                 strict: bool = False) -> float:
    """Return ``value`` as a ``float`` if it is a finite real number in range: ``>=
    minimum`` (``> minimum`` with ``strict=True``) and ``<= maximum`` when given; else
    raise a ``ValueError`` naming the argument, the value and the range expected."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, float, np.integer,
                                                             np.floating))
          and np.isfinite(value) and (value > minimum if strict else value >= minimum)
          and (maximum is None or value <= maximum))
    if not ok:
        low = f"> {minimum:g}" if strict else f">= {minimum:g}"
        high = "" if maximum is None else f" and <= {maximum:g}"
        raise ValueError(f"{name} must be a finite number {low}{high}, got {value!r}")
    return float(value)
