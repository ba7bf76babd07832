"""The batch runner on this machine's threads (torch-free).

Worker threads take the inputs in order: a video alone, images in runs of consecutive ones
(:class:`_Jobs`). For a video they decode, detect faces, track them and prepare the crops frame by
frame, and feed a bounded queue; the calling thread stacks the prepared crops of any mix of frames
into batches and runs the onnxruntime session. A run of images a worker classifies itself, with a
one-thread session (one session, which the workers share), and hands over the finished results: on
crops this uses every core for the model with no hand-over per crop, which is faster than classifying
them all on the calling thread (how much: benchmarks/README.md, "video_fps.py"). The calling thread
hands each finished input to the :class:`~.commit.Committer`, which writes in input order. OpenCV and
onnxruntime release the GIL, so the stages overlap. The run around this work is :func:`~.runner.run_in`'s.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from ..runtime import EmotionClassifier
from .commit import Committer
from .config import BatchConfig
from .crops import FaceCrops
from .models import describe, open_models
from .per_input import (FrameResult, Gathered, Pending, frame_sampler, input_error, input_rows,
                        look_at_image, video_looker)
from .results import BatchReport
from .runner import Log, Todo, run_in
from .sources import FrameSampler, Source, iter_frames
from .tracking import IouTracker

#: A part-filled batch waits this long for more crops before it is run anyway. Waiting, rather than
#: running small batches, leaves the CPU to the producers and keeps batches full.
IDLE_FLUSH_S = 0.5


@dataclass
class _Frame:
    """What a producer hands over: one video frame of input ``source``, and its prepared crops."""

    source: int
    result: FrameResult
    prepared: FaceCrops | None  # the crops prepared for the model; None without faces
    times: dict[str, float]


@dataclass
class _Done:
    """Video ``source`` is finished (with ``error`` when it failed)."""

    source: int
    error: str = ""


@dataclass
class _Images:
    """A run of images, classified by the worker that read them: each input's CSV rows, in order."""

    rows: list[tuple[int, list]] = field(default_factory=list)
    frames: int = 0
    faces: int = 0
    times: dict[str, float] = field(default_factory=lambda: defaultdict(float))


@dataclass
class _Failed:
    """The model itself failed in a worker: the run stops with this error, as on the calling thread."""

    exc: Exception


class _Stop(Exception):
    pass


