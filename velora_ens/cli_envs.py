"""The env a command-line run trains or plays on: its id, ``--env-kwargs`` and
``--env-wrapper`` (RL Zoo's ``env_kwargs`` and ``env_wrapper``, which a ``--config`` file
and a run's config.json also hold), checked and built here for :mod:`velora_ens.agent_cli`.

The agents take an id or a built env, not env keywords or wrappers, so a run that has any
gives its agent the vector env :func:`envs.make_vec_env` builds; the run's config.json
records them, so ``--resume``, ``evaluate`` and ``record`` rebuild the same env. ``envs``
is imported inside the functions, so importing this module loads neither it nor torch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from velora_ens.cli_options import env_kwarg, merge_env_kwargs

__all__ = ["add_env_options", "agent_env", "check_env", "check_env_settings", "env_options",
           "play_settings", "run_folder_of"]


def add_env_options(parser: Any) -> None:
    """``--env-kwargs`` and ``--env-wrapper``, RL Zoo's way of naming them."""
    parser.add_argument("--env-kwargs", type=env_kwarg, nargs="+", default=None,
                        metavar="KEY:VALUE",
                        help="keyword arguments of the env's constructor, as RL Zoo takes them "
                             "(max_episode_steps:100 name:'\"bar\"'; values are Python "
                             "literals) or a JSON object")
    parser.add_argument("--env-wrapper", nargs="+", default=None, metavar="IMPORT.PATH",
                        help="wrappers by import path, applied in order (e.g. "
                             "popgym.wrappers.PreviousAction)")


def check_env_settings(env_kwargs: Any, env_wrapper: Any, where: str) -> None:
    """Check ``env_kwargs`` (a JSON object) and ``env_wrapper`` (RL Zoo's forms: an import
    path, ``{path: kwargs}`` or a list of them) before any work."""
    from envs.wrapping import resolve_wrappers

    if not isinstance(env_kwargs, dict):
        raise ValueError(f"{where}: env_kwargs must be an object of the env's keyword "
                         f"arguments, got {env_kwargs!r}")
    try:
        json.dumps(env_kwargs)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: env_kwargs {env_kwargs!r} must hold JSON values (numbers, "
                         "strings, lists, objects, True/False/None) to be recorded") from None
    shapes = (str, dict, list) if env_wrapper is not None else ()
    if shapes and (not isinstance(env_wrapper, shapes) or isinstance(env_wrapper, list) and
                   not all(isinstance(w, (str, dict)) for w in env_wrapper)):
        raise ValueError(f"{where}: env_wrapper must be an import path, {{path: kwargs}} or a "
                         f"list of them, got {env_wrapper!r}")
    resolve_wrappers(env_wrapper)


def env_options(settings: dict[str, Any]) -> dict[str, Any]:
    """The run's env keywords and wrappers, as :func:`envs.make_env` takes them."""
    return {"env_kwargs": settings.get("env_kwargs") or {},
            "wrapper": settings.get("env_wrapper")}


def agent_env(settings: dict[str, Any], n_envs: int, hyper: dict[str, Any]) -> Any:
    """What the agent is built on: the id, or (the agents take no env keywords or
    wrappers) the vector env :func:`envs.make_vec_env` builds with the run's, seeded as
    the agent would seed it."""
    options = env_options(settings)
    if not options["env_kwargs"] and options["wrapper"] is None:
        return settings["env"]
    import envs

    return envs.make_vec_env(settings["env"], n_envs, seed=settings.get("seed"),
                             vectorization=hyper.get("vectorization", "sync"),
                             env_kwargs=options["env_kwargs"], wrapper_class=options["wrapper"])


def check_env(settings: dict[str, Any]) -> None:
    """Build the run's env once: a clear ValueError for an unknown id, a bad keyword or
    wrapper, before any work."""
    import envs

    envs.make_env(settings["env"], **env_options(settings)).close()


def run_folder_of(path: Path) -> Path | None:
    """The run folder of a checkpoint velora-ens train wrote: the one with its config.json,
    beside it or in the folder above."""
    return next((d for d in (path.parent, path.parent.parent) if (d / "config.json").is_file()),
                None)


def play_settings(args: argparse.Namespace, path: Path, saved_env: str | None
                  ) -> dict[str, Any]:
    """The env a saved agent plays: --env, else its run's (with the run's env keywords and
    wrappers), else the id it saved; --env-kwargs and --env-wrapper apply on top."""
    run = run_folder_of(path)
    run_config = {} if run is None else json.loads((run / "config.json").read_text())
    if args.env is not None:
        settings: dict[str, Any] = {"env": args.env}
    elif run_config.get("env") is not None and saved_env in (None, run_config["env"]):
        settings = {k: run_config.get(k) for k in ("env", "env_kwargs", "env_wrapper")}
    else:
        settings = {"env": saved_env}
    if settings["env"] is None:
        raise ValueError(f"{path} was trained on an environment instance, not an id, and no "
                         "run config.json names its env; pass --env")
    if args.env_kwargs is not None:
        settings["env_kwargs"] = {**(settings.get("env_kwargs") or {}),
                                  **merge_env_kwargs(args.env_kwargs)}
    if args.env_wrapper is not None:
        settings["env_wrapper"] = args.env_wrapper
    check_env_settings(settings.get("env_kwargs") or {}, settings.get("env_wrapper"),
                       f"{run / 'config.json'}" if run is not None else "the command line")
    check_env(settings)
    return settings
