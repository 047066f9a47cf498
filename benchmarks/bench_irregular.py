"""Irregular time in RL: NeuroFlow with the elapsed time in its cells, against the same time
as an observation feature, against no time at all, and sb3-contrib RecurrentPPO, in one run.

On the irregularly timed NoVel tasks (``envs.IrregularTiming``: each action is repeated for
1-4 simulator steps, ``info["elapsed_time"]`` says how long), each task trains, on the same
budget and for several seeds, four variants:

- ``cells``: ``agents.NeuroFlow`` with ``elapsed_time_key="elapsed_time"`` and
  ``elapsed_time_unit`` the task's nominal step, so the liquid cells take the time as ``dt``;
- ``obs``: NeuroFlow on the task wrapped in ``envs.AppendElapsedTime`` (the time, in nominal
  steps, as one more observation entry);
- ``none``: NeuroFlow on the task as is;
- ``recurrent_ppo``: sb3-contrib RecurrentPPO (``MlpLstmPolicy``, RL Zoo's
  ``hyperparams/ppo_lstm.yml`` settings of the NoVel task) on the wrapped task.

The NeuroFlow variants use ``agents.common.hyperparams.tuned_hyperparams("NeuroFlow", <NoVel id>)``.
Every run evaluates its deterministic policy every 5,000 steps on 10 episodes (20 at the
end) of a separately seeded environment built as for training, and the script writes a
Markdown page, a JSON file and a learning-curve PNG:

    python benchmarks/bench_irregular.py cartpole    # CartPoleNoVelIrregular-v1, 100k steps
    python benchmarks/bench_irregular.py pendulum    # PendulumNoVelIrregular-v1, 30k steps
    python benchmarks/bench_irregular.py cartpole --steps 1000 --seeds 0 --jobs 1 \\
        --variants none recurrent_ppo --out /tmp/irregular_smoke   # a smoke run

Runs go two at a time (``--jobs``), each process with one torch thread. The script exits
with status 1 when a target (cells >= obs, cells > none, mean final return) is missed.
Install the baseline with ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_ppo import PPO_LSTM_YML, parameter_count, sb3_env, sb3_kwargs
from report import machine, plot_learning_curves, run_line, settings_list, write_page, write_report
from tasks import (
    OUT,
    Task,
    VecEnvAsEnv,
    add_options,
    command,
    evaluate,
    run_all,
    train_with_evaluations,
)

from velora_ens.cli_options import integer_option

EVAL_EVERY = 5_000

# env_id: the irregularly timed task; base_id: its regular NoVel task, whose tuned / RL Zoo
# settings the agents use; nominal_dt: seconds of one simulator step (CartPole's tau,
# Pendulum's dt); steps: the default budget per run (--steps)
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
                             "appended to the observation"}
NEUROFLOW = ("cells", "obs", "none")
APPENDED = ("obs", "recurrent_ppo")  # the variants whose env is wrapped in AppendElapsedTime
COLORS = {"cells": "tab:blue", "obs": "tab:green", "none": "tab:gray",
          "recurrent_ppo": "tab:orange"}
DEFAULTS = {"--seeds": [0, 1, 2, 3, 4], "--jobs": 2, "--variants": list(VARIANTS),
            "--eval-every": EVAL_EVERY, "--out": OUT}


def settings(variant: str, task: Task) -> dict:
    """The variant's settings for the task (RL Zoo's spelling for RecurrentPPO)."""
    if variant == "recurrent_ppo":
        return dict(PPO_LSTM_YML[task.base_id])
    from agents.common.hyperparams import tuned_hyperparams

    config = tuned_hyperparams("NeuroFlow", task.base_id)
    if variant == "cells":
        config.update(elapsed_time_key="elapsed_time", elapsed_time_unit=task.nominal_dt)
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
    ``cells`` variant is handed the elapsed time by ``agents.evaluate_policy``)."""
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
    from agents import NeuroFlow

    config = dict(config)
    if variant == "obs":  # the wrapped task, vectorised and seeded as NeuroFlow does an id
        env = envs.make_vec_env(make_env, config.pop("n_envs", 1), seed=seed)
    else:
        env = task.env_id
    model = NeuroFlow(env, seed=seed, **config)
    return model, lambda episodes: evaluate(model, make_env, episodes, seed)


def run_one(job: tuple[str, str, int, int, int]) -> dict:
    """Train and evaluate one (variant, seed) (``tasks.train_with_evaluations``: 10
    episodes every ``eval_every`` steps, 20 after training)."""
    task_name, variant, seed, steps, eval_every = job
    import torch

    torch.set_num_threads(1)
    task = TASKS[task_name]
    model, evaluate = build(variant, task, seed, settings(variant, task))
    result = train_with_evaluations(model, evaluate, steps, eval_every,
                                    f"{variant:13s} seed {seed}")
    return {"variant": variant, "seed": seed, **result,
            "threads": torch.get_num_threads(), "parameters": parameter_count(model)}


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
    """``cells - other`` final return, seed by seed (the seeds both ran)."""
    other = dict(zip(theirs["seeds"], theirs["finals"], strict=True))
    return [f - other[s] for s, f in zip(ours["seeds"], ours["finals"], strict=True)
            if s in other]


