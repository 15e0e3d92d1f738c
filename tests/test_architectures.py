"""engine.architectures on tiny models: an auxiliary head, a grouped convolution narrower than
round_to, a transformer block; each pruned with MetaPruner + prepare passes check_pruned, and the
failure without prepare shows where there is one."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp
from torchvision.models.googlenet import GoogLeNet
from torchvision.models.vision_transformer import VisionTransformer

from engine.architectures import prepare
from engine.verify import check_pruned

RATIO = 0.3


class AuxNet(nn.Module):
    """Like GoogLeNet: an auxiliary classifier used only in train mode."""

    def __init__(self) -> None:
        super().__init__()
        self.aux_logits = True
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.aux1 = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        aux = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.fc(self.body(x).mean((2, 3)))
        return (x, aux) if self.training and self.aux_logits else x


class GroupedNet(nn.Module):
    """A RegNet-like bottleneck whose grouped convolution has groups of 4 channels (round_to is 8)."""

    def __init__(self, width: int = 48, group_width: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a = nn.Sequential(nn.Conv2d(16, width, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, groups=width // group_width),
                               nn.BatchNorm2d(width), nn.ReLU())
        self.c = nn.Sequential(nn.Conv2d(width, 64, 1), nn.BatchNorm2d(64), nn.ReLU())
        self.fc = nn.Linear(64, 5)

    def forward(self, x):
        return self.fc(self.c(self.b(self.a(self.stem(x)))).mean((2, 3)))


def tiny_vit() -> VisionTransformer:
    return VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64,
                             num_classes=5)


def _prune(model: nn.Module, example: torch.Tensor, head: nn.Module, with_prepare: bool, round_to: int = 8):
    """Prune `model` in place at RATIO (layer scope); returns (params before, preparation or None, original)."""
    prep = prepare(model, example, round_to) if with_prepare else None
    before = sum(p.numel() for p in model.parameters())
    original = copy.deepcopy(model)
    base = tp.pruner.MetaPruner
    cls = prep.pruner_class(base) if prep else base
    pruner = cls(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=RATIO,
                 ignored_layers=[head], round_to=round_to, **(prep.pruner_kwargs if prep else {}))
    pruner.step()
    if prep:
        prep.after_step(model)
    return before, prep, original


def _check(model, example, before, prep, original, round_to=8):
    after = sum(p.numel() for p in model.parameters())
    return check_pruned(model, example, before, after, RATIO, original=original, round_to=round_to,
                        units=prep.units if prep else None, ignored=("fc", "heads.head"))


def test_auxiliary_head_is_dropped_and_training_works():
    example = torch.randn(1, 3, 16, 16)
    plain = AuxNet().eval()
    before, prep, original = _prune(plain, example, plain.fc, with_prepare=False)
    problems = _check(plain, example, before, prep, original)
    assert any("train forward" in p for p in problems), problems  # the aux head still expects 16 channels

    model = AuxNet().eval()
    before, prep, original = _prune(model, example, model.fc, with_prepare=True)
    assert model.aux1 is None and not model.aux_logits
    assert prep.dropped_params == 16 * 5 + 5 and any("auxiliary" in n for n in prep.notes)
    assert _check(model, example, before, prep, original) == []


def test_googlenet_drops_both_auxiliary_heads():
    model = GoogLeNet(num_classes=5, aux_logits=True, init_weights=False).eval()
    prep = prepare(model, torch.randn(1, 3, 64, 64), 8)
    assert model.aux1 is None and model.aux2 is None and prep.dropped_params > 0
    model.train()
    assert isinstance(model(torch.randn(2, 3, 64, 64)), torch.Tensor)  # logits, not GoogLeNetOutputs


def test_grouped_convolution_below_round_to_follows_the_ratio():
    example = torch.randn(1, 3, 8, 8)
    plain = GroupedNet().eval()
    before, prep, original = _prune(plain, example, plain.fc, with_prepare=False)
    # torch-pruning rounds the 4-channel groups with the layer's 48 channels: every group would go, so the
    # whole grouped block is skipped.
    assert plain.b[0].out_channels == 48
    assert any("not pruned" in p for p in _check(plain, example, before, prep, original))

    model = GroupedNet().eval()
    before, prep, original = _prune(model, example, model.fc, with_prepare=True)
    conv = model.b[0]
    assert conv.groups == 12 and conv.out_channels == 12 * 2  # int(4 × 0.7) = 2 of 4 channels per group
    assert prep.units[conv] == 12 and any("grouped convolution" in n for n in prep.notes)
    assert _check(model, example, before, prep, original) == []


def test_grouped_rounding_keeps_multiples_of_round_to_when_groups_allow():
    example = torch.randn(1, 3, 8, 8)
    model = GroupedNet(width=64, group_width=32).eval()  # 2 groups of 32: unit 4 per group, 8 per layer
    before, prep, original = _prune(model, example, model.fc, with_prepare=True)
    assert model.b[0].out_channels == 2 * 24  # int(32 × 0.7) = 22, to the nearest multiple of 4 (half up)
    assert model.b[0].out_channels % 8 == 0
    assert _check(model, example, before, prep, original) == []


def test_vit_block_prunes_whole_heads_and_runs():
    example = torch.randn(1, 3, 32, 32)
    plain = tiny_vit().eval()
    before, prep, original = _prune(plain, example, plain.heads.head, with_prepare=False)
    assert any("eval forward fails" in p for p in _check(plain, example, before, prep, original))

    model = tiny_vit().eval()
    before, prep, original = _prune(model, example, model.heads.head, with_prepare=True)
    attention = model.encoder.layers[0].self_attention
    assert model.hidden_dim == model.conv_proj.out_channels == 16  # one whole head of 16 channels left
    assert attention.num_heads == 1 and attention.head_dim == 16
    assert model.encoder.layers[0].num_heads == 1
    assert _check(model, example, before, prep, original) == []


def test_check_pruned_flags_a_share_far_from_the_ratio():
    model = GroupedNet().eval()
    params = sum(p.numel() for p in model.parameters())
    problems = check_pruned(model, torch.randn(1, 3, 8, 8), params, params, RATIO, onnx=False)
    assert len(problems) == 1 and "kept 100.0% of the parameters" in problems[0]
    assert check_pruned(model, torch.randn(1, 3, 8, 8), params, int(params * 0.55), RATIO, onnx=False) == []


@pytest.mark.parametrize("ratio, heads", [(0.2, 3), (0.5, 2)])  # 4 heads of 8: 32 × 0.8 = 25.6 → 3 heads
def test_tiny_vit_two_steps(ratio, heads):
    """Iterative pruning: sizes are updated after each step, so the second step traces a consistent model."""
    example = torch.randn(1, 3, 32, 32)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=4, hidden_dim=32, mlp_dim=64,
                              num_classes=5).eval()
    prep = prepare(model, example, 8)
    cls = prep.pruner_class(tp.pruner.MetaPruner)
    pruner = cls(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
                 iterative_steps=2, ignored_layers=[model.heads.head], round_to=8)
    for _ in range(2):
        pruner.step()
        prep.after_step(model)
        model(example)
    attention = model.encoder.layers[0].self_attention
    assert attention.head_dim == 8 and attention.num_heads == model.hidden_dim // 8 == heads


# ----------------------------------------------------------------------------- timm attention

def tiny_timm_vit(num_heads: int = 2, **kw):
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    return TimmViT(**{**dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=num_heads, num_classes=5),
                      **kw}).eval()


def test_timm_vit_prunes_whole_heads_and_runs():
    example = torch.randn(1, 3, 32, 32)
    plain = tiny_timm_vit()
    before, prep, original = _prune(plain, example, plain.head, with_prepare=False)
    # timm reshapes qkv with the recorded num_heads and head_dim, which torch-pruning leaves as they were
    assert any("eval forward fails" in p for p in _check(plain, example, before, prep, original))

    model = tiny_timm_vit()
    scale = model.blocks[0].attn.scale
    before, prep, original = _prune(model, example, model.head, with_prepare=True)
    attn = model.blocks[0].attn
    assert attn.num_heads == 1 and attn.head_dim == 16 and attn.scale == scale  # one whole head of 16 left
    assert attn.qkv.out_features == 3 * 16 and attn.proj.in_features == attn.attn_dim == 16
    assert prep.units[attn.qkv] == 3 * 16 and any("fused qkv" in n for n in prep.notes)
    assert _check(model, example, before, prep, original) == []


def test_timm_vit_keeps_the_strongest_head_with_its_q_k_and_v():
    """Heads go whole by their score, and a kept head keeps its own q, k and v rows."""
    example = torch.randn(1, 3, 32, 32)
    model = tiny_timm_vit(num_heads=4)  # 4 heads of 8: ratio 0.3 keeps 2.8, to the nearest whole head 3
    attn = model.blocks[0].attn
    with torch.no_grad():
        for part in range(3):  # head 1's rows in q, k and v
            attn.qkv.weight[part * 32 + 8:part * 32 + 16].mul_(100)
        attn.proj.weight[:, 8:16].mul_(100)
    _prune(model, example, model.head, with_prepare=True)
    attn = model.blocks[0].attn
    assert attn.num_heads == 3 and attn.head_dim == 8 and attn.proj.in_features == 24
    big = [h for h in range(3) if attn.proj.weight[:, h * 8:(h + 1) * 8].abs().mean() > 0.3]
    assert len(big) == 1
    for part in range(3):
        rows = attn.qkv.weight[part * 24:(part + 1) * 24].abs().mean(1)
        assert (rows[big[0] * 8:(big[0] + 1) * 8] > 0.3).all() and (rows.view(3, 8).mean(1) > 0.3).sum() == 1


@pytest.mark.parametrize("ratio, heads", [(0.2, 3), (0.5, 2)])  # 4 heads of 8, as torchvision's two-step test
def test_timm_vit_two_steps(ratio, heads):
    example = torch.randn(1, 3, 32, 32)
    model = tiny_timm_vit(num_heads=4)
    prep = prepare(model, example, 8)
    cls = prep.pruner_class(tp.pruner.MetaPruner)
    pruner = cls(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
                 iterative_steps=2, ignored_layers=[model.head], round_to=8, **prep.pruner_kwargs)
    for _ in range(2):
        pruner.step()
        prep.after_step(model)
        model(example)
    attn = model.blocks[0].attn
    assert attn.head_dim == 8 and attn.num_heads == attn.proj.in_features // 8 == heads


def test_pruner_does_not_keep_models_alive_through_shared_defaults():
    """torch-pruning's default channel-group dicts are shared between pruners and filled in place."""
    example = torch.randn(1, 3, 8, 8)
    model = GroupedNet().eval()
    prep = prepare(model, example, 8)
    pruner = prep.pruner_class(tp.pruner.MetaPruner)(
        model, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=RATIO,
        ignored_layers=[model.fc], round_to=8)
    assert model.b[0] in pruner.in_channel_groups
    fresh = tp.pruner.MetaPruner.__init__.__defaults__
    assert not any(isinstance(d, dict) and model.b[0] in d for d in fresh)


