"""ImageFolder trees: scanning (with progress events), damaged-file checks, splits and statistics.

A scan is a generator of `Progress` events that returns the Dataset, so the GUI's load job can relay
it (`data = yield from image_folder_events(...)`) and the CLI can print it; `load_image_folder` drains it.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator, Sequence

import numpy as np
import torch

from engine.data.common import IMAGE_EXTENSIONS, Normalization, Shape, _folder, _reason, shown
from engine.data.dataset import Dataset
from engine.data.loading import decode
from engine.data.tensors import convert_batch
from engine.errors import UserError
from engine.events import Progress, result_of

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last bytes of every complete PNG
JPEG_START, JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
MIN_IMAGE_BYTES = 64  # below this a PNG or JPEG cannot hold its headers; head and tail would overlap
PROGRESS_EVERY_S = 0.1  # a scan reports at most this often (plus its first and last step)

Samples = list[tuple[str, int]]


def _decode(path: str) -> torch.Tensor | None:
    """Pixels of one image at full size (kept for callers of the old name)."""
    return decode(path)


def unreadable_reason(path: str) -> str | None:
    """Why an image file cannot be used ("empty file", "truncated: …", "not an image"), or None if it looks whole.

    The check must stay cheap, since it runs on every file when a folder is opened: PNG and JPEG (nearly
    every dataset) are accepted from their first and last bytes alone: a complete PNG ends with its IEND
    chunk, a complete JPEG with the EOI marker, and a cut-off copy or download lacks them, which PIL's
    `verify()` does not notice for JPEG. Files that fail this test (including PNG/JPEG with trailing bytes)
    are decoded in full before being refused; other formats get PIL's header parse and `verify()`. What
    passes here yet cannot be decoded (a garbled middle) is dropped from its batch by the loader.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO named x.png must not hang us
        try:
            size = os.fstat(fd).st_size
            head = os.pread(fd, 24, 0)
            tail = os.pread(fd, 16, max(0, size - 16))
        finally:
            os.close(fd)
    except OSError as exc:
        return _reason(exc.strerror or exc)
    if size == 0:
        return "empty file"
    if size >= MIN_IMAGE_BYTES:
        if head.startswith(PNG_SIGNATURE) and tail.endswith(PNG_END):
            return size_reason(int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"))
        if head.startswith(JPEG_START) and JPEG_END in tail:
            return _jpeg_size_reason(path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if (too_big := size_reason(*img.size)) is not None:
                return too_big
            if head.startswith((PNG_SIGNATURE, JPEG_START)):
                img.load()  # no end marker: only a full decode can tell a truncated file from trailing bytes
            else:
                img.verify()
    except UnidentifiedImageError:
        if head.startswith((PNG_SIGNATURE, JPEG_START)):
            return f"truncated {'PNG' if head.startswith(PNG_SIGNATURE) else 'JPEG'} header"
        return "not an image"
    except Exception as exc:  # noqa: BLE001 - see _decode
        return _reason(exc)
    return None



MAX_ASPECT = 50  # longer side over shorter: past this, resizing the shorter side makes an enormous image


def size_reason(width: int, height: int) -> str | None:
    """Why an image of this size (from its header) is left out, or None: above PIL's decompression-bomb limit,
    too elongated for the resize policy, or more than the memory budget could decode."""
    from PIL import Image

    from engine.budget import current_limit

    pixels = width * height
    limit = Image.MAX_IMAGE_PIXELS or pixels
    if pixels > limit:
        return f"{width}×{height} pixels, above the {limit / 1e6:.0f}-megapixel limit (a decompression bomb?)"
    if min(width, height) == 0 or max(width, height) > MAX_ASPECT * min(width, height):
        return f"{width}×{height} pixels, too elongated to resize (more than {MAX_ASPECT}:1)"
    if pixels * 3 * 4 * 2 > current_limit():  # 8-bit decode, float copy and a resized copy
        return f"{width}×{height} pixels, more than the memory limit can decode"
    return None


def _jpeg_size_reason(path: str) -> str | None:
    """size_reason for a JPEG, whose size PIL reads from its header without decoding."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return size_reason(*img.size)
    except Exception:  # noqa: BLE001 - the loader drops what cannot be opened
        return None


class _FolderImages:
    """The image files of one split with their labels; decoding happens in `engine.data.loading`."""

    def __init__(self, samples: Sequence[tuple[str, int]]):
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def targets(self) -> np.ndarray:
        """Labels of every listed image."""
        return np.array([s[1] for s in self.samples], dtype=np.int64)


class _Ticker:
    """Progress events for one phase, at most every PROGRESS_EVERY_S besides the first and the last."""

    def __init__(self, phase: str, total: int, message: str):
        self.phase, self.total, self.message, self.last = phase, total, message, 0.0

    def __call__(self, done: int, message: str | None = None, force: bool = False) -> list[Progress]:
        now = time.monotonic()
        if not (force or done == 0 or done == self.total or now - self.last >= PROGRESS_EVERY_S):
            return []
        self.last = now
        return [Progress(self.phase, done, self.total, message or self.message)]


def _list_dir(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError as exc:
        raise UserError(f"cannot read folder {shown(path)}: {_reason(exc.strerror or exc)}; "
                        "fix its permissions") from None


def _raise_walk_error(exc: OSError) -> None:
    raise UserError(f"cannot read folder {shown(exc.filename)}: {_reason(exc.strerror or exc)}; "
                    "fix its permissions")


@dataclass
class _ScanLog:
    """What a folder scan met: image files seen and the damaged ones left out (path, reason)."""

    seen: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)  # links that lead out of the dataset's folder, not followed

    def warning(self, root: Path) -> tuple[str, ...]:
        """Lines for Dataset.warnings (none when nothing was left out)."""
        lines = []
        if n := len(self.skipped):
            lines.append(f"skipped {n} damaged image file{'s' if n > 1 else ''} of {self.seen} in "
                         f"{shown(root)} (first {shown(self.skipped[0][0])}: {self.skipped[0][1]})")
        if n := len(self.outside):
            lines.append(f"left out {n} link{'s' if n > 1 else ''} leading out of {shown(root)} (first "
                         f"{shown(self.outside[0])}): a dataset is read from its own folder only")
        return tuple(lines)


def _inside(path: str, top: str) -> bool:
    """True when `path`, links resolved, lies in the folder `top` (already resolved)."""
    real = os.path.realpath(path)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def _class_folders(root: Path, log: _ScanLog | None = None, top: Path | None = None) -> list[str]:
    """Class folder names under `root`; a link to a folder outside `top` (the dataset) is left out and logged."""
    names, real_top = [], os.path.realpath(top or root)
    for e in _list_dir(root):
        if e.name.startswith(".") or not e.is_dir():
            continue
        if e.is_symlink() and not _inside(e.path, real_top):
            if log is not None:
                log.outside.append(e.path)
            continue
        names.append(e.name)
    return sorted(names)


def _list_images(roots: dict[str, Path], classes: list[str], log: _ScanLog,
                 top: Path) -> Generator[Progress, None, dict]:
    """Candidate image files of every class under every root: {key: [[path, ...] per class]}; files that are
    links leading out of `top` are left out (and logged)."""
    listed, found, real_top = {}, 0, os.path.realpath(top)
    tick = _Ticker("scan", 0, "listing image files")
    yield from tick(0, force=True)
    for key, root in roots.items():
        listed[key] = []
        for name in classes:
            paths = []
            for dirpath, _, files in sorted(os.walk(root / name, onerror=_raise_walk_error)):
                # Dot files are not images even with an image extension (macOS writes "._x.png" metadata).
                for f in sorted(files):
                    if f.startswith(".") or not f.lower().endswith(IMAGE_EXTENSIONS):
                        continue
                    path = os.path.join(dirpath, f)
                    if os.path.islink(path) and not _inside(path, real_top):
                        log.outside.append(path)
                    else:
                        paths.append(path)
            listed[key].append(paths)
            found += len(paths)
            yield from tick(found, f"listing image files ({found} found)")
    return listed


def _check_images(listed: dict, log: _ScanLog) -> Generator[Progress, None, dict]:
    """The readable files of each class ({key: [(good paths, first damaged or None) per class]})."""
    total = sum(len(p) for per_class in listed.values() for p in per_class)
    tick = _Ticker("scan", total, "checking image files")
    yield from tick(0, force=True)
    checked = {}
    for key, per_class in listed.items():
        checked[key] = []
        for paths in per_class:
            good, first_bad = [], None
            for path in paths:
                log.seen += 1
                reason = unreadable_reason(path)
                if reason is None:
                    good.append(path)
                else:
                    log.skipped.append((path, reason))
                    first_bad = first_bad or (path, reason)
                yield from tick(log.seen, f"checking image files ({log.seen} of {total})")
            checked[key].append((good, first_bad))
    if total:
        yield from tick(total, f"checked {total} image files", force=True)
    return checked


def _samples(root: Path, classes: list[str], checked: list, log: _ScanLog, train: bool) -> Samples:
    """The (path, label) list of one root; refuses too few images or a class left without any."""
    samples = [(path, label) for label, (good, _) in enumerate(checked) for path in good]
    if train and len(samples) < 3:
        damaged = f" ({len(log.skipped)} damaged, first {shown(log.skipped[0][0])})" if log.skipped else ""
        raise UserError(f"{shown(root)} holds fewer than 3 images in class sub-folders{damaged}; "
                        "expected PATH/<class>/<image>.png")
    if train and len(classes) < 2:
        raise UserError(f"{shown(root)} needs at least two class folders; found {len(classes)}")
    for name, (good, bad) in zip(classes, checked):
        if good:
            continue
        if bad:
            raise UserError(f"class folder {shown(root / name)} has no readable image (first damaged "
                            f"{shown(bad[0])}: {bad[1]}); replace the files or remove the folder")
        raise UserError(f"class folder {shown(root / name)} holds no images; add images or remove the folder")
    return samples


def _roots(root: Path, log: _ScanLog) -> tuple[dict[str, Path], list[str]]:
    """Where the splits live ({"train": .., "val": .., "test": ..} or {"all": ..}) and the class names."""
    sub = {name: root / name for name in ("train", "val", "test")
           if (root / name).is_dir() and _inside(str(root / name), os.path.realpath(root))}
    if "train" in sub and len(sub) > 1:
        classes = _class_folders(sub["train"], log, root)
        if not classes:
            raise UserError(f"{shown(sub['train'])} has no class folders; expected PATH/<class>/<image>.png")
        for name in ("val", "test"):
            if name in sub and _class_folders(sub[name], top=root) != classes:
                raise UserError(f"{shown(sub[name])} has other class folders than {shown(sub['train'])}; "
                                "make them match")
        roots = sub
    else:
        # A lone train/ folder holds the class folders: split it by seed (not one class named "train").
        base = sub["train"] if _class_folders(root, top=root) == ["train"] else root
        roots, classes = {"all": base}, _class_folders(base, log, root)
        if not classes:
            raise UserError(f"{shown(base)} has no class folders; expected PATH/<class>/<image>.png")
    return roots, classes


def image_folder_events(path: Path, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                        input_shape: Shape | None = None) -> Generator[Progress, None, Dataset]:
    """Scan an ImageFolder tree, yielding Progress ("scan", then "statistics"); returns the Dataset.

    The tree is either train/ with val/ and/or test/, or one folder split by seed. Damaged image
    files are left out and counted in `Dataset.warnings` (see `unreadable_reason`).
    """
    root = _folder(Path(path), "an image folder")
    log = _ScanLog()
    roots, classes = _roots(root, log)
    listed = yield from _list_images(roots, classes, log, root)
    checked = yield from _check_images(listed, log)
    if "all" not in roots:
        splits = {"train": _samples(roots["train"], classes, checked["train"], log, train=True)}
        for name in ("val", "test"):
            if name in roots:
                splits[name] = _samples(roots[name], classes, checked[name], log, train=False)
        splits.setdefault("val", splits.get("test"))
        splits.setdefault("test", splits["val"])
    else:
        samples = _samples(roots["all"], classes, checked["all"], log, train=True)
        perm = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed)).tolist()
        n_test = max(1, int(len(samples) * test_fraction))
        n_val = max(1, int(len(samples) * val_fraction))
        pick = lambda ids: [samples[i] for i in sorted(ids)]  # noqa: E731 - tiny local helper
        splits = {"test": pick(perm[:n_test]), "val": pick(perm[n_test:n_test + n_val]),
                  "train": pick(perm[n_test + n_val:])}
    if not splits["train"]:
        raise UserError(f"{shown(root)} has no training images; expected PATH/<class>/<image>.png")
    native = _native_shape(splits["train"])
    side = min(max(native[1], native[2]), 224)
    shape = tuple(input_shape) if input_shape else (native[0], side, side)
    folder = {k: _FolderImages(v) for k, v in splits.items()}
    norm = yield from _folder_stats(folder["train"], shape)
    return Dataset(root.name, f"imagefolder:{path}", tuple(classes), native, shape, norm, folder, kind="folder",
                   warnings=log.warning(root))


def load_image_folder(path: Path, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                      input_shape: Shape | None = None, progress=None) -> Dataset:
    """`image_folder_events` run to its end; `progress` (optional) is called with each Progress event."""
    return result_of(image_folder_events(path, val_fraction, test_fraction, seed, input_shape), progress)


def _native_shape(samples: Sequence[tuple[str, int]]) -> Shape:
    """Channels and size of the first training image that opens (grey images give one channel)."""
    from PIL import Image

    for path, _ in samples[:50]:
        try:
            with Image.open(path) as first:
                channels = 1 if first.mode in ("L", "I", "I;16", "1") else 3
                return channels, first.size[1], first.size[0]
        except Exception:  # noqa: BLE001 - see decode; the loader drops such files
            continue
    raise UserError(f"none of the first training images can be opened (first {shown(samples[0][0])}); "
                    "check the image files")


def _folder_stats(images: _FolderImages, shape: Shape, max_images: int = 500,
                  chunk: int = 64) -> Generator[Progress, None, Normalization]:
    """Per-channel mean/std of up to `max_images` evenly spaced training images, after the resize policy.

    The statistics are those of what the model will see (shorter side resized, centre crop), summed in
    float64 over chunks, so memory stays bounded by `chunk` images whatever the folder holds.
    """
    picks = range(0, len(images), max(1, len(images) // max_images))
    tick = _Ticker("statistics", len(picks), "measuring the images' mean and spread")
    sums = torch.zeros(2, shape[0], dtype=torch.float64)  # Σx and Σx² per channel
    count, pending = 0, []

    def flush() -> None:
        nonlocal count
        x = torch.cat(pending).double()
        pending.clear()
        sums[0] += x.sum(dim=(0, 2, 3))
        sums[1] += x.square().sum(dim=(0, 2, 3))
        count += x.numel() // shape[0]

    for done, i in enumerate(picks):
        yield from tick(done)
        x = decode(images.samples[i][0], shape[1:])
        if x is None:
            continue  # damaged inside: the loader drops it too
        pending.append(convert_batch(x[None].float().div_(255.0), shape))
        if len(pending) >= chunk:
            flush()
    if pending:
        flush()
    yield from tick(len(picks))
    if count < 2:
        raise UserError(f"none of the sampled training images can be decoded (first {shown(images.samples[0][0])}); "
                        "check the image files")
    mean = sums[0] / count
    std = ((sums[1] - count * mean.square()) / (count - 1)).clamp_min(0).sqrt().clamp_min(1e-3)
    return Normalization(tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std))
