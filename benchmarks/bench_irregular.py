"""Irregular time in RL: NeuroFlow (liquid SAC) and LiquidPPO (recurrent PPO) with the elapsed
time in their liquid cells, against the same time as an observation feature, against no time
at all, and a gated recurrent baseline with the time appended.

On the irregularly timed NoVel tasks (``envs.IrregularTiming``: each action is repeated for
1-4 simulator steps, ``info["elapsed_time"]`` says how long), each task trains, for several
seeds, two families of variants, each on its own budget. NeuroFlow and RecurrentPPO train
``--steps`` (the task's: CartPole 100,000, Pendulum 30,000):

- ``cells``: ``agents.NeuroFlow`` with ``elapsed_time_key="elapsed_time"`` and
  ``elapsed_time_unit`` the task's nominal step, so the liquid cells take the time as ``dt``;
- ``obs``: NeuroFlow on the task wrapped in ``envs.AppendElapsedTime`` (the time, in nominal
  steps, as one more observation entry);
- ``none``: NeuroFlow on the task as is;
- ``recurrent_ppo``: sb3-contrib RecurrentPPO (``MlpLstmPolicy``, RL Zoo's
  ``hyperparams/ppo_lstm.yml`` settings of the NoVel task) on the wrapped task.

LiquidPPO trains ``--ppo-steps`` (100,000 on both tasks, the budget of LiquidPPO's
PendulumNoVel page):

- ``ppo-cells``: ``agents.LiquidPPO`` with the time in its cells, as ``cells``;
- ``ppo-obs``: LiquidPPO on the wrapped task, as ``obs``;
- ``ppo-none``: LiquidPPO on the task as is;
- ``ppo-gru-obs``: ``ppo-obs`` with ``cell="gru"``, torch's GRU in place of the liquid
  cells (without the tuned options only the liquid cells take: PendulumNoVel's
  ``actor_dense_recurrence``).

NeuroFlow uses ``agents.common.hyperparams.tuned_hyperparams("NeuroFlow", <NoVel id>)``,
LiquidPPO ``tuned_hyperparams("LiquidPPO", <NoVel id>)`` (``n_envs`` included). Every run
evaluates its deterministic policy every 5,000 steps on 10 episodes (20 at the end) of a
separately seeded environment built as for training, and writes its own file,
``<out>/irregular-runs/<task>-<variant>-<seed>.json``. A run whose file holds the budget,
``--eval-every`` and settings asked for is skipped (``--force`` runs it again; a file of
another budget or settings is run again and replaced), so the variants can be run over
several sittings. The page (``<out>/irregular-<task>.md``, ``.json`` and a learning-curve
``.png``) is rendered from every run file of the task that holds the budgets and settings
asked for, one table per family, whatever ``--variants`` trained (``--render-only``
renders it, training nothing):

    python benchmarks/bench_irregular.py cartpole    # CartPoleNoVelIrregular-v1, all eight
    python benchmarks/bench_irregular.py pendulum    # PendulumNoVelIrregular-v1, all eight
    python benchmarks/bench_irregular.py cartpole --variants ppo-cells ppo-obs ppo-none ppo-gru-obs
    python benchmarks/bench_irregular.py pendulum --variants ppo-cells ppo-obs ppo-none ppo-gru-obs
    python benchmarks/bench_irregular.py pendulum --render-only   # the page from the run files
    python benchmarks/bench_irregular.py cartpole --steps 1000 --seeds 0 --jobs 1 \\
        --variants none recurrent_ppo --out /tmp/irregular_smoke   # a smoke run

Runs go two at a time (``--jobs``), each process with one torch thread. The script exits
with status 1 when a target on the page is missed (mean final return; NeuroFlow: cells >= obs,
cells > none; LiquidPPO: ppo-cells >= ppo-obs, ppo-cells >= ppo-gru-obs). Install the
baseline with ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from bench_ppo import PPO_LSTM_YML, parameter_count, sb3_env, sb3_kwargs
from report import draw_learning_curves, machine, settings_list, write_page, write_report
from tasks import (
    OUT,
    Task,
    VecEnvAsEnv,
    add_options,
    command,
    evaluate,
    for_cell,
    run_all,
    train_with_evaluations,
)

from velora_ens.cli_options import integer_option

EVAL_EVERY = 5_000
PPO_STEPS = 100_000  # LiquidPPO's budget on both tasks (--ppo-steps)
RUNS = "irregular-runs"  # the folder of the run files under --out

# env_id: the irregularly timed task; base_id: its regular NoVel task, whose tuned / RL Zoo
# settings the agents use; nominal_dt: seconds of one simulator step (CartPole's tau,
# Pendulum's dt); steps: the default budget per NeuroFlow / RecurrentPPO run (--steps)
TASKS = {
    # CartPole needs 100k: at 30k no agent had learned it (an episode of 500 agent steps
    # holds about 1,250 simulator steps)
    "cartpole": Task("CartPoleNoVelIrregular-v1", 100_000, EVAL_EVERY,
                     base_id="CartPoleNoVel-v1", nominal_dt=0.02),
    "pendulum": Task("PendulumNoVelIrregular-v1", 30_000, EVAL_EVERY,
                     base_id="PendulumNoVel-v1", nominal_dt=0.05),
}

VARIANTS = {"cells": "NeuroFlow, elapsed time to the cells",
            "obs": "NeuroFlow, elapsed time appended to the observation",
            "none": "NeuroFlow without the elapsed time",
            "recurrent_ppo": "sb3-contrib RecurrentPPO (MlpLstmPolicy), elapsed time "
                             "appended to the observation",
            "ppo-cells": "LiquidPPO, elapsed time to the cells",
            "ppo-obs": "LiquidPPO, elapsed time appended to the observation",
            "ppo-none": "LiquidPPO without the elapsed time",
            "ppo-gru-obs": "LiquidPPO with a GRU core (`cell=\"gru\"`), elapsed time appended "
                           "to the observation"}
NEUROFLOW = ("cells", "obs", "none")
LIQUID_PPO = ("ppo-cells", "ppo-obs", "ppo-none", "ppo-gru-obs")
IN_CELLS = ("cells", "ppo-cells")  # the variants whose cells take the elapsed time as dt
# the variants whose env is wrapped in AppendElapsedTime
APPENDED = ("obs", "recurrent_ppo", "ppo-obs", "ppo-gru-obs")
COLORS = {"cells": "tab:blue", "obs": "tab:green", "none": "tab:gray",
          "recurrent_ppo": "tab:orange", "ppo-cells": "tab:blue", "ppo-obs": "tab:green",
          "ppo-none": "tab:gray", "ppo-gru-obs": "tab:red"}
DEFAULTS = {"--seeds": [0, 1, 2, 3, 4], "--jobs": 2, "--variants": list(VARIANTS),
            "--ppo-steps": PPO_STEPS, "--eval-every": EVAL_EVERY, "--out": OUT}


@dataclass(frozen=True)
class Family:
    """Variants that share a budget (the ``args`` attribute ``budget``), a table and their
    targets: ``ours`` (the time in the cells) against each ``(other, relation)`` of
    ``targets``. ``settings_note``: what the page says of their settings (``{base}``: the
    NoVel id, ``{dt}``: the nominal step)."""

    title: str
    variants: tuple[str, ...]
    ours: str
    targets: tuple[tuple[str, str], ...]
    budget: str
    settings_note: str


FAMILIES = {
    "neuroflow": Family(
        "NeuroFlow and RecurrentPPO", (*NEUROFLOW, "recurrent_ppo"), "cells",
        (("obs", ">="), ("none", ">")), "steps",
        "NeuroFlow: the tuned ones of {base}; RecurrentPPO: RL Zoo's `ppo_lstm.yml` entry of "
        "{base}; `obs` and `recurrent_ppo` see the elapsed time divided by {dt:g} s as one more "
        "observation entry"),
    "liquid_ppo": Family(
        "LiquidPPO", LIQUID_PPO, "ppo-cells", (("ppo-obs", ">="), ("ppo-gru-obs", ">=")),
        "ppo_steps",
        "LiquidPPO: the tuned ones of {base}, `n_envs` included; `ppo-obs` and `ppo-gru-obs` "
        "see the elapsed time divided by {dt:g} s as one more observation entry; "
        "`ppo-gru-obs` has torch's GRU in place of the liquid cells, without the tuned "
        "options that only the liquid cells take"),
}


def family_of(variant: str) -> Family:
    """The family ``variant`` belongs to."""
    return next(f for f in FAMILIES.values() if variant in f.variants)


def budget(variant: str, args: argparse.Namespace) -> int:
    """The training steps per run that ``args`` ask for ``variant`` (``--steps`` or
    ``--ppo-steps``)."""
    return getattr(args, family_of(variant).budget)


def settings(variant: str, task: Task) -> dict:
    """The variant's settings for the task (RL Zoo's spelling for RecurrentPPO)."""
    if variant == "recurrent_ppo":
        return dict(PPO_LSTM_YML[task.base_id])
    from agents.common.hyperparams import tuned_hyperparams

    config = tuned_hyperparams("LiquidPPO" if variant in LIQUID_PPO else "NeuroFlow",
                               task.base_id)
    if variant in IN_CELLS:
        config.update(elapsed_time_key="elapsed_time", elapsed_time_unit=task.nominal_dt)
    if variant == "ppo-gru-obs":  # LiquidPPO refuses the liquid-only options for a GRU
        config = for_cell(config, "gru")[0]
    return config


def env_builder(variant: str, task: Task) -> Callable[[], Any]:
    """A function that builds one copy of the variant's task (training and evaluation)."""
    import envs

    if variant in APPENDED:
        return lambda: envs.AppendElapsedTime(envs.make_env(task.env_id),
                                              scale=task.nominal_dt)
    return lambda: envs.make_env(task.env_id)


