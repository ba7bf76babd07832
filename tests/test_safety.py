"""fer-batch against hostile inputs and options: nothing is destroyed, nothing dies with a traceback.

Each case is a reproduction from the data-safety issue: odd file names, outputs that would replace
inputs or each other, a second run on the same --out, a model that does not fit its metadata,
resuming with other settings, full disks, damaged journals, Ctrl-C.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fer_export.batch.results import HEAD, ResultsWriter, journal_path, read_results
from fer_export.batch.sources import collect_sources, escape_name, unescape_name
from fer_export.cli.batch import main
from fer_export.errors import ArtifactError, InputError
from fer_export.runtime import EmotionClassifier


BAD = os.fsdecode(b"bad\xff name.jpg")  # not valid UTF-8


@pytest.fixture(scope="module")
def tiny_model(exported) -> Path:
    return exported["onnx"]


def batch(*args):
    return CliRunner().invoke(main, [*map(str, args), "--no-progress"])


@pytest.fixture
def folder(tmp_path, photos) -> Path:
    """in/: a.jpg, a file named with invalid UTF-8, z.jpg (three copies of one photo)."""
    data = tmp_path / "in"
    data.mkdir()
    for name in ("a.jpg", BAD, "z.jpg"):
        shutil.copy(photos / "fer_justin.jpg", data / name)
    return data


def snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def no_traceback(res) -> None:
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit), res.output


@pytest.mark.parametrize("raw", [b"a/b\xff.jpg", b"x\\y.jpg", "\u00fc/\u20ac.png".encode(), b"\\x41", b"plain.jpg",
                                 b"cr\rx.jpg", b"two\nlines.jpg", b"tab\t\x1b[31mred\x7f.jpg"])
def test_escaped_names_are_utf8_one_line_and_reversible(raw):
    text = escape_name(os.fsdecode(raw))
    text.encode("utf-8")  # never raises
    assert not any(ord(c) < 32 or ord(c) == 127 for c in text), text  # no line break, tab or escape sequence
    assert unescape_name(text) == raw


def test_a_name_that_is_not_utf8_gets_its_own_row(tmp_path, folder, tiny_model, videos, yunet_model):
    shutil.copy(videos / "pyfeat_single_face.mp4", folder / os.fsdecode(b"v\xfe.mp4"))
    out = tmp_path / "r.csv"
    res = batch(folder, "--out", out, "--model", tiny_model, "--yunet-model", yunet_model, "--every-n", 12)
    assert res.exit_code == 0, res.output
    df = read_results(out)
    names = list(df.source.unique())
    assert names == [f"{folder}/a.jpg", f"{folder}/bad\\xff name.jpg", f"{folder}/v\\xfe.mp4", f"{folder}/z.jpg"]
    assert (df.status == "ok").all() and df[df.kind == "video"].frame.nunique() == 6  # decoded, not crashed on
    assert Path(os.fsdecode(unescape_name(names[1]))).read_bytes() == (folder / BAD).read_bytes()
    res = batch(folder, "--out", out, "--model", tiny_model, "--yunet-model", yunet_model, "--every-n", 12, "--resume")
    assert res.exit_code == 0 and "4 done by an earlier run" in res.output, res.output


@pytest.mark.parametrize("case", ["annotate into the inputs", "summary is out", "out is an input",
                                  "out is the journal of another", "annotate a video into itself"])
def test_no_output_may_replace_an_input_or_another_output(tmp_path, folder, tiny_model, case):
    out = tmp_path / "r.csv"
    extra = {"annotate into the inputs": ["--annotate", folder.parent],
             "summary is out": ["--summary", out],
             "out is an input": ["--overwrite"],
             "out is the journal of another": ["--summary", journal_path(out)],
             "annotate a video into itself": ["--annotate", folder.parent]}[case]
    if case == "annotate a video into itself":  # its annotated copy is written as .mp4 too
        for name in ("a.jpg", BAD, "z.jpg"):
            (folder / name).unlink()
        (folder / "v.mp4").write_bytes(b"not decoded: refused before")
    if case == "out is an input":
        out = folder / "a.jpg"
    before = snapshot(folder)
    res = batch(folder, "--out", out, "--model", tiny_model, "--detector", "none", *extra)
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and res.output.startswith("Error: "), res.output  # one line
    assert snapshot(folder) == before


@pytest.mark.parametrize("case", ["annotate inside the inputs", "plots into the input folder"])
def test_pictures_are_never_written_among_the_inputs(tmp_path, folder, tiny_model, case):
    """Annotated copies or plots inside an input folder would be inputs of the next run: refused at once."""
    extra = ["--annotate", folder / "annotated"] if case == "annotate inside the inputs" else ["--plots", folder]
    before = snapshot(folder)
    res = batch(folder, "--out", tmp_path / "r.csv", "--model", tiny_model, "--detector", "none", *extra)
    assert res.exit_code == 2 and "inside the input folder" in res.output and res.output.count("\n") == 1, res.output
    assert snapshot(folder) == before and not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("case", ["summary is another run's results", "summary is another run's journal",
                                  "summary is not a summary", "summary exists", "out is not a results file",
                                  "out is another run's journal", "summary is a fifo"])
def test_only_fer_batch_files_are_replaced(tmp_path, folder, tiny_model, case):
    """--overwrite and --resume replace a results CSV or a summary that fer-batch wrote, nothing else;
    an existing summary needs --overwrite (or --resume) like the results."""
    other = tmp_path / "other.csv"
    first = batch(folder, "--out", other, "--model", tiny_model, "--detector", "none", "--summary", tmp_path / "s.csv")
    assert first.exit_code == 0, first.output
    (tmp_path / "notes.txt").write_text("my notes\n")
    out, extra = tmp_path / "r.csv", []
    if case == "summary is another run's results":
        extra = ["--overwrite", "--summary", other]
    elif case == "summary is another run's journal":
        extra = ["--overwrite", "--summary", journal_path(other)]
    elif case == "summary is not a summary":
        extra = ["--overwrite", "--summary", tmp_path / "notes.txt"]
    elif case == "summary exists":
        extra = ["--summary", tmp_path / "s.csv"]
    elif case == "out is not a results file":
        out, extra = tmp_path / "notes.txt", ["--overwrite"]
    elif case == "out is another run's journal":
        out, extra = journal_path(other), ["--overwrite"]
    else:
        os.mkfifo(tmp_path / "fifo")
        extra = ["--summary", tmp_path / "fifo"]
    before = snapshot(tmp_path)
    res = batch(folder, "--out", out, "--model", tiny_model, "--detector", "none", *extra)
    assert res.exit_code == 2 and res.output.startswith("Error: ") and res.output.count("\n") == 1, res.output
    assert snapshot(tmp_path) == before
    res = batch(folder, "--out", tmp_path / "r2.csv", "--model", tiny_model, "--detector", "none", "--overwrite",
                "--summary", tmp_path / "s.csv")  # its own summary it may replace
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("case", ["a folder", "a folder with a slash", "/dev/full", "summary under a file",
                                  "annotate under a file"])
def test_unwritable_outputs_are_found_before_any_input(tmp_path, folder, tiny_model, case):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "dir").mkdir()
    out, extra = tmp_path / "r.csv", []
    if case == "a folder":
        out = tmp_path / "dir"
    elif case == "a folder with a slash":
        out = f"{tmp_path / 'newdir'}/"
    elif case == "/dev/full":
        if not Path("/dev/full").exists():
            pytest.skip("no /dev/full on this system")
        out = "/dev/full"
    elif case == "summary under a file":
        extra = ["--summary", tmp_path / "file.txt" / "s.csv"]
    else:
        extra = ["--annotate", tmp_path / "file.txt" / "ann"]
    res = batch(folder, "--out", out, "--model", tiny_model, "--detector", "none", *extra)
    assert res.exit_code == 2 and res.output.startswith("Error: ") and res.output.count("\n") == 1, res.output
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "newdir").exists()


def test_a_full_disk_mid_run_keeps_what_finished(tmp_path, monkeypatch, tiny_model, face_files):
    crops = face_files[:14]
    args = [*crops, "--model", tiny_model, "--batch-size", 2, "--workers", 1]
    assert batch(*args, "--out", tmp_path / "clean.csv").exit_code == 0
    from fer_export.batch import commit, results

    monkeypatch.setattr(commit, "COMMIT_EVERY_S", 0.0)  # write after every batch, as a slow run does
    real, calls = results._fsync, []

    def fsync(f):  # the fourth commit hits a full disk
        calls.append(1)
        if len(calls) == 8:
            raise OSError(28, "No space left on device")
        real(f)

    monkeypatch.setattr(results, "_fsync", fsync)
    out = tmp_path / "r.csv"
    res = batch(*args, "--out", out)
    assert res.exit_code == 2 and "No space left on device" in res.output and "--resume" in res.output, res.output
    no_traceback(res)
    monkeypatch.setattr(results, "_fsync", real)
    res = batch(*args, "--out", out, "--resume")
    done = re.search(r"\((\d+) done by an earlier run\)", res.output)
    assert res.exit_code == 0 and done and 0 < int(done[1]) < len(crops), res.output  # three commits' inputs
    assert out.read_bytes() == (tmp_path / "clean.csv").read_bytes()


def test_a_second_run_on_the_same_out_is_refused(tmp_path, folder, tiny_model):
    out = tmp_path / "r.csv"
    (tmp_path / "link.csv").symlink_to(out)
    holder = ResultsWriter(out, HEAD, overwrite=True)  # a run in progress
    try:
        res = batch(folder, "--out", out, "--model", tiny_model, "--resume")
        assert res.exit_code == 2 and f"being written by process {os.getpid()}" in res.output, res.output
        for given in ("--resume", "--overwrite"):  # the same file through a link: the same lock
            res = batch(folder, "--out", tmp_path / "link.csv", "--model", tiny_model, given)
            assert res.exit_code == 2 and f"being written by process {os.getpid()}" in res.output, res.output
    finally:
        holder.close()
    assert not (tmp_path / "link.csv.lock").exists() and not (tmp_path / "link.csv.progress").exists()
    res = batch(folder, "--out", out, "--model", tiny_model, "--detector", "none", "--overwrite")
    assert res.exit_code == 0, res.output


def onnx_with_wrong_head(path: Path, tiny_model: Path, classes: int = 5) -> Path:
    """A [N,1,48,48] -> [N,classes] graph that carries the tiny model's (7-label) metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((48 * 48, classes), 1e-3, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "wrong", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 48, 48])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes]),
         helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", "C"])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    for entry in onnx.load(str(tiny_model)).metadata_props:
        model.metadata_props.add(key=entry.key, value=entry.value)
    onnx.save(model, str(path))
    return path


