"""A `velora-ens tune` study as a documentation page: its command, its counts, the best
trials, Optuna's plots, and the confirmation of its best settings on seeds it never used.

The study itself runs through `velora-ens tune` (the command is on the page, and running it
again continues the study). This script then confirms, with `bench_ppo.py`, the study's best
settings and the task's tuned settings on the same unseen seeds (each confirmation is skipped
while its JSON matches the settings it confirms), and writes the page:

    python benchmarks/report_tuning.py ppo-pendulum-novel              # confirm, then the page
    python benchmarks/report_tuning.py ppo-pendulum-novel --render-only  # the page alone

The plots are those `velora-ens tune` writes into the study's folder when its workers are
done (`history.png`, `importances.png`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from report import write_page

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Study:
    tune: str  # the command that runs (and continues) the study
    folder: str  # the study's folder: <--log-dir>/<study name>, from the repository root
    task: str  # bench_ppo.py's task for the confirmation
    seeds: tuple[int, ...]  # the confirmation's seeds, none of them the study's
    target: float  # the confirmation target: the best settings' mean final return
    page: str


STUDIES = {
    "ppo-pendulum-novel": Study(
        tune="velora-ens tune --algo ppo --env PendulumNoVel-v1 --trials 60 --timesteps 100000 "
             "--seeds 3 --evaluations 10 --eval-episodes 10 --n-jobs 2 "
             "--study-name ppo-pendulum-novel --log-dir docs/benchmarks/rl/tune",
        folder="docs/benchmarks/rl/tune/ppo-pendulum-novel",
        task="pendulum-novel", seeds=tuple(range(10, 20)), target=-175.0,
        page="docs/benchmarks/rl/tune-ppo-pendulum-novel.md"),
}
ARMS = {"best": "the study's best trial", "tuned": "the tuned settings of the task today"}


def load_study(study: Study, name: str) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name,
                             storage=f"sqlite:///{ROOT / study.folder / 'study.db'}")


def overrides(arm: str, folder: Path) -> dict[str, Any]:
    """The ``--liquid-settings`` of a confirmation arm: the study's best config over the
    tuned settings (``env`` left out: the task names it), or nothing."""
    if arm == "tuned":
        return {}
    config = json.loads((folder / "best_config.json").read_text())
    return {k: v for k, v in config.items() if k != "env"}


def confirm_command(study: Study, arm: str, folder: Path) -> list[str]:
    command = [sys.executable, "benchmarks/bench_ppo.py", study.task, "--algos", "liquid_ppo",
               "--seeds", *map(str, study.seeds), "--out", f"{study.folder}/confirm-{arm}"]
    if settings := overrides(arm, folder):
        command += ["--liquid-settings", json.dumps(settings)]
    return command


def confirmation(study: Study, arm: str) -> dict | None:
    """The bench_ppo JSON of an arm, or None."""
    path = ROOT / study.folder / f"confirm-{arm}" / f"ppo-{study.task}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def is_current(study: Study, arm: str, folder: Path) -> bool:
    """Whether the arm's JSON confirms today's settings of the arm on the study's seeds."""
    from agents.common.hyperparams import tuned_hyperparams

    report = confirmation(study, arm)
    if report is None or report["seeds"] != list(study.seeds):
        return False
    env_id = report["env_id"]
    wanted = {**tuned_hyperparams("LiquidPPO", env_id), **overrides(arm, folder)}
    return report["settings"]["liquid_ppo"] == json.loads(json.dumps(wanted))


def compact(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={float(f'{v:.3g}') if isinstance(v, float) else v}"
                     for k, v in settings.items())


