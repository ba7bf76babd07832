"""Export a model to deployable files, each gated by a parity check. One module per job:

* :mod:`.formats`: the formats by name (:mod:`.onnx`, :mod:`.torchscript`, each with the same three
  functions: ``export_<fmt>``, ``load_<fmt>``, ``stamp_<fmt>``), how an artifact is named and opened;
* :mod:`.gate`: the gate every file goes through before it is put in place (:func:`~.gate.publish`);
* the pipelines: :mod:`.checkpoint` (a checkpoint to any format), :mod:`.int8` (an fp32 ONNX file to
  int8, an old int8 file to 7-bit weights), :mod:`.add_flip` (a file that mirrors its unsure faces; the
  rewrite itself is :mod:`.flip`),
  :mod:`.embed` (the uint8-input graph), :mod:`.stamp` (a new self-check probe), :mod:`.verify`.

This package only re-exports them.
"""
from __future__ import annotations

from ..spec import TTA_MODES
from .artifact import Artifact
from .checkpoint import export, reference_model
from .add_flip import export_flip
from .formats import FORMATS, check_suffix, format_of, open_artifact, output_path, sibling
from .gate import ExportResult, gate_outputs, publish, settle, temp_beside, write_artifact
from .int8 import export_int8, export_requantized
from .stamp import stamp_probe

__all__ = ["FORMATS", "TTA_MODES", "Artifact", "ExportResult", "check_suffix", "export", "export_flip", "export_int8",
           "export_requantized", "format_of", "gate_outputs", "open_artifact", "output_path", "publish",
           "reference_model", "settle", "sibling", "stamp_probe", "temp_beside", "write_artifact"]
