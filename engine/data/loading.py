"""Batches of image files, decoded and resized in worker processes so a folder of photos keeps up with the model.

Each item is decoded (JPEGs at a reduced scale when they are much larger than the model's input),
resized by the shared policy (`engine.data.tensors.convert_batch`: shorter side, then centre crop),
optionally shifted and flipped, and normalised. The order of the items and every augmentation seed
are drawn in the main process from the loader's seed and travel with the item index, so a loader
gives the same batches with no worker or with four.

Memory: each worker is a separate process (started from a fork server that has imported torch once,
so starting one costs milliseconds, not torch's start-up; the fork server is used rather than `fork`
because the GUI iterates loaders in a QThread, and forking a threaded process can deadlock). Workers
hold a copy of the split's file list and a few decoded batches each (`prefetch_factor`). The memory
watchdog (`engine.budget`) samples this process only: **workers count against no budget today**, so
their number is capped (`MAX_WORKERS`) and `PRUNELAB_LOADER_WORKERS=0` decodes in the job's own thread.
A folder dataset keeps its workers between loaders (persistent workers) until it is closed or dropped.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from typing import Iterator, Sequence

import numpy as np
import torch

from engine.data.common import Normalization, Shape, shown
from engine.data.tensors import convert_batch, cover_size, quantised, random_crop_flip
from engine.errors import UserError

MAX_WORKERS = 4  # more rarely helps a single model, and each worker holds its own memory
MIN_IMAGES_FOR_WORKERS = 256  # below this, starting processes costs more than decoding here
WORKERS_ENV = "PRUNELAB_LOADER_WORKERS"


def num_workers(images: int | None = None) -> int:
    """Worker processes for a folder loader: the cores this process may use, less one for the model.

    `PRUNELAB_LOADER_WORKERS` overrides the choice (0: decode in the calling thread). The load
    average is not consulted: it lags by a minute and counts the model's own threads.
    """
    text = os.environ.get(WORKERS_ENV, "").strip()
    if text:
        if not text.isdigit():
            raise UserError(f"{WORKERS_ENV}={shown(text, 20)} is not a whole number; set it to 0..{MAX_WORKERS}")
        return min(int(text), MAX_WORKERS)
    if images is not None and images < MIN_IMAGES_FOR_WORKERS:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(MAX_WORKERS, cores - 1))


def decode(path: str, target: tuple[int, int] | None = None) -> torch.Tensor | None:
    """Pixels of one image as 3×H×W uint8, or None when the file cannot be decoded.

    With `target` (height, width), a JPEG is decoded at the smallest of its built-in scales (1/2, 1/4,
    1/8) that still covers the target after the resize policy: a 12-megapixel photo for a 224×224 model
    decodes about eight times faster, and the result is then resized as any other image.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            if target is not None and img.format == "JPEG":
                h, w = cover_size(img.height, img.width, target)
                img.draft("RGB", (w, h))
            if img.mode.startswith("I"):  # 16-bit grey: scaled to 8 bits (convert() would clip it at 255)
                grey = np.asarray(img, dtype=np.float64)
                top = 65535.0 if img.mode.startswith("I;16") or grey.max(initial=0) > 255 else 255.0
                grey = np.clip(np.rint(grey * (255.0 / top)), 0, 255).astype(np.uint8)
                return torch.from_numpy(grey)[None].expand(3, -1, -1).contiguous()
            rgb = img if img.mode == "RGB" else img.convert("RGB")  # convert() would copy an RGB image
            return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)
    except Exception:  # noqa: BLE001 - PIL plugins raise many types on bad data; a bad file must not kill a worker
        return None


