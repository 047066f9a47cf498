"""LiquidPPO against RecurrentPPO and frame-stacked PPO on partially observed tasks, in one run.

Each task trains, on the same budget and for several seeds, LiquidPPO (``agents.LiquidPPO``
with ``agents.common.hyperparams.TUNED_PPO_HYPERPARAMS``), sb3-contrib's RecurrentPPO
(``MlpLstmPolicy``) with RL Zoo's ``hyperparams/ppo_lstm.yml`` settings, and SB3 PPO
(``MlpPolicy``, memory-free) on 4 stacked frames with RL Zoo's ``hyperparams/ppo.yml``
settings of the fully observed task. Every run evaluates its deterministic policy on 10
episodes every 10,000 steps (20 at the end) and the script writes a Markdown page, a JSON
file and a learning-curve PNG:

    python benchmarks/bench_ppo.py cartpole-novel     # CartPoleNoVel-v1, 100k steps, 5 seeds
    python benchmarks/bench_ppo.py pendulum-novel     # PendulumNoVel-v1, 100k steps, 5 seeds
    python benchmarks/bench_ppo.py throughput         # steps/s, LiquidPPO vs RecurrentPPO
    python benchmarks/bench_ppo.py pendulum-novel --algos liquid_ppo \\
        --liquid-settings '{"n_steps": 512}' --out /tmp/ppo_trial   # a settings trial
    python benchmarks/bench_ppo.py cartpole-novel --steps 4096 --seeds 0 --jobs 1 \\
        --algos recurrent_ppo ppo_stacked --out /tmp/ppo_smoke          # a smoke run

Runs go two at a time (``--jobs``), each process with one torch thread. Install the
baselines with ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from report import machine, plot_learning_curves, run_line, settings_list, write_page, write_report
from tasks import (
    OUT,
    Task,
    VecEnvAsEnv,
    add_options,
    chunk_learner,
    command,
    evaluate,
    interleaved_rates,
    json_settings,
    run_all,
    train_with_evaluations,
    unknown_settings,
)

from velora_ens.cli_options import integer_option

# target: LiquidPPO's mean final return, and the return whose first evaluation reaching it
# counts as "steps to" it; base_id: the fully observed task whose ppo.yml entry the
# stacked PPO uses
TASKS = {
    "cartpole-novel": Task("CartPoleNoVel-v1", 100_000, 10_000, 475.0,
                           "RL Zoo RecurrentPPO: 500 at 100k", base_id="CartPole-v1"),
    "pendulum-novel": Task("PendulumNoVel-v1", 100_000, 10_000, -218.0,
                           "RL Zoo RecurrentPPO: -218 at 100k", stretch=-175.0,
                           base_id="Pendulum-v1"),
}

# RL Zoo's settings, in its spelling ("lin_X": linear from X to 0; "nn.ReLU": torch.nn.ReLU).
# Keys the file leaves out take the algorithm's defaults (batch_size: RecurrentPPO 128,
# PPO 64).
LSTM_POLICY = dict(ortho_init=False, activation_fn="nn.ReLU", lstm_hidden_size=64,
                   enable_critic_lstm=True, net_arch=dict(pi=[64], vf=[64]))
PPO_LSTM_YML = {  # hyperparams/ppo_lstm.yml
    "CartPoleNoVel-v1": dict(normalize=True, n_envs=8, n_steps=32, batch_size=256,
                             gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0,
                             learning_rate="lin_0.001", clip_range="lin_0.2",
                             policy_kwargs=LSTM_POLICY),
    "PendulumNoVel-v1": dict(normalize=True, n_envs=4, n_steps=1024, gae_lambda=0.95,
                             gamma=0.9, n_epochs=10, ent_coef=0.0, learning_rate=1e-3,
                             clip_range=0.2, use_sde=True, sde_sample_freq=4,
                             policy_kwargs=LSTM_POLICY),
}
PPO_YML = {  # hyperparams/ppo.yml (no policy_kwargs: SB3's default net_arch, 64-64 tanh)
    "CartPole-v1": dict(n_envs=8, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98,
                        n_epochs=20, ent_coef=0.0, learning_rate="lin_0.001",
                        clip_range="lin_0.2"),
    "Pendulum-v1": dict(n_envs=4, n_steps=1024, gae_lambda=0.95, gamma=0.9, n_epochs=10,
                        ent_coef=0.0, learning_rate=1e-3, clip_range=0.2, use_sde=True,
                        sde_sample_freq=4),
}
# ppo.yml's base-task entries do not normalise; the stacked baseline does, like the others.
STACKED = dict(frame_stack=4, normalize=True)
ENV_KEYS = ("n_envs", "normalize", "frame_stack")

ALGOS = {"liquid_ppo": "LiquidPPO",
         "recurrent_ppo": "sb3-contrib RecurrentPPO (MlpLstmPolicy)",
         "ppo_stacked": "SB3 PPO (MlpPolicy, 4 stacked frames)"}
COLORS = {"liquid_ppo": "tab:blue", "recurrent_ppo": "tab:orange", "ppo_stacked": "tab:green"}
DEFAULTS = {"--seeds": [0, 1, 2, 3, 4], "--jobs": 2, "--algos": list(ALGOS), "--rounds": 7,
            "--chunk": 2048, "--liquid-settings": {}, "--untuned": False, "--out": OUT}


def settings(algo: str, task: Task, liquid: dict | None = None, untuned: bool = False
             ) -> dict:
    """The algorithm's settings for the task (RL Zoo's spelling for the baselines).
    ``liquid``: LiquidPPO keyword arguments that replace or extend its tuned settings
    (``--liquid-settings``), e.g. ``{"n_steps": 512}`` for a settings trial; ``untuned``
    (``--untuned``): over LiquidPPO's defaults instead, as a user's task without tuned
    settings gets them."""
    if algo == "liquid_ppo":
        from agents.common.hyperparams import TUNED_PPO_HYPERPARAMS

        tuned = {} if untuned else TUNED_PPO_HYPERPARAMS[task.env_id]
        return {**tuned, **(liquid or {})}
    if algo == "recurrent_ppo":
        return dict(PPO_LSTM_YML[task.env_id])
    return {**PPO_YML[task.base_id], **STACKED}


def sb3_kwargs(zoo: dict) -> dict:
    """RL Zoo's settings as keyword arguments of the SB3 class (env keys dropped)."""
    import torch

    def value(v: Any) -> Any:
        if isinstance(v, str) and v.startswith("lin_"):
            start = float(v.removeprefix("lin_"))
            return lambda progress_remaining: progress_remaining * start
        return v

    kwargs = {k: value(v) for k, v in zoo.items() if k not in ENV_KEYS}
    if "policy_kwargs" in kwargs:
        policy = dict(kwargs["policy_kwargs"])
        policy["activation_fn"] = getattr(torch.nn, policy["activation_fn"].removeprefix("nn."))
        kwargs["policy_kwargs"] = policy
    return kwargs


