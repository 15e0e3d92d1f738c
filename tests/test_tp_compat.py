"""engine.tp_compat: each private torch-pruning hook PruneLab relies on still exists and behaves as PruneLab
assumes (an upgrade fails here, not in a user's run); and tools/check_tp_private.py finds private names
used anywhere else."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp

from engine import tp_compat
from engine.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import check_tp_private  # noqa: E402


class CatNet(nn.Module):
    """A convolution, a grouped convolution, and a concatenation of two branches."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 3, padding=1)
        self.g = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.g(torch.cat((self.a(x), self.b(x)), dim=1)).mean((2, 3)))


class PlainNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.b(torch.relu(self.a(x))).mean((2, 3)))


EXAMPLE = torch.randn(1, 3, 16, 16)


class Recording:
    """PrunerHooks that change nothing and record what they were called with."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def before_init(self, kwargs):
        self.calls.append(("before_init",))

    def tracing(self, model):
        import contextlib

        return contextlib.nullcontext()

    def after_init(self, pruner):
        self.calls.append(("after_init",))

    def scoring(self, pruner, group):
        self.calls.append(("scoring", group))

    def scores(self, pruner, group, imp):
        return imp

    def pruned_count(self, pruner, group, n_pruned, current_channels, round_to):
        root = group[0].dep.target.module if group is not None else None
        widths = (pruner.DG.get_out_channels(root), pruner.DG.get_in_channels(root)) if root is not None else ()
        self.calls.append(("pruned_count", group, current_channels in widths))
        return n_pruned

    def before_cut(self, pruner, group):
        self.calls.append(("before_cut", group))

    def after_cut(self, pruner, group):
        self.calls.append(("after_cut", group, pruner.DG.get_out_channels(group[0].dep.target.module)))


def _pruner(hooks, model=None, **kwargs):
    model = model or CatNet().eval()
    cls = tp_compat.pruner_class(tp.pruner.MetaPruner, hooks)
    return model, cls(model, EXAMPLE, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=0.5,
                      ignored_layers=[model.fc], **kwargs)


def test_the_supported_version_is_installed_and_another_is_refused_in_one_line():
    assert tp_compat.installed_version() == tp_compat.SUPPORTED == "1.6.1"
    tp_compat.check_version(tp_compat.SUPPORTED)
    with pytest.raises(UserError) as err:
        tp_compat.check_version("1.7.0")
    text = str(err.value)
    assert "\n" not in text and "1.7.0" in text and "torch-pruning==1.6.1" in text


def test_without_package_metadata_the_hooks_are_looked_for(monkeypatch):
    """A bundle without torch-pruning's metadata still prunes when the hooks are there, and not otherwise."""
    tp_compat.check_version("unknown")
    monkeypatch.delattr(tp.pruner.BasePruner, "_round_to")
    with pytest.raises(UserError, match="supports torch-pruning 1.6.1 only"):
        tp_compat.check_version("unknown")


@pytest.mark.parametrize("owner,name", [(o, n) for o, names in tp_compat.PRIVATE_HOOKS.items() for n in names],
                         ids=lambda v: v if isinstance(v, str) else getattr(v, "__name__", "?"))
def test_each_private_hook_still_exists(owner, name):
    assert hasattr(owner, name), f"torch-pruning no longer has {name}: engine/tp_compat.py needs a new way"


def test_the_group_is_known_before_its_count_is_rounded_and_every_cut_is_seen():
    """_is_atten_group is called with the very group whose count _round_to rounds next (the rounding hooks
    rely on that call order), the count is the root's width, and _prune yields each group to cut."""
    hooks = Recording()
    model, pruner = _pruner(hooks, PlainNet().eval(), round_to=2)
    pruner.step()
    counts = [c for c in hooks.calls if c[0] == "pruned_count"]
    assert counts and all(group is not None for _, group, _ in counts)
    assert all(root_width for _, _, root_width in counts)
    scored = {id(c[1]) for c in hooks.calls if c[0] == "scoring"}
    assert {id(group) for _, group, _ in counts} <= scored  # the group rounded is one that was scored
    assert [c[0] for c in hooks.calls][:2] == ["before_init", "after_init"]
    assert any(c[0] == "before_cut" for c in hooks.calls) and model.a.out_channels < 8
    cut = [c for c in hooks.calls if c[0] == "after_cut"]  # called once the group was cut
    assert cut and any(width == model.a.out_channels for _, group, width in cut if group[0].dep.target.module is model.a)


def test_the_pruner_gets_fresh_channel_group_dicts():
    """torch-pruning's default dicts are shared and filled in place: a pruner of PruneLab's gets its own."""
    _, pruner = _pruner(Recording())
    defaults = tp.pruner.MetaPruner.__init__.__defaults__
    assert not any(d is pruner.in_channel_groups or d is pruner.out_channel_groups for d in defaults)


