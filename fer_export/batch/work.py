"""The layer both runners share (torch-free): loading the model and detector, the per-input work
(decode -> detect -> crop -> classify), the rows of an input, the ordered commit, and the prologue,
progress bar and epilogue of a run.

:mod:`.local` (threads) and :mod:`.dask` (a cluster) differ only in where this work runs and how
finished inputs reach the committer; neither imports the other.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import DependencyError, InputError, OutputError
from ..folders import is_inside
from ..preprocess import read_color, read_gray, to_gray
from ..runtime import EmotionClassifier
from .config import BatchConfig, WorkConfig, usable_cpus
from .faces import Face, open_detector, second_looks
from .annotate import output_path
from .results import (RESULTS_HEAD, SUMMARY_HEAD, BatchReport, ResultsWriter, columns, journal_path, lock_path,
                      make_row, printable, source_status, summarize)
from .sources import (FrameSampler, Source, collect_sources, count_frames, escape_name, is_face_crop,
                      unescape_name)

Log = Callable[[str], None]


# ---- models --------------------------------------------------------------------------------------

def open_models(work: WorkConfig) -> tuple[EmotionClassifier, object]:
    """The classifier and the detector (None for ``detector="none"``) that ``work`` asks for, the
    detector cropping faces as the model's spec frames them. The session's idle threads sleep rather
    than spin: decoding and detection need the same cores."""
    clf = EmotionClassifier(work.model, work.provider, work.batch_size, model_threads(work),
                            spin=False, self_check=work.self_check)
    return clf, open_detector(work, clf.spec.framing)


def model_threads(work: WorkConfig) -> int | None:
    """onnxruntime's intra-op threads: ``work.threads`` if set; with the Haar cascade, which runs on
    OpenCV's pool of every core and costs several times the model per frame, half the CPUs (at least
    one); else onnxruntime's default, every core: YuNet runs one thread per worker, and the model is
    most of the work (how much faster every core was: benchmarks/README.md, "video_fps.py")."""
    if work.threads is not None or work.detector != "haar":
        return work.threads
    return max(1, usable_cpus() // 2)


def describe(clf: EmotionClassifier, detector) -> dict:
    """What loaded, for the run's first line and its report (picklable: a Dask worker sends it)."""
    return {"labels": list(clf.labels), "provider": clf.provider, "model": str(clf.path),
            "detector": detector.name if detector else "none", "detector_path": str(detector.path) if detector else "",
            "self_check": clf.check.line()}


def sampler_of(work: WorkConfig) -> FrameSampler:
    return FrameSampler(work.every_n or 1, work.video_fps)


# ---- the per-input work --------------------------------------------------------------------------

@dataclass
class FrameResult:
    """One image or sampled video frame: its faces, their track ids (videos) and probabilities."""

    frame: int | None
    t: float | None
    faces: list[Face]
    probs: np.ndarray | None = None
    tracks: list[int | None] | None = None


def read_image(path: str | Path, detector) -> tuple[np.ndarray, bool]:
    """An image input as ``(pixels, whole)``: a face crop (or any image without a detector) is read
    as gray and classified whole (``whole=True``); a picture is read as BGR for the detector."""
    if detector is None:
        return read_gray(path), True  # the seed's own decoding of a crop, once
    img = read_color(path)
    if is_face_crop(img):
        return read_gray(path), True
    return img, False


def faces_in(image: np.ndarray, detector, still: bool = False) -> tuple[list[Face], list[np.ndarray]]:
    """The faces of a BGR (or gray) image and their gray crops, face after face, each face's views
    together (:meth:`~.faces._Detector.crops`; :func:`per_face` averages their probabilities);
    without a detector, the whole image. ``still``: a picture, not a video frame (it gets the
    detector's second look, and the views)."""
    if detector is None:
        return [Face(0, 0, image.shape[1], image.shape[0])], [to_gray(image)]
    faces = detector.detect(image, still)
    return faces, [c for f in faces for c in detector.crops(image, f, still)]


def per_face(probs: np.ndarray, faces: int) -> np.ndarray:
    """The probabilities of ``faces`` faces from those of their crops (``faces`` times the views
    each, in :func:`faces_in`'s order): each face's views averaged."""
    if not faces:
        return probs[:0]
    views = len(probs) // faces
    return probs if views == 1 else probs.reshape(faces, views, -1).mean(axis=1)


