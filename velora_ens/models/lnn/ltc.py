"""Liquid time-constant (LTC) cell: the ODE form, solved by fused semi-implicit Euler.

Follows the update of ncps' ``LTCCell`` (velora_ncps.md section 2.3), with the wiring's
masks and polarities: each synapse's reversal potential starts at its polarity
(``+1`` excitatory, ``-1`` inhibitory) and is learned. Positive quantities
(conductances ``w``, capacitance ``cm``, leak ``gleak``) are kept positive with a
softplus by default (``implicit_constraints=True``); their raw values are initialised
so that the *effective* values start in ncps' ranges.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from velora_ens._validation import check_int
from velora_ens.models.lnn.inputs import cell_inputs
from velora_ens.models.lnn.loop import Step, unroll
from velora_ens.models.lnn.sparse import as_mask

__all__ = ["LTCCell"]


def _inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


class LTCCell(nn.Module):
    """LTC neurons ``n_hidden`` driven by ``in_features`` sensory inputs.

    With membrane potential ``v``, sensory input ``x`` (affine-mapped per feature) and
    ``K = ode_unfolds`` sub-steps of size ``dt / K``::

        s_ij  = w+_ij * sigmoid(sigma_ij * (x_i - mu_ij)) * |S_ij|       (sensory synapses)
        a_ij  = w+_ij * sigmoid(sigma_ij * (v_i - mu_ij)) * |R_ij|       (recurrent synapses)
        v_j  <- (cm_j/(dt/K) * v_j + gleak_j * vleak_j + sum_i a_ij erev_ij + sum_i s_ij serev_ij)
                / (cm_j/(dt/K) + gleak_j + sum_i a_ij + sum_i s_ij + eps)

    ``mask`` ``(in_features, n_hidden)`` and ``recurrent_mask`` ``(n_hidden, n_hidden)``
    are signed wiring masks; ``None`` means fully connected with random polarities.
    ``forward`` has the same contract as :class:`~velora_ens.models.lnn.cell.NCPLiquidCell`.
    """

    def __init__(
        self,
        in_features: int,
        n_hidden: int,
        mask: torch.Tensor | np.ndarray | None = None,
        *,
        recurrent_mask: torch.Tensor | np.ndarray | None = None,
        ode_unfolds: int = 6,
        epsilon: float = 1e-8,
        implicit_constraints: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, 1)
        self.n_hidden = check_int("n_hidden", n_hidden, 1)
        self.ode_unfolds = check_int("ode_unfolds", ode_unfolds, 1)
        self.epsilon = float(epsilon)
        self.implicit_constraints = bool(implicit_constraints)
        n_in, hid = self.in_features, self.n_hidden

        def signed_or_random(m, shape, name):
            if m is not None:
                return as_mask(m, shape, name)
            return torch.where(torch.rand(shape) < 0.5, -1.0, 1.0)

        sensory = signed_or_random(mask, (n_in, hid), "mask")
        recurrent = signed_or_random(recurrent_mask, (hid, hid), "recurrent_mask")
        kw = {"device": device, "dtype": dtype}
        self.register_buffer("sensory_mask", sensory.abs().to(**kw))
        self.register_buffer("recurrent_mask", recurrent.abs().to(**kw))

        def param(shape, low, high, positive=False):
            value = torch.empty(shape, **kw).uniform_(low, high)
            if positive and self.implicit_constraints:
                value = _inverse_softplus(value)
            return nn.Parameter(value)

        self.gleak = param((hid,), 0.001, 1.0, positive=True)
        self.vleak = param((hid,), -0.2, 0.2)
        self.cm = param((hid,), 0.4, 0.6, positive=True)
        self.w = param((hid, hid), 0.001, 1.0, positive=True)
        self.sigma = param((hid, hid), 3.0, 8.0)
        self.mu = param((hid, hid), 0.3, 0.8)
        self.erev = nn.Parameter(recurrent.to(**kw).clone())
        self.sensory_w = param((n_in, hid), 0.001, 1.0, positive=True)
        self.sensory_sigma = param((n_in, hid), 3.0, 8.0)
        self.sensory_mu = param((n_in, hid), 0.3, 0.8)
        self.sensory_erev = nn.Parameter(sensory.to(**kw).clone())
        self.input_w = nn.Parameter(torch.ones(n_in, **kw))
        self.input_b = nn.Parameter(torch.zeros(n_in, **kw))

    def _positive(self, p: torch.Tensor) -> torch.Tensor:
        return F.softplus(p) if self.implicit_constraints else p

    @torch.no_grad()
    def apply_weight_constraints(self) -> None:
        """Clip positive parameters at zero; needed only with ``implicit_constraints=False``."""
        if not self.implicit_constraints:
            for p in (self.w, self.sensory_w, self.cm, self.gleak):
                p.clamp_(min=0.0)

    def sensory_drive(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Numerator and denominator contributions of the sensory synapses, ``(..., H)``."""
        xi = x * self.input_w + self.input_b
        act = torch.sigmoid(self.sensory_sigma * (xi.unsqueeze(-1) - self.sensory_mu))
        act = self._positive(self.sensory_w) * act * self.sensory_mask
        return (act * self.sensory_erev).sum(-2), act.sum(-2)

    def step(
        self,
        num_s: torch.Tensor,
        den_s: torch.Tensor,
        v: torch.Tensor,
        dt: torch.Tensor | None,
    ) -> torch.Tensor:
        """One elapsed-time step: ``K`` semi-implicit Euler unfolds."""
        # ncps' update v <- (cm/h v + N) / (cm/h + D + eps), h = dt/K, multiplied through
        # by h so that dt = 0 is well defined (the state does not move).
        cm = self._positive(self.cm)
        sub = 1.0 / self.ode_unfolds if dt is None else dt / self.ode_unfolds
        gleak = self._positive(self.gleak)
        w = self._positive(self.w) * self.recurrent_mask
        w_erev = w * self.erev
        leak = gleak * self.vleak + num_s
        rest = gleak + den_s + self.epsilon
        for _ in range(self.ode_unfolds):
            act = torch.sigmoid(self.sigma * (v.unsqueeze(-1) - self.mu))
            num = cm * v + sub * (leak + (act * w_erev).sum(-2))
            den = cm + sub * (rest + (act * w).sum(-2))
            v = num / den
        return v

    def drive(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The per-step inputs of :meth:`stepper` for any number of steps at once."""
        return self.sensory_drive(x)

    def stepper(self) -> Step:
        """``step(drive_t, h, dt_t) -> h_new``, for cells that drive this one step by
        step (mixed memory); no checks."""
        return lambda drive, v, dt: self.step(drive[0], drive[1], v, dt)

    def forward(
        self,
        x: torch.Tensor,
        h: torch.Tensor | None = None,
        dt: torch.Tensor | float | None = None,
        episode_start: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step ``(B, F)`` or a sequence ``(B, L, F)``; returns ``(y, h_new)``."""
        x, v, dt, keep, steps = cell_inputs(self, x, h, dt, episode_start, self.vleak)

        def one_step(drive: tuple[torch.Tensor, ...], state: torch.Tensor,
                     dt_step: torch.Tensor | None) -> torch.Tensor:
            return self.step(drive[0], drive[1], state, dt_step)

        return unroll(one_step, self.sensory_drive(x), v, dt, keep,
                      time_dim=None if steps is None else 1)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, n_hidden={self.n_hidden}, "
                f"ode_unfolds={self.ode_unfolds}, implicit_constraints={self.implicit_constraints}")
