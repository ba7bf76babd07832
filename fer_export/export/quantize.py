"""int8 variants that compute the same function on every CPU: static QDQ quantisation calibrated
on real images, with weights that cannot saturate.

``onnxruntime.quantization.quantize_static`` in QDQ format, uint8 activations and per-channel int8
weights (U8S8: onnxruntime's fast path on x86), MinMax-calibrated on :data:`CALIB_IMAGES` images
sampled from a folder. The weights take 7 bits (``reduce_range``: -64..64), not 8. On x86 CPUs
without VNNI (AMD Zen 1-3, Intel before Ice Lake, Skylake-SP) onnxruntime multiplies uint8 by int8
with AVX2's ``vpmaddubsw``, which adds each pair of products into a saturating int16: with 8-bit
weights a pair reaches 2 x 255 x 127 = 64,770 and is clipped to 32,767, so the same file gives other
answers there than on a VNNI or AMX CPU. With 7-bit weights a pair is at most 2 x 255 x 64 = 32,640:
every CPU computes what the file defines (:func:`saturation_problems` checks this bound on a file).
On VNNI and AMX CPUs the speed is the same as with 8-bit weights; U8U8 (uint8 weights) cannot
saturate either but has no VNNI/AMX kernels. Dynamic quantisation and fp16 are not offered: both
are slower than fp32 on CPUs. The candidates and their measurements: benchmarks/README.md, "int8
on every CPU".

Every int8 artifact is judged by :class:`PrecisionReport`: its top-1 accuracy on a labelled folder
next to the fp32 model's, both speeds, and its agreement with its own literal run (the same file
with graph optimisations off, so that onnxruntime executes DequantizeLinear, a float Conv and
QuantizeLinear as ONNX defines them, without int8 kernels: the reference no CPU changes). A drop of
more than :data:`MAX_ACCURACY_DROP_PP` points, or an agreement below :data:`MIN_LITERAL_AGREEMENT`,
fails the export; the drop alone can be accepted. The artifact's own parity against PyTorch is
checked with the looser :data:`fer_export.parity.INT8` tolerance.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ExportError, InputError
from ..folders import IMAGE_EXTENSIONS, image_files, labelled_images, sample_of
from ..preprocess import preprocess, read_gray
from ..spec import ModelSpec
from .saturation import MAX_WEIGHT_MAGNITUDE, requantize_weights, saturation_problems

__all__ = ["CALIB_IMAGES", "MAX_ACCURACY_DROP_PP", "MAX_WEIGHT_MAGNITUDE", "MIN_LITERAL_AGREEMENT", "Calibration",
           "LiteralCheck", "PrecisionReport", "Variant", "agreement_with_literal", "check_calib", "images_per_second",
           "judge", "labelled_batch", "literal_check", "logits", "outputs", "quantize_int8", "quantize_sample",
           "requantize_weights", "saturation_problems", "variant"]

#: Largest accepted top-1 accuracy drop of int8 against fp32, in percentage points.
MAX_ACCURACY_DROP_PP = 1.0
CALIB_IMAGES = 256  # images sampled from --calib for calibration
CALIB_BATCH = 32
#: Fewest images of --calib accepted: MinMax ranges from a handful of images misjudge every other face.
MIN_CALIB_IMAGES = 16
#: With ``tries`` > 1, the candidates are compared on this many other images of the calibration folder.
FIDELITY_IMAGES = 256
FIDELITY_SEED = 1_000_003  # seeds the sample of those images (calibration samples use seed, seed + 1, ...)
SPEED_BATCH = 32  # batch size of the images/s measurement
SPEED_THREADS = 2  # onnxruntime intra-op threads for the images/s measurement
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul"]  # the softmax stays in float
#: Fewest top-1 answers, as a share of the eval images, on which an int8 file must agree with its
#: literal run (its own definition, computed without int8 kernels).
MIN_LITERAL_AGREEMENT = 0.995
#: A face whose literal run's two top probabilities are closer than this counts as agreeing whatever
#: the int8 kernels answer: float rounding in either run may turn a near-tie (a barely trained model's
#: faces often are), while saturation moves confident faces by far more.
LITERAL_TIE_MARGIN = 0.05


def check_calib(calib: str | Path, tries: int = 1, seed: int = 0) -> list[Path]:
    """Before any export work: the images of ``calib`` (an InputError when the folder is missing, has fewer
    than :data:`MIN_CALIB_IMAGES` images, or one of the images the calibration samples would take cannot
    be read). Returns the folder's image files."""
    calib = Path(calib)
    if not calib.is_dir():
        raise InputError(f"--calib {calib}: no such folder; give a folder of real face images")
    try:
        files = image_files(calib)
    except InputError:
        raise InputError(f"--calib {calib}: no images found (extensions {IMAGE_EXTENSIONS}); give a folder of "
                         "real face images") from None
    if len(files) < MIN_CALIB_IMAGES:
        raise InputError(f"--calib {calib}: only {len(files)} image(s); int8 calibration needs at least "
                         f"{MIN_CALIB_IMAGES} real face images ({CALIB_IMAGES} are sampled when there are enough)")
    for path in sorted(set().union(*(sample_of(files, CALIB_IMAGES, s) for s in range(seed, seed + max(1, tries))))):
        read_gray(path)  # an unreadable image: an InputError naming it, now rather than after the fp32 export
    return files


