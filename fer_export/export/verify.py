"""``fer-export verify``: does an exported artifact belong to a checkpoint? Its embedded spec, the
checkpoint's sha256 and the same parity check the export passed."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..parity import ParityReport, check_model
from ..spec import META_SOURCE_SHA256, META_TTA
from .checkpoint import reference_model
from .formats import open_artifact
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


@dataclass
class SelfCheckReport:
    """``fer-export verify MODEL``: does this machine compute the file as it was made?"""

    artifact: str
    check: object  # probe.SelfCheck
    saturation: list[str] | None  # int8: weight tensors that can saturate without VNNI; None for fp32

    @property
    def passed(self) -> bool:
        return self.check.status != "FAILED" and not self.saturation

    @property
    def return_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, "passed": self.passed, "self_check": self.check.to_dict(),
                "saturation": self.saturation}

    def summary(self) -> str:
        lines = [f"verify {self.artifact}: {'passed' if self.passed else 'FAILED'}", f"  {self.check.line()}"]
        if self.saturation is not None:
            lines.append("  int8 weights: " + ("7-bit, cannot saturate on any CPU" if not self.saturation else
                                               f"{len(self.saturation)} tensors use the full int8 range and saturate "
                                               "on CPUs without VNNI; fix with fer-export requantize"))
        return "\n".join(lines)


def self_check_file(artifact_path: str | Path) -> SelfCheckReport:
    """The self-check of an ONNX file on this machine (:mod:`fer_export.probe`), and for int8 whether its
    weights can saturate on CPUs without VNNI."""
    from ..errors import ArtifactError
    from ..probe import self_check
    from ..runtime import EmotionClassifier
    from ..spec import META_PRECISION
    from .quantize import saturation_problems

    path = Path(artifact_path)
    if path.suffix.lower() != ".onnx":
        raise ArtifactError(f"{path}: only ONNX files carry a self-check; verify a TorchScript file against its "
                            "checkpoint with --against")
    clf = EmotionClassifier(path, "cpu", self_check=False)
    int8 = clf.metadata.get(META_PRECISION) == "int8"
    return SelfCheckReport(str(path), self_check(clf), saturation_problems(path) if int8 else None)
