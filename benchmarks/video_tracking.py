"""Faces followed around their last box (fer-batch's default for videos) against the whole frame
searched in every frame (``--full-detect-every 1``): how many of the reference's (frame, face) rows
are found, how well the boxes agree, whether the emotion is the same, how soon an entering face is
found, and where each way spends its time (decode, detect, crop, model, write), per video.

    python benchmarks/video_tracking.py [--model fast] [--long /work/exp/h6/long.mp4] [--json PATH]

``--make-long PATH`` first composes a long test video (faces cut from the shared photos moving over
a background, entering and leaving, with scene cuts) and adds it to the videos measured.
"""
from __future__ import annotations

import argparse
import csv
import io
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from common import SHARED_DATA, machine_info, markdown_table, print_report

from fer_export.batch.config import WorkConfig
from fer_export.batch.follow import Follower, video_rate
from fer_export.batch.models import open_models
from fer_export.batch.results import make_row
from fer_export.batch.sources import FrameSampler, iter_frames
from fer_export.batch.tracking import IouTracker, iou
from fer_export.cpu import describe

#: A reference face counts as found when a followed face overlaps it by at least this (IoU).
FOUND_IOU = 0.5
#: Boxes agree at this overlap (IoU) or more.
BOX_IOU = 0.8
STAGES = ("decode", "detect", "crop", "model", "write")


def run_video(path: Path, clf, detector, sampler: FrameSampler = FrameSampler(), limit: int | None = None) -> dict:
    """One pass over a video as fer-batch makes it: per frame its faces (boxes) and emotions (argmax),
    the seconds each stage took, and how many frames searched the whole frame."""
    follow = Follower(detector, sampler, video_rate(path))
    times, frames, out = defaultdict(float), [], io.StringIO()
    writer = csv.writer(out)
    t0 = time.perf_counter()
    for n, (i, t, img) in enumerate(iter_frames(path, sampler)):
        if limit is not None and n >= limit:
            break
        t1 = time.perf_counter()
        faces = follow.faces(i, img)
        t2 = time.perf_counter()
        prepared = detector.framer.crops(img, faces).prepared(clf) if faces else None
        t3 = time.perf_counter()
        probs = clf.predict_prepared(prepared.crops) if faces else np.zeros((0, len(clf.labels)))
        t4 = time.perf_counter()
        writer.writerows(make_row(path.name, "video", clf.labels, frame=i, t=t, face=j, box=f.box, probs=p)
                         for j, (f, p) in enumerate(zip(faces, probs.tolist())))
        t5 = time.perf_counter()
        for stage, a, b in zip(STAGES, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5)):
            times[stage] += b - a
        frames.append(([f.box for f in faces], probs.argmax(1).tolist() if len(probs) else []))
        t0 = time.perf_counter()
    return {"frames": frames, "times": dict(times), "full_searches": follow.full, "n": len(frames)}


def agreement(reference: list, followed: list, every: int) -> dict:
    """How the followed pass's faces agree with the reference's, row by row (each reference face matched
    to the followed face of its frame that overlaps it most), and how many frames an entering face
    (a new track of the reference) waited to be found."""
    rows = found = boxes = same = extra = 0
    tracker, first_seen, waits = IouTracker(), {}, []
    for k, ((ref_boxes, ref_emotion), (boxes_f, emotion_f)) in enumerate(zip(reference, followed)):
        extra += max(0, len(boxes_f) - len(ref_boxes))
        for track, box, emotion in zip(tracker.update(ref_boxes), ref_boxes, ref_emotion):
            rows += 1
            overlap, j = max(((iou(box, b), j) for j, b in enumerate(boxes_f)), default=(0.0, -1))
            first_seen.setdefault(track, k)
            if overlap >= FOUND_IOU:
                found += 1
                boxes += overlap >= BOX_IOU
                same += emotion == emotion_f[j]
                if first_seen[track] is not None:
                    waits.append(k - first_seen[track])
                    first_seen[track] = None
    return {"rows": rows, "found": found / max(rows, 1), "box_iou_0.8": boxes / max(found, 1),
            "same_emotion": same / max(found, 1), "extra_rows": extra, "entering_tracks": len(waits),
            "longest_wait_frames": max(waits, default=0), "never_found_tracks": sum(v is not None for v in first_seen.values()),
            "every": every}


def compare(path: Path, model: str = "fast", every: int | None = None, limit: int | None = None,
            sampler: FrameSampler = FrameSampler()) -> dict:
    """Both passes over one video, their agreement and their stage times."""
    kw = {} if every is None else {"full_detect_every": every}
    clf, full = open_models(WorkConfig.build(model=model, full_detect_every=1))
    _, followed = open_models(WorkConfig.build(model=model, **kw))
    ref = run_video(path, clf, full, sampler, limit)
    fol = run_video(path, clf, followed, sampler, limit)
    return {"video": path.name, "frames": ref["n"], "full_searches": fol["full_searches"],
            "agreement": agreement(ref["frames"], fol["frames"], followed.settings.full_detect_every),
            "times_every_frame": ref["times"], "times_followed": fol["times"]}


