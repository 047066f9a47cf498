"""POPGym (Morad et al., ICLR 2023): LiquidPPO (and its GRU baseline), NeuroFlow, RecurrentPPO
and memory-free PPO on the Easy level of ten partially observable tasks, on the same budget.

Every (agent, task, seed) run trains for ``--steps`` environment steps (200,000 by default;
a PPO agent stops there within its rollout, at most one step of each copy past it) with one
torch thread, two runs at a time (``--jobs``), and writes its own JSON file
(``<out>/popgym-runs/<Task>-<agent>-<seed>.json``). A run whose file exists is skipped
(``--force`` runs it again), so the suite can be completed over several sittings; the page
(``<out>/popgym.md``, ``popgym.json``, ``popgym.png``) is rendered from whatever run files
exist for the budget and settings asked for, a missing cell marked "not run"
(``--render-only`` renders it without training):

    python benchmarks/bench_popgym.py                          # the whole suite, 3 seeds
    python benchmarks/bench_popgym.py --tasks RepeatPrevious --algos liquid_ppo ppo
    python benchmarks/bench_popgym.py --render-only            # the page from the run files
    python benchmarks/bench_popgym.py --throughput             # steps/s, LiquidPPO vs RecurrentPPO
    python benchmarks/bench_popgym.py --tasks PositionOnlyCartPole --steps 4096 --seeds 0 \\
        --out /tmp/popgym_smoke                                # a smoke run

The metric is POPGym's: the **MMER** (max mean episodic reward), the running maximum over
training of the mean return of the training episodes, and the **normalised MMER**
``0.5 * MMER + 0.5`` (POPGym's returns lie in [-1, 1]). The mean is taken every
``--log-every`` steps (10,000) as RLlib's ``episode_reward_mean`` (POPGym's runs) takes it
every training iteration: over the episodes that ended since the previous point, or over the
last 100 episodes when fewer than 100 ended since then (RLlib's
``metrics_num_episodes_for_smoothing=100``). Beside it, every run evaluates its
deterministic policy after training on 20 episodes of a fresh environment, seeded
``10_000 * (seed + 1) + episode`` (away from the training seeds, as the other RL pages).
The page names the tasks on which an agent's training curve is still rising at the budget
(``still_rising``), where a longer budget, the same for every agent, would change the table.

The training episodes are read the same way for every agent: each keeps Stable-Baselines3's
``ep_info_buffer`` (the returns of the last 100 episodes, ``Monitor``'s or Gymnasium's
``RecordEpisodeStatistics``' for our agents), and a callback at every step takes the entries
added since its previous call.

Agents (one settings set for the whole suite, no per-task settings):

- ``liquid_ppo``: ``agents.LiquidPPO`` on its defaults with 8 environment copies and
  normalised observations (``--liquid-settings`` JSON overrides them);
- ``liquid_ppo_gru``: the same with ``cell="gru"``, torch's GRU cell in place of the liquid
  one (a baseline: what the cell buys, the algorithm held fixed); ``--liquid-settings`` apply
  to it too, less the options only a liquid cell takes (``tasks.for_cell``);
- ``neuroflow``: ``agents.NeuroFlow`` on its defaults (``--neuroflow-settings``);
- ``recurrent_ppo``: sb3-contrib's ``RecurrentPPO("MlpLstmPolicy")`` on its defaults with 8
  copies (its default rollout is 128 steps per copy, as LiquidPPO's);
- ``ppo``: SB3 ``PPO("MlpPolicy")``, no memory (the floor), on its defaults with 8 copies
  and LiquidPPO's and RecurrentPPO's 128 steps per copy (its default 2,048 would give 12
  updates in 200,000 steps).

Our agents take the task by id (``"popgym:popgym-<Task>Easy-v0"``) and every observation and
action space of the suite as it is. The SB3 agents get the observation flattened by
Gymnasium's ``FlattenObservation`` where they cannot take it: ``Tuple`` observations
(Autoencode; SB3's ``MlpPolicy`` refuses them) and ``MultiDiscrete`` ones (CountRecall;
RecurrentPPO's LSTM fails on them). It is a one-hot encoding of each part, as SB3's own of
``MultiDiscrete`` and as ``popgym.wrappers.Flatten`` (which calls the same
``gymnasium.spaces.utils.flatten`` but takes only a bare POPGym env, not ``gym.make``'s).
The page names the wrapped tasks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_ppo import unknown_liquid_settings
from report import (
    machine,
    plot_panels,
    settings_list,
    write_page,
    write_report,
)
from tasks import (
    OUT,
    Task,
    VecEnvAsEnv,
    agent_defaults,
    changed_defaults,
    chunk_learner,
    command,
    evaluate,
    for_cell,
    interleaved_rates,
    json_settings,
    pick_runs,
    run_all,
    train_with_evaluations,
    unknown_settings,
)

from velora_ens.cli_options import integer_option

STEPS = 200_000
TASK_NAMES = ("RepeatPrevious", "RepeatFirst", "CountRecall", "Autoencode", "HigherLower",
              "PositionOnlyCartPole", "PositionOnlyPendulum", "NoisyPositionOnlyCartPole",
              "MineSweeper", "Battleship")
TASKS = {name: Task(f"popgym:popgym-{name}Easy-v0", STEPS) for name in TASK_NAMES}

ALGOS = {"liquid_ppo": "LiquidPPO",
         "liquid_ppo_gru": "LiquidPPO with cell=\"gru\" (a baseline)",
         "neuroflow": "NeuroFlow",
         "recurrent_ppo": "sb3-contrib RecurrentPPO (MlpLstmPolicy)",
         "ppo": "SB3 PPO (MlpPolicy, no memory)"}
COLORS = {"liquid_ppo": "tab:blue", "liquid_ppo_gru": "tab:cyan", "neuroflow": "tab:purple",
          "recurrent_ppo": "tab:orange", "ppo": "tab:green"}
# the one settings set of each agent (keyword arguments of its class; n_envs: copies)
# (liquid_ppo_gru: liquid_ppo's with cell="gru", see settings())
SETTINGS = {"liquid_ppo": {"n_envs": 8, "normalize_observations": True},
            "neuroflow": {},
            "recurrent_ppo": {"n_envs": 8},
            "ppo": {"n_envs": 8, "n_steps": 128}}
EVAL_EPISODES = 20
WINDOW = 100  # RLlib's metrics_num_episodes_for_smoothing
DEFAULTS = {"--tasks": list(TASK_NAMES), "--algos": list(ALGOS), "--seeds": [0, 1, 2],
            "--steps": STEPS, "--log-every": 10_000, "--jobs": 2, "--liquid-settings": {},
            "--neuroflow-settings": {}, "--out": OUT}
RUNS = "popgym-runs"  # the folder of the run files under --out
# our agents' classes in the agents package; the rest are SB3's
OURS = {"liquid_ppo": "LiquidPPO", "liquid_ppo_gru": "LiquidPPO", "neuroflow": "NeuroFlow"}


def defaults(algo: str) -> dict | None:
    """Our agent's constructor defaults today (``tasks.agent_defaults``), which its runs
    record beside their settings; ``None`` for the SB3 agents."""
    if algo not in OURS:
        return None
    import agents

    return agent_defaults(getattr(agents, OURS[algo]))


def settings(algo: str, liquid: dict | None = None, neuroflow: dict | None = None) -> dict:
    """The agent's settings: :data:`SETTINGS` with ``--liquid-settings`` (both LiquidPPO
    rows; the GRU row leaves out the liquid-only options, ``tasks.for_cell``) or
    ``--neuroflow-settings`` (NeuroFlow) over them."""
    if algo == "liquid_ppo_gru":
        return for_cell({**SETTINGS["liquid_ppo"], **(liquid or {})}, "gru")[0]
    extra = {"liquid_ppo": liquid, "neuroflow": neuroflow}.get(algo)
    return {**SETTINGS[algo], **(extra or {})}


# ---------------------------------------------------------------------- environments
def sb3_wrappers(observation_space: Any) -> list[str]:
    """The observation wrappers the SB3 agents need for ``observation_space`` (by name)."""
    import gymnasium as gym

    flat = (gym.spaces.Tuple, gym.spaces.Dict, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)
    return ["gymnasium.wrappers.FlattenObservation"] if isinstance(observation_space, flat) else []


def make_sb3_env(env_id: str) -> Any:
    """One copy of the task for the SB3 agents, wrapped as :func:`sb3_wrappers` says."""
    import gymnasium as gym

    env = gym.make(env_id)
    if sb3_wrappers(env.observation_space):
        env = gym.wrappers.FlattenObservation(env)
    return env


def build(algo: str, env_id: str, seed: int, config: dict
          ) -> tuple[Any, Callable[[], Any], list[str]]:
    """The model, a builder of its evaluation env and the observation wrappers it trains
    with. Our agents take the id; the SB3 agents a ``VecEnv`` of ``n_envs`` wrapped copies
    (evaluated on one copy of it through ``tasks.VecEnvAsEnv``)."""
    import gymnasium as gym

    if algo in OURS:
        import agents

        cls = getattr(agents, OURS[algo])
        model = cls("MlpPolicy", env_id, seed=seed, **config)
        return model, lambda: gym.make(env_id), []
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    kwargs = {k: v for k, v in config.items() if k != "n_envs"}
    venv = make_vec_env(lambda: make_sb3_env(env_id), config.get("n_envs", 1), seed=seed)
    if algo == "recurrent_ppo":
        from sb3_contrib import RecurrentPPO  # the bench extra

        model = RecurrentPPO("MlpLstmPolicy", venv, seed=seed, verbose=0, **kwargs)
    else:
        model = PPO("MlpPolicy", venv, seed=seed, verbose=0, **kwargs)
    wrappers = sb3_wrappers(gym.make(env_id).observation_space)
    return model, lambda: VecEnvAsEnv(DummyVecEnv([lambda: make_sb3_env(env_id)])), wrappers


def parameter_count(model: Any) -> int:
    """Trainable parameters: an SB3 policy's, or our agent's networks (target copies left
    out)."""
    from stable_baselines3.common.base_class import BaseAlgorithm

    if isinstance(model, BaseAlgorithm):
        return sum(p.numel() for p in model.policy.parameters())
    return sum(p.numel() for name, m in model._persistent_modules().items()
               if "target" not in name for p in m.parameters())


# ---------------------------------------------------------------------- the metric
class TrainingEpisodes:
    """The training episodes' returns, read from ``model.ep_info_buffer`` (the entries
    added since the previous read: each is a new dict), and the mean return every
    ``log_every`` steps up to ``steps``, the budget: over the episodes that ended since the
    previous point, or the last :data:`WINDOW` when fewer ended (``None`` before any
    episode ended). The last point is at ``steps``."""

    def __init__(self, model: Any, log_every: int, steps: int, label: str = "") -> None:
        self.model, self.log_every, self.steps, self.label = model, log_every, steps, label
        self.last: dict | None = None
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self.since: list[float] = []
        self.episodes = 0
        self.curve: list[list] = []  # [step, mean return or None, episodes since the last]

    def read(self) -> None:
        """Take the episodes added to the buffer since the previous read."""
        entries = list(self.model.ep_info_buffer)
        start = 0
        for i in range(len(entries) - 1, -1, -1):
            if entries[i] is self.last:
                start = i + 1
                break
        for entry in entries[start:]:
            self.recent.append(float(entry["r"]))
            self.since.append(float(entry["r"]))
            self.episodes += 1
        if entries:
            self.last = entries[-1]

    def point(self, step: int) -> None:
        """The curve's point at ``step``."""
        window = self.since if len(self.since) >= WINDOW else list(self.recent)
        mean = float(np.mean(window)) if window else None
        self.curve.append([step, mean, len(self.since)])
        self.since = []
        text = "-" if mean is None else f"{mean:7.3f}"
        print(f"  {self.label}  {step:>7d} steps  train episode return {text}",
              file=sys.stderr, flush=True)

    def on_step(self, _locals: dict) -> bool:
        """The training callback: read the episodes, a point at each ``log_every`` before
        the budget; ``False`` (stop training) once the budget is reached, so that a PPO
        agent does not run on to the end of its rollout."""
        self.read()
        done = self.model.num_timesteps
        while (len(self.curve) + 1) * self.log_every < min(done + 1, self.steps):
            self.point((len(self.curve) + 1) * self.log_every)
        return done < self.steps

    def finish(self) -> None:
        """After training: the episodes not read yet, and the last point, at ``steps``."""
        self.read()
        while (len(self.curve) + 1) * self.log_every < self.steps:  # training ended early
            self.point((len(self.curve) + 1) * self.log_every)
        self.point(self.steps)


