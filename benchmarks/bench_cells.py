"""Which recurrent cell inside LiquidPPO: CfC, LTC, GRU and LSTM on partially observed tasks.

LiquidPPO's ``cell`` sets the recurrent core of its actor and of its critic: ``"cfc"`` (the
closed-form liquid cell, the default), ``"ltc"`` (the liquid time-constant cell, an ODE
solver) or, as comparison baselines, ``"gru"``/``"lstm"`` (torch's gated cells, with
``actor_neurons`` units, in the liquid network's place). Every other setting is the
task's, so the cell is the only thing that changes between the rows of the page:

* ``CartPoleNoVel``, ``PendulumNoVel`` (``benchmarks/bench_ppo.py``'s protocol):
  ``agents.common.hyperparams.TUNED_PPO_HYPERPARAMS``, 100,000 steps, a deterministic
  evaluation on 10 episodes every 10,000 steps and on 20 after training;
* ``RepeatPrevious``, ``CountRecall``, ``Autoencode`` (``benchmarks/bench_popgym.py``'s
  protocol, ``popgym:popgym-<Task>Easy-v0``): its suite settings (8 copies, normalised
  observations), 200,000 steps, POPGym's MMER and normalised MMER from the training
  episodes every 10,000 steps, a deterministic evaluation on 20 episodes after training.

The settings that only the liquid cells take (``actor_dense_recurrence``,
``actor_mixed_memory``, ``actor_self_synapse_init``; LiquidPPO refuses them for
``cell="gru"``/``"lstm"``, and ``actor_self_synapse_init`` for ``"ltc"``) are left out of
the other cells' runs; the page names what each cell left out (:data:`LIQUID_ONLY`).

Every (task, cell, seed) run trains with one torch thread, two runs at a time
(``--jobs``), and writes its own JSON file (``<out>/cells-runs/<task>-<cell>-<seed>.json``);
a run whose file holds the same budget and settings is skipped (``--force`` runs it
again), so the page may be completed over several sittings. The page (``<out>/cells.md``,
``cells.json``, ``cells.png``) is rendered from the run files on hand, a cell not run
marked "not run" (``--render-only`` renders it without training):

    python benchmarks/bench_cells.py                     # every task, cell and seed: 60 runs
    python benchmarks/bench_cells.py --tasks CountRecall --cells cfc gru
    python benchmarks/bench_cells.py --render-only       # the page from the run files
    python benchmarks/bench_cells.py --tasks RepeatPrevious CartPoleNoVel --cells cfc gru \\
        --seeds 0 --steps 2000 --jobs 1 --out /tmp/cells_smoke       # a smoke run

Smoke runs (2,000 steps, seed 0, one run at a time on an AMD EPYC with 2 CPUs, both busy
with other runs): CfC 900-1,500 training steps/s, GRU and LSTM 300-430, LTC 35-50 (its ODE
solver; PendulumNoVel at 4,096 steps, one update: CfC 560, LTC 43). At those rates an LTC
run takes 35-40 min (NoVel) to 80-95 min (POPGym), a GRU or LSTM run 5-10 min, a CfC run
2-3 min: the 60 runs are about 22 h of run time, 11 h two at a time, LTC's 15 runs about
three quarters of it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import bench_popgym
import bench_ppo
import numpy as np
from report import machine, plot_panels, settings_list, write_page, write_report
from tasks import (
    OUT,
    Task,
    changed_defaults,
    command,
    evaluate,
    for_cell,
    json_settings,
    pick_runs,
    run_all,
    train_with_evaluations,
)

from velora_ens.cli_options import integer_option

CELLS = {"cfc": "CfC", "ltc": "LTC", "gru": "GRU", "lstm": "LSTM"}
COLORS = {"cfc": "tab:blue", "ltc": "tab:purple", "gru": "tab:orange", "lstm": "tab:green"}
NOVEL = {"CartPoleNoVel": "cartpole-novel", "PendulumNoVel": "pendulum-novel"}  # bench_ppo's
POPGYM = ("RepeatPrevious", "CountRecall", "Autoencode")  # bench_popgym's, Easy level
TASK_NAMES = (*NOVEL, *POPGYM)
LOG_EVERY = bench_popgym.DEFAULTS["--log-every"]  # POPGym: steps between the MMER's points
DEFAULTS = {"--tasks": list(TASK_NAMES), "--cells": list(CELLS), "--seeds": [0, 1, 2],
            "--steps": None, "--jobs": 2, "--liquid-settings": {}, "--out": OUT}
RUNS = "cells-runs"  # the folder of the run files under --out


def task_of(name: str) -> Task:
    """The task as bench_ppo (NoVel) or bench_popgym (POPGym) defines it."""
    return bench_ppo.TASKS[NOVEL[name]] if name in NOVEL else bench_popgym.TASKS[name]


def interval(name: str) -> int:
    """Steps between the curve's points: bench_ppo's evaluations or POPGym's MMER points."""
    return task_of(name).eval_every if name in NOVEL else LOG_EVERY