def sb3_env(env_id: str | Callable[[], Any], zoo: dict, seed: int | None = None,
            train: Any = None) -> Any:
    """The VecEnv of RL Zoo's settings: ``n_envs`` copies (one for evaluation, with
    ``train``'s frozen observation statistics), frames stacked, then ``VecNormalize``.
    ``env_id``: an id, or a function that builds one copy (e.g. a wrapped task)."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecNormalize

    import envs

    evaluation = train is not None
    make = env_id if callable(env_id) else (lambda: envs.make_env(env_id))
    venv = (DummyVecEnv([make]) if evaluation
            else make_vec_env(env_id, zoo["n_envs"], seed=seed))
    if zoo.get("frame_stack"):
        venv = VecFrameStack(venv, n_stack=zoo["frame_stack"])
    if zoo.get("normalize"):
        if evaluation:
            venv = VecNormalize(venv, training=False, norm_reward=False, clip_obs=train.clip_obs)
            venv.obs_rms = copy.deepcopy(train.obs_rms)
        else:
            venv = VecNormalize(venv, gamma=zoo["gamma"])
    return venv


def build(algo: str, task: Task, seed: int, config: dict) -> tuple[Any, Callable[[], Any]]:
    """The model and a builder of its evaluation env: a fresh single-copy VecEnv (for the
    SB3 baselines with their wrappers and a frozen copy of the training VecNormalize
    statistics) as one Gymnasium env (``tasks.VecEnvAsEnv``)."""
    if algo == "liquid_ppo":
        from stable_baselines3.common.vec_env import DummyVecEnv

        import envs
        from agents import LiquidPPO

        model = LiquidPPO(task.env_id, seed=seed, **config)  # normalises inside
        return model, lambda: VecEnvAsEnv(DummyVecEnv([lambda: envs.make_env(task.env_id)]))
    import stable_baselines3 as sb3

    if algo == "recurrent_ppo":
        from sb3_contrib import RecurrentPPO  # the bench extra

        cls, policy = RecurrentPPO, "MlpLstmPolicy"
    else:
        cls, policy = sb3.PPO, "MlpPolicy"
    model = cls(policy, sb3_env(task.env_id, config, seed), seed=seed, verbose=0,
                **sb3_kwargs(config))
    return model, lambda: VecEnvAsEnv(
        sb3_env(task.env_id, config, train=model.get_vec_normalize_env()))


def parameter_count(model: Any) -> int:
    from stable_baselines3.common.base_class import BaseAlgorithm

    if isinstance(model, BaseAlgorithm):
        return sum(p.numel() for p in model.policy.parameters())
    return sum(p.numel() for m in model._persistent_modules().values() for p in m.parameters())


def steps_to_threshold(curve: list[tuple[int, float]], threshold: float) -> int | None:
    """The first evaluation step whose mean return reaches ``threshold``, else None."""
    return next((step for step, value in curve if value >= threshold), None)


def run_one(job: tuple[str, str, int, int, int, dict | None, bool]) -> dict:
    """Train and evaluate one (algorithm, seed) (``tasks.train_with_evaluations``: 10
    episodes every ``eval_every`` steps, 20 after training)."""
    task_name, algo, seed, steps, eval_every, liquid, untuned = job
    import torch

    torch.set_num_threads(1)
    task = TASKS[task_name]
    model, make_eval_env = build(algo, task, seed, settings(algo, task, liquid, untuned))
    result = train_with_evaluations(
        model, lambda episodes: evaluate(model, make_eval_env, episodes, seed),
        steps, eval_every, f"{algo:13s} seed {seed}")
    return {"algo": algo, "seed": seed, **result,
            "steps_to_threshold": steps_to_threshold(result["curve"], task.target),
            "parameters": parameter_count(model)}


def summarize(runs: list[dict]) -> dict:
    """One agent's numbers over its seeds."""
    finals = [r["curve"][-1][1] for r in runs]
    reached = [r["steps_to_threshold"] for r in runs if r["steps_to_threshold"] is not None]
    return {"finals": finals, "mean": float(np.mean(finals)), "std": float(np.std(finals)),
            "reached": len(reached), "seeds": len(runs),
            "mean_steps": float(np.mean(reached)) if reached else None,
            "steps_per_second": float(np.mean([r["steps_per_second"] for r in runs])),
            "parameters": runs[0]["parameters"]}