def mmer(curve: list[list]) -> float | None:
    """The running maximum of the curve's means at its end (``None``: no episode ended)."""
    values = [v for _, v, *_ in curve if v is not None]
    return max(values) if values else None


def normalised(value: float | None) -> float | None:
    return None if value is None else 0.5 * value + 0.5


# ---------------------------------------------------------------------- runs
def run_path(out: Path, task: str, algo: str, seed: int) -> Path:
    return out / RUNS / f"{task}-{algo}-{seed}.json"


def run_one(job: tuple[str, str, int, int, int, dict, str, int]) -> dict:
    """Train one (task, agent, seed), evaluate it and write its run file (``jobs``: the
    runs at a time, which the page names)."""
    task_name, algo, seed, steps, log_every, config, path, jobs = job
    import torch

    torch.set_num_threads(1)
    env_id = TASKS[task_name].env_id
    label = f"{task_name} {algo} seed {seed}"
    model, make_eval_env, wrappers = build(algo, env_id, seed, config)
    episodes = TrainingEpisodes(model, log_every, steps, label)
    result = train_with_evaluations(
        model, lambda n: evaluate(model, make_eval_env, n, seed), steps, 0, label,
        episodes=(0, EVAL_EPISODES), on_step=episodes.on_step)
    episodes.finish()
    best = mmer(episodes.curve)
    run = {"task": task_name, "env_id": env_id, "algo": algo, "seed": seed, "steps": steps,
           "log_every": log_every, "settings": config, "defaults": defaults(algo),
           "sb3_wrappers": wrappers,
           "curve": [[s, v] for s, v, _ in episodes.curve],
           "curve_episodes": [n for *_, n in episodes.curve],
           "training_episodes": episodes.episodes, "mmer": best,
           "normalised_mmer": normalised(best), "final_eval": result["curve"][-1][1],
           "eval_episodes": EVAL_EPISODES, "trained_steps": result["steps"],
           "train_seconds": result["train_seconds"],
           "steps_per_second": result["steps_per_second"],
           "parameters": parameter_count(model), "machine": machine(),
           "torch": torch.__version__, "jobs": jobs, "date": time.strftime("%Y-%m-%d")}
    write_report(Path(path), run)
    return run