def budget(name: str, steps: int | None) -> int:
    """Training steps per run: ``--steps`` for every task, else the task's own."""
    return steps or task_of(name).steps


def settings(name: str, cell: str, liquid: dict | None = None) -> tuple[dict, list[str]]:
    """LiquidPPO's keyword arguments for ``cell`` on the task (the task's settings in
    bench_ppo or bench_popgym, ``--liquid-settings`` over them, ``cell``), and the names of
    the liquid-only settings left out because ``cell`` refuses them when set."""
    if name in NOVEL:
        base = bench_ppo.settings("liquid_ppo", task_of(name), liquid)
    else:
        base = bench_popgym.settings("liquid_ppo", liquid)
    return for_cell(base, cell)


# ---------------------------------------------------------------------- runs
def run_path(out: Path, task: str, cell: str, seed: int) -> Path:
    return out / RUNS / f"{task}-{cell}-{seed}.json"


def train(name: str, seed: int, steps: int, config: dict, label: str) -> dict:
    """Train and evaluate one LiquidPPO on the task with its script's protocol: the curve
    (bench_ppo: the evaluations; bench_popgym: the training episodes' mean return), the
    final deterministic return, the MMER (POPGym; else ``None``) and the model."""
    if name in NOVEL:
        task = task_of(name)
        model, make_eval_env = bench_ppo.build("liquid_ppo", task, seed, config)
        result = train_with_evaluations(
            model, lambda n: evaluate(model, make_eval_env, n, seed), steps, task.eval_every,
            label)
        curve = [[s, v] for s, v in result["curve"]]
        return {"model": model, "result": result, "curve": curve, "curve_kind": "evaluation",
                "mmer": None}
    model, make_eval_env, _ = bench_popgym.build("liquid_ppo", task_of(name).env_id, seed,
                                                 config)
    episodes = bench_popgym.TrainingEpisodes(model, LOG_EVERY, steps, label)
    result = train_with_evaluations(
        model, lambda n: evaluate(model, make_eval_env, n, seed), steps, 0, label,
        episodes=(0, bench_popgym.EVAL_EPISODES), on_step=episodes.on_step)
    episodes.finish()
    curve = [[s, v] for s, v, _ in episodes.curve]
    return {"model": model, "result": result, "curve": curve, "curve_kind": "training",
            "mmer": bench_popgym.mmer(curve)}


def run_one(job: tuple[str, str, int, int, dict, list[str], str, int]) -> dict:
    """Train one (task, cell, seed), evaluate it and write its run file (``jobs``: the runs
    at a time, which the page names)."""
    name, cell, seed, steps, config, dropped, path, jobs = job
    import torch

    torch.set_num_threads(1)
    done = train(name, seed, steps, config, f"{name} {cell} seed {seed}")
    result = done["result"]
    run = {"task": name, "env_id": task_of(name).env_id, "cell": cell, "seed": seed,
           "steps": steps, "interval": interval(name), "settings": config,
           "defaults": bench_popgym.defaults("liquid_ppo"),
           "dropped": dropped, "curve": done["curve"], "curve_kind": done["curve_kind"],
           "mmer": done["mmer"], "normalised_mmer": bench_popgym.normalised(done["mmer"]),
           "final_eval": result["curve"][-1][1],
           "eval_episodes": bench_popgym.EVAL_EPISODES, "trained_steps": result["steps"],
           "train_seconds": result["train_seconds"],
           "steps_per_second": result["steps_per_second"],
           "parameters": bench_popgym.parameter_count(done["model"]), "machine": machine(),
           "torch": torch.__version__, "jobs": jobs, "date": time.strftime("%Y-%m-%d")}
    write_report(Path(path), run)
    print(f"  {name} {cell} seed {seed}: final {run['final_eval']:.3f}, "
          f"{run['steps_per_second']:.0f} steps/s, {run['train_seconds']:.0f} s",
          file=sys.stderr, flush=True)
    return run


def read_runs(out: Path) -> list[dict]:
    """Every run file under ``out``, in a stable order."""
    return [json.loads(p.read_text()) for p in sorted((out / RUNS).glob("*.json"))]


