"""Model and data sources parsed once; the one load-and-fit sequence (engine.sources, engine.inputs.load_inputs)."""
import pytest
import torch

from engine.data import Dataset
from engine.errors import UserError
from engine.inputs import load_inputs, load_inputs_events
from engine.models import DEMO_ARCHS, ModelBundle
from engine.sources import DataSource, ModelKind, ModelSource
from shared_fixtures import tiny_resnet


@pytest.mark.parametrize("text, kind, name", [
    ("demo:resnet", ModelKind.DEMO, "resnet"), ("torchvision:resnet18", ModelKind.TORCHVISION, "resnet18"),
    ("timm:vit_tiny_patch16_224", ModelKind.TIMM, "vit_tiny_patch16_224"),
    ("code:/x/net.py:Net", ModelKind.CODE, "/x/net.py:Net"), ("/tmp/a:b.pt", ModelKind.FILE, "/tmp/a:b.pt"),
    ("model.pt", ModelKind.FILE, "model.pt"), ("demo:", ModelKind.DEMO, ""),
])
def test_model_source_parses_and_gives_its_text_back(text, kind, name):
    source = ModelSource.parse(text)
    assert (source.kind, source.name) == (kind, name) and str(source) == text
    assert ModelSource.parse(source) is source


def test_model_source_properties():
    code = ModelSource.parse("code:/x/net.py:Net")
    assert (code.code_file, code.code_class) == ("/x/net.py", "Net")
    assert ModelSource.parse("torchvision:resnet18").is_named and not ModelSource.parse("torchvision:").is_named
    assert ModelSource.architecture("resnet", DEMO_ARCHS) == ModelSource(ModelKind.DEMO, "resnet")
    assert ModelSource.architecture("nothing", DEMO_ARCHS).kind is ModelKind.FILE


def test_data_source_is_the_dataset_spec():
    assert DataSource.parse("imagefolder:/d") == DataSource("imagefolder", "/d") and str(DataSource("cifar10", "/c")) \
        == "cifar10:/c"
    with pytest.raises(UserError, match="unknown dataset spec"):
        DataSource.parse("mnist")


def test_load_inputs_loads_the_data_then_fits_the_model(cifar_folder):
    inputs = load_inputs(ModelBundle(tiny_resnet(3, 10), "mem", "module", None, None), f"cifar10:{cifar_folder}")
    assert isinstance(inputs.raw, Dataset) and inputs.raw.num_classes == 10
    assert inputs.bundle.input_shape == inputs.raw.input_shape == (3, 32, 32) and inputs.bundle.num_classes == 10
    assert inputs.bundle.class_names == inputs.raw.class_names
    x, _ = next(iter(inputs.data.loader("val", 4)))
    assert tuple(x.shape[1:]) == (3, 32, 32)
    grey = ModelBundle(tiny_resnet(1, 10), "mem", "module", None, None)
    again = load_inputs(grey, inputs.raw, input_shape=(1, 16, 16))  # a loaded dataset, at another shape
    assert again.raw.input_shape == (1, 16, 16) and again.bundle.input_shape == (1, 16, 16)
    with pytest.raises(UserError, match="--mean and --std must be given together"):
        load_inputs(inputs.bundle, inputs.raw, mean=(0.5, 0.5, 0.5))
    with pytest.raises(UserError, match="classes"):
        list(load_inputs_events(ModelBundle(tiny_resnet(3, 4), "mem", "module", None, None), inputs.raw))
    with pytest.raises(UserError, match="unknown demo model"):
        load_inputs("demo:nothing", inputs.raw)


def test_a_kind_reads_as_its_prefix():
    """The model card writes `import {kind}`: a kind in text is the prefix, never 'ModelKind.TIMM'."""
    assert f"import {ModelKind.TIMM}" == "import timm" and str(ModelKind.CODE) == "code"


def test_a_model_that_fails_without_a_message_is_refused_in_one_line(fashion):
    """timm's HaloNet asserts with an empty message on a size it cannot take: the refusal names the
    exception's type instead of failing on the empty message (an internal error before)."""
    from engine.inputs import fit_data

    class Picky(torch.nn.Module):
        def forward(self, x):
            if x.shape[-1] % 5:
                raise AssertionError()
            return x

    bundle = ModelBundle(Picky(), "picky", "module", (1, 28, 28), 10)
    with pytest.raises(UserError) as caught:
        fit_data(bundle, fashion)
    msg = str(caught.value)
    assert "does not accept inputs" in msg and "AssertionError" in msg and len(msg.splitlines()) == 1
