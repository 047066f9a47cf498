"""NCP networks: a liquid (recurrent) one for actors and a feed-forward one for critics."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from velora_ens.models.lnn.cell import NCPLiquidCell
from velora_ens.models.lnn.inputs import as_features, as_state
from velora_ens.models.lnn.ltc import LTCCell
from velora_ens.models.lnn.mixed import MixedMemoryCell
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


def _quiet_when_tracing(forward: Callable) -> Callable:
    """Silence ``torch.jit.trace``'s warnings about the input checks of ``forward``.

    The checks read sizes and values as Python numbers to raise clear errors on bad input;
    a trace records them as constants, which changes nothing in the traced computation
    (the only Python-side branches of these networks are those checks: the fused CfC scan,
    which branches on the resets, is not taken while tracing).
    """

    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        if not torch.jit.is_tracing():
            return forward(self, *args, **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return forward(self, *args, **kwargs)

    return wrapper


class _WiredNetwork(nn.Module):
    """What both NCP networks share: the wiring seed in the state dict (so that loading a
    state dict adopts the wiring it was saved with) and a clear refusal of
    ``torch.jit.script``.

    Every buffer of the three layers (``inter``, ``command``, ``motor``) is derived from
    the wiring (masks, polarities, signs), so comparing them compares wirings.
    """

    wiring: Wiring
    # Filled in by _adopt_wiring when a state dict older than the seed buffer lacks it.
    _optional_state_keys = ("wiring_seed",)

    def _wiring_buffers(self) -> dict[str, torch.Tensor]:
        return {f"{layer}.{name}": buffer for layer in ("inter", "command", "motor")
                for name, buffer in getattr(self, layer).named_buffers()}

    def _register_wiring_seed(self, device: torch.device | str | None) -> None:
        seed = self.wiring.seed
        if seed >= 2**63:
            raise ValueError(f"seed must be below 2**63 (the state dict stores it as int64), "
                             f"got {seed}")
        self.register_buffer("wiring_seed", torch.tensor(seed, dtype=torch.int64,
                                                         device=device))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs) -> None:
        self._adopt_wiring(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def _adopt_wiring(self, state_dict: dict[str, Any], prefix: str) -> None:
        """Make :attr:`wiring` the wiring of the state dict about to be loaded, or refuse.

        The seed in ``state_dict`` names the wiring; its masks must be the ones that seed
        draws with this network's other arguments. A state dict saved before the seed was
        stored is accepted when its masks equal this network's.
        """
        name = type(self).__name__
        mine = self._wiring_buffers()
        loaded = {k: state_dict[prefix + k] for k in mine if prefix + k in state_dict}
        if any(not isinstance(v, torch.Tensor) or v.shape != mine[k].shape
               for k, v in loaded.items()):
            return  # another architecture: load_state_dict reports the mismatch itself
        key = prefix + "wiring_seed"
        stored = state_dict.get(key)
        if stored is not None and (not isinstance(stored, torch.Tensor) or stored.numel() != 1
                                   or stored.is_floating_point()):
            raise ValueError(f"{name}.load_state_dict: {key!r} must be a one-element integer "
                             f"tensor (the wiring seed), got {stored!r}")
        seed = self.wiring.seed if stored is None else int(stored)
        reference: _WiredNetwork = self
        if seed != self.wiring.seed:
            if len(loaded) != len(mine):
                raise ValueError(
                    f"{name}.load_state_dict: the state dict changes the wiring seed from "
                    f"{self.wiring.seed} to {seed} but lacks the masks "
                    f"{sorted(set(mine) - set(loaded))}; load the whole state dict")
            # the base class: a subclass may take other constructor arguments
            base = LiquidNCPNetwork if isinstance(self, LiquidNCPNetwork) else NCPNetwork
            with torch.random.fork_rng(devices=[]):  # building draws initial weights
                reference = base(**{**self.get_config(), "seed": seed})
        expected = reference._wiring_buffers()
        differ = [k for k, v in loaded.items() if not torch.equal(
            v.detach().to("cpu", torch.float64), expected[k].detach().to("cpu", torch.float64))]
        if differ and stored is None:
            raise ValueError(
                f"{name}.load_state_dict: the state dict has no {key!r} (it was saved by an "
                f"older velora_ens) and its wiring masks {differ} differ from this network's "
                f"wiring (seed={self.wiring.seed}); build the network with the wiring seed it "
                f"was saved with, e.g. {name}(**saved_network.get_config())")
        if differ:
            config = {k: v for k, v in self.get_config().items() if k != "seed"}
            raise ValueError(
                f"{name}.load_state_dict: the state dict's wiring masks {differ} are not the "
                f"ones seed {seed} draws with this network's arguments {config}; it was saved "
                f"from a network built with other arguments: build it with the saved "
                f"network's get_config()")
        if stored is None:
            state_dict[key] = self.wiring_seed.detach().clone()
        self.wiring = reference.wiring

    def __prepare_scriptable__(self) -> nn.Module:
        """Called by ``torch.jit.script``: refuse with what to use instead."""
        name = type(self).__name__
        raise NotImplementedError(
            f"torch.jit.script cannot compile {name}: its forward takes optional, "
            f"keyword-only and numpy inputs and checks them in Python. Use "
            f"torch.jit.trace(net, example_inputs) for TorchScript (one step, or sequences of "
            f"the traced length), or velora_ens.models.export_onnx(net, path) for ONNX "
            f"(see the export guide)")


class LiquidNCPNetwork(_WiredNetwork):
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
        dense_recurrence: every command neuron synapses onto every command neuron
            (:class:`~velora_ens.wiring.Wiring`'s option) instead of the NCP's sparse
            recurrence.
        self_synapse_init: CfC only: each command neuron's synapse onto itself starts at
            this weight (see :class:`NCPLiquidCell`); ``None``: the uniform draw.
        mixed_memory: an LSTM memory cell beside the liquid cell
            (:class:`~velora_ens.models.lnn.mixed.MixedMemoryCell`, ncps's option of the
            same name): the state is ``[h, c]``, twice the command neurons (the Memory
            section of the liquid-networks guide says what each option remembers).

    ``forward(x, h=None, *, dt=None, episode_start=None) -> (y, h)``: ``x`` is
    ``(B, in_features)`` (one step, ``y: (B, out_features)``) or ``(B, L, in_features)``
    (a sequence, ``y: (B, L, out_features)``); ``h`` is the state after the last step.

    The wiring seed is part of the state dict (``wiring_seed``): ``load_state_dict`` adopts
    the wiring the weights were saved with, so :attr:`wiring` and :meth:`get_config`
    describe what was loaded, and refuses (``ValueError``) masks that the seed does not
    draw with this network's other arguments. For deployment see
    :func:`velora_ens.models.export_onnx`; ``torch.jit.trace`` works, ``torch.jit.script``
    is refused with what to use instead.
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
        dense_recurrence: bool = False,
        mixed_memory: bool = False,
        self_synapse_init: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if cell not in ("cfc", "ltc"):
            raise ValueError(f"cell must be 'cfc' or 'ltc', got {cell!r}")
        if cell == "ltc" and mode != "default":
            raise ValueError(f"mode applies to the CfC cell (cell='cfc'), not to cell='ltc', "
                             f"got {mode!r}")
        if cell == "ltc" and self_synapse_init is not None:
            raise ValueError(f"self_synapse_init applies to the CfC cell (cell='cfc'), not to "
                             f"cell='ltc', got {self_synapse_init!r}")
        self.wiring = Wiring(in_features, n_neurons, out_features,
                             sparsity_level=sparsity_level, seed=seed,
                             dense_recurrence=dense_recurrence)
        masks, counts = self.wiring.data()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.n_neurons, self.cell_type, self.activation = int(n_neurons), cell, activation
        self._act = _activation(activation)
        kw = {"device": device, "dtype": dtype}
        self.inter = SparseLinear(counts.sensory, counts.inter, masks.inter, **kw)
        if cell == "cfc":
            self.command: NCPLiquidCell | LTCCell = NCPLiquidCell(
                counts.inter, counts.command, masks.command, recurrent_mask=masks.recurrent,
                mode=mode, sign_constrained=sign_constrained,
                self_synapse_init=self_synapse_init, **kw)
        else:
            self.command = LTCCell(counts.inter, counts.command, masks.command,
                                   recurrent_mask=masks.recurrent, ode_unfolds=ode_unfolds, **kw)
        self.mixed_memory = bool(mixed_memory)
        if self.mixed_memory:
            self.command = MixedMemoryCell(self.command)
        self.motor = SparseLinear(counts.command, counts.motor, masks.motor, **kw)
        self._register_wiring_seed(device)

    @property
    def liquid_cell(self) -> NCPLiquidCell | LTCCell:
        """The CfC or LTC cell of the command layer (``command`` wraps it with
        ``mixed_memory``)."""
        return self.command.cell if self.mixed_memory else self.command

    @property
    def hidden_size(self) -> int:
        """Size of the recurrent state: the command neurons (twice that with
        ``mixed_memory``: ``[h, c]``)."""
        return self.command.n_hidden

    @property
    def n_parameters(self) -> int:
        """Trainable parameters (masked-out weights included)."""
        return _parameter_count(self)

    def initial_state(self, batch_size: int) -> torch.Tensor:
        """A zero state ``(batch_size, hidden_size)`` on the network's device and dtype."""
        return self.inter.weight.new_zeros(batch_size, self.hidden_size)

    @_quiet_when_tracing
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
                and not torch.is_grad_enabled() and type(self.command) is NCPLiquidCell
                and self.command.mode != "pure" and not torch.jit.is_tracing()):
            return self._inference_step(x, h)
        u = self._act(self.inter(x))
        states, h_new = self.command(u, h, dt, episode_start)
        return self.motor(self.motor_input(states)), (states if return_states else h_new)

    def motor_input(self, states: torch.Tensor) -> torch.Tensor:
        """The liquid cell's part of states ``(..., hidden_size)`` (all of it unless
        ``mixed_memory``): what the motor layer reads."""
        return states[..., :self.wiring.counts.command] if self.mixed_memory else states

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
        h_new = cmd.activate(a, None, h)
        return torch.addmm(motor.bias, h_new, motor.masked_weight().t()), h_new

    def get_config(self) -> dict:
        """Constructor arguments (JSON-serialisable) that rebuild this architecture."""
        cmd = self.liquid_cell
        config = {
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
        if self.wiring.dense_recurrence:  # only when set: older configs stay as they were
            config["dense_recurrence"] = True
        if self.mixed_memory:
            config["mixed_memory"] = True
        if getattr(cmd, "self_synapse_init", None) is not None:
            config["self_synapse_init"] = cmd.self_synapse_init
        return config


class NCPNetwork(_WiredNetwork):
    """Feed-forward NCP (no recurrence): sparse inter -> command -> motor layers with an
    activation between them; ``forward(x) -> y`` for ``x`` of shape ``(B, F)`` or
    ``(B, L, F)``. Used for critics, where a sparse MLP is enough.

    Like :class:`LiquidNCPNetwork`, ``load_state_dict`` adopts the saved wiring
    (``wiring_seed`` in the state dict) or refuses masks that do not match it."""

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
        self._register_wiring_seed(device)

    @property
    def n_parameters(self) -> int:
        return _parameter_count(self)

    @_quiet_when_tracing
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
