"""Bad data: damaged images, malformed ImageFolder trees, CIFAR-10 batches and Fashion-MNIST files.

Every refusal is a UserError on one line that names the offending path; damaged images that can be
left out are counted in `Dataset.warnings` and never reach (or crash) a DataLoader worker.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared_fixtures import write_fake_fashion, write_idx, write_image_folder
from engine import data
from engine.data import load_dataset
from engine.errors import UserError

SPEC_HELP = "valid dataset specs: fashion-mnist, imagefolder:PATH, cifar10:PATH"


def refused(call, *args, **kwargs) -> str:
    """The message of the UserError `call` raises, checked to be one line."""
    with pytest.raises(UserError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and message.strip() == message, message
    return message


def image_bytes(fmt: str, size: int = 48, seed: int = 0) -> bytes:
    """A noisy RGB image encoded as PNG or JPEG (noise keeps the compressed body long)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, fmt, quality=95)
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    """A JPEG cut inside its scan data: PIL opens and verify()s it without complaint."""
    return image_bytes("JPEG")[:-300]


def garbled_png() -> bytes:
    """A PNG whose compressed pixels are overwritten but whose end marker is intact."""
    raw = bytearray(image_bytes("PNG"))
    start = raw.index(b"IDAT") + 20
    raw[start:start + 200] = np.random.default_rng(1).integers(0, 256, 200, dtype=np.uint8).tobytes()
    return bytes(raw)


def count_items(ds: data.Dataset, split: str) -> int:
    """Images delivered by iterating a whole split."""
    return sum(len(y) for _, y in ds.loader(split, batch_size=4))


@pytest.fixture
def workers(monkeypatch) -> None:
    """Force one DataLoader worker process, so decoding happens outside the test process."""
    monkeypatch.setenv("PRUNELAB_LOADER_WORKERS", "1")


# ----------------------------------------------------------------------------- ImageFolder: damaged files

DAMAGED = {
    "truncated PNG": ("cut.png", lambda: image_bytes("PNG")[:-200], "truncated"),
    "truncated JPEG": ("cut.jpg", truncated_jpeg, "truncated"),
    "random bytes as .jpg": ("noise.jpg", lambda: np.random.default_rng(2).bytes(900), "not an image"),
    "zero-byte file": ("empty.png", lambda: b"", "empty file"),
    "PNG header only": ("head.png", lambda: image_bytes("PNG")[:8], "truncated"),
    "JPEG start and end only": ("tiny.jpg", lambda: b"\xff\xd8\xff\xd9", "truncated"),
    "PNG signature and end only": ("tiny.png", lambda: b"\x89PNG\r\n\x1a\n" + b"\0\0\0\0IEND\xaeB`\x82", "truncated"),
}


@pytest.mark.parametrize("name", list(DAMAGED))
def test_damaged_image_is_skipped_and_counted(tmp_path, name):
    filename, make, reason = DAMAGED[name]
    root = write_image_folder(tmp_path / "imgs")  # 3 classes × 6 good images
    bad = root / "dog" / filename
    bad.write_bytes(make())
    ds = load_dataset(f"imagefolder:{root}")
    assert len(ds.warnings) == 1
    line = ds.warnings[0]
    assert "\n" not in line and "skipped 1 damaged image file of 19" in line
    assert str(bad) in line and reason in line.lower()
    listed = [p for s in ("train", "val", "test") for p, _ in ds.splits[s].samples]
    assert str(bad) not in listed and len(listed) == 18


def test_truncated_jpeg_passes_pil_verify_so_the_end_marker_check_is_needed(tmp_path):
    path = tmp_path / "cut.jpg"
    path.write_bytes(truncated_jpeg())
    with Image.open(path) as img:
        img.verify()  # PIL alone would accept this file at scan time
    assert data.unreadable_reason(str(path)) is not None


def test_several_damaged_files_are_counted_and_the_whole_split_iterates(tmp_path, workers):
    root = write_image_folder(tmp_path / "imgs", per_class=8)
    damaged = [root / "cat" / "a.png", root / "dog" / "b.jpg", root / "fox" / "c.jpeg"]
    damaged[0].write_bytes(b"")
    damaged[1].write_bytes(truncated_jpeg())
    damaged[2].write_bytes(b"\xff\xd8\xff" + bytes(64))
    ds = load_dataset(f"imagefolder:{root}")
    assert ds.warnings and ds.warnings[0].startswith("skipped 3 damaged image files of 27 ")
    assert str(damaged[0]) in ds.warnings[0]  # the first in scan order (cat/ comes first)
    total = sum(count_items(ds, split) for split in ("train", "val", "test"))
    assert total == 24