def test_a_model_that_does_not_fit_its_metadata_is_refused(tmp_path, folder, tiny_model):
    bad = onnx_with_wrong_head(tmp_path / "wrong.onnx", tiny_model)
    with pytest.raises(ArtifactError, match="5 classes, the spec has 7 labels"):
        EmotionClassifier(bad, "cpu")
    res = batch(folder, "--out", tmp_path / "r.csv", "--model", bad, "--detector", "none")
    assert res.exit_code == 2 and "7 labels" in res.output and res.output.count("\n") == 1, res.output
    no_traceback(res)


@pytest.mark.parametrize("change", [["--detector", "none"], ["--detector", "haar"], ["--every-n", "2"],
                                    ["--min-face", "40"], ["--model", "OTHER"]])
def test_resume_with_other_settings_is_refused(tmp_path, folder, tiny_model, exported, other_ckpt, change):
    out = tmp_path / "r.csv"
    assert batch(folder / "a.jpg", "--out", out, "--model", tiny_model).exit_code == 0
    if change[-1] == "OTHER":
        from fer_export.export import export

        change = ["--model", export("onnx", other_ckpt).path]
    args = ["--model", tiny_model, *change] if change[0] != "--model" else change
    res = batch(folder, "--out", out, "--resume", *args)
    assert res.exit_code == 2 and "started with other settings" in res.output, res.output
    assert read_results(out).source.nunique() == 1


