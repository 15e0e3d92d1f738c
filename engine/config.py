"""PruneConfig: every option of a pruning run, described once.

Each field carries an `Option` in its metadata (label, help, bounds, choices, CLI flag, GUI hints).
The CLI's flags, the plan checks and the GUI's option widgets are generated from it, so a new option
is added here and nowhere else.
"""
from __future__ import annotations

import functools
import math
import re
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from engine.errors import UserError
from engine.methods import Method, get_method
from engine.training import OPTIMIZERS, PRECISIONS, SCHEDULES

SCOPES = ("layer", "global")
RUNTIMES = ("torch", "onnxruntime")  # what a latency is measured on (engine.runtimes)
ALLOCATIONS = ("uniform", "latency")  # how a latency target is shared among layers (engine.latency_target)
# The ways to say how much to prune: a run sets exactly one (the manual method none)
TARGET_FIELDS = ("pruning_ratio", "target_speedup", "target_latency", "target_latency_speedup")
DEVICE_PATTERN = r"cpu|cuda(:\d+)?"

# Groups say where an option belongs: the GUI builds one box per group and plans allow the
# "recovery" group inside [[recovery]] tables.
NOT_SET = object()  # an Option's gui_default when the GUI starts at the dataclass default

TARGET, LAYERS, RECOVERY, METHOD, RUN = "target", "layers", "recovery", "method", "run"


def only_target(name: str | None = None, value: float | None = None) -> dict:
    """PruneConfig values that clear every target and set `name` to `value` (none when `name` is None)."""
    return {**dict.fromkeys(TARGET_FIELDS), **({name: value} if name else {})}


@dataclass(frozen=True)
class Option:
    """How one PruneConfig field is shown, parsed and checked."""

    label: str  # words for messages and GUI labels
    help: str  # tooltip and --help text
    group: str = RUN
    flag: str | None = None  # command-line flag; None: plans and GUI only
    negated: bool = False  # a store_false flag (e.g. --no-speed for measure_speed)
    flag_help: str = ""  # --help text when the flag says the opposite of the option (a negated flag)
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: `low` itself is not allowed
    high_open: bool = False
    choices: tuple = ()
    choice_labels: tuple = ()  # words for the GUI's combo box, one per choice
    rule: str = ""  # the bounds in words, when the numbers say it badly
    metavar: str | None = None
    off: Any = None  # the flag/widget value that means None ("off")
    step: float | None = None  # GUI spin step
    decimals: int = 2
    suffix: str = ""
    gui_default: Any = NOT_SET  # the GUI starts here when it differs from the dataclass default

    def bounds_text(self) -> str:
        """The accepted values in words."""
        if self.rule:
            return self.rule
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        low = None if self.low is None else f"{'above' if self.low_open else 'at least'} {self.low:g}"
        high = None if self.high is None else f"{'below' if self.high_open else 'at most'} {self.high:g}"
        return " and ".join(p for p in (low, high) if p) or "a value"


def option(default: Any = MISSING, *, factory: Any = MISSING, **kw: Any) -> Any:
    """A dataclass field with its Option."""
    meta = {"option": Option(**kw)}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _count(label: str, help: str, default: int | None, high: int | None = None, **kw: Any) -> Any:
    rule = f"a whole number from 1 to {high}" if high else "a whole number of at least 1"
    return option(default, label=label, help=help, low=1, high=high, rule=rule, metavar="N", **kw)


