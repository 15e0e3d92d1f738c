"""Option widgets generated from PruneConfig's field descriptions (engine.config).

A field's label, tooltip, bounds and choices come from its Option, so the method panel and the
Experiment tab show what the CLI and plans accept, and a new option needs no GUI code.
"""
from __future__ import annotations

import typing
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QSpinBox, QWidget

from engine.config import default_of, field_types, options

SPIN_MAX = 1_000_000  # an unbounded count still needs a widget maximum


def _kind(name: str) -> type:
    hint = field_types()[name]
    kinds = set(typing.get_args(hint) or (hint,)) - {type(None)}
    return next(iter(kinds)) if len(kinds) == 1 else float


class OptionField:
    """One PruneConfig field as a check box, spin box or combo box; `value()` gives the config value.

    A field whose Option has an `off` value shows it as "off" and reads back as None.
    """

    def __init__(self, name: str, parent: QWidget | None = None, text: str | None = None,
                 low: float | None = None, high: float | None = None):
        self.name, self.opt = name, options()[name]
        opt, kind = self.opt, _kind(name)
        if opt.choices:
            self.widget: QWidget = QComboBox(parent)
            for i, choice in enumerate(opt.choices):
                words = opt.choice_labels[i] if i < len(opt.choice_labels) else str(choice)
                self.widget.addItem(words, choice)
            self.changed: Signal = self.widget.currentIndexChanged
        elif kind is bool:
            self.widget = QCheckBox(text or opt.label[0].upper() + opt.label[1:], parent)
            self.changed = self.widget.toggled
        else:
            spin = QSpinBox(parent) if kind is int else QDoubleSpinBox(parent)
            if kind is float:
                spin.setDecimals(opt.decimals)
                spin.setSingleStep(opt.step or 10 ** -opt.decimals)
            bottom = low if low is not None else (opt.off if opt.off is not None else opt.low)
            if bottom is None:
                bottom = 0
            elif opt.low_open and low is None and opt.off is None:
                bottom += 1 if kind is int else 10 ** -opt.decimals
            top = high if high is not None else (opt.high if opt.high is not None else SPIN_MAX)
            if opt.high_open and high is None:
                top -= 1 if kind is int else 10 ** -opt.decimals
            spin.setRange(kind(bottom), kind(top))
            if opt.off is not None:
                spin.setSpecialValueText("off")
            if opt.suffix:
                spin.setSuffix(opt.suffix)
            self.widget = spin
            self.changed = spin.valueChanged
        self.widget.setToolTip(opt.help[0].upper() + opt.help[1:])
        self.set_value(default_of(name, gui=True))

    @property
    def label(self) -> str:
        """The form row's label."""
        return self.opt.label[0].upper() + self.opt.label[1:]

    def value(self) -> Any:
        w = self.widget
        if isinstance(w, QComboBox):
            return w.currentData()
        if isinstance(w, QCheckBox):
            return w.isChecked()
        value = w.value()
        return None if self.opt.off is not None and value == self.opt.off else value

    def set_value(self, value: Any) -> None:
        w = self.widget
        if isinstance(w, QComboBox):
            index = w.findData(value)
            if index >= 0:
                w.setCurrentIndex(index)
        elif isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        else:
            w.setValue(w.minimum() if value is None else value)
