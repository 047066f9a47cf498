"""``velora-ens train | evaluate | record``: NeuroFlow and LiquidPPO agents from the command
line.

With :mod:`velora_ens.cli`, which adds these subcommands, and :mod:`velora_ens.cli_envs`,
which builds their envs, the one place where ``velora_ens`` imports the ``agents`` and
``envs`` packages: lazily, inside the handlers, so importing this module loads neither.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from velora_ens.cli_envs import (
    add_env_options,
    agent_env,
    check_env,
    check_env_settings,
    env_options,
    play_settings,
    run_folder_of,
)
from velora_ens.cli_options import integer_option, merge_env_kwargs

__all__ = ["ALGOS", "add_agent_commands", "check_agent_options", "run_agent_command",
           "run_settings"]

# the run's own options, which a --config file may also set (the command line wins; its
# --env-kwargs update the file's env_kwargs)
_RUN_OPTIONS = {"env": "Pendulum-v1", "seed": 0, "n_envs": 1, "env_kwargs": {},
                "env_wrapper": None}
# the other options a run starts with (recorded in its config.json; --resume reuses them)
_TRAIN_DEFAULTS = {"algo": "neuroflow", "timesteps": 15_000, "eval_freq": 2_500,
                   "eval_episodes": 10, "save_freq": 0}
# --algo: the agent class's name in ``agents``
ALGOS = {"neuroflow": "NeuroFlow", "ppo": "LiquidPPO"}


def _positive(name: str):
    return integer_option(name, 1)


def _seed(name: str = "--seed"):
    return integer_option(name, 0)


def add_agent_commands(sub: Any) -> None:
    train = sub.add_parser(
        "train", help="train an agent (default: NeuroFlow on Pendulum-v1, a few minutes)",
        description="Train NeuroFlow (liquid SAC) or LiquidPPO (liquid recurrent PPO) on a "
                    "Gymnasium task, evaluate it periodically, keep the best model, write "
                    "TensorBoard logs and a video of the final policy.")
    train.add_argument("--algo", choices=sorted(ALGOS), default=None,
                       help="neuroflow (liquid SAC, default) or ppo (LiquidPPO); each has "
                            "tuned settings for some tasks")
    train.add_argument("--env", default=None,
                       help="Gymnasium id, or 'module:EnvId' to import the module that "
                            "registers it (default Pendulum-v1)")
    add_env_options(train)
    train.add_argument("--timesteps", type=_positive("--timesteps"), default=None,
                       help="environment steps (default 15000)")
    train.add_argument("--seed", type=_seed(), default=None, help="random seed (default 0)")
    train.add_argument("--n-envs", type=_positive("--n-envs"), default=None,
                       help="environment copies (default 1)")
    train.add_argument("--log-dir", default="runs",
                       help="folder for the run's folder (default runs)")
    train.add_argument("--config", default=None,
                       help="JSON file of the agent's arguments (replace the tuned ones for "
                            "--env); "
                            "it may also set env, seed, n_envs, env_kwargs and env_wrapper "
                            "(RL Zoo's forms), which the command line overrides")
    train.add_argument("--eval-freq", type=_positive("--eval-freq"), default=None,
                       help="evaluate every this many steps (default 2500)")
    train.add_argument("--eval-episodes", type=_positive("--eval-episodes"), default=None,
                       help="deterministic evaluation episodes (default 10)")
    train.add_argument("--save-freq", type=integer_option("--save-freq", 0), default=None,
                       help="also save a checkpoint with the replay buffer every this many "
                            "steps (default 0: only the final and best models)")
    train.add_argument("--no-video", action="store_true", help="skip the final video")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--threads", type=_positive("--threads"), default=1,
                       help="torch CPU threads (default 1)")
    train.add_argument("--resume", default=None, metavar="CHECKPOINT",
                       help="continue an interrupted run from the checkpoint it saved (Ctrl-C "
                            "or SIGTERM write <run folder>/interrupted.safetensors; "
                            "--save-freq's checkpoints work too), in its run folder and with "
                            "the settings it started with")

    evaluate = _saved_agent_parser(
        sub, "evaluate", episodes=10, help="evaluate a saved agent",
        description="Mean return of a saved agent over some episodes.")
    evaluate.add_argument("--stochastic", action="store_true",
                          help="sample actions instead of the deterministic policy")
    record = _saved_agent_parser(
        sub, "record", episodes=1, help="record mp4 videos of a saved agent",
        description="Play a saved agent deterministically and write mp4s.")
    record.add_argument("--out", default="videos", help="output folder (default videos)")


def _saved_agent_parser(sub: Any, name: str, episodes: int, **text: str) -> Any:
    """A subcommand that plays a saved agent: its path, env, episodes and seed."""
    parser = sub.add_parser(name, **text)
    parser.add_argument("path", help="a saved agent (.safetensors; the suffix may be left out)")
    parser.add_argument("--env", default=None,
                        help="Gymnasium id (default: the saved one, with the env_kwargs and "
                             "env_wrapper of its run's config.json)")
    add_env_options(parser)
    parser.add_argument("--episodes", type=_positive("--episodes"), default=episodes,
                        help=f"episodes (default {episodes})")
    parser.add_argument("--seed", type=_seed(), default=0,
                        help="seed of the first episode (default 0)")
    return parser


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"--config {path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError(f"--config {path} must hold a JSON object of agent arguments")
    return config


def run_settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's options (env, seed, n_envs: command line, else config, else default) and
    the agent's arguments (the config's, else the tuned ones for the env and algorithm;
    the tuned ones may set n_envs)."""
    config = {} if args.config is None else _read_config(Path(args.config))
    if args.config is None:
        from agents.common.hyperparams import tuned_hyperparams

        env = args.env if args.env is not None else _RUN_OPTIONS["env"]
        config = tuned_hyperparams(ALGOS[args.algo], env)
    given = {key: getattr(args, key) for key in _RUN_OPTIONS}
    given["env_kwargs"] = merge_env_kwargs(args.env_kwargs)
    run = {}
    for key, default in _RUN_OPTIONS.items():
        run[key] = given[key] if given[key] is not None else config.pop(key, default)
    if given["env_kwargs"] is not None and isinstance(config.get("env_kwargs"), dict):
        run["env_kwargs"] = {**config["env_kwargs"], **given["env_kwargs"]}
    for key, low in (("seed", 0), ("n_envs", 1)):
        value = run[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"--config {args.config}: {key} must be an integer >= {low}, got "
                             f"{value!r}")
    if not isinstance(run["env"], str):
        raise ValueError(f"--config {args.config}: env must be an environment id, got "
                         f"{run['env']!r}")
    check_env_settings(run["env_kwargs"], run["env_wrapper"], f"--config {args.config}"
                  if args.config is not None else "the command line")
    for key in _RUN_OPTIONS:
        config.pop(key, None)  # given on the command line as well: the command line wins
    return run, config


