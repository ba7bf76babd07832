"""fer-batch on Dask: the same CSV as local mode (rows, order, probabilities, error rows), resume,
a real LocalCluster of worker processes, and a worker that dies mid-run."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fer_export.batch import BatchConfig, WorkConfig, run_batch
from fer_export.batch.results import journal_path, read_results
from fer_export.cli.batch import main
from fer_export.spec import FER2013_LABELS
from test_batch import NOFACE, _kill_and_cut, fer_crops, write_avi

try:
    from distributed import WorkerPlugin
except ImportError:  # the tests that need it skip
    WorkerPlugin = object

PROBS_ATOL = 1e-5  # batches differ between the modes; everything else must be equal


@pytest.fixture(scope="module")
def distributed():
    return pytest.importorskip("distributed", reason="needs dask[distributed] (pip install 'fer-export[dask]')")


@pytest.fixture(scope="module")
def threads_cluster(distributed):
    """An in-process cluster: two workers of one thread each, no processes (fast)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as c:
        yield c.scheduler_address


@pytest.fixture(scope="module")
def tiny_model(exported) -> Path:
    return exported["onnx"]


def batch(*args):
    return CliRunner().invoke(main, [*map(str, args), "--no-progress"])


def local_and_dask(tmp_path, inputs, scheduler, **kw):
    """Run ``inputs`` in local mode and on ``scheduler`` in small tasks; return both reports and CSV paths."""
    from fer_export.batch.dask import run_dask

    local = run_batch(BatchConfig.build(inputs, tmp_path / "local.csv", progress=False, batch_size=4, **kw))
    dask = run_dask(BatchConfig.build(inputs, tmp_path / "dask.csv", progress=False, batch_size=4, **kw), scheduler,
                    images_per_task=3, frames_per_task=4)  # many tasks: video ranges seek and are stitched together
    return local, dask, tmp_path / "local.csv", tmp_path / "dask.csv"


def assert_same_rows(a: Path, b: Path) -> None:
    """Equal rows in equal order; probabilities (and confidence) within PROBS_ATOL."""
    x, y = read_results(a), read_results(b)
    probs = [*FER2013_LABELS, "confidence"]
    pd.testing.assert_frame_equal(x.drop(columns=probs), y.drop(columns=probs))
    np.testing.assert_allclose(x[probs].to_numpy(float), y[probs].to_numpy(float), atol=PROBS_ATOL)


def test_photos_videos_and_crops_as_in_local_mode(tmp_path, threads_cluster, tiny_model, photos, videos,
                                                  yunet_model, fer2013):
    inputs = [photos / "fr_two_people.jpg", videos / NOFACE, photos / "fer_justin.jpg",
              videos / "pyfeat_single_face.mp4", *fer_crops(fer2013, 1)]
    local, dask, a, b = local_and_dask(tmp_path, inputs, threads_cluster, model=tiny_model,
                                       yunet_model=yunet_model, every_n=6)
    assert_same_rows(a, b)
    df = read_results(b)
    assert list(df.source.unique()) == list(map(str, inputs))
    video = df[df.source == str(videos / NOFACE)]
    assert sorted(video.frame.unique()) == list(range(0, 169, 6))  # every range, each frame once
    assert (dask.frames, dask.faces, dask.status) == (local.frames, local.faces, local.status)


def test_video_fps_and_max_faces_as_in_local_mode(tmp_path, threads_cluster, tiny_model, photos, videos,
                                                  yunet_model):
    inputs = [videos / NOFACE, photos / "pyfeat_multi_face.jpg"]
    local, dask, a, b = local_and_dask(tmp_path, inputs, threads_cluster, model=tiny_model,
                                       yunet_model=yunet_model, video_fps=3, max_faces=2)
    assert_same_rows(a, b)
    df = read_results(b)
    # the clip's frames are 14-42 ms apart (variable frame rate): each kept frame is the first at or after
    # a tick of a 3-per-second clock, by the decoder's own times
    kept = df[df.kind == "video"].drop_duplicates("frame").sort_values("frame")
    ticks = np.arange(len(kept)) / 3
    assert len(kept) == 20 and kept.frame.iloc[0] == 0
    assert (kept.timestamp_s.to_numpy() >= ticks - 0.0005).all() and (kept.timestamp_s.to_numpy() < ticks + 0.043).all()
    assert df[df.kind == "image"].face.max() == 1  # two faces kept of several


