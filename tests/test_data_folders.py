"""Image folders of photos at any size: the resize policy, worker processes and scan progress."""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine import data
from engine.data import Normalization, load_dataset, load_dataset_events
from engine.errors import UserError

# loader workers come from a fork server that has imported torch (1.1 GiB with its workers)
pytestmark = pytest.mark.heavy_memory(gib=1.1)

IDENTITY = Normalization((0.0,) * 3, (1.0,) * 3)
SIZES = ((37, 53), (300, 200), (64, 64), (120, 45))  # width × height, tall, wide, square and very wide


def write_mixed_folder(root: Path, per_class: int = 4, fmt: str = "PNG") -> Path:
    """Two classes of RGB images of mixed sizes; each image a different colour, with a red band on the left."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(("ant", "bee")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = SIZES[i % len(SIZES)]
            pixels = np.empty((h, w, 3), dtype=np.uint8)
            pixels[:] = rng.integers(0, 200, 3, dtype=np.uint8)
            pixels[:, : max(1, w // 8)] = (255, 0, 0)  # cut away by a centre crop of a wide image, not by squashing
            Image.fromarray(pixels).save(root / name / f"img_{i}.{fmt.lower().replace('jpeg', 'jpg')}", fmt)
    return root


def expected(path: str, size: int = 32) -> torch.Tensor:
    """What the policy promises, computed independently: scale the shorter side to `size`, crop the centre."""
    from PIL import Image

    with Image.open(path) as img:
        x = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    h, w = x.shape[2:]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[0, :, top:top + size, left:left + size]


@pytest.fixture
def mixed(tmp_path: Path) -> data.Dataset:
    """The mixed-size folder at 32×32, identity normalisation, with a fixed train/val/test layout."""
    for split in ("train", "val"):
        write_mixed_folder(tmp_path / "mixed" / split)
    return load_dataset(f"imagefolder:{tmp_path / 'mixed'}", input_shape=(3, 32, 32)).adapted(norm=IDENTITY)


def test_any_size_is_resized_by_the_shorter_side_and_centre_cropped(mixed):
    x, y = next(iter(mixed.loader("val", 8, workers=0)))
    assert x.shape == (8, 3, 32, 32)
    for i, (path, label) in enumerate(mixed.splits["val"].samples):
        assert int(y[i]) == label
        assert torch.allclose(x[i], expected(path), atol=1e-5), path  # unrounded: as the exported model sees it


def test_the_red_band_of_a_wide_image_is_cropped_away(tmp_path):
    from PIL import Image

    pixels = np.zeros((200, 300, 3), dtype=np.uint8)
    pixels[:, :40] = (255, 0, 0)
    pixels[:, 40:] = (0, 0, 255)
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    x = data.FolderTransform((3, 32, 32), None)(data.decode(str(path)))
    assert x.shape == (3, 32, 32)
    assert float(x[0].max()) < 0.05 and float(x[2].min()) > 0.95  # no red left: cropped, not squashed


def test_eval_calibration_and_fine_tuning_see_the_same_resize(mixed):
    def by_label_and_colour(batches):
        xs = torch.cat([b[0] for b in batches])
        return xs[torch.argsort(xs.mean(dim=(2, 3)) @ torch.tensor([1.0, 1e3, 1e6]))]

    evaluation = by_label_and_colour(list(mixed.loader("train", 3)))  # engine.metrics.evaluate
    calibration = by_label_and_colour(list(mixed.loader("train", 64, shuffle=True, seed=7)))  # engine.calibration
    assert torch.allclose(evaluation, calibration)
    tuned = torch.cat([b[0] for b in mixed.loader("train", 4, shuffle=False, augment=True, seed=1)])
    plain = torch.cat([b[0] for b in mixed.loader("train", 4)])
    pad = max(1, 32 // 14)
    level = 0.5 / 255 + 1e-6  # fine-tuning batches are rounded to 8 bits (the cache's form); identity norm
    for a, p in zip(tuned, plain):  # each fine-tuning image: a shift and maybe a flip of the same resize
        padded = F.pad(p, (pad, pad, pad, pad))
        shifts = [padded[:, dy:dy + 32, dx:dx + 32] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
        assert any(torch.allclose(a, s, atol=level) or torch.allclose(a, s.flip(2), atol=level) for s in shifts)
    assert not torch.allclose(tuned, plain)  # augmentation did something


def test_workers_give_the_same_batches_as_no_workers(mixed):
    def batches(workers):
        loader = mixed.loader("train", 3, shuffle=True, augment=True, seed=5, workers=workers)
        return [b for _ in range(2) for b in loader]  # two passes: the second draws a new order

    here, there = batches(0), batches(2)
    assert len(here) == len(there) == 6
    for (xa, ya), (xb, yb) in zip(here, there):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    assert not torch.equal(torch.cat([y for _, y in here[:3]]), torch.cat([y for _, y in here[3:]])) or \
        not torch.equal(here[0][0], here[3][0])
    other = [b for b in mixed.loader("train", 3, shuffle=True, augment=True, seed=6, workers=0)]
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(here, other))


def test_workers_persist_between_passes_and_nested_use_still_works(mixed):
    loader = mixed.loader("train", 2, workers=1)
    first = [b for b in loader]
    pool = mixed._pool
    dataloader = pool.dataloader
    pids = {w.pid for w in dataloader._iterator._workers}
    inner = []
    for x, _ in loader:  # a check iterating the same data inside a pass decodes in this process
        inner.append(sum(len(y) for _, y in mixed.loader("val", 4, workers=1)))
    assert inner == [8] * len(first)
    assert pool.dataloader is dataloader and {w.pid for w in dataloader._iterator._workers} == pids
    for _ in mixed.loader("train", 2, workers=1):
        break  # leaving early keeps the workers for the next pass
    again = [b for b in loader]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    mixed.close()
    assert not any(w.is_alive() for w in dataloader._iterator._workers)


def test_workers_run_from_a_thread_and_a_qthread(mixed, qtbot):
    from PySide6.QtCore import QThread

    reference = [b for b in mixed.loader("val", 3, workers=0)]
    results: dict[str, list] = {}

    def read(key: str) -> None:
        results[key] = [b for b in mixed.loader("val", 3, workers=1)]

    thread = threading.Thread(target=read, args=("thread",))
    thread.start()
    thread.join(60)

    class Reader(QThread):
        def run(self) -> None:  # noqa: D401 - Qt's entry point
            read("qthread")

    qthread = Reader()
    qthread.start()
    assert qthread.wait(60_000)
    for key in ("thread", "qthread"):
        assert len(results[key]) == len(reference)
        assert all(torch.equal(a[0], b[0]) for a, b in zip(results[key], reference))


def test_workers_run_from_a_script(tmp_path):
    root = write_mixed_folder(tmp_path / "script")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from engine.data import load_dataset; "
            "ds = load_dataset('imagefolder:' + sys.argv[2], input_shape=(3, 16, 16)); "
            "print(sum(len(y) for _, y in ds.loader('train', 2, workers=2)))")
    done = subprocess.run([sys.executable, "-c", code, str(Path(data.__file__).parents[2]), str(root)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) == len(load_dataset(f"imagefolder:{root}").splits["train"])


def test_large_jpegs_decode_at_a_reduced_scale_with_the_same_result(tmp_path):
    from PIL import Image

    yy, xx = np.mgrid[0:600, 0:800]
    pixels = np.stack([xx * 255 // 800, yy * 255 // 600, np.full_like(xx, 90)], -1).astype(np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    small, full = data.decode(str(path), (32, 32)), data.decode(str(path))
    assert full.shape == (3, 600, 800) and small.shape[1] < 600 and min(small.shape[1:]) >= 32
    transform = data.FolderTransform((3, 32, 32), None)
    assert torch.allclose(transform(small), transform(full), atol=0.03)


def test_worker_count_follows_the_cores_and_the_override(monkeypatch):
    monkeypatch.delenv("PRUNELAB_LOADER_WORKERS", raising=False)
    assert data.num_workers(10) == 0  # a tiny folder decodes faster than processes start
    cores = len(__import__("os").sched_getaffinity(0))
    assert data.num_workers(100_000) == max(0, min(4, cores - 1))
    monkeypatch.setenv("PRUNELAB_LOADER_WORKERS", "3")
    assert data.num_workers(10) == 3
    monkeypatch.setenv("PRUNELAB_LOADER_WORKERS", "many")
    with pytest.raises(UserError, match="PRUNELAB_LOADER_WORKERS"):
        data.num_workers()


def test_a_folder_scan_reports_progress(tmp_path, monkeypatch):
    monkeypatch.setattr(data.folders, "PROGRESS_EVERY_S", 0.0)  # every step, so a tiny folder shows them
    root = write_mixed_folder(tmp_path / "scan", per_class=5)
    (root / "ant" / "notes.txt").write_text("not an image")
    events = []
    ds = load_dataset(f"imagefolder:{root}", progress=events.append)
    scan = [e for e in events if e.phase == "scan"]
    checking = [e for e in scan if e.total]
    assert [e.done for e in checking] == list(range(11)) + [10]  # every file, then the summary
    assert checking[-1].total == 10 and "10" in checking[-1].message
    assert any("listing" in e.message for e in scan if not e.total)
    stats = [e for e in events if e.phase == "statistics"]
    assert stats and stats[-1].done == stats[-1].total == ds.split_size("train")
    assert events.index(checking[-1]) < events.index(stats[0])


def test_the_scan_is_a_generator_returning_the_dataset(tmp_path):
    root = write_mixed_folder(tmp_path / "gen")
    events = load_dataset_events(f"imagefolder:{root}", input_shape=(3, 24, 24))
    seen = []
    try:
        while True:
            seen.append(next(events))
    except StopIteration as stop:
        ds = stop.value
    assert ds.input_shape == (3, 24, 24) and ds.num_classes == 2
    assert seen and seen[0].phase == "scan" and seen[-1].phase == "statistics"
    assert load_dataset_events("fashion-mnist:/nonexistent") is not None  # lazy: nothing read until iterated
