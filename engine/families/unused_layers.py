"""Any model: layers with weights that an eval-mode forward pass never calls (torch-pruning traces in eval
mode, so it leaves them as they are; if train mode uses them, fine-tuning fails). Said in the notes."""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family


def unused_modules(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of leaf layers with weights that one eval-mode forward pass never calls."""
    seen: set[int] = set()
    leaves = [(n, m) for n, m in model.named_modules()
              if not list(m.children()) and any(True for _ in m.parameters(recurse=False))]
    hooks = [m.register_forward_hook(lambda mod, *_: seen.add(id(mod))) for _, m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [n for n, m in leaves if id(m) not in seen and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear)]


@register_family
class UnusedLayers(Family):
    name = "unused layers"
    order = 1  # after the auxiliary heads are dropped

    def detect(self, model: nn.Module) -> bool:
        return True  # needs the example: prepare runs the forward pass

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        unused = unused_modules(model, example)
        if unused:
            prep.notes.append(f"{len(unused)} layer(s) with weights are not used in eval mode and are left as they "
                              f"are (e.g. {', '.join(unused[:3])}); if train mode uses them, fine-tuning will fail")
