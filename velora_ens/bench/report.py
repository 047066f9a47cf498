"""Shared pieces of the benchmark reports: the machine line, mean +- std, Markdown
tables, atomic writes and a timer."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["Timer", "environment", "machine", "markdown_table", "mean_std", "write_atomic",
           "write_json"]


def machine() -> str:
    """CPU model, logical CPU count and operating system."""
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


def environment(device: str) -> dict[str, Any]:
    """Machine, device, torch version, threads and the date, for a report's header."""
    import torch

    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else None
    return {"machine": machine(), "device": device, "gpu": gpu, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "date": datetime.date.today().isoformat()}


def mean_std(values: Sequence[float], digits: int = 3) -> str:
    """``"m ± s"`` (sample std over splits / seeds; a single value has no ``±``)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return "n/a"
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{m:.{digits}f}"
    s = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]],
                   align: str | None = None) -> str:
    """A GitHub-flavoured Markdown table (``align``: one of ``l``/``r`` per column)."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` through a temporary file, so a crash never leaves half a file."""
    from velora_ens.training.checkpoint import write_file_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


class Timer:
    """``with Timer() as t: ...``; ``t.seconds`` afterwards."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
