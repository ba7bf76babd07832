"""Export a checkpoint to a deployable artifact, gated by a parity check.

One module per format (:mod:`.onnx`, :mod:`.torchscript`), each with the same three functions:

* ``export_<fmt>(model, spec, path, metadata, **options)`` writes the artifact with its metadata,
* ``load_<fmt>(path) -> Artifact`` opens it for parity checks (outputs by name, metadata),
* ``stamp_<fmt>(path, metadata)`` rewrites its metadata (to add the parity result).

:func:`export` (and :func:`export_int8`, which writes ``NAME.int8.onnx`` from the fp32 ONNX file)
go through one gate, :func:`publish`: the artifact is written to a temporary file beside it (a
unique name, never an input's: :func:`temp_beside`), checked
against PyTorch eager (and, for int8, judged on accuracy), the results are embedded in its metadata
(``META_PARITY``), and only then is it moved into place. When a check fails the file is kept as
``NAME.failed<suffix>`` for inspection, any older artifact at ``NAME<suffix>`` is removed (a stale
file must never pass for the new one) and :class:`ParityError` is raised with the result attached.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

from ..errors import ArtifactError, ExportError, InputError, ParityError
from ..folders import cannot_write, check_outputs
from ..spec import (INPUT_NORMALIZED, INPUT_UINT8, META_FLIP_BELOW, META_PARITY, META_PRECISION, META_PROBE,
                    META_SOURCE_SHA256, META_TTA, ModelSpec)
from .artifact import TTA_MODES, Artifact, build_metadata
from .flip import FLIP_BELOW, SOURCE_PARITY, UNCERTAIN, FlipReference, add_uncertain_flip, check_threshold
from .onnx import export_onnx, load_onnx, stamp_onnx
from .torchscript import export_torchscript, load_torchscript_artifact, stamp_torchscript

__all__ = ["FORMATS", "TTA_MODES", "Artifact", "ExportResult", "export", "export_flip", "export_int8", "export_requantized",
           "open_artifact", "stamp_probe"]


class Format(NamedTuple):
    suffix: str
    export: Callable[..., None]
    load: Callable[[Path], Artifact]
    stamp: Callable[[Path, dict], None]


#: Export formats by name: one module each, with the same three functions.
FORMATS: dict[str, Format] = {
    "onnx": Format(".onnx", export_onnx, load_onnx, stamp_onnx),
    "torchscript": Format(".pt", export_torchscript, load_torchscript_artifact, stamp_torchscript),
}


def format_of(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    for name, f in FORMATS.items():
        if f.suffix == suffix:
            return name
    raise ArtifactError(f"{path}: unknown artifact type {suffix!r}; expected .onnx or .pt")


def open_artifact(path: str | Path) -> Artifact:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact file")
    return FORMATS[format_of(path)].load(path)


def sibling(path: Path, tag: str) -> Path:
    """``best_model.onnx`` + ``failed`` -> ``best_model.failed.onnx``."""
    return path.with_name(f"{path.stem}.{tag}{path.suffix}")


def output_path(fmt: str, checkpoint: str | Path, output: str | Path | None = None) -> Path:
    """Where :func:`export` puts ``checkpoint``'s ``fmt`` artifact: ``output``, else beside the checkpoint."""
    return Path(output) if output else Path(checkpoint).with_suffix(FORMATS[fmt].suffix)


def check_suffix(fmt: str, output: str | Path) -> Path:
    """``output`` when its suffix is ``fmt``'s (the one fer-eval and the loaders read it by), else an InputError."""
    output, suffix = Path(output), FORMATS[fmt].suffix
    if output.suffix.lower() != suffix:
        kind = repr(output.suffix) if output.suffix else "no suffix"
        raise InputError(f"-o {output}: {'an' if fmt[0] in 'aeiou' else 'a'} {fmt} export must be named *{suffix}, not {kind} (its format is read "
                         f"from the suffix)" + (f"; e.g. -o {output.with_suffix(suffix)}" if output.name else ""))
    return output


def gate_outputs(final: Path, what: str) -> list[tuple[str, Path]]:
    """The files the gate may write for an artifact at ``final``: it, and its ``NAME.failed<suffix>``."""
    return [(what, final), ("the failed copy", sibling(final, "failed"))]


