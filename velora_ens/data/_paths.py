"""Where the data sets live: ``--data-root`` / ``data_root=``, else ``$VELORA_ENS_DATA``,
else ``./data``; decoded caches go to ``$VELORA_ENS_CACHE`` or ``~/.cache/velora_ens``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DataNotFoundError", "data_root", "default_cache_dir"]


class DataNotFoundError(FileNotFoundError):
    """A data set is missing; the message says where we looked and how to get it."""


def data_root(root: str | Path | None = None) -> Path:
    """``root`` if given, else ``$VELORA_ENS_DATA``, else ``./data``."""
    if root is not None:
        return Path(root).expanduser()
    return Path(os.environ.get("VELORA_ENS_DATA", "data")).expanduser()


def default_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir`` if given, else ``$VELORA_ENS_CACHE``, else ``~/.cache/velora_ens``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("VELORA_ENS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "velora_ens"
