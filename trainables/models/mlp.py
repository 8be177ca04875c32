from __future__ import annotations

import math

from torch import nn

from trainables.models import register_model


class MLP(nn.Sequential):
    """Flatten, `depth` hidden Linear+ReLU(+Dropout) layers of `width` units, then a classifier."""

    def __init__(self, in_features: int, num_classes: int, depth: int, width: int, dropout: float):
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = in_features
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            fan_in = width
        layers.append(nn.Linear(fan_in, num_classes))
        super().__init__(*layers)


@register_model("mlp")
def mlp(
    input_shape, num_classes, depth: int = 2, width: int = 128, dropout: float = 0.0
) -> nn.Module:
    return MLP(math.prod(input_shape), num_classes, depth, width, dropout)
