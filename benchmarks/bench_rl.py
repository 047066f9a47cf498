"""Learning and throughput of NeuroFlow against Stable-Baselines3, in one run.

Each task trains NeuroFlow and an SB3 baseline (SAC with its default MLP for Box actions;
DQN with RL Zoo's CartPole settings for Discrete ones) on the same budget, for several
seeds, evaluates each run deterministically on 10 episodes (20 at the end) at fixed
steps, and writes a Markdown table, a JSON file and a learning-curve PNG:

    python benchmarks/bench_rl.py pendulum            # Pendulum-v1, 15k steps, 3 seeds
    python benchmarks/bench_rl.py cartpole-novel      # CartPoleNoVel-v1, 50k steps
    python benchmarks/bench_rl.py pendulum-novel      # PendulumNoVel-v1, 50k steps
    python benchmarks/bench_rl.py throughput          # env steps/s with updates, Pendulum-v1

Runs go two at a time (``--jobs``), each process with one torch thread. Install the
baselines with ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from report import machine, plot_learning_curves, run_line, settings_list, write_page, write_report
from tasks import (
    OUT,
    Arm,
    Task,
    add_options,
    command,
    evaluate,
    make_model,
    rates_against_sac,
    run_all,
    train_with_evaluations,
)

from agents.common.hyperparams import TUNED_HYPERPARAMS
from velora_ens.cli_options import integer_option

TASKS = {
    "pendulum": Task("Pendulum-v1", 15_000, 2_500, -200.0, "RL Zoo SAC: -157 at 20k", arms=(
        Arm("NeuroFlow", "NeuroFlow", TUNED_HYPERPARAMS["Pendulum-v1"]),
        Arm("SAC", "SAC", {"learning_rate": 1e-3}))),
    "cartpole-novel": Task("CartPoleNoVel-v1", 50_000, 5_000, 475.0,
                           "RL Zoo RecurrentPPO: 500 at 100k", arms=(
        Arm("NeuroFlow", "NeuroFlow", TUNED_HYPERPARAMS["CartPoleNoVel-v1"]),
        Arm("DQN", "DQN", dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000,
                               learning_starts=1000, gamma=0.99, target_update_interval=10,
                               train_freq=256, gradient_steps=128, exploration_fraction=0.16,
                               exploration_final_eps=0.04,
                               policy_kwargs={"net_arch": [256, 256]})))),
    "pendulum-novel": Task("PendulumNoVel-v1", 50_000, 5_000, -250.0,
                           "RL Zoo RecurrentPPO: -218 at 100k", arms=(
        Arm("NeuroFlow", "NeuroFlow", TUNED_HYPERPARAMS["PendulumNoVel-v1"]),
        Arm("SAC", "SAC", {"learning_rate": 1e-3}))),
}
DEFAULTS = {"--seeds": [0, 1, 2], "--jobs": 2, "--rounds": 7, "--chunk": 500, "--out": OUT}


def label(algo: str) -> str:
    return algo if algo == "NeuroFlow" else f"SB3 {algo} (MLP)"


def run_one(args: tuple[str, str, int]) -> dict:
    """Train one (algorithm, seed) on a task in one ``learn`` call (so schedules see the
    whole budget), evaluating on 10 episodes every ``eval_every`` steps from the callback
    (on 20 at the last step, also from the callback); returns the curve and the
    training time (evaluation time excluded)."""
    task_name, algo, seed = args
    import torch

    torch.set_num_threads(1)
    task = TASKS[task_name]
    model = make_model(task, task.arm(algo), seed)
    result = train_with_evaluations(
        model, lambda episodes: evaluate(model, task.env_id, episodes, seed), task.steps,
        task.eval_every, f"{algo:9s} seed {seed}", final_after_learn=False)
    return {"algo": algo, "seed": seed, **result}


def reused_baseline(path: Path, task_name: str, seeds: list[int]) -> tuple[list[dict], str]:
    """The baseline's runs from an earlier JSON of the same task, budget, seeds and (where
    that JSON names them) baseline settings."""
    task = TASKS[task_name]
    if not path.exists():
        raise SystemExit(f"--reuse-baseline: {path} does not exist; run without it first")
    old = json.loads(path.read_text())
    baseline = task.arms[1]
    settings = old.get("settings", {}).get(baseline.name, baseline.kwargs)
    same = (old.get("task") == task_name and old.get("steps") == task.steps
            and sorted(old.get("seeds", [])) == sorted(seeds)
            and settings == json.loads(json.dumps(baseline.kwargs)))
    runs = [r for r in old.get("results", []) if r["algo"] == baseline.name]
    if not same or sorted(r["seed"] for r in runs) != sorted(seeds):
        raise SystemExit(f"--reuse-baseline: {path} holds another task, budget, seeds or "
                         "baseline settings")
    return runs, old.get("baseline_date") or old.get("date") or "an earlier run"


def learning(args: argparse.Namespace) -> int:
    import torch

    task = TASKS[args.task]
    algos = [arm.name for arm in task.arms]
    baseline = algos[1]
    stem = args.out / args.task
    reused, baseline_date = [], time.strftime("%Y-%m-%d")
    if args.reuse_baseline:
        reused, baseline_date = reused_baseline(stem.with_suffix(".json"), args.task,
                                                args.seeds)
    work = [(args.task, a, s) for s in args.seeds for a in algos
            if not (args.reuse_baseline and a == baseline)]
    results, minutes = run_all(run_one, work, args.jobs)
    results += reused
    report = write_report(stem.with_suffix(".json"), {
        "task": args.task, "env_id": task.env_id, "steps": task.steps, "seeds": args.seeds,
        "target": task.target, "reference": task.reference, "algos": algos,
        "command": command_of(args), "machine": machine(), "torch": torch.__version__,
        "jobs": args.jobs, "date": time.strftime("%Y-%m-%d"),
        "minutes": minutes, "reuse_baseline": args.reuse_baseline,
        "baseline_date": baseline_date, "settings": {a.name: a.kwargs for a in task.arms},
        "results": results})
    lines, met = page(report)
    write_page(stem.with_suffix(".md"), lines)
    plot(report, stem.with_suffix(".png"))
    return 0 if met else 1


def page(report: dict) -> tuple[list[str], bool]:
    """The Markdown page of a learning run's JSON report, and whether the target is met."""
    algos, results = report["algos"], report["results"]
    rows = []
    for algo in algos:
        runs = [r for r in results if r["algo"] == algo]
        finals = [r["curve"][-1][1] for r in runs]
        sps = [r["steps_per_second"] for r in runs]
        rows.append((algo, float(np.mean(finals)), float(np.std(finals)), finals,
                     float(np.mean(sps))))
    ours = rows[0][1]
    met = ours >= report["target"]
    reuse_note = (f" The SB3 {algos[1]} runs were not repeated: they are read from the "
                  f"JSON of the run of {report['baseline_date']} (same seeds, budget and "
                  f"evaluation; an SB3 run is deterministic for a seed on one machine)."
                  if report.get("reuse_baseline") else "")
    lines = [
        f"## {report['env_id']}, {report['steps']:,} steps, seeds {report['seeds']}",
        "",
        run_line(report["command"], report["machine"], report["torch"], report["date"],
                 report["jobs"], report["minutes"])
        + " Deterministic evaluation, 20 episodes at the end (10 at the intermediate "
        f"points).{reuse_note}",
        "",
        "Settings (keyword arguments besides the defaults; the SB3 baseline with "
        "`MlpPolicy`):",
        "",
        *settings_list({label(a): report["settings"][a] for a in algos}),
        "",
        "| agent | final return (mean ± std over seeds) | per seed | train steps/s |",
        "|---|---:|---|---:|",
    ]
    for algo, mean, std, finals, sps in rows:
        lines.append(f"| {label(algo)} | {mean:.1f} ± {std:.1f} | "
                     f"{', '.join(f'{f:.1f}' for f in finals)} | {sps:.0f} |")
    lines += ["", f"Target: NeuroFlow >= {report['target']:g} ({report['reference']}): "
              f"**{'met' if met else 'not met'}** ({ours:.1f}).", "",
              f"![learning curves]({report['task']}.png)", ""]
    return lines, met


