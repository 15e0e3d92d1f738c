"""Manual pruning: exactly the ticked channels go, with every layer tied to them; bad ticks are one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine.config import PruneConfig
from engine.errors import UserError
from engine.events import result_of
from engine.explain import coupling
from engine.methods import STRUCTURED, all_methods, get_method
from engine.pruning import RunDone, run_pruning

LAYER = "layer1.0.conv2"  # its output is added to the stem's: a residual group


def manual(channels: dict, **kw) -> PruneConfig:
    return PruneConfig(method="manual", pruning_ratio=None, manual_channels=channels, eval_limit=64,
                       measure_speed=False, round_to=None, **kw)


def pruned_model(bundle, data, cfg) -> tuple[RunDone, nn.Module]:
    pruned = result_of(run_pruning(bundle, data, cfg))
    assert isinstance(pruned.run, RunDone)
    return pruned.run, pruned.bundle.model


def removed_by_layer(original: nn.Module, pruned: nn.Module) -> dict[str, int]:
    """Per module with weights: how many output channels it lost."""
    after = dict(pruned.named_modules())
    return {n: m.weight.shape[0] - after[n].weight.shape[0] for n, m in original.named_modules()
            if isinstance(getattr(m, "weight", None), torch.Tensor)
            and m.weight.shape[0] != after[n].weight.shape[0]}


def test_exactly_the_ticked_channels_go_in_every_coupled_layer(tiny, fashion):
    ticked = [1, 5]
    done, model = pruned_model(tiny, fashion, manual({LAYER: ticked}))
    tied = {c.layer for c in coupling(tiny.model, (1, 28, 28), LAYER) if c.side == "output"}
    assert "stem.0" in tied  # the residual partner: the group is more than the layer itself
    lost = removed_by_layer(tiny.model, model)
    assert set(lost) == tied | {LAYER} and set(lost.values()) == {len(ticked)}
    original, after = dict(tiny.model.named_modules()), dict(model.named_modules())
    for name in lost:  # not just any two channels: the surviving rows are the unticked ones, in order
        want = np.delete(original[name].weight.detach().numpy(), ticked, axis=0)
        np.testing.assert_array_equal(after[name].weight.detach().numpy(), want)
    # the layers reading the group lose the same input channels
    reader = original["layer1.0.conv1"].weight.detach().numpy()
    np.testing.assert_array_equal(after["layer1.0.conv1"].weight.detach().numpy(), np.delete(reader, ticked, axis=1))
    assert done.method == "manual" and done.after.params < done.before.params
    assert done.config["manual_channels"] == {LAYER: ticked}


def test_ticks_in_two_coupled_layers_are_original_channel_numbers(tiny, fashion):
    # stem.0 and LAYER share channels: ticking 0 in one and 6 in the other removes both, not a shifted index
    _, model = pruned_model(tiny, fashion, manual({LAYER: [0], "stem.0": [6]}))
    kept = np.delete(tiny.model.stem[0].weight.detach().numpy(), [0, 6], axis=0)
    np.testing.assert_array_equal(model.stem[0].weight.detach().numpy(), kept)


def test_an_uncoupled_layer_loses_only_its_own_channels(tiny, fashion):
    _, model = pruned_model(tiny, fashion, manual({"layer1.0.conv1": [2]}))
    assert removed_by_layer(tiny.model, model) == {"layer1.0.conv1": 1, "layer1.0.bn1": 1}


@pytest.mark.parametrize("channels, words", [
    ({"nope": [1]}, "not a convolution or linear layer"),
    ({LAYER: [99]}, "does not exist"),
    ({LAYER: list(range(8))}, "all its 8 channels"),
    ({"fc": [1]}, "left alone"),
    ({LAYER: [-1]}, "whole numbers from 0"),
    ({LAYER: []}, "non-empty"),
])
def test_bad_ticks_are_one_line_user_errors_before_the_baseline(tiny, fashion, channels, words):
    with pytest.raises(UserError) as err:
        next(run_pruning(tiny, fashion, manual(channels)))  # the first event would be the baseline's progress
    assert words in str(err.value) and "\n" not in str(err.value)


def test_coupled_ticks_that_would_empty_a_layer_fail_in_one_line(tiny, fashion):
    with pytest.raises(UserError, match="would lose all its channels") as err:
        list(run_pruning(tiny, fashion, manual({LAYER: [0, 1, 2, 3], "stem.0": [4, 5, 6, 7]})))
    assert "\n" not in str(err.value)


def test_manual_needs_channels_and_only_manual_reads_them():
    with pytest.raises(UserError, match="tick them"):
        PruneConfig(method="manual", pruning_ratio=None).validate()
    with pytest.raises(UserError, match="manual method only"):
        PruneConfig(method="l2", manual_channels={LAYER: [1]}).validate()
    cfg = manual({LAYER: [1, 2]})
    assert PruneConfig.from_json(cfg.to_json()) == cfg


def test_manual_is_registered_but_never_offered_as_a_criterion():
    assert get_method("manual").structured and get_method("manual").manual
    assert "manual" not in [m.name for m in all_methods(STRUCTURED)]
    assert "manual" in [m.name for m in all_methods(manual=True)]
