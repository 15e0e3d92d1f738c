"""The layer table beside the graph: every prunable layer with its size, group and the user's per-layer choices,
under a name and type filter (ResNet-50 has 160+ rows)."""
from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDoubleSpinBox, QHBoxLayout, QHeaderView, QLabel,
                               QLineEdit, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from engine.config import PruneConfig
from engine.layers import LayerInfo, LayerStat
from engine.methods import get_method
from engine.pruners import share_off
from engine.units import fmt_count
from gui import theme

NAME_ROLE = Qt.ItemDataRole.UserRole


def _before_after(before: int, after: int) -> str:
    return f"{before} → {after}" if after != before else str(before)


def inputs_after(info: LayerInfo, stat: LayerStat) -> int:
    """Input channels left after a run, from the weights each kept filter still has (LayerStat counts outputs
    only): a filter's weights shrink with its inputs. A grouped convolution (depthwise) keeps a fixed input
    count per filter and loses inputs with its groups, that is with its outputs."""
    if not (stat.params_before and stat.channels_before and stat.channels_after):
        return info.in_channels if stat.channels_after else 0
    per_filter_before = stat.params_before / stat.channels_before
    kept = (stat.params_after / stat.channels_after) / per_filter_before
    if per_filter_before < info.in_channels:  # fewer weights per filter than inputs: grouped
        kept *= stat.channels_after / stat.channels_before
    return round(info.in_channels * kept)


def asked_share(config: PruneConfig | None, name: str) -> float | None:
    """The share of its channels a run asked of layer `name` (its own ratio or the default, at most the
    maximum layer ratio); None where none is asked of one layer: not a structured ratio run under layer
    scope, or an ignored layer."""
    if config is None or config.pruning_ratio is None or config.scope != "layer" or config.manual_channels \
            or name in config.ignored_layers or not get_method(config.method).structured:
        return None
    return min(config.layer_ratios.get(name, config.pruning_ratio), config.max_layer_ratio)


def removed_tip(info: LayerInfo, stat: LayerStat, ins_after: int, not_pruned: bool) -> str:
    """The Weights removed cell explained: which cut (own outputs, lost inputs, zeroed weights) made its share."""
    lines = [f"{info.name}: {stat.pruned_share:.0%} of its weights removed "
             f"({fmt_count(stat.params_before)} → {fmt_count(stat.nonzero_after)} left)."]
    if stat.channels_after != stat.channels_before:
        lines.append(f"Its own outputs: {stat.channels_before} → {stat.channels_after} channels.")
    else:
        lines.append("Its own output channels are all kept" + (" (the classifier head, or a layer left out)."
                                                              if not_pruned else "."))
    if ins_after != info.in_channels:
        lines.append(f"Its inputs: {info.in_channels} → {ins_after} channels, because the layer before it lost "
                     "output channels: a weight needs both its input and its output channel.")
    if stat.nonzero_after < stat.params_after:
        lines.append(f"{fmt_count(stat.params_after - stat.nonzero_after)} of the weights left are zeroed "
                     "(unstructured pruning: still stored, not faster).")
    return "\n".join(lines)


