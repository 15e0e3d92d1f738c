"""The main window's actions, menus and toolbar, and the file dialogs behind the File menu.

Built Qt-Designer style: these functions set the actions as attributes of the window, which enables
and disables them as its state changes.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDialog, QFileDialog, QMenu, QStyle

from engine.errors import UserError
from engine.methods import get_method
from engine.models import DEMO_ARCHS, DEMO_TITLES
from engine.outputs import check_output_dir
from gui import dialogs
from gui.jobs import ExportJob
from gui.lesson import show_lessons
from gui.open_model import MODEL_FILTER, open_model_dialog
from gui.pickers import last_folder, remember_folder
from gui.session_report import save_session_report

if TYPE_CHECKING:
    from gui.main_window import MainWindow



def _action(win: MainWindow, text: str, tip: str, shortcut: Any = None, slot: Callable | None = None) -> QAction:
    action = QAction(text, win)
    action.setToolTip(tip + (f" ({QKeySequence(shortcut).toString()})" if shortcut else ""))
    action.setStatusTip(tip)
    if shortcut:
        action.setShortcut(QKeySequence(shortcut))
    if slot:
        action.triggered.connect(slot)
    return action


def build_actions(win: MainWindow) -> None:
    """The window's actions (open, run, cancel, exports, quit, about), with their tips, shortcuts and icons."""
    win.open_action = _action(win, "&Open model…", "Open a model file: a state_dict, a checkpoint, a .safetensors "
                              "file, a PruneLab model…", QKeySequence.StandardKey.Open, lambda: open_model(win))
    win.new_model_action = _action(win, "&New untrained architecture…", "A torchvision or timm architecture with "
                                   "random weights, adapted to the dataset: for teaching and trying methods",
                                   "Ctrl+N", lambda: open_model_dialog(win, untrained=True))
    win.run_action = _action(win, "&Run", "Prune a copy of the model with the selected method", "Ctrl+R",
                             win.start_run)
    win.run_action.setShortcuts([QKeySequence("Ctrl+R"), QKeySequence("F5")])
    win.cancel_action = _action(win, "&Cancel", "Stop the running job (the loaded model is never changed)", "Esc",
                                win.cancel_job)
    win.export_model_action = _action(win, "Export pruned &model…", "Save the selected run's pruned model to a new "
                                      "folder: PyTorch and ONNX files that load without PruneLab, the weights, "
                                      "model.json and a model card", "Ctrl+E", lambda: export_model(win))
    win.export_onnx_action = _action(win, "Export &ONNX…", "Save the selected run's model (or the original) as "
                                     "ONNX", "Ctrl+Shift+E", lambda: export_onnx(win))
    win.export_plots_action = _action(win, "Export &plots…", "Save the plots of the current tab as PNG or SVG",
                                      "Ctrl+Shift+P", lambda: export_plots(win))
    win.export_csv_action = _action(win, "Export results as &CSV…", "Save the results table as CSV",
                                    "Ctrl+Shift+C", lambda: export_csv(win))
    win.report_action = _action(win, "Save experiment &report…", "Write the Experiment tab's comparison as a "
                                "self-contained HTML report plus CSV", "Ctrl+Shift+R", lambda: save_report(win))
    win.session_report_action = _action(win, "Save &session report…", "Every finished run of this session and the "
                                        "teach views you opened, as one self-contained HTML file to hand in",
                                        None, lambda: save_session_report(win))
    win.open_store_action = _action(win, "Open result &store…", "Show the runs of an earlier experiment plan "
                                    "(a PruneLab .sqlite result store)", None, lambda: open_store(win))
    for action, pixmap in ((win.open_action, QStyle.StandardPixmap.SP_DialogOpenButton),
                           (win.run_action, QStyle.StandardPixmap.SP_MediaPlay),
                           (win.cancel_action, QStyle.StandardPixmap.SP_MediaStop),
                           (win.export_model_action, QStyle.StandardPixmap.SP_DialogSaveButton),
                           (win.export_plots_action, QStyle.StandardPixmap.SP_FileDialogDetailedView),
                           (win.export_csv_action, QStyle.StandardPixmap.SP_FileDialogListView)):
        action.setIcon(win.style().standardIcon(pixmap))
    win.quit_action = _action(win, "&Quit", "Close PruneLab", QKeySequence.StandardKey.Quit, win.close)
    win.about_action = _action(win, "&About PruneLab", "Versions of PruneLab, PyTorch, Torch-Pruning and Qt", None,
                               lambda: dialogs.show_about(win, win.log_path))


