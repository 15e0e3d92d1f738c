"""The registry of pruning methods: one entry per method, with its teaching text.

The GUI and the CLI are generated from this registry, so adding a method means adding one
decorated factory here and nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable

from engine.calibration import GRADIENTS, PER_SAMPLE, Calibration
from engine.errors import UserError

STRUCTURED = "structured"
UNSTRUCTURED = "unstructured"


@dataclass(frozen=True)
class Method:
    """One pruning method and what a user should know about it."""

    name: str
    title: str
    family: str  # STRUCTURED: channels removed; UNSTRUCTURED: weights zeroed
    measures: str  # what the importance score measures
    description: str  # how it ranks, when it works well, what it costs
    paper: str
    calibration: Calibration | None = None  # what the importance needs from training images first
    options: tuple[str, ...] = ()  # PruneConfig fields only this method reads (shown with it in the GUI)
    compared_by_default: bool = False  # ticked in a new experiment plan
    factory: Callable[[], Any] = field(default=None, repr=False, compare=False)
    # torch-pruning's pruner class and its extra arguments, from the run's config (None: MetaPruner)
    tp_pruner: Callable[[Any], tuple[str, dict]] | None = field(default=None, repr=False, compare=False)
    # True: the user picks the channels (PruneConfig.manual_channels); no score ranks them, so the method is
    # left out where methods are listed to be compared or chosen automatically (all_methods)
    manual: bool = False

    @property
    def structured(self) -> bool:
        """True when channels are physically removed."""
        return self.family == STRUCTURED

    @property
    def ratio_meaning(self) -> str:
        """What the pruning ratio counts for this method."""
        return "share of channels removed" if self.structured else "share of weights set to zero"

    def explain(self) -> str:
        """The full teaching text, as shown by `methods` and the GUI's explain panel."""
        effect = ("Channels are physically removed, so the network gets smaller and faster on any hardware."
                  if self.structured else
                  "Weights are set to zero but stay in place: the compressed file shrinks, dense latency does not.")
        return (f"{self.title} [{self.family}]\nMeasures: {self.measures}\n{self.description}\n{effect}\n"
                f"Ratio: {self.ratio_meaning}.\nPaper: {self.paper}")


REGISTRY: dict[str, Method] = {}


