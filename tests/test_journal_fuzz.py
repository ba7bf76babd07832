"""``--resume`` against journals and CSVs that do not describe each other.

A clean run over a few crops cut from a real photo (``--detector none``) gives the CSV and journal
every trial starts from. Each seeded trial leaves them as a crash would (some inputs journalled, rows
after them written or cut mid-line), then damages them at random: cut, inserted bytes or lines, a
flipped byte, swapped, dropped or repeated lines, another run's journal, text appended to a cell, an
emptied journal. Resuming must then either finish with the clean run's CSV byte for byte, or refuse
with one line and leave both files as they were: never finish with another CSV.

The trials run the writer in-process (what ``--resume`` does: check the journal, then write the rows
of the inputs it does not list, in order); a few damages of each kind also go through ``fer-batch``.
"""
from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from fer_export.batch.results import ResultsWriter, journal_path
from fer_export.cli.batch import main
from fer_export.errors import InputError

TRIALS = 300


@dataclass
class Run:
    """A finished run: its arguments, CSV and journal, and each input's rows as the journal splits them."""

    args: list[str]
    csv: bytes
    journal: bytes
    settings: dict
    header: list[str]
    inputs: list[tuple[str, str, str, list[list[str]]]]  # (source, key, status, rows)


def fer_batch(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def cut_crops(photo: Path, folder: Path, n: int) -> Path:
    """``n`` small crops (classified whole without a detector) cut from a real photo."""
    folder.mkdir(parents=True)
    image = cv2.imread(str(photo))
    for k in range(n):
        y, x = 30 * k, 280 + 25 * k
        cv2.imwrite(str(folder / f"crop{k}.png"), image[y:y + 56, x:x + 56])
    return folder


def finished_run(folder: Path, out: Path) -> Run:
    args = [folder, "--model", "fast", "--detector", "none", "--no-progress"]
    res = fer_batch(*args, "--out", out)
    assert res.exit_code == 0, res.output
    data, journal = out.read_bytes(), journal_path(out).read_bytes()
    lines = journal.splitlines(keepends=True)
    start = data.index(b"\n") + 1
    inputs = []
    for line in lines[1:]:
        entry = json.loads(line)
        rows = list(csv.reader(io.StringIO(data[start:entry["end"]].decode())))
        inputs.append((entry["source"], entry["key"], entry["status"], rows))
        start = entry["end"]
    header = next(csv.reader(io.StringIO(data.decode())))
    return Run([str(a) for a in args], data, journal, json.loads(lines[0])["run"], header, inputs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, photos) -> tuple[Run, Run]:
    """The run every trial must reproduce, and another one's (the same settings, other crops)."""
    root = tmp_path_factory.mktemp("fuzz")
    clean = finished_run(cut_crops(photos / "fr_obama-480p.jpg", root / "in", 6), root / "clean.csv")
    other = finished_run(cut_crops(photos / "fr_two_people.jpg", root / "other", 6), root / "other.csv")
    assert len(clean.inputs) == 6 and clean.settings == other.settings
    return clean, other


def crashed(rng: random.Random, run: Run) -> tuple[bytes, bytes]:
    """The CSV and journal as a kill leaves them: ``k`` inputs journalled; the rows of the next ones
    written, perhaps cut mid-line; perhaps the next journal line cut short."""
    lines = run.journal.splitlines(keepends=True)
    k = rng.randrange(len(lines))
    ends = [len(run.csv.split(b"\n", 1)[0]) + 1] + [json.loads(x)["end"] for x in lines[1:]]
    data = run.csv[:rng.randint(ends[k], len(run.csv))]
    journal = b"".join(lines[:k + 1])
    if k + 1 < len(lines) and rng.random() < 0.3:
        journal += lines[k + 1][:rng.randrange(1, len(lines[k + 1]))]
    return data, journal


def damaged(rng: random.Random, data: bytes, journal: bytes, other: Run) -> tuple[bytes, bytes, str]:
    """One random damage to the CSV or the journal."""
    kind = rng.choice(["cut journal", "cut csv", "insert journal", "insert csv", "flip journal", "flip csv",
                       "swap lines", "drop line", "repeat line", "other journal", "append to a cell",
                       "empty journal", "line from the other journal"])
    lines = journal.splitlines(keepends=True)
    junk = rng.choice([b"garbage\n", b"\0" * rng.randint(1, 64), b"x", b"\n",
                       bytes(rng.randrange(256) for _ in range(rng.randint(1, 20))), b'{"source": "x"}\n'])
    if kind == "cut journal":
        journal = journal[:rng.randrange(len(journal) + 1)]
    elif kind == "cut csv":
        data = data[:rng.randrange(len(data) + 1)]
    elif kind == "insert journal":
        at = rng.randrange(len(journal) + 1)
        journal = journal[:at] + junk + journal[at:]
    elif kind == "insert csv":
        at = rng.randrange(len(data) + 1)
        data = data[:at] + junk + data[at:]
    elif kind in ("flip journal", "flip csv"):
        target = bytearray(journal if kind == "flip journal" else data)
        if target:
            target[rng.randrange(len(target))] ^= 1 << rng.randrange(8)
        journal, data = (bytes(target), data) if kind == "flip journal" else (journal, bytes(target))
    elif kind in ("swap lines", "drop line", "repeat line") and len(lines) > 2:
        i, j = sorted(rng.sample(range(len(lines)), 2))
        if kind == "swap lines":
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "drop line":
            del lines[j]
        else:
            lines.insert(j, lines[i])
        journal = b"".join(lines)
    elif kind == "other journal":
        journal = other.journal[:rng.randint(len(other.journal) // 2, len(other.journal))]
    elif kind == "line from the other journal" and len(lines) > 1:
        theirs = other.journal.splitlines(keepends=True)
        lines[rng.randrange(1, len(lines))] = theirs[rng.randrange(1, len(theirs))]
        journal = b"".join(lines)
    elif kind == "append to a cell":
        cells = [i for i, b in enumerate(data) if b in b",\n"]
        at = rng.choice(cells) if cells else 0
        data = data[:at] + b" (checked)" + data[at:]
    elif kind == "empty journal":
        journal = b""
    return data, journal, kind


def resume(run: Run, out: Path) -> ResultsWriter:
    """What ``--resume`` does: open the writer (which checks the journal), then write the inputs it
    does not list, in order (in two commits, as a run writes a few inputs at a time)."""
    writer = ResultsWriter(out, run.header, resume=True, run=run.settings)
    try:
        todo = [i for i in run.inputs if not writer.is_done(i[1], i[0])]
        writer.commit(todo[:len(todo) // 2])
        writer.commit(todo[len(todo) // 2:])
    finally:
        writer.close()
    return writer


@pytest.fixture
def no_fsync(monkeypatch):
    """Writes flushed, not forced to the disk: what is checked here is what the files hold, and
    hundreds of trials of fsyncs would take most of the test's time."""
    from fer_export.batch import results

    monkeypatch.setattr(results, "_fsync", lambda f: f.flush())


def test_resume_ends_with_the_clean_csv_or_refuses_in_one_line(runs, tmp_path, no_fsync):
    clean, other = runs
    out = tmp_path / "r.csv"
    outcomes: dict[str, list[int]] = {}
    for seed in range(TRIALS):
        rng = random.Random(seed)
        data, journal = crashed(rng, clean)
        for _ in range(rng.choice([1, 1, 2])):
            data, journal, kind = damaged(rng, data, journal, other)
        out.write_bytes(data)
        journal_path(out).write_bytes(journal)
        try:
            resume(clean, out)
        except InputError as exc:
            message = str(exc)
            assert "\n" not in message and "cannot resume" in message, (seed, kind, message)
            assert "--overwrite" in message or "--out" in message, (seed, kind, message)
            assert (out.read_bytes(), journal_path(out).read_bytes()) == (data, journal), (seed, kind)
            outcomes.setdefault(kind, [0, 0])[1] += 1
            continue
        assert out.read_bytes() == clean.csv, (seed, kind)
        again = resume(clean, out)  # its journal describes the CSV: everything is done, nothing changes
        assert len(again.done) == len(clean.inputs) and out.read_bytes() == clean.csv, (seed, kind)
        outcomes.setdefault(kind, [0, 0])[0] += 1
    resumed, refused = (sum(o[k] for o in outcomes.values()) for k in (0, 1))
    assert resumed > TRIALS // 5 and refused > TRIALS // 5, outcomes  # the trials reach both ends
    for kind in ("other journal", "swap lines", "append to a cell", "empty journal"):
        assert outcomes[kind][1], (kind, outcomes)


def test_a_crash_alone_is_always_resumed(runs, tmp_path, no_fsync):
    """Without damage, every state a kill can leave resumes to the clean CSV."""
    clean, _ = runs
    out = tmp_path / "r.csv"
    for seed in range(60):
        data, journal = crashed(random.Random(seed), clean)
        out.write_bytes(data)
        journal_path(out).write_bytes(journal)
        resume(clean, out)
        assert out.read_bytes() == clean.csv, seed


@pytest.mark.parametrize("kind", ["other journal", "append to a cell", "swap lines", "cut csv", "empty journal",
                                  "flip csv"])
def test_fer_batch_resume_refuses_in_one_line_or_reproduces_the_run(runs, tmp_path, kind):
    """The same, through ``fer-batch --resume``: exit status 2 and one ``Error:`` line (no traceback),
    or exit 0 with the clean run's CSV."""
    clean, other = runs
    out = tmp_path / "r.csv"
    for seed in range(100):  # the first trial of this kind that changes what lies before the last input
        rng = random.Random(seed)
        data, journal = clean.csv, clean.journal
        data, journal, got = damaged(rng, data, journal, other)
        if got == kind and (data, journal) != (clean.csv, clean.journal):
            break
    out.write_bytes(data)
    journal_path(out).write_bytes(journal)
    res = fer_batch(*clean.args, "--out", out, "--resume")
    assert "Traceback" not in res.output and not isinstance(res.exception, (TypeError, ValueError, KeyError))
    if res.exit_code == 0:
        assert out.read_bytes() == clean.csv, res.output
        return
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "cannot resume" in errors[0], res.output
    assert out.read_bytes() == data


def test_an_emptied_journal_never_resumes_with_other_settings(runs, tmp_path):
    """The settings line is gone: neither the same settings nor others resume (other ones would mix two
    models' rows in one CSV)."""
    clean, _ = runs
    out = tmp_path / "r.csv"
    out.write_bytes(clean.csv)
    journal_path(out).write_bytes(b"")
    for detector in ("none", "haar"):
        args = [detector if a == "none" else a for a in clean.args]
        res = fer_batch(*args, "--out", out, "--resume")
        assert res.exit_code == 2 and "settings" in res.output and "Traceback" not in res.output, res.output
    assert out.read_bytes() == clean.csv


def test_a_journal_copied_beside_another_csv_is_refused_before_the_summary(runs, tmp_path):
    """Another run's journal beside a CSV, resumed with --summary: refused before any row is written or
    the summary reads the CSV."""
    clean, other = runs
    out = tmp_path / "r.csv"
    out.write_bytes(clean.csv)
    journal_path(out).write_bytes(other.journal)
    res = fer_batch(*clean.args, "--out", out, "--resume", "--summary", tmp_path / "s.csv")
    assert res.exit_code == 2 and "does not describe it" in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "s.csv").exists() and out.read_bytes() == clean.csv


def test_the_checksum_is_of_the_csv_and_the_records(runs, tmp_path):
    """A journal whose records say other sources (or keys) for the same rows is refused: the rows
    and the records are checked together."""
    clean, _ = runs
    out = tmp_path / "r.csv"
    out.write_bytes(clean.csv)
    lines = clean.journal.splitlines(keepends=True)
    entry = json.loads(lines[2])
    entry["key"] = entry["key"].replace("crop1", "crop9")
    journal_path(out).write_bytes(b"".join([*lines[:2], json.dumps(entry).encode() + b"\n", *lines[3:]]))
    with pytest.raises(InputError, match="line 3"):
        resume(clean, out)
    assert out.read_bytes() == clean.csv
