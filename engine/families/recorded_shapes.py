"""A module that views its one vector parameter to a recorded `shape` (timm MetaFormer's Scale, in
PoolFormer and its kind: `scale.view(shape)`): torch-pruning shortens the vector, the recorded shape
must follow after each step."""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family


def recorded_shape(module: nn.Module) -> tuple[int, ...] | None:
    """The `shape` a module views its one vector parameter to, when it has one."""
    shape = getattr(module, "shape", None)
    params = list(module.parameters(recurse=False))
    if not (isinstance(shape, tuple) and shape and all(isinstance(s, int) for s in shape)) or len(params) != 1:
        return None
    return shape if params[0].dim() == 1 and sum(s != 1 for s in shape) == 1 else None


def fix_recorded_shapes(model: nn.Module) -> list[str]:
    """After a step: each recorded shape takes its vector's new length."""
    for module in model.modules():
        shape = recorded_shape(module)
        if shape is not None:
            size = next(module.parameters(recurse=False)).numel()
            module.shape = tuple(size if s != 1 else 1 for s in shape)
    return []


@register_family
class RecordedShapes(Family):
    name = "recorded shapes"
    order = 5  # its fix runs before the others' (they may run the model)

    def detect(self, model: nn.Module) -> bool:
        return any(recorded_shape(m) for m in model.modules())

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.fixes.append(fix_recorded_shapes)
