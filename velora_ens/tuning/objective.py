"""A trial of ``velora-ens tune``: sample the settings, train one agent per seed, evaluate
them together, report to the pruner.

The seeds run in lock-step: every agent trains up to the next evaluation point, each is
evaluated, and the mean over the seeds is reported to the trial as evaluation ``k``
(``trial.report(mean, k)``); when the pruner says so the trial stops there. The agents
stop at each evaluation point through a callback and continue with another ``learn``
call that finishes the first (``BaseAgent.learn``), so their schedules and results are
those of one uninterrupted run. The trial's score is the last evaluation's mean over the
seeds.

Evaluation ``k`` of seed ``s`` plays ``eval_episodes`` deterministic episodes from
``reset(seed=10_000 + s + k)``, as ``velora-ens train``'s evaluations do.

Command-line code: it imports ``agents`` and ``envs`` inside its functions, as
:mod:`velora_ens.agent_cli` does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from velora_ens.tuning.spaces import Space, sample_settings

__all__ = ["SeedRun", "TrialSetup", "agent_arguments", "evaluate_seed", "make_objective",
           "task_context"]


@dataclass(frozen=True)
class TrialSetup:
    """Everything a trial needs besides the sampled settings (picklable, for workers)."""

    algo: str
    env: str
    timesteps: int
    seeds: tuple[int, ...]
    evaluations: int
    eval_episodes: int
    space: Space
    base: dict[str, Any] = field(default_factory=dict)  # agent arguments not searched
    n_envs: int = 1
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    env_wrapper: Any = None
    context: dict[str, Any] = field(default_factory=dict)  # see task_context

    def run_options(self, seed: int) -> dict[str, Any]:
        return {"env": self.env, "seed": seed, "n_envs": self.n_envs,
                "env_kwargs": self.env_kwargs, "env_wrapper": self.env_wrapper}


@dataclass
class SeedRun:
    """One seed's agent and its evaluation env."""

    seed: int
    agent: Any
    eval_env: Any


def agent_arguments(algo: str) -> set[str]:
    """The arguments a tuned config may set for ``algo``'s agent."""
    import inspect

    import agents
    from velora_ens.agent_cli import ALGOS

    cls = getattr(agents, ALGOS[algo])
    return set(inspect.signature(cls.__init__).parameters) - {
        "self", "env", "policy", "seed", "n_envs", "tensorboard_log", "verbose"}


def task_context(setup_env: str, n_envs: int, base: dict[str, Any],
                 env_kwargs: dict[str, Any], env_wrapper: Any) -> dict[str, Any]:
    """What the sample functions need to know of the task: Box actions or not, the
    rollout's copies, whether the agent reads the elapsed time."""
    import gymnasium as gym

    import envs

    env = envs.make_env(setup_env, env_kwargs=env_kwargs, wrapper=env_wrapper)
    try:
        box = isinstance(env.action_space, gym.spaces.Box)
    finally:
        env.close()
    return {"box": box, "n_envs": n_envs,
            "elapsed_time": base.get("elapsed_time_key") is not None,
            **{k: base[k] for k in ("n_steps", "batch_size") if k in base}}


def _pause_at(step: int) -> Any:
    """A callback that stops ``learn`` once the agent has ``step`` transitions."""
    from agents.common.callbacks import BaseCallback

    class PauseAt(BaseCallback):
        def _on_step(self) -> bool:
            return self.model.num_timesteps < step

    return PauseAt()


def build_run(setup: TrialSetup, hyper: dict[str, Any], seed: int) -> SeedRun:
    """The agent of one seed with ``hyper``, and its evaluation env; a ValueError for
    settings the agent refuses."""
    from stable_baselines3.common.monitor import Monitor

    import agents
    import envs
    from velora_ens.agent_cli import ALGOS
    from velora_ens.cli_envs import agent_env, env_options

    options = setup.run_options(seed)
    cls = getattr(agents, ALGOS[setup.algo])
    try:
        agent = cls(agent_env(options, setup.n_envs, hyper), seed=seed, n_envs=setup.n_envs,
                    **hyper)
    except TypeError as exc:
        raise ValueError(f"bad {cls.__name__} option value ({exc})") from None
    eval_env = Monitor(envs.make_env(setup.env, **env_options(options)))
    return SeedRun(seed, agent, eval_env)


def advance(run: SeedRun, step: int, total: int) -> None:
    """Train ``run``'s agent until it has ``step`` of its ``total`` transitions (one
    ``learn`` call over the whole run, paused and finished)."""
    agent = run.agent
    if agent.num_timesteps < step:
        agent.learn(total - agent.num_timesteps, callback=_pause_at(step))


def evaluate_seed(run: SeedRun, index: int, episodes: int) -> float:
    """The mean deterministic return of evaluation ``index`` of one seed."""
    import numpy as np

    from agents import evaluate_policy

    rewards, _ = evaluate_policy(run.agent, run.eval_env, n_eval_episodes=episodes,
                                 deterministic=True, return_episode_rewards=True,
                                 seed=10_000 + run.seed + index)
    return float(np.mean(rewards))


def _jsonable(settings: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(settings, default=list))


def make_objective(setup: TrialSetup, say: Callable[[str], None] = print
                   ) -> Callable[[Any], float]:
    """The function a worker calls with each trial (see the module docstring)."""

    def objective(trial: Any) -> float:
        import numpy as np
        import optuna

        settings = sample_settings(setup.algo, trial, setup.space, setup.context)
        hyper = {**setup.base, **settings}
        trial.set_user_attr("settings", _jsonable(settings))
        say(f"trial {trial.number}: {json.dumps(_jsonable(settings))}")
        try:
            runs = [build_run(setup, hyper, seed) for seed in setup.seeds]
        except ValueError as exc:  # settings that cannot go together: pruned at once
            reason = f"invalid settings: {exc}"
            trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason) from None
        started = time.perf_counter()
        mean = float("nan")
        try:
            for k in range(setup.evaluations):
                step = round(setup.timesteps * (k + 1) / setup.evaluations)
                scores = []
                for run in runs:
                    advance(run, step, setup.timesteps)
                    scores.append(evaluate_seed(run, k, setup.eval_episodes))
                mean = float(np.mean(scores))
                trial.report(mean, k)
                say(f"  trial {trial.number} evaluation {k + 1}/{setup.evaluations} at "
                    f"{step} steps: {mean:.2f} (seeds {', '.join(f'{s:.1f}' for s in scores)}"
                    f"; {time.perf_counter() - started:.0f} s)")
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after evaluation {k + 1}")
        finally:
            for run in runs:
                run.eval_env.close()
                run.agent.vector_env.close()
        return mean

    return objective
