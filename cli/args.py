"""The flags several commands share, each with its help written once: the model source, the dataset, the
device, the memory limit, the seed, the progress bar. Commands (cli.main and the modules it registers)
import from here, never from each other."""
from __future__ import annotations

import argparse

from cli.types import count, data_spec, device, floats, json_obj, memory_limit, shape
from engine.budget import DEFAULT_SHARE
from engine.config import default_of, options

MODEL_HELP = "demo:resnet, demo:vgg, torchvision:NAME, timm:NAME, or a model FILE"
ARCH_HELP = "demo:resnet, demo:vgg, torchvision:NAME or timm:NAME (trained from random weights)"
DATA_HELP = "fashion-mnist, imagefolder:DIR (a sub-folder of images per class) or cifar10:DIR"
TRUST_HELP = ("allow loading a FILE that holds code: a pickled module or TorchScript (runs code from it; only for "
              "files you trust)")
SEED_HELP = "seed for data order, calibration and an untrained architecture's weights (default 0)"
MEMORY_HELP = ("stop the {what} (not the machine) when PruneLab's memory reaches SIZE: 8G, 1500M or a share of this "
               "machine such as 50%% ({default})")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Model source flags shared by evaluate, prune, sensitivity, explain and profile."""
    p.add_argument("--model", required=True, metavar="SRC", help=MODEL_HELP)
    p.add_argument("--weights", metavar="FILE",
                   help="your trained weights (a state_dict or .safetensors file) for torchvision:NAME or timm:NAME; "
                        "without them those architectures start from random weights")
    p.add_argument("--model-code", metavar="PATH.py:ClassName", help="architecture for a state_dict FILE")
    p.add_argument("--model-kwargs", type=json_obj, metavar="JSON", help="arguments for --model-code's class")
    add_trust_arg(p)
    p.add_argument("--partial-weights", action="store_true",
                   help="load --weights even when they fill under half of the architecture (prints the counts)")
    p.add_argument("--input-shape", type=shape, metavar="C,H,W", help="input shape when it cannot be inferred")
    p.add_argument("--mean", type=floats, metavar="M1,M2,..", help="per-channel normalisation mean")
    p.add_argument("--std", type=floats, metavar="S1,S2,..", help="per-channel normalisation std")


def add_data_arg(p: argparse.ArgumentParser) -> None:
    """--data, the dataset spec."""
    p.add_argument("--data", required=True, type=data_spec, metavar="SPEC", help=DATA_HELP)


def add_data_args(p: argparse.ArgumentParser, device: bool = True, batch_size: bool = True) -> None:
    """Dataset, device and batch size flags (prune takes the last two from its config's flags)."""
    add_data_arg(p)
    if device:
        add_device_arg(p)
    if batch_size:
        add_batch_size_arg(p, 64)
    add_memory_arg(p)


def add_device_arg(p: argparse.ArgumentParser) -> None:
    """--device, as PruneConfig describes it (prune's own flag is generated from the same option)."""
    opt, default = options()["device"], default_of("device")
    p.add_argument(opt.flag, type=device, default=default, metavar=opt.metavar,
                   help=f"where to run: {opt.bounds_text()} (default {default})")


def add_batch_size_arg(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument("--batch-size", type=count, default=default, metavar="N", help=f"batch size (default {default})")


def add_memory_arg(p: argparse.ArgumentParser, what: str = "job", plan_default: bool = False) -> None:
    """The --memory-limit flag of every command that runs a job (a sweep's default is its plan's)."""
    share = f"{DEFAULT_SHARE:.0%}%"  # "%%": argparse formats help with %
    p.add_argument("--memory-limit", type=memory_limit, default=None if plan_default else f"{DEFAULT_SHARE:.0%}",
                   metavar="SIZE", help=MEMORY_HELP.format(
                       what=what, default=f"default: the plan's memory_limit, else {share}" if plan_default
                       else f"default {share}"))


def add_trust_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust", action="store_true", help=TRUST_HELP)


def add_seed_arg(p: argparse.ArgumentParser, help: str = SEED_HELP) -> None:
    p.add_argument("--seed", type=int, default=0, metavar="N", help=help)


def add_quiet_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar")
