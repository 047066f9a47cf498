"""Stochastic mixture of experts: functional surrogates driven by a flat parameter
vector whose entries are random variables (after pypolymix's design).

A *surrogate* (:class:`PolynomialChaosExpansion`, :class:`NeuralNetwork`,
:class:`GatingNetwork`, :class:`MixtureOfExperts`) holds no weights: ``surrogate(x,
params)`` reads them from ``params`` of shape ``(S, P)``, one row per parameter draw,
and returns ``(S, B, out)``. *Parameter groups* own the distribution of consecutive
slices of that vector (:class:`IIDGaussianGroup` sampled by reparameterisation,
:class:`LowRankGaussianGroup`, :class:`DeterministicGroup` = a point estimate);
:class:`StochasticModel` concatenates their samples **in list order** and sums their
``distribution_loss`` (KL to the prior, analytic where possible).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import distributions as td
from torch import nn
from torch.nn import functional as F

from velora_ens._validation import check_int
from velora_ens.ensembles._inputs import as_head_input
from velora_ens.ensembles.prediction import Prediction, categorical_entropy

__all__ = [
    "DeterministicGroup",
    "GatingNetwork",
    "IIDGaussianGroup",
    "IIDGaussianPrior",
    "LowRankGaussianGroup",
    "MixtureOfExperts",
    "NeuralNetwork",
    "ParameterGroup",
    "PolynomialChaosExpansion",
    "StochasticModel",
    "Surrogate",
    "legendre_multi_indices",
]


# --- priors and parameter groups -------------------------------------------------------
class IIDGaussianPrior:
    """``N(mean, std^2)`` independently for every parameter of a group."""

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        if not std > 0:
            raise ValueError(f"std must be > 0, got {std!r}")
        self.mean, self.std = float(mean), float(std)

    def distribution(self, num_params: int, like: torch.Tensor) -> td.Distribution:
        loc = like.new_full((num_params,), self.mean)
        return td.Independent(td.Normal(loc, torch.full_like(loc, self.std)), 1)

    def __repr__(self) -> str:
        return f"IIDGaussianPrior(mean={self.mean}, std={self.std})"


class ParameterGroup(nn.Module):
    """The distribution of ``num_params`` consecutive entries of the parameter vector.

    Subclasses define :meth:`variational_distribution` (or override
    :meth:`sample_parameters`) and :meth:`initialize_`. :meth:`distribution_loss` is
    ``KL(q || prior)``: analytic when torch knows the pair, else a reparameterised Monte
    Carlo estimate over ``kl_num_mc_samples`` draws.
    """

    def __init__(self, name: str, num_params: int, prior: IIDGaussianPrior | None = None,
                 kl_num_mc_samples: int = 64) -> None:
        super().__init__()
        self.name = str(name)
        self.num_params = check_int("num_params", num_params, 1)
        self.prior = IIDGaussianPrior() if prior is None else prior
        self.kl_num_mc_samples = check_int("kl_num_mc_samples", kl_num_mc_samples, 1)

    def _like(self) -> torch.Tensor:
        return next(self.parameters())

    def prior_distribution(self) -> td.Distribution:
        return self.prior.distribution(self.num_params, self._like())

    def variational_distribution(self) -> td.Distribution:
        raise NotImplementedError

    def sample_parameters(self, num_samples: int = 1) -> torch.Tensor:
        """``(num_samples, num_params)`` draws, differentiable in the group's parameters."""
        return self.variational_distribution().rsample((num_samples,))

    def distribution_loss(self) -> torch.Tensor:
        q, p = self.variational_distribution(), self.prior_distribution()
        try:
            return td.kl_divergence(q, p).sum()
        except NotImplementedError:
            z = q.rsample((self.kl_num_mc_samples,))
            return (q.log_prob(z) - p.log_prob(z)).mean()

    def initialize_(self, values: torch.Tensor) -> None:
        """Centre the group on ``values`` ``(num_params,)`` (e.g. a fan-in-scaled init)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_params={self.num_params}"


class IIDGaussianGroup(ParameterGroup):
    """Independent Gaussians ``N(mean_k, exp(log_std_k)^2)``, sampled by
    reparameterisation ``mean + std * eps``. The means start as unit normals (as in
    pypolymix) until :class:`StochasticModel` re-centres them on the surrogate's
    fan-in-scaled initial values; the standard deviations start at ``init_std``."""

    def __init__(self, name: str, num_params: int, prior: IIDGaussianPrior | None = None,
                 *, init_std: float = 0.1, kl_num_mc_samples: int = 64) -> None:
        super().__init__(name, num_params, prior, kl_num_mc_samples)
        if not init_std > 0:
            raise ValueError(f"init_std must be > 0, got {init_std!r}")
        self.mean = nn.Parameter(torch.randn(self.num_params))
        self.log_std = nn.Parameter(torch.full((self.num_params,), math.log(init_std)))

    def variational_distribution(self) -> td.Distribution:
        return td.Independent(td.Normal(self.mean, self.log_std.exp()), 1)

    def sample_parameters(self, num_samples: int = 1) -> torch.Tensor:
        eps = torch.randn(num_samples, self.num_params, dtype=self.mean.dtype,
                          device=self.mean.device)
        return self.mean + self.log_std.exp() * eps

    def initialize_(self, values: torch.Tensor) -> None:
        with torch.no_grad():
            self.mean.copy_(values)


class LowRankGaussianGroup(ParameterGroup):
    """A correlated Gaussian with covariance ``U U^T + diag(softplus(raw) + 1e-6)``,
    ``U`` of shape ``(num_params, rank)``. Its KL to an IID Gaussian prior is analytic
    (matrix determinant lemma), in ``O(P r^2)``."""

    def __init__(self, name: str, num_params: int, rank: int = 2,
                 prior: IIDGaussianPrior | None = None, *, init_std: float = 0.1,
                 kl_num_mc_samples: int = 64) -> None:
        super().__init__(name, num_params, prior, kl_num_mc_samples)
        self.rank = check_int("rank", rank, 1)
        self.mean = nn.Parameter(torch.randn(self.num_params))
        self.cov_factor = nn.Parameter(0.1 * init_std * torch.randn(self.num_params, self.rank))
        # softplus(raw) = init_std^2 - jitter
        self.raw_diag = nn.Parameter(torch.full((self.num_params,),
                                                math.log(math.expm1(init_std ** 2))))

    def _diag(self) -> torch.Tensor:
        return F.softplus(self.raw_diag) + 1e-6

    def variational_distribution(self) -> td.Distribution:
        return td.LowRankMultivariateNormal(self.mean, self.cov_factor, self._diag())

    def distribution_loss(self) -> torch.Tensor:
        if not isinstance(self.prior, IIDGaussianPrior):
            return super().distribution_loss()
        m0, s2 = self.prior.mean, self.prior.std ** 2
        u, d, k = self.cov_factor, self._diag(), self.num_params
        cap = torch.eye(self.rank, dtype=u.dtype, device=u.device) + (u / d[:, None]).t() @ u
        logdet_q = d.log().sum() + torch.linalg.slogdet(cap)[1]
        trace = (d.sum() + u.pow(2).sum()) / s2
        maha = (self.mean - m0).pow(2).sum() / s2
        return 0.5 * (trace + maha - k + k * math.log(s2) - logdet_q)

    def initialize_(self, values: torch.Tensor) -> None:
        with torch.no_grad():
            self.mean.copy_(values)


class DeterministicGroup(ParameterGroup):
    """A point estimate: every draw is the same vector. Its ``distribution_loss`` is
    ``-log prior(params)`` (MAP; an L2 penalty under a Gaussian prior)."""

    def __init__(self, name: str, num_params: int, prior: IIDGaussianPrior | None = None) -> None:
        super().__init__(name, num_params, prior)
        self.params = nn.Parameter(torch.randn(self.num_params))

    def variational_distribution(self) -> td.Distribution:
        raise RuntimeError(f"DeterministicGroup {self.name!r} is a point estimate and has no "
                           "variational distribution")

    def sample_parameters(self, num_samples: int = 1) -> torch.Tensor:
        return self.params.unsqueeze(0).expand(num_samples, -1)

    def distribution_loss(self) -> torch.Tensor:
        return -self.prior_distribution().log_prob(self.params)

    def initialize_(self, values: torch.Tensor) -> None:
        with torch.no_grad():
            self.params.copy_(values)


# --- surrogates ------------------------------------------------------------------------
class Surrogate(nn.Module):
    """A functional model: ``forward(x (B, in), params (S, P)) -> (S, B, out)``."""

    num_inputs: int
    num_outputs: int

    def num_params(self) -> int:
        raise NotImplementedError

    def initial_parameters(self) -> torch.Tensor:
        """A fan-in-scaled starting point ``(P,)`` for the parameter groups' means."""
        raise NotImplementedError

    def structure(self) -> tuple | None:
        """Equal for two surrogates that compute the same function of ``(x, params)``
        (so a :class:`MixtureOfExperts` can evaluate them in one call); ``None``: unknown."""
        return None

    def draw_width(self) -> int:
        """Activations per input and parameter draw in the widest layer (memory use)."""
        return self.num_outputs

    def _check(self, x: Any, params: torch.Tensor) -> torch.Tensor:
        """``x`` as ``(B, num_inputs)`` in ``params``' dtype and device (numpy and other
        float dtypes converted; integers, empty batches and other shapes refused)."""
        if params.dim() != 2 or params.shape[-1] != self.num_params():
            raise ValueError(f"{type(self).__name__} expected params of shape (S, "
                             f"{self.num_params()}), got {tuple(params.shape)}")
        return as_head_input(x, type(self).__name__, ("B", self.num_inputs), params)