def _agent_class(algo: str) -> type:
    import agents

    return getattr(agents, ALGOS[algo])


def check_agent_options(algo: str, hyper: dict[str, Any]) -> None:
    """A ValueError naming any setting ``algo``'s agent does not take."""
    import inspect

    cls = _agent_class(algo)
    if "tensorboard_log" in hyper:
        raise ValueError("--config: tensorboard_log is set by velora-ens train (the run "
                         "folder's tensorboard/); use --log-dir to choose where runs go")
    allowed = set(inspect.signature(cls.__init__).parameters) - {
        "self", "env", "policy", "seed", "n_envs", "tensorboard_log"}
    unknown = sorted(set(hyper) - allowed)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s) {unknown}; expected some of "
                         f"{sorted(allowed | set(_RUN_OPTIONS))}")


def _make_agent(algo: str, settings: dict[str, Any], hyper: dict[str, Any], log_dir: Path):
    cls = _agent_class(algo)
    seed, n_envs = settings["seed"], settings["n_envs"]
    env = agent_env(settings, n_envs, hyper)
    try:
        return cls(env, seed=seed, n_envs=n_envs, tensorboard_log=str(log_dir), **hyper)
    except TypeError as exc:  # a value of the wrong type deep inside
        raise ValueError(f"bad {cls.__name__} option value ({exc})") from None


def _run_folder(log_dir: str, env_id: str, seed: int) -> Path:
    """A new folder ``<log_dir>/<env>_seed<seed>_<n>``, created (a clear error if it
    cannot be)."""
    base = Path(log_dir)
    if base.exists() and not base.is_dir():
        raise ValueError(f"--log-dir {base} is a file, not a folder")
    name = env_id.replace(":", "_").replace("/", "_")
    n = 1
    while (base / f"{name}_seed{seed}_{n}").exists():
        n += 1
    run = base / f"{name}_seed{seed}_{n}"
    try:
        run.mkdir(parents=True)
    except OSError as exc:
        raise ValueError(f"--log-dir {base}: cannot create the run folder {run} "
                         f"({exc.strerror})") from None
    return run


