"""``fer-export flip MODEL.onnx``: a copy of an ONNX file that mirrors its unsure faces
(``hflip-uncertain``, :mod:`.flip`), gated against the source file run twice and combined."""
from __future__ import annotations

from pathlib import Path

from ..errors import ExportError
from ..outputs import check_outputs
from ..spec import INPUT_NORMALIZED, INPUT_UINT8, META_FLIP_BELOW, META_PARITY, META_SOURCE_PARITY, META_TTA, UNCERTAIN
from .flip import FLIP_BELOW, FlipReference, add_uncertain_flip, check_threshold
from .formats import check_suffix, open_artifact, sibling
from .gate import gate_outputs, publish, temp_beside, write_artifact


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
    metadata[META_SOURCE_PARITY] = metadata.pop(META_PARITY, "{}")
    metadata.update({META_TTA: UNCERTAIN, META_FLIP_BELOW: repr(flip_below)})
    tmp = temp_beside(final)

    def write():
        proto = onnx.load_model(str(model))
        add_uncertain_flip(proto, flip_below)
        onnx.save_model(proto, str(tmp))

    write_artifact(write, tmp, final)
    return publish("onnx", tmp, final, metadata, FlipReference(source, flip_below), source.spec, data)
