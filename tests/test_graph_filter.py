"""The layer table's filter (name and type) on a ResNet-50-sized table; choices of hidden rows survive."""
from __future__ import annotations

import os
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["PRUNELAB_NO_WEBENGINE"] = "1"

import pytest  # noqa: E402

pytest.importorskip("pytestqt")

from engine.layers import LayerInfo  # noqa: E402
from gui.graph_view import GraphView, LayerTable  # noqa: E402


def resnet50_like() -> list[LayerInfo]:
    """161 rows named and typed as torchvision's ResNet-50 (convolutions, BatchNorms of downsamples, fc)."""
    rows = [LayerInfo("conv1", "Conv2d", (64, 112, 112), 9408, 118_013_952, 3, 64, 0)]
    group = 1
    for stage, blocks in enumerate((3, 4, 6, 3), start=1):
        for b in range(blocks):
            for c in (1, 2, 3):
                rows.append(LayerInfo(f"layer{stage}.{b}.conv{c}", "Conv2d", (64, 56, 56), 4096, 1000, 64, 64, group))
                group += 1
            if b == 0:
                rows.append(LayerInfo(f"layer{stage}.{b}.downsample.0", "Conv2d", (256, 56, 56), 16384, 1000, 64,
                                      256, group))
                rows.append(LayerInfo(f"layer{stage}.{b}.downsample.1", "BatchNorm2d", (256, 56, 56), 512, 0, 256,
                                      256, group))
    rows.append(LayerInfo("fc", "Linear", (1000,), 2_049_000, 2_048_000, 2048, 1000, -1))
    while len(rows) < 161:  # pad to the size with more BatchNorms
        rows.insert(1, LayerInfo(f"bn{len(rows)}", "BatchNorm2d", (64, 112, 112), 128, 0, 64, 64, 0))
    return rows


@pytest.fixture
def view(qtbot) -> GraphView:
    view = GraphView()
    qtbot.addWidget(view)
    view.layer_table.set_layers(resnet50_like(), "fc")
    yield view
    view.shutdown()


def visible(table: LayerTable) -> list[str]:
    return [info.name for row, info in enumerate(table.layers) if not table.isRowHidden(row)]


def test_filter_by_name_and_type(view):
    table = view.layer_table
    assert len(visible(table)) == table.rowCount() == 161
    assert [view.type_combo.itemText(i) for i in range(view.type_combo.count())] == \
        [LayerTable.ALL_TYPES, "BatchNorm2d", "Conv2d", "Linear"]
    view.filter_edit.setText("DOWNSAMPLE")
    assert visible(table) == [f"layer{s}.0.downsample.{i}" for s in (1, 2, 3, 4) for i in (0, 1)]
    assert view.filter_count.text() == "8 of 161"
    view.type_combo.setCurrentText("Conv2d")
    assert visible(table) == [f"layer{s}.0.downsample.0" for s in (1, 2, 3, 4)]
    view.filter_edit.setText("layer3.")
    assert len(visible(table)) == 6 * 3 + 1 and all(n.startswith("layer3.") for n in visible(table))
    view.filter_edit.clear()
    view.type_combo.setCurrentText(LayerTable.ALL_TYPES)
    assert len(visible(table)) == 161 and view.filter_count.text() == ""


def test_hidden_rows_keep_their_choices_and_a_new_model_keeps_the_filter(view):
    table = view.layer_table
    table.set_ratios({"layer2.0.conv1": 0.5})
    row = next(r for r, info in enumerate(table.layers) if info.name == "layer1.0.conv2")
    table.item(row, table.COL_INCLUDE).setCheckState(table.item(row, table.COL_INCLUDE).checkState().Unchecked)
    view.filter_edit.setText("fc")
    assert visible(table) == ["fc"]
    assert table.choices() == (("layer1.0.conv2",), {"layer2.0.conv1": 0.5})
    view.type_combo.setCurrentText("Linear")
    table.set_layers(resnet50_like()[:40], None)  # another model: no Linear any more, the text filter stays
    assert view.type_combo.currentText() == LayerTable.ALL_TYPES
    assert visible(table) == [] and view.filter_count.text() == "0 of 40"


def test_filling_and_filtering_161_rows_is_quick(view):
    table = view.layer_table
    # CPU time of this (the GUI) thread, not wall time: another process on the machine does not count
    start = time.thread_time()
    table.set_layers(resnet50_like(), "fc")
    filled = time.thread_time() - start
    start = time.thread_time()
    view.filter_edit.setText("conv")
    filtered = time.thread_time() - start
    assert filtered < 0.5 and filled < 5.0, (filled, filtered)
