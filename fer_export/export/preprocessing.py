"""Modules that wrap the network for export.

:class:`LogitsAndProbs` adds the in-graph softmax every ONNX artifact carries.

:class:`WithPreprocessing` (``fer-export onnx --with-preprocessing``) moves the spec's preprocessing
into the graph: it takes raw uint8 grayscale crops (N, 1, H, W) of any height and width from 2 to
8192 px (one size per batch) and resizes them to ``spec.input_size`` with antialiased bilinear
interpolation (PIL's ``BILINEAR`` filter, which torchvision's ``Resize`` runs on PIL images),
rounds to whole gray levels as PIL's uint8 output does, scales to [0, 1] and normalises. Only the
dynamo exporter exports ``antialias=True`` (as ``Resize(antialias=1)``). PIL's fixed-point
arithmetic and the float resize differ by at most one gray level on some pixels, which is why its
parity tolerance (:data:`fer_export.parity.PREPROCESSING`) is looser than plain fp32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..spec import ModelSpec


class LogitsAndProbs(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        logits = self.model(x)
        return logits, torch.softmax(logits, dim=1)


class FlipAverage(nn.Module):
    """Test-time augmentation in the graph: the mean of the logits of the image and its mirror."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return (self.model(x) + self.model(torch.flip(x, dims=[3]))) / 2


class WithPreprocessing(LogitsAndProbs):
    def __init__(self, model: nn.Module, spec: ModelSpec):
        super().__init__(model)
        self.size = tuple(spec.input_size)
        self.channels = spec.channels
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        x = F.interpolate(x.float(), size=self.size, mode="bilinear", antialias=True, align_corners=False)
        x = x.round().clamp(0, 255) / 255.0
        x = (x.expand(-1, self.channels, -1, -1) - self.mean) / self.std
        return super().forward(x)
