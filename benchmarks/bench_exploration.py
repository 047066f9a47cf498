"""Exploration with NeuroFlow's ensemble heads, against Stable-Baselines3, in one run.

One command per task; each trains every arm for every seed (two runs at a time, one
torch thread each) and writes a Markdown table, a JSON file and curves under
``docs/benchmarks/rl/``:

    python benchmarks/bench_exploration.py mountaincar  # MountainCarContinuous-v0, 50k steps
    python benchmarks/bench_exploration.py deepsea      # bsuite DeepSea 20, 3000 episodes
    python benchmarks/bench_exploration.py pendulum     # Pendulum-v1 15k: no regression
    python benchmarks/bench_exploration.py throughput   # 5 critics + OAC against SB3 SAC
    python benchmarks/bench_exploration.py grid         # every head x every strategy, small budget

``--seeds`` are the seeds of the arms a target is measured on (the tuned strategy and the
baselines); ``--screen-seeds`` (default: the same) those of the other strategies.
``--arms`` runs a subset; ``--override JSON`` changes the NeuroFlow arms' settings (an
ablation), written to pages named with ``--tag``:

    python benchmarks/bench_exploration.py deepsea --arms thompson --seeds 0 \
        --override '{"target_q": "min"}' --tag shared-target

DeepSea needs ``pip install -e ".[bench,deepsea]"``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from report import (
    machine,
    plot_learning_curves,
    run_line,
    settings_list,
    write_page,
    write_report,
)
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

MC_ID, DS_ID = "MountainCarContinuous-v0", "DeepSea-v0"
MC = TUNED_HYPERPARAMS[MC_ID]
DS = TUNED_HYPERPARAMS[DS_ID]
PENDULUM = TUNED_HYPERPARAMS["Pendulum-v1"]
NO_EXPLORATION = {"exploration": "none", "exploration_kwargs": None}

# RL Zoo's hyperparams/sac.yml for MountainCarContinuous-v0 (gSDE and its tuned noise)
ZOO_SAC_MC = dict(learning_rate=3e-4, buffer_size=50_000, batch_size=512, ent_coef=0.1,
                  train_freq=32, gradient_steps=32, gamma=0.9999, tau=0.01,
                  learning_starts=0, use_sde=True,
                  policy_kwargs={"log_std_init": -3.67, "net_arch": [64, 64]})
# SB3 DQN with bsuite's DQN baseline settings (bsuite/baselines/jax/dqn: MLP [50, 50],
# Adam 1e-3, batch 32, replay 10k, learning from 100 steps, target every 4 updates,
# epsilon 0.05); SB3 anneals epsilon from 1 over the first 10% of the budget
DQN_DS = dict(learning_rate=1e-3, batch_size=32, buffer_size=10_000, learning_starts=100,
              train_freq=1, target_update_interval=4, exploration_final_eps=0.05,
              exploration_fraction=0.1, gamma=0.99, policy_kwargs={"net_arch": [50, 50]})


def _strategies(base: dict, tuned: str) -> list[Arm]:
    """NeuroFlow with ``base`` and every strategy (its defaults, the tuned one as tuned)."""
    arms = [Arm("NeuroFlow, none", "NeuroFlow", {**base, **NO_EXPLORATION},
                main=tuned == "none")]
    for name in ("oac", "ucb", "thompson", "disagreement"):
        kwargs = ({**base} if name == tuned
                  else {**base, "exploration": name, "exploration_kwargs": None})
        if name != "disagreement":
            kwargs["n_critics"] = max(base.get("n_critics", 2), 5)
        if name == "thompson":
            kwargs["critic_head_kwargs"] = {"prior_scale": 1.0}
        arms.append(Arm(f"NeuroFlow, {name}" + (" (tuned)" if name == tuned else ""),
                        "NeuroFlow", kwargs, main=name == tuned))
    return arms


# DeepSea's budget is in episodes (its steps: episodes * size); target: the return (per
# seed, or the mean with per_seed=False) that target_arm's final evaluation must reach
TASKS = {
    "mountaincar": Task(MC_ID, 50_000, 5_000, 90.0, arms=(
        *_strategies(MC, "disagreement"),
        Arm("SB3 SAC (default)", "SAC", {"learning_starts": MC["learning_starts"]},
            main=False),
        Arm("SB3 SAC (RL Zoo: gSDE, tuned noise)", "SAC", ZOO_SAC_MC, main=False),
    ), target_arm="NeuroFlow, disagreement"),
    "deepsea": Task(DS_ID, 0, 0, arms=(
        Arm("NeuroFlow, thompson (tuned)", "NeuroFlow", DS),
        Arm("NeuroFlow, none", "NeuroFlow", {**DS, **NO_EXPLORATION}, main=False),
        Arm("SB3 DQN (bsuite's DQN settings)", "DQN", DQN_DS, main=False),
    ), env_kwargs={"size": 20}, episodes=3_000, target_arm="NeuroFlow, thompson"),
    "pendulum": Task("Pendulum-v1", 15_000, 2_500, -200.0, arms=(
        Arm("NeuroFlow, none (tuned)", "NeuroFlow", PENDULUM),
        # the strategy as MountainCar's tuned settings switch it on, unchanged
        Arm("NeuroFlow, disagreement (MountainCar's settings)", "NeuroFlow",
            {**PENDULUM, **{k: MC[k] for k in ("exploration", "exploration_kwargs",
                                               "normalize_observations")}}),
        Arm("NeuroFlow, oac", "NeuroFlow", {**PENDULUM, "n_critics": 5, "exploration": "oac"},
            main=False),
    ), target_arm="NeuroFlow, disagreement", per_seed=False),
}
DEFAULTS = {"--jobs": 2, "--rounds": 7, "--chunk": 500, "--out": OUT}


def apply_override(override: dict | None) -> None:
    """Merge ``override`` into every NeuroFlow arm's settings (in this process)."""
    for task in TASKS.values():
        for arm in task.arms:
            if override and arm.algo == "NeuroFlow":
                arm.kwargs = {**arm.kwargs, **override}


