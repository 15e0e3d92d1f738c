"""Pruned models are correct, not just smaller: tiny models with an auxiliary head, a grouped convolution
narrower than round_to and a transformer block go through the whole pipeline with fine-tuning, and
two seeded runs give the same figures."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from torchvision.models.vision_transformer import VisionTransformer

from engine.config import PruneConfig
from engine.events import result_of
from engine.models import DemoResNet, ModelBundle
from engine.pruning import RunDone, run_pruning
from tests.test_architectures import AuxNet, GroupedNet


def _one_channel(model: nn.Module, first: str) -> nn.Module:
    """The same model fed by Fashion-MNIST's single channel."""
    old = dict(model.named_modules())[first]
    parent, _, leaf = first.rpartition(".")
    holder = dict(model.named_modules())[parent] if parent else model
    setattr(holder, leaf, nn.Conv2d(1, old.out_channels, old.kernel_size, old.stride, old.padding))
    return model


def aux_net() -> nn.Module:
    return _one_channel(AuxNet(), "stem.0")


def grouped_net() -> nn.Module:
    return _one_channel(GroupedNet(), "stem")


def vit() -> nn.Module:
    model = VisionTransformer(image_size=28, patch_size=7, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64,
                              num_classes=5)
    return _one_channel(model, "conv_proj")


def prune(b: ModelBundle, fashion, out_dir=None, **kw) -> tuple[RunDone, ModelBundle]:
    cfg = PruneConfig(**{**dict(method="l2", pruning_ratio=0.3, round_to=8, eval_limit=64, measure_speed=False,
                                finetune_batches=1, batch_size=16), **kw})
    events: list = []
    result = result_of(run_pruning(b, fashion, cfg, out_dir=out_dir), events.append)
    assert isinstance(events[-1], RunDone) and result.run is events[-1]
    return result.run, result.bundle


@pytest.mark.parametrize("build", [aux_net, grouped_net, vit], ids=["aux-head", "grouped-conv", "vit-block"])
def test_pruned_model_trains_runs_and_exports(build, fashion, tmp_path):
    torch.manual_seed(0)
    model = build()
    if isinstance(model, VisionTransformer):
        model.heads.head = nn.Linear(32, 10)
    else:
        model.fc = nn.Linear(model.fc.in_features, 10)
    b = ModelBundle(model, "test", "module", (1, 28, 28), 10, fashion.norm, None)
    done, pruned = prune(b, fashion, out_dir=tmp_path / "out")  # fine-tuning ran: train mode works
    assert done.after.params < done.before.params
    assert "onnx" in done.files, done.notes  # ViT's attention exports too
    net = pruned.model.train()
    out = net(torch.zeros(2, 1, 28, 28))
    logits = out[0] if isinstance(out, tuple) else out
    assert logits.shape == (2, 10)
    logits.sum().backward()  # gradients flow through every kept layer
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())


def test_aux_heads_are_dropped_before_the_baseline(fashion):
    model = aux_net()
    model.fc = nn.Linear(16, 10)
    b = ModelBundle(model, "test", "module", (1, 28, 28), 10, fashion.norm, None)
    aux = sum(p.numel() for p in model.aux1.parameters())
    total = sum(p.numel() for p in model.parameters())
    done, pruned = prune(b, fashion)
    assert done.before.params == total - aux  # the baseline does not count weights evaluation never uses
    assert pruned.model.aux1 is None and b.model.aux1 is not None  # the loaded original keeps its heads
    assert any("auxiliary heads" in n for n in done.notes)


def test_two_seeded_runs_give_the_same_figures(tiny_bundle_factory, fashion):
    first, _ = prune(tiny_bundle_factory(), fashion, method="taylor", seed=3, finetune_batches=2)
    second, _ = prune(tiny_bundle_factory(), fashion, method="taylor", seed=3, finetune_batches=2)
    assert (first.after.top1, first.after.params, first.after.macs) == \
        (second.after.top1, second.after.params, second.after.macs)


