"""The pages of the scripts in ``benchmarks/``: the machine line and atomic writes (the
helpers the packaged supervised benchmarks use, ``velora_ens.bench.report``), the JSON a
page is rendered from, the line that says how a page was made, the settings list, the
learning-curve plot, and writing a page."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from velora_ens.bench.report import machine, write_atomic

__all__ = ["draw_learning_curves", "machine", "plot_learning_curves", "plot_panels", "run_line",
           "settings_list", "write_atomic", "write_page", "write_report"]


def write_report(path: Path, report: dict) -> dict:
    """Write ``report`` as JSON at ``path`` and return it as read back from that JSON
    (tuples as lists), so that a page rendered from it is the page a later
    ``--render-only`` renders from the file."""
    text = json.dumps(report, indent=1, default=str)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)
    return json.loads(text)


def run_line(command: str, machine: str, torch: str, date: str, jobs: int | None = None,
             minutes: float | None = None) -> str:
    """How a page was made: ``Command: `...`. Machine: ...; torch ..., one thread per run,
    N run(s) at a time; date; M min in all.`` Without ``jobs``: one process with one
    thread (a timing page); without ``minutes``: no total time."""
    runs = "1 thread" if jobs is None else f"one thread per run, {jobs} run(s) at a time"
    total = "" if minutes is None else f"; {minutes:.0f} min in all"
    return f"Command: `{command}`. Machine: {machine}; torch {torch}, {runs}; {date}{total}."


def settings_list(settings: Mapping[str, Any]) -> list[str]:
    """One line per agent: ``- label: `settings```."""
    return [f"- {label}: `{value}`" for label, value in settings.items()]


def write_page(path: Path, lines: list[str]) -> None:
    """Write the Markdown page (atomically) and print it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "\n".join(lines))
    print("\n".join(lines))


def draw_learning_curves(ax: Any, results: list[dict], key: str, labels: dict[str, str],
                         colors: dict[str, str], threshold: float | None = None) -> None:
    """On the matplotlib axes ``ax``: the mean and min-max band over seeds of each
    ``result[key]`` group's ``curve`` (``[step, value]`` pairs; a NaN value leaves a gap), in
    ``labels``' order, a group without results left out (a dashed line at ``threshold`` if
    given)."""
    for name, label in labels.items():
        curves = [r["curve"] for r in results if r[key] == name]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        steps = [s for s, _ in curves[0][:n]]
        values = np.array([[np.nan if v is None else v for _, v in c[:n]] for c in curves],
                          dtype=float)
        ax.plot(steps, values.mean(0), marker=".", color=colors[name], label=label)
        ax.fill_between(steps, values.min(0), values.max(0), color=colors[name], alpha=0.2)
    if threshold is not None:
        ax.axhline(threshold, color="gray", ls="--", lw=1, label=f"threshold {threshold:g}")


def plot_learning_curves(results: list[dict], key: str, labels: dict[str, str],
                         colors: dict[str, str], title: str, path: Path,
                         threshold: float | None = None) -> None:
    """Mean and min-max band over seeds of each ``result[key]`` group's evaluation curve,
    in ``labels``' order (a dashed line at ``threshold`` if given), as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    draw_learning_curves(ax, results, key, labels, colors, threshold)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("deterministic return")
    ax.set_title(f"{title} (mean, min-max over seeds)")
    ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_panels(panels: Mapping[str, list[dict]], key: str, labels: dict[str, str],
                colors: dict[str, str], title: str, path: Path, columns: int = 5) -> None:
    """One panel per entry of ``panels`` (its title: its results), each drawn by
    :func:`draw_learning_curves`, at most ``columns`` to a row, under one legend (that of
    the panel with the most groups), as a PNG at ``path``; nothing when ``panels`` is
    empty. E.g. a task per panel and an agent per line."""
    if not panels:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(columns, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows + 0.4), squeeze=False)
    for ax, (name, results) in zip(axes.flat, panels.items(), strict=False):
        draw_learning_curves(ax, results, key, labels, colors)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, names = [], []
    for ax in axes.flat:
        h, n = ax.get_legend_handles_labels()
        if len(h) > len(handles):
            handles, names = h, n
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08 if rows == 1 else 0.05, 1, 0.95))
    fig.savefig(path, dpi=100)
    plt.close(fig)
