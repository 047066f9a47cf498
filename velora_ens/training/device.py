"""Pick the device (one rule for the whole project) and the precision that goes with it."""

from __future__ import annotations

import torch

__all__ = ["autocast_dtype", "select_device"]

_FORMS = "'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def _available(allow_mps: bool) -> str:
    """The devices present here, in the order ``"auto"`` prefers them."""
    names = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if (
        torch.cuda.is_available()) else []
    if allow_mps and _mps_available():
        names.append("mps")
    names.append("cpu")
    return "available here: " + ", ".join(repr(n) for n in names)


def select_device(
    device: str | torch.device | None = "auto",
    local_rank: int = 0,
    *,
    allow_mps: bool = True,
) -> torch.device:
    """The device to run on: the one rule for the trainer, the benchmarks and the agents.

    * ``"auto"`` (or ``None``, the same): CUDA where available (GPU
      ``local_rank % device_count``, so each torchrun process takes its own GPU), then
      Apple MPS where present, then the CPU;
    * ``"cpu"``, ``"cuda"`` (GPU ``local_rank % device_count``), ``"cuda:N"``, ``"mps"`` or
      a ``torch.device`` of those types: that device, if it is present.

    ``allow_mps=False`` is for callers that cannot run on MPS: ``"auto"`` then never picks
    it and an explicit ``"mps"`` is refused. The RL agents use it: they keep float64
    running statistics (observation and return normalisation), and MPS has no float64.

    Raises ``ValueError``, naming the value and the devices available here, for a device
    that is not present (``"cuda"`` without CUDA, ``"cuda:9"`` with one GPU, ``"mps"``
    without MPS), for MPS with ``allow_mps=False``, and for anything else (``"tpu"``,
    ``"meta"``, ``42``).
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if allow_mps and _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    name = repr(str(device)) if isinstance(device, torch.device) else repr(device)

    def malformed() -> ValueError:
        return ValueError(f"device must be {_FORMS}, got {name}; {_available(allow_mps)}")

    if not isinstance(device, (str, torch.device)):
        raise malformed()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise malformed() from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name} requested but CUDA is not available; "
                             f"{_available(allow_mps)}")
        count = torch.cuda.device_count()
        if dev.index is None:
            return torch.device("cuda", local_rank % count)
        if dev.index >= count:
            raise ValueError(f"device {name} requested but only {count} CUDA device(s) "
                             f"exist; {_available(allow_mps)}")
        return dev
    if dev.type == "mps":
        if not allow_mps:
            raise ValueError(f"device {name}: Apple MPS is not supported here, because the RL "
                             f"agents keep float64 running statistics and MPS has no "
                             f"float64; {_available(allow_mps)}")
        if not _mps_available():
            raise ValueError(f"device {name} requested but MPS is not available; "
                             f"{_available(allow_mps)}")
        if dev.index not in (None, 0):
            raise ValueError(f"device {name} requested but there is only one MPS device, "
                             f"'mps' (or 'mps:0'); {_available(allow_mps)}")
        return dev
    if dev.type != "cpu":
        raise malformed()
    return dev


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype for ``device``: bfloat16 on CUDA GPUs that support it,
    else float16 (with a gradient scaler); bfloat16 on the CPU (CPU autocast's dtype, which
    needs no scaler); ``None`` (full precision) on Apple MPS."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16
    return None
