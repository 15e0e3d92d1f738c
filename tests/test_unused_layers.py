"""Layers with weights that eval mode never calls are said in the notes, on every pruning path; the check
records its hooks during a forward pass the pruning already makes (the pruned copy's run) where there is one."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import engine.pruners as pruners
from engine.config import PruneConfig
from engine.events import CancelToken, result_of
from engine.models import ModelBundle
from engine.pruning import run_pruning

EXAMPLE = torch.zeros(1, 1, 28, 28)
CALLS: list[bool] = []  # every forward pass of a TrainOnlyBranch model (copies included): its training flag


class TrainOnlyBranch(nn.Module):
    """A classifier whose second head runs only in train mode (unless `always`): torch-pruning, tracing in eval
    mode, cuts the features it reads and leaves it as it is, so fine-tuning would fail."""

    def __init__(self, always: bool = False) -> None:
        super().__init__()
        self.always = always
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.train_only = nn.Linear(16, 10)
        self.fc = nn.Linear(16, 10)  # last: the classifier head, left alone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CALLS.append(self.training)
        z = self.features(x)
        return self.fc(z) + self.train_only(z) if self.training or self.always else self.fc(z)


NOTE = ("1 layer(s) with weights are not used in eval mode and are left as they are (e.g. train_only); if train "
        "mode uses them, fine-tuning will fail")

# every way a pruner is set up: (configuration, whether the run may take the preflight's copy)
PATHS = {
    "one step, the preflight's copy is the cut": (dict(), True),
    "Explain: no reuse": (dict(), False),
    "two steps": (dict(steps=2), True),
    "calibrated method": (dict(method="taylor", calibration_batches=1), True),
    "speed-up target, layer scope": (dict(pruning_ratio=None, target_speedup=1.5), True),
    "speed-up target, global scope": (dict(pruning_ratio=None, target_speedup=1.5, scope="global"), True),
    "manual channels": (dict(method="manual", pruning_ratio=None, manual_channels={"features.0": [0, 1]}), True),
}


def _cfg(**kw) -> PruneConfig:
    return PruneConfig(**{"method": "l2", "pruning_ratio": 0.5, "round_to": None, "eval_limit": 64,
                          "measure_speed": False, **kw})


def _pruner(model: nn.Module, cfg: PruneConfig, reuse: bool) -> pruners.Pruner:
    return pruners.make_pruner(model, cfg.validate(), cfg, EXAMPLE, 10, 1, CancelToken(), reuse_preflight=reuse)


def _unused_notes(notes) -> list[str]:
    return [n for n in notes if "not used in eval mode" in n]


@pytest.mark.parametrize("path", list(PATHS))
def test_a_layer_only_train_mode_calls_is_said_once_on_every_path(path):
    kw, reuse = PATHS[path]
    torch.manual_seed(0)
    pruner = _pruner(TrainOnlyBranch().eval(), _cfg(**kw), reuse)
    assert _unused_notes(pruner.notes) == [NOTE]


@pytest.mark.parametrize("path", list(PATHS))
def test_no_note_when_eval_mode_calls_every_layer(path):
    kw, reuse = PATHS[path]
    torch.manual_seed(0)
    assert _unused_notes(_pruner(TrainOnlyBranch(always=True).eval(), _cfg(**kw), reuse).notes) == []


class InputBranch(TrainOnlyBranch):
    """Its train-only head reads the image's mean, which pruning does not change: the run finishes."""

    def __init__(self) -> None:
        super().__init__()
        self.train_only = nn.Linear(1, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(self.features(x))
        return out + self.train_only(x.mean((2, 3))) if self.training else out


def test_a_run_says_it_in_its_notes(fashion):
    torch.manual_seed(0)
    bundle = ModelBundle(InputBranch().eval(), "test", "module", (1, 28, 28), 10, fashion.norm, None)
    pruned = result_of(run_pruning(bundle, fashion, _cfg()))
    assert _unused_notes(pruned.run.notes) == [NOTE]
    assert pruned.bundle.model.features[0].out_channels < 16


def test_the_layer_the_note_names_breaks_the_run(fashion):
    """What the note warns of: the train-only head still reads 16 features, and the check of the pruned
    model (a train-mode step) fails the run."""
    from engine.pruning import BrokenModel

    bundle = ModelBundle(TrainOnlyBranch().eval(), "test", "module", (1, 28, 28), 10, fashion.norm, None)
    with pytest.raises(BrokenModel, match="train forward"):
        result_of(run_pruning(bundle, fashion, _cfg()))


@pytest.mark.parametrize("reuse, passes", [(True, 2), (False, 3)])
def test_the_check_costs_no_forward_pass_of_its_own(reuse, passes):
    """One-step run: the copy's graph is traced and the pruned copy run, nothing more. Explain: the copy traced
    and run (the preflight), then the model traced. All in eval mode (a train-mode pass would move BatchNorm)."""
    model = TrainOnlyBranch().eval()
    CALLS.clear()
    pruner = _pruner(model, _cfg(), reuse)
    assert _unused_notes(pruner.notes) == [NOTE]
    assert CALLS == [False] * passes


def test_trials_run_no_check_of_their_own():
    """The speed-up bisection and the latency target prune many copies; their notes are never read."""
    CALLS.clear()
    pruners.trial_prune(TrainOnlyBranch().eval(), _cfg(), 0.5, EXAMPLE, 10)
    assert CALLS == [False]  # the graph's trace


def test_the_check_leaves_the_model_as_it_was():
    model = TrainOnlyBranch().train()
    hooks_before = copy.copy(model.fc._forward_hooks)
    assert pruners.unused_modules(model, EXAMPLE) == ["train_only"]
    assert model.training and model.fc._forward_hooks == hooks_before


def test_attention_reads_its_output_projection_without_calling_it():
    """nn.MultiheadAttention uses out_proj's weights directly: not an unused layer."""

    class Attending(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.attention(x, x, x)[0].mean(1))

    assert pruners.run_once(Attending().eval(), torch.zeros(1, 4, 8)) == []


def test_a_copy_that_fails_its_run_is_refused_not_checked():
    class Failing(TrainOnlyBranch):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("shapes do not match")

    model = Failing().eval()
    with pytest.raises(pruners.UserError, match="fails in its forward pass"):
        pruners.run_once(model, EXAMPLE)
    assert not model.fc._forward_hooks  # the check's hooks are gone
