"""Outputs: checked before the work, written whole or not at all, foreign files never touched."""
from __future__ import annotations

import os
from collections import namedtuple
from pathlib import Path

import pytest

from engine import outputs
from engine.errors import UserError
from engine.outputs import (TEMP_TAG, atomic_dir, atomic_files, check_output_dir, check_output_file,
                            remove_stale_temps, write_text_atomic)


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_file_targets_are_checked(tmp_path):
    (tmp_path / "a_dir").mkdir()
    with pytest.raises(UserError, match="is a folder"):
        check_output_file(tmp_path / "a_dir", flag="--json")
    with pytest.raises(UserError, match="should end in .html"):
        check_output_file(tmp_path / "report.txt", suffixes=(".html",))
    (tmp_path / "plain").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        check_output_file(tmp_path / "plain" / "out.json")
    with pytest.raises(UserError, match="not writable"):
        check_output_file("/proc/sys/prunelab-test.json")  # read-only even for root
    assert check_output_file(tmp_path / "new" / "deeper" / "out.json") == tmp_path / "new" / "deeper" / "out.json"
    assert listing(tmp_path) == ["a_dir", "plain"]  # checking creates nothing


def test_read_only_file_system_and_full_disk_are_named(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs.os, "access", lambda path, mode: False)
    ro = namedtuple("statvfs", "f_flag")(os.ST_RDONLY)
    monkeypatch.setattr(outputs.os, "statvfs", lambda path: ro)
    with pytest.raises(UserError, match="read-only file system"):
        check_output_dir(tmp_path / "out")
    monkeypatch.undo()
    usage = namedtuple("usage", "total used free")(10 ** 9, 10 ** 9 - 5 * 2 ** 20, 5 * 2 ** 20)
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda path: usage)
    with pytest.raises(UserError, match="only 5.0 MiB free.*free space or choose another disk"):
        check_output_dir(tmp_path / "out", needed_bytes=50 * 2 ** 20)


def test_a_folder_of_someone_elses_files_is_refused(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="PruneLab did not write"):
        check_output_dir(theirs)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        check_output_dir(tmp_path / "file")


def test_atomic_dir_replaces_our_own_folder_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "run"
    with atomic_dir(target) as tmp:
        (tmp / "model.pt").write_text("first")
    assert (target / "model.pt").read_text() == "first" and outputs.is_prunelab_folder(target)
    with atomic_dir(target) as tmp:
        (tmp / "model.pt").write_text("second")
    assert (target / "model.pt").read_text() == "second"
    assert listing(tmp_path) == ["run", "run/.prunelab-output", "run/model.pt"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failure_midway_leaves_nothing_and_keeps_the_previous_set(tmp_path, error):
    target = tmp_path / "run"
    with atomic_dir(target) as tmp:
        (tmp / "model.pt").write_text("good")
    with pytest.raises(type(error)):
        with atomic_dir(target) as tmp:
            (tmp / "model.pt").write_text("half")
            raise error
    assert (target / "model.pt").read_text() == "good"
    assert listing(tmp_path) == ["run", "run/.prunelab-output", "run/model.pt"]
    with pytest.raises(type(error)):
        with atomic_files(tmp_path / "report.html", tmp_path / "report.csv") as (html, csv):
            html.write_text("<html>")
            raise error
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "report.csv").exists()
    assert not [p for p in tmp_path.iterdir() if TEMP_TAG in p.name]


def test_a_set_of_files_lands_together(tmp_path):
    with atomic_files(tmp_path / "a.html", tmp_path / "a.csv") as (html, csv):
        html.write_text("h")
        csv.write_text("c")
    assert (tmp_path / "a.html").read_text() == "h" and (tmp_path / "a.csv").read_text() == "c"
    write_text_atomic(tmp_path / "a.csv", "new")
    assert listing(tmp_path) == ["a.csv", "a.html"] and (tmp_path / "a.csv").read_text() == "new"


def test_temporaries_of_a_killed_process_are_removed_later(tmp_path):
    dead_pid = 2 ** 22 + 12345  # above the kernel's pid_max default: no such process
    stale = tmp_path / f".run.{outputs.HOST}.{dead_pid}{TEMP_TAG}"
    stale.mkdir()
    (stale / "model.pt").write_text("half")
    live = tmp_path / f".other.{outputs.HOST}.{os.getppid()}{TEMP_TAG}"  # a running process's work in progress
    live.write_text("busy")
    elsewhere = tmp_path / f".run.another-host.{dead_pid}{TEMP_TAG}"  # a sweep on another machine, shared disk
    elsewhere.write_text("busy there")
    foreign = tmp_path / ".hidden-user-file"
    foreign.write_text("never touched")
    remove_stale_temps(tmp_path)
    assert not stale.exists() and live.exists() and elsewhere.exists() and foreign.read_text() == "never touched"


def test_a_file_the_user_added_to_our_folder_is_never_deleted(tmp_path):
    target = tmp_path / "run"
    with atomic_dir(target) as tmp:
        (tmp / "model.pt").write_text("first")
    (target / "notes.txt").write_text("the student's notes")
    with pytest.raises(UserError, match="PruneLab did not write"):
        check_output_dir(target)
    with pytest.raises(UserError, match="PruneLab did not write"):
        with atomic_dir(target) as tmp:
            (tmp / "model.pt").write_text("second")
    assert (target / "notes.txt").read_text() == "the student's notes" and (target / "model.pt").read_text() == "first"
    assert not [p for p in tmp_path.iterdir() if TEMP_TAG in p.name]


def test_dot_and_trailing_slash_name_what_they_mean(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    for here in (".", "./", "..", str(tmp_path)):
        with pytest.raises(UserError, match="folder you are working in"):
            check_output_dir(here)
    with pytest.raises(UserError, match="never replaced"):
        with atomic_dir("."):
            pass
    assert check_output_dir("sub/..//run") == tmp_path / "work" / "run"
    with pytest.raises(UserError, match="is a folder"):
        check_output_file("newdir/", flag="--json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"] and not any((tmp_path / "work").iterdir())