def _new_run(args: argparse.Namespace) -> tuple[Path, dict[str, Any], Any]:
    """A new run: its folder, its settings (written to its config.json) and its agent."""
    for key, default in _TRAIN_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    settings, hyper = run_settings(args)
    check_env(settings)
    check_agent_options(args.algo, hyper)
    run = _run_folder(args.log_dir, settings["env"], settings["seed"])
    agent = _make_agent(args.algo, settings, hyper, run / "tensorboard")
    config = {**settings, **{k: getattr(args, k) for k in _TRAIN_DEFAULTS}, args.algo: hyper}
    (run / "config.json").write_text(json.dumps(config, indent=1))
    return run, config, agent


def _resumed_run(args: argparse.Namespace) -> tuple[Path, dict[str, Any], Any]:
    """The run a checkpoint belongs to (the folder with its config.json), its settings and
    the agent the checkpoint holds, with its replay or rollout."""
    from agents import load_agent
    from agents.common.files import resolve_load_path
    from agents.common.persistence import read_agent_file

    given = [f"--{k.replace('_', '-')}" for k in (*_TRAIN_DEFAULTS, *_RUN_OPTIONS, "config")
             if getattr(args, k) is not None]
    if given:
        raise ValueError(f"--resume continues a run with the settings it started with (its "
                         f"config.json); {', '.join(given)} cannot be given with it")
    path = resolve_load_path(args.resume)
    run = run_folder_of(path)
    if run is None:
        raise ValueError(f"--resume {path}: no config.json beside it or in the folder above; "
                         "--resume takes a checkpoint velora-ens train wrote in its run folder")
    config = {**_TRAIN_DEFAULTS, **_RUN_OPTIONS, **json.loads((run / "config.json").read_text())}
    meta, _ = read_agent_file(path)
    if not meta.get("include_buffer") or not meta.get("rollout_started"):
        raise ValueError(f"--resume {path}: the file holds the agent without its replay or "
                         "rollout, so the run cannot continue exactly; pass the "
                         "interrupted.safetensors or a --save-freq checkpoint of the run")
    if meta["class"] != ALGOS[config["algo"]]:
        raise ValueError(f"--resume {path} holds a {meta['class']}, but the run in {run} "
                         f"trains {ALGOS[config['algo']]}")
    if int(meta["num_timesteps"]) >= config["timesteps"]:
        raise ValueError(f"--resume {path}: the run already has its {config['timesteps']} "
                         "steps")
    env = agent_env(config, config["n_envs"], config[config["algo"]])
    agent = load_agent(path, env=None if isinstance(env, str) else env,
                       tensorboard_log=str(run / "tensorboard"))
    return run, config, agent


