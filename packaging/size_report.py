"""Print a bundle's size by part (CUDA, torch, Qt, ...), so a change to the spec shows what it saved.

    .venv/bin/python packaging/size_report.py dist/PruneLab [--json]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

# (part, substrings of a file's path inside the bundle); the first match wins, the rest is "other".
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("CUDA: cuDNN", ("cudnn",)),
    ("CUDA: cuBLAS", ("libcublas",)),
    ("CUDA: NCCL, NVSHMEM", ("nccl", "nvshmem")),
    ("CUDA: other libraries", ("nvidia/", "libcu", "libnvrtc", "libnvJitLink", "libnvToolsExt")),
    ("torch CUDA kernels", ("libtorch_cuda", "libc10_cuda", "libcaffe2_nvrtc")),
    ("torch CPU", ("torch/",)),
    ("Qt WebEngine (Chromium)", ("WebEngine", "qtwebengine", "QtWebEngine")),
    ("Qt", ("PySide6/", "shiboken6/", "libQt6", "libpyside6", "libshiboken6")),
    ("ONNX, onnxruntime", ("onnx",)),
    ("Netron viewer", ("netron/",)),
    ("Python and the rest", ()),
]


def sizes(root: Path) -> dict[str, int]:
    """Bytes per part for every regular file under `root` (symbolic links count once, at their target)."""
    totals = {name: 0 for name, _ in PARTS}
    for path in root.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        part = next((name for name, keys in PARTS if any(k in rel for k in keys)), PARTS[-1][0])
        totals[part] += path.stat().st_size
    return totals


def main(argv: list[str]) -> int:
    """Print the table (or JSON with --json); exit 2 when the folder is missing."""
    if not argv or not Path(argv[0]).is_dir():
        print("usage: size_report.py BUNDLE_FOLDER [--json]  (build it with `make bundle`)", file=sys.stderr)
        return 2
    totals = sizes(Path(argv[0]))
    total = sum(totals.values())
    if "--json" in argv:
        print(json.dumps({"parts": totals, "total": total}))
        return 0
    print(f"{argv[0]}: {total / 1e9:.2f} GB ({total / 2**30:.2f} GiB, what `du -sh` shows)")
    for name, size in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<26} {size / 1e6:8.0f} MB  {size / total:5.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
