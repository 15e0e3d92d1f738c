"""Writing results safely: outputs are checked before any work, and written whole or not at all.

Every file or folder PruneLab writes is first written under a hidden temporary name beside its
target (same file system, so the final rename is atomic), flushed to disk, then renamed into place.
A failure, Ctrl-C or SIGTERM removes the temporary; one left by `kill -9` or a power cut is removed
the next time something is written beside it (its name carries the writer's process id).
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from engine.errors import UserError, first_line
from engine.units import fmt_bytes

TEMP_TAG = ".prunelab-tmp"
MARKER = ".prunelab-output"  # marks a folder PruneLab wrote, so it may replace it later
HEADROOM = 16 * 1024 * 1024  # free space kept on top of an estimate
MIN_FREE = 1024 * 1024  # any output needs this much free space, checked before the work (a JSON file, a report)
FULL = (errno.ENOSPC, errno.EDQUOT)


def is_full(exc: BaseException, folder: Path) -> bool:
    """True for an error from a disk that filled up: ENOSPC itself, or a library's own write error (torch.save
    says "file write failed") while the folder has next to no space left."""
    if isinstance(exc, OSError):
        return exc.errno in FULL
    if isinstance(exc, RuntimeError) and "write" in str(exc).lower():
        try:
            return shutil.disk_usage(_existing_ancestor(folder)).free < MIN_FREE
        except OSError:
            return False
    return False


def full_disk(target: Path, exc: BaseException) -> UserError:
    """The one line for a disk (or quota) that filled up while `target` was written."""
    why = getattr(exc, "strerror", None) or first_line(exc)
    return UserError(f"no space left on the disk of {target} ({why}) while writing it; nothing was written: free "
                     "space there or choose another place")


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(target: str | Path, needed_bytes: int = 0, flag: str = "--out", folder: bool = False) -> Path:
    """Refuse, before any work, a target (a file, or a `folder` to create or fill) that cannot be written."""
    target = Path(target)
    base = _existing_ancestor(target if folder else target.parent)
    if not base.is_dir():
        raise UserError(f"{flag} {target}: {base} is a file, not a folder; choose a path inside a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        try:
            readonly = bool(os.statvfs(base).f_flag & os.ST_RDONLY)
        except OSError:
            readonly = False
        why = "is on a read-only file system" if readonly else "is not writable"
        raise UserError(f"{flag} {target}: {base} {why}; choose a folder you can write to")
    free = shutil.disk_usage(base).free
    needed = needed_bytes + HEADROOM if needed_bytes else MIN_FREE
    if free < needed:
        raise UserError(f"{flag} {target}: only {fmt_bytes(free)} free on {base}, about "
                        f"{fmt_bytes(needed)} needed; free space or choose another disk")
    return target


def check_output_file(target: str | Path, needed_bytes: int = 0, flag: str = "--out",
                      suffixes: Sequence[str] = ()) -> Path:
    """A file target: not a folder, its folder writable, its suffix one of `suffixes` when given."""
    text = str(target)
    target = _normal(target, flag)
    if target.is_dir() or text.endswith(("/", os.sep)):
        raise UserError(f"{flag} {text} is a folder; name a file{' ending in ' + suffixes[0] if suffixes else ''}")
    if suffixes and target.suffix.lower() not in suffixes:
        raise UserError(f"{flag} {text} should end in {' or '.join(suffixes)}")
    if target.exists() and not target.is_file():
        raise UserError(f"{flag} {text} exists and is not a regular file; choose another file name")
    if target.exists() and not os.access(target, os.W_OK):
        raise UserError(f"{flag} {text} exists and is read-only; choose another file name")
    return check_writable(target, needed_bytes, flag)


def _normal(target: str | Path, flag: str) -> Path:
    """An absolute path without `.`/`..` parts, so `--out .` names the folder it means."""
    path = Path(os.path.abspath(target))
    if not path.name:
        raise UserError(f"{flag} {target} names the file system's root; choose a folder inside it")
    return path


def is_prunelab_folder(path: Path) -> bool:
    """True for a folder PruneLab wrote and nobody added to: its marker lists every entry in it."""
    try:
        written = set(json.loads((path / MARKER).read_text()).get("files", ()))
        present = {p.name for p in path.iterdir()} - {MARKER}
    except (OSError, ValueError, AttributeError):
        return False
    return present <= written


def check_output_dir(target: str | Path, needed_bytes: int = 0, flag: str = "--out") -> Path:
    """A folder target: new, empty, or one PruneLab wrote before and nobody added to (replaced whole)."""
    text = str(target)
    target = _normal(target, flag)
    if target.exists() and not target.is_dir():
        raise UserError(f"{flag} {text} is a file; name a folder (for model.pt2, model.onnx, model.json, …)")
    if Path.cwd() == target or target in Path.cwd().parents:
        raise UserError(f"{flag} {text} is the folder you are working in; name a new folder, e.g. {flag} run1")
    if target.is_dir() and any(target.iterdir()) and not is_prunelab_folder(target):
        raise UserError(f"{flag} {text} holds files PruneLab did not write; choose a new or empty folder")
    return check_writable(target, needed_bytes, flag, folder=True)


HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def _temp_name(target: Path) -> Path:
    # host and process id: a temporary is judged abandoned only by the machine that wrote it
    return target.with_name(f".{target.name}.{HOST}.{os.getpid()}{TEMP_TAG}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: Path) -> None:
    """Remove temporaries that a killed PruneLab process left in `folder`."""
    try:
        entries = list(folder.glob(f".*{TEMP_TAG}"))
    except OSError:
        return
    for entry in entries:
        host, pid_text = entry.name[: -len(TEMP_TAG)].rsplit(".", 2)[-2:] if entry.name.count(".") >= 3 else ("", "")
        if host == HOST and pid_text.isdigit() and int(pid_text) != os.getpid() and not pid_alive(int(pid_text)):
            _remove(entry)


def remove_stale_dirs(root: Path, prefix: str) -> None:
    """Remove the folders `prefix`HOST.PID.* in `root` whose process is gone on this host (killed or crashed:
    its cleanup never ran); another live process's folder, and one named otherwise, stay."""
    for entry in root.glob(f"{prefix}*"):
        parts = entry.name[len(prefix):].split(".")
        if len(parts) == 3 and parts[0] == HOST and parts[1].isdigit() and int(parts[1]) != os.getpid() \
                and not pid_alive(int(parts[1])) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def process_temp_dir(prefix: str) -> Path:
    """A new temporary folder of this process's own (`prefix`HOST.PID.random), after removing those of
    processes that are gone."""
    remove_stale_dirs(Path(tempfile.gettempdir()), prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{HOST}.{os.getpid()}."))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync folders; the rename is still atomic
    finally:
        os.close(fd)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while a set is renamed into place, so it lands whole."""
    import signal

    held = {signal.SIGINT, signal.SIGTERM}
    try:
        # inside the try: an exception raised into this thread (the memory watchdog's) just after the block
        # must still unblock, or every process this one starts inherits a mask that ignores Ctrl-C
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, held)
        except (AttributeError, ValueError, OSError):  # no signal masks on this platform
            pass
        yield
    finally:
        unblock_signals()


def unblock_signals() -> None:
    """Let Ctrl-C and SIGTERM reach this thread: a blocked mask and an ignored Ctrl-C are both inherited from
    the parent (Python then never installs its own Ctrl-C handler), and the command line promises Ctrl-C."""
    import signal

    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    except (AttributeError, ValueError, OSError):  # no signal masks on this platform, or not the main thread
        pass


@contextmanager
def atomic_files(*targets: str | Path) -> Iterator[list[Path]]:
    """Yield temporary paths for `targets`; on success all are renamed into place, on any error none is."""
    finals = [Path(t) for t in targets]
    temps = [_temp_name(t) for t in finals]
    for final in finals:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(final.parent)
    try:
        yield temps
        for temp in temps:
            _fsync_path(temp)
        with _signals_deferred():
            for temp, final in zip(temps, finals):
                os.replace(temp, final)
        for folder in {f.parent for f in finals}:
            _fsync_path(folder)
    except (OSError, RuntimeError) as exc:
        if not is_full(exc, finals[0].parent):
            raise
        raise full_disk(finals[0], exc) from None
    finally:
        for temp in temps:
            if temp.exists():
                _remove(temp)


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `target` whole (a PruneLab folder or none)."""
    final = _normal(target, "output folder")
    if Path.cwd() == final or final in Path.cwd().parents:
        raise UserError(f"{final} is the folder PruneLab runs in; it is never replaced")
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final.parent)
    temp = _temp_name(final)
    _remove(temp)
    temp.mkdir()
    old = None
    try:
        yield temp
        written = sorted(p.name for p in temp.iterdir())
        (temp / MARKER).write_text(json.dumps({"written_by": "PruneLab", "files": written}) + "\n")
        for f in temp.iterdir():
            _fsync_path(f)
        _fsync_path(temp)
        if final.exists() and any(final.iterdir()) and not is_prunelab_folder(final):
            raise UserError(f"{final} now holds files PruneLab did not write; nothing was replaced")
        with _signals_deferred():
            if final.exists():
                old = final.with_name(f".{final.name}.old.{HOST}.{os.getpid()}{TEMP_TAG}")
                _remove(old)
                os.replace(final, old)
            os.replace(temp, final)
        _fsync_path(final.parent)
    except BaseException as exc:
        if old is not None and not final.exists():
            os.replace(old, final)  # put the previous set back
        if is_full(exc, final.parent):
            raise full_disk(final, exc) from None
        raise
    finally:
        if temp.exists():
            _remove(temp)
        if old is not None and old.exists():
            _remove(old)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write one text file whole or not at all."""
    with atomic_files(path) as (temp,):
        temp.write_text(text, encoding="utf-8")
    return Path(path)
