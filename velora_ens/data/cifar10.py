"""CIFAR-10 from the canonical ``cifar-10-batches-py`` pickles, a JPEG/PNG folder tree
(``train/<class>/*.jpg``, ``test/<class>/*.jpg``) or a tarball of that tree, decoded
once into a cached uint8 array (``N, 3, 32, 32``).

Labels of a folder tree follow the sorted class-folder names, which for CIFAR-10 is the
canonical label order. The canonical pickles are read with an unpickler that accepts
only numpy arrays and plain containers, so a tampered file cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from velora_ens.data._paths import DataNotFoundError, data_root, default_cache_dir

__all__ = ["CIFAR10_CLASSES", "CIFAR10Data", "load_cifar10"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_HOW = ("download the canonical 'CIFAR-10 python version' (cifar-10-python.tar.gz from "
        "https://www.cs.toronto.edu/~kriz/cifar.html, or torchvision.datasets.CIFAR10(..., "
        "download=True)) and extract it to <data root>/cifar10/cifar-10-batches-py, or put a "
        "folder tree train/<class>/*.jpg, test/<class>/*.jpg (or a .tar.gz of it) in "
        "<data root>/cifar10; pass --data-root / data_root=")


@dataclass
class CIFAR10Data:
    """Decoded CIFAR-10: uint8 images ``(N, 3, 32, 32)`` and int64 labels ``(N,)``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    source: str


# --- canonical pickles -------------------------------------------------------------------
class _SafeUnpickler(pickle.Unpickler):
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray",
                                                             "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 "
                                         f"batch (only numpy arrays and containers allowed)")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            d = _SafeUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise ValueError(f"{path} is not a readable CIFAR-10 batch: {err}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path} is not a CIFAR-10 batch (a dict), got {type(d).__name__}")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise ValueError(f"{path} has no 'data' / 'labels' entries (keys: {sorted(d)})")
    data = np.asarray(d["data"])
    labels = np.asarray(d["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: expected uint8 data of shape (N, 3072), got "
                         f"{data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images")
    return data.reshape(-1, 3, 32, 32), labels


def _from_batches(folder: Path) -> dict[str, np.ndarray]:
    train = [folder / f"data_batch_{k}" for k in range(1, 6)]
    missing = [p.name for p in train + [folder / "test_batch"] if not p.is_file()]
    if missing:
        raise DataNotFoundError(f"{folder} lacks {', '.join(missing)}. To get CIFAR-10: {_HOW}")
    xs, ys = zip(*(_read_batch(p) for p in train), strict=True)
    xt, yt = _read_batch(folder / "test_batch")
    return {"x_train": np.concatenate(xs), "y_train": np.concatenate(ys), "x_test": xt,
            "y_test": yt, "classes": np.array(CIFAR10_CLASSES)}


# --- image trees (folder or tarball) -------------------------------------------------------
def _decode(data: bytes, name: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB"))
    except Exception as err:  # PIL raises several types for broken files
        raise ValueError(f"cannot decode image {name}: {err}") from None
    if arr.shape != (32, 32, 3):
        raise ValueError(f"image {name} is {arr.shape[1]}x{arr.shape[0]}, expected 32x32")
    return arr


def _split_class(parts: tuple[str, ...]) -> tuple[str, str] | None:
    """``(split, class)`` of a path ``.../train|test/<class>/<file>``."""
    if len(parts) >= 3 and parts[-3] in ("train", "test") and \
            parts[-1].lower().endswith(_IMAGE_SUFFIXES):
        return parts[-3], parts[-2]
    return None


def _assemble(items: list[tuple[str, str, str, bytes]], source: Path) -> dict[str, np.ndarray]:
    by_split: dict[str, dict[str, list[tuple[str, bytes]]]] = {"train": {}, "test": {}}
    for split, cls, name, data in items:
        by_split[split].setdefault(cls, []).append((name, data))
    classes = sorted(by_split["train"])
    if not classes or not by_split["test"]:
        raise DataNotFoundError(f"{source} has no train/<class>/ and test/<class>/ images. "
                                f"To get CIFAR-10: {_HOW}")
    if sorted(by_split["test"]) != classes:
        raise ValueError(f"{source}: the test classes {sorted(by_split['test'])} differ from "
                         f"the training classes {classes}")
    out: dict[str, np.ndarray] = {"classes": np.array(classes)}
    for split in ("train", "test"):
        images, labels = [], []
        for label, cls in enumerate(classes):
            for name, data in sorted(by_split[split][cls]):
                images.append(_decode(data, name))
                labels.append(label)
        out[f"x_{split}"] = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))
        out[f"y_{split}"] = np.asarray(labels, dtype=np.int64)
    return out


