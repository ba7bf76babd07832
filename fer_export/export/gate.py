"""The gate every exported file goes through (:func:`publish`): the artifact is written to a
temporary file beside it (a unique name, never an input's: :func:`temp_beside`), checked against its
reference (PyTorch eager, or the file it was made from) and any judges (int8 accuracy), the results
and the self-check probe are embedded in its metadata (``META_PARITY``, ``META_PROBE``), and only
then is it moved into place. When a check fails the file is kept as ``NAME.failed<suffix>`` for
inspection, any older artifact at ``NAME<suffix>`` is removed (a stale file must never pass for the
new one) and :class:`ParityError` is raised with the result attached.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ParityError
from ..outputs import cannot_write, temp_file_beside
from ..spec import META_PARITY, META_PROBE, ModelSpec
from .formats import FORMATS, sibling
from .probes import make_probe


def gate_outputs(final: Path, what: str) -> list[tuple[str, Path]]:
    """The files the gate may write for an artifact at ``final``: it, and its ``NAME.failed<suffix>``."""
    return [(what, final), ("the failed copy", sibling(final, "failed"))]


def temp_beside(final: Path) -> Path:
    """A new empty file in ``final``'s folder for the artifact to be written to before it is checked: a
    unique name, so never an input's (``NAME.tmp<suffix>`` was the checkpoint ``w.tmp.pth`` for ``-o w.pth``),
    with the permissions a new file gets."""
    try:
        return temp_file_beside(final)
    except OSError as exc:
        raise cannot_write(final, exc) from exc


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
