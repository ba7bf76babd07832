"""``fer-batch``: classify the emotion of every face in images and videos into a CSV (torch-free)."""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import click

from ..batch import BatchConfig, run_batch
from ..batch.config import MIN_MAX_WORKERS, WORKERS_PER_CPU
from ..batch.dask import local_workers
from ..batch.faces import YUNET_ENV, yunet_cache_path
from ..batch.settings import (CROP_SPREAD, CROPS, DETECTORS, MAX_BATCH_SIZE, MAX_CROP_SPREAD, MAX_DET_SIZE, MAX_VIDEO_FPS,
                              MIN_DET_SIZE, MIN_DET_THRESHOLD, OWNER, CropSettings, DetectionSettings, ModelSettings,
                              SamplingSettings)
from ..errors import InputError
from ..runtime import BUNDLED_MODELS, DEFAULT_TIER, PROVIDERS
from . import EXIT_INTERRUPTED, FiniteFloat, UserError, echo_err, exit_with, library_errors

#: Each part's defaults, for the help texts (the parts own them).
MODEL, DETECTION, CROP, SAMPLING = ModelSettings(), DetectionSettings(), CropSettings(), SamplingSettings()



class _Path(click.Path):
    """A path option or argument; a name with a NUL byte (which no file has) is refused here, in one line."""

    def convert(self, value, param, ctx):
        if "\x00" in str(value):
            self.fail(f"{value!r} contains a NUL byte, which no file name may", param, ctx)
        return super().convert(value, param, ctx)


_path = _Path(path_type=Path)
_EPILOG = f"""\b
Exit status: 0 every input was read; 1 some inputs failed (they have `error` rows, everything
else was written); 2 usage or environment error (bad option, missing model, unavailable provider,
existing or locked --out, an output that would overwrite an input, a full disk); 130 interrupted
(Ctrl-C: what finished is kept, continue with --resume).
\b
YuNet model file, the first found: --yunet-model, ${YUNET_ENV},
{yunet_cache_path()}, or the one bundled with fer-export (OpenCV zoo, MIT).
Any YuNet file will do: one with the 2023+ outputs (cls_8 ... kps_32, e.g. the zoo's
2023mar) runs on onnxruntime, another through cv2.FaceDetectorYN.
"""


#: --help's headings, in order, and the options under each: the run's own, then one heading per part of
#: the settings (its options are the part's fields, so an option added to a part is listed there).
_PART_TITLES = {"model": "Model", "detection": "Detection", "crops": "Crops", "sampling": "Video frames"}
SECTIONS = {"outputs": "Outputs", **_PART_TITLES, "running": "Running"}
_RUN_OPTIONS = {"out": "outputs", "summary": "outputs", "annotate": "outputs", "plots": "outputs",
                "resume": "outputs", "retry_failed": "outputs", "overwrite": "outputs", "workers": "running", "dask_cluster": "running",
                "scheduler": "running", "progress": "running", "help": "running"}


def section_of(name: str) -> str | None:
    """The --help heading of the option whose parameter is ``name``; None for one that has none."""
    key = OWNER.get(name) or _RUN_OPTIONS.get(name)
    return SECTIONS.get(key) if key else None


class SectionedCommand(click.Command):
    """A command whose --help lists its options under headings, in :data:`SECTIONS` order (click itself
    prints one "Options" list); an option without a heading would be listed under "Other options"."""

    def format_options(self, ctx, formatter):
        sections: dict[str, list] = {title: [] for title in (*SECTIONS.values(), "Other options")}
        help_option = self.get_help_option(ctx)
        for param in self.get_params(ctx):
            row = None if isinstance(param, click.Argument) else param.get_help_record(ctx)
            if row is not None:
                name = "help" if param is help_option else param.name
                sections[section_of(name) or "Other options"].append(row)
        for title, rows in sections.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _quiet_decoders() -> None:
    """Silence what OpenCV and Pillow print about the inputs they decode ("[ERROR:0@0.2] global
    grfmt_tiff.cpp ...", "Corrupt EXIF data"): fer-batch says what went wrong with an input in its
    own words, in that input's error row. Done here, at the command's edge: a library must not change
    the process's logging."""
    import warnings

    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    warnings.filterwarnings("ignore", module=r"PIL(\.|$)")


