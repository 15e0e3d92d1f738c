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


def _refusal(model: nn.Module, example: torch.Tensor) -> str:
    """The one-line UserError a structured prune of `model` is refused with."""
    from engine.errors import UserError

    with pytest.raises(UserError) as info:
        _prune(model, example)
    message = str(info.value)
    assert "\n" not in message, message
    return message


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
    assert _pruned_checks(model, pruned, example) == []


# ----------------------------------------------------------------------------- attention with recorded sizes

def tiny_attention_model(kind: str) -> tuple[nn.Module, torch.Tensor]:
    """A few-block TinyViT, EfficientFormer or LeViT (their attention reshapes with recorded head sizes)."""
    torch.manual_seed(0)
    if kind == "tinyvit":
        from timm.models.tiny_vit import TinyVit

        model = TinyVit(num_classes=5, embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 2),
                        window_sizes=(2, 2, 2, 2), drop_path_rate=0.0)
        return model.eval(), torch.randn(1, 3, 64, 64)
    if kind == "efficientformer":
        from timm.models.efficientformer import EfficientFormer

        model = EfficientFormer(depths=(1, 1, 1, 2), embed_dims=(16, 32, 48, 64), num_vit=1, num_classes=5)
        return model.eval(), torch.randn(1, 3, 224, 224)  # its attention's bias table is for 7×7 tokens
    from timm.models.levit import Levit

    model = Levit(img_size=64, num_classes=5, embed_dim=(32, 48, 64), key_dim=8, depth=(1, 1, 1), num_heads=(2, 2, 2))
    return model.eval(), torch.randn(1, 3, 64, 64)


@pytest.mark.parametrize("kind", ["tinyvit", "efficientformer", "levit"])
def test_recorded_attention_keeps_its_heads_and_prunes_the_rest(kind):
    """The attention's head layers keep every output (their own rows), lose only the stream's pruned inputs
    (their own columns); the stream, MLPs and convolutions are pruned near the ratio; every check passes."""
    from engine.families.recorded_attention import recorded_attentions

    model, example = tiny_attention_model(kind)
    pruned = _prune(model, example)
    names = dict(model.named_modules())
    attentions = recorded_attentions(pruned)
    assert attentions
    for attention in attentions:
        name = next(n for n, m in pruned.named_modules() if m is attention)
        for inner, layer in attention.named_modules():
            if not isinstance(layer, (nn.Linear, nn.Conv2d)) or inner.split(".")[0] == "proj":
                continue
            old = names[f"{name}.{inner}"].weight
            assert layer.weight.shape[0] == old.shape[0], f"{name}.{inner} lost outputs"
            kept = [next(j for j in range(old.shape[1]) if torch.equal(old[:, j], col))
                    for col in layer.weight.unbind(1)]
            assert kept == sorted(kept)  # the kept inputs, each with its own weights, in order
    params, after = _param_counts(model, pruned)
    assert after < 0.8 * params
    assert check_pruned(pruned, example, params, after, None, onnx=True) == []
    with torch.no_grad():  # the stream really is narrower
        assert pruned(example).shape == (1, 5)


def test_edgenext_holds_its_split_transpose_blocks_and_prunes_the_rest():
    """EdgeNeXt's split-transpose blocks cut the stream in chunks of a recorded width and reshape their
    attention's output with its input's width (it was refused): they are held with their stages' stream,
    every held layer keeping its weights; the first stage's stream and every MLP lose channels, each kept
    unit with its own weights; every check passes."""
    from engine.families.edgenext import _held, split_transpose_blocks

    torch.manual_seed(0)
    model = timm.create_model("edgenext_xx_small", num_classes=5).eval()
    example = torch.randn(1, 3, 64, 64)
    pruned = _prune(model, example)
    blocks = list(zip(split_transpose_blocks(model), split_transpose_blocks(pruned)))
    assert len(blocks) == 3
    for old, new in blocks:
        for was, now in zip(_held(old), _held(new)):
            assert torch.equal(now.weight, was.weight)
    assert pruned.stem[0].out_channels < model.stem[0].out_channels  # the first stage's stream
    for name, old in model.named_modules():
        if not name.endswith(".mlp") or name.startswith("stages.0"):  # the first stage's: its stream went too
            continue
        new = pruned.get_submodule(name)
        _assert_mlp_lost_hidden_channels_in_place(old, new)
    params, after = _param_counts(model, pruned)
    assert after < 0.85 * params
    assert check_pruned(pruned, example, params, after, None) == []