class Pending:
    """Frames whose crops wait for the model; classified together, ``batch_size`` crops a call."""

    def __init__(self, clf: EmotionClassifier):
        self.clf, self.frames, self.prepared, self.crops = clf, [], [], 0

    def add(self, result: FrameResult, prepared) -> None:
        """Queue ``result``'s faces, given as ``clf.prepare(crops)`` (:func:`faces_in`'s crops)."""
        self.frames.append(result)
        self.prepared.append(prepared)
        self.crops += len(prepared)

    def flush(self) -> int:
        """Classify everything queued, set each frame's ``probs``; return the number of faces."""
        if not self.frames:
            return 0
        batch = np.concatenate(self.prepared) if not self.clf.raw else [c for p in self.prepared for c in p]
        probs, k, n = self.clf.predict_prepared(batch), 0, 0
        for r, prepared in zip(self.frames, self.prepared):
            r.probs, k, n = per_face(probs[k:k + len(prepared)], len(r.faces)), k + len(prepared), n + len(r.faces)
        self.frames, self.prepared, self.crops = [], [], 0
        return n


def input_error(source: Source, exc: Exception) -> str:
    """The ``error`` column for an input that raised ``exc``."""
    return str(exc) if isinstance(exc, InputError) else f"{source.path}: {type(exc).__name__}: {exc}"


def input_rows(source: Source, labels: Sequence[str], frames: Sequence[FrameResult], error: str = "") -> list[list[str]]:
    """The CSV rows of one input: per image or sampled frame in order, a row per face, or a ``no_face``
    row; ``error`` adds an error row."""
    rows = []
    for f in frames:
        at = dict(source=source.name, kind=source.kind, labels=labels, frame=f.frame, t=f.t)
        if not f.faces:
            rows.append(make_row(**at, status="no_face"))
            continue
        probs = f.probs.tolist()
        for j, (face, track) in enumerate(zip(f.faces, f.tracks or [None] * len(f.faces))):
            rows.append(make_row(**at, face=j, track=track, box=face.box, det_score=face.score, probs=probs[j]))
    if error:
        rows.append(make_row(source.name, source.kind, labels, status="error", error=error))
    return rows


# ---- the run -------------------------------------------------------------------------------------

def collect(config: BatchConfig, report_skipped: list | None = None) -> list[Source]:
    """The run's inputs, once every output is checked against them (:func:`check_outputs`); none at
    all is an error. Files of the input folders that are not inputs are added to ``report_skipped``."""
    sources = collect_sources(config.inputs, report_skipped)
    if report_skipped:  # this run's own files, when it writes them into an input folder, are no news
        own = {os.path.realpath(p) for p in (config.out, journal_path(config.out), lock_path(config.out),
                                             config.summary) if p is not None}
        report_skipped[:] = [k for k in report_skipped
                             if os.path.realpath(os.fsdecode(unescape_name(k.path))) not in own]
    if not sources:
        raise InputError(f"no images or videos found in {[escape_name(p) for p in config.inputs]}")
    check_outputs(config, sources)
    return sources


#: While a run goes on, finished inputs are written together at most this often: each write costs
#: two fsyncs (a few ms; on 2,000 crops, a sixth of the run when written after every batch). A kill
#: loses at most this long's work, which ``--resume`` does again; the end of a run and Ctrl-C write
#: everything finished.
COMMIT_EVERY_S = 0.5


class Committer:
    """Writes finished inputs through the crash-safe writer, strictly in input order, and counts them."""

    def __init__(self, sources: list[Source], writer: ResultsWriter, report: BatchReport):
        self.sources, self.writer, self.report = sources, writer, report
        self.ready: dict[int, list] = {}  # finished inputs waiting for their turn: index -> rows
        self.next = 0  # index of the next input to write
        self.written = float("-inf")  # time.monotonic() of the last write
        self.cut_off = False  # a commit was interrupted (Ctrl-C, a failed write): write nothing more, so
        # no input is written past one left out, nor after rows the journal does not cover

    def finish(self, i: int, rows: list) -> None:
        self.ready[i] = rows

    def commit_ready(self, force: bool = False) -> None:
        """Write every finished input that is next in input order: now if ``force``, else when the last
        write is :data:`COMMIT_EVERY_S` old."""
        if self.cut_off or (not force and time.monotonic() - self.written < COMMIT_EVERY_S):
            return
        self.cut_off = True  # until written: a Ctrl-C in between leaves the rest to --resume, in order
        finished = []
        while self.next < len(self.sources):
            src = self.sources[self.next]
            if not self.writer.is_done(src.key, src.name):
                if self.next not in self.ready:
                    break
                finished.append((src, self.ready.pop(self.next)))
            self.next += 1
        entries = [(src.name, src.key, source_status(r[-2] for r in rows), rows) for src, rows in finished]
        if entries:
            self.writer.commit(entries)
            self.written = time.monotonic()
        self.cut_off = False
        for name, _, status, rows in entries:
            self.report.status[status] += 1
            if status == "error":
                self.report.failed.append((name, rows[-1][-1]))