def stale(run: dict, args: argparse.Namespace) -> str | None:
    """Why ``run``'s file does not hold a run of this budget and settings, or None."""
    wanted = settings(run["task"], run["cell"], args.liquid_settings)[0]
    for what, have, want in (("steps", run["steps"], budget(run["task"], args.steps)),
                             ("interval", run["interval"], interval(run["task"])),
                             ("settings", run["settings"], wanted)):
        if have != want:
            return f"{what} {have} instead of {want}"
    return changed_defaults(run.get("defaults"), bench_popgym.defaults("liquid_ppo"))


def to_do(args: argparse.Namespace) -> tuple[list[tuple], list[str]]:
    """The runs to train (LTC's first: the slowest, so that the pool ends together) and
    the run files on hand of another budget or settings."""
    work, clash = [], []
    for cell in sorted(args.cells, key=lambda c: c != "ltc"):
        for name in args.tasks:
            for seed in args.seeds:
                path = run_path(args.out, name, cell, seed)
                if path.exists() and not args.force:
                    if why := stale(json.loads(path.read_text()), args):
                        clash.append(f"{path} ({why})")
                    continue
                config, dropped = settings(name, cell, args.liquid_settings)
                work.append((name, cell, seed, budget(name, args.steps), config, dropped,
                             str(path), args.jobs))
    return work, clash


# ---------------------------------------------------------------------- the page
def spread(values: list[float], digits: int) -> str:
    """``mean ± std`` over seeds (numpy's population std); one seed shows its value."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def cell_summary(runs: list[dict]) -> dict:
    """One cell's numbers on one task over its seeds."""
    finals = [r["final_eval"] for r in runs]
    norm = [r["normalised_mmer"] for r in runs if r["normalised_mmer"] is not None]
    return {"seeds": [r["seed"] for r in runs], "final_eval": finals,
            "final_eval_mean": float(np.mean(finals)), "final_eval_std": float(np.std(finals)),
            "normalised_mmer": [r["normalised_mmer"] for r in runs],
            "normalised_mmer_mean": float(np.mean(norm)) if norm else None,
            "normalised_mmer_std": float(np.std(norm)) if norm else None,
            "steps_per_second": float(np.mean([r["steps_per_second"] for r in runs])),
            "train_minutes": float(np.mean([r["train_seconds"] for r in runs])) / 60,
            "parameters": runs[0]["parameters"], "dropped": runs[0]["dropped"]}


def summarize(runs: list[dict], tasks: list[str], cells: list[str]) -> dict:
    """Per task and cell (``None``: not run)."""
    summary: dict[str, dict[str, dict | None]] = {t: {c: None for c in cells} for t in tasks}
    for t in tasks:
        for c in cells:
            mine = sorted((r for r in runs if r["task"] == t and r["cell"] == c),
                          key=lambda r: r["seed"])
            if mine:
                summary[t][c] = cell_summary(mine)
    return summary


def digits(task: str) -> int:
    """Decimals of a return: the NoVel tasks' are in the hundreds, POPGym's in [-1, 1]."""
    return 1 if task in NOVEL else 3


