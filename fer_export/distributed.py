"""``fer-batch --dask local[:N]`` / ``--scheduler ADDRESS``: the batch runner on a Dask cluster (torch-free).

Work split. Images go to workers in partitions of :data:`IMAGES_PER_TASK` consecutive inputs.
Videos are split into frame ranges of :data:`FRAMES_PER_TASK` sampled frames; each range task
seeks to its first frame (OpenCV's FFmpeg backend seeks to the keyframe before it and decodes
forward) and decodes to its end. A task decodes, detects, crops and classifies, and returns per-frame
faces and probabilities; it writes nothing. Each worker loads the model and detector once and keeps
them (:func:`worker_models`, a per-process cache keyed by every setting that shapes them).

Seeking is not frame-exact in every container (a QuickTime file here lands frames late), so every
range also returns a digest of its first frame and of the frame just after its end, decoded
sequentially by the range before. Where the two disagree, the video's later ranges run again,
reaching their start by decoding every frame from the beginning (slower, always exact).

Tracking runs on the client: the IoU tracker is sequential, so once every range of a video is in,
the client feeds its frames' boxes through :class:`~fer_export.tracking.IouTracker` in frame order,
exactly as the local runner does. Track ids, timestamps and rows are therefore those of local mode;
probabilities differ only by batch composition (under 1e-5).

Only the client writes, through the same :class:`~fer_export.report.ResultsWriter`, and only once
all tasks of an input are in, in input order (rows: input order, then frame, then face). A worker
that dies mid-task is replaced and its tasks run again (Dask's ``allowed-failures``); results reach
the client once per task, so no row is lost or written twice, and ``--resume`` works as locally.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from .errors import FerExportError, InputError, require
from .faces import DET_SIZES, Face, open_detector
from .pipeline import (BatchConfig, commit_inputs, faces_in, input_error, input_rows, read_image, resolve_model,
                       start_report, write_extras)
from .report import BatchReport, ResultsWriter, columns
from .runtime import EmotionClassifier
from .sources import FrameSampler, Source, collect_sources, count_frames, decode_error, open_video
from .tracking import IouTracker

#: Consecutive image inputs per task.
IMAGES_PER_TASK = 32
#: Sampled video frames per task (a range spans FRAMES_PER_TASK x the sampling step of frames).
FRAMES_PER_TASK = 240
#: Dask re-runs a task that raised this many times (a worker that dies is covered by Dask's own
#: ``distributed.scheduler.allowed-failures``, 3 by default).
RETRIES = 2


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs to build its model and detector and to sample frames (hashable: a cache key)."""

    model: str | None  # as given; None = the bundled model of the worker's install
    provider: str
    batch_size: int
    threads: int | None  # onnxruntime intra-op threads; None = its default (all cores)
    detector: str
    yunet_model: str | None
    det_threshold: float
    det_sizes: tuple[int, ...] = DET_SIZES
    min_face: int = 20
    every_n: int = 1
    video_fps: float | None = None

    @classmethod
    def of(cls, cfg: BatchConfig, threads: int | None = None) -> "WorkerSettings":
        return cls(None if cfg.model is None else str(cfg.model), cfg.provider, cfg.batch_size, threads,
                   cfg.detector, None if cfg.yunet_model is None else str(cfg.yunet_model), cfg.det_threshold,
                   tuple(cfg.det_sizes), cfg.min_face, cfg.every_n, cfg.video_fps)


_MODELS: dict[WorkerSettings, tuple[EmotionClassifier, object]] = {}
_MODELS_LOCK = threading.Lock()


def worker_models(s: WorkerSettings) -> tuple[EmotionClassifier, object]:
    """The classifier and detector for ``s``, loaded once per worker process and kept."""
    with _MODELS_LOCK:
        if s not in _MODELS:
            clf = EmotionClassifier(resolve_model(s.model), s.provider, s.batch_size, s.threads)
            det = open_detector(s.detector, s.yunet_model, s.det_threshold, s.det_sizes, s.min_face)
            _MODELS[s] = clf, det
        return _MODELS[s]


def describe_worker(s: WorkerSettings) -> dict:
    """Load the model and detector on a worker (raising their errors there) and say what loaded."""
    clf, det = worker_models(s)
    return {"labels": list(clf.labels), "provider": clf.provider, "model": str(clf.path),
            "detector": det.name if det else "none", "detector_path": str(det.path) if det else ""}


# ---- tasks (run on workers) ------------------------------------------------------------------------

@dataclass
class FrameResult:
    """One image or sampled frame: its faces and their probabilities (tracks are set by the client)."""

    frame: int | None
    t: float | None
    faces: list[Face]
    probs: np.ndarray


