"""timm families taught for issue #29 (engine/families/: one module each), each on a tiny instance through the
engine's pruning (engine.pruners.trial_prune) and engine.verify.check_pruned, and each kept channel checked
against the real forward of the unpruned model."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from engine.config import PruneConfig
from engine.pruners import trial_prune
from engine.verify import check_pruned

timm = pytest.importorskip("timm")

RATIO = 0.3


def _prune(model: nn.Module, example: torch.Tensor, classes: int = 5) -> nn.Module:
    cfg = PruneConfig(method="l2", pruning_ratio=RATIO, scope="layer", round_to=1)
    return trial_prune(model, cfg, RATIO, example, classes)


def _outputs(model: nn.Module, layer: str, example: torch.Tensor) -> torch.Tensor:
    """What `layer` of `model` gives for `example` (eval mode)."""
    got = []
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: got.append(o))
    with torch.no_grad():
        model.eval()(example)
    handle.remove()
    return got[0]


# ----------------------------------------------------------------------------- NFNet

def tiny_nfnet() -> nn.Module:
    from timm.models.nfnet import NfCfg, NormFreeNet

    cfg = NfCfg(depths=(1, 1, 1, 1), channels=(16, 32, 48, 64), stem_chs=16, group_size=8, attn_layer="se", attn_kwargs={"rd_ratio": 0.5},
                reg=True, num_features=64)
    torch.manual_seed(0)
    model = NormFreeNet(cfg, num_classes=5).eval()
    for module in model.modules():  # gains that tell channels apart
        if isinstance(getattr(module, "gain", None), nn.Parameter):
            module.gain.data.uniform_(0.5, 2)
    return model


def test_nfnet_gains_follow_their_channels():
    """Weight-standardised convolutions keep one gain per kept output channel, their own: the stem's kept
    channels give what the same channels gave before pruning; the pruned model passes every check."""
    model, example = tiny_nfnet(), torch.randn(1, 3, 32, 32)
    before = _outputs(model, "stem.conv", example)
    pruned = _prune(model, example)
    conv = pruned.stem.conv
    assert conv.gain.shape[0] == conv.out_channels < model.stem.conv.out_channels
    # the kept rows of the weight tell which original channels survived
    kept = [next(i for i in range(model.stem.conv.out_channels)
                 if torch.equal(model.stem.conv.weight[i], row)) for row in conv.weight]
    assert torch.allclose(_outputs(pruned, "stem.conv", example), before[:, kept], atol=1e-5)
    params = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in pruned.parameters())
    assert check_pruned(pruned, example, params, after, None, onnx=True) == []