def _local_cluster(ctx, param, value: str | None) -> str | None:
    """--dask takes ``local`` or ``local:N``."""
    try:
        if value is not None and local_workers(value) is None:
            raise InputError(f"expected local or local:N (N >= 1 worker processes), got {value!r}")
    except InputError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _model(ctx, param, value):
    """--model: a bundled model's name, or an existing file."""
    try:
        if value is None or value in BUNDLED_MODELS or Path(value).is_file():
            return value
    except OSError as exc:  # a name too long to look up
        raise click.BadParameter(f"{value!r}: {exc.strerror or exc}") from None
    raise click.BadParameter(f"{value!r} is neither a bundled model ({', '.join(BUNDLED_MODELS)}) nor a file")


@click.command(cls=SectionedCommand, epilog=_EPILOG)
@click.argument("inputs", nargs=-1, required=True, type=_Path(exists=True, path_type=Path))
@click.option("--out", "-o", required=True, type=_Path(), help="Results CSV: one row per face per image or frame.")
@click.option("--model", callback=_model, metavar="accurate|fast|PATH",
              help="A bundled model by name (accurate: ResNet18, the most accurate; fast: several times faster, "
                   "a few points less accurate), or an ONNX model exported by `fer-export onnx`.  "
                   f"[default: {DEFAULT_TIER}]")
@click.option("--provider", type=click.Choice(PROVIDERS), default=MODEL.provider, show_default=True,
              help="onnxruntime provider; auto = CUDA when usable, else CPU.")
@click.option("--no-self-check", "self_check", is_flag=True, flag_value=False, default=MODEL.self_check,
              help="Run a model file that fails its self-check on this machine anyway (the check runs the "
                   "probe faces the file carries; a bundled model that fails falls back to a correct path).")
@click.option("--batch-size", type=click.IntRange(1, MAX_BATCH_SIZE), default=MODEL.batch_size, show_default=True,
              help=f"Face crops per model call, gathered across files and frames (at most {MAX_BATCH_SIZE}: "
                   "memory grows with it).")
@click.option("--detector", type=click.Choice(DETECTORS), default=DETECTION.detector, show_default=True,
              help="auto = YuNet (its file ships with fer-export; Haar only if it is missing); none = classify "
                   "each image whole. Images with both sides <= 64 px are always classified whole.")
@click.option("--yunet-model", type=_Path(exists=True, dir_okay=False, path_type=Path),
              help=f"Another YuNet .onnx file (any version; see above).  "
                   f"[default: ${YUNET_ENV}, the user cache, else the bundled file]")
@click.option("--det-threshold", type=FiniteFloat(MIN_DET_THRESHOLD, 1), default=DETECTION.det_threshold,
              show_default=True, help="YuNet score threshold.")
@click.option("--det-size", "det_sizes", type=click.IntRange(MIN_DET_SIZE, MAX_DET_SIZE), multiple=True, default=DETECTION.det_sizes,
              show_default=True,
              help="Long side (px) images are downscaled to for detection; repeat for several scales "
                   "(e.g. --det-size 640 --det-size 1280 for crowds of small faces).")
@click.option("--det-nms", type=FiniteFloat(0, 1, max_open=True), default=DETECTION.det_nms, show_default=True,
              help="Two face boxes that overlap by more than this (intersection over union, in [0, 1)) are one "
                   "face, and the higher scored one is kept: YuNet's own boxes, and a face found at several "
                   "--det-size. Lower merges more (0: no two kept boxes overlap); higher keeps faces that "
                   "overlap, such as a crowd's.")
@click.option("--look-again", type=FiniteFloat(1, 4), default=DETECTION.look_again, show_default=True,
              help="A picture (not a video frame) in which no face is found is searched again, enlarged this "
                   "many times, then halfway to it, each as it is and mirrored, then turned 30 degrees either way "
                   "(Haar: enlarged only): small, blurred and tilted faces are often found then. 1 = off.")
@click.option("--min-face", type=click.IntRange(0), default=DETECTION.min_face, show_default=True,
              help="Ignore faces whose box is smaller than this (source px, shorter side).")
@click.option("--max-faces", type=click.IntRange(1), default=None,
              help="Keep at most N faces per image or frame: the largest boxes.  [default: all]")
@click.option("--full-detect-every", type=click.IntRange(1), default=DETECTION.full_detect_every, show_default=True,
              metavar="K", help="Videos: search the whole frame every K sampled frames (a face entering is found "
                                "within K), and when a face is lost or the scene cuts; in between, look for each "
                                "face around its last box: detection about twice as fast, but the emotion of a "
                                "few percent of rows differs from K=1, the whole of every frame.")
