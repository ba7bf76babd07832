"""Parity: does an exported artifact reproduce the PyTorch model it came from?

:func:`compare` runs a reference and a candidate on the same input sets and checks every output
against a named :class:`Tolerance`; it returns a :class:`ParityReport` (per input set and output:
shape, max abs diff, tolerance, top-1 agreement, pass/fail) that collects every failure instead of
stopping at the first. Callers turn a failed report into an error (:class:`ParityError`); it is
never a warning.

Input sets (:func:`input_sets`): random normal tensors at batch 1 and :data:`PARITY_BATCH` (which
proves the dynamic batch axis), plus :data:`PARITY_FACES` face crops: real images sampled from a
folder when one is given (Kaggle layout or any folder of images), otherwise structured synthetic
faces (gradients, an ellipse face, eyes and mouth) run through the real preprocessing, so the check
works anywhere. Graphs with preprocessing inside get uint8 crops of several sizes instead.

Top-1 agreement counts a sample whose reference top-2 margin is within twice the output's tolerance
as agreeing (an allowed difference may legitimately flip a near-tie), except for int8, whose
tolerance is too wide for that.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from .folders import sample_images
from .preprocess import preprocess, read_gray
from .spec import INPUT_UINT8, ModelSpec


@dataclass(frozen=True)
class Tolerance:
    """What an artifact kind must meet. ``atol`` per output name; outputs without one are reported only."""

    name: str
    atol: Mapping[str, float]
    min_top1: float  # fraction of samples whose top-1 class must agree
    excuse_ties: bool = True  # count a flip as agreeing when the reference top-2 margin <= 2 * atol


#: fp32 ONNX / TorchScript vs PyTorch eager. Measured max |d logits| <= 3e-5 on ResNet18 at 224 px;
#: 1e-4 leaves headroom for other CPUs' kernels while catching any real change (another
#: checkpoint differs by > 0.1).
LOGIT_ATOL = 1e-4
PROB_ATOL = 1e-5
FP32 = Tolerance("fp32", {"logits": LOGIT_ATOL, "probs": PROB_ATOL}, min_top1=1.0)
#: ``--with-preprocessing`` vs PIL + PyTorch: the in-graph resize differs from PIL's by at most one
#: gray level on some pixels, which moved probabilities by at most 8e-4 (measured, 48 and 224 px models).
PREPROC_PROB_ATOL = 0.02
PREPROCESSING = Tolerance("with-preprocessing", {"probs": PREPROC_PROB_ATOL}, min_top1=0.97)
#: int8 static QDQ vs PyTorch fp32: quantisation moves probabilities a lot more (measured up to
#: 0.02 on barely trained models; sharper trained models move more); the real gate for int8 is
#: accuracy on labelled data (:mod:`fer_export.export.quantize`), this one catches a broken graph.
INT8_PROB_ATOL = 0.25
INT8 = Tolerance("int8", {"probs": INT8_PROB_ATOL}, min_top1=0.80, excuse_ties=False)
#: fp16 (``fer-export fp16``) vs its fp32 source: float16 weights and activations move probabilities on
#: real faces by a small fraction of this, which leaves room for other CPUs' kernels and GPUs' float16
#: arithmetic while catching a broken graph or weight. Gated on probabilities, which users read:
#: float16's error in logits grows with their size. Near-ties are excused as for fp32.
FP16_PROB_ATOL = 0.01
FP16 = Tolerance("fp16", {"probs": FP16_PROB_ATOL}, min_top1=1.0)

PARITY_BATCH = 8  # the larger random batch (batch 1 is always checked too)
PARITY_FACES = 64  # face crops per check
SYNTHETIC_SIZE = (96, 96)  # synthetic faces are drawn at this size, then resized like real crops


@dataclass
class OutputCheck:
    inputs: str  # name of the input set, e.g. "random[8]"
    output: str  # "logits" or "probs"
    shape: tuple[int, ...]
    max_abs_diff: float
    tolerance: float | None  # None: reported, not gated
    top1_agreement: float
    min_top1: float
    passed: bool


@dataclass
class ParityReport:
    tolerance: str  # name of the Tolerance used
    checks: list[OutputCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # failures that are not numeric (missing output...)

    @property
    def passed(self) -> bool:
        return not self.problems and bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[str]:
        return self.problems + [_describe(c) for c in self.checks if not c.passed]

    def to_dict(self) -> dict:
        return {"tolerance": self.tolerance, "passed": self.passed, "problems": self.problems,
                "checks": [asdict(c) | {"shape": list(c.shape)} for c in self.checks]}

    def summary(self) -> str:
        rows = [f"  parity ({self.tolerance}): {'passed' if self.passed else 'FAILED'}",
                f"  {'inputs':<24}{'output':<8}{'shape':<12}{'max|diff|':>11}{'tol':>9}{'top1':>8}  ok"]
        for c in self.checks:
            tol = f"{c.tolerance:.0e}" if c.tolerance is not None else "-"
            rows.append(f"  {c.inputs:<24}{c.output:<8}{'x'.join(map(str, c.shape)):<12}"
                        f"{c.max_abs_diff:>11.2e}{tol:>9}{c.top1_agreement:>8.1%}  {'yes' if c.passed else 'NO'}")
        return "\n".join(rows + [f"  failed: {f}" for f in self.failures])


def _describe(c: OutputCheck) -> str:
    parts = []
    if c.tolerance is not None and not c.max_abs_diff <= c.tolerance:
        parts.append(f"max |diff| {c.max_abs_diff:.3g} > tolerance {c.tolerance:g}")
    if c.top1_agreement < c.min_top1:
        parts.append(f"top-1 agreement {c.top1_agreement:.1%} < {c.min_top1:.0%}")
    return f"{c.inputs} {c.output}: " + ", ".join(parts)


Runner = Callable[[np.ndarray], Mapping[str, np.ndarray]]


def compare(reference: Runner, candidate: Runner, inputs: Mapping[str, np.ndarray],
            tolerance: Tolerance) -> ParityReport:
    """Run both on every input set; check every output the candidate shares with the reference.

    Outputs the tolerance gives no ``atol`` for are reported, not gated.
    """
    report = ParityReport(tolerance.name)
    for name, batch in inputs.items():
        ref, got = reference(batch), candidate(batch)
        shared = [k for k in got if k in ref]
        if not shared:
            report.problems.append(f"{name}: the artifact's outputs {sorted(got)} include none of {sorted(ref)}")
        for out in shared:
            report.checks.append(_check(name, out, np.asarray(ref[out]), np.asarray(got[out]), tolerance))
    return report


def _check(inputs: str, output: str, ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> OutputCheck:
    atol = tol.atol.get(output)
    if ref.shape != got.shape:
        return OutputCheck(inputs, output, tuple(got.shape), float("inf"), atol, 0.0, tol.min_top1, False)
    diff = float(np.abs(ref.astype(np.float64) - got).max()) if ref.size else 0.0
    top2 = np.sort(ref, axis=1)[:, -2:]
    tie = (top2[:, 1] - top2[:, 0]) <= (2 * (atol or 0.0) if tol.excuse_ties else -1.0)
    agree = float(np.mean((ref.argmax(1) == got.argmax(1)) | tie)) if len(ref) else 1.0
    ok = atol is None or (diff <= atol and agree >= tol.min_top1)
    return OutputCheck(inputs, output, tuple(got.shape), diff, atol, agree, tol.min_top1, ok)


# ---- inputs --------------------------------------------------------------------------------------

def synthetic_faces(n: int = PARITY_FACES, size: tuple[int, int] = SYNTHETIC_SIZE, seed: int = 0) -> list[np.ndarray]:
    """Structured uint8 images with face-like content: a lit gradient, an ellipse face, eyes, a mouth."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(n):
        angle = rng.uniform(0, 2 * np.pi)
        img = 60 + 80 * ((np.cos(angle) * xx / w + np.sin(angle) * yy / h) % 1.0)
        cx, cy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)
        ax, ay = w * rng.uniform(0.25, 0.4), h * rng.uniform(0.3, 0.45)
        cv2.ellipse(img, (int(cx), int(cy)), (int(ax), int(ay)), rng.uniform(-15, 15), 0, 360,
                    float(rng.uniform(120, 220)), -1)
        for side in (-1, 1):  # eyes
            cv2.circle(img, (int(cx + side * ax * 0.4), int(cy - ay * 0.25)), max(1, int(ax * 0.12)),
                       float(rng.uniform(10, 60)), -1)
        cv2.ellipse(img, (int(cx), int(cy + ay * 0.45)), (max(1, int(ax * rng.uniform(0.2, 0.5))),
                    max(1, int(ay * rng.uniform(0.05, 0.25)))), 0, 0, 360, float(rng.uniform(20, 90)), -1)
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 2.0)) + rng.normal(0, 4, img.shape)
        out.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))
    return out


