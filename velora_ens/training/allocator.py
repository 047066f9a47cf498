"""Keep freed CPU memory in the process, so that large activations reuse their pages.

glibc's ``malloc`` serves a block above its *mmap threshold* (which it raises to at most
32 MiB on its own) from fresh pages of the system, and hands a large freed top of the
heap back. A training step whose activations are that large (a BatchEnsemble's tiled
batch: 512 rows of 16 x 32 x 32 floats is 32 MiB) then pays page faults and zeroing for
every one of them, at every step (compare ``velora-ens bench cifar10`` with and without
``--default-malloc``). A GPU does not have the
problem (PyTorch's CUDA caching allocator keeps freed blocks); on a CPU PyTorch's tuning
guide suggests preloading jemalloc or tcmalloc. :func:`retain_freed_cpu_memory` is the
version that needs no install: it raises both glibc thresholds with ``mallopt``, so that
freed blocks stay in the heap for the next step.

The cost: the process keeps its peak heap until it exits (as with a caching allocator).
Only glibc (Linux) has ``mallopt``; elsewhere the call does nothing and says so.

Example::

    >>> from velora_ens.training import retain_freed_cpu_memory
    >>> retain_freed_cpu_memory()   # doctest: +SKIP
    True
"""

from __future__ import annotations

import ctypes
import functools

__all__ = ["retain_freed_cpu_memory"]

#: glibc ``<malloc.h>``
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_DEFAULT_THRESHOLD = 1 << 30  # 1 GiB: larger single blocks still come from mmap


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (raises AttributeError off glibc)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return libc


def retain_freed_cpu_memory(threshold_bytes: int = _DEFAULT_THRESHOLD) -> bool:
    """Serve blocks up to ``threshold_bytes`` from the heap and keep freed ones there.

    Sets glibc's ``M_MMAP_THRESHOLD`` to ``threshold_bytes`` and ``M_TRIM_THRESHOLD`` to
    twice that (at most ``2**31 - 1``). Returns ``True`` when glibc accepted both,
    ``False`` when there is no glibc (macOS, Windows, musl) or it refused a value; the
    process's memory behaviour is then unchanged. Calling it again is harmless.
    """
    if (isinstance(threshold_bytes, bool) or not isinstance(threshold_bytes, int)
            or not 0 < threshold_bytes <= 2**30):
        raise ValueError(f"threshold_bytes must be an integer in (0, 2**30], "
                         f"got {threshold_bytes!r}")
    libc = _glibc()
    if libc is None:
        return False
    mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes) == 1
    trim_ok = libc.mallopt(_M_TRIM_THRESHOLD, min(2 * threshold_bytes, 2**31 - 1)) == 1
    return mmap_ok and trim_ok
