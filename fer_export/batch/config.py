"""What a batch run is asked to do: one frozen config made of named, frozen parts.

:class:`WorkConfig` is what turns one input into faces and probabilities: its parts are the model,
the detection, the crops and the frame sampling (:mod:`.settings`), and each stage takes only its
part. It is all a Dask worker receives, and, being hashable, the key under which a worker keeps its
loaded models. :class:`BatchConfig` adds what one run reads and writes. Both are validated when they
are made, so a Python caller meets the same rules as the CLI; :meth:`BatchConfig.build` takes the
CLI's flat options and gives each to the part that owns it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError
from .settings import (OWNER, PARTS, CropSettings, DetectionSettings, ModelSettings, SamplingSettings,
                       raise_problems, whole_numbers)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS has one, else every CPU)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


#: Decode/detect threads of the local runner.
DEFAULT_WORKERS = min(4, usable_cpus())
#: Workers (threads, or local Dask processes) allowed per usable CPU, and at least MIN_MAX_WORKERS: each
#: holds an input's decoded pixels (and a Dask process its own models), so memory grows with them,
#: while more workers than cores only wait for each other.
WORKERS_PER_CPU = 2
MIN_MAX_WORKERS = 4


def max_workers() -> int:
    """The most local workers a run may have on this machine (:data:`WORKERS_PER_CPU`)."""
    return max(MIN_MAX_WORKERS, WORKERS_PER_CPU * usable_cpus())


def check_workers(n: int, what: str) -> int:
    """``n`` local workers, or an :class:`InputError` saying the most this machine allows."""
    if not 1 <= n <= max_workers():
        raise InputError(f"{what} must be 1 to {max_workers()} on this machine ({WORKERS_PER_CPU} per usable CPU, "
                         f"{usable_cpus()} CPUs; at least {MIN_MAX_WORKERS}): more only take memory, got {n}")
    return n


@dataclass(frozen=True, kw_only=True)
class WorkConfig:
    """How each input is turned into rows: the model, the detection, the crops and the frames to use."""

    model: ModelSettings = field(default_factory=ModelSettings)  # which model classifies, where
    detection: DetectionSettings = field(default_factory=DetectionSettings)  # how faces are found
    crops: CropSettings = field(default_factory=CropSettings)  # how a face is cut out, in how many views
    sampling: SamplingSettings = field(default_factory=SamplingSettings)  # which video frames are read

    def __post_init__(self):
        for name, kind in PARTS.items():
            if not isinstance(getattr(self, name), kind):
                raise InputError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}; "
                                 "WorkConfig.build(**options) takes flat options")

    @classmethod
    def build(cls, **options: Any) -> "WorkConfig":
        """The work from flat options (``detector="haar"``, ``every_n=5``, ...), each given to its part;
        None keeps the default. Every part's problems are reported together."""
        unknown = sorted(k for k in options if k not in OWNER)
        if unknown:
            raise InputError(f"unknown work options {unknown}")
        parts, problems = {}, []
        for name, kind in PARTS.items():
            try:
                parts[name] = kind(**{k: v for k, v in options.items() if OWNER[k] == name and v is not None})
            except InputError as exc:
                problems.append(str(exc))
        raise_problems(problems)
        return cls(**parts)


@dataclass(frozen=True, kw_only=True)
class BatchConfig:
    """One batch run: its inputs, its outputs and how it treats an earlier run's results."""

    inputs: tuple[Path, ...]  # files and folders (searched recursively)
    out: Path  # results CSV
    work: WorkConfig = field(default_factory=WorkConfig)  # what each input goes through
    workers: int = DEFAULT_WORKERS  # local decode/detect threads
    resume: bool = False  # continue an interrupted run writing to `out`
    retry_failed: bool = False  # with resume: inputs that failed in the earlier run are run again, their rows
    # moved to the end of `out` (without it a resumed run keeps its failed inputs as they are)
    overwrite: bool = False  # replace an existing `out`
    summary: Path | None = None  # per-input (and per-track) summary CSV
    annotate: Path | None = None  # folder for copies with boxes and labels drawn
    plots: Path | None = None  # folder for emotion-over-time plots of videos
    progress: bool | None = None  # tqdm bar; None = only on a terminal

    def __post_init__(self):
        if isinstance(self.out, str) and self.out.endswith(("/", os.sep)):  # Path() would drop the slash
            raise InputError(f"--out {self.out} names a folder; give the results file's name, e.g. {self.out}results.csv")
        inputs = (self.inputs,) if isinstance(self.inputs, (str, bytes, os.PathLike)) else self.inputs
        object.__setattr__(self, "inputs", tuple(Path(os.fsdecode(p)) for p in inputs))
        for name in ("resume", "overwrite", "retry_failed"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.progress is not None and not isinstance(self.progress, bool):
            raise InputError(f"progress must be True, False or None, got {self.progress!r}")
        whole_numbers(self, ("workers",))
        named = [("an input", p) for p in self.inputs] + [(f"--{n}", getattr(self, n)) for n in ("out", "summary",
                                                                                                 "annotate", "plots")]
        for what, p in named:
            if p is not None and "\x00" in os.fsdecode(p):
                raise InputError(f"{what} {os.fsdecode(p)!r} contains a NUL byte, which no file name may")
        for name in ("out", "summary", "annotate", "plots"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _through_link(Path(value)))
        raise_problems(_batch_problems(self))

    @classmethod
    def build(cls, inputs: Sequence[str | Path] | str | Path, out: str | Path, **options: Any) -> "BatchConfig":
        """A config from flat options (the CLI's, or a caller's): each goes to the part that owns it
        (:data:`~.settings.OWNER`; the rest are the run's own). Options given as None keep their default."""
        given = {k: v for k, v in options.items() if v is not None}
        run_names = {f.name for f in fields(cls)} - {"inputs", "out", "work"}
        unknown = set(given) - set(OWNER) - run_names
        if unknown:
            raise InputError(f"unknown batch options {sorted(unknown)}")
        work = WorkConfig.build(**{k: v for k, v in given.items() if k in OWNER})
        return cls(inputs=inputs, out=out, work=work, **{k: v for k, v in given.items() if k in run_names})


def _through_link(path: Path) -> Path:
    """``path``, or where it points when it is a symbolic link: the lock, the journal and the writes
    then all belong to the one file, however it is named (two runs, one through a link, would
    otherwise write the same CSV under two locks)."""
    try:
        return Path(os.path.realpath(path)) if path.is_symlink() else path
    except OSError:  # a name too long to look up: check_outputs reports it
        return path


def _batch_problems(c: BatchConfig) -> list[str]:
    p = []
    if not c.inputs:
        p.append("no inputs given")
    if c.resume and c.overwrite:
        p.append("use either --resume or --overwrite, not both")
    if c.retry_failed and not c.resume:
        p.append("--retry-failed runs again the failed inputs of an earlier run: add --resume")
    try:
        check_workers(c.workers, "workers")
    except InputError as exc:
        p.append(str(exc))
    return p
