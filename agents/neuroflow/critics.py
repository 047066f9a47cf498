"""N critics evaluated in one batched call.

Every member is an MLP (or a sparse NCP-wired MLP) with its own weights; the weights
of all members are stacked as ``(N, in, out)`` tensors and applied with one ``baddbmm``
per layer, so two critics (or ten, for REDQ-style heads) cost one call, not N.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from velora_ens.wiring import Wiring

__all__ = ["CriticEnsemble", "StackedMLP", "stacked_mlp_input_gradient"]


def _stacked_mlp(x: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Every layer's input and the output of the stacked MLP ``params = (w0, b0, w1, b1,
    ...)`` (weights ``(N, in, out)``, biases ``(N, 1, out)``) on ``x`` ``(N, B, in)``."""
    acts = [x]
    last = len(params) // 2 - 1
    for k in range(last + 1):
        x = torch.baddbmm(params[2 * k + 1], x, params[2 * k])
        if k < last:
            x = F.relu(x, inplace=True)
        acts.append(x)
    return acts


class StackedMLP(torch.autograd.Function):
    """``StackedMLP.apply(x, w0, b0, w1, b1, ...)``: the critics' ReLU MLP with a
    hand-written backward pass.

    It runs the operations autograd would run for the same layers (so the gradients are
    the same, bit for bit, as the tests check) without a graph node per operation, and
    computes the input gradient of a one-output last layer, an outer product, as one
    multiplication: ``bmm`` with an inner size of 1 gives the same exact products but is
    several times slower. Gradients are computed only for the inputs that need them.
    """

    @staticmethod
    def forward(ctx, x, *params):  # type: ignore[override]
        acts = _stacked_mlp(x, params)
        ctx.save_for_backward(*acts[:-1], *params[0::2])
        return acts[-1]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        saved = ctx.saved_tensors
        n_layers = len(saved) // 2
        inputs, weights = saved[:n_layers], saved[n_layers:]
        needs = ctx.needs_input_grad
        grads: list[torch.Tensor | None] = [None] * (2 * n_layers + 1)
        for k in range(n_layers - 1, -1, -1):
            if k < n_layers - 1:  # ReLU after layer k; its output is layer k+1's input
                grad = torch.ops.aten.threshold_backward(grad, inputs[k + 1], 0)
            if needs[2 + 2 * k]:  # bias (N, 1, out), broadcast over the batch
                grads[2 + 2 * k] = grad.sum(1, keepdim=True)
            if needs[1 + 2 * k]:
                grads[1 + 2 * k] = torch.bmm(inputs[k].transpose(1, 2), grad)
            if k == 0 and not needs[0]:
                break
            grad = _through_weights(grad, weights[k])
        if needs[0]:
            grads[0] = grad
        return tuple(grads)