@dataclass(frozen=True)
class PruneConfig:
    """Everything a user can set for one pruning run (shared by the GUI, the CLI and plans)."""

    method: str = option("l2", label="method", help="the pruning method", group=METHOD,
                         flag="--method", metavar="NAME")
    # The GUI starts at 30 % (its method panel, with BatchNorm re-estimation): the first run shows a visible drop
    # and a visible recovery, where 50 % without recovery ended near chance on the demo and taught "pruning
    # destroys models".
    pruning_ratio: float | None = option(
        0.5, label="pruning ratio", group=TARGET, flag="--ratio", low=0.0, high=1.0, low_open=True, high_open=True,
        rule="between 0 and 1 (exclusive)", metavar="R", gui_default=0.3,
        help="share removed: channels for structured methods, weights for unstructured")
    target_speedup: float | None = option(
        None, label="target speed-up", group=TARGET, flag="--target-speedup", low=1.0, low_open=True, metavar="S",
        help="prune until MACs are at least S times lower (structured methods; layer scope picks the smallest "
             "uniform ratio that gets there, global scope prunes in small steps)")
    target_latency: float | None = option(
        None, label="target latency", group=TARGET, flag="--target-latency", low=0.0, low_open=True, metavar="MS",
        suffix=" ms", rule="above 0 (milliseconds)", decimals=3, step=0.5, gui_default=10.0,
        help="prune until the measured latency at the run's batch size is at most MS milliseconds on the runtime "
             "(--runtime); checked against the original in paired rounds at the end (structured methods, layer "
             "scope)")
    target_latency_speedup: float | None = option(
        None, label="target latency speed-up", group=TARGET, flag="--target-latency-speedup", low=1.0, low_open=True,
        metavar="S", suffix=" × faster", rule="above 1 (times faster)", decimals=2, step=0.1, gui_default=2.0,
        help="prune until the model runs at least S times faster than the original at the run's batch size on the "
             "runtime (--runtime), both timed in the same interleaved rounds, so load that comes and goes hits "
             "both alike; checked in paired rounds at the end (structured methods, layer scope)")
    runtime: str = option("torch", label="runtime", group=TARGET, flag="--runtime", choices=RUNTIMES,
                          choice_labels=("PyTorch", "onnxruntime (the ONNX export)"),
                          help="what a target latency is measured on: PyTorch, or onnxruntime running the ONNX "
                               "export (what most deployments run)")
    allocation: str = option("uniform", label="allocation", group=TARGET, flag="--allocation", choices=ALLOCATIONS,
                             choice_labels=("Uniform (one ratio for every layer)",
                                            "Latency-aware (per-layer ratios from the profile)"),
                             help="how a target latency is shared among layers: uniform, one ratio everywhere; "
                                  "latency, per-layer ratios from the measured profile that keep the most "
                                  "importance per millisecond saved, channel counts snapped to widths that are fast "
                                  "on the runtime")
    scope: str = option("layer", label="scope", group=TARGET, flag="--scope", choices=SCOPES,
                        choice_labels=("Per layer (same ratio everywhere)", "Global (ranked across layers)"),
                        help="layer: every layer loses the same share; global: channels are ranked across layers, "
                             "so redundant layers lose more")
    layer_ratios: dict = option(factory=dict, label="layer ratios", group=LAYERS, flag="--layer-ratio",
                                metavar="NAME=R", help="own ratio for a layer (repeatable)")
    manual_channels: dict = option(
        factory=dict, label="manual channels", group=LAYERS, metavar="NAME=I,J,...",
        rule="layer name -> list of output channel indices (from 0)",
        help="the channels the manual method removes, per layer (ticked in the Teach tab's Why view); every "
             "channel tied to them goes too")
    ignored_layers: tuple = option((), label="ignored layers", group=LAYERS, flag="--ignore", metavar="NAME",
                                   help="leave a layer alone (repeatable)")
    keep_head: bool = option(True, label="keep the classifier head", group=LAYERS, flag="--prune-head", negated=True,
                             help="the classifier head keeps all its inputs; --prune-head prunes them too",
                             flag_help="prune the classifier head's inputs too (by default it keeps them all)")
    max_layer_ratio: float = option(
        0.9, label="maximum layer ratio", group=LAYERS, flag="--max-layer-ratio", low=0.0, high=1.0, low_open=True,
        rule="in (0, 1]", step=0.05, metavar="R", help="no layer loses more than this share, so no layer disappears")
    round_to: int | None = option(
        8, label="channel rounding", group=LAYERS, flag="--round-to", low=1, rule="a positive integer", off=0, metavar="N",
        help="keep channel counts multiples of N (hardware runs such widths faster; 0 or 1 = exact counts)")
    steps: int = option(1, label="steps", group=TARGET, flag="--steps", low=1, high=100, rule="between 1 and 100",
                        gui_default=3, metavar="N",
                        help="iterative steps to the target, each prune -> recover -> evaluate")
    bn_recalibrate: bool = option(
        False, label="re-estimate BatchNorm statistics", group=RECOVERY, flag="--bn-recalibrate", gui_default=True,
        help="recompute BatchNorm means/variances on training images after each step (no weights change; "
             "seconds, and often recovers much of the lost accuracy)")
    bn_batches: int = _count("BatchNorm batches", "training batches for the BatchNorm re-estimation", 40,
                             group=RECOVERY, gui_default=10)
    finetune_epochs: float = option(
        0.0, label="fine-tuning epochs", group=RECOVERY, flag="--finetune-epochs", low=0.0, high=1000.0, step=0.1,
        suffix=" epochs", metavar="E",
        help="fine-tune on the training set after each step (fractions of an epoch are fine); the strongest but "
             "slowest recovery")
    finetune_batches: int | None = _count("fine-tuning batches", "or a batch budget per step", None,
                                          group=RECOVERY, flag="--finetune-batches")
    finetune_lr: float = option(0.01, label="fine-tuning learning rate", group=RECOVERY, flag="--lr", low=0.0,
                                low_open=True, rule="above 0", decimals=4, step=0.001, metavar="LR",
                                help="learning rate while fine-tuning")
    optimizer: str = option("sgd", label="optimizer", group=RECOVERY, choices=OPTIMIZERS,
                            help="optimiser for fine-tuning")
    distill: bool = option(False, label="distil from the original model", group=RECOVERY, flag="--distill",
                           help="while fine-tuning, also learn the unpruned model's soft outputs (knowledge "
                                "distillation); needs fine-tuning")
    # T = 2 rather than 4: on the ResNet demo at l2 0.5 it kept 0.08 pt more top-1 at 3 and 5 epochs, paired by
    # seed (benchmarks/recovery.py; README, Recovery recipes). Likely why: the teacher's near-impossible classes
    # weigh less in what the student copies, its close calls more.
    distill_temperature: float = option(2.0, label="distillation temperature", group=RECOVERY, low=0.0,
                                        low_open=True, rule="above 0", flag="--distill-temperature", metavar="T",
                                        help="softens both models' outputs before they are compared (4 before "
                                             "2026-12-06; README, Recovery recipes)")
    distill_weight: float = option(0.7, label="distillation weight", group=RECOVERY, low=0.0, high=1.0,
                                   rule="between 0 and 1", help="share of the loss that comes from the teacher")
    # One-cycle by default: on the ResNet demo at l2 0.5 it kept 0.2 pt more top-1 than plain cosine at 1 and
    # 3 epochs, as much as cosine with a 10 % warm-up (benchmarks/recovery.py; README, Recovery recipes).
    finetune_schedule: str = option("onecycle", label="learning-rate schedule", group=RECOVERY, choices=SCHEDULES,
                                    flag="--finetune-schedule", metavar="NAME",
                                    help="how the fine-tuning learning rate moves: one-cycle (a short warm-up, "
                                         "then cosine decay), cosine decay, or constant")
    warmup: float = option(0.0, label="warm-up share", group=RECOVERY, low=0.0, high=1.0, high_open=True,
                           rule="in [0, 1)", flag="--warmup", metavar="S",
                           help="share of the fine-tuning steps the learning rate climbs first (cosine and "
                                "constant schedules; one-cycle, the default, has its own)")
    label_smoothing: float = option(0.0, label="label smoothing", group=RECOVERY, low=0.0, high=1.0,
                                    high_open=True, rule="in [0, 1)", flag="--label-smoothing", metavar="S",
                                    help="share of each label spread over the other classes while fine-tuning")
    # Off by default: on the ResNet demo at l2 0.5 (3 epochs, distilling) fine-tuning on the images as they are
    # kept more top-1 than shifting and flipping them (benchmarks/recovery.py; README, Recovery recipes). A short
    # recovery copies the original on the data it already knows; augmentation is for learning anew.
    finetune_augment: bool = option(
        False, label="augment while fine-tuning", group=RECOVERY, flag="--finetune-augment",
        help="shift and flip the training images while fine-tuning (off: the images as they are, which kept more "
             "accuracy in a short recovery; README, Recovery recipes)")
    training_precision: str = option(
        "auto", label="fine-tuning precision", group=RECOVERY, choices=PRECISIONS, flag="--precision", metavar="NAME",
        choice_labels=("auto (bfloat16 where it pays)", "bfloat16", "float32"),
        help="arithmetic of fine-tuning's forward passes: auto is bfloat16 where the processor computes it natively "
             "(CPUs with AVX-512 BF16 or AMX, recent GPUs) and, on a CPU, the model has only dense convolutions and "
             "enough work per batch to gain from it; else float32. The weights stay float32")
    sparsity_reg: float = option(
        0.0, label="sparsity penalty", group=METHOD, flag="--sparsity-reg", low=0.0, rule="not negative",
        decimals=5, step=1e-4, metavar="L",
        help="L1 penalty on BatchNorm scales while fine-tuning (Network Slimming), e.g. 1e-4; needs fine-tuning")
    calibration_batches: int = _count(
        "calibration batches", "batches of training images the method's scores are computed from (Hessian: 8 images "
        "each, one backward pass per image)", 4, group=METHOD, high=1000)
    device: str = option("cpu", label="device", flag="--device", metavar="cpu|cuda[:N]", rule='"cpu" or "cuda" (or "cuda:N")',
                         help="where pruning, fine-tuning and measurements run")
    seed: int = option(0, label="seed", flag="--seed", low=0, metavar="N",
                       help="seed for data order, calibration and fine-tuning (same seed, same figures at the same thread "
                            "count: fine-tuning follows the cores other work leaves free, and its float sums depend "
                            "on the count)")
    batch_size: int = _count("batch size", "evaluation and latency batch size", 64, flag="--batch-size")
    eval_limit: int | None = _count("evaluation images", "evaluate on N test images only: a stratified, seeded "
                                    "sample (every class in proportion, the same images in every run)", None,
                                    flag="--eval-limit")
    measure_speed: bool = option(True, label="measure latency", flag="--no-speed", negated=True,
                                 help="time the model (latency, throughput, memory); --no-speed skips it, much "
                                      "faster on large models",
                                 flag_help="skip timing the model (latency, throughput, memory): much faster on large "
                                           "models")
    latency_repeats: int = _count("timed runs", "timed runs per latency figure (their median is reported)", 30,
                                  gui_default=20)
    threads: int | None = _count("threads", "CPU threads for latency (default: the cores other work leaves free)",
                                 None, flag="--threads")

    def validate(self) -> Method:
        """Check the values and return the method; errors name the field and the fix."""
        method = get_method(self.method)
        hints = field_types()
        for f in fields(self):
            check_value(f.name, getattr(self, f.name), hints[f.name])
        for name, value in self.layer_ratios.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserError(f"ratio for layer {name} must be a finite number, got {value!r}")
            if not 0.0 <= value < 1.0:
                raise UserError(f"ratio for layer {name} must be in [0, 1), got {value}")
        check_manual_channels(self.manual_channels, method)
        if method.manual:
            if self.target_speedup is not None or self.latency_targeted:
                raise UserError("the manual method removes the channels you tick; drop the target speed-up or "
                                "target latency")
        elif sum(getattr(self, name) is not None for name in TARGET_FIELDS) != 1:
            raise UserError("give exactly one of a pruning ratio (--ratio), a target speed-up (--target-speedup), "
                            "a target latency (--target-latency) or a target latency speed-up "
                            "(--target-latency-speedup)")
        if self.latency_targeted and (not method.structured or self.scope != "layer"):
            raise UserError("a target latency needs a structured method under layer scope (--scope layer): it "
                            "is met by choosing per-layer channel counts")
        if self.target_speedup is not None and not method.structured:
            raise UserError(f"{method.name} is unstructured: zeroed weights do not reduce MACs; "
                            "use --ratio, or a structured method for a speed-up target")
        if self.distill and not self.recovers_by_training:
            raise UserError("distillation needs fine-tuning: set fine-tuning epochs (--finetune-epochs) above 0")
        if self.finetune_augment and not self.recovers_by_training:
            raise UserError("augmentation (--finetune-augment) is for fine-tuning: set fine-tuning epochs "
                            "(--finetune-epochs) above 0, or drop it")
        if self.warmup and self.finetune_schedule == "onecycle":
            raise UserError("the one-cycle schedule has its own warm-up (15 % of the steps): drop the warm-up "
                            "(--warmup) or choose --finetune-schedule cosine or constant")
        if self.training_precision == "bf16" and self.recovers_by_training:
            from engine.training import compute_dtype, resolve_device

            compute_dtype(self.training_precision, resolve_device(self.device)[0])  # refuses emulated bfloat16
        return method

    @property
    def latency_targeted(self) -> bool:
        """True when the run prunes to a measured latency (in ms, or as a speed-up over the original)."""
        return self.target_latency is not None or self.target_latency_speedup is not None

    @property
    def recovers_by_training(self) -> bool:
        """True when fine-tuning runs after each step."""
        return self.finetune_epochs > 0 or bool(self.finetune_batches)

    def to_json(self) -> dict:
        """Plain dict for JSON and the result store."""
        d = asdict(self)
        d["ignored_layers"] = list(self.ignored_layers)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "PruneConfig":
        """Inverse of to_json; unknown keys are an error that names them."""
        known = set(cls.__dataclass_fields__)
        extra = set(d) - known
        if extra:
            raise UserError(f"unknown pruning options: {', '.join(sorted(extra))}; valid: {', '.join(sorted(known))}")
        d = dict(d)
        if d and "finetune_augment" not in d:
            d["finetune_augment"] = True  # written before the option: its runs fine-tuned on shifted, flipped images
        if "ignored_layers" in d:
            d["ignored_layers"] = tuple(d["ignored_layers"])
        return cls(**d)


