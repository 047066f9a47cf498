"""What the RL benchmark scripts share to run: the task, the command line a page names,
the models built from an arm's settings, the evaluation (``agents.evaluate_policy``, for
every agent and baseline), training with evaluations, and the interleaved timing.

Every evaluation runs the deterministic policy on a fresh environment, episode ``ep`` of
the run with seed ``seed`` reset with ``10_000 * (seed + 1) + ep``
(:func:`episode_seeds`): the same episodes for every agent of a run. A baseline that
trains on a Stable-Baselines3 ``VecEnv`` (frames stacked, ``VecNormalize``) is evaluated
on one copy of that ``VecEnv`` with the training statistics frozen, presented to
``agents.evaluate_policy`` as one Gymnasium env by :class:`VecEnvAsEnv`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

OUT = Path("docs/benchmarks/rl")  # where the scripts write their pages by default

__all__ = ["OUT", "Arm", "Task", "VecEnvAsEnv", "add_options", "chunk_learner", "command",
           "episode_seeds", "evaluate", "interleaved_rates", "make_model", "rates_against_sac",
           "run_all", "train_with_evaluations"]


@dataclass
class Arm:
    """One agent of a task: its name on the page, ``"NeuroFlow"`` or a Stable-Baselines3
    class (with ``MlpPolicy``), and its keyword arguments. ``main``: runs on ``--seeds``
    (else on bench_exploration's ``--screen-seeds``)."""

    name: str
    algo: str
    kwargs: dict
    main: bool = True


@dataclass(frozen=True)
class Task:
    """One benchmark task. The fields a script does not use keep their defaults.

    Args:
        env_id: the environment the agents train and are evaluated on.
        steps: the training budget per run (DeepSea: 0, the budget is ``episodes``).
        eval_every: steps between evaluations (0: none).
        target: the return (mean final return, or bench_exploration's per-seed final
            return) the target asks for; ``None``: no return target.
        reference: where the target comes from.
        stretch: a second, harder target (bench_ppo's PendulumNoVel).
        base_id: the task whose settings the agents take (bench_ppo: the fully observed
            task of the stacked PPO's ``ppo.yml`` entry; bench_irregular: the regular NoVel
            task).
        nominal_dt: seconds of one simulator step (bench_irregular).
        env_kwargs: keyword arguments of ``envs.make_env`` for training (DeepSea's size).
        episodes: a budget in episodes instead of steps (DeepSea).
        arms: the agents (bench_rl, bench_exploration; the other scripts choose theirs by
            name).
        target_arm: the start of the name of the arm the target is measured on.
        per_seed: the target asks all seeds but one to reach ``target`` (else the mean).
    """

    env_id: str
    steps: int
    eval_every: int = 0
    target: float | None = None
    reference: str = ""
    stretch: float | None = None
    base_id: str = ""
    nominal_dt: float | None = None
    env_kwargs: dict = field(default_factory=dict)
    episodes: int | None = None
    arms: tuple[Arm, ...] = ()
    target_arm: str = ""
    per_seed: bool = True

    def arm(self, name: str) -> Arm:
        """The arm called ``name``."""
        return next(a for a in self.arms if a.name == name)


def command(script: str, subcommand: str, options: Mapping[str, Any],
            defaults: Mapping[str, Any]) -> str:
    """The command line of a page: ``python benchmarks/<script> <subcommand>`` (no
    subcommand when it is empty) and, in the order of ``options``, each option whose value
    differs from its default (``defaults[name]``, ``None`` if not named). A list gives its
    items, ``True`` the bare flag, a dict its JSON; ``None`` and ``False`` are left out;
    every word is quoted for the shell where it needs it (tests/test_bench.py has a worked example).
    """
    words = ["python", f"benchmarks/{script}", *([subcommand] if subcommand else [])]
    for name, value in options.items():
        if value is None or value is False or value == defaults.get(name):
            continue
        words.append(name)
        if isinstance(value, dict):
            words.append(json.dumps(value))
        elif isinstance(value, list | tuple):
            words += [str(v) for v in value]
        elif value is not True:
            words.append(str(value))
    return " ".join(shlex.quote(w) for w in words)


def add_options(parser: argparse.ArgumentParser, defaults: Mapping[str, Any], *names: str
                ) -> None:
    """Add the options of ``names`` among those the scripts share (``--jobs``, ``--rounds``,
    ``--chunk``, ``--out``) with the script's ``defaults``; a number below 1 is refused
    with an error that names the option."""
    from velora_ens.cli_options import integer_option

    helps = {"--jobs": "runs at a time", "--rounds": "throughput: chunks per agent",
             "--chunk": "throughput: steps per chunk"}
    for name in names:
        if name == "--out":
            parser.add_argument("--out", type=Path, default=defaults[name],
                                help=f"output folder (default {defaults[name]})")
        else:
            parser.add_argument(name, type=integer_option(name, 1), default=defaults[name],
                                help=f"{helps[name]} (default {defaults[name]})")


def make_model(task: Task, arm: Arm, seed: int) -> Any:
    """The arm's model on the task: NeuroFlow on the id (or on ``envs.make_env(id,
    **env_kwargs)``), or the SB3 class with ``MlpPolicy`` on ``envs.make_env``."""
    import envs

    env = envs.make_env(task.env_id, **task.env_kwargs) if task.env_kwargs else task.env_id
    if arm.algo == "NeuroFlow":
        from agents import NeuroFlow

        return NeuroFlow(env, seed=seed, **arm.kwargs)
    import stable_baselines3 as sb3

    if isinstance(env, str):
        env = envs.make_env(env)
    return getattr(sb3, arm.algo)("MlpPolicy", env, seed=seed, verbose=0, **arm.kwargs)


# ---------------------------------------------------------------------- evaluation
def episode_seeds(seed: int, episodes: int) -> list[int]:
    """The reset seeds of a run's evaluation episodes: ``10_000 * (seed + 1) + ep``."""
    return [10_000 * (seed + 1) + ep for ep in range(episodes)]


class VecEnvAsEnv(gym.Env):
    """A Stable-Baselines3 ``VecEnv`` of one copy, wrappers included (frames stacked, a
    frozen ``VecNormalize``), as one Gymnasium env, so that ``agents.evaluate_policy`` runs
    its episodes. ``reset(seed=s)`` seeds the copy (``VecEnv.seed``) before resetting it;
    the observations, rewards and infos are the copy's, as the ``VecEnv`` gives them (the
    rewards as it buffers them, float32); an episode ends where the ``VecEnv`` says done,
    truncated where its info says ``TimeLimit.truncated``. The observation the ``VecEnv``
    returns with ``done`` (the next episode's first) is not used: the next episode starts
    with ``reset``, as a seeded evaluation episode does."""

    def __init__(self, venv: Any) -> None:
        if venv.num_envs != 1:
            raise ValueError(f"VecEnvAsEnv takes a VecEnv of one copy, got {venv.num_envs}")
        self.venv = venv
        self.observation_space = venv.observation_space
        self.action_space = venv.action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[Any, dict]:
        if seed is not None:
            self.venv.seed(seed)
        if options is not None:
            self.venv.set_options(options)
        obs = self.venv.reset()
        return obs[0], dict(self.venv.unwrapped.reset_infos[0])

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict]:
        obs, rewards, dones, infos = self.venv.step(np.array([action]))
        truncated = bool(infos[0].get("TimeLimit.truncated", False))
        return obs[0], rewards[0], bool(dones[0]) and not truncated, truncated, infos[0]

    def close(self) -> None:
        self.venv.close()


