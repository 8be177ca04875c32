"""Convolutional families: LeNet-5, a 3-conv CNN, CIFAR ResNets (8 to 26), ResNet-18 (CIFAR
variant) and WideResNets. Every one takes (C, H, W) inputs of any channel count (1 for MNIST);
prunable layers are their nn.Conv2d and nn.Linear weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from contract.errors import ConfigError
from trainables.model_knobs import MODEL_KNOBS
from trainables.models.registry import register_model


def _image_shape(model: str, input_shape) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError(
            f"model={model!r} needs image inputs (C, H, W); this dataset's samples have shape "
            f"{tuple(input_shape)}: use model=mlp"
        )
    return tuple(input_shape)


@torch.no_grad()
def _flat_features(features: nn.Module, shape: tuple[int, ...]) -> int:
    return features(torch.zeros(1, *shape)).numel()


# -- LeNet-5 and CNN3 ---------------------------------------------------------------------------


class LeNet5(nn.Module):
    """LeCun et al. 1998 with ReLU and max pooling: conv 6@5x5, pool, conv 16@5x5, pool,
    fc 120, fc 84, classifier. 28x28 inputs are zero-padded by 2 (to 32x32, as the original)."""

    def __init__(self, input_shape, num_classes: int, dropout: float = 0.0):
        super().__init__()
        c, h, _ = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=2 if h < 32 else 0), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        )  # fmt: skip
        flat = _flat_features(self.features, input_shape)
        self.classifier = nn.Sequential(
            nn.Linear(flat, 120), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(120, 84), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(84, num_classes),
        )  # fmt: skip

    def forward(self, x):
        return self.classifier(self.features(x))


class CNN3(nn.Module):
    """3 conv layers (3x3, 64/128/256 filters, each ReLU + 2x2 max pool) + 2 fully connected
    (256 units, classifier): the block-sparsity experiment's network."""

    def __init__(
        self, input_shape, num_classes: int, dropout: float = 0.0, channels: int = 64,
        fc_width: int = 256,
    ):  # fmt: skip
        super().__init__()
        layers: list[nn.Module] = []
        fan_in = input_shape[0]
        for out in (channels, 2 * channels, 4 * channels):
            layers += [nn.Conv2d(fan_in, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            fan_in = out
        self.features = nn.Sequential(*layers, nn.Flatten())
        flat = _flat_features(self.features, input_shape)
        self.classifier = nn.Sequential(
            nn.Linear(flat, fc_width), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(fc_width, num_classes),
        )  # fmt: skip

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("lenet5", MODEL_KNOBS["lenet5"])
def lenet5(input_shape, num_classes, dropout: float = 0.0) -> nn.Module:
    return LeNet5(_image_shape("lenet5", input_shape), num_classes, dropout)


@register_model("cnn3", MODEL_KNOBS["cnn3"])
def cnn3(input_shape, num_classes, dropout: float = 0.0, channels: int = 64) -> nn.Module:
    """Filters channels/2x/4x (64/128/256 by default)."""
    return CNN3(_image_shape("cnn3", input_shape), num_classes, dropout, channels)


# -- CIFAR ResNets (He et al. 2016, section 4.2) ------------------------------------------------


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN; shortcut: identity, or on a shape change option A (stride-2
    subsampling, zero-padded channels: no parameters, the CIFAR ResNets' choice) or option B
    (1x1 conv + BN, as ResNet-18)."""

    def __init__(self, fan_in: int, out: int, stride: int, shortcut: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(fan_in, out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.pad = 0
        self.stride = stride
        self.shortcut: nn.Module | None = None
        if stride != 1 or fan_in != out:
            if shortcut == "A":
                self.pad = out - fan_in
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(fan_in, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
                )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            x = self.shortcut(x)
        elif self.stride != 1 or self.pad:
            x = x[:, :, :: self.stride, :: self.stride]
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + x)


class ResNet(nn.Module):
    """conv3x3 stem, stages of BasicBlocks (first block of each later stage has stride 2),
    global average pooling, linear classifier."""

    def __init__(self, input_shape, num_classes, stages, blocks, stem: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        layers, fan_in = [], stem
        for i, (width, n) in enumerate(zip(stages, blocks, strict=True)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                layers.append(BasicBlock(fan_in, width, stride, shortcut))
                fan_in = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(fan_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model("resnet", MODEL_KNOBS["resnet"])
def resnet(input_shape, num_classes, blocks: int = 3) -> nn.Module:
    """CIFAR ResNet-(6 blocks + 2): stages of 16/32/64 filters with `blocks` basic blocks each
    (1: ResNet-8, 2: ResNet-14, 3: ResNet-20, 4: ResNet-26), option-A shortcuts."""
    shape = _image_shape("resnet", input_shape)
    return ResNet(shape, num_classes, (16, 32, 64), (blocks,) * 3, stem=16, shortcut="A")


@register_model("resnet18", MODEL_KNOBS["resnet18"])
def resnet18(input_shape, num_classes, channels: int = 64) -> nn.Module:
    """ResNet-18, CIFAR variant (3x3 stem, no max pool): stages of channels x 1/2/4/8
    (64/128/256/512 by default), 2 blocks each, 1x1-conv shortcuts."""
    shape = _image_shape("resnet18", input_shape)
    widths = (channels, 2 * channels, 4 * channels, 8 * channels)
    return ResNet(shape, num_classes, widths, (2, 2, 2, 2), stem=channels, shortcut="B")


# -- WideResNet (Zagoruyko & Komodakis 2016) ----------------------------------------------------


class WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-(dropout)-BN-ReLU-conv3x3, 1x1 conv shortcut on a
    shape change."""

    def __init__(self, fan_in: int, out: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(fan_in)
        self.conv1 = nn.Conv2d(fan_in, out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = (
            nn.Conv2d(fan_in, out, 1, stride=stride, bias=False)
            if stride != 1 or fan_in != out
            else None
        )

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(F.relu(self.bn2(self.dropout(y))))
        return y + (self.shortcut(o) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    def __init__(self, input_shape, num_classes, depth: int, widen: int, dropout: float):
        super().__init__()
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(input_shape[0], 16, 3, padding=1, bias=False)
        blocks, fan_in = [], 16
        for i, width in enumerate(widths):
            for j in range(n):
                blocks.append(WideBlock(fan_in, width, 2 if i > 0 and j == 0 else 1, dropout))
                fan_in = width
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(fan_in)
        self.fc = nn.Linear(fan_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn(self.blocks(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model("wrn", MODEL_KNOBS["wrn"])
def wrn(
    input_shape, num_classes, wrn_depth: int = 16, widen_factor: int = 8, dropout: float = 0.0
) -> nn.Module:
    """WRN-`wrn_depth`-`widen_factor` (e.g. 16-8, 22-2, 28-10); depth = 6 n + 4."""
    shape = _image_shape("wrn", input_shape)
    if (wrn_depth - 4) % 6 or wrn_depth < 10:
        raise ConfigError(
            f"wrn_depth={wrn_depth}: must be 6 n + 4 with n >= 1 (10, 16, 22, 28, ...)"
        )
    return WideResNet(shape, num_classes, wrn_depth, widen_factor, dropout)