class LayerTable(QTableWidget):
    """Every prunable layer: shape, size, channels before → after, group, include box, own ratio, pruned share."""

    layer_selected = Signal(str)
    choices_changed = Signal()
    layers_set = Signal()  # the rows were replaced: the filter's type list follows
    ALL_TYPES = "All types"
    SPINS_PER_TURN = 12
    HEADERS = (("Layer", "Module name in the model"), ("Type", "Layer type"),
               ("Output", "Output shape for one image (channels × height × width)"),
               ("Params", "Parameters of the layer"), ("MACs", "Multiply-accumulates per image"),
               ("In ch", "Input channels before → after the selected run: they go when the layer before this "
                         "one loses output channels, whether or not this layer is pruned itself"),
               ("Out ch", "Output channels before → after the selected run: this layer's own cut (with its "
                          "dependency group)"),
               ("Group", "Dependency group: layers with the same colour must lose the same channels "
                         "(residual connections couple them); torch-pruning prunes them together"),
               ("Prune", "Untick to leave this layer alone"),
               ("Ratio", "This layer's own pruning ratio ('default' uses the method panel's ratio)"),
               ("Weights removed", "Share of this layer's weights gone after the selected run: from its own output "
                                   "channels and from the input channels the layer before it lost (kept outputs × "
                                   "kept inputs remain, so 16/64 of each is 94 % removed), or zeroed by an "
                                   "unstructured method. Hover a cell for the sum"),
               ("Drop", "Sensitivity: mean top-1 drop (points) when this layer's dependency group alone is pruned at "
                               "10–90 % — run 'Scan sensitivity'; red layers deserve lower ratios"),
               ("Time", "Measured time of this layer per forward pass and its share of the whole (→ the selected "
                        "run's pruned model): 'Measure where the time goes' below the graph. Measured, not MACs: "
                        "full-resolution and depthwise layers may cost more than their MACs suggest"))
    (COL_NAME, COL_TYPE, COL_OUT, COL_PARAMS, COL_MACS, COL_INPUTS, COL_CHANNELS, COL_GROUP, COL_INCLUDE, COL_RATIO,
     COL_PRUNED, COL_SENSITIVITY, COL_TIME) = range(13)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(self.HEADERS), parent)
        for col, (text, tip) in enumerate(self.HEADERS):
            item = QTableWidgetItem(text)
            item.setToolTip(tip)
            self.setHorizontalHeaderItem(col, item)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 10)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.setToolTip("Prunable layers. Select a row to show its weights; untick or give a ratio to "
                        "customise the run")
        self.layers: list[LayerInfo] = []
        self.head: str | None = None
        self._spins: dict[str, QDoubleSpinBox] = {}
        self._filter = ("", self.ALL_TYPES)
        self._pending: list[tuple[int, str]] = []  # (row, layer) still without a Ratio spin box
        self.itemSelectionChanged.connect(self._on_selection)
        self.itemChanged.connect(self._on_item_changed)
        self._fix_ratio_width()

    def _fix_ratio_width(self) -> None:
        """Give the Ratio column the width its spin box needs: sizing to contents sees the (empty) cells, not
        the cell widgets, and cut 'default' to 'fault'."""
        spin = self._ratio_spin()
        width = max(spin.sizeHint().width(), self.horizontalHeader().sectionSizeHint(self.COL_RATIO))
        spin.deleteLater()
        self.horizontalHeader().setSectionResizeMode(self.COL_RATIO, QHeaderView.ResizeMode.Fixed)
        self.horizontalHeader().resizeSection(self.COL_RATIO, width)

    def _ratio_spin(self) -> QDoubleSpinBox:
        """A Ratio spin box: 'default' (the method panel's ratio) below 0, else this layer's own ratio."""
        spin = QDoubleSpinBox()
        spin.setRange(-0.05, 0.95)
        spin.setSingleStep(0.05)
        spin.setDecimals(2)
        spin.setSpecialValueText("default")
        spin.setValue(-0.05)
        spin.setFrame(False)
        return spin

    def set_layers(self, layers: list[LayerInfo], head: str | None) -> None:
        """Fill the table from describe_layers() (clears the per-layer choices)."""
        # Sizing to contents after every cell, and repainting, made 160 rows stall the UI thread for ~300 ms.
        self.setUpdatesEnabled(False)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.blockSignals(True)
        self.layers, self.head = layers, head
        self.clearContents()
        self.setRowCount(len(layers))
        self._spins.clear()
        self._pending = []
        members: dict[int, list[str]] = {}
        for info in layers:
            members.setdefault(info.group, []).append(info.name)
        for row, info in enumerate(layers):
            shape = "×".join(str(d) for d in info.out_shape)
            cells = [info.name, info.kind, shape, fmt_count(info.params), fmt_count(info.macs),
                     str(info.in_channels), str(info.out_channels), f"G{info.group}" if info.group >= 0 else "–"]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(NAME_ROLE, info.name)
                if col >= self.COL_PARAMS:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.setItem(row, col, item)
            group_item = self.item(row, self.COL_GROUP)
            if info.group >= 0:
                group_item.setBackground(QBrush(theme.group_colour(info.group)))
                others = [n for n in members[info.group] if n != info.name]
                group_item.setToolTip(f"Group {info.group}: pruned together with " + (", ".join(others) or "no other "
                                      "prunable layer") + " (and their BatchNorms)")
            else:
                group_item.setToolTip("Not pruned: this is the classifier head or an ignored layer")
            include = QTableWidgetItem()
            include.setData(NAME_ROLE, info.name)
            is_head = info.name == head
            flags = Qt.ItemFlag.ItemIsSelectable | (Qt.ItemFlag.NoItemFlags if is_head else
                                                    Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
            include.setFlags(flags)
            include.setCheckState(Qt.CheckState.Unchecked if is_head else Qt.CheckState.Checked)
            include.setToolTip("The classifier head is kept so the number of classes stays the same" if is_head
                               else "Untick to leave this layer alone")
            self.setItem(row, self.COL_INCLUDE, include)
            if not is_head:
                self._pending.append((row, info.name))
            for col in (self.COL_PRUNED, self.COL_SENSITIVITY, self.COL_TIME):
                cell = QTableWidgetItem("")
                cell.setData(NAME_ROLE, info.name)
                cell.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.setItem(row, col, cell)
        self.blockSignals(False)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self._fix_ratio_width()
        self.setUpdatesEnabled(True)
        self.set_filter(*self._filter)
        self.layers_set.emit()
        QTimer.singleShot(0, self, self._make_spins_later)

    def _make_spins(self, count: int | None = None) -> None:
        """Create the Ratio spin boxes still missing (at most `count`); a row without one reads 'default'.

        A spin box costs about a millisecond to create and place, so 160 of them made at once would
        stall the UI thread; they are made a few dozen per event-loop turn instead, or all at once
        when something needs them (`cellWidget`, `set_ratios`).
        """
        batch, self._pending = self._pending[:count], self._pending[count:] if count else []
        for row, name in batch:
            spin = self._ratio_spin()
            spin.setToolTip("This layer's own ratio; 'default' follows the method panel. Structured methods "
                            "apply it to the layer's whole dependency group")
            spin.valueChanged.connect(self.choices_changed)
            self.setCellWidget(row, self.COL_RATIO, spin)
            self._spins[name] = spin

    @Slot()
    def _make_spins_later(self) -> None:
        if self._pending:
            self._make_spins(self.SPINS_PER_TURN)
            QTimer.singleShot(0, self, self._make_spins_later)

    def cellWidget(self, row: int, column: int) -> QWidget | None:  # noqa: N802 - Qt's name
        """The cell's widget; Ratio spin boxes not made yet are made first."""
        if column == self.COL_RATIO and self._pending:
            self._make_spins()
        return super().cellWidget(row, column)

    def kinds(self) -> list[str]:
        """The layer types present, for the filter's type list."""
        return sorted({info.kind for info in self.layers})

    def set_filter(self, text: str, kind: str) -> int:
        """Show only layers whose name contains `text` (any case) and whose type is `kind`; returns rows shown.

        Rows are hidden rather than proxied: the ratio spin boxes are cell widgets of this table, and a
        hidden row keeps its choices, so filtering never changes what a run prunes.
        """
        self._filter = (text, kind)
        needle = text.strip().lower()
        shown = 0
        for row, info in enumerate(self.layers):
            match = (not needle or needle in info.name.lower() or needle in info.kind.lower()) and \
                (kind in ("", self.ALL_TYPES) or info.kind == kind)
            self.setRowHidden(row, not match)
            shown += match
        return shown

    def needed_width(self) -> int:
        """Width that shows every column without scrolling."""
        columns = sum(self.columnWidth(c) for c in range(self.columnCount()))
        return columns + self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth() + 4

    def show_stats(self, stats: tuple[LayerStat, ...] | None, config: PruneConfig | None = None) -> None:
        """Show channels before → after and the pruned share of one run (None: the original model); with the
        run's `config`, a layer whose removed share is more than 5 points off its ratio says so."""
        by_name = {s.name: s for s in stats or ()}
        self.blockSignals(True)
        for row, info in enumerate(self.layers):
            stat = by_name.get(info.name)
            inputs, channels = self.item(row, self.COL_INPUTS), self.item(row, self.COL_CHANNELS)
            pruned = self.item(row, self.COL_PRUNED)
            asked = asked_share(config, info.name) if info.group >= 0 and info.name != self.head else None
            off = share_off(asked, stat.channels_before, stat.channels_after, config) \
                if stat is not None and asked is not None else ""
            channels.setToolTip(off or self.HEADERS[self.COL_CHANNELS][1])
            if stat is None:
                inputs.setText(str(info.in_channels))
                channels.setText(str(info.out_channels))
                pruned.setText("")
                pruned.setToolTip(self.HEADERS[self.COL_PRUNED][1])
                pruned.setBackground(QBrush(QColor(0, 0, 0, 0)))
                continue
            ins = (info.in_channels, inputs_after(info, stat))
            inputs.setText(_before_after(*ins))
            channels.setText(_before_after(stat.channels_before, stat.channels_after) + (" ⚠" if off else ""))
            pruned.setText(f"{stat.pruned_share:.0%}")
            pruned.setToolTip(removed_tip(info, stat, ins[1], info.name == self.head or info.group < 0))
            pruned.setBackground(QBrush(theme.share_colour(stat.pruned_share)))
        self.blockSignals(False)

    def show_sensitivity(self, scores: dict[str, float]) -> None:
        """Colour each layer by its group's mean accuracy drop (points); 20 points or more is full red."""
        self.blockSignals(True)
        for row, info in enumerate(self.layers):
            cell = self.item(row, self.COL_SENSITIVITY)
            score = scores.get(info.name)
            cell.setText("" if score is None else f"{score:.0f} pt" if abs(score) >= 10 else f"{score:.1f} pt")
            cell.setBackground(QBrush(theme.share_colour(0 if score is None else max(0.0, score) / 20.0)))
        self.blockSignals(False)
        self.resizeColumnToContents(self.COL_SENSITIVITY)

    def show_times(self, before, after=None) -> None:
        """The Time column from engine.profile Profiles: ms per pass and share, → the pruned model's ms."""
        ours = {t.name: t for t in before.layers}
        theirs = {t.name: t for t in after.layers} if after is not None else {}
        self.blockSignals(True)
        for row, info in enumerate(self.layers):
            cell, t, a = self.item(row, self.COL_TIME), ours.get(info.name), theirs.get(info.name)
            cell.setText("" if t is None else f"{t.ms:.2f} ms ({t.share:.0%})" + (f" → {a.ms:.2f}" if a else ""))
            cell.setBackground(QBrush(theme.share_colour(0.0 if t is None else min(1.0, 4 * t.share))))
        self.blockSignals(False)
        self.resizeColumnToContents(self.COL_TIME)

    def set_ratios(self, ratios: dict[str, float]) -> None:
        """Put per-layer ratios into the Ratio column (layers not named go back to 'default')."""
        self._make_spins()
        for name, spin in self._spins.items():
            if spin.isEnabled():
                spin.setValue(ratios.get(name, -0.05))

    def choices(self) -> tuple[tuple[str, ...], dict[str, float]]:
        """(ignored layers, per-layer ratios) as the user set them (the head is handled by keep_head)."""
        ignored, ratios = [], {}
        for row, info in enumerate(self.layers):
            if info.name == self.head:
                continue
            if self.item(row, self.COL_INCLUDE).checkState() != Qt.CheckState.Checked:
                ignored.append(info.name)
                continue
            spin = self._spins.get(info.name)
            if spin is not None and spin.value() >= 0:
                ratios[info.name] = round(float(spin.value()), 2)
        return tuple(ignored), ratios

    def select_layer(self, name: str) -> None:
        """Select a layer's row without emitting layer_selected."""
        for row, info in enumerate(self.layers):
            if info.name == name:
                self.blockSignals(True)
                self.selectRow(row)
                self.blockSignals(False)
                self.scrollToItem(self.item(row, 0))
                return

    @Slot()
    def _on_selection(self) -> None:
        items = self.selectedItems()
        if items and items[0].data(NAME_ROLE):
            self.layer_selected.emit(items[0].data(NAME_ROLE))

    @Slot(QTableWidgetItem)
    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() == self.COL_INCLUDE:
            self.choices_changed.emit()



class FilteredLayerTable(QWidget):
    """The layer table under a name filter and a type list; hidden rows keep their choices."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table = LayerTable()
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter layers by name…")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.setToolTip("Show only layers whose name (or type) contains this text, e.g. layer3 or "
                                    "downsample; hidden layers keep their choices")
        self.type_combo = QComboBox()
        self.type_combo.setToolTip("Show only layers of one type")
        self.type_combo.addItem(LayerTable.ALL_TYPES)
        self.filter_count = QLabel("")
        row.addWidget(self.filter_edit, 1)
        row.addWidget(self.type_combo)
        row.addWidget(self.filter_count)
        column.addLayout(row)
        column.addWidget(self.table, 1)
        self.filter_edit.textChanged.connect(self._on_filter_changed)
        self.type_combo.currentTextChanged.connect(self._on_filter_changed)
        self.table.layers_set.connect(self._on_layers_set)

    @Slot()
    def _on_layers_set(self) -> None:
        current = self.type_combo.currentText()
        self.type_combo.blockSignals(True)
        self.type_combo.clear()
        self.type_combo.addItems([LayerTable.ALL_TYPES, *self.table.kinds()])
        self.type_combo.setCurrentText(current if current in self.table.kinds() else LayerTable.ALL_TYPES)
        self.type_combo.blockSignals(False)
        self._on_filter_changed()

    @Slot()
    def _on_filter_changed(self, *_args) -> None:
        shown = self.table.set_filter(self.filter_edit.text(), self.type_combo.currentText())
        total = len(self.table.layers)
        self.filter_count.setText("" if shown == total else f"{shown} of {total}")