def evaluate(model: Any, env: str | Callable[[], gym.Env], episodes: int, seed: int) -> float:
    """Mean return of ``model``'s deterministic policy over ``episodes`` episodes of one
    fresh env (an id for ``envs.make_env``, or a function that builds it), episode ``ep``
    reset with ``episode_seeds(seed, episodes)[ep]``: each episode one seeded call of
    ``agents.evaluate_policy`` (which passes the elapsed time to an agent trained with
    ``elapsed_time_key``)."""
    import agents

    if isinstance(env, str):
        import envs

        one = envs.make_env(env)
    else:
        one = env()
    try:
        returns = [agents.evaluate_policy(model, one, 1, deterministic=True,
                                          return_episode_rewards=True, seed=s)[0][0]
                   for s in episode_seeds(seed, episodes)]
    finally:
        one.close()
    return float(np.mean(returns))


# ---------------------------------------------------------------------- training
def run_all(run_one: Callable[[Any], dict], work: list, jobs: int) -> tuple[list[dict], float]:
    """``run_one`` on every item of ``work``, ``jobs`` at a time in spawned processes (each
    imports the script afresh), in ``work``'s order; returns the results and the minutes
    it took."""
    import multiprocessing as mp

    started = time.time()
    with mp.get_context("spawn").Pool(jobs) as pool:
        results = pool.map(run_one, work, chunksize=1)
    return results, (time.time() - started) / 60


