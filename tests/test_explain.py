"""Teaching facts (engine/explain.py): the scores and cut sets are the pruner's own, criteria compare,
couplings carry their reasons, feature maps and predictions come from real forward passes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine.config import PruneConfig
from engine.errors import UserError
from engine.explain import (channel_scores, coupling, criteria_side_by_side, explain_image, explain_layer, jaccard,
                            result_of)
from engine.methods import STRUCTURED, all_methods
from engine.models import DemoResNet, ModelBundle
from engine.pruning import StepDone, run_pruning

SHAPE = (1, 28, 28)


def small_resnet() -> DemoResNet:
    torch.manual_seed(1)
    model = DemoResNet(widths=(8, 16, 32)).eval()
    # trained models do not have equal BatchNorm scales; distinct ones make every criterion's ranking strict
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.2, 1.5)
    return model


def removed_by_run(model: nn.Module, data, cfg: PruneConfig, layer: str) -> np.ndarray:
    """The channels of `layer` that a one-step run_pruning removes (bool per original channel)."""
    bundle = ModelBundle(model, "tiny", "demo:resnet", SHAPE, 10, data.norm, data.class_names,
                         arch_kwargs={"widths": [8, 16, 32]})
    steps = [e for e in run_pruning(bundle, data, cfg) if isinstance(e, StepDone)]
    return ~steps[-1].histograms[layer].kept


@pytest.mark.parametrize("method", ["l1", "l2"])
@pytest.mark.parametrize("round_to", [None, 4])
@pytest.mark.parametrize("layer", ["layer1.0.conv1", "layer2.0.conv2", "layer3.0.shortcut.0"])
def test_explained_cut_is_what_the_run_removes(fashion, method, round_to, layer):
    model = small_resnet()
    cfg = PruneConfig(method=method, pruning_ratio=0.4, round_to=round_to, eval_limit=64, measure_speed=False)
    explained = channel_scores(model, layer, method, fashion, SHAPE, 10, cfg)
    removed = removed_by_run(model, fashion, cfg, layer)
    assert explained.n_cut > 0
    assert np.array_equal(explained.cut, removed)
    # the cut channels are the lowest-scoring ones: the cut line separates them
    assert explained.scores[explained.cut].max() <= explained.scores[~explained.cut].min()
    assert sorted(explained.ranks[explained.cut]) == list(range(explained.n_cut))



@pytest.mark.parametrize("method", ["taylor", "hessian"])
def test_data_aware_scores_are_the_runs_and_reused(fashion, method):
    """Only the layer's group gets gradients and they are kept for the next call: the cut is still the run's,
    and the scores of a second call (another layer explained in between) are the first call's."""
    model = small_resnet()
    cfg = PruneConfig(method=method, pruning_ratio=0.4, round_to=None, calibration_batches=2, eval_limit=64,
                      measure_speed=False)
    first = channel_scores(model, "layer2.0.conv2", method, fashion, SHAPE, 10, cfg)
    assert np.array_equal(first.cut, removed_by_run(model, fashion, cfg, "layer2.0.conv2"))
    other = channel_scores(model, "layer1.0.conv1", method, fashion, SHAPE, 10, cfg)
    assert np.array_equal(other.cut, removed_by_run(model, fashion, cfg, "layer1.0.conv1"))
    again = channel_scores(model, "layer2.0.conv2", method, fashion, SHAPE, 10, cfg)
    assert np.array_equal(again.scores, first.scores) and np.array_equal(again.cut, first.cut)
    assert np.isfinite(first.scores).all() and first.scores.std() > 0

def test_l1_scores_are_the_group_roots_filter_norms():
    model = small_resnet()
    explained = channel_scores(model, "layer2.0.conv2", "l1", None, SHAPE, 10, ratio=0.5)
    root = dict(model.named_modules())[explained.root]
    norms = root.weight.detach().abs().flatten(1).sum(1).numpy()
    # torch-pruning divides by the mean, so the scores are the norms up to one factor
    assert np.allclose(explained.scores / explained.scores.mean(), norms / norms.mean(), atol=1e-5)
    if explained.root != "layer2.0.conv2":
        assert any(explained.root in note for note in explained.notes)


def test_classifier_head_is_scored_but_never_cut():
    explained = channel_scores(small_resnet(), "fc", "l2", None, SHAPE, 10, ratio=0.5)
    assert not explained.pruned and explained.n_cut == 0
    assert np.isfinite(explained.scores).all()


