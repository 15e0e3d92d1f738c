"""The Lesson panel: a lab for a course, one short step at a time, with a "Show me" that drives the window.

Lessons are data, read and checked by gui/lesson_file.py. "Show me" only uses the widgets' public methods;
it never starts a pruning run or a plan (the student presses Run), only the quick jobs that put something on
screen (loading the demo, Explain).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDockWidget, QFileDialog, QHBoxLayout, QLabel, QListWidget,
                               QMainWindow, QMessageBox, QPushButton, QScrollArea, QVBoxLayout, QWidget)

from engine.errors import UserError
from engine.methods import get_method
from engine.models import demo_card
from engine.sources import ModelSource
from gui.lesson_file import LESSON_DIR, PLAN_OPTIONS, VIEWS, Lesson, Step, builtin_lessons, load_lesson
from gui.lesson_file import ACTIONS, parse_lesson  # noqa: F401 (re-exported: callers import them from here)
from gui.options import OptionField
from gui.widgets import guard_wheel

if TYPE_CHECKING:
    from gui.commands import Commands
    from gui.layout import WindowLayout


def _label(text: str = "", markdown: bool = True) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.MarkdownText if markdown else Qt.TextFormat.PlainText)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
    return label


def _setting(field: OptionField) -> str:
    """A field as the student reads it on screen ("fine-tuning 0.30 epochs", "re-estimate ... on")."""
    widget, label = field.widget, field.opt.label
    if isinstance(widget, QCheckBox):
        return f"{label} {'on' if widget.isChecked() else 'off'}"
    text = widget.currentText() if isinstance(widget, QComboBox) else widget.text()
    unit = field.opt.suffix.strip()
    if unit and label.endswith(" " + unit) and text != "off":
        label = label[: -len(unit) - 1]  # "fine-tuning epochs 0.30 epochs" reads twice
    return f"{label} {text}"


def _scroll_into_sight(widget: QWidget) -> None:
    """Scroll every scroll area holding `widget` so that it shows: a framed button out of sight points at nothing."""
    parent = widget.parentWidget()
    while parent is not None:
        if isinstance(parent, QScrollArea):
            parent.ensureWidgetVisible(widget)
        parent = parent.parentWidget()


class LessonPanel(QWidget):
    """One lesson: the list of steps, the current step's text, Show me, the question and its hidden answer."""

    def __init__(self, commands: Commands, ui: WindowLayout) -> None:
        super().__init__()
        self.commands, self.session, self.ui = commands, commands.session, ui  # Show me drives the window's widgets
        self.lesson: Lesson | None = None
        self.index = 0
        self._pending: dict | None = None  # actions waiting for the demo to load
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(self._build_chooser())
        self.title_label = _label()
        self.intro_label = _label()
        layout.addWidget(self.title_label)
        layout.addWidget(self.intro_label)
        self.step_list = QListWidget()
        self.step_list.setToolTip("Every step of the lesson; click one to go there")
        self.step_list.setMaximumHeight(150)
        self.step_list.currentRowChanged.connect(self.go_to)
        layout.addWidget(self.step_list)
        layout.addWidget(self._build_step_view(), 1)
        # Show me and what it did stay in sight below the scrolling text (step 6's was below the fold at 720 px)
        layout.addWidget(self.show_button)
        layout.addWidget(self.status_label)
        layout.addLayout(self._build_nav())
        commands.job_stopped.connect(self._on_job_stopped)
        self._show_step()

    def _build_chooser(self) -> QHBoxLayout:
        """The shipped lessons, and Open… for a teacher's own file."""
        row = QHBoxLayout()
        self.lesson_combo = QComboBox()
        self.lesson_combo.setToolTip("The lessons shipped with PruneLab")
        for path in builtin_lessons():
            try:
                title = load_lesson(path).title
            except UserError:
                title = path.stem  # opening it says what is wrong
            self.lesson_combo.addItem(title, str(path))
        self.lesson_combo.activated.connect(lambda _i: self.open_lesson(self.lesson_combo.currentData()))
        row.addWidget(self.lesson_combo, 1)
        self.open_button = QPushButton("Open…")
        self.open_button.setToolTip("Open your own lesson file (TOML; see docs/teaching.md for the format)")
        self.open_button.clicked.connect(self._ask_file)
        row.addWidget(self.open_button)
        return row

    def _build_step_view(self) -> QScrollArea:
        """The current step: its text, the question and the hidden answer, scrolling as one (Show me stays
        below it, in sight)."""
        body = QWidget()
        column = QVBoxLayout(body)
        column.setContentsMargins(0, 0, 0, 0)
        self.step_label = _label()
        self.text_label = _label()
        column.addWidget(self.step_label)
        column.addWidget(self.text_label)
        self.show_button = QPushButton("Show me")
        self.show_button.setToolTip("Take the window to the place this step talks about (tab, layer, method, "
                                    "ratio); you still press Run yourself")
        self.show_button.clicked.connect(self.show_me)
        self.status_label = _label(markdown=False)
        self.status_label.setEnabled(False)  # greyed: what Show me did
        self.question_label = _label()
        column.addWidget(self.question_label)
        self.reveal_button = QPushButton("Reveal the answer")
        self.reveal_button.setToolTip("Try to answer first: run it, look at the plots, then check")
        self.reveal_button.clicked.connect(self.reveal_answer)
        column.addWidget(self.reveal_button)
        self.answer_label = _label()
        self.answer_label.setFrameShape(QLabel.Shape.StyledPanel)
        self.answer_label.setMargin(6)
        column.addWidget(self.answer_label)
        column.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(body)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        return scroll

    def _build_nav(self) -> QHBoxLayout:
        """Back and Next."""
        nav = QHBoxLayout()
        self.back_button = QPushButton("◀ Back")
        self.back_button.clicked.connect(lambda: self.go_to(self.index - 1))
        self.next_button = QPushButton("Next ▶")
        self.next_button.clicked.connect(lambda: self.go_to(self.index + 1))
        nav.addWidget(self.back_button)
        nav.addStretch(1)
        nav.addWidget(self.next_button)
        return nav

    # --------------------------------------------------------------------- lessons
    def open_lesson(self, path: str | Path) -> bool:
        """Open a lesson file; a bad one shows an error and keeps the current lesson."""
        try:
            lesson = load_lesson(path)
        except UserError as exc:
            self.commands.show_error("Lesson not opened", str(exc), info="The current lesson stays open; "
                                   "docs/teaching.md describes the lesson format.")
            return False
        self.set_lesson(lesson)
        return True

    def set_lesson(self, lesson: Lesson) -> None:
        """Show `lesson` from its first step."""
        self.lesson, self._pending = lesson, None
        minutes = f" ({lesson.minutes} minutes)" if lesson.minutes and f"{lesson.minutes} minutes" not in lesson.title \
            else ""  # not "Pruning a CNN in 45 minutes (45 minutes)"
        self.title_label.setText(f"### {lesson.title}{minutes}")
        self.intro_label.setText(lesson.intro)
        self.intro_label.setVisible(bool(lesson.intro))
        index = self.lesson_combo.findData(str(lesson.path)) if lesson.path else -1
        if index >= 0:
            self.lesson_combo.setCurrentIndex(index)
        self.step_list.blockSignals(True)
        self.step_list.clear()
        self.step_list.addItems([f"{i + 1}. {s.title}" for i, s in enumerate(lesson.steps)])
        self.step_list.blockSignals(False)
        self.index = -1
        self.go_to(0)

    @Slot()
    def _ask_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a lesson", str(LESSON_DIR), "Lessons (*.toml)")
        if path:
            self.open_lesson(path)

    # --------------------------------------------------------------------- steps
    @property
    def step(self) -> Step | None:
        """The step on screen."""
        return self.lesson.steps[self.index] if self.lesson and 0 <= self.index < len(self.lesson.steps) else None

    @Slot(int)
    def go_to(self, index: int) -> None:
        """Show step `index` (out-of-range indices are ignored), its answer hidden."""
        if self.lesson is None or not 0 <= index < len(self.lesson.steps) or index == self.index:
            return
        self.index = index
        self._pending = None
        self.step_list.blockSignals(True)
        self.step_list.setCurrentRow(index)
        self.step_list.blockSignals(False)
        self._show_step()

    def _show_step(self) -> None:
        step = self.step
        self.back_button.setEnabled(step is not None and self.index > 0)
        self.next_button.setEnabled(step is not None and self.index < len(self.lesson.steps) - 1)
        self.show_button.setEnabled(bool(step and step.show_me))
        self.status_label.setText("")
        # the introduction on the first step only: at 720 px its lines came out of every later step's text
        self.intro_label.setVisible(bool(self.lesson and self.lesson.intro) and self.index <= 0)
        if step is None:
            self.step_label.setText("")
            self.text_label.setText("Pick a lesson above.")
        else:
            self.step_label.setText(f"**Step {self.index + 1} of {len(self.lesson.steps)}: {step.title}**")
            self.text_label.setText(step.text)
        question = step.question if step else ""
        self.question_label.setText(f"**Question:** {question}" if question else "")
        self.question_label.setVisible(bool(question))
        self.reveal_button.setVisible(bool(question))
        self.reveal_button.setEnabled(True)
        self.answer_label.setText(f"**Answer:** {step.answer}" if step and step.answer else "")
        self.answer_label.setVisible(False)

    @Slot()
    def reveal_answer(self) -> None:
        """Show the current step's answer."""
        if self.step and self.step.answer:
            self.answer_label.setVisible(True)
            self.reveal_button.setEnabled(False)

    # --------------------------------------------------------------------- show me
    @Slot()
    def show_me(self) -> bool:
        """Drive the window to what the current step talks about; False when something could not be done."""
        step = self.step
        if step is None:
            return False
        actions = dict(step.show_me)
        source = actions.pop("load", None)
        loaded = self.session.loaded
        if source and (loaded is None or loaded.bundle.source != source):
            if self.commands.busy():
                self.status_label.setText("Wait for the running job to finish (or cancel it) first.")
                return False
            if not confirm_switch(self, source):
                self.status_label.setText("Your model stays loaded; this step is written for the demo, so "
                                          "some of it may not apply.")
                return False
            data = demo_card(ModelSource.parse(source).name).get("dataset_spec", "fashion-mnist")
            if not self.commands.load(source, data):
                self.status_label.setText("The window is busy: try again when the job ends.")
                return False
            self._pending = actions
            self.status_label.setText(f"Loading {source}…")
            return True
        return self._apply(actions)

    @Slot(str)
    def _on_job_stopped(self, name: str) -> None:
        if self._pending is not None and name == "load":
            actions, self._pending = self._pending, None
            if self.session.loaded is not None:
                self._apply(actions)

    def _apply(self, actions: dict) -> bool:
        """Apply the non-loading actions in the vocabulary's order; report what could not be done."""
        ui, problems, done = self.ui, [], []
        panel, teach = ui.method_panel, ui.teach
        if "method" in actions:
            panel.select_method(actions["method"])
            done.append(get_method(actions["method"]).title)
        if "ratio" in actions:
            panel.mode_combo.setCurrentIndex(panel.mode_combo.findData("ratio"))
            panel.ratio_slider.setValue(round(actions["ratio"] * 100))
            done.append(f"ratio {actions['ratio']:.0%}")
        for name, value in actions.get("options", {}).items():
            panel.fields[name].set_value(value)
            done.append(_setting(panel.fields[name]))
        if "tab" in actions:
            titles = [ui.tabs.tabText(i).replace("&", "") for i in range(ui.tabs.count())]
            if actions["tab"] in titles:
                ui.tabs.setCurrentIndex(titles.index(actions["tab"]))
            else:
                problems.append(f"This window has no {actions['tab']} tab.")
        if "view" in actions:
            views = (teach.why_view, teach.criteria_view, teach.group_view, teach.maps_view)
            teach.views.setCurrentWidget(views[VIEWS.index(actions["view"])])
        if "layer" in actions:
            problems += self._select_layer(actions["layer"])
        if "image" in actions:
            teach.maps_view.index_spin.setValue(actions["image"])
        if "experiment" in actions:
            done.append(self._set_plan(actions["experiment"]))
        if actions.get("explain") and not problems:
            if not teach.explain():
                problems.append("Explain could not start (is a job running, or no model loaded?)")
        if "point" in actions:
            self._point_at(actions["point"])
        self.status_label.setText(" ".join(problems) or ("Done: " + ", ".join(done) if done else "Done."))
        return not problems

    def _select_layer(self, name: str) -> list[str]:
        loaded = self.session.loaded
        if loaded is None:
            return [f"Load a model first (step 1): {name} is one of the demo's layers."]
        if name not in [info.name for info in loaded.layers]:
            return [f"The loaded model has no layer {name}; this step is written for the demo (step 1)."]
        table = self.ui.graph_view.layer_table
        table.select_layer(name)
        table.layer_selected.emit(name)  # the Weights tab and the Teach tab follow, as after a click
        return []

    def _set_plan(self, plan: dict) -> str:
        """Fill the Experiment tab; what was set, in words."""
        tab, words = self.ui.experiment, []
        if "methods" in plan:
            tab.set_methods(plan["methods"])
            words.append(", ".join(plan["methods"]))
        if "ratios" in plan:
            tab.ratios_edit.setText(", ".join(f"{r:g}" for r in plan["ratios"]))
            words.append("at " + ", ".join(f"{r:.0%}" for r in plan["ratios"]))
        for name in PLAN_OPTIONS:
            if name in plan:
                tab.fields[name].set_value(plan[name])
                words.append(_setting(tab.fields[name]))
        if "save_models" in plan:
            tab.save_check.setChecked(plan["save_models"])
            words.append("model files saved" if plan["save_models"] else "no model files saved")
        return "plan: " + " ".join(words[:2]) + ("; " + ", ".join(words[2:]) if words[2:] else "")

    def pointed(self, what: str) -> QWidget | None:
        """The button a `point` action names."""
        ui = self.ui
        return {"run": ui.run_button, "explain": ui.teach.explain_button,
                "show_image": ui.teach.maps_view.show_button, "run_plan": ui.experiment.run_button,
                "scan": ui.graph_view.scan_button}[what]

    def _point_at(self, what: str) -> None:
        """Scroll the button the student presses next into sight and frame it for a moment."""
        widget = self.pointed(what)
        if widget is None:
            return
        _scroll_into_sight(widget)
        # a tab Show me just opened lays itself out later, which can move the button out of sight again
        QTimer.singleShot(50, widget, lambda: _scroll_into_sight(widget))
        old = widget.styleSheet()
        widget.setStyleSheet(old + "; border: 3px solid #E69F00; border-radius: 4px;")
        widget.setFocus()
        QTimer.singleShot(2500, widget, lambda: widget.setStyleSheet(old))  # dropped if the widget goes first