def reach_text(row: dict) -> str:
    steps = "never" if row["mean_steps"] is None else f"{row['mean_steps']:,.0f}"
    return f"{steps} ({row['reached']}/{row['seeds']} seeds)"


def table(rows: dict[str, dict], threshold: float) -> list[str]:
    lines = [f"| agent | final return (mean ± std over seeds) | per seed | steps to "
             f"{threshold:g} (mean over the seeds that reach it) | train steps/s | parameters |",
             "|---|---:|---|---:|---:|---:|"]
    for algo, row in rows.items():
        lines.append(f"| {ALGOS[algo]} | {row['mean']:.1f} ± {row['std']:.1f} | "
                     f"{', '.join(f'{f:.1f}' for f in row['finals'])} | {reach_text(row)} | "
                     f"{row['steps_per_second']:.0f} | {row['parameters']:,} |")
    return lines


def faster(ours: dict, theirs: dict) -> bool:
    """Reaches the threshold in fewer steps: in at least as many seeds, and with a lower
    mean over the seeds that reach it (or the other never does)."""
    if ours["mean_steps"] is None or ours["reached"] < theirs["reached"]:
        return False
    return theirs["mean_steps"] is None or ours["mean_steps"] < theirs["mean_steps"]


def targets(task: Task, rows: dict[str, dict]) -> list[tuple[str, bool]]:
    """(line, met) for each target that the agents run allow to check."""
    if "liquid_ppo" not in rows:
        return []
    ours = rows["liquid_ppo"]
    checks = [(f"LiquidPPO final return >= {task.target:g} ({task.reference}): "
               f"**{{}}** ({ours['mean']:.1f})", ours["mean"] >= task.target)]
    if task.stretch is not None:
        checks.append((f"stretch, LiquidPPO final return >= {task.stretch:g}: **{{}}** "
                       f"({ours['mean']:.1f})", ours["mean"] >= task.stretch))
    if task.env_id.startswith("CartPole") and "recurrent_ppo" in rows:
        theirs = rows["recurrent_ppo"]
        checks.append((f"LiquidPPO reaches {task.target:g} in fewer steps than "
                       f"RecurrentPPO: **{{}}** ({reach_text(ours)} against "
                       f"{reach_text(theirs)})", faster(ours, theirs)))
    return [(text.format("met" if met else "not met"), met) for text, met in checks]


