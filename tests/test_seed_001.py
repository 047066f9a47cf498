# ruff: noqa
# (the seed snippets are kept verbatim, lint style included)
"""Seed 001 ("Building your own liquid networks"): its code snippets, ported with only
the imports changed (``velora.`` -> ``velora_ens.``), plus shape assertions."""

from __future__ import annotations

import torch


def test_seed_001_cells_as_layers_snippets():
    # --- snippet 1: initialising the layers ------------------------------------
    from collections import OrderedDict

    from velora_ens.models.lnn import NCPLiquidCell
    from velora_ens.wiring import Wiring

    in_features = 4
    n_neurons = 10
    out_features = 1

    wiring = Wiring(in_features, n_neurons, out_features)
    masks, counts = wiring.data()

    names = ["inter", "command", "motor"]
    layers = [
        NCPLiquidCell(in_features, counts.inter, masks.inter),
        NCPLiquidCell(counts.inter, counts.command, masks.command),
        NCPLiquidCell(counts.command, counts.motor, masks.motor)
    ]
    layers = OrderedDict([(name, layer) for name, layer in zip(names, layers)])

    # --- snippet 2: the forward function ----------------------------------------
    from typing import Tuple

    import torch

    out_sizes = [layer.n_hidden for layer in layers.values()]

    def ncp_forward(x: torch.Tensor, hidden: torch.Tensor
        ) -> Tuple[torch.Tensor, torch.Tensor]:
        """"""
        h_state = torch.split(hidden, out_sizes, dim=1) # (1)

        new_h_state = []
        inputs = x

        # Handle layer independence
        for i, layer in enumerate(layers.values()):
            y_pred, h = layer(inputs, h_state[i]) # (2)
            inputs = y_pred  # (batch_size, layer_out_features)
            new_h_state.append(h)

        new_h_state = torch.cat(new_h_state, dim=1)  # (3) (batch_size, n_units)
        return y_pred, new_h_state

    # --- snippet 3: using it ----------------------------------------------------
    import torch

    # Set our inputs
    x = torch.tensor(
        [-6.6, -1.1, -5.98, -1.69]
    ).unsqueeze(0)

    # Compute our hidden state size
    n_units = n_neurons + out_features
    # n_units = sum(out_sizes)  # Same as above!
    batch_size = x.size()[0]

    # Create a starting hidden state
    h_state = torch.zeros((batch_size, n_units))

    # Make a prediction
    y_pred, h_state = ncp_forward(x, h_state)

    # --- assertions -------------------------------------------------------------
    assert counts.inter + counts.command == n_neurons
    assert out_sizes == [counts.inter, counts.command, counts.motor] == [6, 4, 1]
    assert sum(out_sizes) == n_units == 11
    assert tuple(y_pred.shape) == (1, out_features)
    assert tuple(h_state.shape) == (1, n_units)
    assert torch.isfinite(y_pred).all() and torch.isfinite(h_state).all()
    # The last layer's prediction is the motor part of the new hidden state.
    torch.testing.assert_close(y_pred, h_state[:, -out_features:])


def test_seed_001_full_code_example():
    from collections import OrderedDict
    from typing import Tuple

    from velora_ens.models.lnn.cell import NCPLiquidCell
    from velora_ens.wiring import Wiring

    import torch

    in_features = 4
    n_neurons = 10
    out_features = 1

    wiring = Wiring(in_features, n_neurons, out_features)
    masks, counts = wiring.data()

    names = ["inter", "command", "motor"]
    layers = [
        NCPLiquidCell(in_features, counts.inter, masks.inter),
        NCPLiquidCell(counts.inter, counts.command, masks.command),
        NCPLiquidCell(counts.command, counts.motor, masks.motor)
    ]
    layers = OrderedDict([(name, layer) for name, layer in zip(names, layers)])

    out_sizes = [layer.n_hidden for layer in layers.values()]

    def ncp_forward(x: torch.Tensor, hidden: torch.Tensor
        ) -> Tuple[torch.Tensor, torch.Tensor]:
        """"""
        h_state = torch.split(hidden, out_sizes, dim=1)

        new_h_state = []
        inputs = x

        # Handle layer independence
        for i, layer in enumerate(layers.values()):
            y_pred, h = layer(inputs, h_state[i])
            inputs = y_pred  # (batch_size, layer_out_features)
            new_h_state.append(h)

        new_h_state = torch.cat(new_h_state, dim=1)  # (batch_size, n_units)
        return y_pred, new_h_state


    # Set our inputs
    x = torch.tensor(
        [-6.6, -1.1, -5.98, -1.69]
    ).unsqueeze(0)

    # Compute our hidden state size
    n_units = n_neurons + out_features
    # n_units = sum(out_sizes)  # Same as above!
    batch_size = x.size()[0]

    # Create a starting hidden state
    h_state = torch.zeros((batch_size, n_units))

    # Make a prediction
    y_pred, h_state = ncp_forward(x, h_state)

    # --- assertions -------------------------------------------------------------
    assert tuple(y_pred.shape) == (batch_size, out_features) == (1, 1)
    assert tuple(h_state.shape) == (batch_size, n_units) == (1, 11)
    assert [tuple(m.shape) for m in (masks.inter, masks.command, masks.motor)] == [
        (in_features, counts.inter), (counts.inter, counts.command), (counts.command, counts.motor)]
    # A second step from the returned state still works and keeps the shapes.
    y2, h2 = ncp_forward(x, h_state)
    assert tuple(y2.shape) == (1, 1) and tuple(h2.shape) == (1, 11)
    assert torch.isfinite(h2).all()


def test_seed_001_liquid_ncp_network():
    from velora_ens.models import LiquidNCPNetwork
    import torch

    x = torch.tensor([-6.6, -1.1, -5.98, -1.69]).unsqueeze(0)  # Must be 2d

    ncp = LiquidNCPNetwork(4, 10, 1)
    y_pred, h_state = ncp(x)

    assert tuple(y_pred.shape) == (1, 1)
    assert tuple(h_state.shape) == (1, ncp.hidden_size) == (1, 4)
    assert torch.isfinite(y_pred).all()
    # The hidden state feeds back: a second call accepts it.
    y2, h2 = ncp(x, h_state)
    assert tuple(y2.shape) == (1, 1) and tuple(h2.shape) == (1, 4)


def test_seed_001_ncp_network():
    from velora_ens.models import NCPNetwork
    import torch

    x = torch.tensor([-6.6, -1.1, -5.98, -1.69]).unsqueeze(0)  # Must be 2d

    ncp = NCPNetwork(4, 10, 1)
    y_pred = ncp(x)

    assert isinstance(y_pred, torch.Tensor)
    assert tuple(y_pred.shape) == (1, 1)
    assert torch.isfinite(y_pred).all()