def test_depthwise_convolution_with_several_outputs_per_input_is_refused_naming_it():
    """FastViT-style C → 2C depthwise convolution on the stream: refused in one line naming it (torch-pruning
    indexed past its one-channel input and blamed another layer)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3, groups=16), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5)).eval()
    message = _refusal(model, torch.randn(1, 3, 16, 16))
    assert "layer 2 " in message and "16 → 32" in message


def test_depthwise_convolution_on_the_image_is_no_obstacle():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 12, 3, groups=3), nn.ReLU(), nn.Conv2d(12, 16, 3), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)).eval()
    pruned = _prune(model, torch.randn(1, 3, 16, 16))
    assert pruned[2].out_channels < 16


# ----------------------------------------------------------------------------- Visformer's position embeddings

def test_channels_first_position_embeddings_lose_the_streams_channels():
    """Visformer adds (1, C, H, W) position embeddings to its stream: they lose the stream's channels (not
    their width), so the stream is pruned near the ratio and each kept channel keeps its own embedding."""
    from timm.models.visformer import Visformer

    torch.manual_seed(0)
    model = Visformer(img_size=32, init_channels=8, embed_dim=48, depth=(1, 1, 1), attn_stage="000", num_classes=5).eval()
    for stage in (1, 2, 3):  # embeddings and biases that tell channels apart
        getattr(model, f"pos_embed{stage}").data.normal_()
        getattr(model, f"patch_embed{stage}").proj.bias.data.normal_()
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    for stage in (1, 2, 3):
        proj, old = getattr(pruned, f"patch_embed{stage}").proj, getattr(model, f"patch_embed{stage}").proj
        embedding = getattr(pruned, f"pos_embed{stage}")
        assert embedding.shape[1] == proj.out_channels and 0.6 <= proj.out_channels / old.out_channels <= 0.8
        # the kept channels by their biases (their inputs went too), each with its own embedding
        kept = [next(i for i in range(old.out_channels) if old.bias[i] == b) for b in proj.bias]
        assert torch.equal(embedding, getattr(model, f"pos_embed{stage}")[:, kept])
    assert _pruned_checks(model, pruned, example) == []


# ----------------------------------------------------------------------------- split/concat blocks

def _mark_channels(model: nn.Module) -> None:
    """Every BatchNorm gets scales that name its channels (all distinct), so a pruned copy's BatchNorms say
    which channels they kept."""
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data = 0.5 + torch.rand(module.num_features)
            module.running_mean.data.normal_(0, 0.1)


def _kept(old: nn.BatchNorm2d, new: nn.BatchNorm2d) -> list[int]:
    return [int((old.weight == w).nonzero()[0, 0]) for w in new.weight]


def _same_as_masked(model: nn.Module, pruned: nn.Module, example: torch.Tensor) -> None:
    """The pruned model computes what the original computes with the pruned channels zeroed after each
    BatchNorm (each kept channel with its own weights): checked on the real forward."""
    new = dict(pruned.named_modules())
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            mask = torch.zeros(module.num_features)
            mask[_kept(module, new[name])] = 1
            hooks.append(module.register_forward_hook(lambda m, i, o, mask=mask: o * mask.view(1, -1, 1, 1)))
    with torch.no_grad():
        expected = model.eval()(example)
        got = pruned.eval()(example)
    for hook in hooks:
        hook.remove()
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()


def tiny_mixnet() -> nn.Module:
    """Stem, then a pointwise mixed convolution (two parts) and a depthwise one (three kernel sizes)."""
    from timm.layers import MixedConv2d

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          MixedConv2d(16, 32, kernel_size=[1, 1]), nn.BatchNorm2d(32), nn.ReLU(),
                          MixedConv2d(32, 32, kernel_size=[3, 5, 7], depthwise=True), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5)).eval()
    _mark_channels(model)
    return model


def test_mixed_convolutions_keep_their_parts_aligned():
    """MixNet's mixed convolutions: each part keeps its own channels and the split sizes follow (the
    pruned copy's forward failed); the pruned model computes what the original does with the pruned
    channels zeroed, and passes every check."""
    model, example = tiny_mixnet(), torch.randn(2, 3, 16, 16)
    pruned = _prune(model, example)
    for index in (3, 6):
        mixed = pruned[index]
        assert mixed.splits == [part.in_channels for part in mixed.values()]
        assert sum(mixed.splits) < sum(part.in_channels for part in model[index].values())
    _same_as_masked(model, pruned, example)
    params, after = _param_counts(model, pruned)
    assert check_pruned(pruned, example[:1], params, after, None, onnx=True) == []


def tiny_res2net(cardinality: int = 1) -> nn.Module:
    """Two stages of Res2Net blocks (a stage's first block and a later one, whose chunks add the previous
    scale's output)."""
    from timm.models.res2net import Bottle2neck
    from timm.models.resnet import ResNet

    torch.manual_seed(0)
    model = ResNet(block=Bottle2neck, layers=(2, 1, 1, 1), num_classes=5, stem_width=16, cardinality=cardinality,
                   base_width=16 if cardinality == 1 else 4, block_args=dict(scale=4)).eval()
    _mark_channels(model)
    return model


def test_res2net_chunks_stay_equal_and_keep_their_channels():
    """Res2Net's conv1 output is cut evenly over its chunks and `width` follows; the pruned model computes
    what the original does with the pruned channels zeroed (each kept channel with its own weights)."""
    model, example = tiny_res2net(), torch.randn(2, 3, 32, 32)
    pruned = _prune(model, example)
    for old, new in zip(model.modules(), pruned.modules()):
        if type(new).__name__ == "Bottle2neck":
            assert new.conv1.out_channels == new.width * new.scale and new.width < old.width
    _same_as_masked(model, pruned, example)
    params, after = _param_counts(model, pruned)
    assert check_pruned(pruned, example[:1], params, after, None, onnx=True) == []


def test_res2next_holds_its_chunks_and_prunes_the_stream():
    """Res2NeXt's chunks go through grouped convolutions (chunks and groups cannot both stay equal): conv1 and
    the chunk convolutions are held, the stream loses channels; the pruned model computes what the original
    does with the pruned channels zeroed (each kept channel with its own weights), and every check passes."""
    model, example = tiny_res2net(cardinality=4), torch.randn(2, 3, 32, 32)
    pruned = _prune(model, example)
    blocks = [(old, new) for old, new in zip(model.modules(), pruned.modules()) if type(new).__name__ == "Bottle2neck"]
    for old, new in blocks:
        assert new.width == old.width and new.conv1.out_channels == old.conv1.out_channels
        assert [c.out_channels for c in new.convs] == [c.out_channels for c in old.convs]
    assert sum(new.conv3.out_channels < old.conv3.out_channels for old, new in blocks)
    _same_as_masked(model, pruned, example)
    params, after = _param_counts(model, pruned)
    assert check_pruned(pruned, example[:1], params, after, None, onnx=True) == []


def test_dual_path_blocks_hold_their_paths_and_prune_their_inner_widths():
    """DPN cuts one tensor at a recorded channel count (torch-pruning's cut left the dense slice behind): the
    layers writing the two paths are held, each block's inner widths lose channels, each kept channel with its
    own weights (the layers reading them keep their columns), and every check passes."""
    from timm.models.dpn import DPN

    torch.manual_seed(0)
    model = DPN(k_sec=(1, 2, 1, 1), inc_sec=(4, 8, 8, 16), num_init_features=16, k_r=16, groups=4, b=True,
                num_classes=5).eval()
    _mark_channels(model)
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    old = dict(model.named_modules())
    shrunk = 0
    for name, block in pruned.named_modules():
        if type(block).__name__ != "DualPathBlock":
            continue
        was = old[name]
        assert block.num_1x1_c == was.num_1x1_c
        kept_in = _kept(was.c1x1_a.bn, block.c1x1_a.bn)  # the block's input (the stem's output may lose some)
        kept_a = _kept(was.c3x3_b.bn, block.c3x3_b.bn)  # c1x1_a's outputs, by the norm that reads them
        kept_b = _kept(was.c1x1_c.bn, block.c1x1_c.bn)  # c3x3_b's outputs
        assert torch.equal(block.c1x1_a.conv.weight, was.c1x1_a.conv.weight[kept_a][:, kept_in])
        for conv in ("c1x1_c1", "c1x1_c2"):
            new, before = getattr(block, conv), getattr(was, conv)
            assert new.out_channels == before.out_channels
            assert torch.equal(new.weight, before.weight[:, kept_b])
        shrunk += len(kept_a) < was.c1x1_a.conv.out_channels and len(kept_b) < was.c3x3_b.conv.out_channels
    assert shrunk
    assert _pruned_checks(model, pruned, example) == []


def test_cross_stage_halves_stay_equal_and_keep_their_channels():
    """CSPNet's stages split conv_exp's output in halves of a recorded width: both halves lose the same
    channels and `expand_chs` follows; the pruned model computes what the original does with the pruned
    channels zeroed, and passes every check."""
    torch.manual_seed(0)
    model = timm.create_model("cs3darknet_focus_s", num_classes=5).eval()
    _mark_channels(model)
    example = torch.randn(2, 3, 32, 32)
    pruned = _prune(model, example)
    stages = [m for m in pruned.modules() if type(m).__name__ == "CrossStage3"]
    assert stages and all(s.expand_chs == s.conv_exp.conv.out_channels for s in stages)
    assert sum(s.expand_chs for s in stages) < sum(m.expand_chs for m in model.modules() if hasattr(m, "expand_chs"))
    _same_as_masked(model, pruned, example)
    params, after = _param_counts(model, pruned)
    assert check_pruned(pruned, example[:1], params, after, None, onnx=True) == []


def test_spatial_gating_halves_keep_their_pairs():
    """gMLP multiplies channel i of u by channel i of v: both halves keep the same positions (each with its own
    weights), the token mixing keeps its size, and the pruned model passes every check."""
    from timm.layers import GatedMlp
    from timm.models.mlp_mixer import MlpMixer, SpatialGatingBlock

    torch.manual_seed(0)
    model = MlpMixer(num_classes=5, img_size=64, patch_size=16, num_blocks=2, embed_dim=64, mlp_ratio=6,
                     block_layer=SpatialGatingBlock, mlp_layer=GatedMlp).eval()
    for block in model.blocks:  # biases and norm scales that name their channels
        block.mlp_channels.fc1.bias.data.normal_()
        block.mlp_channels.gate.norm.weight.data.normal_()
    example = torch.randn(1, 3, 64, 64)
    pruned = _prune(model, example)
    for old, new in zip(model.blocks, pruned.blocks):
        fc1, old_fc1 = new.mlp_channels.fc1, old.mlp_channels.fc1
        half, old_half = fc1.out_features // 2, old_fc1.out_features // 2
        assert half < old_half and new.mlp_channels.gate.proj.in_features == old.mlp_channels.gate.proj.in_features
        kept = [int((old_fc1.bias == b).nonzero()[0, 0]) for b in fc1.bias]
        assert kept[half:] == [k + old_half for k in kept[:half]]  # u's channel i with v's channel i
        norm = old.mlp_channels.gate.norm.weight
        assert torch.equal(new.mlp_channels.gate.norm.weight, norm[[k - old_half for k in kept[half:]]])
    assert _pruned_checks(model, pruned, example) == []


def test_partial_convolution_sizes_follow_their_parts():
    """FasterNet convolves the first part of a recorded split and passes the rest: the recorded sizes follow
    the pruned parts (the pruned copy's split failed) and every check passes (kept weights are not traced
    here, only the sizes)."""
    torch.manual_seed(0)
    model = timm.create_model("fasternet_t0", num_classes=5).eval()
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    names = dict(model.named_modules())
    changed = 0
    for name, mixer in pruned.named_modules():
        if type(mixer).__name__ != "Partial_conv3":
            continue
        assert mixer.dim_conv3 == mixer.partial_conv3.in_channels
        changed += mixer.dim_conv3 + mixer.dim_untouched < names[name].dim_conv3 + names[name].dim_untouched
    assert changed
    assert _pruned_checks(model, pruned, example) == []


def test_cross_attention_loses_its_branchs_channels_in_every_head():
    """CrossViT's cross attention (q from the class token, k and v from every token, reshaped with its input's
    width: it was refused) is a unit on its branch's stream: wq, wk and wv lose the stream's positions from
    their inputs and outputs, the same in every head, proj from its input and output, each kept channel with
    its own weights; both branches are cut near the request and every check passes."""
    from timm.models.crossvit import CrossVit

    from engine.families.stream_attention import stream_attentions

    torch.manual_seed(0)
    model = CrossVit(img_size=32, img_scale=(1.0, 1.0), patch_size=(8, 16), embed_dim=(16, 32), depth=((1, 1, 0),),
                     num_heads=(2, 2), mlp_ratio=(2.0, 2.0, 1.0), num_classes=5).eval()
    for attn in stream_attentions(model):
        attn.proj.bias.data.normal_()
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    pairs = [(old, new) for old, new in zip(stream_attentions(model), stream_attentions(pruned))
             if type(old).__name__ == "CrossAttention"]
    assert len(pairs) == 2  # one fusion per branch
    for old, new in pairs:
        kept = [int((old.proj.bias == b).nonzero()[0, 0]) for b in new.proj.bias]
        width, now = old.proj.in_features, len(kept)
        assert now < width and new.num_heads == old.num_heads and now % new.num_heads == 0
        assert new.scale == (now // new.num_heads) ** -0.5
        for name in ("wq", "wk", "wv", "proj"):
            assert torch.equal(getattr(new, name).weight, getattr(old, name).weight[kept][:, kept])
    params, after = _param_counts(model, pruned)
    assert 0.4 < after / params < 0.72
    assert check_pruned(pruned, example, params, after, None) == []


# ----------------------------------------------------------------------------- Gemma4's clamp bounds

def test_open_clamp_bounds_load_but_nan_and_infinite_weights_are_refused():
    """Gemma4's clipped linears hold -inf/+inf in their `*_min`/`*_max` buffers (no clamp, by design): such a
    model is no damaged file. A NaN there, the other infinity there (a minimum of +inf clamps everything),
    an infinite parameter or an infinite buffer of another name still are."""
    from engine.errors import UserError
    from engine.models.loading import check_finite
    from timm.models.gemma4_vit import Gemma4VitClassifier

    def tiny() -> nn.Module:
        torch.manual_seed(0)
        return Gemma4VitClassifier(img_size=32, embed_dim=32, depth=1, num_heads=2, head_dim=16, intermediate_size=64,
                                   use_clipped_linears=True, num_classes=5).eval()

    model = tiny()
    attn = model.encoder.blocks[0].attn
    assert attn.q_proj.input_min.item() == float("-inf") and attn.q_proj.output_max.item() == float("inf")
    check_finite(model, "gemma")
    damaged = [("q_proj.input_min", float("nan"), "NaN"), ("q_proj.output_max", float("nan"), "NaN"),
               ("q_proj.input_min", float("inf"), "Inf"), ("k_proj.output_max", float("-inf"), "Inf"),
               ("v_proj.linear.weight", float("inf"), "Inf"), ("q_norm.weight", float("-inf"), "Inf")]
    for name, value, what in damaged:
        model = tiny()
        tensor = model.encoder.blocks[0].attn.get_parameter(name) if name.endswith("weight") \
            else model.encoder.blocks[0].attn.get_buffer(name)
        tensor.data.view(-1)[0] = value
        with pytest.raises(UserError, match=rf"{name.replace('.', '[.]')} holds 1 value\(s\) that are not finite \({what}\)"):
            check_finite(model, "gemma")
    model = tiny()
    model.register_buffer("running_var", torch.tensor([float("inf")]))
    with pytest.raises(UserError, match="running_var"):
        check_finite(model, "gemma")


# ----------------------------------------------------------------------------- MetaFormer's bias-free norms

def test_bias_free_norms_keep_their_scales_and_no_bias():
    """PoolFormer-v2 normalises with GroupNorm1NoBias (bias None after construction; torch-pruning's pruner cut
    it and failed): each kept channel keeps its own scale, no bias appears, and the pruned model passes every
    check."""
    from timm.models.metaformer import GroupNorm1NoBias, MetaFormer

    torch.manual_seed(0)
    model = MetaFormer(depths=(1, 1), dims=(16, 32), norm_layers=GroupNorm1NoBias, use_mlp_head=False,
                       num_classes=5).eval()
    norms = {n: m for n, m in model.named_modules() if isinstance(m, GroupNorm1NoBias)}
    for norm in norms.values():  # scales that name their channels
        norm.weight.data.uniform_(0.5, 2)
    example = torch.randn(1, 3, 64, 64)
    pruned = _prune(model, example)
    after = dict(pruned.named_modules())
    shrunk = 0
    for name, norm in norms.items():
        new = after[name]
        assert new.bias is None and new.weight.numel() == new.num_channels
        assert all(bool((norm.weight == w).any()) for w in new.weight)  # each kept scale is one of its own
        shrunk += new.num_channels < norm.num_channels
    assert shrunk
    params = sum(p.numel() for p in model.parameters())
    kept = sum(p.numel() for p in pruned.parameters())
    assert check_pruned(pruned, example, params, kept, RATIO, original=model, round_to=1, ignored=("head.fc",)) == []


# ----------------------------------------------------------------------------- BEiT and Swin v2: stream-wide heads

def _stream_attention_kept_its_weights(old: nn.Module, new: nn.Module, kept: list[int]) -> None:
    """q, k and v lost the stream's removed positions alike, each kept channel with its own weights and biases."""
    width, now = old.qkv.in_features, len(kept)
    assert new.num_heads == old.num_heads and now < width and now % new.num_heads == 0
    assert torch.equal(new.qkv.weight.view(3, now, now), old.qkv.weight.view(3, width, width)[:, kept][:, :, kept])
    assert torch.equal(new.proj.weight, old.proj.weight[kept][:, kept])
    if getattr(old, "q_bias", None) is not None:
        assert torch.equal(new.q_bias, old.q_bias[kept]) and torch.equal(new.v_bias, old.v_bias[kept])
        assert new.k_bias.shape == (now,)
    else:
        assert torch.equal(new.qkv.bias.view(3, now), old.qkv.bias.view(3, width)[:, kept])


@pytest.mark.parametrize("fused", [True, False])
def test_beit_attention_loses_the_streams_channels_in_every_head(fused):
    """BEiT builds qkv's bias from q_bias, a zero k_bias and v_bias and applies qkv's weight with F.linear
    (the stream stayed whole: 80 % kept): each attention is cut as a unit, the same positions in every head
    of q, k and v; the kept channels keep their weights; the score scale follows the new head size (the
    fused and the plain attention agree); the share and every check pass."""
    from timm.models.beit import Beit

    torch.manual_seed(0)
    model = Beit(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, use_rel_pos_bias=True,
                 init_values=0.1, num_classes=5).eval()
    for attn in (b.attn for b in model.blocks):
        attn.q_bias.data.normal_()
        attn.v_bias.data.normal_()
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    embed_old, embed_new = model.patch_embed.proj.weight, pruned.patch_embed.proj.weight
    kept = [next(i for i in range(32) if torch.equal(embed_old[i], row)) for row in embed_new]
    for old, new in zip(model.blocks, pruned.blocks):
        _stream_attention_kept_its_weights(old.attn, new.attn, kept)
        assert new.attn.scale == (len(kept) // 4) ** -0.5
    for block in pruned.blocks:
        block.attn.fused_attn = fused
    with torch.no_grad():
        out = pruned(example)
        for block in pruned.blocks:
            block.attn.fused_attn = not fused
        assert torch.allclose(out, pruned(example), atol=1e-5)
    params, after = _param_counts(model, pruned)
    assert 0.45 < after / params < 0.72
    assert check_pruned(pruned, example, params, after, None, onnx=True) == []


@pytest.mark.parametrize("name", ["swinv2_tiny_window8_256", "swinv2_cr_tiny_224"])
def test_timm_swin_v2_prunes_its_stream_with_equal_heads(name):
    """timm's Swin v2 (heads sized by the stream, q and v biases, post-norm patch merging) and its "cr" kind
    (a qkv bias, norm before merging, no recorded merging width): the stream is cut the same in every head
    of q, k and v, kept channels keep their weights, and the share and checks pass."""
    from engine.families.swin import window_blocks

    torch.manual_seed(0)
    model = timm.create_model(name, img_size=32, window_size=4, embed_dim=32, depths=(1, 1),
                              num_heads=(2, 4), num_classes=5).eval()
    for attn in window_blocks(model)[0]:
        for bias in ("q_bias", "v_bias"):
            if getattr(attn, bias, None) is not None:
                getattr(attn, bias).data.normal_()
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    embed_old, embed_new = model.patch_embed.proj.weight, pruned.patch_embed.proj.weight
    kept = [next(i for i in range(32) if torch.equal(embed_old[i], row)) for row in embed_new]
    old, new = window_blocks(model)[0][0], window_blocks(pruned)[0][0]
    _stream_attention_kept_its_weights(old, new, kept)
    params, after = _param_counts(model, pruned)
    assert 0.45 < after / params < 0.72
    assert check_pruned(pruned, example, params, after, None, onnx=True) == []


# ----------------------------------------------------------------------------- LowFormer's convolutional attention

def test_lowformer_attention_lets_its_stream_go():
    """LowFormer's attention convolves the stream depthwise before q, k, v and writes back through a
    transposed convolution: both are on the stream's side (they held the whole stream, and the upsampling
    was left unpruned), its q, k, v keep their heads; each kept stream channel keeps its own weights in both,
    and every check passes."""
    torch.manual_seed(0)
    model = timm.create_model("lowformer_b0", width_list=[8, 16, 32, 64, 128], depth_list=[0, 1, 1, 1, 1],
                              head_widths=(64, 64), num_classes=5).eval()
    attentions = [n for n, m in model.named_modules() if type(m).__name__ == "ConvAttention"]
    for name in attentions:
        model.get_submodule(name).upsampling.bias.data.normal_()
    example = torch.randn(1, 3, 64, 64)
    pruned = _prune(model, example)
    for name in attentions:
        old, new = model.get_submodule(name), pruned.get_submodule(name)
        kept = [int((old.upsampling.bias == b).nonzero()[0, 0]) for b in new.upsampling.bias]
        assert len(kept) < old.upsampling.out_channels
        assert torch.equal(new.upsampling.weight, old.upsampling.weight[:, kept])
        assert torch.equal(new.conv_proj.conv.weight, old.conv_proj.conv.weight[kept])
        assert torch.equal(new.pwise.weight, old.pwise.weight[:, kept]) and new.pwise.out_channels == old.pwise.out_channels
    assert _pruned_checks(model, pruned, example) == []


# ----------------------------------------------------------------------------- the optimiser-step check's batch

def test_the_optimiser_step_check_trains_on_images_not_on_the_zero_example():
    """Runs check the pruned model with a zero image; MobileNetV5 and PoolFormer-v2 (pruned or not) have
    norms whose gradient at a zero image is not finite, so every run failed 'one optimiser step leaves
    weights that are not finite'. The step trains on a seeded random batch of the example's shape instead;
    weights a step really breaks are still found."""

    class NormOfChannels(nn.Module):  # its gradient at an all-zero input is 0/0, as those norms' are
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3, bias=False), nn.Linear(1, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).pow(2).sum(dim=(1, 2, 3)).sqrt()[:, None])

    torch.manual_seed(0)
    model = NormOfChannels()
    assert check_pruned(model, torch.zeros(1, 3, 8, 8), 1, 1, None, onnx=False) == []
    model.fc.weight.data[0, 0] = 1e38  # a step that overflows is still a finding
    assert "one optimiser step leaves weights that are not finite" in check_pruned(
        model, torch.zeros(1, 3, 8, 8), 1, 1, None, onnx=False)


# ----------------------------------------------------------------------------- FocalNet's focal modulation

def test_focal_modulation_is_cut_on_the_streams_side_only():
    """FocalNet's modulation splits f's output by recorded sizes and slices one gate per level (torch-pruning's
    walk did not finish): it is a unit that loses the stream's channels from f's input and proj's output,
    each kept channel with its own weights, while q, the context and the gates keep their width; the
    modulation then computes what the original did on the kept channels, and every check passes."""
    from timm.models.focalnet import FocalNet

    torch.manual_seed(0)
    model = FocalNet(depths=(1, 1), embed_dim=16, num_classes=5).eval()
    for block in (b for layer in model.layers for b in layer.blocks):
        for conv in block.modulation.modules():  # weights large enough for the modulation to tell channels apart
            if isinstance(conv, nn.Conv2d):
                conv.weight.data.normal_(0, 0.5)
        block.modulation.proj.bias.data.normal_()
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    old, new = model.layers[0].blocks[0].modulation, pruned.layers[0].blocks[0].modulation
    kept = [int((old.proj.bias == b).nonzero()[0, 0]) for b in new.proj.bias]
    assert len(kept) < old.proj.out_channels and new.f.out_channels == old.f.out_channels
    assert new.h.out_channels == old.h.out_channels and torch.equal(new.proj.weight, old.proj.weight[kept])
    inner = torch.randn(1, 16, 8, 8)
    inner[:, [i for i in range(16) if i not in kept]] = 0  # what the pruned stream no longer carries
    with torch.no_grad():
        assert torch.allclose(new(inner[:, kept]), old(inner)[:, kept], atol=1e-5)  # the real forward
    assert _pruned_checks(model, pruned, example) == []


# ----------------------------------------------------------------------------- MobileNetV5's multi-query attention

def test_multi_query_attention_lets_its_stream_go():
    """MobileNetV5's attention convolves the stream depthwise (strided) before k and v and writes back through
    output.proj: those are on the stream's side (held, they kept the whole stream: 74 % of the parameters), q,
    k and v keep their heads; each kept channel keeps its own weights, and every check passes."""
    from timm.layers.attention2d import MultiQueryAttention2d

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 32, 4, stride=4)
            self.attn = MultiQueryAttention2d(32, num_heads=2, key_dim=8, value_dim=8, kv_stride=2)
            self.head = nn.Linear(32, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            return self.head((x + self.attn(x)).mean((2, 3)))

    torch.manual_seed(0)
    model = Tiny().eval()
    model.stem.bias.data.normal_()
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    kept = [int((model.stem.bias == b).nonzero()[0, 0]) for b in pruned.stem.bias]
    old, new = model.attn, pruned.attn
    assert len(kept) < 32 and new.key.proj.out_channels == old.key.proj.out_channels == 8
    assert torch.equal(new.key.down_conv.weight, old.key.down_conv.weight[kept])
    assert torch.equal(new.value.down_conv.weight, old.value.down_conv.weight[kept])
    assert torch.equal(new.query.proj.weight, old.query.proj.weight[:, kept])
    assert torch.equal(new.output.proj.weight, old.output.proj.weight[kept])
    assert _pruned_checks(model, pruned, example) == []


def test_single_head_modulation_attention_is_cut_on_the_streams_side_only():
    """iFormer's SHMA (windows by views torch-pruning followed without end: over 600 s) is a unit: the stream's
    channels leave q, k and v_gate's inputs and proj's outputs (with its BatchNorm), each kept channel with
    its own weights; inside it keeps its width; it computes what the original did on the kept channels."""
    from timm.models.iformer import SHMA, IFormer

    torch.manual_seed(0)
    model = IFormer(dims=(16, 16, 32, 32), depths=(1, 1, 3, 3), attn_groups=(0, 0, 1, 1),
                    attn_head_dim_reduction=(0, 0, 2, 4), conv_ratio=2, ffn_ratio=2, num_classes=5).eval()
    names = [n for n, m in model.named_modules() if isinstance(m, SHMA)]
    for name in names:
        for part in model.get_submodule(name).modules():  # weights and statistics that tell channels apart
            if isinstance(part, nn.Conv2d):
                part.weight.data.normal_(0, 0.5)
            elif isinstance(part, nn.BatchNorm2d):
                part.bias.data.normal_()
    example = torch.randn(1, 3, 64, 64)
    pruned = _prune(model, example)
    old, new = model.get_submodule(names[0]), pruned.get_submodule(names[0])
    kept = [int((old.proj.bn.bias == b).nonzero()[0, 0]) for b in new.proj.bn.bias]
    width = old.proj.c.out_channels
    assert len(kept) < width and new.q.c.out_channels == old.q.c.out_channels
    assert torch.equal(new.proj.c.weight, old.proj.c.weight[kept]) and torch.equal(new.q.c.weight, old.q.c.weight[:, kept])
    inner = torch.randn(1, width, 4, 4)
    inner[:, [i for i in range(width) if i not in kept]] = 0
    with torch.no_grad():
        assert torch.allclose(new(inner[:, kept]), old(inner)[:, kept], atol=1e-5)
    assert _pruned_checks(model, pruned, example) == []


def _tiny_xcit() -> nn.Module:
    from timm.models.xcit import Xcit

    return Xcit(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=4, cls_attn_layers=1, num_classes=5)


def _tiny_cait() -> nn.Module:
    from timm.models.cait import Cait

    return Cait(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=4, depth_token_only=1, num_classes=5)


def _tiny_pvt() -> nn.Module:
    from timm.models.pvt_v2 import PyramidVisionTransformerV2

    return PyramidVisionTransformerV2(depths=(1, 1), embed_dims=(16, 32), num_heads=(2, 4), mlp_ratios=(2, 2),
                                      sr_ratios=(2, 1), num_classes=5)


def _tiny_davit() -> nn.Module:
    from timm.models.davit import DaVit

    return DaVit(depths=(1, 1), embed_dims=(16, 32), num_heads=(2, 4), window_size=4, num_classes=5)


def _tiny_twins() -> nn.Module:
    return timm.create_model("twins_svt_small", depths=(2, 2), embed_dims=(16, 32), num_heads=(2, 4), mlp_ratios=(2, 2),
                             sr_ratios=(2, 1), wss=(4, 4), num_classes=5)


def _tiny_nest() -> nn.Module:
    from timm.models.nest import Nest

    return Nest(img_size=32, embed_dims=(32, 64), num_heads=(2, 4), depths=(1, 1), num_levels=2, num_classes=5)


def _tiny_relpos() -> nn.Module:
    return timm.create_model("vit_srelpos_small_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=1,
                             num_heads=4, num_classes=5)


def _tiny_convit() -> nn.Module:
    from timm.models.convit import ConVit

    return ConVit(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, local_up_to_layer=1, num_classes=5)


def _tiny_volo() -> nn.Module:
    from timm.models.volo import VOLO

    return VOLO(layers=(1, 1), img_size=32, patch_size=8, stem_hidden_dim=16, embed_dims=(32, 32), num_heads=(2, 2),
                downsamples=(False, False), outlook_attention=(True, False), post_layers=None, num_classes=5)


@pytest.mark.parametrize("make", [_tiny_xcit, _tiny_cait, _tiny_pvt, _tiny_davit, _tiny_twins, _tiny_nest, _tiny_relpos,
                                  _tiny_convit, _tiny_volo],
                         ids=["xcit", "cait", "pvt_v2", "davit", "twins", "nest", "relpos", "convit", "volo"])
def test_attention_reshaped_by_the_streams_width_loses_its_channels_in_every_head(make):
    """XCiT's XCA and class attention, CaiT's talking heads and class attention, PVT-v2's and Twins' attention
    with a spatial reduction, DaViT's window and channel attention, NesT's, the relative-position ViT's and
    ConViT's gated positional attention and VOLO's outlook attention reshape with their input's width (they
    were refused or broke): each is a unit whose readers
    (q, k, v, kv, sr) lose the stream's positions in every stream-wide copy, each kept channel with its own
    weights; the kept share is near the request and every check passes."""
    from engine.families.stream_attention import _reads, stream_attentions

    torch.manual_seed(0)
    model = make().eval()
    for attn in stream_attentions(model):
        attn.proj.bias.data.normal_()
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    pairs = list(zip(stream_attentions(model), stream_attentions(pruned)))
    assert pairs and len(pairs) == len(stream_attentions(model))
    for old, new in pairs:
        kept = [int((old.proj.bias == b).nonzero()[0, 0]) for b in new.proj.bias]
        width, now = old.proj.in_features, len(kept)
        assert now < width and new.num_heads == old.num_heads
        for (was, copies), (part, _) in zip(_reads(old), _reads(new)):
            if not copies:  # an output of its own width (VOLO's kernel weights): only the stream's side moves
                assert torch.equal(part.weight, was.weight[:, kept])
                continue
            assert torch.equal(part.weight.reshape(copies, now, now, -1),
                               was.weight.reshape(copies, width, width, -1)[:, kept][:, :, kept])
        assert torch.equal(new.proj.weight, old.proj.weight[kept][:, kept])
    params, after = _param_counts(model, pruned)
    assert 0.4 < after / params < 0.72
    # VOLO's fold (aten::col2im) exports at the fallback opset 18 (engine.models.saving)
    assert check_pruned(pruned, example, params, after, None) == []


def test_gemma4_attention_and_recorded_norms_follow_the_stream():
    """Gemma4's attention (rotary embeddings torch-pruning could not trace) is a unit on the stream's side:
    q, k, v lose the stream's channels from their inputs, o_proj from its outputs, each kept channel with
    its own weights; its RmsNorms record their width in normalized_shape (the scaled ones' scales were cut
    and the shape left as built, the last one has no scale): each keeps its own scales and the kept width.
    Eval, train, a step and the ONNX export pass."""
    from timm.layers import RmsNorm
    from timm.models.gemma4_vit import Gemma4VitClassifier

    torch.manual_seed(0)
    model = Gemma4VitClassifier(img_size=32, embed_dim=32, depth=1, num_heads=2, head_dim=16, intermediate_size=64,
                                use_clipped_linears=True, num_classes=5).eval()
    for norm in model.modules():
        if isinstance(norm, RmsNorm) and norm.weight is not None:
            norm.weight.data.uniform_(0.5, 2)
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    old, new = model.encoder.blocks[0], pruned.encoder.blocks[0]
    kept = [int((old.norm1.weight == w).nonzero()[0, 0]) for w in new.norm1.weight]
    assert len(kept) < 32 and new.norm1.normalized_shape == (len(kept),) == pruned.norm.normalized_shape
    assert torch.equal(new.attn.q_proj.linear.weight, old.attn.q_proj.linear.weight[:, kept])
    assert torch.equal(new.attn.o_proj.linear.weight, old.attn.o_proj.linear.weight[kept])
    assert new.attn.q_proj.linear.out_features == old.attn.q_proj.linear.out_features
    params, after = _param_counts(model, pruned)
    assert check_pruned(pruned, example, params, after, None) == []


def test_blur_pool_filters_follow_their_channels():
    """TResNet's anti-aliasing BlurPool2d convolves each of its recorded channels with its own row of a buffer
    (the pruned copy failed: groups=128 for 88 channels): the rows and the count follow the kept channels,
    and the pool gives what the original gave on them."""
    from timm.layers import BlurPool2d

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), BlurPool2d(channels=16), nn.Conv2d(16, 8, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    model[0].bias.data.normal_()
    example = torch.randn(1, 3, 16, 16)
    pruned = _prune(model, example)
    kept = [int((model[0].bias == b).nonzero()[0, 0]) for b in pruned[0].bias]
    assert len(kept) < 16 and pruned[1].channels == len(kept) == pruned[1].filt.shape[0]
    inner = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        assert torch.allclose(pruned[1](inner[:, kept]), model[1](inner)[:, kept])
    assert _pruned_checks(model, pruned, example) == []


def test_selective_kernel_is_cut_as_a_unit():
    """SKResNet's SelectiveKernel splits its input between its paths by a recorded width and weights the paths
    per channel (the pruned copy failed): an output channel leaves every path, the attention's input and its
    weights in every path, each kept channel with its own; the input parts stay equal; every check passes."""
    from timm.layers.selective_kernel import SelectiveKernel

    torch.manual_seed(0)
    model = timm.create_model("skresnet18", num_classes=5).eval()
    units = [n for n, m in model.named_modules() if isinstance(m, SelectiveKernel)]
    for name in units:
        for path in model.get_submodule(name).paths:
            path.bn.bias.data.normal_()
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    shrunk = 0
    for name in units:
        old, new = model.get_submodule(name), pruned.get_submodule(name)
        kept = [int((old.paths[0].bn.bias == b).nonzero()[0, 0]) for b in new.paths[0].bn.bias]
        width, now, paths = old.out_channels, new.out_channels, old.num_paths
        assert now == len(kept) and all(p.conv.in_channels * paths == new.in_channels for p in new.paths)
        for was, part in zip(old.paths, new.paths):
            assert torch.equal(part.bn.bias, was.bn.bias[kept])
        assert torch.equal(new.attn.fc_reduce.weight, old.attn.fc_reduce.weight[:, kept])
        assert torch.equal(new.attn.fc_select.weight.view(paths, now, -1),
                           old.attn.fc_select.weight.view(paths, width, -1)[:, kept])
        shrunk += now < width
    assert shrunk
    params, after = _param_counts(model, pruned)
    assert 0.4 < after / params < 0.72
    assert check_pruned(pruned, example, params, after, None, onnx=True) == []


# ----------------------------------------------------------------------------- helpers for stream models

def _mark_outputs(model: nn.Module) -> None:
    """Every convolution's bias and every BatchNorm's scale name their channels (all distinct)."""
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.bias is not None:
            module.bias.data = torch.randn(module.out_channels)
        elif isinstance(module, nn.BatchNorm2d):
            module.weight.data = 0.5 + torch.rand(module.num_features)


def _kept_outputs(old: nn.Module, new: nn.Module) -> list[int]:
    """The original output channels a pruned convolution or BatchNorm kept (by their marks)."""
    mark = (lambda m: m.weight) if isinstance(old, nn.BatchNorm2d) else (lambda m: m.bias)
    return [int((mark(old) == v).nonzero()[0, 0]) for v in mark(new)]


def _param_counts(model: nn.Module, pruned: nn.Module) -> tuple[int, int]:
    """Parameters of the original and of the pruned model."""
    return sum(p.numel() for p in model.parameters()), sum(p.numel() for p in pruned.parameters())


def _assert_mlp_lost_hidden_channels_in_place(old: nn.Module, new: nn.Module) -> None:
    """The MLP's hidden width shrank, each kept hidden channel with its own fc1 row and fc2 column."""
    hidden = old.fc1.out_features
    kept = [next(j for j in range(hidden) if torch.equal(old.fc1.weight[j], w)) for w in new.fc1.weight]
    assert len(kept) < hidden and torch.equal(new.fc2.weight, old.fc2.weight[:, kept])


def _pruned_checks(model: nn.Module, pruned: nn.Module, example: torch.Tensor) -> list[str]:
    """What engine.verify.check_pruned finds wrong with `pruned` (eval and train forward, a step, ONNX, the
    parameter share; no per-layer ratio): [] when it passes."""
    params, after = _param_counts(model, pruned)
    return check_pruned(pruned, example, params, after, None, onnx=True)


def _masked_features(model: nn.Module, pruned: nn.Module, example: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the pruned model's features, the original's features with every pruned convolution and BatchNorm
    output zeroed, cut to the kept stream channels): equal when each kept channel kept its own weights."""
    new = dict(pruned.named_modules())
    hooks, last = [], None
    for name, module in model.named_modules():
        if (isinstance(module, nn.Conv2d) and module.bias is not None) or isinstance(module, nn.BatchNorm2d):
            kept = _kept_outputs(module, new[name])
            mask = torch.zeros(module.weight.shape[0] if isinstance(module, nn.Conv2d) else module.num_features)
            mask[kept] = 1
            hooks.append(module.register_forward_hook(lambda m, i, o, mask=mask: o * mask.view(1, -1, 1, 1)))
            last = kept
    with torch.no_grad():
        expected = model.eval().forward_features(example)
        got = pruned.eval().forward_features(example)
    for hook in hooks:
        hook.remove()
    return got, expected[:, last]


# ----------------------------------------------------------------------------- InceptionNeXt

def test_inception_next_splits_follow_their_parts():
    """InceptionNeXt splits the stream by recorded sizes into an identity part and three depthwise
    convolutions: each part keeps the requested share of its own channels and the sizes follow (the
    pruned copy's split failed); the pruned features are the original's with the pruned channels zeroed
    (each kept channel with its own weights), and every check passes."""
    torch.manual_seed(0)
    model = timm.create_model("inception_next_atto", num_classes=5).eval()
    _mark_outputs(model)
    for block in model.modules():  # layer scales of one, not 1e-6: the blocks' outputs count
        if type(block).__name__ == "MetaNeXtBlock":
            block.gamma.data = 0.5 + torch.rand(block.gamma.shape)
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    old = dict(model.named_modules())
    for name, mixer in pruned.named_modules():
        if type(mixer).__name__ == "InceptionDWConv2d":
            before = old[name].split_indexes
            convs = [mixer.dwconv_hw, mixer.dwconv_w, mixer.dwconv_h]
            assert list(mixer.split_indexes[1:]) == [conv.in_channels for conv in convs]
            assert all(abs(now - (1 - RATIO) * was) <= 1 for now, was in zip(mixer.split_indexes, before))
    got, expected = _masked_features(model, pruned, example)
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    assert _pruned_checks(model, pruned, example) == []


# ----------------------------------------------------------------------------- rotary attention (EVA, Qwen3)

def test_rope_attention_loses_whole_heads_with_the_rotation_left_out_of_the_trace():
    """Qwen3's AttentionRope (the rope concatenates each head's halves and the prefix tokens: qkv was cut by
    more than whole heads and its reshape failed): heads go whole, each kept head with its own q, k and v rows
    and proj columns, so the rope still rotates each head's own pairs; every check passes."""
    from timm.models.qwen3_vit import Qwen3VitClassifier

    torch.manual_seed(0)
    model = Qwen3VitClassifier(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=5).eval()
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    for old, new in zip(model.encoder.blocks, pruned.encoder.blocks):
        old, new = old.attn, new.attn
        assert new.head_dim == old.head_dim == 16 and new.num_heads < old.num_heads
        assert new.qkv.out_features == 3 * new.num_heads * 16 == 3 * new.proj.in_features
        rows = old.qkv.weight.view(3, 4, 16, -1)
        heads = [next(h for h in range(4) if torch.equal(rows[0, h][:, :1], row[:, :1]))
                 for row in new.qkv.weight.view(3, new.num_heads, 16, -1)[0]]  # a head's q rows, first column
        stream = [next(i for i in range(64) if torch.equal(old.proj.weight[i, :1], w[:1]))
                  for w in new.proj.weight] if new.proj.out_features < 64 else list(range(64))
        assert torch.equal(new.qkv.weight.view(3, new.num_heads, 16, -1), rows[:, heads][..., stream])
        assert torch.equal(new.proj.weight, old.proj.weight.view(-1, 4, 16)[stream][:, heads].flatten(1))
    params, after = _param_counts(model, pruned)
    assert 0.4 < after / params < 0.72
    assert check_pruned(pruned, example, params, after, None) == []


def test_eva_attention_with_rope_is_held_and_its_mlps_are_pruned():
    """DINOv3's EvaAttention (qkv's bias built in the forward, the output reshaped with the input's width, a
    rope: torch-pruning failed with a TypeError) is held whole with the stream it writes to: every attention
    keeps its weights (the first gives what it gave before); the MLPs' hidden widths are cut, each kept unit
    with its own weights."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_dinov3_qkvb", img_size=32, depth=2, num_classes=5).eval()
    for attn in (b.attn for b in model.blocks):
        attn.q_bias.data.normal_()
        attn.v_bias.data.normal_()
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    assert torch.allclose(_outputs(pruned, "blocks.0.attn", example), _outputs(model, "blocks.0.attn", example))
    for old, new in zip(model.blocks, pruned.blocks):
        assert torch.equal(new.attn.qkv.weight, old.attn.qkv.weight) and torch.equal(new.attn.q_bias, old.attn.q_bias)
        assert torch.equal(new.attn.proj.weight, old.attn.proj.weight)
        _assert_mlp_lost_hidden_channels_in_place(old.mlp, new.mlp)
    params, after = _param_counts(model, pruned)
    assert check_pruned(pruned, example, params, after, None, onnx=False) == []


# ----------------------------------------------------------------------------- NaFlexViT's embeddings

@pytest.mark.parametrize("pos_embed", ["factorized", "learned"])
def test_naflex_position_embeddings_lose_the_streams_channels(pos_embed):
    """NaFlexViT adds its position embeddings in place to a view of the patch projection's output, which hid
    the projection from torch-pruning's trace (the stream was cut, the embeddings not): they now lose the
    stream's channels, each kept channel with its own values; every check passes."""
    torch.manual_seed(0)
    model = timm.create_model("naflexvit_base_patch16_parfac_gap", img_size=32, depth=2, embed_dim=64, num_heads=4,
                              pos_embed=pos_embed, num_classes=5).eval()
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    old, new = model.embeds, pruned.embeds
    kept = [next(i for i in range(64) if torch.equal(old.proj.weight[i], w)) for w in new.proj.weight]
    assert len(kept) < 64
    for name in ("pos_embed_y", "pos_embed_x", "pos_embed"):
        if getattr(old, name, None) is not None:
            assert torch.equal(getattr(new, name), getattr(old, name)[..., kept])
    params, after = _param_counts(model, pruned)
    assert 0.4 < after / params < 0.72
    assert check_pruned(pruned, example, params, after, None, onnx=pos_embed == "factorized") == []


# ----------------------------------------------------------------------------- Gemma4 ONNX

@pytest.mark.parametrize("name", ["gemma4", "dinov3"])
def test_onnx_export_of_rms_norms_and_a_forward_with_bool_defaults_gives_the_models_logits(name, tmp_path):
    """The ONNX export failed for Gemma4 (aten::rms_norm has an ONNX form only from opset 23) and for EVA's
    DINOv3 (the exporter traced its forward's `is_causal=False` as a tensor) before any pruning: both now
    export at the default opset, and onnxruntime gives the pruned model's logits."""
    import onnxruntime

    from engine.models import export_onnx, onnx_opset
    from engine.models.saving import ONNX_OPSET
    from timm.layers import RmsNorm

    torch.manual_seed(0)
    if name == "gemma4":
        from timm.models.gemma4_vit import Gemma4VitClassifier

        model = Gemma4VitClassifier(img_size=32, embed_dim=32, depth=1, num_heads=2, head_dim=16, intermediate_size=64,
                                    num_classes=5)
    else:
        model = timm.create_model("vit_tiny_patch16_dinov3_qkvb", img_size=32, depth=2, num_classes=5)
    for norm in model.modules():
        if isinstance(norm, RmsNorm) and norm.weight is not None:
            norm.weight.data.uniform_(0.5, 2)
    example = torch.randn(2, 3, 32, 32)
    pruned = _prune(model.eval(), example[:1])
    path = export_onnx(pruned, (3, 32, 32), tmp_path / "model.onnx")
    assert onnx_opset(path) == ONNX_OPSET and "forward" not in pruned.__dict__
    got = onnxruntime.InferenceSession(str(path)).run(None, {"input": example.numpy()})[0]
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), pruned(example), atol=1e-4)


