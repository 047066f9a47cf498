"""Checkpoints: tensors in safetensors, everything else in JSON, both written atomically.

A checkpoint in ``folder`` is two files:

* ``checkpoint-<step>.safetensors``: every tensor (model, EMA, optimizer state, RNG
  state), written to a temporary file and moved into place with ``os.replace``;
* ``checkpoint.json``: counters, configuration, the optimizer's hyper-parameters and the
  name and SHA-256 of the tensor file, written the same way **after** the tensors. It is
  the commit point: a crash at any moment leaves the previous complete checkpoint.

Loading reads JSON and safetensors only; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CHECKPOINT_JSON",
    "check_folder",
    "flatten_optimizer_state",
    "load_checkpoint",
    "save_checkpoint",
    "unflatten_optimizer_state",
    "write_file_atomic",
]

CHECKPOINT_JSON = "checkpoint.json"
FORMAT = "velora_ens.checkpoint/1"
_RECORD_KEYS = {"format", "step", "tensors", "sha256", "state"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_file_atomic(path: Path, write) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, flush it to disk and move
    it into place: readers see the old file or the new one, never a partial one."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def check_folder(folder: str | Path, name: str = "folder") -> Path:
    """Return ``folder`` as a ``Path`` when it is a folder or one can be made there; raise a
    ``ValueError`` naming it when it (or the first part of it that exists) is a file."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == folder else f"is inside {existing}, which is a file"
        raise ValueError(f"{name} must be a folder for the checkpoints, got {str(folder)!r}, "
                         f"which {where}")
    return folder


def save_checkpoint(folder: str | Path, step: int, tensors: dict[str, torch.Tensor],
                    state: dict[str, Any], keep_last: int = 2) -> Path:
    """Write ``tensors`` and the JSON-able ``state`` as the checkpoint of ``step`` in
    ``folder``; keep the ``keep_last`` newest tensor files. Returns the JSON's path."""
    from safetensors.torch import save_file

    folder = check_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"checkpoint-{step:09d}.safetensors"
    # clone: safetensors refuses tensors that share storage (tied weights, views)
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    write_file_atomic(folder / name, lambda p: save_file(flat, str(p)))
    record = {"format": FORMAT, "step": int(step), "tensors": name,
              "sha256": _sha256(folder / name), "state": state}
    text = json.dumps(record, indent=1, sort_keys=True, allow_nan=False)
    write_file_atomic(folder / CHECKPOINT_JSON, lambda p: p.write_text(text))
    old = sorted(folder.glob("checkpoint-*.safetensors"))
    for path in old[: max(len(old) - max(keep_last, 1), 0)]:
        if path.name != name:
            path.unlink(missing_ok=True)
    return folder / CHECKPOINT_JSON


def load_checkpoint(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], int]:
    """``(tensors, state, step)`` of the checkpoint in ``folder`` (tensors on the CPU).

    Raises ``FileNotFoundError`` when there is none and ``ValueError`` when the files are
    malformed or do not match (a tensor file changed or truncated after the JSON was
    written)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path = folder / CHECKPOINT_JSON
    if not meta_path.is_file():
        raise FileNotFoundError(f"no checkpoint in {folder}: {meta_path} does not exist")
    try:
        record = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{meta_path} is not valid JSON ({err}); the checkpoint is corrupt "
                         f"(it is written atomically, so something else changed it): restore "
                         f"it, or delete it to start the run afresh") from err
    if not isinstance(record, dict):
        raise ValueError(f"{meta_path} holds a JSON {type(record).__name__}, expected an object "
                         f"with the keys {sorted(_RECORD_KEYS)}")
    if record.get("format") != FORMAT:
        raise ValueError(f"{meta_path} has format {record.get('format')!r}, expected {FORMAT!r}")
    missing = sorted(_RECORD_KEYS - set(record))
    if missing or not isinstance(record["state"], dict):
        raise ValueError(f"{meta_path} lacks {missing or ['an object under state']}; the "
                         f"checkpoint is corrupt: restore it, or delete it to start afresh")
    path = folder / record["tensors"]
    if not path.is_file():
        raise FileNotFoundError(f"{meta_path} names {path.name}, which does not exist")
    digest = _sha256(path)
    if digest != record["sha256"]:
        raise ValueError(f"{path} does not match {meta_path} (sha256 {digest[:12]}..., "
                         f"expected {record['sha256'][:12]}...); the checkpoint is corrupt")
    return load_file(str(path)), record["state"], int(record["step"])


# --- optimizer state <-> (tensors, JSON) -----------------------------------------------
def flatten_optimizer_state(sd: dict[str, Any], prefix: str = "optim"
                            ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors and a JSON-able description."""
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        out: dict[str, Any] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                name = f"{prefix}.{idx}.{key}"
                tensors[name] = value
                out[key] = {"tensor": name}
            else:
                out[key] = {"value": value}
        state[str(idx)] = out
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
              for g in sd["param_groups"]]
    return tensors, {"state": state, "param_groups": groups}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]
                              ) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for idx, entry in meta["state"].items():
        state[int(idx)] = {key: (tensors[v["tensor"]] if "tensor" in v else v["value"])
                           for key, v in entry.items()}
    groups = [{k: (tuple(v) if isinstance(v, list) and k != "params" else v)
               for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def state_dict_mismatch(module: torch.nn.Module, saved: dict[str, torch.Tensor]) -> str | None:
    """How ``saved`` does not fit ``module.load_state_dict``, in one line (``None`` when it
    fits): the missing, unexpected and reshaped entries, three of each at most.

    A module may name, in ``_optional_state_keys``, entries it fills itself when a state
    dict older than them lacks them (the NCP networks' ``wiring_seed``)."""
    own = module.state_dict()
    optional = {f"{name}.{key}" if name else key for name, sub in module.named_modules()
                for key in getattr(sub, "_optional_state_keys", ())}
    missing = sorted(k for k in own if k not in saved and k not in optional)
    unexpected = sorted(k for k in saved if k not in own)
    shapes = [f"{k} {tuple(saved[k].shape)} in the file, {tuple(own[k].shape)} here"
              for k in own if k in saved and tuple(saved[k].shape) != tuple(own[k].shape)]

    def few(items: list[str]) -> str:
        more = f" and {len(items) - 3} more" if len(items) > 3 else ""
        return ", ".join(items[:3]) + more

    problems = [f"{label}: {few(items)}" for label, items in
                (("missing", missing), ("unexpected", unexpected), ("other shapes", shapes))
                if items]
    return "; ".join(problems) if problems else None
