"""Recovery presets: named recipes for the recovery options, each with the cost measured on the ResNet demo.

`prune --recovery NAME`, a plan's `[[recovery]] preset = "NAME"` and the Prune panel's Recipe combo all
read them here. A preset sets PruneConfig fields; options given beside it (flags, plan keys) win. The costs
come from `benchmarks/recovery.py` (README, Recovery recipes), on a 2-core machine with AVX-512 BF16, where the
default `--precision auto` fine-tunes in bfloat16; all three use the default one-cycle schedule at --lr 0.01
with distillation (T = 2, weight 0.7), on the training images as they are (no shifts or flips).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.errors import UserError


@dataclass(frozen=True)
class Preset:
    """One recipe: the PruneConfig fields it sets and what it cost when measured."""

    name: str
    title: str  # words for the GUI's combo
    options: dict = field(default_factory=dict)
    cost: str = ""  # epochs, top-1 change and wall time on the ResNet demo (l2 0.5), in a few words
    note: str = ""  # how that wall time was found (timed, or scaled from a timed preset)

    def label(self) -> str:
        """The title with its cost, for a combo box."""
        return f"{self.title} — {self.cost}" if self.cost else self.title

    def cost_words(self) -> str:
        """The cost with how it was found, for help texts and tooltips."""
        return f"{self.cost} ({self.note})" if self.note else self.cost


def _recipe(epochs: float, **more: Any) -> dict:
    """The default recipe's fields for `epochs` of fine-tuning, set whole so that a preset's measured cost holds."""
    return {"bn_recalibrate": True, "finetune_epochs": epochs, "distill": True, "finetune_augment": False, **more}


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("quick", "Quick", _recipe(1.0),
           "1 epoch, top-1 −1.00 pt, 38 s", "mean of 3 seeds; timed with the benchmark alone on a 2-core machine, "
           "fine-tuning in bfloat16"),
    Preset("default", "Default", _recipe(3.0),
           "3 epochs, top-1 −0.38 pt, 108 s", "mean of 5 seeds; timed with the benchmark alone on a 2-core machine, "
           "fine-tuning in bfloat16"),
    Preset("thorough", "Thorough", _recipe(5.0),
           "5 epochs, top-1 −0.24 pt, 192 s", "mean of 5 seeds; timed with the benchmark alone on a 2-core machine, "
           "fine-tuning in bfloat16"),
)}
PRESET_FIELDS = tuple(dict.fromkeys(k for p in PRESETS.values() for k in p.options))  # what presets set


def preset(name: Any, where: str = "--recovery") -> Preset:
    """The preset called `name`; a UserError names the valid ones."""
    if not isinstance(name, str) or name not in PRESETS:
        raise UserError(f"{where} must be one of {', '.join(PRESETS)}, got {name!r}")
    return PRESETS[name]


def with_preset(name: str | None, given: dict, where: str = "--recovery") -> dict:
    """`given` PruneConfig values on top of preset `name`'s (None: `given` alone)."""
    return {**preset(name, where).options, **given} if name is not None else dict(given)


def matching_preset(values: dict) -> str | None:
    """The preset whose every option `values` holds, if any (the GUI shows it as chosen)."""
    for p in PRESETS.values():
        if all(values.get(k) == v for k, v in p.options.items()):
            return p.name
    return None