# ----------------------------------------------------------------------------- MambaOut

def test_mambaout_holds_its_gated_width_and_prunes_the_stream():
    """MambaOut splits fc1's output by recorded sizes (torch-pruning's cut of it indexed past the
    convolution): fc1's outputs and the convolution are held, the stream loses channels, each kept stream
    channel with its own weights in fc1's inputs and fc2's outputs; every check passes."""
    torch.manual_seed(0)
    model = timm.create_model("mambaout_femto", num_classes=5).eval()
    for module in model.modules():  # norm scales that name the stream's channels
        if type(module).__name__ == "GatedConvBlock":
            module.norm.weight.data = 0.5 + torch.rand(module.norm.weight.shape)
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    old = dict(model.named_modules())
    shrunk = 0
    for name, block in pruned.named_modules():
        if type(block).__name__ != "GatedConvBlock":
            continue
        was = old[name]
        kept = [int((was.norm.weight == w).nonzero()[0, 0]) for w in block.norm.weight]
        assert block.split_indices == was.split_indices and torch.equal(block.conv.weight, was.conv.weight)
        assert torch.equal(block.fc1.weight, was.fc1.weight[:, kept])
        assert torch.equal(block.fc2.weight, was.fc2.weight[kept]) and torch.equal(block.fc2.bias, was.fc2.bias[kept])
        shrunk += len(kept) < was.norm.weight.numel()
    assert shrunk
    assert _pruned_checks(model, pruned, example) == []