@click.option("--crop", type=click.Choice(CROPS), default=CROP.crop, show_default=True,
              help="auto = frame each face as the model's training crops were, when the model file says how "
                   "(else box); box = a square around the detector's box with 10% margin.")
@click.option("--crop-spread", type=FiniteFloat(0, MAX_CROP_SPREAD), default=None,
              help="Pictures (not video frames), framed crops: also classify each face at 1 - S and 1 + S times "
                   "its crop's side and average the three (S: how much the training crops' framing varies; "
                   f"FER2013's: {CROP_SPREAD:.0%}). 0 = one crop. Refused with --crop box, which cuts one square "
                   f"per face.  [default: {CROP_SPREAD}]")
@click.option("--every-n", type=click.IntRange(1), default=None, help="Use every N-th video frame.  [default: 1]")
@click.option("--video-fps", type=FiniteFloat(0, MAX_VIDEO_FPS, min_open=True), default=None,
              help="Use this many video frames per second instead of --every-n.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help=f"Decode/detect threads, at most {WORKERS_PER_CPU} per CPU (at least {MIN_MAX_WORKERS}).  "
                   "[default: min(4, CPUs)]")
@click.option("--summary", type=_path, help="Also write a summary CSV: one row per input and per video track.")
@click.option("--annotate", type=_path, help="Also write copies of the inputs with boxes and labels to this folder.")
@click.option("--plots", type=_path, help="Also write an emotion-over-time PNG per video here (needs matplotlib).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run into the same --out, skipping finished inputs.")
@click.option("--retry-failed", is_flag=True,
              help="With --resume: run again the inputs that failed (without it they keep their error rows); "
                   "their old rows are taken out, and their new rows follow the others'.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out (otherwise refused).")
@click.option("--dask", "dask_cluster", metavar="local[:N]", callback=_local_cluster,
              help="Run on a new local Dask cluster of N worker processes [default N: one per CPU] "
                   "(needs fer-export[dask]). Same CSV as without it.")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run on the Dask cluster whose scheduler is at ADDRESS (tcp://HOST:8786). Inputs, model and "
                   "YuNet file must be at the same paths on every worker.")
@click.option("--progress/--no-progress", default=None, help="Progress bar.  [default: on a terminal]")
@library_errors
def main(inputs, out, dask_cluster, scheduler, **options):
    """Classify the emotion of every face in INPUTS (images, videos, folders searched recursively).

    Writes one CSV row per face per image or video frame, a `no_face` row for an image or frame
    without one and an `error` row for an unreadable input, so every input appears at least once.
    Rows are written and fsynced input by input: an interrupted run continues with --resume.
    """
    if dask_cluster and scheduler:
        raise UserError("use either --dask or --scheduler, not both")
    _quiet_decoders()
    interrupted = f"the inputs finished so far are kept in {out}; rerun the same command with --resume"
    restore = None if dask_cluster or scheduler else _second_ctrl_c_exits(f"interrupted again, stopped at once: {interrupted}")
    try:
        report = run_batch(BatchConfig.build(inputs, out, **options), dask_cluster or scheduler, log=echo_err)
    except KeyboardInterrupt:  # the handler stays: a Ctrl-C while the interpreter shuts down exits at once too
        echo_err(f"interrupted: {interrupted}")
        exit_with(EXIT_INTERRUPTED)
    if restore:
        restore()
    for line in report.lines():
        echo_err(line)
    exit_with(report.return_code)


def _second_ctrl_c_exits(message: str):
    """Make a second Ctrl-C end the process at once; return the function that undoes this.

    The first Ctrl-C stops the run cleanly: what finished is written, the worker threads finish their
    step (a frame, a run of images) and are joined. A second one during that, or while the interpreter
    shuts down, would otherwise interrupt the cleanup and end the process with a traceback, or abort it
    ("terminate called without an active exception": a thread still inside OpenCV or onnxruntime when
    the interpreter shuts down, which Python before 3.14 ends by unwinding native frames). Ending at
    once is what kill -9 does, and is safe: results are fsynced input by input, and --resume redoes
    the rest. (Not with Dask, whose worker processes must be shut down.)"""
    if threading.current_thread() is not threading.main_thread():
        return None
    pressed = False

    def handler(signum, frame):
        nonlocal pressed
        if pressed:
            os.write(2, f"{message}\n".encode())
            os._exit(EXIT_INTERRUPTED)
        pressed = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    main()