def _from_tar(path: Path) -> dict[str, np.ndarray]:
    items = []
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            sc = _split_class(Path(member.name).parts)
            if sc is not None:
                items.append((*sc, member.name, tar.extractfile(member).read()))
    return _assemble(items, path)


def _from_folder(folder: Path) -> dict[str, np.ndarray]:
    items = []
    for path in folder.rglob("*"):
        sc = _split_class(path.relative_to(folder).parts) if path.is_file() else None
        if sc is not None:
            items.append((*sc, str(path), path.read_bytes()))
    return _assemble(items, folder)


# --- cache ---------------------------------------------------------------------------------
def _source(root: Path) -> Path:
    base = root / "cifar10"
    candidates = [base / "cifar-10-batches-py", root / "cifar-10-batches-py"]
    candidates += sorted(base.glob("*.tar.gz")) + sorted(base.glob("*.tgz")) + \
        sorted(base.glob("*.tar"))
    candidates += [base] if (base / "train").is_dir() else []
    for c in candidates:
        if c.exists():
            return c
    raise DataNotFoundError(f"CIFAR-10 not found: looked for {base / 'cifar-10-batches-py'}, "
                            f"{root / 'cifar-10-batches-py'}, a .tar.gz in {base} and "
                            f"{base / 'train'}. To get it: {_HOW}")


def _fingerprint(src: Path) -> str:
    h = hashlib.sha256(str(src.resolve()).encode())
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    for p in files[:5000]:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    h.update(str(len(files)).encode())
    return h.hexdigest()[:16]


def _check(arrays: dict[str, np.ndarray], src: Path) -> None:
    n_cls = len(arrays["classes"])
    for split in ("train", "test"):
        y = arrays[f"y_{split}"]
        if y.size and (y.min() < 0 or y.max() >= n_cls):
            raise ValueError(f"{src}: a {split} label is out of range: found "
                             f"[{y.min()}, {y.max()}], expected [0, {n_cls - 1}]")


def load_cifar10(root: str | Path | None = None, cache_dir: str | Path | None = None,
                 use_cache: bool = True) -> CIFAR10Data:
    """CIFAR-10 from ``<root>/cifar10/`` (see the module doc for the layouts; ``root``
    defaults to ``$VELORA_ENS_DATA`` or ``./data``). The decoded arrays are cached in
    ``cache_dir`` (default ``~/.cache/velora_ens``) under a name derived from the source's
    path, sizes and modification times, and reloaded without decoding."""
    src = _source(data_root(root))
    cache = default_cache_dir(cache_dir) / f"cifar10-{_fingerprint(src)}.npz"
    if use_cache and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    else:
        if src.is_dir() and src.name.endswith("batches-py"):
            arrays = _from_batches(src)
        elif src.is_file():
            arrays = _from_tar(src)
        else:
            arrays = _from_folder(src)
        _check(arrays, src)
        if use_cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(cache.name + ".tmp")
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, cache)
    _check(arrays, src)
    return CIFAR10Data(torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"]),
                       torch.from_numpy(arrays["x_test"]), torch.from_numpy(arrays["y_test"]),
                       tuple(str(c) for c in arrays["classes"]), str(src))
