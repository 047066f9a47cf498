"""Accuracy and uncertainty metrics for regression and classification (torch only).

Every function takes tensors (anything ``torch.as_tensor`` accepts), reduces over the
samples and returns a Python ``float``. Classification metrics take class
probabilities ``(N, C)`` and integer labels ``(N,)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "accuracy",
    "brier_score",
    "classification_nll",
    "expected_calibration_error",
    "gaussian_interval",
    "gaussian_nll",
    "interval_coverage",
    "kendall_tau",
    "rmse",
]


def _t(x) -> torch.Tensor:
    t = torch.as_tensor(x)
    return t.detach().double() if t.is_floating_point() else t.detach()


def _same_shape(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")


def _probs_labels(probs, labels) -> tuple[torch.Tensor, torch.Tensor]:
    p, y = _t(probs), torch.as_tensor(labels).detach().long()
    if p.dim() != 2 or y.dim() != 1 or p.shape[0] != y.shape[0]:
        raise ValueError(f"expected probabilities (N, C) and labels (N,), got "
                         f"{tuple(p.shape)} and {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= p.shape[1]):
        raise ValueError(f"labels must be in [0, {p.shape[1] - 1}], got range "
                         f"[{int(y.min())}, {int(y.max())}]")
    return p, y


def rmse(pred, target) -> float:
    """Root mean squared error over all entries."""
    p, y = _t(pred), _t(target)
    _same_shape(p, y, "pred and target")
    return float((p - y).pow(2).mean().sqrt())


def gaussian_nll(mean, variance, target) -> float:
    """Mean negative log-likelihood of ``target`` under ``N(mean, variance)``, constant
    ``0.5 log(2 pi)`` included (comparable with published UCI numbers)."""
    m, v, y = _t(mean), _t(variance), _t(target)
    _same_shape(m, y, "mean and target")
    _same_shape(v, y, "variance and target")
    if bool((v <= 0).any()):
        raise ValueError(f"variance must be > 0, found {float(v.min())}")
    return float(0.5 * (math.log(2 * math.pi) + v.log() + (y - m).pow(2) / v).mean())


def accuracy(probs, labels) -> float:
    """Fraction of samples whose most probable class is the label (logits work too)."""
    p, y = _probs_labels(probs, labels)
    return float((p.argmax(1) == y).double().mean())


def classification_nll(probs, labels, eps: float = 1e-12) -> float:
    """Mean ``-log p(label)`` (probabilities clamped at ``eps``)."""
    p, y = _probs_labels(probs, labels)
    return float(-p.gather(1, y[:, None]).clamp_min(eps).log().mean())


def brier_score(probs, labels) -> float:
    """Mean over samples of ``sum_c (p_c - 1[c = label])^2`` (in ``[0, 2]``)."""
    p, y = _probs_labels(probs, labels)
    onehot = torch.zeros_like(p).scatter_(1, y[:, None], 1.0)
    return float((p - onehot).pow(2).sum(1).mean())


def expected_calibration_error(probs, labels, num_bins: int = 15) -> float:
    """Confidence ECE: samples binned by their top probability into ``num_bins``
    equal-width bins (``bin = min(floor(conf * nb), nb - 1)``);
    ``sum_b (n_b / n) |accuracy_b - mean confidence_b|``."""
    p, y = _probs_labels(probs, labels)
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins!r}")
    conf, pred = p.max(1)
    correct = (pred == y).double()
    bins = (conf * num_bins).floor().long().clamp(0, num_bins - 1)
    n = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, bins, torch.ones_like(conf))
    acc = torch.zeros_like(n).index_add_(0, bins, correct)
    cs = torch.zeros_like(n).index_add_(0, bins, conf)
    return float((acc - cs).abs().sum() / max(conf.numel(), 1))


def _strict_inversions(r: np.ndarray) -> int:
    """Pairs ``i < j`` with ``r[i] > r[j]`` for integer ranks ``r`` (bottom-up merge
    counting, ``O(n log^2 n)``, vectorised)."""
    n = r.size
    size = 1 << max(n - 1, 0).bit_length()
    big = int(r.max()) + 1 if n else 1
    a = np.full(size, big, dtype=np.int64)  # padding sorts last and inverts nothing
    a[:n] = r
    total, width = 0, 1
    while width < size:
        blocks = a.reshape(-1, 2, width)  # each row: a sorted left and a sorted right half
        left, right = blocks[:, 0], blocks[:, 1]
        offset = (np.arange(blocks.shape[0]) * (big + 1))[:, None]
        flat_left = (left + offset).ravel()
        # for every right element: how many left elements of its block are <= it
        le = np.searchsorted(flat_left, (right + offset).ravel(), side="right")
        le -= np.repeat(np.arange(blocks.shape[0]) * width, width)
        total += int((width - le).sum())
        a = np.sort(blocks.reshape(-1, 2 * width), axis=1).ravel()
        width *= 2
    return total


def _tie_pairs(v: np.ndarray) -> int:
    _, counts = np.unique(v, return_counts=True, axis=0)
    return int((counts * (counts - 1) // 2).sum())


def kendall_tau(x, y) -> float:
    """Kendall's tau-b between two 1-D samples (ties handled as in ``scipy.stats.
    kendalltau``), in ``O(n log^2 n)``. To score a confidence measure against the
    per-sample error, use ``kendall_tau(error, -confidence)`` (higher is better)."""
    a, b = _t(x).reshape(-1).numpy(), _t(y).reshape(-1).numpy()
    if a.shape != b.shape:
        raise ValueError(f"x and y must have the same length, got {a.size} and {b.size}")
    n = a.size
    if n < 2:
        raise ValueError(f"kendall_tau needs at least 2 samples, got {n}")
    n0 = n * (n - 1) // 2
    n1, n2 = _tie_pairs(a), _tie_pairs(b)
    n3 = _tie_pairs(np.stack([a, b], 1))
    order = np.lexsort((b, a))  # by x, then y: pairs tied in x are not inversions
    rank_b = np.unique(b, return_inverse=True)[1].reshape(-1)
    discordant = _strict_inversions(rank_b[order])
    denom = math.sqrt(float(n0 - n1) * float(n0 - n2))
    if denom == 0:
        return float("nan")
    return (n0 - n1 - n2 + n3 - 2 * discordant) / denom


def interval_coverage(lower, upper, target) -> float:
    """Fraction of targets inside ``[lower, upper]``."""
    lo, hi, y = _t(lower), _t(upper), _t(target)
    _same_shape(lo, y, "lower and target")
    _same_shape(hi, y, "upper and target")
    if bool((lo > hi).any()):
        raise ValueError("lower must not exceed upper")
    return float(((y >= lo) & (y <= hi)).double().mean())


def gaussian_interval(mean, variance, level: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """The central ``level`` interval ``mean -+ z sqrt(variance)`` of a Gaussian."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    m, v = _t(mean), _t(variance)
    z = float(torch.special.ndtri(torch.tensor(0.5 + level / 2, dtype=torch.float64)))
    half = z * v.sqrt()
    return m - half, m + half
