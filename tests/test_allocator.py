"""retain_freed_cpu_memory: large freed blocks are reused instead of faulted in again."""

import subprocess
import sys
import textwrap

import pytest
import torch

from velora_ens.training import TensorDataset, Trainer, retain_freed_cpu_memory
from velora_ens.training.allocator import _glibc

glibc_only = pytest.mark.skipif(_glibc() is None, reason="mallopt is glibc's")

# Minor page faults of each of 48 allocations of a 40 MiB tensor (over glibc's 32 MiB
# ceiling; filled, so that every page is touched), in a fresh process, with and without
# the call. The retained heap takes a few allocations to settle (measured on 30 fresh
# processes: the 3rd, 9th or 10th is the first served without faults), so only the last
# 16 are compared.
_FAULTS = textwrap.dedent("""
    import resource, sys, torch
    from velora_ens.training import retain_freed_cpu_memory
    if sys.argv[1] == "retain":
        assert retain_freed_cpu_memory()
    faults = []
    for _ in range(48):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(10 * 2**20)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(*faults[-16:])
""")


def _faults(mode: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], check=True,
                         capture_output=True, text=True).stdout
    return [int(n) for n in out.split()]


@glibc_only
def test_freed_large_blocks_are_reused_instead_of_faulted_in():
    pages = 40 * 2**20 // 4096
    default, retained = _faults("default"), _faults("retain")
    # glibc's default: every 40 MiB block comes from fresh pages (mmap), ~10k faults each
    assert min(default) > 0.9 * pages, default
    # retained: once settled, the freed block is served again from the heap
    assert sum(retained) < pages // 4, retained


def test_threshold_is_checked():
    for bad in (0, -1, 2**31, 1.5, True):
        with pytest.raises(ValueError, match="threshold_bytes"):
            retain_freed_cpu_memory(bad)


def test_trainer_option(tmp_path):
    data = TensorDataset(torch.randn(8, 2), torch.randn(8, 1))
    kw_folder = {"results_folder": tmp_path}
    model = torch.nn.Linear(2, 1)
    kw = dict(train_batch_size=4, train_num_steps=1, ema_decay=None, device="cpu",
              progress_bar=False, save_every=0, **kw_folder)
    assert Trainer(model, data, retain_cpu_memory=False, **kw).retains_cpu_memory is False
    assert Trainer(model, data, **kw).retains_cpu_memory is (_glibc() is not None)
    with pytest.raises(ValueError, match="retain_cpu_memory must be True or False, got 1"):
        Trainer(model, data, retain_cpu_memory=1, **kw)
