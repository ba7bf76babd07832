"""The face detectors fer-batch offers, timed alone on the same pictures: ms per picture and faces found.

    python benchmarks/detectors.py [VIDEO_OR_FOLDER ...] [--frames 100] [--threads 1 2] [--repeat 3] [--json out.json]

Rows: YuNet on onnxruntime (fer-batch's default), the same YuNet file through OpenCV's
``cv2.FaceDetectorYN`` (what fer-batch used before, and still uses for YuNet files without the
2023+ outputs), and the Haar cascade (``--detector haar``, as ``fer`` runs it). Each runs at the
default detection size (``--det-size 640``) with OpenCV limited to ``--threads`` threads; YuNet on
onnxruntime always uses one intra-op thread (fer-batch's worker threads are its parallelism). The
default input is the first ``--frames`` frames of the shared ``fer_woman2.mp4`` and every shared photo.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2

from common import (Parser, check_exists, check_output_file, description, machine_info, markdown_table, positive_int,
                    print_report)
from common import SHARED_DATA
from record import command_line

DATA = SHARED_DATA


def load_pictures(inputs: list[Path], frames: int) -> dict[str, list]:
    """Input name -> decoded BGR pictures (the first ``frames`` frames of a video; a folder's images)."""
    sets = {}
    for path in inputs:
        if path.is_dir():
            pics = [cv2.imread(str(p)) for p in sorted(path.iterdir()) if p.is_file()]
            sets[path.name + "/"] = [p for p in pics if p is not None]
        else:
            cap = cv2.VideoCapture(str(path))
            pics = [cap.read()[1] for _ in range(frames)]
            sets[path.name] = [p for p in pics if p is not None]
    return {k: v for k, v in sets.items() if v}


def detectors():
    from fer_export.batch.faces import BUNDLED_YUNET, HaarDetector, YuNetDetector

    return {"yunet (onnxruntime)": lambda: YuNetDetector(BUNDLED_YUNET, 0.7, backend="onnxruntime"),
            "yunet (opencv)": lambda: YuNetDetector(BUNDLED_YUNET, 0.7, backend="opencv"),
            "haar": HaarDetector}


def main(argv=None) -> int:
    ap = Parser(description=description(__doc__))
    ap.add_argument("inputs", nargs="*", type=Path,
                    default=[DATA / "videos" / "fer_woman2.mp4", DATA / "photos"])
    ap.add_argument("--frames", type=positive_int, default=100, help="frames taken from each video")
    ap.add_argument("--threads", type=positive_int, nargs="+", default=[1, 2], help="OpenCV thread counts to run")
    ap.add_argument("--repeat", type=positive_int, default=3, help="passes per row, best of")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    for path in args.inputs:
        check_exists("VIDEO_OR_FOLDER", path)
    check_output_file("--json", args.json, [("VIDEO_OR_FOLDER", p) for p in args.inputs])
    machine = machine_info()
    sets = load_pictures(args.inputs, args.frames)
    if not sets:
        raise SystemExit(f"no pictures in {[str(p) for p in args.inputs]}")
    rows, result = [], {"command": command_line("detectors.py", argv), "machine": machine, "runs": []}
    for threads in args.threads:
        cv2.setNumThreads(threads)
        for name, make in detectors().items():
            detector = make()
            for label, pics in sets.items():
                best = None
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    found = sum(len(detector.detect(p)) for p in pics)
                    best = min(best or 1e9, time.perf_counter() - t0)
                ms = 1000 * best / len(pics)
                result["runs"].append({"detector": name, "opencv_threads": threads, "input": label,
                                       "pictures": len(pics), "faces": found, "ms_per_picture": round(ms, 2)})
                rows.append([name, threads, label, len(pics), found, round(ms, 2), round(1000 / ms, 1)])
    print_report(machine, markdown_table(["detector", "opencv threads", "input", "pictures", "faces", "ms/picture",
                                          "pictures/s"], rows), args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
