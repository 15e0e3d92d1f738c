"""What every dataset module shares: spec parsing, one-line text for messages, folder checks, statistics."""
from __future__ import annotations

import os
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import UserError

SPEC_HELP = "valid dataset specs: fashion-mnist, imagefolder:PATH, cifar10:PATH"
SCHEMES = ("fashion-mnist", "imagefolder", "cifar10")
SCHEME_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist"}
MAX_PATH_CHARS = 4096  # Linux PATH_MAX: longer text cannot name a file
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

Shape = tuple[int, int, int]


def _breaks_line(ch: str) -> bool:
    """Control characters and line/paragraph separators: they would split or garble a one-line message."""
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp")


def shown(text: object, limit: int = 200) -> str:
    """Text (usually a path) made safe for a one-line message: odd characters escaped, long text shortened."""
    s = str(text)
    if any(_breaks_line(ch) for ch in s):
        s = ascii(s)
    return s if len(s) <= limit else s[:limit - 1] + "…"


def _reason(exc: object) -> str:
    """An exception's message (or any text) on one short line: library messages may span lines or be empty."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return shown(text, 120)


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec: one of SCHEMES and, where given, a path."""

    scheme: str
    path: str | None = None

    def __str__(self) -> str:
        return self.scheme if self.path is None else f"{self.scheme}:{self.path}"

    @classmethod
    def parse(cls, spec: str) -> "DatasetSpec":
        """`parse_dataset_spec`, the one parser of dataset specs."""
        return parse_dataset_spec(spec)


def parse_dataset_spec(spec: str) -> DatasetSpec:
    """Parse `fashion-mnist[:DIR]`, `imagefolder:PATH` or `cifar10:PATH`; touches no file."""
    if not isinstance(spec, str):
        raise UserError(f"dataset spec must be text, not {type(spec).__name__}; {SPEC_HELP}")
    quoted = shown(repr(spec), 80)
    kind, _, path = spec.partition(":")
    kind = kind.strip().lower()
    scheme = SCHEME_ALIASES.get(kind, kind)
    if scheme not in SCHEMES:
        raise UserError(f"unknown dataset spec {quoted}; {SPEC_HELP}")
    path = path.strip()
    if not path:
        if scheme == "fashion-mnist":
            return DatasetSpec(scheme)
        raise UserError(f"dataset spec {quoted} names no path; {SPEC_HELP}")
    if any(_breaks_line(ch) for ch in path):
        raise UserError(f"dataset path in {quoted} contains a control character; {SPEC_HELP}")
    if len(path) > MAX_PATH_CHARS:
        raise UserError(f"dataset path in {quoted} is {len(path)} characters long, more than any path "
                        f"({MAX_PATH_CHARS}); {SPEC_HELP}")
    return DatasetSpec(scheme, path)


def _folder(path: Path, what: str) -> Path:
    """`path` if it is a folder we may list, else a UserError naming it (`what`: "an image folder")."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"{shown(path)} is not {what}: it does not exist; {SPEC_HELP}") from None
    except (OSError, ValueError) as exc:  # too long a name, a loop of links, an embedded NUL
        raise UserError(f"cannot open {shown(path)}: {_reason(exc)}; {SPEC_HELP}") from None
    if not stat.S_ISDIR(mode):
        raise UserError(f"{shown(path)} is not {what}: it is a file; {SPEC_HELP}")
    if not os.access(path, os.R_OK | os.X_OK):
        raise UserError(f"cannot read {shown(path)}: permission denied; fix its permissions")
    return path



@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and standard deviation, in the [0, 1] pixel scale."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def adapted(self, channels: int) -> "Normalization":
        """The same statistics for another channel count (grey <-> RGB)."""
        if len(self.mean) == channels:
            return self
        m = float(np.mean(self.mean))
        s = float(np.mean(self.std))
        return Normalization((m,) * channels, (s,) * channels)


EVAL_SAMPLE_SEED = 0  # one fixed seed: a limited evaluation sees the same images in every run and process
# The sampling's name in the keys of stored results evaluated on a limited sample, so a result of another
# sampling (the first N images, before this one) is never reused beside one of this sampling.
EVAL_SAMPLING = f"stratified-pcg64-{EVAL_SAMPLE_SEED}"


def stratified_indices(labels, limit: int, seed: int = EVAL_SAMPLE_SEED) -> np.ndarray:
    """Sorted positions of a `limit`-image sample of `labels` with every class in proportion.

    Each class gets its share of `limit` (largest remainders first) and at least one image when the
    limit allows one per class; below that, as many classes as possible get one each (the largest). Which images of a class
    are taken is drawn from `seed` with numpy's PCG64, so the sample depends only on the labels, the
    limit and the seed: the same before and after pruning, across runs and processes (no hashing).
    The whole split (in order) when `limit` covers it.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    n = len(labels)
    if limit >= n:
        return np.arange(n)
    if limit <= 0:
        return np.zeros(0, dtype=np.int64)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    rng = np.random.Generator(np.random.PCG64(seed))
    tie = rng.permutation(len(classes))  # a seeded order for classes with equal claims
    quota = limit * counts / n
    if limit < len(classes):  # fewer images than classes: one each for as many classes as can have one
        take = np.zeros(len(classes), dtype=np.int64)
        take[np.lexsort((tie, -counts))[:limit]] = 1
    else:
        take = np.maximum(np.floor(quota).astype(np.int64), 1)
    while take.sum() < limit:  # one more image to the class furthest below its share that has one left
        gap = np.where(take < counts, quota - take, -np.inf)
        take[np.lexsort((tie, -gap))[0]] += 1
    while take.sum() > limit:  # the minimum of one overshot: one fewer from the class furthest above its share
        excess = np.where(take > 1, take - quota, -np.inf)
        take[np.lexsort((tie, -excess))[0]] -= 1
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    picked = [m[rng.permutation(len(m))[:k]] for m, k in zip(members, take) if k]
    return np.sort(np.concatenate(picked))
