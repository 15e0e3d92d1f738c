"""The Lesson panel (pytest-qt, offscreen): lessons are checked TOML files, every step's Show me drives the
window on a tiny demo model, answers stay hidden until revealed, a broken file is an error dialog; and the
Teach tab's coupled layers are marked in the layer table."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
os.environ["PRUNELAB_NO_WEBENGINE"] = "1"

import pytest  # noqa: E402

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

from engine.errors import UserError  # noqa: E402
import gui.lesson as lesson_mod  # noqa: E402
from gui.lesson import ACTIONS, _setting, builtin_lessons, load_lesson, parse_lesson  # noqa: E402
from gui.main_window import MainWindow  # noqa: E402
from gui.options import OptionField  # noqa: E402
from tests.gui_helpers import tiny_bundle  # noqa: E402

TIMEOUT_MS = 120_000
GOOD_STEP = '[[steps]]\ntitle = "One"\ntext = "Look."\n'



# ----------------------------------------------------------------------------- the file format


def test_builtin_lessons_are_valid_and_cover_the_lab():
    paths = builtin_lessons()
    assert paths, "resources/lessons/ holds no lesson"
    for path in paths:
        lesson = load_lesson(path)
        assert len(lesson.steps) >= 6, path
        assert all(step.show_me for step in lesson.steps), "every step has a Show me"
        assert all(step.answer for step in lesson.steps if step.question)
    first = load_lesson(paths[0])
    used = {key for step in first.steps for key in step.show_me}
    assert {"load", "tab", "layer", "method", "ratio", "explain", "experiment"} <= used
    # a class waits for the machine only where it must: the runs time no latency, the plan is short
    runs = [step.show_me["options"] for step in first.steps if "options" in step.show_me]
    assert runs and all(options.get("measure_speed") is False for options in runs)
    plan = next(step.show_me["experiment"] for step in first.steps if "experiment" in step.show_me)
    assert len(plan["methods"]) * len(plan["ratios"]) <= 6 and plan["eval_limit"] <= 500
    assert plan["measure_speed"] is False and plan["save_models"] is False


@pytest.mark.parametrize("text, words", [
    ("title = 'x'\n[[steps]\n", "not valid TOML"),
    ("title = 'x'\n", "no steps"),
    ("title = 'x'\ncolour = 1\n" + GOOD_STEP, "unknown key(s) colour"),
    ("title = 'x'\n" + GOOD_STEP + "show_me = { tab = 'Teach', fly = true }\n", "step 1.show_me: unknown action 'fly'"),
    ("title = 'x'\n" + GOOD_STEP + "show_me = { method = 'l7' }\n", "step 1.show_me.method must name a method"),
    ("title = 'x'\n" + GOOD_STEP + "show_me = { ratio = 1.5 }\n", "ratio must be a number from 0.05 to 0.95"),
    ("title = 'x'\n" + GOOD_STEP + "show_me = { tab = 'Pictures' }\n", "tab must be one of Network"),
    ("title = 'x'\n" + GOOD_STEP + "show_me = { options = { steps = 0 } }\n", "steps"),
    ("title = 'x'\n" + GOOD_STEP + "show_me = { options = { bn_recalibrate = 1 } }\n", "wrong type"),
    ("title = 'x'\n" + GOOD_STEP + "question = 'Why?'\n", "asks a question but gives no answer"),
    ("title = 'x'\n[[steps]]\ntitle = 'One'\n", "step 1.text must be non-empty text"),
])
def test_bad_lesson_text_says_what_and_where(text, words):
    with pytest.raises(UserError, match="^mine.toml[: ]") as raised:
        parse_lesson(text, "mine.toml")
    assert words in str(raised.value)
    assert "\n" not in str(raised.value).strip()


def test_a_good_lesson_uses_the_whole_vocabulary():
    text = "title = 'All'\n" + GOOD_STEP + (
        "show_me = { load = 'demo:resnet', method = 'l1', ratio = 0.3, options = { bn_recalibrate = true }, "
        "tab = 'Teach', view = 'maps', layer = 'stem.0', image = 2, explain = false, point = 'run', "
        "experiment = { methods = ['l1', 'random'], ratios = [0.3, 0.5], finetune_batches = 10 } }\n"
        "question = 'Why?'\nanswer = 'Because.'\n")
    step = parse_lesson(text).steps[0]
    assert set(step.show_me) == set(ACTIONS)
    assert step.show_me["ratio"] == 0.3 and step.answer == "Because."


# ----------------------------------------------------------------------------- the panel


def test_every_step_of_the_lesson_drives_the_window(qtbot, window, monkeypatch):
    loads = []
    real_load = MainWindow.load

    def load_tiny(src, data, **kwargs):  # the demo's layers at a few thousand parameters: the test stays fast
        loads.append((src, data))
        return real_load(window, None, data, bundle=tiny_bundle())

    monkeypatch.setattr(window, "load", load_tiny)
    monkeypatch.setattr(lesson_mod, "confirm_switch", lambda win, wanted: True)  # the tiny stand-in is not "demo:"
    dock = window.show_lessons()
    panel = dock.panel
    assert dock.isVisible() and panel.lesson is not None
    assert window.show_lessons() is dock  # Help ▸ Lessons again shows the same panel
    lesson = panel.lesson
    for index, step in enumerate(lesson.steps):
        panel.go_to(index)
        assert panel.step is step
        assert step.title in panel.step_label.text()
        if step.question:  # hidden until revealed
            assert not panel.answer_label.isVisibleTo(panel) and panel.reveal_button.isVisibleTo(panel)
        actions = step.show_me
        if "load" in actions:
            with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):
                assert panel.show_me()
            qtbot.waitUntil(lambda: "Loading" not in panel.status_label.text(), timeout=10_000)
            assert loads and loads[-1][0] == actions["load"]
        elif actions.get("explain"):
            with qtbot.waitSignal(window.ui.teach.coupled_layers, timeout=TIMEOUT_MS):
                assert panel.show_me(), panel.status_label.text()
            qtbot.waitUntil(lambda: not window.busy, timeout=TIMEOUT_MS)
            marked = window.ui.graph_view.highlighted()
            assert marked[actions["layer"]] == "selected"
            coupled = [c.layer for c in window.ui.teach.explanation.coupling]
            rows = {info.name for info in window.session.loaded.layers}
            assert {n for n, kind in marked.items() if kind == "coupled"} == set(coupled)
            assert any(n in rows for n in coupled)
        else:
            assert panel.show_me(), panel.status_label.text()
        check_state(window, actions)
        check_said(qtbot, panel, actions)
        if step.question:
            panel.reveal_button.click()
            assert panel.answer_label.isVisibleTo(panel) and step.answer.split()[0] in panel.answer_label.text()
    assert not panel.next_button.isEnabled()
    panel.back_button.click()
    assert panel.index == len(lesson.steps) - 2
    assert not panel.answer_label.isVisibleTo(panel)  # going back hides the answer again
    assert not window.busy and window.menus.run_action.isEnabled()


def check_state(window: MainWindow, actions: dict) -> None:
    """The window shows what the step's Show me asked for."""
    if "tab" in actions:
        assert window.ui.tabs.tabText(window.ui.tabs.currentIndex()).replace("&", "") == actions["tab"]
    if "method" in actions:
        assert window.ui.method_panel.current_method().name == actions["method"]
    if "ratio" in actions:
        assert window.ui.method_panel.config().pruning_ratio == pytest.approx(actions["ratio"])
    for name, value in actions.get("options", {}).items():
        assert getattr(window.ui.method_panel.config(), name) == value
    if "layer" in actions:
        assert window.ui.teach.layer_combo.currentText() == actions["layer"]
        rows = window.ui.graph_view.layer_table.selectedItems()
        assert rows and rows[0].text() == actions["layer"]
    if "experiment" in actions:
        plan = actions["experiment"]
        ticked = {name for name, box in window.ui.experiment.method_boxes.items() if box.isChecked()}
        assert ticked == set(plan["methods"])
        assert window.ui.experiment.ratios_edit.text() == ", ".join(f"{r:g}" for r in plan["ratios"])