def read_runs(out: Path) -> list[dict]:
    """Every run file under ``out``, in a stable order."""
    return [json.loads(p.read_text()) for p in sorted((out / RUNS).glob("*.json"))]


def stale(run: dict, args: argparse.Namespace) -> str | None:
    """Why ``run``'s file does not hold a run of this budget and settings, or None."""
    wanted = settings(run["algo"], args.liquid_settings, args.neuroflow_settings)
    for name, have, want in (("steps", run["steps"], args.steps),
                             ("log-every", run["log_every"], args.log_every),
                             ("settings", run["settings"], wanted)):
        if have != want:
            return f"{name} {have} instead of {want}"
    if run["algo"] in OURS:
        return changed_defaults(run.get("defaults"), defaults(run["algo"]))
    return None


# ---------------------------------------------------------------------- the page
def mean_std(values: list[float]) -> str:
    """``mean ± std`` over seeds; one seed has no spread, so it shows the value alone."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


# a training curve still rising at the budget: the last quarter of the seeds' mean curve at
# least RISING above the quarter before it, and under CEILING (POPGym's returns reach 1 at
# most, so a curve near it has little left to gain)
RISING, CEILING = 0.05, 0.9


def still_rising(runs: list[dict]) -> bool:
    """Whether the seeds' mean training curve is still rising at the budget (see
    ``RISING``). Points with no episode ended are left out of the means.

    >>> still_rising([{"curve": [[1, -0.5], [2, -0.5], [3, -0.4], [4, -0.3]]}])
    True
    """
    length = min(len(r["curve"]) for r in runs)
    quarter = length // 4
    if quarter == 0:
        return False
    values = np.array([[np.nan if p[1] is None else p[1] for p in r["curve"][:length]]
                       for r in runs], dtype=float)
    with warnings.catch_warnings():  # a quarter with no episode ended on any seed: nan
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=0)
        last, before = np.nanmean(mean[-quarter:]), np.nanmean(mean[-2 * quarter:-quarter])
    return bool(last - before >= RISING and last < CEILING)


def cell_summary(runs: list[dict]) -> dict:
    """One agent's numbers on one task over its seeds."""
    mmers = [r["mmer"] for r in runs if r["mmer"] is not None]
    return {"seeds": [r["seed"] for r in runs], "mmer": [r["mmer"] for r in runs],
            "mmer_mean": float(np.mean(mmers)) if mmers else None,
            "mmer_std": float(np.std(mmers)) if mmers else None,
            "normalised_mmer_mean": normalised(float(np.mean(mmers))) if mmers else None,
            "final_eval": [r["final_eval"] for r in runs],
            "final_eval_mean": float(np.mean([r["final_eval"] for r in runs])),
            "final_eval_std": float(np.std([r["final_eval"] for r in runs])),
            "steps_per_second": float(np.mean([r["steps_per_second"] for r in runs])),
            "parameters": runs[0]["parameters"], "sb3_wrappers": runs[0]["sb3_wrappers"],
            "still_rising": still_rising(runs)}