@dataclass
class TaskResult:
    """What a task returns. For an image partition, one ``(frames, error)`` per image in ``inputs``;
    for a video range, one entry, plus where decoding got to and the digests used to check the seek."""

    inputs: list[tuple[list[FrameResult], str]]
    end: int = 0  # video: index of the frame after the last one grabbed
    count: int = 0  # video: frame count the container declares (0 = unknown)
    first: str | None = None  # video: digest of the range's first frame
    after: str | None = None  # video: digest of the frame after the range's end, if any
    times: dict[str, float] = field(default_factory=lambda: defaultdict(float))


def _digest(frame: np.ndarray) -> str:
    return hashlib.blake2b(frame.tobytes(), digest_size=16).hexdigest()


class _Classify:
    """Collects the crops of a task's frames and classifies them a full batch at a time."""

    def __init__(self, clf: EmotionClassifier, times: dict[str, float]):
        self.clf, self.times, self.waiting, self.crops = clf, times, [], []

    def add(self, frame: int | None, t: float | None, faces: list[Face], crops: list[np.ndarray], into: list) -> None:
        result = FrameResult(frame, t, faces, np.zeros((0, len(self.clf.labels)), np.float32))
        into.append(result)
        if faces:
            self.waiting.append(result)
            self.crops += crops
            if len(self.crops) >= self.clf.batch_size:
                self.flush()

    def flush(self) -> None:
        if not self.crops:
            return
        t0 = time.perf_counter()
        probs = self.clf.predict(self.crops)
        k = 0
        for r in self.waiting:
            r.probs, k = probs[k:k + len(r.faces)], k + len(r.faces)
        self.waiting, self.crops = [], []
        self.times["infer"] += time.perf_counter() - t0


def run_images(s: WorkerSettings, sources: list[Source]) -> TaskResult:
    """Task: detect and classify the faces of a partition of image inputs."""
    clf, detector = worker_models(s)
    out = TaskResult([])
    classify = _Classify(clf, out.times)
    for source in sources:
        frames, error = [], ""
        try:
            t0 = time.perf_counter()
            img, whole = read_image(source.path, detector)
            t1 = time.perf_counter()
            faces, crops = faces_in(img, None if whole else detector)
            out.times["decode"] += t1 - t0
            out.times["detect"] += time.perf_counter() - t1
            classify.add(None, None, faces, crops, frames)
        except Exception as exc:  # one bad input never kills the run
            error = input_error(source, exc)
        out.inputs.append((frames, error))
    classify.flush()
    return out


def run_video_range(s: WorkerSettings, source: Source, start: int, stop: int | None, seek: bool) -> TaskResult:
    """Task: frames ``start`` to ``stop`` (None = the end) of a video, reached by seeking or, with
    ``seek=False``, by decoding every frame before ``start``. Frames are sampled as in local mode."""
    clf, detector = worker_models(s)
    out = TaskResult([])
    frames, error = [], ""
    classify = _Classify(clf, out.times)
    i = start
    try:
        t0 = time.perf_counter()
        cap, fps, out.count = open_video(source.path)
        try:
            if start and seek:
                cap.set(cv2.CAP_PROP_POS_FRAMES, start)
                reached = True
            else:
                reached = all(cap.grab() for _ in range(start))  # False: the video ends before this range
            picks = FrameSampler(s.every_n, s.video_fps).picks(fps)
            for _ in range(start):
                next(picks)
            out.times["decode"] += time.perf_counter() - t0
            while reached and (stop is None or i < stop):
                t0 = time.perf_counter()
                if not cap.grab():
                    break
                if next(picks):
                    ok, img = cap.retrieve()
                    if not ok:
                        break
                    if i == start:
                        out.first = _digest(img)
                    t1 = time.perf_counter()
                    faces, crops = faces_in(img, detector)
                    out.times["decode"] += t1 - t0
                    out.times["detect"] += time.perf_counter() - t1
                    classify.add(i, i / fps if fps > 0 else 0.0, faces, crops, frames)
                i += 1
            if reached and stop is not None and i == stop and cap.grab():  # the next range's first frame
                ok, img = cap.retrieve()
                out.after = _digest(img) if ok else None
        finally:
            cap.release()
    except Exception as exc:  # the frames before a failure are kept, as in local mode
        error = input_error(source, exc)
    classify.flush()
    out.inputs.append((frames, error))
    out.end = i
    return out


# ---- the client ----------------------------------------------------------------------------------