def grid(summary: dict, tasks: list[str], cells: list[str], seeds: list[int],
         text: Callable[[str, dict], str], name_seeds: bool = True) -> list[str]:
    """A table with a row per cell and a column per task; ``text(task, summary)`` gives a
    cell's entry ("not run" where the cell did not run the task; with ``name_seeds``, an
    entry short of seeds names its seeds)."""
    lines = ["| cell | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for c in cells:
        entries = []
        for t in tasks:
            s = summary[t][c]
            if s is None:
                entries.append("not run")
                continue
            short = "" if not name_seeds or len(s["seeds"]) >= len(seeds) else \
                f" (seed{'s' * (len(s['seeds']) > 1)} {' '.join(map(str, s['seeds']))})"
            entries.append(text(t, s) + short)
        lines.append(f"| {CELLS[c]} | " + " | ".join(entries) + " |")
    return lines


def final_text(task: str, s: dict) -> str:
    return spread(s["final_eval"], digits(task))


def mmer_text(task: str, s: dict) -> str:
    values = [v for v in s["normalised_mmer"] if v is not None]
    return spread(values, 3) if values else "no episode ended"


def dropped_lines(report: dict) -> list[str]:
    """What each cell left out of each task's settings."""
    lines = [f"- {CELLS[c]} on {t}: `{', '.join(report['dropped'][t][c])}`"
             for t in report["tasks"] for c in report["cells"] if report["dropped"][t][c]]
    return lines or ["- none: the settings asked for here hold no liquid-only option."]


def page(report: dict) -> list[str]:
    """The Markdown page of ``report`` (what :func:`render` writes as cells.json)."""
    tasks, cells, seeds, summary = (report["tasks"], report["cells"], report["seeds"],
                                    report["summary"])
    done = sum(len(s["seeds"]) for t in tasks for s in summary[t].values() if s)
    machines = ", ".join(f"{m} ({n} runs)" for m, n in report["machines"].items()) or "none"
    dates = " to ".join(dict.fromkeys(report["dates"][:1] + report["dates"][-1:])) \
        or "no runs yet"
    jobs = " or ".join(map(str, report["jobs"])) or "-"
    novel = [t for t in tasks if t in NOVEL]
    popgym = [t for t in tasks if t not in NOVEL]
    steps = ", ".join(f"{t} {report['steps'][t]:,}" for t in tasks)
    lines = [
        f"## Cells inside LiquidPPO: {', '.join(CELLS[c] for c in cells)} on {len(tasks)} "
        f"task(s), seeds {seeds}",
        "",
        f"Command: `{report['command']}` ({done} of {len(tasks) * len(cells) * len(seeds)} "
        "runs on file; each run is kept in its own file, so the page may span several "
        f"sittings). Runs: one torch thread each, {jobs} at a time; machines: {machines}; "
        f"torch {', '.join(report['torch']) or '-'}; {dates}.",
        "",
        "LiquidPPO's `cell` is the only setting that changes between the rows; it sets the "
        "recurrent core of the actor and of the critic: CfC (closed-form liquid cell, the "
        "default), LTC (liquid time-constant cell, an ODE solver), or torch's GRU or LSTM "
        "cell with `actor_neurons` (`critic_neurons`) units, the elapsed time appended to its "
        "input and a linear read-out, in the liquid network's place.",
        "",
        f"Training steps per run: {steps}.",
        "",
    ]
    if novel:
        lines += [
            f"{', '.join(novel)}: `benchmarks/bench_ppo.py`'s protocol and LiquidPPO's tuned "
            "settings (`TUNED_PPO_HYPERPARAMS`); a deterministic evaluation on 10 episodes "
            f"every {interval(novel[0]):,} steps and on {bench_popgym.EVAL_EPISODES} after "
            "training (the final return).",
            ""]
    if popgym:
        lines += [
            f"{', '.join(popgym)} (`popgym:popgym-<Task>Easy-v0`): "
            "`benchmarks/bench_popgym.py`'s protocol and its suite settings; POPGym's "
            f"normalised MMER (0.5 * MMER + 0.5, the MMER the running maximum of the mean "
            f"training episode return taken every {LOG_EVERY:,} steps, RLlib's window) and a "
            f"deterministic evaluation on {bench_popgym.EVAL_EPISODES} episodes after "
            "training (the final return).",
            ""]
    lines += [
        "Evaluation episodes are seeded 10,000 * (seed + 1) + episode. Train steps/s "
        "exclude the evaluations.",
        "",
        "Settings (LiquidPPO keyword arguments, the same for every cell apart from `cell` "
        "and the liquid-only options below):",
        "",
        *settings_list({report["env_ids"][t]: report["settings"][t] for t in tasks}),
        "",
        "LiquidPPO refuses the liquid-only options `actor_dense_recurrence`, "
        "`actor_mixed_memory` and `actor_self_synapse_init` for `cell=\"gru\"`/`\"lstm\"` "
        "and `actor_self_synapse_init` for `\"ltc\"` (a `ValueError`); this script leaves "
        "them out of those cells' runs:",
        "",
        *dropped_lines(report),
        "",
        "### Final deterministic return (mean ± std over seeds)",
        "",
        *grid(summary, tasks, cells, seeds, final_text),
        "",
    ]
    if popgym:
        lines += ["### Normalised MMER (POPGym; mean ± std over seeds)", "",
                  *grid(summary, popgym, cells, seeds, mmer_text), ""]
    lines += [
        "### Training steps per second (mean over seeds)",
        "",
        *grid(summary, tasks, cells, seeds, lambda t, s: f"{s['steps_per_second']:,.0f}"),
        "",
        "### Parameters (actor and critic)",
        "",
        *grid(summary, tasks, cells, seeds, lambda t, s: f"{s['parameters']:,}", False),
        "",
        *([f"Run files left out (another budget or settings): {report['left_out']}.", ""]
          if report["left_out"] else []),
        "![learning curves](cells.png)",
        "",
    ]
    return lines


def plot(report: dict, runs: list[dict], path: Path) -> None:
    """One panel per task that has runs: each cell's curve (mean, min-max over seeds), the
    evaluations (NoVel) or the training episodes' mean return (POPGym)."""
    panels = {t: [r for r in runs if r["task"] == t] for t in report["tasks"]}
    plot_panels({f"{t} ({'evaluation return' if t in NOVEL else 'training episode return'})": rs
                 for t, rs in panels.items() if rs}, "cell",
                {c: CELLS[c] for c in report["cells"]}, COLORS,
                "LiquidPPO's cells: mean, min-max over seeds, against environment steps", path)


def command_of(args: argparse.Namespace) -> str:
    options = {"--tasks": args.tasks, "--cells": args.cells, "--seeds": args.seeds,
               "--steps": args.steps, "--jobs": args.jobs,
               "--liquid-settings": args.liquid_settings, "--out": args.out}
    return command("bench_cells.py", "", options, DEFAULTS)


def render(args: argparse.Namespace) -> dict:
    """The page, its JSON and its curves from the run files of ``args``' tasks, cells,
    seeds, budget and settings."""
    runs, left_out, machines = pick_runs(
        read_runs(args.out), {"task": args.tasks, "cell": args.cells, "seed": args.seeds},
        lambda run: stale(run, args))
    base = {t: {k: v for k, v in settings(t, "cfc", args.liquid_settings)[0].items()
                if k != "cell"} for t in args.tasks}
    report = write_report(args.out / "cells.json", {
        "command": command_of(args), "tasks": args.tasks, "cells": args.cells,
        "seeds": args.seeds, "steps": {t: budget(t, args.steps) for t in args.tasks},
        "settings": base,
        "dropped": {t: {c: settings(t, c, args.liquid_settings)[1] for c in args.cells}
                    for t in args.tasks},
        "env_ids": {t: task_of(t).env_id for t in args.tasks},
        "machines": machines, "torch": sorted({r["torch"] for r in runs}),
        "jobs": sorted({r["jobs"] for r in runs}),
        "dates": sorted({r["date"] for r in runs}), "rendered": time.strftime("%Y-%m-%d"),
        "left_out": left_out, "summary": summarize(runs, args.tasks, args.cells),
        "runs": runs})
    write_page(args.out / "cells.md", page(report))
    plot(report, runs, args.out / "cells.png")
    return report


# ---------------------------------------------------------------------- main
def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line and, unless ``--render-only``, the runs it asks for
    (``args.work``); a mistake is one line on stderr and exit code 2."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=TASK_NAMES, default=list(TASK_NAMES),
                        help="tasks (default: all five)")
    parser.add_argument("--cells", nargs="+", choices=list(CELLS), default=list(CELLS),
                        help="LiquidPPO's cell (default: all four)")
    parser.add_argument("--seeds", type=integer_option("--seeds", 0), nargs="+",
                        default=DEFAULTS["--seeds"], help="seeds (default 0 1 2)")
    parser.add_argument("--steps", type=integer_option("--steps", 1), default=None,
                        help="training steps per run for every task, for a smoke run "
                             "(default: the task's, 100,000 NoVel and 200,000 POPGym)")
    parser.add_argument("--jobs", type=integer_option("--jobs", 1), default=2,
                        help="runs at a time (default 2)")
    parser.add_argument("--liquid-settings", type=json_settings("--liquid-settings", "LiquidPPO"),
                        default={}, metavar="JSON",
                        help="LiquidPPO keyword arguments over each task's settings, for "
                             "every cell (default: none)")
    parser.add_argument("--out", type=Path, default=OUT,
                        help=f"output folder: the page cells.md/.json/.png and the run files "
                             f"under {RUNS}/ (default {OUT})")
    parser.add_argument("--force", action="store_true",
                        help="run again the runs whose files exist")
    parser.add_argument("--render-only", action="store_true",
                        help="write the page from the run files, training nothing")
    args = parser.parse_args(argv)
    args.tasks = [t for t in TASK_NAMES if t in args.tasks]
    args.cells = [c for c in CELLS if c in args.cells]
    args.seeds = list(dict.fromkeys(args.seeds))
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file, not a folder")
    if "cell" in args.liquid_settings:
        parser.error("--liquid-settings: 'cell' is set by --cells")
    if why := bench_ppo.unknown_liquid_settings(args.liquid_settings):
        parser.error(why)
    if not args.render_only:
        args.work, clash = to_do(args)
        if clash:
            parser.error("run files of another budget or settings exist: " + "; ".join(clash)
                         + " (--force runs them again; or pass another --out)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not args.render_only:
        print(f"{len(args.work)} run(s) to do", file=sys.stderr)
        if args.work:
            run_all(run_one, args.work, args.jobs)
    render(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
