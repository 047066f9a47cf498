"""The heads' input rule, one definition for every head (as the networks' ``as_features``):
a numpy array (or nested list) becomes a tensor, a floating-point tensor takes the module's
dtype and device; integers, empty batches and wrong shapes are refused with one message
that names the expected shape and the one received. Also the wording of a non-finite
tensor, shared by the heads' NaN checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["as_batch", "as_head_input", "as_tensor", "first_floating", "not_finite",
           "refuse_not_finite", "shape_text", "to_like"]


def shape_text(shape: Sequence[int | str]) -> str:
    """``(B, 3)`` for ``("B", 3)``; a one-entry shape keeps Python's comma, ``(3,)``."""
    return str(tuple(shape)).replace("'", "")


def first_floating(module: nn.Module) -> torch.Tensor | None:
    """A floating-point parameter of the module (its dtype and device), or ``None``: the
    first one breadth-first, found in well under a microsecond (``parameters()`` takes
    several: this runs on every forward)."""
    todo = [module]
    for m in todo:  # the list grows while it is walked: breadth-first
        for p in m._parameters.values():
            if p is not None and p.is_floating_point():
                return p
        todo.extend(m._modules.values())
    return None


def as_tensor(x: Any, who: str, expected: str) -> torch.Tensor:
    """``x`` as a tensor: a numpy array or a nested list is converted (no copy where
    numpy allows); anything else raises naming the expected shape and the type received."""
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{who} expected a tensor or array of shape {expected}, got "
                         f"{type(x).__name__}") from err


def as_head_input(x: Any, who: str, shape: Sequence[int | str], like: torch.Tensor | None,
                  *, what: str = "input", hint: str = "") -> torch.Tensor:
    """``x`` checked against ``shape`` (ints are required sizes, strings free ones, e.g.
    ``("B", 3)``) and converted to ``like``'s dtype and device: floating point only, not
    empty. ``hint`` is added to a shape error (e.g. how to pass what was probably meant)."""
    if not isinstance(x, torch.Tensor):
        x = as_tensor(x, who, shape_text(shape))
    if x.dim() != len(shape) or not _sizes_match(x.shape, shape):
        raise ValueError(f"{who} expected {what} of shape {shape_text(shape)}, got "
                         f"{tuple(x.shape)}{hint}")
    _refuse_empty(x, who, x.numel() == 0)
    if not x.is_floating_point():
        raise ValueError(f"{who} expected floating-point {what} of shape {shape_text(shape)}, "
                         f"got dtype {x.dtype} (shape {tuple(x.shape)}); convert it, e.g. "
                         "x.float()")
    return to_like(x, like)


def _sizes_match(sizes: torch.Size, shape: Sequence[int | str]) -> bool:
    for n, s in zip(sizes, shape, strict=True):
        if n != s and not isinstance(s, str):
            return False
    return True


def as_batch(x: Any, who: str, like: torch.Tensor | None, *, allow_empty: bool = False) -> Any:
    """A batch whose shape the model decides: a numpy array becomes a tensor, a floating
    tensor takes ``like``'s dtype and device, an empty batch is refused (unless
    ``allow_empty``); integer tensors (e.g. token ids) and other objects pass as given."""
    if isinstance(x, np.ndarray):
        x = torch.as_tensor(x)
    if not isinstance(x, torch.Tensor):
        return x
    _refuse_empty(x, who, not allow_empty and x.dim() >= 1 and x.shape[0] == 0)
    return to_like(x, like) if x.is_floating_point() else x


def _refuse_empty(x: torch.Tensor, who: str, empty: bool) -> None:
    if empty:
        raise ValueError(f"{who} got an empty batch of shape {tuple(x.shape)}")


def to_like(x: torch.Tensor, like: torch.Tensor | None) -> torch.Tensor:
    """``x`` in ``like``'s dtype and device (``x`` itself when they already agree)."""
    if like is None or (x.dtype == like.dtype and x.device == like.device):
        return x
    return x.to(device=like.device, dtype=like.dtype)


def not_finite(t: torch.Tensor) -> str:
    """``"is not finite: k of n entries are NaN or inf (shape ...)"``."""
    bad = int((~torch.isfinite(t)).sum())
    return f"is not finite: {bad} of {t.numel()} entries are NaN or inf (shape {tuple(t.shape)})"


def refuse_not_finite(t: Any, what: str, advice: str) -> None:
    """Raise ``"{what} is not finite: ...; {advice}"`` if the floating tensor ``t`` holds a
    NaN or inf (one device sync); anything else passes."""
    if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(
            torch.isfinite(t).all()):
        raise ValueError(f"{what} {not_finite(t)}; {advice}")
