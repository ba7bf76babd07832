"""``fer-export stamp``: a copy of an ONNX file with a new self-check probe (:mod:`fer_export.probe`)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ExportError
from ..outputs import check_outputs
from ..spec import META_PROBE
from .formats import FORMATS, check_suffix, open_artifact, sibling
from .gate import temp_beside, write_artifact
from .probes import make_probe


@dataclass
class StampResult:
    """``fer-export stamp``: a copy of a model file with a new self-check probe, checked on this machine."""

    path: Path
    check: Any  # probe.SelfCheck of the written file, as this machine serves it

    @property
    def passed(self) -> bool:
        return self.check.passed

    def to_dict(self) -> dict:
        return {"path": str(self.path), "passed": self.passed, "self_check": self.check.to_dict()}

    def summary(self) -> str:
        return f"stamped {self.path}\n  {self.check.line()}"


def stamp_probe(model: str | Path, output: str | Path | None = None) -> StampResult:
    """Write ``model`` (an ONNX file fer-export wrote) to ``output`` (default ``NAME.stamped.onnx``) with a
    new self-check probe (:mod:`fer_export.probe`), computed by its reference: the file itself for fp32,
    its literal run for int8, so it is right whichever CPU stamps it. Then check the copy as served."""
    from ..probe import self_check
    from ..runtime import EmotionClassifier

    model = Path(model)
    source = open_artifact(model)
    if model.suffix.lower() != ".onnx":
        raise ExportError(f"{model}: only ONNX files carry a self-check probe")
    source.spec  # a file without fer-export's contract cannot be probed  # noqa: B018
    final = Path(output) if output else sibling(model, "stamped")
    if output:
        check_suffix("onnx", final)
    check_outputs([("the model", model)], [("the stamped model", final)])
    tmp = temp_beside(final)

    def write():
        import shutil

        shutil.copyfile(model, tmp)
        FORMATS["onnx"].stamp(tmp, {**source.metadata, META_PROBE: make_probe(tmp).to_json()})
        os.replace(tmp, final)

    write_artifact(write, tmp, final)
    return StampResult(final, self_check(EmotionClassifier(final, "cpu", self_check=False)))
