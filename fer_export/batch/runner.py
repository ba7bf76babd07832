"""The shape of every batch run (torch-free), which both runners fill in: list the inputs and check
the outputs, open the models, say what runs, open the results (locked, journalled), do the work,
write what finished in order, then the extras. :mod:`.local` (threads) and :mod:`.dask` (a cluster)
differ only in where the models open and the work runs: each is a :class:`Place`.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Protocol

from ..errors import InputError, OutputError
from .checks import check_outputs
from .commit import Committer, run_settings
from .config import BatchConfig
from .per_input import frame_sampler
from .results import BatchReport, ResultsWriter, columns, journal_path, lock_path, printable, summarize
from .sources import Source, collect_sources, count_frames, escape_name, unescape_name

Log = Callable[[str], None]
Todo = list[tuple[int, Source]]  # (index, source) of the inputs left to do


class Place(Protocol):
    """Where a run's models open and its work runs."""

    note: str  # added to the run's first line, once the models are open (e.g. the Dask scheduler)

    def models(self) -> dict:
        """:func:`~.models.describe` of the models, once they are open."""

    def process(self, todo: Todo, sources: list[Source], committer: Committer, bar) -> dict[str, float]:
        """Do ``todo``, hand each finished input to ``committer`` and commit as it goes; return the
        seconds spent per step. A Ctrl-C propagates; the caller writes what finished."""

    def close(self) -> None:
        """Release what the place holds (threads, a cluster), after the results are closed."""


def run_in(place: Place, config: BatchConfig, log: Log, started: float | None = None) -> BatchReport:
    """Run ``config`` in ``place``, which was made (and may have started opening the models) at
    ``started``; closes ``place``."""
    started = time.perf_counter() if started is None else started
    try:
        skipped: list = []
        sources = collect(config, skipped)
        committer, report, todo = start(config, sources, place.models(), log, place.note, skipped)
        bar = progress_bar(config, todo)
        try:
            timings = place.process(todo, sources, committer, bar)
        except KeyboardInterrupt:  # keep what finished before Ctrl-C
            committer.commit_ready(force=True)
            raise
        finally:  # the results first: a second Ctrl-C while the workers finish their step loses nothing
            committer.writer.close()
            bar.close()
    finally:
        place.close()
    report.timings = {k: round(v, 3) for k, v in timings.items()}
    return finish(config, sources, report, started)


def collect(config: BatchConfig, report_skipped: list | None = None) -> list[Source]:
    """The run's inputs, once every output is checked against them (:func:`~.checks.check_outputs`);
    none at all is an error. Files of the input folders that are not inputs are added to ``report_skipped``."""
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


def start(config: BatchConfig, sources: list[Source], models: dict, log: Log, note: str = "",
          skipped: list | None = None) -> tuple[Committer, BatchReport, Todo]:
    """The prologue: say what runs, open the results writer (locked, recording the run's settings),
    count what an earlier run finished. ``models`` is :func:`~.models.describe`'s answer."""
    log(models["self_check"])
    log(f"model {models['model']} on {models['provider']}; detector {models['detector']}"
        + (f" ({models['detector_path']})" if models["detector_path"] else "") + note)
    writer = ResultsWriter(config.out, columns(models["labels"]), config.resume, config.overwrite,
                           run=run_settings(config.work.sampling, models), retry_failed=config.retry_failed)
    if writer.retried:
        log(f"--retry-failed: {len(writer.retried)} inputs that failed are run again; their rows now follow the others'")
    report = BatchReport(config.out, models["provider"], models["detector"], inputs=len(sources),
                         skipped=list(skipped or []))
    todo = [(i, s) for i, s in enumerate(sources) if not writer.is_done(s.key, s.name)]
    report.resumed = len(sources) - len(todo)
    for s in sources:
        if writer.is_done(s.key, s.name):
            report.status[writer.status_of(s.key, s.name)] += 1
    return Committer(sources, writer, report), report, todo


def progress_bar(config: BatchConfig, todo: Todo):
    """A tqdm bar over the frames still to do (on a terminal, unless the config says otherwise)."""
    if not (sys.stderr.isatty() if config.progress is None else config.progress):
        return _NoBar()  # tqdm's import alone takes a noticeable share of a small run
    from tqdm import tqdm

    sampler = frame_sampler(config.work.sampling)
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