def command_of(args: argparse.Namespace) -> str:
    """The command line of the page (the options that differ from their defaults)."""
    if args.task == "throughput":
        options = {"--rounds": args.rounds, "--chunk": args.chunk}
        defaults = {}
    else:
        task = TASKS[args.task]
        options = {"--seeds": args.seeds, "--jobs": args.jobs, "--algos": args.algos,
                   "--steps": args.steps, "--eval-every": args.eval_every,
                   "--liquid-settings": args.liquid_settings, "--untuned": args.untuned}
        defaults = {"--steps": task.steps, "--eval-every": task.eval_every}
    return command("bench_ppo.py", args.task, {**options, "--out": args.out},
                   {**DEFAULTS, **defaults})


def learning(args: argparse.Namespace) -> int:
    import torch

    task = TASKS[args.task]
    work = [(args.task, a, s, args.steps, args.eval_every, args.liquid_settings, args.untuned)
            for s in args.seeds for a in args.algos]
    results, minutes = run_all(run_one, work, args.jobs)
    config = {a: settings(a, task, args.liquid_settings, args.untuned) for a in args.algos}
    rows = {a: summarize([r for r in results if r["algo"] == a]) for a in args.algos}
    checks = targets(task, rows)
    stem = args.out / f"ppo-{args.task}"
    date, cmd, host = time.strftime("%Y-%m-%d"), command_of(args), machine()
    write_report(stem.with_suffix(".json"), {
        "task": args.task, "env_id": task.env_id, "steps": args.steps,
        "eval_every": args.eval_every, "threshold": task.target, "seeds": args.seeds,
        "algos": args.algos, "command": cmd, "machine": host, "torch": torch.__version__,
        "jobs": args.jobs, "date": date, "minutes": minutes, "settings": config,
        "summary": rows, "targets": [{"target": text, "met": met} for text, met in checks],
        "results": results})
    lines = [
        f"## {task.env_id}, {args.steps:,} steps, seeds {args.seeds}",
        "",
        run_line(cmd, host, torch.__version__, date, args.jobs, minutes)
        + f" Deterministic evaluation every {args.eval_every:,} steps on 10 episodes (20 at "
        "the end) of a fresh environment, the SB3 baselines' through a frozen copy of their "
        "VecNormalize statistics; training steps/s exclude it.",
        "",
        "Settings (RL Zoo's spelling for the baselines: `ppo_lstm.yml` for RecurrentPPO, "
        f"`ppo.yml`'s {task.base_id} for the stacked PPO, which also normalises; LiquidPPO: "
        + ("its defaults (no tuned settings)" if args.untuned else "its tuned settings")
        + (f", with `--liquid-settings` {args.liquid_settings}" if args.liquid_settings
           else "") + "):",
        "",
        *settings_list({ALGOS[a]: config[a] for a in args.algos}),
        "",
        *table(rows, task.target),
        "",
        *([f"Target: {text}." for text, _ in checks]
          or ["Targets: none checked (they are LiquidPPO's; it was not run)."]),
        "",
        f"![learning curves](ppo-{args.task}.png)",
        "",
    ]
    write_page(stem.with_suffix(".md"), lines)
    plot(results, args.algos, task, stem.with_suffix(".png"))
    return 0 if all(met for text, met in checks if not text.startswith("stretch")) else 1


