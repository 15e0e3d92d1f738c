"""The main window's actions, menus and toolbar, and the file dialogs behind the File menu.

`WindowMenus` builds and owns the actions; the window enables and disables them as the session changes.
The File menu's dialogs work through the session and the window's commands, not the window.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDialog, QFileDialog, QMainWindow, QMenu, QStyle, QWidget

from engine.errors import UserError
from engine.methods import get_method
from engine.models import DEMO_ARCHS, DEMO_TITLES
from engine.outputs import check_output_dir
from gui import dialogs
from gui.jobs import ExportJob
from gui.open_model import MODEL_FILTER
from gui.pickers import last_folder, pick_file, remember_folder
from gui.session_report import save_session_report
from gui.settings import Settings

if TYPE_CHECKING:
    from gui.commands import Commands
    from gui.layout import WindowLayout


def _action(parent: QWidget, text: str, tip: str, shortcut: Any = None, slot: Callable | None = None) -> QAction:
    action = QAction(text, parent)
    action.setToolTip(tip + (f" ({QKeySequence(shortcut).toString()})" if shortcut else ""))
    action.setStatusTip(tip)
    if shortcut:
        action.setShortcut(QKeySequence(shortcut))
    if slot:
        action.triggered.connect(slot)
    return action


class WindowMenus:
    """The window's actions (open, run, cancel, exports, quit, about), with their tips, shortcuts and icons,
    and, once the widgets exist (`build`), the File, Prune, View, Settings and Help menus and the toolbar."""

    def __init__(self, window: QMainWindow, commands: Commands) -> None:
        self.window, self.commands, self.session = window, commands, commands.session
        self.ui: WindowLayout | None = None  # the widgets the File menu's dialogs read (set by build)
        w = window
        self.open_action = _action(w, "&Open model…", "Open a model file: a state_dict, a checkpoint, a .safetensors "
                                   "file, a PruneLab model…", QKeySequence.StandardKey.Open, self.open_model)
        self.new_model_action = _action(w, "&New untrained architecture…", "A torchvision or timm architecture with "
                                        "random weights, adapted to the dataset: for teaching and trying methods",
                                        "Ctrl+N", lambda: commands.open_model_dialog(untrained=True))
        self.run_action = _action(w, "&Run", "Prune a copy of the model with the selected method", "Ctrl+R",
                                  lambda: commands.start_run())
        self.run_action.setShortcuts([QKeySequence("Ctrl+R"), QKeySequence("F5")])
        self.cancel_action = _action(w, "&Cancel", "Stop the running job (the loaded model is never changed)", "Esc",
                                     commands.cancel_job)
        self.export_model_action = _action(w, "Export pruned &model…", "Save the selected run's pruned model to a "
                                           "new folder: PyTorch and ONNX files that load without PruneLab, the "
                                           "weights, model.json and a model card", "Ctrl+E", self.export_model)
        self.export_onnx_action = _action(w, "Export &ONNX…", "Save the selected run's model (or the original) as "
                                          "ONNX", "Ctrl+Shift+E", self.export_onnx)
        self.export_plots_action = _action(w, "Export &plots…", "Save the plots of the current tab as PNG or SVG",
                                           "Ctrl+Shift+P", self.export_plots)
        self.export_csv_action = _action(w, "Export results as &CSV…", "Save the results table as CSV",
                                         "Ctrl+Shift+C", self.export_csv)
        self.report_action = _action(w, "Save experiment &report…", "Write the Experiment tab's comparison as a "
                                     "self-contained HTML report plus CSV", "Ctrl+Shift+R", self.save_report)
        self.session_report_action = _action(w, "Save &session report…", "Every finished run of this session and "
                                             "the teach views you opened, as one self-contained HTML file to hand in",
                                             None, lambda: save_session_report(commands, self.ui.teach))
        self.open_store_action = _action(w, "Open result &store…", "Show the runs of an earlier experiment plan "
                                         "(a PruneLab .sqlite result store)", None, self.open_store)
        for action, pixmap in ((self.open_action, QStyle.StandardPixmap.SP_DialogOpenButton),
                               (self.run_action, QStyle.StandardPixmap.SP_MediaPlay),
                               (self.cancel_action, QStyle.StandardPixmap.SP_MediaStop),
                               (self.export_model_action, QStyle.StandardPixmap.SP_DialogSaveButton),
                               (self.export_plots_action, QStyle.StandardPixmap.SP_FileDialogDetailedView),
                               (self.export_csv_action, QStyle.StandardPixmap.SP_FileDialogListView)):
            action.setIcon(w.style().standardIcon(pixmap))
        self.quit_action = _action(w, "&Quit", "Close PruneLab", QKeySequence.StandardKey.Quit, w.close)
        self.about_action = _action(w, "&About PruneLab", "Versions of PruneLab, PyTorch, Torch-Pruning and Qt", None,
                                    lambda: dialogs.show_about(w, self.session.log_path))
        self.lessons_action: QAction | None = None

    def build(self, ui: WindowLayout, default_data: str, ask_memory_limit: Callable[[], None],
              show_lessons: Callable[[], Any]) -> None:
        """File, Prune, View, Settings and Help menus, and the toolbar; the demo models load with `default_data`."""
        self.ui = ui
        bar = self.window.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addAction(self.open_action)
        file_menu.addAction(self.new_model_action)
        demo_menu = file_menu.addMenu("Built-in &demo models")
        for name in DEMO_ARCHS:
            action = demo_menu.addAction(DEMO_TITLES.get(name, name))
            action.setToolTip(f"Load demo:{name}, trained on Fashion-MNIST")
            action.triggered.connect(lambda _=False, n=name: self.commands.load(f"demo:{n}", default_data))
        recent_menu = file_menu.addMenu("&Recent models")
        recent_menu.aboutToShow.connect(lambda: self._fill_recent(recent_menu))
        file_menu.addSeparator()
        for action in (self.export_model_action, self.export_onnx_action, self.export_plots_action,
                       self.export_csv_action, self.session_report_action):
            file_menu.addAction(action)
        file_menu.addSeparator()
        file_menu.addAction(self.open_store_action)
        file_menu.addAction(self.report_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        run_menu = bar.addMenu("&Prune")
        run_menu.addAction(self.run_action)
        run_menu.addAction(self.cancel_action)
        view_menu = bar.addMenu("&View")
        view_menu.addAction(ui.side_dock.toggleViewAction())
        show_hint = view_menu.addAction("Show the &hint")
        show_hint.triggered.connect(ui.hint_frame.show)
        settings_menu = bar.addMenu("&Settings")
        settings_menu.addAction("&Memory limit…", ask_memory_limit)
        help_menu = bar.addMenu("&Help")
        self.lessons_action = help_menu.addAction("&Lessons", show_lessons)
        self.lessons_action.setShortcut("F1")  # help: the lessons teach the tool
        self.lessons_action.setStatusTip("A lab for a course: short steps with Show me, questions and answers "
                                         "(a side panel)")
        help_menu.addAction(self.about_action)
        toolbar = self.window.addToolBar("Main")
        toolbar.setObjectName("main_toolbar")
        toolbar.setMovable(False)
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for action in (self.open_action, self.run_action, self.cancel_action, self.export_model_action,
                       self.export_plots_action, self.export_csv_action):
            toolbar.addAction(action)

    def _fill_recent(self, menu: QMenu) -> None:
        """Recent model files, read each time the menu opens."""
        menu.clear()
        recent = self.session.settings.recent("models")
        if not recent:
            menu.addAction("(none yet)").setEnabled(False)
        for path in recent:
            action = menu.addAction(path)
            action.triggered.connect(lambda _=False, p=path: self.commands.open_model_file(p))

    def open_model(self) -> None:
        """Choose a model file (from the folder chosen from last time), then the Open model dialog says what it is."""
        settings = self.session.settings
        recent = [p for p in settings.recent("models") if Path(p).is_absolute()]
        path = pick_file(self.window, settings, "model", "Open a model", MODEL_FILTER,
                         str(Path(recent[0]).parent) if recent else "")
        self.ui.source.fill_models(self.session.current_model_src())
        if path:
            self.commands.open_model_dialog(path)

    def open_store(self) -> None:
        """Show an earlier plan's result store in the Experiment tab."""
        experiment = self.ui.experiment
        path, _ = QFileDialog.getOpenFileName(self.window, "Open a result store", str(experiment.store_path().parent),
                                              "PruneLab result stores (*.sqlite *.db);;All files (*)")
        if not path:
            return
        try:
            experiment.load_store(path)
        except UserError as exc:
            self.commands.show_error("Could not open the result store", str(exc))
            return
        self.session.settings.set_value("experiment/store", path)
        self.ui.tabs.setCurrentWidget(experiment)

    def save_report(self) -> None:
        """The Experiment tab's report, from the File menu."""
        self.ui.tabs.setCurrentWidget(self.ui.experiment)
        self.ui.experiment.report_button.click()

    def export_model(self) -> None:
        """Save the selected run's pruned model as a deployment set (engine.deploy) in a new folder, in the
        background."""
        record = self.session.selected_record()
        if record is None or record.pruned is None:
            self.commands.show_error("Nothing to export", "Run a pruning method first; its pruned model can then "
                                     "be saved.")
            return
        settings = self.session.settings
        dialog = export_folder_dialog(self.window, export_start_folder(settings, record.pruned.source),
                                      f"run{record.run_id}_{record.config.method}")
        if not dialog.exec() or not dialog.selectedFiles():  # 0: cancelled
            return
        try:
            target = check_output_dir(dialog.selectedFiles()[0], flag="the export folder")
        except UserError as exc:
            self.commands.show_error("Cannot export to this folder", str(exc), info="Nothing was written.")
            return
        remember_folder(settings, EXPORT_PICKER, target.parent)
        structured = get_method(record.config.method).structured
        self.commands.start_job(ExportJob(self.commands, record.pruned, target, structured, "model"))

    def export_onnx(self) -> None:
        """Save the selected run's pruned model, or else the loaded one, as an ONNX file."""
        record, loaded = self.session.selected_record(), self.session.loaded
        bundle = record.pruned if record and record.pruned else (loaded.bundle if loaded else None)
        if bundle is None:
            return
        name = f"run{record.run_id}_{record.config.method}.onnx" if record and record.pruned else "original.onnx"
        path, _ = QFileDialog.getSaveFileName(self.window, "Save ONNX", name, "ONNX (*.onnx)")
        if path:
            self.commands.start_job(ExportJob(self.commands, bundle, Path(path), False, "onnx"))

    def export_plots(self) -> None:
        """Save the current tab's plots as PNG or SVG."""
        path, chosen = QFileDialog.getSaveFileName(self.window, "Save plots", "prunelab_plots.png",
                                                   "PNG image (*.png);;SVG vector image (*.svg)")
        if path:
            if not Path(path).suffix:
                path += ".svg" if "svg" in chosen.lower() else ".png"
            try:
                self.commands.say(f"Wrote {self.write_plots(path)}", 8000)
            except Exception as exc:  # disk full, permissions: report and carry on
                self.commands.show_error("Could not save the plots", str(exc))

    def write_plots(self, path: str | Path) -> Path:
        """Write the current tab's plots (live plots unless Weights or Results is shown) as PNG or SVG."""
        ui = self.ui
        current = ui.tabs.currentWidget()
        if current is ui.histograms:
            view = ui.histograms.canvas
        elif current is ui.results:
            view = ui.results.scatter_widget
        else:
            ui.plots.flush()
            view = ui.plots.canvas
        return dialogs.save_snapshot(view, Path(path))

    def export_csv(self) -> None:
        """Save the results table as CSV."""
        path, _ = QFileDialog.getSaveFileName(self.window, "Save results", "prunelab_results.csv", "CSV (*.csv)")
        if path:
            try:
                self.commands.say(f"Wrote {self.ui.results.write_csv(path)}", 8000)
            except OSError as exc:
                self.commands.show_error("Could not save the results", str(exc))


