"""``velora-ens tune``: an Optuna study of an agent's settings on a task, shared by any
number of processes and machines (``docs/agents/tuning.md``).

The command reads its options, checks them (one line and exit code 2 for a bad one),
creates or joins the study, runs trials in this process and ``--n-jobs - 1`` more, then
writes the results. ``--show`` prints a study's best trials instead.
"""

from __future__ import annotations

import argparse
import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from velora_ens.cli_envs import add_env_options
from velora_ens.cli_options import integer_option
from velora_ens.tuning.spaces import ALGO_SPACES
from velora_ens.tuning.study import PRUNERS, SAMPLERS

__all__ = ["add_tune_command", "run_tune"]

INSTALL = 'pip install -e ".[tune]"'
# what a study is made for: the options that must agree when a command joins it
_MADE_FOR = ("algo", "env", "timesteps", "seeds", "evaluations", "eval_episodes", "n_envs",
             "env_kwargs", "env_wrapper", "base", "space")


def add_tune_command(sub: Any) -> None:
    """The ``tune`` subcommand and its options."""
    positive = lambda name: integer_option(name, 1)  # noqa: E731
    tune = sub.add_parser(
        "tune", help="search an agent's settings for a task with Optuna (the tune extra)",
        description="Search NeuroFlow's or LiquidPPO's settings for a task with Optuna: "
                    "each trial trains --seeds agents for --timesteps steps, scored on the "
                    "mean of their evaluations. Run the same command in several processes "
                    "or machines with one --storage to share the study; run it again to "
                    "continue it. Needs " + INSTALL + ".")
    tune.add_argument("--algo", choices=sorted(ALGO_SPACES), default=None,
                      help="neuroflow (liquid SAC) or ppo (LiquidPPO)")
    tune.add_argument("--env", default=None, help="Gymnasium id (or 'module:EnvId')")
    add_env_options(tune)
    tune.add_argument("--trials", type=positive("--trials"), default=20,
                      help="trials in the study, counting every worker's (default 20)")
    tune.add_argument("--timesteps", type=positive("--timesteps"), default=50_000,
                      help="environment steps per seed of a trial (default 50000)")
    tune.add_argument("--seeds", type=positive("--seeds"), default=3,
                      help="seeds per trial, scored on their mean (default 3)")
    tune.add_argument("--seed", type=integer_option("--seed", 0), default=0,
                      help="the first training seed (seeds SEED..SEED+K-1) and the "
                           "sampler's seed (default 0)")
    tune.add_argument("--evaluations", type=positive("--evaluations"), default=10,
                      help="evaluations per trial, each reported to the pruner (default 10)")
    tune.add_argument("--eval-episodes", type=positive("--eval-episodes"), default=5,
                      help="deterministic episodes per evaluation and seed (default 5)")
    tune.add_argument("--n-envs", type=positive("--n-envs"), default=None,
                      help="environment copies (default: the tuned settings' or 1)")
    tune.add_argument("--config", default=None,
                      help="JSON file of the agent's settings that are not searched "
                           "(default: the tuned settings for --env, as velora-ens train)")
    tune.add_argument("--space", default=None, metavar="FILE",
                      help="JSON or YAML file narrowing the search space (or replacing it, "
                           "with replace: true)")
    tune.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                      help="tpe (multivariate, seeded; default) or random")
    tune.add_argument("--pruner", choices=PRUNERS, default="median",
                      help="median (default), halving (successive halving) or none")
    tune.add_argument("--storage", default=None, metavar="URL",
                      help="the study's database: a SQLAlchemy URL (sqlite:///x.db, "
                           "postgresql+psycopg://user:pw@host/db) or a journal file "
                           "(journal:PATH or a .log path); default: study.db in the study's "
                           "folder")
    tune.add_argument("--study-name", default=None,
                      help="the study's name (default <algo>-<env>)")
    tune.add_argument("--n-jobs", type=positive("--n-jobs"), default=1,
                      help="worker processes on this machine (default 1)")
    tune.add_argument("--threads", type=positive("--threads"), default=1,
                      help="torch CPU threads per worker (default 1)")
    tune.add_argument("--log-dir", default="runs/tune",
                      help="folder of the study's folder <log-dir>/<study name> (default "
                           "runs/tune)")
    tune.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    tune.add_argument("--show", action="store_true",
                      help="print the study's best trials and exit")


