"""Limited evaluations take a stratified, seeded sample: every class in proportion, the same images every time."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shared_fixtures import ROOT, TINY_WIDTHS, tiny_resnet
from engine import data as data_mod
from engine.data import stratified_indices
from engine.metrics import evaluate
from engine.models import ModelBundle, save_model

CLASSES = tuple(f"c{i}" for i in range(10))


def test_every_class_in_proportion_with_at_least_one_each():
    labels = np.repeat(np.arange(5), [10, 20, 30, 40, 100])  # sorted by class, as folders are
    for limit, expected in ((5, [1, 1, 1, 1, 1]), (7, [1, 1, 1, 1, 3]), (40, [2, 4, 6, 8, 20]),
                            (199, [10, 20, 30, 40, 99])):
        picks = stratified_indices(labels, limit, 0)
        assert len(picks) == len(set(picks.tolist())) == limit
        assert np.bincount(labels[picks], minlength=5).tolist() == expected, limit
    assert np.bincount(labels[stratified_indices(labels, 3, 0)], minlength=5).max() == 1  # 3 classes, 1 each
    assert stratified_indices(labels, 500, 0).tolist() == list(range(200))  # the whole split, in order


def test_the_sample_depends_on_labels_limit_and_seed_only():
    labels = np.random.default_rng(5).integers(0, 7, 1000)
    a, b = stratified_indices(labels, 50, 0), stratified_indices(labels.copy(), 50, 0)
    assert a.tolist() == b.tolist() and a.tolist() == sorted(a.tolist())
    assert stratified_indices(labels, 50, 1).tolist() != a.tolist()


@pytest.mark.heavy_memory(gib=0.8)
def test_the_sample_is_the_same_in_another_process_whatever_the_hash_seed():
    labels = np.repeat(np.arange(10), 30)
    code = ("import numpy as np; from engine.data import stratified_indices; "
            "print(stratified_indices(np.repeat(np.arange(10), 30), 20).tolist())")
    outs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                              check=True)
        outs.add(done.stdout.strip())
    assert outs == {str(stratified_indices(labels, 20).tolist())}


def _sorted_folder(root: Path, per_class: int = 8) -> Path:
    """train/ and test/ trees of 10 classes of tiny PNGs, listed class by class as every folder is."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 20, (12, 12, 3), dtype=np.uint8) + np.uint8(20 * label)
                Image.fromarray(pixels, "RGB").save(root / split / name / f"{i:02d}.png")
    return root


def test_a_limited_folder_evaluation_sees_every_class_and_the_same_images_after_pruning(tmp_path):
    data = data_mod.load_image_folder(_sorted_folder(tmp_path / "f"), input_shape=(3, 12, 12))
    labels = torch.cat([y for _, y in data.loader("test", 7, limit=20, workers=0)])
    assert sorted(labels.tolist()) == sorted(list(range(10)) * 2)
    before, after = tiny_resnet(3, 10), tiny_resnet(3, 10)
    after.fc.weight.data.zero_()  # another model: the sample must not move
    m = [ev for ev in evaluate(before, data, limit=20, speed=False)][-1].metrics
    n = [ev for ev in evaluate(after, data, limit=20, speed=False)][-1].metrics
    assert m.per_class["support"] == n.per_class["support"] == [2] * 10
    data.close()


def test_in_memory_datasets_sample_the_same_way(fashion):
    picks = fashion.sample("test", 100)
    labels = fashion.splits["test"].targets()[picks]
    assert np.bincount(labels, minlength=10).tolist() == [10] * 10
    y = torch.cat([b for _, b in fashion.loader("test", 32, limit=100)])
    assert y.tolist() == labels.tolist()


def test_evaluate_on_the_command_line_finds_every_class_with_eval_limit_20(tmp_path):
    folder = _sorted_folder(tmp_path / "sorted")
    model = tmp_path / "m.pt"
    save_model(ModelBundle(tiny_resnet(3, 10), str(model), "demo:resnet", (3, 12, 12), 10,
                           arch_kwargs={"widths": list(TINY_WIDTHS)}), model)
    out = tmp_path / "m.json"
    from tests.test_bad_inputs import run_in_process  # the command line in this process: no start-up to pay

    code, stderr = run_in_process(["evaluate", "--model", str(model), "--data", f"imagefolder:{folder}",
                                   "--eval-limit", "20", "--no-speed", "--json", str(out), "--quiet"],
                                  tmp_path, {**os.environ, "PRUNELAB_LOADER_WORKERS": "0"})
    assert code == 0, stderr
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["per_class"]["support"] == [2] * 10  # the first 20 of a class-sorted folder: 3 classes
    assert metrics["per_class"]["eval_images"] == metrics["eval_images"] == 20


def test_stored_results_of_a_limited_evaluation_are_keyed_by_the_sampling(monkeypatch):
    """A store filled when a limit took the first N images must not lend those figures to this sampling."""
    from engine.config import PruneConfig
    from engine.experiments import runner
    from engine.experiments.plans import Plan
    from engine.sensitivity import scan_key

    plan = Plan(model="demo:resnet", data="fashion-mnist")
    limited, whole = PruneConfig(method="l2", pruning_ratio=0.5, eval_limit=60), PruneConfig(method="l2",
                                                                                              pruning_ratio=0.5)
    keys = (runner.run_key(plan, limited), runner.baseline_key(plan, limited), runner.run_key(plan, whole),
            scan_key({"source": "demo:resnet"}, "fashion-mnist", {"limit": 1000}))
    monkeypatch.setattr(runner, "EVAL_SAMPLING", "first-n")
    monkeypatch.setattr("engine.sensitivity.EVAL_SAMPLING", "first-n")
    again = (runner.run_key(plan, limited), runner.baseline_key(plan, limited), runner.run_key(plan, whole),
             scan_key({"source": "demo:resnet"}, "fashion-mnist", {"limit": 1000}))
    assert [a != b for a, b in zip(keys, again)] == [True, True, False, True]  # the whole split: same images


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
