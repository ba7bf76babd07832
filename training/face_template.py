"""The framing of FER2013's training crops, for aligned face crops at inference (``ModelSpec.framing``).

    python -m training.face_template [--data ../shared/data/fer2013/train] [--samples 3000] [--seed 0]
                                     [--stamp MODEL.onnx --out FRAMED.onnx] [--json framing.json]

Each sampled training crop is upscaled 4x (cubic) and padded with its own edge pixels, so the
detectors see a face with some surroundings. YuNet (the bundled file) gives five landmarks for the
crops it finds; their mean position, as fractions of the crop side and made left-right symmetric
(training flips faces at random), is the framing's ``landmarks``. The Haar cascade's box on the same
crops, against the crop itself, gives ``box`` (median dx, dy, scale). ``--stamp`` writes a copy of an
exported ONNX model whose spec carries the framing (needs the ``onnx`` package); the model's
weights and every other metadata entry are unchanged.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

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
    from fer_export.batch.config import WorkConfig
    from fer_export.batch.faces import open_detector

    yunet = open_detector(WorkConfig(detector="yunet", det_threshold=0.5, min_face=0, det_sizes=(1024,)))
    haar = open_detector(WorkConfig(detector="haar", min_face=0, det_sizes=(1024,)))
    marks, boxes, sides = [], [], []
    for path in files:
        image, side, pad = padded(path)
        sides.append(side // UPSCALE)
        found = [f for f in yunet.detect(image) if f.landmarks is not None]
        if found:
            best = max(found, key=lambda f: f.score or 0)
            marks.append((np.reshape(best.landmarks, (-1, 2)) - pad) / side)
        found = haar.detect(image)
        if found:
            f = max(found, key=lambda f: f.w * f.h)
            s = max(f.w, f.h)
            crop_c = pad + side / 2
            boxes.append(((crop_c - (f.x + f.w / 2)) / s, (crop_c - (f.y + f.h / 2)) / s, side / s))
    if not marks or not boxes:
        raise SystemExit(f"too few faces found (YuNet {len(marks)}, Haar {len(boxes)}) in {len(files)} crops")
    landmarks = symmetric(np.mean(marks, axis=0))
    box = np.median(boxes, axis=0)
    framing = Framing(tuple(round(float(v), 4) for v in landmarks.ravel()), tuple(round(float(v), 4) for v in box),
                      int(np.median(sides)))  # the training crops' side: faces reach the model at it
    spread = np.std(marks, axis=0)
    spread = {name: [round(float(v), 4) for v in spread[i]] for i, name in enumerate(LANDMARKS)}
    return framing, {"crops": len(files), "yunet_found": len(marks), "haar_found": len(boxes), "landmark_std": spread}


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
    framing, stats = derive(sample(args.data, args.samples, args.seed))
    result = {"framing": {"landmarks": list(framing.landmarks), "box": list(framing.box), "size": framing.size},
              **stats}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.stamp:
        print(f"wrote {stamp(args.stamp, args.out, framing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