# ----------------------------------------------------------------------------- GC ViT

def test_gcvit_attention_and_its_global_query_lose_the_streams_channels_in_every_head():
    """GC ViT's window attention reshapes its output with its input's width and takes q from a global query
    made from the stream by convolutions (the pruned copy's reshape failed): each attention is a unit whose
    qkv (k and v alone beside a global query) loses the stream's positions in every copy, and the global
    query's convolutions lose the same positions, each kept channel with its own weights; every check passes."""
    from timm.models.gcvit import GlobalContextVit

    from engine.families.stream_attention import _reads, stream_attentions

    torch.manual_seed(0)
    model = GlobalContextVit(img_size=32, window_size=(4, 2, 1, 1), depths=(2, 2, 1, 1), embed_dim=16,
                             num_heads=(2, 2, 4, 4), mlp_ratio=2, num_classes=5).eval()
    for attn in stream_attentions(model):
        attn.proj.bias.data.normal_()
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    pairs = list(zip(stream_attentions(model), stream_attentions(pruned)))
    assert len(pairs) == 6 and {copies for attn, _ in pairs for _, copies in _reads(attn)} == {2, 3}
    for old, new in pairs:
        kept = [int((old.proj.bias == b).nonzero()[0, 0]) for b in new.proj.bias]
        width, now = old.proj.in_features, len(kept)
        assert now < width and new.num_heads == old.num_heads and new.head_dim == now // new.num_heads
        copies = old.qkv.out_features // width
        assert torch.equal(new.qkv.weight.view(copies, now, now),
                           old.qkv.weight.view(copies, width, width)[:, kept][:, :, kept])
        assert torch.equal(new.proj.weight, old.proj.weight[kept][:, kept])
    for i in range(4):  # the global query's last convolution keeps the stage's stream channels
        old = model.stages[i].global_block.blocks.conv1.conv_pw.weight
        new = pruned.stages[i].global_block.blocks.conv1.conv_pw.weight
        attn_old, attn_new = model.stages[i].blocks[0].attn, pruned.stages[i].blocks[0].attn
        kept = [int((attn_old.proj.bias == b).nonzero()[0, 0]) for b in attn_new.proj.bias]
        assert torch.equal(new, old[kept][:, kept])  # its depthwise input: the stream's positions too
    params, after = _param_counts(model, pruned)
    assert 0.4 < after / params < 0.72
    assert check_pruned(pruned, example, params, after, None) == []


