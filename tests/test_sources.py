"""Inputs and frames: folder search, frame sampling, truncated videos."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_export.errors import InputError
from fer_export.batch.sources import FrameRange, FrameSampler, collect_sources, iter_frames


def write_avi(path: Path, n: int = 20, size=(96, 64), truncate: bool = False) -> Path:
    """A small MJPG .avi of ``n`` frames whose pixels encode the frame index; ``truncate`` cuts it in half."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    rng = np.random.default_rng(0)  # noise keeps the frames large enough for a cut to land mid-stream
    for i in range(n):
        writer.write((rng.integers(0, 64, (size[1], size[0], 3)) + 10 * i).astype(np.uint8))
    writer.release()
    if truncate:
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    return path


def test_collect_sources_recurses_in_order_and_names_relative_to_the_folder(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/b/z.jpg", "a/x.MOV", "a/notes.txt", "y.png"):
        (tmp_path / name).write_bytes(b"x")
    sources = collect_sources([tmp_path / "a", tmp_path / "y.png", tmp_path / "a" / "x.MOV"])
    assert [(Path(s.name).relative_to(tmp_path).as_posix(), s.kind) for s in sources] == [
        ("a/b/z.jpg", "image"), ("a/x.MOV", "video"), ("y.png", "image")]
    with pytest.raises(InputError, match="no such file"):
        collect_sources([tmp_path / "missing"])


@pytest.mark.parametrize("sampler, video_fps, expected", [
    (FrameSampler(), 30, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    (FrameSampler(every_n=4), 30, [0, 4, 8]),
    (FrameSampler(fps=10), 30, [0, 3, 6, 9]),
    (FrameSampler(fps=12), 30, [0, 3, 5, 8]),  # 2.5 frames apart
    (FrameSampler(fps=60), 30, list(range(10))),  # never more than every frame
])
def test_frame_sampler(sampler, video_fps, expected):
    picks = sampler.picks(video_fps)
    assert [i for i in range(10) if next(picks)] == expected


def test_iter_frames_keeps_decoded_frames_then_reports_truncation(tmp_path):
    whole = [i for i, _, _ in iter_frames(write_avi(tmp_path / "v.avi"), FrameSampler(every_n=3))]
    assert whole == list(range(0, 20, 3))
    got = []
    with pytest.raises(InputError, match="truncated"):
        for i, t, frame in iter_frames(write_avi(tmp_path / "t.avi", truncate=True)):
            got.append((i, t, round((frame.mean() - 31.5) / 10)))
    assert 0 < len(got) < 20 and all(i == v and t == pytest.approx(i / 10) for i, t, v in got)


@pytest.mark.parametrize("seek", [True, False])
def test_frame_range_starts_mid_video_and_reports_where_it_stopped(tmp_path, seek):
    video = write_avi(tmp_path / "v.avi")  # MJPG: every frame is a keyframe, so seeking is exact
    part = FrameRange(video, FrameSampler(every_n=2), start=6, stop=12, seek=seek)
    got = [(i, round((frame.mean() - 31.5) / 10)) for i, _, frame in part]
    assert got == [(6, 6), (8, 8), (10, 10)] and part.end == 12 and part.count == 20
    assert round((part.after.mean() - 31.5) / 10) == 12  # the next range's first frame
    last = FrameRange(video, FrameSampler(), start=18)
    assert [i for i, _, _ in last] == [18, 19] and last.after is None and last.error() == ""


def test_keys_are_real_paths_through_linked_folders_and_files(tmp_path, monkeypatch):
    """A source's key is its real path (what outputs are checked against and duplicates are found by),
    each folder resolved once: through a linked folder, a linked file, and `..` after a link."""
    import os

    real = tmp_path / "real" / "sub"
    real.mkdir(parents=True)
    for name in ("a.jpg", "b.png"):
        (real / name).write_bytes(b"x")
    (tmp_path / "linked").symlink_to(real)
    (tmp_path / "one.jpg").symlink_to(real / "a.jpg")
    monkeypatch.chdir(tmp_path)
    given = ["linked", "one.jpg", "linked/../sub/b.png", str(real)]
    sources = collect_sources(given)
    assert all(s.key == os.path.realpath(s.path) for s in sources)
    assert [s.key for s in sources] == [str(real / "a.jpg"), str(real / "b.png")]  # each file once