def test_good_folder_has_no_warnings(image_folder):
    assert load_dataset(f"imagefolder:{image_folder}").warnings == ()


def test_image_damaged_inside_is_dropped_by_the_loader_not_a_crash(tmp_path, workers):
    root = write_image_folder(tmp_path / "imgs", per_class=4)
    sneaky = root / "cat" / "zz_garbled.png"
    sneaky.write_bytes(garbled_png())
    assert data.unreadable_reason(str(sneaky)) is None  # structurally whole: only decoding can tell
    with Image.open(sneaky) as img, pytest.raises(OSError):
        img.load()
    ds = load_dataset(f"imagefolder:{root}")
    where = next(s for s in ("train", "val", "test") if str(sneaky) in [p for p, _ in ds.splits[s].samples])
    assert count_items(ds, where) == ds.split_size(where) - 1
    batches = list(ds.loader(where, batch_size=1))  # a batch holding only the damaged file is left out
    assert len(batches) == ds.split_size(where) - 1


def test_every_item_damaged_in_a_batch_yields_no_empty_batch(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=3)
    ds = load_dataset(f"imagefolder:{root}")
    for path, _ in ds.splits["train"].samples[:4]:
        Path(path).write_bytes(garbled_png())  # damaged after the scan, as on a flaky disk
    sizes = [len(y) for _, y in ds.loader("train", batch_size=4)]
    assert 0 not in sizes and sum(sizes) == ds.split_size("train") - 4