def quantize_int8(fp32_path: Path, out_path: Path, spec: ModelSpec, calib: str | Path,
                  calib_images: int | None = None, seed: int = 0, tries: int = 1) -> Calibration | None:
    """Write a static QDQ int8 copy of the fp32 ONNX model at ``fp32_path``, calibrated on ``calib``.

    MinMax calibration takes each activation's range from the sample it sees, so one unusual image in
    it can cost precision everywhere, and two seeded samples of one folder give copies that agree with
    fp32 on different shares of other faces. With ``tries`` > 1, ``tries`` seeded samples
    are each calibrated on and the copy kept is the one whose probabilities are closest to fp32's
    (mean KL divergence) on :data:`FIDELITY_IMAGES` other images of ``calib``: a choice made on the
    calibration folder, never on the data that judges accuracy. Returns that comparison, or None."""
    n = calib_images or CALIB_IMAGES
    seeds = list(range(seed, seed + max(1, tries)))
    files = image_files(calib)  # listed once: a training folder holds tens of thousands of files
    samples = [sample_of(files, n, s) for s in seeds]
    if len(seeds) == 1:
        quantize_sample(fp32_path, out_path, spec, samples[0])
        return None
    used = set().union(*samples)
    held = [p for p in sample_of(files, FIDELITY_IMAGES + len(used), FIDELITY_SEED) if p not in used]
    if not held:
        raise InputError(f"{calib}: no images left besides the {len(used)} calibration images to compare the "
                         f"{len(seeds)} int8 candidates on; give a larger --calib folder or fewer --calib-tries")
    x = preprocess([read_gray(p) for p in held[:FIDELITY_IMAGES]], spec)
    reference = _log_softmax(logits(fp32_path, x))
    paths = [out_path.with_name(f"{out_path.stem}.try{k}{out_path.suffix}") for k in range(len(seeds))]
    kl, agreement = [], []
    try:
        for path, sample in zip(paths, samples):
            quantize_sample(fp32_path, path, spec, sample)
            candidate = _log_softmax(logits(path, x))
            kl.append(float((np.exp(reference) * (reference - candidate)).sum(1).mean()))
            agreement.append(float((candidate.argmax(1) == reference.argmax(1)).mean()))
        kept = int(np.argmin(kl))
        os.replace(paths[kept], out_path)
    finally:
        for path in paths:
            path.unlink(missing_ok=True)
    return Calibration(seeds, n, len(x), kl, agreement, kept)


