"""The one file format of agents and policies: named tensors in safetensors, plus one JSON
document in the header's metadata, nothing pickled.

:func:`write_document` writes the tensors with the document (a format tag, whatever
the writer describes, and a SHA-256 of the tensors) to a temporary file and moves it
into place, so a crash mid-write leaves the previous file intact. :func:`read_document`
parses JSON and raw tensor bytes only: a pickle, a truncated file or edited tensors are
refused with a clear error and nothing in them is executed. Paths follow SB3's rule (the
suffix is added when there is none), spaces are described as JSON, and
:func:`load_module` loads a state dict with one clear line when it does not fit.

>>> path = write_document(Path("example.safetensors"), {"format": "demo/1"},
...                       {"w": torch.ones(2)})                       # doctest: +SKIP
>>> meta, tensors = read_document(path, formats=("demo/1",))        # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from velora_ens.training.checkpoint import state_dict_mismatch, write_file_atomic

__all__ = ["SUFFIX", "check_space", "load_module", "prefixed", "read_document", "resolve_load_path",
           "resolve_save_path", "space_from_json", "space_to_json", "unprefixed",
           "write_document"]

SUFFIX = ".safetensors"
_META_KEY = "velora_ens"


# ------------------------------------------------------------------------------ paths
def _as_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def resolve_save_path(path: Any) -> Path:
    """SB3's rule: the suffix is appended when ``path`` has none."""
    path = _as_path(path)
    if path.is_dir() and path.suffix:
        raise ValueError(f"cannot save to {path}: it is a directory")
    return path.with_suffix(SUFFIX) if not path.suffix else path


def resolve_load_path(path: Any) -> Path:
    """The file ``save(path)`` wrote: ``path`` itself, else ``path`` with the suffix
    (SB3's ``load`` finds what ``save`` wrote); a clear error otherwise."""
    path = _as_path(path)
    if path.is_file():
        return path
    with_suffix = Path(f"{path}{SUFFIX}")
    if with_suffix.is_file():
        return with_suffix
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a saved agent: pass the .safetensors "
                         "file inside it")
    sibling = path.with_suffix(SUFFIX)
    if path.suffix and path.suffix != SUFFIX and sibling.is_file():
        raise FileNotFoundError(f"no saved agent at {path}; velora_ens saves agents as "
                                f"safetensors files: did you mean {sibling}?")
    raise FileNotFoundError(f"no saved agent at {path} (nor {with_suffix})")


# ------------------------------------------------------------------------------ spaces
def _bounds(values: np.ndarray) -> list:  # JSON has no infinities: write them as text
    return [v if np.isfinite(v) else str(v) for v in values.astype(np.float64).ravel()]


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """A JSON description of the spaces the agents accept."""
    if isinstance(space, gym.spaces.Discrete):
        out: dict[str, Any] = {"type": "Discrete", "n": int(space.n)}
        if int(space.start):
            out["start"] = int(space.start)
        return out
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "low": _bounds(space.low),
                "high": _bounds(space.high)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(),
                "start": np.broadcast_to(space.start, space.nvec.shape).tolist()}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": list(space.shape)}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_json(s) for k, s in space.spaces.items()}}
    if isinstance(space, gym.spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_json(s) for s in space.spaces]}
    raise ValueError(f"cannot describe the space {space}")


def space_from_json(data: dict[str, Any]) -> gym.Space:
    """The space :func:`space_to_json` described (``float32`` for a ``Box``)."""
    kind = data["type"]
    if kind == "Discrete":
        return gym.spaces.Discrete(data["n"], start=data.get("start", 0))
    if kind == "Box":
        shape = tuple(data["shape"])
        low = np.array([float(v) for v in data["low"]], np.float32).reshape(shape)
        high = np.array([float(v) for v in data["high"]], np.float32).reshape(shape)
        return gym.spaces.Box(low, high, shape, np.float32)
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(data["nvec"], start=data.get("start"))
    if kind == "MultiBinary":  # MultiBinary(3) and MultiBinary([3]) are not equal spaces
        n = data["n"]
        return gym.spaces.MultiBinary(n[0] if len(n) == 1 else n)
    if kind == "Dict":
        return gym.spaces.Dict({k: space_from_json(v) for k, v in data["spaces"].items()})
    if kind == "Tuple":
        return gym.spaces.Tuple([space_from_json(v) for v in data["spaces"]])
    raise ValueError(f"unknown space type {kind!r}")


def check_space(path: Path, name: str, saved: dict[str, Any], space: gym.Space) -> None:
    """A clear error when ``space`` is not the one a file described as ``saved``."""
    if space_to_json(space) != saved:
        raise ValueError(f"{path}: the environment's {name} {space} does not match the saved "
                         f"agent's {space_from_json(saved)}")


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict's tensors named ``<prefix>.<name>``, as one file holds several."""
    return {f"{prefix}.{k}": v for k, v in state.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors named ``<prefix>.<name>``, as a state dict (the inverse of :func:`prefixed`)."""
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def write_document(path: Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``tensors`` with ``meta`` (JSON, plus their SHA-256) as safetensors, atomically."""
    from safetensors.torch import save

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta["sha256"] = _digest(flat)
    blob = save(flat, metadata={_META_KEY: json.dumps(meta, sort_keys=True, allow_nan=False)})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, lambda p: p.write_bytes(blob))
    return path


def read_document(path: str | os.PathLike, formats: tuple[str, ...]
                  ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON document and the tensors of a file :func:`write_document` wrote in one
    of ``formats``, validated (format tag, checksum); never unpickles anything."""
    from safetensors import safe_open

    path = resolve_load_path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise ValueError(f"{path} is not a saved velora_ens agent: it is not a valid "
                         f"safetensors file (truncated or another format: {exc})") from None
    if _META_KEY not in header:
        raise ValueError(f"{path} is a safetensors file but not a saved velora_ens agent "
                         f"(no {_META_KEY!r} metadata)")
    try:
        meta = json.loads(header[_META_KEY])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: the agent description is not valid JSON ({exc})") from None
    if meta.get("format") not in formats:
        raise ValueError(f"{path} has format {meta.get('format')!r}, expected "
                         f"{' or '.join(map(repr, formats))}")
    digest = _digest(tensors)
    if digest != meta.get("sha256"):
        raise ValueError(f"{path}: the tensors do not match the checksum written with them "
                         f"(sha256 {digest[:12]}..., expected {str(meta.get('sha256'))[:12]}...);"
                         " the file was modified or damaged")
    meta["path"] = str(path)
    return meta, tensors


def load_module(path: Any, name: str, module: torch.nn.Module,
                state: dict[str, torch.Tensor], overrides: dict[str, Any]) -> None:
    """``module.load_state_dict(state)`` with one clear line when the file's networks do
    not fit (see :func:`~velora_ens.training.checkpoint.state_dict_mismatch`)."""
    problems = state_dict_mismatch(module, state)
    if problems is not None:
        hint = (f" (built with {overrides}: arguments that change the networks' shapes "
                "cannot be overridden when loading)" if overrides else "")
        raise ValueError(f"{path}: the saved {name} does not fit this agent: {problems}{hint}")
    module.load_state_dict(state)
