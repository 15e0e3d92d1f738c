"""ModelBundle: a loaded model with what is needed to feed and describe it."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from engine.data import Normalization, Shape
from engine.errors import UserError


@dataclass
class ModelBundle:
    """A loaded model with what is needed to feed and describe it."""

    model: nn.Module
    source: str
    arch: str  # "demo:resnet", "torchvision:resnet18", "timm:NAME", "code:FILE.py:Class", "module", "torchscript"
    input_shape: Shape | None
    num_classes: int | None
    norm: Normalization | None = None
    class_names: tuple[str, ...] | None = None
    arch_kwargs: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def scripted(self) -> bool:
        """TorchScript models can be evaluated but not structurally pruned."""
        return isinstance(self.model, torch.jit.ScriptModule)

    def require_prunable(self) -> None:
        """Raise a clear error for models that cannot be pruned structurally."""
        if self.scripted:
            raise UserError(f"{self.source} is a TorchScript file: it can be evaluated but not pruned; "
                            "load the eager model (state_dict with --model-code) instead")

    def copy(self) -> "ModelBundle":
        """A deep copy, so pruning never touches the loaded original."""
        return ModelBundle(copy.deepcopy(self.model), self.source, self.arch, self.input_shape, self.num_classes,
                           self.norm, self.class_names, dict(self.arch_kwargs), copy.deepcopy(self.meta))