def recovery_words(cfg: PruneConfig) -> str:
    """The recovery of a run, and the steps and scope when they are not the defaults, in a few words ("none" if
    none): the Results table and the session report."""
    parts = []
    if cfg.finetune_epochs:
        parts.append(f"fine-tune {cfg.finetune_epochs:g} ep")
    elif cfg.finetune_batches:
        parts.append(f"fine-tune {cfg.finetune_batches} batches")
    if cfg.recovers_by_training and cfg.distill:
        # runs stored before T = 2 became the default distilled at 4: the words tell the two recipes apart
        t = cfg.distill_temperature
        parts.append("distil" if t == default_of("distill_temperature") else f"distil T={t:g}")
    if cfg.recovers_by_training and cfg.finetune_augment:
        parts.append("augmented")
    if cfg.bn_recalibrate:
        parts.append("BN re-est.")
    extra = ([f"{cfg.steps} steps"] if cfg.steps != 1 else []) + ([f"{cfg.scope} scope"] if cfg.scope != "layer"
                                                                 else [])
    return ", ".join(parts or ["none"]) + (f" ({', '.join(extra)})" if extra else "")


def amount_words(cfg: PruneConfig, recover_only: bool = False) -> str:
    """The requested amount, as a user reads it."""
    if recover_only:
        return "recover only"
    if cfg.manual_channels:
        n = sum(len(set(c)) for c in cfg.manual_channels.values())
        return f"{n} channel{'s' if n != 1 else ''} ticked"
    if cfg.target_speedup is not None:
        return f"{cfg.target_speedup:.2f}× fewer MACs"
    if cfg.target_latency is not None:
        return f"≤ {cfg.target_latency:g} ms on {cfg.runtime}"
    if cfg.target_latency_speedup is not None:
        return f"{cfg.target_latency_speedup:g}× faster on {cfg.runtime}"
    return f"{cfg.pruning_ratio:.0%}"


