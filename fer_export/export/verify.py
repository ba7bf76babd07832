"""``fer-export verify``: does an exported artifact belong to a checkpoint? Its embedded spec, the
checkpoint's sha256 and the same parity check the export passed."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..parity import ParityReport, check_model
from ..spec import META_SOURCE_SHA256, META_TTA
from . import open_artifact, reference_model
from .flip import threshold_of


@dataclass
class VerifyReport:
    """``fer-export verify``: does this artifact belong to this checkpoint?"""

    artifact: str
    checkpoint: str
    spec_differences: list[str]  # "field: artifact X, checkpoint Y"
    source_sha256_match: bool
    parity: ParityReport | None  # None when the specs differ (the inputs would not even fit)

    @property
    def passed(self) -> bool:
        return not self.spec_differences and self.parity is not None and self.parity.passed

    @property
    def return_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, "checkpoint": self.checkpoint, "passed": self.passed,
                "spec_differences": self.spec_differences, "source_sha256_match": self.source_sha256_match,
                "parity": self.parity.to_dict() if self.parity else None}

    def summary(self) -> str:
        lines = [f"verify {self.artifact} against {self.checkpoint}: {'passed' if self.passed else 'FAILED'}",
                 "  spec: " + ("matches" if not self.spec_differences else "DIFFERS: " + "; ".join(self.spec_differences)),
                 "  source sha256: " + ("matches the checkpoint" if self.source_sha256_match else
                                        "differs (exported from another file; parity decides whether the weights match)")]
        if self.parity:
            lines.append(self.parity.summary())
        return "\n".join(lines)


def verify(artifact_path: str | Path, checkpoint: str | Path, data: str | Path | None = None) -> VerifyReport:
    """Re-run the export parity check of an artifact against a checkpoint, and compare contracts."""
    from ..model import sha256_file

    artifact = open_artifact(artifact_path)
    model, spec = reference_model(checkpoint, artifact.metadata.get(META_TTA, "none"), threshold_of(artifact.metadata))
    theirs, ours = artifact.spec.to_dict(), spec.to_dict()
    differences = [f"{k}: artifact {theirs.get(k)!r}, checkpoint {ours.get(k)!r}"
                   for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
    sha_match = artifact.metadata.get(META_SOURCE_SHA256) == sha256_file(checkpoint)
    parity = None if differences else check_model(model, spec, artifact, data)
    return VerifyReport(str(artifact_path), str(checkpoint), differences, sha_match, parity)