def crops(data: str | Path | None, n: int = PARITY_FACES, seed: int = 0) -> tuple[str, list[np.ndarray]]:
    """``(name, crops)``: real images from ``data`` when given, else synthetic faces."""
    if data is not None:
        return "faces", [read_gray(p) for p in sample_images(data, n, seed)]
    return "synthetic", synthetic_faces(n, seed=seed)


def input_sets(spec: ModelSpec, input_format: str, data: str | Path | None = None,
               batch: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """The batches a parity check runs. ``batch``: the artifact's fixed batch size, if it has one.

    ``normalized`` graphs get float32 (N, C, H, W); ``uint8`` graphs get raw crops (N, 1, H, W),
    one set per crop size: the sampled crops plus synthetic crops smaller and larger than the input.
    """
    name, faces = crops(data, seed=seed)
    if input_format == INPUT_UINT8:
        h, w = spec.input_size
        faces = faces + synthetic_faces(8, (h // 2 + 3, w // 2 + 1), seed) + synthetic_faces(8, (2 * h + 7, 2 * w + 3), seed)
        groups: dict[tuple[int, int], list[np.ndarray]] = {}
        for f in faces:
            groups.setdefault(f.shape, []).append(f)
        return {f"{name} {s[0]}x{s[1]}[{len(g)}]": np.stack(g)[:, None] for s, g in groups.items()}
    rng = np.random.default_rng(seed)
    sizes = [batch] if batch else [1, PARITY_BATCH]
    sets = {f"random[{n}]": rng.standard_normal((n, spec.channels, *spec.input_size)).astype(np.float32)
            for n in sizes}
    x = preprocess(faces, spec)
    if batch:  # a fixed-batch graph takes exactly `batch` rows: the first ones, repeated if too few
        x = np.resize(x, (batch, *x.shape[1:]))
    sets[f"{name}[{len(x)}]"] = x
    return sets


# ---- PyTorch reference and the checks export and verify run --------------------------------------

def torch_reference(model, spec: ModelSpec, input_format: str) -> Runner:
    """The eager model as a runner; for ``uint8`` inputs preceded by the PIL preprocessing path."""
    import torch

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        x = preprocess(list(batch[:, 0]), spec) if input_format == INPUT_UINT8 else batch
        with torch.inference_mode():
            logits = model(torch.from_numpy(np.ascontiguousarray(x)))
        return {"logits": logits.numpy(), "probs": torch.softmax(logits, 1).numpy()}

    return run


def tolerance_for(artifact) -> Tolerance:
    if artifact.precision == "int8":
        return INT8
    if artifact.input_format == INPUT_UINT8:
        return PREPROCESSING
    return FP16 if artifact.precision == "fp16" else FP32


def check_model(model, spec: ModelSpec, artifact, data: str | Path | None = None) -> ParityReport:
    """Parity of an opened artifact (:class:`fer_export.export.artifact.Artifact`) against the eager
    model, or against another opened artifact (anything with ``run``: an int8 graph against its fp32 source)."""
    sets = input_sets(spec, artifact.input_format, data, batch=artifact.batch)
    reference = model.run if hasattr(model, "run") else torch_reference(model.eval(), spec, artifact.input_format)
    return compare(reference, artifact.run, sets, tolerance_for(artifact))
