"""Faces in pictures, end to end: labelled face crops placed in larger pictures, found by each detector
and classified by fer-batch, beside the accuracy of the same crops classified directly.

    python benchmarks/pictures.py [--data DIR] [--per-class 40] [--model M.onnx] [--detectors yunet haar]
                                  [--seed 0] [--out DIR] [--photos DIR] [--feather 0]

``--data`` is a labelled folder in FER2013's Kaggle layout (``<emotion>/*.jpg``). Each of ``--per-class``
faces per label (a seeded sample) is upscaled to a random side of 96-240 px (cubic) and placed at a
random position on a 480x360 background of each kind (``--feather F``: its border fades into the
background over F of its side; default 0, the crop as it is, with its own surroundings):

- ``noise``: smooth blurred noise (low-frequency noise upscaled, plus a little grain);
- ``photo``: real photo content without faces: windows of ``--photos`` far from every face YuNet or
  Haar finds there (box grown by 0.3 of its side on every side), at two scales.

Pictures are gray, like the faces. Each detector runs through :func:`fer_export.batch.run_batch` on
every picture, once per crop mode: ``box`` (a square around the detector's box) and, for a model whose
spec has a framing, ``framed`` (each face cropped as the training crops framed faces: ``--crop auto``). Per picture, the
face taken is the highest-scoring detection (YuNet) or the largest (Haar); it counts as *found* when its
centre lies inside the placed face. Columns: ``found`` (pictures whose taken face is the placed one),
``acc found`` (accuracy on those), ``end-to-end`` (correct / all pictures: a picture whose face was not
found counts as wrong); then, classified whole (``--detector none``), the same faces as ``placed``
squares cut from the pictures at exactly where they were placed (on the found ones) and as the original
``crop`` (on the found ones, and on all). ``acc found`` against ``placed acc found`` is what the
detector's framing costs; ``placed`` against ``crop`` is what placing costs (resampling, a feathered
border); the gap between ``found`` and the total is what the detector misses.

Writes the pictures, the results CSVs and ``pictures.json`` (with every picture's label, source crop
and box) under ``--out`` (default: a new temp folder).
"""
from __future__ import annotations

import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (Parser, check_exists, check_model, check_output_dir, describe_machine, description,  # noqa: E402
                    machine_info, markdown_table, nonnegative_int, positive_int, write_json)
from common import SHARED_DATA  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# the pictures' size, the faces' sides and the noise background are those of fer-train's framed views
from training.framed import FACE_SIDES, PICTURE, noise_background  # noqa: E402

DATA = SHARED_DATA
BACKGROUNDS = ("noise", "photo")
FEATHER = 0.0  # default fraction of the face's side over which its border fades into the background
PHOTO_LONG_SIDES = (1280, 1920)  # photos are scaled to these long sides before windows are cut
KEEP_OUT = 0.3  # a window stays this many face sides away from every face found in its photo


@dataclass(frozen=True)
class Picture:
    name: str  # file name under pictures/
    label: str
    crop: str  # the original face crop's path
    background: str  # one of BACKGROUNDS
    box: tuple[int, int, int, int]  # where the face was placed: x, y, side, side


# ---- building the pictures -----------------------------------------------------------------------

def sample_faces(root: Path, per_class: int, rng: np.random.Generator) -> list[tuple[Path, str]]:
    """``per_class`` face crops of each label folder under ``root`` (all of a smaller class), sorted."""
    faces = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.jpg")) + sorted(folder.glob("*.png"))
        pick = rng.choice(len(files), size=min(per_class, len(files)), replace=False) if files else []
        faces += [(files[i], folder.name) for i in sorted(pick)]
    return faces


