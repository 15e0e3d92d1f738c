"""Checks that run before any expensive work, shared by the CLI, plans and the GUI.

Everything knowable from the options, the model and the machine is checked here, so a run never
spends minutes and then fails on something it could have said at the start.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn as nn

from engine.errors import UserError
from engine.layers import classifier_head, ignored_modules, prunable_layers
from engine.preparation import least_kept, most_zeroed

if TYPE_CHECKING:
    from engine.models import ModelBundle
    from engine.config import PruneConfig

MAX_SIDE = 4096  # pixels: larger images are not what an image classifier is trained on
MAX_CHANNELS = 16  # (and the memory check's probe forward at this size stays within a few GiB)


def check_input_shape(shape: tuple[int, ...], flag: str = "--input-shape") -> None:
    """Refuse shapes no image classifier takes (they would only exhaust memory)."""
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"{flag} must be three positive integers C,H,W, got {shape}")
    c, h, w = shape
    if c > MAX_CHANNELS or max(h, w) > MAX_SIDE:
        raise UserError(f"{flag} {c},{h},{w} is outside what PruneLab handles (at most {MAX_CHANNELS} channels and "
                        f"{MAX_SIDE} pixels a side); resize the images")


def check_normalization(mean: Sequence[float], std: Sequence[float], what: str, fix: str = "") -> None:
    """Refuse a normalisation that divides by zero or holds a NaN: every pixel would become Inf or NaN."""
    if any(not math.isfinite(v) for v in (*mean, *std)) or min(std) <= 0:
        raise UserError(f"{what} must be above 0 and all values finite (got mean {list(mean)}, std {list(std)}); "
                        f"a zero std would divide every pixel by zero{fix}")


def check_layers(cfg: "PruneConfig", model: nn.Module, num_classes: int | None) -> None:
    """Named layers must exist, and something must be left to prune."""
    modules = dict(model.named_modules())
    for flag, names in (("--ignore", cfg.ignored_layers), ("--layer-ratio", list(cfg.layer_ratios))):
        unknown = [n for n in names if n not in modules or not n]
        if unknown:
            examples = ", ".join(n for n, _ in prunable_layers(model)[:4])
            raise UserError(f"{flag}: no layer named {', '.join(map(repr, unknown))} in this model; layer names "
                            f"look like {examples} (see the layer table or `python main.py evaluate`)")
    ignored = [modules[n] for n in cfg.ignored_layers]
    if cfg.keep_head:
        head = classifier_head(model, num_classes)
        if head:
            ignored.append(modules[head])
    inside = {id(m) for ig in ignored for m in ig.modules()}
    left = [n for n, m in prunable_layers(model) if id(m) not in inside]
    if not left:
        raise UserError("every prunable layer is ignored (--ignore and the kept classifier head), so nothing would "
                        "be pruned; ignore fewer layers")


def check_layers_keep(cfg: "PruneConfig", model: nn.Module, num_classes: int | None, structured: bool,
                      global_scope: bool) -> None:
    """Refuse a ratio that would leave a layer with no channel (structured) or no weight (unstructured):
    only a maximum layer ratio of (nearly) 1 allows it. Counted as the pruners count: a structured layer
    keeps at least what the maximum leaves (engine.preparation.least_kept: one of a 1-channel layer at 0.9,
    where 70 % of it rounds to none); under global scope an unstructured layer may lose up to that maximum,
    rounded down (engine.pruners' cap), so the maximum itself is judged; a structured one keeps at least one
    rounding unit there (engine.preparation.kept_channels), as nothing asks a share of it."""
    if cfg.pruning_ratio is None or cfg.manual_channels or (structured and global_scope):
        return
    ignored = ignored_modules(model, cfg.ignored_layers, cfg.keep_head, num_classes)
    left_alone = {id(m) for ig in ignored for m in ig.modules()}
    for name, layer in prunable_layers(model):
        if id(layer) in left_alone:
            continue
        ratio = cfg.max_layer_ratio if global_scope else min(cfg.layer_ratios.get(name, cfg.pruning_ratio),
                                                             cfg.max_layer_ratio)
        n = int(layer.weight.shape[0] if structured else layer.weight.numel())
        if structured:
            keeps = max(int(n * (1.0 - ratio)), least_kept(n, cfg.max_layer_ratio))
        else:
            keeps = n - (most_zeroed(n, ratio) if global_scope else round(ratio * n))
        if keeps < 1:
            what = "channel" if structured else "weight"
            raise UserError(f"ratio {ratio:g} would leave layer {name} ({n} {what}s) with no {what}; lower the ratio or "
                            f"the maximum layer ratio (--max-layer-ratio, now {cfg.max_layer_ratio:g}) so that every "
                            f"layer keeps at least one {what}")


def _activation_bytes(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
    """(input bytes, largest single layer output in bytes) for one image, measured with hooks."""
    largest = 0

    def hook(_module, _inputs, output) -> None:
        nonlocal largest
        if torch.is_tensor(output):
            largest = max(largest, output.numel() * output.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, *shape))
    finally:
        for h in handles:
            h.remove()
    return math.prod(shape) * 4, largest


def available_memory(device: str = "cpu") -> int:
    """Bytes free for a new allocation on the device."""
    if device.startswith("cuda") and torch.cuda.is_available():  # "cuda" or "cuda:N"
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    import psutil

    return int(psutil.virtual_memory().available)


def check_batch_memory(model: nn.Module, shape: tuple[int, ...], batch_size: int, device: str = "cpu") -> None:
    """Refuse a batch whose forward pass alone would need more memory than the machine has free."""
    if isinstance(model, torch.jit.ScriptModule):
        return  # hooks do not run inside TorchScript; its forward was already tried at batch 1
    per_image_in, per_image_act = _activation_bytes(model, shape)
    per_image = per_image_in + 2 * per_image_act  # a layer's input and output are alive together
    need = per_image * batch_size
    free = available_memory(device)
    if need > free:
        fits = max(1, 2 ** int(math.log2(max(1, free // max(1, per_image)))))
        raise UserError(f"--batch-size {batch_size} would need about {need / 2 ** 30:.1f} GiB for one forward pass, "
                        f"more than the {free / 2 ** 30:.1f} GiB free on {device}; use --batch-size {fits} or less")


def check_walkable(model: nn.Module, what: str = "structured pruning") -> None:
    """Refuse, in a second, a model whose dependency walk would not end (engine/families/)."""
    from engine.families import endless_walk

    reason = endless_walk(model)
    if reason:
        raise UserError(f"{what} cannot handle {reason}; use an unstructured method (e.g. --method magnitude-global)")


def check_run(cfg: "PruneConfig", bundle: "ModelBundle", memory: bool = True, cut: bool = True) -> None:
    """Everything about a pruning run that can be checked before the baseline is measured
    (`memory=False` skips the batch-memory probe, for configurations whose batch size was checked;
    `cut=False`, recovering only, skips what only cutting needs)."""
    method = cfg.validate()
    if method.structured and not bundle.scripted and cut:
        check_walkable(bundle.model)
    if bundle.input_shape:
        check_input_shape(tuple(bundle.input_shape))
    if not bundle.scripted:
        check_layers(cfg, bundle.model, bundle.num_classes)
        scope = cfg.scope if method.structured else getattr(method.factory(), "scope", "layer")
        if cut:
            check_layers_keep(cfg, bundle.model, bundle.num_classes, method.structured, scope == "global")
    if memory and bundle.input_shape:
        check_batch_memory(bundle.model, tuple(bundle.input_shape), cfg.batch_size, cfg.device)
