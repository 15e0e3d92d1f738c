"""PruneLab engine: data, models, metrics and pruning in pure PyTorch (no Qt)."""

__version__ = "0.1.0"


def versions() -> dict[str, str]:
    """The versions a result depends on, recorded with every saved model and stored run."""
    import platform

    import numpy
    import torch
    import torch_pruning as tp

    return {"prunelab": __version__, "torch": torch.__version__, "torch_pruning": getattr(tp, "__version__", "?"),
            "numpy": numpy.__version__, "python": platform.python_version()}