def run_one(args: tuple[str, int, int, dict | None]) -> dict:
    """Train one arm for one seed in one ``learn`` call; returns the curve, the first
    training episode with a positive return (MountainCar: the goal reached), the solved
    episode (DeepSea) and the training time (evaluation excluded)."""
    task_name, arm_index, seed, override = args
    import torch

    apply_override(override)  # a spawned worker imports the module afresh
    torch.set_num_threads(1)
    task = TASKS[task_name]
    arm = task.arms[arm_index]
    model = make_model(task, arm, seed)
    returns: list[float] = []
    episode = [0.0]
    started = time.perf_counter()
    solved: list[int | None] = [None]
    total_steps = task.steps if task.episodes is None else (
        task.episodes * task.env_kwargs["size"])

    def on_step(local: dict) -> bool:
        """Count the training episodes' returns; False (stop) once DeepSea is solved."""
        episode[0] += float(np.asarray(local["rewards"]).reshape(-1)[0])
        if bool(np.asarray(local["dones"]).reshape(-1)[0]):
            returns.append(episode[0])
            episode[0] = 0.0
            if task.episodes is not None:
                return not deep_sea_progress(returns, solved, arm, seed, started)
        return True

    # 5 evaluation episodes every eval_every steps, 10 at the last step, from the callback
    result = train_with_evaluations(
        model, lambda episodes: evaluate(model, task.env_id, episodes, seed), total_steps,
        task.eval_every, f"{arm.name:34s} seed {seed}", episodes=(5, 10),
        final_after_learn=False, on_step=on_step)
    positive = next((i + 1 for i, r in enumerate(returns) if r > 0), None)
    return {"arm": arm.name, "seed": seed, **result, "episodes": len(returns),
            "first_positive_episode": positive, "solved_episode": solved[0],
            "good_episodes": int(sum(r > 0 for r in returns))}


def deep_sea_progress(returns: list[float], solved: list, arm: Arm, seed: int,
                      started: float) -> bool:
    """Record bsuite's solved episode; True (stop) once it is known."""
    from envs.deep_sea import deep_sea_solved_episode, reached_treasure

    n = len(returns)
    if n % 250 == 0:
        good = sum(reached_treasure(r) for r in returns)
        print(f"  {arm.name:34s} seed {seed}  {n:>5d} episodes  treasure {good:5d}  "
              f"{time.perf_counter() - started:5.0f} s", file=sys.stderr, flush=True)
    bad = [not reached_treasure(r) for r in returns]
    solved[0] = deep_sea_solved_episode(bad)
    return solved[0] is not None


def _work(task_name: str, seeds: list[int], screen_seeds: list[int], arms: list[str] | None,
          override: dict | None) -> list[tuple[str, int, int, dict | None]]:
    task = TASKS[task_name]
    work = []
    for i, arm in enumerate(task.arms):
        if arms and not any(a.lower() in arm.name.lower() for a in arms):
            continue
        for s in (seeds if arm.main else screen_seeds):
            work.append((task_name, i, s, override))
    return work


