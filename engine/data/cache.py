"""A folder's images decoded and resized once per run, held as 8-bit pixels, so that fine-tuning epochs
cost what the model costs rather than what JPEG decoding and resizing cost.

The cache holds each image after the resize policy (`FolderTransform` without normalisation), rounded to
uint8: 150 KB per 224×224 RGB image. It lives in memory when that fits well inside the job's memory
budget (`engine.budget`), else in a memory-mapped file in a fresh temporary folder that is removed when
the cache is closed (or collected). Augmentation stays random per epoch: the loader draws the same order
and per-image shift/flip seeds as `engine.data.loading.FolderLoader`, so a cached pass gives the very
same batches as an uncached one (the uncached path rounds to 8 bits too), only faster.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from typing import Generator, Iterator, Sequence

import numpy as np
import torch

from engine.budget import current_limit, rss_bytes
from engine.data.common import shown
from engine.data.dataset import Dataset
from engine.data.loading import FolderTransform, _context, decode, num_workers
from engine.data.tensors import shift_draws, shift_flip, to_uint8
from engine.errors import UserError
from engine.events import CancelToken, Progress
from engine.units import fmt_bytes

MEMORY_SHARE = 0.5  # of the budget left free: above this the cache goes to a memory-mapped file


class _Decoded(torch.utils.data.Dataset):
    """(8-bit resized pixels or None, position) of one split's files; picklable for worker processes."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: FolderTransform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        x = decode(self.samples[i][0], self.transform.shape[1:])
        return (None if x is None else to_uint8(self.transform(x)), i)


def _keep(batch: list) -> list:
    return batch  # module level: worker processes pickle the collate function


class ImageCache:
    """uint8 images of some splits of one folder dataset, at its input shape; `close()` removes any file."""

    def __init__(self, lengths: dict[str, int], shape: tuple[int, int, int], in_memory: bool | None = None):
        total = sum(lengths.values())
        self.offsets, start = {}, 0
        for split, n in lengths.items():
            self.offsets[split] = start
            start += n
        self.nbytes = total * int(np.prod(shape))
        if in_memory is None:
            in_memory = self.nbytes <= MEMORY_SHARE * max(0, current_limit() - rss_bytes())
        self.folder: str | None = None
        if in_memory:
            self.images = torch.empty((total, *shape), dtype=torch.uint8)
        else:
            self.folder = tempfile.mkdtemp(prefix="prunelab-cache-")
            self._finalizer = weakref.finalize(self, shutil.rmtree, self.folder, True)
            free = shutil.disk_usage(self.folder).free
            if self.nbytes > free:
                self.close()
                raise UserError(f"caching the images needs {fmt_bytes(self.nbytes)} of temporary disk space and "
                                f"{shown(tempfile.gettempdir())} has {fmt_bytes(free)} free; free some space, set "
                                "TMPDIR to a larger disk")
            mm = np.memmap(os.path.join(self.folder, "images.u8"), dtype=np.uint8, mode="w+", shape=(total, *shape))
            self.images = torch.from_numpy(mm)
        self.labels = torch.zeros(total, dtype=torch.long)
        self.valid = torch.zeros(total, dtype=torch.bool)  # False: the file did not decode (left out of batches)

    @property
    def on_disk(self) -> bool:
        """Whether the pixels live in a memory-mapped temporary file."""
        return self.folder is not None

    def close(self) -> None:
        """Drop the pixels and remove the temporary folder, if any."""
        if hasattr(self, "images"):
            self.images = torch.empty(0, dtype=torch.uint8)  # lets go of the memory map
        if self.folder is not None:
            self._finalizer()
            self.folder = None


def cached_events(data: Dataset, splits: Sequence[str] = ("train",), cancel: CancelToken | None = None,
                  phase: str = "cache", in_memory: bool | None = None,
                  workers: int | None = None) -> Generator[Progress, None, "CachedDataset"]:
    """Decode and resize `splits` of a folder dataset once, yielding Progress; returns the CachedDataset
    (close it, or use it as a context manager, to remove its temporary file)."""
    if data.kind != "folder":
        raise UserError(f"only image folders are cached; {shown(data.spec)} is already in memory")
    shape = tuple(data.input_shape)
    samples = {s: getattr(data.splits[s], "samples", data.splits[s]) for s in dict.fromkeys(splits)}
    cache = ImageCache({s: len(v) for s, v in samples.items()}, shape, in_memory)
    try:
        transform = FolderTransform(shape, None, data.flip)
        total, done = sum(len(v) for v in samples.values()), 0
        yield Progress(phase, 0, total, "decoding and resizing the images once for this run")
        for split, items in samples.items():
            n_workers = num_workers(len(items)) if workers is None else workers
            loader = torch.utils.data.DataLoader(
                _Decoded(items, transform), batch_size=32, num_workers=n_workers, collate_fn=_keep,
                multiprocessing_context=_context() if n_workers else None)
            base = cache.offsets[split]
            cache.labels[base:base + len(items)] = torch.tensor([label for _, label in items], dtype=torch.long)
            for batch in loader:
                if cancel:
                    cancel.check()
                for x, i in batch:
                    if x is not None:
                        cache.images[base + i] = x
                        cache.valid[base + i] = True
                done += len(batch)
                yield Progress(phase, done, total, f"decoded {done} of {total} images once for this run")
    except BaseException:
        cache.close()
        raise
    return CachedDataset(data, cache)


