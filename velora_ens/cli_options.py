"""Command-line helpers shared by :mod:`velora_ens.cli` and :mod:`velora_ens.agent_cli`
(and the scripts under ``benchmarks/``); it imports neither module, so the command line
has no import circle."""

from __future__ import annotations

import argparse
import ast
import json
from collections.abc import Callable
from typing import Any

__all__ = ["env_kwarg", "integer_option", "merge_env_kwargs"]


def integer_option(name: str, low: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``low``, with errors naming the option."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{name} must be >= {low}, got {value}")
        return value
    return parse


def env_kwarg(text: str) -> dict[str, Any]:
    """An argparse ``type`` for ``--env-kwargs``: RL Zoo's ``key:value`` (the value a Python
    literal, so strings are quoted: ``name:'"bar"'``) or a JSON object of several."""
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object ({exc})"
                                             ) from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object")
        return value
    key, sep, literal = text.partition(":")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected key:value pairs (or a JSON object), "
                                         f"got {text!r}")
    try:
        return {key: ast.literal_eval(literal)}
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError(
            f"{text!r}: the value must be a Python literal (a number, True, None, "
            f"a list, a quoted string such as {key}:'\"{literal}\"')") from None


def merge_env_kwargs(given: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The ``--env-kwargs`` tokens as one dict (later ones win), ``None`` when not given."""
    if given is None:
        return None
    merged: dict[str, Any] = {}
    for one in given:
        merged.update(one)
    return merged
