"""timm's DPN (DualPathBlock): the residual path and the dense path travel as one tensor, cut at a channel
count recorded at construction (`x[:, :num_1x1_c]`, `x[:, num_1x1_c:]`), and every block concatenates its
own dense channels behind the earlier ones.

torch-pruning moves a slice's bounds only when a cut reaches inside it, so a cut of the residual channels
left the dense slice's start behind, and the recorded count stays as built: it indexed past the end
(IndexError) while pruning. Such a model is refused before any work, naming the first block.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.errors import UserError
from engine.families import Family, register_family


def dual_path_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, block) of blocks that cut one tensor into a residual and a dense path at a recorded count."""
    return [(n, m) for n, m in model.named_modules() if type(m).__module__ == "timm.models.dpn"
            and type(m).__name__ == "DualPathBlock" and isinstance(getattr(m, "num_1x1_c", None), int)]


@register_family
class DualPath(Family):
    name = "dual path"

    def detect(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        return dual_path_blocks(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        name, block = found[0]
        raise UserError(f"structured pruning cannot prune this model: its block {name} (DualPathBlock, and "
                        f"{len(found) - 1} more) splits one tensor into its residual and dense paths at a channel "
                        f"count recorded when it was built ({block.num_1x1_c}), which torch-pruning cannot move "
                        "with the channels it cuts; unstructured pruning (e.g. --method magnitude-global) still works")
