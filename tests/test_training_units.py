"""Small public helpers of the trainer, data and benchmark packages, each checked against
an independent computation or a worked example."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from velora_ens.bench.classifiers import build_network
from velora_ens.bench.scoring import regression_scores
from velora_ens.data import augment
from velora_ens.data._paths import data_root, default_cache_dir
from velora_ens.training.device import autocast_dtype, select_device
from velora_ens.training.distributed import (
    DistInfo,
    all_gather_tensor,
    all_reduce_mean,
    all_reduce_sum,
    broadcast_from_main,
    close_distributed,
    init_distributed,
    shard_indices,
    shard_range,
)


def test_select_device_cpu_and_clear_errors():
    assert select_device("cpu") == torch.device("cpu")
    assert autocast_dtype(torch.device("cpu")) == torch.bfloat16  # amp=True on the CPU
    with pytest.raises(ValueError, match="'tpu'"):
        select_device("tpu")
    if not torch.cuda.is_available():
        assert select_device(None) in (torch.device("cpu"), torch.device("mps"))
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")


def test_shard_indices_gives_each_rank_its_contiguous_share():
    batch = torch.arange(10)
    assert torch.equal(shard_indices(batch, DistInfo()), batch)  # single process: all
    shares = [shard_indices(batch, DistInfo(rank=r, world_size=3)) for r in range(3)]
    assert [s.tolist() for s in shares] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    value = torch.tensor([1.0, 2.0])
    assert torch.equal(all_reduce_mean(value, DistInfo()), value)


def test_shard_range_covers_every_row_once_in_near_equal_shares():
    assert shard_range(7, DistInfo()) == range(7)
    for n, world in [(7, 3), (2, 4), (12, 4), (0, 2)]:
        shares = [shard_range(n, DistInfo(rank=r, world_size=world)) for r in range(world)]
        assert [i for s in shares for i in s] == list(range(n))  # in order, no gaps
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert [list(shard_range(7, DistInfo(r, 3))) for r in range(3)] == [[0, 1, 2], [3, 4],
                                                                       [5, 6]]


def test_collectives_are_identities_in_a_single_process():
    value = torch.tensor([1.0, 2.0])
    gathered = all_gather_tensor(value, DistInfo())
    assert len(gathered) == 1 and torch.equal(gathered[0], value)
    assert torch.equal(all_reduce_sum(value, DistInfo()), value)
    obj = {"a": 1.0}
    assert broadcast_from_main(obj, DistInfo()) is obj
    close_distributed(DistInfo())  # nothing started here: nothing to close


def test_init_distributed_modes(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not init_distributed("auto", "cpu").enabled
    assert not init_distributed(False, "cpu").enabled
    with pytest.raises(ValueError, match="torchrun"):
        init_distributed(True, "cpu")
    with pytest.raises(ValueError, match="'sometimes'"):
        init_distributed("sometimes", "cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        init_distributed("auto", "cpu")


def test_data_and_cache_locations_follow_argument_then_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("VELORA_ENS_DATA", raising=False)
    monkeypatch.delenv("VELORA_ENS_CACHE", raising=False)
    assert data_root() == Path("data")
    assert default_cache_dir() == Path.home() / ".cache" / "velora_ens"
    monkeypatch.setenv("VELORA_ENS_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("VELORA_ENS_CACHE", str(tmp_path / "c"))
    assert data_root() == tmp_path / "d" and default_cache_dir() == tmp_path / "c"
    assert data_root(tmp_path / "x") == tmp_path / "x"
    assert default_cache_dir(tmp_path / "y") == tmp_path / "y"


def test_regression_scores_match_the_formulas():
    torch.manual_seed(0)
    mean, target = torch.randn(500), torch.randn(500)
    var = torch.rand(500) + 0.1
    got = regression_scores(mean, var, target)
    err = target - mean
    assert got["rmse"] == pytest.approx(float(err.square().mean().sqrt()), rel=1e-5)
    nll = 0.5 * torch.log(2 * math.pi * var) + err.square() / (2 * var)
    assert got["nll"] == pytest.approx(float(nll.mean()), rel=1e-5)
    z90 = 1.6448536269514722  # the 95th percentile of N(0, 1)
    inside = (err.abs() <= z90 * var.sqrt()).float().mean()
    assert got["coverage90"] == pytest.approx(float(inside), abs=1e-6)


def test_crop_flip_transform_keeps_shapes_labels_and_pixels():
    torch.manual_seed(1)
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(6)
    out_images, out_labels = augment.CropFlip(padding=2)((images, labels))
    assert out_images.shape == images.shape and out_images.dtype == torch.uint8
    assert torch.equal(out_labels, labels)
    # No padding and no flip: the images come back unchanged.
    same, _ = augment.CropFlip(padding=0, flip=False)((images, labels))
    assert torch.equal(same, images)


@pytest.mark.parametrize("name", ["cnn", "resnet18"])
def test_build_network_outputs_logits(name):
    net = build_network(name, 8, num_classes=10)
    assert net(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 10)
    with pytest.raises(ValueError, match="'vgg'"):
        build_network("vgg", 8)
