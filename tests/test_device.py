"""select_device, the project's one device rule, on simulated machines: every branch of
"auto", the explicit devices, allow_mps=False (the agents' setting) and the errors."""

from __future__ import annotations

import pytest
import torch

from velora_ens.training import select_device
from velora_ens.training.device import autocast_dtype


@pytest.fixture
def machine(monkeypatch):
    """``machine(gpus=N, mps=bool)`` makes torch report that hardware."""
    def set_up(gpus: int = 0, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    return set_up


# ------------------------------------------------------------------ "auto"
@pytest.mark.parametrize("auto", ["auto", None])
def test_auto_prefers_cuda_then_mps_then_cpu(machine, auto):
    machine(gpus=2, mps=True)
    assert select_device(auto) == torch.device("cuda", 0)
    assert select_device(auto, local_rank=3) == torch.device("cuda", 1)  # rank % count
    assert select_device(auto, allow_mps=False) == torch.device("cuda", 0)
    machine(gpus=0, mps=True)
    assert select_device(auto) == torch.device("mps")
    assert select_device(auto, allow_mps=False) == torch.device("cpu")
    machine(gpus=0, mps=False)
    assert select_device(auto) == torch.device("cpu")
    assert select_device(auto, local_rank=5) == torch.device("cpu")


def test_default_is_auto(machine):
    machine(gpus=0, mps=True)
    assert select_device() == torch.device("mps")
    machine(gpus=1)
    assert select_device() == torch.device("cuda", 0)


# ------------------------------------------------------------------ explicit devices
def test_cpu_is_always_there(machine):
    machine(gpus=0)
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(torch.device("cpu"), allow_mps=False) == torch.device("cpu")


def test_explicit_cuda(machine):
    machine(gpus=2)
    assert select_device("cuda") == torch.device("cuda", 0)
    assert select_device("cuda", 3) == torch.device("cuda", 1)  # the rank's GPU
    assert select_device("cuda:1") == torch.device("cuda", 1)
    assert select_device("cuda:1", 0) == torch.device("cuda", 1)  # an index is kept
    assert select_device(torch.device("cuda", 0), allow_mps=False) == torch.device("cuda", 0)


def test_explicit_mps(machine):
    machine(gpus=1, mps=True)
    assert select_device("mps") == torch.device("mps")
    assert select_device(torch.device("mps")) == torch.device("mps")


# ------------------------------------------------------------------ errors
def test_cuda_missing_names_the_value_and_what_is_there(machine):
    machine(gpus=0, mps=True)
    with pytest.raises(ValueError, match=r"'cuda' requested but CUDA is not available; "
                                         r"available here: 'mps', 'cpu'$"):
        select_device("cuda")
    with pytest.raises(ValueError, match=r"'cuda:0' requested .* available here: 'cpu'$"):
        select_device(torch.device("cuda", 0), allow_mps=False)


def test_cuda_index_out_of_range(machine):
    machine(gpus=1)
    with pytest.raises(ValueError, match=r"'cuda:9' requested but only 1 CUDA device\(s\) "
                                         r"exist; available here: 'cuda:0', 'cpu'$"):
        select_device("cuda:9")
    machine(gpus=2)
    with pytest.raises(ValueError, match=r"'cuda:2' .* available here: 'cuda:0', 'cuda:1', "
                                         r"'cpu'$"):
        select_device(torch.device("cuda", 2))


def test_mps_missing(machine):
    machine(gpus=0, mps=False)
    with pytest.raises(ValueError, match=r"'mps' requested but MPS is not available; "
                                         r"available here: 'cpu'$"):
        select_device("mps")
    machine(gpus=0, mps=True)
    with pytest.raises(ValueError, match=r"'mps:1' .* only one MPS device"):
        select_device("mps:1")


@pytest.mark.parametrize("mps_present", [True, False])
def test_mps_refused_with_allow_mps_false_and_why(machine, mps_present):
    machine(gpus=0, mps=mps_present)
    for value in ("mps", torch.device("mps")):
        with pytest.raises(ValueError) as err:
            select_device(value, allow_mps=False)
        message = str(err.value)
        assert "'mps'" in message and "not supported" in message
        assert "float64" in message and "MPS has no float64" in message
        assert message.endswith("available here: 'cpu'")  # MPS not offered either


@pytest.mark.parametrize("value, shown", [
    ("tpu", "'tpu'"), (42, "42"), (True, "True"), (1.5, "1.5"), ("", "''"),
    ("auto ", "'auto '"), ("CUDA", "'CUDA'"), ("cuda:x", "'cuda:x'"), ("cuda:-1", "'cuda:-1'"),
    ("meta", "'meta'"), (torch.device("meta"), "'meta'"), (["cpu"], r"\['cpu'\]"),
])
def test_malformed_values_name_the_value_and_the_forms(machine, value, shown):
    machine(gpus=1, mps=True)
    with pytest.raises(ValueError, match=rf"device must be 'auto', 'cpu', 'cuda', 'cuda:N', "
                                         rf"'mps' or a torch.device, got {shown}; "
                                         rf"available here: 'cuda:0', 'mps', 'cpu'$"):
        select_device(value)


@pytest.mark.parametrize("bf16", [True, False])
def test_autocast_dtype_per_device(monkeypatch, bf16):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert autocast_dtype(torch.device("cuda", 0)) == (torch.bfloat16 if bf16 else
                                                       torch.float16)
    assert autocast_dtype(torch.device("cpu")) == torch.bfloat16  # CPU autocast's dtype
    assert autocast_dtype(torch.device("mps")) is None