class _Jobs:
    """The inputs in order, as work items: a video alone, or a run of consecutive images, up to
    ``size`` of them, fewer as the images run out, so that every worker gets a share of the last ones."""

    def __init__(self, todo: list[tuple[int, Source]], workers: int, size: int):
        self.todo, self.workers, self.size, self.k, self.lock = todo, workers, size, 0, threading.Lock()
        self.images_left = sum(s.kind != "video" for _, s in todo)

    def next(self) -> list[tuple[int, Source]] | None:
        with self.lock:
            if self.k >= len(self.todo):
                return None
            if self.todo[self.k][1].kind == "video":
                self.k += 1
                return [self.todo[self.k - 1]]
            n = max(1, min(self.size, self.images_left // (2 * self.workers)))
            run = []
            while self.k < len(self.todo) and len(run) < n and self.todo[self.k][1].kind != "video":
                run.append(self.todo[self.k])
                self.k += 1
            self.images_left -= len(run)
            return run


class _Models:
    """The run's models, opened in a thread of their own while the inputs are listed (onnxruntime
    builds a session without holding the GIL, and both take a noticeable share of a short run): the
    classifier and the detector, then, on the CPU, the one-thread session the workers share for runs
    of images (a session may run on several threads at once; one thread each leaves a core to each
    worker)."""

    def __init__(self, work):
        self.work, self.error = work, None
        self.clf = self.detector = self.shared = None
        self.opened, self.ready = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._open, name="fer-batch-open", daemon=True)
        self.thread.start()

    def _open(self) -> None:
        try:
            self.clf, self.detector = open_models(self.work)
            self.opened.set()
            self.shared = self.clf if self.clf.provider != "cpu" else self.clf.sibling(1, spin=False)
        except BaseException as exc:  # raised again where the models are asked for
            self.error = exc
        finally:
            self.opened.set()
            self.ready.set()

    def _wait(self, event: threading.Event):
        event.wait()
        if self.error is not None:
            raise self.error

    def models(self) -> tuple[EmotionClassifier, object]:
        self._wait(self.opened)
        return self.clf, self.detector

    def for_workers(self) -> EmotionClassifier:
        self._wait(self.ready)
        return self.shared

    def close(self) -> None:
        """Wait for the opening thread. It must not outlive the run: a thread still inside onnxruntime's
        session builder when the interpreter shuts down aborts the process (Python before 3.14 ends such
        a thread by unwinding native frames that may not be unwound: "terminate called without an active
        exception"). This happened on Ctrl-C during a run of videos, which never waits for the shared session."""
        self.thread.join()


class _Producer:
    """Turns a work item into queue items (run in worker threads)."""

    def __init__(self, clf: EmotionClassifier, detector, sampler: FrameSampler, put: Callable, own_model: Callable):
        self.clf, self.detector, self.sampler, self.put, self.own_model = clf, detector, sampler, put, own_model

    def __call__(self, job: list[tuple[int, Source]]) -> None:
        try:
            if job[0][1].kind == "video":
                self.video(*job[0])
            else:
                self.images(job)
        except _Stop:
            pass

    def images(self, job: list[tuple[int, Source]]) -> None:
        """Read, detect and crop each image of ``job`` (each page of a multi-page TIFF), classify their
        crops a batch at a time, hand over the rows. A bad image gets its error row, after its pages
        read before the failure; the others go on."""
        out, waiting, gathered = _Images(), [], Gathered()
        for i, source in job:
            frames, error, pages = [], "", look_at_image(source.path, self.detector, out.times)
            while True:
                try:
                    got = next(pages, None)
                except Exception as exc:  # one bad input never kills the run: OpenCV/PIL raise many types
                    error = input_error(source, exc)
                    break
                if got is None:
                    break
                frames.append(gathered.add(*got))
                if len(gathered.crops) >= self.clf.batch_size and not self.classify(gathered, out):
                    return
            waiting.append((i, source, frames, error))
        if gathered.crops and not self.classify(gathered, out):
            return
        for i, source, frames, error in waiting:
            out.faces, out.frames = out.faces + sum(len(f.faces) for f in frames), out.frames + len(frames)
            out.rows.append((i, input_rows(source, self.clf.labels, frames, error)))
        self.put(out)

    def classify(self, gathered: Gathered, out: _Images) -> bool:
        """Classify the gathered crops on the workers' session; False once the model failed (the run stops)."""
        try:
            model = self.own_model()
            t0 = time.perf_counter()
            prepared = model.prepare(gathered.crops)
            t1 = time.perf_counter()
            gathered.spread(model.predict_prepared(prepared))
        except Exception as exc:  # the model, not an input, failed: stop the run
            self.put(_Failed(exc))
            return False
        out.times["preprocess"] += t1 - t0
        out.times["infer"] += time.perf_counter() - t1
        return True

    def video(self, i: int, source: Source) -> None:
        try:
            tracker = IouTracker()
            frames = iter_frames(source.path, self.sampler)
            look = video_looker(self.detector, self.sampler, source.path)
            while True:
                t0 = time.perf_counter()
                got = next(frames, None)
                if got is None:
                    break
                n, t, img = got
                t1 = time.perf_counter()
                faces, crops = look(n, img)
                t2 = time.perf_counter()
                result = FrameResult(n, t, faces, tracks=tracker.update([f.box for f in faces]))
                self.put(self.frame(i, result, crops, t0, t1, t2))
        except _Stop:
            raise
        except Exception as exc:  # a truncated or unreadable video: the frames before it are kept
            self.put(_Done(i, input_error(source, exc)))
            return
        self.put(_Done(i))

    def frame(self, i, result, crops: FaceCrops, t0, t1, t2) -> _Frame:
        prepared = crops.prepared(self.clf) if len(crops) else None
        times = {"decode": t1 - t0, "detect": t2 - t1, "preprocess": time.perf_counter() - t2}
        return _Frame(i, result, prepared, times)


class _Consumer:
    """Batches prepared crops, runs the model, hands finished inputs to the committer."""

    def __init__(self, clf, sources: list[Source], committer: Committer, report: BatchReport, bar):
        self.clf, self.sources, self.committer, self.report, self.bar = clf, sources, committer, report, bar
        self.frames: dict[int, list[FrameResult]] = defaultdict(list)
        self.errors: dict[int, str] = {}
        self.pending = Pending(clf)
        self.busy: set[int] = set()  # sources with frames in `pending`
        self.waiting: list[int] = []  # sources whose _Done arrived while they had frames pending
        self.timings = defaultdict(float)

    def take(self, item) -> int:
        """Take a queue item; return the number of inputs it finished."""
        if isinstance(item, _Failed):
            raise item.exc
        if isinstance(item, _Images):
            for k, v in item.times.items():
                self.timings[k] += v
            for i, rows in item.rows:
                self.committer.finish(i, rows)
            self.report.frames += item.frames
            self.report.faces += item.faces
            self.bar.update(item.frames)
            return len(item.rows)
        if isinstance(item, _Done):
            if item.source in self.busy:
                self.errors[item.source] = item.error
                self.waiting.append(item.source)
            else:
                self.finish(item.source, item.error)
            return 1
        self.frames[item.source].append(item.result)
        for k, v in item.times.items():
            self.timings[k] += v
        self.report.frames += 1
        if item.prepared is not None:
            self.pending.add(item.result, item.prepared)
            self.busy.add(item.source)
        self.bar.update(1)
        return 0

    def infer(self) -> None:
        if not self.pending.frames:
            return
        t0 = time.perf_counter()
        self.report.faces += self.pending.flush()
        self.busy.clear()
        self.timings["infer"] += time.perf_counter() - t0
        for i in self.waiting:
            self.finish(i, self.errors.pop(i))
        self.waiting.clear()

    def finish(self, i: int, error: str) -> None:
        """Hand input ``i``, all of its crops classified, to the committer."""
        t0 = time.perf_counter()
        self.committer.finish(i, input_rows(self.sources[i], self.clf.labels, self.frames.pop(i, []), error))
        self.timings["write"] += time.perf_counter() - t0

    def commit_ready(self, force: bool = False) -> None:
        """Write what is due (everything, if ``force``)."""
        t0 = time.perf_counter()
        self.committer.commit_ready(force)
        self.timings["write"] += time.perf_counter() - t0


def run_local(config: BatchConfig, log: Log = lambda s: None) -> BatchReport:
    """Classify every face in ``config.inputs`` with threads on this machine; see :func:`~fer_export.batch.run_batch`."""
    started = time.perf_counter()
    return run_in(_Local(config), config, log, started)


class _Local:
    """This machine as the run's :class:`~.runner.Place`: the models open in a thread while the inputs
    are listed; worker threads produce, the calling thread classifies and commits."""

    note = ""

    def __init__(self, config: BatchConfig):
        self.config, self.opening = config, _Models(config.work)
        self.stop, self.pool = threading.Event(), []

    def models(self) -> dict:
        return describe(*self.opening.models())

    def process(self, todo: Todo, sources: list[Source], committer: Committer, bar) -> dict[str, float]:
        config, (clf, detector) = self.config, self.opening.models()
        q: queue.Queue = queue.Queue(maxsize=max(8, 2 * config.work.model.batch_size))

        def put(item):
            while not self.stop.is_set():
                try:
                    return q.put(item, timeout=0.1)
                except queue.Full:
                    pass
            raise _Stop

        consumer = _Consumer(clf, sources, committer, committer.report, bar)
        jobs = _Jobs(todo, config.workers, config.work.model.batch_size)
        produce = _Producer(clf, detector, frame_sampler(config.work.sampling), put, self.opening.for_workers)
        self.pool = _start_threads(produce, jobs, config.workers, self.stop)
        try:
            _consume(q, consumer, len(todo), config.work.model.batch_size)
        finally:
            self.stop.set()
        return consumer.timings

    def close(self) -> None:
        """The worker threads, then the thread opening the models, are joined: none outlives the run."""
        self.stop.set()
        for t in self.pool:
            t.join()
        self.opening.close()


def _consume(q: queue.Queue, consumer: _Consumer, remaining: int, batch_size: int) -> None:
    """Take queue items until ``remaining`` inputs are finished: classify full batches, or what there is
    once the producers are slow, and commit as inputs finish."""
    consumer.commit_ready()
    while remaining:
        try:
            item = q.get(timeout=IDLE_FLUSH_S if consumer.pending.frames else None)
        except queue.Empty:  # producers are stuck on slow inputs: run what we have
            consumer.infer()
            consumer.commit_ready()
            continue
        finished = consumer.take(item)
        remaining -= finished
        if consumer.pending.crops >= batch_size or not remaining:
            consumer.infer()
        if finished or not consumer.pending.frames:
            consumer.commit_ready()
    consumer.infer()
    consumer.commit_ready(force=True)


def _start_threads(produce: _Producer, jobs: _Jobs, workers: int, stop: threading.Event) -> list[threading.Thread]:
    """Worker threads taking work items, in order, until they run out or ``stop`` is set."""

    def work():
        while not stop.is_set():
            job = jobs.next()
            if job is None:
                return
            produce(job)

    threads = [threading.Thread(target=work, name=f"fer-batch-{k}", daemon=True) for k in range(workers)]
    for t in threads:
        t.start()
    return threads
