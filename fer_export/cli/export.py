"""``fer-export``: export a checkpoint to ONNX / TorchScript, gated by parity, and verify artifacts.

Every export is checked against PyTorch before it is put in place: a failed artifact is kept as
``NAME.failed.onnx`` / ``NAME.failed.pt`` and the command exits 1. Exit codes: 0 ok, 1 a parity or
accuracy check failed, 2 usage or input error (missing or unreadable checkpoint, bad folder, an output that
would overwrite an input or cannot be written, a full disk), 130 interrupted.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..export.flip import FLIP_BELOW
from ..spec import TTA_MODES, UNCERTAIN
from ..outputs import check_outputs, write_file
from . import EXIT_FAILED, EXIT_OK, FiniteFloat, exit_with, library_errors

_path = click.Path(path_type=Path)
_data = click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
                     help="Folder of face images for the parity check (Kaggle layout or any images; "
                          "64 are sampled). Default: synthetic face-like images.")
_TTA_HELP = ("Average logits over views inside the graph. hflip: the image and its mirror (2x compute); tencrop: 4 "
             "corner crops and the centre crop (90% of the side, resized back) and their mirrors (10x compute).")
_tta = click.option("--tta", type=click.Choice([m for m in TTA_MODES if m != UNCERTAIN]), default="none",
                    show_default=True, help=_TTA_HELP)
_onnx_tta = click.option("--tta", type=click.Choice(TTA_MODES), default="none", show_default=True,
                         help=_TTA_HELP + f" {UNCERTAIN}: the mirror too, only for the faces whose top probability "
                                          "is below --flip-below (the bundled fast model: about a third of faces). "
                                          "Given an .onnx file, adds it to that file (fp32 or int8): NAME.flip.onnx.")
_json = click.option("--json", "json_out", type=_path, help="Also write the report as JSON to this file.")


def _calib(required: bool):
    return click.option("--calib", type=click.Path(exists=True, file_okay=False, path_type=Path), required=required,
                        help="Folder of real face images to calibrate int8 on (256 are sampled).")


def _int8_judging(fn):
    """The options that tune int8 calibration and judge its accuracy (``int8`` and ``onnx --int8``)."""
    for option in reversed([
        click.option("--calib-tries", type=click.IntRange(1, 16), default=1, show_default=True,
                     help="Calibrate int8 on this many samples of --calib and keep the copy whose probabilities are "
                          "closest to fp32's on 256 other --calib images (MinMax calibration is sensitive to its "
                          "sample)."),
        click.option("--eval-data", type=click.Path(exists=True, file_okay=False, path_type=Path),
                     help="Labelled folder (<emotion>/*.jpg) to judge int8 accuracy on. Default: --calib."),
        click.option("--eval-limit", type=click.IntRange(min=1), help="Use at most this many images per class of "
                                                                      "--eval-data."),
        click.option("--max-drop", type=FiniteFloat(min=0), help="Largest accepted int8 accuracy drop in points, 0 or "
                                                                 "more (default 1.0)."),
        click.option("--accept-drop", is_flag=True, help="Keep the int8 model even if its accuracy drops more."),
    ]):
        fn = option(fn)
    return fn


def _deprecated(old: str, new: str) -> None:
    from . import echo_err

    echo_err(f"deprecated: `fer-export onnx MODEL.onnx {old}` is `fer-export {new}`; the old form will go")


def _batch(value: str):
    if value == "dynamic":
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter("use 'dynamic' or a positive integer") from None


def _check_paths(inputs: list[tuple[str, Path | None]], artifacts: list[tuple[Path, str]], json_out: Path | None):
    """Before any work: no file the command may write (each artifact, its ``.failed`` copy, the --json
    report) is an input or another output, and each can be written."""
    from ..export import gate_outputs

    outputs = [o for path, what in artifacts for o in gate_outputs(path, what)]
    check_outputs(inputs, outputs + [("--json", json_out)])


def _finish(results: list, json_out: Path | None) -> None:
    """Print every result, write the JSON report, exit 0 when all passed else 1."""
    for r in results:
        click.echo(r.summary())
    if json_out:
        write_file(json_out, json.dumps([r.to_dict() for r in results], indent=2))
    exit_with(EXIT_OK if all(r.passed for r in results) else EXIT_FAILED)


def _run(fn, *args, **kwargs):
    """Call one export; a parity/accuracy failure becomes its (failed) result, not an exception."""
    from ..errors import ParityError

    try:
        return fn(*args, **kwargs)
    except ParityError as exc:
        return exc.report


#: What each command makes from what, and the library function that does it (a command calls one).
PIPELINES = (
    ("onnx", "checkpoint", "NAME.onnx (and NAME.int8.onnx with --int8)", "export.export (+ export_int8)"),
    ("torchscript", "checkpoint", "NAME.pt", "export.export"),
    ("all", "checkpoint", "NAME.onnx and NAME.pt", "export.export"),
    ("int8", "fp32 .onnx", "NAME.int8.onnx", "export.export_int8"),
    ("flip", ".onnx", "NAME.flip.onnx", "export.export_flip"),
    ("embed", ".onnx", "NAME.embed.onnx", "export.embed.embed_onnx"),
    ("fp16", "fp32 .onnx", "NAME.fp16.onnx", "export.fp16.export_fp16"),
    ("requantize", "int8 .onnx", "NAME.7bit.onnx", "export.export_requantized"),
    ("stamp", ".onnx", "NAME.stamped.onnx", "export.stamp_probe"),
    ("verify", ".onnx or .pt", "a report", "export.verify.self_check_file / verify"),
)

HELP = """Export a checkpoint to ONNX or TorchScript behind a parity gate, and verify artifacts.