def test_resume_of_a_run_whose_detector_looked_differently_is_refused(tmp_path, folder, tiny_model):
    """A journal written before the second look also searched halfway and mirrored (no ``second_looks``
    in its settings) found faces differently: resuming it is refused, naming the change."""
    out = tmp_path / "r.csv"
    assert batch(folder / "a.jpg", "--out", out, "--model", tiny_model).exit_code == 0
    journal = journal_path(out)
    head, *rest = journal.read_text().splitlines(keepends=True)
    entry = json.loads(head)
    assert entry["run"].pop("second_looks") == ["2x", "2x mirrored", "1.5x", "1.5x mirrored", "1x turned -30",
                                                "1x turned 30", "1.5x turned -30", "1.5x turned 30"]
    journal.write_text(json.dumps(entry) + "\n" + "".join(rest))
    res = batch(folder, "--out", out, "--resume", "--model", tiny_model)
    assert res.exit_code == 2 and "second_looks None -> ['2x'" in res.output, res.output
    assert read_results(out).source.nunique() == 1


def test_resume_matches_inputs_however_they_are_spelled(tmp_path, folder, tiny_model, monkeypatch):
    out = tmp_path / "r.csv"
    monkeypatch.chdir(tmp_path)
    assert batch("in", "--out", out, "--model", tiny_model, "--detector", "none").exit_code == 0
    clean = out.read_bytes()
    res = batch(folder.resolve(), "./in/../in/a.jpg", "--out", out, "--model", tiny_model, "--detector", "none",
                "--resume")
    assert res.exit_code == 0 and "3 done by an earlier run" in res.output, res.output
    assert out.read_bytes() == clean


