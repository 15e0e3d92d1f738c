"""Every use of torch-pruning's private API, behind names that say what PruneLab needs from it.

torch-pruning's public extension points (`customized_pruners`, `root_module_types`, the channel-group
and `num_heads` options) cover most of what the model families need (engine/families/); what they do
not is here, and only here (tools/check_tp_private.py fails `make test` on a private torch-pruning name
anywhere else; tests/test_tp_compat.py fails on an upgrade that moved one):
- the count a group keeps (`_round_to`) and which group is being rounded (`_is_atten_group` is called
  with it right before, in both passes of `_prune`);
- a group's channel groups (`_get_channel_groups`), the groups as they are pruned (`_prune`);
- a parameter cut along one dimension with its gradient (`BasePruningFunc._prune_parameter_and_grad`);
- a concatenation node's offsets (`ops._ConcatOp`);
- the step counter and the importance of a built pruner (`current_step`, read; `reset`, to score again);
- the groups one pruning pass walks (`DependencyGraph.get_all_groups`, replaced on the instance);
- a concatenation's sizes where torch-pruning cannot infer them (`index_mapping.update_concat_index_mapping`,
  wrapped while a graph is built);
- the shared mutable defaults of the pruner's channel-group dicts;
- which operation failed, read from the names of torch-pruning's functions in the traceback.

Importing this module checks the installed version (one line naming the supported one).
"""
from __future__ import annotations

import importlib.metadata
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Protocol

import torch
import torch.nn as nn
import torch_pruning as tp
from torch_pruning import ops

from engine.errors import UserError

SUPPORTED = "1.6.1"  # requirements.txt pins it; the hooks below are checked against it (tests/test_tp_compat.py)


def installed_version() -> str:
    """torch-pruning's version from its package metadata (its own `__version__` says 1.6.0 in 1.6.1)."""
    try:
        return importlib.metadata.version("torch-pruning")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def check_version(found: str | None = None) -> None:
    """Refuse another torch-pruning than the one PruneLab's hooks are written for, in one line. Without
    package metadata (a bundle that left it out) the hooks themselves are looked for instead."""
    found = found or installed_version()
    if found == "unknown" and all(hasattr(owner, name) for owner, names in PRIVATE_HOOKS.items() for name in names):
        return
    if found != SUPPORTED:
        raise UserError(f"torch-pruning {found} is installed, but PruneLab supports torch-pruning {SUPPORTED} only "
                        f"(it relies on parts of it that change between versions): "
                        f"pip install torch-pruning=={SUPPORTED}")


# The private names used below, by owner: tests/test_tp_compat.py asserts each still exists.
PRIVATE_HOOKS = {
    tp.pruner.BasePruner: ("_round_to", "_is_atten_group", "_get_channel_groups", "_prune"),
    tp.BasePruningFunc: ("_prune_parameter_and_grad",),
    ops: ("_ConcatOp",),
}

check_version()

# torch-pruning traces every op; one it cannot map (ShuffleNet's channel shuffle divides by zero in its
# reshape rule, a split with recorded sizes indexes past the end) raises one of these
TRACING_ERRORS = (RuntimeError, ValueError, ZeroDivisionError, IndexError, KeyError, TypeError)


class PrunerHooks(Protocol):
    """What PruneLab changes in a torch-pruning pruner (engine.preparation.ArchitectureHooks)."""

    def before_init(self, kwargs: dict) -> None: ...  # more keyword arguments (layers to leave alone)

    def tracing(self, model: nn.Module): ...  # a context: the model as torch-pruning should trace it

    def after_init(self, pruner) -> None: ...  # the graph is built

    def scoring(self, pruner, group) -> None: ...  # about to score `group`

    def scores(self, pruner, group, imp: torch.Tensor | None) -> torch.Tensor | None: ...

    def pruned_count(self, pruner, group, n_pruned: int, current_channels: int, round_to: int) -> int: ...

    def before_cut(self, pruner, group) -> None: ...  # a group torch-pruning is about to yield for pruning

    def after_cut(self, pruner, group) -> None: ...  # that group was cut; the next is not built yet