EXPORT_PICKER = "export"  # the remembered folder of the export dialog (gui.pickers)


def export_start_folder(settings: Settings, source: str) -> Path:
    """Where the export dialog opens: the folder of the model file the run pruned, else the last export's."""
    path = Path(source)
    if path.is_file():
        return path.parent.absolute()
    return Path(last_folder(settings, EXPORT_PICKER, str(Path.home())))


class _FolderTarget(QFileDialog):
    """A save dialog whose answer is a folder: a new name, or an existing folder's name typed in (which a
    save dialog would open instead); whether that folder may be used is checked after."""

    def accept(self) -> None:
        chosen = self.selectedFiles()
        if chosen and Path(chosen[0]).is_dir() and Path(chosen[0]) != Path(self.directory().absolutePath()):
            QDialog.accept(self)
            return
        super().accept()


def export_folder_dialog(parent: QWidget, start: Path, name: str) -> QFileDialog:
    """A save dialog for a folder to create: a folder dialog answers "Directory not found" to a new name.
    It opens in `start` and proposes `name`; the name typed is the folder the set is written to."""
    dialog = _FolderTarget(parent, "Export the pruned model: name a new folder")
    dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
    dialog.setFileMode(QFileDialog.FileMode.AnyFile)
    # Qt's own dialog everywhere, so the labels below show; whether the folder may be used is checked after
    dialog.setOptions(QFileDialog.Option.DontUseNativeDialog | QFileDialog.Option.DontConfirmOverwrite)
    dialog.setLabelText(QFileDialog.DialogLabel.FileName, "New folder:")
    dialog.setLabelText(QFileDialog.DialogLabel.Accept, "Export")
    dialog.setDirectory(str(start))
    dialog.selectFile(name)
    return dialog
