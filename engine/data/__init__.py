"""Datasets: built-in Fashion-MNIST, ImageFolder and CIFAR-10 folders, splits and loaders.

Small datasets (Fashion-MNIST, CIFAR-10) live once in memory as uint8 tensors; splits are index
views into them and batches are converted (channels, size, augmentation, normalisation) on the fly,
so there is never a second copy of the data. Image folders are listed once and decoded lazily, in
worker processes (`loading`). Every path resizes the same way (`tensors.resize_crop`: shorter side,
then centre crop), in evaluation, calibration and fine-tuning alike.

Modules: `common` (specs, messages, Normalization), `tensors` (resize policy, in-memory splits),
`dataset` (Dataset), `fashion`, `cifar`, `folders` (scanning with progress), `loading` (workers), `cache`
(a folder decoded and resized once per fine-tuning run, as uint8).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Generator

from engine.data.cifar import CIFAR_FIX, load_cifar10
from engine.data.common import (IMAGE_EXTENSIONS, MAX_PATH_CHARS, SCHEME_ALIASES, SCHEMES, SPEC_HELP, DatasetSpec,
                                Normalization, Shape, parse_dataset_spec, shown,
                                stratified_indices)
from engine.data.dataset import Dataset
from engine.data.fashion import FASHION_CLASSES, FASHION_DIR, FASHION_HINT, load_fashion_mnist, read_idx
from engine.data.folders import image_folder_events, load_image_folder, unreadable_reason
from engine.data.loading import FolderTransform, decode, num_workers
from engine.data.tensors import TensorLoader, TensorSplit, convert_batch, cover_size, random_crop_flip, resize_crop
from engine.events import Progress, result_of

__all__ = [
    "CIFAR_FIX", "FASHION_CLASSES", "FASHION_DIR", "FASHION_HINT", "IMAGE_EXTENSIONS", "MAX_PATH_CHARS",
    "SCHEMES", "SCHEME_ALIASES", "SPEC_HELP", "Dataset", "DatasetSpec", "FolderTransform", "Normalization", "Shape",
    "TensorLoader", "TensorSplit", "convert_batch", "cover_size", "decode", "image_folder_events", "load_cifar10",
    "load_dataset", "load_dataset_events", "load_fashion_mnist", "load_image_folder", "num_workers",
    "parse_dataset_spec", "random_crop_flip", "read_idx", "resize_crop", "shown", "stratified_indices",
    "unreadable_reason",
]


def load_dataset_events(spec: str, *, input_shape: Shape | None = None,
                        seed: int = 0) -> Generator[Progress, None, Dataset]:
    """`load_dataset` as a generator: yields Progress while a folder is scanned, returns the Dataset.

    Use as `data = yield from load_dataset_events(spec)` inside a job that relays events.
    """
    parsed = parse_dataset_spec(spec)
    path = Path(parsed.path) if parsed.path is not None else None
    if parsed.scheme == "fashion-mnist":
        data = load_fashion_mnist(path, seed=seed)
    elif parsed.scheme == "imagefolder":
        data = yield from image_folder_events(path, seed=seed, input_shape=input_shape)
    else:
        data = load_cifar10(path, seed=seed)
    return data.adapted(input_shape) if input_shape else data


def load_dataset(spec: str, *, input_shape: Shape | None = None, seed: int = 0,
                 progress: Callable[[Progress], None] | None = None) -> Dataset:
    """Parse a dataset spec (`fashion-mnist`, `imagefolder:PATH`, `cifar10:PATH`) and load it.

    `progress`, when given, is called with each Progress event of a folder scan.
    """
    return result_of(load_dataset_events(spec, input_shape=input_shape, seed=seed), progress)