@pytest.mark.parametrize("damage", [b"garbage\n", b"\0" * 64, b'{"source": "x", "end": 5}\n', b"[1, 2]\n",
                                    b'{"source": "x", "status": "ok", "end": "far"}\n', b"\xff\xfe\n"])
def test_a_damaged_journal_ends_where_the_damage_starts(tmp_path, tiny_model, face_files, damage):
    crops = face_files[:7]
    args = [*crops, "--model", tiny_model, "--batch-size", 2]
    assert batch(*args, "--out", tmp_path / "clean.csv").exit_code == 0
    out = tmp_path / "r.csv"
    shutil.copy(tmp_path / "clean.csv", out)
    lines = journal_path(tmp_path / "clean.csv").read_bytes().splitlines(keepends=True)
    journal_path(out).write_bytes(b"".join(lines[:4]) + damage + b"".join(lines[4:]))  # the run line + 3 inputs
    res = batch(*args, "--out", out, "--resume")
    done = re.search(r"\((\d+) done by an earlier run\)", res.output)
    assert res.exit_code == 0 and done and 0 < int(done[1]) < len(crops), res.output  # three commits' inputs
    assert out.read_bytes() == (tmp_path / "clean.csv").read_bytes()


def test_files_in_folders_that_are_not_inputs_are_listed(tmp_path, folder, tiny_model):
    (folder / "anim.gif").write_bytes(b"GIF89a" + b"\0" * 20)
    (folder / "notes.txt").write_text("x")
    os.symlink(folder / "loop", folder / "loop")  # a symlink loop
    skipped = []
    assert len(collect_sources([folder], skipped)) == 3
    assert sorted((Path(s.path).name, s.reason.split(":")[0].split(" (")[0]) for s in skipped) == [
        ("anim.gif", "not an image or video type"), ("loop", "broken or looping link"), ("notes.txt", "not an image or video type")]
    res = batch(folder, "--out", tmp_path / "r.csv", "--model", tiny_model, "--detector", "none")
    assert res.exit_code == 0 and "skipped 3 files" in res.output and "anim.gif" in res.output, res.output


def test_extras_keep_folder_inputs_relative(tmp_path, folder, tiny_model, videos):
    shutil.copy(videos / "pyfeat_single_face.mp4", folder / "v.mp4")
    ann, plots = tmp_path / "ann", tmp_path / "plots"
    res = batch(folder.resolve(), "--out", tmp_path / "r.csv", "--model", tiny_model, "--detector", "none",
                "--every-n", 24, "--annotate", ann, "--plots", plots)
    assert res.exit_code == 0, res.output
    assert sorted(p.relative_to(ann).as_posix() for p in ann.rglob("*.*")) == [
        "in/a.jpg", "in/bad\\xff name.jpg", "in/v.mp4", "in/z.jpg"]
    assert [p.relative_to(plots).as_posix() for p in plots.rglob("*.png")] == ["in/v.mp4.png"]


