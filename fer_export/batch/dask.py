"""``fer-batch --dask local[:N]`` / ``--scheduler ADDRESS``: the batch runner on a Dask cluster (torch-free).

Work split. Images go to workers in partitions of :data:`IMAGES_PER_TASK` consecutive inputs.
Videos are split into frame ranges of :data:`FRAMES_PER_TASK` sampled frames; each range task
seeks to its first frame (OpenCV's FFmpeg backend seeks to the keyframe before it and decodes
forward) and decodes to its end. A task decodes, detects, crops and classifies, and returns per-frame
faces and probabilities; it writes nothing. Each worker loads the model and detector once and keeps
them (:func:`worker_models`, a per-process cache keyed by the run's :class:`~.config.WorkConfig`).

Seeking is not frame-exact in every container (a QuickTime file here lands frames late), so every
range also returns a digest of its first frame and of the frame just after its end, decoded
sequentially by the range before. Where the two disagree, the video's later ranges run again,
reaching their start by decoding every frame from the beginning (slower, always exact).

Tracking runs on the client: the IoU tracker is sequential, so once every range of a video is in,
the client feeds its frames' boxes through :class:`~.tracking.IouTracker` in frame order,
exactly as the local runner does. Track ids, timestamps and rows are therefore those of local mode;
probabilities differ only by batch composition, in their last digits.

Only the client writes, through the same :class:`~.commit.Committer`, and only once
all tasks of an input are in, in input order (rows: input order, then frame, then face). A worker
that dies mid-task is replaced and its tasks run again (Dask's ``allowed-failures``); results reach
the client once per task, so no row is lost or written twice, and ``--resume`` works as locally.
The run around this work is :func:`~.runner.run_in`'s, as in local mode.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import FerExportError, InputError, require
from .commit import Committer
from .config import BatchConfig, WorkConfig, check_workers, usable_cpus
from .crops import FaceCrops
from .models import describe, open_models
from .follow import range_size
from .per_input import FrameResult, Pending, frame_sampler, input_error, input_rows, look_at_image, video_looker
from .results import BatchReport
from .runner import Log, Todo, run_in
from .frames import frame_ranges
from .sources import FrameRange, FrameSampler, Source, decode_error
from .tracking import IouTracker

#: Consecutive image inputs per task.
IMAGES_PER_TASK = 32
#: Sampled video frames per task (a range spans FRAMES_PER_TASK x the sampling step of frames).
FRAMES_PER_TASK = 240
#: Dask re-runs a task that raised this many times (a worker that dies is covered by Dask's own
#: ``distributed.scheduler.allowed-failures``, 3 by default).
RETRIES = 2

_MODELS: dict[WorkConfig, tuple] = {}
_MODELS_LOCK = threading.Lock()


def worker_models(work: WorkConfig):
    """The classifier and detector for ``work``, loaded once per worker process and kept."""
    with _MODELS_LOCK:
        if work not in _MODELS:
            _MODELS[work] = open_models(work)
        return _MODELS[work]


def describe_worker(work: WorkConfig) -> dict:
    """Load the model and detector on a worker (raising their errors there) and say what loaded."""
    return describe(*worker_models(work))


# ---- tasks (run on workers) ------------------------------------------------------------------------

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
    """A task's :class:`~.work.Pending` crops, classified a full batch at a time, with timings."""

    def __init__(self, clf, times: dict[str, float]):
        self.clf, self.times, self.pending = clf, times, Pending(clf)

    def add(self, result: FrameResult, crops: FaceCrops) -> None:
        if len(crops):
            self.pending.add(result, crops.prepared(self.clf))
            if self.pending.crops >= self.clf.batch_size:
                self.flush()
        else:
            result.probs = np.zeros((0, len(self.clf.labels)), np.float32)

    def flush(self) -> None:
        t0 = time.perf_counter()
        if self.pending.flush():
            self.times["infer"] += time.perf_counter() - t0


def run_images(work: WorkConfig, sources: list[Source]) -> TaskResult:
    """Task: detect and classify the faces of a partition of image inputs."""
    clf, detector = worker_models(work)
    out = TaskResult([])
    classify = _Classify(clf, out.times)
    for source in sources:
        frames, error = [], ""
        try:
            for result, crops in look_at_image(source.path, detector, out.times):  # a page at a time
                frames.append(result)
                classify.add(result, crops)
        except Exception as exc:  # one bad input never kills the run; its pages before the failure are kept
            error = input_error(source, exc)
        out.inputs.append((frames, error))
    classify.flush()
    return out


