"""fer-batch on one video (or a folder of face crops) at default settings, per detector: frames/s (or
faces/s) as a user sees them.

    python benchmarks/video_fps.py [VIDEO | CROPS_FOLDER] [--detectors yunet haar] [--models accurate fast]
                                   [--repeat 3] [--fer-python fer-venv/bin/python | --fer-fps N] [--json out.json]

Runs ``fer-batch VIDEO --out TMP.csv --overwrite --detector D`` as its own process, ``--repeat``
times per detector (alternating), and keeps the best: other work on the machine only ever slows a
run down. Two rates, each compared like for like with fer's: ``whole process`` is frames over the
process's wall time (starting Python, importing, loading the models: what a user waits for), ``in
run`` is frames over the time fer-batch reports for its run (from loading the models to the last
row written; fer's: ``Video.analyze`` alone, after TensorFlow is imported and ``FER()`` is built, so
the in-run ratio still favours fer). ``cpu ms/frame`` (user + system time of the process over
frames) is the steadier number on a shared machine: it counts the work done, not the waiting for a core. ``--fer-python``:
an interpreter with the ``fer`` package (not a dependency; install it in its own venv, see
``peer_fer.py``): fer's ``Video.analyze`` on the same video runs in turn with fer-batch, best of
``--repeat``, and every row gets its ratio to it (``--fer-fps``: a rate measured elsewhere instead).

Given a folder, every image in it is a frame: ``python benchmarks/video_fps.py ../shared/data/fer2013/val
--detectors none --models fast`` is the crop rate of issue #17, and fer's side is ``peer_fer.py crops``
on all of the folder's images (its ``detect_emotions`` loop on each crop whole; in run: that loop, after
TensorFlow is imported and ``FER()`` is built).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (Parser, check_exists, check_output_file, description, machine_info, markdown_table,
                    positive_float, positive_int, print_report, refuse)
from common import SHARED_DATA
from record import command_line, portable

DATA = SHARED_DATA


def fer_batch_command(video: Path, out: Path, detector: str, extra=()) -> list[str]:
    return [sys.executable, "-m", "fer_export.cli.batch", str(video), "--out", str(out), "--overwrite",
            "--no-progress", "--detector", detector, *extra]


def timed(command: list[str]) -> dict:
    """Run ``command``; its wall seconds and CPU seconds (user + system of the child)."""
    before = os.times()
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = os.times()
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {"wall_s": wall, "cpu_s": cpu, "log": proc.stderr}


def frames_in(results: Path) -> int:
    """Video frames in the results, or images (a folder's)."""
    from fer_export.batch.results import read_results

    df = read_results(results)
    return int(df["frame"].nunique()) if (df["kind"] == "video").any() else int(df["source"].nunique())


def run_seconds(log: str) -> float:
    """The seconds fer-batch reports for its run (``N images/frames, ... faces in 12.3 s (R frames/s)``),
    from its rate, which has more digits than the seconds."""
    found = re.search(r"(\d+) images/frames, .* faces in ([0-9.]+) s \(([0-9.]+) frames/s\)", log)
    if not found:
        raise SystemExit(f"no run time in fer-batch's output:\n{log[-2000:]}")
    frames, seconds, rate = int(found.group(1)), float(found.group(2)), float(found.group(3))
    return frames / rate if rate > 0 else seconds


def fer_command(python: str, path: Path) -> list[str]:
    what = ["crops", str(path), "--limit", "0"] if path.is_dir() else ["video", str(path)]
    return [python, str(Path(__file__).with_name("peer_fer.py")), *what, "--repeat", "1"]


def main(argv=None) -> int:
    ap = Parser(description=description(__doc__))
    ap.add_argument("video", type=Path, nargs="?", default=DATA / "videos" / "fer_woman2.mp4",
                    help="a video, or a folder of face crops (each image a frame)")
    ap.add_argument("--detectors", nargs="+", default=["yunet", "haar"], choices=["yunet", "haar", "none"])
    ap.add_argument("--models", nargs="+", default=[None], metavar="accurate|fast|PATH",
                    help="fer-batch --model values to run (default: fer-batch's default)")
    ap.add_argument("--repeat", type=positive_int, default=3, help="runs per configuration, best of")
    ap.add_argument("--fer-python", help="a Python interpreter with the `fer` package: its Video.analyze on the same "
                                         "video is timed in turn with the runs above (benchmarks/peer_fer.py)")
    ap.add_argument("--fer-fps", type=positive_float, help="or: fer's frames/s measured elsewhere, for the ratio")
    ap.add_argument("--json", type=Path, help="write the result here as JSON")
    args = ap.parse_args(argv)
    check_exists("VIDEO", args.video)
    if args.fer_python and not shutil.which(args.fer_python):
        refuse(f"--fer-python {args.fer_python}: no such interpreter; give the path of a Python that has `fer`")
    models = [("--models", m if m not in ("accurate", "fast") else None) for m in args.models if m]
    check_output_file("--json", args.json, [("VIDEO", args.video), *models])
    machine = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="fer-video-fps-"))
    configs = [(m, d) for m in args.models for d in args.detectors]
    runs: dict[tuple, list[dict]] = {c: [] for c in configs}
    fer_fps, fer_whole = [], []
    for _ in range(args.repeat):  # alternate configurations: a burst of load elsewhere hits them all
        for m, d in configs:
            out = tmp / f"{d}.csv"
            runs[m, d].append(timed(fer_batch_command(args.video, out, d, ("--model", m) if m else ())))
            runs[m, d][-1]["frames"] = frames_in(out)
            runs[m, d][-1]["run_s"] = run_seconds(runs[m, d][-1]["log"])
        if args.fer_python:
            t0 = time.perf_counter()
            proc = subprocess.run(fer_command(args.fer_python, args.video), capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode:
                raise SystemExit(f"fer failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
            fer = json.loads(proc.stdout.strip().splitlines()[-1])
            fer_fps.append(fer["fps"] if "fps" in fer else fer["faces_per_s"])
            fer_whole.append(fer.get("frames", fer.get("faces")) / wall)
    reference = max(fer_fps) if fer_fps else args.fer_fps
    reference_whole = max(fer_whole) if fer_whole else None
    rows = []
    result = {"video": portable(str(args.video)), "repeat": args.repeat, "fer_fps": reference, "fer_runs": fer_fps,
              "fer_whole_process_fps": reference_whole, "runs": []}
    ratio = lambda a, b: round(a / b, 2) if b else None  # noqa: E731
    for (m, d), rs in runs.items():
        frames = rs[0]["frames"]
        fps = frames / min(r["wall_s"] for r in rs)
        in_run = frames / min(r["run_s"] for r in rs)
        cpu_ms = 1000 * min(r["cpu_s"] for r in rs) / frames
        result["runs"].append({"model": m or "default", "detector": d, "frames": frames,
                               "best_frames_per_s": round(fps, 1), "best_in_run_frames_per_s": round(in_run, 1),
                               "all_frames_per_s": [round(frames / r["wall_s"], 1) for r in rs],
                               "cpu_ms_per_frame": round(cpu_ms, 1)})
        rows.append([m or "default", d, frames, round(fps, 1), round(in_run, 1), round(cpu_ms, 1),
                     ratio(fps, reference_whole), ratio(in_run, reference)])
    if fer_fps:
        name, detector = ("fer (tflite)", "none") if args.video.is_dir() else ("fer (Haar, tflite)", "haar")
        rows.append([name, detector, None, round(reference_whole, 1), round(reference, 1), None, 1.0, 1.0])
    result |= {"command": command_line("video_fps.py", argv), "machine": machine}
    print_report(machine, markdown_table(["model", "detector", "frames", "frames/s whole process", "frames/s in run",
                                          "cpu ms/frame", "x fer whole", "x fer in run"], rows), args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
