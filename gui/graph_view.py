"""The network graph (Netron in a QWebEngineView) beside the layer table (gui/layer_table.py).

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

from PySide6.QtCore import QCoreApplication, Qt, QUrl, Slot
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QButtonGroup, QHBoxLayout, QLabel, QPushButton, QRadioButton, QSplitter, QVBoxLayout,
                               QWidget)

from gui import theme
from gui.layer_table import FilteredLayerTable, LayerTable  # noqa: F401 (LayerTable: re-exported for callers)

log = logging.getLogger(__name__)
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")
# Netron needs this much to draw a node and its labels; beside the Lesson panel at 1280×720 the tab area is about
# 585 px, where the layer table (three quarters of it) had left the graph 140 px. The table scrolls sideways.
GRAPH_MIN_WIDTH = 300

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

# Netron's menu button (≡) is fixed over the top-left corner of the scrolling graph, so nodes scrolled or
# centred there were drawn under it; the graph now starts below a strip of the button's height.
LAYOUT_SCRIPT = """
(function () {
  var style = document.createElement('style');
  style.id = 'prunelab-layout';
  style.textContent = '.target { box-sizing: border-box; border-top: 32px solid transparent; }';
  document.head.appendChild(style);
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
    """ONNX node name -> module path for the convolution, linear and BatchNorm nodes (read once per file)."""
    import onnx

    key = (str(onnx_path), Path(onnx_path).stat().st_mtime)
    if key not in _NODE_MODULES:
        model = onnx.load(str(onnx_path), load_external_data=False)
        _NODE_MODULES[key] = {node.name: module_of_node(node.name) for node in model.graph.node
                              if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization")
                              and node.name}
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
    layout = QWebEngineScript()
    layout.setName("prunelab-netron-layout")
    layout.setInjectionPoint(QWebEngineScript.InjectionPoint.DocumentReady)
    layout.setWorldId(QWebEngineScript.ScriptWorldId.MainWorld)
    layout.setSourceCode(LAYOUT_SCRIPT)
    profile.scripts().insert(layout)
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
        layout.addLayout(self._build_bar())
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        layout.addWidget(self.splitter, 1)
        graph = self._build_graph()
        graph.setMinimumWidth(GRAPH_MIN_WIDTH)
        self.splitter.addWidget(graph)
        self.layer_panel = FilteredLayerTable()
        self.layer_table = self.layer_panel.table
        # the filter's widgets, where callers have always found them
        self.filter_edit, self.type_combo = self.layer_panel.filter_edit, self.layer_panel.type_combo
        self.filter_count = self.layer_panel.filter_count
        self.splitter.addWidget(self.layer_panel)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setCollapsible(0, False)  # dragging the table away gives the graph the whole width
        self.splitter.setSizes([320, 680])  # the web view has no size hint; give it room from the start
        from gui.time_chart import TimeChart

        self.time_chart = TimeChart()  # where the time goes, measured; it fills the layer table's Time column
        self.time_chart.profiled.connect(self.layer_table.show_times)
        layout.addWidget(self.time_chart)

    def _build_bar(self) -> QHBoxLayout:
        """Original/pruned choice, the note, and the sensitivity buttons above the graph."""
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
        return bar

    def _build_graph(self) -> QWidget:
        """The Netron web view, or a label saying why there is none."""
        self.disabled_reason = webengine_disabled_reason()
        self.web_view: QWidget | None = None
        if self.disabled_reason is None:
            try:
                self.web_view = _make_web_view(self)
                self.web_view.setToolTip("")  # Netron has its own hints; a tooltip would cover the graph
            except Exception as exc:  # QtWebEngine present but unable to start (no GPU/GL, sandbox...)
                log.exception("QtWebEngine could not start")
                self.disabled_reason = f"The graph view could not start QtWebEngine: {exc}"
        if self.web_view is not None:
            self.web_view.loadFinished.connect(self._paint_nodes)
            return self.web_view
        self.placeholder = QLabel(self.disabled_reason + "\nThe layer table on the right still lists every "
                                  "layer, its dependency group and how much of it was pruned.")
        self.placeholder.setWordWrap(True)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        return self.placeholder

    def fit_table(self) -> None:
        """Give the layer table the width it needs and the graph the rest (at least a quarter, and at least
        GRAPH_MIN_WIDTH: a narrower table scrolls sideways, its names first)."""
        total = sum(self.splitter.sizes()) or self.width()
        table = max(0, min(self.layer_table.needed_width(), int(total * 3 / 4), total - GRAPH_MIN_WIDTH))
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