def build_menus(win: MainWindow, default_data: str) -> None:
    """File, Prune, View, Settings and Help menus, and the toolbar; the demo models load with `default_data`."""
    file_menu = win.menuBar().addMenu("&File")
    file_menu.addAction(win.open_action)
    file_menu.addAction(win.new_model_action)
    demo_menu = file_menu.addMenu("Built-in &demo models")
    for name in DEMO_ARCHS:
        action = demo_menu.addAction(DEMO_TITLES.get(name, name))
        action.setToolTip(f"Load demo:{name}, trained on Fashion-MNIST")
        action.triggered.connect(lambda _=False, n=name: win.load(f"demo:{n}", default_data))
    recent_menu = file_menu.addMenu("&Recent models")
    recent_menu.aboutToShow.connect(lambda: _fill_recent(recent_menu, win))
    file_menu.addSeparator()
    for action in (win.export_model_action, win.export_onnx_action, win.export_plots_action, win.export_csv_action,
                   win.session_report_action):
        file_menu.addAction(action)
    file_menu.addSeparator()
    file_menu.addAction(win.open_store_action)
    file_menu.addAction(win.report_action)
    file_menu.addSeparator()
    file_menu.addAction(win.quit_action)
    run_menu = win.menuBar().addMenu("&Prune")
    run_menu.addAction(win.run_action)
    run_menu.addAction(win.cancel_action)
    view_menu = win.menuBar().addMenu("&View")
    view_menu.addAction(win.side_dock.toggleViewAction())
    show_hint = view_menu.addAction("Show the &hint")
    show_hint.triggered.connect(win.hint_frame.show)
    settings_menu = win.menuBar().addMenu("&Settings")
    settings_menu.addAction("&Memory limit…", win.ask_memory_limit)
    help_menu = win.menuBar().addMenu("&Help")
    win.lessons_action = help_menu.addAction("&Lessons", lambda: show_lessons(win))
    win.lessons_action.setShortcut("F1")  # help: the lessons teach the tool
    win.lessons_action.setStatusTip("A lab for a course: short steps with Show me, questions and answers (a side panel)")
    help_menu.addAction(win.about_action)
    toolbar = win.addToolBar("Main")
    toolbar.setObjectName("main_toolbar")
    toolbar.setMovable(False)
    toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    for action in (win.open_action, win.run_action, win.cancel_action, win.export_model_action,
                   win.export_plots_action, win.export_csv_action):
        toolbar.addAction(action)


def _fill_recent(menu: QMenu, win: MainWindow) -> None:
    """Recent model files, read each time the menu opens."""
    menu.clear()
    recent = win.settings.recent("models")
    if not recent:
        menu.addAction("(none yet)").setEnabled(False)
    for path in recent:
        action = menu.addAction(path)
        action.triggered.connect(lambda _=False, p=path: win.open_model_file(p))


def open_model(win: MainWindow) -> None:
    """Choose a model file (from the folder chosen from last time), then the Open model dialog says what it is."""
    from gui.pickers import pick_file

    recent = [p for p in win.settings.recent("models") if Path(p).is_absolute()]
    path = pick_file(win, win.settings, "model", "Open a model", MODEL_FILTER,
                     str(Path(recent[0]).parent) if recent else "")
    win.source.fill_models(win.current_model_src())
    if path:
        open_model_dialog(win, path)


def open_store(win: MainWindow) -> None:
    """Show an earlier plan's result store in the Experiment tab."""
    path, _ = QFileDialog.getOpenFileName(win, "Open a result store", str(win.experiment.store_path().parent),
                                          "PruneLab result stores (*.sqlite *.db);;All files (*)")
    if not path:
        return
    try:
        win.experiment.load_store(path)
    except UserError as exc:
        win.show_error("Could not open the result store", str(exc))
        return
    win.settings.set_value("experiment/store", path)
    win.tabs.setCurrentWidget(win.experiment)


def save_report(win: MainWindow) -> None:
    """The Experiment tab's report, from the File menu."""
    win.tabs.setCurrentWidget(win.experiment)
    win.experiment.report_button.click()


