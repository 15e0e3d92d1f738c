"""Metrics against hand-computed values: quality scores, sizes, MACs, latency, memory, evaluate()."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

from shared_fixtures import tiny_resnet
from engine import metrics
from engine.data import read_idx, FASHION_DIR
from engine.errors import Cancelled
from engine.models import DemoResNet
from engine.events import CancelToken, EvalDone, Progress
from engine.metrics import (Metrics, classification_scores, confusion_matrix, count_macs, count_nonzero,
                            count_params, size_on_disk, topk_correct)
from engine.timing import measure_latency, measure_peak_memory

# A known case: 4 classes, class 3 is never predicted.
Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
Y_PRED = np.array([0, 0, 1, 1, 1, 2, 2, 0, 1, 1])
CONFUSION = np.array([[2, 1, 0, 0],
                      [0, 2, 0, 0],
                      [1, 1, 2, 0],
                      [0, 1, 0, 0]])


class ConstantRanking(nn.Module):
    """Ignores the image: always ranks class 0 first, then 1, 2, ... (a zero-weight linear layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(28 * 28, 10)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.copy_(torch.arange(10, 0, -1).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(x))


# ----------------------------------------------------------------------------- quality

def test_confusion_matrix_by_hand():
    conf = confusion_matrix(Y_TRUE, Y_PRED, 4)
    assert conf.dtype.kind == "i"
    assert np.array_equal(conf, CONFUSION)


def test_classification_scores_by_hand():
    s = classification_scores(CONFUSION)
    assert s["precision"] == pytest.approx([2 / 3, 2 / 5, 1.0, 0.0])
    assert s["recall"] == pytest.approx([2 / 3, 1.0, 1 / 2, 0.0])
    assert s["f1"] == pytest.approx([2 / 3, 4 / 7, 2 / 3, 0.0])
    assert s["support"] == [3, 2, 4, 1]
    assert s["precision_macro"] == pytest.approx(31 / 60)
    assert s["recall_macro"] == pytest.approx(13 / 24)
    assert s["f1_macro"] == pytest.approx(10 / 21)
    assert s["top1"] == pytest.approx(0.6)


def test_class_never_predicted_and_class_absent_score_zero():
    # Class 1 never appears and is never predicted; class 2 appears but is never predicted.
    s = classification_scores(confusion_matrix([0, 0, 2], [0, 0, 0], 3))
    assert s["precision"] == pytest.approx([2 / 3, 0.0, 0.0])
    assert s["recall"] == pytest.approx([1.0, 0.0, 0.0])
    assert s["f1"] == pytest.approx([0.8, 0.0, 0.0])
    assert classification_scores(np.zeros((3, 3)))["top1"] == 0.0


def test_topk_correct_by_hand():
    logits = torch.tensor([[0.1, 0.5, 0.3, 0.2],
                           [0.9, 0.05, 0.03, 0.02],
                           [0.1, 0.2, 0.3, 0.4]])
    labels = torch.tensor([2, 3, 0])  # ranks 2, 4, 4
    assert [topk_correct(logits, labels, k) for k in (1, 2, 3, 4)] == [0, 1, 1, 3]
    assert topk_correct(logits, labels, 10) == 3  # k larger than the class count is clamped
    assert topk_correct(logits, torch.tensor([1, 0, 3]), 1) == 3


# ----------------------------------------------------------------------------- size and MACs

def test_count_params_and_nonzero_after_zeroing():
    lin = nn.Linear(3, 2)
    assert count_params(lin) == 8
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.fill_(1.0)
        lin.weight[0, 0] = 0
        lin.weight[1, 2] = 0
        lin.bias[1] = 0
    assert count_nonzero(lin) == 5


def test_counts_see_through_pruning_masks():
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.fill_(1.0)
    prune.custom_from_mask(lin, "weight", torch.tensor([[1, 0, 0], [0, 1, 0]]))
    assert count_params(lin) == 8  # weight_orig is counted once, as the weight it stands for
    assert count_nonzero(lin) == 2 + 2
    prune.remove(lin, "weight")  # made permanent: the same figures
    assert (count_params(lin), count_nonzero(lin)) == (8, 4)


def test_count_macs_of_single_layers_by_hand():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_macs(conv, (3, 16, 16)) == 8 * 16 * 16 * (3 * 3 * 3)  # output elements × kernel volume
    assert count_macs(nn.Conv2d(3, 8, 3, padding=1), (3, 16, 16)) == 8 * 16 * 16 * (3 * 3 * 3 + 1)  # + bias add
    assert count_macs(nn.Linear(20, 5, bias=False), (20,)) == 20 * 5
    net = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.Flatten(), nn.Linear(4 * 6 * 6, 10, bias=False))
    assert count_macs(net, (1, 8, 8)) == 4 * 6 * 6 * 9 + 144 * 10
    assert net.training  # count_macs restores the training flag


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_count_macs_grows_with_width_and_input_size():
    small = count_macs(tiny_resnet(), (1, 28, 28))
    assert 0 < small < count_macs(DemoResNet(widths=(8, 16, 32)), (1, 28, 28))
    assert count_macs(tiny_resnet(), (1, 56, 56)) > 3.5 * small  # four times the pixels, nearly four times the work
    assert count_macs(torch.jit.script(tiny_resnet()), (1, 28, 28)) == 0  # not countable: reported as 0