def build(variant: str, task: Task, seed: int, config: dict
          ) -> tuple[Any, Callable[[int], float]]:
    """The model and its evaluation: episodes -> mean deterministic return
    (``tasks.evaluate``: the same seeded episodes, and timings, for every variant; the
    ``cells`` and ``ppo-cells`` variants are handed the elapsed time by
    ``agents.evaluate_policy``)."""
    make_env = env_builder(variant, task)
    if variant == "recurrent_ppo":
        import sb3_contrib

        model = sb3_contrib.RecurrentPPO("MlpLstmPolicy", sb3_env(make_env, config, seed),
                                         seed=seed, verbose=0, **sb3_kwargs(config))
        # a fresh single-copy VecEnv with a frozen copy of the training VecNormalize stats
        return model, lambda episodes: evaluate(
            model, lambda: VecEnvAsEnv(
                sb3_env(make_env, config, train=model.get_vec_normalize_env())),
            episodes, seed)
    import envs
    from agents import LiquidPPO, NeuroFlow

    config = dict(config)
    if variant in APPENDED:  # the wrapped task, vectorised and seeded as the agents do an id
        env = envs.make_vec_env(make_env, config.pop("n_envs", 1), seed=seed)
    else:
        env = task.env_id
    cls = LiquidPPO if variant in LIQUID_PPO else NeuroFlow
    model = cls(env, seed=seed, **config)
    return model, lambda episodes: evaluate(model, make_env, episodes, seed)


