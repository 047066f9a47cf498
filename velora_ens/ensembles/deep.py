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

from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from velora_ens._validation import check_int
from velora_ens.ensembles._inputs import (
    as_head_input,
    as_tensor,
    first_floating,
    refuse_not_finite,
    to_like,
)
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
    :class:`DeepEnsemble` takes with ``per_member=True``."""
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
    """Shared plumbing: input checks, per-member batches, FGSM, the NaN check."""

    net: _MemberMLP

    def __init__(self, dim_in: int, num_members: int, hidden_dim: int, depth: int,
                 use_adversarial_training: bool, adversarial_eps: float, check: bool) -> None:
        super().__init__()
        self.dim_in = check_int("dim_in", dim_in, 1)
        self.num_members = check_int("num_members", num_members, 1)
        self.hidden_dim = check_int("hidden_dim", hidden_dim, 1)
        self.depth = check_int("depth", depth, 0)
        if not adversarial_eps >= 0:
            raise ValueError(f"adversarial_eps must be >= 0, got {adversarial_eps!r}")
        self.use_adversarial_training = bool(use_adversarial_training)
        self.adversarial_eps = float(adversarial_eps)
        self.check = bool(check)
        self.register_buffer("feature_range", torch.empty(0), persistent=True)

    def set_feature_range(self, X: torch.Tensor, *, per_member: bool = False) -> None:
        """Fix each feature's range (max - min over ``X``, e.g. the training set) for the
        relative FGSM step; without it the current batch's range is used."""
        X = self._inputs(X, per_member)
        flat = X.reshape(-1, self.dim_in)
        self.feature_range = (flat.amax(0) - flat.amin(0)).detach().clone()

    def _inputs(self, x: Any, per_member: bool) -> torch.Tensor:
        """``x`` as ``(B, dim_in)``, or ``(M, B, dim_in)`` with ``per_member=True``, in the
        members' dtype and device (:func:`~velora_ens.ensembles._inputs.as_head_input`)."""
        who, like = type(self).__name__, first_floating(self.net)
        if per_member:
            return as_head_input(x, who, (self.num_members, "B", self.dim_in), like,
                                 what="per-member input")
        hint = "" if getattr(x, "ndim", 0) != 3 else (
            f"; per-member batches ({self.num_members}, B, {self.dim_in}) need "
            f"per_member=True, and a sequence of features (B, L, {self.dim_in}) its last step "
            f"(e.g. WithFeatures(..., last_step=True))")
        return as_head_input(x, who, ("B", self.dim_in), like, hint=hint)

    def _target(self, target: Any) -> torch.Tensor:
        raise NotImplementedError

    def _check_finite(self, value: torch.Tensor, x: torch.Tensor,
                      target: torch.Tensor | None = None) -> None:
        """With ``check``, one device sync: ``value`` (outputs or loss) is finite; else name
        the culprit: the input, the target, the members whose outputs are not finite."""
        if not self.check or bool(torch.isfinite(value).all()):
            return
        who = type(self).__name__
        refuse_not_finite(x, f"the input x of {who}", "the members need finite inputs")
        refuse_not_finite(target, f"the target of {who}", "the loss needs finite targets")
        with torch.no_grad():
            out = self.net(x)
            bad = (~torch.isfinite(out)).flatten(1).any(1).nonzero().flatten().tolist()
        if bad:
            raise ValueError(f"{who}'s member(s) {bad} returned NaN or inf with a finite "
                             "input (are their parameters finite?)")
        raise ValueError(f"the loss of {who} is not finite with finite inputs, targets and "
                         "member outputs (an overflow: targets far from the predictions?)")

    def _checked_net(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        self._check_finite(out, x)
        return out

    def _member_loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(M,)`` per-member losses on checked inputs ``x`` ``(B or M, B, in)``."""
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

    def adversarial_input(self, x: torch.Tensor, target: torch.Tensor, *,
                          per_member: bool = False) -> torch.Tensor:
        """FGSM inputs ``(M, B, dim_in)``: each member's input moved by ``eps * range *
        sign(grad)`` of its own loss (range: :meth:`set_feature_range`, else the batch's).
        Only the input's gradient is computed; parameters' ``.grad`` stay as they were."""
        x = self._inputs(x, per_member)
        return self._fgsm(x, self._target(target))[1].detach()

    def loss(self, x: torch.Tensor, target: torch.Tensor, *,
             per_member: bool = False) -> torch.Tensor:
        """Mean member loss; with adversarial training ``0.5 loss(x) + 0.5 loss(x_adv)``.

        ``x`` is ``(B, dim_in)`` (every member sees the batch), or with
        ``per_member=True`` ``(M, B, dim_in)`` (each member its own batch, e.g. from
        :func:`member_permutations`, with ``target`` ``(M, B, ...)``)."""
        x, target = self._inputs(x, per_member), self._target(target)
        if not (self.use_adversarial_training and self.adversarial_eps > 0):
            loss = self._member_loss(x, target).mean()
        else:
            clean, x_adv = self._fgsm(x, target)
            loss = 0.5 * clean.mean() + 0.5 * self._member_loss(x_adv, target).mean()
        self._check_finite(loss, x, target)
        return loss


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
        check: on every call, one device sync that the loss (or the outputs) is finite;
            else the error names the input, the target or the members (as the Liquid
            Ensemble's ``check``).

    ``ensemble(x, target) -> loss`` (a scalar to minimise); ``ensemble(x) ->``
    :class:`Prediction` with ``.mean``, ``.variance`` (mixture moments) and the
    aleatoric / epistemic split. Gradients flow through the prediction too. ``x`` is
    ``(B, dim_in)`` (numpy and other float dtypes are converted); per-member batches
    ``(M, B, dim_in)`` are passed with ``per_member=True``.
    """

    def __init__(self, dim_in: int, dim_out: int = 1, *, num_members: int = 5,
                 hidden_dim: int = 100, depth: int = 3, use_adversarial_training: bool = True,
                 adversarial_eps: float = 0.01, min_variance: float = 1e-6,
                 check: bool = True) -> None:
        super().__init__(dim_in, num_members, hidden_dim, depth, use_adversarial_training,
                         adversarial_eps, check)
        self.dim_out = check_int("dim_out", dim_out, 1)
        self.min_variance = float(min_variance)
        self.net = _MemberMLP(self.num_members, self.dim_in, 2 * self.dim_out,
                              self.hidden_dim, self.depth)

    def _gaussians(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = out.split(self.dim_out, dim=-1)
        return mean, F.softplus(raw) + self.min_variance

    def member_outputs(self, x: torch.Tensor, *, per_member: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's ``(mean, variance)``, each ``(M, B, dim_out)``, in one call."""
        return self._gaussians(self._checked_net(self._inputs(x, per_member)))

    def _target(self, target: Any) -> torch.Tensor:
        t = as_tensor(target, f"the target of {type(self).__name__}", f"(B, {self.dim_out})")
        return to_like(t, first_floating(self.net))

    def _member_loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mean, var = self._gaussians(self.net(x))
        if target.dim() == 2 and target.shape == mean.shape[1:]:
            target = target.expand_as(mean)
        if target.shape != mean.shape:
            raise ValueError(f"target must be (B, {self.dim_out}) or ({self.num_members}, B, "
                             f"{self.dim_out}) matching the inputs, got {tuple(target.shape)}")
        return 0.5 * (var.log() + (target - mean).pow(2) / var).mean(dim=(1, 2))

    def predict(self, x: torch.Tensor, *, per_member: bool = False) -> Prediction:
        """The mixture: ``mu = mean_m mu_m``, ``var = mean_m(var_m + mu_m^2) - mu^2``."""
        mean, var = self.member_outputs(x, per_member=per_member)
        return Prediction.from_gaussians(mean, var)

    def sample_predictions(self, x: torch.Tensor, *,
                           per_member: bool = False) -> list[MemberOutput]:
        """Each member's ``MemberOutput(mean, log_var)`` on ``x``."""
        mean, var = self.member_outputs(x, per_member=per_member)
        return [MemberOutput(m, v.log()) for m, v in zip(mean.unbind(0), var.unbind(0),
                                                           strict=True)]

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None, *,
                per_member: bool = False):
        if target is None:
            return self.predict(x, per_member=per_member)
        return self.loss(x, target, per_member=per_member)


class DeepEnsembleClassifier(_Ensemble):
    """A deep ensemble of softmax classifiers (same member MLP as :class:`DeepEnsemble`).

    ``classifier(x, target) -> loss`` (mean cross-entropy over members, ``target`` class
    indices ``(B,)`` or per-member ``(M, B)``); ``classifier(x) ->`` :class:`Prediction`
    with ``.probs`` (mean of the members' softmax), ``.entropy`` (predictive entropy,
    nats), ``.mutual_information`` (epistemic) and ``.variance`` (``p (1 - p)`` per class).
    Inputs, ``per_member`` and ``check`` as in :class:`DeepEnsemble`.
    """

    def __init__(self, dim_in: int, num_classes: int, *, num_members: int = 5,
                 hidden_dim: int = 100, depth: int = 3, use_adversarial_training: bool = False,
                 adversarial_eps: float = 0.01, check: bool = True) -> None:
        super().__init__(dim_in, num_members, hidden_dim, depth, use_adversarial_training,
                         adversarial_eps, check)
        self.num_classes = check_int("num_classes", num_classes, 2)
        self.net = _MemberMLP(self.num_members, self.dim_in, self.num_classes,
                              self.hidden_dim, self.depth)

    def member_logits(self, x: torch.Tensor, *, per_member: bool = False) -> torch.Tensor:
        """Every member's logits ``(M, B, num_classes)`` in one call."""
        return self._checked_net(self._inputs(x, per_member))

    def _target(self, target: Any) -> torch.Tensor:
        t = as_tensor(target, f"the target of {type(self).__name__}", "(B,)")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"target must be class indices (integers) of shape (B,) or "
                             f"({self.num_members}, B), got dtype {t.dtype} (shape "
                             f"{tuple(t.shape)})")
        device = self.net.head.weight.device
        return t if t.device == device else t.to(device)

    def _member_loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        m, b = logits.shape[:2]
        if target.dim() == 1 and target.shape[0] == b:
            target = target.expand(m, b)
        if tuple(target.shape) != (m, b):
            raise ValueError(f"target must be class indices (B,) or ({m}, B) matching the "
                             f"inputs, got {tuple(target.shape)}")
        ce = F.cross_entropy(logits.reshape(m * b, -1), target.reshape(-1), reduction="none")
        return ce.view(m, b).mean(1)

    def predict(self, x: torch.Tensor, *, per_member: bool = False) -> Prediction:
        return Prediction.from_logits(self.member_logits(x, per_member=per_member))

    def sample_predictions(self, x: torch.Tensor, *,
                           per_member: bool = False) -> list[torch.Tensor]:
        """Each member's class probabilities ``(B, num_classes)``."""
        return list(F.softmax(self.member_logits(x, per_member=per_member), -1).unbind(0))

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None, *,
                per_member: bool = False):
        if target is None:
            return self.predict(x, per_member=per_member)
        return self.loss(x, target, per_member=per_member)