# ----------------------------------------------------------------------------- Sequencer (LSTM)

def test_lstm_hidden_width_is_held_and_its_inputs_follow_the_stream():
    """Sequencer2d runs bidirectional LSTMs over the stream (torch-pruning's cut of an LSTM's hidden width
    indexed past its weights): the hidden width stays, each kept stream channel keeps its own input weights in
    both directions, and every check passes."""
    from timm.models.sequencer import Sequencer2d

    torch.manual_seed(0)
    model = Sequencer2d(num_classes=5, img_size=32, layers=(1, 1), patch_sizes=(4, 2), embed_dims=(32, 48),
                        hidden_sizes=(8, 12), mlp_ratios=(2.0, 2.0)).eval()
    for module in model.modules():  # norm scales that name the stream's channels
        if isinstance(module, nn.LayerNorm):
            module.weight.data = 0.5 + torch.rand(module.normalized_shape)
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    old = dict(model.named_modules())
    shrunk = 0
    for name, block in pruned.named_modules():
        if type(block).__name__ != "Sequencer2dBlock":
            continue
        was = old[name]
        kept = [int((was.norm1.weight == w).nonzero()[0, 0]) for w in block.norm1.weight]
        for rnn in ("rnn_v", "rnn_h"):
            new, before = getattr(block.rnn_tokens, rnn), getattr(was.rnn_tokens, rnn)
            assert new.hidden_size == before.hidden_size and new.input_size == len(kept)
            for weight in ("weight_ih_l0", "weight_ih_l0_reverse"):
                assert torch.equal(getattr(new, weight), getattr(before, weight)[:, kept])
            assert torch.equal(new.weight_hh_l0, before.weight_hh_l0)
        shrunk += len(kept) < was.norm1.weight.numel()
    assert shrunk
    assert _pruned_checks(model, pruned, example) == []