def legendre_multi_indices(num_inputs: int, degree: int) -> torch.Tensor:
    """All multi-indices ``alpha`` with ``|alpha| <= degree``, ``(C(d + p, p), d)``,
    ordered by total degree (then lexicographically, first input slowest)."""
    rows = [a for a in itertools.product(range(degree + 1), repeat=num_inputs)
            if sum(a) <= degree]
    rows.sort(key=lambda a: (sum(a), [-v for v in a]))
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), num_inputs)


class PolynomialChaosExpansion(Surrogate):
    """``y_o(x) = sum_k c_{k,o} Psi_k(x)`` with ``Psi_k(x) = prod_j P_{alpha_kj}(x_j)``,
    ``P_n`` the Legendre polynomials (``P_n(1) = 1``; inputs expected in ``[-1, 1]``) and
    ``alpha_k`` every multi-index of total degree ``<= degree``. The parameter vector is
    the coefficient matrix ``(terms, num_outputs)`` in row-major order."""

    def __init__(self, num_inputs: int, num_outputs: int = 1, degree: int = 3) -> None:
        super().__init__()
        self.num_inputs = check_int("num_inputs", num_inputs, 1)
        self.num_outputs = check_int("num_outputs", num_outputs, 1)
        self.degree = check_int("degree", degree, 0)
        self.register_buffer("multi_indices",
                             legendre_multi_indices(self.num_inputs, self.degree),
                             persistent=False)

    @property
    def num_terms(self) -> int:
        return self.multi_indices.shape[0]

    def structure(self) -> tuple:
        return (type(self), self.num_inputs, self.num_outputs, self.degree)

    def num_params(self) -> int:
        return self.num_terms * self.num_outputs

    def initial_parameters(self) -> torch.Tensor:
        bound = 1.0 / math.sqrt(self.num_terms)
        return torch.empty(self.num_params()).uniform_(-bound, bound)

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, terms)``: every basis polynomial at every input."""
        polys = [torch.ones_like(x), x]
        for n in range(1, self.degree):
            polys.append(((2 * n + 1) * x * polys[n] - n * polys[n - 1]) / (n + 1))
        table = torch.stack(polys[: self.degree + 1], dim=-1)  # (B, d, degree + 1)
        idx = self.multi_indices.t().unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, d, K)
        return torch.gather(table, 2, idx).prod(dim=1)

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        x = self._check(x, params)
        coeffs = params.reshape(params.shape[0], self.num_terms, self.num_outputs)
        return torch.einsum("bk,sko->sbo", self.basis(x), coeffs)


class NeuralNetwork(Surrogate):
    """A functional MLP: ``depth`` hidden layers of ``width`` with ``activation``, then a
    linear output. Layout, layer by layer: weight ``(in, out)`` row-major, then bias."""

    def __init__(self, num_inputs: int, num_outputs: int = 1, width: int = 16, depth: int = 1,
                 activation: Callable[[torch.Tensor], torch.Tensor] = F.relu) -> None:
        super().__init__()
        self.num_inputs = check_int("num_inputs", num_inputs, 1)
        self.num_outputs = check_int("num_outputs", num_outputs, 1)
        self.width = check_int("width", width, 1)
        self.depth = check_int("depth", depth, 0)
        self.activation = activation
        sizes = [self.num_inputs] + [self.width] * self.depth + [self.num_outputs]
        self.layer_sizes = list(itertools.pairwise(sizes))

    def num_params(self) -> int:
        return sum(i * o + o for i, o in self.layer_sizes)

    def structure(self) -> tuple:
        return (type(self), tuple(self.layer_sizes), self.activation)

    def draw_width(self) -> int:
        return max(o for _, o in self.layer_sizes)

    def initial_parameters(self) -> torch.Tensor:
        parts = []
        for i, o in self.layer_sizes:
            bound = 1.0 / math.sqrt(i)
            parts.append(torch.empty(i * o + o).uniform_(-bound, bound))
        return torch.cat(parts)

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        x = self._check(x, params)
        s, at = params.shape[0], 0
        h = x.unsqueeze(0).expand(s, -1, -1)
        for k, (i, o) in enumerate(self.layer_sizes):
            w = params[:, at: at + i * o].reshape(s, i, o)
            b = params[:, at + i * o: at + i * o + o].unsqueeze(1)
            at += i * o + o
            h = torch.baddbmm(b, h, w)
            if k < len(self.layer_sizes) - 1:
                h = self.activation(h)
        return h


class GatingNetwork(NeuralNetwork):
    """A :class:`NeuralNetwork` with ``num_experts`` outputs and a softmax over them:
    ``(S, B, num_experts)`` mixing weights."""

    def __init__(self, num_inputs: int, num_experts: int, **kwargs) -> None:
        super().__init__(num_inputs, check_int("num_experts", num_experts, 1), **kwargs)
        self.num_experts = self.num_outputs

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x, params)  # (S, B, E)
        # A softmax along a short last axis runs one small loop per row on a CPU; along
        # the middle axis of an (S, E, B) copy it is one vectorised pass. The copies are
        # E values per row.
        return torch.softmax(logits.transpose(1, 2).contiguous(), dim=1).transpose(1, 2)


class MixtureOfExperts(Surrogate):
    """``y(x) = sum_m g_m(x) f_m(x)``: experts and a gate, all functional. The parameter
    vector is laid out ``[expert 0 | ... | expert E-1 | gate]``.

    Experts of one :meth:`Surrogate.structure` run together:

    * :class:`NeuralNetwork` experts run as **one** network whose layers hold every
      expert side by side: the first layer's weights are ``(in, E * width)`` (every
      expert reads the same input), each later layer is block-diagonal
      ``(E * in, E * out)`` with zeros off the blocks, gathered from the parameter
      vector. One matrix product per layer, E times as wide, is the cheapest form on a
      CPU; the zero blocks cost E times a later layer's multiply-adds, so this is used
      while ``E * in`` of every later layer is at most :attr:`joint_limit`.
    * Otherwise the experts are folded into the draw axis: ``(S, E * P_e)`` parameters
      are read as ``(S * E, P_e)`` (in chunks of experts when the activations would
      exceed :attr:`fold_limit`).

    Experts of different structures run in a loop. All three forms compute the same
    function (tested to rounding).
    """

    def __init__(self, experts: Sequence[Surrogate], gating_network: GatingNetwork) -> None:
        super().__init__()
        experts = list(experts)
        if not experts:
            raise ValueError("MixtureOfExperts needs at least one expert")
        self.experts = nn.ModuleList(experts)
        self.gating_network = gating_network
        self.num_inputs = experts[0].num_inputs
        self.num_outputs = experts[0].num_outputs
        for k, e in enumerate(experts):
            if e.num_inputs != self.num_inputs or e.num_outputs != self.num_outputs:
                raise ValueError(f"expert {k} maps {e.num_inputs} -> {e.num_outputs}, expert 0 "
                                 f"maps {self.num_inputs} -> {self.num_outputs}; all must agree")
        if gating_network.num_inputs != self.num_inputs:
            raise ValueError(f"the gate reads {gating_network.num_inputs} inputs, the experts "
                             f"{self.num_inputs}")
        if gating_network.num_outputs != len(experts):
            raise ValueError(f"the gate weighs {gating_network.num_outputs} experts, but "
                             f"{len(experts)} were given")
        sizes = [e.num_params() for e in experts] + [gating_network.num_params()]
        self.offsets = list(itertools.accumulate([0] + sizes))

    def num_params(self) -> int:
        return self.offsets[-1]

    def initial_parameters(self) -> torch.Tensor:
        return torch.cat([e.initial_parameters() for e in self.experts]
                         + [self.gating_network.initial_parameters()])

    def _slice(self, params: torch.Tensor, k: int) -> torch.Tensor:
        return params[:, self.offsets[k]: self.offsets[k + 1]]

    def batched(self) -> bool:
        """Whether the experts share one structure and run as one call."""
        first = self.experts[0].structure()
        return first is not None and all(e.structure() == first for e in self.experts[1:])

    # Experts folded into one call hold at most this many activations in their widest
    # layer (1 MiB in float32); a bigger call is memory-bound and not faster (and each
    # fresh multi-MB tensor costs page faults with glibc's default allocator).
    fold_limit = 1 << 18

    # Block-diagonal layers of at most this many rows (E * a layer's input width); 0 turns
    # the side-by-side form off.
    joint_limit = 512

    def _joint_layers(self, device: torch.device | str = "cpu"
                      ) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Per layer of the side-by-side network, the indices (on ``device``) of its weight
        ``(rows, cols)`` and bias ``(cols,)`` in the parameter vector padded by one zero
        (index ``num_params()``, the off-diagonal blocks); ``None`` where that form does
        not apply."""
        first, n = self.experts[0], len(self.experts)
        if (n < 2 or not isinstance(first, NeuralNetwork) or not self.batched()
                or any(n * i > self.joint_limit for i, _ in first.layer_sizes[1:])):
            return None
        device = torch.device(device)
        cache = self.__dict__.setdefault("_joint_cache", {})
        if device in cache:
            return cache[device]
        base, zero = torch.tensor(self.offsets[:n]), self.num_params()
        layers, at = [], 0
        for k, (i, o) in enumerate(first.layer_sizes):
            blocks = base.view(n, 1, 1) + at + torch.arange(i * o).view(1, i, o)  # (E, i, o)
            if k == 0:  # every expert reads the same input: blocks side by side
                weight = blocks.permute(1, 0, 2).reshape(i, n * o)
            else:
                weight = torch.full((n * i, n * o), zero, dtype=torch.long)
                for e in range(n):
                    weight[e * i:(e + 1) * i, e * o:(e + 1) * o] = blocks[e]
            bias = (base.view(n, 1) + at + i * o + torch.arange(o)).reshape(n * o)
            layers.append((weight.to(device), bias.to(device)))
            at += i * o + o
        cache[device] = layers
        return layers

    def _joint_expert_outputs(self, x: torch.Tensor, params: torch.Tensor,
                              layers: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """``(S, B, E, out)`` from the side-by-side network."""
        s, n = params.shape[0], len(self.experts)
        padded = torch.cat([params, params.new_zeros(s, 1)], 1)
        act = self.experts[0].activation
        h = x.unsqueeze(0).expand(s, -1, -1)
        for k, (w_idx, b_idx) in enumerate(layers):
            w = padded.index_select(1, w_idx.flatten()).view(s, *w_idx.shape)
            b = padded.index_select(1, b_idx).unsqueeze(1)
            h = torch.baddbmm(b, h, w)
            if k < len(layers) - 1:
                h = act(h)
        return h.view(s, h.shape[1], n, self.num_outputs)

    def _widest(self, x: torch.Tensor, draws: int) -> int:
        return draws * x.shape[0] * self.experts[0].draw_width()

    def get_expert_outputs(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``(S, E, B, out)``: every expert's output under every parameter draw."""
        x = self._check(x, params)
        n = len(self.experts)
        layers = self._joint_layers(params.device)
        if layers is not None:
            return self._joint_expert_outputs(x, params, layers).permute(0, 2, 1, 3)
        if n > 1 and self.batched():
            s, size = params.shape[0], self.offsets[1]
            group = max(1, min(n, self.fold_limit // max(1, self._widest(x, s))))
            outs = []
            for k in range(0, n, group):
                m = min(group, n - k)
                folded = params[:, k * size: (k + m) * size].reshape(s * m, size)
                out = self.experts[k](x, folded)  # row t * m + j: draw t, expert k + j
                outs.append(out.reshape(s, m, *out.shape[1:]))
            return outs[0] if len(outs) == 1 else torch.cat(outs, 1)
        return torch.stack([e(x, self._slice(params, k)) for k, e in enumerate(self.experts)],
                           dim=1)

    def get_gating_weights(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``(S, B, E)``: the gate's mixing weights under every parameter draw."""
        x = self._check(x, params)
        return self.gating_network(x, self._slice(params, len(self.experts)))

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        x = self._check(x, params)
        g = self.get_gating_weights(x, params)
        layers = self._joint_layers(params.device)
        if layers is not None:  # x and params were checked above
            f = self._joint_expert_outputs(x, params, layers)  # (S, B, E, out)
            return (g.unsqueeze(-1) * f).sum(2)
        return torch.einsum("sbe,sebo->sbo", g, self.get_expert_outputs(x, params))


# --- the stochastic model --------------------------------------------------------------
class StochasticModel(nn.Module):
    """A surrogate with random parameters.

    Args:
        surrogate_model: a :class:`Surrogate`.
        parameter_groups: one group or a list of groups, concatenated in list order;
            their sizes must add up to ``surrogate_model.num_params()``.
        init_from_surrogate: centre the groups on the surrogate's fan-in-scaled
            :meth:`Surrogate.initial_parameters` (instead of unit normals, which saturate
            deeper networks).
    """

    def __init__(self, surrogate_model: Surrogate,
                 parameter_groups: ParameterGroup | Iterable[ParameterGroup],
                 *, init_from_surrogate: bool = True) -> None:
        super().__init__()
        if isinstance(parameter_groups, ParameterGroup):
            parameter_groups = [parameter_groups]
        groups = list(parameter_groups)
        if not groups or not all(isinstance(g, ParameterGroup) for g in groups):
            raise ValueError("parameter_groups must be a ParameterGroup or a non-empty list of "
                             "them")
        total, expected = sum(g.num_params for g in groups), surrogate_model.num_params()
        if total != expected:
            raise ValueError(f"the parameter groups hold {total} parameters but the surrogate "
                             f"model has {expected}; sizes: "
                             + ", ".join(f"{g.name}={g.num_params}" for g in groups))
        self.surrogate_model = surrogate_model
        self.parameter_groups = nn.ModuleList(groups)
        if init_from_surrogate:
            start = surrogate_model.initial_parameters()
            for g, chunk in zip(groups, start.split([g.num_params for g in groups]),
                                strict=True):
                g.initialize_(chunk)

    def num_params(self) -> int:
        return sum(g.num_params for g in self.parameter_groups)

    def sample_parameters(self, num_samples: int = 1) -> torch.Tensor:
        """``(num_samples, P)``: one draw of every group, concatenated in list order."""
        num_samples = check_int("num_samples", num_samples, 1)
        return torch.cat([g.sample_parameters(num_samples) for g in self.parameter_groups], 1)

    def distribution_loss(self) -> torch.Tensor:
        """Sum of the groups' ``distribution_loss`` (KL to the prior / MAP penalty)."""
        return torch.stack([g.distribution_loss() for g in self.parameter_groups]).sum()

    def forward(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """``(num_samples, B, out)``: one parameter draw per sample, shared by the batch."""
        return self.surrogate_model(x, self.sample_parameters(num_samples))

    def predict(self, x: torch.Tensor, num_samples: int = 100,
                noise_variance: torch.Tensor | float | None = None) -> Prediction:
        """A :class:`Prediction` over ``num_samples`` parameter draws (the members): the
        epistemic variance is the spread of the draws; ``noise_variance`` (e.g. a learned
        observation noise) is the aleatoric part. For a :class:`MixtureOfExperts` the
        confidence ``gate_entropy`` is ``1 - H(mean gate) / log E``."""
        params = self.sample_parameters(num_samples)
        x = self.surrogate_model._check(x, params)
        ys = self.surrogate_model(x, params)
        var = None
        if noise_variance is not None:
            var = torch.as_tensor(noise_variance, dtype=ys.dtype, device=ys.device).expand_as(ys)
        conf = {}
        if isinstance(self.surrogate_model, MixtureOfExperts):
            g = self.surrogate_model.get_gating_weights(x, params).mean(0)
            n = g.shape[-1]
            conf["gate_entropy"] = (1.0 - categorical_entropy(g) / math.log(n) if n > 1
                                    else torch.ones_like(g[:, 0]))
        return Prediction.from_gaussians(ys, var, confidences=conf)
