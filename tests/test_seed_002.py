# ruff: noqa
# (the seed snippets are kept verbatim, lint style included)
"""Seed 002 (deep-ensembles-pytorch README): the regression, classification and
member-prediction snippets, ported with only the imports changed
(``deep_ensembles_pytorch`` -> ``velora_ens.ensembles``; ``TensorDataset, Trainer`` ->
``velora_ens.training``). In the "Full Training with Trainer" snippet
``train_num_steps`` is 10_000 -> 300 so that the suite stays fast, and it runs in a
temporary directory so that its ``./results/`` lands there."""

from __future__ import annotations

import torch


def test_seed_002_regression_snippet():
    import torch
    from velora_ens.ensembles import DeepEnsemble

    # build ensemble of 5 members — paper default
    ensemble = DeepEnsemble(
        dim_in = 1,
        dim_out = 1,
        num_members = 5,
        hidden_dim = 100,
        depth = 3,
        use_adversarial_training = True,   # FGSM smoothing (Sec. 3)
        adversarial_eps = 0.01,
    )

    # training
    X = torch.randn(1000, 1)
    y = X.sin() + 0.1 * torch.randn_like(X)

    loss = ensemble(X, y)
    loss.backward()

    # inference — returns mixture-of-Gaussians aggregate
    pred = ensemble(X)
    pred.mean      # (B, 1)  — predictive mean
    pred.variance  # (B, 1)  — predictive variance (epistemic + aleatoric)

    # --- checks ---
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert all(p.grad is not None for p in ensemble.parameters())
    assert pred.mean.shape == (1000, 1) and pred.variance.shape == (1000, 1)
    assert bool((pred.variance > 0).all())

    # --- snippet: accessing individual member predictions ---
    # useful for visualising the ensemble spread
    member_preds = ensemble.sample_predictions(X)

    for i, pred in enumerate(member_preds):
        print(f'member {i}: μ={pred.mean[:3]}, σ²={pred.log_var.exp()[:3]}')

    assert len(member_preds) == 5


def test_seed_002_regression_learns():
    from velora_ens.ensembles import DeepEnsemble

    torch.manual_seed(0)
    ensemble = DeepEnsemble(dim_in=1, dim_out=1, num_members=5, hidden_dim=32, depth=2)
    X = torch.rand(256, 1) * 6 - 3
    y = X.sin() + 0.1 * torch.randn_like(X)
    opt = torch.optim.Adam(ensemble.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        ensemble(X, y).backward()
        opt.step()
    with torch.no_grad():
        pred = ensemble(X)
        far = ensemble(torch.full((1, 1), 8.0)).epistemic
    assert float((pred.mean - y).pow(2).mean()) < 0.05
    # far outside the data the members disagree more than inside it
    assert float(far) > float(pred.epistemic.mean())


def test_seed_002_classification_snippet():
    import torch
    from velora_ens.ensembles import DeepEnsembleClassifier

    classifier = DeepEnsembleClassifier(
        dim_in = 784,
        num_classes = 10,
        num_members = 5,
        hidden_dim = 200,
        depth = 3,
    )

    X = torch.randn(32, 784)
    target = torch.randint(0, 10, (32,))

    loss = classifier(X, target)
    loss.backward()

    # inference
    pred = classifier(X)
    pred.probs     # (B, C)  — ensemble-averaged softmax
    pred.variance  # (B, 1)  — predictive entropy (higher = more uncertain)

    # --- checks (our Prediction names the entropy .entropy; .variance is p(1 - p)) ---
    assert pred.probs.shape == (32, 10)
    torch.testing.assert_close(pred.probs.sum(-1), torch.ones(32))
    assert pred.entropy.shape == (32,)
    torch.testing.assert_close(pred.variance, pred.probs * (1 - pred.probs))


def test_seed_002_full_training_with_trainer_snippet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the snippet writes ./results/

    import torch
    from velora_ens.ensembles import DeepEnsemble
    from velora_ens.training import TensorDataset, Trainer

    ensemble = DeepEnsemble(
        dim_in = 13,   # e.g. Boston Housing
        dim_out = 1,
        num_members = 5,
        hidden_dim = 100,
        depth = 3,
    )

    X = torch.randn(500, 13)
    y = torch.randn(500, 1)
    dataset = TensorDataset(X, y)

    before = [p.detach().clone() for p in ensemble.parameters()]
    nll_before = _train_nll(ensemble, X, y)
    trainer = Trainer(
        ensemble,
        dataset,
        train_batch_size = 100,
        train_lr = 1e-3,
        train_num_steps = 300,  # the seed: 10_000
        ema_decay = 0.995,
        amp = False,
    )

    trainer.train()
    # checkpoints saved to ./results/

    # --- checks ---
    assert (tmp_path / "results" / "checkpoint.json").is_file()
    assert list((tmp_path / "results").glob("checkpoint-*.safetensors"))
    assert trainer.step == 300
    assert all(not torch.equal(a, b) for a, b in zip(before, ensemble.parameters()))
    # the fit improves the mixture's NLL on the training data, for both weight sets
    assert _train_nll(ensemble, X, y) < nll_before - 0.1
    assert _train_nll(trainer.ema.model, X, y) < nll_before - 0.1


def _train_nll(model, X, y):
    from velora_ens.metrics import gaussian_nll

    with torch.no_grad():
        pred = model(X)
    return gaussian_nll(pred.mean, pred.variance, y)
