"""Command-line helpers shared by :mod:`velora_ens.cli` and :mod:`velora_ens.agent_cli`
(and the scripts under ``benchmarks/``); it imports neither module, so the command line
has no import circle."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["integer_option"]


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