def test_views_of_faces_in_pictures_as_in_local_mode(tmp_path, threads_cluster, framed_model, photos, videos,
                                                     yunet_model):
    """A framed model: faces in pictures averaged over their views, video frames not, as in local mode."""
    inputs = [photos / "pyfeat_multi_face.jpg", videos / "pyfeat_single_face.mp4", photos / "fer_justin.jpg"]
    local, dask, a, b = local_and_dask(tmp_path, inputs, threads_cluster, model=framed_model,
                                       yunet_model=yunet_model, every_n=9)
    assert_same_rows(a, b)
    assert (dask.frames, dask.faces) == (local.frames, local.faces) and local.faces > 5


def test_seek_that_misses_is_redone_in_sequence(tiny_model, videos):
    """QuickTime seeks here land late; the seam digests notice and the ranges are decoded in sequence."""
    from fer_export.batch.dask import run_video_range, seams_agree, video_ranges
    from fer_export.batch.sources import FrameSampler, collect_sources

    source = collect_sources([videos / NOFACE])[0]
    settings = WorkConfig.build(model=tiny_model, provider="cpu", batch_size=8, detector="none", every_n=20)
    ranges = video_ranges(source, FrameSampler(20), per_task=3)
    assert ranges == [(0, 60), (60, 120), (120, None)]
    seeked = [run_video_range(settings, source, a, b, True) for a, b in ranges]
    decoded = [run_video_range(settings, source, a, b, False) for a, b in ranges]
    assert not seams_agree(seeked) and seams_agree(decoded)
    assert [f.frame for p in decoded for f in p.inputs[0][0]] == list(range(0, 169, 20))


def test_ranges_past_a_failure_are_not_checked_or_used():
    """A video that fails in range 1 (say, a detector error) keeps range 0 and 1's frames and the error;
    range 2, whose seek no sequential decode confirms, neither triggers a redo nor adds rows."""
    from fer_export.batch.dask import TaskResult, seams_agree, used_parts

    frames = lambda *ns: [(n, None, [], [], None) for n in ns]  # noqa: E731
    parts = [TaskResult([(frames(0, 1), "")], end=2, first="a", after="b"),
             TaskResult([(frames(2), "boom")], end=3, first="b", after=None),
             TaskResult([(frames(4, 5), "")], end=6, first="x")]
    used = used_parts([(0, 2), (2, 4), (4, None)], parts)
    assert used == parts[:2] and seams_agree(used) and not seams_agree(parts)


