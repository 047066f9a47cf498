"""Image augmentation and normalisation done on whole batches, on the batch's device."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "CropFlip", "Normalize", "random_crop_flip"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def random_crop_flip(images: torch.Tensor, padding: int = 4, flip: bool = True,
                     generator: torch.Generator | None = None,
                     offsets: torch.Tensor | None = None,
                     flips: torch.Tensor | None = None) -> torch.Tensor:
    """The standard CIFAR augmentation for a batch ``(B, C, H, W)``: zero-pad by
    ``padding``, crop ``H x W`` at a random offset per image, and mirror half of the
    images left-right. ``offsets`` ``(B, 2)`` (row, column in ``[0, 2 padding]``) and
    ``flips`` ``(B,)`` may be given instead of drawn (``offsets = padding``, no flips is
    the identity)."""
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    b, c, h, w = images.shape
    dev = images.device
    if offsets is None:
        offsets = torch.randint(0, 2 * padding + 1, (b, 2), generator=generator,
                                device="cpu" if generator is not None else dev).to(dev)
    padded = nn.functional.pad(images, (padding, padding, padding, padding))
    rows = (offsets[:, 0:1] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (offsets[:, 1:2] + torch.arange(w, device=dev))[:, None, None, :]
    out = padded[torch.arange(b, device=dev)[:, None, None, None],
                 torch.arange(c, device=dev)[None, :, None, None], rows, cols]
    if flip:
        if flips is None:
            flips = torch.rand(b, generator=generator,
                               device="cpu" if generator is not None else dev).to(dev) < 0.5
        out = torch.where(flips[:, None, None, None], out.flip(-1), out)
    return out


class CropFlip:
    """A :class:`~velora_ens.training.Trainer` ``batch_transform``: augments the first
    tensor of the batch (the images) with :func:`random_crop_flip`."""

    def __init__(self, padding: int = 4, flip: bool = True) -> None:
        self.padding, self.flip = int(padding), bool(flip)

    def __call__(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (random_crop_flip(batch[0], self.padding, self.flip),) + tuple(batch[1:])


class Normalize(nn.Module):
    """uint8 (or [0, 255] float) images to ``(x / 255 - mean) / std`` per channel; put it
    first in a model so that the data can stay uint8 on the device."""

    def __init__(self, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std