def summarize(runs: list[dict], tasks: list[str], algos: list[str]) -> dict:
    """Per task and agent (``None``: not run), and per agent over the suite."""
    cells = {t: {a: None for a in algos} for t in tasks}
    for t in tasks:
        for a in algos:
            mine = sorted((r for r in runs if r["task"] == t and r["algo"] == a),
                          key=lambda r: r["seed"])
            if mine:
                cells[t][a] = cell_summary(mine)
    # the column over common tasks compares the agents that ran the whole suite (or, while
    # none has, every agent with runs) on the tasks they all ran; an agent short of them
    # has no value there
    def has(t: str, a: str) -> bool:
        return cells[t][a] is not None and cells[t][a]["mmer_mean"] is not None

    ran = [a for a in algos if any(has(t, a) for t in tasks)]
    basis = [a for a in ran if all(has(t, a) for t in tasks)] or ran
    common = [t for t in tasks if all(has(t, a) for a in basis)]
    suite = {}
    for a in algos:
        done = [t for t in tasks if cells[t][a] is not None
                and cells[t][a]["mmer_mean"] is not None]
        suite[a] = {
            "tasks": done,
            "normalised_mmer": (float(np.mean([cells[t][a]["normalised_mmer_mean"]
                                               for t in done])) if done else None),
            "normalised_mmer_common": (float(np.mean([cells[t][a]["normalised_mmer_mean"]
                                                      for t in common]))
                                       if common and all(has(t, a) for t in common)
                                       else None),
            "final_eval": (float(np.mean([cells[t][a]["final_eval_mean"] for t in done]))
                           if done else None),
            "steps_per_second": (float(np.mean([cells[t][a]["steps_per_second"]
                                                for t in done])) if done else None)}
    return {"cells": cells, "suite": suite, "common_tasks": common}


