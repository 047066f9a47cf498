"""Two processes through torchrun and the gloo backend train exactly like one process
with the same global batch (DistributedDataParallel averages the gradients of equal
shards of every global batch); validation splits its rows over the processes; a resumed
two-process run restores each process's own random state; the trainer tears down the
process group it started."""

from __future__ import annotations

import json
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
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(dropout),
                                 nn.Linear(8, 1))

    def forward(self, x, y):
        return (self.net(x) - y).pow(2).mean()


def make(dropout: float = 0.0, n: int = 60, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g)
    y = X.sum(1, keepdim=True).sin() + 0.1 * torch.randn(n, 1, generator=g)
    torch.manual_seed(7)
    return Net(dropout), TensorDataset(X, y)


def run(batch: int, folder: Path) -> Trainer:
    model, data = make()
    trainer = Trainer(model, data, train_batch_size=batch, train_lr=0.02,
                      train_num_steps=STEPS, ema_decay=0.9, results_folder=folder,
                      progress_bar=False, device="cpu", seed=0, log_every=4)
    trainer.train()
    return trainer


class Interrupt(Exception):
    pass


def dropout_trainer(folder: Path, crash_at: int | None = None, resume: bool = False
                    ) -> Trainer:
    """Dropout draws different masks on each rank, so each rank's random state matters."""
    model, data = make(dropout=0.5)

    def loss_fn(m, batch):
        if crash_at is not None and trainer.step == crash_at:
            raise Interrupt
        return m(*batch)

    trainer = Trainer(model, data, train_batch_size=PER_PROCESS, train_lr=0.02,
                      train_num_steps=STEPS, results_folder=folder, progress_bar=False,
                      device="cpu", seed=0, save_every=4, loss_fn=loss_fn, resume=resume)
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

    # validation: each rank scored its share of 25 rows (13 + 12), the sum over ranks
    # gives the single process's mean loss on every rank
    val = make(n=25, seed=3)[1]
    expected = single.evaluate(val)["loss"]
    for rank in (0, 1):
        got = json.loads((tmp_path / "ddp" / f"val{rank}.json").read_text())
        assert got["loss"] == pytest.approx(expected, rel=1e-6)
        assert got["metrics"] == {"n": 25.0}  # a metrics function runs on rank 0 and is sent

    # resume: stopped at step 6 (checkpoint at 4) and resumed, both ranks continue their
    # own dropout masks, so the weights equal the uninterrupted run's
    full, _, _ = load_checkpoint(tmp_path / "full")
    resumed, _, step = load_checkpoint(tmp_path / "crash")
    assert step == STEPS
    for k, v in full.items():
        if k.startswith("model."):
            torch.testing.assert_close(resumed[k], v, rtol=0, atol=0)
    assert not torch.equal(full["rng.torch.rank0"], full["rng.torch.rank1"])
    assert (tmp_path / "ddp" / "closed").read_text() == "True"


if __name__ == "__main__":  # a torchrun worker
    import torch.distributed as dist

    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    trainer = run(PER_PROCESS, out)
    assert trainer.dist.world_size == 2 and dist.get_backend() == "gloo"
    assert trainer.dist.started_here
    val = make(n=25, seed=3)[1]
    loss = trainer.evaluate(val)["loss"]
    trainer.metrics = lambda model, data: {"n": len(data)}
    metrics = trainer.evaluate(val)
    (out / f"val{trainer.dist.rank}.json").write_text(json.dumps(
        {"loss": loss, "metrics": metrics}))

    dropout_trainer(out.parent / "full")
    try:
        dropout_trainer(out.parent / "crash", crash_at=6)
    except Interrupt:
        pass
    resumed = dropout_trainer(out.parent / "crash", resume=True)
    assert not resumed.dist.started_here  # it joined the group the first trainer made
    resumed.close()  # leaves the group to the trainer that made it
    assert dist.is_initialized()

    trainer.close()
    if trainer.dist.is_main:
        (out / "closed").write_text(str(not dist.is_initialized()))