def train_with_evaluations(model: Any, evaluate: Callable[[int], float], steps: int,
                           eval_every: int, label: str, episodes: tuple[int, int] = (10, 20),
                           final_after_learn: bool = True,
                           on_step: Callable[[dict], bool] | None = None) -> dict:
    """Train ``model`` for ``steps`` in one ``learn`` call (so schedules see the whole
    budget), evaluating (``evaluate(n)``: the mean deterministic return over ``n``
    episodes) on ``episodes[0]`` episodes every ``eval_every`` steps from the callback and
    on ``episodes[1]`` at the end: after ``learn`` returns (``final_after_learn``), or at
    the callback's first step at or past ``steps`` (bench_rl's and bench_exploration's
    protocol). ``on_step(locals)``, if given, runs first at every callback step; ``False``
    stops training. The training time excludes the evaluations."""
    curve: list[tuple[int, float]] = []
    eval_seconds = 0.0
    started = time.perf_counter()

    def record(n: int) -> None:
        nonlocal eval_seconds
        t0 = time.perf_counter()
        curve.append((model.num_timesteps, evaluate(n)))
        eval_seconds += time.perf_counter() - t0
        rate = model.num_timesteps / (time.perf_counter() - started - eval_seconds)
        print(f"  {label}  {model.num_timesteps:>7d} steps  eval {curve[-1][1]:8.1f}  "
              f"{rate:6.1f} steps/s", file=sys.stderr, flush=True)

    def callback(local: dict, _globals: dict) -> bool:
        if on_step is not None and not on_step(local):
            return False
        done = model.num_timesteps
        if eval_every and done >= (len(curve) + 1) * eval_every:
            if done < steps:
                record(episodes[0])
            elif not final_after_learn:
                record(episodes[1])
        return True

    model.learn(steps, callback=callback)
    train_seconds = time.perf_counter() - started - eval_seconds
    if final_after_learn:
        record(episodes[1])
    return {"curve": curve, "steps": int(model.num_timesteps), "train_seconds": train_seconds,
            "eval_seconds": eval_seconds,
            "steps_per_second": model.num_timesteps / train_seconds}


def json_settings(option: str, cls: str) -> Callable[[str], dict]:
    """An option's ``type``: a JSON object of ``cls`` keyword arguments (a clear argparse
    error otherwise)."""
    def parse(text: str) -> dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise argparse.ArgumentTypeError(f"{option} must be a JSON object of {cls} keyword "
                                             f"arguments, got {text!r} ({error})") from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"{option} must be a JSON object of {cls} keyword "
                                             f"arguments, got {text!r}")
        return value
    return parse


def unknown_settings(cls: Any, option: str, overrides: dict) -> str | None:
    """Why ``overrides`` are not keyword arguments of ``cls`` a run may set, or None."""
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "policy", "env",
                                                                   "seed"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        return (f"{option}: {', '.join(map(repr, unknown))} not {cls.__name__} keyword "
                f"argument(s); expected some of {', '.join(sorted(accepted))}")
    return None


def pick_runs(runs: list[dict], wanted: Mapping[str, list], stale: Callable[[dict], str | None]
              ) -> tuple[list[dict], list[str], dict[str, int]]:
    """The run files a page shows: those whose every ``wanted`` field (e.g. ``task``,
    ``algo``, ``seed``) is among the values asked for and that ``stale`` finds current;
    the names of those it leaves out, with why (``task-algo-seed (why)``); and how many
    runs each machine made."""
    kept, left_out, machines = [], [], {}
    for run in runs:
        if any(run[field] not in values for field, values in wanted.items()):
            continue
        if why := stale(run):
            left_out.append("-".join(str(run[f]) for f in wanted) + f" ({why})")
        else:
            kept.append(run)
            machines[run["machine"]] = machines.get(run["machine"], 0) + 1
    return kept, left_out, machines


# LiquidPPO keyword arguments that a cell refuses when set (recurrent_network for the gated
# cells, LiquidNCPNetwork for LTC): a comparison across cells leaves them out of the others
LIQUID_ONLY = {"cfc": (), "ltc": ("actor_self_synapse_init",),
               "gru": ("actor_dense_recurrence", "actor_mixed_memory",
                       "actor_self_synapse_init"),
               "lstm": ("actor_dense_recurrence", "actor_mixed_memory",
                        "actor_self_synapse_init")}


