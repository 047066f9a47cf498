"""Wrappers named the way Stable-Baselines3 and RL Zoo name them: a class or callable, an
import path such as ``"popgym.wrappers.PreviousAction"``, a list of them (applied in
order, the first innermost) or RL Zoo's ``{path: kwargs}`` dicts.

Resolving them here, once, lets the command line and JSON configs name wrappers by text
and gives one clear ``ValueError`` for a path that does not lead to a callable.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym

__all__ = ["WrapperSpec", "apply_wrappers", "resolve_wrappers"]

#: a wrapper as users name one: a callable ``env -> env``, an import path, ``{path: kwargs}``,
#: or a list of these
WrapperSpec = Any

Wrap = Callable[[gym.Env], gym.Env]


def _import_path(path: str) -> Callable[..., Any]:
    """The object at ``"package.module.Name"`` (``"package.module:Name"`` too)."""
    module, sep, name = path.rpartition(":") if ":" in path else path.rpartition(".")
    if not module or not name:
        raise ValueError(f"wrapper {path!r} is not an import path like "
                         "'package.module.WrapperClass'")
    try:
        target = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ValueError(f"wrapper {path!r}: cannot import {module!r} ({exc})") from None
    except AttributeError:
        raise ValueError(f"wrapper {path!r}: module {module!r} has no {name!r}") from None
    if not callable(target):
        raise ValueError(f"wrapper {path!r} is not a class or function")
    return target


def _one(spec: Any, kwargs: Mapping[str, Any]) -> Wrap:
    """One wrapper: a callable or import path, called as ``wrapper(env, **kwargs)``."""
    if isinstance(spec, Mapping):
        if len(spec) != 1:
            raise ValueError(f"a wrapper given as a dict maps one import path to its keyword "
                             f"arguments, e.g. {{'module.Wrapper': {{'k': 1}}}}; got {spec!r}")
        (path, own), = spec.items()
        if own is not None and not isinstance(own, Mapping):
            raise ValueError(f"wrapper {path!r}: its keyword arguments must be a dict, got "
                             f"{own!r}")
        return _one(path, {**kwargs, **(own or {})})
    if isinstance(spec, str):
        spec = _import_path(spec)
    elif not callable(spec):
        raise ValueError(f"a wrapper must be a class, a callable or an import path, got "
                         f"{spec!r}")
    name = getattr(spec, "__qualname__", repr(spec))

    def wrap(env: gym.Env) -> gym.Env:
        try:
            return spec(env, **kwargs)
        except Exception as exc:  # the wrapper's own refusal, as one line naming it
            raise ValueError(f"wrapper {name} cannot wrap {env}: "
                             f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
    wrap.__qualname__ = name
    return wrap


def resolve_wrappers(spec: WrapperSpec, kwargs: Mapping[str, Any] | None = None
                     ) -> list[Wrap]:
    """The wrappers ``spec`` names, innermost first (``[]`` for ``None``); ``kwargs`` (SB3's
    ``wrapper_kwargs``) go to each of them, under a dict's own."""
    if spec is None:
        return []
    kwargs = dict(kwargs or {})
    specs = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    return [_one(one, kwargs) for one in specs]


def apply_wrappers(env: gym.Env, wrappers: list[Wrap]) -> gym.Env:
    """``env`` wrapped by each of ``wrappers`` in turn."""
    for wrap in wrappers:
        env = wrap(env)
    return env
