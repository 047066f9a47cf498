"""Shared pieces of the benchmark reports: the machine line and atomic page writes."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["machine", "write_atomic"]


def machine() -> str:
    """CPU model, logical CPU count and operating system, e.g. for a results table."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a crash never leaves half a page."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
