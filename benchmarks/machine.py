"""A one-line description of the machine a benchmark ran on, for its report."""

from __future__ import annotations

import os
import platform

__all__ = ["machine"]


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
