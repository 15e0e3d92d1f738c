"""Images as tensors: the one resize policy, channel conversion, augmentation, and in-memory splits.

The resize policy (`resize_crop`) is the one every path uses, for in-memory datasets and image
folders alike, in evaluation, calibration and fine-tuning: the image is scaled so its shorter side
(relative to the target's aspect) covers the model's input, then cropped in the centre. Scaling both
sides independently would squash photos of other aspect ratios into shapes the model never saw.
Training may add random shifts and flips, always after that same resize.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from engine.data.common import Normalization, Shape
from engine.errors import UserError


def cover_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """The (height, width) an image is scaled to so that it covers `target` with its aspect ratio kept."""
    th, tw = target
    scale = max(th / height, tw / width)
    return max(th, math.floor(height * scale + 0.5)), max(tw, math.floor(width * scale + 0.5))


def resize_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a float N×C×H×W batch so its shorter side fits `size`, then crop `size` from the centre."""
    h, w = x.shape[2:]
    if (h, w) == tuple(size):
        return x
    nh, nw = cover_size(h, w, size)
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - size[0]) // 2, (nw - size[1]) // 2
    return x[:, :, top:top + size[0], left:left + size[1]]


GREY_WEIGHTS = (0.299, 0.587, 0.114)  # RGB to one channel (ITU-R 601 luma), recorded with exported models


def convert_batch(x: torch.Tensor, shape: Shape) -> torch.Tensor:
    """Convert a float batch in [0, 1] to `shape`: channels, then the resize policy (`resize_crop`)."""
    c, h, w = shape
    if x.shape[1] != c:
        if c == 1:
            if x.shape[1] == 3:
                weights = torch.tensor(GREY_WEIGHTS, dtype=x.dtype).view(1, 3, 1, 1)
                x = (x * weights).sum(1, keepdim=True)
            else:
                x = x.mean(1, keepdim=True)
        elif x.shape[1] == 1:
            x = x.expand(-1, c, -1, -1)
        else:
            raise UserError(f"cannot convert {x.shape[1]}-channel images to {c} channels; pass --input-shape")
    return resize_crop(x, (h, w))


def shift_draws(n: int, generator: torch.Generator, pad: int, flip: bool) -> tuple[torch.Tensor, ...]:
    """The random shifts (dy, dx) and flips (mask or None) of `random_crop_flip`, in its order of draws."""
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    mask = torch.rand(n, generator=generator) < 0.5 if flip else None
    return dy, dx, mask


def shift_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, mask: torch.Tensor | None,
               pad: int) -> torch.Tensor:
    """Shift each sample by (dy - pad, dx - pad) with zero padding, and flip those in `mask`."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = torch.arange(h)[None, :] + dy[:, None]
    cols = torch.arange(w)[None, :] + dx[:, None]
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pad))
    out = out.gather(3, cols[:, None, None, :].expand(n, c, h, w))
    if mask is not None:
        out = torch.where(mask[:, None, None, None], out.flip(3), out)
    return out


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 2, flip: bool = True) -> torch.Tensor:
    """Per-sample random shifts (zero padding) and horizontal flips, vectorised over the batch."""
    return shift_flip(x, *shift_draws(len(x), generator, pad, flip), pad)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """A float batch in [0, 1] as 8-bit pixels (rounded), the form image caches hold."""
    return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def quantised(x: torch.Tensor) -> torch.Tensor:
    """`x` rounded to 8-bit levels, still float: what a batch read back from a uint8 cache holds."""
    return to_uint8(x).float().div_(255.0)


class TensorSplit:
    """A view into uint8 images held once in memory: `indices` select the split."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None = None):
        self.images = images  # N×C×H×W uint8, shared by all splits
        self.labels = labels
        self.indices = torch.arange(len(labels)) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, indices: torch.Tensor) -> "TensorSplit":
        """A narrower view; no pixels are copied."""
        return TensorSplit(self.images, self.labels, self.indices[indices])

    def targets(self) -> np.ndarray:
        """Labels of this split as numpy."""
        return self.labels[self.indices].numpy()


class TensorLoader:
    """Batches from a TensorSplit: slice, convert, augment, normalise; no worker processes.

    In-memory data needs no workers: a batch is one slice and a few vectorised operations.
    """

    def __init__(self, split: TensorSplit, batch_size: int, shape: Shape, norm: Normalization,
                 shuffle: bool = False, augment: bool = False, seed: int = 0, drop_last: bool = False,
                 flip: bool = True):
        self.split, self.batch_size, self.shape, self.norm = split, batch_size, shape, norm.adapted(shape[0])
        self.shuffle, self.augment, self.drop_last, self.flip = shuffle, augment, drop_last, flip
        self.generator = torch.Generator().manual_seed(seed)
        self.mean = torch.tensor(self.norm.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(self.norm.std).view(1, -1, 1, 1)

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.split.indices
        if self.shuffle:
            order = order[torch.randperm(len(order), generator=self.generator)]
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.split.images[idx].float().div_(255.0)
            x = convert_batch(x, self.shape)
            if self.augment:
                x = random_crop_flip(x, self.generator, flip=self.flip)
            yield (x - self.mean) / self.std, self.split.labels[idx]


def _split_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic (rest, held-out) index split."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = max(1, int(round(n * fraction)))
    return perm[held:].sort().values, perm[:held].sort().values


def _stats(images: torch.Tensor, max_images: int = 20000) -> Normalization:
    """Per-channel mean/std of uint8 images, from at most `max_images` of them."""
    sample = images[:max_images].float().div_(255.0)
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return Normalization(tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std))