# ---------------------------------------------------------------------- runs
def run_path(out: Path, task: str, variant: str, seed: int) -> Path:
    """The run file of (task, variant, seed) under ``out``."""
    return out / RUNS / f"{task}-{variant}-{seed}.json"


def run_one(job: tuple[str, str, int, int, int, str, dict]) -> dict:
    """Train and evaluate one (variant, seed) (``tasks.train_with_evaluations``: 10
    episodes every ``eval_every`` steps, 20 after training) and write its run file, with
    how it was made (``sitting``: the command and the runs at a time)."""
    task_name, variant, seed, steps, eval_every, path, sitting = job
    import torch

    torch.set_num_threads(1)
    task = TASKS[task_name]
    config = settings(variant, task)
    model, evaluate = build(variant, task, seed, config)
    result = train_with_evaluations(model, evaluate, steps, eval_every,
                                    f"{variant:13s} seed {seed}")
    run = {"task": task_name, "env_id": task.env_id, "variant": variant, "seed": seed,
           "budget": steps, "eval_every": eval_every, "settings": config, **result,
           "threads": torch.get_num_threads(), "parameters": parameter_count(model),
           **sitting, "machine": machine(), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d")}
    return write_report(Path(path), run)


def as_json(value: Any) -> Any:
    """``value`` as its run file holds it (tuples as lists)."""
    return json.loads(json.dumps(value, default=str))


def stale(run: dict, args: argparse.Namespace) -> str | None:
    """Why ``run``'s file does not hold a run of the budget, evaluation interval and
    settings that ``args`` ask for, or None."""
    want = as_json(settings(run["variant"], TASKS[args.task]))
    for name, have, wanted in (("budget", run["budget"], budget(run["variant"], args)),
                               ("eval-every", run["eval_every"], args.eval_every),
                               ("settings", run["settings"], want)):
        if have != wanted:
            return f"{name} {have} instead of {wanted}"
    return None


def read_runs(out: Path, task: str) -> list[dict]:
    """Every run file of ``task`` under ``out``, in a stable order."""
    runs = [json.loads(p.read_text()) for p in sorted((out / RUNS).glob(f"{task}-*.json"))]
    return [r for r in runs if r["task"] == task]


def plan(args: argparse.Namespace) -> list[tuple]:
    """The jobs of the (variant, seed) runs asked for that are not on file with this budget
    and these settings (every one with ``--force``), in seed order."""
    work, sitting = [], {"command": command_of(args), "jobs": args.jobs}
    for seed in args.seeds:
        for variant in args.variants:
            path = run_path(args.out, args.task, variant, seed)
            if path.exists() and not args.force:
                why = stale(json.loads(path.read_text()), args)
                if why is None:
                    print(f"{variant} seed {seed}: on file, skipped", file=sys.stderr)
                    continue
                print(f"{variant} seed {seed}: on file with {why}, run again",
                      file=sys.stderr)
            work.append((args.task, variant, seed, budget(variant, args), args.eval_every,
                         str(path), sitting))
    return work


def import_page(path: Path, out: Path) -> list[Path]:
    """One-off: the runs of a page JSON written before the run files existed (its
    ``results``) as run files under ``out``, each with the page's budget, settings and how
    the page was made (a ``--out X`` at the end of its command, or its ``copied_from``, kept
    as ``copied_from``: the runs were made elsewhere and copied here). The pages of
    2026-12-01/02 were imported with ``python -c "import sys; sys.path.insert(0,
    'benchmarks'); from pathlib import Path; import bench_irregular as b; [b.import_page(
    Path(f'docs/benchmarks/rl/irregular-{t}.json'), Path('docs/benchmarks/rl')) for t in
    ('cartpole', 'pendulum')]"``."""
    report = json.loads(path.read_text())
    cmd, _, out_option = report["command"].partition(" --out ")
    how = {"command": cmd, "copied_from": report.get("copied_from") or out_option or None,
           "jobs": report["jobs"], "machine": report["machine"], "torch": report["torch"],
           "date": report["date"]}
    paths = []
    for result in report["results"]:
        variant, seed = result["variant"], result["seed"]
        paths.append(run_path(out, report["task"], variant, seed))
        write_report(paths[-1], {
            "task": report["task"], "env_id": report["env_id"], "variant": variant,
            "seed": seed, "budget": report["steps"], "eval_every": report["eval_every"],
            "settings": report["settings"][variant], **result, **how})
    return paths


# ---------------------------------------------------------------------- the page
def summarize(runs: list[dict]) -> dict:
    """One variant's numbers over its seeds (in seed order)."""
    runs = sorted(runs, key=lambda r: r["seed"])
    finals = [r["curve"][-1][1] for r in runs]
    return {"seeds": [r["seed"] for r in runs], "finals": finals,
            "mean": float(np.mean(finals)), "std": float(np.std(finals)),
            "steps_per_second": float(np.mean([r["steps_per_second"] for r in runs])),
            "parameters": runs[0]["parameters"]}


def table(rows: dict[str, dict]) -> list[str]:
    lines = ["| variant | final return (mean ± std over seeds) | per seed | train steps/s | "
             "parameters |", "|---|---:|---|---:|---:|"]
    for variant, row in rows.items():
        lines.append(f"| {VARIANTS[variant]} (`{variant}`) | {row['mean']:.1f} ± "
                     f"{row['std']:.1f} | {', '.join(f'{f:.1f}' for f in row['finals'])} | "
                     f"{row['steps_per_second']:.0f} | {row['parameters']:,} |")
    return lines


def paired(ours: dict, theirs: dict) -> list[float]:
    """``ours - theirs`` final return, seed by seed (the seeds both ran)."""
    other = dict(zip(theirs["seeds"], theirs["finals"], strict=True))
    return [f - other[s] for s, f in zip(ours["seeds"], ours["finals"], strict=True)
            if s in other]


def targets(rows: dict[str, dict]) -> list[tuple[str, bool]]:
    """(line, met) for each of the issue's targets that the variants in ``rows`` allow to
    check, family by family: the mean final return with the time in the cells at least
    that with it appended to the observation, and (NeuroFlow) above that without it or
    (LiquidPPO) at least that of the GRU with it appended."""
    checks = []
    for family in FAMILIES.values():
        if family.ours not in rows:
            continue
        name, ours = family.ours, rows[family.ours]
        for other, relation in family.targets:
            if other not in rows:
                continue
            theirs, diffs = rows[other], paired(ours, rows[other])
            wins = sum(d >= 0 if relation == ">=" else d > 0 for d in diffs)
            met = (ours["mean"] >= theirs["mean"] if relation == ">="
                   else ours["mean"] > theirs["mean"])
            checks.append((f"{name} {relation} {other} (mean final return): "
                           f"**{'met' if met else 'not met'}** ({ours['mean']:.1f} against "
                           f"{theirs['mean']:.1f}; {name} {relation} {other} in "
                           f"{wins}/{len(diffs)} seeds)", met))
    return checks


def differences(family: Family, rows: dict[str, dict]) -> list[str]:
    """The comparison, seed by seed: the family's ``ours`` minus each other variant of it
    in ``rows``."""
    others = [v for v in family.variants if v in rows and v != family.ours]
    if family.ours not in rows or not others:
        return []
    lines = [f"Final return of `{family.ours}` minus each other variant, seed by seed (same "
             "seeds, same evaluation episodes):", "",
             "| against | mean difference | per seed |", "|---|---:|---|"]
    for other in others:
        diffs = paired(rows[family.ours], rows[other])
        lines.append(f"| `{other}` | {np.mean(diffs):+.1f} | "
                     f"{', '.join(f'{d:+.1f}' for d in diffs)} |")
    return lines


def sittings(runs: list[dict]) -> list[str]:
    """One line per way the runs were made (command, machine, torch, threads, runs at a
    time): how many runs, on which dates, and their training and evaluation time."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        key = (r["command"], r.get("copied_from"), r["machine"], r["torch"], r["threads"],
               r["jobs"])
        groups.setdefault(key, []).append(r)
    lines = []
    for (cmd, copied, host, torch, threads, jobs), mine in groups.items():
        dates = sorted({r["date"] for r in mine})
        when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
        minutes = sum(r["train_seconds"] + r["eval_seconds"] for r in mine) / 60
        where = f" (run with `--out {copied}`, then copied here)" if copied else ""
        lines.append(f"Command: `{cmd}`{where}. Machine: {host}; torch {torch}, {threads} "
                     f"torch thread(s) per run, {jobs} run(s) at a time; {when}; "
                     f"{len(mine)} run(s), {minutes:.0f} min of training and evaluation "
                     "summed over them.")
    return lines


def family_section(family: Family, report: dict) -> list[str]:
    """The family's part of the page: how its runs were made, their settings, the table,
    the paired differences and the targets (or the command that runs them)."""
    rows = {v: report["summary"][v] for v in family.variants if v in report["summary"]}
    steps = report[family.budget]
    if not rows:
        cmd = command("bench_irregular.py", report["task"],
                      {"--variants": list(family.variants)}, {})
        return [f"### {family.title}, {steps:,} steps", "", f"Not run yet: `{cmd}`.", ""]
    runs = [r for r in report["results"] if r["variant"] in rows]
    seeds = sorted({r["seed"] for r in runs})
    checks = targets(rows)
    note = family.settings_note.format(base=report["base_id"], dt=report["nominal_dt"])
    return [
        f"### {family.title}, {steps:,} steps, seeds {seeds}",
        "",
        *sittings(runs),
        "",
        f"Settings ({note}):",
        "",
        *settings_list({f"`{v}`": report["settings"][v] for v in rows}),
        "",
        *table(rows),
        "",
        *differences(family, rows),
        "",
        *([f"Target: {text}." for text, _ in checks]
          or [f"Targets: none checked (they compare `{family.ours}` with "
              f"{' and '.join(f'`{o}`' for o, _ in family.targets)})."]),
        "",
    ]


def page(report: dict) -> list[str]:
    """The Markdown page of ``report`` (what :func:`render` writes as the page's JSON)."""
    left_out = report["left_out"]
    return [
        f"## {report['env_id']}",
        "",
        f"Each action is repeated for 1-4 simulator steps of {report['nominal_dt']:g} s "
        "(uniform); `info[\"elapsed_time\"]` reports the time since the previous observation. "
        f"Deterministic evaluation every {report['eval_every']:,} steps on 10 episodes (20 at "
        "the end) of a separately seeded environment built as for training (RecurrentPPO's "
        "through a frozen copy of its VecNormalize statistics); training steps/s exclude it. "
        f"Each (variant, seed) run is kept in its own file under `{RUNS}/`, so a page may "
        "combine several sittings: each family names the commands, machines and dates of its "
        "runs.",
        "",
        *(line for family in FAMILIES.values() for line in family_section(family, report)),
        *([f"Run files left out (another budget, evaluation interval or settings): "
           f"{'; '.join(left_out)}.", ""] if left_out else []),
        *([f"![learning curves](irregular-{report['task']}.png)", ""]
          if report["results"] else []),
    ]


def render(args: argparse.Namespace) -> int:
    """The page, its JSON and its curves from the task's run files that hold the budgets,
    evaluation interval and settings of ``args``; 1 when a target on it is missed."""
    task = TASKS[args.task]
    runs, left_out = [], []
    for run in read_runs(args.out, args.task):
        if why := stale(run, args):
            left_out.append(f"{run['variant']} seed {run['seed']} ({why})")
        else:
            runs.append(run)
    rows = {v: summarize([r for r in runs if r["variant"] == v]) for v in VARIANTS
            if any(r["variant"] == v for r in runs)}
    checks = targets(rows)
    stem = args.out / f"irregular-{args.task}"
    report = write_report(stem.with_suffix(".json"), {
        "task": args.task, "env_id": task.env_id, "base_id": task.base_id,
        "nominal_dt": task.nominal_dt, "steps": args.steps, "ppo_steps": args.ppo_steps,
        "eval_every": args.eval_every, "seeds": sorted({r["seed"] for r in runs}),
        "variants": list(rows), "command": command_of(args),
        "machine": ", ".join(sorted({r["machine"] for r in runs})),
        "threads_per_run": sorted({r["threads"] for r in runs}),
        "settings": {v: settings(v, task) for v in rows}, "summary": rows,
        "targets": [{"target": text, "met": met} for text, met in checks],
        "left_out": left_out, "results": runs})
    write_page(stem.with_suffix(".md"), page(report))
    plot(runs, task, stem.with_suffix(".png"))
    return 0 if all(met for _, met in checks) else 1


def plot(runs: list[dict], task: Task, path: Path) -> None:
    """One panel per family with runs: each variant's evaluation curve (mean, min-max over
    seeds)."""
    families = [f for f in FAMILIES.values() if any(r["variant"] in f.variants for r in runs)]
    if not families:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(families), figsize=(6 * len(families), 3.6),
                             squeeze=False)
    for ax, family in zip(axes[0], families, strict=True):
        draw_learning_curves(ax, runs, "variant", {v: v for v in family.variants}, COLORS)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("deterministic return")
        ax.set_title(f"{family.title} (mean, min-max over seeds)", fontsize=9)
        ax.legend(loc="best", fontsize=7)
    fig.suptitle(task.env_id, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------- main
def command_of(args: argparse.Namespace) -> str:
    """The command line of the page and the runs (the options that differ from their
    defaults)."""
    return command("bench_irregular.py", args.task,
                   {"--seeds": args.seeds, "--jobs": args.jobs, "--variants": args.variants,
                    "--steps": args.steps, "--ppo-steps": args.ppo_steps,
                    "--eval-every": args.eval_every, "--force": args.force,
                    "--render-only": args.render_only, "--out": args.out},
                   {**DEFAULTS, "--steps": TASKS[args.task].steps})


def learning(args: argparse.Namespace) -> int:
    """Run the (variant, seed) runs not on file, then render the page."""
    work = plan(args)
    print(f"{len(work)} run(s) to do", file=sys.stderr)
    if work:
        run_all(run_one, work, args.jobs)
    return render(args)


def missing(variants: list[str]) -> str | None:
    """Why a requested variant cannot run here, or None."""
    if "recurrent_ppo" in variants:
        try:
            import sb3_contrib  # noqa: F401
        except ImportError:
            return ("recurrent_ppo needs sb3-contrib (pip install -e \".[bench]\"); "
                    "leave out recurrent_ppo")
    return None


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        # "argument --steps: --steps must be >= 1" says the option's name once
        name, _, rest = message.removeprefix("argument ").partition(": ")
        if message.startswith("argument ") and rest.startswith(name):
            message = rest
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="bench_irregular.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=list(TASKS))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="variants to run (default: all eight)")
    parser.add_argument("--seeds", type=integer_option("--seeds", 0), nargs="+",
                        default=DEFAULTS["--seeds"])
    parser.add_argument("--steps", type=integer_option("--steps", 1),
                        help="training steps per NeuroFlow and RecurrentPPO run (default: the "
                             "task's, CartPole 100,000, Pendulum 30,000)")
    parser.add_argument("--ppo-steps", type=integer_option("--ppo-steps", 1),
                        default=PPO_STEPS,
                        help=f"training steps per LiquidPPO run (default {PPO_STEPS:,})")
    parser.add_argument("--eval-every", type=integer_option("--eval-every", 1),
                        default=EVAL_EVERY,
                        help=f"steps between evaluations (default {EVAL_EVERY:,})")
    add_options(parser, DEFAULTS, "--jobs", "--out")
    parser.add_argument("--force", action="store_true",
                        help="run again the runs whose files hold this budget and settings")
    parser.add_argument("--render-only", action="store_true",
                        help="write the page from the run files, training nothing")
    args = parser.parse_args(argv)
    args.variants = list(dict.fromkeys(args.variants))
    args.seeds = list(dict.fromkeys(args.seeds))
    args.steps = args.steps or TASKS[args.task].steps
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out must be a folder, got the file {args.out}")
    if args.render_only:
        return render(args)
    if reason := missing(args.variants):
        parser.error(reason)
    return learning(args)


if __name__ == "__main__":
    sys.exit(main())
