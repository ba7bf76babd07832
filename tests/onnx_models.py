"""Tiny ONNX models shaped like `fer-export onnx` output, for tests and benchmarks (needs torch).

The graph has input "input" (N, C, H, W) with a dynamic batch axis, outputs "logits" and "probs",
and the fer-export metadata (spec, input format) in ``metadata_props``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from fer_export.spec import META_INPUT, META_SPEC, ModelSpec

TINY_SPEC = ModelSpec(arch="resnet18", input_size=(48, 48))


def build_onnx(path: str | Path, spec: ModelSpec = TINY_SPEC, seed: int = 0) -> Path:
    """Export a randomly initialised (seeded) network for ``spec`` to ``path``."""
    import onnx
    import torch

    from fer_export.model import build_model

    class WithProbs(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            logits = self.net(x)
            return logits, torch.softmax(logits, dim=1)

    torch.manual_seed(seed)
    model = WithProbs(build_model(spec)).eval()
    path = Path(path)
    x = torch.zeros(2, spec.channels, *spec.input_size)
    with warnings.catch_warnings():  # the TorchScript-based exporter is deprecated but small and fast
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["input"],
                          output_names=["logits", "probs"], opset_version=17,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "probs": {0: "batch"}})
    proto = onnx.load(str(path))
    for key, value in ((META_SPEC, spec.to_json()), (META_INPUT, "normalized")):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path