def test_channel_groups_and_initial_width():
    model, pruner = _pruner(Recording())
    graph = pruner.DG
    grouped = graph.get_pruning_group(model.g, tp.prune_conv_out_channels, [0])
    assert tp_compat.channel_groups(pruner, grouped) == 4
    plain_model, plain_pruner = _pruner(Recording(), PlainNet().eval())
    plain = plain_pruner.DG.get_pruning_group(plain_model.a, tp.prune_conv_out_channels, [0])
    assert tp_compat.channel_groups(plain_pruner, plain) == 1
    assert tp_compat.initial_width(pruner, model.g, out=True) == 16
    assert tp_compat.initial_width(pruner, model.g, out=False) == 16


def test_concat_offsets_are_read_from_the_concatenation_node():
    model = CatNet().eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=EXAMPLE)
    group = graph.get_pruning_group(model.a, tp.prune_conv_out_channels, [0])
    offsets = [tp_compat.concat_offsets(dep.target.module) for dep, _ in group]
    assert [0, 8, 16] in offsets
    assert tp_compat.concat_offsets(model.a) is None


def test_select_parameter_keeps_the_rows_and_their_gradient():
    weight = nn.Parameter(torch.arange(12.0).view(4, 3))
    weight.grad = torch.ones(4, 3) * torch.arange(4.0).view(4, 1)
    cut = tp_compat.select_parameter(tp.pruner.function.ConvPruner(), weight, [0, 2], 0)
    assert isinstance(cut, nn.Parameter) and cut.tolist() == [[0, 1, 2], [6, 7, 8]]
    assert cut.grad[:, 0].tolist() == [0, 2]


def test_steps_restart_and_only_groups():
    model, pruner = _pruner(Recording(), PlainNet().eval(), iterative_steps=2)
    assert tp_compat.steps_taken(pruner) == 0
    list(pruner.step(interactive=True))
    assert tp_compat.steps_taken(pruner) == 1
    importance = tp.importance.GroupMagnitudeImportance(p=1)
    tp_compat.restart(pruner, importance)
    assert tp_compat.steps_taken(pruner) == 0 and pruner.importance is importance
    graph = pruner.DG
    one = graph.get_pruning_group(model.a, tp.prune_conv_out_channels, [0])
    with tp_compat.only_groups(graph, [one]):
        walked = [g for g in pruner.step(interactive=True)]  # a pass walks only the group given
        assert all(g[0].dep.target.module is model.a for g in walked)
    assert "get_all_groups" not in graph.__dict__ and len(list(graph.get_all_groups())) > 1


def test_a_failure_is_told_apart_by_where_it_happened():
    """A reshape torch-pruning cannot follow (a channel shuffle) fails in its function named after the
    operation; a failure raised from engine/ code is PruneLab's."""

    from torchvision.models.shufflenetv2 import InvertedResidual, ShuffleNetV2

    class OwnBlock(InvertedResidual):  # not the torchvision block the ShuffleNet family holds
        pass

    model = ShuffleNetV2([3, 1, 1], [8, 16, 32, 64, 128], num_classes=5, inverted_residual=OwnBlock).eval()
    with pytest.raises(tp_compat.TRACING_ERRORS) as err:
        _pruner(Recording(), model)
    assert not tp_compat.failure_is_prunelabs(err.value)
    assert "reshape" in tp_compat.failed_operation(err.value)
    try:
        tp_compat.check_version("0")
    except UserError as exc:
        assert tp_compat.failure_is_prunelabs(exc) and tp_compat.failed_operation(exc) == "the operations around it"


# ----------------------------------------------------------------------------- tools/check_tp_private.py

PRIVATE = check_tp_private.torch_pruning_private_names()


def test_the_private_names_come_from_torch_prunings_sources():
    assert {"_round_to", "_is_atten_group", "_get_channel_groups", "_prune", "_ConcatOp"} <= PRIVATE
    assert "prune_conv_out_channels" not in PRIVATE and "__init__" not in PRIVATE


@pytest.mark.parametrize("code,what", [
    ("from torch_pruning.ops import _ConcatOp", "imports torch_pruning.ops._ConcatOp"),
    ("import torch_pruning._helpers", "imports torch_pruning._helpers"),
    ("import torch_pruning as tp\nx = tp.ops._ConcatOp", "tp.ops._ConcatOp"),
    ("from torch_pruning import ops\nx = ops._ConcatOp", "ops._ConcatOp"),
    ("def f(p, g):\n    return p._get_channel_groups(g)", "._get_channel_groups"),
    ("def f(p):\n    return getattr(p, '_round_to')", "getattr(..., '_round_to')"),
    ("class P(Base):\n    def _round_to(self, n, c, r):\n        return n", "overrides _round_to"),
])
def test_the_check_flags_each_kind_of_use(code, what):
    found = check_tp_private.check_source(code, "planted.py", PRIVATE)
    assert len(found) == 1 and found[0].startswith("planted.py:") and what in found[0], found


def test_the_check_leaves_public_names_and_a_files_own_names_alone():
    code = ("import torch_pruning as tp\n"
            "x = tp.pruner.MetaPruner\n"
            "class Panel:\n"
            "    def __init__(self):\n"
            "        self._results = {}\n"
            "    def show(self):\n"
            "        return self._results\n"
            "def _prune(model):\n"
            "    return model\n")
    assert check_tp_private.check_source(code, "clean.py", PRIVATE) == []