# ----------------------------------------------------------------------------- Hiera

def test_hiera_holds_its_attention_and_stream_and_prunes_its_mlps():
    """Hiera's mask-unit attention (qkv reshaped into windows, heads and a query pooling by recorded sizes:
    torch-pruning divided by zero tracing it) is held with the stream: the first block gives what it gave
    before, every attention and stream layer keeps its weights, and each MLP's hidden width is cut, each kept
    unit with its own weights; every check passes."""
    from engine.families.hiera import stream_writers

    torch.manual_seed(0)
    model = timm.create_model("hiera_tiny_224", img_size=64, embed_dim=16, num_heads=1, stages=(1, 1, 1, 1),
                              num_classes=5).eval()
    example = torch.randn(1, 3, 64, 64)
    pruned = _prune(model, example)
    assert torch.allclose(_outputs(pruned, "blocks.0.attn", example), _outputs(model, "blocks.0.attn", example))
    for (old, was), (new, now) in zip(stream_writers(model), stream_writers(pruned)):
        assert torch.equal(new.qkv.weight, old.qkv.weight)
        for a, b in zip(was, now):  # the MLP's output layer keeps its rows; its inputs are the hidden width
            assert torch.equal(b.bias, a.bias) and (b.weight.shape[1] < a.weight.shape[1] or torch.equal(b.weight, a.weight))
    for old, new in zip(model.blocks, pruned.blocks):
        _assert_mlp_lost_hidden_channels_in_place(old.mlp, new.mlp)
    params, after = _param_counts(model, pruned)
    assert after < 0.85 * params
    assert check_pruned(pruned, example, params, after, None) == []


