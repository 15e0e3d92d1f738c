"""Edited PruneLab model files in the window (pytest-qt, offscreen): the Open model dialog and a direct load
name the damaged field in one plain message, and the window stays usable (issue 23)."""
from __future__ import annotations

import os
import re

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
os.environ["PRUNELAB_NO_WEBENGINE"] = "1"

import pytest  # noqa: E402

pytest.importorskip("pytestqt")

from test_bad_inputs_2 import write_models  # noqa: E402
from test_gui_open_model import TIMEOUT_MS, window  # noqa: E402,F401  (the fixture)

EDITED = {
    "no_arch.pt": "'arch' is missing",
    "arch_int.pt": "'arch' is a int",
    "kwargs_unknown.pt": "could not be built with",
    "negative_classes.pt": "'num_classes' is -3",
    "state_list.pt": "'state' is a list",
    "pruned_no_attrs.pt": "lacks the pruned layers' sizes",
    "pruned_absent.pt": "names layers the architecture does not have",
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edited")
    write_models(folder)
    return folder


def _plain(text: str) -> str:
    return re.sub(r"<[^>]+>", "", text)


@pytest.mark.parametrize("name", sorted(EDITED))
def test_an_edited_model_file_is_named_plainly_and_the_window_stays_usable(window, qtbot, models, name):  # noqa: F811
    with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):
        assert window.load(str(models / name), "fashion-mnist")
    assert window.loaded is None
    assert window.error_box is not None
    shown = _plain(window.error_box.text() + " " + window.error_box.informativeText())
    assert EDITED[name] in shown, shown
    assert "bug" not in shown.lower() and "Traceback" not in window.error_box.detailedText().split("\n")[0]
    assert not window.busy and window.open_action.isEnabled()