def test_png_and_jpeg_with_trailing_bytes_are_kept(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    (root / "cat" / "tail.png").write_bytes(image_bytes("PNG") + b"extra bytes after IEND")
    (root / "dog" / "tail.jpg").write_bytes(image_bytes("JPEG") + b"\x00" * 40 + b"appended")
    (root / "fox" / "really_a_jpeg.png").write_bytes(image_bytes("JPEG"))
    ds = load_dataset(f"imagefolder:{root}")
    assert ds.warnings == ()
    assert sum(ds.split_size(s) for s in ("train", "val", "test")) == 21


def test_fifo_named_like_an_image_does_not_hang_the_scan(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    os.mkfifo(root / "cat" / "pipe.png")

    def hung(signum, frame):
        pytest.fail("the scan blocked opening a FIFO")  # not an OSError, which the scan would catch

    previous = signal.signal(signal.SIGALRM, hung)  # a regression blocks in open(): fail instead of hanging
    signal.alarm(20)
    try:
        ds = load_dataset(f"imagefolder:{root}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert len(ds.warnings) == 1 and str(root / "cat" / "pipe.png") in ds.warnings[0]


def test_dot_files_are_not_images(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    (root / "cat" / "._img_00.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    ds = load_dataset(f"imagefolder:{root}")
    assert ds.warnings == () and ds.split_size("train") + ds.split_size("val") + ds.split_size("test") == 18


def test_damaged_files_in_val_and_test_folders_are_counted(tmp_path):
    write_image_folder(tmp_path / "tree" / "train", per_class=4)
    write_image_folder(tmp_path / "tree" / "test", per_class=2)
    bad = tmp_path / "tree" / "test" / "fox" / "bad.png"
    bad.write_bytes(b"not a png")
    ds = load_dataset(f"imagefolder:{tmp_path / 'tree'}")
    assert ds.split_size("test") == 6
    assert ds.warnings and "skipped 1 damaged image file of 19" in ds.warnings[0] and str(bad) in ds.warnings[0]


def test_class_with_only_damaged_images_is_refused_with_its_path(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=4)
    for i, path in enumerate(sorted((root / "dog").iterdir())):
        path.write_bytes(image_bytes("PNG")[:50 + i])
    message = refused(load_dataset, f"imagefolder:{root}")
    assert str(root / "dog") in message and str(root / "dog" / "img_00.png") in message
    assert "no readable image" in message


def test_class_with_only_damaged_images_in_test_folder_is_refused(tmp_path):
    write_image_folder(tmp_path / "tree" / "train", per_class=3)
    write_image_folder(tmp_path / "tree" / "test", per_class=1)
    (tmp_path / "tree" / "test" / "cat" / "img_00.png").write_bytes(b"")
    message = refused(load_dataset, f"imagefolder:{tmp_path / 'tree'}")
    assert str(tmp_path / "tree" / "test" / "cat") in message


def test_class_folder_without_images_is_refused(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    (root / "empty_class").mkdir()
    (root / "empty_class" / "notes.txt").write_text("no images here")
    message = refused(load_dataset, f"imagefolder:{root}")
    assert str(root / "empty_class") in message and "holds no images" in message


def test_folder_without_class_folders_is_refused(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    (root / "a.png").write_bytes(image_bytes("PNG"))
    message = refused(load_dataset, f"imagefolder:{root}")
    assert str(root) in message and "no class folders" in message


def test_image_folder_path_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(image_bytes("PNG"))
    message = refused(load_dataset, f"imagefolder:{path}")
    assert str(path) in message and "is a file" in message and SPEC_HELP in message


def test_missing_image_folder_is_refused_with_valid_specs(tmp_path):
    message = refused(load_dataset, f"imagefolder:{tmp_path / 'nowhere'}")
    assert str(tmp_path / "nowhere") in message and "does not exist" in message and SPEC_HELP in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_image_folder_is_refused(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    root.chmod(0)
    try:
        message = refused(load_dataset, f"imagefolder:{root}")
    finally:
        root.chmod(0o755)
    assert str(root) in message and "permission" in message.lower()


def _deny(monkeypatch, denied: Path) -> None:
    """Make listing `denied` fail as it does without read permission (tests may run as root)."""
    real_scandir, real_access = os.scandir, os.access

    def scandir(path="."):
        if os.fspath(path) == str(denied):
            raise PermissionError(13, "Permission denied", str(denied))
        return real_scandir(path)

    def access(path, mode, **kwargs):
        return False if os.fspath(path) == str(denied) else real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "access", access)


def test_image_folder_without_permission_is_refused(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "imgs")
    _deny(monkeypatch, root)
    message = refused(load_dataset, f"imagefolder:{root}")
    assert str(root) in message and "permission denied" in message


def test_class_folder_without_permission_is_refused(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "imgs")
    _deny(monkeypatch, root / "fox")
    message = refused(load_dataset, f"imagefolder:{root}")
    assert str(root / "fox") in message and "Permission denied" in message


def test_odd_file_name_keeps_the_warning_on_one_line(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    (root / "cat" / "a\nb.png").write_bytes(b"")
    ds = load_dataset(f"imagefolder:{root}")
    assert len(ds.warnings) == 1 and len(ds.warnings[0].splitlines()) == 1 and "a\\nb.png" in ds.warnings[0]


# ----------------------------------------------------------------------------- CIFAR-10

def _batch(n: int = 10, **fields) -> dict:
    base = {b"data": np.zeros((n, 3072), dtype=np.uint8), b"labels": [k % 10 for k in range(n)],
            b"batch_label": b"fake"}
    base.update({k.encode(): v for k, v in fields.items()})
    return base


CIFAR_DEFECTS = {
    "no labels key": ({b"data": np.zeros((10, 3072), np.uint8)}, "no 'labels' key"),
    "no data key": ({b"labels": list(range(10))}, "no 'data' key"),
    "CIFAR-100 fine_labels": ({b"data": np.zeros((10, 3072), np.uint8), b"fine_labels": [1] * 10}, "CIFAR-100"),
    "more labels than rows": (_batch(labels=list(range(10)) + [1]), "10 images but 11 labels"),
    "fewer labels than rows": (_batch(labels=[0] * 9), "10 images but 9 labels"),
    "rows of 3000": (_batch(data=np.zeros((10, 3000), np.uint8)), "rows of 3072"),
    "4-D data": (_batch(data=np.zeros((10, 3, 32, 32), np.uint8)), "rows of 3072"),
    "label 10": (_batch(labels=[0] * 9 + [10]), "label 10 (image 9) is outside 0..9"),
    "label -1": (_batch(labels=[-1] + [0] * 9), "label -1 (image 0) is outside 0..9"),
    "float labels": (_batch(labels=[0.5] * 10), "labels are not a list of integers"),
    "ragged labels": (_batch(labels=[[1], [2, 3]] + [0] * 8), "labels are not a list of integers"),
    "data as list": (_batch(data=[[0] * 3072] * 10), "not an array of pixel bytes"),
    "float pixels": (_batch(data=np.zeros((10, 3072), np.float32)), "float32 array"),
    "pixels above 255": (_batch(data=np.full((10, 3072), 300, np.int64)), "outside 0..255"),
    "no images": (_batch(n=0, labels=[]), "holds no images"),
    "a list not a dict": ([1, 2, 3], "holds a list"),
}


@pytest.mark.parametrize("name", list(CIFAR_DEFECTS))
def test_defective_cifar_batch_is_refused_naming_the_file(cifar_folder, name):
    content, expected = CIFAR_DEFECTS[name]
    (cifar_folder / "data_batch_2").write_bytes(pickle.dumps(content))
    message = refused(load_dataset, f"cifar10:{cifar_folder}")
    assert str(cifar_folder / "data_batch_2") in message and expected in message


@pytest.mark.parametrize("content", [b"", b"\x80", b"garbage that is not a pickle", b"\x80\x04\x95\xff\xff\xff\xff",
                                     np.random.default_rng(0).bytes(4000), gzip.compress(b"x" * 100)],
                         ids=["empty", "one byte", "text", "huge frame", "random", "gzip"])
def test_non_pickle_cifar_file_is_refused_naming_the_file(cifar_folder, content):
    (cifar_folder / "test_batch").write_bytes(content)
    message = refused(load_dataset, f"cifar10:{cifar_folder}")
    assert str(cifar_folder / "test_batch") in message and "cannot read CIFAR-10 batch" in message


def test_cifar_pickle_importing_os_is_refused_and_runs_nothing(tmp_path, cifar_folder):
    marker = tmp_path / "ran"

    class Shell:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (cifar_folder / "data_batch_5").write_bytes(pickle.dumps({b"data": Shell(), b"labels": []}))
    message = refused(load_dataset, f"cifar10:{cifar_folder}")
    assert str(cifar_folder / "data_batch_5") in message and "refusing to load" in message
    assert not marker.exists()


CRASHING_DTYPE_STATE = (b"NNNJ\xff\xff\xff\xff", b"NN0J\xff\xff\xff\xff")  # one None popped: numpy segfaults


@pytest.mark.heavy_memory(gib=0.8)
def test_damaged_dtype_state_cannot_crash_the_process(cifar_folder):
    batch = pickle.dumps({b"data": np.zeros((10, 3072), np.uint8), b"labels": list(range(10))}, protocol=2)
    assert batch.count(CRASHING_DTYPE_STATE[0]) == 1
    damaged = batch.replace(*CRASHING_DTYPE_STATE)
    (cifar_folder / "data_batch_1").write_bytes(damaged)
    # In a child process so that a crash fails this test instead of killing the test run; the data
    # bytes are intact, so the batch loads.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from engine.data import load_dataset; "
            "print(load_dataset('cifar10:' + sys.argv[2]).split_size('test'))")
    done = subprocess.run([sys.executable, "-c", code, str(Path(data.__file__).parents[1]), str(cifar_folder)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "10", done.stderr[-500:]


def test_array_with_wrong_byte_count_or_object_dtype_is_refused(cifar_folder):
    batch = pickle.dumps({b"data": np.zeros((10, 3072), np.uint8), b"labels": list(range(10))}, protocol=2)
    (cifar_folder / "data_batch_1").write_bytes(batch.replace(b"M\x00\x0c", b"M\x01\x0c", 1))  # 3072 -> 3073
    assert "holds 30720 bytes, not 30730" in refused(load_dataset, f"cifar10:{cifar_folder}")
    objects = np.array([object()] * 3072 * 10, dtype=object).reshape(10, 3072)
    objects[:] = 0
    (cifar_folder / "data_batch_1").write_bytes(pickle.dumps({b"data": objects, b"labels": list(range(10))}))
    assert "unsupported numpy dtype" in refused(load_dataset, f"cifar10:{cifar_folder}")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_batches_pickled_at_any_protocol_load(cifar_folder, protocol):
    rng = np.random.default_rng(protocol)
    pixels = rng.integers(0, 256, (10, 3072), dtype=np.uint8)
    for i in range(1, 6):
        (cifar_folder / f"data_batch_{i}").write_bytes(pickle.dumps(
            {b"data": pixels, b"labels": np.arange(10, dtype=np.int64) % 10}, protocol=protocol))
    ds = load_dataset(f"cifar10:{cifar_folder}")
    assert torch.equal(ds.splits["train"].images[:10].reshape(10, 3072), torch.from_numpy(pixels))


def test_cifar_meta_file_defects_are_refused(cifar_folder):
    meta = cifar_folder / "batches.meta"
    meta.write_bytes(pickle.dumps({b"label_names": [b"a", b"b"]}))
    message = refused(load_dataset, f"cifar10:{cifar_folder}")
    assert str(meta) in message and "10 names" in message
    meta.write_bytes(b"\x00garbage")
    assert str(meta) in refused(load_dataset, f"cifar10:{cifar_folder}")


def test_cifar_meta_with_odd_bytes_still_loads(cifar_folder):
    names = [b"\xff\xfebad", b"line\nbreak"] + [f"n{i}".encode() for i in range(8)]
    (cifar_folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    ds = load_dataset(f"cifar10:{cifar_folder}")
    assert all(len(n.splitlines()) == 1 for n in ds.class_names) and ds.class_names[2] == "n0"


def test_cifar_batches_with_text_keys_load(cifar_folder):
    for i in range(1, 6):
        (cifar_folder / f"data_batch_{i}").write_bytes(pickle.dumps(
            {"data": np.zeros((10, 3072), np.uint8), "labels": np.arange(10) % 10}))
    ds = load_dataset(f"cifar10:{cifar_folder}")
    assert ds.split_size("train") + ds.split_size("val") == 50


def test_missing_cifar_batch_is_named(cifar_folder):
    (cifar_folder / "data_batch_4").unlink()
    message = refused(load_dataset, f"cifar10:{cifar_folder}")
    assert "data_batch_4" in message and str(cifar_folder) in message


def test_cifar_batch_that_is_a_folder_is_refused(cifar_folder):
    (cifar_folder / "data_batch_1").unlink()
    (cifar_folder / "data_batch_1").mkdir()
    assert str(cifar_folder / "data_batch_1") in refused(load_dataset, f"cifar10:{cifar_folder}")


def test_cifar_path_that_is_a_file_or_missing_is_refused(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"")
    message = refused(load_dataset, f"cifar10:{path}")
    assert str(path) in message and "is a file" in message and SPEC_HELP in message
    message = refused(load_dataset, f"cifar10:{tmp_path / 'gone'}")
    assert str(tmp_path / "gone") in message and "does not exist" in message


# ----------------------------------------------------------------------------- Fashion-MNIST files

def _gz_without_tail(path: Path) -> bytes:
    return path.read_bytes()[:-20]


def _gz_garbled(path: Path) -> bytes:
    raw = bytearray(path.read_bytes())
    raw[30:60] = b"\xff" * 30
    return bytes(raw)


def _header_cut(path: Path) -> bytes:
    return gzip.compress(gzip.decompress(path.read_bytes())[:7])


def _dims_too_big(path: Path) -> bytes:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[4:8] = (2**32 - 1).to_bytes(4, "big")
    return gzip.compress(bytes(raw))


def _extra_bytes(path: Path) -> bytes:
    return gzip.compress(gzip.decompress(path.read_bytes()) + b"\x00" * 10)


def _no_dims(path: Path) -> bytes:
    return gzip.compress(b"\x00\x00\x08\x00")


FASHION_DEFECTS = {
    "gzip cut short": ("train-images-idx3-ubyte.gz", _gz_without_tail, "cannot read"),
    "gzip garbled": ("t10k-images-idx3-ubyte.gz", _gz_garbled, "cannot read"),
    "not gzip": ("train-labels-idx1-ubyte.gz", lambda p: b"plain text", "cannot read"),
    "header cut": ("t10k-labels-idx1-ubyte.gz", _header_cut, "truncated inside its header"),
    "dimension too big": ("train-images-idx3-ubyte.gz", _dims_too_big, "truncated"),
    "extra bytes": ("train-images-idx3-ubyte.gz", _extra_bytes, "longer than its header says"),
    "no dimensions": ("t10k-images-idx3-ubyte.gz", _no_dims, "no dimensions"),
}


@pytest.mark.parametrize("name", list(FASHION_DEFECTS))
def test_damaged_fashion_file_is_refused_naming_it(tmp_path, monkeypatch, name):
    filename, damage, expected = FASHION_DEFECTS[name]
    root = write_fake_fashion(tmp_path / "fm")
    path = root / filename
    path.write_bytes(damage(path))
    monkeypatch.setattr(data.fashion, "FASHION_DIR", root)  # what PRUNELAB_FASHION_DIR sets at import
    message = refused(load_dataset, "fashion-mnist")
    assert str(path) in message and expected in message


def test_fashion_files_swapped_or_with_bad_labels_are_refused(tmp_path):
    root = write_fake_fashion(tmp_path / "fm")
    labels = root / "train-labels-idx1-ubyte.gz"
    write_idx(labels, np.zeros((24, 28, 28), np.uint8))
    message = refused(load_dataset, f"fashion-mnist:{root}")
    assert str(labels) in message and "not labels" in message
    write_idx(labels, np.full(24, 12, np.uint8))
    message = refused(load_dataset, f"fashion-mnist:{root}")
    assert str(labels) in message and "label 12" in message
    write_idx(labels, np.zeros(24, np.uint8))
    write_idx(root / "t10k-images-idx3-ubyte.gz", np.zeros((12, 32, 32), np.uint8))
    assert "different sizes" in refused(load_dataset, f"fashion-mnist:{root}")


def test_fashion_path_that_is_missing_or_a_file_is_refused(tmp_path):
    message = refused(load_dataset, f"fashion-mnist:{tmp_path / 'gone'}")
    assert str(tmp_path / "gone") in message and SPEC_HELP in message
    (tmp_path / "file").write_bytes(b"")
    assert "is a file" in refused(load_dataset, f"fashion-mnist:{tmp_path / 'file'}")


def test_every_truncation_of_an_idx_file_is_a_user_error(tmp_path):
    good = gzip.decompress(write_fake_fashion(tmp_path / "fm", n_train=2, n_test=1)
                           .joinpath("t10k-images-idx3-ubyte.gz").read_bytes())
    cut = tmp_path / "cut-idx3-ubyte"
    cut.write_bytes(good)
    assert data.read_idx(cut).shape == (1, 28, 28)  # the whole file reads; every shorter prefix must not
    for n in list(range(0, 40)) + list(range(40, len(good), 97)):
        cut.write_bytes(good[:n])
        assert str(cut) in refused(data.read_idx, cut)


# ----------------------------------------------------------------------------- dataset specs (examples)

@pytest.mark.parametrize("spec", ["", "   ", ":", "mnist", "imagefolder", "imagefolder:", "imagefolder:   ",
                                  "cifar10:", "cifar100:/tmp", "image folder:/tmp", "/tmp/images",
                                  "imagefolder:/tmp/a\x00b", "imagefolder:/tmp/a\nb", "cifar10:\r\n",
                                  "imagefolder:" + "a" * 5000, "x" * 100_000, "\u2028", "fashion-mnist\n:x"])
def test_bad_spec_is_one_line_listing_valid_specs(spec):
    message = refused(load_dataset, spec)
    assert SPEC_HELP in message and len(message) < 400


def test_very_long_single_component_path_is_a_user_error(tmp_path):
    message = refused(load_dataset, f"imagefolder:{tmp_path / ('n' * 300)}")
    assert SPEC_HELP in message


def test_spec_with_spaces_and_capitals_still_loads(image_folder):
    ds = load_dataset(f"  ImageFolder :  {image_folder}  ")
    assert ds.class_names == ("cat", "dog", "fox")


def test_non_text_spec_is_a_user_error():
    assert SPEC_HELP in refused(load_dataset, None)  # type: ignore[arg-type]


def test_loader_batches_are_tensors(image_folder):
    x, y = next(iter(load_dataset(f"imagefolder:{image_folder}").loader("train", 4)))
    assert isinstance(x, torch.Tensor) and x.shape[0] == 4 and y.dtype == torch.int64


# A few bytes of pickle can ask the C unpickler for gigabytes before it reads anything: a memo index makes
# it grow (and zero) its memo table to that size, a frame or bytes length is allocated before it is read.
# A hypothesis case found the first: 11 GiB for a 400-byte "CIFAR batch", and the test worker was killed.
@pytest.mark.parametrize("raw, words", [
    (b"\x80\x02N" + b"r" + (10**7).to_bytes(4, "little") + b".", "memo index"),
    (b"\x80\x04\x95" + (1 << 40).to_bytes(8, "little") + b"N.", "frame of"),
    (b"\x80\x04\x8e" + (1 << 40).to_bytes(8, "little") + b"xx.", "damaged pickle"),
])
def test_a_pickle_that_asks_for_gigabytes_is_refused_before_unpickling(tmp_path, raw, words):
    from engine.data.cifar import _read_cifar_batch

    path = tmp_path / "data_batch_1"
    path.write_bytes(raw)
    with pytest.raises(UserError) as caught:
        _read_cifar_batch(path)
    msg = str(caught.value)
    assert words in msg and str(path) in msg and len(msg.splitlines()) == 1