Every export is checked against PyTorch before it is put in place: a failed artifact is kept as
NAME.failed.onnx / NAME.failed.pt and the command exits 1. Exit codes: 0 ok, 1 a parity or
accuracy check failed, 2 usage or input error (missing or unreadable checkpoint, bad folder, an output that
would overwrite an input or cannot be written, a full disk), 130 interrupted.
"""


def _pipelines_table() -> str:
    rows = [f"  {name:<12}{source:<13}{made}" for name, source, made, _ in PIPELINES]
    return "\b\nCommands, what each takes and writes:\n" + "\n".join(rows)


@click.group(help=HELP, epilog=_pipelines_table())
@click.version_option(package_name="fer-export")
def main():
    pass


@main.command(help="Export CHECKPOINT to ONNX (outputs `logits` and `probs`; input `input`, float32 N,C,H,W). "
                   "Writes CHECKPOINT's stem + .onnx unless -o is given. An .onnx file goes to the command of "
                   "what is made from it: int8, flip or embed (the old forms `onnx MODEL.onnx --int8`, "
                   "`--tta hflip-uncertain` and `--with-preprocessing` still work, deprecated).")
@click.argument("checkpoint", type=_path)
@click.option("-o", "--output", type=_path, help="Output .onnx path.")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset (18 or newer).")
@click.option("--batch", default="dynamic", show_default=True, callback=lambda c, p, v: _batch(v),
              help="'dynamic' or a fixed batch size.")
@click.option("--with-preprocessing", is_flag=True,
              help="Graph takes raw uint8 grayscale crops (N,1,H,W), any H,W from 2 to 8192 px, and resizes "
                   "and normalises inside: the one file to embed (Node.js, browsers; see examples/).")
@click.option("--int8", is_flag=True, help="Also write NAME.int8.onnx: static QDQ int8 with 7-bit weights, "
                                           "calibrated on --calib (see `fer-export int8`).")
@_calib(required=False)
@_int8_judging
@_onnx_tta
@click.option("--flip-below", type=FiniteFloat(min=0), help=f"With --tta {UNCERTAIN}: mirror the faces whose top "
                                                             f"probability is below this, in (0, 1] (default {FLIP_BELOW}).")
@_data
@_json
@library_errors
def onnx(checkpoint, output, opset, batch, with_preprocessing, int8, calib, calib_tries, eval_data, eval_limit,
         max_drop, accept_drop, tta, flip_below, data, json_out):
    from ..export import check_suffix, export, export_int8, output_path, sibling

    if flip_below is not None and tta != UNCERTAIN:
        raise click.UsageError(f"--flip-below needs --tta {UNCERTAIN}")
    if flip_below is not None and not 0 < flip_below <= 1:
        raise click.UsageError(f"--flip-below must be in (0, 1], got {flip_below}")
    if tta == UNCERTAIN and int8:
        raise click.UsageError(f"--tta {UNCERTAIN} is added to a finished file, after int8 calibration on the plain "
                               f"graph: export with --int8 first, then fer-export flip NAME.int8.onnx")
    if int8 and not calib:
        raise click.UsageError("--int8 needs --calib DIR (real face images to calibrate on)")
    int8_only = [name for name, given in (("--calib", calib), ("--eval-data", eval_data), ("--eval-limit", eval_limit),
                                          ("--max-drop", max_drop is not None), ("--accept-drop", accept_drop),
                                          ("--calib-tries", calib_tries != 1)) if given]
    if int8_only and not int8:
        raise click.UsageError(f"{', '.join(int8_only)} need{'s' if len(int8_only) == 1 else ''} --int8")
    if int8:
        from ..export.quantize import check_calib

        check_calib(calib, calib_tries)
    inputs = [("the model", checkpoint)]
    if checkpoint.suffix.lower() == ".onnx" and tta == UNCERTAIN:
        _deprecated(f"--tta {UNCERTAIN}", "flip MODEL.onnx")
        _flip(checkpoint, output, with_preprocessing or batch != "dynamic" or opset != 18, flip_below, data, json_out)
        return
    if checkpoint.suffix.lower() == ".onnx":
        graph_options = tta != "none" or batch != "dynamic" or opset != 18  # these need a checkpoint
        if int8 and not (with_preprocessing or output or graph_options):
            _deprecated("--int8", "int8 MODEL.onnx")
            _check_paths(inputs, [(sibling(checkpoint, "int8"), "the int8 model")], json_out)
            _finish([_run(export_int8, None, checkpoint, calib, eval_data=eval_data, data=data, max_drop_pp=max_drop,
                          accept_drop=accept_drop, limit_per_class=eval_limit, calib_tries=calib_tries)], json_out)
            return
        if with_preprocessing:
            _deprecated("--with-preprocessing", "embed MODEL.onnx")
        _embed(checkpoint, output, with_preprocessing, int8 or graph_options, data, json_out)
        return
    if int8 and (with_preprocessing or batch != "dynamic"):
        raise click.UsageError("--int8 works on the plain dynamic-batch graph; drop --with-preprocessing/--batch")
    final = output_path("onnx", checkpoint, output)
    _check_paths(inputs, [(final, "the onnx export")] + ([(sibling(final, "int8"), "the int8 model")] if int8 else []),
                 json_out)
    if output:
        check_suffix("onnx", output)
    results = [_run(export, "onnx", checkpoint, output, data=data, tta=tta, flip_below=flip_below, opset=opset,
                    batch=batch, with_preprocessing=with_preprocessing)]
    if int8 and results[0].passed:
        results.append(_run(export_int8, checkpoint, results[0].path, calib, eval_data=eval_data, data=data,
                            max_drop_pp=max_drop, accept_drop=accept_drop, limit_per_class=eval_limit,
                            calib_tries=calib_tries))
    _finish(results, json_out)


def _flip(model, output, other_options, flip_below, data, json_out):
    """`fer-export flip MODEL.onnx`: a copy of an ONNX file that mirrors its uncertain faces."""
    from ..export import check_suffix, export_flip, sibling

    if other_options:
        raise click.UsageError(f"{model} is already ONNX: --tta {UNCERTAIN} adds the flip to it as it is (with "
                               "-o/--flip-below/--data/--json); --with-preprocessing/--batch/--opset are separate steps")
    final = output or sibling(model, "flip")
    if output:
        check_suffix("onnx", output)
    _check_paths([("the model", model)], [(final, "the flip model")], json_out)
    _finish([_run(export_flip, model, final, flip_below=FLIP_BELOW if flip_below is None else flip_below, data=data)],
            json_out)


def _embed(model, output, with_preprocessing, other_options, data, json_out):
    """`fer-export embed MODEL.onnx`: the embeddable uint8-input graph of an ONNX file."""
    from ..export import check_suffix
    from ..export.embed import embed_onnx, embed_path

    if not with_preprocessing or other_options:
        raise click.UsageError(f"{model} is already ONNX: what is made from it has its own command: fer-export int8, "
                               "flip or embed MODEL.onnx; --tta/--batch/--opset take a checkpoint")
    _check_paths([("the model", model)], [(embed_path(model, output), "the embeddable model")], json_out)
    if output:
        check_suffix("onnx", output)
    _finish([_run(embed_onnx, model, output, data=data)], json_out)


@main.command(help="Write the int8 copy of MODEL, an fp32 .onnx file exported by fer-export, beside it as "
                   "NAME.int8.onnx: static QDQ with 7-bit weights (right on CPUs with and without VNNI), calibrated "
                   "on --calib, gated against MODEL itself: parity, accuracy on --eval-data, and agreement with its "
                   "own literal run.")
@click.argument("model", type=_path)
@_calib(required=True)
@_int8_judging
@_data
@_json
@library_errors
def int8(model, calib, calib_tries, eval_data, eval_limit, max_drop, accept_drop, data, json_out):
    from ..export import export_int8, sibling
    from ..export.quantize import check_calib

    check_calib(calib, calib_tries)
    _check_paths([("the model", model)], [(sibling(model, "int8"), "the int8 model")], json_out)
    _finish([_run(export_int8, None, model, calib, eval_data=eval_data, data=data, max_drop_pp=max_drop,
                  accept_drop=accept_drop, limit_per_class=eval_limit, calib_tries=calib_tries)], json_out)


@main.command(help=f"Write a copy of MODEL (an .onnx file fer-export wrote, fp32 or int8) that runs every face once and "
                   f"again mirrored the faces whose top probability is below --flip-below, averaging both passes "
                   f"({UNCERTAIN}). Writes NAME.flip.onnx unless -o is given.")
@click.argument("model", type=_path)
@click.option("-o", "--output", type=_path, help="Output .onnx path.")
@click.option("--flip-below", type=FiniteFloat(min=0), default=FLIP_BELOW, show_default=True,
              help="Mirror the faces whose top probability is below this, in (0, 1].")
@_data
@_json
@library_errors
def flip(model, output, flip_below, data, json_out):
    if not 0 < flip_below <= 1:
        raise click.UsageError(f"--flip-below must be in (0, 1], got {flip_below}")
    _flip(model, output, False, flip_below, data, json_out)


@main.command(help="Write MODEL (an .onnx file fer-export wrote) with its preprocessing inside: the graph takes raw "
                   "uint8 grayscale crops (N,1,H,W) of any size from 2 to 8192 px and resizes and normalises them, "
                   "the one file to embed (Node.js, browsers; see examples/). Writes NAME.embed.onnx unless -o is given.")
@click.argument("model", type=_path)
@click.option("-o", "--output", type=_path, help="Output .onnx path.")
@_data
@_json
@library_errors
def embed(model, output, data, json_out):
    _embed(model, output, True, False, data, json_out)


@main.command(help="Write the fp16 copy of MODEL, an fp32 .onnx file fer-export wrote, as NAME.fp16.onnx unless -o "
                   "is given: float16 weights and arithmetic (half the file; for GPUs: onnxruntime's CPU provider "
                   "computes it in float32 and is no faster), float32 input and outputs, Softmax in "
                   "float32. Gated against MODEL on random inputs, face crops (--data) and the bundled probe faces.")
@click.argument("model", type=_path)
@click.option("-o", "--output", type=_path, help="Output .onnx path.")
@_data
@_json
@library_errors
def fp16(model, output, data, json_out):
    from ..export import check_suffix, sibling
    from ..export.fp16 import export_fp16

    _check_paths([("the model", model)], [(output or sibling(model, "fp16"), "the fp16 model")], json_out)
    if output:
        check_suffix("onnx", output)
    _finish([_run(export_fp16, model, output, data=data)], json_out)


@main.command(help="Export CHECKPOINT to TorchScript (traced, frozen; returns logits). "
                   "Writes CHECKPOINT's stem + .pt unless -o is given.")
@click.argument("checkpoint", type=_path)
@click.option("-o", "--output", type=_path, help="Output .pt path.")
@_tta
@_data
@_json
@library_errors
def torchscript(checkpoint, output, tta, data, json_out):
    from ..export import check_suffix, export, output_path

    _check_paths([("the checkpoint", checkpoint)], [(output_path("torchscript", checkpoint, output),
                                                      "the torchscript export")], json_out)
    if output:
        check_suffix("torchscript", output)
    _finish([_run(export, "torchscript", checkpoint, output, data=data, tta=tta)], json_out)


@main.command(name="all", help="Export CHECKPOINT to every format (ONNX and TorchScript) beside it; one report.")
@click.argument("checkpoint", type=_path)
@_tta
@_data
@_json
@library_errors
def all_formats(checkpoint, tta, data, json_out):
    from ..export import FORMATS, export, output_path

    _check_paths([("the checkpoint", checkpoint)],
                 [(output_path(fmt, checkpoint), f"the {fmt} export") for fmt in FORMATS], json_out)
    _finish([_run(export, fmt, checkpoint, data=data, tta=tta) for fmt in FORMATS], json_out)


@main.command(help="Check ARTIFACT on this machine: run the probe faces an ONNX file carries and compare with the "
                   "probabilities it records (int8: also whether its weights can saturate on CPUs without VNNI). "
                   "With --against, re-check it against the checkpoint it should come from instead: spec, source "
                   "sha256 and parity. Exits 1 when a check fails.")
@click.argument("artifact", type=_path)
@click.option("--against", "checkpoint", type=_path, help="The checkpoint to compare with.")
@_data
@_json
@library_errors
def verify(artifact, checkpoint, data, json_out):
    from ..export.verify import self_check_file, verify as verify_artifact

    if checkpoint is None:
        if data is not None:
            raise click.UsageError("--data goes with --against (the parity check)")
        _check_paths([("the artifact", artifact)], [], json_out)
        _finish([self_check_file(artifact)], json_out)
        return
    _check_paths([("the artifact", artifact), ("the checkpoint", checkpoint)], [], json_out)
    _finish([verify_artifact(artifact, checkpoint, data)], json_out)


@main.command(help="Write a copy of MODEL (an ONNX file fer-export wrote) with a new self-check probe: sixteen "
                   "bundled faces and the probabilities its reference gives them (fp32: the file; int8: the file "
                   "with graph optimisations off, which no CPU changes). Writes NAME.stamped.onnx unless -o is given.")
@click.argument("model", type=_path)
@click.option("-o", "--output", type=_path, help="Output .onnx path.")
@_json
@library_errors
def stamp(model, output, json_out):
    from ..export import sibling, stamp_probe

    _check_paths([("the model", model)], [(output or sibling(model, "stamped"), "the stamped model")], json_out)
    _finish([stamp_probe(model, output)], json_out)


@main.command(help="Rewrite an int8 MODEL whose weights use the full int8 range with 7-bit weights, keeping its "
                   "calibration: CPUs without VNNI (AMD Zen 1-3, Intel before Ice Lake) saturate full-range int8 "
                   "products and give other answers. Gated against MODEL run as ONNX defines it. Writes "
                   "NAME.7bit.onnx unless -o is given.")
@click.argument("model", type=_path)
@click.option("-o", "--output", type=_path, help="Output .onnx path.")
@click.option("--eval-data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Labelled folder (<emotion>/*.jpg) to judge accuracy on.")
@click.option("--eval-limit", type=click.IntRange(min=1), help="Use at most this many images per class of --eval-data.")
@click.option("--max-drop", type=FiniteFloat(min=0), help="Largest accepted accuracy drop in points (default 1.0).")
@click.option("--accept-drop", is_flag=True, help="Keep the new model even if its accuracy drops more.")
@_data
@_json
@library_errors
def requantize(model, output, eval_data, eval_limit, max_drop, accept_drop, data, json_out):
    from ..export import export_requantized, sibling

    _check_paths([("the model", model)], [(output or sibling(model, "7bit"), "the requantised model")], json_out)
    _finish([_run(export_requantized, model, output, eval_data=eval_data, data=data, max_drop_pp=max_drop,
                  accept_drop=accept_drop, limit_per_class=eval_limit)], json_out)


if __name__ == "__main__":
    main()
