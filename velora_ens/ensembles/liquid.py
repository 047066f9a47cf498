"""Liquid Ensemble: experts delegate their vote to each other; a solver turns the
delegation graph into voting power; the output is the power-weighted mean.

Conventions (``velora_ens`` everywhere): a delegation tensor ``D`` has shape
``(B, N, N)`` and **row i is expert i's delegation vector** ``d_i`` (a probability
vector over the N experts; ``D[b, i, i]`` is how much i keeps). Power ``p`` has shape
``(B, N)``, is non-negative and sums to N per sample (all ones = plain averaging).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from velora_ens.ensembles._delegation import auxiliary_loss as _auxiliary_loss
from velora_ens.ensembles._delegation import one_sink_combine, one_sink_power
from velora_ens.ensembles._inputs import as_batch, as_head_input, first_floating
from velora_ens.ensembles._liquid_checks import check_delegations, check_outputs
from velora_ens.ensembles._stacking import ExpertStack
from velora_ens.ensembles._vectorised import softmax
from velora_ens.ensembles.prediction import Prediction, categorical_entropy

__all__ = [
    "DelegatingMLPExperts",
    "LiquidEnsembleLayer",
    "check_delegations",
    "solve_delegation_many_sinks",
    "solve_delegation_one_sink",
]


def _eye_like(D: torch.Tensor) -> torch.Tensor:
    return torch.eye(D.shape[-1], dtype=D.dtype, device=D.device).expand_as(D)


def solve_delegation_one_sink(
    D: torch.Tensor, epsilon: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor]:
    """Power from delegations with a single absorbing sink (closed form).

    Every expert passes a fraction ``epsilon`` of the flow through it to one sink and
    ``(1 - epsilon)`` along its delegation vector; what an expert delegates to itself it
    keeps. The flow ``x`` through the experts solves ``x_j = 1 + (1 - eps) sum_{i != j}
    D_ij x_i`` (one batched LU factorisation and solve); expert i keeps
    ``(1 - eps) D_ii x_i`` and the sink's mass ``eps sum_i x_i`` is returned uniformly, so
    the power sums to N exactly. Same result as the reference's (N+1)-node pseudo-inverse.
    The gradient is hand-written (first order; see ``_delegation.py``).

    Args:
        D: delegations ``(B, N, N)``, rows = delegation vectors.
        epsilon: leak to the sink, in ``(0, 1)``.

    Returns:
        ``(power (B, N), D)``.
    """
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon!r}")
    return one_sink_power(D, float(epsilon)), D


def solve_delegation_many_sinks(
    D: torch.Tensor,
    epsilon: float = 0.01,
    long_delegation_penalty: float = 0.9,
    threshold: float = 0.05,
    *,
    method: str = "iterative",
    max_iterations: int = 1000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Power from delegations with one sink per expert.

    Expert i sends ``D_ii + epsilon`` of the mass it holds to its own sink and
    ``D_ij`` to expert j; every hop is damped by ``long_delegation_penalty`` (lambda),
    so long delegation chains are penalised geometrically, and mass caught in a cycle
    decays instead of being handed back to everyone. The power is the accumulated sink
    mass, rescaled to sum to N.

    ``method="iterative"`` (default) is the reference's diffusion: starting from one vote
    per expert, ``acc += p_t; p_{t+1} = lambda E^T p_t`` until ``p`` changes by at most
    ``threshold`` (per sample: a sample that has converged stops accumulating, so a
    sample's power does not depend on the rest of the batch), at most ``max_iterations``
    steps. ``method="closed_form"`` is the limit ``threshold -> 0``: with ``r`` solving
    ``(I - lambda D_off^T) r = 1``, ``power = N c r / sum(c r)``, ``c = diag(D) + eps``.

    Returns:
        ``(power (B, N), D)``.
    """
    if epsilon < 0.0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
    lam = float(long_delegation_penalty)
    if not 0.0 < lam * (1.0 + epsilon) < 1.0:
        raise ValueError(f"long_delegation_penalty * (1 + epsilon) must be in (0, 1) for the "
                         f"diffusion to converge, got {lam!r} * (1 + {epsilon!r})")
    n = D.shape[-1]
    eye = _eye_like(D)
    off_t = (D * (1.0 - eye)).transpose(-1, -2)  # [j, i] = flow i -> j
    to_sink = torch.diagonal(D, dim1=-2, dim2=-1) + epsilon  # (B, N)
    if method == "closed_form":
        ones = D.new_ones(D.shape[:-1] + (1,))
        r = torch.linalg.solve(eye - lam * off_t, ones).squeeze(-1)
        sink = to_sink * r
    elif method == "iterative":
        if threshold <= 0.0:
            raise ValueError(f"threshold must be > 0, got {threshold!r}")
        real = D.new_ones(D.shape[:-1])  # mass held by the experts
        sink_now = torch.zeros_like(real)  # mass held by the sinks
        sink = torch.zeros_like(real)  # accumulated sink mass
        active = torch.ones(D.shape[0], 1, dtype=D.dtype, device=D.device)
        for _ in range(max_iterations):
            sink = sink + active * sink_now
            real_next = lam * (off_t @ real.unsqueeze(-1)).squeeze(-1)
            sink_next = lam * (to_sink * real + sink_now)
            # torch.allclose(p_next, p, atol=threshold) per sample, over all 2N nodes.
            done = ((real_next - real).abs() <= threshold + 1e-5 * real.abs()).all(-1) & (
                (sink_next - sink_now).abs() <= threshold + 1e-5 * sink_now.abs()).all(-1)
            active = active * (~done).unsqueeze(-1).to(D.dtype)
            real, sink_now = real_next, sink_next
            if not bool(active.any()):
                break
    else:
        raise ValueError(f"method must be 'iterative' or 'closed_form', got {method!r}")
    power = n * sink / sink.sum(-1, keepdim=True)
    return power, D