def test_timm_vit_through_the_pipeline(fashion):
    """run_pruning (with one fine-tuning batch) on a tiny timm ViT: the pruned model passes check_pruned."""
    from engine.config import PruneConfig
    from engine.events import result_of
    from engine.models import ModelBundle
    from engine.pruning import RunDone, run_pruning

    torch.manual_seed(0)
    model = tiny_timm_vit(img_size=28, patch_size=7, in_chans=1, num_classes=10)
    bundle = ModelBundle(model, "test", "module", (1, 28, 28), 10, fashion.norm, None)
    cfg = PruneConfig(method="l2", pruning_ratio=RATIO, round_to=8, eval_limit=64, measure_speed=False,
                      finetune_batches=1, batch_size=16)
    result = result_of(run_pruning(bundle, fashion, cfg))
    done = result.run
    assert isinstance(done, RunDone), done
    assert done.after.params < done.before.params
    pruned = result.bundle.model
    attn = pruned.blocks[0].attn
    assert attn.num_heads == 1 and attn.head_dim == 16 and attn.attn_dim == 16
    # the pipeline checked the share with its own rounding units (a failure would be in the notes)
    assert not any("the parameters; ratio" in n or "channels, " in n for n in done.notes), done.notes
    assert check_pruned(pruned, torch.randn(1, 1, 28, 28), done.before.params, done.after.params, None) == []