def rounding_words(round_to: int | None) -> str:
    """How structured pruning rounds channel counts, in words (the GUI beside the amount, the run summary)."""
    if not round_to or round_to <= 1:
        return "channel counts are exact (not rounded)"
    return (f"channel counts rounded to multiples of {round_to} (the nearest; every layer keeps at least "
            f"{round_to})")


def check_manual_channels(channels: dict, method: Method) -> None:
    """The shape of `manual_channels` (layer names and channel ranges need the model: engine.pruners)."""
    if method.manual and not channels:
        raise UserError("the manual method needs channels to remove: tick them in Teach ▸ Why these channels")
    if channels and not method.manual:
        raise UserError(f"manual channels are read by the manual method only, not by {method.name}; "
                        "choose --method manual or drop them")
    for name, idxs in channels.items():
        ok = isinstance(idxs, (list, tuple)) and idxs and all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in idxs)
        if not isinstance(name, str) or not ok:
            raise UserError(f"manual channels for layer {name!r} must be a non-empty list of channel indices "
                            f"(whole numbers from 0), got {idxs!r}")


@functools.cache
def field_types() -> types.MappingProxyType:
    """Field name -> type of PruneConfig, evaluated once: its annotations are strings, and evaluating them all
    took milliseconds, asked once per flag while building the command line's parser (a fifth of a second)."""
    return types.MappingProxyType(typing.get_type_hints(PruneConfig))


