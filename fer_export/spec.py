"""The model's contract: one frozen spec that travels inside every artifact.

Training writes it into checkpoints, export writes it into ONNX ``metadata_props`` and TorchScript
extra files, and evaluation, the runtime and the batch runner read it back. Nothing else restates
labels, input size or normalisation.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from .errors import SpecError

#: FER2013's labels, in the order of its integer codes (and of the seed recipe's class folders).
FER2013_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")

#: Resize methods the preprocessing code implements. ``pil_bilinear`` is PIL's antialiased
#: bilinear filter, which is what torchvision's ``Resize`` runs on a PIL image.
RESIZE_METHODS = ("pil_bilinear",)

#: Architectures :mod:`fer_export.model` can build.
#: ``resnet18``: torchvision ResNet18, 1-channel 7x7 stride-2 stem (the seed recipe).
#: ``resnet18_s1``: the same network with a 3x3 stride-1 stem and no max-pool, for 40-64 px inputs.
#: ``resnet18_half``: ``resnet18`` (the seed's stem) with every stage at half width (32-64-128-256 channels):
#: a quarter of the FLOPs at the same input size; 0.072 GFLOP at 64 px.
#: ``resnet10``: ``resnet18`` with one block per stage instead of two; 0.087 GFLOP at 48 px.
ARCHITECTURES = ("resnet18", "resnet18_s1", "resnet18_half", "resnet10")

SPEC_VERSION = 1

#: Bounds on what a model file's spec may say (the file is input too): labels become CSV columns and
#: cells, so they are short printable text that a spreadsheet cannot read as a formula; mean and std
#: keep the normalised input finite; the JSON is read only up to MAX_SPEC_CHARS.
MAX_LABELS = 1000
MAX_LABEL_CHARS = 64
FORMULA_STARTS = ("=", "+", "-", "@")
MAX_NORM = 1e6
MIN_STD = 1e-6
MAX_SPEC_CHARS = 1_000_000

#: Largest input side (px) a spec may ask for: a 1024x1024 ResNet18 input already needs gigabytes at
#: batch 32; a crafted file asking for 20000 px would exhaust memory instead of failing cleanly.
MAX_INPUT_SIZE = 1024

#: What an exported graph takes (``META_INPUT``): ``normalized`` float32 (N, C, H, W) at the spec's
#: input size, or ``uint8`` raw grayscale crops (N, 1, H, W) of any size, resized and normalised inside.
INPUT_NORMALIZED, INPUT_UINT8 = "normalized", "uint8"
INPUT_FORMATS = (INPUT_NORMALIZED, INPUT_UINT8)

#: Keys under which artifacts store metadata (ONNX ``metadata_props`` and TorchScript extra files).
META_SPEC = "fer_export.spec"
META_VERSION = "fer_export.version"
META_SOURCE_SHA256 = "fer_export.source_sha256"
META_PARITY = "fer_export.parity"
META_INPUT = "fer_export.input"  # one of INPUT_FORMATS
META_TTA = "fer_export.tta"  # one of TTA_MODES: what the exported graph averages over
META_FLIP_BELOW = "fer_export.flip_below"  # with "hflip-uncertain": the top probability below which a face is mirrored too
META_PRECISION = "fer_export.precision"  # "fp32", "int8" (static QDQ) or "fp16" (float32 inputs and outputs)
META_PROBE = "fer_export.probe"  # the self-check: probe faces and what the file's reference gives them (probe.py)
META_SOURCE_PARITY = "fer_export.source_parity"  # a file made from another (flip, fp16): the source's gate record

#: The ``hflip-uncertain`` mode: the mirror too, only for the faces whose top probability is below
#: ``META_FLIP_BELOW`` (ONNX only; export/flip.py).
UNCERTAIN = "hflip-uncertain"
#: What ``tta`` accepts: "none", "hflip" (average over the image and its mirror, inside the graph),
#: "tencrop" (four corner crops and the centre crop, and their mirrors; see export.preprocessing.ViewAverage)
#: or UNCERTAIN.
TTA_MODES = ("none", "hflip", "tencrop", UNCERTAIN)


#: The five face landmarks YuNet gives, in its order: the subject's right eye, left eye, nose tip,
#: right and left mouth corners (for a frontal face, the right ones are on the image's left).
LANDMARKS = ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left")


@dataclass(frozen=True)
class Framing:
    """Where the face sat in the crops a model was trained on, so that a detected face is cropped alike.

    A face from a detector named in ``detector_boxes`` gives the square its rule places around its
    box; else a face with landmarks is warped by the similarity that takes its landmarks nearest to
    ``landmarks``; else (a box-only detector) the square ``box`` places around its box.
    """

    landmarks: tuple[float, ...]  # mean x, y of each of LANDMARKS in a training crop, as fractions of its side
    #: (dx, dy, scale): crop centre = box centre + (dx, dy) * box side; crop side = scale * box side
    box: tuple[float, float, float]
    #: side (px) of the training crops (FER2013: 48). A framed face larger than that is area-averaged
    #: down to it before the model's own resize, so that a face seen at high resolution reaches the
    #: network as sharp as the training faces did, not sharper; None = keep the face's resolution.
    size: int | None = None
    #: ((detector name, (dx, dy, scale)), ...): a box rule calibrated for each named detector, used
    #: before the landmarks. FER2013's crops are upright squares whose framing varies from face to face;
    #: a detector's own box, calibrated, predicts them better than a landmark warp (which also turns
    #: the face upright, as the training crops were not).
    detector_boxes: tuple[tuple[str, tuple[float, float, float]], ...] = ()

    FIELDS = frozenset({"landmarks", "box", "size", "detector_boxes"})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Framing":
        if not isinstance(data, Mapping) or not {"landmarks", "box"} <= set(data) <= cls.FIELDS:
            raise SpecError(f"a framing needs the fields 'landmarks' and 'box' (and may have 'size' and "
                            f"'detector_boxes'), got {data!r}")
        try:
            size = data.get("size")
            boxes = data.get("detector_boxes") or {}
            return cls(tuple(float(v) for v in data["landmarks"]), tuple(float(v) for v in data["box"]),
                       None if size is None else int(size),
                       tuple((str(k), tuple(float(v) for v in boxes[k])) for k in sorted(boxes)))
        except (TypeError, ValueError, AttributeError) as exc:
            raise SpecError(f"malformed framing {dict(data)!r}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"landmarks": list(self.landmarks), "box": list(self.box)}
        if self.size is not None:
            d["size"] = self.size
        if self.detector_boxes:
            d["detector_boxes"] = {name: list(rule) for name, rule in self.detector_boxes}
        return d

    def box_rule(self, detector: str | None) -> tuple[float, float, float] | None:
        """The box rule calibrated for ``detector``, if the framing has one."""
        return dict(self.detector_boxes).get(detector)


@dataclass(frozen=True)
class ModelSpec:
    """Everything a consumer needs to feed a model correctly and read its output."""

    arch: str = "resnet18"  # network builder in fer_export.model, one of ARCHITECTURES
    labels: tuple[str, ...] = FER2013_LABELS  # class names in output order
    input_size: tuple[int, int] = (224, 224)  # (height, width) the network sees
    channels: int = 1  # 1 = grayscale
    mean: tuple[float, ...] = (0.485,)  # per-channel mean subtracted after scaling to [0, 1]
    std: tuple[float, ...] = (0.229,)  # per-channel std divided by after subtracting the mean
    resize: str = "pil_bilinear"  # how a face crop is resized to input_size, one of RESIZE_METHODS
    version: int = field(default=SPEC_VERSION)  # spec format version
    framing: Framing | None = None  # how training crops framed the face; None = a square around the detector's box

    def __post_init__(self):
        problems = _problems(self)
        if problems:
            raise SpecError("invalid model spec: " + "; ".join(problems))

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        if self.framing is None:  # a spec without one reads and hashes as before framings existed
            del d["framing"]
        else:
            d["framing"] = self.framing.to_dict()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelSpec":
        if not isinstance(data, Mapping):
            raise SpecError(f"a model spec must be a mapping, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown model spec fields {unknown}; known fields are {sorted(known)}")
        version = data.get("version", SPEC_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise SpecError(f"model spec version must be a positive integer, got {version!r}")
        if version > SPEC_VERSION:
            raise SpecError(
                f"model spec version {version} is newer than this fer-export understands "
                f"({SPEC_VERSION}); upgrade fer-export"
            )
        kw = dict(data)
        for key in ("labels", "mean", "std", "input_size"):
            if key in kw and not isinstance(kw[key], (list, tuple)):
                raise SpecError(f"model spec field {key!r} must be a list, got {type(kw[key]).__name__} {kw[key]!r}")
        try:
            for key in ("labels", "mean", "std", "input_size"):
                if key in kw:
                    kw[key] = tuple(kw[key])
            if "input_size" in kw:
                kw["input_size"] = tuple(int(v) for v in kw["input_size"])
            for key in ("mean", "std"):
                if key in kw:
                    kw[key] = tuple(float(v) for v in kw[key])
            if kw.get("framing") is not None and not isinstance(kw["framing"], Framing):
                kw["framing"] = Framing.from_dict(kw["framing"])
        except (TypeError, ValueError) as exc:
            raise SpecError(f"malformed model spec {dict(data)!r}: {exc}") from exc
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        if isinstance(text, str) and len(text) > MAX_SPEC_CHARS:
            raise SpecError(f"model spec is {len(text)} characters long, more than {MAX_SPEC_CHARS}")
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise SpecError(f"model spec is not valid JSON: {exc}") from exc
        except RecursionError:
            raise SpecError("model spec is JSON nested too deep to be a spec") from None
        return cls.from_dict(data)

    def replace(self, **changes) -> "ModelSpec":
        return ModelSpec.from_dict({**self.to_dict(), **changes})


def _problems(spec: ModelSpec) -> list[str]:
    p = []
    if spec.arch not in ARCHITECTURES:
        p.append(f"arch {spec.arch!r} is not one of {ARCHITECTURES}")
    if not isinstance(spec.labels, (tuple, list)) or not 2 <= len(spec.labels) <= MAX_LABELS \
            or not all(isinstance(x, str) and x for x in spec.labels):
        p.append(f"labels must be 2 to {MAX_LABELS} non-empty strings, got {_short(spec.labels)}")
    elif bad := [x for x in spec.labels if len(x) > MAX_LABEL_CHARS or not x.isprintable() or x.startswith(FORMULA_STARTS)]:
        p.append(f"labels must be printable text of at most {MAX_LABEL_CHARS} characters, not starting with "
                 f"{' '.join(FORMULA_STARTS)}; got {_short(bad)}")
    elif len(set(spec.labels)) != len(spec.labels):
        p.append(f"labels must be unique, got {_short(spec.labels)}")
    if len(spec.input_size) != 2 or not all(isinstance(v, int) and 16 <= v <= MAX_INPUT_SIZE for v in spec.input_size):
        p.append(f"input_size must be (height, width) of 16 to {MAX_INPUT_SIZE} px, got {spec.input_size!r}")
    if spec.channels not in (1, 3):
        p.append(f"channels must be 1 or 3, got {spec.channels!r}")
    if len(spec.mean) != spec.channels or len(spec.std) != spec.channels:
        p.append(f"mean and std need one value per channel ({spec.channels}), got {spec.mean!r}, {spec.std!r}")
    if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in (*spec.mean, *spec.std)):
        p.append(f"mean and std must be finite numbers, got {spec.mean!r}, {spec.std!r}")
    elif any(not MIN_STD <= s <= MAX_NORM for s in spec.std) or any(abs(m) > MAX_NORM for m in spec.mean):
        p.append(f"std must be {MIN_STD:g} to {MAX_NORM:g} and |mean| at most {MAX_NORM:g}, got {spec.mean!r}, {spec.std!r}")
    if spec.resize not in RESIZE_METHODS:
        p.append(f"resize {spec.resize!r} is not one of {RESIZE_METHODS}")
    if spec.framing is not None:
        f = spec.framing
        if not isinstance(f, Framing):
            p.append(f"framing must be a Framing, got {type(f).__name__}")
        elif not all(math.isfinite(v) for v in (*f.landmarks, *f.box, *(v for _, r in f.detector_boxes for v in r))):
            p.append(f"framing values must be finite numbers, got {f.to_dict()!r}")
        elif len(f.landmarks) != 2 * len(LANDMARKS) or not all(-1 <= v <= 2 for v in f.landmarks):
            p.append(f"framing landmarks must be {2 * len(LANDMARKS)} fractions of the crop side, got {f.landmarks!r}")
        elif math.dist(f.landmarks[0:2], f.landmarks[2:4]) < 0.01:
            p.append(f"framing landmarks must place the eyes apart, got {f.landmarks!r}")
        elif any(len(b) != 3 or not b[2] > 0 for b in (f.box, *(rule for _, rule in f.detector_boxes))):
            p.append(f"framing boxes must be (dx, dy, scale > 0), got {f.box!r} and {f.detector_boxes!r}")
        if isinstance(f, Framing) and f.size is not None and not 8 <= f.size <= 4096:
            p.append(f"framing size must be 8 to 4096 px, got {f.size!r}")
    return p


def _short(values) -> str:
    """``values`` for an error message: the first few, each cut short, escaped (no control characters)."""
    if not isinstance(values, (list, tuple)):
        return ascii(values)[:200]
    shown = [ascii(v[:MAX_LABEL_CHARS]) if isinstance(v, str) else ascii(v)[:200] for v in values[:5]]
    return "[" + ", ".join(shown) + (f", ... ({len(values)} in all)]" if len(values) > 5 else "]")


#: The seed recipe's contract: what a checkpoint without a spec is taken to be.
SEED_SPEC = ModelSpec()
