# ruff: noqa
# (the seed notebook's cells are kept verbatim, lint style included)
"""Seed 004 (probly "Batch Ensemble Networks" notebook), ported with only the imports
changed (``probly.transformation...`` -> ``velora_ens.ensembles``). torchvision and the
CIFAR-10 download are not available offline, so the two CIFAR10 data sets are replaced
by small random tensors of CIFAR-10's shape (``num_workers=0``: no worker processes in
the test); every other cell, training one epoch, runs as written."""

from __future__ import annotations

import pytest


def test_seed_004_batch_ensemble_notebook(capsys):
    import time
    import torch
    from torch import nn, optim
    from torch.utils.data import DataLoader, TensorDataset
    device = "cuda" if torch.cuda.is_available() else "cpu"
    device = "cpu"  # the test suite runs on the CPU
    print("Using device:", device)

    # CIFAR10 stand-in: random images of CIFAR-10's shape and labels
    g = torch.Generator().manual_seed(0)
    train_data = TensorDataset(torch.randn(160, 3, 32, 32, generator=g),
                               torch.randint(0, 10, (160,), generator=g))
    val_data = TensorDataset(torch.randn(64, 3, 32, 32, generator=g),
                             torch.randint(0, 10, (64,), generator=g))
    train_loader = DataLoader(train_data, batch_size=32, shuffle=True, num_workers=0)
    val_loader = DataLoader(val_data, batch_size=32, shuffle=False, num_workers=0)
    print(f"Train samples: {len(train_data)}, Val samples: {len(val_data)}")

    class MLP(nn.Module):
        def __init__(self, in_dim: int = 3072, hidden: int = 128, out_dim: int = 10) -> None:
            """Initialize the MLP model with two hidden layers."""
            super().__init__()
            self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, out_dim),
            )
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """Forward pass of the MLP model."""
            x = x.view(x.size(0), -1)
            return self.net(x)

    from velora_ens.ensembles import ensemble
    in_dim = 3 * 32 * 32
    hidden = 128
    num_members = 5
    ensemble_mlp = ensemble(
    base=MLP(in_dim=in_dim, hidden=hidden, out_dim=10),
    num_members=num_members,
    )

    from velora_ens.ensembles import batchensemble
    batch_ensemble_mlp = batchensemble(
    base=MLP(in_dim=in_dim, hidden=hidden, out_dim=10),
    num_members=num_members,
    )

    print(f"Base MLP:\n{MLP(in_dim=in_dim, hidden=hidden, out_dim=10)}\n")
    print(f"BatchEnsemble MLP:\n{batch_ensemble_mlp}")
    print(f"Ensemble MLP:\n{ensemble_mlp}\n")
    print(f"BatchEnsemble MLP:\n{batch_ensemble_mlp}")

    def train_model(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_function: nn.CrossEntropyLoss,
    train_loader: DataLoader,
    epochs: int = 10,
    num_members: int | None = None,
    ) -> nn.Module:
        for epoch in range(epochs):
            t0 = time.perf_counter()
            total_loss = 0.0
            model.train()
            for xb, yb in train_loader:
                x = xb.to(device).float()
                y = yb.to(device).long()
                optimizer.zero_grad()
                out = model(x)
                if isinstance(num_members, int) and num_members > 0:
                    loss = 0.0
                    for e in range(num_members):
                        loss += loss_function(out[e], y)
                    loss = loss / num_members
                else:
                    # fallback to standard loss computation
                    loss = loss_function(out, y)
                loss.backward()
                total_loss += loss.item()
                optimizer.step()
            avg_loss = total_loss / len(train_loader)
            t1 = time.perf_counter()
            print(f"Epoch {epoch + 1}/{epochs} trained in {t1 - t0} seconds.")
            print(f"> Loss: {avg_loss}")
        return model

    def train_ensemble(
    ensemble: MLP,
    train_loader: DataLoader,
    epochs: int = 10,
    lr: float = 1e-3,
    ) -> nn.ModuleList:
        model = nn.ModuleList()
        for i, member in enumerate(ensemble):
            print(f"\nTraining ensemble member {i + 1}/{len(ensemble)}")
            member_i = member.to(device)
            optimizer = optim.Adam(member_i.parameters(), lr=lr)
            train_model(
            member_i,
            optimizer=optimizer,
            loss_function=nn.CrossEntropyLoss(),
            train_loader=train_loader,
            epochs=epochs,
            )
            model.append(member_i)
        return model

    def train_batchensemble(
    base_cls: MLP,
    num_members: int,
    train_loader: DataLoader,
    epochs: int = 10,
    lr: float = 1e-3,
    ) -> nn.Module:
        model = base_cls.to(device)
        optimizer = optim.Adam(model.parameters(), lr=lr)
        model = train_model(
        model,
        optimizer=optimizer,
        loss_function=nn.CrossEntropyLoss(),
        train_loader=train_loader,
        epochs=epochs,
        num_members=num_members,
        )
        return model

    epochs = 1
    lr = 1e-3
    t0_batch_ensemble = time.perf_counter()
    trained_batch_ensemble = train_batchensemble(
    base_cls=batch_ensemble_mlp,
    num_members=num_members,
    train_loader=train_loader,
    epochs=epochs,
    lr=lr,
    )
    t1_batch_ensemble = time.perf_counter()
    print(f"\nTrained BatchEnsemble model of size {num_members} in {t1_batch_ensemble - t0_batch_ensemble:.2f}s")
    t0_ensemble = time.perf_counter()
    trained_ensemble = train_ensemble(
    ensemble=ensemble_mlp,
    train_loader=train_loader,
    epochs=epochs,
    lr=lr,
    )
    t1_ensemble = time.perf_counter()
    print(f"\nTrained classical ensemble of size {num_members} in {t1_ensemble - t0_ensemble:.2f}s")

    class Evaluator:
        def __init__(self, data_loader: torch.utils.data.DataLoader, device: str) -> None:
            """Initialize the Evaluator with a data loader and device."""
            self.data_loader = data_loader
            self.device = device
        def _setup(self) -> None:
            self.correct = 0
            self.total = 0
            self.member_predictions = []
        def evaluate_batchensemble(self, model: nn.Module, num_members: int) -> tuple[float, torch.Tensor]:
            """Evaluate a BatchEnsemble model."""
            self._setup()
            model.to(self.device)
            model.eval()
            with torch.no_grad():
                for xb, yb in self.data_loader:
                    x = xb.to(self.device).float()
                    y = yb.to(self.device).long()
                    out = model(x) # [E, B, out_dim]
                    preds = torch.argmax(out, dim=2) # [E, B]
                    self.correct += (preds == y.unsqueeze(0)).sum().item()
                    self.total += y.size(0) * num_members
                    self.member_predictions.append(preds.cpu())
            accuracy = self.correct / self.total
            all_member_preds = torch.cat(self.member_predictions, dim=1)
            return accuracy, all_member_preds
        def evaluate_classical_ensemble(self, models: nn.ModuleList) -> tuple[float, torch.Tensor]:
            """Evaluate a classical ensemble of models."""
            self._setup()
            for m in models:
                m.to(self.device)
                m.eval()
            with torch.no_grad():
                for xb, yb in self.data_loader:
                    x = xb.to(self.device).float()
                    y = yb.to(self.device).long()
                    batch_member_preds = []
                    for m in models:
                        out = m(x) # [B, out_dim]
                        preds = torch.argmax(out, dim=1) # [B]
                        batch_member_preds.append(preds.cpu().unsqueeze(0)) # [1, B]
                    batch_member_preds = torch.cat(batch_member_preds, dim=0) # [E, B]
                    self.correct += (batch_member_preds == y.unsqueeze(0).cpu()).sum().item()
                    self.total += y.size(0) * len(models)
                    self.member_predictions.append(batch_member_preds)
            accuracy = self.correct / self.total
            all_member_preds = torch.cat(self.member_predictions, dim=1)
            return accuracy, all_member_preds

    # Evaluate BatchEnsemble
    evaluator = Evaluator(val_loader, device)
    be_acc, be_member_preds = evaluator.evaluate_batchensemble(trained_batch_ensemble, num_members)
    print(f"BatchEnsemble Accuracy: {be_acc:.4f}")
    for m in trained_ensemble:
        m.to(device)
    ce_acc, ce_member_preds = evaluator.evaluate_classical_ensemble(trained_ensemble)
    print(f"Classical Ensemble Accuracy: {ce_acc:.4f}")

    # --- checks -------------------------------------------------------------------------
    out = capsys.readouterr().out
    assert "(0): BatchEnsembleLinear(" in out and "(0-4): 5 x MLP(" in out
    assert type(batch_ensemble_mlp).__name__ == "MLP"
    assert be_member_preds.shape == (5, 64) and ce_member_preds.shape == (5, 64)
    # accuracies agree with the member predictions they were counted from
    y_val = val_data.tensors[1]
    assert be_acc == pytest.approx((be_member_preds == y_val).float().mean().item())
    assert ce_acc == pytest.approx((ce_member_preds == y_val).float().mean().item())
    # BatchEnsemble members differ (their fast weights do)
    with torch.no_grad():
        logits = trained_batch_ensemble(val_data.tensors[0][:8])
    assert logits.shape == (5, 8, 10) and not torch.allclose(logits[0], logits[1])