def check_said(qtbot, panel, actions: dict) -> None:
    """The panel says what Show me set, and the button it frames is in sight (not scrolled away)."""
    said = panel.status_label.text()
    if "ratio" in actions:
        assert f"ratio {actions['ratio']:.0%}" in said
    for name in actions.get("options", {}):
        assert _setting(panel.ui.method_panel.fields[name]) in said
    plan = actions.get("experiment", {})
    assert all(method in said for method in plan.get("methods", ()))
    if "finetune_batches" in plan:
        assert f"fine-tuning batches {plan['finetune_batches']}" in said
    if "point" in actions:
        button = panel.pointed(actions["point"])
        assert button is not None
        qtbot.waitUntil(lambda: not button.visibleRegion().isEmpty(), timeout=2_000)


def test_show_me_asks_before_replacing_your_own_model(qtbot, window, monkeypatch, fashion):
    """A step that loads the demo asks first when the user's own model is loaded; No keeps it."""
    from PySide6.QtWidgets import QMessageBox

    window.session.raw_data_cache["fashion-mnist"] = fashion
    with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):
        assert window.load(None, "fashion-mnist", bundle=tiny_bundle())
    own = window.session.loaded
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kw: asked.append(args[2]) or QMessageBox.StandardButton.No)
    panel = window.show_lessons().panel
    panel.go_to(0)  # "Load the demo"
    assert not panel.show_me()
    assert asked and "demo model" in asked[0] and window.session.loaded is own and not window.busy
    assert "Your model stays loaded" in panel.status_label.text()


