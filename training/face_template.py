"""The framing of FER2013's training crops, for aligned face crops at inference (``ModelSpec.framing``).

    python -m training.face_template [--data ../shared/data/fer2013/train] [--samples 3000] [--seed 0]
                                     [--stamp MODEL.onnx --out FRAMED.onnx] [--json framing.json]

Each sampled training crop is upscaled 4x (cubic) and padded with its own edge pixels, so the
detectors see a face with some surroundings. YuNet (the bundled file) gives five landmarks for the
crops it finds; their mean position, as fractions of the crop side and made left-right symmetric
(training flips faces at random), is the framing's ``landmarks``. Each detector's box on the same
crops, against the crop itself, gives its box rule (median dx, dy, scale):
``detector_boxes`` holds YuNet's and Haar's, and ``box`` (the rule for any other box-only detector)
is Haar's. The box rules are what fer-batch uses for these two detectors: FER2013's crops are upright
squares whose framing varies from face to face, and on faces placed in pictures
(``benchmarks/pictures.py``) the calibrated YuNet box scored about a point above the landmark warp,
which also turns each face upright as the training crops were not. ``--stamp`` writes a copy of an
exported ONNX model whose spec carries the framing (needs the ``onnx`` package); the model's
weights and every other metadata entry are unchanged.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from fer_export.errors import FerExportError, InputError, OutputError, require
from fer_export.outputs import check_writable
from fer_export.spec import LANDMARKS, Framing

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013" / "train"
UPSCALE = 4  # a 48 px crop becomes 192 px
PAD = 0.35  # edge pixels added on every side, as a fraction of the upscaled side
MIRROR = (1, 0, 2, 4, 3)  # LANDMARKS index of each landmark's mirror image


def sample(root: Path, n: int, seed: int) -> list[Path]:
    files = sorted(root.rglob("*.jpg"))
    rng = np.random.default_rng(seed)
    return [files[i] for i in sorted(rng.choice(len(files), size=min(n, len(files)), replace=False))]


def padded(path: Path) -> tuple[np.ndarray, int, int]:
    """The crop upscaled and padded, as BGR; its side and the padding (px)."""
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    side = gray.shape[1] * UPSCALE
    big = cv2.resize(gray, (side, side), interpolation=cv2.INTER_CUBIC)
    pad = int(round(PAD * side))
    framed = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return cv2.cvtColor(framed, cv2.COLOR_GRAY2BGR), side, pad


def symmetric(points: np.ndarray) -> np.ndarray:
    """Mean of ``points`` (5, 2) and their mirror image (x -> 1 - x, left and right swapped)."""
    mirrored = points[list(MIRROR)].copy()
    mirrored[:, 0] = 1 - mirrored[:, 0]
    return (points + mirrored) / 2


def derive(files: list[Path]) -> tuple[Framing, dict]:
    """The framing of these crops, and how many each detector found."""
    from fer_export.batch.faces import open_detector
    from fer_export.batch.settings import DetectionSettings

    yunet = open_detector(DetectionSettings(detector="yunet", det_threshold=0.5, min_face=0, det_sizes=(1024,)))
    haar = open_detector(DetectionSettings(detector="haar", min_face=0, det_sizes=(1024,)))
    marks, sides = [], []
    boxes: dict[str, list] = {"yunet": [], "haar": []}
    for path in files:
        image, side, pad = padded(path)
        sides.append(side // UPSCALE)
        found = [f for f in yunet.detect(image) if f.landmarks is not None]
        if found:
            best = max(found, key=lambda f: f.score or 0)
            marks.append((np.reshape(best.landmarks, (-1, 2)) - pad) / side)
            boxes["yunet"].append(box_offset(best, pad + side / 2, side))
        found = haar.detect(image)
        if found:
            boxes["haar"].append(box_offset(max(found, key=lambda f: f.w * f.h), pad + side / 2, side))
    if not marks or not all(boxes.values()):
        raise SystemExit(f"too few faces found (YuNet {len(marks)}, Haar {len(boxes['haar'])}) in {len(files)} crops")
    landmarks = symmetric(np.mean(marks, axis=0))
    rules = {name: box_rule(found) for name, found in boxes.items()}
    framing = Framing(tuple(round(float(v), 4) for v in landmarks.ravel()), rules["haar"],
                      int(np.median(sides)),  # the training crops' side: faces reach the model at it
                      tuple(sorted(rules.items())))
    spread = np.std(marks, axis=0)
    spread = {name: [round(float(v), 4) for v in spread[i]] for i, name in enumerate(LANDMARKS)}
    box_spread = {name: [round(float(v), 4) for v in np.std(found, axis=0)] for name, found in boxes.items()}
    return framing, {"crops": len(files), "yunet_found": len(marks), "haar_found": len(boxes["haar"]),
                     "landmark_std": spread, "box_std": box_spread}


def box_offset(face, centre: float, side: int) -> tuple[float, float, float]:
    """Where the crop (centre and side, px) lies against the face's box: (dx, dy, scale) in box sides."""
    s = max(face.w, face.h)
    return (centre - (face.x + face.w / 2)) / s, (centre - (face.y + face.h / 2)) / s, side / s