def confirm_switch(panel: LessonPanel, wanted: str) -> bool:
    """Before Show me replaces a model the user opened, ask (a demo model is replaced without asking)."""
    loaded = panel.session.loaded
    if loaded is None or ModelSource.parse(loaded.bundle.source or "").is_demo:
        return True
    name = loaded.summary.get("architecture", "your model")
    answer = QMessageBox.question(
        panel.commands.parent, "Load the demo model?",
        f"This step uses the demo model ({wanted}). Load it in place of {name}?\n\nThe runs of {name} are "
        "kept: they come back when you open it again.")
    return answer == QMessageBox.StandardButton.Yes


class LessonDock(QDockWidget):
    """The Lesson side panel (Help ▸ Lessons)."""

    def __init__(self, window: QMainWindow, commands: Commands, ui: WindowLayout) -> None:
        super().__init__("Lesson", window)
        self.setObjectName("lesson_dock")
        self.panel = LessonPanel(commands, ui)
        self.setWidget(self.panel)
        self.panel.setMinimumWidth(320)
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self)
        lessons = builtin_lessons()
        if lessons:
            self.panel.open_lesson(lessons[0])


def show_lessons(window: QMainWindow, commands: Commands, ui: WindowLayout) -> LessonDock:
    """Show the Lesson panel of `window`, creating it the first time."""
    dock = window.findChild(LessonDock, "lesson_dock")
    side = window.findChild(QDockWidget, "side_dock")
    side_width = side.width() if side is not None and side.isVisible() else 0
    if dock is None:
        dock = LessonDock(window, commands, ui)
        guard_wheel(dock)
    dock.show()
    dock.raise_()
    if side_width:  # the panel's width comes out of the tabs in the middle, not out of the Prune panel
        window.resizeDocks([side, dock], [side_width, dock.panel.minimumWidth()], Qt.Orientation.Horizontal)
    return dock
