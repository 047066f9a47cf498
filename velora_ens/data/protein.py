"""UCI "Physicochemical Properties of Protein Tertiary Structure" (CASP.csv) and the
Deep Ensembles protocol: seeded random 90/10 splits, inputs and target standardised on
the training part, metrics reported in the original units."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from velora_ens.data._paths import DataNotFoundError, data_root

__all__ = ["RegressionSplit", "load_protein", "protein_splits"]

_COLUMNS = ["RMSD"] + [f"F{k}" for k in range(1, 10)]
_HOW = ("download CASP.csv from the UCI Machine Learning Repository (data set 265, "
        "'Physicochemical Properties of Protein Tertiary Structure') into "
        "<data root>/protein/ (gzip is fine), or pass --data-root / data_root=")


def _find(root: Path) -> Path:
    candidates = [root / "protein" / "CASP.csv", root / "protein" / "CASP.csv.gz",
                  root / "CASP.csv", root / "CASP.csv.gz"]
    for path in candidates:
        if path.is_file():
            return path
    raise DataNotFoundError(f"protein data not found; looked for "
                            f"{', '.join(str(p) for p in candidates)}. To get it: {_HOW}")


def load_protein(root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(X (N, 9), y (N,))`` float64 from ``CASP.csv`` or ``CASP.csv.gz`` under
    ``<root>/protein/`` (or ``root`` itself, or a path to the file). Refuses a file
    whose header is not ``RMSD,F1,...,F9``, rows of the wrong length, values that are
    not numbers, and NaN / infinite values (naming the line)."""
    path = Path(root) if root is not None and Path(root).is_file() else _find(data_root(root))
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    lines = io.StringIO(raw.decode("utf-8", errors="replace")).read().splitlines()
    if not lines:
        raise ValueError(f"{path} is empty")
    header = [h.strip().strip('"') for h in lines[0].split(",")]
    if header != _COLUMNS:
        raise ValueError(f"{path}: expected the header {','.join(_COLUMNS)}, got "
                         f"{lines[0].strip()!r}")
    rows = []
    for k, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != len(_COLUMNS):
            raise ValueError(f"{path} line {k}: expected {len(_COLUMNS)} values, got "
                             f"{len(fields)}: {line.strip()[:80]!r}")
        try:
            values = [float(f) for f in fields]
        except ValueError:
            raise ValueError(f"{path} line {k}: not a number in {line.strip()[:80]!r}") from None
        if not all(np.isfinite(values)):
            raise ValueError(f"{path} line {k}: NaN or infinite value in "
                             f"{line.strip()[:80]!r}")
        rows.append(values)
    if not rows:
        raise ValueError(f"{path} has a header but no data rows")
    data = np.asarray(rows, dtype=np.float64)
    return data[:, 1:], data[:, 0]


@dataclass
class RegressionSplit:
    """One train/test split, standardised on its training part.

    ``x_*`` and ``y_*`` are float32 tensors in standard units (``y`` shaped ``(N, 1)``);
    a prediction ``mu, var`` in standard units is ``mu * y_std + y_mean``,
    ``var * y_std**2`` in the original units (:meth:`to_original`).
    """

    index: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    y_mean: float
    y_std: float

    def to_original(self, mean: torch.Tensor, variance: torch.Tensor | None = None):
        """Mean (and variance) from standard to original units."""
        m = mean * self.y_std + self.y_mean
        return m if variance is None else (m, variance * self.y_std ** 2)

    @property
    def y_test_original(self) -> torch.Tensor:
        return self.y_test * self.y_std + self.y_mean


def protein_splits(X: np.ndarray, y: np.ndarray, n_splits: int = 5,
                   test_fraction: float = 0.1, seed: int = 0) -> Iterator[RegressionSplit]:
    """``n_splits`` seeded random train/test splits (split ``k`` uses the permutation of
    ``numpy.random.default_rng(seed + k)``), standardised on the training part (a
    constant column is left centred, not divided by zero)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if n_splits < 1:
        raise ValueError(f"n_splits must be >= 1, got {n_splits!r}")
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise ValueError(f"expected X (N, F) and y (N,), got {X.shape} and {y.shape}")
    n = X.shape[0]
    n_test = int(round(test_fraction * n))
    if n_test < 1 or n - n_test < 2:
        raise ValueError(f"{n} rows cannot be split {1 - test_fraction:.0%}/"
                         f"{test_fraction:.0%} into non-empty parts")
    for k in range(n_splits):
        perm = np.random.default_rng(seed + k).permutation(n)
        test, train = perm[:n_test], perm[n_test:]
        mx, sx = X[train].mean(0), X[train].std(0)
        sx = np.where(sx > 0, sx, 1.0)
        my, sy = y[train].mean(), y[train].std()
        sy = sy if sy > 0 else 1.0

        def t(a):
            return torch.as_tensor(a, dtype=torch.float32)

        yield RegressionSplit(k, t((X[train] - mx) / sx), t((y[train] - my) / sy)[:, None],
                              t((X[test] - mx) / sx), t((y[test] - my) / sy)[:, None],
                              float(my), float(sy))