def face_free_windows(photos: Path, per_photo: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Gray windows of PICTURE's size cut from the photos in ``photos`` (at most ``per_photo`` per photo
    and scale), each KEEP_OUT face sides away from every face YuNet (at 640 and 1280 px) or Haar finds."""
    from fer_export.batch.faces import open_detector
    from fer_export.batch.settings import DetectionSettings

    detectors = [open_detector(DetectionSettings(detector="yunet", det_sizes=(640, 1280), det_threshold=0.5, min_face=0)),
                 open_detector(DetectionSettings(detector="haar", min_face=0))]
    h, w = PICTURE
    windows = []
    for path in sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        image = cv2.imread(str(path))
        if image is None:
            continue
        faces = [f for d in detectors for f in d.detect(image)]
        for long_side in PHOTO_LONG_SIDES:
            s = long_side / max(image.shape[:2])
            small = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
            H, W = small.shape[:2]
            if H < h or W < w:
                continue
            m = KEEP_OUT
            keep_out = [(s * (f.x - m * f.w), s * (f.y - m * f.h), s * (f.x + (1 + m) * f.w), s * (f.y + (1 + m) * f.h))
                        for f in faces]
            got = 0
            for _ in range(200):
                x, y = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
                if all(x + w <= x0 or x >= x1 or y + h <= y0 or y >= y1 for x0, y0, x1, y1 in keep_out):
                    windows.append(cv2.cvtColor(small[y:y + h, x:x + w], cv2.COLOR_BGR2GRAY))
                    got += 1
                    if got == per_photo:
                        break
    return windows


def place(face: np.ndarray, background: np.ndarray, rng: np.random.Generator,
          feather: float = FEATHER) -> tuple[np.ndarray, tuple]:
    """``face`` (gray) upscaled to a random side and blended into a copy of ``background``, its border
    faded over ``feather`` of its side. Returns the picture and the face's box (x, y, side, side)."""
    side = int(rng.integers(FACE_SIDES[0], FACE_SIDES[1] + 1))
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    ramp = np.clip((np.minimum(np.arange(side), np.arange(side)[::-1]) + 1) / max(1.0, feather * side), 0, 1)
    alpha = np.minimum.outer(ramp, ramp)
    H, W = background.shape
    x, y = int(rng.integers(0, W - side + 1)), int(rng.integers(0, H - side + 1))
    out = background.astype(np.float32)
    out[y:y + side, x:x + side] = alpha * big + (1 - alpha) * out[y:y + side, x:x + side]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), (x, y, side, side)


def build_pictures(faces: list[tuple[Path, str]], photos: Path | None, folder: Path,
                   rng: np.random.Generator, feather: float = FEATHER) -> list[Picture]:
    """Every face on one background of each kind, written as PNG under ``folder``."""
    from fer_export.preprocess import read_gray

    windows = face_free_windows(photos, 4, rng) if photos is not None else []
    kinds = BACKGROUNDS if windows else BACKGROUNDS[:1]
    if not windows:
        print(f"warning: no face-free photo windows in {photos}; only the noise background is used", file=sys.stderr)
    folder.mkdir(parents=True, exist_ok=True)
    pictures = []
    for k, (crop, label) in enumerate(faces):
        face = read_gray(crop)
        for kind in kinds:
            bg = noise_background(rng) if kind == "noise" else windows[int(rng.integers(len(windows)))]
            picture, box = place(face, bg, rng, feather)
            name = f"{kind}_{k:05d}_{label}.png"
            cv2.imwrite(str(folder / name), picture)
            pictures.append(Picture(name, label, str(crop), kind, box))
    return pictures


# ---- running and scoring -------------------------------------------------------------------------

def run(inputs: list[Path], out: Path, **options) -> dict[str, list[dict]]:
    """fer-batch on ``inputs``; per file name (they are unique here), its face rows (empty: no face)."""
    from fer_export.batch import BatchConfig, run_batch
    from fer_export.batch.results import read_results

    report = run_batch(BatchConfig.build(inputs, out, overwrite=True, progress=False, **options))
    if report.return_code:
        raise SystemExit(f"fer-batch failed on {report.failed[:3]}")
    df = read_results(out)
    rows: dict[str, list[dict]] = {Path(name).name: [] for name in df["source"].unique()}
    for r in df[df["status"] == "ok"].to_dict("records"):
        rows[Path(r["source"]).name].append(r)
    return rows


def taken(rows: list[dict]) -> dict | None:
    """The face a picture is judged by: the highest detector score, else (Haar) the largest box."""
    if not rows:
        return None
    return max(rows, key=lambda r: (_num(r.get("det_score")), _num(r["w"]) * _num(r["h"])))


