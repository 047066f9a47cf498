"""Image classifiers with each ensemble head, for the CIFAR-10 benchmark.

Networks take uint8 images ``(B, 3, 32, 32)`` (normalised inside, so the data set can
stay uint8 on the device). Every classifier is ``model(x, y) -> loss`` and
``predict(x) -> Prediction`` (class probabilities, members, entropy split).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from velora_ens.data.augment import Normalize
from velora_ens.ensembles import (
    DelegatingMLPExperts,
    LiquidEnsembleLayer,
    Prediction,
    batchensemble,
    ensemble,
)
from velora_ens.ensembles.moe import (
    GatingNetwork,
    IIDGaussianGroup,
    MixtureOfExperts,
    NeuralNetwork,
    StochasticModel,
)

__all__ = ["CLASSIFIER_HEADS", "ImageClassifier", "ResNet", "SmallCNN", "build_network"]

CLASSIFIER_HEADS = ("single", "deep", "batch", "liquid", "moe")


class SmallCNN(nn.Module):
    """Three ``conv3x3 -> ReLU -> maxpool`` stages (``w, 2w, 4w`` channels), global
    average pooling; ``features`` is the pooled ``4w`` vector, ``fc`` the classifier."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        w = width
        self.norm = Normalize()
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = 4 * w
        self.fc = nn.Linear(4 * w, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.norm(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class _Block(nn.Module):
    """Pre-activation residual block (BN -> ReLU -> conv, twice)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.short = (nn.Conv2d(c_in, c_out, 1, stride, bias=False)
                      if stride != 1 or c_in != c_out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        short = self.short(out) if self.short is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + short


class ResNet(nn.Module):
    """A pre-activation ResNet-18 for 32x32 images (widths ``w, 2w, 4w, 8w``; ``w=64``
    is the usual 11M-parameter network)."""

    def __init__(self, width: int = 64, num_classes: int = 10,
                 blocks: tuple[int, ...] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.norm = Normalize()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, 1, 1, bias=False)]
        c = width
        for k, n in enumerate(blocks):
            c_out = width * 2 ** k
            for j in range(n):
                layers.append(_Block(c, c_out, 2 if (j == 0 and k > 0) else 1))
                c = c_out
        layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.num_features = c
        self.fc = nn.Linear(c, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.norm(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def build_network(name: str, width: int, num_classes: int = 10) -> nn.Module:
    """``"cnn"`` (:class:`SmallCNN`) or ``"resnet18"`` (:class:`ResNet`)."""
    if name == "cnn":
        return SmallCNN(width, num_classes)
    if name == "resnet18":
        return ResNet(width, num_classes)
    raise ValueError(f"model must be 'cnn' or 'resnet18', got {name!r}")


class ImageClassifier(nn.Module):
    """A network with one of :data:`CLASSIFIER_HEADS`:

    * ``single``: the network;
    * ``deep``: ``members`` independently initialised copies (``ensemble``);
    * ``batch``: ``batchensemble(network, members, members_per_pass=members_per_pass)``,
      the batch tiled per member (by default all members in one pass);
    * ``liquid``: the network's features -> a Liquid Ensemble of ``members`` delegating
      MLP experts over the class logits (cross-entropy of the power-weighted logits plus
      the auxiliary loss);
    * ``moe``: the features -> a stochastic MoE of ``members`` functional MLP experts
      with Gaussian weights (expected cross-entropy over ``num_samples`` draws +
      ``KL / num_train``).

    ``label_smoothing`` applies to every cross-entropy.
    """

    def __init__(self, network: nn.Module, head: str, members: int = 4, num_train: int = 50000,
                 num_classes: int = 10, num_samples: int = 4,
                 label_smoothing: float = 0.0, members_per_pass: int | None = None) -> None:
        super().__init__()
        if head not in CLASSIFIER_HEADS:
            raise ValueError(f"head must be one of {CLASSIFIER_HEADS}, got {head!r}")
        if members_per_pass is not None and head != "batch":
            raise ValueError(f"members_per_pass is an option of head='batch', got head={head!r}")
        self.head, self.num_train, self.num_samples = head, int(num_train), int(num_samples)
        self.label_smoothing = float(label_smoothing)
        if head == "single":
            self.net = network
        elif head == "deep":
            self.members = ensemble(network, members)
        elif head == "batch":
            self.net = batchensemble(network, members, members_per_pass=members_per_pass)
        elif head == "liquid":
            self.net = network
            experts = DelegatingMLPExperts(network.num_features, num_classes, members,
                                           hidden=64, depth=1)
            self.layer = LiquidEnsembleLayer(experts, load_distribution_lambda=0.2,
                                             specialization_lambda=0.15, solver="sink_many",
                                             many_sinks_method="closed_form", check=False)
        else:
            self.net = network
            experts = [NeuralNetwork(network.num_features, num_classes, width=64, depth=1)
                       for _ in range(members)]
            gate = GatingNetwork(network.num_features, members, width=16, depth=1,
                                 activation=torch.tanh)
            groups = [IIDGaussianGroup(f"expert{k}", e.num_params(), init_std=0.01)
                      for k, e in enumerate(experts)]
            groups.append(IIDGaussianGroup("gate", gate.num_params(), init_std=0.01))
            self.moe = StochasticModel(MixtureOfExperts(experts, gate), groups)

    def member_logits(self, x: torch.Tensor, num_samples: int | None = None) -> torch.Tensor:
        """``(E, B, C)`` logits of the members (experts / parameter draws)."""
        if self.head == "single":
            return self.net(x).unsqueeze(0)
        if self.head == "deep":
            return torch.stack([m(x) for m in self.members])
        if self.head == "batch":
            return self.net(x)
        feats = self.net.features(x)
        if self.head == "liquid":
            ys, _ = self.layer.expert_outputs(feats)
            return ys.transpose(0, 1)
        return self.moe(feats.float(), num_samples=num_samples or self.num_samples)

    def _ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        if y is None:
            return self.predict(x)
        if self.head == "liquid":
            out = self.layer(self.net.features(x))
            return self._ce(out, y) + self.layer.auxiliary_loss()
        logits = self.member_logits(x)  # (E, B, C)
        e, b = logits.shape[:2]
        loss = self._ce(logits.reshape(e * b, -1), y.repeat(e))
        if self.head == "moe":
            loss = loss + self.moe.distribution_loss() / self.num_train
        return loss

    def predict(self, x: torch.Tensor, num_samples: int = 16) -> Prediction:
        if self.head == "liquid":
            return self.layer.predict(self.net.features(x), task="classification")
        return Prediction.from_logits(self.member_logits(x, num_samples).float())