def test_compressed_size_is_smaller_for_a_sparse_model():
    dense = nn.Linear(256, 256)
    sparse = nn.Linear(256, 256)
    with torch.no_grad():
        sparse.weight.copy_(dense.weight)
        sparse.weight[torch.rand(256, 256) < 0.9] = 0
    dense_raw, dense_zip = size_on_disk(dense)
    sparse_raw, sparse_zip = size_on_disk(sparse)
    assert dense_raw == sparse_raw >= 257 * 256 * 4  # same tensors, same raw size
    assert dense_zip > 0.8 * dense_raw  # random floats barely compress
    assert sparse_zip < 0.4 * dense_zip


def test_size_folds_in_pruning_masks():
    lin = nn.Linear(128, 128)
    raw_before, zip_before = size_on_disk(lin)
    prune.l1_unstructured(lin, "weight", amount=0.9)
    raw_after, zip_after = size_on_disk(lin)
    assert raw_after == raw_before  # no weight_orig or mask stored next to the weight
    assert zip_after < 0.5 * zip_before


# ----------------------------------------------------------------------------- speed and memory

def test_measure_latency_batch_1_and_8():
    lat = measure_latency(tiny_resnet(), (1, 28, 28), (1, 8), warmup=2, repeats=5, min_seconds=0.05)
    assert set(lat) == {"1", "8"}
    for stats in lat.values():
        assert stats["median"] > 0 and stats["p95"] >= stats["median"] and stats["runs"] >= 5
    assert lat["8"]["median"] > lat["1"]["median"] * 0.5  # eight images are not much cheaper than one


def test_measure_latency_restores_threads_and_honours_cancel():
    before = torch.get_num_threads()
    measure_latency(nn.Linear(4, 2), (4,), (1,), warmup=1, repeats=3, min_seconds=0.0, threads=1)
    assert torch.get_num_threads() == before
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        measure_latency(nn.Linear(4, 2), (4,), (1,), warmup=1, repeats=3, cancel=token)


def test_measure_peak_memory_is_positive_and_grows_with_batch():
    """A forward pass of a few hundred KiB once showed no RSS growth at all in CI (the kernel's RSS counters
    are approximate for small changes): the small batch here makes 3 MiB activations."""
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1))
    small = measure_peak_memory(model, (1, 28, 28), batch_size=32)
    big = measure_peak_memory(model, (1, 28, 28), batch_size=128)
    assert small > 0
    assert big > 128 * 32 * 28 * 28 * 4 * 0.9  # at least one 128×32×28×28 float activation
    assert big > small


# ----------------------------------------------------------------------------- evaluate()

def sampled_test_labels(fashion, n: int) -> np.ndarray:
    """The labels of the stratified sample a `limit=n` evaluation takes, read from the raw file."""
    return read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")[fashion.sample("test", n)].astype(np.int64)


def test_evaluate_quality_of_a_constant_model_by_hand(fashion):
    labels = sampled_test_labels(fashion, 256)
    events = list(metrics.evaluate(ConstantRanking(), fashion, batch_size=8, limit=256, speed=False))
    assert all(isinstance(e, Progress) for e in events[:-1]) and isinstance(events[-1], EvalDone)
    assert [e.phase for e in events[:2]] == ["evaluate", "evaluate"]  # 256 images at batch 128
    m: Metrics = events[-1].metrics
    share0 = float(np.mean(labels == 0))
    assert m.samples == 256 and m.confusion.sum() == 256
    assert m.top1 == pytest.approx(share0)
    assert m.top5 == pytest.approx(float(np.mean(labels < 5)))
    assert m.precision_macro == pytest.approx(share0 / 10)
    assert m.recall_macro == pytest.approx(0.1)
    assert m.f1_macro == pytest.approx(2 * share0 / (share0 + 1) / 10)
    assert m.confusion[:, 0].tolist() == np.bincount(labels, minlength=10).tolist()
    assert m.per_class["names"][0] == "T-shirt/top" and m.per_class["support"][0] == int((labels == 0).sum())
    assert (m.params, m.nonzero_params, m.macs) == (7850, 10, 7850)
    assert m.latency_ms == {} and m.throughput_ips == 0.0 and m.peak_memory_bytes == 0


def test_evaluate_yields_progress_then_all_metrics(fashion):
    model = tiny_resnet()
    events = list(metrics.evaluate(model, fashion, batch_size=8, limit=256, repeats=5))
    assert all(isinstance(e, Progress) for e in events[:-1]) and isinstance(events[-1], EvalDone)
    phases = [e.phase for e in events[:-1]]
    assert phases.index("measure") > phases.index("evaluate")
    assert all(0.0 <= e.fraction <= 1.0 for e in events[:-1])
    m: Metrics = events[-1].metrics
    with torch.inference_mode():  # the same figure from a plain loop
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in fashion.loader("test", 64, limit=256))
    assert m.top1 == pytest.approx(correct / 256)
    assert m.params == count_params(model) and m.macs == count_macs(model, (1, 28, 28)) > 0
    assert set(m.latency_ms) == {"1", "8"}
    assert m.throughput_ips == pytest.approx(8 / (m.latency(8) / 1000), rel=0.01)
    assert m.peak_memory_bytes > 0 and m.size_bytes > m.compressed_bytes > 0
    out = m.to_json()
    assert set(Metrics.KEYS) <= set(out) and out["confusion"] == m.confusion.tolist()
    back = Metrics.from_json(out)
    assert back.to_json() == out and back.sparsity == pytest.approx(m.sparsity)