def learning(args: argparse.Namespace) -> int:
    import torch

    task = TASKS[args.task]
    results, minutes = run_all(run_one, _work(args.task, args.seeds, args.screen_seeds,
                                              args.arms, args.override), args.jobs)
    stem = args.out / (f"exploration-{args.task}" + (f"-{args.tag}" if args.tag else ""))
    date, cmd, host = time.strftime("%Y-%m-%d"), command_of(args), machine()
    write_report(stem.with_suffix(".json"), {
        "task": args.task, "env_id": task.env_id, "steps": task.steps,
        "episodes": task.episodes, "seeds": args.seeds, "screen_seeds": args.screen_seeds,
        "command": cmd, "machine": host, "torch": torch.__version__, "jobs": args.jobs,
        "date": date, "minutes": minutes,
        "arms": [{"name": a.name, "algo": a.algo, "kwargs": a.kwargs} for a in task.arms],
        "results": results})
    head = [run_line(cmd, host, torch.__version__, date, args.jobs, minutes), ""]
    names = [a.name for a in task.arms if any(r["arm"] == a.name for r in results)]
    if task.episodes is not None:
        lines, met = deep_sea_table(task, names, results, head)
        lines.append("")
    else:
        lines, met = return_table(task, names, results, head)
        plot(results, names, task, stem.with_suffix(".png"))
        lines += ["", f"![learning curves]({stem.name}.png)", ""]
    lines += ["Settings of each arm:", ""]
    lines += [f"- {a.name}: `{a.algo}` with `{a.kwargs}`" for a in task.arms if a.name in names]
    lines.append("")
    write_page(stem.with_suffix(".md"), lines)
    return 0 if met else 1


def _fmt(x: float | None, spec: str = ".0f") -> str:
    return "-" if x is None else format(x, spec)


def return_table(task: Task, names: list[str], results: list[dict], head: list[str]
                 ) -> tuple[list[str], bool]:
    lines = [f"## {task.env_id}, {task.steps:,} steps", "", *head,
             f"Deterministic evaluation every {task.eval_every:,} steps (5 episodes; 10 at "
             f"the end). Target ({task.target_arm}): "
             + (f"all seeds but one reach a final return of at least {task.target:g}"
                if task.per_seed else f"a mean final return of at least {task.target:g}")
             + ".", "",
             "| arm | seeds reaching the target | final return, per seed | steps to the "
             "target, per seed | first goal (training episode), per seed | train steps/s "
             "| wall time per run (s) |",
             "|---|---:|---|---|---|---:|---:|"]
    met = True
    for name in names:
        runs = sorted((r for r in results if r["arm"] == name), key=lambda r: r["seed"])
        finals = [r["curve"][-1][1] for r in runs]
        reach = [next((s for s, v in r["curve"] if v >= task.target), None) for r in runs]
        hits = sum(f >= task.target for f in finals)
        if name.startswith(task.target_arm):
            met &= (hits >= max(len(runs) - 1, 1) if task.per_seed
                    else float(np.mean(finals)) >= task.target)
        lines.append(
            f"| {name} | {hits}/{len(runs)} | {', '.join(f'{f:.1f}' for f in finals)} "
            f"(mean {np.mean(finals):.1f}) | {', '.join(_fmt(x) for x in reach)} | "
            f"{', '.join(_fmt(r['first_positive_episode']) for r in runs)} | "
            f"{np.mean([r['steps_per_second'] for r in runs]):.0f} | "
            f"{np.mean([r['train_seconds'] for r in runs]):.0f} |")
    return lines, met


def deep_sea_table(task: Task, names: list[str], results: list[dict], head: list[str]
                   ) -> tuple[list[str], bool]:
    size = task.env_kwargs["size"]
    lines = [f"## bsuite DeepSea, size {size}, at most {task.episodes:,} episodes", "", *head,
             "Solved: bsuite's criterion (`deep_sea_solved_episode`: the first logged "
             "episode where the running fraction of bad episodes is below 0.9); a run stops "
             f"there. Dithering needs about 2^{size} = {2 ** size:,} episodes. Target: "
             f"solved within {task.episodes:,} episodes in at least 4 of 5 seeds with "
             "Thompson sampling.", "",
             "| arm | seeds solved | solved at episode, per seed | first treasure, per seed "
             "| steps/s | wall time per run (s) |",
             "|---|---:|---|---|---:|---:|"]
    met = False
    for name in names:
        runs = sorted((r for r in results if r["arm"] == name), key=lambda r: r["seed"])
        solved = [r["solved_episode"] for r in runs]
        n_solved = sum(s is not None for s in solved)
        if name.startswith(task.target_arm):
            met = n_solved >= max(len(runs) - 1, 1)
        lines.append(
            f"| {name} | {n_solved}/{len(runs)} | "
            f"{', '.join(_fmt(s) if s is not None else 'not solved' for s in solved)} | "
            f"{', '.join(_fmt(r['first_positive_episode']) for r in runs)} | "
            f"{np.mean([r['steps_per_second'] for r in runs]):.0f} | "
            f"{np.mean([r['train_seconds'] for r in runs]):.0f} |")
    return lines, met


