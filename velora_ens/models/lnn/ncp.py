"""NCP networks: a liquid (recurrent) one for actors and a feed-forward one for critics."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from velora_ens.models.lnn.cell import NCPLiquidCell
from velora_ens.models.lnn.inputs import as_features, as_state
from velora_ens.models.lnn.ltc import LTCCell
from velora_ens.models.lnn.sparse import SparseLinear
from velora_ens.wiring import Wiring

__all__ = ["LiquidNCPNetwork", "NCPNetwork", "ACTIVATIONS"]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mish": F.mish,
    "tanh": torch.tanh,
    "relu": F.relu,
    "silu": F.silu,
    "gelu": F.gelu,
    "identity": lambda x: x,
}


def _activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def _parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class LiquidNCPNetwork(nn.Module):
    """Liquid NCP: sensory -> inter (sparse, feed-forward) -> command (liquid cell,
    recurrent) -> motor (sparse, feed-forward).

    The inter and motor layers are applied to every step of a sequence in one call;
    only the command layer carries state, so the hidden state has
    ``hidden_size = wiring.counts.command`` entries. The command layer is the CfC cell
    (``cell="cfc"``, modes ``default``/``no_gate``/``pure``) or the ODE-based LTC cell
    (``cell="ltc"``); both use the wiring's recurrent command synapses.

    Args:
        in_features: observation / input size.
        n_neurons: inter + command neurons.
        out_features: output size (motor neurons).
        cell: ``"cfc"`` (default) or ``"ltc"``.
        mode: CfC mode.
        sparsity_level: wiring sparsity in ``[0, 1)``.
        seed: wiring seed (``None``: drawn from torch's global generator).
        activation: activation after the inter layer.
        ode_unfolds: LTC solver sub-steps.
        sign_constrained: CfC only, see :class:`NCPLiquidCell`.

    ``forward(x, h=None, *, dt=None, episode_start=None) -> (y, h)``: ``x`` is
    ``(B, in_features)`` (one step, ``y: (B, out_features)``) or ``(B, L, in_features)``
    (a sequence, ``y: (B, L, out_features)``); ``h`` is the state after the last step.
    """

    def __init__(
        self,
        in_features: int,
        n_neurons: int,
        out_features: int,
        *,
        cell: str = "cfc",
        mode: str = "default",
        sparsity_level: float = 0.5,
        seed: int | None = None,
        activation: str = "silu",
        ode_unfolds: int = 6,
        sign_constrained: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if cell not in ("cfc", "ltc"):
            raise ValueError(f"cell must be 'cfc' or 'ltc', got {cell!r}")
        self.wiring = Wiring(in_features, n_neurons, out_features,
                             sparsity_level=sparsity_level, seed=seed)
        masks, counts = self.wiring.data()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.n_neurons, self.cell_type, self.activation = int(n_neurons), cell, activation
        self._act = _activation(activation)
        kw = {"device": device, "dtype": dtype}
        self.inter = SparseLinear(counts.sensory, counts.inter, masks.inter, **kw)
        if cell == "cfc":
            self.command: NCPLiquidCell | LTCCell = NCPLiquidCell(
                counts.inter, counts.command, masks.command, recurrent_mask=masks.recurrent,
                mode=mode, sign_constrained=sign_constrained, **kw)
        else:
            self.command = LTCCell(counts.inter, counts.command, masks.command,
                                   recurrent_mask=masks.recurrent, ode_unfolds=ode_unfolds, **kw)
        self.motor = SparseLinear(counts.command, counts.motor, masks.motor, **kw)

    @property
    def hidden_size(self) -> int:
        """Size of the recurrent state (the command neurons)."""
        return self.wiring.counts.command

    @property
    def n_parameters(self) -> int:
        """Trainable parameters (masked-out weights included)."""
        return _parameter_count(self)

    def initial_state(self, batch_size: int) -> torch.Tensor:
        """A zero state ``(batch_size, hidden_size)`` on the network's device and dtype."""
        return self.inter.weight.new_zeros(batch_size, self.hidden_size)

    def forward(
        self,
        x: torch.Tensor,
        h: torch.Tensor | None = None,
        *,
        dt: torch.Tensor | float | None = None,
        episode_start: torch.Tensor | None = None,
        return_states: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run one step or a sequence; see the class docstring.

        With ``return_states=True`` the second output is the state after **every** step,
        ``(B, L, hidden_size)`` for a sequence (recurrent RL needs them to evaluate the
        policy at each step's successor), instead of the last state only.
        """
        x = as_features(x, self.in_features, self.inter.weight, type(self).__name__)
        if (x.dim() == 2 and h is not None and dt is None and episode_start is None
                and not torch.is_grad_enabled() and isinstance(self.command, NCPLiquidCell)
                and self.command.mode != "pure"):
            return self._inference_step(x, h)
        u = self._act(self.inter(x))
        states, h_new = self.command(u, h, dt, episode_start)
        return self.motor(states), (states if return_states else h_new)

    def final_state(
        self,
        x: torch.Tensor,
        h: torch.Tensor | None = None,
        *,
        dt: torch.Tensor | float | None = None,
        episode_start: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The state after ``x`` (one step or a sequence), the second output of
        ``forward``, without computing the motor outputs (refreshing a stored state over
        a burn-in prefix needs only this)."""
        x = as_features(x, self.in_features, self.inter.weight, type(self).__name__)
        return self.command(self._act(self.inter(x)), h, dt, episode_start)[1]

    def _inference_step(
        self, x: torch.Tensor, h: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step with gradients off: the same maths as ``forward`` without the per-layer
        module calls and checks (acting in an environment is latency-bound at batch 1)."""
        cmd = self.command
        h = as_state(h, x.shape[0], self.hidden_size, x, type(self).__name__)
        inter, motor = self.inter, self.motor
        u = self._act(torch.addmm(inter.bias, x, inter.masked_weight().t()))
        a = torch.addmm(cmd.project_input(u), h, cmd.effective_recurrent_weight().t())
        h_new = cmd.activate(a, None)
        return torch.addmm(motor.bias, h_new, motor.masked_weight().t()), h_new

    def get_config(self) -> dict:
        """Constructor arguments (JSON-serialisable) that rebuild this architecture."""
        cmd = self.command
        return {
            "in_features": self.in_features,
            "n_neurons": self.n_neurons,
            "out_features": self.out_features,
            "cell": self.cell_type,
            "mode": getattr(cmd, "mode", "default"),
            "sparsity_level": self.wiring.sparsity_level,
            "seed": self.wiring.seed,
            "activation": self.activation,
            "ode_unfolds": getattr(cmd, "ode_unfolds", 6),
            "sign_constrained": getattr(cmd, "sign_constrained", False),
        }


class NCPNetwork(nn.Module):
    """Feed-forward NCP (no recurrence): sparse inter -> command -> motor layers with an
    activation between them; ``forward(x) -> y`` for ``x`` of shape ``(B, F)`` or
    ``(B, L, F)``. Used for critics, where a sparse MLP is enough."""

    def __init__(
        self,
        in_features: int,
        n_neurons: int,
        out_features: int,
        *,
        sparsity_level: float = 0.5,
        seed: int | None = None,
        activation: str = "silu",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.wiring = Wiring(in_features, n_neurons, out_features,
                             sparsity_level=sparsity_level, seed=seed)
        masks, counts = self.wiring.data()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.n_neurons, self.activation = int(n_neurons), activation
        self._act = _activation(activation)
        kw = {"device": device, "dtype": dtype}
        self.inter = SparseLinear(counts.sensory, counts.inter, masks.inter, **kw)
        self.command = SparseLinear(counts.inter, counts.command, masks.command, **kw)
        self.motor = SparseLinear(counts.command, counts.motor, masks.motor, **kw)

    @property
    def n_parameters(self) -> int:
        return _parameter_count(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_features(x, self.in_features, self.inter.weight, type(self).__name__)
        return self.motor(self._act(self.command(self._act(self.inter(x)))))

    def get_config(self) -> dict:
        return {
            "in_features": self.in_features,
            "n_neurons": self.n_neurons,
            "out_features": self.out_features,
            "sparsity_level": self.wiring.sparsity_level,
            "seed": self.wiring.seed,
            "activation": self.activation,
        }
