"""One test image through the original and the pruned model: feature maps and top-5 predictions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generator

import numpy as np
import torch
import torch.nn as nn

from engine.config import PruneConfig
from engine.data import Dataset, Shape
from engine.errors import UserError
from engine.events import CancelToken, Progress
from engine.explain.common import layer_module, run_config, structured_method
from engine.explain.scores import Session, score_layer


@dataclass(frozen=True)
class Prediction:
    """One class and its softmax probability."""

    index: int
    name: str
    probability: float


@dataclass(frozen=True)
class FeatureMaps:
    """The output of one layer for one image: a map per channel."""

    layer: str
    maps: np.ndarray  # channels × height × width (a Linear layer: channels × 1 × 1)
    mean: np.ndarray  # per channel
    peak: np.ndarray  # per channel: the largest absolute activation


@dataclass(frozen=True)
class ImageExplanation:
    """One test image through the original and the pruned model."""

    index: int
    label: int
    label_name: str
    picture: np.ndarray  # height × width (× 3), in [0, 1], for display
    maps: FeatureMaps  # of the original model
    cut: np.ndarray  # bool per channel of the layer
    original: tuple[Prediction, ...]
    pruned: tuple[Prediction, ...]  # right after pruning, before any recovery
    recovered: tuple[Prediction, ...] = ()  # after re-estimating BatchNorm, when the config asks for it


def test_image(data: Dataset, index: int) -> tuple[torch.Tensor, int, np.ndarray]:
    """Test image `index`: (normalised 1×C×H×W tensor, label, displayable picture in [0, 1])."""
    total = data.split_size("test")
    if not 0 <= index < total:
        raise UserError(f"image {index} does not exist: the test split has images 0 to {total - 1}")
    batch = next(iter(data.loader("test", batch_size=1, indices=[index])), None)
    if batch is None:  # a folder image that passed the scan but does not decode
        raise UserError(f"test image {index} cannot be decoded; choose another image")
    image, label = batch[0], int(batch[1][0])
    mean = torch.tensor(data.norm.mean).view(-1, 1, 1)
    std = torch.tensor(data.norm.std).view(-1, 1, 1)
    picture = (image[0] * std + mean).clamp(0, 1).numpy()
    picture = picture[0] if picture.shape[0] == 1 else picture[:3].transpose(1, 2, 0)
    return image, label, picture


@torch.no_grad()
def feature_maps(model: nn.Module, layer: str, image: torch.Tensor) -> FeatureMaps:
    """The activation map of every output channel of `layer` for one image."""
    module = layer_module(model, layer)
    seen: list[torch.Tensor] = []
    hook = module.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        model(image.reshape(1, *image.shape[-3:]).to(device))
    finally:
        hook.remove()
        model.train(was_training)
    out = seen[0][0].float().cpu()
    maps = out.reshape(out.shape[0], 1, 1) if out.dim() == 1 else out.reshape(out.shape[0], *out.shape[-2:])
    flat = maps.reshape(maps.shape[0], -1)
    return FeatureMaps(layer, maps.numpy(), flat.mean(1).numpy(), flat.abs().amax(1).numpy())


@torch.no_grad()
def top_predictions(model: nn.Module, image: torch.Tensor, class_names: tuple[str, ...], k: int = 5
                    ) -> tuple[Prediction, ...]:
    """The model's `k` most probable classes for one image."""
    model.eval()
    device = next(model.parameters()).device
    probs = torch.softmax(model(image.reshape(1, *image.shape[-3:]).to(device)).float(), dim=1)[0].cpu()
    top = torch.topk(probs, min(k, probs.numel()))
    return tuple(Prediction(int(i), class_names[int(i)] if int(i) < len(class_names) else str(int(i)), float(p))
                 for p, i in zip(top.values, top.indices))


def explain_image(model: nn.Module, layer: str, cfg: PruneConfig, data: Dataset, index: int, input_shape: Shape,
                  num_classes: int | None, cancel: CancelToken | None = None
                  ) -> Generator[Progress, None, ImageExplanation]:
    """Test image `index` through `layer` (a map per channel, the cut ones marked) and the top-5 of the
    original, of the copy pruned by `cfg`'s method at its ratio, and (when the config re-estimates
    BatchNorm) of that copy after the re-estimation."""
    from engine.pruning import recalibrate_batchnorm

    cancel = cancel or CancelToken()
    cfg = run_config(cfg, cfg.method, cfg.pruning_ratio)
    image, label, picture = test_image(data, index)
    yield Progress("explain", 0, 2, f"pruning a copy with {cfg.method}")
    session = Session(model, input_shape, cfg, num_classes, cancel)
    work = session.work
    maps = feature_maps(work, layer, image)
    original = top_predictions(work, image, data.class_names)
    scores = yield from score_layer(session, layer, structured_method(cfg.method), data, apply=True)
    pruned = top_predictions(work, image, data.class_names)
    recovered: tuple[Prediction, ...] = ()
    if cfg.bn_recalibrate:
        yield Progress("explain", 1, 2, "re-estimating BatchNorm on the pruned copy")
        yield from recalibrate_batchnorm(work, data, cfg.bn_batches, session.example.device, cancel)
        recovered = top_predictions(work, image, data.class_names)
    yield Progress("explain", 2, 2, "done")
    name = data.class_names[label] if label < len(data.class_names) else str(label)
    return ImageExplanation(index, label, name, picture, maps, scores.cut, original, pruned, recovered)


def activation_stats(maps: FeatureMaps, cut: np.ndarray) -> list[dict]:
    """Per channel: mean and peak activation and whether it is cut (for the JSON mirror)."""
    return [{"channel": i, "mean": float(m), "peak": float(p), "cut": bool(c)}
            for i, (m, p, c) in enumerate(zip(maps.mean, maps.peak, cut))]