def test_maxvit_holds_its_attention_and_prunes_the_rest():
    """torch-pruning's walk from MaxViT's to_qkv never ends (10 GiB at 224×224): attention and the stream
    it writes to stay, the MBConv and MLP widths go, and the share check expects exactly that."""
    from torchvision.models import MaxVit

    example = torch.randn(1, 3, 32, 32)
    model = MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[16, 32],
                   block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=5).eval()
    before, prep, original = _prune(model, example, model.classifier[-1], with_prepare=True)
    attn = [m for m in model.modules() if type(m).__name__ == "RelativePositionalMultiHeadAttention"]
    assert len(attn) == 4 and all(a.to_qkv.out_features == 3 * a.merge.in_features for a in attn)
    assert [a.merge.out_features for a in attn] == [16, 16, 32, 32]  # the residual stream is kept
    mlp = model.blocks[0].layers[0].layers.window_attention.mlp_layer[1]
    assert mlp.out_features == 48  # 64 × 0.7 = 44.8, to the nearest multiple of 8
    assert prep.units[attn[0].merge] == 16 and any("MaxViT" in n for n in prep.notes)
    assert _check(model, example, before, prep, original) == []


def _tiny_swin(v2: bool) -> nn.Module:
    from torchvision.models.swin_transformer import (PatchMergingV2, SwinTransformer, SwinTransformerBlockV2)

    extra = {"block": SwinTransformerBlockV2, "downsample_layer": PatchMergingV2} if v2 else {}
    return SwinTransformer(patch_size=[4, 4], embed_dim=48, depths=[2, 2], num_heads=[3, 6], window_size=[2, 2],
                           stochastic_depth_prob=0.0, num_classes=5, **extra).eval()


