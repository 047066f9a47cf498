"""What a study leaves behind: the best settings as a ``velora-ens train --config`` file,
a CSV of every trial, PNG plots, and the table ``velora-ens tune --show`` prints.

Everything is read from the study itself (its user attributes record the task and the
settings that were not searched), so any worker, on any machine, writes the same files.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

__all__ = ["best_config", "show_table", "write_results"]


def _finished(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]


def best_config(study: Any) -> dict[str, Any] | None:
    """The best trial's settings with the task's: a config ``velora-ens train --config``
    takes unchanged (``env``, ``n_envs``, env keywords and wrappers, the agent arguments
    that were not searched and the sampled ones); ``None`` before a trial completes."""
    complete = _finished(study)
    if not complete:
        return None
    best = max(complete, key=lambda t: t.value)
    made = study.user_attrs
    config: dict[str, Any] = {"env": made["env"], "n_envs": made["n_envs"]}
    if made.get("env_kwargs"):
        config["env_kwargs"] = made["env_kwargs"]
    if made.get("env_wrapper") is not None:
        config["env_wrapper"] = made["env_wrapper"]
    return {**config, **made.get("base", {}), **best.user_attrs.get("settings", {})}


def _plots(study: Any, folder: Path) -> list[str]:
    """history.png, and importances.png once two trials have completed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as oplt
    except ImportError:
        return ["plots skipped (matplotlib is not installed)"]
    notes = []
    with warnings.catch_warnings():  # optuna's matplotlib plots are "experimental"
        warnings.simplefilter("ignore")
        for name, plot, needed in (("history", oplt.plot_optimization_history, 1),
                                   ("importances", oplt.plot_param_importances, 2)):
            if len(_finished(study)) < needed:
                notes.append(f"{name}.png skipped (it needs {needed} completed trials)")
                continue
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as exc:  # e.g. no parameter varied
                notes.append(f"{name}.png skipped ({' '.join(str(exc).split())})")
                continue
            ax.figure.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
            plt.close(ax.figure)
            notes.append(str(folder / f"{name}.png"))
    return notes


def write_results(study: Any, folder: Path, plots: bool = True) -> list[str]:
    """Write ``best_config.json``, ``trials.csv`` and the plots to ``folder``; returns a
    line per file (or why it was skipped)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    config = best_config(study)
    if config is None:
        lines.append("best_config.json skipped (no trial has completed)")
    else:
        path = folder / "best_config.json"
        path.write_text(json.dumps(config, indent=1) + "\n")
        lines.append(f"{path}  (velora-ens train --algo {study.user_attrs['algo']} "
                     f"--config {path})")
    try:
        frame = study.trials_dataframe()
    except ImportError:
        lines.append("trials.csv skipped (pandas is not installed)")
    else:
        frame.to_csv(folder / "trials.csv", index=False)
        lines.append(str(folder / "trials.csv"))
    if plots:
        lines.extend(_plots(study, folder))
    return lines


def _compact(settings: dict[str, Any]) -> str:
    """``settings`` as JSON with floats to 4 significant digits: one readable line per trial
    (``best_config.json`` and ``trials.csv`` keep every digit)."""
    return json.dumps({k: float(f"{v:.4g}") if isinstance(v, float) else v
                       for k, v in settings.items()})


def show_table(study: Any, top: int = 10) -> str:
    """The ``top`` completed trials, best first, then the counts of the others; settings
    rounded to 4 significant digits."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = sorted(_finished(study), key=lambda t: t.value, reverse=True)[:top]
    made = study.user_attrs
    lines = [f"study {study.study_name}: {made.get('algo', '?')} on {made.get('env', '?')}, "
             f"{made.get('timesteps', '?')} steps x {len(made.get('seeds', []))} seeds per trial; "
             + ", ".join(f"{sum(t.state == s for t in trials)} {s.name.lower()}"
                         for s in TrialState)]
    if not complete:
        return "\n".join([*lines, "no completed trial yet"])
    lines.append(f"{'trial':>5}  {'score':>10}  {'seconds':>8}  settings")
    for t in complete:
        seconds = ((t.datetime_complete - t.datetime_start).total_seconds()
                   if t.datetime_complete and t.datetime_start else float("nan"))
        lines.append(f"{t.number:>5}  {t.value:>10.2f}  {seconds:>8.0f}  "
                     f"{_compact(t.user_attrs.get('settings', t.params))}")
    return "\n".join(lines)