def targets(rows: dict[str, dict]) -> list[tuple[str, bool]]:
    """(line, met) for each of the issue's targets that the variants run allow to check:
    the mean final return with the time in the cells at least that with it appended to the
    observation, and above that without it."""
    if "cells" not in rows:
        return []
    ours = rows["cells"]
    checks = []
    for other, relation, met_fn in (("obs", ">=", lambda a, b: a >= b),
                                    ("none", ">", lambda a, b: a > b)):
        if other not in rows:
            continue
        theirs, diffs = rows[other], paired(ours, rows[other])
        wins = sum(d >= 0 if relation == ">=" else d > 0 for d in diffs)
        met = met_fn(ours["mean"], theirs["mean"])
        checks.append((f"cells {relation} {other} (mean final return): "
                       f"**{'met' if met else 'not met'}** ({ours['mean']:.1f} against "
                       f"{theirs['mean']:.1f}; cells {relation} {other} in {wins}/{len(diffs)} "
                       f"seeds)", met))
    return checks


def differences(rows: dict[str, dict]) -> list[str]:
    """The comparison, seed by seed: cells minus each other variant."""
    if "cells" not in rows or len(rows) < 2:
        return []
    lines = ["Final return of `cells` minus each other variant, seed by seed (same seeds, "
             "same evaluation episodes):", "",
             "| against | mean difference | per seed |", "|---|---:|---|"]
    for other in rows:
        if other != "cells":
            diffs = paired(rows["cells"], rows[other])
            lines.append(f"| `{other}` | {np.mean(diffs):+.1f} | "
                         f"{', '.join(f'{d:+.1f}' for d in diffs)} |")
    return lines


def command_of(args: argparse.Namespace) -> str:
    """The command line of the page (the options that differ from their defaults)."""
    return command("bench_irregular.py", args.task,
                   {"--seeds": args.seeds, "--jobs": args.jobs, "--variants": args.variants,
                    "--steps": args.steps, "--eval-every": args.eval_every, "--out": args.out},
                   {**DEFAULTS, "--steps": TASKS[args.task].steps})


def learning(args: argparse.Namespace) -> int:
    import torch

    task = TASKS[args.task]
    work = [(args.task, v, s, args.steps, args.eval_every)
            for s in args.seeds for v in args.variants]
    results, minutes = run_all(run_one, work, args.jobs)
    config = {v: settings(v, task) for v in args.variants}
    rows = {v: summarize([r for r in results if r["variant"] == v]) for v in args.variants}
    checks = targets(rows)
    threads = sorted({r["threads"] for r in results})
    date, cmd, host = time.strftime("%Y-%m-%d"), command_of(args), machine()
    stem = args.out / f"irregular-{args.task}"
    write_report(stem.with_suffix(".json"), {
        "task": args.task, "env_id": task.env_id, "base_id": task.base_id,
        "nominal_dt": task.nominal_dt, "steps": args.steps, "eval_every": args.eval_every,
        "seeds": args.seeds, "variants": args.variants, "command": cmd, "machine": host,
        "torch": torch.__version__, "threads_per_run": threads, "jobs": args.jobs,
        "date": date, "minutes": minutes, "settings": config, "summary": rows,
        "targets": [{"target": text, "met": met} for text, met in checks],
        "results": results})
    lines = [
        f"## {task.env_id}, {args.steps:,} steps, seeds {args.seeds}",
        "",
        run_line(cmd, host, torch.__version__, date, args.jobs, minutes)
        + f" Each action is repeated for 1-4 simulator "
        f"steps of {task.nominal_dt:g} s (uniform); `info[\"elapsed_time\"]` reports the "
        f"time since the previous observation. Deterministic evaluation every "
        f"{args.eval_every:,} steps on 10 episodes (20 at the end) of a separately seeded "
        f"environment built as for training (RecurrentPPO's through a frozen copy of its "
        f"VecNormalize statistics); training steps/s exclude it.",
        "",
        f"Settings (NeuroFlow: the tuned ones of {task.base_id}; RecurrentPPO: RL Zoo's "
        f"`ppo_lstm.yml` entry of {task.base_id}; `obs` and `recurrent_ppo` see the elapsed "
        f"time divided by {task.nominal_dt:g} s as one more observation entry):",
        "",
        *settings_list({f"`{v}`": config[v] for v in args.variants}),
        "",
        *table(rows),
        "",
        *differences(rows),
        "",
        *([f"Target: {text}." for text, _ in checks]
          or ["Targets: none checked (they compare `cells` with `obs` and `none`)."]),
        "",
        f"![learning curves](irregular-{args.task}.png)",
        "",
    ]
    write_page(stem.with_suffix(".md"), lines)
    plot(results, args.variants, task, stem.with_suffix(".png"))
    return 0 if all(met for _, met in checks) else 1


def plot(results: list[dict], variants: list[str], task: Task, path: Path) -> None:
    plot_learning_curves(results, "variant", {v: v for v in variants}, COLORS, task.env_id,
                         path)


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
                        help="variants to run (default: all four)")
    parser.add_argument("--seeds", type=integer_option("--seeds", 0), nargs="+",
                        default=DEFAULTS["--seeds"])
    parser.add_argument("--steps", type=integer_option("--steps", 1),
                        help="training steps per run (default: the task's, CartPole 100,000, "
                             "Pendulum 30,000)")
    parser.add_argument("--eval-every", type=integer_option("--eval-every", 1),
                        default=EVAL_EVERY,
                        help=f"steps between evaluations (default {EVAL_EVERY:,})")
    add_options(parser, DEFAULTS, "--jobs", "--out")
    args = parser.parse_args(argv)
    args.variants = list(dict.fromkeys(args.variants))
    args.seeds = list(dict.fromkeys(args.seeds))
    args.steps = args.steps or TASKS[args.task].steps
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out must be a folder, got the file {args.out}")
    if reason := missing(args.variants):
        parser.error(reason)
    return learning(args)


if __name__ == "__main__":
    sys.exit(main())