def plot(results: list[dict], names: list[str], task: Task, path: Path) -> None:
    labels = {name: f"{name} ({sum(r['arm'] == name for r in results)} seeds)"
              for name in names}
    colors = {name: f"C{i % 10}" for i, name in enumerate(names)}  # matplotlib's cycle
    plot_learning_curves(results, "arm", labels, colors, task.env_id, path, task.target)


# ---------------------------------------------------------------------- heads x strategies
GRID_STEPS = 10_000


def grid_settings(strategy: str) -> dict:
    """A grid cell's NeuroFlow settings but its head: the tuned MountainCar ones with 5
    critics and the strategy (its default options; disagreement with the tuned scale;
    Thompson sampling with prior_scale 1)."""
    kwargs = {**MC, "n_critics": 5, "exploration": strategy,
              "exploration_kwargs": (MC["exploration_kwargs"] if strategy == "disagreement"
                                     else None)}
    if strategy == "thompson":
        kwargs["critic_head_kwargs"] = {"prior_scale": 1.0}
    return kwargs


def run_grid_cell(args: tuple[str, str, int]) -> dict:
    head, strategy, seed = args
    import torch

    from agents import NeuroFlow

    torch.set_num_threads(1)
    model = NeuroFlow(MC_ID, seed=seed, critic_head=head, **grid_settings(strategy))
    started = time.perf_counter()
    model.learn(GRID_STEPS)
    seconds = time.perf_counter() - started
    final = evaluate(model, MC_ID, 5, seed)
    print(f"  {head:6s} {strategy:12s} {final:8.1f}  {seconds:5.0f} s", file=sys.stderr,
          flush=True)
    return {"head": head, "strategy": strategy, "seed": seed, "final": final,
            "seconds": seconds}


def grid(args: argparse.Namespace) -> int:
    import torch

    from agents.neuroflow.exploration import STRATEGIES
    from agents.neuroflow.heads import HEADS

    seed = args.seeds[0]
    cells = [(h, s, seed) for h in HEADS for s in STRATEGIES
             if not (h == "moe" and s == "thompson")]  # thompson needs fixed members
    results, minutes = run_all(run_grid_cell, cells, args.jobs)
    report = write_report(args.out / "exploration-grid.json", {
        "env_id": MC_ID, "steps": GRID_STEPS, "seed": seed, "heads": list(HEADS),
        "strategies": list(STRATEGIES), "command": command_of(args), "machine": machine(),
        "torch": torch.__version__, "jobs": args.jobs, "date": time.strftime("%Y-%m-%d"),
        "minutes": minutes, "settings": {s: grid_settings(s) for s in STRATEGIES},
        "results": results})
    write_page(args.out / "exploration-grid.md", grid_page(report))
    return 0


def grid_page(report: dict) -> list[str]:
    """The Markdown page of the grid's JSON report."""
    heads, strategies = report["heads"], report["strategies"]
    by = {(r["head"], r["strategy"]): r for r in report["results"]}
    lines = [f"## Every head against every strategy, {report['env_id']}, "
             f"{report['steps']:,} steps, seed {report['seed']}", "",
             run_line(report["command"], report["machine"], report["torch"], report["date"],
                      report["jobs"], report["minutes"])
             + " The tuned MountainCar settings with 5 critics and the head and strategy "
             "swapped (the strategies' default options; disagreement with the tuned "
             "scale; Thompson with prior_scale 1). Cells: deterministic return over 5 "
             "episodes after training / training seconds. Thompson sampling needs members "
             "that stay the same function, which the 'moe' head does not have.", "",
             "| head | " + " | ".join(strategies) + " |",
             "|---|" + "---:|" * len(strategies)]
    for h in heads:
        cells_txt = []
        for s in strategies:
            r = by.get((h, s))
            cells_txt.append("n/a" if r is None else f"{r['final']:.1f} / {r['seconds']:.0f} s")
        lines.append(f"| {h} | " + " | ".join(cells_txt) + " |")
    lines += ["", "Settings of each column (`NeuroFlow`, with `critic_head` the row's head):",
              "", *settings_list(report["settings"]), ""]
    return lines


