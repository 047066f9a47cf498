"""velora_ens.training.Trainer on CPU: fitting, exact resume, checkpoints, EMA, schedule,
divergence and bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from velora_ens.training import (
    EMA,
    TensorDataset,
    Trainer,
    TrainingDivergedError,
    load_checkpoint,
    lr_factor,
    save_checkpoint,
)


class Regressor(nn.Module):
    """``forward(x, y)`` is the MSE: the ensemble heads' contract."""

    def __init__(self, dim_in: int = 3, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = (nn.Linear(dim_in, 1) if hidden == 0 else
                    nn.Sequential(nn.Linear(dim_in, hidden), nn.Tanh(), nn.Dropout(dropout),
                                  nn.Linear(hidden, 1)))

    def forward(self, x, y):
        return (self.net(x) - y).pow(2).mean()


def linear_data(n: int = 256, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=g)
    w = torch.tensor([[1.5], [-2.0], [0.5]])
    y = X @ w + 0.3 + 0.05 * torch.randn(n, 1, generator=g)
    return X, y


def params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_trainer_fits_linear_regression_to_least_squares(tmp_path):
    X, y = linear_data()
    model = Regressor()
    trainer = Trainer(model, TensorDataset(X, y), train_batch_size=32, train_lr=0.05,
                      train_num_steps=400, ema_decay=None, results_folder=tmp_path,
                      progress_bar=False, seed=0)
    history = trainer.train()
    # the least-squares solution, computed independently
    A = torch.cat([X, torch.ones(len(X), 1)], 1)
    sol = torch.linalg.lstsq(A, y).solution
    torch.testing.assert_close(model.net.weight.detach(), sol[:3].t(), atol=0.02, rtol=0)
    torch.testing.assert_close(model.net.bias.detach(), sol[3], atol=0.02, rtol=0)
    assert history[-1]["step"] == 400 and history[-1]["train/loss"] < 0.01
    assert (tmp_path / "checkpoint.json").is_file()


def test_same_seed_same_result_and_epochs_count_steps(tmp_path):
    X, y = linear_data(100)
    runs = []
    for k in range(2):
        torch.manual_seed(5)
        model = Regressor(hidden=8, dropout=0.1)
        t = Trainer(model, TensorDataset(X, y), train_batch_size=16, epochs=3,
                    results_folder=tmp_path / str(k), progress_bar=False, seed=3)
        assert t.train_num_steps == 3 * (100 // 16)
        t.train()
        runs.append(params(model))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


class Interrupt(Exception):
    pass


def _resume_setup(folder, steps=40, loss_fn=None, resume=False):
    X, y = linear_data(96)
    torch.manual_seed(11)
    model = Regressor(hidden=16, dropout=0.2)  # dropout: the RNG state must be restored too
    return model, Trainer(model, TensorDataset(X, y), train_batch_size=16, train_lr=0.01,
                          train_num_steps=steps, ema_decay=0.9, results_folder=folder,
                          save_every=10, progress_bar=False, seed=1, warmup_steps=5,
                          weight_decay=0.01, loss_fn=loss_fn, resume=resume)


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    full, t_full = _resume_setup(tmp_path / "full")
    t_full.train()

    def crash_at_25(model, batch):
        if t_crash.step == 25:
            raise Interrupt
        return model(*batch)

    _, t_crash = _resume_setup(tmp_path / "crash", loss_fn=crash_at_25)
    with pytest.raises(Interrupt):
        t_crash.train()
    # the last checkpoint is step 20 (save_every=10); a new process resumes from it
    resumed, t_res = _resume_setup(tmp_path / "crash", resume=True)
    assert t_res.step == 20
    t_res.train()
    for a, b in zip(params(full), params(resumed), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(params(t_full.ema.model), params(t_res.ema.model), strict=True):
        assert torch.equal(a, b)
    # the history of the resumed run continues the one before the crash
    assert [r["step"] for r in t_res.history][-1] == 40


def test_checkpoint_files_are_safetensors_and_json(tmp_path):
    model, t = _resume_setup(tmp_path, steps=30)
    t.train()
    record = json.loads((tmp_path / "checkpoint.json").read_text())
    assert record["step"] == 30 and record["tensors"].endswith(".safetensors")
    # keep_checkpoints=2: steps 20 and 30 remain
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [
        "checkpoint-000000020.safetensors", "checkpoint-000000030.safetensors"]
    assert not list(tmp_path.glob("*.tmp"))
    tensors, state, step = load_checkpoint(tmp_path)
    assert step == 30 and state["config"]["train_num_steps"] == 30
    for k, v in model.state_dict().items():
        assert torch.equal(tensors[f"model.{k}"], v)


def test_corrupt_checkpoint_is_refused(tmp_path):
    _, t = _resume_setup(tmp_path, steps=10)
    t.train()
    path = tmp_path / json.loads((tmp_path / "checkpoint.json").read_text())["tensors"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing")


def test_checkpoint_without_this_ranks_random_state_is_refused(tmp_path):
    _, t = _resume_setup(tmp_path / "run", steps=10)
    t.train()
    tensors, state, step = load_checkpoint(tmp_path / "run")
    del tensors["rng.torch.rank0"]  # what a checkpoint of an older version lacks
    save_checkpoint(tmp_path / "old", step, tensors, state)
    _, fresh = _resume_setup(tmp_path / "new", steps=10)
    with pytest.raises(ValueError, match="no random state for rank 0"):
        fresh.load(tmp_path / "old")


def test_resume_refuses_a_different_run(tmp_path):
    _, t = _resume_setup(tmp_path, steps=10)
    t.train()
    X, y = linear_data(96)
    with pytest.raises(ValueError, match="train_batch_size=16"):
        Trainer(Regressor(hidden=16), TensorDataset(X, y), train_batch_size=8,
                train_num_steps=10, ema_decay=0.9, results_folder=tmp_path, resume=True,
                progress_bar=False, seed=1)


def test_map_style_dataset_gives_the_same_run_as_tensor_dataset(tmp_path):
    X, y = linear_data(64)

    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return len(X)

        def __getitem__(self, i):
            return X[i], y[i]

    results = []
    for k, data in enumerate((TensorDataset(X, y), Plain())):
        torch.manual_seed(0)
        model = Regressor(hidden=4)
        Trainer(model, data, train_batch_size=8, train_num_steps=20, results_folder=tmp_path
                / str(k), progress_bar=False, seed=2).train()
        results.append(params(model))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)


def test_validation_metrics_and_tensorboard(tmp_path):
    X, y = linear_data(128)
    val = TensorDataset(*linear_data(64, seed=1))

    def mse(model, data):
        x, t = data.tensors
        return {"mse": model.net(x).sub(t).pow(2).mean()}

    model = Regressor()
    t = Trainer(model, TensorDataset(X, y), train_batch_size=32, train_lr=0.05,
                train_num_steps=60, val_dataset=val, metrics=mse, eval_every=20,
                results_folder=tmp_path, progress_bar=False, tensorboard=True, log_every=20)
    history = t.train()
    vals = [r["val/mse"] for r in history if "val/mse" in r]
    assert len(vals) == 3 and vals[-1] < vals[0]
    # evaluation uses the EMA weights: recompute the last value by hand
    x, target = val.tensors
    expected = float(t.ema.model.net(x).sub(target).pow(2).mean())
    assert vals[-1] == pytest.approx(expected, rel=1e-5)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    # without a metrics function: the mean loss
    t2 = Trainer(Regressor(), TensorDataset(X, y), train_batch_size=32, train_num_steps=1,
                 ema_decay=None, results_folder=tmp_path / "b", progress_bar=False)
    loss = t2.evaluate(val)["loss"]
    assert loss == pytest.approx(float(t2.model(*val.tensors).detach()), rel=1e-5)


def test_ema_matches_the_recurrence():
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    ema = EMA(model, decay=0.9)
    expected = model.weight.detach().clone()
    for n in range(5):
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.update(model)
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * model.weight.detach()
    torch.testing.assert_close(ema.model.weight, expected)


def test_lr_schedule_worked_example():
    assert lr_factor(0, 100, "cosine", 0, 0.0) == 1.0
    assert lr_factor(50, 100, "cosine", 0, 0.0) == pytest.approx(0.5)
    assert lr_factor(100, 100, "cosine", 0, 0.1) == pytest.approx(0.1)
    assert lr_factor(1, 100, "cosine", 4, 0.0) == pytest.approx(0.5)  # warm-up (1+1)/4
    # after the warm-up the cosine runs over the remaining 96 steps
    assert lr_factor(4 + 48, 100, "cosine", 4, 0.0) == pytest.approx(0.5)
    assert lr_factor(70, 100, "constant", 0, 0.0) == 1.0
    assert lr_factor(25, 100, "cosine", 0, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    X, y = linear_data(64)
    model = Regressor()

    def loss_fn(m, batch):
        loss = m(*batch)
        return loss * float("nan") if t.step >= 12 else loss

    t = Trainer(model, TensorDataset(X, y), train_batch_size=8, train_num_steps=30,
                save_every=10, loss_fn=loss_fn, results_folder=tmp_path, progress_bar=False)
    with pytest.raises(TrainingDivergedError, match="at or before step 13.*step 10"):
        t.train()
    assert load_checkpoint(tmp_path)[2] == 10


def test_non_scalar_loss_is_refused(tmp_path):
    X, y = linear_data(32)
    t = Trainer(nn.Bilinear(3, 1, 1), TensorDataset(X, y), train_batch_size=8,
                train_num_steps=2, results_folder=tmp_path, progress_bar=False)
    with pytest.raises(ValueError, match="loss must be a scalar tensor, got \\(8, 1\\)"):
        t.train()


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"train_batch_size": 0}, "train_batch_size must be an integer > 0, got 0"),
        ({"train_lr": -1.0}, "train_lr must be a number > 0, got -1.0"),
        ({"epochs": 2}, "give exactly one of train_num_steps and epochs"),
        ({"train_batch_size": 100}, "the dataset has 32 rows, fewer than one global batch"),
        ({"ema_decay": 1.5}, "ema_decay must be in (0, 1)"),
        ({"schedule": "step"}, "schedule must be one of ('cosine', 'constant'), got 'step'"),
        ({"optimizer": "lion"}, "optimizer must be one of"),
        ({"device": "tpu"}, "device must be 'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or a "
                            "torch.device, got 'tpu'"),
        ({"distributed": "yes"}, "distributed must be 'auto', True or False, got 'yes'"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, fragment):
    X, y = linear_data(32)
    args = {"train_batch_size": 8, "train_num_steps": 2, "results_folder": tmp_path}
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        Trainer(Regressor(), TensorDataset(X, y), **args)
    assert fragment in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_asking_for_cuda_without_it_is_a_clear_error(tmp_path):
    X, y = linear_data(32)
    with pytest.raises(ValueError, match="CUDA is not available"):
        Trainer(Regressor(), TensorDataset(X, y), train_num_steps=1, device="cuda")


def test_amp_on_cpu_trains_under_bfloat16_autocast(tmp_path):
    """CPU autocast is bfloat16 (no gradient scaler); the forward's matmuls run in it.
    The heads and liquid networks under it: tests/test_training_amp.py."""
    X, y = linear_data(32)
    model = Regressor()
    dtypes = []
    model.net.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    t = Trainer(model, TensorDataset(X, y), train_batch_size=8, train_num_steps=2,
                amp=True, results_folder=tmp_path, progress_bar=False)
    assert t.amp_dtype == torch.bfloat16 and t.scaler is None
    t.train()
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    assert model.net.weight.dtype == torch.float32  # the weights stay float32


def test_amp_on_mps_warns(tmp_path, monkeypatch):
    """MPS keeps full precision. Simulated: the trainer is then stopped, right after the
    warning, by a refusal that touches no device (fewer rows than one batch)."""
    import velora_ens.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "select_device", lambda *a, **k: torch.device("mps"))
    X, y = linear_data(4)
    with pytest.warns(UserWarning, match="amp=True has no effect on the MPS"), \
            pytest.raises(ValueError, match="fewer than one global batch"):
        Trainer(Regressor(), TensorDataset(X, y), train_batch_size=8, train_num_steps=2,
                amp=True, results_folder=tmp_path, progress_bar=False)


def test_tensor_dataset_refuses_bad_data():
    with pytest.raises(ValueError, match="tensor 0 has 3 rows, tensor 1 has 2"):
        TensorDataset(torch.zeros(3, 1), torch.zeros(2))
    x = torch.zeros(5, 2)
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="tensor 0 has NaN or infinite values \\(first in row 3"):
        TensorDataset(x, torch.zeros(5))
    with pytest.raises(ValueError, match="empty"):
        TensorDataset(torch.zeros(0, 2))
    with pytest.raises(ValueError, match="expected a torch.Tensor"):
        TensorDataset([1, 2, 3])


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_cuda_amp_channels_last_training_matches_shapes(tmp_path):
    torch.manual_seed(0)

    class Conv(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

        def forward(self, x, y):
            return nn.functional.cross_entropy(self.net(x), y)

    X, y = torch.randn(64, 3, 8, 8), torch.randint(0, 4, (64,))
    model = Conv()
    t = Trainer(model, TensorDataset(X, y), train_batch_size=16, train_num_steps=20, amp=True,
                results_folder=tmp_path, progress_bar=False)
    assert t.device.type == "cuda" and t.channels_last
    assert t.dataset.tensors[0].is_cuda  # small data lives on the GPU
    t.train()
    assert math.isfinite(t.history[-1]["train/loss"])


def test_a_non_finite_gradient_stops_training(tmp_path):
    X, y = linear_data(32)

    class SqrtLoss(Regressor):
        def forward(self, x, t):  # sqrt(0): a finite loss with an infinite gradient
            return (self.net(x) - t).pow(2).mean() + (self.net.bias - self.net.bias).sum().sqrt()

    t = Trainer(SqrtLoss(), TensorDataset(X, y), train_batch_size=8, train_num_steps=5,
                results_folder=tmp_path, progress_bar=False)
    with pytest.raises(TrainingDivergedError, match="gradient became NaN or infinite"):
        t.train()


def test_importing_training_and_data_stays_light():
    import subprocess
    import sys

    code = ("import sys, velora_ens.training, velora_ens.data, velora_ens.bench.heads; "
            "print(sorted(m for m in ('tensorboard', 'matplotlib', 'PIL') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "[]", out.stderr