def quantize_sample(fp32_path: Path, out_path: Path, spec: ModelSpec, images: list[Path], **scheme) -> None:
    """Quantise ``fp32_path`` to ``out_path`` calibrated on ``images``: fer-export's scheme (7-bit
    per-channel int8 weights, uint8 activations, QDQ); ``scheme`` overrides quantize_static's options
    (benchmarks/int8_schemes.py measures the alternatives with it)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    x = preprocess([read_gray(p) for p in images], spec)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": x[i:i + CALIB_BATCH]} for i in range(0, len(x), CALIB_BATCH)])

        def get_next(self):
            return next(self.batches, None)

    hint = _DropHint()  # onnxruntime logs "consider pre-processing" on the root logger; measured: no gain here
    logging.getLogger().addFilter(hint)
    try:
        options = dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                       weight_type=QuantType.QInt8, reduce_range=True, op_types_to_quantize=QUANTIZED_OPS)
        quantize_static(str(fp32_path), str(out_path), Reader(), **(options | scheme))
    except OSError:  # a full disk: the caller names the file
        raise
    except Exception as exc:  # onnxruntime.quantization raises many types
        raise ExportError(f"int8 quantisation of {fp32_path} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        logging.getLogger().removeFilter(hint)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


@dataclass
class Calibration:
    """The int8 candidates of ``quantize_int8(tries=N)``: one per seeded calibration sample, compared
    with fp32 on ``images`` other images of the calibration folder."""

    seeds: list[int]
    sample: int  # images per calibration sample
    images: int  # images the candidates were compared on
    kl: list[float]  # mean KL(fp32 || int8) of the class probabilities, per candidate
    agreement: list[float]  # top-1 agreement with fp32, per candidate
    kept: int  # index of the candidate written

    def summary(self) -> str:
        k = self.kept
        return (f"  calibration: kept sample {k + 1} of {len(self.seeds)} (seed {self.seeds[k]}, {self.sample} images), "
                f"closest to fp32 on {self.images} other calibration images: KL {self.kl[k]:.5f}, top-1 agreement "
                f"{self.agreement[k]:.2%} (all samples: KL {min(self.kl):.5f}-{max(self.kl):.5f}, agreement "
                f"{min(self.agreement):.2%}-{max(self.agreement):.2%})")


class _DropHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()


@dataclass
class Variant:
    precision: str
    path: str
    size_mb: float
    accuracy: float  # top-1 on the eval folder
    images_per_s: float  # batch SPEED_BATCH, SPEED_THREADS threads, CPU


@dataclass
class LiteralCheck:
    """The int8 file's optimised session against its literal run (:func:`literal_check`), on one CPU."""

    cpu: str  # fer_export.cpu.describe() of the machine that ran both
    images: int
    agreement: float  # share of images whose top-1 class is the same, near-ties (LITERAL_TIE_MARGIN) counted as same
    max_prob_diff: float
    ties_excused: int  # near-ties on which the two runs answered differently
    saturation: list[str]  # saturation_problems() of the file: weight tensors that can saturate

    @property
    def passed(self) -> bool:
        return self.agreement >= MIN_LITERAL_AGREEMENT and not self.saturation

    def summary(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        lines = [f"  against its literal run (graph optimisations off) on {self.cpu}: top-1 agreement "
                 f"{self.agreement:.2%} of {self.images} images (at least {MIN_LITERAL_AGREEMENT:.1%}"
                 + (f"; {self.ties_excused} near-ties counted as agreeing" if self.ties_excused else "")
                 + f"), largest probability difference {self.max_prob_diff:.4f}: {verdict}"]
        if self.saturation:
            lines.append(f"  weights that can saturate without VNNI: {'; '.join(self.saturation[:3])}"
                         + (f" (+{len(self.saturation) - 3} more)" if len(self.saturation) > 3 else ""))
        return "\n".join(lines)


@dataclass
class PrecisionReport:
    eval_data: str
    eval_images: int
    reference: Variant  # fp32 (or, for a requantised file, the source file's literal run)
    variant: Variant  # int8
    max_drop_pp: float
    accept_drop: bool
    literal: LiteralCheck | None = None
    calibration: Calibration | None = None  # the int8 candidates compared, when more than one

    @property
    def drop_pp(self) -> float:
        return 100.0 * (self.reference.accuracy - self.variant.accuracy)

    @property
    def passed(self) -> bool:
        return (self.accept_drop or self.drop_pp <= self.max_drop_pp) and (self.literal is None or self.literal.passed)

    def to_dict(self) -> dict:
        return asdict(self) | {"drop_pp": self.drop_pp, "passed": self.passed}

    def summary(self) -> str:
        rows = [f"  accuracy on {self.eval_data} ({self.eval_images} images), speed at batch {SPEED_BATCH}, "
                f"{SPEED_THREADS} threads:",
                f"  {'precision':<13}{'top-1':>8}{'img/s':>9}{'MB':>7}"]
        rows += [f"  {v.precision:<13}{v.accuracy:>8.2%}{v.images_per_s:>9.1f}{v.size_mb:>7.1f}"
                 for v in (self.reference, self.variant)]
        verdict = "ok" if self.drop_pp <= self.max_drop_pp else (
            "ACCEPTED (--accept-drop)" if self.accept_drop else "FAILED: pass --accept-drop to keep it")
        rows.append(f"  accuracy drop {self.drop_pp:+.2f} pp (limit {self.max_drop_pp:g} pp): {verdict}")
        if self.literal is not None:
            rows.append(self.literal.summary())
        if self.calibration is not None:
            rows.append(self.calibration.summary())
        return "\n".join(rows)


def labelled_batch(root: str | Path, spec: ModelSpec, limit_per_class: int | None = None):
    """``(x, y)``: a labelled folder preprocessed for the model; raises InputError if it is not labelled."""
    items = labelled_images(root, spec.labels, limit_per_class)
    return preprocess([read_gray(p) for p, _ in items], spec), np.array([y for _, y in items])


def outputs(path: Path, x: np.ndarray, name: str = "logits", literal: bool = False) -> np.ndarray:
    """Output ``name`` of the ONNX model at ``path`` on preprocessed ``x``, in batches of SPEED_BATCH on
    the CPU; ``literal``: with graph optimisations off (the file's own definition, no int8 kernels)."""
    from ..runtime import open_session

    sess, _ = open_session(path, "cpu", SPEED_THREADS, literal=literal)
    return np.concatenate([sess.run([name], {"input": x[i:i + SPEED_BATCH]})[0] for i in range(0, len(x), SPEED_BATCH)])


def logits(path: Path, x: np.ndarray) -> np.ndarray:
    """The ONNX model at ``path`` on preprocessed ``x``, in batches of SPEED_BATCH on the CPU."""
    return outputs(path, x)


def images_per_second(path: Path, spec: ModelSpec, batch: int = SPEED_BATCH, seconds: float = 2.0,
                      literal: bool = False, threads: int = SPEED_THREADS) -> float:
    """Throughput of an ONNX model on the CPU: repeated runs of one random batch after a warm-up."""
    from ..runtime import open_session

    sess, _ = open_session(path, "cpu", threads, literal=literal)
    x = np.random.default_rng(0).standard_normal((batch, spec.channels, *spec.input_size)).astype(np.float32)
    sess.run(["logits"], {"input": x})
    runs, start = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - start < seconds:
        sess.run(["logits"], {"input": x})
        runs += 1
    return runs * batch / (time.perf_counter() - start)


def variant(precision: str, path: Path, spec: ModelSpec, probs: np.ndarray, y: np.ndarray,
            literal: bool = False) -> Variant:
    """The file at ``path`` described by its probabilities ``probs`` on labelled images (labels ``y``) and its speed."""
    return Variant(precision, str(path), path.stat().st_size / 1e6, float((probs.argmax(1) == y).mean()),
                   images_per_second(path, spec, literal=literal))


def literal_check(path: Path, x: np.ndarray, fast: np.ndarray | None = None) -> LiteralCheck:
    """The int8 file at ``path`` as this CPU's int8 kernels run it (its probabilities ``fast`` on ``x``,
    when already computed), against its literal run, on ``x``."""
    from ..cpu import describe

    fast = outputs(path, x, "probs") if fast is None else fast
    literal = outputs(path, x, "probs", literal=True)
    same, tie = agreement_with_literal(fast, literal)
    return LiteralCheck(describe(), len(x), float((same | tie).mean()) if len(x) else 1.0,
                        float(np.abs(fast - literal).max()) if len(x) else 0.0, int((~same & tie).sum()),
                        saturation_problems(path))


def agreement_with_literal(fused: np.ndarray, literal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per face: whether the two runs' top-1 classes are the same, and whether the literal run's face is a
    near-tie (its two top probabilities within LITERAL_TIE_MARGIN)."""
    top2 = np.sort(literal, axis=1)[:, -2:] if literal.shape[1] > 1 else np.zeros((len(literal), 2))
    return fused.argmax(1) == literal.argmax(1), (top2[:, 1] - top2[:, 0]) < LITERAL_TIE_MARGIN


def judge(fp32_path: Path, int8_path: Path, spec: ModelSpec, eval_data: str | Path, *,
          max_drop_pp: float = MAX_ACCURACY_DROP_PP, accept_drop: bool = False,
          limit_per_class: int | None = None, reference_literal: bool = False) -> PrecisionReport:
    """Accuracy and speed of the int8 model next to the reference one (the fp32 file, or with
    ``reference_literal`` an int8 file run literally) on a labelled folder, and the int8 model
    against its own literal run on the same images."""
    try:
        x, y = labelled_batch(eval_data, spec, limit_per_class)
    except InputError as exc:
        raise InputError(f"int8 needs a labelled folder to judge accuracy (--eval-data): {exc}") from exc
    reference = variant("int8 literal" if reference_literal else "fp32", fp32_path, spec,
                        outputs(fp32_path, x, "probs", literal=reference_literal), y, reference_literal)
    fused = outputs(int8_path, x, "probs")  # once, for its accuracy and against its literal run
    return PrecisionReport(str(eval_data), len(y), reference, variant("int8", int8_path, spec, fused, y), max_drop_pp,
                           accept_drop, literal_check(int8_path, x, fused))