class DelegatingMLPExperts(nn.Module):
    """N MLP experts evaluated in one batched call, each with a prediction head and a
    softmax delegation head (the reference's ``DelegatingFC``, vectorised).

    ``forward(x) -> (ys (B, N, out_features), D (B, N, N))``; pass it to
    :class:`LiquidEnsembleLayer` instead of a list of experts. ``x`` is ``(B, in)`` (numpy
    and other float dtypes are converted; every expert sees the batch); put any feature
    extractor in front (see :class:`velora_ens.ensembles.WithFeatures`).
    """

    def __init__(self, in_features: int, out_features: int, num_experts: int,
                 hidden: int = 64, depth: int = 1, delegation_hidden: int | None = None,
                 activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        from velora_ens._validation import check_int
        from velora_ens.ensembles._vectorised import MemberLinear

        self.in_features = check_int("in_features", in_features, 1)
        self.num_experts = check_int("num_experts", num_experts, 1)
        self.out_features = check_int("out_features", out_features, 1)
        depth = check_int("depth", depth, 1)
        dh = hidden if delegation_hidden is None else delegation_hidden
        body: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            body += [MemberLinear(num_experts, width, hidden), activation()]
            width = hidden
        self.body = nn.Sequential(*body)
        self.y_head = MemberLinear(num_experts, hidden, out_features)
        self.d_head = nn.Sequential(MemberLinear(num_experts, hidden, dh), activation(),
                                    MemberLinear(num_experts, dh, num_experts))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = as_head_input(x, "DelegatingMLPExperts", ("B", self.in_features),
                          first_floating(self))
        h = self.body(x)  # (N, B, hidden)
        ys = self.y_head(h).transpose(0, 1)  # (B, N, out)
        D = softmax(self.d_head(h), dim=-1).transpose(0, 1)  # (B, N, N), rows d_i
        return ys, D


class LiquidEnsembleLayer(nn.Module):
    """Liquid Ensemble layer: output ``y = sum_j p_j y_j / N``.

    Args:
        experts: a list of modules, each ``forward(x) -> (y_i (B, ...), d_i (B, N))``
            with ``d_i`` a probability vector over the N experts (predictions of any
            shape: regression, class logits, embeddings); or one module with a
            ``num_experts`` attribute returning the stacked ``(ys (B, N, ...), D (B, N, N))``
            (e.g. :class:`DelegatingMLPExperts`, one batched call for all experts).
        load_distribution_lambda: weight of the load-balancing term of
            :meth:`auxiliary_loss` (rewards an even share of "chair" roles over the batch).
            Default 0.7, with ``specialization_lambda=0.1``: the reference study's
            Optuna-tuned values for protein regression (``protein_best_rmse.json``), so
            that ``loss + w * layer.auxiliary_loss()`` balances load out of the box; pass
            0 and 0 to turn the loss off.
        specialization_lambda: weight of the specialisation term (rewards few experts
            speaking per sample).
        solver: ``"sink_one"`` (closed form) or ``"sink_many"``.
        epsilon: the solvers' leak to the sink(s).
        long_delegation_penalty: ``sink_many``'s damping per hop.
        threshold: ``sink_many``'s stopping threshold (iterative method).
        many_sinks_method: ``"iterative"`` (default) or ``"closed_form"``.
        temperature: softmax temperature of the auxiliary loss's differentiable argmax.
        check: validate the delegations on every call (one device sync); a non-finite
            input, prediction or delegation is reported by name.
        stack_experts: evaluate a list of experts of one structure as one batched call
            (see ``_stacking.py``; :attr:`stacking` says whether it applies,
            :attr:`stacking_reason` why not, :meth:`restack` retries). The experts keep
            their own parameters, so ``state_dict`` keys and optimisers are unchanged.

    After a forward pass, ``last_power`` (live, with its graph), ``last_D`` and ``last_ys``
    hold the solver's input and output for the auxiliary loss and the confidences; a copy
    (``copy.deepcopy``, pickling) holds their values without the graph.
    """

    def __init__(
        self,
        experts: Sequence[nn.Module] | nn.Module,
        load_distribution_lambda: float = 0.7,
        specialization_lambda: float = 0.1,
        solver: str = "sink_one",
        *,
        epsilon: float = 0.01,
        long_delegation_penalty: float = 0.9,
        threshold: float = 0.05,
        many_sinks_method: str = "iterative",
        temperature: float = 0.1,
        check: bool = True,
        stack_experts: bool = True,
    ) -> None:
        super().__init__()
        if solver not in ("sink_one", "sink_many"):
            raise ValueError(f"solver must be 'sink_one' or 'sink_many', got {solver!r}")
        if many_sinks_method not in ("iterative", "closed_form"):
            raise ValueError(f"many_sinks_method must be 'iterative' or 'closed_form', "
                             f"got {many_sinks_method!r}")
        self._stack: ExpertStack | None = None
        self.stacking_reason = "stack_experts=False"
        if isinstance(experts, nn.Module) and hasattr(experts, "num_experts"):
            self.experts: nn.Module = experts
            self.stacked = True
            self.num_experts = int(experts.num_experts)
            self.stacking_reason = "the experts are one module (already batched)"
        else:
            experts = list(experts)
            if not experts or not all(isinstance(e, nn.Module) for e in experts):
                raise ValueError("experts must be a non-empty list of nn.Module (or one module "
                                 "with a num_experts attribute returning stacked outputs)")
            self.experts = nn.ModuleList(experts)
            self.stacked = False
            self.num_experts = len(experts)
            if stack_experts:
                self._stack, self.stacking_reason = ExpertStack.build(experts)
        self.stack_experts = bool(stack_experts)
        self.load_distribution_lambda = float(load_distribution_lambda)
        self.specialization_lambda = float(specialization_lambda)
        self.solver, self.many_sinks_method = solver, many_sinks_method
        self.epsilon, self.threshold = float(epsilon), float(threshold)
        self.long_delegation_penalty = float(long_delegation_penalty)
        self.temperature, self.check = float(temperature), bool(check)
        self.last_power: torch.Tensor | None = None
        self.last_D: torch.Tensor | None = None
        self.last_ys: torch.Tensor | None = None

    solve_delegation_one_sink = staticmethod(solve_delegation_one_sink)
    solve_delegation_many_sinks = staticmethod(solve_delegation_many_sinks)

    @property
    def stacking(self) -> bool:
        """Whether a list of experts is evaluated as one batched call."""
        return self._stack is not None

    def restack(self) -> bool:
        """Try stacking again (e.g. after the experts' settings, which differed, agree
        again: the layer does not retry on its own); returns :attr:`stacking`."""
        if self.stacked or not self.stack_experts:
            return False
        self._stack, self.stacking_reason = ExpertStack.build(list(self.experts))
        return self.stacking

    def __getstate__(self) -> dict:
        """The state for ``copy.deepcopy`` and pickling: the last forward's tensors without
        their graph (a graph cannot be copied), the expert stack rebuilt by the copy."""
        state = self.__dict__.copy()
        state["_stack"] = None  # refers to these experts: rebuilt for a copy or unpickled
        state["_restack"] = self.stacking
        for name in ("last_power", "last_D", "last_ys"):
            if state.get(name) is not None:
                state[name] = state[name].detach()
        return state

    def __setstate__(self, state: dict) -> None:
        restack = state.pop("_restack", False)
        super().__setstate__(state)
        if restack:
            self._stack, self.stacking_reason = ExpertStack.build(list(self.experts))

    # --- forward --------------------------------------------------------------------
    def _stacked_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        stack = self._stack
        if stack is None:
            return None
        if any(a is not b for a, b in zip(stack.experts, self.experts, strict=True)) or (
                not stack.current()):
            # an expert was replaced or changed an attribute the trace may have baked in
            stack, self.stacking_reason = ExpertStack.build(list(self.experts))
            self._stack = stack
            if stack is None:
                return None
        ys, ds = stack(x)  # (N, B, ...), (N, B, N)
        if ds.dim() != 3 or ds.shape[-1] != self.num_experts:
            raise ValueError(f"the experts returned delegations of shape {tuple(ds.shape[1:])}"
                             f", expected (B, {self.num_experts}) (one probability per expert)")
        return ys.transpose(0, 1), ds.transpose(0, 1)

    def _pair(self, out: Any, who: str, expected: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``out`` if it is a pair; else an error naming what ``who`` returned."""
        if isinstance(out, (tuple, list)) and len(out) == 2:
            return out[0], out[1]
        got = (f"a Tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else
               f"a {type(out).__name__} of {len(out)} values" if isinstance(out, (tuple, list))
               else f"a {type(out).__name__}")
        raise ValueError(f"{who} returned {got}; {expected}")

    def _looped_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ys, ds = [], []
        n = self.num_experts
        for i, expert in enumerate(self.experts):
            y, d = self._pair(expert(x), f"expert {i}", "each expert must return (prediction, "
                              f"delegation): (y_i (B, ...), d_i (B, {n}))")
            ys.append(y)
            ds.append(d)
        for i, d in enumerate(ds):
            if d.dim() != 2 or d.shape[-1] != self.num_experts:
                raise ValueError(f"expert {i} returned a delegation of shape "
                                 f"{tuple(d.shape)}, expected (B, {self.num_experts}) (one "
                                 f"probability per expert)")
        return torch.stack(ys, 1), torch.stack(ds, 1)

    def expert_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ys (B, N, ...), D (B, N, N))``, D's row i = expert i's delegation."""
        n = self.num_experts
        x = as_batch(x, "LiquidEnsembleLayer", first_floating(self.experts))
        if self.stacked:
            ys, D = self._pair(self.experts(x), type(self.experts).__name__,
                               f"a module of stacked experts must return (ys (B, {n}, ...), "
                               f"D (B, {n}, {n}))")
        else:
            out = self._stacked_outputs(x)
            ys, D = out if out is not None else self._looped_outputs(x)
        if D.dim() != 3 or D.shape[1] != n or D.shape[2] != n:
            raise ValueError(f"the experts' delegations stack to {tuple(D.shape)}, expected "
                             f"(B, {n}, {n}) (one probability per expert)")
        if ys.dim() < 2 or ys.shape[1] != n or ys.shape[0] != D.shape[0]:
            raise ValueError(f"expert predictions must stack to (B, {n}, ...), got "
                             f"{tuple(ys.shape)} with delegations {tuple(D.shape)}")
        if self.check:
            check_outputs(x, ys, D)
        return ys, D

    def solve(self, D: torch.Tensor) -> torch.Tensor:
        """Power ``(B, N)`` for delegations ``D`` with this layer's solver."""
        if self.solver == "sink_one":
            return solve_delegation_one_sink(D, self.epsilon)[0]
        return solve_delegation_many_sinks(
            D, self.epsilon, self.long_delegation_penalty, self.threshold,
            method=self.many_sinks_method)[0]

    def combine(self, ys: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
        """The power-weighted mean ``sum_j p_j y_j / N`` of ``ys (B, N, ...)``."""
        w = power.reshape(power.shape + (1,) * (ys.dim() - 2)).to(ys.dtype)
        return (w * ys).sum(1) / self.num_experts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ys, D = self.expert_outputs(x)
        if self.solver == "sink_one" and ys.dtype == D.dtype and ys.is_floating_point():
            y, power = one_sink_combine(ys, D, self.epsilon)  # one autograd node
        else:
            power = self.solve(D)
            y = self.combine(ys, power)
        self.last_ys, self.last_D, self.last_power = ys, D, power
        return y

    def predict(self, x: torch.Tensor, task: str = "regression") -> Prediction:
        """A :class:`Prediction` whose members are the experts and whose member weights
        are ``power / N``; ``task="classification"`` treats the predictions as logits.
        The confidences are :meth:`confidences`."""
        ys, D = self.expert_outputs(x)
        power = self.solve(D)
        self.last_ys, self.last_D, self.last_power = ys, D, power
        w = power / self.num_experts
        conf = self.confidences(ys, D, power)
        members = ys.transpose(0, 1)
        if task == "regression":
            return Prediction.from_gaussians(members, weights=w, confidences=conf)
        if task == "classification":
            return Prediction.from_logits(members, weights=w, confidences=conf)
        raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")

    # --- auxiliary loss -------------------------------------------------------------
    def _power(self, power: torch.Tensor | None) -> torch.Tensor:
        p = self.last_power if power is None else power
        if p is None:
            raise RuntimeError("no power yet: call the layer (forward) first or pass power")
        return p

    def power_entropy(self, power: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over the batch of ``H(p_b / N) / log N`` (0 = one expert speaks)."""
        p = self._power(power)
        pi = p / p.sum(-1, keepdim=True)
        return categorical_entropy(pi).mean() / math.log(p.shape[-1])

    def speaker_entropy(self, power: torch.Tensor | None = None,
                        temperature: float | None = None) -> torch.Tensor:
        """Normalised entropy of who holds the most power over the batch (1 = even load).

        ``temperature=None``: the hard ``argmax`` histogram (a diagnostic);
        a temperature: ``softmax(p / T)`` summed over the batch (differentiable)."""
        p = self._power(power)
        n = p.shape[-1]
        if temperature is None:
            counts = torch.bincount(p.argmax(-1), minlength=n).to(p.dtype)
        else:
            counts = torch.softmax(p / temperature, dim=-1).sum(0)
        return categorical_entropy(counts / counts.sum()) / math.log(n)

    def auxiliary_loss(self, power: torch.Tensor | None = None,
                       temperature: float | None = None) -> torch.Tensor:
        """``specialization_lambda * power_entropy - load_distribution_lambda *
        speaker_entropy`` on the **live** power of the last forward pass (or ``power``),
        so its gradient reaches the delegation heads. Add it to the task loss.

        Raises ``RuntimeError`` when gradients are on but the last forward ran without
        them (``torch.no_grad``): the term would be a constant that trains nothing."""
        p = self._power(power)
        if (power is None and torch.is_grad_enabled() and not p.requires_grad
                and any(q.requires_grad for q in self.parameters())):
            raise RuntimeError(
                "auxiliary_loss(): the last forward ran without gradients (under "
                "torch.no_grad() or inference_mode), so this loss would be a constant that "
                "trains nothing; run the forward with gradients enabled before adding it to "
                "a loss (or compute it under torch.no_grad() as a metric)")
        t = self.temperature if temperature is None else float(temperature)
        if p.shape[-1] < 2:
            return p.sum() * 0.0
        if p.dim() == 2:
            return _auxiliary_loss(p, self.specialization_lambda,
                                   self.load_distribution_lambda, t)
        return (self.specialization_lambda * self.power_entropy(p)
                - self.load_distribution_lambda * self.speaker_entropy(p, t))

    # --- confidences (B,), higher = more confident ------------------------------------
    def _last(self, name: str, value: torch.Tensor | None) -> torch.Tensor:
        v = getattr(self, f"last_{name}") if value is None else value
        if v is None:
            raise RuntimeError(f"no {name} yet: call the layer (forward) first or pass it")
        return v

    def confidence_power_entropy(self, power: torch.Tensor | None = None) -> torch.Tensor:
        """``1 - H(p / N) / log N``: 1 when one expert holds all the power."""
        p = self._last("power", power)
        return 1.0 - categorical_entropy(p / p.sum(-1, keepdim=True)) / math.log(p.shape[-1])

    def confidence_delegation_entropy(self, D: torch.Tensor | None = None) -> torch.Tensor:
        """``1 - mean_i H(d_i) / log N``: 1 when every expert delegates decisively."""
        D = self._last("D", D)
        return 1.0 - categorical_entropy(D).mean(-1) / math.log(D.shape[-1])

    def confidence_self_delegation(self, D: torch.Tensor | None = None) -> torch.Tensor:
        """``mean_i D_ii``: how much the experts trust themselves on this sample."""
        D = self._last("D", D)
        return torch.diagonal(D, dim1=-2, dim2=-1).mean(-1)

    def confidence_disagreement(self, ys: torch.Tensor | None = None) -> torch.Tensor:
        """``1 / (mean std_i(y_i) + 1e-6)`` (unbiased std across experts, averaged over the
        prediction's entries): high when the experts agree."""
        ys = self._last("ys", ys)
        std = ys.std(dim=1, unbiased=True) if ys.shape[1] > 1 else torch.zeros_like(ys[:, 0])
        return 1.0 / (std.reshape(std.shape[0], -1).mean(-1) + 1e-6)

    def confidences(self, ys: torch.Tensor | None = None, D: torch.Tensor | None = None,
                    power: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """All four confidence measures of the last forward pass, each ``(B,)``."""
        return {
            "power_entropy": self.confidence_power_entropy(power),
            "delegation_entropy": self.confidence_delegation_entropy(D),
            "self_delegation": self.confidence_self_delegation(D),
            "disagreement": self.confidence_disagreement(ys),
        }

    # reference names
    confidence_D_entropy = confidence_delegation_entropy
    confidence_std = confidence_disagreement

    def extra_repr(self) -> str:
        return (f"num_experts={self.num_experts}, solver={self.solver!r}, "
                f"load_distribution_lambda={self.load_distribution_lambda}, "
                f"specialization_lambda={self.specialization_lambda}")
