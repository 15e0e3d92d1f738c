"""The network graph (Netron in a QWebEngineView) beside a native layer table.

Netron is served by the `netron` package on localhost only. Its page would otherwise ask for
cookie consent, look up the user's country at ipinfo.io and send Google Analytics telemetry;
three layers keep everything local:
  * a script injected at DocumentCreation sets Netron's `consent` cookie (no prompt, no ipinfo
    lookup) and rewrites the page's `version`/`date` meta tags before Netron reads them, so it
    treats itself as an unpackaged build (telemetry is only started for packaged builds) and never
    shows its "please update" nag;
  * an off-the-record profile (no cookies or cache on disk);
  * a request interceptor that blocks every request not addressed to localhost.

Set PRUNELAB_NO_WEBENGINE=1 to run without QtWebEngine (the offscreen tests do): the graph area
then shows a short message and everything else works. The same fallback is used when QtWebEngine
cannot be imported or started.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from PySide6.QtCore import QCoreApplication, Qt, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QAbstractItemView, QButtonGroup, QComboBox, QDoubleSpinBox, QHBoxLayout, QHeaderView,
                               QLabel, QLineEdit, QPushButton, QRadioButton, QSplitter, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from engine.layers import LayerInfo, LayerStat
from engine.units import fmt_count
from gui import theme

log = logging.getLogger(__name__)
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")
NAME_ROLE = Qt.ItemDataRole.UserRole

CONSENT_SCRIPT = """
(function () {
  // Netron skips its consent prompt and its ipinfo.io lookup when this cookie exists.
  document.cookie = 'consent=' + Date.now() + ';path=/;max-age=31536000';
  // Netron starts telemetry only for packaged versions and nags about updates after 180 days;
  // both are read from <meta> tags, which we rewrite as soon as the parser adds them.
  var fix = function () {
    var metas = document.getElementsByTagName('meta');
    for (var i = 0; i < metas.length; i++) {
      if (metas[i].name === 'version' && metas[i].content !== '0.0.0') { metas[i].content = '0.0.0'; }
      if (metas[i].name === 'date' && metas[i].content !== '') { metas[i].content = ''; }
    }
  };
  new MutationObserver(fix).observe(document, {childList: true, subtree: true});
})();
"""


# Paints Netron's node boxes (ids "node-name-<ONNX node name>") once they exist; Netron renders
# asynchronously after the page loads, so it retries for a few seconds.
PAINT_SCRIPT = """
(function (colours) {
  var tries = 0;
  var paint = function () {
    var missing = 0;
    Object.keys(colours).forEach(function (name) {
      var node = document.getElementById('node-name-' + name);
      if (!node) { missing++; return; }
      var item = node.querySelector('.node-item-type') || node;
      var box = item.querySelector('path'), text = item.querySelector('text');
      if (box) { box.style.fill = colours[name]; }
      if (text) { text.style.fill = '#000'; }
    });
    if (missing && ++tries < 40) { setTimeout(paint, 250); }
  };
  paint();
})(%s);
"""


def module_of_node(node_name: str) -> str:
    """The module path of an ONNX node named by torch's exporter, e.g. '/layer2/layer2.0/shortcut/shortcut.0/Conv'
    -> 'layer2.0.shortcut.0'. Each scope segment is an attribute name, or 'attr.index' for a
    Sequential's child (which then replaces its parent's last component)."""
    parts = [p for p in node_name.strip("/").split("/")[:-1] if p]
    path: list[str] = []
    for part in parts:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    return ".".join(path)


_NODE_MODULES: dict[tuple[str, float], dict[str, str]] = {}  # (path, mtime) -> ONNX node name -> module


def node_modules(onnx_path: Path) -> dict[str, str]:
    """ONNX node name -> module path for the convolution and linear nodes (read once per file)."""
    import onnx

    key = (str(onnx_path), Path(onnx_path).stat().st_mtime)
    if key not in _NODE_MODULES:
        model = onnx.load(str(onnx_path), load_external_data=False)
        _NODE_MODULES[key] = {node.name: module_of_node(node.name) for node in model.graph.node
                              if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and node.name}
    return _NODE_MODULES[key]


def node_colours(onnx_path: Path, colours: dict[str, str]) -> dict[str, str]:
    """ONNX node name -> colour, for the convolution and linear nodes of the layers in `colours`."""
    return {node: colours[module] for node, module in node_modules(onnx_path).items() if module in colours}


def webengine_disabled_reason() -> str | None:
    """Why the embedded graph is off (env var or missing QtWebEngine), or None when it can be used."""
    if os.environ.get("PRUNELAB_NO_WEBENGINE", "").strip() not in ("", "0"):
        return "The graph view is turned off (PRUNELAB_NO_WEBENGINE is set)."
    try:
        import PySide6.QtWebEngineWidgets  # noqa: F401
    except ImportError as exc:
        return f"The graph view needs QtWebEngine, which could not be loaded: {exc}"
    return None


def prepare_webengine() -> None:
    """Call before QApplication exists: QtWebEngine must be imported (and GL shared) first."""
    if os.name == "posix" and hasattr(os, "geteuid") and os.geteuid() == 0:
        os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")  # Chromium refuses to run as root otherwise
    if webengine_disabled_reason() is None:
        QCoreApplication.setAttribute(Qt.ApplicationAttribute.AA_ShareOpenGLContexts)
        import PySide6.QtWebEngineWidgets  # noqa: F401


class NetronServer:
    """Serves one ONNX file at a time with the netron package, on a free localhost port."""

    def __init__(self) -> None:
        self.address: tuple[str, int] | None = None
        self.path: Path | None = None

    def serve(self, path: Path) -> QUrl:
        """Serve `path` (stopping the previous file; netron's handler holds one file) and return its URL."""
        import netron

        self.stop()
        self.address = netron.start(str(path), address=("localhost", 0), browse=False)
        self.path = path
        return QUrl(f"http://{self.address[0]}:{self.address[1]}/")

    def stop(self) -> None:
        """Stop serving."""
        if self.address is not None:
            import netron

            try:
                netron.stop(self.address)
            except Exception:  # a server that already died is fine to forget
                log.debug("netron stop failed", exc_info=True)
            self.address = None


def _make_web_view(parent: QWidget) -> QWidget:
    """A QWebEngineView whose profile keeps Netron local (see the module docstring)."""
    from PySide6.QtWebEngineCore import QWebEngineProfile, QWebEngineScript, QWebEngineUrlRequestInterceptor
    from PySide6.QtWebEngineWidgets import QWebEngineView

    class LocalOnly(QWebEngineUrlRequestInterceptor):
        """Blocks every request that would leave this machine."""

        def interceptRequest(self, info) -> None:  # noqa: N802 (Qt override)
            url = info.requestUrl()
            if url.scheme() in ("http", "https", "ws", "wss", "ftp") and url.host() not in LOCAL_HOSTS:
                log.info("blocked a request to %s", url.toString())
                info.block(True)

    view = QWebEngineView(parent)
    # no storage name: off the record, nothing written to disk. Parented to the graph view, not the web
    # view, so the page (a child of the web view) can be deleted first, as QtWebEngine requires.
    profile = QWebEngineProfile(parent)
    interceptor = LocalOnly(profile)
    profile.setUrlRequestInterceptor(interceptor)
    script = QWebEngineScript()
    script.setName("prunelab-netron-consent")
    script.setInjectionPoint(QWebEngineScript.InjectionPoint.DocumentCreation)
    script.setWorldId(QWebEngineScript.ScriptWorldId.MainWorld)
    script.setRunsOnSubFrames(True)
    script.setSourceCode(CONSENT_SCRIPT)
    profile.scripts().insert(script)
    view._keep = (profile, interceptor, None)  # Python must keep these alive as long as the view
    fresh_page(view)
    return view


def fresh_page(view: QWidget) -> None:
    """Give the view a new page on its profile and delete the old one.

    Reloading one page for every graph made Chromium's renderer keep about 14 MB per graph shown
    (measured by benchmarks/gui_soak.py); a fresh page lets it free what the previous graph held.
    """
    from PySide6.QtWebEngineCore import QWebEnginePage

    profile, interceptor, old = view._keep
    page = QWebEnginePage(profile, view)
    view.setPage(page)
    view._keep = (profile, interceptor, page)
    if old is not None:
        old.deleteLater()


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
               ("Channels", "Output channels before → after the selected run"),
               ("Group", "Dependency group: layers with the same colour must lose the same channels "
                         "(residual connections couple them); torch-pruning prunes them together"),
               ("Prune", "Untick to leave this layer alone"),
               ("Ratio", "This layer's own pruning ratio ('default' uses the method panel's ratio)"),
               ("Pruned", "Share of the layer's weights removed or zeroed by the selected run"),
               ("Drop", "Sensitivity: mean top-1 drop (points) when this layer's dependency group alone is pruned at "
                               "10–90 % — run 'Scan sensitivity'; red layers deserve lower ratios"))
    (COL_NAME, COL_TYPE, COL_OUT, COL_PARAMS, COL_MACS, COL_CHANNELS, COL_GROUP, COL_INCLUDE, COL_RATIO, COL_PRUNED,
     COL_SENSITIVITY) = range(11)

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
                     str(info.out_channels), f"G{info.group}" if info.group >= 0 else "–"]
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
            for col in (self.COL_PRUNED, self.COL_SENSITIVITY):
                cell = QTableWidgetItem("")
                cell.setData(NAME_ROLE, info.name)
                cell.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.setItem(row, col, cell)
        self.blockSignals(False)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.setUpdatesEnabled(True)
        self.set_filter(*self._filter)
        self.layers_set.emit()
        QTimer.singleShot(0, self._make_spins_later)

    def _make_spins(self, count: int | None = None) -> None:
        """Create the Ratio spin boxes still missing (at most `count`); a row without one reads 'default'.

        A spin box costs about a millisecond to create and place, so 160 of them made at once would
        stall the UI thread; they are made a few dozen per event-loop turn instead, or all at once
        when something needs them (`cellWidget`, `set_ratios`).
        """
        batch, self._pending = self._pending[:count], self._pending[count:] if count else []
        for row, name in batch:
            spin = QDoubleSpinBox()
            spin.setRange(-0.05, 0.95)
            spin.setSingleStep(0.05)
            spin.setDecimals(2)
            spin.setSpecialValueText("default")
            spin.setValue(-0.05)
            spin.setFrame(False)
            spin.setToolTip("This layer's own ratio; 'default' follows the method panel. Structured methods "
                            "apply it to the layer's whole dependency group")
            spin.valueChanged.connect(self.choices_changed)
            self.setCellWidget(row, self.COL_RATIO, spin)
            self._spins[name] = spin

    @Slot()
    def _make_spins_later(self) -> None:
        if self._pending:
            self._make_spins(self.SPINS_PER_TURN)
            QTimer.singleShot(0, self._make_spins_later)

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

    def show_stats(self, stats: tuple[LayerStat, ...] | None) -> None:
        """Show channels before → after and the pruned share of one run (None: the original model)."""
        by_name = {s.name: s for s in stats or ()}
        self.blockSignals(True)
        for row, info in enumerate(self.layers):
            stat = by_name.get(info.name)
            channels = self.item(row, self.COL_CHANNELS)
            pruned = self.item(row, self.COL_PRUNED)
            if stat is None:
                channels.setText(str(info.out_channels))
                pruned.setText("")
                pruned.setBackground(QBrush(QColor(0, 0, 0, 0)))
                continue
            channels.setText(f"{stat.channels_before} → {stat.channels_after}" if stat.channels_after !=
                             stat.channels_before else str(stat.channels_before))
            pruned.setText(f"{stat.pruned_share:.0%}")
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


