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
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from report import machine, write_atomic

from agents.common.hyperparams import TUNED_HYPERPARAMS

OUT = Path("docs/benchmarks/rl")


@dataclass
class Task:
    env_id: str
    steps: int
    eval_every: int
    target: float
    reference: str
    neuroflow: dict = field(default_factory=dict)
    baseline: str = "SAC"
    baseline_kwargs: dict = field(default_factory=dict)


TASKS = {
    "pendulum": Task("Pendulum-v1", 15_000, 2_500, -200.0, "RL Zoo SAC: -157 at 20k",
                     neuroflow=TUNED_HYPERPARAMS["Pendulum-v1"],
                     baseline_kwargs={"learning_rate": 1e-3}),
    "cartpole-novel": Task("CartPoleNoVel-v1", 50_000, 5_000, 475.0,
                           "RL Zoo RecurrentPPO: 500 at 100k",
                           neuroflow=TUNED_HYPERPARAMS["CartPoleNoVel-v1"],
                           baseline="DQN",
                           baseline_kwargs=dict(learning_rate=2.3e-3, batch_size=64,
                                                buffer_size=100_000, learning_starts=1000,
                                                gamma=0.99, target_update_interval=10,
                                                train_freq=256, gradient_steps=128,
                                                exploration_fraction=0.16,
                                                exploration_final_eps=0.04,
                                                policy_kwargs={"net_arch": [256, 256]})),
    "pendulum-novel": Task("PendulumNoVel-v1", 50_000, 5_000, -250.0,
                           "RL Zoo RecurrentPPO: -218 at 100k",
                           neuroflow=TUNED_HYPERPARAMS["PendulumNoVel-v1"],
                           baseline_kwargs={"learning_rate": 1e-3}),
}