def plot(results: list[dict], algos: list[str], task: Task, path: Path) -> None:
    plot_learning_curves(results, "algo", {a: ALGOS[a] for a in algos}, COLORS, task.env_id,
                         path, task.target)


def throughput_settings() -> dict[str, Any]:
    """LiquidPPO's settings for the throughput comparison: RL Zoo's CartPoleNoVel-v1 ones
    (8 envs, n_steps 32, batch 256, 20 epochs, no KL stop) with the tuned networks' sizes,
    so that both agents run the same number of updates on the same rollouts."""
    from agents.common.hyperparams import tuned_hyperparams

    tuned = tuned_hyperparams("LiquidPPO", "CartPoleNoVel-v1")
    zoo = {k: v for k, v in PPO_LSTM_YML["CartPoleNoVel-v1"].items()
           if k not in ("normalize", "policy_kwargs")}  # LiquidPPO reads "lin_x" itself
    sizes = {k: tuned[k] for k in ("actor_neurons", "critic_neurons")}
    return {**zoo, **sizes, "normalize_observations": True, "normalize_rewards": True}


def throughput(args: argparse.Namespace) -> int:
    """Interleaved chunks of training, LiquidPPO vs RecurrentPPO, with the same settings
    (RL Zoo's CartPoleNoVel-v1 ones), one thread."""
    import torch

    from agents import LiquidPPO

    torch.set_num_threads(1)
    rounds, chunk = args.rounds, args.chunk
    task = TASKS["cartpole-novel"]
    config = {"LiquidPPO": throughput_settings(), "RecurrentPPO": PPO_LSTM_YML[task.env_id]}
    liquid = config["LiquidPPO"]
    liquid_sizes = f"actor_neurons {liquid['actor_neurons']}, critic_neurons " \
                   f"{liquid['critic_neurons']}"
    models = {
        "LiquidPPO": LiquidPPO(task.env_id, seed=0, **liquid),
        "RecurrentPPO": build("recurrent_ppo", task, 0, config["RecurrentPPO"])[0],
    }
    for model in models.values():  # warm-up
        model.learn(chunk)
    med = interleaved_rates({name: chunk_learner(m, chunk) for name, m in models.items()},
                            rounds, chunk)
    ratio = med["LiquidPPO"] / med["RecurrentPPO"]
    met = ratio >= 2.0
    params = {name: parameter_count(m) for name, m in models.items()}
    lines = [
        f"## Training throughput, {task.env_id}: LiquidPPO and RecurrentPPO",
        "",
        run_line(command_of(args), machine(), torch.__version__, time.strftime("%Y-%m-%d"))
        + " Environment steps per second including acting and the "
        f"PPO updates, with the same settings (RL Zoo's {task.env_id} ones: 8 envs, n_steps "
        f"32, batch 256, 20 epochs, gamma 0.98, lambda 0.8, linear lr and clip schedules, "
        f"observations and rewards normalised, no KL stop; LiquidPPO with its tuned networks' "
        f"sizes, {liquid_sizes}); "
        f"medians of {rounds} interleaved chunks of {chunk} steps after a warm-up chunk.",
        "",
        "Settings (seed 0; RL Zoo's spelling for RecurrentPPO):",
        "",
        *settings_list({"LiquidPPO": liquid, ALGOS["recurrent_ppo"]: config["RecurrentPPO"]}),
        "",
        "| agent | parameters | steps/s |",
        "|---|---:|---:|",
        f"| LiquidPPO | {params['LiquidPPO']:,} | {med['LiquidPPO']:.0f} |",
        f"| {ALGOS['recurrent_ppo']}, lstm 64 | {params['RecurrentPPO']:,} | "
        f"{med['RecurrentPPO']:.0f} |",
        "",
        f"LiquidPPO / RecurrentPPO: **{ratio:.2f}x** (target >= 2x: "
        f"{'met' if met else 'not met'}).",
        "",
    ]
    write_page(args.out / "ppo-throughput.md", lines)
    return 0 if met else 1


