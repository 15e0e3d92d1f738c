"""The built-in demo zoo: two small CNNs for 28×28 images, and where their trained weights live."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from resources import resource_path


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with an identity (or 1×1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class DemoResNet(nn.Module):
    """A small residual network for 28×28 images (three stages, widths doubling)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128),
                 blocks: tuple[int, ...] = (1, 1, 1)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stage = []
            for b in range(n):
                stage.append(BasicBlock(cin, w, 2 if (i > 0 and b == 0) else 1))
                cin = w
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class DemoVGG(nn.Module):
    """A plain VGG-style CNN: conv-BN-ReLU blocks, max pooling, a two-layer classifier."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 cfg: tuple = (32, 32, "M", 64, 64, "M", 128, 128, "M"), hidden: int = 256):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin * 9, hidden), nn.BatchNorm1d(hidden),
                                        nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


DEMO_ARCHS: dict[str, Callable[..., nn.Module]] = {"resnet": DemoResNet, "vgg": DemoVGG}
DEMO_TITLES = {"resnet": "Residual CNN (ResNet-style)", "vgg": "Plain CNN (VGG-style)"}


def demo_path(name: str) -> Path:
    """Path of a built-in demo model's weights."""
    return resource_path("models", f"demo_{name}.pt")


def demo_card(name: str) -> dict:
    """The JSON card of a built-in model (empty if not trained yet)."""
    path = resource_path("models", f"demo_{name}.json")
    return json.loads(path.read_text()) if path.exists() else {}