def _train(args: argparse.Namespace) -> int:
    import signal

    import numpy as np
    import torch
    from stable_baselines3.common.monitor import Monitor

    import envs
    from agents.common.callbacks import CheckpointCallback, EvalCallback, StopTrainingOnSignal

    torch.set_num_threads(args.threads)
    resuming = args.resume is not None
    run, config, agent = _resumed_run(args) if resuming else _new_run(args)
    env_id, seed, n_envs, steps = (config[k] for k in ("env", "seed", "n_envs", "timesteps"))
    hyper = config[config["algo"]]
    name = type(agent).__name__
    if resuming:
        print(f"velora-ens train: resuming {name} on {env_id} at step {agent.num_timesteps} "
              f"of {steps}, seed {seed}, {args.threads} thread(s); run folder {run}",
              flush=True)
    else:
        print(f"velora-ens train: {name} on {env_id}, {steps} steps, seed {seed}, "
              f"{args.threads} thread(s); run folder {run}", flush=True)
    if hyper:
        print(f"  settings: {json.dumps(hyper)}", flush=True)
    env_opts = env_options(config)
    if env_opts["env_kwargs"] or env_opts["wrapper"] is not None:
        print(f"  env: {json.dumps(env_opts)}", flush=True)
    # evaluation k resets its env with 10_000 + seed + k: the same episodes, resumed or not
    eval_env = Monitor(envs.make_env(env_id, **env_opts))
    eval_cb = EvalCallback(eval_env, eval_freq=max(config["eval_freq"] // n_envs, 1),
                           n_eval_episodes=config["eval_episodes"],
                           best_model_save_path=str(run), log_path=str(run), verbose=0,
                           seed=10_000 + seed)
    stop = StopTrainingOnSignal()
    callbacks: list[Any] = [eval_cb, stop]
    if config["save_freq"]:
        callbacks.append(CheckpointCallback(max(config["save_freq"] // n_envs, 1),
                                            run / "checkpoints", save_replay_buffer=True))
    if resuming:  # the callbacks continue where they were: after as many steps
        done = len(agent.driver.action_log)
        if (run / "evaluations.npz").is_file():
            eval_cb.restore(run, done)
        eval_cb.n_calls = done
        for cb in callbacks[2:]:
            cb.n_calls = done
    started = time.perf_counter()
    try:  # the remaining steps: the interrupted learn call continues (its schedules too)
        agent.learn(steps - agent.num_timesteps, callback=callbacks,
                    progress_bar=not args.no_progress)
    finally:
        stop.restore_handlers()
    seconds = time.perf_counter() - started
    if stop.received is not None:
        path = agent.save(run / "interrupted.safetensors", include_buffer=True)
        print(f"velora-ens train: stopped by {signal.Signals(stop.received).name} at step "
              f"{agent.num_timesteps} of {steps}; saved {path}\n"
              f"  continue with: velora-ens train --resume {path}", flush=True)
        return 130
    final = agent.save(run / "final_model.safetensors")

    eval_env.reset(seed=20_000 + seed)
    rewards, _ = _evaluate_agent(agent, eval_env, config["eval_episodes"], True)
    mean, std = float(np.mean(rewards)), float(np.std(rewards))
    print(f"  trained in {seconds:.0f} s ({agent.num_timesteps / max(seconds, 1e-9):.0f} "
          "steps/s)")
    print(f"  final model   {final}")
    if (run / "best_model.safetensors").exists():
        print(f"  best model    {run / 'best_model.safetensors'} (eval return "
              f"{eval_cb.best_mean_reward:.1f})")
    print(f"  tensorboard   tensorboard --logdir {run / 'tensorboard'}")
    if not args.no_video:
        from agents.common.callbacks import record_video, renders_rgb

        if not renders_rgb(env_id, **env_opts):
            print(f"  video         (none: {env_id} has no rgb_array rendering)")
        else:
            videos = record_video(agent, env_id, run / "videos", name_prefix="final",
                                  seed=seed, **env_opts)
            print(f"  video         {videos[0] if videos else '(none written)'}")
    print(f"mean evaluation return over {config['eval_episodes']} episodes: {mean:.1f} +/- "
          f"{std:.1f}")
    return 0


def _load(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The saved agent (of the class its file names) on the env it plays, and that env's
    settings."""
    from agents import load_agent
    from agents.common.files import resolve_load_path
    from agents.common.persistence import read_agent_file

    path = resolve_load_path(args.path)
    meta, _ = read_agent_file(path)
    settings = play_settings(args, path, meta["env_id"])
    env = agent_env(settings, int(meta["config"].get("n_envs", 1)), meta["config"])
    return load_agent(path, env=env), settings


def _evaluate_agent(agent: Any, env: Any, episodes: int, deterministic: bool
                    ) -> tuple[list[float], list[int]]:
    """Per-episode returns and lengths on ``env`` (seeded by the caller's reset): SB3's
    ``evaluate_policy``, or ``agents.evaluate_policy`` for an agent that reads the
    elapsed time (SB3's cannot pass it to ``predict``)."""
    if agent.elapsed_time_key is not None:
        from agents import evaluate_policy
    else:
        from stable_baselines3.common.evaluation import evaluate_policy
    return evaluate_policy(agent, env, n_eval_episodes=episodes, deterministic=deterministic,
                           return_episode_rewards=True)


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np
    from stable_baselines3.common.monitor import Monitor

    import envs

    agent, settings = _load(args)
    env_id = settings["env"]
    env = Monitor(envs.make_env(env_id, **env_options(settings)))
    env.reset(seed=args.seed)
    rewards, lengths = _evaluate_agent(agent, env, args.episodes, not args.stochastic)
    print(f"{args.path} on {env_id}: mean return {np.mean(rewards):.1f} +/- {np.std(rewards):.1f}"
          f" over {args.episodes} episodes (mean length {np.mean(lengths):.0f}, "
          f"{'stochastic' if args.stochastic else 'deterministic'})")
    return 0


def _record(args: argparse.Namespace) -> int:
    from agents.common.callbacks import record_video

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {out}: cannot create the folder ({exc.strerror})") from None
    if not os.access(out, os.W_OK):
        raise ValueError(f"--out {out}: the folder is not writable")
    agent, settings = _load(args)
    videos = record_video(agent, settings["env"], args.out, name_prefix=Path(args.path).stem,
                          n_episodes=args.episodes, seed=args.seed, **env_options(settings))
    for path in videos:
        print(path)
    return 0


def run_agent_command(args: argparse.Namespace) -> int:
    return {"train": _train, "evaluate": _evaluate, "record": _record}[args.command](args)