def liquid_missing(env_id: str | None) -> str | None:
    """Why LiquidPPO cannot run here (it is written elsewhere), or None."""
    import agents
    import agents.common.hyperparams as hp

    if not hasattr(agents, "LiquidPPO"):
        return "agents.LiquidPPO is not available; pass --algos recurrent_ppo ppo_stacked"
    if env_id is not None and env_id not in getattr(hp, "TUNED_PPO_HYPERPARAMS", {}):
        return (f"agents.common.hyperparams.TUNED_PPO_HYPERPARAMS has no {env_id!r} entry; pass "
                "--algos recurrent_ppo ppo_stacked")
    return None


#: ``--liquid-settings``: a JSON object of LiquidPPO keyword arguments
liquid_settings = json_settings("--liquid-settings", "LiquidPPO")


def unknown_liquid_settings(overrides: dict) -> str | None:
    """Why ``overrides`` are not LiquidPPO keyword arguments that a trial may set, or None.
    The benchmark passes the task, the seed and the policy itself; unlike ``velora-ens
    train --config`` a trial may set ``n_envs`` (the tuned settings do)."""
    from agents import LiquidPPO

    return unknown_settings(LiquidPPO, "--liquid-settings", overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=[*TASKS, "throughput"])
    parser.add_argument("--algos", nargs="+", choices=list(ALGOS), default=list(ALGOS),
                        help="agents to run (default: all three)")
    parser.add_argument("--seeds", type=integer_option("--seeds", 0), nargs="+",
                        default=DEFAULTS["--seeds"])
    parser.add_argument("--steps", type=integer_option("--steps", 1),
                        help="training steps per run (default: the task's, 100,000)")
    parser.add_argument("--eval-every", type=integer_option("--eval-every", 1),
                        help="steps between evaluations (default: the task's, 10,000)")
    add_options(parser, DEFAULTS, "--jobs", "--rounds", "--chunk")
    parser.add_argument("--liquid-settings", type=liquid_settings, default={}, metavar="JSON",
                        help="LiquidPPO keyword arguments over its tuned settings, as a JSON "
                             "object, for a settings trial (write it elsewhere with --out; "
                             "the trials so far: benchmarks/README.md) (default: none)")
    parser.add_argument("--untuned", action="store_true",
                        help="LiquidPPO on its defaults instead of the task's tuned settings "
                             "(with --liquid-settings over them), as a task without tuned "
                             "settings gets them")
    add_options(parser, DEFAULTS, "--out")
    args = parser.parse_args(argv)
    args.algos = list(dict.fromkeys(args.algos))
    args.seeds = list(dict.fromkeys(args.seeds))
    if args.task == "throughput":
        if missing := liquid_missing(None):
            parser.error(missing.split(";")[0])
        return throughput(args)
    task = TASKS[args.task]
    if "liquid_ppo" in args.algos and (missing := liquid_missing(task.env_id)):
        parser.error(missing)
    if args.liquid_settings:
        if "liquid_ppo" not in args.algos:
            parser.error("--liquid-settings needs liquid_ppo among --algos")
        if unknown := unknown_liquid_settings(args.liquid_settings):
            parser.error(unknown)
    args.steps = args.steps or task.steps
    args.eval_every = args.eval_every or task.eval_every
    return learning(args)


if __name__ == "__main__":
    sys.exit(main())
