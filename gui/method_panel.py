"""The method panel, generated from the engine's method registry: choose a method and its options.

Nothing here names a method: the list, the tooltips and the explanation come from
engine.methods, so a newly registered method appears without touching the GUI.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout,
                               QLabel, QListWidget, QListWidgetItem, QPushButton, QSlider, QStackedWidget,
                               QTextBrowser, QVBoxLayout, QWidget)

from engine.methods import STRUCTURED, UNSTRUCTURED, Method, all_methods, get_method
from engine.config import PruneConfig, default_of, rounding_words
from engine.recipes import PRESET_FIELDS, PRESETS, matching_preset
from gui.options import OptionField

FAMILY_HEADINGS = {STRUCTURED: "Structured — channels are removed", UNSTRUCTURED: "Unstructured — weights are zeroed"}
DEFAULT_METHOD = "l2"
DEFAULT_RATIO = round(default_of("pruning_ratio", gui=True) * 100)  # the slider's start, in % (engine.config)
EVAL_CHOICES = ((500, "500 test images (fastest)"), (1000, "1 000 test images (fast)"),
                (2000, "2 000 test images"), (5000, "5 000 test images"), (0, "all test images (exact)"))
NAME_ROLE = Qt.ItemDataRole.UserRole
# The PruneConfig fields this panel shows as generated widgets, and the GUI's own upper limits where the
# engine's are far beyond what a click-driven run needs.
GENERATED = ("scope", "steps", "bn_recalibrate", "finetune_epochs", "distill", "finetune_augment", "training_precision",
             "measure_speed", "round_to", "max_layer_ratio", "runtime", "allocation")
LATENCY_ROWS = ("runtime", "allocation")  # shown with the latency targets only
LATENCY_MODES = ("latency", "latency_speedup")  # the target modes met by timing copies (engine.latency_target)
FIELD_LIMITS = {"steps": 20, "finetune_epochs": 20, "round_to": 64}


def cuda_status() -> tuple[bool, str]:
    """(usable, text): the GPU's name, or why it cannot be used."""
    if not torch.backends.cuda.is_built():
        return False, "this PyTorch build has no CUDA support (CPU-only wheel)"
    if not torch.cuda.is_available():
        return False, "no CUDA device or driver was found"
    return True, torch.cuda.get_device_name(0)


