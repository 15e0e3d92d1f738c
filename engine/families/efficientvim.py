"""timm's EfficientViM: hidden-state mixers (HSMSSD) whose hidden state also feeds the classifier's heads.

torch-pruning's dependency walk from the stem into the first mixer never ends (the coverage run saw it reach the
8 GiB memory limit after 547 s), so such a model is refused in a second (engine.checks.check_walkable), before
any work, with the unstructured methods that still work.
"""
from __future__ import annotations

import torch.nn as nn

from engine.families import Family, register_family


def hidden_state_mixers(model: nn.Module) -> list[str]:
    """Names of EfficientViM's HSMSSD mixers."""
    return [n for n, m in model.named_modules()
            if type(m).__module__ == "timm.models.efficientvim" and type(m).__name__ == "HSMSSD"]


@register_family
class EfficientViM(Family):
    name = "EfficientViM"

    def endless_walk(self, model: nn.Module) -> str | None:
        mixers = hidden_state_mixers(model)
        if not mixers:
            return None
        more = f" (and {len(mixers) - 1} more)" if len(mixers) > 1 else ""
        return (f"layer {mixers[0]}{more}: its hidden state also feeds the classifier's heads, and torch-pruning's "
                "dependency walk into it never ends")