def test_every_structured_criterion_side_by_side(fashion):
    model = small_resnet()
    result = criteria_side_by_side(model, "layer2.0.conv1", fashion, SHAPE, 10,
                                   PruneConfig(round_to=None, calibration_batches=1), ratio=0.5)
    assert result.methods == tuple(m.name for m in all_methods(STRUCTURED))
    assert result.jaccard.shape == (len(result.methods),) * 2
    assert np.allclose(np.diag(result.jaccard), 1.0)
    assert np.allclose(result.jaccard, result.jaccard.T)
    for name, scores in result.scores.items():
        assert scores.n_cut == 8, name  # 16 channels at 0.5, no rounding
    # the same criterion with itself: identical cut sets
    same = criteria_side_by_side(model, "layer2.0.conv1", None, SHAPE, 10, ratio=0.5, methods=["l2", "l2"])
    assert np.allclose(same.jaccard, 1.0)


def test_jaccard_by_hand():
    a, b = np.array([1, 1, 0, 0], bool), np.array([0, 1, 1, 0], bool)
    assert np.allclose(jaccard([a, b]), [[1, 1 / 3], [1 / 3, 1]])
    assert jaccard([np.zeros(3, bool), np.zeros(3, bool)])[0, 1] == 1.0


def test_data_aware_criterion_needs_data():
    with pytest.raises(UserError, match="taylor"):
        channel_scores(small_resnet(), "layer1.0.conv1", "taylor", None, SHAPE, 10, ratio=0.5)


def test_unknown_layer_and_unstructured_method_are_user_errors():
    with pytest.raises(UserError, match="not a convolution"):
        channel_scores(small_resnet(), "layer9", "l1", None, SHAPE, 10, ratio=0.5)
    with pytest.raises(UserError, match="unstructured"):
        channel_scores(small_resnet(), "layer1.0.conv1", "magnitude-global", None, SHAPE, 10, ratio=0.5)


