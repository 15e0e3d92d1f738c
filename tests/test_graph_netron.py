"""The Netron graph as it is drawn (issue 24, item 10): Netron's menu button (≡) is fixed over the top-left
corner of the page, and nodes scrolled or centred there were drawn under it.

QtWebEngine must be set up before the QApplication exists, which pytest-qt's shared one already does without
it, so the page is drawn in a child process (offscreen; Chromium renders without a display)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
import torch
from gui.graph_view import prepare_webengine
prepare_webengine()
from PySide6.QtCore import QEventLoop
from PySide6.QtWidgets import QApplication
app = QApplication([])
from engine.models import DemoResNet
from gui.graph_view import GraphView

folder = Path(tempfile.mkdtemp(dir=sys.argv[1]))
torch.onnx.export(DemoResNet(1, 10, widths=(8, 16, 32)).eval(), torch.zeros(1, 1, 28, 28), str(folder / "m.onnx"),
                  dynamo=False)
view = GraphView()
view.resize(900, 600)
view.show()
view.set_original(folder / "m.onnx")
# each node in turn scrolled to the top-left corner of the graph (as far as the graph scrolls), where the button
# is: which nodes it covers
PROBE = '''(function () {
  var button = document.getElementById('menu-button'), target = document.getElementById('target');
  var nodes = Array.from(document.querySelectorAll('[id^="node-name-"]'));
  if (document.body.className.indexOf('default') < 0 || !nodes.length) { return null; }
  var b = button.getBoundingClientRect(), under = [];
  nodes.forEach(function (node) {
    var r = node.getBoundingClientRect(), t = target.getBoundingClientRect();
    target.scrollLeft += r.left - t.left - target.clientLeft;  // the graph scrolled as the user scrolls it
    target.scrollTop += r.top - t.top - target.clientTop;
    r = node.getBoundingClientRect();
    // (half a pixel of a node's outline may touch the strip's edge)
    if (r.left < b.right - 1 && r.right > b.left + 1 && r.top < b.bottom - 1 && r.bottom > b.top + 1) { under.push(node.id); }
  });
  return JSON.stringify({nodes: nodes.length, under: under, button: [b.left, b.top, b.right, b.bottom],
                         shown: getComputedStyle(button).display !== 'none'});
})()'''
answer = {}
deadline = time.monotonic() + 90
while not answer and time.monotonic() < deadline:
    view.web_view.page().runJavaScript(PROBE, 0, lambda r: answer.update(json.loads(r)) if r else None)
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
view.shutdown()
print("PROBE", json.dumps(answer))
"""


@pytest.mark.heavy_memory(gib=1.2)
def test_no_graph_node_is_drawn_under_netrons_menu_button(tmp_path):
    pytest.importorskip("PySide6.QtWebEngineWidgets")
    env = {k: v for k, v in os.environ.items() if k != "PRUNELAB_NO_WEBENGINE"}
    env.update(QT_QPA_PLATFORM="offscreen", QTWEBENGINE_DISABLE_SANDBOX="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)
    lines = [line for line in done.stdout.splitlines() if line.startswith("PROBE ")]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-2000:]
    found = json.loads(lines[0][6:])
    assert found, f"Netron drew no graph in 90 s: {done.stderr[-2000:]}"
    assert found["nodes"] > 10 and found["shown"] and found["button"][2] > 0
    assert not found["under"], f"nodes drawn under the menu button at {found['button']}: {found['under'][:5]}"