# ----------------------------------------------------------------------------- TNT

@pytest.mark.parametrize("legacy", [True, False])
def test_tnt_holds_its_pixel_stream_and_prunes_its_patch_stream(legacy):
    """TNT folds each block's pixel stream into its patches pixel by pixel and puts the class token back with a
    slice and a token concatenation (past eight blocks torch-pruning could not trace it: twelve here): the
    pixel stream is held, every layer writing to it keeping its weights; the patch stream loses channels, the
    same in the class token, the position embedding, the folding proj's outputs and the outer attention's
    inputs, each kept channel with its own weights; every check passes."""
    from timm.models.tnt import TNT

    from engine.families.tnt import inner_writers

    torch.manual_seed(0)
    model = TNT(img_size=32, patch_size=16, embed_dim=32, inner_dim=8, depth=12, num_heads_inner=2,
                num_heads_outer=2, legacy=legacy, num_classes=5).eval()
    model.cls_token.data.normal_()
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    for (_, old), (_, new) in zip(inner_writers(model), inner_writers(pruned)):
        assert new.weight.shape[0] == old.weight.shape[0]
        assert new.weight.shape[1] < old.weight.shape[1] or torch.equal(new.weight, old.weight)  # an MLP's hidden
    kept = [int((model.cls_token[0, 0] == v).nonzero()[0, 0]) for v in pruned.cls_token[0, 0]]
    assert len(kept) < 32 and torch.equal(pruned.patch_pos, model.patch_pos[..., kept])
    for old, new in zip(model.blocks, pruned.blocks):
        assert torch.equal(new.proj.weight, old.proj.weight[kept])
        assert torch.equal(new.attn_out.qk.weight, old.attn_out.qk.weight[:, kept])
    params, after = _param_counts(model, pruned)
    assert after < 0.8 * params
    assert check_pruned(pruned, example, params, after, None) == []


# ----------------------------------------------------------------------------- HaloNet ONNX

def test_onnx_export_of_unfolded_windows_gives_the_models_outputs(tmp_path):
    """HaloNet's attention cuts its windows with two Tensor.unfold calls, whose ONNX export failed before any
    pruning ("input size not accessible"): it exports, and onnxruntime gives the model's outputs, for
    HaloAttn and for unfolds with a step other than one along dimensions that are not a multiple of it."""
    import onnxruntime
    from timm.layers.halo_attn import HaloAttn

    from engine.models import export_onnx

    class Windows(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.unfold(2, 3, 2).unfold(-2, 4, 1).flatten(1)

    torch.manual_seed(0)
    halo = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), HaloAttn(16, num_heads=2, block_size=4, halo_size=1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)).eval()
    for model, shape in ((halo, (3, 16, 16)), (Windows(), (3, 9, 10))):
        x = torch.randn(2, *shape)
        path = export_onnx(model, shape, tmp_path / f"{type(model).__name__}.onnx")
        got = onnxruntime.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            expected = model(x).numpy()
        assert got.shape == expected.shape and abs(got - expected).max() < 1e-5


# ----------------------------------------------------------------------------- CoaT

def test_coat_holds_all_but_its_mlps_and_prunes_their_hidden_widths():
    """CoaT splits v between convolutions by recorded sizes, slices its class token off and back, and mixes
    three stages' streams in its parallel blocks (torch-pruning failed on all three; this deep, it could not
    trace it): every layer but the MLPs' hidden ones is held and keeps its weights (the first attention gives
    what it gave before), each MLP loses hidden units, each kept unit with its own weights; every check
    passes."""
    from engine.families.coat import held_layers

    torch.manual_seed(0)
    model = timm.create_model("coat_tiny", img_size=64, serial_depths=(2, 2, 2, 2), parallel_depth=6,
                              embed_dims=(64, 64, 64, 64), num_heads=8, num_classes=5).eval()
    example = torch.randn(1, 3, 64, 64)
    pruned = _prune(model, example)
    layer = "serial_blocks1.0.factoratt_crpe"
    assert torch.allclose(_outputs(pruned, layer, example), _outputs(model, layer, example))
    for old, new in zip(held_layers(model), held_layers(pruned)):  # an MLP's output layer loses hidden inputs
        assert new.weight.shape[0] == old.weight.shape[0]
        assert new.weight.shape[1] < old.weight.shape[1] or torch.equal(new.weight, old.weight)
    mlps = [(n, m) for n, m in model.named_modules() if type(m).__name__ == "Mlp"]
    assert len(mlps) == 14  # eight serial blocks; each parallel block's three stages share one
    for name, old in mlps:
        new = pruned.get_submodule(name)
        _assert_mlp_lost_hidden_channels_in_place(old, new)
    params, after = _param_counts(model, pruned)
    assert after < 0.9 * params
    assert check_pruned(pruned, example, params, after, None) == []


# ----------------------------------------------------------------------------- EfficientViT (MIT)

def test_efficientvit_lite_attention_is_pruned_on_the_streams_side():
    """EfficientViT's LiteMLA reshapes its multi-scale qkv by a recorded width (torch-pruning indexed past it):
    it is pruned as a unit on the stream's side, its inner widths held; each kept stream channel keeps its own
    weights in qkv's inputs and proj's outputs, and every check passes."""
    torch.manual_seed(0)
    model = timm.create_model("efficientvit_b0", num_classes=5).eval()
    _mark_channels(model)
    example = torch.randn(1, 3, 64, 64)
    pruned = _prune(model, example)
    old = dict(model.named_modules())
    shrunk = 0
    for name, attn in pruned.named_modules():
        if type(attn).__name__ != "LiteMLA":
            continue
        was = old[name]
        kept = _kept(was.proj.norm, attn.proj.norm)
        assert attn.qkv.conv.out_channels == was.qkv.conv.out_channels and attn.dim == was.dim
        assert torch.equal(attn.qkv.conv.weight, was.qkv.conv.weight[:, kept])
        assert torch.equal(attn.proj.conv.weight, was.proj.conv.weight[kept])
        shrunk += len(kept) < was.proj.conv.out_channels
    assert shrunk
    assert _pruned_checks(model, pruned, example) == []


# ----------------------------------------------------------------------------- SHViT

def test_single_head_attention_holds_its_part_of_the_stream_and_prunes_the_rest():
    """SHViT's single-head attention splits the stream at a recorded width (torch-pruning could not trace
    it): the attention and the stream channels it reads are held, the rest of the stream loses channels; the
    pruned features are the original's with the pruned channels zeroed (each kept channel with its own
    weights), and every check passes."""
    from timm.models.shvit import SHViT

    torch.manual_seed(0)
    model = SHViT(num_classes=5, embed_dim=(32, 48, 64), partial_dim=(8, 16, 16), qk_dim=(8, 8, 8),
                  depth=(1, 2, 1), types=("i", "s", "s")).eval()
    _mark_outputs(model)
    example = torch.randn(1, 3, 64, 64)
    pruned = _prune(model, example)
    old = dict(model.named_modules())
    shrunk = 0
    for name, attn in pruned.named_modules():
        if type(attn).__name__ != "SHSA":
            continue
        was = old[name]
        assert attn.pdim == was.pdim and torch.equal(attn.qkv.c.weight, was.qkv.c.weight)
        kept = _kept_outputs(was.proj[1].bn, attn.proj[1].bn)
        assert attn.dim == attn.proj[1].c.in_channels == len(kept) and kept[:attn.pdim] == list(range(attn.pdim))
        shrunk += len(kept) < was.dim
    assert shrunk
    got, expected = _masked_features(model, pruned, example)
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    assert _pruned_checks(model, pruned, example) == []


