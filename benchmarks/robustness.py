"""Accuracy under image degradation: the same labelled face crops, as they are and degraded the ways
faces in real pictures and video frames differ from FER2013's crops (blur, lower resolution, JPEG).

    python benchmarks/robustness.py [--model accurate fast M.onnx ...] [--data DIR] [--limit-per-class N]
                                    [--json out.json]

``--data`` is a labelled folder in FER2013's Kaggle layout (``<emotion>/*.jpg``; default PublicTest).
Each crop is degraded in uint8 before the model's own preprocessing (read from the model file):

- ``blur S``: Gaussian blur of standard deviation S px (of the 48 px crop);
- ``N px``: area-averaged down to N x N, then bilinear back up to the crop's size (a face found that
  small in a picture or frame);
- ``jpeg Q``: re-encoded as JPEG at quality Q.

Prints accuracy per model and degradation and the drop from the clean crops, and writes them with
the machine to ``--json``. Runs on the CPU with onnxruntime; nothing is timed.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Parser, check_model, description, machine_info, markdown_table, print_report  # noqa: E402
from common import SHARED_DATA  # noqa: E402
from record import checked_model_set, command_line, labelled, model_set_options, portable  # noqa: E402

DATA = SHARED_DATA / "fer2013" / "val"


def blur(sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda img: cv2.GaussianBlur(img, (0, 0), sigma)


def lower_resolution(side: int) -> Callable[[np.ndarray], np.ndarray]:
    def degrade(img: np.ndarray) -> np.ndarray:
        h, w = img.shape
        small = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return degrade


def jpeg(quality: int) -> Callable[[np.ndarray], np.ndarray]:
    def degrade(img: np.ndarray) -> np.ndarray:
        _, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    return degrade


DEGRADATIONS: dict[str, Callable[[np.ndarray], np.ndarray] | None] = {
    "clean": None, "blur 0.6": blur(0.6), "blur 1.0": blur(1.0), "32 px": lower_resolution(32),
    "24 px": lower_resolution(24), "jpeg 30": jpeg(30),
}


def accuracy(classifier, images: list[np.ndarray], y: np.ndarray) -> float:
    return float(np.mean(classifier.predict(images).argmax(1) == y))


def measure(models: list[str], data: Path, limit_per_class: int | None = None) -> dict:
    from fer_export.folders import labelled_images
    from fer_export.preprocess import read_gray
    from fer_export.runtime import EmotionClassifier, resolve_model

    rows, images, labels = [], None, None
    for entry in models:
        name, model = labelled(entry)
        path = resolve_model(model, "cpu")
        classifier = EmotionClassifier(path, provider="cpu")
        if labels is None:
            labels = classifier.labels
            items = labelled_images(data, labels, limit_per_class)
            if not items:
                raise SystemExit(f"{data}: no labelled images (<emotion>/*.jpg); pass --data")
            images = [read_gray(p) for p, _ in items]
            y = np.array([label for _, label in items])
        elif classifier.labels != labels:
            raise SystemExit(f"{path}: its labels {classifier.labels} differ from the first model's {labels}")
        row = {"model": name, "file": path.name}
        for degradation, fn in DEGRADATIONS.items():
            row[degradation] = accuracy(classifier, images if fn is None else [fn(i) for i in images], y)
        rows.append(row)
        print(f"{name}: " + ", ".join(f"{k} {row[k]:.2%}" for k in DEGRADATIONS), file=sys.stderr, flush=True)
    return {"data": portable(str(data)), "images": len(images), "degradations": list(DEGRADATIONS), "models": rows}


def table(result: dict) -> str:
    names = result["degradations"]
    headers = ["model", *(f"{n} %" if n == "clean" else f"{n} % (drop)" for n in names)]
    body = []
    for r in result["models"]:
        cells = [f"{100 * r['clean']:.2f}"]
        cells += [f"{100 * r[n]:.2f} ({100 * (r[n] - r['clean']):+.2f})" for n in names[1:]]
        body.append([r["model"], *cells])
    return markdown_table(headers, body)


def main(argv=None) -> int:
    ap = Parser(description=description(__doc__))
    model_set_options(ap, ["accurate", "fast"], "bundled model names (accurate, fast: the files the CPU runs) "
                                                "or ONNX files", DATA)
    args = ap.parse_args(argv)
    checked_model_set(args, lambda name: check_model("--model", name))
    machine = machine_info()
    result = measure(args.model, args.data, args.limit_per_class)
    result |= {"command": command_line("robustness.py", argv), "machine": machine}
    print_report(machine, table(result), args.json, result,
                 note=f"\n{result['images']} crops of {result['data']}: accuracy as they are and degraded "
                      f"(drop in points from clean); nothing is timed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