def temp_beside(final: Path) -> Path:
    """A new empty file in ``final``'s folder for the artifact to be written to before it is checked: a
    unique name, so never an input's (``NAME.tmp<suffix>`` was the checkpoint ``w.tmp.pth`` for ``-o w.pth``),
    with the permissions a new file gets."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}")
        os.close(fd)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(name, 0o666 & ~mask)
    except OSError as exc:
        raise cannot_write(final, exc) from exc
    return Path(name)


def write_artifact(write: Callable[[], Any], tmp: Path, final: Path) -> Any:
    """Run ``write`` (which writes ``tmp``) and return what it returns; on any failure remove ``tmp``, and
    report a failed write (a full disk) as a one-line error naming ``final``."""
    try:
        return write()
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise cannot_write(final, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class ExportResult:
    """What one export produced: where the file is, its parity report and any precision report."""

    format: str
    path: Path
    parity: Any  # parity.ParityReport
    extra: list = field(default_factory=list)  # e.g. quantize.PrecisionReport

    @property
    def passed(self) -> bool:
        return self.parity.passed and all(r.passed for r in self.extra)

    def to_dict(self) -> dict:
        return {"format": self.format, "path": str(self.path), "passed": self.passed,
                "parity": self.parity.to_dict(), "extra": [r.to_dict() for r in self.extra]}

    def summary(self) -> str:
        status = "ok" if self.passed else "FAILED"
        lines = [f"{self.format}: {self.path} [{status}]", self.parity.summary()]
        return "\n".join(lines + [r.summary() for r in self.extra])


def publish(fmt: str, tmp: Path, final: Path, metadata: dict[str, str], model, spec: ModelSpec,
            data: str | Path | None = None, judges: tuple[Callable[[Path], Any], ...] = ()) -> ExportResult:
    """Gate the artifact written at ``tmp``: parity against ``model`` (an eager model, or an opened
    artifact for an int8 graph made from an fp32 file) plus any ``judges`` (each
    returns a report with ``.passed``); embed the results, then move the file to ``final`` when all
    pass, else to ``NAME.failed<suffix>`` (removing any stale ``final``) and raise ParityError."""
    from ..parity import check_model

    f = FORMATS[fmt]
    try:
        result = ExportResult(fmt, final, check_model(model, spec, f.load(tmp), data))
        result.extra = [judge(tmp) for judge in judges]
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return settle(result, tmp, final, f.stamp, metadata, f"{fmt} export")


def settle(result: ExportResult, tmp: Path, final: Path, stamp: Callable[[Path, dict], None],
           metadata: dict[str, str], what: str) -> ExportResult:
    """The end of the gate: embed the checks' results in ``tmp``, then move it to ``final`` when they
    passed, else to ``NAME.failed<suffix>`` (removing any stale ``final``) and raise ParityError."""
    record = result.parity.to_dict() | {"judged": [r.to_dict() for r in result.extra]}
    failed = sibling(final, "failed")

    def put_in_place():
        from .stamp import make_probe

        probe = {META_PROBE: make_probe(tmp).to_json()} if result.passed and tmp.suffix.lower() == ".onnx" else {}
        stamp(tmp, {**metadata, **probe, META_PARITY: json.dumps(record, sort_keys=True)})
        os.replace(tmp, final if result.passed else failed)

    write_artifact(put_in_place, tmp, final)
    if result.passed:
        failed.unlink(missing_ok=True)
        return result
    final.unlink(missing_ok=True)
    result.path = failed
    raise ParityError(f"{what} failed its checks; the file is kept for inspection as {failed}\n"
                      f"{result.summary()}", result)


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
    try:
        passed = json.loads(source.metadata.get(META_PARITY, "{}")).get("passed") is True
    except ValueError:
        passed = False
    if not passed:
        problems.append("it has not passed its parity check; export the fp32 model first (fer-export onnx)")
    if source.metadata.get(META_TTA) == UNCERTAIN:
        problems.append(f"it mirrors uncertain faces in a second pass ({UNCERTAIN}); make the int8 copy of the plain "
                        f"export, then add the flip to it (fer-export onnx NAME.int8.onnx --tta {UNCERTAIN})")
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
                          "fer-export onnx MODEL.onnx --int8 --calib DIR")
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
    from .stamp import make_probe

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


def flip_problems(source) -> list[str]:
    """Why an opened artifact cannot get the flip: it must be a plain ONNX graph (no TTA yet)."""
    problems = []
    if source.path.suffix.lower() != ".onnx":
        problems.append("it must be an ONNX file")
    tta = source.metadata.get(META_TTA, "none")
    if tta != "none":
        problems.append(f"it already has test-time augmentation inside ({tta})")
    if source.input_format not in (INPUT_NORMALIZED, INPUT_UINT8):
        problems.append(f"unknown input format {source.input_format!r}")
    return problems


def export_flip(model: str | Path, output: str | Path | None = None, *, flip_below: float = FLIP_BELOW,
                data: str | Path | None = None):
    """Write ``model`` (a plain ONNX file fer-export wrote, fp32 or int8) with ``hflip-uncertain``
    inside to ``output`` (default ``NAME.flip.onnx``), gated against the source run twice
    (:class:`FlipReference`). Returns the :class:`~fer_export.export.ExportResult`; raises
    :class:`~fer_export.errors.ParityError` when the file does not reproduce the rule."""
    import onnx

    model, flip_below = Path(model), check_threshold(flip_below)
    source = open_artifact(model)
    problems = flip_problems(source)
    if problems:
        raise ExportError(f"{model}: cannot add the flip to this file: {'; '.join(problems)}")
    final = Path(output) if output else sibling(model, "flip")
    if output:
        check_suffix("onnx", final)
    check_outputs([("the model", model)], gate_outputs(final, "the flip model"))
    metadata = dict(source.metadata)
    # the source's own gate (its parity, for int8 its accuracy judgement) is kept beside the new one
    metadata[SOURCE_PARITY] = metadata.pop(META_PARITY, "{}")
    metadata.update({META_TTA: UNCERTAIN, META_FLIP_BELOW: repr(flip_below)})
    tmp = temp_beside(final)

    def write():
        proto = onnx.load_model(str(model))
        add_uncertain_flip(proto, flip_below)
        onnx.save_model(proto, str(tmp))

    write_artifact(write, tmp, final)
    return publish("onnx", tmp, final, metadata, FlipReference(source, flip_below), source.spec, data)