@pytest.mark.parametrize("v2", [False, True], ids=["swin", "swin_v2"])
def test_swin_prunes_its_stream_with_equal_heads(v2):
    """torchvision's Swin (whose dependency walk ran out of memory) prunes: window attention and patch
    merging are units, every head keeps the same size, and the result matches a forward pass."""
    from engine.families.swin import window_blocks

    torch.manual_seed(0)
    example = torch.randn(2, 3, 32, 32)
    model = _tiny_swin(v2)
    before, prep, original = _prune(model, example, model.head, with_prepare=True)
    attentions, mergings = window_blocks(model)
    assert [a.num_heads for a in attentions] == [3, 3, 6, 6]  # head counts stay
    for attn in attentions:
        width = attn.qkv.in_features
        assert width < 48 * (2 if attn.num_heads == 6 else 1)  # the stream was pruned
        assert width % attn.num_heads == 0 and attn.qkv.out_features == 3 * width == 3 * attn.proj.in_features
    merging = mergings[0]
    assert merging.reduction.in_features == 4 * merging.dim == 4 * attentions[0].proj.out_features
    assert merging.reduction.out_features == attentions[2].qkv.in_features
    assert any("Swin" in n for n in prep.notes)
    assert _check(model, example, before, prep, original) == []
    assert model(example).shape == (2, 5)


def test_swin_attention_keeps_the_kept_channels_weights():
    """The stream's kept channels are the same in q, k, v and the projection: their weights are the originals'."""
    from engine.families.swin import window_blocks

    torch.manual_seed(0)
    example = torch.randn(2, 3, 32, 32)
    model = _tiny_swin(False)
    original = copy.deepcopy(model)
    _prune(model, example, model.head, with_prepare=True)
    embed_old, embed_new = original.features[0][0].weight, model.features[0][0].weight  # the patch embedding
    kept = [next(i for i in range(48) if torch.equal(embed_old[i], row)) for row in embed_new]
    old, new = window_blocks(original)[0][0], window_blocks(model)[0][0]
    assert torch.equal(new.qkv.weight.view(3, len(kept), len(kept)), old.qkv.weight.view(3, 48, 48)[:, kept][:, :, kept])
    assert torch.equal(new.proj.weight, old.proj.weight[kept][:, kept])


def test_timm_swin_prunes_the_stream_and_keeps_the_attention_width():
    """timm's Swin partitions windows in the block: the block's attention is one unit; its own width
    (q, k, v) stays, the stream and MLP widths go."""
    import timm

    from engine.families.swin import window_blocks

    torch.manual_seed(0)
    example = torch.randn(2, 3, 32, 32)
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=32, window_size=2,
                              embed_dim=48, depths=(2, 2), num_heads=(3, 6), num_classes=5).eval()
    before, prep, original = _prune(model, example, model.head.fc, with_prepare=True)
    attentions, mergings = window_blocks(model)
    assert len(attentions) == 4 and len(mergings) == 1
    assert [a.qkv.out_features for a in attentions] == [144, 144, 288, 288]  # the attention's own width stays
    assert attentions[0].qkv.in_features < 48 and attentions[0].proj.out_features == attentions[0].qkv.in_features
    assert mergings[0].reduction.in_features == 4 * mergings[0].dim
    after = sum(p.numel() for p in model.parameters())
    assert check_pruned(model, example, before, after, RATIO, original=original, round_to=8, units=prep.units,
                        ignored=("head.fc",)) == []