class MethodPanel(QWidget):
    """Method list with teaching text, pruning amount, scope, steps, recovery, device and evaluation."""

    method_changed = Signal(str)
    options_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.methods: dict[str, Method] = {m.name: m for m in all_methods()}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._build_method_list_box(), 1)
        self.fields = {name: OptionField(name, high=FIELD_LIMITS.get(name)) for name in GENERATED}
        layout.addWidget(self._build_amount_box())
        layout.addWidget(self._build_options_box())
        layout.addWidget(self._build_recovery_box())
        layout.addWidget(self._build_run_box())
        for fld in (*self.fields.values(), *self.method_fields.values()):
            fld.changed.connect(self.options_changed)
        for signal in (self.ratio_slider.valueChanged, self.speedup_spin.valueChanged, self.latency_field.changed,
                       self.latency_speedup_field.changed,
                       self.device_combo.currentIndexChanged, self.eval_combo.currentIndexChanged,
                       self.mode_combo.currentIndexChanged):
            signal.connect(self.options_changed)
        self.fields["round_to"].changed.connect(self._update_ratio_hint)
        self.select_method(DEFAULT_METHOD if DEFAULT_METHOD in self.methods else next(iter(self.methods)))
        self._on_finetune_changed(self.finetune_spin.value())
        self._on_mode_changed(self.mode_combo.currentIndex())

    # --------------------------------------------------------------------- builders
    def _build_method_list_box(self) -> QGroupBox:
        """The method list, grouped by family, above the selected method's explanation."""
        method_box = QGroupBox("Pruning method")
        box_layout = QVBoxLayout(method_box)
        self.method_list = QListWidget()
        self.method_list.setToolTip("Pick how channels or weights are ranked; hover a method for its full description")
        # tall enough for every method without scrolling, no taller
        rows = len(self.methods) + 2
        self.method_list.setFixedHeight(rows * (self.method_list.fontMetrics().height() + 2) + 8)
        for family in (STRUCTURED, UNSTRUCTURED):
            heading = QListWidgetItem(FAMILY_HEADINGS[family])
            heading.setFlags(Qt.ItemFlag.NoItemFlags)
            font = heading.font()
            font.setBold(True)
            heading.setFont(font)
            self.method_list.addItem(heading)
            for method in all_methods(family):
                item = QListWidgetItem("   " + method.title)
                item.setData(NAME_ROLE, method.name)
                item.setToolTip(method.explain())
                self.method_list.addItem(item)
        self.method_list.currentItemChanged.connect(self._on_method_item)
        box_layout.addWidget(self.method_list)
        self.explain_view = QTextBrowser()
        self.explain_view.setOpenExternalLinks(False)
        self.explain_view.setToolTip("What the selected method measures, how it works and where it comes from")
        self.explain_view.setMinimumHeight(150)
        box_layout.addWidget(self.explain_view, 1)
        return method_box

    def _build_amount_box(self) -> QGroupBox:
        """Ratio or speed-up target, with scope and steps."""
        amount_box = QGroupBox("How much")
        form = QFormLayout(amount_box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.mode_combo = QComboBox()
        self.mode_combo.addItem("Pruning ratio", "ratio")
        self.mode_combo.addItem("Target speed-up (fewer MACs)", "speedup")
        self.mode_combo.addItem("Target latency (measured ms)", "latency")
        self.mode_combo.addItem("Target latency speed-up (× faster)", "latency_speedup")
        self.mode_combo.setToolTip("Prune a fixed share, prune until the model needs this many times fewer MACs, "
                                   "prune until its measured latency at the run's batch size is at most this many "
                                   "ms, or until it runs this many times faster than the original (both timed in "
                                   "the same rounds, so a busy machine slows both alike)")
        # its longest item must not widen the panel beside the lesson (the graph keeps its width); the popup shows it
        self.mode_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.mode_combo.setMinimumContentsLength(18)
        self.mode_combo.currentIndexChanged.connect(self._on_mode_changed)
        form.addRow("Target", self.mode_combo)
        form.addRow("Amount", self._build_amount_stack())
        for name in LATENCY_ROWS:  # what the latency is measured on and how it is shared (engine.config's options)
            form.addRow(self.fields[name].label, self.fields[name].widget)
        self.amount_form = form
        self.ratio_hint = QLabel()
        self.ratio_hint.setWordWrap(True)
        self.ratio_hint.setEnabled(False)  # shown greyed: a hint, not a control
        form.addRow("", self.ratio_hint)
        self.scope_combo = self.fields["scope"].widget
        form.addRow("Scope", self.scope_combo)
        self.steps_spin = self.fields["steps"].widget
        form.addRow("Steps", self.steps_spin)
        return amount_box

    def _build_amount_stack(self) -> QStackedWidget:
        """The ratio slider or the speed-up spin box, whichever the target mode needs."""
        self.amount_stack = QStackedWidget()
        ratio_row = QWidget()
        ratio_layout = QHBoxLayout(ratio_row)
        ratio_layout.setContentsMargins(0, 0, 0, 0)
        self.ratio_slider = QSlider(Qt.Orientation.Horizontal)
        self.ratio_slider.setRange(5, 95)
        self.ratio_slider.setSingleStep(5)
        self.ratio_slider.setPageStep(10)
        self.ratio_slider.setValue(DEFAULT_RATIO)
        self.ratio_slider.setToolTip("Share of channels (structured) or weights (unstructured) to remove")
        self.ratio_label = QLabel(f"{DEFAULT_RATIO} %")
        self.ratio_label.setMinimumWidth(40)
        self.ratio_slider.valueChanged.connect(self._on_ratio_changed)
        ratio_layout.addWidget(self.ratio_slider, 1)
        ratio_layout.addWidget(self.ratio_label)
        self.amount_stack.addWidget(ratio_row)
        self.speedup_spin = QDoubleSpinBox()
        self.speedup_spin.setRange(1.1, 20.0)
        self.speedup_spin.setSingleStep(0.1)
        self.speedup_spin.setValue(2.0)
        self.speedup_spin.setSuffix(" × fewer MACs")
        self.speedup_spin.setToolTip("Prune step by step until MACs drop by this factor (structured methods only)")
        self.amount_stack.addWidget(self.speedup_spin)
        self.latency_field = OptionField("target_latency")
        self.latency_spin = self.latency_field.widget
        self.amount_stack.addWidget(self.latency_spin)
        self.latency_speedup_field = OptionField("target_latency_speedup")
        self.latency_speedup_spin = self.latency_speedup_field.widget
        self.amount_stack.addWidget(self.latency_speedup_spin)
        self.amount_stack.setMaximumHeight(self.speedup_spin.sizeHint().height() + 4)
        return self.amount_stack

    def _build_options_box(self) -> QGroupBox:
        """Options only some methods read (declared by the method in the registry), shown with it."""
        self.method_box = QGroupBox("Options of this method")
        self.method_form = QFormLayout(self.method_box)
        self.method_fields = {name: OptionField(name) for m in self.methods.values() for name in m.options}
        for name, fld in self.method_fields.items():
            self.method_form.addRow(fld.label, fld.widget)
        return self.method_box

    def _build_recovery_box(self) -> QGroupBox:
        """BatchNorm re-estimation, fine-tuning, distillation and the step-through switch."""
        recovery_box = QGroupBox("Recovery after each step")
        form = QFormLayout(recovery_box)
        self.recipe_combo = QComboBox()  # a measured recipe sets the rows below; editing them shows Custom
        self.recipe_combo.addItem("Custom (the settings below)", None)
        for recipe in PRESETS.values():
            self.recipe_combo.addItem(recipe.label(), recipe.name)
            self.recipe_combo.setItemData(self.recipe_combo.count() - 1, recipe.cost_words(),
                                          Qt.ItemDataRole.ToolTipRole)
        self.recipe_combo.setToolTip("A recovery recipe measured on the ResNet demo (README, Recovery recipes): "
                                     "sets BatchNorm re-estimation, fine-tuning and distillation below")
        # a long label (its measured cost) must not widen the panel beside the lesson; the popup shows it whole
        self.recipe_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.recipe_combo.setMinimumContentsLength(18)
        self.recipe_combo.activated.connect(self._on_recipe_chosen)
        for name in PRESET_FIELDS:
            self.fields[name].changed.connect(self._show_recipe)
        form.addRow("Recipe", self.recipe_combo)
        self.bn_check = self.fields["bn_recalibrate"].widget
        form.addRow(self.bn_check)
        self.finetune_spin = self.fields["finetune_epochs"].widget
        self.finetune_spin.setSpecialValueText("off")
        self.finetune_spin.valueChanged.connect(self._on_finetune_changed)
        form.addRow("Fine-tuning", self.finetune_spin)
        self.distill_check = self.fields["distill"].widget
        form.addRow(self.distill_check)
        self.augment_check = self.fields["finetune_augment"].widget
        form.addRow(self.augment_check)
        self.precision_combo = self.fields["training_precision"].widget  # fine-tuning's arithmetic
        form.addRow("Precision", self.precision_combo)
        # Step-through: the run waits after each phase, so each recovery's effect is seen on its own
        self.step_check = QCheckBox("Step through phases")
        self.step_check.setToolTip("The run pauses after each phase (prune → re-estimate BatchNorm → fine-tune → "
                                   "evaluate); the accuracy plot gets a point per phase. Untick to let it run on")
        self.next_button = QPushButton("Next phase")
        self.next_button.setToolTip("Start the next phase of the paused run")
        self.next_button.setEnabled(False)
        form.addRow(self.step_check)
        form.addRow(self.next_button)  # a row of its own: beside the box its words were cut ("t: BatchNorm re-estima")
        return recovery_box

    def _build_run_box(self) -> QGroupBox:
        """Device, evaluation size, latency, channel rounding and the per-layer cap."""
        run_box = QGroupBox("Device and evaluation")
        form = QFormLayout(run_box)
        self.device_combo = QComboBox()
        self.device_combo.addItem("CPU", "cpu")
        usable, text = cuda_status()
        self.device_combo.addItem(f"GPU: {text}" if usable else "GPU (unavailable)", "cuda")
        gpu_item = self.device_combo.model().item(1)
        if not usable:
            gpu_item.setEnabled(False)
            gpu_item.setToolTip(f"GPU disabled: {text}")
        self.device_combo.setToolTip("Where pruning, fine-tuning and measurements run"
                                     + ("" if usable else f" — GPU disabled: {text}"))
        form.addRow("Device", self.device_combo)
        self.eval_combo = QComboBox()
        for value, label in EVAL_CHOICES:
            self.eval_combo.addItem(label, value)
        self.eval_combo.setCurrentIndex(1)  # 1 000 images: ±1.5 points, fast enough to watch
        self.eval_combo.setToolTip("Accuracy is measured on this many test images after each step: a "
                                   "stratified sample (every class in proportion), the same images in every "
                                   "run, so runs compare")
        form.addRow("Accuracy on", self.eval_combo)
        self.speed_check = self.fields["measure_speed"].widget
        self.speed_check.setText("Measure latency (batch 1 and batch 64)")
        form.addRow(self.speed_check)
        self.round_spin = self.fields["round_to"].widget
        form.addRow("Round channels to", self.round_spin)
        self.max_ratio_spin = self.fields["max_layer_ratio"].widget
        self.max_ratio_spin.setMinimum(0.1)
        form.addRow("Max. per layer", self.max_ratio_spin)
        return run_box


    # --------------------------------------------------------------------- queries
    def method_names(self) -> list[str]:
        """Names of the methods listed, in order."""
        names = []
        for row in range(self.method_list.count()):
            name = self.method_list.item(row).data(NAME_ROLE)
            if name:
                names.append(name)
        return names

    def current_method(self) -> Method:
        """The selected method."""
        item = self.method_list.currentItem()
        return get_method(item.data(NAME_ROLE)) if item and item.data(NAME_ROLE) else get_method(DEFAULT_METHOD)

    def select_method(self, name: str) -> None:
        """Select a method by registry name (unknown names are ignored)."""
        for row in range(self.method_list.count()):
            if self.method_list.item(row).data(NAME_ROLE) == name:
                self.method_list.setCurrentRow(row)
                return

    def config(self, **overrides: Any) -> PruneConfig:
        """The PruneConfig the controls describe (layer choices are added by the caller)."""
        method = self.current_method()
        speedup = self.mode_combo.currentData() == "speedup" and method.structured
        latency = self.mode_combo.currentData() == "latency" and method.structured
        latency_speedup = self.mode_combo.currentData() == "latency_speedup" and method.structured
        finetune = float(self.finetune_spin.value())
        eval_limit = int(self.eval_combo.currentData() or 0) or None
        values = {name: fld.value() for name, fld in self.fields.items()}
        values.update({name: self.method_fields[name].value() for name in method.options})
        values["distill"] = values["distill"] and finetune > 0
        values["finetune_augment"] = values["finetune_augment"] and finetune > 0
        cfg = PruneConfig(
            method=method.name,
            pruning_ratio=None if speedup or latency or latency_speedup else self.ratio_slider.value() / 100.0,
            target_speedup=float(self.speedup_spin.value()) if speedup else None,
            target_latency=self.latency_field.value() if latency else None,
            target_latency_speedup=self.latency_speedup_field.value() if latency_speedup else None,
            device=self.device_combo.currentData(), eval_limit=eval_limit,
            # interactive defaults (the Options' gui_default): 10 batches estimate BatchNorm statistics
            # well, 20 timed runs give a stable median; both keep a step to a few seconds on a laptop CPU
            bn_batches=default_of("bn_batches", gui=True), latency_repeats=default_of("latency_repeats", gui=True),
            **values)
        return replace(cfg, **overrides) if overrides else cfg

    def options(self) -> dict:
        """The controls' values as plain JSON (for QSettings)."""
        fields = {name: fld.value() for name, fld in (*self.fields.items(), *self.method_fields.items())}
        return {"method": self.current_method().name, "mode": self.mode_combo.currentData(),
                "ratio": self.ratio_slider.value(), "speedup": self.speedup_spin.value(),
                "latency": self.latency_field.value(), "latency_speedup": self.latency_speedup_field.value(),
                "eval": self.eval_combo.currentData(), "fields": fields}

    def restore(self, options: dict) -> None:
        """Set the controls from options(); missing or invalid values keep their defaults."""
        def pick(combo: QComboBox, value: Any) -> None:
            index = combo.findData(value)
            if index >= 0:
                combo.setCurrentIndex(index)

        try:
            if options.get("method") in self.methods:
                self.select_method(options["method"])
            pick(self.mode_combo, options.get("mode"))
            pick(self.eval_combo, options.get("eval"))
            for key, widget, kind in (("ratio", self.ratio_slider, int), ("speedup", self.speedup_spin, float),
                                      ("latency", self.latency_spin, float),
                                      ("latency_speedup", self.latency_speedup_spin, float)):
                if key in options:
                    widget.setValue(kind(options[key]))
            saved = options.get("fields") or {}
            for name, fld in (*self.fields.items(), *self.method_fields.items()):
                if name in saved:
                    fld.set_value(saved[name])
        except (TypeError, ValueError):
            pass  # stale settings from another version: keep the defaults

    # --------------------------------------------------------------------- slots
    @Slot(QListWidgetItem, QListWidgetItem)
    def _on_method_item(self, current: QListWidgetItem | None, _previous: QListWidgetItem | None) -> None:
        if current is None or not current.data(NAME_ROLE):
            return
        method = get_method(current.data(NAME_ROLE))
        family = "channels are removed" if method.structured else "weights are zeroed, tensors stay dense"
        self.explain_view.setHtml(
            f"<b>{method.title}</b> <i>({family})</i><br><b>Measures:</b> {method.measures}.<br>"
            f"{method.description}<br><small><b>Paper:</b> {method.paper}</small>")
        self._update_ratio_hint()
        for name, fld in self.method_fields.items():
            self.method_form.setRowVisible(fld.widget, name in method.options)
        self.method_box.setVisible(bool(method.options))
        for row in range(1, self.mode_combo.count()):  # the speed-up and latency targets
            item = self.mode_combo.model().item(row)
            item.setEnabled(method.structured)
            item.setToolTip("" if method.structured else "Unstructured pruning keeps tensors dense: "
                            "MACs and latency do not drop, so a speed-up or latency target cannot be reached")
        if not method.structured and self.mode_combo.currentData() != "ratio":
            self.mode_combo.setCurrentIndex(0)
        self.method_changed.emit(method.name)
        self.options_changed.emit()

    @Slot()
    def _update_ratio_hint(self) -> None:
        """Under the amount: what the ratio counts and, for structured methods, how channel counts are rounded
        (40 % of 64 channels is 38.4: the nearest multiple of 8 is 40, so the layer keeps 40)."""
        method = self.current_method()
        text = f"Ratio = {method.ratio_meaning}."
        if method.structured and not method.manual:
            words = rounding_words(self.fields["round_to"].value())
            text += f" {words[0].upper()}{words[1:]}."
        self.ratio_hint.setText(text)

    @Slot(int)
    def _on_mode_changed(self, index: int) -> None:
        self.amount_stack.setCurrentIndex(index)
        for name in LATENCY_ROWS:
            self.amount_form.setRowVisible(self.fields[name].widget, self.mode_combo.itemData(index) in LATENCY_MODES)

    @Slot(int)
    def _on_ratio_changed(self, value: int) -> None:
        self.ratio_label.setText(f"{value} %")

    @Slot(float)
    def _on_finetune_changed(self, value: float) -> None:
        for widget in (self.distill_check, self.augment_check, self.precision_combo):
            widget.setEnabled(value > 0)

    @Slot(int)
    def _on_recipe_chosen(self, index: int) -> None:
        name = self.recipe_combo.itemData(index)
        for field_name, value in (PRESETS[name].options.items() if name else ()):
            self.fields[field_name].set_value(value)

    @Slot()
    def _show_recipe(self) -> None:
        """The recipe the recovery rows match, or Custom."""
        values = {name: self.fields[name].value() for name in PRESET_FIELDS}
        self.recipe_combo.setCurrentIndex(max(0, self.recipe_combo.findData(matching_preset(values))))