def number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def suite_table(summary: dict, algos: list[str], n_tasks: int) -> list[str]:
    common = summary["common_tasks"]
    lines = ["| agent | tasks run | mean normalised MMER over its tasks | mean normalised MMER "
             f"over the {len(common)} task(s) every agent ran (-: an agent short of them) | "
             "mean final evaluation "
             "return "
             "over its tasks | mean train steps/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for a in algos:
        row = summary["suite"][a]
        lines.append(f"| {ALGOS[a]} | {len(row['tasks'])}/{n_tasks} | "
                     f"{number(row['normalised_mmer'])} | "
                     f"{number(row['normalised_mmer_common'])} | "
                     f"{number(row['final_eval'])} | {number(row['steps_per_second'], 0)} |")
    return lines


def task_table(summary: dict, tasks: list[str], algos: list[str]) -> list[str]:
    lines = ["| task | agent | seeds | MMER (mean ± std) | normalised MMER | MMER per seed | "
             "final evaluation (mean ± std) | per seed | train steps/s | parameters |",
             "|---|---|---|---:|---:|---|---:|---|---:|---:|"]
    for t in tasks:
        for a in algos:
            cell = summary["cells"][t][a]
            if cell is None:
                lines.append(f"| {t} | {ALGOS[a]} | not run | | | | | | | |")
                continue
            seeds = " ".join(map(str, cell["seeds"]))
            mmer_text = (mean_std([m for m in cell["mmer"] if m is not None])
                         if cell["mmer_mean"] is not None else "no episode ended")
            lines.append(
                f"| {t} | {ALGOS[a]} | {seeds} | {mmer_text} | "
                f"{number(cell['normalised_mmer_mean'])} | "
                f"{', '.join(number(m) for m in cell['mmer'])} | "
                f"{mean_std(cell['final_eval'])} | "
                f"{', '.join(f'{v:.3f}' for v in cell['final_eval'])} | "
                f"{cell['steps_per_second']:.0f} | {cell['parameters']:,} |")
    return lines


def rising_lines(summary: dict, tasks: list[str], algos: list[str], steps: int) -> list[str]:
    """The tasks on which some agent's training curve is still rising at the budget."""
    rising = {t: [ALGOS[a] for a in algos if summary["cells"][t][a] is not None
                  and summary["cells"][t][a]["still_rising"]] for t in tasks}
    named = "; ".join(f"{t}: {', '.join(names)}" for t, names in rising.items() if names)
    rule = (f"the seeds' mean training curve, its last quarter at least {RISING} above the "
            f"quarter before and under {CEILING}")
    if not named:
        return [f"No training curve is still rising at {steps:,} steps ({rule}).", ""]
    return [f"Still rising at {steps:,} steps ({rule}): {named}. A longer budget for a task, "
            "the same for every agent, is a page of its own: `python "
            "benchmarks/bench_popgym.py --tasks <task> --steps <N> --out <folder>`.", ""]


def wrapped_tasks(summary: dict, tasks: list[str], algos: list[str]) -> dict[str, list[str]]:
    """The tasks on which the SB3 agents ran with each observation wrapper."""
    wrapped: dict[str, list[str]] = {}
    for t in tasks:
        for name in sorted({w for a in algos if summary["cells"][t][a] is not None
                            for w in summary["cells"][t][a]["sb3_wrappers"]}):
            wrapped.setdefault(name, []).append(t)
    return wrapped


# the defaults that shape an agent's memory and its updates, which the page names
NAMED_DEFAULTS = ("cell", "actor_neurons", "critic_neurons", "actor_dense_recurrence",
                  "actor_head", "n_steps", "batch_size", "seq_len", "n_epochs",
                  "learning_rate", "buffer_size")
# what a default of None, a choice made when the agent is built, stands for
NONE_MEANS = {"actor_dense_recurrence": "on for the liquid cells, off for GRU and LSTM"}


def defaults_lines(defaults: dict) -> list[str]:
    """What our agents' defaults are, as recorded by their runs (every default is in the
    run files and the JSON)."""
    if not defaults:
        return []
    lines = ["Our agents' defaults under those settings (all of them are in each run file):",
             ""]
    shown = set()
    for algo, values in defaults.items():
        if OURS.get(algo, algo) in shown:  # both LiquidPPO rows: one class, one line
            continue
        shown.add(OURS.get(algo, algo))
        named = ", ".join(f"`{k}={values[k]!r}`" + (f" ({NONE_MEANS[k]})" if values[k] is None
                                                     and k in NONE_MEANS else "")
                          for k in NAMED_DEFAULTS if k in values)
        lines.append(f"- {OURS.get(algo, ALGOS[algo])}: {named}")
    return [*lines, ""]


def page(report: dict) -> list[str]:
    """The Markdown page of ``report`` (what :func:`render` writes as popgym.json)."""
    tasks, algos, summary = report["tasks"], report["algos"], report["summary"]
    done = sum(len(c["seeds"]) for t in tasks for c in summary["cells"][t].values() if c)
    machines = ", ".join(f"{m} ({n} runs)" for m, n in report["machines"].items()) or "none"
    dates = (f"{report['dates'][0]} to {report['dates'][-1]}" if report["dates"]
             else "no runs yet")
    wrapped = wrapped_tasks(summary, tasks, algos)
    planned = len(tasks) * len(algos) * len(report["seeds"])
    jobs = " or ".join(map(str, report["jobs"])) or "-"
    lines = [
        f"## POPGym, Easy level: {len(tasks)} task(s), {report['steps']:,} steps per run, seeds "
        f"{report['seeds']}",
        "",
        f"Command: `{report['command']}` ({done} of {planned} runs on file; each run is kept "
        "in its own file, so the suite may span several sittings). Runs: one torch thread "
        f"each, {jobs} at a time; machines: {machines}; torch "
        f"{', '.join(report['torch']) or '-'}; {dates}.",
        "",
        "Metric: POPGym's MMER, the running maximum over training of the mean return of the "
        f"training episodes, taken every {report['log_every']:,} steps over the episodes that "
        f"ended since the previous point (the last {WINDOW} when fewer ended: RLlib's "
        "`episode_reward_mean`), and the normalised MMER, 0.5 * MMER + 0.5, in [0, 1]. The "
        f"final evaluation is the deterministic policy after training on {EVAL_EPISODES} "
        "episodes of a fresh environment seeded 10,000 * (seed + 1) + episode. POPGym scales "
        "the returns to about [-1, 1]. Train steps/s exclude the evaluation.",
        "",
        "Settings (one set for the whole suite; keyword arguments of each class over its "
        "defaults, `n_envs`: environment copies):",
        "",
        *settings_list({ALGOS[a]: report["settings"][a] for a in algos}),
        "",
        *defaults_lines(report.get("defaults", {})),
        "Our agents take every task by its id, `popgym:popgym-<Task>Easy-v0`, spaces as they "
        "are." + "".join(f" The SB3 agents see the observations of {', '.join(ts)} through "
                         f"`{name}` (one-hot): `MlpPolicy` refuses `Tuple` observations and "
                         "RecurrentPPO's LSTM fails on `MultiDiscrete` ones."
                         for name, ts in wrapped.items()),
        "",
        "### The suite",
        "",
        *suite_table(summary, algos, len(tasks)),
        "",
        "### Per task",
        "",
        *task_table(summary, tasks, algos),
        "",
        *rising_lines(summary, tasks, algos, report["steps"]),
        *([f"Run files left out (another budget or settings): {report['left_out']}.", ""]
          if report["left_out"] else []),
        "![training episode returns](popgym.png)",
        "",
    ]
    return lines


def plot(report: dict, runs: list[dict], path: Path) -> None:
    """One panel per task that has runs: each agent's training curve (mean, min-max over
    seeds)."""
    panels = {t: [r for r in runs if r["task"] == t] for t in report["tasks"]}
    plot_panels({t: rs for t, rs in panels.items() if rs}, "algo",
                {a: ALGOS[a] for a in report["algos"]}, COLORS,
                "POPGym Easy: mean training episode return (mean, min-max over seeds) "
                "against environment steps", path)


def command_of(args: argparse.Namespace) -> str:
    options = {"--tasks": args.tasks, "--algos": args.algos, "--seeds": args.seeds,
               "--steps": args.steps, "--log-every": args.log_every, "--jobs": args.jobs,
               "--liquid-settings": args.liquid_settings,
               "--neuroflow-settings": args.neuroflow_settings, "--out": args.out}
    return command("bench_popgym.py", "", options, DEFAULTS)


def render(args: argparse.Namespace) -> dict:
    """The page, its JSON and its curves from the run files of ``args``' tasks, agents,
    seeds, budget and settings."""
    runs, left_out, machines = pick_runs(
        read_runs(args.out), {"task": args.tasks, "algo": args.algos, "seed": args.seeds},
        lambda run: stale(run, args))
    report = write_report(args.out / "popgym.json", {
        "command": command_of(args), "tasks": args.tasks, "algos": args.algos,
        "seeds": args.seeds, "steps": args.steps, "log_every": args.log_every,
        "settings": {a: settings(a, args.liquid_settings, args.neuroflow_settings)
                     for a in args.algos},
        "defaults": {a: defaults(a) for a in args.algos if defaults(a) is not None},
        "env_ids": {t: TASKS[t].env_id for t in args.tasks},
        "machines": machines, "torch": sorted({r["torch"] for r in runs}),
        "jobs": sorted({r["jobs"] for r in runs}),
        "dates": sorted({r["date"] for r in runs}), "rendered": time.strftime("%Y-%m-%d"),
        "left_out": left_out, "summary": summarize(runs, args.tasks, args.algos),
        "runs": runs})
    write_page(args.out / "popgym.md", page(report))
    plot(report, runs, args.out / "popgym.png")
    return report


# ---------------------------------------------------------------------- throughput
THROUGHPUT = {"rounds": 3, "chunk": 2048}  # interleaved chunks of training steps per agent


def throughput_one(job: tuple[str, dict, int, int]) -> dict:
    """LiquidPPO against RecurrentPPO on one task, each with its settings of the suite, one
    torch thread: one warm-up chunk each, then the median steps/s of ``rounds`` interleaved
    chunks (``tasks.interleaved_rates``: a change in the machine's load affects both)."""
    task_name, liquid, rounds, chunk = job
    import torch

    torch.set_num_threads(1)
    env_id = TASKS[task_name].env_id
    models = {a: build(a, env_id, 0, settings(a, liquid))[0]
              for a in ("liquid_ppo", "recurrent_ppo")}
    for model in models.values():
        model.learn(chunk)
    rates = interleaved_rates({a: chunk_learner(m, chunk) for a, m in models.items()},
                              rounds, chunk)
    return {"task": task_name, "steps_per_second": rates,
            "ratio": rates["liquid_ppo"] / rates["recurrent_ppo"],
            "parameters": {a: parameter_count(m) for a, m in models.items()}}


def throughput(args: argparse.Namespace) -> int:
    """The throughput page (``popgym-throughput.md``/``.json``); exit 1 when a task is
    under the target (LiquidPPO at least 3x RecurrentPPO's steps/s)."""
    import torch

    rounds, chunk = THROUGHPUT["rounds"], THROUGHPUT["chunk"]
    rows, minutes = run_all(throughput_one, [(t, args.liquid_settings, rounds, chunk)
                                             for t in args.tasks], args.jobs)
    met = all(r["ratio"] >= 3.0 for r in rows)
    options = {"--tasks": args.tasks, "--jobs": args.jobs,
               "--liquid-settings": args.liquid_settings, "--out": args.out}
    cmd = command("bench_popgym.py", "", options, DEFAULTS) + " --throughput"
    write_report(args.out / "popgym-throughput.json", {
        "command": cmd, "machine": machine(), "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"), "rounds": rounds, "chunk": chunk,
        "jobs": args.jobs, "rows": rows,
        "settings": {a: settings(a, args.liquid_settings)
                     for a in ("liquid_ppo", "recurrent_ppo")},
        "defaults": {"liquid_ppo": defaults("liquid_ppo")}})
    lines = [
        "## POPGym training throughput: LiquidPPO and RecurrentPPO",
        "",
        f"Command: `{cmd}`; {machine()}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d')}, {minutes:.0f} min. One torch thread per task, "
        f"{args.jobs} task(s) at a time; both agents of a task in one process, with their "
        "settings of the suite (below), seed 0. Environment steps per second including "
        f"acting and the PPO updates: medians of {rounds} interleaved chunks of {chunk:,} "
        "steps after a warm-up chunk, so a change in the machine's load affects both agents "
        "alike; the ratio is what carries to other machines, the absolute rates are this "
        "machine's.",
        "",
        *settings_list({ALGOS[a]: settings(a, args.liquid_settings)
                        for a in ("liquid_ppo", "recurrent_ppo")}),
        "",
        *defaults_lines({"liquid_ppo": defaults("liquid_ppo")}),
        "| task | LiquidPPO steps/s | RecurrentPPO steps/s | ratio | LiquidPPO parameters | "
        "RecurrentPPO parameters |",
        "|---|---:|---:|---:|---:|---:|",
        *(f"| {r['task']} | {r['steps_per_second']['liquid_ppo']:.0f} | "
          f"{r['steps_per_second']['recurrent_ppo']:.0f} | **{r['ratio']:.1f}x** | "
          f"{r['parameters']['liquid_ppo']:,} | {r['parameters']['recurrent_ppo']:,} |"
          for r in rows),
        "",
        f"Target: LiquidPPO at least 3x RecurrentPPO's steps/s on every task: "
        f"{'met' if met else 'not met'} (lowest ratio {min(r['ratio'] for r in rows):.1f}x).",
        "",
    ]
    write_page(args.out / "popgym-throughput.md", lines)
    return 0 if met else 1


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=TASK_NAMES, default=list(TASK_NAMES),
                        help="POPGym tasks, each at its Easy level (default: all ten)")
    parser.add_argument("--algos", nargs="+", choices=list(ALGOS), default=list(ALGOS),
                        help="agents (default: all five)")
    parser.add_argument("--seeds", type=integer_option("--seeds", 0), nargs="+",
                        default=DEFAULTS["--seeds"], help="seeds (default 0 1 2)")
    parser.add_argument("--steps", type=integer_option("--steps", 1), default=STEPS,
                        help=f"training steps per run, every agent (default {STEPS:,})")
    parser.add_argument("--log-every", type=integer_option("--log-every", 1),
                        default=DEFAULTS["--log-every"],
                        help="steps between the points of the training curve, over which the "
                             "MMER is the maximum (default 10,000)")
    parser.add_argument("--jobs", type=integer_option("--jobs", 1), default=2,
                        help="runs at a time (default 2)")
    parser.add_argument("--liquid-settings", type=json_settings("--liquid-settings", "LiquidPPO"),
                        default={}, metavar="JSON",
                        help="LiquidPPO keyword arguments over its settings of the suite "
                             f"{SETTINGS['liquid_ppo']} (default: none)")
    parser.add_argument("--neuroflow-settings",
                        type=json_settings("--neuroflow-settings", "NeuroFlow"), default={},
                        metavar="JSON", help="NeuroFlow keyword arguments over its defaults "
                                             "(default: none)")
    parser.add_argument("--out", type=Path, default=OUT,
                        help=f"output folder: the page popgym.md/.json/.png and the run files "
                             f"under {RUNS}/ (default {OUT})")
    parser.add_argument("--force", action="store_true",
                        help="run again the runs whose files exist")
    parser.add_argument("--render-only", action="store_true",
                        help="write the page from the run files, training nothing")
    parser.add_argument("--throughput", action="store_true",
                        help="measure training steps/s of LiquidPPO against RecurrentPPO on "
                             "each task (popgym-throughput.md), no learning runs")
    args = parser.parse_args(argv)
    args.tasks = [t for t in TASK_NAMES if t in args.tasks]
    args.algos = list(dict.fromkeys(args.algos))
    args.seeds = list(dict.fromkeys(args.seeds))
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file, not a folder")
    for option, algo, value in (("--liquid-settings", "liquid_ppo", args.liquid_settings),
                                ("--neuroflow-settings", "neuroflow", args.neuroflow_settings)):
        if not value:
            continue
        users = [a for a in args.algos if OURS.get(a) == OURS[algo]]
        if not users:
            parser.error(f"{option} needs {' or '.join(a for a in OURS if OURS[a] == OURS[algo])}"
                         " among --algos")
        if algo == "liquid_ppo":
            why = unknown_liquid_settings(value)
        else:
            from agents import NeuroFlow

            why = unknown_settings(NeuroFlow, option, value)
        if why:
            parser.error(why)
    if args.throughput:
        return throughput(args)
    if not args.render_only:
        work, clash = [], []
        for t in args.tasks:
            for s in args.seeds:
                for a in args.algos:
                    path = run_path(args.out, t, a, s)
                    if path.exists() and not args.force:
                        if why := stale(json.loads(path.read_text()), args):
                            clash.append(f"{path} ({why})")
                        continue
                    config = settings(a, args.liquid_settings, args.neuroflow_settings)
                    work.append((t, a, s, args.steps, args.log_every, config, str(path),
                                 args.jobs))
        if clash:
            parser.error("run files of another budget or settings exist: "
                         + "; ".join(clash) + " (--force runs them again; or pass another "
                         "--out)")
        print(f"{len(work)} run(s) to do", file=sys.stderr)
        if work:
            run_all(run_one, work, args.jobs)
    render(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