class GraphView(QWidget):
    """Netron graph of the original or a pruned model, beside the layer table."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.server = NetronServer()
        self.paths: dict[str, Path | None] = {"original": None, "pruned": None}
        self.pruned_label = "pruned"
        self.layer_colours: dict[str, str] = {}  # layer -> sensitivity colour, painted on the original graph
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Show:"))
        self.original_radio = QRadioButton("Original model")
        self.original_radio.setToolTip("The model as loaded")
        self.pruned_radio = QRadioButton("Pruned model")
        self.pruned_radio.setToolTip("The result of the selected run (narrower layers after structured pruning)")
        self.pruned_radio.setEnabled(False)
        self.original_radio.setChecked(True)
        self.which = QButtonGroup(self)
        self.which.addButton(self.original_radio)
        self.which.addButton(self.pruned_radio)
        self.which.buttonToggled.connect(self._on_which_toggled)
        bar.addWidget(self.original_radio)
        bar.addWidget(self.pruned_radio)
        bar.addStretch(1)
        self.note_label = QLabel("")
        bar.addWidget(self.note_label)
        self.scan_button = QPushButton("Scan sensitivity")
        self.scan_button.setToolTip("Prune each dependency group alone at 10–90 % and measure the accuracy drop "
                                    "(fills the Sensitivity column; takes a few seconds to a minute)")
        self.scan_button.setEnabled(False)
        bar.addWidget(self.scan_button)
        self.apply_button = QPushButton("Use suggested ratios")
        self.apply_button.setToolTip("Fill the Ratio column from the scan: sensitive groups are pruned less, with "
                                     "no more MACs than the panel's uniform ratio")
        self.apply_button.setEnabled(False)
        bar.addWidget(self.apply_button)
        layout.addLayout(bar)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        layout.addWidget(self.splitter, 1)
        self.disabled_reason = webengine_disabled_reason()
        self.web_view: QWidget | None = None
        if self.disabled_reason is None:
            try:
                self.web_view = _make_web_view(self)
                self.web_view.setToolTip("")  # Netron has its own hints; a tooltip would cover the graph
            except Exception as exc:  # QtWebEngine present but unable to start (no GPU/GL, sandbox...)
                log.exception("QtWebEngine could not start")
                self.disabled_reason = f"The graph view could not start QtWebEngine: {exc}"
        if self.web_view is None:
            self.placeholder = QLabel(self.disabled_reason + "\nThe layer table on the right still lists every "
                                      "layer, its dependency group and how much of it was pruned.")
            self.placeholder.setWordWrap(True)
            self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self.splitter.addWidget(self.placeholder)
        else:
            self.splitter.addWidget(self.web_view)
            self.web_view.loadFinished.connect(self._paint_nodes)
        self.layer_table = LayerTable()
        self.splitter.addWidget(self._table_with_filter())
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setSizes([320, 680])  # the web view has no size hint; give it room from the start

    def _table_with_filter(self) -> QWidget:
        """The layer table under a name filter and a type list (ResNet-50 has 160+ rows)."""
        box = QWidget()
        column = QVBoxLayout(box)
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
        column.addWidget(self.layer_table, 1)
        self.filter_edit.textChanged.connect(self._on_filter_changed)
        self.type_combo.currentTextChanged.connect(self._on_filter_changed)
        self.layer_table.layers_set.connect(self._on_layers_set)
        return box

    @Slot()
    def _on_layers_set(self) -> None:
        current = self.type_combo.currentText()
        self.type_combo.blockSignals(True)
        self.type_combo.clear()
        self.type_combo.addItems([LayerTable.ALL_TYPES, *self.layer_table.kinds()])
        self.type_combo.setCurrentText(current if current in self.layer_table.kinds() else LayerTable.ALL_TYPES)
        self.type_combo.blockSignals(False)
        self._on_filter_changed()

    @Slot()
    def _on_filter_changed(self, *_args) -> None:
        shown = self.layer_table.set_filter(self.filter_edit.text(), self.type_combo.currentText())
        total = len(self.layer_table.layers)
        self.filter_count.setText("" if shown == total else f"{shown} of {total}")

    def fit_table(self) -> None:
        """Give the layer table the width it needs and the graph the rest (at least a quarter)."""
        total = sum(self.splitter.sizes()) or self.width()
        table = min(self.layer_table.needed_width(), int(total * 3 / 4))
        self.splitter.setSizes([total - table, table])

    @property
    def enabled(self) -> bool:
        """True when Netron is embedded."""
        return self.web_view is not None

    def show_sensitivity(self, scores: dict[str, float]) -> None:
        """Colour each layer by its group's mean accuracy drop, in the table and on the original graph."""
        self.layer_table.show_sensitivity(scores)
        self.layer_colours = {name: theme.share_colour_opaque(max(0.0, score) / 20.0).name()
                              for name, score in scores.items()}
        self._paint_nodes()

    def paint_script(self) -> str | None:
        """The JavaScript that colours the original graph's nodes, or None when there is nothing to paint."""
        path = self.paths.get("original")
        if not self.layer_colours or path is None or not self.original_radio.isChecked():
            return None
        try:
            colours = node_colours(path, self.layer_colours)
        except Exception:  # an unreadable export only costs the colours
            log.debug("could not read %s for node colours", path, exc_info=True)
            return None
        return PAINT_SCRIPT % json.dumps(colours) if colours else None

    @Slot()
    def _paint_nodes(self, *_args) -> None:
        script = self.paint_script() if self.web_view is not None else None
        if script:
            self.web_view.page().runJavaScript(script)

    def set_original(self, path: Path | None, error: str | None = None) -> None:
        """Show the loaded model's graph (forgets the pruned one and the sensitivity colours)."""
        self.paths = {"original": path, "pruned": None}
        self.server.path = None  # a new model is exported to the same file name: show it, not the old page
        self.layer_colours = {}
        self.pruned_radio.setEnabled(False)
        self.pruned_radio.setText("Pruned model")
        self.original_radio.setChecked(True)
        self.note_label.setText(error or "")
        self._on_show("original")

    def set_pruned(self, path: Path | None, label: str) -> None:
        """Offer a run's pruned model (shown when 'Pruned model' is chosen)."""
        self.paths["pruned"] = path
        self.pruned_radio.setEnabled(path is not None)
        self.pruned_radio.setText(f"Pruned model ({label})" if path else "Pruned model")
        if self.pruned_radio.isChecked():
            self._on_show("pruned")

    def shutdown(self) -> None:
        """Stop the Netron server and release the page before its profile (Qt's required order)."""
        self.server.stop()
        if self.web_view is not None:
            import shiboken6

            view, self.web_view = self.web_view, None
            shiboken6.delete(view)  # deletes its page now; the profile goes later with this widget

    @Slot()
    def _on_which_toggled(self, *_args) -> None:
        self._on_show("pruned" if self.pruned_radio.isChecked() else "original")

    def _on_show(self, which: str) -> None:
        path = self.paths.get(which)
        if self.web_view is None or path is None or (path == self.server.path and self.server.address):
            return  # nothing to show, or this graph is on screen already
        try:
            url = self.server.serve(path)
        except Exception as exc:  # a busy port or a netron problem must not break the window
            log.exception("netron failed")
            self.note_label.setText(f"Netron could not start: {exc}")
            return
        log.info("showing %s graph from %s at %s", which, path, url.toString())
        fresh_page(self.web_view)
        self.web_view.setUrl(url)

    # --------------------------------------------------------------------- coupled layers (the Teach tab)
    # Outlines Netron's node boxes (ids "node-name-<ONNX node name>", as PAINT_SCRIPT finds them) with a
    # class, so the sensitivity fill stays visible; an SVG <title> gives the reason on hover. Netron draws
    # asynchronously, so it retries for a few seconds, then centres the explained layer.
    HIGHLIGHT_SCRIPT = """
(function (marks) {
  var style = document.getElementById('prunelab-highlight');
  if (!style) {
    style = document.createElement('style');
    style.id = 'prunelab-highlight';
    style.textContent = '.prunelab-coupled .node-item path { stroke: #E69F00 !important; stroke-width: 5px !important; }'
      + ' .prunelab-selected .node-item path { stroke: #0072B2 !important; stroke-width: 6px !important; }';
    document.head.appendChild(style);
  }
  var tries = 0;
  var mark = function () {
    Array.from(document.querySelectorAll('.prunelab-coupled, .prunelab-selected')).forEach(function (n) {
      n.classList.remove('prunelab-coupled', 'prunelab-selected');
      Array.from(n.querySelectorAll('title.prunelab')).forEach(function (t) { t.remove(); });
    });
    var missing = 0, centre = null;
    Object.keys(marks).forEach(function (name) {
      var node = document.getElementById('node-name-' + name);
      if (!node) { missing++; return; }
      node.classList.add('prunelab-' + marks[name][0]);
      var title = document.createElementNS('http://www.w3.org/2000/svg', 'title');
      title.setAttribute('class', 'prunelab');
      title.textContent = marks[name][1];
      node.insertBefore(title, node.firstChild);
      if (marks[name][0] === 'selected') { centre = node; }
    });
    if (missing && ++tries < 40) { setTimeout(mark, 250); return; }
    if (centre && centre.scrollIntoView) { centre.scrollIntoView({block: 'center', inline: 'center'}); }
  };
  mark();
})(%s);
"""

    def highlight_layers(self, names: list[str], reasons: dict[str, str], selected: str | None = None) -> int:
        """Mark `selected` and the layers coupled to it in the layer table and on the graph; returns rows marked.

        `reasons` gives each coupled layer's tooltip (why it loses the same channels). Layers without a row
        (BatchNorm) are only listed in the Teach tab; an empty `names` and no `selected` clears the marks."""
        table = self.layer_table
        if not getattr(self, "_highlight_wired", False):  # a new model or a new page drops or repaints the marks
            self._highlight_wired = True
            self._highlight: dict[str, tuple[str, str]] = {}
            table.layers_set.connect(lambda: self.highlight_layers([], {}))
            if self.web_view is not None:
                self.web_view.loadFinished.connect(self._highlight_nodes)
        graph_note = "" if self.web_view is not None else f" ({self.disabled_reason.rstrip('.')}, so only this " \
                                                          "table shows the coupling.)"
        marks = {name: ("coupled", reasons.get(name, "coupled to the selected layer")) for name in names}
        if selected:
            marks[selected] = ("selected", f"{selected}: the explained layer; the marked layers lose the same "
                                           "channels")
        self._highlight = marks
        colours = {"coupled": QColor(230, 159, 0, 110), "selected": QColor(0, 114, 178, 110)}
        marked = 0
        table.blockSignals(True)
        for row, info in enumerate(table.layers):
            kind, reason = marks.get(info.name, (None, ""))
            brush = QBrush(colours[kind]) if kind else QBrush()
            for col in range(table.COL_GROUP):  # the group, pruned and drop cells keep their own colours
                item = table.item(row, col)
                if item is not None:
                    item.setBackground(brush)
                    if col == table.COL_NAME:
                        item.setToolTip(reason + graph_note if kind else "")
            marked += kind is not None
        table.blockSignals(False)
        coupled = len([n for n in names if n != selected])
        note = f"{selected}: {coupled} coupled layer(s) marked" if selected else ""
        current = self.note_label.text()
        # another note (an export error) stays in front of ours; ours replaces only itself
        base = getattr(self, "_highlight_base", "") if current == getattr(self, "_highlight_note", None) else current
        self._highlight_base, self._highlight_note = base, " · ".join(t for t in (base, note) if t)
        self.note_label.setText(self._highlight_note)
        self.note_label.setToolTip("Blue: the layer explained in the Teach tab; amber: the layers that lose the same "
                                   "channels (hover a row for the reason). BatchNorm layers have no row; the Teach "
                                   "tab's Dependency group lists them." + graph_note)
        self._highlight_nodes()
        return marked

    def highlighted(self) -> dict[str, str]:
        """Layer -> "selected" or "coupled", as marked by highlight_layers."""
        return {name: kind for name, (kind, _) in getattr(self, "_highlight", {}).items()}

    @Slot()
    def _highlight_nodes(self, *_args) -> None:
        if self.web_view is None or self.server.path is None:
            return
        try:
            by_module = node_modules(self.server.path)
        except Exception:  # an unreadable export only costs the marks on the graph
            log.debug("could not read %s for node marks", self.server.path, exc_info=True)
            return
        marks = {node: self._highlight[module] for node, module in by_module.items() if module in self._highlight}
        self.web_view.page().runJavaScript(self.HIGHLIGHT_SCRIPT % json.dumps(marks))
