"""Two processes through torchrun and the gloo backend train exactly like one process
with the same global batch (DistributedDataParallel averages the gradients of equal
shards of every global batch)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from velora_ens.training import TensorDataset, Trainer, load_checkpoint

STEPS, PER_PROCESS = 12, 6


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, x, y):
        return (self.net(x) - y).pow(2).mean()


def make():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 4, generator=g)
    y = X.sum(1, keepdim=True).sin() + 0.1 * torch.randn(60, 1, generator=g)
    torch.manual_seed(7)
    return Net(), TensorDataset(X, y)


def run(batch: int, folder: Path) -> Trainer:
    model, data = make()
    trainer = Trainer(model, data, train_batch_size=batch, train_lr=0.02,
                      train_num_steps=STEPS, ema_decay=0.9, results_folder=folder,
                      progress_bar=False, device="cpu", seed=0, log_every=4)
    trainer.train()
    return trainer


def test_two_gloo_processes_match_one_process(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           __file__, str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    single = run(2 * PER_PROCESS, tmp_path / "single")
    # rank 0 wrote the checkpoint; the world size is part of its configuration
    tensors, state, step = load_checkpoint(tmp_path / "ddp")
    assert step == STEPS and state["config"]["world_size"] == 2
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(tensors[f"model.{k}"], v, rtol=1e-5, atol=1e-6)
    for k, v in single.ema.model.state_dict().items():
        torch.testing.assert_close(tensors[f"ema.{k}"], v, rtol=1e-5, atol=1e-6)
    # the logged loss is the mean over both processes, equal to the single process's
    assert [r["train/loss"] for r in state["history"]] == [
        pytest.approx(r["train/loss"], rel=1e-5) for r in single.history]
    # and training moved the weights (the comparison is not between two initial states)
    start = make()[0].state_dict()
    assert not torch.allclose(start["net.0.weight"], single.model.state_dict()["net.0.weight"])


if __name__ == "__main__":  # a torchrun worker
    import torch.distributed as dist

    torch.set_num_threads(1)
    trainer = run(PER_PROCESS, Path(sys.argv[1]))
    assert trainer.dist.world_size == 2 and dist.get_backend() == "gloo"
    dist.destroy_process_group()
