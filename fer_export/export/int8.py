"""int8 files from an fp32 ONNX export (``--int8``) and from an older int8 file
(``fer-export requantize``), through the gate; :mod:`.quantize` holds the quantisation and the
judgement."""
from __future__ import annotations

from pathlib import Path

from ..errors import ExportError
from ..outputs import check_outputs
from ..spec import INPUT_NORMALIZED, META_PARITY, META_PROBE, META_SOURCE_SHA256, META_TTA, UNCERTAIN
from .artifact import Artifact, build_metadata
from .checkpoint import reference_model
from .formats import FORMATS, check_suffix, open_artifact, sibling
from .gate import ExportResult, gate_outputs, publish, temp_beside, write_artifact
from .onnx import load_onnx


def int8_problems(source: Artifact) -> list[str]:
    """Why an artifact cannot be the fp32 source of an int8 model: int8 is made only from a plain
    (normalised-input, dynamic-batch) fp32 ONNX graph that passed its own parity check."""
    problems = []
    if source.path.suffix.lower() != FORMATS["onnx"].suffix or source.precision != "fp32":
        problems.append(f"it must be an fp32 ONNX file, not {source.precision} {source.path.suffix}")
    if source.input_format != INPUT_NORMALIZED:
        problems.append("it takes uint8 crops (--with-preprocessing); int8 needs the plain graph")
    if source.batch is not None:
        problems.append(f"its batch is fixed at {source.batch}; int8 needs the dynamic-batch graph")
    if not source.passed_parity:
        problems.append("it has not passed its parity check; export the fp32 model first (fer-export onnx)")
    if source.metadata.get(META_TTA) == UNCERTAIN:
        problems.append(f"it mirrors uncertain faces in a second pass ({UNCERTAIN}); make the int8 copy of the plain "
                        f"export, then add the flip to it (fer-export flip NAME.int8.onnx)")
    return problems


def export_int8(checkpoint: str | Path | None, fp32: str | Path, calib: str | Path, *,
                eval_data: str | Path | None = None, data: str | Path | None = None, max_drop_pp: float | None = None,
                accept_drop: bool = False, limit_per_class: int | None = None, calib_tries: int = 1) -> ExportResult:
    """Quantise the fp32 ONNX export of ``checkpoint`` to ``NAME.int8.onnx`` and judge it.

    Calibrates on images from ``calib`` (``calib_tries`` > 1: on that many samples, keeping the copy
    closest to fp32, see :func:`~.quantize.quantize_int8`); accuracy is measured on ``eval_data`` (default: ``calib``,
    which must then be labelled). Raises :class:`ParityError` when its parity or accuracy fails.
    ``checkpoint=None``: the fp32 file is the reference (it passed its own parity check against
    PyTorch when it was exported), for an exported model whose checkpoint is not at hand; the int8
    file then names the fp32 file's checkpoint as its source.
    """
    from ..model import sha256_file
    from .quantize import MAX_ACCURACY_DROP_PP, judge, quantize_int8

    fp32 = Path(fp32)
    source = open_artifact(fp32)
    problems = int8_problems(source)
    if problems:
        raise ExportError(f"{fp32}: cannot make an int8 model from this file: {'; '.join(problems)}")
    tta = source.metadata.get(META_TTA, "none")
    if checkpoint is None:
        model, spec, source_sha256 = source, source.spec, source.metadata.get(META_SOURCE_SHA256, "")
    else:
        (model, spec), source_sha256 = reference_model(checkpoint, tta), sha256_file(checkpoint)
    final = sibling(fp32, "int8")
    check_outputs([("the checkpoint", checkpoint), ("the fp32 model", fp32)], gate_outputs(final, "the int8 model"))
    metadata = build_metadata(spec, source_sha256, precision="int8", tta=tta)
    tmp = temp_beside(final)

    def write():
        written = quantize_int8(fp32, tmp, spec, calib, tries=calib_tries)
        FORMATS["onnx"].stamp(tmp, metadata)
        return written

    calibration = write_artifact(write, tmp, final)

    def accuracy(path: Path):
        report = judge(fp32, path, spec, eval_data or calib, accept_drop=accept_drop, limit_per_class=limit_per_class,
                       max_drop_pp=MAX_ACCURACY_DROP_PP if max_drop_pp is None else max_drop_pp)
        report.calibration = calibration
        return report

    return publish("onnx", tmp, final, metadata, model, spec, data or calib, (accuracy,))


def export_requantized(model: str | Path, output: str | Path | None = None, *, eval_data: str | Path,
                       data: str | Path | None = None, max_drop_pp: float | None = None, accept_drop: bool = False,
                       limit_per_class: int | None = None) -> ExportResult:
    """Rewrite an int8 file whose weights use the full int8 range (which CPUs without VNNI compute
    otherwise) with 7-bit weights, its activations' calibration kept (:func:`~.quantize.requantize_weights`),
    to ``output`` (default ``NAME.7bit.onnx``). The gate runs the source as ONNX defines it (its literal
    run, whatever this CPU's int8 kernels do with it): parity with the int8 tolerance, accuracy on
    ``eval_data`` next to it, and the new file's agreement with its own literal run."""
    import onnx

    from .quantize import MAX_ACCURACY_DROP_PP, judge, requantize_weights

    model = Path(model)
    source = open_artifact(model)
    if model.suffix.lower() != ".onnx" or source.precision != "int8":
        raise ExportError(f"{model}: not an int8 ONNX file fer-export wrote; make an fp32 file's int8 copy with "
                          "fer-export int8 MODEL.onnx --calib DIR")
    final = Path(output) if output else sibling(model, "7bit")
    if output:
        check_suffix("onnx", final)
    check_outputs([("the model", model)], gate_outputs(final, "the requantised model"))
    metadata = {k: v for k, v in source.metadata.items() if k not in (META_PARITY, META_PROBE)}
    tmp = temp_beside(final)

    def write():
        proto = onnx.load_model(str(model))
        if not requantize_weights(proto):
            raise ExportError(f"{model}: has no int8 weights to requantise")
        onnx.save_model(proto, str(tmp))

    write_artifact(write, tmp, final)

    def accuracy(path: Path):
        return judge(model, path, source.spec, eval_data, accept_drop=accept_drop, limit_per_class=limit_per_class,
                     max_drop_pp=MAX_ACCURACY_DROP_PP if max_drop_pp is None else max_drop_pp, reference_literal=True)

    return publish("onnx", tmp, final, metadata, load_onnx(model, literal=True), source.spec, data, (accuracy,))
