"""The batch runner on this machine's threads (torch-free).

Producer threads (one input at a time each) decode, detect faces, track them through videos, crop
and prepare the crops; they feed a bounded queue. The calling thread only stacks prepared crops
from any mix of files and frames into batches, runs the onnxruntime session, and hands each
finished input to the :class:`~.work.Committer`, which writes in input order. OpenCV and
onnxruntime release the GIL, so the stages overlap.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

from .config import BatchConfig
from .results import BatchReport
from .sources import FrameSampler, Source, iter_frames
from .tracking import IouTracker
from .work import (Committer, FrameResult, Log, Pending, collect, describe, faces_in, finish, input_error,
                   input_rows, open_models, progress_bar, read_image, sampler_of, start)

#: A part-filled batch waits this long for more crops before it is run anyway. Waiting, rather than
#: running small batches, leaves the CPU to the producers and keeps batches full.
IDLE_FLUSH_S = 0.5


@dataclass
class _Frame:
    """What a producer hands over: one image or frame of input ``source``, and its prepared crops."""

    source: int
    result: FrameResult
    prepared: object  # clf.prepare(crops); None without faces
    times: dict[str, float]


@dataclass
class _Done:
    source: int
    error: str = ""


class _Stop(Exception):
    pass


class _Producer:
    """Turns one input into :class:`_Frame` items (run in worker threads)."""

    def __init__(self, clf, detector, sampler: FrameSampler, put: Callable):
        self.clf, self.detector, self.sampler, self.put = clf, detector, sampler, put

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
        faces, crops = faces_in(img, None if whole else self.detector, still=True)
        self.emit(i, FrameResult(None, None, faces), crops, t0, t1, time.perf_counter())

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
            self.emit(i, FrameResult(n, t, faces, tracks=tracker.update([f.box for f in faces])), crops, t0, t1, t2)

    def emit(self, i, result, crops, t0, t1, t2) -> None:
        prepared = self.clf.prepare(crops) if crops else None
        times = {"decode": t1 - t0, "detect": t2 - t1, "preprocess": time.perf_counter() - t2}
        self.put(_Frame(i, result, prepared, times))


class _Consumer:
    """Batches prepared crops, runs the model, hands finished inputs to the committer."""

    def __init__(self, clf, sources: list[Source], committer: Committer, report: BatchReport, bar):
        self.clf, self.sources, self.committer, self.report, self.bar = clf, sources, committer, report, bar
        self.frames: dict[int, list[FrameResult]] = defaultdict(list)
        self.errors: dict[int, str] = {}
        self.pending = Pending(clf)
        self.busy: dict[int, int] = defaultdict(int)  # source -> its frames in `pending`
        self.waiting: set[int] = set()  # sources whose _Done arrived but may have crops pending
        self.timings = defaultdict(float)

    def take(self, item) -> None:
        if isinstance(item, _Done):
            self.errors[item.source] = item.error
            self.waiting.add(item.source)
            return
        self.frames[item.source].append(item.result)
        for k, v in item.times.items():
            self.timings[k] += v
        self.report.frames += 1
        if item.prepared is not None:
            self.pending.add(item.result, item.prepared)
            self.busy[item.source] += 1
        self.bar.update(1)

    def infer(self) -> None:
        if not self.pending.frames:
            return
        t0 = time.perf_counter()
        self.report.faces += self.pending.flush()
        self.busy.clear()
        self.timings["infer"] += time.perf_counter() - t0

    def commit_ready(self, force: bool = False) -> None:
        """Hand every finished input whose crops are all classified to the committer; write what is due
        (everything, if ``force``)."""
        t0 = time.perf_counter()
        for i in sorted(self.waiting):
            if not self.busy.get(i):
                rows = input_rows(self.sources[i], self.clf.labels, self.frames.pop(i, []), self.errors.pop(i, ""))
                self.committer.finish(i, rows)
                self.waiting.discard(i)
        self.committer.commit_ready(force)
        self.timings["write"] += time.perf_counter() - t0


def run_local(config: BatchConfig, log: Log = lambda s: None) -> BatchReport:
    """Classify every face in ``config.inputs`` with threads on this machine; see :func:`~fer_export.batch.run_batch`."""
    started = time.perf_counter()
    skipped: list = []
    sources = collect(config, skipped)
    clf, detector = open_models(config.work)
    committer, report, todo = start(config, sources, describe(clf, detector), log, skipped=skipped)
    bar = progress_bar(config, todo)
    q: queue.Queue = queue.Queue(maxsize=max(8, 2 * config.work.batch_size))
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                return q.put(item, timeout=0.1)
            except queue.Full:
                pass
        raise _Stop

    consumer = _Consumer(clf, sources, committer, report, bar)
    pool = _start_threads(_Producer(clf, detector, sampler_of(config.work), put), todo, config.workers, stop)
    try:
        remaining = len(todo)
        consumer.commit_ready()
        while remaining:
            try:
                item = q.get(timeout=IDLE_FLUSH_S if consumer.pending.frames else None)
            except queue.Empty:  # producers are stuck on slow inputs: run what we have
                consumer.infer()
                consumer.commit_ready()
                continue
            consumer.take(item)
            remaining -= isinstance(item, _Done)
            if consumer.pending.crops >= config.work.batch_size or not remaining:
                consumer.infer()
            if isinstance(item, _Done) or not consumer.pending.frames:
                consumer.commit_ready()
        consumer.infer()
        consumer.commit_ready(force=True)
    except KeyboardInterrupt:  # keep what finished before Ctrl-C
        consumer.commit_ready(force=True)
        raise
    finally:
        stop.set()
        for t in pool:
            t.join()
        committer.writer.close()
        bar.close()
    report.timings = {k: round(v, 3) for k, v in consumer.timings.items()}
    return finish(config, sources, report, started)


def _start_threads(produce: _Producer, todo: list[tuple[int, Source]], workers: int,
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
