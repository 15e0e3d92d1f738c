"""One fine-tuning cache per pruning run: an iterative run on an image folder decodes it once for all its
steps, and the cache's temporary file is gone when the run ends, fails or is cancelled."""
from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest
import torch

import engine.data.cache as cache_mod
import engine.pruning as pruning
from engine.config import PruneConfig
from engine.data import load_dataset
from engine.errors import Cancelled
from engine.events import CancelToken, Phase, Progress, drain
from engine.models import ModelBundle
from shared_fixtures import tiny_resnet, write_image_folder


@pytest.fixture
def folder_run(tmp_path: Path, monkeypatch):
    """A tiny folder dataset, a tiny 3-channel model, the caches counted and kept on disk in tmp_path."""
    root = write_image_folder(tmp_path / "photos", per_class=8)
    data = load_dataset(f"imagefolder:{root}", input_shape=(3, 24, 24))
    monkeypatch.setattr(cache_mod, "MEMORY_SHARE", 0.0)  # a memory-mapped file, so its removal shows
    monkeypatch.setattr(cache_mod.tempfile, "tempdir", str(tmp_path))
    built = []

    class Counted(cache_mod.ImageCache):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            built.append((self, self.folder))  # held: removal must not wait for garbage collection

    monkeypatch.setattr(cache_mod, "ImageCache", Counted)
    torch.manual_seed(0)
    bundle = ModelBundle(tiny_resnet(3, data.num_classes), "tiny", "demo:resnet", (3, 24, 24), data.num_classes,
                         data.norm, data.class_names)
    yield bundle, data, built, lambda: glob.glob(os.path.join(str(tmp_path), "prunelab-cache-*"))
    data.close()


def _cfg(**kw) -> PruneConfig:
    return PruneConfig(**{**dict(method="l2", pruning_ratio=0.5, steps=3, finetune_batches=2, round_to=None,
                                 measure_speed=False, batch_size=8), **kw})


def test_an_iterative_run_builds_one_cache_and_removes_it(folder_run):
    bundle, data, built, left = folder_run
    events = []
    drain(pruning.run_pruning(bundle, data, _cfg()), events.append)
    assert sum(1 for e in events if getattr(e, "phase", None) == Phase.FINETUNE and isinstance(e, Progress)) >= 3
    assert len(built) == 1 and built[0][1]  # three steps of fine-tuning, one decode, on disk
    assert left() == [] and not os.path.exists(built[0][1])


def test_the_cache_is_removed_when_the_run_fails(folder_run, monkeypatch):
    bundle, data, built, left = folder_run
    real = pruning._measure
    calls = []

    def failing(*args, **kw):  # the baseline passes; the evaluation after the first fine-tuning fails
        calls.append(1)
        if len(calls) == 2:
            assert left(), "the cache should exist while the run is going"
            raise RuntimeError("disk on fire")
        return (yield from real(*args, **kw))

    monkeypatch.setattr(pruning, "_measure", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        drain(pruning.run_pruning(bundle, data, _cfg()))
    assert len(built) == 1 and left() == []


def test_the_cache_is_removed_when_the_run_is_cancelled_or_dropped(folder_run):
    bundle, data, built, left = folder_run
    cancel = CancelToken()

    def training(event) -> bool:  # a fine-tuning step's progress, after the cache was built
        return isinstance(event, Progress) and event.phase == Phase.FINETUNE and "loss" in event.message

    def on(event):
        if training(event):
            cancel.cancel()

    with pytest.raises(Cancelled):
        drain(pruning.run_pruning(bundle, data, _cfg(), cancel), on)
    assert len(built) == 1 and left() == []
    run = pruning.run_pruning(bundle, data, _cfg())  # a window closed mid-run drops the generator
    for event in run:
        if training(event):
            break
    assert len(left()) == 1
    run.close()
    assert left() == []
