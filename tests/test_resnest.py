"""ResNeSt's split attention (timm's SplitAttn) pruned as one unit (engine/families/resnest.py): the channel order
through its radix splits, its grouped input, the units the share check uses, and resnest14d through the
engine (the last two go through engine.architectures.prepare, which passes the unit's pruner on)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp

from engine import tracing
from engine.families import resnest
from engine.errors import UserError
from engine.verify import check_pruned

timm = pytest.importorskip("timm")
from timm.layers import SplitAttn  # noqa: E402

RATIO = 0.3


class SplitNet(nn.Module):
    """conv -> split attention (16 channels, radix 2) -> conv -> classifier, as in a ResNeSt bottleneck."""

    def __init__(self, radix: int = 2, groups: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.split = SplitAttn(16, 16, stride=stride, groups=groups, radix=radix, norm_layer=nn.BatchNorm2d)
        self.out = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.out(self.split(self.stem(x))).mean((2, 3)))


def _split_net() -> SplitNet:
    torch.manual_seed(0)
    model = SplitNet().eval()
    for bn in (model.stem[1], model.split.bn0, model.split.bn1):  # running statistics that tell channels apart
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 2)
        bn.bias.data.uniform_(-1, 1)
    return model


def _prune_group(model: nn.Module, example: torch.Tensor, layer: nn.Module, idxs: list[int]) -> None:
    graph = tracing.dependency_graph(model, example)
    graph.get_pruning_group(layer, graph.get_pruner_of_module(layer).prune_out_channels, idxs).prune()


def test_split_attention_output_channel_goes_from_every_split():
    """Channels 1 and 5 of the unit's output are made dead (the next conv and fc1 ignore them): removing
    them, through conv r·C + c, bn0, fc1's input and fc2 r·C + c, leaves the forward exactly as it was.
    Any other channel order would mix up the attention of the kept channels."""
    model = _split_net()
    example = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        for c in (1, 5):
            model.out.weight[:, c] = 0
            model.split.fc1.weight[:, c] = 0
        expected = model(example)
    old = copy.deepcopy(model.split)
    _prune_group(model, example, model.split, [1, 5])
    split, kept = model.split, [c for c in range(16) if c not in (1, 5)]
    rows = [r * 16 + c for r in range(2) for c in kept]
    assert split.conv.out_channels == split.fc2.out_channels == 28 and split.fc1.in_channels == 14
    assert torch.equal(split.conv.weight, old.conv.weight[rows]) and torch.equal(split.fc2.bias, old.fc2.bias[rows])
    assert torch.equal(split.bn0.running_mean, old.bn0.running_mean[rows])
    with torch.no_grad():
        assert torch.allclose(model(example), expected, atol=1e-5)


def test_split_attention_input_loses_the_same_position_in_every_split():
    """The convolution is grouped by split: input channel 3 of the stem goes with channel 3 + 8, and the
    forward is unchanged when both were dead; one of them alone cannot go."""
    model = _split_net()
    example = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        model.stem[1].weight[[3, 11]] = 0
        model.stem[1].bias[[3, 11]] = 0  # relu(0): the two channels carry nothing
        expected = model(example)
    old = copy.deepcopy(model.split.conv)
    with pytest.raises(UserError, match="same positions in every chunk"):
        trial = copy.deepcopy(model)  # the stem loses its channel before the unit refuses
        _prune_group(trial, example, trial.stem[0], [3])
    _prune_group(model, example, model.stem[0], [3, 11])
    conv = model.split.conv
    assert conv.in_channels == 14 and conv.weight.shape[1] == 7
    assert torch.equal(conv.weight, old.weight[:, [p for p in range(8) if p != 3]])
    with torch.no_grad():
        assert torch.allclose(model(example), expected, atol=1e-5)


def test_a_pruned_split_attention_with_unequal_sides_traces_and_prunes_again():
    """Input and output are rounded in separate groups, so they may end up different: the stand-in pads
    (or crops) to the output, and the unit still traces, groups and prunes."""
    model = _split_net()
    example = torch.randn(2, 3, 8, 8)
    _prune_group(model, example, model.split, [0, 1, 2, 3])  # output 12, input still 16
    graph = tracing.dependency_graph(model, example)
    group = graph.get_pruning_group(model.split, graph.get_pruner_of_module(model.split).prune_out_channels, [0])
    assert {dep.target.module for dep, _ in group} == {model.split, model.out}
    group.prune()
    _prune_group(model, example, model.stem[0], [0, 8])
    assert (model.split.conv.in_channels, model.split.conv.out_channels) == (14, 22)
    assert model(example).shape == (2, 5)


def test_scans_and_hand_picked_cuts_leave_the_split_input_alone():
    """A scan or a manual cut removes arbitrary channels: the groups feeding a split attention's input are
    reported by cuts_heads (the scan leaves them out), its output group is not."""
    from engine.sensitivity import layer_groups

    model = _split_net()
    example = torch.randn(1, 3, 8, 8)
    graph = tracing.dependency_graph(model, example)

    def group(layer):
        return graph.get_pruning_group(layer, graph.get_pruner_of_module(layer).prune_out_channels, [0])

    assert tracing.cuts_heads(group(model.stem[0])) and not tracing.cuts_heads(group(model.split))
    assert not tracing.cuts_heads(group(model.out))
    assert [root for root, _, _ in layer_groups(model, (3, 8, 8), 5)] == ["out"]


@pytest.mark.parametrize("kind", [dict(radix=4, groups=2), dict(radix=1), dict(stride=2)],
                         ids=["cardinality2", "radix1", "stride2"])
def test_other_split_attentions_are_left_to_torch_pruning(kind):
    """No stand-in and no pruner for a kind the unit does not cover (torch-pruning traces it as it is)."""
    model = SplitNet(**kind).eval()
    assert resnest.split_attentions(model) == [] and tracing.customized_pruners(model) == {}
    assert resnest.root_module_types(model) is None and resnest.split_chunks(model) == {}
    with tracing.tracing(model):
        assert "forward" not in model.split.__dict__


def test_units_and_the_stand_in_follow_the_radix():
    model = _split_net()
    split = model.split
    units = {split: 8}
    tracing.record_units(model, units)
    assert units[split.conv] == units[split.fc2] == 16 and units[split.fc1] == split.fc1.out_channels
    assert resnest.split_chunks(model) == {split: 2}
    assert resnest.root_module_types(model)[-1] is SplitAttn
    x = torch.randn(1, 16, 5, 5)
    with tracing.tracing(model):
        assert split(x).shape == (1, 16, 5, 5)
    assert "forward" not in split.__dict__ and split(x).shape == (1, 16, 5, 5)


# ----------------------------------------------------------------------------- resnest14d through the engine

def _resnest(name: str = "resnest14d") -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10).eval()


def _kept_rows(old: torch.Tensor, new: torch.Tensor) -> list[int]:
    return [next(i for i in range(len(old)) if torch.equal(old[i], row)) for row in new]


def test_resnest14d_prunes_every_split_attention():
    """Through prepare and its pruner (as the pipeline builds it): every split attention loses channels from
    every split, the model passes check_pruned with the recorded units, and the kept weights are the originals'."""
    from engine.architectures import prepare

    model = _resnest()
    blocks = [(name, block) for name, block in model.named_modules() if hasattr(block, "conv2")]
    with torch.no_grad():
        for _, block in blocks:  # distinct values, to tell the kept channels by
            block.bn1.weight.uniform_(0.5, 1.5)
            block.conv2.bn0.weight.uniform_(0.5, 1.5)
    example = torch.randn(2, 3, 64, 64)
    prep = prepare(model, example, 8)
    before, original = sum(p.numel() for p in model.parameters()), copy.deepcopy(model)
    pruner = prep.pruner_class(tp.pruner.MetaPruner)(
        model, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=RATIO,
        ignored_layers=[model.fc], round_to=8, **prep.pruner_kwargs)
    pruner.step()
    prep.after_step(model)
    assert any("ResNeSt" in n for n in prep.notes)
    after = sum(p.numel() for p in model.parameters())
    assert check_pruned(model, example, before, after, RATIO, original=original, round_to=8, units=prep.units,
                        ignored=("fc",), onnx=False) == []
    assert model(example).shape == (2, 10)
    old_blocks = dict(original.named_modules())
    assert len(blocks) == 4
    for name, block in blocks:
        split, old = block.conv2, old_blocks[name].conv2
        width, old_width = split.conv.out_channels // 2, old.conv.out_channels // 2
        assert width < old_width and split.fc2.out_channels == 2 * width == split.fc1.in_channels * 2
        assert prep.units[split.conv] == prep.units[split.fc2] == 16
        # which unit channels and which input positions were kept, from fc2's bias and the block's conv1
        kept = _kept_rows(old.fc2.bias[:old_width, None], split.fc2.bias[:width, None])
        rows = [r * old_width + c for r in range(2) for c in kept]
        inputs = _kept_rows(old_blocks[name].bn1.weight[:, None], block.bn1.weight[:, None])
        chunk, half = old.conv.in_channels // 2, len(inputs) // 2
        assert inputs[half:] == [p + chunk for p in inputs[:half]]  # the same positions in both chunks
        assert torch.equal(split.conv.weight, old.conv.weight[rows][:, inputs[:half]])
        assert torch.equal(split.bn0.weight, old.bn0.weight[rows]) and torch.equal(split.fc2.bias, old.fc2.bias[rows])
        assert torch.equal(split.fc1.weight, old.fc1.weight[:, kept])


def test_a_pruned_resnest_prunes_again():
    """trial_prune (the pipeline's preflight) on resnest14d, then again on its result."""
    from engine.config import PruneConfig
    from engine.pruners import trial_prune

    example = torch.zeros(1, 3, 64, 64)
    cfg = PruneConfig(method="l2", pruning_ratio=0.2, round_to=8)
    once = trial_prune(_resnest(), cfg, 0.2, example, 10)
    twice = trial_prune(once, cfg, 0.2, example, 10)
    widths = [[m.conv.out_channels for m in resnest.split_attentions(model)] for model in (once, twice)]
    assert all(a > b for a, b in zip(*widths)) and len(widths[1]) == 4
    assert twice(example).shape == (1, 10)