def run_video_range(work: WorkConfig, source: Source, start: int, stop: int | None, seek: bool) -> TaskResult:
    """Task: frames ``start`` to ``stop`` (None = the end) of a video, reached by seeking or, with
    ``seek=False``, by decoding every frame before ``start``. Frames are sampled as in local mode."""
    clf, detector = worker_models(work)
    out = TaskResult([])
    frames, error = [], ""
    classify = _Classify(clf, out.times)
    decoded = FrameRange(source.path, frame_sampler(work.sampling), start, stop, seek)
    look = video_looker(detector, decoded.sampler, source.path)  # each range starts on a key frame: _Client.plan
    try:
        t0 = time.perf_counter()
        for i, t, img in decoded:
            t1 = time.perf_counter()
            faces, crops = look(i, img)
            out.times["decode"] += t1 - t0
            out.times["detect"] += time.perf_counter() - t1
            frames.append(FrameResult(i, t, faces))
            classify.add(frames[-1], crops)
            t0 = time.perf_counter()
    except Exception as exc:  # the frames before a failure are kept, as in local mode
        error = input_error(source, exc)
    classify.flush()
    out.inputs.append((frames, error))
    out.end, out.count = decoded.end, decoded.count
    out.first = _digest(decoded.first) if decoded.first is not None else None  # used or not
    out.after = _digest(decoded.after) if decoded.after is not None else None
    return out


# ---- the client ----------------------------------------------------------------------------------

def video_ranges(source: Source, sampler: FrameSampler,
                 per_task: int = FRAMES_PER_TASK) -> list[tuple[int, int | None]]:
    """``(start, stop)`` frame ranges of ``per_task`` sampled frames each; the last is open-ended so that
    a container that under-counts its frames still gets them all. One range where the count is unknown."""
    return frame_ranges(source.path, sampler, per_task)  # the container's count checked, never looped over


def used_parts(ranges: list[tuple[int, int | None]], parts: list[TaskResult]) -> list[TaskResult]:
    """The results up to the range in which the video ended or failed; later ranges lie past its end."""
    for k, ((_, stop), part) in enumerate(zip(ranges, parts)):
        if part.inputs[0][1] or stop is None or part.end < stop:
            return parts[:k + 1]
    return parts


def seams_agree(parts: list[TaskResult]) -> bool:
    """Whether every seeked range started on the frame that sequential decoding reaches there."""
    return all(prev.after == cur.first for prev, cur in zip(parts, parts[1:]))


def assemble_video(source: Source, parts: list[TaskResult]) -> tuple[list[FrameResult], str]:
    """The frames of a video's used ranges in order, tracked, and its error (a failure inside a range,
    or decoding that stopped before the declared frame count)."""
    frames = [f for part in parts for f in part.inputs[0][0]]
    error = parts[-1].inputs[0][1] or decode_error(source.path, parts[-1].end, parts[0].count)
    tracker = IouTracker()
    for f in frames:
        f.tracks = tracker.update([x.box for x in f.faces])
    return frames, error


def local_workers(cluster: str) -> int | None:
    """Workers of ``local`` / ``local:N`` (default: one per CPU), or None for a scheduler address."""
    name, _, n = cluster.partition(":")
    if name != "local":
        return None
    if not n:
        return usable_cpus()
    if not (n.isascii() and n.isdigit()) or int(n) < 1:
        raise InputError(f"--dask takes local or local:N with N >= 1 workers, got {cluster!r}")
    return check_workers(int(n), f"--dask {cluster}: the local:N worker processes")


