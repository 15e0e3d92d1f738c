"""timm's ReXNet: blocks that add their shortcut to only the first channels and concatenate the rest.

torch-pruning's dependency walk through that slice-add-concat never finishes, so such a model is refused
in a second (engine.checks.check_walkable), before any work, with the unstructured methods that still work.
"""
from __future__ import annotations

import torch.nn as nn

from engine.families import Family, register_family


def partial_shortcuts(model: nn.Module) -> list[tuple[str, int, int]]:
    """(name, shortcut channels, block channels) of blocks that add their shortcut to only the first
    channels and concatenate the rest."""
    return [(n, m.in_channels, m.out_channels) for n, m in model.named_modules()
            if type(m).__module__ == "timm.models.rexnet" and getattr(m, "use_shortcut", False) is True
            and isinstance(getattr(m, "in_channels", None), int) and isinstance(getattr(m, "out_channels", None), int)
            and m.in_channels < m.out_channels]


@register_family
class ReXNet(Family):
    name = "ReXNet"

    def endless_walk(self, model: nn.Module) -> str | None:
        blocks = partial_shortcuts(model)
        if not blocks:
            return None
        name, short, width = blocks[0]
        more = f" (and {len(blocks) - 1} more blocks)" if len(blocks) > 1 else ""
        return (f"layer {name}{more}: it adds its shortcut to the first {short} of its {width} channels and "
                "concatenates the rest, and torch-pruning's dependency walk through that never ends")
