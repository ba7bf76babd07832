"""fer-batch's options given hostile values (negative, huge, NaN, empty, odd paths): each is refused
with exit status 2 and one line, never a traceback, or runs within its bounds; memory caps that hold
whatever the options; and ``--retry-failed``, which runs again the inputs an earlier run failed on."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from fer_export.batch import BatchConfig
from fer_export.batch.config import max_workers
from fer_export.batch.results import journal_path, read_results
from fer_export.batch.settings import MAX_BATCH_SIZE, MAX_DET_SIZE, ModelSettings
from fer_export.cli.batch import main
from fer_export.errors import InputError
from test_batch import fer_crops


def fer_batch(*args):
    return CliRunner().invoke(main, [str(a) for a in args] + ["--no-progress"])


def assert_refused(res, *words: str) -> None:
    """Exit status 2, one ``Error:`` line (naming ``words``), no traceback."""
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit), res.output
    errors = [line for line in res.output.splitlines() if "Error" in line]
    assert len(errors) == 1, res.output
    for w in words:
        assert w in errors[0], res.output


@pytest.fixture(scope="module")
def crop(tmp_path_factory) -> Path:
    """One 48x48 face (a probe face, cut from an MIT-licensed photo): the options are under test, not the data."""
    import cv2

    from fer_export.probe import probe_faces

    path = tmp_path_factory.mktemp("crop") / "face.png"
    cv2.imwrite(str(path), probe_faces()[0])
    return path


NUMERIC = ["--batch-size", "--det-threshold", "--det-size", "--det-nms", "--look-again", "--min-face", "--max-faces",
           "--crop-spread", "--every-n", "--video-fps", "--workers"]
#: Values no numeric option takes.
BAD_NUMBERS = ["-1", "nan", "inf", "-inf", "", "abc", "1e309", "\x00", "0x10"]


@pytest.mark.parametrize("option", NUMERIC)
@pytest.mark.parametrize("value", BAD_NUMBERS)
def test_a_hostile_number_is_refused_in_one_line(tmp_path, crop, exported, option, value):
    res = fer_batch(crop, "--out", tmp_path / "r.csv", "--model", exported["onnx"], option, value)
    assert_refused(res, option)
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("option, value, word", [
    ("--batch-size", MAX_BATCH_SIZE + 1, "--batch-size"), ("--batch-size", 100000, "--batch-size"),
    ("--det-size", MAX_DET_SIZE + 1, "--det-size"), ("--det-size", 10**30, "--det-size"),
    ("--workers", 10**6, "workers must be 1 to"), ("--workers", 10**30, "workers must be 1 to"),
    ("--video-fps", 1e6, "--video-fps"), ("--det-threshold", 2, "--det-threshold"), ("--det-nms", 1, "--det-nms"),
    ("--look-again", 5, "--look-again"), ("--crop-spread", 0.6, "--crop-spread"), ("--every-n", 0, "--every-n"),
    ("--dask", "local:100000", "local:N worker processes"),
    ("--dask", "", "local"), ("--dask", "local:1e3", "local:N"),
])
def test_a_value_past_its_bound_is_refused_in_one_line(tmp_path, crop, exported, option, value, word):
    res = fer_batch(crop, "--out", tmp_path / "r.csv", "--model", exported["onnx"], option, value)
    assert_refused(res, word)


@pytest.mark.parametrize("option, value, word", [
    ("--out", "", "--out"), ("--out", "/", "folder"), ("--out", "a\x00b.csv", "--out"), ("--out", "x" * 300, "File name too long"),
    ("--model", "", "--model"), ("--model", "\x00", "--model"), ("--yunet-model", "", "--yunet-model"),
    ("--summary", "", "--summary"), ("--summary", "\x00", "--summary"), ("--annotate", "\x00", "--annotate"),
    ("--plots", "\x00", "--plots"), ("--provider", "", "--provider"), ("--detector", "", "--detector"),
    ("--crop", "", "--crop"), ("--scheduler", "", "scheduler"),
])
def test_an_odd_string_or_path_is_refused_in_one_line(tmp_path, crop, exported, monkeypatch, option, value, word):
    monkeypatch.chdir(tmp_path)  # a relative path lands here
    args = [crop, "--model", exported["onnx"]]
    if option != "--out":
        args += ["--out", tmp_path / "r.csv"]
    if option == "--model":
        args = args[:1] + args[3:]
    res = fer_batch(*args, option, value)
    assert_refused(res, word)


def test_hostile_inputs_arguments_are_refused_in_one_line(tmp_path, exported):
    for inputs in (["\x00"], [""], ["x" * 5000]):
        assert_refused(fer_batch(*inputs, "--out", tmp_path / "r.csv", "--model", exported["onnx"]))


@pytest.mark.parametrize("option, value", [("--min-face", 10**30), ("--max-faces", 10**30), ("--every-n", 10**30),
                                           ("--video-fps", 1000), ("--det-size", MAX_DET_SIZE)])
def test_a_huge_but_allowed_value_runs(tmp_path, crop, videos, exported, yunet_model, option, value):
    """Values within the bounds, however large, run to the end (no overflow inside)."""
    res = fer_batch(crop, videos / "pyfeat_single_face.mp4", "--out", tmp_path / "r.csv", "--model", exported["onnx"],
                    "--yunet-model", yunet_model, option, value)
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    assert set(read_results(tmp_path / "r.csv").status) <= {"ok", "no_face"}


# ---- memory caps, for a Python caller as for the CLI -------------------------------------------------

def test_caps_hold_for_a_python_caller():
    with pytest.raises(InputError, match=f"batch size must be 1 to {MAX_BATCH_SIZE}"):
        ModelSettings(batch_size=100000)
    with pytest.raises(InputError, match="workers must be 1 to"):
        BatchConfig.build(["in"], "r.csv", workers=max_workers() + 1)
    for name, part in (("det_threshold", "threshold"), ("det_nms", "NMS"), ("look_again", "look again"),
                       ("crop_spread", "spread"), ("video_fps", "video fps")):
        for bad in (float("nan"), float("inf"), -float("inf")):
            with pytest.raises(InputError, match=part):
                BatchConfig.build(["in"], "r.csv", **{name: bad})
    with pytest.raises(InputError, match="--resume"):
        BatchConfig.build(["in"], "r.csv", retry_failed=True)
    with pytest.raises(InputError, match="NUL byte"):
        BatchConfig.build(["in"], "r\x00.csv")
    assert BatchConfig.build(["in"], "r.csv", workers=max_workers()).workers == max_workers()
    from fer_export.batch.dask import local_workers

    with pytest.raises(InputError, match="local:N worker processes"):
        local_workers(f"local:{max_workers() + 1}")
    assert local_workers(f"local:{max_workers()}") == max_workers()


# ---- failed inputs: kept on --resume, run again with --retry-failed ----------------------------------

def _blocks(csv: Path) -> dict[str, bytes]:
    """Each input's lines of a results CSV, by source (inputs of one row each here)."""
    lines = csv.read_bytes().splitlines(keepends=True)
    return {line.split(b",")[0].decode(): line for line in lines[1:]}