def test_opening_the_lessons_keeps_the_prune_panel_readable(qtbot, window):
    """The Lesson panel takes its width from the tabs in the middle, not from the Prune panel."""
    from PySide6.QtWidgets import QDockWidget

    window.resize(1400, 900)
    qtbot.wait(50)
    side = window.findChild(QDockWidget, "side_dock")
    before = side.width()
    window.show_lessons()
    qtbot.wait(50)
    assert side.width() >= before - 10  # (it fell to 158 px, cutting every label)
    assert window.centralWidget().minimumSizeHint().width() <= 760  # every tab fits beside both panels


def test_setting_reads_as_on_screen(qtbot):
    fields = {name: OptionField(name) for name in ("finetune_epochs", "bn_recalibrate", "round_to")}
    fields["finetune_epochs"].set_value(0.3)
    fields["round_to"].set_value(None)
    assert _setting(fields["finetune_epochs"]) == "fine-tuning 0.30 epochs"
    fields["bn_recalibrate"].set_value(False)
    assert _setting(fields["bn_recalibrate"]) == "re-estimate BatchNorm statistics off"
    assert _setting(fields["round_to"]) == "channel rounding off"


def test_a_broken_lesson_file_is_an_error_and_the_window_stays_usable(qtbot, window, tmp_path):
    panel = window.show_lessons().panel
    before = panel.lesson
    broken = tmp_path / "broken.toml"
    broken.write_text("title = 'Broken'\n[[steps]]\ntitle = 'One'\ntext = 'x'\nshow_me = { tab = 'Nowhere' }\n")
    assert not panel.open_lesson(broken)
    box = window.error_box
    assert box is not None and box.isVisible()
    assert "broken.toml" in box.text() and "Nowhere" in box.text()
    box.close()
    assert panel.lesson is before  # the lesson on screen stays
    assert not panel.open_lesson(tmp_path / "missing.toml")
    assert "cannot read the lesson" in window.error_box.text()
    window.error_box.close()
    good = tmp_path / "good.toml"
    good.write_text("title = 'Mine'\n" + GOOD_STEP + "show_me = { tab = 'Results' }\n")
    assert panel.open_lesson(good) and panel.lesson.title == "Mine"
    assert panel.show_me() and window.ui.tabs.tabText(window.ui.tabs.currentIndex()) == "Results"
    assert window.menus.open_action.isEnabled()
    assert "Lessons" in [a.text().replace("&", "") for a in window.menuBar().actions()[-1].menu().actions()]


def test_layer_steps_say_so_before_a_model_is_loaded(window):
    panel = window.show_lessons().panel
    step = next(i for i, s in enumerate(panel.lesson.steps) if "layer" in s.show_me and "load" not in s.show_me)
    panel.go_to(step)
    assert not panel.show_me()
    assert "Load a model first" in panel.status_label.text()


# ----------------------------------------------------------------------------- coupled layers on the table


