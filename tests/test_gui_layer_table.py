"""The Network tab's layer table reads without guessing: input and output channels side by side, a Weights
removed share that follows from them (a tester saw 75 % and 94 % for two 64 → 16 layers, and 70 % on an
unticked fc), and a Ratio column wide enough for 'default'."""
from __future__ import annotations

from tests.gui_helpers import qt_environment

qt_environment()  # before the first Qt import

import pytest  # noqa: E402

pytest.importorskip("pytestqt")

from engine.layers import LayerInfo, LayerStat  # noqa: E402

LAYERS = [LayerInfo("conv1", "Conv2d", (64, 60, 60), 64 * 3 * 49, 0, 3, 64, 0),
          LayerInfo("layer1.0.conv1", "Conv2d", (64, 30, 30), 64 * 64 * 9, 0, 64, 64, 1),
          LayerInfo("dw", "Conv2d", (32, 30, 30), 32 * 9, 0, 32, 32, 2),  # depthwise: one input per filter
          LayerInfo("fc", "Linear", (3,), 3 * 512, 0, 512, 3, -1)]
STATS = (LayerStat("conv1", "Conv2d", 64, 16, 64 * 3 * 49, 16 * 3 * 49, 16 * 3 * 49),
         LayerStat("layer1.0.conv1", "Conv2d", 64, 16, 64 * 64 * 9, 16 * 16 * 9, 16 * 16 * 9),
         LayerStat("dw", "Conv2d", 32, 8, 32 * 9, 8 * 9, 8 * 9),
         LayerStat("fc", "Linear", 3, 3, 3 * 512, 3 * 152, 3 * 152))


@pytest.fixture
def table(qtbot):
    from gui.layer_table import LayerTable

    widget = LayerTable()
    qtbot.addWidget(widget)
    widget.resize(1100, 300)
    widget.set_layers(LAYERS, "fc")
    widget.show()
    return widget


def cell(table, name: str, col: int):
    return table.item([i.name for i in LAYERS].index(name), col)


def test_weights_removed_follow_from_the_channels_beside_them(table):
    table.show_stats(STATS)
    assert table.horizontalHeaderItem(table.COL_PRUNED).text() == "Weights removed"
    assert "input channels the layer before it lost" in table.horizontalHeaderItem(table.COL_PRUNED).toolTip()
    assert cell(table, "conv1", table.COL_INPUTS).text() == "3"
    assert cell(table, "conv1", table.COL_CHANNELS).text() == "64 → 16"
    assert cell(table, "conv1", table.COL_PRUNED).text() == "75%"
    assert cell(table, "layer1.0.conv1", table.COL_INPUTS).text() == "64 → 16"  # why it is 94 %, not 75 %
    assert cell(table, "layer1.0.conv1", table.COL_PRUNED).text() == "94%"
    assert cell(table, "dw", table.COL_INPUTS).text() == "32 → 8"
    fc_tip = cell(table, "fc", table.COL_PRUNED).toolTip()
    assert cell(table, "fc", table.COL_INPUTS).text() == "512 → 152"
    assert cell(table, "fc", table.COL_CHANNELS).text() == "3"
    assert "inputs: 512 → 152" in fc_tip and "output channels are all kept" in fc_tip
    table.show_stats(None)  # the original model again
    assert cell(table, "fc", table.COL_INPUTS).text() == "512" and cell(table, "fc", table.COL_PRUNED).text() == ""


def test_ratio_column_shows_default_whole(table, qtbot):
    spin = table.cellWidget(0, table.COL_RATIO)  # makes the spin boxes
    assert spin.text() == "default"
    assert table.columnWidth(table.COL_RATIO) >= spin.sizeHint().width()
    table.set_layers(LAYERS, "fc")  # a new model keeps the width
    assert table.columnWidth(table.COL_RATIO) >= table.cellWidget(0, table.COL_RATIO).sizeHint().width()