@pytest.fixture
def tiny_bundle_factory(fashion):
    from shared_fixtures import tiny_resnet

    def make() -> ModelBundle:
        torch.manual_seed(1)
        return ModelBundle(tiny_resnet(), "tiny", "demo:resnet", (1, 28, 28), 10, fashion.norm, fashion.class_names)
    return make


def test_grouped_convolution_narrower_than_round_to_is_pruned(fashion):
    model = grouped_net()
    model.fc = nn.Linear(64, 10)
    b = ModelBundle(model, "test", "module", (1, 28, 28), 10, fashion.norm, None)
    done, pruned = prune(b, fashion)
    grouped = pruned.model.b[0]
    assert grouped.out_channels < 48  # groups of 4 channels, round_to 8: rounded per group, not skipped
    assert grouped.out_channels % grouped.groups == 0
    assert not [n for n in done.notes if "of the parameters; ratio" in n]  # the share follows the ratio


def test_a_small_training_split_still_fine_tunes(image_folder):
    """18 images: the training split is smaller than a fine-tuning batch of 64, so the batch shrinks."""
    from engine.data import load_dataset
    from shared_fixtures import tiny_resnet

    data = load_dataset(f"imagefolder:{image_folder}")
    model = tiny_resnet(in_channels=3, num_classes=3)
    b = ModelBundle(model, "tiny", "demo:resnet", data.input_shape, 3, data.norm, data.class_names)
    done, _ = prune(b, data, finetune_batches=2, batch_size=4)
    assert any(s.top1_after_prune is not None for s in done.steps[1:])  # recovery ran


