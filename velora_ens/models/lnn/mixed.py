"""Mixed memory: an LSTM memory cell beside a liquid cell (the CfC paper's remedy for
long-term dependencies, ncps's ``mixed_memory=True``).

A liquid cell rewrites its whole state every step (CfC: ``h' = ff1 (1 - g) + g ff2``,
both heads ``tanh(W [x, h])``), so what it remembers has to pass through a squashing
nonlinearity at each step and fades within a few steps. The mixed-memory cell keeps an
LSTM's cell state ``c`` beside the liquid state ``h``; at each step

    h_lstm, c' = LSTMCell(x, (h, c))      # gated: c' = f c + i g, the forget gate near 1
    h'         = liquid_cell(x, h_lstm)   # the liquid cell starts from the LSTM's output

as in ncps (``ncps.torch.CfC``/``LTC`` with ``mixed_memory=True``, arXiv 2006.04418).
Unlike ncps, the state is one tensor ``[h, c]`` of width ``2 H`` (so agents that store
one state tensor per step store this one unchanged), and the forget gate's bias starts at
``forget_bias`` (ncps: 1).

Example::

    >>> import torch
    >>> from velora_ens.models.lnn import NCPLiquidCell
    >>> cell = MixedMemoryCell(NCPLiquidCell(4, 8))
    >>> y, h = cell(torch.randn(2, 5, 4))   # y: every step's [h, c]; h: the last one
    >>> tuple(y.shape), tuple(h.shape)      # the liquid state is y[..., :8]
    ((2, 5, 16), (2, 16))
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from velora_ens._validation import check_number
from velora_ens.models.lnn.cell import NCPLiquidCell
from velora_ens.models.lnn.inputs import cell_inputs
from velora_ens.models.lnn.loop import Step, unroll
from velora_ens.models.lnn.mixed_scan import mixed_scan

__all__ = ["MixedMemoryCell"]


class MixedMemoryCell(nn.Module):
    """A liquid cell (CfC or LTC: anything with ``in_features``, ``n_hidden`` and a
    ``drive(x)`` and a ``stepper()``) with an LSTM memory cell beside it; see the module
    docstring.

    ``forward(x, h=None, dt=None, episode_start=None) -> (y, h_new)``: ``x`` is one step
    ``(B, F)`` or a sequence ``(B, L, F)``; ``h`` is ``[h, c]``, ``(B, 2 H)``. ``y`` is
    every step's **full** state ``(B, L, 2 H)`` (``(B, 2 H)`` for one step; the liquid
    part is ``y[..., :H]``), ``h_new`` the last one. An episode start zeroes both parts.
    """

    def __init__(self, cell: nn.Module, *, forget_bias: float = 1.0) -> None:
        super().__init__()
        if getattr(cell, "mode", None) == "carry":
            raise ValueError("mixed memory takes a CfC cell in mode 'default', 'no_gate' or "
                             "'pure', got mode 'carry' (which carries its state itself)")
        self.cell = cell
        self.in_features = int(cell.in_features)
        self.liquid_size = int(cell.n_hidden)
        self.n_hidden = 2 * self.liquid_size
        like = next(cell.parameters())
        self.lstm = nn.LSTMCell(self.in_features, self.liquid_size, device=like.device,
                                dtype=like.dtype)
        self.forget_bias = check_number("forget_bias", forget_bias, -10.0, 10.0)
        self.fused = True  # CfC sequences use the fused scan (velora_ens.models.lnn.mixed_scan)
        self.reset_lstm_parameters()

    def reset_lstm_parameters(self) -> None:
        """torch's LSTM init, then the forget gate's bias at ``forget_bias`` (torch orders
        the gates input, forget, cell, output; its two bias vectors add up)."""
        self.lstm.reset_parameters()
        with torch.no_grad():
            H = self.liquid_size
            self.lstm.bias_ih[H: 2 * H].fill_(self.forget_bias)
            self.lstm.bias_hh[H: 2 * H].zero_()

    def drive(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The per-step inputs of :meth:`stepper` (the LSTM's input part of its gates,
        then the liquid cell's drive) for any number of steps at once."""
        lstm = self.lstm
        return (F.linear(x, lstm.weight_ih, lstm.bias_ih + lstm.bias_hh),
                *self.cell.drive(x))

    def stepper(self) -> Step:
        """``step(drive_t, [h, c], dt_t) -> [h', c']``: torch's LSTM cell maths (gates in
        torch's order: input, forget, cell, output), then the liquid cell's step from the
        LSTM's output."""
        w_hh, liquid_step, H = self.lstm.weight_hh.t(), self.cell.stepper(), self.liquid_size

        def step(drive: tuple[torch.Tensor, ...], state: torch.Tensor,
                 dt: torch.Tensor | None) -> torch.Tensor:
            h, c = state.split(H, dim=-1)
            gates = torch.addmm(drive[0], h, w_hh)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_lstm = torch.sigmoid(o) * torch.tanh(c)
            return torch.cat([liquid_step(drive[1:], h_lstm, dt), c], dim=-1)

        return step

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

        Sequences of a CfC cell in ``default``/``no_gate`` mode run the fused scan
        (:func:`~velora_ens.models.lnn.mixed_scan.mixed_scan`), with the plain loop where
        it cannot serve; ``fused=False`` (or ``cell.fused = False``) forces the
        step-by-step autograd loop, the reference the scan is tested against.
        """
        fused = self.fused if fused is None else fused
        x, h, dt, keep, steps = cell_inputs(self, x, h, dt, episode_start,
                                            self.lstm.weight_ih)
        if (steps is not None and fused and isinstance(self.cell, NCPLiquidCell)
                and self.cell.mode != "pure" and not torch.jit.is_tracing()
                and not (dt is not None and dt.requires_grad)):
            x_tm = x.transpose(0, 1)
            ul, u = (d.contiguous() for d in self.drive(x_tm))
            out = mixed_scan(ul, self.lstm.weight_hh.t(), u,
                             self.cell.effective_recurrent_weight().t(), h,
                             None if dt is None else dt.transpose(0, 1),
                             None if keep is None else keep.transpose(0, 1), self.cell.mode)
            return out.transpose(0, 1), out[-1]
        return unroll(self.stepper(), self.drive(x), h, dt, keep,
                      time_dim=None if steps is None else 1)

    def extra_repr(self) -> str:
        return f"liquid_size={self.liquid_size}, forget_bias={self.forget_bias}"