def test_bad_inputs_give_the_same_error_rows(tmp_path, threads_cluster, tiny_model, photos, videos, yunet_model):
    data = tmp_path / "in"
    data.mkdir()
    shutil.copy(photos / "fer_justin.jpg", data / "good.jpg")
    (data / "empty.jpg").write_bytes(b"")
    (data / "text.png").write_text("not an image\n")
    mp4 = (videos / "pyfeat_single_face.mp4").read_bytes()
    (data / "half.mp4").write_bytes(mp4[:len(mp4) // 2])
    write_avi(data / "half.avi", truncate=True)  # stops mid-way: in a later range than the first
    local, dask, a, b = local_and_dask(tmp_path, [data], threads_cluster, model=tiny_model, yunet_model=yunet_model)
    assert_same_rows(a, b)
    assert dask.return_code == local.return_code == 1 and dask.failed == local.failed
    assert (read_results(b).status == "error").sum() == 4


def test_resume_through_dask_equals_a_clean_run(tmp_path, threads_cluster, tiny_model, fer2013):
    crops = fer_crops(fer2013, 2)
    args = [*crops, "--model", tiny_model, "--batch-size", 4]
    assert batch(*args, "--out", tmp_path / "clean.csv").exit_code == 0
    out = tmp_path / "r.csv"
    shutil.copy(tmp_path / "clean.csv", out)
    shutil.copy(journal_path(tmp_path / "clean.csv"), journal_path(out))
    _kill_and_cut(out, keep=5, cut_bytes=70)
    res = batch(*args, "--out", out, "--resume", "--scheduler", threads_cluster)
    assert res.exit_code == 0 and "5 done by an earlier run" in res.output, res.output
    assert out.read_bytes() == (tmp_path / "clean.csv").read_bytes()


def test_local_cluster_of_two_processes(tmp_path, distributed, tiny_model, videos, yunet_model, fer2013):
    inputs = [videos / "pyfeat_single_face.mp4", *fer_crops(fer2013, 1)]
    args = [*inputs, "--model", tiny_model, "--yunet-model", yunet_model, "--every-n", 4]
    assert batch(*args, "--out", tmp_path / "local.csv").exit_code == 0
    res = batch(*args, "--out", tmp_path / "dask.csv", "--dask", "local:2")
    assert res.exit_code == 0 and "2 workers" in res.output, res.output
    assert_same_rows(tmp_path / "local.csv", tmp_path / "dask.csv")


class ExitOnce(WorkerPlugin):
    """Worker plugin: the first worker to start a fer-batch task exits at once (marker file: only once)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and str(key).startswith("run_"):
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
            os._exit(1)  # the worker process dies mid-task; its nanny starts a new one


def test_a_worker_that_dies_mid_run_loses_and_repeats_nothing(tmp_path, distributed, tiny_model, videos,
                                                              yunet_model, fer2013):
    inputs = [*fer_crops(fer2013, 1), videos / "pyfeat_single_face.mp4"]
    args = [*inputs, "--model", tiny_model, "--yunet-model", yunet_model, "--every-n", 4]
    assert batch(*args, "--out", tmp_path / "local.csv").exit_code == 0
    marker = tmp_path / "worker-killed"
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    with cluster as c, distributed.Client(c) as client:
        client.register_plugin(ExitOnce(marker))
        res = batch(*args, "--out", tmp_path / "dask.csv", "--scheduler", c.scheduler_address)
    assert marker.exists(), "no worker was killed"
    assert res.exit_code == 0, res.output
    assert_same_rows(tmp_path / "local.csv", tmp_path / "dask.csv")


@pytest.mark.parametrize("args, message", [
    (["--dask", "remote:2"], "local:N"),
    (["--dask", "local:0"], "local:N"),
    (["--dask", "local", "--scheduler", "tcp://127.0.0.1:8786"], "not both"),
])
def test_usage_errors_exit_2(tmp_path, tiny_model, photos, args, message):
    res = batch(photos / "fer_justin.jpg", "--out", tmp_path / "r.csv", "--model", tiny_model, *args)
    assert res.exit_code == 2 and message in res.output, res.output


def test_without_dask_says_what_to_install(tmp_path, monkeypatch, tiny_model, photos):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    res = batch(photos / "fer_justin.jpg", "--out", tmp_path / "r.csv", "--model", tiny_model, "--dask", "local")
    assert res.exit_code == 2 and "pip install 'fer-export[dask]'" in res.output, res.output


def test_names_that_are_not_utf8_as_in_local_mode(tmp_path, threads_cluster, tiny_model, photos, videos, yunet_model):
    data = tmp_path / "in"
    data.mkdir()
    shutil.copy(photos / "fer_justin.jpg", data / os.fsdecode(b"bad\xff.jpg"))
    shutil.copy(videos / "pyfeat_single_face.mp4", data / os.fsdecode(b"v\xfe.mp4"))
    local, dask, a, b = local_and_dask(tmp_path, [data], threads_cluster, model=tiny_model,
                                       yunet_model=yunet_model, every_n=12)
    assert_same_rows(a, b)
    assert dask.return_code == 0 and list(read_results(b).source.unique()) == [f"{data}/bad\\xff.jpg",
                                                                              f"{data}/v\\xfe.mp4"]


@pytest.mark.parametrize("bad", ["local:²", "local:٣", "local:0", "local:-1", "local:2.5"])
def test_a_local_cluster_size_is_ascii_digits(bad):
    """``str.isdigit`` accepts superscripts and other scripts' digits that ``int`` refuses: one InputError."""
    from fer_export.batch.dask import local_workers
    from fer_export.batch.config import usable_cpus
    from fer_export.errors import InputError

    with pytest.raises(InputError, match="local:N"):
        local_workers(bad)
    assert local_workers("local") == usable_cpus() and local_workers("local:3") == 3


def test_detection_settings_reach_the_workers(tmp_path, threads_cluster, tiny_model, photos, yunet_model):
    """--det-nms travels in the work's detection part to every worker: the same rows as locally, and
    another value than the default gives other faces."""
    inputs = [photos / "df_selfie-many-people.jpg"]
    local, dask, a, b = local_and_dask(tmp_path, inputs, threads_cluster, model=tiny_model, yunet_model=yunet_model,
                                       det_nms=0.9)
    assert_same_rows(a, b)
    default = run_batch(BatchConfig.build(inputs, tmp_path / "default.csv", model=tiny_model, yunet_model=yunet_model,
                                          progress=False))
    assert dask.faces == local.faces > default.faces