def test_shufflenet_holds_its_stream_and_prunes_each_branch_inside():
    """ShuffleNet v2's channel shuffle is a permutation torch-pruning cannot follow: the layers writing the
    stream stay whole, and each branch's inner width loses the same channels in its three layers."""
    from torchvision.models.shufflenetv2 import ShuffleNetV2

    from engine.families.shufflenet import held_layers, shuffle_blocks

    torch.manual_seed(0)
    example = torch.randn(2, 3, 32, 32)
    model = ShuffleNetV2([2, 1, 1], [8, 16, 32, 64, 128], num_classes=5).eval()
    original = copy.deepcopy(model)
    before, prep, _ = _prune(model, example, model.fc, with_prepare=True, round_to=None)
    assert [m.out_channels for m in held_layers(model)] == [m.out_channels for m in held_layers(original)]
    old, new = shuffle_blocks(original)[1], shuffle_blocks(model)[1]  # a stride-1 block
    inner = new.branch2[0].out_channels
    assert inner < old.branch2[0].out_channels
    kept = [next(i for i in range(old.branch2[0].out_channels) if torch.equal(old.branch2[0].weight[i], row))
            for row in new.branch2[0].weight]
    assert torch.equal(new.branch2[3].weight, old.branch2[3].weight[kept])  # depthwise: one filter per channel
    assert torch.equal(new.branch2[5].weight, old.branch2[5].weight[:, kept])
    assert any("ShuffleNet" in n for n in prep.notes)
    assert _check(model, example, before, prep, original, round_to=None) == []


def test_concatenated_layers_are_judged_by_the_group_not_each_alone():
    """CSPNet gates its concatenated halves together, so both halves are one group and the ranking
    decides which half loses the group's channels (one may lose two thirds, the other none): the
    share check accepts that, and still checks the model's total."""
    import timm

    torch.manual_seed(0)
    example = torch.randn(2, 3, 64, 64)
    model = timm.create_model("cspnext_tiny", pretrained=False, num_classes=5).eval()
    before, prep, original = _prune(model, example, model.head.fc, with_prepare=True)
    halves = model.stages[0][1]
    assert halves.short_conv.conv.out_channels != halves.main_conv.conv.out_channels  # unevenly cut
    after = sum(p.numel() for p in model.parameters())
    assert check_pruned(model, example, before, after, RATIO, original=original, round_to=8, units=prep.units,
                        ignored=("head.fc",)) == []


def test_swin_stream_is_left_to_runs_by_the_scan_and_manual_ticks(fashion):
    """A scan or a hand-picked cut removes arbitrary channels, which would shift Swin's head boundaries: the
    scan leaves the stream's groups out, and ticking a stream layer is refused before any work."""
    from engine.config import PruneConfig
    from engine.errors import UserError
    from engine.models import ModelBundle
    from engine.pruning import run_pruning
    from engine.sensitivity import layer_groups

    model = _tiny_swin(False)
    roots = [root for root, _, _ in layer_groups(model, (3, 32, 32), 5)]
    assert roots and all(".mlp.0" in r for r in roots)  # only the MLPs' inner widths
    bundle = ModelBundle(model, "test", "module", (3, 32, 32), 5, fashion.norm, None)
    cfg = PruneConfig(method="manual", manual_channels={"features.0.0": [0, 1, 2]}, eval_limit=8,
                      measure_speed=False)
    with pytest.raises(UserError, match="features.0.0 must lose the same channels in every attention head"):
        list(run_pruning(bundle, fashion, cfg))


def test_a_pruned_swin_traces_again():
    """Stages are rounded separately, so patch merging's output need not be a multiple of its input any
    more (36 → 78 here): the model can still be traced (loaded, explained, pruned again)."""
    from engine.config import PruneConfig
    from engine.layers import describe_layers
    from engine.pruners import trial_prune
    from engine.families.swin import window_blocks

    example = torch.zeros(1, 3, 32, 32)
    pruned = trial_prune(_tiny_swin(False), PruneConfig(method="l2", pruning_ratio=0.15, round_to=8), 0.15, example, 5)
    merging = window_blocks(pruned)[1][0]
    assert merging.reduction.out_features % merging.dim != 0
    assert describe_layers(pruned, (3, 32, 32))  # traces, with groups
    again = trial_prune(pruned, PruneConfig(method="l2", pruning_ratio=0.15, round_to=8), 0.15, example, 5)
    assert sum(p.numel() for p in again.parameters()) < sum(p.numel() for p in pruned.parameters())


