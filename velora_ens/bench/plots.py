"""PNG plots for the benchmark pages (matplotlib, imported only when plotting)."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["have_matplotlib", "plot_bands", "plot_error_vs_confidence"]


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_bands(path: str | Path, x_train: torch.Tensor, y_train: torch.Tensor,
               curves: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
               title: str) -> None:
    """One panel per head: the training data, the predictive mean and its band.
    ``curves[head] = (x_grid, mean, lower, upper)``, all 1-D."""
    plt = _plt()
    n = len(curves)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), sharey=True, squeeze=False)
    for ax, (name, (xg, m, lo, hi)) in zip(axes[0], curves.items(), strict=True):
        ax.fill_between(xg.numpy(), lo.numpy(), hi.numpy(), color="C3", alpha=0.3, lw=0,
                        label="80% band")
        ax.plot(xg.numpy(), m.numpy(), color="C3", lw=1.5, label="mean")
        ax.scatter(x_train.numpy(), y_train.numpy(), s=5, color="C0", zorder=3, label="train")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("x")
    axes[0][0].set_ylabel("y")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_error_vs_confidence(path: str | Path, error: torch.Tensor,
                             measures: dict[str, torch.Tensor], taus: dict[str, float],
                             title: str) -> None:
    """One panel per confidence measure: absolute error against the measure (a random
    subsample of at most 2000 points), with Kendall's tau in the title."""
    plt = _plt()
    n = len(measures)
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 2.8), squeeze=False)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(error.numel(), generator=g)[:2000]
    for ax, (name, c) in zip(axes[0], measures.items(), strict=True):
        ax.scatter(c[idx].numpy(), error[idx].numpy(), s=2, alpha=0.4)
        ax.set_title(f"{name}\ntau(err, -conf) = {taus[name]:.3f}", fontsize=8)
        ax.set_xlabel("confidence", fontsize=8)
        if name == "disagreement":
            ax.set_xscale("log")
    axes[0][0].set_ylabel("|error| (RMSD units)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