def pruner_class(base: type, hooks: PrunerHooks) -> type:
    """`base` (a torch-pruning pruner class: the method picks it) with `hooks` in its ranking, rounding and
    cutting. Built at run time because the base varies; the one class PruneLab builds that way."""

    class ArchitecturePruner(base):
        def __init__(self, *args, **kwargs):
            # torch-pruning 1.6.1 fills these dicts in place and their defaults are shared between
            # instances: every pruned model would stay referenced by the next one. Fresh ones per pruner.
            kwargs.setdefault("in_channel_groups", {})
            kwargs.setdefault("out_channel_groups", {})
            hooks.before_init(kwargs)
            with hooks.tracing(args[0] if args else kwargs["model"]):
                super().__init__(*args, **kwargs)
            self._prunelab_group = None
            hooks.after_init(self)
            if not self.round_to:
                self.round_to = 1  # torch-pruning rounds only when round_to is set; PruneLab's rounding needs the hook

        # Called for each group right before its count is rounded (and before it is scored): remember it.
        def _is_atten_group(self, group):
            self._prunelab_group = group
            return super()._is_atten_group(group)

        # The count a group loses: global scope has no per-layer target to round beforehand, so the count
        # can only be rounded here, after the ranking chose it.
        def _round_to(self, n_pruned, current_channels, round_to):
            return hooks.pruned_count(self, self._prunelab_group, n_pruned, current_channels, round_to)

        def estimate_importance(self, group):
            hooks.scoring(self, group)
            return hooks.scores(self, group, super().estimate_importance(group))

        def _prune(self):
            for group in super()._prune():
                hooks.before_cut(self, group)
                yield group
                hooks.after_cut(self, group)

    ArchitecturePruner.__name__ = f"Architecture{base.__name__}"
    return ArchitecturePruner


def channel_groups(pruner, group) -> int:
    """How many channel groups (a grouped convolution's groups, a unit's splits) the pruner cuts `group` in:
    the pruner removes the same positions from each."""
    return pruner._get_channel_groups(group)


def initial_width(pruner, module: nn.Module, out: bool) -> int | None:
    """`module`'s output (or input) channels when the pruner was built."""
    return (pruner.layer_init_out_ch if out else pruner.layer_init_in_ch).get(module)


def select_parameter(func: tp.BasePruningFunc, weight: nn.Parameter, keep: list[int], dim: int) -> nn.Parameter:
    """`weight` cut to the indices `keep` along `dim`, its gradient with it (a customized pruner's building block)."""
    return func._prune_parameter_and_grad(weight, keep, dim)


def concat_offsets(module) -> list[int] | None:
    """Where each input of a traced concatenation starts (None when `module` is not a concatenation node)."""
    if not isinstance(module, ops._ConcatOp):
        return None
    return list(module.offsets or [])


@contextmanager
def known_concat_sizes(sizes: dict) -> Iterator[None]:
    """While inside, a concatenation torch-pruning cannot size from the layers before it (behind a split or
    a slice) takes the sizes recorded while tracing (`sizes`: its output's grad_fn -> each input's channels):
    torch-pruning 1.6.1 summed the unknown sizes (TypeError), or tied every input together."""
    from torch_pruning.dependency import index_mapping

    original = index_mapping.update_concat_index_mapping

    def update(graph, node):
        if node.type == ops.OPTYPE.CONCAT and node.module.concat_sizes is None and node.grad_fn in sizes:
            node.module.concat_sizes = list(sizes[node.grad_fn])
        return original(graph, node)

    index_mapping.update_concat_index_mapping = update
    try:
        yield
    finally:
        index_mapping.update_concat_index_mapping = original


def steps_taken(pruner) -> int:
    """How many steps the pruner has taken (its schedule ends at `iterative_steps`)."""
    return pruner.current_step


def restart(pruner, importance) -> None:
    """Score the next step with `importance`, from the first step of the schedule again."""
    pruner.importance = importance
    pruner.reset()  # the step counter back to 0


@contextmanager
def only_groups(graph, groups: list) -> Iterator[None]:
    """While inside, a pruning pass over `graph` walks `groups` only (torch-pruning's passes ask the graph
    for all its groups; the instance attribute hides the method)."""
    graph.get_all_groups = lambda *args, **kwargs: iter(groups)
    try:
        yield
    finally:
        del graph.get_all_groups


def failure_is_prunelabs(exc: BaseException) -> bool:
    """Whether the innermost of PruneLab's and torch-pruning's frames is PruneLab's: then the failure is
    PruneLab's (a family rule), not an operation torch-pruning cannot follow."""
    engine = str(Path(__file__).resolve().parent)
    last = None
    tb = exc.__traceback__
    while tb is not None:
        path = tb.tb_frame.f_code.co_filename
        if "torch_pruning" in path:
            last = "torch-pruning"
        elif path.startswith(engine):
            last = "PruneLab"
        tb = tb.tb_next
    return last == "PruneLab"


_OPERATIONS = {"reshape": "a reshape that regroups channels (such as a channel shuffle)", "concat": "a concatenation",
               "split": "a split of the channels", "slice": "a slice of the channels", "flatten": "a flatten"}


def failed_operation(exc: BaseException) -> str:
    """The kind of operation torch-pruning failed on, read from the names of its functions in the traceback
    (its index-mapping rules are named after the operation)."""
    tb = exc.__traceback__
    found = "the operations around it"
    while tb is not None:
        name = tb.tb_frame.f_code.co_name
        if "torch_pruning" in tb.tb_frame.f_code.co_filename:
            found = next((text for key, text in _OPERATIONS.items() if key in name), found)
        tb = tb.tb_next
    return found
