"""The batch runner behind ``fer-batch`` (torch-free).

Producer threads (one input at a time each) decode, detect faces, track them through videos, crop
and preprocess; they feed a bounded queue. The calling thread only stacks prepared crops from any
mix of files and frames into batches, runs the onnxruntime session, and writes the rows of each
finished input, in input order, through :class:`~fer_export.report.ResultsWriter` (crash-safe,
resumable). OpenCV and onnxruntime release the GIL, so the stages overlap.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import ArtifactError, InputError
from .faces import DET_SIZES, Face, crop_face, open_detector
from .preprocess import normalize, read_color, read_gray, resize_batch, to_gray
from .report import BatchReport, ResultsWriter, columns, make_row, source_status, summarize
from .runtime import DEFAULT_MODEL, EmotionClassifier
from .sources import FrameSampler, Source, collect_sources, count_frames, is_face_crop, iter_frames
from .tracking import IouTracker

#: A part-filled batch waits this long for more crops before it is run anyway. Waiting, rather than
#: running small batches, leaves the CPU to the producers and keeps batches full.
IDLE_FLUSH_S = 0.5


@dataclass
class BatchConfig:
    inputs: Sequence[str | Path]  # files and folders (searched recursively)
    out: Path  # results CSV
    model: Path | None = None  # exported ONNX model; None = the bundled one
    provider: str = "auto"  # auto | cpu | cuda
    batch_size: int = 32  # crops per onnxruntime call, gathered across files and frames
    detector: str = "auto"  # auto | yunet | haar | none
    yunet_model: Path | None = None  # YuNet .onnx; None = $FER_YUNET_MODEL or the user cache
    det_threshold: float = 0.7  # YuNet score threshold
    det_sizes: tuple[int, ...] = DET_SIZES  # long sides (px) images are scaled to for detection
    min_face: int = 20  # faces whose box is smaller (source px, shorter side) are ignored
    every_n: int = 1  # use every n-th video frame
    video_fps: float | None = None  # or: this many frames per second of video
    workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))  # decode/detect threads
    resume: bool = False  # continue an interrupted run writing to `out`
    overwrite: bool = False  # replace an existing `out`
    summary: Path | None = None  # per-input (and per-track) summary CSV
    annotate: Path | None = None  # folder for copies with boxes and labels drawn
    plots: Path | None = None  # folder for emotion-over-time plots of videos
    progress: bool | None = None  # tqdm bar; None = only on a terminal


@dataclass
class _Frame:
    """What a producer hands over: one image or video frame, its faces and their prepared crops."""

    source: int
    frame: int | None
    t: float | None
    faces: list[Face]
    tracks: list[int | None]
    batch: object  # prepared crops: float (N, C, H, W), or a list of gray crops for uint8 models
    times: dict[str, float]
    probs: np.ndarray | None = None


@dataclass
class _Done:
    source: int
    error: str = ""


class _Stop(Exception):
    pass


def faces_in(image: np.ndarray, detector) -> tuple[list[Face], list[np.ndarray]]:
    """The faces of a BGR (or gray) image and their gray crops; without a detector, the whole image."""
    if detector is None:
        return [Face(0, 0, image.shape[1], image.shape[0])], [to_gray(image)]
    faces = detector.detect(image)
    return faces, [crop_face(image, f) for f in faces]


def read_image(path: str | Path, detector) -> tuple[np.ndarray, bool]:
    """An image input as ``(pixels, whole)``: a face crop (or any image without a detector) is read
    as gray and classified whole (``whole=True``); a picture is read as BGR for the detector."""
    img = read_color(path)
    if detector is None or is_face_crop(img):
        return read_gray(path), True  # the seed's own decoding of a crop
    return img, False


def input_error(source: Source, exc: Exception) -> str:
    """The ``error`` column for an input that raised ``exc``."""
    return str(exc) if isinstance(exc, InputError) else f"{source.path}: {type(exc).__name__}: {exc}"


def input_rows(source: Source, labels: Sequence[str], frames, error: str = "") -> list[list[str]]:
    """The CSV rows of one input: ``frames`` yields ``(frame, t, faces, tracks, probs)`` per image or
    sampled frame, in order; a frame without faces gets a ``no_face`` row; ``error`` adds an error row."""
    rows = []
    for frame, t, faces, tracks, probs in frames:
        at = dict(source=source.name, kind=source.kind, labels=labels, frame=frame, t=t)
        if not faces:
            rows.append(make_row(**at, status="no_face"))
        for j, (face, track) in enumerate(zip(faces, tracks)):
            rows.append(make_row(**at, face=j, track=track, box=face.box, det_score=face.score, probs=probs[j]))
    if error:
        rows.append(make_row(source.name, source.kind, labels, status="error", error=error))
    return rows


def commit_inputs(writer: ResultsWriter, report: BatchReport, finished: Sequence[tuple[str, list]]) -> None:
    """Write ``(source name, rows)`` of finished inputs (crash-safe) and count their statuses."""
    entries = [(name, source_status(r[-2] for r in rows), rows) for name, rows in finished]
    writer.commit(entries)
    for name, status, rows in entries:
        report.status[status] += 1
        if status == "error":
            report.failed.append((name, rows[-1][-1]))


def start_report(cfg: BatchConfig, sources: list[Source], writer: ResultsWriter, provider: str,
                 detector: str) -> tuple[BatchReport, list[tuple[int, Source]]]:
    """A report counting the inputs an earlier run finished, and ``(index, source)`` of those left to do."""
    report = BatchReport(Path(cfg.out), provider, detector, inputs=len(sources))
    todo = [(i, s) for i, s in enumerate(sources) if s.name not in writer.done]
    report.resumed = len(sources) - len(todo)
    for s in sources:
        if s.name in writer.done:
            report.status[writer.done[s.name]] += 1
    return report, todo


def resolve_model(model: str | Path | None) -> Path:
    if model is not None:
        return Path(model)
    if not DEFAULT_MODEL.is_file():
        raise ArtifactError(f"no bundled model in this install ({DEFAULT_MODEL} is missing); pass --model PATH, "
                            "an ONNX model exported with `fer-export onnx`")
    return DEFAULT_MODEL


class _Producer:
    """Turns one input into :class:`_Frame` items (run in worker threads)."""

    def __init__(self, clf: EmotionClassifier, detector, sampler: FrameSampler, put: Callable):
        self.clf, self.detector, self.sampler, self.put = clf, detector, sampler, put
        self.raw = clf.input_format == "uint8"

    def __call__(self, i: int, source: Source) -> None:
        try:
            if source.kind == "video":
                self.video(i, source)
            else:
                self.image(i, source)
            self.put(_Done(i))
        except _Stop:
            pass
        except Exception as exc:  # one bad input never kills the run: OpenCV/PIL raise many types
            try:
                self.put(_Done(i, input_error(source, exc)))
            except _Stop:
                pass

    def image(self, i: int, source: Source) -> None:
        t0 = time.perf_counter()
        img, whole = read_image(source.path, self.detector)
        t1 = time.perf_counter()
        faces, crops = faces_in(img, None if whole else self.detector)
        self.emit(i, None, None, faces, [None] * len(faces), crops, t0, t1, time.perf_counter())

    def video(self, i: int, source: Source) -> None:
        tracker = IouTracker()
        frames = iter_frames(source.path, self.sampler)
        while True:
            t0 = time.perf_counter()
            got = next(frames, None)
            if got is None:
                return
            n, t, img = got
            t1 = time.perf_counter()
            faces, crops = faces_in(img, self.detector)
            t2 = time.perf_counter()
            self.emit(i, n, t, faces, tracker.update([f.box for f in faces]), crops, t0, t1, t2)

    def emit(self, i, frame, t, faces, tracks, crops, t0, t1, t2) -> None:
        spec = self.clf.spec
        batch = crops if self.raw else normalize(resize_batch(crops, spec), spec) if crops else None
        times = {"decode": t1 - t0, "detect": t2 - t1, "preprocess": time.perf_counter() - t2}
        self.put(_Frame(i, frame, t, faces, tracks, batch, times))


class _Runner:
    """The consumer: batches prepared crops, runs the model, commits finished inputs in order."""

    def __init__(self, cfg: BatchConfig, clf: EmotionClassifier, sources: list[Source], writer: ResultsWriter,
                 report: BatchReport, bar):
        self.cfg, self.clf, self.sources, self.writer, self.report, self.bar = cfg, clf, sources, writer, report, bar
        self.items: dict[int, list[_Frame]] = defaultdict(list)
        self.errors: dict[int, str] = {}
        self.pending: list[_Frame] = []
        self.waiting: set[int] = set()  # sources whose _Done arrived but may have crops pending
        self.next = 0  # index of the next source to write
        self.timings = defaultdict(float)

    def take(self, item) -> None:
        if isinstance(item, _Done):
            self.errors[item.source] = item.error
            self.waiting.add(item.source)
            return
        self.items[item.source].append(item)
        for k, v in item.times.items():
            self.timings[k] += v
        self.report.frames += 1
        if item.batch is not None:
            self.pending.append(item)
        self.bar.update(1)

    def pending_crops(self) -> int:
        return sum(len(it.faces) for it in self.pending)

    def infer(self) -> None:
        if not self.pending:
            return
        t0 = time.perf_counter()
        if self.clf.input_format == "uint8":
            probs = self.clf.predict([c for it in self.pending for c in it.batch])
        else:
            x = np.concatenate([it.batch for it in self.pending])
            bs = self.cfg.batch_size
            probs = np.concatenate([self.clf.run(x[j:j + bs]) for j in range(0, len(x), bs)])
        k = 0
        for it in self.pending:
            it.probs, k = probs[k:k + len(it.faces)], k + len(it.faces)
            it.batch = None  # a long video must not keep every prepared crop
        self.report.faces += k
        self.pending = []
        self.timings["infer"] += time.perf_counter() - t0

    def commit_ready(self) -> None:
        """Write every finished input that is next in input order."""
        t0 = time.perf_counter()
        busy = {it.source for it in self.pending}
        finished = []
        while self.next < len(self.sources):
            src = self.sources[self.next]
            if src.name not in self.writer.done:
                if self.next not in self.waiting or self.next in busy:
                    break
                finished.append((src.name, self.rows(self.next)))
            self.next += 1
        commit_inputs(self.writer, self.report, finished)
        self.timings["write"] += time.perf_counter() - t0

    def rows(self, i: int) -> list[list[str]]:
        frames = ((it.frame, it.t, it.faces, it.tracks, it.probs) for it in self.items.pop(i, []))
        rows = input_rows(self.sources[i], self.clf.labels, frames, self.errors.get(i, ""))
        self.waiting.discard(i)
        return rows


def run_batch(cfg: BatchConfig, log: Callable[[str], None] = lambda s: None) -> BatchReport:
    """Classify every face in ``cfg.inputs``; write the results CSV (and extras). Returns the report.

    Raises :class:`~fer_export.errors.FerExportError` for problems with the options, the model, the
    detector or the output file; problems with single inputs become ``error`` rows.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    sources = collect_sources(cfg.inputs)
    if not sources:
        raise InputError(f"no images or videos found in {list(map(str, cfg.inputs))}")
    sampler = FrameSampler(cfg.every_n, cfg.video_fps)
    clf = EmotionClassifier(resolve_model(cfg.model), cfg.provider, cfg.batch_size)
    detector = open_detector(cfg.detector, cfg.yunet_model, cfg.det_threshold, cfg.det_sizes, cfg.min_face)
    det_name = detector.name if detector else "none"
    log(f"model {clf.path} on {clf.provider}; detector {det_name}" + (f" ({detector.path})" if detector else ""))
    writer = ResultsWriter(cfg.out, columns(clf.labels), cfg.resume, cfg.overwrite)
    report, todo = start_report(cfg, sources, writer, clf.provider, det_name)
    bar = tqdm(total=sum(count_frames(s, sampler) for _, s in todo), unit="frame",
               disable=None if cfg.progress is None else not cfg.progress, smoothing=0.1, dynamic_ncols=True)
    q: queue.Queue = queue.Queue(maxsize=max(8, 2 * cfg.batch_size))
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                return q.put(item, timeout=0.1)
            except queue.Full:
                pass
        raise _Stop

    runner = _Runner(cfg, clf, sources, writer, report, bar)
    produce = _Producer(clf, detector, sampler, put)
    pool = _start(produce, todo, max(1, cfg.workers), stop)
    try:
        remaining = len(todo)
        runner.commit_ready()
        while remaining:
            try:
                item = q.get(timeout=IDLE_FLUSH_S if runner.pending else None)
            except queue.Empty:  # producers are stuck on slow inputs: run what we have
                runner.infer()
                runner.commit_ready()
                continue
            runner.take(item)
            remaining -= isinstance(item, _Done)
            if runner.pending_crops() >= cfg.batch_size or not remaining:
                runner.infer()
            if isinstance(item, _Done) or not runner.pending:
                runner.commit_ready()
        runner.infer()
        runner.commit_ready()
    finally:
        stop.set()
        for t in pool:
            t.join()
        writer.close()
        bar.close()
    report.timings = {k: round(v, 3) for k, v in runner.timings.items()}
    write_extras(cfg, report)
    report.seconds = time.perf_counter() - start
    return report


def _start(produce: _Producer, todo: list[tuple[int, Source]], workers: int,
           stop: threading.Event) -> list[threading.Thread]:
    """Worker threads taking inputs, in order, from one shared iterator until it ends or ``stop`` is set."""
    it, lock = iter(todo), threading.Lock()

    def work():
        while not stop.is_set():
            with lock:
                nxt = next(it, None)
            if nxt is None:
                return
            produce(*nxt)

    threads = [threading.Thread(target=work, name=f"fer-batch-{k}", daemon=True) for k in range(workers)]
    for t in threads:
        t.start()
    return threads


def write_extras(cfg: BatchConfig, report: BatchReport) -> None:
    """The summary CSV, plots and annotated copies the options ask for, read back from the results CSV."""
    if cfg.summary:
        report.outputs.append(summarize(cfg.out, cfg.summary, report.detector))
    if cfg.plots:
        from .annotate import plot_videos

        report.outputs += plot_videos(cfg.out, cfg.plots)
    if cfg.annotate:
        from .annotate import annotate_sources

        report.outputs += annotate_sources(cfg.out, collect_sources(cfg.inputs), cfg.annotate)