def test_predict_names_the_problem_with_a_missing_image(tiny_model):
    clf = EmotionClassifier(tiny_model, "cpu")
    with pytest.raises(InputError, match="face 1 is None.*cv2.imread returns None"):
        clf.predict([np.zeros((48, 48), np.uint8), None])
    with pytest.raises(InputError, match="face 0 is ndarray float64"):
        clf.predict([np.zeros((48, 48))])


@pytest.mark.parametrize("args", [["--det-threshold", "0"], ["--max-faces", "0"], ["--det-size", "16"]])
def test_options_that_cannot_give_sensible_results_are_refused(tmp_path, folder, tiny_model, args):
    res = batch(folder, "--out", tmp_path / "r.csv", "--model", tiny_model, *args)
    assert res.exit_code == 2, res.output


@pytest.mark.parametrize("sub", [[], ["onnx"], ["torchscript"], ["all"], ["verify"]])
def test_help_has_no_markup(sub):
    from fer_export.cli.export import main as fer_export

    text = CliRunner().invoke(fer_export, [*sub, "--help"]).output
    assert "``" not in text and "%%" not in text, text


def test_journal_records_the_run(tmp_path, folder, tiny_model):
    out = tmp_path / "r.csv"
    assert batch(folder, "--out", out, "--model", tiny_model, "--detector", "none").exit_code == 0
    head = json.loads(journal_path(out).read_bytes().splitlines()[0])["run"]
    assert head["detector"] == "none" and len(head["model_sha256"]) == 64 and head["every_n"] == 1


def test_kaggle_layout_with_train_and_test_says_which_option(tmp_path, tiny_model, fer2013):
    from fer_export.cli.evaluate import main as fer_eval

    for split in ("train", "test"):
        shutil.copytree(fer2013 / "val" / "happy", tmp_path / split / "happy")
    res = CliRunner().invoke(fer_eval, [str(tiny_model), "--data", str(tmp_path)])
    assert res.exit_code == 2 and "--split test" in res.output, res.output
    res = CliRunner().invoke(fer_eval, [str(tiny_model), "--data", str(tmp_path), "--split", "test"])
    assert res.exit_code == 0, res.output


@pytest.mark.data
@pytest.mark.parametrize("every_s, writes", [(0.0, 7), (1e9, 2)])
def test_finished_inputs_are_written_together_at_most_every_commit_interval(tmp_path, monkeypatch, tiny_model,
                                                                         face_files, every_s, writes):
    """Writes (two fsyncs each) are grouped by time: the first finished input at once, then at most one
    write per interval, and the end of the run writes the rest; the file is the same."""
    from fer_export.batch import commit

    monkeypatch.setattr(commit, "COMMIT_EVERY_S", every_s)
    real, commits = ResultsWriter.commit, []

    def commit(self, finished):
        commits.append(len(finished))
        return real(self, finished)

    monkeypatch.setattr(ResultsWriter, "commit", commit)
    out = tmp_path / f"{writes}.csv"
    res = batch(*face_files[:7], "--model", tiny_model, "--batch-size", 1, "--workers", 1, "--out", out)
    assert res.exit_code == 0, res.output
    assert len(commits) == writes and sum(commits) == 7
    monkeypatch.setattr(ResultsWriter, "commit", real)
    again = tmp_path / "again.csv"
    assert batch(*face_files[:7], "--model", tiny_model, "--out", again).exit_code == 0
    assert out.read_bytes() == again.read_bytes()


