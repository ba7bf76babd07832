"""The docs: their tables are what benchmarks/results/ generates, their links lead somewhere, and the
README keeps its quick start and its size.

``benchmarks/tables.py`` renders every table between ``<!-- table: NAME -->`` and ``<!-- end table -->``
from ``benchmarks/results/NAME.json``; these tests run it on the repository and on small stand-ins.
"""
from __future__ import annotations

import json
import re
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import tables  # noqa: E402

README = ROOT / "README.md"
#: The docs this project writes (docs/embed/ included); each is checked for links and for wording.
DOCS = [README, ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

MACHINE = {"cpu": "AMD EPYC 7B13", "isa": ["AVX2"], "cpu_family_model": "25/1", "logical_cpus": 2, "cores": 2,
           "load_average_1min": 0.1, "onnxruntime": "1.32.0", "onnxruntime-gpu": None, "torch": "2.14.1"}


def accuracy_result(accuracy: float = 0.7161, machine: dict = MACHINE) -> dict:
    per_class = {label: {"precision": 0.5, "recall": 0.25, "f1-score": 0.3333, "support": 2}
                 for label in ("angry", "happy")}
    model = {"model": "accurate", "file": "fer2013_resnet18.int8.onnx", "size_mb": 11.4, "precision": "int8",
             "images": 3589, "correct": round(accuracy * 3589), "accuracy": accuracy, "labels": ["angry", "happy"],
             "per_class": per_class, "accuracy_literal": accuracy, "agreement_literal": 0.9994}
    return {"data": "../shared/data/fer2013/val", "models": [model], "machine": machine,
            "command": "python benchmarks/accuracy.py --json benchmarks/results/accuracy.json"}


def cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


@pytest.fixture
def tree(tmp_path):
    """A stand-in repository: a README with one table, and its results folder."""
    (tmp_path / "docs").mkdir()
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nText before.\n\n<!-- table: accuracy -->\nstale\n<!-- end table -->\n\nText after.\n")
    return tmp_path, results, readme


def test_the_docs_tables_are_what_the_results_files_generate():
    stale = tables.update(check=True)
    assert stale == [], f"run `python benchmarks/tables.py`: these tables differ from benchmarks/results: {stale}"


def test_a_table_is_rendered_between_its_comments_and_a_changed_one_is_found(tree):
    root, results, readme = tree
    (results / "accuracy.json").write_text(json.dumps(accuracy_result()))
    assert tables.update(root, check=True, results=results) == ["README.md: accuracy"]
    assert "stale" in readme.read_text()  # --check changes nothing
    assert tables.update(root, results=results) == ["README.md: accuracy"]
    text = readme.read_text()
    assert text.startswith("# x\n\nText before.\n\n<!-- table: accuracy -->\n") and text.endswith("Text after.\n")
    row = next(line for line in text.splitlines() if line.startswith("| `accurate`"))
    assert "stale" not in text and cells(row) == ["`accurate`", "`fer2013_resnet18.int8.onnx`", "11.4", "int8", "71.61",
                                                  "2,570 of 3,589", "99.94"]
    heading = next(line for line in text.splitlines() if line.startswith("*Measured on"))
    for part in ("AMD EPYC 7B13", "AVX2, no VNNI", "2 cores", "2 threads", "onnxruntime 1.32.0", "torch 2.14.1",
                 "`python benchmarks/accuracy.py --json benchmarks/results/accuracy.json`"):
        assert part in heading, (part, heading)
    assert tables.update(root, check=True, results=results) == []  # generating twice changes nothing
    # a new result, or a hand edit of the table, is a difference --check names
    (results / "accuracy.json").write_text(json.dumps(accuracy_result(0.7152)))
    assert tables.update(root, check=True, results=results) == ["README.md: accuracy"]
    tables.update(root, results=results)
    readme.write_text(readme.read_text().replace("71.52", "72.00"))
    assert tables.update(root, check=True, results=results) == ["README.md: accuracy"]


def test_a_missing_results_file_says_which_command_writes_it(tree):
    root, results, readme = tree
    readme.write_text("<!-- table: video_fps-crops -->\n<!-- end table -->\n<!-- table: run -->\n<!-- end table -->\n")
    tables.update(root, results=results)
    text = readme.read_text()
    assert "Not measured yet" in text
    assert "`python benchmarks/video_fps.py ../shared/data/fer2013/val --detectors none" in text
    assert "`python benchmarks/run.py --batch-sizes 32 128 --json benchmarks/results/run.json`" in text


def test_speeds_measured_on_a_busy_machine_say_so(tree):
    root, results, _ = tree
    busy = MACHINE | {"load_average_1min": 3.5}
    result = {"machine": busy, "video": "v.mp4", "fer_fps": None,
              "runs": [{"model": "accurate", "detector": "yunet", "frames": 464, "best_frames_per_s": 128.2,
                        "best_in_run_frames_per_s": 136.1, "cpu_ms_per_frame": 11.9}]}
    (results / "video_fps.json").write_text(json.dumps(result))
    (results / "accuracy.json").write_text(json.dumps(accuracy_result(machine=busy)))
    assert "other work was running (load average 3.5)" in tables.render("video_fps", [], results)
    assert "other work was running" not in tables.render("accuracy", [], results)  # nothing timed there
    row = tables.render("video_fps", [], results).splitlines()[-1]
    assert cells(row) == ["accurate", "yunet", "464", "128.2", "136.1", "11.9"]


def test_views_of_one_file(tree):
    _, results, _ = tree
    (results / "accuracy.json").write_text(json.dumps(accuracy_result()))
    per_class = tables.render("accuracy", ["per_class"], results)
    lines = per_class.splitlines()
    assert cells(lines[2]) == ["class", "`accurate` precision", "`accurate` recall", "`accurate` F1"]
    assert cells(lines[4]) == ["angry", "0.50", "0.25", "0.33"]
    assert tables.render("accuracy", ["per_class", "accurate"], results) == per_class
    with pytest.raises(tables.DocError, match="none of"):
        tables.render("accuracy", ["per_class", "fast"], results)
    with pytest.raises(tables.DocError, match="per_class"):
        tables.render("accuracy", ["per_model"], results)


@pytest.mark.parametrize("doc, says", [
    ("<!-- table: nosuch -->\n<!-- end table -->\n", "README.md:1: no script writes results named 'nosuch'"),
    ("text\n<!-- table: accuracy -->\nno end\n", "README.md:2: <!-- table: accuracy --> has no <!-- end table -->"),
    ("<!-- table: accuracy -->\n<!-- table: run -->\n<!-- end table -->\n", "README.md:1: <!-- table: accuracy -->"),
    ("<!-- end table -->\n", "README.md:1: <!-- end table --> without a table comment"),
    ("<!-- table: Bad Name! -->\n<!-- end table -->\n", "README.md:1: write a table comment as"),
])
def test_a_bad_table_comment_is_an_error_naming_the_file_and_line(tree, doc, says):
    root, results, readme = tree
    readme.write_text(doc)
    with pytest.raises(tables.DocError) as exc:
        tables.update(root, check=True, results=results)
    assert str(exc.value).startswith(says), str(exc.value)
    assert readme.read_text() == doc


def test_a_results_file_without_its_machine_or_fields_is_refused(tree):
    _, results, _ = tree
    (results / "accuracy.json").write_text(json.dumps({k: v for k, v in accuracy_result().items() if k != "machine"}))
    with pytest.raises(tables.DocError, match="has no machine"):
        tables.render("accuracy", [], results)
    (results / "accuracy.json").write_text(json.dumps({"machine": MACHINE}))
    with pytest.raises(tables.DocError, match="lacks 'models'"):
        tables.render("accuracy", [], results)
    (results / "accuracy.json").write_text("{not json")
    with pytest.raises(tables.DocError, match="not JSON"):
        tables.render("accuracy", [], results)


def test_add_takes_in_a_result_without_its_manifest(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tables, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(tables, "update", lambda check=False: [])
    written = tmp_path / "out" / "pictures.json"
    written.parent.mkdir()
    written.write_text(json.dumps({"rows": [], "machine": MACHINE, "manifest": [{"name": "p0.png"}] * 3}))
    assert tables.main(["--add", str(written), "--as", "pictures-fast"]) == 0
    kept = json.loads((tmp_path / "results" / "pictures-fast.json").read_text())
    assert kept == {"rows": [], "machine": MACHINE}
    for args, says in ((["--add", str(written), "--as", "../escape"], "--as ../escape"),
                       (["--add", str(written), "--as", "nosuchscript"], "no script writes"),
                       (["--as", "pictures"], "--as needs --add")):
        with pytest.raises(SystemExit) as exc:
            tables.main(args)
        assert exc.value.code == 2 and says in capsys.readouterr().err
    written.write_text(json.dumps({"rows": []}))
    with pytest.raises(SystemExit):
        tables.main(["--add", str(written)])
    assert "not a benchmark result with its machine" in capsys.readouterr().err


def test_the_readme_fits_on_a_few_screens_and_keeps_its_quick_start():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert "\npip install -e '.[dev]' && python -m pytest -q\n" in text  # what .ci/run runs
    first = next(line for line in text.splitlines() if line.startswith("pip install . scikit-image && fer-batch"))
    assert first.endswith("--out results.csv --overwrite")  # so that it can be run twice


def _slug(heading: str) -> str:
    """GitHub's anchor for a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)  # links inside code are not links
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s) and mailto links are not checked offline
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no heading with anchor #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, broken


#: Words that date a figure or name who measured it: the docs say what is true, not when it was seen.
DATED = re.compile(r"\btoday\b|\b(this|that|earlier|later|previous|same) session\b|\bgeneration [12]\b|"
                   r"\bthe previous (model|generation|refinement)\b|\bthis machine\b|\bthis VM\b", re.I)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_docs_speak_of_the_project_not_of_when_it_was_measured(doc):
    lines = enumerate(doc.read_text().splitlines(), 1)
    found = [f"{doc.relative_to(ROOT)}:{n}: {line.strip()[:100]}" for n, line in lines if DATED.search(line)]
    assert not found, found


def test_a_view_without_speeds_drops_them_and_the_busy_note(tree):
    _, results, _ = tree
    row = {"accuracy": 0.71, "accuracy_literal": 0.71, "agreement_literal": 0.9997, "max_diff_literal": 0.02,
           "saturating_tensors": 0, "images_per_s_1": 30.0, "images_per_s_2": 20.0}
    result = {"machine": MACHINE | {"load_average_1min": 9.0}, "emulated_cpu": None, "data": "val", "images": 3589,
              "schemes": [{"scheme": "fp32", "accuracy": 0.7152, "images_per_s_1": 14.0, "images_per_s_2": 11.0},
                          {"scheme": "7bit", **row}]}
    (results / "int8_schemes-zen3.json").write_text(json.dumps(result))
    whole, accuracy = (tables.render("int8_schemes-zen3", view, results) for view in ([], ["accuracy"]))
    assert "img/s 2 threads" in whole and "other work was running" in whole
    assert "img/s" not in accuracy and "other work was running" not in accuracy
    assert cells(accuracy.splitlines()[-1]) == ["7bit", "0", "71.00", "71.00", "99.97", "0.0200"]
    assert cells(accuracy.splitlines()[-2]) == ["fp32", "-", "71.52", "-", "-", "-"]


def test_followed_video_faces_against_every_frame_searched(tree):
    _, results, _ = tree
    stages = {"decode": 3.0, "detect": 13.1, "crop": 1.0, "model": 2.7, "write": 0.1}
    agreement = {"rows": 464, "found": 1.0, "box_iou_0.8": 1.0, "same_emotion": 0.9763, "entering_tracks": 1,
                 "longest_wait_frames": 0}
    result = {"machine": MACHINE | {"load_average_1min": 9.0}, "results": [
        {"video": "fer_woman2.mp4", "frames": 464, "full_searches": 47, "agreement": agreement,
         "times_every_frame": stages, "times_followed": stages | {"detect": 5.7}}]}
    (results / "video_tracking.json").write_text(json.dumps(result))
    text = tables.render("video_tracking", ["agreement"], results)
    assert cells(text.splitlines()[-1]) == ["`fer_woman2.mp4`", "464", "47", "464", "100.0", "100.0", "97.6", "1, 0"]
    assert "`benchmarks/video_tracking.py`" in text and "other work was running" not in text  # no command recorded
    timed = tables.render("video_tracking", [], results)
    assert cells(timed.splitlines()[-1])[-2:] == ["13.1", "5.7"] and "other work was running" in timed
