"""timm's DPN (DualPathBlock): the residual path and the dense path travel as one tensor, cut at a channel
count recorded at construction (`x[:, :num_1x1_c]`, `x[:, num_1x1_c:]`), and every block concatenates its
own dense channels behind the earlier ones.

torch-pruning moves a slice's bounds only when a cut reaches inside it, so a cut of the residual channels
left the dense slice's start behind, and the recorded count stays as built: it indexed past the end
(IndexError) while pruning. So the layers writing those paths are held (each block's projection and its last
convolutions: their rounding unit is their whole width, so the share check expects them
unpruned), and each block's inner widths (its 1×1 reduction and grouped 3×3 convolution) are pruned.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family


def dual_path_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, block) of blocks that cut one tensor into a residual and a dense path at a recorded count."""
    return [(n, m) for n, m in model.named_modules() if type(m).__module__ == "timm.models.dpn"
            and type(m).__name__ == "DualPathBlock" and isinstance(getattr(m, "num_1x1_c", None), int)]


def _conv(module: nn.Module | None) -> nn.Conv2d | None:
    return getattr(module, "conv", module)


def path_writers(model: nn.Module, blocks: list[nn.Module]) -> list[nn.Conv2d]:
    """The convolutions whose outputs are the dual paths: each block's projection and last convolution(s)
    (the stem's output is one tensor, read by the first block's projection)."""
    writers = []
    for block in blocks:
        last = ("c1x1_c1", "c1x1_c2") if block.c1x1_c1 is not None else ("c1x1_c",)
        for name in ("c1x1_w_s1", "c1x1_w_s2", *last):
            conv = _conv(getattr(block, name))
            if isinstance(conv, nn.Conv2d):
                writers.append(conv)
    return writers


@register_family
class DualPath(Family):
    name = "dual path"

    def detect(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        return dual_path_blocks(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        writers = path_writers(model, [block for _, block in found])
        prep.hold(writers)
        prep.notes.append(f"DPN: the residual and dense paths of its {len(found)} dual-path block(s) are not pruned "
                          "(one tensor cut at a channel count recorded at construction, which torch-pruning cannot "
                          f"move; {len(writers)} layers held); each block's inner widths are pruned")
