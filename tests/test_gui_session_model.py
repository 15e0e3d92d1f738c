"""The GUI's session model on its own (no window), and the shape around it: nothing below the window imports it."""
from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

from gui_helpers import qt_environment

qt_environment()

from gui.results import RunRecord  # noqa: E402
from gui.session import SessionModel  # noqa: E402

GUI = Path(__file__).resolve().parent.parent / "gui"
ENTRY_POINTS = {"app.py", "selftest.py"}  # they open the window: the only modules above it


@pytest.fixture
def session(qtbot, tmp_path):
    return SessionModel(settings=SimpleNamespace(), work_dir=tmp_path)


def _record(run_id: int, parent: int | None = None) -> RunRecord:
    return RunRecord(run_id, f"#{run_id}", "#000000", SimpleNamespace(), parent=parent)


def test_runs_are_added_selected_and_removed_with_signals(session, qtbot):
    removed, selected = [], []
    session.run_removed.connect(removed.append)
    session.run_selected.connect(selected.append)
    first = _record(session.next_run_id())
    session.add_run(first)
    session.add_run(_record(session.next_run_id(), parent=first.run_id))
    assert session.current_run == session.selected_run == 2 and session.selected_record().parent == 1
    assert session.select_run(1) and selected == [1]
    assert not session.select_run(7) and selected == [1]  # no such run: nothing said
    assert session.remove_run(1, running=False) is None  # run #2 was continued from it
    assert session.remove_run(2, running=True) is None  # it is the run going on
    assert session.remove_run(2, running=False).run_id == 2 and removed == [2]
    assert session.remove_run(1, running=False).run_id == 1 and removed == [2, 1]
    assert session.runs == {} and session.selected_record() is None


def test_a_new_model_forgets_the_scan_and_the_selection_and_keeps_one_dataset(session, qtbot):
    session.add_run(_record(1))
    session.set_sensitivity("a scan")
    request = SimpleNamespace(data_spec="fashion-mnist", model_src=None)
    loaded = SimpleNamespace(request=request, raw_data="the dataset")
    session.raw_data_cache["cifar10:/somewhere"] = "another dataset"
    with qtbot.waitSignal(session.loaded_changed) as said:
        session.set_loaded(loaded)
    assert said.args == [loaded] and session.loaded is loaded
    assert session.sensitivity is None and session.selected_run is None and 1 in session.runs
    assert session.raw_data_cache == {"fashion-mnist": "the dataset"}
    assert session.current_model_src() == "demo:resnet"  # loaded from a bundle: the default source


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, wherever the import is (a function, under TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_nothing_below_the_window_imports_it():
    """Views, jobs and dialogs get the session and the window's commands, never the window itself."""
    importers = sorted(str(p.relative_to(GUI)) for p in GUI.rglob("*.py")
                       if p.name != "main_window.py" and "gui.main_window" in _imports(p))
    assert set(importers) <= ENTRY_POINTS, importers


@pytest.mark.parametrize("described, concrete", [("gui.open_model_jobs:Dialog", "gui.open_model:OpenModelDialog"),
                                                  ("gui.teach.jobs:TeachTab", "gui.teach.tab:TeachTab")])
def test_what_a_job_uses_of_its_view_exists_there(described, concrete):
    """The jobs see their dialog or tab through a Protocol (the view imports the jobs, not the other way
    round): every method it names is the view's, and every attribute is one the view sets on itself."""
    import importlib
    import inspect

    def resolve(spec: str):
        module, name = spec.split(":")
        return getattr(importlib.import_module(module), name)

    protocol, view = resolve(described), resolve(concrete)
    methods = [n for n, v in vars(protocol).items() if inspect.isfunction(v)]
    attributes = list(protocol.__annotations__)
    assert methods and attributes
    for name in methods:
        assert callable(getattr(view, name, None)), f"{view.__name__} has no method {name}"
    source = inspect.getsource(view)
    set_on_self = {t.attr for node in ast.walk(ast.parse(source)) if isinstance(node, (ast.Assign, ast.AnnAssign))
                   for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                   for t in ([*t.elts] if isinstance(t, ast.Tuple) else [t])
                   if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}
    inherited = {n for n in attributes if hasattr(view, n)}
    missing = set(attributes) - set_on_self - inherited
    assert not missing, f"{view.__name__} never sets {sorted(missing)}"