def options(group: str | None = None) -> dict[str, Option]:
    """Field name -> Option, in declaration order, optionally of one group."""
    return {f.name: f.metadata["option"] for f in fields(PruneConfig)
            if group is None or f.metadata["option"].group == group}


def default_of(name: str, gui: bool = False) -> Any:
    """The field's default (the GUI's own start value with `gui`)."""
    f = PruneConfig.__dataclass_fields__[name]
    opt = f.metadata["option"]
    if gui and opt.gui_default is not NOT_SET:
        return opt.gui_default
    return f.default_factory() if f.default is MISSING else f.default


def check_value(name: str, value: Any, hint: Any = None, where: str = "") -> Any:
    """`value` checked against the bounds and choices of field `name`; a UserError names the option.

    Types are the caller's (dataclass annotations for plans, argparse for the CLI); this checks what a
    well-typed value may be. `where` prefixes the message (e.g. "[prune] steps").
    """
    opt = options()[name]
    say = where or (f"{opt.label} ({opt.flag})" if opt.flag and not opt.negated else opt.label)
    if value is None:
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{say} must be a finite number, got {value}")
    kinds = set(typing.get_args(hint) or (hint,)) - {type(None)}
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if (kinds == {int} and (not number or not isinstance(value, int))) or (float in kinds and not number):
        raise UserError(f"{say} must be {opt.bounds_text() if kinds == {int} else 'a finite number'}, "
                        f"got {value!r}")
    if number:
        too_low = opt.low is not None and (value <= opt.low if opt.low_open else value < opt.low)
        too_high = opt.high is not None and (value >= opt.high if opt.high_open else value > opt.high)
        if too_low or too_high:
            raise UserError(f"{say} must be {opt.bounds_text()}, got {value!r}")
    if opt.choices and value not in opt.choices:
        raise UserError(f"{say} must be {opt.bounds_text()}, got {value!r}")
    if name == "device" and not (isinstance(value, str) and re.fullmatch(DEVICE_PATTERN, value)):
        raise UserError(f"{say} must be {opt.bounds_text()}, got {value!r}")
    return value