def plot(report: dict, path: Path) -> None:
    algos = report["algos"]
    plot_learning_curves(report["results"], "algo",
                         {a: a if a == "NeuroFlow" else f"SB3 {a}" for a in algos},
                         dict(zip(algos, ("tab:blue", "tab:orange"), strict=True)),
                         report["env_id"], path, report["target"])


def command_of(args: argparse.Namespace) -> str:
    """The command line of the page (the options that differ from their defaults)."""
    options = ({"--rounds": args.rounds, "--chunk": args.chunk} if args.task == "throughput"
               else {"--seeds": args.seeds, "--jobs": args.jobs,
                     "--reuse-baseline": args.reuse_baseline})
    return command("bench_rl.py", args.task, {**options, "--out": args.out}, DEFAULTS)


def throughput(args: argparse.Namespace) -> int:
    """Interleaved chunks of training, NeuroFlow vs SB3 SAC, on Pendulum-v1."""
    import torch

    common = dict(learning_rate=1e-3, batch_size=256, learning_starts=100)
    ours, settings, med = rates_against_sac("Pendulum-v1", {"utd_ratio": 1.0}, common,
                                            args.rounds, args.chunk)
    ratio = med["NeuroFlow"] / med["SAC"]
    met = ratio >= 2.0
    lines = [
        "## Training throughput, Pendulum-v1",
        "",
        run_line(command_of(args), machine(), torch.__version__, time.strftime("%Y-%m-%d"))
        + " Environment steps per second including acting, replay and one gradient update "
        f"per step (batch 256 transitions, lr 1e-3), medians of {args.rounds} interleaved "
        f"chunks of {args.chunk} steps after 300 warm-up steps.",
        "",
        "Settings (keyword arguments besides the defaults; seed 0):",
        "",
        *settings_list({label(a): s for a, s in settings.items()}),
        "",
        "| agent | networks | steps/s |",
        "|---|---|---:|",
        f"| NeuroFlow | liquid actor ({ours.actor.net.n_neurons} neurons, CfC), "
        f"{ours.critics.n_critics} MLP critics "
        f"{tuple(w.shape[-1] for w in ours.critics.weights[:-1])} with the actor state as input "
        f"| {med['NeuroFlow']:.1f} |",
        f"| SB3 SAC | MLP actor and 2 MLP critics (256, 256) | {med['SAC']:.1f} |",
        "",
        f"NeuroFlow / SAC: **{ratio:.2f}x** (target >= 2x: {'met' if met else 'not met'}).",
        "",
    ]
    write_page(args.out / "throughput.md", lines)
    return 0 if met else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=[*TASKS, "throughput"])
    parser.add_argument("--seeds", type=integer_option("--seeds", 0), nargs="+",
                        default=DEFAULTS["--seeds"], help="seeds (default 0 1 2)")
    add_options(parser, DEFAULTS, "--jobs", "--rounds", "--chunk", "--out")
    parser.add_argument("--reuse-baseline", action="store_true",
                        help="read the SB3 runs from the task's existing JSON (same seeds "
                             "and budget) instead of training them again")
    parser.add_argument("--render-only", action="store_true",
                        help="train nothing: write the task's Markdown page again from the "
                             "JSON in --out (the plot is left as it is)")
    args = parser.parse_args(argv)
    if args.render_only:
        if args.task == "throughput":
            parser.error("--render-only: the throughput page has no JSON to render from")
        path = args.out / f"{args.task}.json"
        if not path.is_file():
            parser.error(f"--render-only: {path} does not exist")
        lines, met = page(json.loads(path.read_text()))
        write_page(path.with_suffix(".md"), lines)
        return 0 if met else 1
    if args.task == "throughput":
        return throughput(args)
    return learning(args)


if __name__ == "__main__":
    sys.exit(main())