def cached(data: Dataset, splits: Sequence[str] = ("train",), **options) -> "CachedDataset":
    """`cached_events` run to its end."""
    from engine.events import result_of

    return result_of(cached_events(data, splits, **options))


class CachedDataset:
    """A folder Dataset whose cached splits load from the cache; everything else is the Dataset's own."""

    def __init__(self, data: Dataset, cache: ImageCache):
        self.data, self.cache = data, cache

    def __getattr__(self, name: str):
        return getattr(self.data, name)

    def loader(self, split: str, batch_size: int = 128, shuffle: bool = False, augment: bool = False,
               limit: int | None = None, seed: int = 0, drop_last: bool = False, workers: int | None = None,
               indices: list[int] | None = None):
        """`Dataset.loader`, from the cache where `split` is cached (the same batches, faster)."""
        if split not in self.cache.offsets:
            return self.data.loader(split, batch_size, shuffle, augment, limit, seed, drop_last, workers, indices)
        picks = indices if indices is not None else self.data.sample(split, limit)
        positions = list(range(self.data.split_size(split))) if picks is None else list(picks)
        return CachedLoader(self, split, positions, batch_size, shuffle, augment, seed, drop_last)

    def close(self) -> None:
        """Remove the cache (the dataset itself stays usable)."""
        self.cache.close()

    def __enter__(self) -> "CachedDataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CachedLoader:
    """`FolderLoader`'s batches (order, augmentation seeds, damaged files left out) read from an ImageCache."""

    def __init__(self, owner: CachedDataset, split: str, positions: list[int], batch_size: int, shuffle: bool,
                 augment: bool, seed: int, drop_last: bool):
        self.cache, self.base = owner.cache, owner.cache.offsets[split]
        self.positions, self.batch_size = positions, batch_size
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        shape, self.flip = owner.data.input_shape, owner.data.flip
        transform = FolderTransform(tuple(shape), owner.data.norm, self.flip)
        self.pad = transform.pad
        self.mean = transform.mean[None] if transform.mean is not None else None
        self.std = transform.std[None] if transform.std is not None else None
        self.generator = torch.Generator().manual_seed(seed)  # drawn as FolderPool.batches draws

    def __len__(self) -> int:
        n = len(self.positions)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, g = len(self.positions), self.generator
        order = ([self.positions[i] for i in torch.randperm(n, generator=g).tolist()] if self.shuffle
                 else self.positions)
        seeds = torch.randint(0, 2**31 - 1, (n,), generator=g).tolist() if self.augment else None
        for b in range(len(self)):
            rows = torch.tensor(order[b * self.batch_size:(b + 1) * self.batch_size], dtype=torch.long) + self.base
            keep = self.cache.valid[rows]
            if not bool(keep.any()):
                continue
            x = self.cache.images[rows[keep]].float().div_(255.0)
            if seeds is not None:
                picked = [s for s, k in zip(seeds[b * self.batch_size:(b + 1) * self.batch_size], keep.tolist()) if k]
                draws = [shift_draws(1, torch.Generator().manual_seed(s), self.pad, self.flip) for s in picked]
                dy, dx = torch.cat([d[0] for d in draws]), torch.cat([d[1] for d in draws])
                mask = torch.cat([d[2] for d in draws]) if self.flip else None
                x = shift_flip(x, dy, dx, mask, self.pad)
            if self.mean is not None:
                x = (x - self.mean) / self.std
            yield x, self.cache.labels[rows[keep]]


class RunCache:
    """A folder dataset whose fine-tuning cache is built at the first `train()` of a run and reused by the
    next ones (an iterative run's steps) until `close()`. Every other use (calibration, BatchNorm
    re-estimation, evaluation) reads the dataset itself, unrounded."""

    def __init__(self, data: Dataset):
        self.data, self.cached = data, None

    def __getattr__(self, name: str):
        if name == "data":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.data, name)

    def cached_events(self, splits: Sequence[str], cancel: CancelToken | None = None,
                      phase: str = "cache") -> Generator[Progress, None, "CachedDataset"]:
        """The run's CachedDataset holding `splits`, built on the first call (and again only if a later call
        needs a split the first did not cache)."""
        if self.cached is None or not set(splits) <= set(self.cached.cache.offsets):
            self.close()
            self.cached = yield from cached_events(self.data, splits, cancel, phase)
        return self.cached

    def close(self) -> None:
        """Remove the cache, if one was built."""
        if self.cached is not None:
            self.cached.close()
            self.cached = None

    def __enter__(self) -> "RunCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
