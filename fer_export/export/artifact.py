"""What every exported file is: an :class:`Artifact` to check, and the metadata (the model's
contract) it carries. The format modules (:mod:`.onnx`, :mod:`.torchscript`) build on this module;
it imports none of them.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from ..errors import ArtifactError, SpecError
from ..spec import (INPUT_NORMALIZED, META_FLIP_BELOW, META_INPUT, META_PARITY, META_PRECISION, META_PROBE,
                    META_SOURCE_PARITY, META_SOURCE_SHA256, META_SPEC, META_TTA, META_VERSION, ModelSpec)

#: Every metadata key an artifact may carry (TorchScript needs the names to read extra files back).
METADATA_KEYS = (META_SPEC, META_VERSION, META_SOURCE_SHA256, META_INPUT, META_TTA, META_FLIP_BELOW, META_PRECISION,
                 META_PARITY, META_SOURCE_PARITY, META_PROBE)


@dataclass
class Artifact:
    """An exported model opened for checking: ``run(batch) -> {output name: array}``."""

    path: Path
    run: Callable[[np.ndarray], dict[str, np.ndarray]]
    metadata: dict[str, str]
    batch: int | None = None  # fixed batch size of the graph; None when the batch axis is dynamic

    @property
    def spec(self) -> ModelSpec:
        if META_SPEC not in self.metadata:
            raise ArtifactError(f"{self.path}: has no '{META_SPEC}' metadata; it was not exported by fer-export")
        try:
            return ModelSpec.from_json(self.metadata[META_SPEC])
        except SpecError as exc:
            raise ArtifactError(f"{self.path}: its embedded '{META_SPEC}' is invalid: {exc}") from exc

    @property
    def input_format(self) -> str:
        return self.metadata.get(META_INPUT, INPUT_NORMALIZED)

    @property
    def precision(self) -> str:
        return self.metadata.get(META_PRECISION, "fp32")

    @property
    def passed_parity(self) -> bool:
        """Whether the file records a parity check that it passed (its ``META_PARITY`` record)."""
        try:
            record = json.loads(self.metadata.get(META_PARITY, "{}"))
        except ValueError:
            return False
        return isinstance(record, dict) and record.get("passed") is True




def build_metadata(spec: ModelSpec, source_sha256: str, *, input_format: str = INPUT_NORMALIZED,
                   precision: str = "fp32", tta: str = "none", flip_below: float | None = None) -> dict[str, str]:
    """The contract every artifact carries (ONNX ``metadata_props`` / TorchScript extra files).
    :func:`publish` adds ``META_PARITY`` once the checks have run."""
    return ({META_FLIP_BELOW: repr(float(flip_below))} if flip_below is not None else {}) | {
        META_SPEC: spec.to_json(),
        META_VERSION: __version__,
        META_SOURCE_SHA256: source_sha256,
        META_INPUT: input_format,
        META_TTA: tta,
        META_PRECISION: precision,
    }


@contextlib.contextmanager
def quiet_torch():
    """Silence the deprecation chatter of torch.jit / torch.onnx that users cannot act on."""
    import logging

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx|onnxscript")
        loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
