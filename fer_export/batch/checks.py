"""A batch run's outputs, checked before any input is read (torch-free), with the checks every
command shares (:mod:`fer_export.outputs`): no output may replace an input, another output or a file
that is not one of fer-batch's own, no annotated copy or plot may land among the inputs, and every
output folder must take new files."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import DependencyError, OutputError
from ..outputs import Claims, check_folder_writable, check_name_length, check_own_file, is_inside, starts_with
from .annotate import output_path
from .config import BatchConfig
from .results import RESULTS_HEAD, SUMMARY_HEAD, journal_path, lock_path, printable
from .sources import Source


def check_outputs(config: BatchConfig, sources: list[Source]) -> None:
    """Refuse, with an :class:`~fer_export.errors.OutputError` naming the option, any output of
    ``config`` that would harm an input or another file (see the module's text)."""
    try:
        _check_outputs(config, sources)
    except OSError as exc:  # a name too long to look up, a folder that may not be searched
        raise OutputError(f"{printable(str(exc.filename or config.out))}: {exc.strerror or exc}; "
                          "choose another path") from None


def planned_output(folder: Path, source: Source, option: str) -> Path:
    """Where ``--plots`` (a PNG) or ``--annotate`` (a copy; an MP4 for a video) puts ``source``'s picture."""
    if option == "--plots":
        return output_path(folder, source.out_name + ".png")
    return output_path(folder, source.annotated_name)


def _own(what: str) -> str:
    return (f"is not a fer-batch {what} (its first line is not the {what} header); fer-batch replaces only its "
            "own files: choose another path")


def _check_outputs(config: BatchConfig, sources: list[Source]) -> None:
    if config.plots and importlib.util.find_spec("matplotlib") is None:  # found now, not after the whole run
        raise DependencyError("--plots needs matplotlib, which is not installed: pip install matplotlib")
    out = config.out
    if str(out).endswith(("/", os.sep)) or out.is_dir():
        raise OutputError(f"--out {out} is a folder; give the results file's name, e.g. {out / 'results.csv'}")
    check_own_file("--out", out, starts_with(RESULTS_HEAD.encode()), _own("results CSV"))
    files = {"--out": out, "its journal": journal_path(out), "its lock": lock_path(out)}
    for name, path in files.items():
        check_name_length("--out" if name == "--out" else f"--out {out}: {name}", path, printable(str(path)))
    if config.summary:
        if config.summary.is_dir():
            raise OutputError(f"--summary {config.summary} is a folder; give the summary file's name")
        check_own_file("--summary", config.summary, starts_with(SUMMARY_HEAD.encode()), _own("summary"))
        if config.summary.exists() and config.summary.stat().st_size and not (config.resume or config.overwrite):
            raise OutputError(f"--summary {config.summary} already exists; pass --overwrite to replace it "
                              "(or --resume, which writes it again), or choose another path")
        check_name_length("--summary", config.summary, printable(str(config.summary)))
        files["--summary"] = config.summary
    claims = Claims(resolved=(("an input", s.key) for s in sources))  # each key is the input's real path
    for option, path in files.items():
        holder = claims.holder(path)
        if holder is not None and holder[0] == "an input":
            raise OutputError(f"{option} {path} is one of the inputs, which it would overwrite; choose another path")
        if holder is not None:
            raise OutputError(f"{option} {path} is the same file as {holder[0]}; choose another path")
        claims.claim(option, path)
    folders = [p for p in config.inputs if p.is_dir()]
    for option, folder in (("--annotate", config.annotate), ("--plots", config.plots)):
        if folder is not None:
            _check_pictures(config, sources, option, folder, folders, claims)
    for option, folder in [("--out", out.parent), ("--summary", config.summary and config.summary.parent),
                           ("--annotate", config.annotate), ("--plots", config.plots)]:
        if folder is not None:
            check_folder_writable(option, Path(folder))


def _check_pictures(config: BatchConfig, sources: list[Source], option: str, folder: Path, folders: list[Path],
                    claims: Claims) -> None:
    """Each picture ``option`` writes into ``folder``: not over an input or another output, not inside
    an input folder, not over an earlier run's file unless asked to."""
    for s in sources:
        planned = planned_output(folder, s, option)
        if claims.holder(planned) is not None:
            raise OutputError(f"{option} {folder} would overwrite {printable(str(planned))}, an input or another "
                              "output; choose an empty folder outside the inputs")
        inside = next((f for f in folders if is_inside(planned, f)), None)
        if inside is not None:
            raise OutputError(f"{option} {folder} would write {printable(str(planned))} inside the input folder "
                              f"{printable(os.path.realpath(inside))}: it would be an input of the next run; "
                              "choose a folder outside the inputs")
        if not (config.resume or config.overwrite) and os.path.lexists(planned):
            raise OutputError(f"{option} {folder}: {printable(str(planned))} already exists (an earlier run's?); "
                              "pass --overwrite to replace such files, or choose an empty folder")
        claims.claim(option, planned)