# ---------------------------------------------------------------------- throughput
def throughput(args: argparse.Namespace) -> int:
    """Interleaved chunks of training on MountainCarContinuous-v0: NeuroFlow with 5 deep
    critics and OAC against SB3 SAC's defaults (2 critics), one update per step each."""
    import torch

    common = dict(batch_size=256, learning_starts=100)
    ours, settings, med = rates_against_sac(MC_ID, {"n_critics": 5, "exploration": "oac"},
                                            common, args.rounds, args.chunk)
    ratio = med["NeuroFlow"] / med["SAC"]
    met = ratio >= 1.5
    lines = [
        f"## Throughput with exploration, {MC_ID}", "",
        run_line(command_of(args), machine(), torch.__version__, time.strftime("%Y-%m-%d"))
        + " Environment steps per second including acting, replay and one gradient update "
        f"per step (batch 256), medians of {args.rounds} interleaved chunks of {args.chunk} "
        "steps after 300 warm-up steps.", "",
        "Settings (keyword arguments besides the defaults; seed 0):", "",
        *settings_list({"NeuroFlow, OAC": settings["NeuroFlow"],
                        "SB3 SAC (MLP)": settings["SAC"]}), "",
        "| agent | networks | steps/s |", "|---|---|---:|",
        f"| NeuroFlow, OAC | liquid actor ({ours.actor.net.n_neurons} neurons, CfC), "
        f"5 MLP critics (128, 128); OAC's shifted mean (a critic call with a gradient) "
        f"at every step | {med['NeuroFlow']:.1f} |",
        f"| SB3 SAC | MLP actor and 2 MLP critics (256, 256) | {med['SAC']:.1f} |", "",
        f"NeuroFlow with OAC / SAC: **{ratio:.2f}x** (target >= 1.5x: "
        f"{'met' if met else 'not met'}).", ""]
    write_page(args.out / "exploration-throughput.md", lines)
    return 0 if met else 1


def command_of(args: argparse.Namespace) -> str:
    """The command line of the page (the options that differ from their defaults)."""
    if args.task == "throughput":
        options = {"--rounds": args.rounds, "--chunk": args.chunk}
    elif args.task == "grid":
        options = {"--seeds": args.seeds[:1], "--jobs": args.jobs}
    else:
        options = {"--arms": args.arms, "--seeds": args.seeds,
                   "--screen-seeds": args.screen_seeds, "--override": args.override,
                   "--tag": args.tag, "--jobs": args.jobs}
    seeds = default_seeds(args.task)
    return command("bench_exploration.py", args.task, {**options, "--out": args.out},
                   {**DEFAULTS, "--seeds": seeds[:1] if args.task == "grid" else seeds,
                    "--screen-seeds": args.seeds})


def default_seeds(task: str) -> list[int]:
    return [0, 1, 2] if task == "pendulum" else [0, 1, 2, 3, 4]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=[*TASKS, "grid", "throughput"])
    parser.add_argument("--seeds", type=integer_option("--seeds", 0), nargs="+", default=None,
                        help="seeds of the tuned arm and the baselines (default 0-4; "
                             "pendulum 0-2; grid: its first seed)")
    parser.add_argument("--screen-seeds", type=integer_option("--screen-seeds", 0), nargs="+",
                        default=None,
                        help="seeds of the other strategies (default: --seeds)")
    parser.add_argument("--arms", nargs="+", default=None,
                        help="run only the arms whose names contain one of these")
    parser.add_argument("--override", type=json.loads, default=None,
                        help="JSON object merged into the NeuroFlow arms' settings")
    parser.add_argument("--tag", default=None,
                        help="suffix of the pages' names (with --override)")
    add_options(parser, DEFAULTS, "--jobs", "--rounds", "--chunk", "--out")
    parser.add_argument("--render-only", action="store_true",
                        help="grid only: train nothing, write the grid's Markdown page again "
                             "from exploration-grid.json in --out")
    args = parser.parse_args(argv)
    if args.render_only:
        path = args.out / "exploration-grid.json"
        if args.task != "grid":
            parser.error("--render-only: only the grid's page is rendered from its JSON")
        if not path.is_file():
            parser.error(f"--render-only: {path} does not exist")
        write_page(path.with_suffix(".md"), grid_page(json.loads(path.read_text())))
        return 0
    if args.override:
        if not args.tag:
            parser.error("--override needs --tag (the pages it writes are named with it)")
        apply_override(args.override)
    args.seeds = args.seeds or default_seeds(args.task)
    args.screen_seeds = args.screen_seeds or args.seeds
    if args.task == "throughput":
        return throughput(args)
    if args.task == "grid":
        return grid(args)
    return learning(args)


if __name__ == "__main__":
    sys.exit(main())
