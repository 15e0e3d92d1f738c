"""The Open model dialog's architecture picker: a searchable list of torchvision and timm names, or the
user's Python file with the nn.Module classes it defines; and the constructor arguments (JSON) for either.

The list is a QListView over a QStringListModel behind a QSortFilterProxyModel with uniform item
sizes, so filtering 1,451 names is a regular-expression pass in C++, not a Python loop per keystroke.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QRegularExpression, QSortFilterProxyModel, QStringListModel, Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (QComboBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QListView, QPushButton,
                               QTabWidget, QVBoxLayout, QWidget)

from engine.errors import UserError
from engine.models import check_model_kwargs, code_classes
from engine.sources import ModelKind, ModelSource
from gui.pickers import pick_file
from gui.settings import Settings

AskTrust = Callable[[str, str, str], bool]  # (path, message, what) -> an explicit yes


def filter_pattern(query: str) -> QRegularExpression:
    """Every word of `query`, in any order, case-insensitive (as engine.models.list_architectures filters)."""
    words = query.split()
    pattern = "".join(f"(?=.*{QRegularExpression.escape(w)})" for w in words)
    return QRegularExpression("^" + pattern, QRegularExpression.PatternOption.CaseInsensitiveOption)


class ArchitecturePicker(QWidget):
    """Named architectures (filter + list) or a Python file's class; `changed` fires on every choice."""

    changed = Signal()

    def __init__(self, ask_trust: AskTrust, parent: QWidget | None = None, settings: Settings | None = None) -> None:
        super().__init__(parent)
        self.ask_trust = ask_trust
        self.settings = settings or Settings()
        self.code_file: str | None = None  # imported with the user's consent
        self.signatures: dict[str, str] = {}  # class name -> "MyNet(width=16, classes=10)"
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.tabs = QTabWidget()
        self.tabs.addTab(self._named_page(), "torchvision / timm")
        self.tabs.addTab(self._code_page(), "My Python file")
        self.tabs.setTabToolTip(0, "An architecture by name; PruneLab builds it untrained and fills it with the "
                                   "file's weights (nothing is downloaded)")
        self.tabs.setTabToolTip(1, "The Python file that defines the model's class (as in your training script)")
        self.tabs.currentChanged.connect(lambda _i: self.changed.emit())
        layout.addWidget(self.tabs)
        form = QFormLayout()
        self.kwargs_edit = QLineEdit()
        self.kwargs_edit.setPlaceholderText('{}   e.g. {"width": 32} or {"dropout": 0.1}')
        self.kwargs_edit.setToolTip("Keyword arguments for the model's constructor, as a JSON object; leave "
                                    "empty for its defaults")
        self.kwargs_edit.textChanged.connect(lambda _t: self.changed.emit())
        row = QHBoxLayout()
        row.addWidget(self.kwargs_edit, 1)
        self.signature_label = QLabel()
        self.signature_label.setTextFormat(Qt.TextFormat.RichText)
        self.signature_label.setWordWrap(True)
        self.signature_label.setMaximumWidth(360)
        self.signature_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.signature_label.setToolTip("The class's constructor, as the Python file defines it: type the arguments "
                                        "to change as JSON, e.g. {\"width\": 32}")
        row.addWidget(self.signature_label)
        form.addRow("Arguments (JSON)", row)
        layout.addLayout(form)
        self.class_combo.currentIndexChanged.connect(self._show_signature)
        self.tabs.currentChanged.connect(self._show_signature)

    def _named_page(self) -> QWidget:
        page = QWidget()
        box = QVBoxLayout(page)
        row = QHBoxLayout()
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter, e.g. resnet 50, efficientnet b0, vit tiny")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.setToolTip("Type parts of the name, in any order")
        row.addWidget(self.filter_edit, 1)
        self.count_label = QLabel()
        row.addWidget(self.count_label)
        box.addLayout(row)
        self.names_model = QStringListModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.names_model)
        self.list_view = QListView()
        self.list_view.setModel(self.proxy)
        self.list_view.setUniformItemSizes(True)  # no per-row size query: scrolling and filtering stay fast
        self.list_view.setEditTriggers(QListView.EditTrigger.NoEditTriggers)
        self.list_view.setMinimumHeight(150)
        self.list_view.selectionModel().currentChanged.connect(lambda *_: self.changed.emit())
        box.addWidget(self.list_view, 1)
        self.filter_edit.textChanged.connect(self._on_filter)
        return page

    def _code_page(self) -> QWidget:
        page = QWidget()
        form = QFormLayout(page)
        row = QHBoxLayout()
        self.code_edit = QLineEdit()
        self.code_edit.setReadOnly(True)
        self.code_edit.setPlaceholderText("the .py file that defines the model's class")
        row.addWidget(self.code_edit, 1)
        self.code_button = QPushButton("Choose…")
        self.code_button.clicked.connect(self._choose_code)
        row.addWidget(self.code_button)
        form.addRow("Python file", row)
        self.class_combo = QComboBox()
        self.class_combo.setToolTip("The nn.Module classes the file defines")
        self.class_combo.currentIndexChanged.connect(lambda _i: self.changed.emit())
        form.addRow("Class", self.class_combo)
        self.code_status = QLabel("Choosing a file imports it (runs it), so PruneLab asks first.")
        self.code_status.setWordWrap(True)
        form.addRow(self.code_status)
        return page

    # ----------------------------------------------------------------- named architectures
    def set_names(self, names: list[str]) -> None:
        """The architectures to choose from (engine.models.list_architectures)."""
        current = self.named_arch()
        self.names_model.setStringList(names)
        self._on_filter(self.filter_edit.text())
        if current:
            self.select(current)

    def _on_filter(self, text: str) -> None:
        self.proxy.setFilterRegularExpression(filter_pattern(text))
        self.count_label.setText(f"{self.proxy.rowCount():,} of {self.names_model.rowCount():,}")
        if self.proxy.rowCount() == 1:  # one left: that is the choice
            self.list_view.setCurrentIndex(self.proxy.index(0, 0))
        self.changed.emit()

    def visible_names(self) -> list[str]:
        """The names the filter lets through, in order."""
        return [self.proxy.index(i, 0).data() for i in range(self.proxy.rowCount())]

    def select(self, arch: str) -> bool:
        """Select `arch` (torchvision:NAME or timm:NAME, or code:PATH.py:Class); False when it is not offered."""
        source = ModelSource.parse(arch)
        if source.kind is ModelKind.CODE:
            path, cls = source.code_file, source.code_class
            if self.load_code(path, ask=False):
                self.class_combo.setCurrentIndex(max(0, self.class_combo.findText(cls)))
                self.tabs.setCurrentIndex(1)
                return True
            return False
        rows = self.names_model.stringList()
        if arch not in rows:
            return False
        if not self.filter_pattern_matches(arch):
            self.filter_edit.clear()
        source = self.names_model.index(rows.index(arch), 0)
        index = self.proxy.mapFromSource(source)
        self.list_view.setCurrentIndex(index)
        self.list_view.scrollTo(index, QListView.ScrollHint.PositionAtCenter)
        self.tabs.setCurrentIndex(0)
        return True

    def filter_pattern_matches(self, name: str) -> bool:
        """True when the current filter lets `name` through."""
        return filter_pattern(self.filter_edit.text()).match(name).hasMatch()

    def named_arch(self) -> str | None:
        """The selected name, if the selection is still visible."""
        index = self.list_view.currentIndex()
        return index.data() if index.isValid() else None

    # ----------------------------------------------------------------- the user's Python file
    def _choose_code(self) -> None:
        path = pick_file(self, self.settings, "python", "The Python file that defines the model",
                         "Python files (*.py)", str(Path(self.code_file).parent) if self.code_file else "")
        if path:
            self.load_code(path)

    def load_code(self, path: str, ask: bool = True) -> bool:
        """List the classes `path` defines; it is imported only after the trust question (No by default)."""
        self.code_edit.setText(path)
        self.signatures = {}
        self.class_combo.clear()
        self.code_file = None
        if ask and not self.ask_trust(path, "", "python"):
            self.code_status.setText("<span style='color:#D55E00'>Not imported: you did not trust the file. "
                                     "Choose a file you wrote, or pick the architecture by name.</span>")
            self.changed.emit()
            return False
        QGuiApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            classes = code_classes(path)
        except UserError as exc:
            self.code_status.setText(f"<span style='color:#D55E00'>{_escape(str(exc))}</span>")
            self.changed.emit()
            return False
        finally:
            QGuiApplication.restoreOverrideCursor()
        self.code_file = path
        self.signatures = constructor_signatures(path, classes)
        self.class_combo.addItems(classes)
        self.code_status.setText(f"{len(classes)} nn.Module class(es) in {Path(path).name}" if classes else
                                 "<span style='color:#D55E00'>This file defines no nn.Module class.</span>")
        self.tabs.setCurrentIndex(1)
        self.changed.emit()
        return bool(classes)

    def _show_signature(self, *_args) -> None:
        """The chosen class's constructor beside the arguments field, so the user knows what to type."""
        cls = self.class_combo.currentText() if self.tabs.currentIndex() == 1 else ""
        text = self.signatures.get(cls, "")
        self.signature_label.setText(f"<code>{_escape(text)}</code>" if text else "")

    # ----------------------------------------------------------------- the choice
    def arch(self) -> str | None:
        """The chosen architecture: torchvision:NAME, timm:NAME or code:PATH.py:Class; None when none is."""
        if self.tabs.currentIndex() == 1:
            cls = self.class_combo.currentText()
            return f"code:{self.code_file}:{cls}" if self.code_file and cls else None
        return self.named_arch()

    def kwargs(self) -> dict:
        """The constructor arguments typed as JSON ({} when empty); UserError in plain words otherwise."""
        text = self.kwargs_edit.text().strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"the arguments are not valid JSON ({exc.msg} at character {exc.pos + 1}); "
                            'write an object such as {"width": 32}') from None
        return check_model_kwargs(value, "the arguments")


def _escape(text: str) -> str:
    from html import escape

    return escape(text)


def constructor_signatures(path: str, classes: list[str]) -> dict[str, str]:
    """Each class's constructor as "Name(width=16, classes=10)", read from the source (nothing runs).

    A class without its own __init__ shows "Name()" when it derives from nn.Module directly, else
    "Name(…)": its arguments are those of a base class.
    """
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return {}
    found = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef) or node.name not in classes or node.name in found:
            continue
        init = next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
        if init is None:
            plain_module = all(ast.unparse(b).split(".")[-1] == "Module" for b in node.bases)
            found[node.name] = f"{node.name}()" if plain_module else f"{node.name}(…)"
            continue
        args = ast.unparse(init.args)
        args = args.split(",", 1)[1].strip() if "," in args else ""  # without self
        found[node.name] = f"{node.name}({args})"
    return found
