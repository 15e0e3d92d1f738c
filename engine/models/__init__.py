"""Models: the demo zoo, torchvision and timm architectures, the user's own files; save, load, ONNX export.

Our own model files hold only tensors, numbers and strings, so they load with
`torch.load(weights_only=True)`; a pruned model is stored as its parent architecture plus
torch-pruning's record of the changed layer shapes, and rebuilt on load. Weights-only files (a
state_dict, a training checkpoint, `.safetensors`) are read without pickled code; a whole pickled
module or TorchScript archive (which runs code when loaded) only when the caller trusts the file.

Modules: `zoo` (demo networks), `archs` (architectures by name), `files` (what a file is, reading
tensors), `weights` (fitting weights, pruned layer sizes), `loading`, `saving` (and ONNX),
`describe` (a file described without running it).
"""
from .archs import (ARCH_HELP, adapted_layers, build_arch, check_model_kwargs, code_classes, first_conv, last_linear,
                    list_architectures, size_kwargs, timm_names, torchvision_names)
from .bundle import ModelBundle
from .describe import FileInfo, describe_file, guess_arch
from .files import STATE_KEYS, UNREADABLE, find_state_dict, read_safetensors, read_weights, sniff
from .loading import load_model, seeded
from .saving import (FORMAT, FORMAT_VERSION, check_onnx, compare_runs, export_onnx, export_program, onnx_opset,
                     onnx_runner, save_full_module, save_model, trace_torchscript, write_safetensors)
from .weights import WeightsFit, apply_pruned_state, fit_weights, pruned_state
from .zoo import DEMO_ARCHS, DEMO_TITLES, BasicBlock, DemoResNet, DemoVGG, demo_card, demo_path

__all__ = [
    "ARCH_HELP", "BasicBlock", "DEMO_ARCHS", "DEMO_TITLES", "DemoResNet", "DemoVGG", "FORMAT", "FORMAT_VERSION",
    "FileInfo", "ModelBundle", "STATE_KEYS", "UNREADABLE", "WeightsFit", "adapted_layers", "apply_pruned_state",
    "build_arch", "check_model_kwargs", "check_onnx", "code_classes", "compare_runs", "demo_card", "demo_path",
    "describe_file", "export_onnx", "export_program", "find_state_dict", "first_conv", "fit_weights", "guess_arch",
    "last_linear", "list_architectures", "load_model", "onnx_opset", "onnx_runner", "pruned_state", "read_safetensors",
    "read_weights", "save_full_module", "save_model", "seeded", "size_kwargs", "sniff", "timm_names",
    "torchvision_names", "trace_torchscript", "write_safetensors",
]