def test_evaluate_cancelled_after_first_progress(fashion):
    token = CancelToken()
    gen = metrics.evaluate(tiny_resnet(), fashion, batch_size=8, limit=256, cancel=token)
    first = next(gen)
    assert isinstance(first, Progress) and first.phase == "evaluate"
    token.cancel()
    with pytest.raises(Cancelled):
        for _ in gen:
            pass


def test_metrics_latency_helper_and_sparsity():
    m = Metrics(params=10, nonzero_params=4, latency_ms={"1": {"median": 2.0, "p95": 3.0},
                                                         "64": {"median": 40.0, "p95": 50.0}})
    assert m.sparsity == pytest.approx(0.6)
    assert m.latency() == 40.0 and m.latency(1, "p95") == 3.0 and m.latency(8) == 0.0
    assert Metrics().latency() == 0.0 and Metrics().sparsity == 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc only")
def test_memory_measurement_leaves_the_allocator_fast():
    """Measuring peak memory lowers glibc's mmap threshold; left low, every later forward pass maps
    and faults in fresh pages (latency up by a third on the demo). Afterwards a pass must reuse memory."""
    import resource

    who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)  # this thread: not the suite's other threads
    model = tiny_resnet().eval()
    x = torch.randn(256, 1, 28, 28)
    measure_peak_memory(model, (1, 28, 28), 256)
    with torch.inference_mode():
        model(x)  # let the heap grow once
        before = resource.getrusage(who).ru_minflt
        for _ in range(5):
            model(x)
        per_pass = (resource.getrusage(who).ru_minflt - before) / 5
    # One 256×4×28×28 activation is 3.2 MiB (800 pages); mapped afresh, each pass faults on several of
    # them (about 26 000 pages measured with the bug); reused, almost none.
    assert per_pass < 1000, per_pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc only")
def test_timing_steadies_the_heap_whatever_ran_before():
    """glibc's thresholds move with what ran before: with a low one a pass maps and faults in its
    activations afresh (the demo's batch-64 time moved 27-50 ms in one process and the latency target's
    search chased it). Every timing steadies the heap first, so passes reuse memory."""
    import ctypes
    import resource

    from engine.timing import M_MMAP_THRESHOLD

    who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
    model = tiny_resnet().eval()
    ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 128 * 1024)  # a heap left by other work
    measure_latency(model, (1, 28, 28), (256,), warmup=1, repeats=1, min_seconds=0.0, threads=1)
    x = torch.randn(256, 1, 28, 28)
    with torch.inference_mode():
        model(x)
        before = resource.getrusage(who).ru_minflt
        for _ in range(5):
            model(x)
        per_pass = (resource.getrusage(who).ru_minflt - before) / 5
    assert per_pass < 1000, per_pass  # as in the test above: about 26 000 pages a pass when mapped afresh


def test_size_is_what_torch_save_writes_and_its_zlib_size():
    """Streamed through a counting file, the sizes are those of the bytes torch.save writes."""
    import io
    import zlib

    model = nn.Sequential(nn.Linear(300, 200), nn.ReLU(), nn.Linear(200, 10))
    buf = io.BytesIO()
    torch.save({k: v.detach() for k, v in model.state_dict().items()}, buf)
    raw, packed = size_on_disk(model)
    assert raw == len(buf.getvalue())
    assert packed == len(zlib.compress(buf.getvalue(), 1))


def test_macs_are_counted_on_a_shape_only_copy_with_the_same_result():
    """The counter deep-copies the model it is given: it gets a copy without weights (no memory), and
    counts what it counts on the real one; a forward pass that reads a value falls back to the weights."""
    import torch_pruning as tp

    class ReadsValues(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3)

        def forward(self, x):
            y = self.conv(x)
            return y if float(y.sum()) > -1e30 else -y

    seen = []
    real = tp.utils.count_ops_and_params

    def spy(model, example, *args, **kwargs):
        seen.append(next(model.parameters()).device.type)
        return real(model, example, *args, **kwargs)

    for model in (nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 10)), ReadsValues()):
        with torch.no_grad():
            expected = real(model, torch.zeros(1, 1, 28, 28))[0]
        seen.clear()
        tp.utils.count_ops_and_params = spy
        try:
            assert count_macs(model, (1, 28, 28)) == int(expected)
        finally:
            tp.utils.count_ops_and_params = real
        assert seen[0] == "meta"
        assert seen[1:] == ([] if isinstance(model, nn.Sequential) else ["cpu"])