def for_cell(settings: dict, cell: str) -> tuple[dict, list[str]]:
    """``settings`` with ``cell`` and without the options that ``cell`` refuses when set
    (:data:`LIQUID_ONLY`), and the names of those left out."""
    dropped = [k for k in LIQUID_ONLY[cell]  # 0.0 is a value set; None and False are not
               if settings.get(k) is not None and settings.get(k) is not False]
    return {**{k: v for k, v in settings.items() if k not in dropped}, "cell": cell}, dropped


# constructor arguments that name the run, not the agent's behaviour
NOT_DEFAULTS = ("self", "policy", "env", "seed", "device", "verbose", "tensorboard_log")


def agent_defaults(cls: Any) -> dict:
    """The keyword defaults of ``cls``'s constructor, as JSON would hold them: a run "on the
    agent's defaults" records them, so that a later change of a default marks the run as
    one of other settings (a run file keeps only the settings given over them)."""
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
                if name not in NOT_DEFAULTS and p.default is not inspect.Parameter.empty}
    return json.loads(json.dumps(defaults))


def changed_defaults(have: dict | None, want: dict) -> str | None:
    """Which defaults differ between a run file's ``have`` and today's ``want`` (one
    line), or None. An option added since the run (a name ``have`` lacks) is left out:
    a new option comes with a default that keeps what the agent did before (the
    fingerprints of ``fingerprint_rl.py`` show it), so the run still holds."""
    if have is None:
        return "no agent defaults recorded"
    want = {n: v for n, v in want.items() if n in have}
    if have == want:
        return None
    before, after = ({n: d.get(n, "(none)") for n in sorted(set(have) | set(want))}
                     for d in (have, want))
    return "agent defaults " + ", ".join(f"{n} {before[n]!r} -> {after[n]!r}"
                                         for n in before if before[n] != after[n])


def chunk_learner(model: Any, chunk: int) -> Callable[[], int]:
    """Train ``model`` for ``chunk`` more steps; returns the steps it trained (a PPO
    ``learn`` call trains whole rollouts and may go past ``chunk``)."""
    def learn() -> int:
        before = model.num_timesteps
        model.learn(chunk, reset_num_timesteps=False)
        return model.num_timesteps - before
    return learn


def interleaved_rates(learners: dict[str, Callable[[], int | None]], rounds: int, chunk: int
                      ) -> dict[str, float]:
    """Median steps per second of each learner, timed in ``rounds`` interleaved rounds (so
    a change in the machine's load affects every learner alike). Each call returns the
    steps it trained (:func:`chunk_learner`), or ``None`` for ``chunk``."""
    rates: dict[str, list[float]] = {name: [] for name in learners}
    for _ in range(rounds):
        for name, learn in learners.items():
            start = time.perf_counter()
            done = learn()
            rates[name].append((chunk if done is None else done)
                               / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def rates_against_sac(env_id: str, neuroflow: dict, common: dict, rounds: int, chunk: int
                      ) -> tuple[Any, dict[str, dict], dict[str, float]]:
    """NeuroFlow (``neuroflow`` and ``common`` settings) against SB3 SAC (``common``, one
    gradient update per step) on ``env_id``, seed 0, one torch thread: 300 warm-up steps
    each, then the median steps/s of ``rounds`` interleaved chunks of ``chunk`` steps
    (:func:`interleaved_rates`). Returns NeuroFlow's model (the page describes its
    networks), both agents' settings and the rates, by agent ("NeuroFlow", "SAC")."""
    import stable_baselines3 as sb3
    import torch

    from agents import NeuroFlow

    torch.set_num_threads(1)
    settings = {"NeuroFlow": {**neuroflow, **common},
                "SAC": {"train_freq": 1, "gradient_steps": 1, **common}}
    ours = NeuroFlow(env_id, seed=0, **settings["NeuroFlow"])
    sac = sb3.SAC("MlpPolicy", env_id, seed=0, **settings["SAC"])
    ours.learn(300)
    sac.learn(300)
    rates = interleaved_rates({"NeuroFlow": chunk_learner(ours, chunk),
                               "SAC": chunk_learner(sac, chunk)}, rounds, chunk)
    return ours, settings, rates

