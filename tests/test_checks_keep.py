"""engine.checks.check_layers_keep refuses only what pruning would really empty: a 1-channel layer (timm's
CSATv2 has one) keeps its channel at ratio 0.3, as the pruner keeps it; a ratio that empties a layer is still
refused in one line."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from engine.checks import check_layers_keep
from engine.config import PruneConfig
from engine.errors import UserError
from engine.pruners import trial_prune


class OneChannelGate(nn.Module):
    """A spatial gate through a 1-channel convolution, the shape of CSATv2's attention convolution."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.gate = nn.Conv2d(16, 1, 3, padding=1)
        self.body = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = self.stem(x)
        x = x * torch.sigmoid(self.gate(x))
        return self.fc(self.body(x).mean((2, 3)))


def _check(cfg: PruneConfig, structured: bool = True, global_scope: bool = False) -> None:
    check_layers_keep(cfg, OneChannelGate(), 5, structured, global_scope)


def test_a_one_channel_layer_is_kept_not_refused():
    cfg = PruneConfig(method="l2", pruning_ratio=0.3, scope="layer", round_to=1)
    _check(cfg)  # int(1 * 0.7) is 0, but the maximum layer ratio 0.9 leaves the layer its one channel
    torch.manual_seed(0)
    model = OneChannelGate().eval()
    pruned = trial_prune(model, cfg, 0.3, torch.randn(2, 3, 8, 8), 5)
    assert pruned.gate.out_channels == 1 and pruned.body.out_channels < 32
    assert pruned(torch.randn(2, 3, 8, 8)).shape == (2, 5)


def test_a_ratio_that_empties_a_layer_is_still_refused():
    with pytest.raises(UserError, match=r"layer gate \(1 channels\) with no channel") as info:
        _check(PruneConfig(method="l2", pruning_ratio=0.3, scope="layer", max_layer_ratio=1.0))
    assert "\n" not in str(info.value)


def test_global_unstructured_is_judged_by_the_pruners_cap():
    """CSATv2's qkv has 3 weights: at most int(0.9 * 3) = 2 may go under global scope (round would say 3)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 5))
    cfg = PruneConfig(method="magnitude-global", pruning_ratio=0.3)
    check_layers_keep(cfg, model, 5, False, True)
    with pytest.raises(UserError, match=r"layer 1 \(3 weights\) with no weight"):
        check_layers_keep(PruneConfig(method="magnitude-global", pruning_ratio=0.3, max_layer_ratio=1.0), model, 5,
                          False, True)