def box_rule(offsets: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """The median offset: a detector's own bias (in image coordinates) is kept."""
    return tuple(round(float(v), 4) for v in np.median(offsets, axis=0))


def stamp(model: Path, out: Path, framing: Framing) -> Path:
    """A copy of ONNX ``model`` whose embedded spec carries ``framing``."""
    import onnx

    from fer_export.spec import META_SPEC, ModelSpec

    proto = onnx.load_model(str(model))
    props = {p.key: p for p in proto.metadata_props}
    if META_SPEC not in props:
        raise SystemExit(f"{model}: has no '{META_SPEC}' metadata; export it with `fer-export onnx`")
    spec = ModelSpec.from_json(props[META_SPEC].value)
    framed = spec.replace(framing=framing)
    props[META_SPEC].value = framed.to_json()
    onnx.save_model(proto, str(out))
    return out


def check_args(args) -> None:
    """Before the minutes of detection: the data folder exists, and --stamp can be done (its model exists, the
    onnx package is installed, --out is not the model itself)."""
    if not args.data.is_dir():
        raise InputError(f"--data {args.data}: no such folder; give FER2013's training crops (<emotion>/*.jpg)")
    if args.samples < 1:
        raise InputError(f"--samples must be at least 1, got {args.samples}")
    if args.stamp:
        if not args.stamp.is_file():
            raise InputError(f"--stamp {args.stamp}: no such model file; give an ONNX model exported with "
                             "`fer-export onnx`")
        if os.path.realpath(args.out) == os.path.realpath(args.stamp):
            raise OutputError(f"--out {args.out} would overwrite the --stamp model {args.stamp}; choose another path")
        require("onnx", "train", "python -m training.face_template --stamp")
    for what, path in (("--out", args.out), ("--json", args.json)):
        if path is not None:
            check_writable(what, path)
    if args.out and args.json and os.path.realpath(args.out) == os.path.realpath(args.json):
        raise OutputError(f"--json {args.json} would overwrite --out {args.out}; choose another path")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="FER2013 training crops, <emotion>/*.jpg")
    ap.add_argument("--samples", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stamp", type=Path, help="exported ONNX model to copy with this framing")
    ap.add_argument("--out", type=Path, help="where --stamp writes the copy")
    ap.add_argument("--json", type=Path, help="write the framing and its statistics here")
    args = ap.parse_args(argv)
    if bool(args.stamp) != bool(args.out):
        ap.error("--stamp and --out go together")
    try:
        check_args(args)
    except FerExportError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    framing, stats = derive(sample(args.data, args.samples, args.seed))
    result = {"framing": framing.to_dict(), **stats}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.stamp:
        print(f"wrote {stamp(args.stamp, args.out, framing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
