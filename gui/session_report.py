"""File ▸ Save session report…: the window's finished runs and the teach views the student opened, as one
self-contained HTML file (engine.report.session draws it)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QBuffer, QIODevice
from PySide6.QtWidgets import QFileDialog

from engine.errors import UserError
from engine.report.session import Session, SessionRun, TeachShot, write_session_report

if TYPE_CHECKING:
    from pathlib import Path

    from gui.commands import Commands
    from gui.session import SessionModel
    from gui.teach import TeachTab


def window_session(session: SessionModel, teach: TeachTab) -> Session:
    """Every finished run of the session, in the order they were started, with the teach views opened."""
    runs = [SessionRun(r.label, r.config.to_json(), r.done.before, r.done.after,
                       [s.metrics for s in r.steps if s.step > 0], f"#{r.parent}" if r.parent else "",
                       r.recover_only, r.note, tuple(r.done.notes), r.done.paired, r.done.seconds, r.colour)
            for _, r in sorted(session.runs.items()) if r.status == "done" and r.done is not None]
    contexts = {r.context for r in session.runs.values() if r.status == "done" and r.context}
    model, dataset = next(iter(contexts)) if len(contexts) == 1 else ("", "")
    shots = [TeachShot(title, caption, _png(view)) for title, caption, view in teach.opened_views()]
    return Session(runs, shots, model=model, dataset=dataset, source="this window's session")


def _png(widget) -> bytes:
    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    widget.grab().save(buffer, "PNG")
    return bytes(buffer.data())


def save_session_report(commands: Commands, teach: TeachTab, path: str | Path | None = None) -> Path | None:
    """Ask where (unless `path` is given) and write the report; an error is a dialog, the window stays usable."""
    if path is None:
        path, _ = QFileDialog.getSaveFileName(commands.parent, "Save session report", "prunelab_session.html",
                                              "HTML (*.html)")
        if not path:
            return None
        if not path.lower().endswith(".html"):
            path += ".html"
    try:
        out = write_session_report(window_session(commands.session, teach), path)
    except (UserError, OSError) as exc:
        commands.show_error("Could not save the session report", str(exc), info="Nothing was written.")
        return None
    commands.say(f"Wrote {out}", 8000)
    return out
