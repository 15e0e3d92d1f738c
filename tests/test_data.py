"""Datasets: Fashion-MNIST (real files), ImageFolder and CIFAR-10 (tiny trees), splits, conversion, errors."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from shared_fixtures import write_cifar, write_fake_fashion, write_idx, write_image_folder
from engine import data
from engine.data import Normalization, convert_batch, load_dataset, read_idx
from engine.data.tensors import _split_indices as split_indices
from engine.errors import UserError

IDENTITY = Normalization((0.0,), (1.0,))


# ----------------------------------------------------------------------------- Fashion-MNIST (real files)

def test_fashion_splits_have_documented_sizes_and_do_not_overlap(fashion):
    assert fashion.num_classes == 10 and fashion.class_names[0] == "T-shirt/top"
    assert fashion.input_shape == (1, 28, 28)
    assert (fashion.split_size("train"), fashion.split_size("val"), fashion.split_size("test")) == (55000, 5000, 10000)
    train = set(fashion.splits["train"].indices.tolist())
    val = set(fashion.splits["val"].indices.tolist())
    test = set(fashion.splits["test"].indices.tolist())
    assert not train & val and not train & test and not val & test
    assert max(train | val) < 60000 <= min(test)


def test_fashion_val_split_is_deterministic_and_seeded(fashion):
    rest, held = split_indices(60000, 1 / 12, 0)
    assert torch.equal(fashion.splits["val"].indices, held)
    assert torch.equal(fashion.splits["train"].indices, rest)
    again = split_indices(60000, 1 / 12, 0)[1]
    other = split_indices(60000, 1 / 12, 1)[1]
    assert torch.equal(held, again)
    assert not torch.equal(held, other)


def test_fashion_loader_slice_matches_the_raw_files(fashion):
    loader = fashion.adapted(norm=IDENTITY).loader("test", 64, limit=256)
    batches = list(loader)
    assert len(loader) == len(batches) == 4
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.shape == (256, 1, 28, 28) and x.dtype == torch.float32
    picks = fashion.sample("test", 256)  # a limit takes the stratified sample, in file order
    assert picks == sorted(picks) and len(set(picks)) == 256
    raw_x = read_idx(data.FASHION_DIR / "t10k-images-idx3-ubyte.gz")[picks]
    raw_y = read_idx(data.FASHION_DIR / "t10k-labels-idx1-ubyte.gz")[picks]
    assert torch.equal(y, torch.from_numpy(raw_y.astype(np.int64)))
    assert torch.allclose(x[:, 0], torch.from_numpy(raw_x.copy()).float() / 255.0)


def test_fashion_loader_normalises_with_training_statistics(fashion):
    mean, std = fashion.norm.mean[0], fashion.norm.std[0]
    assert 0.2 < mean < 0.4 and 0.25 < std < 0.45  # Fashion-MNIST: 0.286 / 0.353
    x, _ = next(iter(fashion.loader("train", 512, limit=512)))
    assert abs(float(x.mean())) < 0.15
    assert 0.8 < float(x.std()) < 1.2


def test_fashion_adapted_to_rgb_and_larger_size(fashion):
    rgb = fashion.adapted((3, 32, 32))
    assert rgb.norm.mean == (fashion.norm.mean[0],) * 3
    x, y = next(iter(rgb.loader("val", 16, limit=16)))
    assert x.shape == (16, 3, 32, 32) and y.shape == (16,)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # grey copied to each channel


def test_shuffled_loader_repeats_with_seed_and_changes_without(fashion):
    def order(seed: int) -> torch.Tensor:
        return torch.cat([y for _, y in fashion.loader("val", 32, shuffle=True, limit=128, seed=seed)])

    assert torch.equal(order(3), order(3))
    assert not torch.equal(order(3), order(4))
    assert sorted(order(3).tolist()) == sorted(order(4).tolist())  # same images, other order


def test_augmentation_keeps_shape_and_changes_pixels(fashion):
    plain = next(iter(fashion.loader("train", 32, limit=32)))[0]
    aug = next(iter(fashion.loader("train", 32, limit=32, augment=True, seed=1)))[0]
    assert aug.shape == plain.shape
    assert not torch.equal(aug, plain)


def test_unknown_split_is_a_user_error(fashion):
    with pytest.raises(UserError, match="valid: train, val, test"):
        fashion.loader("holdout", 8)


# ----------------------------------------------------------------------------- Fashion-MNIST (files on disk)

def test_missing_fashion_mnist_names_the_package(tmp_path):
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist(tmp_path)
    with pytest.raises(UserError, match="Fashion-MNIST not found"):
        load_dataset(f"fashion-mnist:{tmp_path}")


def test_fake_fashion_folder_loads(tmp_path):
    ds = load_dataset(f"fashion-mnist:{write_fake_fashion(tmp_path / 'fm')}")
    assert ds.split_size("test") == 12 and ds.split_size("train") + ds.split_size("val") == 24
    x, y = next(iter(ds.adapted(norm=IDENTITY).loader("test", 12)))
    assert y.tolist() == [i % 10 for i in range(12)]
    assert torch.allclose(x[:, 0, 5, 5], torch.arange(12) / 255.0)


def test_corrupt_idx_file_is_a_user_error(tmp_path):
    root = write_fake_fashion(tmp_path / "fm")
    (root / "train-images-idx3-ubyte.gz").write_bytes(b"this is not gzip at all")
    with pytest.raises(UserError, match="reinstall"):
        data.load_fashion_mnist(root)


def test_truncated_idx_file_is_a_user_error(tmp_path):
    good = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((4, 28, 28), dtype=np.uint8))
    assert read_idx(good).shape == (4, 28, 28)
    cut = tmp_path / "cut-idx3-ubyte"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(UserError, match="truncated"):
        read_idx(cut)
    bad_magic = tmp_path / "bad-idx3-ubyte"
    bad_magic.write_bytes(b"\x01\x02\x08\x03" + good.read_bytes()[4:])
    with pytest.raises(UserError, match="not an unsigned-byte IDX"):
        read_idx(bad_magic)
    short = tmp_path / "short"
    short.write_bytes(b"\x00")
    with pytest.raises(UserError, match="too short"):
        read_idx(short)


def test_fashion_files_that_disagree_are_a_user_error(tmp_path):
    root = write_fake_fashion(tmp_path / "fm")
    write_idx(root / "train-labels-idx1-ubyte.gz", np.zeros(5, dtype=np.uint8))
    with pytest.raises(UserError, match="disagree"):
        data.load_fashion_mnist(root)


def test_unknown_dataset_spec_lists_the_valid_ones():
    for spec in ("mnist", "imagefolder:", "cifar100:/tmp"):
        with pytest.raises(UserError, match="valid dataset specs: fashion-mnist, imagefolder:PATH, cifar10:PATH"):
            load_dataset(spec)


# ----------------------------------------------------------------------------- conversion

def test_convert_batch_channels_and_size():
    red = torch.zeros(2, 3, 8, 8)
    red[:, 0] = 1.0
    grey = convert_batch(red, (1, 8, 8))
    assert grey.shape == (2, 1, 8, 8)
    assert torch.allclose(grey, torch.full_like(grey, 0.299))
    rgb = convert_batch(torch.full((1, 1, 8, 8), 0.5), (3, 16, 12))
    assert rgb.shape == (1, 3, 16, 12)
    assert torch.allclose(rgb, torch.full_like(rgb, 0.5), atol=1e-6)
    with pytest.raises(UserError, match="--input-shape"):
        convert_batch(torch.zeros(1, 2, 8, 8), (3, 8, 8))


def test_normalization_adapts_between_grey_and_rgb():
    rgb = Normalization((0.2, 0.4, 0.6), (0.1, 0.2, 0.3))
    assert rgb.adapted(3) is rgb
    grey = rgb.adapted(1)
    assert grey.mean == pytest.approx((0.4,)) and grey.std == pytest.approx((0.2,))
    assert Normalization((0.5,), (0.25,)).adapted(3) == Normalization((0.5,) * 3, (0.25,) * 3)


# ----------------------------------------------------------------------------- ImageFolder

def test_image_folder_splits_are_deterministic_and_cover_every_image(image_folder):
    ds = load_dataset(f"imagefolder:{image_folder}")
    assert ds.class_names == ("cat", "dog", "fox") and ds.num_classes == 3
    assert ds.native_shape == (3, 16, 20) and ds.input_shape == (3, 20, 20)
    paths = {k: [p for p, _ in ds.splits[k].samples] for k in ("train", "val", "test")}
    everything = paths["train"] + paths["val"] + paths["test"]
    assert len(everything) == len(set(everything)) == 18
    assert len(paths["test"]) == 1 and len(paths["val"]) == 1
    again = load_dataset(f"imagefolder:{image_folder}")
    assert paths["test"] == [p for p, _ in again.splits["test"].samples]
    other = [data.load_image_folder(image_folder, seed=s).splits["test"].samples for s in range(1, 6)]
    assert any(o != ds.splits["test"].samples for o in other)


def test_image_folder_labels_follow_class_folders(image_folder):
    ds = load_dataset(f"imagefolder:{image_folder}")
    for path, label in ds.splits["train"].samples:
        assert Path(path).parent.name == ds.class_names[label]


def test_image_folder_converts_to_model_shape(image_folder):
    ds = load_dataset(f"imagefolder:{image_folder}", input_shape=(1, 28, 28))
    assert ds.input_shape == (1, 28, 28) and len(ds.norm.mean) == 1
    batches = list(ds.adapted(norm=IDENTITY).loader("train", 4))
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.shape == (16, 1, 28, 28)
    # Pixels were drawn in [100*label, 100*label+40): the grey mean tells the class apart.
    means = x.mean(dim=(1, 2, 3)) * 255
    for m, label in zip(means.tolist(), y.tolist()):
        assert 100 * label - 1 <= m <= 100 * label + 41


def test_image_folder_with_train_and_test_subfolders(tmp_path):
    write_image_folder(tmp_path / "tree" / "train", per_class=4)
    write_image_folder(tmp_path / "tree" / "test", per_class=2)
    ds = load_dataset(f"imagefolder:{tmp_path / 'tree'}")
    assert ds.split_size("train") == 12 and ds.split_size("test") == 6
    assert ds.split_size("val") == 6  # no val/: validation falls back to test/


def test_image_folder_with_only_a_train_subfolder_is_split_by_seed(tmp_path):
    write_image_folder(tmp_path / "tree" / "train", per_class=4)
    ds = load_dataset(f"imagefolder:{tmp_path / 'tree'}")
    assert ds.class_names == ("cat", "dog", "fox")  # not a single class called "train"
    assert ds.split_size("train") + ds.split_size("val") + ds.split_size("test") == 12


def test_grey_image_folder_has_one_channel(tmp_path):
    root = write_image_folder(tmp_path / "grey", classes=("a", "b"), per_class=3, size=(12, 12), mode="L")
    ds = load_dataset(f"imagefolder:{root}")
    assert ds.input_shape == (1, 12, 12)
    x, _ = next(iter(ds.loader("train", 8)))
    assert x.shape[1:] == (1, 12, 12)


def test_image_folder_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}")
    with pytest.raises(UserError, match="at least two class folders"):
        data.load_image_folder(write_image_folder(tmp_path / "one", classes=("only",)))
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="fewer than 3 images"):
        data.load_image_folder(tmp_path / "empty")
    write_image_folder(tmp_path / "mismatch" / "train", classes=("a", "b"), per_class=2)
    write_image_folder(tmp_path / "mismatch" / "test", classes=("a", "c"), per_class=2)
    with pytest.raises(UserError, match="other class folders"):
        data.load_image_folder(tmp_path / "mismatch")


# ----------------------------------------------------------------------------- CIFAR-10

def test_cifar_folder_loads_with_names_and_deterministic_split(cifar_folder):
    ds = load_dataset(f"cifar10:{cifar_folder.parent}")  # the parent of cifar-10-batches-py works too
    assert ds.class_names == tuple(f"name{i}" for i in range(10))
    assert ds.input_shape == (3, 32, 32)
    assert (ds.split_size("train"), ds.split_size("val"), ds.split_size("test")) == (45, 5, 10)
    again = load_dataset(f"cifar10:{cifar_folder}")
    assert torch.equal(ds.splits["val"].indices, again.splits["val"].indices)
    assert set(ds.splits["val"].indices.tolist()).isdisjoint(ds.splits["train"].indices.tolist())
    assert ds.splits["test"].targets().tolist() == list(range(10))


def test_cifar_pixels_convert_to_grey_at_model_size(cifar_folder):
    ds = load_dataset(f"cifar10:{cifar_folder}").adapted((1, 28, 28), IDENTITY)
    x, y = next(iter(ds.loader("test", 10)))
    assert x.shape == (10, 1, 28, 28)
    for k in range(10):  # solid colour red=25k, blue=255 → luma 0.299·25k/255 + 0.114
        expected = 0.299 * 25 * k / 255 + 0.114
        assert torch.allclose(x[k], torch.full_like(x[k], expected), atol=1e-4), k
    rgb = load_dataset(f"cifar10:{cifar_folder}").adapted(norm=Normalization((0.0,) * 3, (1.0,) * 3))
    x3, _ = next(iter(rgb.loader("test", 10)))
    assert x3.shape == (10, 3, 32, 32)
    assert torch.allclose(x3[3, 0], torch.full((32, 32), 75 / 255)) and float(x3[3, 2].min()) == 1.0


def test_cifar_missing_files_are_named(tmp_path, cifar_folder):
    (cifar_folder / "data_batch_3").unlink()
    with pytest.raises(UserError, match="missing data_batch_3"):
        load_dataset(f"cifar10:{cifar_folder}")
    with pytest.raises(UserError, match="not a CIFAR-10 python folder"):
        load_dataset(f"cifar10:{tmp_path / 'nothing'}")


def test_cifar_batch_that_runs_code_is_refused(tmp_path):
    root = write_cifar(tmp_path / "evil")

    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "victim"),))

    (tmp_path / "victim").mkdir()
    (root / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(UserError, match="refusing to load"):
        load_dataset(f"cifar10:{root}")
    assert (tmp_path / "victim").is_dir()


def test_corrupt_cifar_batch_is_a_user_error(cifar_folder):
    (cifar_folder / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(UserError, match="cannot read CIFAR-10 batch"):
        load_dataset(f"cifar10:{cifar_folder}")


def test_fashion_is_read_once_per_process_and_again_when_its_files_change(tmp_path, monkeypatch):
    """A second load of the same files shares the first one's pixels (decompressing took 0.7-2 s each time);
    a file rewritten in place is read again, and a broken one is still refused."""
    import os

    from engine.data import fashion as fashion_mod

    root = write_fake_fashion(tmp_path / "fashion", n_train=24, n_test=12)
    reads = []
    real_read = fashion_mod.read_idx
    monkeypatch.setattr(fashion_mod, "read_idx", lambda path: reads.append(path.name) or real_read(path))
    first = fashion_mod.load_fashion_mnist(root)
    second = fashion_mod.load_fashion_mnist(root)
    assert len(reads) == 4
    assert second.splits["train"].images is first.splits["train"].images
    assert second.norm == first.norm and second is not first
    assert torch.equal(second.splits["val"].indices, first.splits["val"].indices)

    images = root / "train-images-idx3-ubyte.gz"
    write_idx(images, np.stack([np.full((28, 28), 200, dtype=np.uint8) for _ in range(24)]))
    os.utime(images, ns=(images.stat().st_atime_ns, images.stat().st_mtime_ns + 1_000_000))
    third = fashion_mod.load_fashion_mnist(root)
    assert len(reads) == 8 and int(third.splits["train"].images[0].max()) == 200

    images.write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="cannot read"):
        fashion_mod.load_fashion_mnist(root)