def register_method(name: str, title: str, family: str, measures: str, description: str, paper: str,
                    calibration: Calibration | None = None, options: tuple[str, ...] = (),
                    compared_by_default: bool = False,
                    tp_pruner: Callable[[Any], tuple[str, dict]] | None = None, manual: bool = False,
                    ) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Decorator: register the decorated factory (it builds the method's importance or strategy)."""
    if family not in (STRUCTURED, UNSTRUCTURED):
        raise ValueError(f"family must be {STRUCTURED!r} or {UNSTRUCTURED!r}, got {family!r}")

    def wrap(factory: Callable[[], Any]) -> Callable[[], Any]:
        if name in REGISTRY:
            raise ValueError(f"pruning method {name!r} is registered twice")
        REGISTRY[name] = Method(name, title, family, measures, " ".join(description.split()), paper, calibration,
                                tuple(options), compared_by_default, factory, tp_pruner, manual)
        return factory

    return wrap


def get_method(name: str) -> Method:
    """The method called `name`; an unknown name raises an error listing the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown pruning method {name!r}; valid methods: {', '.join(REGISTRY)}") from None


def all_methods(family: str | None = None, manual: bool = False) -> list[Method]:
    """Registered methods in registration order, optionally of one family; methods whose channels the
    user picks only with `manual` (a plan, a criteria comparison or a method list cannot tick channels)."""
    return [m for m in REGISTRY.values() if (family is None or m.family == family) and (manual or not m.manual)]


# ----------------------------------------------------------------------------- structured (torch-pruning)

def _tp():
    import torch_pruning as tp

    return tp


@register_method(
    "l1", "L1 filter norm", STRUCTURED, "the sum of absolute weights of each filter",
    """Ranks each output channel by the L1 norm of its filter and removes the smallest. Cheap (no data
    needed) and a strong baseline on CNNs trained with weight decay, where unimportant filters shrink.
    It looks at one layer at a time, so it can misjudge channels whose effect flows through residual links.""",
    "Li et al., Pruning Filters for Efficient ConvNets, ICLR 2017", compared_by_default=True)
def _l1():
    return _tp().importance.GroupMagnitudeImportance(p=1, group_reduction="first")


@register_method(
    "l2", "Group L2 magnitude (DepGraph)", STRUCTURED,
    "the L2 norm of all weights tied to a channel across the dependency group",
    """Sums the squared weights of every layer that must lose the channel together (a convolution, its
    BatchNorm, the next layer's inputs, residual partners) and removes the weakest groups. No data
    needed, fast, and consistent across coupled layers; the default choice for most CNNs.""",
    "Fang et al., DepGraph: Towards Any Structural Pruning, CVPR 2023", compared_by_default=True)
def _l2():
    return _tp().importance.GroupMagnitudeImportance(p=2)


@register_method(
    "random", "Random channels", STRUCTURED, "nothing: channels are chosen at random",
    """Removes randomly chosen channels. A sanity baseline: a method worth using must beat it. With
    enough fine-tuning random pruning is surprisingly competitive, which shows how much recovery matters.""",
    "Li et al., Revisiting Random Channel Pruning for Neural Network Compression, CVPR 2022")
def _random():
    return _tp().importance.RandomImportance()


@register_method(
    "bn-scale", "BatchNorm scale (Network Slimming)", STRUCTURED,
    "the absolute scaling factor γ of the BatchNorm after each convolution",
    """Each channel's BatchNorm γ says how much the channel contributes; small γ, small contribution.
    Works best after sparsity training (an L1 penalty on γ during fine-tuning, enabled with the sparsity
    regulariser), which pushes unneeded channels towards zero. Needs BatchNorm layers.""",
    "Liu et al., Learning Efficient Convolutional Networks through Network Slimming, ICCV 2017",
    options=("sparsity_reg",), tp_pruner=lambda cfg: _slimming(cfg))
def _bn_scale():
    return _tp().importance.BNScaleImportance()


def _slimming(cfg: Any) -> tuple[str, dict]:
    """With a sparsity penalty, torch-pruning's BNScalePruner adds the L1 term on γ while fine-tuning."""
    return ("BNScalePruner", {"reg": cfg.sparsity_reg}) if cfg.sparsity_reg > 0 else ("MetaPruner", {})


@register_method(
    "taylor", "First-order Taylor", STRUCTURED,
    "the estimated change of the loss when a channel is removed (weight × gradient)",
    """Runs a few calibration batches, then scores each channel by |weight × gradient|, a first-order
    estimate of how much the loss would grow without it. Data-aware and usually better than magnitude
    at high ratios; costs one forward and backward pass over the calibration batches.""",
    "Molchanov et al., Importance Estimation for Neural Network Pruning, CVPR 2019", calibration=GRADIENTS,
    options=("calibration_batches",), compared_by_default=True)
def _taylor():
    return _tp().importance.GroupTaylorImportance()


@register_method(
    "hessian", "Second-order (OBD)", STRUCTURED,
    "the loss increase estimated from the diagonal of the Hessian (weight² × curvature)",
    """Optimal Brain Damage: approximates the Hessian's diagonal with per-sample squared gradients and
    scores a channel by ½·w²·H. Accounts for curvature, so flat directions are pruned first; the most
    expensive method here (one backward pass per calibration image).""",
    "LeCun et al., Optimal Brain Damage, NeurIPS 1989 (group form as in Torch-Pruning)", calibration=PER_SAMPLE,
    options=("calibration_batches",))
def _hessian():
    return _tp().importance.GroupHessianImportance()


@register_method(
    "lamp", "LAMP (layer-adaptive magnitude)", STRUCTURED,
    "each channel's squared magnitude relative to the larger channels of the same layer",
    """Rescales magnitudes so scores are comparable across layers: a channel counts by how much of its
    layer's remaining energy it carries. Meant for global pruning, where it picks per-layer ratios by
    itself instead of emptying the layers that happen to have small weights.""",
    "Lee et al., Layer-adaptive Sparsity for the Magnitude-based Pruning, ICLR 2021")
def _lamp():
    return _tp().importance.LAMPImportance(p=2)


@register_method(
    "fpgm", "Geometric median (FPGM)", STRUCTURED,
    "each filter's distance to the geometric median of the layer's filters",
    """Filters close to the geometric median are redundant: the others can represent them. Removes
    those instead of the smallest ones, which helps when all norms are similar. No data needed.""",
    "He et al., Filter Pruning via Geometric Median, CVPR 2019", compared_by_default=True)
def _fpgm():
    return _tp().importance.FPGMImportance(p=2)


@register_method(
    "manual", "Manual (your channels)", STRUCTURED, "nothing: you tick the channels that go",
    """Removes exactly the channels you tick in the Teach tab's Why view, together with every channel tied to
    them (the BatchNorm after the convolution, residual partners, the next layer's inputs). Compare your
    choice with a criterion's at the same size: can you beat L2 or random?""",
    "Schlegel et al., ViNNPruner: Visual Interactive Pruning for Deep Learning, 2022 (manual pruning)", manual=True)
def _manual():
    return None  # no importance: the pruner removes the ticked channels through the dependency graph


# ----------------------------------------------------------------------------- unstructured (torch.nn.utils.prune)

class UnstructuredScope(StrEnum):
    """Which weights an unstructured method compares: all layers' at once, or each layer's alone."""

    GLOBAL = "global"
    LAYER = "layer"


class UnstructuredCriterion(StrEnum):
    """What an unstructured method keeps: the largest weights, or random ones (the baseline)."""

    L1 = "l1"
    RANDOM = "random"


@dataclass(frozen=True)
class UnstructuredStrategy:
    """How torch.nn.utils.prune chooses weights: over all layers at once or per layer."""

    scope: UnstructuredScope
    criterion: UnstructuredCriterion


@register_method(
    "magnitude-global", "Global magnitude (unstructured)", UNSTRUCTURED,
    "the absolute value of every single weight, compared across all layers",
    """Zeroes the smallest weights of the whole network, so layers with many small weights lose more.
    Keeps accuracy well up to high sparsity. Compression tools and sparse kernels profit; a dense GPU or
    CPU runs exactly as fast as before.""",
    "Han et al., Learning both Weights and Connections for Efficient Neural Networks, NeurIPS 2015")
def _magnitude_global():
    return UnstructuredStrategy(UnstructuredScope.GLOBAL, UnstructuredCriterion.L1)


@register_method(
    "magnitude-layer", "Layer-wise magnitude (unstructured)", UNSTRUCTURED,
    "the absolute value of each weight, compared within its own layer",
    """Zeroes the same share of the smallest weights in every layer. Simple and predictable, but small
    sensitive layers lose as much as large redundant ones, so accuracy drops sooner than with the global
    variant.""",
    "Han et al., Learning both Weights and Connections for Efficient Neural Networks, NeurIPS 2015")
def _magnitude_layer():
    return UnstructuredStrategy(UnstructuredScope.LAYER, UnstructuredCriterion.L1)


@register_method(
    "random-unstructured", "Random weights (unstructured)", UNSTRUCTURED, "nothing: weights are chosen at random",
    """Zeroes randomly chosen weights in every layer: the baseline that shows what magnitude information
    is worth.""",
    "Frankle & Carbin, The Lottery Ticket Hypothesis, ICLR 2019 (random baseline)")
def _random_unstructured():
    return UnstructuredStrategy(UnstructuredScope.LAYER, UnstructuredCriterion.RANDOM)