def test_residual_block_coupling_names_the_add_and_the_batchnorm():
    groups = {c.layer: c for c in coupling(small_resnet(), SHAPE, "layer2.0.conv2")}
    assert groups["layer2.0.bn2"].kind == "batchnorm" and "BatchNorm" in groups["layer2.0.bn2"].reason
    assert groups["layer2.0.shortcut.0"].kind == "residual"
    assert "residual add" in groups["layer2.0.shortcut.0"].reason
    assert groups["layer3.0.conv1"].side == "input" and groups["layer3.0.shortcut.0"].side == "input"
    assert "layer2.0.conv1" not in groups  # its output is not added to anything
    # the identity shortcut ties the first block to the stem
    first = {c.layer: c for c in coupling(small_resnet(), SHAPE, "layer1.0.conv2")}
    assert first["stem.0"].kind == "residual"


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 6, 3, padding=1)
        self.dw = nn.Conv2d(10, 10, 3, padding=1, groups=10)
        self.c = nn.Conv2d(10, 5, 1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(self.c(self.dw(torch.cat([self.a(x), self.b(x)], 1))).mean((2, 3)))


def test_concatenation_and_depthwise_coupling():
    groups = {c.layer: c for c in coupling(Concat().eval(), (1, 8, 8), "a")}
    assert groups["dw"].kind in ("concat", "depthwise")
    assert groups["c"].kind == "concat" and "concatenat" in groups["c"].reason
    assert "b" not in groups  # joined, not added: b keeps its own channels
    direct = {c.layer: c for c in coupling(Concat().eval(), (1, 8, 8), "c")}
    assert direct["fc"].kind == "next-input"


def test_explain_layer_and_json(fashion):
    cfg = PruneConfig(method="l2", pruning_ratio=0.5, round_to=None)
    result = result_of(explain_layer(small_resnet(), "layer2.0.conv2", cfg, None, SHAPE, 10))
    assert result.chosen is not None and result.chosen.method == "l2"
    data = result.to_json()
    assert {"layer", "group", "methods", "jaccard"} <= set(data)
    assert {"scores", "ranks", "cut"} <= set(data["methods"]["l2"])
    assert any("residual add" in g["reason"] for g in data["group"])


def test_image_through_original_and_pruned(fashion):
    model = small_resnet()
    cfg = PruneConfig(method="l2", pruning_ratio=0.5, round_to=None, bn_recalibrate=True, bn_batches=1)
    result = result_of(explain_image(model, "layer1.0.conv1", cfg, fashion, 3, SHAPE, 10))
    assert result.maps.maps.shape == (8, 28, 28)
    assert result.cut.sum() == 4
    assert len(result.original) == len(result.pruned) == len(result.recovered) == 5
    assert abs(sum(p.probability for p in result.original)) <= 1.0 + 1e-6
    assert result.picture.shape == (28, 28) and 0 <= result.picture.min() and result.picture.max() <= 1
    # the original model is untouched
    assert dict(model.named_modules())["layer1.0.conv1"].out_channels == 8
    with torch.no_grad():
        image = next(iter(fashion.loader("test", 4)))[0][3:4]
        hooked = model.layer1[0].conv1(model.stem(image))
    assert np.allclose(result.maps.maps, hooked[0].numpy(), atol=1e-5)


def test_swin_stream_couples_its_window_blocks_as_units():
    """On a Swin model the patch embedding's channels run through window attention and patch merging,
    which are pruned as units: the group names them with that reason, and the walk ends."""
    from torchvision.models.swin_transformer import SwinTransformer

    from engine.explain import coupling

    model = SwinTransformer(patch_size=[4, 4], embed_dim=24, depths=[2, 2], num_heads=[3, 6], window_size=[2, 2],
                            num_classes=5).eval()
    found = coupling(model, (3, 32, 32), "features.0.0")
    reasons = {(c.layer, c.kind): c.reason for c in found}
    assert reasons[("features.1.0.attn", "next-input")].startswith("window attention, pruned as one unit")
    assert reasons[("features.2", "next-input")].startswith("patch merging, pruned as one unit")
    assert ("features.1.1.mlp.3", "residual") in reasons


@pytest.mark.parametrize("method", ["l1", "hessian"])
def test_explain_yields_the_chosen_scores_first_and_the_same_result(fashion, method):
    """The Teach tab fills its first views from ChosenScores; scoring the chosen method first and the data-free
    criteria before the calibrated ones changes nothing in the result (compared with the registry's order)."""
    from engine.explain import ChosenScores, CriteriaSoFar, iter_criteria
    from engine.explain import scores as explain_scores
    from engine.events import Progress

    cfg = PruneConfig(method=method, pruning_ratio=0.5, round_to=None, calibration_batches=1)
    model, layer = small_resnet(), "layer2.0.conv2"
    events: list = []
    explain_scores._LAST.clear()
    result = result_of(explain_layer(model, layer, cfg, fashion, SHAPE, 10), events.append)
    scored = [e.message.split(" with ")[1].split(" ")[0] for e in events
              if isinstance(e, Progress) and " with " in e.message]
    first = next(i for i, e in enumerate(events) if isinstance(e, ChosenScores))
    assert scored[0] == method and sum(1 for e in events[:first] if isinstance(e, Progress)
                                      and " with " in e.message) == 1  # nothing else scored before it
    chosen = events[first]
    assert chosen.scores is result.chosen and chosen.coupling == result.coupling
    later = scored[1:]
    assert set(later) | {method} == set(result.criteria.methods) and len(later) == len(set(later))
    calibrated = [n in ("taylor", "hessian") for n in later]
    assert calibrated == sorted(calibrated) and any(calibrated)  # the data-free ones first
    so_far = [e for e in events if isinstance(e, CriteriaSoFar)]
    assert [len(e.criteria.methods) for e in so_far] == list(range(2, len(result.criteria.methods) + 1))
    assert so_far[-1].pending == () and so_far[0].pending == tuple(later[1:])

    explain_scores._LAST.clear()  # a fresh session, scored in the registry's order as `explain --json` scores it
    reference = result_of(iter_criteria(model, layer, fashion, SHAPE, 10, cfg, cfg.pruning_ratio))
    assert result.criteria.methods == reference.methods
    assert np.array_equal(result.criteria.jaccard, reference.jaccard)
    for name in reference.methods:
        a, b = result.criteria.scores[name], reference.scores[name]
        assert np.array_equal(a.scores, b.scores, equal_nan=True) and np.array_equal(a.cut, b.cut), name
        assert np.array_equal(a.order, b.order) and a.notes == b.notes and a.tied == b.tied, name
