"""Calibration: the gradients that data-aware importance scores (Taylor, Hessian) are computed from.

A method names its calibration in the registry; the pruner and the sensitivity scan run it the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.data import Dataset
from engine.events import CancelToken, Progress


@dataclass(frozen=True)
class Calibration:
    """How a method's importance gathers what it needs from training images before scoring."""

    words: str  # what it computes, for progress and teaching text
    per_image: bool  # one backward pass per image: too slow for a layer-by-layer scan
    run: Callable[..., Iterator[Progress]]


def _gradients(model: nn.Module, importance: Any, data: Dataset, device: torch.device, batches: int, seed: int,
               cancel: CancelToken) -> Iterator[Progress]:
    """Accumulate the loss gradient over `batches` batches of 64 (Taylor reads weight × gradient)."""
    model.eval()
    model.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(data.loader("train", 64, shuffle=True, seed=seed + 7)):
        if i >= batches:
            break
        cancel.check()
        F.cross_entropy(model(x.to(device)), y.to(device)).backward()
        yield Progress("calibrate", i + 1, batches, "gradients for the Taylor estimate")


def _per_sample_gradients(model: nn.Module, importance: Any, data: Dataset, device: torch.device, batches: int,
                          seed: int, cancel: CancelToken) -> Iterator[Progress]:
    """Square each image's gradient into the importance (the Hessian diagonal's Fisher estimate)."""
    model.eval()
    model.zero_grad(set_to_none=True)
    importance.zero_grad()
    for i, (x, y) in enumerate(data.loader("train", 8, shuffle=True, seed=seed + 7)):
        if i >= batches:
            break
        losses = F.cross_entropy(model(x.to(device)), y.to(device), reduction="none")
        for loss in losses:
            cancel.check()
            model.zero_grad(set_to_none=True)
            loss.backward(retain_graph=True)
            importance.accumulate_grad(model)
        yield Progress("calibrate", i + 1, batches, "per-sample gradients for the Hessian")


GRADIENTS = Calibration("the loss gradient over a few training batches", False, _gradients)
PER_SAMPLE = Calibration("one gradient per training image (8 per batch)", True, _per_sample_gradients)