def _require_optuna() -> None:
    try:
        import optuna
    except ImportError:
        raise ValueError(f"velora-ens tune needs Optuna: {INSTALL}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study_name(args: argparse.Namespace) -> str:
    if args.study_name is not None:
        if not args.study_name.strip():
            raise ValueError("--study-name must not be empty")
        return args.study_name
    if args.algo is None or args.env is None:
        raise ValueError("velora-ens tune needs --algo and --env (or, with --show, "
                         "--study-name)")
    return f"{args.algo}-{args.env}".replace(":", "_").replace("/", "_")


def _folder(args: argparse.Namespace, name: str) -> Path:
    base = Path(args.log_dir)
    if base.exists() and not base.is_dir():
        raise ValueError(f"--log-dir {base} is a file, not a folder")
    return base / name.replace("/", "_")


def _show(args: argparse.Namespace) -> int:
    import optuna

    from velora_ens.tuning.results import show_table
    from velora_ens.tuning.storage import describe_storage, open_storage, storage_url

    name = _study_name(args)
    folder = _folder(args, name)
    if args.storage is None and not (folder / "study.db").is_file():
        raise ValueError(f"--show: no study at {folder / 'study.db'}; give --storage and "
                         "--study-name")
    url = storage_url(args.storage, folder)
    storage = open_storage(url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise ValueError(f"--show: no study {name!r} in {describe_storage(url)} (it holds "
                         f"{names or 'none'})") from None
    print(show_table(study))
    return 0


def _prepare(args: argparse.Namespace) -> tuple[Any, Any, Path]:
    """The study's plan and the trials' setup from the options, checked."""
    from velora_ens.agent_cli import check_agent_options, run_settings
    from velora_ens.cli_envs import check_env
    from velora_ens.tuning.objective import TrialSetup, agent_arguments, task_context
    from velora_ens.tuning.spaces import (
        applicable,
        default_space,
        load_space_file,
        merge_space,
    )
    from velora_ens.tuning.storage import storage_url
    from velora_ens.tuning.study import StudyPlan

    name = _study_name(args)
    if args.algo is None or args.env is None:
        raise ValueError("velora-ens tune needs --algo and --env")
    run, base = run_settings(args)
    check_env(run)
    check_agent_options(args.algo, base)
    space = default_space(args.algo)
    if args.space is not None:
        entries, replace = load_space_file(args.space)
        space = merge_space(args.algo, entries, replace, agent_arguments(args.algo) - {"n_envs"})
    context = task_context(run["env"], run["n_envs"], base, run["env_kwargs"],
                           run["env_wrapper"])
    space = applicable(args.algo, space, context)
    seeds = tuple(range(args.seed, args.seed + args.seeds))
    setup = TrialSetup(args.algo, run["env"], args.timesteps, seeds, args.evaluations,
                       args.eval_episodes, space, base, run["n_envs"], run["env_kwargs"],
                       run["env_wrapper"], context)
    made = {"algo": args.algo, "env": run["env"], "timesteps": args.timesteps,
            "seeds": list(seeds), "evaluations": args.evaluations,
            "eval_episodes": args.eval_episodes, "n_envs": run["n_envs"],
            "env_kwargs": run["env_kwargs"], "env_wrapper": run["env_wrapper"], "base": base,
            "space": {k: d.describe() for k, d in space.items()}}
    made = json.loads(json.dumps(made, default=list))  # as the storage gives it back
    folder = _folder(args, name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--log-dir: cannot create {folder} ({exc.strerror})") from None
    plan = StudyPlan(name, storage_url(args.storage, folder), args.trials, args.sampler,
                     args.pruner, args.seed, args.evaluations,
                     tuple((k, made[k]) for k in _MADE_FOR))
    return plan, setup, folder


@contextmanager
def _interrupts_stop_trials() -> Iterator[None]:
    """Within: the first SIGTERM or Ctrl-C ends the running trial (recorded as
    interrupted); later ones are ignored, so that they cannot cut the recording short. The
    previous handlers come back on exit."""
    names = (signal.SIGTERM, signal.SIGINT)
    previous = {name: signal.getsignal(name) for name in names}

    def handle(signum: int, frame: Any) -> None:
        for name in names:
            signal.signal(name, signal.SIG_IGN)
        raise KeyboardInterrupt

    for name in names:
        signal.signal(name, handle)
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(name, handler)


def _join(workers: list[Any], interrupted: bool) -> bool:
    """Wait for the worker processes. Once this process is interrupted (before or while it
    waits), stop them too: SIGTERM, on which each records its running trial as
    interrupted. Returns whether it was interrupted."""
    started = [process for process in workers if process.pid is not None]
    while True:
        try:
            if interrupted:
                for process in started:
                    if process.is_alive():
                        process.terminate()
            for process in started:
                process.join()
            return interrupted
        except KeyboardInterrupt:
            interrupted = True


def _work(plan: Any, setup: Any, threads: int, worker: int) -> None:
    """A worker process of ``--n-jobs``: runs trials until the study has its count."""
    import torch

    from velora_ens.tuning.objective import make_objective
    from velora_ens.tuning.storage import open_storage
    from velora_ens.tuning.study import run_worker

    _require_optuna()
    torch.set_num_threads(threads)

    def say(line: str) -> None:
        print(f"[worker {worker}] {line}", flush=True)

    with _interrupts_stop_trials():
        try:
            run_worker(plan, open_storage(plan.url), make_objective(setup, say), say)
        except KeyboardInterrupt:
            pass


def run_tune(args: argparse.Namespace) -> int:
    """``velora-ens tune``; returns the exit code."""
    import multiprocessing

    import torch

    from velora_ens.tuning.objective import make_objective
    from velora_ens.tuning.results import write_results
    from velora_ens.tuning.storage import describe_storage, open_storage
    from velora_ens.tuning.study import open_study, run_worker, study_summary

    _require_optuna()
    if args.show:
        return _show(args)
    plan, setup, folder = _prepare(args)
    storage = open_storage(plan.url)
    study = open_study(plan, storage)
    shown = describe_storage(plan.url)
    print(f"velora-ens tune: {args.algo} on {setup.env}, study {plan.name!r} in {shown}: "
          f"{plan.trials} trials of {setup.timesteps} steps x {len(setup.seeds)} seeds "
          f"{list(setup.seeds)}, {setup.evaluations} evaluations of {setup.eval_episodes} "
          f"episodes; {plan.sampler} sampler, {plan.pruner} pruner, {args.n_jobs} "
          f"worker(s); study so far: {study_summary(study)}", flush=True)
    print(f"  searching: {', '.join(f'{k} {d.describe()}' for k, d in setup.space.items())}",
          flush=True)
    print(f"  live view: optuna-dashboard {shown}", flush=True)
    torch.set_num_threads(args.threads)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_work, args=(plan, setup, args.threads, i))
               for i in range(1, args.n_jobs)]
    interrupted = False
    with _interrupts_stop_trials():
        try:
            for process in workers:
                process.start()
            run_worker(plan, storage,
                       make_objective(setup, lambda line: print(line, flush=True)))
        except KeyboardInterrupt:
            interrupted = True
        interrupted = _join(workers, interrupted)
    stopped = (0, None, -signal.SIGTERM) if interrupted else (0, None)  # None: not started
    failed = [i + 1 for i, p in enumerate(workers) if p.exitcode not in stopped]
    study = open_study(plan, storage)
    print(f"velora-ens tune: study {plan.name!r}: {study_summary(study)}"
          + (f"; worker(s) {failed} stopped with an error" if failed else ""))
    for line in write_results(study, folder, plots=not args.no_plots):
        print(f"  {line}")
    if interrupted:
        print("velora-ens tune: interrupted; run the same command to continue the study")
        return 130
    return 1 if failed else 0
