"""The closed-form continuous-time (CfC) liquid cell with NCP masks on every weight."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from velora_ens._validation import check_int, check_number
from velora_ens.models.lnn.inputs import cell_inputs
from velora_ens.models.lnn.loop import Step, unroll
from velora_ens.models.lnn.scan import cfc_activate, cfc_scan
from velora_ens.models.lnn.sparse import as_mask, sparse_uniform_

__all__ = ["NCPLiquidCell", "CFC_MODES"]

CFC_MODES = ("default", "no_gate", "pure", "carry")


class NCPLiquidCell(nn.Module):
    """Closed-form continuous-time cell (Hasani et al. 2022) with wiring masks.

    With ``z = [x, h]`` and elapsed time ``dt`` (default 1):

    * ``default``: ``ff1 = tanh(W1 z + b1)``, ``ff2 = tanh(W2 z + b2)``,
      ``g = sigmoid((Wa z + ba) * dt + (Wb z + bb))``, ``h' = ff1 * (1 - g) + g * ff2``;
    * ``no_gate``: ``h' = ff1 + g * ff2``;
    * ``carry``: ``h' = h * (1 - g) + g * ff2``: the state itself in place of ``ff1``, so
      that it is carried from step to step through the time gate, as a GRU carries its
      state, instead of being rewritten through ``tanh`` at every step (which forgets
      within a few steps: see the memory benchmark). The ``ff1`` head is unused (its
      masks are zero);
    * ``pure``: ``h' = -A * exp(-dt * (|w_tau| + |f|)) * f + A`` with ``f = W1 z + b1``.

    Masks apply to **every** weight matrix (the time gates included):

    * input -> hidden follows ``mask`` (``(in_features, n_hidden)``, as
      :meth:`velora_ens.wiring.Wiring.data` returns it);
    * hidden -> hidden follows ``recurrent_mask`` (``(n_hidden, n_hidden)``), always
      joined with the self-connections (a neuron sees its own state, like the leak term
      of the ODE). ``None`` means dense recurrence, as in ncps' ``CfCCell``.

    ``self_synapse_init=a`` starts each neuron's synapse onto itself in the ``ff1``/``ff2``
    heads (``pure``: its one head) at ``a`` instead of the uniform draw, so that at the
    start the state carries itself into the next step (the CfC state is rewritten through
    ``tanh`` at every step, and a small random self-weight forgets within a few steps; see
    the memory benchmark, where ``a = 0.5`` with dense recurrence remembers 8 steps back).

    Synapse polarity is ignored unless ``sign_constrained=True``, in which case the input
    weights of the ``ff1``/``ff2`` heads have the sign of their synapse (excitatory
    ``+1``, inhibitory ``-1``) and learn only their magnitude.

    ``forward(x, h=None, dt=None, episode_start=None) -> (y, h_new)`` takes one step
    ``x: (B, in_features)`` or a sequence ``x: (B, L, in_features)`` (then ``y`` is every
    step's state ``(B, L, n_hidden)`` and ``h_new`` the last one). ``y`` is the new state:
    the next layer reads it.
    """

    def __init__(
        self,
        in_features: int,
        n_hidden: int,
        mask: torch.Tensor | np.ndarray | None = None,
        *,
        recurrent_mask: torch.Tensor | np.ndarray | None = None,
        mode: str = "default",
        sign_constrained: bool = False,
        self_synapse_init: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if mode not in CFC_MODES:
            raise ValueError(f"mode must be one of {CFC_MODES}, got {mode!r}")
        self.self_synapse_init = (None if self_synapse_init is None else
                                  check_number("self_synapse_init", self_synapse_init,
                                               -10.0, 10.0))
        self.in_features = check_int("in_features", in_features, 1)
        self.n_hidden = check_int("n_hidden", n_hidden, 1)
        self.mode = mode
        self.sign_constrained = bool(sign_constrained)
        n_in, hid = self.in_features, self.n_hidden
        heads = 1 if mode == "pure" else 4
        self.n_heads = heads

        signed = as_mask(mask, (n_in, hid)) if mask is not None else torch.ones(n_in, hid)
        rec = (as_mask(recurrent_mask, (hid, hid), "recurrent_mask").abs()
               if recurrent_mask is not None else torch.ones(hid, hid))
        rec = torch.clamp(rec + torch.eye(hid), max=1.0)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.register_buffer("input_mask", signed.abs().t().repeat(heads, 1).to(**factory))
        self.register_buffer("recurrent_mask", rec.t().repeat(heads, 1).to(**factory))
        if mode == "carry":  # no ff1 head: the state takes its place
            self.input_mask[:hid] = 0.0
            self.recurrent_mask[:hid] = 0.0
        # Sign of each input weight for the sign-constrained heads (ff1, ff2), 0 elsewhere.
        sign = torch.zeros(heads * hid, n_in)
        if self.sign_constrained:
            sign[: min(heads, 2) * hid] = signed.t().repeat(min(heads, 2), 1)
        self.register_buffer("input_sign", sign.to(**factory))

        self.input_weight = nn.Parameter(torch.empty(heads * hid, n_in, **factory))
        self.recurrent_weight = nn.Parameter(torch.empty(heads * hid, hid, **factory))
        self.bias = nn.Parameter(torch.empty(heads * hid, **factory))
        if mode == "pure":
            self.w_tau = nn.Parameter(torch.zeros(hid, **factory))
            self.A = nn.Parameter(torch.ones(hid, **factory))
        self.fused = True  # sequences use the fused scan (see velora_ens.models.lnn.scan)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform init scaled by each neuron's real fan-in over ``[x, h]``; zero bias."""
        joint = torch.cat([self.input_weight, self.recurrent_weight], dim=1).detach()
        sparse_uniform_(joint, torch.cat([self.input_mask, self.recurrent_mask], dim=1))
        with torch.no_grad():
            self.input_weight.copy_(joint[:, : self.in_features])
            self.recurrent_weight.copy_(joint[:, self.in_features :])
            if self.sign_constrained:
                constrained = self.input_sign != 0
                self.input_weight[constrained] = self.input_weight[constrained].abs()
            self.bias.zero_()
            if self.self_synapse_init is not None:
                hid = self.n_hidden
                for head in range(min(self.n_heads, 2)):  # ff1, ff2 (pure: its one head)
                    self.recurrent_weight[head * hid:(head + 1) * hid].diagonal().fill_(
                        self.self_synapse_init)
            if self.mode == "pure":
                self.w_tau.zero_()
                self.A.fill_(1.0)

    # ---------------------------------------------------------------- weights
    def effective_input_weight(self) -> torch.Tensor:
        """Masked (and sign-constrained) input weight, ``(heads * H, in)``."""
        w = self.input_weight
        if self.sign_constrained:
            w = torch.where(self.input_sign != 0, w.abs() * self.input_sign, w)
        return w * self.input_mask

    def effective_recurrent_weight(self) -> torch.Tensor:
        """Masked recurrent weight, ``(heads * H, H)``."""
        return self.recurrent_weight * self.recurrent_mask

    def project_input(self, x: torch.Tensor) -> torch.Tensor:
        """Input part of every head plus bias, ``(..., heads * H)``; one matmul for all steps."""
        return torch.nn.functional.linear(x, self.effective_input_weight(), self.bias)

    # ---------------------------------------------------------------- maths
    def step(
        self,
        u: torch.Tensor,
        h: torch.Tensor,
        w_hh: torch.Tensor,
        dt: torch.Tensor | None,
    ) -> torch.Tensor:
        """One step from a projected input ``u`` (``project_input``) and the state ``h``.

        ``w_hh`` is ``effective_recurrent_weight().t()``. Plain autograd; this is the
        reference the fused sequence path (:mod:`velora_ens.models.lnn.scan`) is tested
        against.
        """
        return self.activate(torch.addmm(u, h, w_hh), dt, h)

    def drive(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The per-step inputs of :meth:`stepper` for any number of steps at once."""
        return (self.project_input(x),)

    def stepper(self) -> Step:
        """``step(drive_t, h, dt_t) -> h_new`` with the weights masked once, for cells that
        drive this one step by step (mixed memory); no checks."""
        w_hh = self.effective_recurrent_weight().t()
        return lambda drive, h, dt: self.step(drive[0], h, w_hh, dt)

    def activate(self, a: torch.Tensor, dt: torch.Tensor | None,
                 h: torch.Tensor | None = None) -> torch.Tensor:
        """New state from the pre-activations ``a = W z + b`` of all heads (``carry``: and
        the state ``h`` the step starts from)."""
        if self.mode == "pure":
            ts = 1.0 if dt is None else dt
            return -self.A * torch.exp(-ts * (self.w_tau.abs() + a.abs())) * a + self.A
        return cfc_activate(a, dt, self.mode, h)

    def forward(
        self,
        x: torch.Tensor,
        h: torch.Tensor | None = None,
        dt: torch.Tensor | float | None = None,
        episode_start: torch.Tensor | None = None,
        *,
        fused: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step ``(B, F)`` or a sequence ``(B, L, F)``; returns ``(y, h_new)``.

        Sequences in ``default``/``no_gate``/``carry`` mode run the fused scan, except where it
        cannot serve (autocast, ``torch.func`` transforms, forward-mode AD, ``torch.compile``,
        ``dt`` requiring gradients, tracing; see :func:`~velora_ens.models.lnn.scan.cfc_scan`):
        there the step-by-step autograd loop runs, with the same maths. ``fused=False`` (or
        the attribute ``cell.fused = False``) forces that loop, the reference the fused scan
        is tested against.
        """
        fused = self.fused if fused is None else fused
        x, h, dt, keep, steps = cell_inputs(self, x, h, dt, episode_start, self.input_weight)
        if steps is None:
            # The projection runs inside the step, after the reset: the order of
            # operations this path has always had.
            def one_step(drive: tuple[torch.Tensor, ...], state: torch.Tensor,
                         dt_step: torch.Tensor | None) -> torch.Tensor:
                return self.step(self.project_input(drive[0]), state,
                                 self.effective_recurrent_weight().t(), dt_step)

            return unroll(one_step, (x,), h, dt, keep)
        # Time-major projection of every step at once.
        w_hh = self.effective_recurrent_weight().t()
        u = self.project_input(x.transpose(0, 1))
        dt_tm = None if dt is None else dt.transpose(0, 1)
        keep_tm = None if keep is None else keep.transpose(0, 1)
        # The fused scan is an autograd.Function with a hand-written backward that reads the
        # resets as Python booleans: a trace cannot record it, so tracing takes the plain loop.
        if (fused and self.mode != "pure" and not torch.jit.is_tracing()
                and not (dt_tm is not None and dt_tm.requires_grad)):
            states = cfc_scan(u.contiguous(), w_hh, h, dt_tm, keep_tm, self.mode)
        else:
            def seq_step(drive: tuple[torch.Tensor, ...], state: torch.Tensor,
                         dt_step: torch.Tensor | None) -> torch.Tensor:
                return self.step(drive[0], state, w_hh, dt_step)

            states, _ = unroll(seq_step, (u,), h, dt_tm, keep_tm, time_dim=0)
        return states.transpose(0, 1), states[-1]

    def extra_repr(self) -> str:
        head = slice(self.n_hidden, 2 * self.n_hidden) if self.mode == "carry" else \
            slice(0, self.n_hidden)  # carry: ff2's synapses (ff1 has none)
        synapses = int(self.input_mask[head].count_nonzero())
        recurrent = int(self.recurrent_mask[head].count_nonzero())
        return (f"in_features={self.in_features}, n_hidden={self.n_hidden}, mode={self.mode!r}, "
                f"input_synapses={synapses}, recurrent_synapses={recurrent}, "
                f"sign_constrained={self.sign_constrained}"
                + ("" if self.self_synapse_init is None
                   else f", self_synapse_init={self.self_synapse_init}"))
