"""Time writing the deployment set (engine.deploy.save_outputs) and list its file sizes.

    .venv/bin/python benchmarks/export_set.py [--repeats 3]

The four models of tests/test_deploy.py, pruned once each (l1, ratio 0.5, no recovery): demo:resnet on
Fashion-MNIST (1×28×28), and torchvision:resnet18, timm:resnet10t and a small user-code network on a
generated RGB folder at 3×32×32; plus torchvision:resnet18 at 3×224×224. Each set is then written
`--repeats` times with the checks prune --out runs (every exported file against PyTorch on the test
images, at most 1024); prints the median and all times, the size of each file and the load average.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config import PruneConfig  # noqa: E402
from engine.data import load_dataset  # noqa: E402
from engine.deploy import save_outputs  # noqa: E402
from engine.events import result_of  # noqa: E402
from engine.inputs import fit_data, model_for_data  # noqa: E402
from engine.pruning import run_pruning  # noqa: E402
from tests.test_deploy import USER_CODE, rgb_folder  # noqa: E402 - the test's models and folder

def _pruned(src: str, spec: str, shape, code: str | None = None):
    data = load_dataset(spec, input_shape=shape)
    bundle = model_for_data(src, data, model_code=code, input_shape=shape)
    fitted = fit_data(bundle, data)
    cfg = PruneConfig(method="l1", pruning_ratio=0.5, measure_speed=False, eval_limit=200)
    return result_of(run_pruning(bundle, fitted, cfg)).bundle, fitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prunelab-export-") as name:  # removed however the run ends
        _run(Path(name), args.repeats)


def _run(tmp: Path, repeats: int) -> None:
    """Write the set `repeats` times for each model under `tmp` and print the median time and file sizes."""
    folder = f"imagefolder:{rgb_folder(tmp / 'folder', {'train': 8, 'test': 4})}"
    (tmp / "net.py").write_text(USER_CODE)
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_net", tmp / "net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    torch.save(module.Net().state_dict(), tmp / "net.pt")
    cases = {
        "demo:resnet (Fashion-MNIST, 1x28x28)": ("demo:resnet", "fashion-mnist", None, None),
        "torchvision:resnet18 (folder, 3x32x32)": ("torchvision:resnet18", folder, (3, 32, 32), None),
        "timm:resnet10t (folder, 3x32x32)": ("timm:resnet10t", folder, (3, 32, 32), None),
        "user code Net (folder, 3x32x32)": (str(tmp / "net.pt"), folder, (3, 32, 32), f"{tmp / 'net.py'}:Net"),
        "torchvision:resnet18 (folder, 3x224x224)": ("torchvision:resnet18", folder, (3, 224, 224), None),
    }
    print(f"load average before: {os.getloadavg()}, torch threads {torch.get_num_threads()}")
    for k, (label, (src, data_spec, shape, code)) in enumerate(cases.items()):
        work, data = _pruned(src, data_spec, shape, code)
        times = []
        for i in range(repeats):
            out = tmp / f"set{k}-{i}"
            t0 = time.perf_counter()
            files = save_outputs(work, out, structured=True, check_batches=data.loader("test", 64, limit=1024))
            times.append(time.perf_counter() - t0)
        sizes = ", ".join(f"{Path(p).name} {Path(p).stat().st_size / 1024:.0f} KiB" for p in files.values())
        print(f"{label}: median {statistics.median(times):.2f} s (runs {', '.join(f'{t:.2f}' for t in times)}); "
              f"{sizes}", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