# ----------------------------------------------------------------------------- PiT

def test_pit_holds_its_streams_and_prunes_heads_and_mlps():
    """PiT widens each stage's stream with a depthwise convolution of two outputs per input (it was refused):
    the layers writing to the streams are held and keep their weights, each attention loses whole heads
    (every kept head with its own q, k and v rows) and each MLP hidden units (each with its own weights);
    every check passes."""
    from timm.models.pit import PoolingVisionTransformer

    from engine.families.pit import stream_writers

    torch.manual_seed(0)
    model = PoolingVisionTransformer(img_size=32, patch_size=8, stride=4, base_dims=(16, 16), depth=(1, 1),
                                     heads=(2, 4), mlp_ratio=4, num_classes=5).eval()
    example = torch.randn(1, 3, 32, 32)
    pruned = _prune(model, example)
    for old, new in zip(stream_writers(model), stream_writers(pruned)):
        assert new.weight.shape[0] == old.weight.shape[0]
        assert new.weight.shape[1] < old.weight.shape[1] or torch.equal(new.weight, old.weight)  # input: hidden
    shrunk = 0
    for old, new in zip(model.modules(), pruned.modules()):
        if type(old).__name__ != "Block":
            continue
        attn, now = old.attn, new.attn
        rows = attn.qkv.weight.view(3, attn.num_heads, attn.head_dim, -1)
        heads = [next(h for h in range(attn.num_heads) if torch.equal(rows[0, h], q))
                 for q in now.qkv.weight.view(3, now.num_heads, now.head_dim, -1)[0]]
        assert torch.equal(now.qkv.weight.view(3, now.num_heads, now.head_dim, -1), rows[:, heads])
        _assert_mlp_lost_hidden_channels_in_place(old.mlp, new.mlp)
        shrunk += now.num_heads < attn.num_heads
    assert shrunk == 2
    params, after = _param_counts(model, pruned)
    assert after < 0.85 * params
    assert check_pruned(pruned, example, params, after, None) == []


# ----------------------------------------------------------------------------- FastViT

def test_fastvit_holds_its_multiplier_convolutions_and_streams_and_prunes_the_mlps():
    """FastViT's downsampling convolutions have two outputs per input channel (torch-pruning cuts them as plain
    convolutions; it was refused): they and the streams they read are held, each MLP loses hidden channels,
    each kept channel with its own weights, and every check passes."""
    torch.manual_seed(0)
    model = timm.create_model("fastvit_t8", num_classes=5).eval()
    _mark_outputs(model)
    example = torch.randn(1, 3, 64, 64)
    pruned = _prune(model, example)
    old = dict(model.named_modules())
    new = dict(pruned.named_modules())
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d) and conv.groups == conv.in_channels > 3 and conv.out_channels > conv.in_channels:
            assert torch.equal(new[name].weight, conv.weight)  # held whole, with the streams around it
    shrunk = 0
    for name, mlp in pruned.named_modules():
        if type(mlp).__name__ != "ConvMlp" or type(mlp).__module__ != "timm.models.fastvit":
            continue
        was = old[name]
        kept = _kept_outputs(was.fc1, mlp.fc1)
        assert mlp.fc1.in_channels == was.fc1.in_channels and mlp.fc2.out_channels == was.fc2.out_channels
        assert torch.equal(mlp.fc1.weight, was.fc1.weight[kept]) and torch.equal(mlp.fc2.weight, was.fc2.weight[:, kept])
        shrunk += len(kept) < was.fc1.out_channels
    assert shrunk
    assert _pruned_checks(model, pruned, example) == []


# ----------------------------------------------------------------------------- ONNX export of TorchScript

def test_onnx_export_of_a_torchscript_module_keeps_its_forward(tmp_path):
    """The export traces a module's forward with the input alone; a TorchScript module's forward (no defaults
    to hand, and it cannot be replaced) is exported as it is, and onnxruntime gives its logits."""
    import onnxruntime

    from engine.models import export_onnx

    torch.manual_seed(0)
    model = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)))
    example = torch.randn(2, 3, 8, 8)
    path = export_onnx(model, (3, 8, 8), tmp_path / "model.onnx")
    got = onnxruntime.InferenceSession(str(path)).run(None, {"input": example.numpy()})[0]
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), model(example), atol=1e-5)


# ----------------------------------------------------------------------------- CSATv2

def test_onnx_export_of_adaptive_pooling_to_uneven_bins_gives_the_models_outputs(tmp_path):
    """CSATv2 pools its spatial attention to 7 × 7 from sizes 7 does not divide, which torch's ONNX export
    refused before any pruning ("input size not accessible"): it exports, onnxruntime gives the model's
    outputs for bins that do not divide the input (or exceed it), and a global pool stays ONNX's own."""
    import onnx
    import onnxruntime
    import torch.nn.functional as F

    from engine.models import export_onnx

    class Pools(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([F.adaptive_avg_pool2d(x, (7, 5)).flatten(1), F.adaptive_avg_pool2d(x, 1).flatten(1)], 1)

    for shape in ((3, 16, 16), (2, 3, 3), (3, 13, 11)):
        x = torch.randn(2, *shape)
        path = export_onnx(Pools(), shape, tmp_path / "pools.onnx")
        got = onnxruntime.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
        assert abs(got - Pools()(x).numpy()).max() < 1e-5
        assert "GlobalAveragePool" in {node.op_type for node in onnx.load(str(path)).graph.node}


def test_csatv2_stream_is_pruned_around_its_spatial_attention():
    """CSATv2 weights its stream by a map of the channels' mean and maximum, which torch-pruning tied to the
    attention's one-channel layers (no stream layer was pruned): the stream loses channels, each kept channel
    with its own weights, the attention keeps its layers, and every check passes (ONNX included)."""
    torch.manual_seed(0)
    model = timm.create_model("csatv2", num_classes=5).eval()
    _mark_outputs(model)
    for module in model.modules():  # biases that name the MLPs' hidden channels too
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data = torch.randn(module.out_features)
    example = torch.randn(1, 3, 64, 64)
    pruned = _prune(model, example)
    old = dict(model.named_modules())
    shrunk = 0
    for name, block in pruned.named_modules():
        if type(block).__name__ != "Block" or type(block).__module__ != "timm.models.csatv2":
            continue
        was = old[name]
        kept = [int((was.dwconv.bias == b).nonzero()[0, 0]) for b in block.dwconv.bias]  # stream channels
        hidden = [int((was.pwconv1.bias == b).nonzero()[0, 0]) for b in block.pwconv1.bias]
        assert torch.equal(block.dwconv.weight, was.dwconv.weight[kept])
        assert torch.equal(block.pwconv1.weight, was.pwconv1.weight[hidden][:, kept])
        assert torch.equal(block.pwconv2.weight, was.pwconv2.weight[kept][:, hidden])
        assert torch.equal(block.attn.conv.weight, was.attn.conv.weight)
        shrunk += len(kept) < was.dwconv.out_channels
    assert shrunk
    assert _pruned_checks(model, pruned, example) == []


def test_manual_ticks_that_reach_what_a_family_holds_are_refused_in_one_line():
    """The manual method on SHViT: a stream channel its single-head attention reads, or a layer inside that
    attention (pruned as a unit), is refused before the baseline in one line naming it; other stream
    channels are accepted. (Both ended as "PruneLab bug".)"""
    from timm.models.shvit import SHViT

    from engine.errors import UserError
    from engine.events import CancelToken
    from engine.methods import get_method
    from engine.pruners import ManualPruner

    torch.manual_seed(0)
    model = SHViT(num_classes=5, embed_dim=(32, 48, 64), partial_dim=(8, 16, 16), qk_dim=(8, 8, 8),
                  depth=(1, 2, 1), types=("i", "s", "s")).eval()
    example = torch.randn(1, 3, 64, 64)

    def manual(layer: str, idxs: list[int]) -> ManualPruner:
        cfg = PruneConfig(method="manual", manual_channels={layer: idxs})
        return ManualPruner(model, get_method("manual"), cfg, example, 5, 1, CancelToken())

    stream = "stages.1.downsample.2.conv3.c"  # writes the stream stage 1's attentions read the first 16 of
    with pytest.raises(UserError, match=r"channels 0, 3 reach the first 16 stream channels, which SHViT"):
        manual(stream, [3, 0])
    assert manual(stream, [20, 30]).prep.found
    with pytest.raises(UserError, match=r"mixer\.m\.proj\.1\.c is inside a block .* as one unit"):
        manual("stages.1.blocks.0.mixer.m.proj.1.c", [20])


def test_manual_ticks_on_a_held_layer_are_refused_in_one_line():
    """The manual method on PiT, whose streams are held: ticking a stream layer is refused before the
    baseline, naming it (the cut went through and broke the model); an MLP's hidden channels are accepted."""
    import timm

    from engine.errors import UserError
    from engine.events import CancelToken
    from engine.methods import get_method
    from engine.pruners import ManualPruner

    torch.manual_seed(0)
    model = timm.create_model("pit_ti_224", pretrained=False, num_classes=5, img_size=64).eval()
    example = torch.randn(1, 3, 64, 64)

    def manual(layer: str) -> ManualPruner:
        cfg = PruneConfig(method="manual", manual_channels={layer: [1]})
        return ManualPruner(model, get_method("manual"), cfg, example, 5, 1, CancelToken())

    with pytest.raises(UserError, match=r"attn\.proj, which this model keeps whole"):
        manual("transformers.0.blocks.0.attn.proj")
    assert manual("transformers.0.blocks.0.mlp.fc1").prep.held