def evaluate(model, env_id: str, episodes: int, seed: int) -> float:
    """Mean return of the deterministic policy; recurrent state carried and reset."""
    import envs

    env = envs.make_env(env_id)
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=10_000 * (seed + 1) + ep)
        state, start, done, total = None, np.ones(1, bool), False, 0.0
        while not done:
            action, state = model.predict(obs, state=state, episode_start=start,
                                          deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            start = np.zeros(1, bool)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def run_one(args: tuple[str, str, int]) -> dict:
    """Train one (algorithm, seed) on a task in one ``learn`` call (so schedules see the
    whole budget), evaluating every ``eval_every`` steps from a callback; returns the
    curve and the training time (evaluation time excluded)."""
    task_name, algo, seed = args
    import torch

    torch.set_num_threads(1)
    task = TASKS[task_name]
    if algo == "NeuroFlow":
        from agents import NeuroFlow

        model = NeuroFlow(task.env_id, seed=seed, **task.neuroflow)
    else:
        import stable_baselines3 as sb3

        import envs

        cls = getattr(sb3, algo)
        model = cls("MlpPolicy", envs.make_env(task.env_id), seed=seed, verbose=0,
                    **task.baseline_kwargs)
    curve: list[tuple[int, float]] = []
    eval_seconds = 0.0
    started = time.perf_counter()

    def on_step(_locals: dict, _globals: dict) -> bool:
        nonlocal eval_seconds
        done = model.num_timesteps
        if done >= (len(curve) + 1) * task.eval_every:
            t0 = time.perf_counter()
            episodes = 20 if done >= task.steps else 10
            curve.append((done, evaluate(model, task.env_id, episodes, seed)))
            eval_seconds += time.perf_counter() - t0
            rate = done / (time.perf_counter() - started - eval_seconds)
            print(f"  {algo:9s} seed {seed}  {done:>6d} steps  eval {curve[-1][1]:8.1f}  "
                  f"{rate:6.1f} steps/s", file=sys.stderr, flush=True)
        return True

    model.learn(task.steps, callback=on_step)
    train_seconds = time.perf_counter() - started - eval_seconds
    return {"algo": algo, "seed": seed, "curve": curve, "train_seconds": train_seconds,
            "steps_per_second": task.steps / train_seconds}


def reused_baseline(path: Path, task_name: str, seeds: list[int]) -> tuple[list[dict], str]:
    """The baseline's runs from an earlier JSON of the same task, budget and seeds."""
    task = TASKS[task_name]
    if not path.exists():
        raise SystemExit(f"--reuse-baseline: {path} does not exist; run without it first")
    old = json.loads(path.read_text())
    same = (old.get("task") == task_name and old.get("steps") == task.steps
            and sorted(old.get("seeds", [])) == sorted(seeds))
    runs = [r for r in old.get("results", []) if r["algo"] == task.baseline]
    if not same or sorted(r["seed"] for r in runs) != sorted(seeds):
        raise SystemExit(f"--reuse-baseline: {path} holds another task, budget or seeds")
    return runs, old.get("baseline_date") or old.get("date") or "an earlier run"


def learning(task_name: str, seeds: list[int], jobs: int, out: Path,
             reuse_baseline: bool = False) -> int:
    import torch

    task = TASKS[task_name]
    algos = ["NeuroFlow", task.baseline]
    stem = out / task_name
    reused, baseline_date = [], time.strftime("%Y-%m-%d")
    if reuse_baseline:
        reused, baseline_date = reused_baseline(stem.with_suffix(".json"), task_name, seeds)
    work = [(task_name, a, s) for s in seeds for a in algos
            if not (reuse_baseline and a == task.baseline)]
    started = time.time()
    with mp.get_context("spawn").Pool(jobs) as pool:
        results = pool.map(run_one, work, chunksize=1) + reused
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(stem.with_suffix(".json"), json.dumps(
        {"task": task_name, "env_id": task.env_id, "steps": task.steps, "seeds": seeds,
         "date": time.strftime("%Y-%m-%d"), "baseline_date": baseline_date,
         "neuroflow": task.neuroflow, "results": results}, indent=1))
    rows = []
    for algo in algos:
        runs = [r for r in results if r["algo"] == algo]
        finals = [r["curve"][-1][1] for r in runs]
        sps = [r["steps_per_second"] for r in runs]
        rows.append((algo, float(np.mean(finals)), float(np.std(finals)), finals,
                     float(np.mean(sps))))
    ours = rows[0][1]
    met = ours >= task.target
    cmd = (f"python benchmarks/bench_rl.py {task_name} --seeds {' '.join(map(str, seeds))} "
           f"--jobs {jobs}" + (" --reuse-baseline" if reuse_baseline else ""))
    reuse_note = (f" The SB3 {task.baseline} runs were not repeated: they are read from the "
                  f"JSON of the run of {baseline_date} (same seeds, budget and evaluation; "
                  f"an SB3 run is deterministic for a seed on one machine)."
                  if reuse_baseline else "")
    lines = [
        f"## {task.env_id}, {task.steps:,} steps, seeds {seeds}",
        "",
        f"Command: `{cmd}`. Machine: {machine()}; torch {torch.__version__}, one thread "
        f"per run, {jobs} run(s) at a time; {time.strftime('%Y-%m-%d')}; "
        f"{(time.time() - started) / 60:.0f} min in all. Deterministic evaluation, 20 "
        f"episodes at the end (10 at the intermediate points).{reuse_note}",
        "",
        f"NeuroFlow settings (besides the defaults): `{task.neuroflow}`.",
        "",
        "| agent | final return (mean ± std over seeds) | per seed | train steps/s |",
        "|---|---:|---|---:|",
    ]
    for algo, mean, std, finals, sps in rows:
        name = algo if algo == "NeuroFlow" else f"SB3 {algo} (MLP)"
        lines.append(f"| {name} | {mean:.1f} ± {std:.1f} | "
                     f"{', '.join(f'{f:.1f}' for f in finals)} | {sps:.0f} |")
    lines += ["", f"Target: NeuroFlow >= {task.target:g} ({task.reference}): "
              f"**{'met' if met else 'not met'}** ({ours:.1f}).", "",
              f"![learning curves]({task_name}.png)", ""]
    write_atomic(stem.with_suffix(".md"), "\n".join(lines))
    plot(results, algos, task, stem.with_suffix(".png"))
    print("\n".join(lines))
    return 0 if met else 1


def plot(results: list[dict], algos: list[str], task: Task, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for algo, color in zip(algos, ("tab:blue", "tab:orange"), strict=True):
        runs = [r for r in results if r["algo"] == algo]
        steps = [s for s, _ in runs[0]["curve"]]
        values = np.array([[v for _, v in r["curve"]] for r in runs])
        label = algo if algo == "NeuroFlow" else f"SB3 {algo}"
        ax.plot(steps, values.mean(0), color=color, label=label)
        ax.fill_between(steps, values.min(0), values.max(0), color=color, alpha=0.2)
    ax.axhline(task.target, color="gray", ls="--", lw=1, label="target")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("deterministic return")
    ax.set_title(f"{task.env_id} (mean, min-max over seeds)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def interleaved_rates(learners: dict[str, Callable[[], Any]], rounds: int, chunk: int
                      ) -> dict[str, float]:
    """Median steps per second of each learner, each call training ``chunk`` steps,
    timed in ``rounds`` interleaved rounds (so a change in the machine's load affects
    every learner alike)."""
    rates: dict[str, list[float]] = {name: [] for name in learners}
    for _ in range(rounds):
        for name, learn in learners.items():
            start = time.perf_counter()
            learn()
            rates[name].append(chunk / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def throughput(rounds: int, chunk: int, out: Path) -> int:
    """Interleaved chunks of training, NeuroFlow vs SB3 SAC, on Pendulum-v1."""
    import stable_baselines3 as sb3
    import torch

    from agents import NeuroFlow

    torch.set_num_threads(1)
    common = dict(learning_rate=1e-3, batch_size=256, learning_starts=100)
    ours = NeuroFlow("Pendulum-v1", seed=0, utd_ratio=1.0, **common)
    sac = sb3.SAC("MlpPolicy", "Pendulum-v1", seed=0, train_freq=1, gradient_steps=1, **common)
    ours.learn(300)
    sac.learn(300)
    med = interleaved_rates({"NeuroFlow": lambda: ours.learn(chunk),
                             "SAC": lambda: sac.learn(chunk, reset_num_timesteps=False)},
                            rounds, chunk)
    ratio = med["NeuroFlow"] / med["SAC"]
    met = ratio >= 2.0
    lines = [
        "## Training throughput, Pendulum-v1",
        "",
        f"Command: `python benchmarks/bench_rl.py throughput --rounds {rounds} --chunk {chunk}`. "
        f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} thread; "
        f"{time.strftime('%Y-%m-%d')}. Environment steps per second including acting, "
        f"replay and one gradient update per step (batch 256 transitions, lr 1e-3), "
        f"medians of {rounds} interleaved chunks of {chunk} steps after 300 warm-up steps.",
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
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "throughput.md", "\n".join(lines))
    print("\n".join(lines))
    return 0 if met else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=[*TASKS, "throughput"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    parser.add_argument("--rounds", type=int, default=7, help="throughput: chunks per agent")
    parser.add_argument("--chunk", type=int, default=500, help="throughput: steps per chunk")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    parser.add_argument("--reuse-baseline", action="store_true",
                        help="read the SB3 runs from the task's existing JSON (same seeds "
                             "and budget) instead of training them again")
    args = parser.parse_args(argv)
    if args.task == "throughput":
        return throughput(args.rounds, args.chunk, args.out)
    return learning(args.task, args.seeds, args.jobs, args.out, args.reuse_baseline)


if __name__ == "__main__":
    sys.exit(main())
