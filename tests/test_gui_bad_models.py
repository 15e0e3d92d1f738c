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
    assert window.session.loaded is None
    assert window.error_box is not None
    shown = _plain(window.error_box.text() + " " + window.error_box.informativeText())
    assert EDITED[name] in shown, shown
    assert "bug" not in shown.lower() and "Traceback" not in window.error_box.detailedText().split("\n")[0]
    assert not window.busy and window.menus.open_action.isEnabled()


def _high_water_since_reset() -> tuple[int, int]:
    """Reset this process's peak-RSS mark; (resident now, a reader of the peak since) in bytes."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")

    def field(name: str) -> int:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(name + ":"))

    return field("VmRSS"), lambda: field("VmHWM")


@pytest.mark.parametrize("how", ["load", "open-model-dialog"])
def test_a_record_past_the_memory_limit_is_refused_before_it_is_read(window, qtbot, models, how):  # noqa: F811
    """Under Settings ▸ Memory limit, a file whose archive claims a 2 GiB record is refused from its directory,
    before torch allocates it: the window's memory does not grow by what the file asks for (before: 3.85 GB
    through Open model), and the error names the file."""
    from engine.budget import rss_bytes

    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux's peak-RSS reset")
    path = models / "big_record.pt"
    window.settings.set_value("memory/limit", f"{(rss_bytes() + (1 << 30)) >> 20}M")  # 1 GiB more than now
    base, peak = _high_water_since_reset()
    with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):
        if how == "load":
            assert window.load(str(path), "fashion-mnist")
        else:
            assert window.show_open_model(str(path)) is not None
    grown = peak() - base
    if how == "load":
        assert window.session.loaded is None and window.error_box is not None
        shown = _plain(window.error_box.text() + " " + window.error_box.informativeText())
    else:
        shown = _plain(window.open_model_dialog.found_label.text())
        window.open_model_dialog.reject()
    assert "big_record.pt" in shown and "unpacks to 2.0 GiB" in shown, shown  # the check before reading
    assert grown < 512 << 20, f"grew by {grown >> 20} MiB"
    assert not window.busy and window.menus.open_action.isEnabled()
