"""The peer package ``fer`` (its Haar detector and tflite mini-Xception), measured the way fer-export's
own benchmarks measure fer-batch, for the ratios they print. Run it with an interpreter that has ``fer``;
it needs neither fer-export installed nor its dependencies (fer needs TensorFlow, which fer-export does not):

    python -m venv fer-venv && fer-venv/bin/pip install tensorflow-cpu 'opencv-contrib-python<5' pillow pandas tqdm \\
        && fer-venv/bin/pip install --no-deps fer==25.10.3
    fer-venv/bin/python benchmarks/peer_fer.py video VIDEO [--repeat 3] [--json out.json]
    fer-venv/bin/python benchmarks/peer_fer.py crops FOLDER [--limit 2000] [--repeat 3] [--json out.json]

``video``: ``fer.Video(VIDEO).analyze(FER(), frequency=1)`` with nothing saved or shown (``cv2.waitKey``,
which its loop calls even with ``display=False``, is made a no-op): frames/s over the call's wall time,
best of ``--repeat``. ``crops``: the face crops under FOLDER (``<emotion>/*.jpg`` or flat), each read
and classified whole with ``FER(offsets=(0, 0)).detect_emotions(image, face_rectangles=[the whole
image])`` (fer's default offsets would pad the crop with a flat border before classifying it), as
``fer-batch --detector none`` does: faces/s over wall time, best of ``--repeat``; the classifier alone
on the same faces already read and resized (``model_faces_per_s``, as ``run.py`` times a model); and,
for a labelled folder, top-1 accuracy. Prints one JSON object; ``--json`` also writes it, with the
machine and the command, to a file (``benchmarks/results/peer_fer.json``). It imports only the
standard-library modules of fer-export that name the machine, from the checkout it runs in.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: fer_export.cpu names the machine
from common import (Parser, check_output_file, description, machine_info, nonnegative_int,  # noqa: E402
                    positive_int, write_json)
from record import command_line, portable  # noqa: E402

EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def _fer():
    """fer's ``FER`` and ``Video`` classes, and cv2 with ``waitKey`` made a no-op."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import cv2

    cv2.waitKey = lambda *a, **k: -1  # Video.analyze calls it on every frame, display or not
    from fer.classes import Video
    from fer.fer import FER

    return FER, Video, cv2


def video(path: Path, repeat: int) -> dict:
    FER, Video, cv2 = _fer()
    detector = FER()
    frames = int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT))
    best = None
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as outdir:  # fer creates it; nothing is saved there
            t0 = time.perf_counter()
            result = Video(str(path), outdir=outdir).analyze(
                detector, display=False, frequency=1, save_frames=False, save_video=False, annotate_frames=False,
                zip_images=False, output="pandas")
            wall = time.perf_counter() - t0
        best = wall if best is None else min(best, wall)
    return {"tool": f"fer {metadata.version('fer')}", "video": str(path),
            "frames": frames, "rows": int(len(result)), "wall_s": round(best, 3), "fps": round(frames / best, 1)}


def crops(folder: Path, limit: int, repeat: int) -> dict:
    FER, _, cv2 = _fer()
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTS)
    if limit:
        step = max(1, len(files) // limit)
        files = files[::step][:limit]
    if not files:
        raise SystemExit(f"{folder}: no images")
    detector = FER(offsets=(0, 0))  # the crop is the face: no margin of padding around it
    best, predictions = None, []
    for _ in range(repeat):
        predictions = []
        t0 = time.perf_counter()
        for path in files:
            image = cv2.imread(str(path))
            h, w = image.shape[:2]
            found = detector.detect_emotions(image, face_rectangles=[(0, 0, w, h)])
            predictions.append(max(found[0]["emotions"].items(), key=lambda kv: kv[1])[0] if found else None)
        wall = time.perf_counter() - t0
        best = wall if best is None else min(best, wall)
    faces = np.stack([cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), (64, 64)) for p in files])
    faces = (faces.astype(np.float32) / 255.0 - 0.5) * 2.0  # fer's own preprocessing of a face
    model = None
    for _ in range(repeat):  # the classifier alone, on prepared faces, as fer-export's run.py times a model
        t0 = time.perf_counter()
        detector._classify_emotions(faces)
        wall = time.perf_counter() - t0
        model = wall if model is None else min(model, wall)
    labels = [p.parent.name for p in files]
    labelled = all(label in FER._get_labels().values() for label in labels)
    return {"tool": "fer", "folder": str(folder), "faces": len(files), "wall_s": round(best, 3),
            "faces_per_s": round(len(files) / best, 1), "model_faces_per_s": round(len(files) / model, 1),
            "accuracy": round(sum(p == t for p, t in zip(predictions, labels)) / len(files), 4) if labelled else None}


def main(argv=None) -> int:
    ap = Parser(description=description(__doc__))
    sub = ap.add_subparsers(dest="what", required=True)
    v = sub.add_parser("video")
    v.add_argument("path", type=Path)
    c = sub.add_parser("crops")
    c.add_argument("path", type=Path)
    c.add_argument("--limit", type=nonnegative_int, default=2000,
                   help="at most this many crops, evenly spread (0: all)")
    for p in (v, c):
        p.add_argument("--repeat", type=positive_int, default=3, help="runs, best of")
        p.add_argument("--json", type=Path, help="also write the result, with the machine, here")
    args = ap.parse_args(argv)
    check_output_file("--json", args.json, [("PATH", args.path)])
    machine = machine_info()
    result = video(args.path, args.repeat) if args.what == "video" else crops(args.path, args.limit, args.repeat)
    result["video" if args.what == "video" else "folder"] = portable(str(args.path))
    print(json.dumps(result))
    if args.json:
        write_json(args.json, result | {"command": command_line("peer_fer.py", argv), "machine": machine})
    return 0


if __name__ == "__main__":
    sys.exit(main())