def test_a_commit_cut_off_before_its_journal_line_ends_the_writing(tmp_path, monkeypatch):
    """Ctrl-C between an input's rows and its journal line: nothing is written after it, neither the
    inputs finished later nor by a forced final commit (their rows could land after rows the journal
    does not cover, and resuming would then cut them off or keep them out of order)."""
    from fer_export.batch import results
    from fer_export.batch.results import BatchReport
    from fer_export.batch.sources import Source
    from fer_export.batch.commit import Committer

    out = tmp_path / "r.csv"
    sources = [Source(Path(f"{k}.jpg"), f"{k}.jpg", "image", f"/k/{k}.jpg") for k in range(3)]
    writer = ResultsWriter(out, ["source", "status"], overwrite=True)
    committer = Committer(sources, writer, BatchReport(out))
    committer.finish(0, [["0.jpg", "ok"]])
    committer.commit_ready(force=True)
    journalled = out.read_bytes()
    real, calls = results._fsync, []

    def fsync(f):  # the next commit's journal fsync is interrupted, after its rows are in the CSV
        calls.append(f.name)
        if f.name == str(journal_path(out)):
            raise KeyboardInterrupt
        real(f)

    monkeypatch.setattr(results, "_fsync", fsync)
    committer.finish(1, [["1.jpg", "ok"]])
    with pytest.raises(KeyboardInterrupt):
        committer.commit_ready(force=True)
    monkeypatch.setattr(results, "_fsync", real)
    committer.finish(2, [["2.jpg", "ok"]])
    committer.commit_ready(force=True)  # Ctrl-C's final commit: refused
    writer.close()
    assert out.read_bytes() == journalled + b"1.jpg,ok\n"  # input 2 was not written after the cut
    again = ResultsWriter(out, ["source", "status"], resume=True)  # input 1's journal line reached the
    assert [again.is_done(s.key, s.name) for s in sources] == [True, True, False]  # file on close
    again.close()


def test_videos_that_differ_only_in_their_suffix_get_their_own_annotated_copy(tmp_path, videos, tiny_model,
                                                                               yunet_model):
    data = tmp_path / "in"
    data.mkdir()
    for suffix in (".mp4", ".avi", ".mkv"):  # each an MP4 inside: OpenCV reads it whatever its suffix
        shutil.copy(videos / "pyfeat_single_face.mp4", data / f"clip{suffix}")
    res = batch(data, "--out", tmp_path / "r.csv", "--model", tiny_model, "--yunet-model", yunet_model,
                "--every-n", 25, "--annotate", tmp_path / "an")
    assert res.exit_code == 0, res.output
    copies = sorted((tmp_path / "an" / "in").iterdir())
    assert [p.name for p in copies] == ["clip.avi.mp4", "clip.mkv.mp4", "clip.mp4"], copies  # clip.mp4 keeps its name
    assert all(p.stat().st_size > 1000 for p in copies)
    again = batch(data, "--out", tmp_path / "r2.csv", "--model", tiny_model, "--yunet-model", yunet_model,
                  "--every-n", 25, "--annotate", tmp_path / "an")  # an earlier run's pictures: not without --overwrite
    assert again.exit_code == 2 and "already exists" in again.output and "--overwrite" in again.output, again.output
    # the parent of the input folder: each copy would land in in/ (clip.avi.mp4 is no input's own name)
    inside = batch(data, "--out", tmp_path / "r3.csv", "--model", tiny_model, "--annotate", tmp_path, "--overwrite")
    assert inside.exit_code == 2 and "inside the input folder" in inside.output, inside.output


@pytest.mark.parametrize("case", ["out name too long", "journal name too long", "model name too long"])
def test_names_too_long_are_refused_in_one_line(tmp_path, folder, tiny_model, case):
    out, extra = tmp_path / ("z" * 252 + ".csv"), []
    if case == "journal name too long":  # the CSV's name fits, RESULTS.csv.progress would not
        out = tmp_path / ("z" * 245 + ".csv")
    elif case == "model name too long":
        out, extra = tmp_path / "r.csv", ["--model", tmp_path / ("m" * 260 + ".onnx")]
    res = batch(folder, "--out", out, "--detector", "none", *(extra or ["--model", tiny_model]))
    error = res.output.strip().splitlines()[-1]  # a bad option value gets click's usage lines first
    assert res.exit_code == 2 and "Traceback" not in res.output and error.startswith("Error: "), res.output
    assert "too long" in error or "longer than" in error, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing written: no CSV, lock or journal


def test_a_video_named_at_the_length_limit_still_gets_its_plot_and_copy(tmp_path, videos, tiny_model, yunet_model):
    data = tmp_path / "in"
    data.mkdir()
    name = "v" * 251 + ".mp4"  # 255 bytes: its plot, NAME.png, would be 259
    shutil.copy(videos / "pyfeat_single_face.mp4", data / name)
    res = batch(data, "--out", tmp_path / "r.csv", "--model", tiny_model, "--yunet-model", yunet_model,
                "--every-n", 25, "--plots", tmp_path / "pl", "--annotate", tmp_path / "an")
    assert res.exit_code == 0, res.output
    plots, copies = list((tmp_path / "pl" / "in").iterdir()), list((tmp_path / "an" / "in").iterdir())
    assert [p.suffix for p in plots] == [".png"] and plots[0].stat().st_size > 1000
    assert [p.name for p in copies] == [name] and copies[0].stat().st_size > 1000
    assert len(plots[0].name.encode()) <= 255 and plots[0].name.startswith("v" * 200)


