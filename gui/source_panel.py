"""The "Model and data" box: which model, which dataset, and the loaded model's summary card."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QFormLayout, QGroupBox, QLabel

from engine.models import DEMO_ARCHS, DEMO_TITLES
from engine.sources import ModelSource
from engine.units import fmt_bytes, fmt_count
from gui.data_choice import DEFAULT_DATA, OPEN_CIFAR, OPEN_FOLDER, fill_data_combo, resolve_choice, switch_data
from gui.settings import Settings
from gui.engine_calls import Loaded

if TYPE_CHECKING:
    from gui.commands import Commands

OPEN_FILE, OPEN_NEW = "__open_file__", "__new_untrained__"
__all__ = ["DEFAULT_DATA", "OPEN_CIFAR", "OPEN_FILE", "OPEN_FOLDER", "OPEN_NEW", "SourcePanel", "on_data_chosen",
           "on_model_chosen"]


class SourcePanel(QGroupBox):
    """Two combo boxes (models: demos, recent files, open, new untrained; datasets: built-in, recent folders, open) and a card."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("Model and data")
        self.settings = settings
        form = QFormLayout(self)
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("The model to prune: a built-in demo, a recent file, or open one "
                                    "(you can also drop a file onto the window)")
        form.addRow("Model", self.model_combo)
        self.data_combo = QComboBox()
        self.data_combo.setToolTip("The dataset for calibration, recovery and evaluation: Fashion-MNIST is built in; "
                                   "an ImageFolder (one sub-folder per class) or a CIFAR-10 folder can be opened")
        form.addRow("Dataset", self.data_combo)
        self.summary_label = QLabel("Loading…")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary_label.setToolTip("The loaded model: architecture, size, cost per image and accuracy")
        form.addRow(self.summary_label)
        self.fill_models()
        self.fill_data()

    def fill_models(self, current: str | None = None) -> None:
        """Demo models, recent files, "Open…" and "New untrained…", with `current` selected (added when it is new)."""
        combo = self.model_combo
        combo.blockSignals(True)
        combo.clear()
        for name in DEMO_ARCHS:
            combo.addItem(f"Demo: {DEMO_TITLES.get(name, name)}", f"demo:{name}")
        for path in self.settings.recent("models"):
            if not ModelSource.parse(path).is_demo:
                combo.addItem(Path(path).name, path)
                combo.setItemData(combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        if current and combo.findData(current) < 0:
            combo.addItem(Path(current).name, current)
        combo.addItem("Open a model file…", OPEN_FILE)
        combo.addItem("New untrained architecture…", OPEN_NEW)
        if current:
            combo.setCurrentIndex(combo.findData(current))
        combo.blockSignals(False)

    def fill_data(self, current: str | None = None) -> None:
        """The built-in dataset, recent folders and "Open…", with `current` selected (added when it is new)."""
        fill_data_combo(self.data_combo, self.settings, current)

    def show_summary(self, loaded: Loaded) -> None:
        """The card: architecture, source, input, size, cost per image, accuracy and dataset."""
        s = loaded.summary
        waiting = "<small>measuring…</small>"  # found in the background after Ready (gui.engine_calls.details)
        top1 = f"{s['top1']:.2%} <small>{top1_note(loaded)}</small>" if s.get("top1") is not None else \
            waiting if "top1" in loaded.pending else "unknown"
        size = waiting if s.get("size_bytes") is None else \
            f"{fmt_bytes(s['size_bytes'])} ({fmt_bytes(s['compressed_bytes'])} zipped)"
        shape = "×".join(str(d) for d in s["input_shape"])
        rows = [("Architecture", s["architecture"]), ("Source", s["source"]), ("Input", f"{shape}, "
                f"{s['classes']} classes"), ("Parameters", fmt_count(s["params"])),
                ("MACs / image", fmt_count(s["macs"])),
                ("Size", size),
                ("Top-1", top1), ("Dataset", s["dataset"])]
        html = "<table cellspacing='0' cellpadding='1'>" + "".join(
            f"<tr><td style='padding-right:8px'><i>{k}</i></td><td><b>{v}</b></td></tr>" for k, v in rows) + "</table>"
        if loaded.bundle.scripted:
            html += "<p style='color:#D55E00'>TorchScript models can be evaluated but not pruned.</p>"
        self.summary_label.setText(html)


def top1_note(loaded: Loaded) -> str:
    """Where the card's top-1 comes from: "recorded in the file", or the images it was measured on."""
    note = str(loaded.summary.get("top1_note", ""))
    return "recorded in the file" if note == "recorded" else note


def on_model_chosen(commands: Commands, panel: SourcePanel, index: int) -> None:
    """A model picked in the combo box: open a file, a new architecture, or load the one picked."""
    data = panel.model_combo.itemData(index)
    current = commands.session.current_model_src()
    if data == OPEN_FILE:
        commands.choose_model_file()
    elif data == OPEN_NEW:
        panel.fill_models(current)
        commands.open_model_dialog(untrained=True)
    elif data and data != current:
        if ModelSource.parse(data).is_demo:
            commands.load(data, commands.current_data_spec())
        else:  # a recent file: as it was opened (as File ▸ Recent models does)
            commands.open_model_file(data)


def on_data_chosen(commands: Commands, panel: SourcePanel, index: int) -> None:
    """A dataset picked in the combo box: ask for a folder if need be, then switch to it (gui.data_choice)."""
    loaded = commands.session.loaded
    spec = resolve_choice(commands.parent, commands.session.settings, panel.data_combo.itemData(index))
    if spec is None or spec == (loaded.request.data_spec if loaded else None):
        panel.fill_data(commands.current_data_spec())  # cancelled, or the same: the combo shows what is in use
        return
    switch_data(commands, spec)