def test_retry_failed_gives_the_clean_runs_rows(tmp_path, fer2013, exported, monkeypatch):
    crops = fer_crops(fer2013, 1)[:4]
    data = tmp_path / "in"
    data.mkdir()
    for k, p in enumerate(crops):
        shutil.copy(p, data / f"{k}.jpg")
    args = ["--model", exported["onnx"], "--detector", "none"]
    good = (data / "1.jpg").read_bytes()
    (data / "1.jpg").write_bytes(b"\xff\xd8 not a jpeg")  # the 2nd input fails
    (data / "3.jpg").write_bytes(b"")  # and the last
    out = tmp_path / "r.csv"
    assert fer_batch(data, "--out", out, *args).exit_code == 1
    first = out.read_bytes()
    (data / "1.jpg").write_bytes(good)
    shutil.copy(crops[3], data / "3.jpg")

    res = fer_batch(data, "--out", out, *args, "--resume")  # resume keeps the error rows: one run's CSV
    assert res.exit_code == 1 and "4 done by an earlier run" in res.output and out.read_bytes() == first, res.output
    assert_refused(fer_batch(data, "--out", out, *args, "--retry-failed"), "--resume")

    real_replace, calls = os.replace, []

    def crash_between_renames(a, b):  # the CSV is renamed into place, then the process dies
        calls.append(b)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(a, b)

    monkeypatch.setattr(os, "replace", crash_between_renames)
    assert_refused(fer_batch(data, "--out", out, *args, "--resume", "--retry-failed"), "cannot write")
    monkeypatch.setattr(os, "replace", real_replace)
    assert calls == [out, journal_path(out)]

    res = fer_batch(data, "--out", out, *args, "--resume", "--retry-failed")  # the pending journal is taken
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    assert not list(tmp_path.glob("r.csv.*retry*"))
    clean = tmp_path / "clean.csv"
    assert fer_batch(data, "--out", clean, *args).exit_code == 0
    rows = _blocks(clean)
    header = clean.read_bytes().splitlines(keepends=True)[0]
    order = [data / "0.jpg", data / "2.jpg", data / "1.jpg", data / "3.jpg"]  # retried inputs after the others
    assert out.read_bytes() == header + b"".join(rows[str(p)] for p in order)

    res = fer_batch(data, "--out", out, *args, "--resume", "--retry-failed")  # nothing failed: nothing to do
    assert res.exit_code == 0 and "4 done by an earlier run" in res.output and "--retry-failed:" not in res.output
    assert read_results(out).status.tolist() == ["ok"] * 4