class FolderTransform:
    """One decoded image to a normalised model input: the resize policy, then optional shift and flip."""

    def __init__(self, shape: Shape, norm: Normalization | None, flip: bool = True):
        self.shape, self.flip = shape, flip
        self.pad = max(1, shape[1] // 14)
        norm = norm.adapted(shape[0]) if norm is not None else None
        self.mean = torch.tensor(norm.mean).view(-1, 1, 1) if norm else None
        self.std = torch.tensor(norm.std).view(-1, 1, 1) if norm else None

    def __call__(self, x: torch.Tensor, augment_seed: int | None = None) -> torch.Tensor:
        x = convert_batch(x[None].float().div_(255.0), self.shape)
        if augment_seed is not None:
            # Training batches are rounded to 8 bits after the resize, as the fine-tuning cache
            # (`engine.data.cache`) stores them, so a cached epoch draws the very same tensors. Evaluation stays
            # unrounded: it must match what the exported model's preprocessing computes.
            x = random_crop_flip(quantised(x), torch.Generator().manual_seed(augment_seed), pad=self.pad,
                                 flip=self.flip)
        x = x[0].contiguous()
        return (x - self.mean) / self.std if self.mean is not None else x


class _Items(torch.utils.data.Dataset):
    """Every split's files; an index is (split, position, augmentation seed or None). Picklable for workers."""

    def __init__(self, splits: dict[str, Sequence[tuple[str, int]]], transform: FolderTransform):
        self.splits, self.transform = splits, transform

    def __len__(self) -> int:
        return sum(len(s) for s in self.splits.values())

    def __getitem__(self, index: tuple[str, int, int | None]):
        split, i, seed = index
        path, label = self.splits[split][i]
        x = decode(path, self.transform.shape[1:])
        return None if x is None else (self.transform(x, seed), label)


def _collate_readable(batch: list):
    """default_collate over the items that decoded; None when none did (module level: workers pickle it)."""
    items = [item for item in batch if item is not None]
    return torch.utils.data.default_collate(items) if items else None


class _Plan:
    """The batch sampler of a persistent DataLoader: the main process sets its batches before each pass."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, int, int | None]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _context():
    """The fork server where there is one (see the module docstring); `spawn` elsewhere and when frozen."""
    if getattr(sys, "frozen", False) or "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "engine.data.loading"])  # imported once, in the server
    return ctx


class FolderPool:
    """The loaders of one folder dataset at one shape and normalisation, sharing one set of workers."""

    def __init__(self, splits: dict, shape: Shape, norm: Normalization, flip: bool = True):
        self.key = (tuple(shape), norm, flip)
        self.splits = {name: getattr(s, "samples", s) for name, s in splits.items()}
        self.items = _Items(self.splits, FolderTransform(tuple(shape), norm, flip))
        self.plan = _Plan()
        self.workers = 0
        self.dataloader: torch.utils.data.DataLoader | None = None
        self.busy = False

    def serves(self, shape: Shape, norm: Normalization, flip: bool) -> bool:
        """Whether this pool converts to the given shape and normalisation."""
        return self.key == (tuple(shape), norm, flip)

    def loader(self, split: str, batch_size: int, shuffle: bool, augment: bool, picks: Sequence[int] | None,
               seed: int, drop_last: bool, workers: int | None) -> "FolderLoader":
        """A loader over `split` (only the positions `picks`, when given: see Dataset.sample); its order and
        augmentation are fixed by `seed`."""
        positions = list(range(len(self.splits[split]))) if picks is None else list(picks)
        return FolderLoader(self, split, positions, batch_size, shuffle, augment, seed, drop_last,
                            num_workers(len(positions)) if workers is None else max(0, workers))

    def batches(self, split: str, positions: list[int], batch_size: int, shuffle: bool, augment: bool,
                generator: torch.Generator, drop_last: bool) -> list[list[tuple[str, int, int | None]]]:
        """The indices of every batch, drawn here so that workers only decode."""
        n = len(positions)
        order = [positions[i] for i in torch.randperm(n, generator=generator).tolist()] if shuffle else positions
        seeds = torch.randint(0, 2**31 - 1, (n,), generator=generator).tolist() if augment else [None] * n
        items = [(split, i, s) for i, s in zip(order, seeds)]
        count = n // batch_size if drop_last else -(-n // batch_size)
        return [items[b * batch_size:(b + 1) * batch_size] for b in range(count)]

    def run(self, plan: list, workers: int) -> Iterator:
        """Collated batches of `plan`: in worker processes when `workers` > 0 and the pool is free."""
        if workers <= 0 or self.busy:  # nested use (a check inside a pass) decodes here
            for batch in plan:
                yield _collate_readable([self.items[i] for i in batch])
            return
        if self.dataloader is None or self.workers != workers:
            self.close()
            self.workers = workers
            self.dataloader = torch.utils.data.DataLoader(
                self.items, batch_sampler=self.plan, num_workers=workers, collate_fn=_collate_readable,
                persistent_workers=True, multiprocessing_context=_context(), prefetch_factor=2)
        self.plan.batches = plan
        self.busy = True
        try:
            yield from self.dataloader
        except GeneratorExit:  # the caller stopped early: the next pass resets the workers
            raise
        except RuntimeError as exc:
            self.close()
            if "DataLoader worker" in str(exc):
                raise UserError(f"an image-decoding worker process died ({shown(exc, 120)}); the machine may be "
                                f"out of memory: set {WORKERS_ENV}=0 or 1 and try again") from None
            raise
        except BaseException:  # cancelled, over budget: the workers may hold half a pass; start afresh
            self.close()
            raise
        finally:
            self.busy = False

    def close(self) -> None:
        """Stop the worker processes (they would also stop when the pool is garbage-collected)."""
        loader, self.dataloader = self.dataloader, None
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()


class FolderLoader:
    """Batches of image files; files that turn out not to decode are left out of their batch."""

    def __init__(self, pool: FolderPool, split: str, positions: list[int], batch_size: int, shuffle: bool,
                 augment: bool, seed: int, drop_last: bool, workers: int):
        self.pool, self.split, self.positions, self.batch_size = pool, split, positions, batch_size
        self.n = len(positions)
        self.shuffle, self.augment, self.seed, self.drop_last = shuffle, augment, seed, drop_last
        self.workers = workers
        self.generator = torch.Generator().manual_seed(seed)  # a second pass draws a new order, as torch's does

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        plan = self.pool.batches(self.split, self.positions, self.batch_size, self.shuffle, self.augment, self.generator,
                                 self.drop_last)
        for batch in self.pool.run(plan, self.workers):
            if batch is not None:
                yield batch