def make_long_video(path: Path, photos: Path, frames: int = 3000, size=(640, 360), fps: float = 30.0,
                    seed: int = 0) -> Path:
    """A test video of ``frames`` frames: faces cut from the shared photos glide over a blurred
    background, entering and leaving through its edges, a few at a time; the background changes
    (a scene cut) every thousand frames."""
    from fer_export.batch.faces import open_detector

    rng, detector, W, H = np.random.default_rng(seed), open_detector(), *size
    cutouts, backgrounds = [], []
    for photo in sorted(photos.iterdir()):
        img = cv2.imread(str(photo))
        if img is None:
            continue
        backgrounds.append(cv2.GaussianBlur(cv2.resize(img, size), (0, 0), 8))
        for f in detector.detect(img)[:3]:
            m = int(0.3 * max(f.w, f.h))
            cut = img[max(0, f.y - m):f.y + f.h + m, max(0, f.x - m):f.x + f.w + m]
            if min(cut.shape[:2]) >= 40:
                cutouts.append(cut)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    walkers = []  # [cutout, x, y, dx, dy, frames left]
    for k in range(frames):
        if k % 150 == 0 or (len(walkers) < 2 and rng.random() < 0.02):
            cut = cutouts[rng.integers(len(cutouts))]
            side = int(rng.integers(70, 140))
            cut = cv2.resize(cut, (side, int(side * cut.shape[0] / cut.shape[1])))
            left = rng.random() < 0.5
            x = -cut.shape[1] if left else W
            walkers.append([cut, float(x), float(rng.integers(0, H - cut.shape[0])),
                            rng.uniform(0.8, 2.5) * (1 if left else -1), rng.uniform(-0.3, 0.3)])
        frame = backgrounds[(k // 1000) % len(backgrounds)].copy()
        for w in walkers:
            cut, x, y = w[0], int(w[1]), int(w[2])
            x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + cut.shape[1]), min(H, y + cut.shape[0])
            if x1 > x0 and y1 > y0:
                frame[y0:y1, x0:x1] = cut[y0 - y:y1 - y, x0 - x:x1 - x]
            w[1] += w[3]
            w[2] = float(np.clip(w[2] + w[4], 0, H - cut.shape[0]))
        walkers = [w for w in walkers if -w[0].shape[1] <= w[1] <= W][:4]
        out.write(frame)
    out.release()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fast", help="bundled model name or ONNX file")
    parser.add_argument("--every", type=int, default=10, help="--full-detect-every of the followed run (default: 10)")
    parser.add_argument("--videos", type=Path, nargs="*", default=None,
                        help="videos to measure [default: the shared videos]")
    parser.add_argument("--make-long", type=Path, default=None, help="compose a long test video here first")
    parser.add_argument("--long-frames", type=int, default=3000)
    parser.add_argument("--limit", type=int, default=None, help="frames per video at most")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "video_tracking.json")
    args = parser.parse_args()
    machine = machine_info()
    videos = args.videos if args.videos is not None else sorted((SHARED_DATA / "videos").iterdir())
    if args.make_long:
        videos = [*videos, make_long_video(args.make_long, SHARED_DATA / "photos", args.long_frames)]
    results = [compare(v, args.model, args.every, args.limit) for v in videos]
    rows = []
    for r in results:
        a, tf, tr = r["agreement"], r["times_followed"], r["times_every_frame"]
        rows.append([r["video"], r["frames"], a["rows"], f"{a['found']:.4f}", f"{a['box_iou_0.8']:.4f}",
                     f"{a['same_emotion']:.4f}", a["extra_rows"], f"{a['longest_wait_frames']}/{a['every']}",
                     r["full_searches"], f"{sum(tr.values()):.2f}", f"{sum(tf.values()):.2f}",
                     " ".join(f"{tr[s]:.2f}" for s in STAGES), " ".join(f"{tf[s]:.2f}" for s in STAGES)])
    table = markdown_table(["video", "frames", "ref rows", "found", "IoU>=0.8", "same emotion", "extra rows",
                            "entering wait/K", "full searches", "every frame s", "followed s",
                            "every frame: " + " ".join(STAGES), "followed: " + " ".join(STAGES)], rows)
    print_report(machine, table, args.json, {"machine": machine, "cpu": describe(), "model": args.model,
                                             "results": results},
                 note=f"CPU: {describe()}; model {args.model}; one thread per stage, stages timed in turn")


if __name__ == "__main__":
    main()