def video_ranges(source: Source, sampler: FrameSampler,
                 per_task: int = FRAMES_PER_TASK) -> list[tuple[int, int | None]]:
    """``(start, stop)`` frame ranges of ``per_task`` sampled frames each; the last is open-ended so that
    a container that under-counts its frames still gets them all. One range where the count is unknown."""
    try:
        cap, fps, count = open_video(source.path)
        cap.release()
    except InputError:
        return [(0, None)]  # the worker will report the same error
    picks = sampler.picks(fps)
    sampled = [i for i in range(count) if next(picks)]
    starts = sampled[::per_task] or [0]
    return list(zip(starts, [*starts[1:], None]))


def used_parts(ranges: list[tuple[int, int | None]], parts: list[TaskResult]) -> list[TaskResult]:
    """The results up to the range in which the video ended or failed; later ranges lie past its end."""
    for k, ((_, stop), part) in enumerate(zip(ranges, parts)):
        if part.inputs[0][1] or stop is None or part.end < stop:
            return parts[:k + 1]
    return parts


def seams_agree(parts: list[TaskResult]) -> bool:
    """Whether every seeked range started on the frame that sequential decoding reaches there."""
    return all(prev.after == cur.first for prev, cur in zip(parts, parts[1:]))


def assemble_video(source: Source, parts: list[TaskResult]):
    """The frames ``(frame, t, faces, tracks, probs)`` of a video's used ranges in order, tracked, and
    its error (a failure inside a range, or decoding that stopped before the declared frame count)."""
    frames = [f for part in parts for f in part.inputs[0][0]]
    error = parts[-1].inputs[0][1] or decode_error(source.path, parts[-1].end, parts[0].count)
    tracker = IouTracker()
    return [(f.frame, f.t, f.faces, tracker.update([x.box for x in f.faces]), f.probs) for f in frames], error


def _local_spec(cluster: str) -> int | None:
    """Workers of ``local`` / ``local:N`` (default: one per CPU), or None for a scheduler address."""
    name, _, n = cluster.partition(":")
    if name != "local":
        return None
    if not n:
        return os.cpu_count() or 1
    if not n.isdigit() or int(n) < 1:
        raise InputError(f"--dask takes local or local:N with N >= 1 workers, got {cluster!r}")
    return int(n)


@contextmanager
def connect(cluster: str):
    """A Dask client: on a new ``LocalCluster`` for ``local[:N]`` (closed afterwards), else on the
    scheduler at ``cluster`` (e.g. ``tcp://host:8786``). Yields ``(client, onnxruntime threads)``."""
    distributed = require("distributed", "dask", "fer-batch --dask / --scheduler")
    workers = _local_spec(cluster)
    if workers is None:
        try:
            client = distributed.Client(cluster, timeout="30s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {cluster}: {exc}; start one with "
                             "`dask scheduler` and pass its tcp://HOST:8786 address") from exc
        with client:
            yield client, None
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as lc, distributed.Client(lc) as client:
        yield client, threads


def run_distributed(cfg: BatchConfig, cluster: str, log: Callable[[str], None] = lambda s: None,
                    images_per_task: int = IMAGES_PER_TASK, frames_per_task: int = FRAMES_PER_TASK) -> BatchReport:
    """:func:`~fer_export.pipeline.run_batch` on a Dask cluster: ``cluster`` is ``local``, ``local:N`` or a
    scheduler address. The same CSV (rows, order, error rows), resume and extras as local mode."""
    start = time.perf_counter()
    sources = collect_sources(cfg.inputs)
    if not sources:
        raise InputError(f"no images or videos found in {list(map(str, cfg.inputs))}")
    FrameSampler(cfg.every_n, cfg.video_fps)  # bad sampling options fail before a cluster starts
    with connect(cluster) as (client, threads):
        settings = WorkerSettings.of(cfg, threads)
        info = _on_worker(client.submit(describe_worker, settings, pure=False, retries=0))
        log(f"model {info['model']} on {info['provider']}; detector {info['detector']}"
            + (f" ({info['detector_path']})" if info["detector_path"] else "")
            + f"; Dask scheduler {client.scheduler_info()['address']}, {len(client.nthreads())} workers")
        writer = ResultsWriter(cfg.out, columns(info["labels"]), cfg.resume, cfg.overwrite)
        report, todo = start_report(cfg, sources, writer, info["provider"], info["detector"])
        try:
            _Client(client, cfg, settings, sources, writer, report, info["labels"],
                    images_per_task, frames_per_task).run(todo)
        finally:
            writer.close()
    write_extras(cfg, report)
    report.seconds = time.perf_counter() - start
    return report


def _on_worker(future):
    """A future's result; a task that failed for good (after retries, or its workers kept dying) is an error."""
    try:
        return future.result()
    except FerExportError:
        raise
    except Exception as exc:
        raise FerExportError(f"a Dask task failed: {type(exc).__name__}: {exc}") from exc


