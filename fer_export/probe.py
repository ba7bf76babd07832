"""The self-check: a model file carries a few real faces and what its reference computes for them, so
that it can check itself on the machine where it runs.

An exported file is checked where it is made, but it runs elsewhere, and one CPU does not compute
what another does: an int8 file whose weights use the full int8 range gives other answers on a CPU
without VNNI (:mod:`fer_export.export.quantize`), a hand-edited file gives other answers everywhere.
So fer-export embeds a :class:`Probe` in every ONNX file it writes (``META_PROBE``): the sixteen
48 px faces of ``models/probe_faces.png`` (cut from MIT-licensed photos; no FER2013 image) and the
probabilities the file's reference gives them: the file itself for fp32, its literal run (graph
optimisations off, no int8 kernels) for int8 (:mod:`fer_export.export.stamp` makes them).
:func:`self_check` runs the probe through the session that will serve, and compares. :class:`fer_export.runtime.EmotionClassifier` does this
when it opens a model; ``fer-export verify MODEL`` prints it.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import ArtifactError
from .spec import META_PROBE

#: The probe's faces, side by side in one 8-bit gray PNG (licence and origin: LICENSE-probe-faces.txt).
PROBE_FACES = Path(__file__).parent / "models" / "probe_faces.png"
PROBE_SIDE = 48  # px: each face is PROBE_SIDE x PROBE_SIDE, FER2013's crop size
#: Largest |probability difference| on any probe face that still passes, by the file's precision.
#: fp32: kernels differ between CPUs and providers in the last digits (far below this); int8: on a
#: VNNI/AMX CPU a 7-bit-weight file's fused int8 kernels stayed within 0.02 of its literal run on all
#: 3,589 PublicTest faces. A full-range file on a CPU without VNNI moved faces by up to 0.95.
#: fp16: its reference is the file on a CPU, which computes in float32 from the float16 weights; a GPU
#: also rounds every activation to float16, which stays well within this.
TOLERANCE = {"fp32": 0.02, "int8": 0.05, "fp16": 0.02}
MAX_PROBE_FACES = 64  # a crafted probe may not make opening a model slow
PASSED, FAILED, UNCHECKED = "passed", "FAILED", "not checked"


def probe_faces() -> np.ndarray:
    """The bundled probe faces as a (N, 48, 48) uint8 array."""
    strip = cv2.imread(str(PROBE_FACES), cv2.IMREAD_GRAYSCALE)
    if strip is None or strip.shape[0] != PROBE_SIDE or strip.shape[1] % PROBE_SIDE:
        raise ArtifactError(f"{PROBE_FACES}: missing or not a strip of {PROBE_SIDE} px faces; reinstall fer-export")
    return np.stack(np.split(strip, strip.shape[1] // PROBE_SIDE, axis=1))


@dataclass(frozen=True)
class Probe:
    """Faces and the probabilities the file's reference computes for them."""

    faces: np.ndarray  # (N, S, S) uint8
    probs: np.ndarray  # (N, classes) float32
    reference: str  # what computed ``probs``: "fp32" or "int8 literal"
    tolerance: float  # largest accepted |probability difference|

    def to_json(self) -> str:
        ok, png = cv2.imencode(".png", np.concatenate(list(self.faces), axis=1), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        return json.dumps({"faces": base64.b64encode(png.tobytes()).decode(), "side": int(self.faces.shape[1]),
                           "probs": [[round(float(p), 7) for p in row] for row in self.probs],
                           "reference": self.reference, "tolerance": self.tolerance})

    @classmethod
    def from_json(cls, text: str, classes: int) -> "Probe":
        """The probe a file carries; an ArtifactError when it is malformed (the file is input too)."""
        try:
            if len(text) > 2_000_000:
                raise ValueError(f"{len(text)} characters")
            data = json.loads(text)
            side = int(data["side"])
            png = np.frombuffer(base64.b64decode(data["faces"], validate=True), np.uint8)
            strip = cv2.imdecode(png, cv2.IMREAD_GRAYSCALE) if 8 <= side <= 256 and png.size else None
            if strip is None or strip.shape[0] != side or strip.shape[1] % side:
                raise ValueError("its faces are not a strip of square gray faces")
            faces = np.stack(np.split(strip, strip.shape[1] // side, axis=1))
            probs = np.asarray(data["probs"], dtype=np.float32)
            tolerance = float(data["tolerance"])
            if len(faces) > MAX_PROBE_FACES or probs.shape != (len(faces), classes):
                raise ValueError(f"{len(faces)} faces and probabilities of shape {probs.shape} for {classes} labels")
            if not (np.isfinite(probs).all() and 0 < tolerance < 1):
                raise ValueError("non-finite probabilities or a tolerance outside (0, 1)")
            return cls(faces, probs, str(data["reference"])[:40], tolerance)
        except (ValueError, TypeError, KeyError, RecursionError, cv2.error) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ArtifactError(f"its self-check probe ('{META_PROBE}') is malformed: {reason}; stamp it again with "
                                "`fer-export stamp`") from None


@dataclass(frozen=True)
class SelfCheck:
    """The probe run through a serving session, against the probabilities the file carries."""

    path: str
    status: str  # PASSED, FAILED or UNCHECKED
    cpu: str
    faces: int = 0
    max_diff: float = 0.0
    tolerance: float = 0.0
    reference: str = ""
    how: str = ""  # the session checked: "" (as served) or "literal"

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def line(self) -> str:
        """One line for a run's first lines and for warnings."""
        name = Path(self.path).name
        if self.status == UNCHECKED:
            return f"self-check: {name} has no probe, not checked (fer-export stamp adds one)"
        run = " (literal run)" if self.how == "literal" else ""
        how_far = "within" if self.passed else "up to"
        return (f"self-check {self.status}{run}: {name} on {self.cpu}: {self.faces} probe faces {how_far} "
                f"{self.max_diff:.4f} of its {self.reference} reference (tolerance {self.tolerance:g})")

    def to_dict(self) -> dict:
        return {"path": self.path, "status": self.status, "passed": self.passed, "cpu": self.cpu, "faces": self.faces,
                "max_diff": self.max_diff, "tolerance": self.tolerance, "reference": self.reference, "how": self.how}


def self_check(clf) -> SelfCheck:
    """Run the probe that ``clf``'s file carries through ``clf`` (an EmotionClassifier) and compare."""
    from .cpu import describe

    how = "literal" if getattr(clf, "literal", False) else ""
    text = clf.metadata.get(META_PROBE)
    if text is None:
        return SelfCheck(str(clf.path), UNCHECKED, describe(), how=how)
    try:
        probe = Probe.from_json(text, clf.spec.num_classes)
    except ArtifactError as exc:
        raise ArtifactError(f"{clf.path}: {exc}") from None
    diff = float(np.abs(clf.predict(list(probe.faces)) - probe.probs).max())
    return SelfCheck(str(clf.path), PASSED if diff <= probe.tolerance else FAILED, describe(), len(probe.faces), diff,
                     probe.tolerance, probe.reference, how)