def _sha256(path: str | Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:  # a Dask client need not see the workers' files: the path stands for them
        return f"unread: {path}"
    return digest.hexdigest()


def run_settings(work: WorkConfig, models: dict) -> dict:
    """Every setting that changes a run's results, as the journal records it (files by sha256). The
    provider and batch size move probabilities only in the last digits, so they may change on resume."""
    detector = models["detector"]
    settings = {"model_sha256": _sha256(models["model"]), "detector": detector}
    if detector != "none":
        looks = [f"{m:g}x{' mirrored' * mirrored}{f' turned {turn:g}' if turn else ''}"
                 for m, mirrored, turn in second_looks(work.look_again, detector)]
        settings |= {"detector_sha256": _sha256(models["detector_path"]), "det_sizes": list(work.det_sizes),
                     "look_again": work.look_again, "second_looks": looks, "min_face": work.min_face,
                     "max_faces": work.max_faces, "crop": work.crop}
        if work.crop_spread:  # (journals from before the views lack it, as a run without them does)
            settings["crop_spread"] = work.crop_spread
    if detector == "yunet":
        settings["det_threshold"] = work.det_threshold
    return settings | {"every_n": work.every_n or 1, "video_fps": work.video_fps}


def check_outputs(config: BatchConfig, sources: list[Source]) -> None:
    """Before any input is processed: no output may replace an input, another output or a file that
    is not one of fer-batch's own, no annotated copy or plot may land among the inputs, and every
    output folder must be writable. Raises :class:`~fer_export.errors.OutputError` naming the option."""
    try:
        _check_outputs(config, sources)
    except OSError as exc:  # a name too long to look up, a folder that may not be searched
        raise OutputError(f"{printable(str(exc.filename or config.out))}: {exc.strerror or exc}; "
                          "choose another path") from None


def _check_outputs(config: BatchConfig, sources: list[Source]) -> None:
    if config.plots and importlib.util.find_spec("matplotlib") is None:  # found now, not after the whole run
        raise DependencyError("--plots needs matplotlib, which is not installed: pip install matplotlib")
    inputs = {s.key for s in sources}
    out = config.out
    if str(out).endswith(("/", os.sep)) or out.is_dir():
        raise OutputError(f"--out {out} is a folder; give the results file's name, e.g. {out / 'results.csv'}")
    _check_own("--out", out, RESULTS_HEAD, "results CSV")
    files = {"--out": out, "its journal": journal_path(out), "its lock": lock_path(out)}
    for name, path in files.items():
        _check_name_length("--out" if name == "--out" else f"--out {out}: {name}", path)
    if config.summary:
        if config.summary.is_dir():
            raise OutputError(f"--summary {config.summary} is a folder; give the summary file's name")
        _check_own("--summary", config.summary, SUMMARY_HEAD, "summary")
        if _nonempty(config.summary) and not (config.resume or config.overwrite):
            raise OutputError(f"--summary {config.summary} already exists; pass --overwrite to replace it "
                              "(or --resume, which writes it again), or choose another path")
        _check_name_length("--summary", config.summary)
        files["--summary"] = config.summary
    seen: dict[str, str] = {}
    for option, path in files.items():
        real = os.path.realpath(path)
        if real in inputs:
            raise OutputError(f"{option} {path} is one of the inputs, which it would overwrite; choose another path")
        if real in seen:
            raise OutputError(f"{option} {path} is the same file as {seen[real]}; choose another path")
        seen[real] = option
    folders = [p for p in config.inputs if p.is_dir()]
    for option, folder in (("--annotate", config.annotate), ("--plots", config.plots)):
        if folder is None:
            continue
        for s in sources:
            planned = planned_output(folder, s, option)
            real = os.path.realpath(planned)
            if real in inputs or real in seen:
                raise OutputError(f"{option} {folder} would overwrite {printable(str(planned))}, an input or another "
                                  "output; choose an empty folder outside the inputs")
            inside = next((f for f in folders if is_inside(real, f)), None)
            if inside is not None:
                raise OutputError(f"{option} {folder} would write {printable(str(planned))} inside the input folder "
                                  f"{printable(os.path.realpath(inside))}: it would be an input of the next run; "
                                  "choose a folder outside the inputs")
            if not (config.resume or config.overwrite) and os.path.lexists(planned):
                raise OutputError(f"{option} {folder}: {printable(str(planned))} already exists (an earlier run's?); "
                                  "pass --overwrite to replace such files, or choose an empty folder")
            seen[real] = option
    for option, folder in [("--out", out.parent), ("--summary", config.summary and config.summary.parent),
                           ("--annotate", config.annotate), ("--plots", config.plots)]:
        if folder is not None:
            _check_writable(option, Path(folder))


def planned_output(folder: Path, source: Source, option: str) -> Path:
    """Where ``--plots`` (a PNG) or ``--annotate`` (a copy; an MP4 for a video) puts ``source``'s picture."""
    if option == "--plots":
        return output_path(folder, source.out_name + ".png")
    return output_path(folder, source.annotated_name)


def _nonempty(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


def _check_own(option: str, path: Path, head: str, what: str) -> None:
    """An existing ``path`` must be a regular file, and if it has content, one of fer-batch's ``what``
    files (its first line starts with ``head``): --overwrite and --resume replace only those."""
    if not path.exists():
        return
    if not path.is_file():
        raise OutputError(f"{option} {path} is not a regular file; give the {what} file's name")
    if path.stat().st_size == 0:
        return
    with open(path, "rb") as f:
        first = f.read(len(head))
    if first != head.encode():
        raise OutputError(f"{option} {path} exists and is not a fer-batch {what} (its first line is not the "
                          f"{what} header); fer-batch replaces only its own files: choose another path")


def _check_name_length(option: str, path: Path) -> None:
    """A file name longer than its folder takes fails only when first written, which can be after the
    whole run (the summary) or every time again (the journal): refuse it before."""
    try:
        limit = os.pathconf(path.parent if path.parent.is_dir() else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    if len(os.fsencode(path.name)) > limit:
        raise OutputError(f"{option} {printable(str(path))}: the file name is longer than the {limit} bytes "
                          "a name may have here; choose a shorter name")


def _check_writable(option: str, folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".fer-batch-write-test-"):
            pass
    except OSError as exc:
        raise OutputError(f"{option}: cannot write into {folder}: {exc.strerror or exc}; choose a writable folder") from exc


def start(config: BatchConfig, sources: list[Source], models: dict, log: Log, note: str = "",
          skipped: list | None = None):
    """The prologue: say what runs, open the results writer (locked, recording the
    run's settings), count what an earlier run finished. ``models`` is :func:`describe`'s answer.
    Returns ``(committer, report, todo)``, ``todo`` being ``(index, source)`` of the inputs left to do."""
    log(models["self_check"])
    log(f"model {models['model']} on {models['provider']}; detector {models['detector']}"
        + (f" ({models['detector_path']})" if models["detector_path"] else "") + note)
    writer = ResultsWriter(config.out, columns(models["labels"]), config.resume, config.overwrite,
                           run=run_settings(config.work, models))
    report = BatchReport(config.out, models["provider"], models["detector"], inputs=len(sources),
                         skipped=list(skipped or []))
    todo = [(i, s) for i, s in enumerate(sources) if not writer.is_done(s.key, s.name)]
    report.resumed = len(sources) - len(todo)
    for s in sources:
        if writer.is_done(s.key, s.name):
            report.status[writer.status_of(s.key, s.name)] += 1
    return Committer(sources, writer, report), report, todo


def progress_bar(config: BatchConfig, todo: list[tuple[int, Source]]):
    """A tqdm bar over the frames still to do (on a terminal, unless the config says otherwise)."""
    if not (sys.stderr.isatty() if config.progress is None else config.progress):
        return _NoBar()  # tqdm's import alone is a tenth of a second, a tenth of a small run
    from tqdm import tqdm

    sampler = sampler_of(config.work)
    return tqdm(total=sum(count_frames(s, sampler) for _, s in todo), unit="frame", smoothing=0.1,
                dynamic_ncols=True)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def finish(config: BatchConfig, sources: list[Source], report: BatchReport, started: float) -> BatchReport:
    """The epilogue: the summary CSV, plots and annotated copies the config asks for, read back from
    the results CSV; the run's duration."""
    if config.summary:
        with _extra_output(config, "--summary", config.summary):
            report.outputs.append(summarize(config.out, config.summary, report.detector))
    if config.plots:
        from .annotate import plot_videos

        with _extra_output(config, "--plots", config.plots):
            report.outputs += plot_videos(config.out, config.plots, sources)
    if config.annotate:
        from .annotate import annotate_sources

        with _extra_output(config, "--annotate", config.annotate):
            report.outputs += annotate_sources(config.out, sources, config.annotate)
    report.seconds = time.perf_counter() - started
    return report


@contextmanager
def _extra_output(config: BatchConfig, option: str, where: Path):
    """A failed write of an extra output (a full disk): one line saying the results are safe, and how to
    write it once fixed."""
    try:
        yield
    except (OSError, OutputError) as exc:
        cause = exc if isinstance(exc, OSError) else exc.__cause__  # write_file's error wraps the OSError
        if not isinstance(cause, OSError):
            raise
        raise OutputError(f"the results are complete in {config.out}, but {option} failed: "
                          f"{printable(str(cause.filename if cause is exc and cause.filename else where))}: "
                          f"{cause.strerror or cause}; free space or fix the folder, then rerun with --resume "
                          "to write it") from exc
