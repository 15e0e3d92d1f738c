"""The Dataset every front end and engine module passes around: splits, shape, normalisation, loaders."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from engine.data.common import Normalization, Shape, stratified_indices
from engine.data.tensors import TensorLoader
from engine.errors import UserError


@dataclass
class Dataset:
    """A dataset with train/val/test splits, converted to one input shape and normalisation."""

    name: str
    spec: str
    class_names: tuple[str, ...]
    native_shape: Shape
    input_shape: Shape
    norm: Normalization
    splits: dict = field(repr=False, default_factory=dict)
    kind: str = "tensor"  # "tensor" (in memory) or "folder" (files read lazily)
    flip: bool = True  # horizontal flips are safe augmentation for this data
    warnings: tuple[str, ...] = ()  # one line each, for the user: e.g. damaged files that were left out
    # The decoding workers of a folder dataset, started on first use; each adapted copy has its own.
    _pool: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def adapted(self, input_shape: Shape | None = None, norm: Normalization | None = None) -> "Dataset":
        """The same data converted to a model's input shape and normalisation (no copy)."""
        shape = tuple(input_shape) if input_shape else self.input_shape
        new_norm = (norm or self.norm).adapted(shape[0])
        return replace(self, input_shape=shape, norm=new_norm)

    def split_size(self, split: str) -> int:
        """Number of images in a split."""
        return len(self._split(split))

    def _split(self, split: str):
        if split not in self.splits:
            raise UserError(f"unknown split {split!r}; valid: {', '.join(self.splits)}")
        return self.splits[split]

    def sample(self, split: str, limit: int | None) -> list[int] | None:
        """The positions a `limit`-image evaluation of `split` uses (None: the whole split).

        A stratified, seeded sample (`common.stratified_indices`): every class in proportion, the same
        images for this split in every run, so figures before and after pruning are comparable.
        """
        data = self._split(split)
        if limit is None or limit >= len(data):
            return None
        return stratified_indices(data.targets(), limit).tolist()

    def loader(self, split: str, batch_size: int = 128, shuffle: bool = False, augment: bool = False,
               limit: int | None = None, seed: int = 0, drop_last: bool = False, workers: int | None = None,
               indices: list[int] | None = None):
        """An iterable of normalised (images, labels) batches.

        `limit` takes the stratified sample of `sample` (never the first N: folders are sorted by
        class); `indices` names the positions outright (e.g. one image to show). Folder datasets decode
        in worker processes (`workers`: None picks from the free cores, see
        `engine.data.loading.num_workers`); the batches are the same whatever the number of workers.
        """
        data = self._split(split)
        picks = indices if indices is not None else self.sample(split, limit)
        if self.kind == "tensor":
            if picks is not None:
                data = data.subset(torch.as_tensor(picks, dtype=torch.long))
            return TensorLoader(data, batch_size, self.input_shape, self.norm, shuffle, augment, seed,
                                drop_last, flip=self.flip)
        from engine.data.loading import FolderPool

        pool = self._pool
        if not isinstance(pool, FolderPool) or not pool.serves(self.input_shape, self.norm, self.flip):
            pool = self._pool = FolderPool(self.splits, self.input_shape, self.norm, self.flip)
        return pool.loader(split, batch_size, shuffle, augment, picks, seed, drop_last, workers)

    def close(self) -> None:
        """Stop this dataset's loader workers now, rather than when it is garbage-collected."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
