from __future__ import annotations

import math

from torch import nn

from trainables.model_knobs import MODEL_KNOBS
from trainables.models.registry import register_model


def hidden_widths(depth: int, width: int, first_width: int = 0, last_width: int = 0) -> list[int]:
    """Widths of `depth` hidden layers: linear from `first_width` (layer 1) to `width` (the
    middle layer) to `last_width` (the last hidden layer), rounded, as the original study
    interpolated them. 0 means `width`; with only `width` given every layer is `width` wide."""
    first = first_width or width
    last = last_width or width
    if depth == 1:
        return [first]
    widths = []
    for i in range(depth):
        t = i / (depth - 1)  # 0 at the first hidden layer, 1 at the last
        if t <= 0.5:
            w = first + (width - first) * (t / 0.5)
        else:
            w = width + (last - width) * ((t - 0.5) / 0.5)
        widths.append(max(1, round(w)))
    return widths


class MLP(nn.Sequential):
    """Flatten, hidden Linear+ReLU(+Dropout) layers of the given widths, then a classifier."""

    def __init__(self, in_features: int, num_classes: int, widths: list[int], dropout: float):
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = in_features
        for width in widths:
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            fan_in = width
        layers.append(nn.Linear(fan_in, num_classes))
        super().__init__(*layers)


@register_model("mlp", MODEL_KNOBS["mlp"])
def mlp(
    input_shape,
    num_classes,
    depth: int = 2,
    width: int = 128,
    dropout: float = 0.0,
    first_width: int = 0,
    last_width: int = 0,
) -> nn.Module:
    widths = hidden_widths(depth, width, first_width, last_width)
    return MLP(math.prod(input_shape), num_classes, widths, dropout)
