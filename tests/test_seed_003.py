# ruff: noqa
# (the seed notebook's cells are kept verbatim, lint style included)
"""Seed 003 (pypolymix "Stochastic Mixture of Experts" notebook), ported with only the
imports changed (``pypolymix.*`` -> ``velora_ens.ensembles.moe``) and 10000 -> 600
epochs. matplotlib is not a dependency: the plotting calls (``plt``/``ax``) are left out,
the quantile computations that feed them are kept."""

from __future__ import annotations


def test_seed_003_stochastic_mixture_of_experts_notebook(capsys):
    # Import statements
    import torch
    from velora_ens.ensembles.moe import DeterministicGroup, IIDGaussianGroup
    from velora_ens.ensembles.moe import PolynomialChaosExpansion, MixtureOfExperts, GatingNetwork
    from velora_ens.ensembles.moe import StochasticModel

    # Set random seed
    _ = torch.manual_seed(1234)

    # Generate synthetic data
    num_samples = 50
    X = 2 * torch.rand(num_samples, 1) - 1
    Y = torch.sin(torch.pi * X) + torch.sign(X) + 0.05 * torch.randn(X.shape)

    # Create a surrogate model
    width = 16
    depth = 1
    surrogate_model = MixtureOfExperts(
    experts=[
    PolynomialChaosExpansion(num_inputs=1, num_outputs=1, degree=3),
    PolynomialChaosExpansion(num_inputs=1, num_outputs=1, degree=3),
    ],
    gating_network=GatingNetwork(num_inputs=1, num_experts=2, width=width, depth=depth, activation=torch.nn.functional.tanh)
    )
    num_params = surrogate_model.num_params()
    print(f"This model has {num_params} parameters")

    # Create parameter groups
    parameter_groups = [ # Experts
    IIDGaussianGroup("expert1_c0", 2),
    DeterministicGroup("expert1_c", 2),
    IIDGaussianGroup("expert2_c0", 2),
    DeterministicGroup("expert2_c", 2),
    ]
    # Gating network
    parameter_groups += [ # Input layer
    DeterministicGroup("gating_input_layer_weights", width),
    DeterministicGroup("gating_input_layer_biases", width),
    ]
    for j in range(depth - 1):
        parameter_groups += [ # Hidden layers
        DeterministicGroup(f"gating_layer{j + 1}_weights", width * width),
        DeterministicGroup(f"gating_layer{j + 1}_biases", width),
        ]
    parameter_groups += [ # Output layer
    IIDGaussianGroup("gating_output_weights", 2 * width),
    IIDGaussianGroup("gating_output_biases", 2),
    ]

    # Create stochastic model
    model = StochasticModel(
    surrogate_model=surrogate_model, parameter_groups=parameter_groups
    )
    print(f"Created stochastic model with {model.num_params()} parameters")

    # Training options
    lr = 1e-2 # Learning rate
    weight_decay = 1e-4 # Weight decay for AdamW
    weight_factor = 1e-1 # Weight factor for distribution loss
    num_epochs = 600 # Number of epochs (the notebook: 10000)
    num_samples = 100 # Number of parameter samples per epoch
    # Learnable global precision
    log_tau = torch.nn.Parameter(torch.tensor(0.0)) # τ = exp(log_tau)
    # Optimizer: AdamW
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    # Loss
    loss_fn = torch.nn.MSELoss(reduction="sum")
    # Scheduler: OneCycleLR
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
    optimizer,
    max_lr=10 * lr,
    total_steps=num_epochs
    )

    data_losses = []
    # Train the stochastic model
    for epoch in range(num_epochs):
        optimizer.zero_grad()
        # Evaluate parameters and model
        params = model.sample_parameters(num_samples=100)
        Y_hat = surrogate_model(X, params)
        # Losses
        data_loss = loss_fn(Y_hat, Y.unsqueeze(0).expand_as(Y_hat)) / num_samples
        distribution_loss = model.distribution_loss()
        total_loss = data_loss + weight_factor * distribution_loss
        # Backprop + step
        total_loss.backward()
        optimizer.step()
        scheduler.step()
        data_losses.append(data_loss.item())
        # Logging
        if (epoch + 1) % 100 == 0:
            current_lr = scheduler.get_last_lr()[0]
            print(
            f"Epoch {epoch + 1:5d} | "
            f"learning rate = {current_lr:.6f} | "
            f"data loss = {data_loss.item():.4f} | "
            f"distribution loss = {distribution_loss.item():.4f} | "
            f"total loss = {total_loss.item():.4f}"
            )

    # Evaluate the model
    model.eval()
    with torch.no_grad():
        X_test = torch.linspace(-1, 1, 100).unsqueeze(1)
        Y_test = model(X_test, num_samples=1000)

    # Plot prediction (the numbers behind the plot)
    Q_test = torch.quantile(Y_test, torch.tensor([0.1, 0.9]), axis=0)
    X_plot = X_test.squeeze(-1)
    Q_plot = Q_test.squeeze(-1)
    M_plot = Y_test.mean(axis=0).squeeze(-1)

    # Evaluate the gating probabilities
    with torch.no_grad():
        params = model.sample_parameters(1000)
        gating_weights = surrogate_model.get_gating_weights(X_test, params)
    for expert in range(2):
        Q_gate = torch.quantile(gating_weights[:, :, expert], torch.tensor([0.1, 0.5, 0.9]), axis=0)

    # Evaluate the expert outputs
    with torch.no_grad():
        params = model.sample_parameters(1000)
        expert_outputs = surrogate_model.get_expert_outputs(X_test, params)
    for expert in range(2):
        Q_expert = torch.quantile(expert_outputs[:, expert, :, :], torch.tensor([0.1, 0.5, 0.9]), axis=0)
        M_expert = expert_outputs[:, expert, :, :].mean(axis=0).squeeze(-1)

    # --- checks -------------------------------------------------------------------------
    out = capsys.readouterr().out
    assert "This model has 74 parameters" in out
    assert "Created stochastic model with 74 parameters" in out
    assert Y_test.shape == (1000, 100, 1)
    assert gating_weights.shape == (1000, 100, 2) and expert_outputs.shape == (1000, 2, 100, 1)
    assert Q_plot.shape == (2, 100) and bool((Q_plot[0] <= Q_plot[1]).all())
    assert Q_gate.shape == (3, 100) and Q_expert.shape == (3, 100, 1)
    # the fit: the data loss (summed squared error over 50 points) falls far, and the mean
    # prediction follows sin(pi x) + sign(x) away from the jump
    assert sum(data_losses[-50:]) / 50 < 0.2 * sum(data_losses[:50]) / 50
    truth = torch.sin(torch.pi * X_plot) + torch.sign(X_plot)
    away = X_plot.abs() > 0.2
    assert float((M_plot - truth)[away].abs().mean()) < 0.25