@contextmanager
def connect(cluster: str):
    """A Dask client: on a new ``LocalCluster`` for ``local[:N]`` (closed afterwards), else on the
    scheduler at ``cluster`` (e.g. ``tcp://host:8786``). Yields ``(client, onnxruntime threads)``."""
    distributed = require("distributed", "dask", "fer-batch --dask / --scheduler")
    workers = local_workers(cluster)
    if workers is None:
        try:
            client = distributed.Client(cluster, timeout="30s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {cluster}: {exc}; start one with "
                             "`dask scheduler` and pass its tcp://HOST:8786 address") from exc
        with client:
            yield client, None
        return
    threads = max(1, usable_cpus() // workers)
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as lc, distributed.Client(lc) as client:
        yield client, threads


def run_dask(config: BatchConfig, cluster: str, log: Log = lambda s: None,
             images_per_task: int = IMAGES_PER_TASK, frames_per_task: int = FRAMES_PER_TASK) -> BatchReport:
    """:func:`~fer_export.batch.run_batch` on a Dask cluster: ``cluster`` is ``local``, ``local:N`` or a
    scheduler address. The same CSV (rows, order, error rows), resume and extras as local mode."""
    started = time.perf_counter()
    return run_in(_Cluster(config, cluster, images_per_task, frames_per_task), config, log, started)


class _Cluster:
    """A Dask cluster as the run's :class:`~.runner.Place`: connected once the inputs are listed (a
    refused output starts no cluster); the models open on a worker first, which says what loaded."""

    def __init__(self, config: BatchConfig, cluster: str, images_per_task: int, frames_per_task: int):
        self.config, self.cluster, self.sizes = config, cluster, (images_per_task, frames_per_task)
        self.stack, self.note = ExitStack(), ""
        self.client, self.work, self.labels = None, config.work, []  # set once connected

    def models(self) -> dict:
        client, threads = self.stack.enter_context(connect(self.cluster))
        work = self.config.work
        self.work = replace(work, model=replace(work.model, threads=threads)) if threads else work
        self.client = client
        models = _on_worker(client.submit(describe_worker, self.work, pure=False, retries=0))
        self.labels = models["labels"]
        self.note = f"; Dask scheduler {client.scheduler_info()['address']}, {len(client.nthreads())} workers"
        return models

    def process(self, todo: Todo, sources: list[Source], committer: Committer, bar) -> dict[str, float]:
        client = _Client(self.client, self.work, sources, committer, self.labels, *self.sizes)
        client.run(todo, bar)
        return client.timings

    def close(self) -> None:
        self.stack.close()


def _on_worker(future):
    """A future's result; a task that failed for good (after retries, or its workers kept dying) is an error."""
    try:
        return future.result()
    except FerExportError:
        raise
    except Exception as exc:
        raise FerExportError(f"a Dask task failed: {type(exc).__name__}: {exc}") from exc


class _Client:
    """Submits the tasks, checks and tracks finished videos, hands finished inputs to the committer."""

    def __init__(self, client, work, sources, committer, labels, images_per_task, frames_per_task):
        self.client, self.work, self.sources = client, work, sources
        self.committer, self.report, self.labels = committer, committer.report, labels
        self.images_per_task, self.frames_per_task = images_per_task, frames_per_task
        self.ranges: dict[int, list[tuple[int, int | None]]] = {}
        self.parts: dict[int, list[TaskResult | None]] = {}
        self.timings = defaultdict(float)

    def submit(self, fn, *args, i: int):
        return self.client.submit(fn, self.work, *args, pure=False, retries=RETRIES, priority=-i)

    def plan(self, todo: Todo) -> dict:
        """Submit every task; return ``{future: what it computes}``."""
        sampler, detection = frame_sampler(self.work.sampling), self.work.detection
        # a video's faces are followed from key frame to key frame: each range starts on one (.follow)
        per_range = (self.frames_per_task if detection.detector == "none"
                     else range_size(self.frames_per_task, detection.full_detect_every))
        jobs, images = {}, [(i, s) for i, s in todo if s.kind != "video"]
        for k in range(0, len(images), self.images_per_task):
            part = images[k:k + self.images_per_task]
            jobs[self.submit(run_images, [s for _, s in part], i=part[0][0])] = ("images", [i for i, _ in part])
        for i, s in todo:
            if s.kind == "video":
                self.ranges[i] = video_ranges(s, sampler, per_range)
                self.parts[i] = [None] * len(self.ranges[i])
                for k, (a, b) in enumerate(self.ranges[i]):
                    jobs[self.submit(run_video_range, s, a, b, True, i=i)] = ("video", i, k, True)
        return jobs

    def run(self, todo: Todo, bar) -> None:
        from distributed import as_completed

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
        self.commit_ready(force=True)

    def take(self, job, result: TaskResult) -> list:
        """Record a task's result; return ``(future, job)`` of tasks to run again."""
        if job[0] == "images":
            for i, (frames, error) in zip(job[1], result.inputs):
                self.finish(i, frames, error)
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

    def finish(self, i: int, frames: list[FrameResult], error: str) -> None:
        self.report.frames += len(frames)
        self.report.faces += sum(len(f.faces) for f in frames)
        self.committer.finish(i, input_rows(self.sources[i], self.labels, frames, error))

    def commit_ready(self, force: bool = False) -> None:
        t0 = time.perf_counter()
        self.committer.commit_ready(force)
        self.timings["write"] += time.perf_counter() - t0