def page_lines(study: Study, name: str, command: str) -> list[str]:
    from optuna.trial import TrialState

    folder = ROOT / study.folder
    opened = load_study(study, name)
    trials = opened.trials
    made = opened.user_attrs
    counts = {s: sum(t.state == s for t in trials) for s in TrialState}
    interrupted = sum(bool(t.user_attrs.get("interrupted")) for t in trials)
    done = [t for t in trials if t.datetime_start and t.datetime_complete]
    hours = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done) / 3600
    first = min(t.datetime_start for t in done).date() if done else "-"
    last = max(t.datetime_complete for t in done).date() if done else "-"
    lines = [f"## Tuning LiquidPPO on {made['env']} with `velora-ens tune`", "",
             f"Study: `{study.tune}` (running it again continues the study). "
             f"{made['timesteps']:,} steps per seed, seeds {made['seeds']} per trial, scored "
             f"on the mean of the seeds' last evaluation ({made['eval_episodes']} deterministic "
             f"episodes); TPE sampler, median pruner. Trials ran from {first} to {last}, "
             f"{hours:.1f} hours of trials in all (each trial's wall time, one thread per worker, "
             f"summed).", "",
             f"Trials: {counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} "
             f"pruned, {counts[TrialState.FAIL]} failed ({interrupted} of them interrupted, "
             f"which do not count towards `--trials`), {counts[TrialState.RUNNING]} running.",
             "", f"Page: `{command}`.", "",
             "Searched (the study's space); every other setting is the task's tuned one: "
             + "; ".join(f"`{k}` {v}" for k, v in made["space"].items()) + ".", "",
             "### The best trials", "",
             "| trial | score | evaluations | minutes | settings |", "|---:|---:|---:|---:|---|"]
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE),
                      key=lambda t: t.value, reverse=True)
    for t in complete[:10]:
        minutes = (t.datetime_complete - t.datetime_start).total_seconds() / 60
        lines.append(f"| {t.number} | {t.value:.1f} | {len(t.intermediate_values)} | "
                     f"{minutes:.0f} | {compact(t.user_attrs.get('settings', t.params))} |")
    for name_, title in (("history", "optimisation history"),
                         ("importances", "parameter importances")):
        if (folder / f"{name_}.png").is_file():
            rel = Path(study.folder).relative_to(Path(study.page).parent)
            lines += ["", f"![{title}]({rel.as_posix()}/{name_}.png)"]
    lines += ["", f"### Confirmation on seeds {study.seeds[0]}-{study.seeds[-1]}", "",
              "The study's best settings and the task's tuned settings, each trained on seeds "
              "the study never used (`bench_ppo.py`'s protocol: 20 deterministic episodes at "
              "the end).", "",
              "| settings | final return (mean ± std) | per seed | command, machine, date |",
              "|---|---:|---|---|"]
    results = {}
    for arm, title in ARMS.items():
        report = confirmation(study, arm)
        if report is None or not is_current(study, arm, folder):
            lines.append(f"| {title} | not run | | |")
            continue
        summary = report["summary"]["liquid_ppo"]
        results[arm] = summary["mean"]
        lines.append(f"| {title} | {summary['mean']:.1f} ± {summary['std']:.1f} | "
                     + ", ".join(f"{x:.1f}" for x in summary["finals"])
                     + f" | `{report['command']}`; {report['machine']}; {report['date']} |")
    if "best" in results:
        met = results["best"] >= study.target
        lines += ["", f"Target: the best settings' mean over the confirmation seeds >= "
                  f"{study.target:g}: **{'met' if met else 'not met'}** ({results['best']:.1f})."]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", choices=list(STUDIES))
    parser.add_argument("--render-only", action="store_true",
                        help="write the page from the files on hand, confirming nothing")
    args = parser.parse_args()
    study = STUDIES[args.study]
    folder = ROOT / study.folder
    if not (folder / "study.db").is_file():
        parser.error(f"no study at {study.folder}/study.db: run `{study.tune}` first")
    if not args.render_only:
        for arm in ARMS:
            if arm == "best" and not (folder / "best_config.json").is_file():
                continue
            if not is_current(study, arm, folder):  # bench_ppo exits 1 on a missed target
                subprocess.run(confirm_command(study, arm, folder), cwd=ROOT, check=False)
                if not is_current(study, arm, folder):
                    print(f"report_tuning.py: the {arm} confirmation wrote no current JSON",
                          file=sys.stderr)
                    return 1
    command = "python benchmarks/report_tuning.py " + args.study
    write_page(ROOT / study.page, page_lines(study, args.study, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
