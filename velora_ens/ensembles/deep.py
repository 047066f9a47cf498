"""Deep Ensembles (Lakshminarayanan, Pritzel & Blundell, 2017), vectorised.

All ``M`` members are MLPs of one architecture whose weights are stacked along a member
axis, so one batched forward (``baddbmm``) evaluates every member; each member is still
independently initialised and receives its own gradients. Regression members predict a
Gaussian ``N(mu, softplus(.) + 1e-6)`` trained with the Gaussian NLL; the ensemble
predicts the mixture's moments. Optional FGSM adversarial training perturbs each member's
input by ``eps * range(feature) * sign(grad_x loss)``, with the gradient taken by
``torch.autograd.grad`` on the input only (no parameter ``.grad`` is touched).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from velora_ens._validation import check_int
from velora_ens.ensembles._vectorised import MemberLinear, MemberRMSNorm
from velora_ens.ensembles.prediction import Prediction

__all__ = [
    "DeepEnsemble",
    "DeepEnsembleClassifier",
    "MemberOutput",
    "gaussian_nll_loss",
    "member_permutations",
]


class MemberOutput(NamedTuple):
    """One member's Gaussian prediction: ``mean`` and ``log_var`` ``(B, dim_out)``."""

    mean: torch.Tensor
    log_var: torch.Tensor


def gaussian_nll_loss(mean: torch.Tensor, variance: torch.Tensor,
                      target: torch.Tensor) -> torch.Tensor:
    """``0.5 * mean(log var + (y - mu)^2 / var)``: the Gaussian NLL without its constant."""
    return 0.5 * (variance.log() + (target - mean).pow(2) / variance).mean()