def _num(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if f != f else f


def hits(face: dict | None, box: tuple) -> bool:
    """Whether a detection's centre lies inside the placed face."""
    if face is None:
        return False
    cx, cy = _num(face["x"]) + _num(face["w"]) / 2, _num(face["y"]) + _num(face["h"]) / 2
    x, y, w, h = box
    return x <= cx <= x + w and y <= cy <= y + h


def score(pictures: list[Picture], found_rows: dict[str, list[dict]], whole: dict[str, str]) -> dict:
    """One table row's numbers for these pictures; ``whole``: the emotion of each picture's placed
    square (key ``placed/NAME``) and original crop (``crop/NAME``) classified whole."""
    n = len(pictures)
    found = correct = placed_found = crop_found = crop_all = 0
    for p in pictures:
        face = taken(found_rows.get(p.name, []))
        crop_ok = whole[f"crop/{p.name}"] == p.label
        crop_all += crop_ok
        if hits(face, p.box):
            found += 1
            correct += face["emotion"] == p.label
            placed_found += whole[f"placed/{p.name}"] == p.label
            crop_found += crop_ok
    pct = lambda a, b: round(100 * a / b, 1) if b else None  # noqa: E731
    return {"pictures": n, "found": found, "found_pct": pct(found, n), "acc_found": pct(correct, found),
            "end_to_end": pct(correct, n), "placed_acc_found": pct(placed_found, found),
            "crop_acc_found": pct(crop_found, found), "crop_acc_all": pct(crop_all, n)}


def classify_whole(pictures: list[Picture], out: Path, **options) -> dict[str, str]:
    """Each picture's face classified whole (``--detector none``), as the square cut from the picture
    where it was placed (``placed/NAME``) and as its original crop (``crop/NAME``)."""
    for kind in ("placed", "crop"):
        (out / kind).mkdir(parents=True, exist_ok=True)
    for p in pictures:
        x, y, w, h = p.box
        square = cv2.imread(str(out / "pictures" / p.name), cv2.IMREAD_UNCHANGED)[y:y + h, x:x + w]
        cv2.imwrite(str(out / "placed" / p.name), square)
        (out / "crop" / (p.name + Path(p.crop).suffix)).write_bytes(Path(p.crop).read_bytes())
    rows = run([out / "placed", out / "crop"], out / "whole.csv", detector="none", **options)
    return {f"{kind}/{p.name}": rows[p.name + suffix][0]["emotion"]
            for p in pictures for kind, suffix in (("placed", ""), ("crop", Path(p.crop).suffix))}


#: Crop modes: the table's name -> CropSettings.crop. ``framed`` needs a model whose spec has a framing.
CROP_MODES = {"box": "box", "framed": "auto"}


def crop_modes(model: Path | None) -> list[str]:
    """The crop modes ``model`` supports: ``box``, and ``framed`` when its spec has a framing."""
    from fer_export.runtime import EmotionClassifier

    return ["box", "framed"] if EmotionClassifier(model, "cpu").spec.framing else ["box"]


def measure(data: Path, per_class: int, out: Path, model: Path | None = None, detectors=("yunet", "haar"),
            seed: int = 0, photos: Path | None = DATA / "photos", feather: float = FEATHER, crops=None,
            **detection) -> dict:
    """Build the pictures, run every detector and crop mode (``crops``: these of them), score; the
    JSON-ready result. ``detection``: other fer-batch settings for the detector runs (e.g. ``look_again``)."""
    rng = np.random.default_rng(seed)
    faces = sample_faces(data, per_class, rng)
    pictures = build_pictures(faces, photos, out / "pictures", rng, feather)
    common = {"model": model}
    whole = classify_whole(pictures, out, **common)
    rows = []
    for detector in detectors:
        for mode in [m for m in crop_modes(model) if crops is None or m in crops]:
            options = {k: v for k, v in detection.items() if k != "crop_spread" or mode != "box"}  # box: one crop
            found = run([out / "pictures"], out / f"{detector}_{mode}.csv", detector=detector,
                        crop=CROP_MODES[mode], **common, **options)
            for kind in sorted({p.background for p in pictures}) + ["all"]:
                subset = [p for p in pictures if kind in ("all", p.background)]
                rows.append({"detector": detector, "crop": mode, "background": kind,
                             **score(subset, found, whole)})
    return {"data": str(data), "per_class": per_class, "seed": seed, "faces": len(faces),
            "pictures": len(pictures), "model": str(model) if model else "bundled", "detection": detection,
            "rows": rows,
            "placement": {"picture_hw": PICTURE, "face_sides": FACE_SIDES, "feather": feather},
            "manifest": [asdict(p) for p in pictures]}


COLUMNS = [("detector", "detector"), ("crop", "crop"), ("background", "background"), ("pictures", "pictures"),
           ("found", "found"), ("found_pct", "found %"), ("acc_found", "acc found %"),
           ("end_to_end", "end-to-end %"), ("placed_acc_found", "placed acc found %"),
           ("crop_acc_found", "crop acc found %"), ("crop_acc_all", "crop acc all %")]


def table(result: dict) -> str:
    return markdown_table([title for _, title in COLUMNS], [[r[k] for k, _ in COLUMNS] for r in result["rows"]])


def main(argv=None) -> int:
    ap = Parser(description=description(__doc__))
    ap.add_argument("--data", type=Path, default=DATA / "fer2013" / "val", help="labelled folder: <emotion>/*.jpg")
    ap.add_argument("--per-class", type=positive_int, default=40, help="faces per label (all of a smaller class)")
    ap.add_argument("--model", metavar="accurate|fast|M.onnx",
                    help="a bundled model's name or an exported ONNX model (default: the bundled one)")
    ap.add_argument("--detectors", nargs="+", default=["yunet", "haar"], choices=["yunet", "haar"])
    ap.add_argument("--photos", type=Path,
                    help="photos to cut face-free backgrounds from (default: ../shared/data/photos; "
                         "where that is absent, the noise background only)")
    ap.add_argument("--seed", type=nonnegative_int, default=0)
    ap.add_argument("--feather", type=float, default=FEATHER,
                    help="fade each face's border into the background over this fraction of its side (default 0)")
    ap.add_argument("--crops", nargs="+", choices=list(CROP_MODES), help="crop modes to run (default: all the model supports)")
    ap.add_argument("--det-threshold", type=float, help="YuNet's score threshold (default: fer-batch's)")
    ap.add_argument("--look-again", type=float, help="fer-batch --look-again (default: fer-batch's)")
    ap.add_argument("--crop-spread", type=float, help="fer-batch --crop-spread (default: fer-batch's; 0 = one crop)")
    ap.add_argument("--out", type=Path, help="folder for pictures, CSVs and pictures.json (default: a new temp folder)")
    args = ap.parse_args(argv)
    check_exists("--data", args.data, folder=True)
    check_exists("--photos", args.photos, folder=True)  # given and missing: an error, not a quiet fallback
    photos = args.photos or (DATA / "photos" if (DATA / "photos").is_dir() else None)
    model = check_model("--model", args.model) if args.model else None
    check_output_dir("--out", args.out, [("--data", args.data), ("--photos", photos), ("--model", model)],
                     marker="pictures.json", own={"pictures", "placed", "crop", "pictures.json", "whole.csv",
                                                  *(f"{d}_{m}.csv" for d in ("yunet", "haar") for m in CROP_MODES)})
    detection = {k: v for k, v in (("det_threshold", args.det_threshold), ("look_again", args.look_again),
                                   ("crop_spread", args.crop_spread)) if v is not None}
    machine = machine_info()
    out = args.out or Path(tempfile.mkdtemp(prefix="fer-pictures-"))
    result = measure(args.data, args.per_class, out, model, tuple(args.detectors), args.seed, photos,
                     args.feather, args.crops, **detection)
    result["machine"] = machine
    print(f"Machine: {describe_machine(machine)}\n")
    print(table(result))
    path = write_json(out / "pictures.json", result)
    print(f"wrote {path} (pictures and results CSVs beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