def test_a_link_to_a_folder_inside_an_input_folder_is_listed_as_skipped(tmp_path, folder, tiny_model):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(folder / "a.jpg", outside / "b.jpg")
    (folder / "ext").symlink_to(outside)
    (folder / "loop").symlink_to(folder)
    res = batch(folder, "--out", tmp_path / "r.csv", "--model", tiny_model, "--detector", "none")
    assert res.exit_code == 0, res.output
    skipped = [line for line in res.output.splitlines() if line.startswith("  skipped ")]
    assert len(skipped) == 2 and all("link to a folder, not followed" in line for line in skipped), res.output
    assert len(read_results(tmp_path / "r.csv")) == 3  # a.jpg, the bad name and z.jpg; nothing twice


def test_a_pipe_named_like_a_video_gets_an_error_row_that_says_so(tmp_path, tiny_model):
    pipe = tmp_path / "stream.mp4"
    os.mkfifo(pipe)
    res = batch(pipe, "--out", tmp_path / "r.csv", "--model", tiny_model, "--detector", "none")
    assert res.exit_code == 1, res.output  # nothing blocks on the pipe: one error row, the run ends
    rows = read_results(tmp_path / "r.csv")
    assert list(rows.status) == ["error"] and "not a regular file" in rows.error[0], rows.error[0]


def test_the_runs_own_files_in_an_input_folder_are_not_listed_as_skipped(tmp_path, folder, tiny_model):
    (folder / "notes.txt").write_text("mine")
    for _ in range(2):  # the second run finds the first one's CSV, journal, lock and summary in the folder
        res = batch(folder, "--out", folder / "r.csv", "--summary", folder / "s.csv", "--model", tiny_model,
                    "--detector", "none", "--overwrite")
        assert res.exit_code == 0, res.output
    skipped = [line.strip() for line in res.output.splitlines() if line.startswith("  skipped ")]
    assert skipped == [f"skipped {folder / 'notes.txt'}: not an image or video type (.txt)"], res.output


@pytest.mark.parametrize("options", [dict(batch_size="32"), dict(every_n=2.5), dict(max_faces=True),
                                     dict(resume="no"), dict(det_sizes="1280"), dict(video_fps="5"),
                                     dict(workers=2.0), dict(min_face=None.__class__), dict(det_nms="0.3"),
                                     dict(crop_spread="0.1")])
def test_api_options_of_the_wrong_type_are_refused_not_half_used(options):
    from fer_export.batch import BatchConfig

    with pytest.raises(InputError):
        BatchConfig.build(["faces"], "r.csv", **options)


def test_api_takes_one_input_as_a_string_or_a_path():
    from fer_export.batch import BatchConfig

    for given in ("faces", Path("faces"), ["faces"]):
        assert BatchConfig.build(given, "r.csv", det_sizes=1280).inputs == (Path("faces"),)
    assert BatchConfig.build("faces", "r.csv", det_sizes=1280).work.detection.det_sizes == (1280,)


def test_plots_without_matplotlib_are_refused_before_any_input(tmp_path, folder, tiny_model, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    res = batch(folder, "--out", tmp_path / "r.csv", "--model", tiny_model, "--detector", "none",
                "--plots", tmp_path / "plots")
    assert res.exit_code == 2 and "pip install matplotlib" in res.output, res.output
    assert not (tmp_path / "r.csv").exists()  # refused before the run: the same command works once installed


@pytest.mark.parametrize("labels", [("source", "b"), ("a", "a")])
def test_labels_that_would_clash_with_the_csv_columns_are_refused(labels):
    from fer_export.batch.results import columns
    from fer_export.errors import ArtifactError

    with pytest.raises(ArtifactError, match="rename them"):
        columns(labels)
    assert columns(("happy", "sad"))[-4:] == ["happy", "sad", "status", "error"]