def test_highlight_layers_marks_rows_with_reasons_and_a_new_model_clears_them(qtbot):
    from engine.layers import describe_layers
    from gui.graph_view import GraphView, LayerTable

    view = GraphView()
    qtbot.addWidget(view)
    bundle = tiny_bundle()
    layers = describe_layers(bundle.model, bundle.input_shape)
    view.layer_table.set_layers(layers, "fc")
    names = [info.name for info in layers]
    marked = view.highlight_layers(["layer2.0.shortcut.0", "layer2.0.bn2", "layer3.0.conv1"],
                                   {"layer2.0.shortcut.0": "residual add: same channels"}, selected="layer2.0.conv2")
    assert marked == 3  # the BatchNorm has no row
    table = view.layer_table
    row = names.index("layer2.0.shortcut.0")
    assert table.item(row, LayerTable.COL_NAME).background().style() != Qt.BrushStyle.NoBrush
    assert "residual add" in table.item(row, LayerTable.COL_NAME).toolTip()
    assert "graph view is turned off" in table.item(row, LayerTable.COL_NAME).toolTip()  # said where it is
    assert "coupled to the selected layer" in table.item(names.index("layer3.0.conv1"), 0).toolTip()
    plain = names.index("layer1.0.conv1")
    assert table.item(plain, 0).background().style() == Qt.BrushStyle.NoBrush and table.item(plain, 0).toolTip() == ""
    assert view.highlighted()["layer2.0.conv2"] == "selected"
    assert view.note_label.text() == "layer2.0.conv2: 3 coupled layer(s) marked"
    view.layer_table.set_layers(layers, "fc")  # another model: the marks go
    assert view.highlighted() == {} and view.note_label.text() == ""


def test_f1_opens_the_lessons(window):
    assert window.menus.lessons_action.shortcut().toString() == "F1"
    assert window.menus.about_action.shortcut().isEmpty()
    window.menus.lessons_action.trigger()
    assert window.lesson_dock.isVisible()


def test_every_steps_show_me_is_in_sight_at_720_px(qtbot, window):
    """Step 6's long text pushed Show me below the fold at 1280×720 with the lesson open."""
    window.resize(1280, 720)
    dock = window.show_lessons().panel
    qtbot.wait(50)
    for index in range(len(dock.lesson.steps)):
        dock.go_to(index)
        qtbot.wait(10)
        button = dock.show_button
        assert dock.intro_label.isVisible() == (index == 0), f"step {index + 1}: the introduction"
        assert button.isVisible() and not button.visibleRegion().isEmpty(), f"step {index + 1}"
        assert button.visibleRegion().boundingRect().height() == button.height(), f"step {index + 1} cut"
        bottom = button.mapTo(window, button.rect().bottomLeft()).y()
        assert bottom <= window.height(), f"step {index + 1}: Show me at {bottom} px"
    assert "(45 minutes)" not in dock.title_label.text()  # the title says it already


def test_step_6_table_shows_its_rows_beside_the_lesson_at_720_px(qtbot, window):
    """Step 6's answer is read in the Experiment tab's table: beside the lesson at 1280×720 the plots took three
    quarters of the results and the table showed one row until its splitter was dragged."""
    from gui.experiment_tab import TABLE_ROWS_SHOWN

    window.resize(1280, 720)
    panel = window.show_lessons().panel
    panel.go_to(5)
    panel.show_me()
    tab = window.ui.experiment
    qtbot.waitUntil(tab.isVisible, timeout=2000)
    qtbot.wait(50)
    table = tab.table
    rows = table.viewport().height() / table.verticalHeader().defaultSectionSize()
    assert rows >= TABLE_ROWS_SHOWN, f"the table shows {rows:.1f} rows in {table.viewport().height()} px"
    assert table.visibleRegion().boundingRect().height() == table.height(), "the table is cut"
    run = tab.run_button  # the plan is still started from the editor above
    assert not run.visibleRegion().isEmpty() and run.mapTo(window, run.rect().bottomLeft()).y() <= window.height()


def test_step_6_plan_is_the_short_one(qtbot, window):
    """The lesson's plan fits a 45-minute lab: 6 runs on 500 images, no latency timing, no model files."""
    panel = window.show_lessons().panel
    panel.go_to(5)
    panel.show_me()
    tab = window.ui.experiment
    ticked = [name for name, box in tab.method_boxes.items() if box.isChecked()]
    assert sorted(ticked) == ["l1", "l2", "random"] and tab.ratios_edit.text() == "0.3, 0.7"
    assert tab.eval_spin.value() == 500 and not tab.speed_check.isChecked() and not tab.save_check.isChecked()
    # BatchNorm on 10 batches, as the Prune panel (the command line's 40 were a third of the plan's time)
    assert tab.plan().recoveries[0].options["bn_batches"] == 10 and tab.bn_batches_spin.isEnabled()
    assert "no model files saved" in panel.status_label.text()
    assert "6 runs" in panel.text_label.text() and "STEP6" not in panel.text_label.text()