EXPORT_PICKER = "export"  # the remembered folder of the export dialog (gui.pickers)


def export_start_folder(win: MainWindow, source: str) -> Path:
    """Where the export dialog opens: the folder of the model file the run pruned, else the last export's."""
    path = Path(source)
    if path.is_file():
        return path.parent.absolute()
    return Path(last_folder(win.settings, EXPORT_PICKER, str(Path.home())))


class _FolderTarget(QFileDialog):
    """A save dialog whose answer is a folder: a new name, or an existing folder's name typed in (which a
    save dialog would open instead); whether that folder may be used is checked after."""

    def accept(self) -> None:
        chosen = self.selectedFiles()
        if chosen and Path(chosen[0]).is_dir() and Path(chosen[0]) != Path(self.directory().absolutePath()):
            QDialog.accept(self)
            return
        super().accept()


def export_folder_dialog(win: MainWindow, start: Path, name: str) -> QFileDialog:
    """A save dialog for a folder to create: a folder dialog answers "Directory not found" to a new name.
    It opens in `start` and proposes `name`; the name typed is the folder the set is written to."""
    dialog = _FolderTarget(win, "Export the pruned model: name a new folder")
    dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
    dialog.setFileMode(QFileDialog.FileMode.AnyFile)
    # Qt's own dialog everywhere, so the labels below show; whether the folder may be used is checked after
    dialog.setOptions(QFileDialog.Option.DontUseNativeDialog | QFileDialog.Option.DontConfirmOverwrite)
    dialog.setLabelText(QFileDialog.DialogLabel.FileName, "New folder:")
    dialog.setLabelText(QFileDialog.DialogLabel.Accept, "Export")
    dialog.setDirectory(str(start))
    dialog.selectFile(name)
    return dialog


def export_model(win: MainWindow) -> None:
    """Save the selected run's pruned model as a deployment set (engine.deploy) in a new folder, in the background."""
    record = win.selected_record()
    if record is None or record.pruned is None:
        win.show_error("Nothing to export", "Run a pruning method first; its pruned model can then be saved.")
        return
    dialog = export_folder_dialog(win, export_start_folder(win, record.pruned.source),
                                  f"run{record.run_id}_{record.config.method}")
    if not dialog.exec() or not dialog.selectedFiles():  # 0: cancelled
        return
    try:
        target = check_output_dir(dialog.selectedFiles()[0], flag="the export folder")
    except UserError as exc:
        win.show_error("Cannot export to this folder", str(exc), info="Nothing was written.")
        return
    remember_folder(win.settings, EXPORT_PICKER, target.parent)
    structured = get_method(record.config.method).structured
    win.start_job(ExportJob(win, record.pruned, target, structured, "model"))


def export_onnx(win: MainWindow) -> None:
    """Save the selected run's pruned model, or else the loaded one, as an ONNX file."""
    record = win.selected_record()
    bundle = record.pruned if record and record.pruned else (win.loaded.bundle if win.loaded else None)
    if bundle is None:
        return
    name = f"run{record.run_id}_{record.config.method}.onnx" if record and record.pruned else "original.onnx"
    path, _ = QFileDialog.getSaveFileName(win, "Save ONNX", name, "ONNX (*.onnx)")
    if path:
        win.start_job(ExportJob(win, bundle, Path(path), False, "onnx"))


def export_plots(win: MainWindow) -> None:
    """Save the current tab's plots as PNG or SVG."""
    path, chosen = QFileDialog.getSaveFileName(win, "Save plots", "prunelab_plots.png",
                                               "PNG image (*.png);;SVG vector image (*.svg)")
    if path:
        if not Path(path).suffix:
            path += ".svg" if "svg" in chosen.lower() else ".png"
        try:
            win.statusBar().showMessage(f"Wrote {win.export_plots(path)}", 8000)
        except Exception as exc:  # disk full, permissions: report and carry on
            win.show_error("Could not save the plots", str(exc))


def export_csv(win: MainWindow) -> None:
    """Save the results table as CSV."""
    path, _ = QFileDialog.getSaveFileName(win, "Save results", "prunelab_results.csv", "CSV (*.csv)")
    if path:
        try:
            win.statusBar().showMessage(f"Wrote {win.results.write_csv(path)}", 8000)
        except OSError as exc:
            win.show_error("Could not save the results", str(exc))