def _through_weights(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A layer's output gradient ``(N, B, out)`` carried to its input through the
    weights ``(N, in, out)``; a one-output layer's is an outer product, one
    multiplication (``bmm`` with an inner size of 1 is several times slower)."""
    w_t = weight.transpose(1, 2)
    return grad * w_t if grad.shape[-1] == 1 else torch.bmm(grad, w_t)


def stacked_mlp_input_gradient(acts: Sequence[torch.Tensor], weights: Sequence[torch.Tensor],
                               grad: torch.Tensor) -> torch.Tensor:
    """The gradient ``(N, B, in)`` reaching the input of a stacked MLP from a gradient
    ``grad`` ``(N, B, out)`` at its output, given the layers' inputs ``acts`` (all but
    the last of :func:`_stacked_mlp`'s list) and weights: the input part of
    :class:`StackedMLP`'s backward, with no autograd graph (OAC needs it at every
    step)."""
    for k in range(len(weights) - 1, -1, -1):
        if k < len(weights) - 1:
            grad = torch.ops.aten.threshold_backward(grad, acts[k + 1], 0)
        grad = _through_weights(grad, weights[k])
    return grad


class CriticEnsemble(nn.Module):
    """``n_critics`` independent critics ``in_features -> out_features``.

    Args:
        in_features: input size (observation, plus actor state and action where used).
        out_features: 1 for ``Q(s, a)``; the number of actions for discrete ``Q(s, .)``.
        n_critics: ensemble size N.
        hidden: hidden layer widths (MLP); ignored with ``ncp_neurons``.
        ncp_neurons: build NCP-wired critics instead: inter + command neurons of a
            :class:`~velora_ens.wiring.Wiring` per member (member ``i`` uses ``seed + i``).
        seed: wiring seed for NCP critics.

    ``forward(x)`` takes ``(B, in)`` (the same input for every member) or ``(N, B, in)``
    and returns ``(N, B, out)``. Its backward pass is :class:`StackedMLP`'s hand-written
    one, so gradients are first order only (no gradient of a gradient).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n_critics: int = 2,
        hidden: Sequence[int] = (256, 256),
        *,
        ncp_neurons: int | None = None,
        sparsity_level: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(n_critics, bool) or not isinstance(n_critics, int) or n_critics < 1:
            raise ValueError(f"n_critics must be an integer >= 1, got {n_critics!r}")
        self.in_features, self.out_features, self.n_critics = in_features, out_features, n_critics
        if ncp_neurons is None:
            sizes = [in_features, *hidden, out_features]
            masks: list[torch.Tensor | None] = [None] * (len(sizes) - 1)
        else:
            wirings = [Wiring(in_features, ncp_neurons, out_features,
                              sparsity_level=sparsity_level, seed=seed + i)
                       for i in range(n_critics)]
            c = wirings[0].counts
            sizes = [in_features, c.inter, c.command, out_features]
            masks = [torch.stack([getattr(w.masks, name).abs().float() for w in wirings])
                     for name in ("inter", "command", "motor")]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            mask = masks[k]
            fan_in = (mask.sum(1, keepdim=True).clamp_min(1) if mask is not None
                      else torch.full((n_critics, 1, n_out), float(n_in)))
            bound = fan_in.rsqrt()
            w = (torch.rand(n_critics, n_in, n_out) * 2 - 1) * bound
            if mask is not None:
                w = w * mask
                self.register_buffer(f"mask{k}", mask)
            self.weights.append(nn.Parameter(w))
            b_bound = 1.0 / math.sqrt(n_in)
            self.biases.append(nn.Parameter((torch.rand(n_critics, 1, n_out) * 2 - 1) * b_bound))
        self._masked = ncp_neurons is not None

    def forward(self, x: torch.Tensor, *, detach_params: bool = False) -> torch.Tensor:
        """``(N, B, out)``. ``detach_params=True`` lets gradients reach ``x`` only (an
        actor loss needs dQ/da, not the critics' weight gradients, which cost as much)."""
        ok = x.shape[-1] == self.in_features and (
            x.dim() == 2 or (x.dim() == 3 and x.shape[0] == self.n_critics))
        if not ok:
            raise ValueError(f"CriticEnsemble expected input (B, {self.in_features}) or "
                             f"({self.n_critics}, B, {self.in_features}), got {tuple(x.shape)}")
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n_critics, -1, -1)
        params = self.layer_params(detach_params)
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
            return StackedMLP.apply(x, *params)
        return _stacked_mlp(x, params)[-1]

    def layer_params(self, detach: bool = False) -> list[torch.Tensor]:
        """``[w0, b0, w1, b1, ...]`` as the layers apply them (an NCP critic's weights
        masked by its wiring)."""
        params: list[torch.Tensor] = []
        # the lists' own dicts: iterating a ParameterList costs more than a small layer
        layers = zip(self.weights._parameters.values(), self.biases._parameters.values(),
                     strict=True)
        for k, (w, b) in enumerate(layers):
            if detach:
                w, b = w.detach(), b.detach()
            if self._masked:
                w = w * getattr(self, f"mask{k}")
            params += (w, b)
        return params

    def mean_std(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation over the members, each ``(B, out)``."""
        q = self(x)
        std = q.std(0, unbiased=False) if self.n_critics > 1 else torch.zeros_like(q[0])
        return q.mean(0), std
