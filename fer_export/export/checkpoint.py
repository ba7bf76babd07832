"""Export a checkpoint (``fer-export onnx|torchscript|all CHECKPOINT``): the PyTorch model an
artifact must reproduce, and the export itself through the gate."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ExportError
from ..outputs import check_outputs
from ..spec import INPUT_NORMALIZED, INPUT_UINT8, TTA_MODES, UNCERTAIN
from .artifact import build_metadata
from .formats import FORMATS, check_suffix, output_path
from .gate import ExportResult, gate_outputs, publish, temp_beside, write_artifact


def reference_model(checkpoint: str | Path, tta: str = "none", flip_below: float | None = None):
    """The PyTorch model an artifact of ``checkpoint`` must reproduce: ``(model, spec)``;
    ``flip_below`` goes with ``tta="hflip-uncertain"`` (default :data:`.flip.FLIP_BELOW`)."""
    from ..model import load_checkpoint
    from .flip import FLIP_BELOW, UNCERTAIN, check_threshold
    from .preprocessing import UncertainFlip, ViewAverage

    if tta not in TTA_MODES:
        raise ExportError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    if flip_below is not None and tta != UNCERTAIN:
        raise ExportError(f"flip_below goes with tta={UNCERTAIN!r}, not {tta!r}")
    model, spec = load_checkpoint(checkpoint)
    if tta == UNCERTAIN:
        return UncertainFlip(model, check_threshold(FLIP_BELOW if flip_below is None else flip_below)).eval(), spec
    return (model if tta == "none" else ViewAverage(model, tta, spec.input_size).eval()), spec


def export(fmt: str, checkpoint: str | Path, output: str | Path | None = None, *,
           data: str | Path | None = None, tta: str = "none", flip_below: float | None = None,
           **options) -> ExportResult:
    """Export ``checkpoint`` to ``fmt``, check parity against PyTorch and return the result.

    ``options`` go to the format's exporter (ONNX: ``opset``, ``batch``, ``with_preprocessing``).
    ``tta="hflip"`` or ``"tencrop"`` builds test-time augmentation into the graph (and into the
    reference it is checked against); ``"hflip-uncertain"`` (ONNX only) mirrors the faces whose top
    probability is below ``flip_below`` (:mod:`.flip`).
    Raises :class:`ParityError` (``.report`` is the :class:`ExportResult`) when the artifact does
    not reproduce the model; the file is then at ``NAME.failed<suffix>``.
    """
    from ..model import sha256_file

    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {sorted(FORMATS)}")
    final = output_path(fmt, checkpoint, output)
    if os.path.realpath(final) == os.path.realpath(checkpoint):
        raise ExportError(f"{final}: the export would overwrite its own checkpoint; choose another path with -o")
    check_outputs([("the checkpoint", checkpoint)], gate_outputs(final, f"the {fmt} export"))
    if output:
        check_suffix(fmt, output)
    if tta == UNCERTAIN and fmt != "onnx":
        raise ExportError(f"tta={UNCERTAIN!r} is built for ONNX only (a traced graph cannot choose rows)")
    model, spec = reference_model(checkpoint, tta, flip_below)
    input_format = INPUT_UINT8 if options.get("with_preprocessing") else INPUT_NORMALIZED
    metadata = build_metadata(spec, sha256_file(checkpoint), input_format=input_format, tta=tta,
                              flip_below=getattr(model, "flip_below", None))
    tmp = temp_beside(final)
    write_artifact(lambda: FORMATS[fmt].export(model, spec, tmp, metadata, **options), tmp, final)
    return publish(fmt, tmp, final, metadata, model, spec, data)
