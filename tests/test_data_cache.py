"""The fine-tuning image cache: the same batches as the uncached folder loader, its temporary file removed,
and fine-tuning on a folder with a damaged image still trains (or refuses in one line)."""
from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path

import pytest
import torch

from engine.data import Normalization, load_dataset
from engine.data.cache import CachedDataset, cached
from engine.training import TrainConfig, train
from tests.test_data_folders import write_mixed_folder

NORM = Normalization((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
MIN_STD = min(NORM.std)


@pytest.fixture
def folder(tmp_path: Path):
    """Mixed-size images (resized and cropped to 24×24), with one file that passes the scan but cannot decode."""
    root = write_mixed_folder(tmp_path / "mixed", per_class=6, fmt="JPEG")
    bad = root / "ant" / "img_3.jpg"
    head = bad.read_bytes()
    bad.write_bytes(head[:20] + b"\x00" * (len(head) - 22) + b"\xff\xd9")  # whole at both ends, garbled inside
    data = load_dataset(f"imagefolder:{root}", input_shape=(3, 24, 24)).adapted(norm=NORM)
    yield data
    data.close()


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


@pytest.mark.parametrize("in_memory", [True, False])
def test_cached_batches_equal_the_uncached_ones(folder, in_memory):
    splits = ("train", "val")
    with cached(folder, splits, in_memory=in_memory, workers=0) as fast:
        assert fast.cache.on_disk is not in_memory
        for split, kw in (("train", dict(shuffle=True, augment=True, seed=3, drop_last=True)),
                          ("train", dict(shuffle=False, augment=False)), ("val", dict()),
                          ("train", dict(limit=5))):
            slow = batches(folder.loader(split, 4, workers=0, **kw))
            quick = batches(fast.loader(split, 4, **kw))
            assert len(slow) == len(quick) > 0
            for (xs, ys), (xq, yq) in zip(slow, quick):
                assert torch.equal(ys, yq)
                if kw.get("augment"):  # training batches: rounded to 8 bits on both paths, so identical
                    assert torch.equal(xs, xq), (split, kw, (xs - xq).abs().max())
                else:  # the uncached evaluation path is unrounded: at most half an 8-bit level apart
                    assert (xs - xq).abs().max() <= 0.5 / 255 / MIN_STD + 1e-6, (split, kw)
        # a second pass draws a new order and new augmentations, as the uncached loader does
        slow_loader, fast_loader = (d.loader("train", 4, shuffle=True, augment=True, seed=1, workers=0)
                                    for d in (folder, fast))
        batches(slow_loader), batches(fast_loader)
        for (xs, _), (xq, _) in zip(batches(slow_loader), batches(fast_loader)):
            assert torch.equal(xs, xq)
        assert fast.split_size("test") == folder.split_size("test")  # uncached splits are the dataset's own


def test_the_damaged_image_is_left_out_of_its_batch(folder):
    with cached(folder, ("train",), workers=0) as fast:
        assert int((~fast.cache.valid).sum()) == 1
        seen = sum(len(y) for _, y in fast.loader("train", 4))
        assert seen == folder.split_size("train") - 1


def test_the_memory_mapped_file_is_removed(folder):
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "prunelab-cache-*")))
    fast = cached(folder, ("train",), in_memory=False, workers=0)
    made = set(glob.glob(os.path.join(tempfile.gettempdir(), "prunelab-cache-*"))) - before
    assert len(made) == 1 and fast.cache.folder in made
    fast.close()
    assert not os.path.exists(fast.cache.folder or next(iter(made)))


def test_training_on_a_folder_uses_the_cache_and_removes_it(folder, tiny_model, monkeypatch):
    from torch import nn

    monkeypatch.setattr("engine.data.cache.MEMORY_SHARE", 0.0)  # the memory-mapped file
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "prunelab-cache-*")))
    built = []
    import engine.data.cache as cache_mod

    real = cache_mod.CachedDataset.__init__

    def spy(self, data, cache):
        built.append((cache, cache.on_disk))  # held here: removal must not wait for garbage collection
        real(self, data, cache)

    monkeypatch.setattr(CachedDataset, "__init__", spy)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    events = list(train(model, folder, TrainConfig(epochs=2, batch_size=4, lr=0.01, validate=True)))
    assert [on_disk for _, on_disk in built] == [True]  # once per run, in a memory-mapped file
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "prunelab-cache-*"))) == before
    assert events[-1].history[-1].val_top1 is not None


def test_same_seed_gives_the_same_weights_cached_or_not(folder):
    from torch import nn

    def run(legacy: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(4, 2))
        list(train(model, folder, TrainConfig(epochs=2, batch_size=4, lr=0.01, validate=False,
                                              legacy_pipeline=legacy)))
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(run(True), run(False)):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_no_room_for_the_cache_is_one_line_before_training(folder, monkeypatch):
    import shutil

    import engine.data.cache as cache_mod
    from engine.errors import UserError

    monkeypatch.setattr(cache_mod, "MEMORY_SHARE", 0.0)  # never in memory: a file, which cannot fit
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 0))
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "prunelab-cache-*")))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 24 * 24, 2))
    with pytest.raises(UserError) as err:
        list(train(model, folder, TrainConfig(epochs=1, batch_size=4)))
    assert "\n" not in str(err.value) and "TMPDIR" in str(err.value)
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "prunelab-cache-*"))) == before
