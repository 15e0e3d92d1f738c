"""PruneLab engine: data, models, metrics and pruning in pure PyTorch (no Qt)."""

__version__ = "0.1.0"