class GhostNet(nn.Module):
    """Like GhostNet: a ghost module concatenates a layer with its own depthwise copy and adds the
    stem, so the stem's channels i and i + 8 can only go together."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.primary = nn.Sequential(nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.cheap = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        a = self.primary(x)
        return self.fc((x + torch.cat([a, self.cheap(a)], 1)).mean((2, 3)))


@pytest.mark.parametrize("round_to, kept_pairs", [(None, 5), (8, 4)])
def test_ghost_channels_tied_by_a_concatenation_go_in_pairs(round_to, kept_pairs):
    """At 0.3 the stem keeps int(16 × 0.7) = 11 channels, in whole pairs (10), or rounded to the nearest
    round_to (8): plain torch-pruning cut 6 stem channels and took their 6 partners with them."""
    torch.manual_seed(0)
    model, example = GhostNet().eval(), torch.randn(2, 3, 16, 16)
    before, prep, original = _prune(model, example, model.fc, with_prepare=True, round_to=round_to)
    assert model.primary[0].out_channels == model.cheap[0].out_channels == kept_pairs
    assert model.stem[0].out_channels == 2 * kept_pairs
    # the stem keeps both halves of each kept pair, with their original weights
    rows = original.stem[0].weight.flatten(1)
    kept = [int((rows - w).abs().sum(1).argmin()) for w in model.stem[0].weight.flatten(1)]
    primary_kept = kept[:kept_pairs]
    assert kept == primary_kept + [i + 8 for i in primary_kept]
    assert torch.equal(model.stem[0].weight, original.stem[0].weight[kept])
    assert _check(model, example, before, prep, original, round_to=round_to or 1) == []


def test_a_recorded_view_shape_follows_its_pruned_scale():
    """timm MetaFormer's Scale views its vector to a shape recorded at construction: after pruning the
    shape follows, and each kept channel keeps its own scale value."""
    from timm.models.metaformer import Scale

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, padding=1)
            self.scale = Scale(16, use_nchw=True)
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            return self.fc(self.scale(self.conv(x)).mean((2, 3)))

    torch.manual_seed(0)
    model, example = Scaled().eval(), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        model.scale.scale.copy_(torch.arange(16.0) + 1)  # channel i scaled by i + 1
    before, prep, original = _prune(model, example, model.fc, with_prepare=True)
    kept = [int((original.conv.weight.flatten(1) - w).abs().sum(1).argmin()) for w in model.conv.weight.flatten(1)]
    assert len(kept) < 16 and model.scale.shape == (len(kept), 1, 1)
    assert model.scale.scale.tolist() == [i + 1.0 for i in kept]
    model(example)  # runs with the pruned width


def test_families_are_registered_modules_and_a_new_one_is_one_file():
    """Every module of engine/families registers its family; prepare walks the registry in order, so a family
    registered anywhere is used without touching prepare."""
    import pkgutil

    import engine.families as families

    names = [f.name for f in families.all_families()]
    modules = [m.name for m in pkgutil.iter_modules(families.__path__) if not m.name.startswith("_")]
    assert len(names) == len(modules) == len(set(names)) >= 11
    assert {"Swin", "ResNeSt", "ShuffleNet", "MaxViT", "auxiliary heads", "attention heads", "concatenations",
            "grouped convolutions", "torchvision ViT", "recorded shapes"} <= set(names)
    orders = [f.order for f in families.all_families()]
    assert orders == sorted(orders) and names.index("auxiliary heads") == 0

    @families.register_family
    class Marked(families.Family):
        name = "marked for the test"

        def detect(self, model):
            return getattr(model, "marked", False)

        def prepare(self, model, found, prep, example, round_to):
            prep.notes.append("a family of its own")

    try:
        model = GroupedNet().eval()
        assert "a family of its own" not in prepare(model, torch.randn(1, 3, 8, 8), 8).notes
        model.marked = True
        prep = prepare(model, torch.randn(1, 3, 8, 8), 8)
        assert "a family of its own" in prep.notes and prep.found["marked for the test"] is True
        with pytest.raises(ValueError, match="name of its own"):
            families.register_family(Marked)
    finally:
        families.REGISTRY[:] = [f for f in families.REGISTRY if f.name != "marked for the test"]