def member_permutations(num_samples: int, num_members: int,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """``(M, num_samples)`` independent random orders of the data, one per member (the
    paper's "random shuffling"): ``X[perm[:, i:i + B]]`` is an ``(M, B, ...)`` batch that
    :class:`DeepEnsemble` accepts directly."""
    num_samples = check_int("num_samples", num_samples, 1)
    num_members = check_int("num_members", num_members, 1)
    return torch.stack([torch.randperm(num_samples, generator=generator)
                        for _ in range(num_members)])


class _MemberMLP(nn.Module):
    """``M`` MLPs: ``depth`` x (Linear, RMSNorm, SiLU) then a linear head."""

    def __init__(self, num_members: int, dim_in: int, dim_out: int, hidden_dim: int,
                 depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = dim_in
        for _ in range(depth):
            layers += [MemberLinear(num_members, width, hidden_dim),
                       MemberRMSNorm(num_members, hidden_dim), nn.SiLU()]
            width = hidden_dim
        self.body = nn.Sequential(*layers)
        self.head = MemberLinear(num_members, width, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class _Ensemble(nn.Module):
    """Shared plumbing: input checks, per-member batches, FGSM."""

    def __init__(self, dim_in: int, num_members: int, hidden_dim: int, depth: int,
                 use_adversarial_training: bool, adversarial_eps: float) -> None:
        super().__init__()
        self.dim_in = check_int("dim_in", dim_in, 1)
        self.num_members = check_int("num_members", num_members, 1)
        self.hidden_dim = check_int("hidden_dim", hidden_dim, 1)
        self.depth = check_int("depth", depth, 0)
        if not adversarial_eps >= 0:
            raise ValueError(f"adversarial_eps must be >= 0, got {adversarial_eps!r}")
        self.use_adversarial_training = bool(use_adversarial_training)
        self.adversarial_eps = float(adversarial_eps)
        self.register_buffer("feature_range", torch.empty(0), persistent=True)

    def set_feature_range(self, X: torch.Tensor) -> None:
        """Fix each feature's range (max - min over ``X``, e.g. the training set) for the
        relative FGSM step; without it the current batch's range is used."""
        X = self._inputs(X)
        flat = X.reshape(-1, self.dim_in)
        self.feature_range = (flat.amax(0) - flat.amin(0)).detach().clone()

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        ok = (x.dim() == 2 or (x.dim() == 3 and x.shape[0] == self.num_members))
        if not ok or x.shape[-1] != self.dim_in:
            raise ValueError(f"{type(self).__name__} expected inputs (B, {self.dim_in}) or "
                             f"per-member ({self.num_members}, B, {self.dim_in}), got "
                             f"{tuple(x.shape)}")
        return x

    def _member_loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(M,)`` per-member losses on ``x`` ``(M, B, in)``."""
        raise NotImplementedError

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        if self.feature_range.numel():
            return self.feature_range
        flat = x.detach().reshape(-1, self.dim_in)
        return flat.amax(0) - flat.amin(0)

    def _fgsm(self, x: torch.Tensor, target: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(clean member losses (M,), adversarial inputs (M, B, dim_in))``; the input
        gradient comes from ``torch.autograd.grad``, which fills no parameter ``.grad``."""
        xm = x.expand(self.num_members, *x.shape[-2:])
        if not xm.requires_grad:
            xm = xm.detach().clone().requires_grad_(True)
        clean = self._member_loss(xm, target)
        (grad,) = torch.autograd.grad(clean.sum(), xm, retain_graph=True)
        step = (self.adversarial_eps * self._scale(x) * grad.sign()).detach()
        return clean, xm + step

    def adversarial_input(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """FGSM inputs ``(M, B, dim_in)``: each member's input moved by ``eps * range *
        sign(grad)`` of its own loss (range: :meth:`set_feature_range`, else the batch's).
        Only the input's gradient is computed; parameters' ``.grad`` stay as they were."""
        return self._fgsm(self._inputs(x), target)[1].detach()

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean member loss; with adversarial training ``0.5 loss(x) + 0.5 loss(x_adv)``.

        ``x`` is ``(B, dim_in)`` (every member sees the batch) or ``(M, B, dim_in)`` with
        ``target`` ``(M, B, ...)`` (each member its own batch, e.g. from
        :func:`member_permutations`)."""
        x = self._inputs(x)
        if not (self.use_adversarial_training and self.adversarial_eps > 0):
            return self._member_loss(x, target).mean()
        clean, x_adv = self._fgsm(x, target)
        return 0.5 * clean.mean() + 0.5 * self._member_loss(x_adv, target).mean()


class DeepEnsemble(_Ensemble):
    """A deep ensemble of Gaussian regression MLPs.

    Args:
        dim_in: input size.
        dim_out: target size.
        num_members: ensemble size M.
        hidden_dim: width of each member's hidden layers.
        depth: each member has ``depth`` blocks ``Linear -> RMSNorm -> SiLU`` and a linear
            head predicting mean and variance.
        use_adversarial_training: FGSM adversarial training (the paper's Sec. 3).
        adversarial_eps: FGSM step relative to each feature's range (paper: 0.01).
        min_variance: added to ``softplus`` for the predicted variance.

    ``ensemble(x, target) -> loss`` (a scalar to minimise); ``ensemble(x) ->``
    :class:`Prediction` with ``.mean``, ``.variance`` (mixture moments) and the
    aleatoric / epistemic split. Gradients flow through the prediction too.
    """

    def __init__(self, dim_in: int, dim_out: int = 1, *, num_members: int = 5,
                 hidden_dim: int = 100, depth: int = 3, use_adversarial_training: bool = True,
                 adversarial_eps: float = 0.01, min_variance: float = 1e-6) -> None:
        super().__init__(dim_in, num_members, hidden_dim, depth, use_adversarial_training,
                         adversarial_eps)
        self.dim_out = check_int("dim_out", dim_out, 1)
        self.min_variance = float(min_variance)
        self.net = _MemberMLP(self.num_members, self.dim_in, 2 * self.dim_out,
                              self.hidden_dim, self.depth)

    def member_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's ``(mean, variance)``, each ``(M, B, dim_out)``, in one call."""
        out = self.net(self._inputs(x))
        mean, raw = out.split(self.dim_out, dim=-1)
        return mean, F.softplus(raw) + self.min_variance

    def _member_loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mean, var = self.member_outputs(x)
        if target.dim() == 2 and target.shape == mean.shape[1:]:
            target = target.expand_as(mean)
        if target.shape != mean.shape:
            raise ValueError(f"target must be (B, {self.dim_out}) or ({self.num_members}, B, "
                             f"{self.dim_out}) matching the inputs, got {tuple(target.shape)}")
        return 0.5 * (var.log() + (target - mean).pow(2) / var).mean(dim=(1, 2))

    def predict(self, x: torch.Tensor) -> Prediction:
        """The mixture: ``mu = mean_m mu_m``, ``var = mean_m(var_m + mu_m^2) - mu^2``."""
        mean, var = self.member_outputs(x)
        return Prediction.from_gaussians(mean, var)

    def sample_predictions(self, x: torch.Tensor) -> list[MemberOutput]:
        """Each member's ``MemberOutput(mean, log_var)`` on ``x``."""
        mean, var = self.member_outputs(x)
        return [MemberOutput(m, v.log()) for m, v in zip(mean.unbind(0), var.unbind(0),
                                                           strict=True)]

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None):
        if target is None:
            return self.predict(x)
        return self.loss(x, target)


class DeepEnsembleClassifier(_Ensemble):
    """A deep ensemble of softmax classifiers (same member MLP as :class:`DeepEnsemble`).

    ``classifier(x, target) -> loss`` (mean cross-entropy over members, ``target`` class
    indices ``(B,)`` or per-member ``(M, B)``); ``classifier(x) ->`` :class:`Prediction`
    with ``.probs`` (mean of the members' softmax), ``.entropy`` (predictive entropy,
    nats), ``.mutual_information`` (epistemic) and ``.variance`` (``p (1 - p)`` per class).
    """

    def __init__(self, dim_in: int, num_classes: int, *, num_members: int = 5,
                 hidden_dim: int = 100, depth: int = 3, use_adversarial_training: bool = False,
                 adversarial_eps: float = 0.01) -> None:
        super().__init__(dim_in, num_members, hidden_dim, depth, use_adversarial_training,
                         adversarial_eps)
        self.num_classes = check_int("num_classes", num_classes, 2)
        self.net = _MemberMLP(self.num_members, self.dim_in, self.num_classes,
                              self.hidden_dim, self.depth)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits ``(M, B, num_classes)`` in one call."""
        return self.net(self._inputs(x))

    def _member_loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = self.member_logits(x)
        m, b = logits.shape[:2]
        if target.dim() == 1 and target.shape[0] == b:
            target = target.expand(m, b)
        if tuple(target.shape) != (m, b):
            raise ValueError(f"target must be class indices (B,) or ({m}, B) matching the "
                             f"inputs, got {tuple(target.shape)}")
        ce = F.cross_entropy(logits.reshape(m * b, -1), target.reshape(-1), reduction="none")
        return ce.view(m, b).mean(1)

    def predict(self, x: torch.Tensor) -> Prediction:
        return Prediction.from_logits(self.member_logits(x))

    def sample_predictions(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each member's class probabilities ``(B, num_classes)``."""
        return list(F.softmax(self.member_logits(x), -1).unbind(0))

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None):
        if target is None:
            return self.predict(x)
        return self.loss(x, target)