class FunctionalLinear(nn.Module):
    """Calls a layer's weight through a function, as Swin's attention does: the prune hook never runs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.proj = nn.Linear(8, 8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.conv(x).mean((2, 3))
        return self.fc(torch.nn.functional.linear(x, self.proj.weight, self.proj.bias))


@pytest.mark.parametrize("method", ["magnitude-layer", "magnitude-global"])
def test_unstructured_pruning_of_a_layer_used_through_a_function(method, fashion):
    b = ModelBundle(FunctionalLinear(), "test", "module", (1, 28, 28), 10, fashion.norm, None)
    done, pruned = prune(b, fashion, method=method, finetune_batches=None, keep_head=False)
    assert done.after.nonzero_params < done.before.nonzero_params
    assert (pruned.model.proj.weight == 0).float().mean() > 0.2  # the functional layer was masked too


def test_a_model_torch_pruning_cannot_trace_is_refused_before_any_work(fashion):
    """A channel shuffle breaks torch-pruning's reshape rule: one line naming it, before the baseline.
    (torchvision's own ShuffleNet blocks are held by engine/families/shufflenet.py; a block of one's own is not.)"""
    from torchvision.models.shufflenetv2 import InvertedResidual, ShuffleNetV2

    from engine.errors import UserError
    from engine.pruning import StepDone

    class OwnBlock(InvertedResidual):
        pass

    model = ShuffleNetV2([4, 8, 4], [24, 48, 96, 192, 1024], num_classes=10, inverted_residual=OwnBlock)  # x0.5
    model.conv1[0] = nn.Conv2d(1, 24, 3, 2, 1, bias=False)
    b = ModelBundle(model.eval(), "test", "module", (1, 28, 28), 10, fashion.norm, None)
    events = []
    cfg = PruneConfig(method="l2", pruning_ratio=0.3, eval_limit=64, measure_speed=False)
    with pytest.raises(UserError, match="cannot trace this model.*a reshape that regroups channels.*magnitude-global"):
        for ev in run_pruning(b, fashion, cfg):
            events.append(ev)
    assert not any(isinstance(ev, StepDone) for ev in events)  # nothing was measured
    done, _ = prune(b, fashion, method="magnitude-global", finetune_batches=None)  # what still works
    assert done.after.nonzero_params < done.before.nonzero_params


class _FixedSplit(nn.Module):
    """Splits its channels with sizes recorded at construction (as MixNet's mixed convolution does):
    torch-pruning prunes the convolution before it, and the recorded sizes no longer add up."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.a, self.b = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.sizes = [8, 8]
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        left, right = torch.split(self.conv(x), self.sizes, dim=1)
        y = torch.cat([self.a(left), self.b(right)], 1)
        return self.head(y.mean((2, 3)))


def test_a_model_that_breaks_when_pruned_is_refused_before_any_work(fashion):
    """The pruned copy of the preflight fails its forward pass: one line naming the failure, before the
    baseline is measured, and the unstructured methods that still work."""
    from engine.errors import UserError
    from engine.pruning import StepDone

    b = ModelBundle(_FixedSplit().eval(), "test", "module", (1, 28, 28), 10, fashion.norm, None)
    events = []
    cfg = PruneConfig(method="l2", pruning_ratio=0.5, round_to=None, eval_limit=64, measure_speed=False)
    with pytest.raises(UserError, match="breaks this model.*split_with_sizes.*magnitude-global") as err:
        for ev in run_pruning(b, fashion, cfg):
            events.append(ev)
    assert "\n" not in str(err.value)
    assert not any(isinstance(ev, StepDone) for ev in events)


def test_a_failure_inside_torch_pruning_names_the_layer(fashion, monkeypatch):
    """An error while torch-pruning prunes a group is refused with that group's layer."""
    import torch_pruning as tp

    from engine.errors import UserError

    def broken(layer, idxs):
        raise IndexError("index 99 is out of bounds for dimension 0 with size 16")

    monkeypatch.setattr(tp.pruner.function.LinearPruner, "prune_in_channels", lambda self, layer, idxs: broken(layer, idxs))
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    b = ModelBundle(model.eval(), "test", "module", (1, 28, 28), 10, fashion.norm, None)
    cfg = PruneConfig(method="l2", pruning_ratio=0.5, round_to=None, eval_limit=64, measure_speed=False)
    with pytest.raises(UserError, match=r"fails on this model at layer 1: .*IndexError: index 99"):
        list(run_pruning(b, fashion, cfg))


def test_a_failure_in_prunelabs_own_rules_is_not_blamed_on_torch_pruning(fashion, monkeypatch):
    """An error raised in PruneLab's own architecture rules is said to be PruneLab's, not an operation
    torch-pruning cannot follow."""
    import engine.families.concatenations as concatenations
    from engine.errors import UserError

    def broken(*args):
        raise IndexError("list index out of range")

    monkeypatch.setattr(concatenations, "tied_sets", broken)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    b = ModelBundle(model.eval(), "test", "module", (1, 28, 28), 10, fashion.norm, None)
    cfg = PruneConfig(method="l2", pruning_ratio=0.5, round_to=None, eval_limit=64, measure_speed=False)
    with pytest.raises(UserError, match=r"at layer 1 in PruneLab's own handling of it .*IndexError.*a PruneLab bug") \
            as err:
        list(run_pruning(b, fashion, cfg))
    assert "torch-pruning cannot follow" not in str(err.value)


def test_a_partial_shortcut_is_refused_in_a_second(fashion):
    """torch-pruning's walk through ReXNet's slice-add-concat never ends: refused before it starts,
    naming the block, by the run, the sensitivity scan and the teaching views alike."""
    import timm

    from engine.errors import UserError
    from engine.explain import channel_scores
    from engine.layers import dependency_groups
    from engine.sensitivity import scan

    model = timm.create_model("rexnet_100", pretrained=False, in_chans=1, num_classes=10).eval()
    b = ModelBundle(model, "test", "module", (1, 28, 28), 10, fashion.norm, None)
    cfg = PruneConfig(method="l2", pruning_ratio=0.3, eval_limit=64, measure_speed=False)
    for attempt in (lambda: list(run_pruning(b, fashion, cfg)), lambda: list(scan(b, fashion, limit=32)),
                    lambda: channel_scores(model, "stem.conv", "l1", None, (1, 28, 28), 10)):
        with pytest.raises(UserError, match=r"layer features\.\d+ \(and \d+ more blocks\): it adds its shortcut to the "
                                            r"first \d+ of its \d+ channels"):
            attempt()
    assert dependency_groups(model, (1, 28, 28)) == {}  # the layer table shows no groups rather than hang
    done, _ = prune(b, fashion, method="magnitude-global", finetune_batches=None)
    assert done.after.nonzero_params < done.before.nonzero_params


def test_a_hidden_state_mixer_is_refused_before_any_work(fashion):
    """EfficientViM: torch-pruning's walk into its HSMSSD mixers never ends (the coverage run stopped it at the
    memory limit after 547 s): refused before it starts, naming the mixer; unstructured pruning still works."""
    import timm

    from engine.errors import UserError

    torch.manual_seed(0)
    model = timm.create_model("efficientvim_m1", pretrained=False, in_chans=1, num_classes=10).eval()
    b = ModelBundle(model, "test", "module", (1, 28, 28), 10, fashion.norm, None)
    cfg = PruneConfig(method="l2", pruning_ratio=0.3, eval_limit=64, measure_speed=False)
    with pytest.raises(UserError, match=r"layer stages\.0\.blocks\.0\.mixer \(and \d+ more\): its hidden state"):
        list(run_pruning(b, fashion, cfg))
    done, _ = prune(b, fashion, method="magnitude-global", finetune_batches=None)
    assert done.after.nonzero_params < done.before.nonzero_params


@pytest.mark.parametrize("arch", ["resnet", "swin", "vit"])
def test_the_preflight_copy_shares_the_weights_and_leaves_them_as_they_are(arch):
    """The trial copy costs no second set of weights (an untouched layer keeps the original's memory),
    and pruning it never writes into the original's weights or buffers."""
    from engine.pruners import trial_prune

    torch.manual_seed(0)
    if arch == "resnet":
        model, shape = DemoResNet(1, 10, widths=(8, 16, 32)), (1, 28, 28)
    elif arch == "swin":
        from torchvision.models.swin_transformer import SwinTransformer

        model, shape = SwinTransformer([2, 2], 16, [1, 1], [2, 2], [2, 2], num_classes=5), (3, 16, 16)
    else:
        from torchvision.models.vision_transformer import VisionTransformer

        model, shape = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=32,
                                         mlp_dim=64, num_classes=5), (3, 32, 32)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trial = trial_prune(model, PruneConfig(method="l2", pruning_ratio=0.5, round_to=None), 0.5,
                        torch.zeros(1, *shape), 5 if arch != "resnet" else 10)
    assert sum(p.numel() for p in trial.parameters()) < sum(p.numel() for p in model.parameters())
    shared = {p.data_ptr() for p in model.parameters()} & {p.data_ptr() for p in trial.parameters()}
    assert shared  # the layers the cut leaves whole (the head at least) are the original's memory
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_preflight_copy_is_freed_with_the_collector_paused(monkeypatch):
    """The GUI pauses the cycle collector during a job: the preflight's pruned copy (tied up in torch-pruning's
    reference cycles) must still be gone when it returns, or a run would hold twice the weights."""
    import gc
    import weakref

    import engine.pruners as pruners

    copies = []
    real = pruners.trial_prune

    def spy(*args, **kwargs):
        trial = real(*args, **kwargs)
        copies.append(weakref.ref(trial))
        return trial

    monkeypatch.setattr(pruners, "trial_prune", spy)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    gc.disable()
    try:
        pruners.preflight(model, PruneConfig(method="l2", pruning_ratio=0.5, round_to=None), torch.zeros(1, 1, 8, 8),
                          10)
        assert copies and copies[0]() is None
    finally:
        gc.enable()