class _Client:
    """Submits the tasks, checks and tracks finished videos, commits finished inputs in input order."""

    def __init__(self, client, cfg, settings, sources, writer, report, labels, images_per_task, frames_per_task):
        self.client, self.cfg, self.settings, self.sources = client, cfg, settings, sources
        self.writer, self.report, self.labels = writer, report, labels
        self.images_per_task, self.frames_per_task = images_per_task, frames_per_task
        self.rows: dict[int, list] = {}  # finished inputs waiting for their turn
        self.ranges: dict[int, list[tuple[int, int | None]]] = {}
        self.parts: dict[int, list[TaskResult | None]] = {}
        self.next = 0
        self.timings = defaultdict(float)

    def submit(self, fn, *args, i: int):
        return self.client.submit(fn, self.settings, *args, pure=False, retries=RETRIES, priority=-i)

    def plan(self, todo: list[tuple[int, Source]]) -> dict:
        """Submit every task; return ``{future: what it computes}``."""
        sampler = FrameSampler(self.cfg.every_n, self.cfg.video_fps)
        jobs, images = {}, [(i, s) for i, s in todo if s.kind != "video"]
        for k in range(0, len(images), self.images_per_task):
            part = images[k:k + self.images_per_task]
            jobs[self.submit(run_images, [s for _, s in part], i=part[0][0])] = ("images", [i for i, _ in part])
        for i, s in todo:
            if s.kind == "video":
                self.ranges[i] = video_ranges(s, sampler, self.frames_per_task)
                self.parts[i] = [None] * len(self.ranges[i])
                for k, (a, b) in enumerate(self.ranges[i]):
                    jobs[self.submit(run_video_range, s, a, b, True, i=i)] = ("video", i, k, True)
        return jobs

    def run(self, todo: list[tuple[int, Source]]) -> None:
        from distributed import as_completed
        from tqdm import tqdm

        sampler = FrameSampler(self.cfg.every_n, self.cfg.video_fps)
        bar = tqdm(total=sum(count_frames(s, sampler) for _, s in todo), unit="frame", smoothing=0.1,
                   disable=None if self.cfg.progress is None else not self.cfg.progress, dynamic_ncols=True)
        try:
            jobs = self.plan(todo)
            self.commit_ready()
            done = as_completed(jobs)
            for future in done:
                job, result = jobs.pop(future), _on_worker(future)
                future.release()
                for k, v in result.times.items():
                    self.timings[k] += v
                bar.update(sum(len(frames) for frames, _ in result.inputs))
                for redo in self.take(job, result):
                    done.add(redo[0])
                    jobs[redo[0]] = redo[1]
                self.commit_ready()
        finally:
            bar.close()
        self.report.timings = {k: round(v, 3) for k, v in self.timings.items()}

    def take(self, job, result: TaskResult) -> list:
        """Record a task's result; return ``(future, job)`` of tasks to run again."""
        if job[0] == "images":
            for i, (frames, error) in zip(job[1], result.inputs):
                self.finish(i, [(f.frame, f.t, f.faces, [None] * len(f.faces), f.probs) for f in frames], error)
            return []
        _, i, k, seek = job
        parts = self.parts[i]
        parts[k] = result
        if any(p is None for p in parts):
            return []
        used = used_parts(self.ranges[i], parts)
        if not seams_agree(used):
            if not seek:
                raise FerExportError(f"{self.sources[i].path}: decoding this video twice gave different frames")
            redo = []
            for k, (a, b) in enumerate(self.ranges[i][1:], start=1):
                parts[k] = None
                redo.append((self.submit(run_video_range, self.sources[i], a, b, False, i=i), ("video", i, k, False)))
            return redo
        del self.parts[i], self.ranges[i]
        self.finish(i, *assemble_video(self.sources[i], used))
        return []

    def finish(self, i: int, frames: list, error: str) -> None:
        self.report.frames += len(frames)
        self.report.faces += sum(len(f[2]) for f in frames)
        self.rows[i] = input_rows(self.sources[i], self.labels, frames, error)

    def commit_ready(self) -> None:
        """Write every finished input that is next in input order."""
        t0 = time.perf_counter()
        finished = []
        while self.next < len(self.sources):
            name = self.sources[self.next].name
            if name not in self.writer.done:
                if self.next not in self.rows:
                    break
                finished.append((name, self.rows.pop(self.next)))
            self.next += 1
        commit_inputs(self.writer, self.report, finished)
        self.timings["write"] += time.perf_counter() - t0
