"""The benchmark scripts run on a tiny model and write well-formed JSON and markdown.

No assertion here looks at how fast anything was: only that every number is there and sane.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from common import markdown_table, peak_gflops  # noqa: E402

CPU_BACKENDS = {("torch eager", "fp32"), ("torch eager bf16 autocast", "bf16"), ("torchscript", "fp32"),
                ("onnxruntime", "fp32"), ("onnxruntime int8 QDQ", "int8")}


def script(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def test_run_measures_every_backend_with_accuracy(tmp_path, tiny_ckpt, exported, fer2013):
    out = tmp_path / "bench"
    (out / "artifacts").mkdir(parents=True)
    for path in exported.values():  # an earlier passed export of the same checkpoint is reused, not redone
        shutil.copy(path, out / "artifacts" / path.name)
    res = script("run.py", "--model", tiny_ckpt, "--data", fer2013 / "val", "--quick", "--batch-sizes", 2,
                 "--limit-per-class", 1, "--threads", 1, "--out-dir", out)
    assert res.returncode == 0, res.stdout + res.stderr
    whole = json.loads((out / "benchmark.json").read_text())
    assert {"cpu", "cores", "clock_mhz", "flags", "onnxruntime", "torch"} <= set(whole["machine"])
    (result,) = whole["models"]
    assert result["name"] == tiny_ckpt.stem and result["size_mb"] > 0
    assert len(result["artifacts_reused"]) == 2
    assert set(result["flops_per_image_by_op"]) <= {"Conv", "Gemm", "MatMul"}
    assert result["flops_per_image"] == torch_flops(tiny_ckpt)
    rows = result["rows"]
    measured = {(r["backend"], r["precision"]) for r in rows if r["device"] == "cpu" and r["batch"] == 2}
    assert measured == CPU_BACKENDS, rows
    for r in rows:
        if r["batch"] is None:  # a skipped backend (CUDA without a GPU) says why
            assert r["note"].startswith("skipped"), r
            continue
        assert 0 <= r["accuracy"] <= 1 and r["eval_images"] == 7
        assert r["reps"] == 5 and 0 < r["p10_ms"] <= r["p50_ms"] <= r["p90_ms"]
        assert r["images_per_s"] > 0 and r["gflops"] > 0 and r["peak_rss_mb"] > 0
        if r["device"] == "cpu" and r["precision"] in whole["ceilings"]:
            assert 0 < r["pct_ceiling"] and r["ceiling_gflops"] > 0
        elif r["device"] == "cpu":  # a CPU without bf16 or VNNI instructions: that ceiling is not measured
            assert r["pct_ceiling"] is None and f"{r['precision']} not measured" in res.stdout
    assert {"fp32"} <= set(whole["ceilings"]) and all(c["gflops"] > 0 for c in whole["ceilings"].values())
    assert whole["machine"]["cpu"] in res.stdout and "int8/bf16 instruction sets" in res.stdout
    assert result["calib"] == str((fer2013 / "train").resolve())  # int8 never calibrates on the eval folder
    for kind in ("onnx", "torchscript", "int8"):
        assert (out / "artifacts").is_dir() and result["artifacts"][kind].startswith(str(out / "artifacts"))
    lines = table_lines((out / "benchmark.md").read_text())
    assert lines == table_lines(res.stdout) and len(lines) == 2 + len(rows)
    assert len({line.count("|") for line in lines}) == 1 and "accuracy %" in lines[0]
    assert "onnxruntime fp32 vs torch eager fp32 at batch 2" in res.stdout


def test_calibrating_on_the_eval_folder_is_refused(tmp_path, fer2013, exported):
    res = script("run.py", "--model", exported["onnx"], "--data", fer2013 / "val", "--calib", fer2013 / "val",
                 "--quick", "--out-dir", tmp_path / "bench")
    assert res.returncode == 2 and "calibrate on training images" in res.stderr, res.stderr


def test_cuda_rows_say_no_gpu_when_cuda_cannot_start(monkeypatch):
    """onnxruntime-gpu installed on a machine without a GPU: CUDA is listed but falls back to the CPU."""
    import onnxruntime as ort
    import run

    listed = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *listed])
    if "CUDAExecutionProvider" in listed and not run._ort_cuda_problem():
        pytest.skip("this machine has a working CUDA")
    assert run.cuda_status()["onnxruntime"].startswith("skipped: no GPU")


def test_run_on_onnx_gives_the_onnxruntime_rows(tmp_path, fer2013, exported):
    model = exported["onnx"]
    res = script("run.py", "--model", model, "--data", fer2013 / "val", "--quick", "--batch-sizes", 1,
                 "--limit-per-class", 1, "--threads", 1, "--out-dir", tmp_path / "bench")
    assert res.returncode == 0, res.stdout + res.stderr
    rows = json.loads((tmp_path / "bench" / "benchmark.json").read_text())["models"][0]["rows"]
    assert {r["backend"] for r in rows if r["batch"] == 1} == {"onnxruntime", "onnxruntime int8 QDQ"}
    assert all("needs a .pth" in r["note"] for r in rows if r["backend"].startswith("torch") and r["device"] == "cpu")


def test_two_models_side_by_side_an_int8_one_as_given(tmp_path, fer2013, exported):
    """As for the bundled tiers: an fp32 model and an int8 one, each measured, then one table of both."""
    import run

    int8 = run.quantize(exported["onnx"], tmp_path / "small.int8.onnx", fer2013 / "train", 16)
    out = tmp_path / "bench"
    res = script("run.py", "--model", exported["onnx"], int8, "--data", fer2013 / "val", "--quick",
                 "--batch-sizes", 1, 4, "--limit-per-class", 1, "--threads", 1, "--out-dir", out,
                 "--json", tmp_path / "run.json")
    assert res.returncode == 0, res.stdout + res.stderr
    whole = json.loads((out / "benchmark.json").read_text())
    fp32, q = whole["models"]
    assert (fp32["name"], q["name"]) == (exported["onnx"].stem, "small.int8")
    assert q["artifacts"]["int8"] == str(int8.resolve()) and q["flops_per_image"] == fp32["flops_per_image"]
    measured = {r["backend"] for r in q["rows"] if r["batch"]}
    assert measured == {"onnxruntime int8 QDQ"}, q["rows"]
    assert all(r["note"].startswith("skipped") or r["note"].startswith("needs") for r in q["rows"] if not r["batch"])
    side = res.stdout.split("## Side by side")[1]
    assert len(table_lines(side)) == 2 + 4  # two models x the two largest batch sizes
    # --json: the same result, with the command, as the docs' tables read it (benchmarks/tables.py)
    import tables

    recorded = json.loads((tmp_path / "run.json").read_text())
    assert recorded == whole and recorded["command"].startswith("python benchmarks/run.py --model ")
    assert table_lines(tables.run_table(recorded, [])) == table_lines(side)[:6]


def test_pipeline_smoke(tmp_path, fer2013, videos, yunet_model, exported):
    model = exported["onnx"]
    res = script("pipeline.py", "--model", model, "--crops", 8, "--batch-size", 4, "--repeat", 1,
                 "--video", videos / "pyfeat_single_face.mp4", "--yunet-model", yunet_model,
                 "--json", tmp_path / "pipeline.json")
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads((tmp_path / "pipeline.json").read_text())
    assert result["crops"] == 8 and result["bare_session_crops_per_s"] > 0 and result["fer_batch_crops_per_s"] > 0
    assert result["video_frames"] > 0 and result["machine"]["cores"] >= 1
    assert len(table_lines(res.stdout)) == 2 + 9


def torch_flops(checkpoint) -> int:
    """FLOPs of one image by torch's own counter, which the ONNX graph count must equal."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fer_export.model import load_checkpoint

    model, spec = load_checkpoint(checkpoint)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, spec.channels, *spec.input_size))
    return counter.get_total_flops()


ZEN4 = {"cores": 2, "clock_mhz": 2600.0, "flags": ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni"]}


@pytest.mark.parametrize("flags, expected", [
    (ZEN4["flags"], {"fp32": 166.4, "bf16": 332.8, "int8": 665.6}),  # 2 x 2.6 GHz x 16 lanes x 2/4/8
    (["avx2", "fma", "avx512f"], {"fp32": 166.4, "bf16": 166.4, "int8": None}),  # bf16 converted; int8 without VNNI
    (["sse4_2"], {"fp32": None, "bf16": None, "int8": None}),
    # Sapphire Rapids: AMX's tile unit for bf16 (1,024 ops a cycle) and int8 (2,048), AVX-512 for fp32
    (ZEN4["flags"] + ["amx_tile", "amx_bf16", "amx_int8"], {"fp32": 166.4, "bf16": 5324.8, "int8": 10649.6}),
])
def test_peak_gflops(flags, expected):
    got = {p: peak_gflops(ZEN4 | {"flags": flags}, p) for p in expected}
    assert got == pytest.approx(expected)
    assert peak_gflops(ZEN4, "fp32", cores=1) == pytest.approx(83.2)  # a 1-thread run is held to one core


def test_markdown_table_is_well_formed():
    text = markdown_table(["name", "x"], [["a", 1.5], ["bb", None]])
    assert text.splitlines() == ["| name |   x |", "|------|----:|", "| a    | 1.5 |", "| bb   |   - |"]


def test_video_fps_prints_frames_per_second_and_the_ratio(tmp_path, videos):
    out = tmp_path / "video_fps.json"
    res = script("video_fps.py", videos / "pyfeat_single_face.mp4", "--detectors", "yunet", "--repeat", 1,
                 "--fer-fps", 10, "--json", out)
    assert res.returncode == 0, res.stdout + res.stderr
    (row,) = json.loads(out.read_text())["runs"]
    assert (row["model"], row["detector"]) == ("default", "yunet")
    assert row["frames"] == 72 and row["cpu_ms_per_frame"] > 0
    assert 0 < row["best_frames_per_s"] < row["best_in_run_frames_per_s"]  # the process also starts Python
    lines = table_lines(res.stdout)
    assert len(lines) == 3 and "x fer in run" in lines[0]
    cells = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert cells[-2] == "-"  # --fer-fps gives fer's in-run rate only: no whole-process ratio
    assert float(cells[-1]) == pytest.approx(row["best_in_run_frames_per_s"] / 10, abs=0.01)


def test_video_fps_times_fer_in_turn_through_its_interpreter(tmp_path, videos):
    """--fer-python runs benchmarks/peer_fer.py in that interpreter once per round; a stand-in that
    answers as peer_fer.py does proves the plumbing (the real fer needs TensorFlow)."""
    calls = tmp_path / "calls"
    fake = tmp_path / "fer-python"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nsleep 0.5\necho '{{\"fps\": 20.0, \"frames\": 72}}'\n")
    fake.chmod(0o755)
    out = tmp_path / "video_fps.json"
    res = script("video_fps.py", videos / "pyfeat_single_face.mp4", "--detectors", "yunet", "--models", "fast",
                 "--repeat", 2, "--fer-python", fake, "--json", out)
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(out.read_text())
    assert result["fer_runs"] == [20.0, 20.0] and result["fer_fps"] == 20.0
    assert 72 / 0.5 > result["fer_whole_process_fps"] > 0  # 72 frames over the stand-in's whole run
    assert all(line.split()[:2] == [str(ROOT / "benchmarks" / "peer_fer.py"), "video"]
               for line in calls.read_text().splitlines())
    (row,) = result["runs"]
    assert row["model"] == "fast" and len(row["all_frames_per_s"]) == 2
    lines = table_lines(res.stdout)
    assert len(lines) == 4 and "fer (Haar, tflite)" in lines[3]
    cells = [float(c) for c in lines[2].split("|")[-3:-1]]
    assert cells[0] == pytest.approx(row["best_frames_per_s"] / result["fer_whole_process_fps"], abs=0.01)
    assert cells[1] == pytest.approx(row["best_in_run_frames_per_s"] / 20, abs=0.01)


def test_detectors_times_each_detector_on_the_same_pictures(tmp_path, videos, photos):
    out = tmp_path / "detectors.json"
    res = script("detectors.py", videos / "pyfeat_single_face.mp4", photos, "--frames", 3, "--threads", 1,
                 "--repeat", 1, "--json", out)
    assert res.returncode == 0, res.stdout + res.stderr
    runs = json.loads(out.read_text())["runs"]
    by = {(r["detector"], r["input"]): r for r in runs}
    assert set(by) == {(d, i) for d in ("yunet (onnxruntime)", "yunet (opencv)", "haar")
                       for i in ("pyfeat_single_face.mp4", "photos/")}
    assert all(r["ms_per_picture"] > 0 for r in runs) and by["haar", "pyfeat_single_face.mp4"]["pictures"] == 3
    # the two YuNet backends find the same faces
    assert all(by["yunet (onnxruntime)", i]["faces"] == by["yunet (opencv)", i]["faces"] > 0
               for i in ("pyfeat_single_face.mp4", "photos/"))
    assert len(table_lines(res.stdout)) == 2 + len(runs)


def test_video_fps_takes_a_folder_of_crops_and_times_fer_on_them(tmp_path, fer2013):
    """A folder: every image is a frame, and fer's side is peer_fer.py's crop loop on all of them."""
    crops = tmp_path / "crops"
    for label in ("happy", "sad"):
        (crops / label).mkdir(parents=True)
        for p in sorted((fer2013 / "val" / label).glob("*.jpg"))[:5]:
            (crops / label / p.name).write_bytes(p.read_bytes())
    calls = tmp_path / "calls"
    fake = tmp_path / "fer-python"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\necho '{{\"faces_per_s\": 50.0, \"faces\": 10}}'\n")
    fake.chmod(0o755)
    out = tmp_path / "crops.json"
    res = script("video_fps.py", crops, "--detectors", "none", "--models", "fast", "--repeat", 1,
                 "--fer-python", fake, "--json", out)
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(out.read_text())
    (row,) = result["runs"]
    assert row["frames"] == 10 and result["fer_fps"] == 50.0
    assert calls.read_text().split()[1:5] == ["crops", str(crops), "--limit", "0"]
    lines = table_lines(res.stdout)
    assert "fer (tflite)" in lines[3] and float(lines[2].split("|")[-2]) == pytest.approx(
        row["best_in_run_frames_per_s"] / 50, abs=0.01)


def test_robustness_degrades_the_same_crops_for_every_model(tmp_path, fer2013, exported):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import robustness

    res = script("robustness.py", "--model", exported["onnx"], "quick=fast", "--data", fer2013 / "val",
                 "--limit-per-class", 3, "--json", tmp_path / "r.json")
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    # a file is its own label; LABEL=MODEL names one
    assert result["images"] == 21 and [r["model"] for r in result["models"]] == [str(exported["onnx"]), "quick"]
    assert result["models"][1]["file"] == "fer2013_fast.int8.onnx"
    assert result["machine"]["cpu"] in res.stdout and result["command"].startswith("python benchmarks/robustness.py")
    for row in result["models"]:
        assert set(result["degradations"]) <= set(row) and all(0 <= row[k] <= 1 for k in result["degradations"])
    lines = table_lines(res.stdout)
    assert len(lines) == 4 and lines[0].count("|") == len(result["degradations"]) + 2
    # each degradation changes a crop the way it says, and keeps its size and type
    img = (np.random.default_rng(0).random((48, 48)) * 255).astype(np.uint8)
    for name, fn in robustness.DEGRADATIONS.items():
        if fn is not None:
            out = fn(img)
            assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img), name
    assert robustness.DEGRADATIONS["blur 1.0"](img).std() < robustness.DEGRADATIONS["blur 0.6"](img).std() < img.std()
    bad = script("robustness.py", "--data", tmp_path / "missing")
    assert bad.returncode == 2 and "missing" in bad.stderr


# ---- options and outputs: refused in one line, exit status 2, before any work; inputs untouched ----

class Started(Exception):
    """Raised in place of machine_info(): the script got past its checks and would start measuring."""


def _main(module: str):
    import importlib

    return importlib.import_module(module).main


def refused(capsys, module: str, *args) -> str:
    """Run ``module.main(args)``: it must exit 2 with one ``error: ...`` line on stderr; that line."""
    with pytest.raises(SystemExit) as exc:
        _main(module)([str(a) for a in args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


@pytest.fixture
def inputs(tmp_path):
    """A stand-in video, a labelled folder and an earlier notes file: what the scripts must not touch."""
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not really a video")
    data = tmp_path / "data" / "val"
    (data / "happy").mkdir(parents=True)
    (data / "happy" / "x.jpg").write_bytes(b"jpeg bytes")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    return video, data, notes


def snapshot(*paths) -> dict:
    return {str(p): p.read_bytes() for root in paths for p in ([root] if root.is_file() else sorted(root.rglob("*")))
            if p.is_file()}


@pytest.fixture
def no_work(monkeypatch):
    """Every script's machine_info() raises Started: a refusal must come before it, an accepted run reaches it."""
    for module in ("video_fps", "pipeline", "detectors", "pictures", "dask_scaling"):
        monkeypatch.setattr(__import__(module), "machine_info", lambda: (_ for _ in ()).throw(Started()))


def test_an_output_never_replaces_an_input(tmp_path, capsys, inputs, no_work, monkeypatch):
    import pipeline

    video, data, notes = inputs
    yunet = tmp_path / "yunet.onnx"
    yunet.write_bytes(b"x")
    monkeypatch.setattr(pipeline, "CROPS", data)
    before = snapshot(tmp_path)
    assert "VIDEO" in refused(capsys, "video_fps", video, "--json", video)
    assert "--video" in refused(capsys, "pipeline", "--video", video, "--yunet-model", yunet, "--json", video)
    assert str(video) in refused(capsys, "detectors", video, "--json", video)
    assert "lies inside --data" in refused(capsys, "robustness", "--data", data, "--json", data / "happy" / "x.jpg")
    assert "lies inside --data" in refused(capsys, "robustness", "--data", data, "--json", data / "happy" / "new.json")
    assert "not output of this script" in refused(capsys, "video_fps", video, "--json", notes)
    assert "is a folder" in refused(capsys, "video_fps", video, "--json", data)
    assert snapshot(tmp_path) == before
    # an earlier JSON result, or an empty file, may be replaced: the script gets as far as measuring
    (tmp_path / "earlier.json").write_text('{"runs": []}\n')
    for json_out in (tmp_path / "earlier.json", tmp_path / "new" / "out.json"):
        with pytest.raises(Started):
            _main("video_fps")([str(video), "--json", str(json_out)])


def test_an_output_folder_is_never_an_input_or_a_foreign_folder(tmp_path, capsys, inputs, no_work):
    import run

    video, data, notes = inputs
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("months of work")
    before = snapshot(tmp_path)
    assert "is --data" in refused(capsys, "run", "--data", data, "--out-dir", data)
    assert "lies inside --data" in refused(capsys, "run", "--data", data, "--out-dir", data / "happy")
    assert "holds --data" in refused(capsys, "run", "--data", data, "--out-dir", tmp_path / "data")
    assert "benchmark.json" in refused(capsys, "run", "--data", data, "--out-dir", ROOT)  # the repository
    assert "benchmark.json" in refused(capsys, "run", "--data", data, "--out-dir", foreign)
    assert "is a file" in refused(capsys, "run", "--data", data, "--out-dir", notes)
    assert "is --data" in refused(capsys, "pictures", "--data", data, "--out", data)
    assert "lies inside --data" in refused(capsys, "pictures", "--data", data, "--out", data / "happy")
    assert "pictures.json" in refused(capsys, "pictures", "--data", data, "--out", foreign)
    assert "is a file" in refused(capsys, "pictures", "--data", data, "--out", notes)
    assert snapshot(tmp_path) == before and not (ROOT / "benchmark.json").exists()
    # a new folder, one holding only run.py's artifacts, or an earlier run's output is accepted
    earlier = tmp_path / "earlier"
    (earlier / "artifacts").mkdir(parents=True)
    assert run.parse_args(["--data", str(data), "--out-dir", str(earlier)]).out_dir == earlier
    (earlier / "benchmark.json").write_text("{}")
    (earlier / "notes.txt").write_text("kept")
    assert run.parse_args(["--data", str(data), "--out-dir", str(earlier)]).out_dir == earlier
    with pytest.raises(Started):
        _main("pictures")(["--data", str(data), "--out", str(tmp_path / "fresh"), "--model", "fast"])


@pytest.mark.parametrize("module, args, says", [
    ("run", ["--data", "/nonexistent"], "--data /nonexistent"),
    ("run", ["--model", "README.md"], "--model README.md"),
    ("run", ["--model", "no-such-model"], "--model no-such-model"),
    ("run", ["--batch-sizes", "0"], "--batch-sizes"),
    ("run", ["--batch-sizes", "8", "-1"], "--batch-sizes"),
    ("run", ["--threads", "0"], "--threads"),
    ("pictures", ["--data", "/nonexistent"], "--data /nonexistent"),
    ("pictures", ["--per-class", "0"], "--per-class"),
    ("pictures", ["--per-class", "-1"], "--per-class"),
    ("pictures", ["--model", "README.md"], "--model README.md"),
    ("pictures", ["--photos", "/nonexistent"], "--photos /nonexistent"),
    ("video_fps", ["--repeat", "0"], "--repeat"),
    ("video_fps", ["--fer-fps", "-3"], "--fer-fps"),
    ("video_fps", ["/nonexistent.mp4"], "/nonexistent.mp4"),
    ("video_fps", ["README.md", "--fer-python", "/nonexistent/python"], "--fer-python"),
    ("pipeline", ["--crops", "-5"], "--crops"),
    ("pipeline", ["--model", "fast", "--video", "/nonexistent.mp4"], "--video /nonexistent.mp4"),
    ("pipeline", ["--model", "README.md"], "--model README.md"),
    ("detectors", ["/nonexistent.mp4"], "/nonexistent.mp4"),
    ("detectors", ["--frames", "0"], "--frames"),
    ("robustness", ["--limit-per-class", "0"], "--limit-per-class"),
    ("robustness", ["--model", "README.md"], "--model README.md"),
    ("dask_scaling", ["--workers", "0"], "--workers"),
    ("accuracy", ["--model", "README.md"], "--model README.md"),
    ("accuracy", ["--limit-per-class", "0"], "--limit-per-class"),
    ("accuracy", ["--data", "/nonexistent"], "--data /nonexistent"),
    ("peer_fer", ["crops", "x", "--repeat", "0"], "--repeat"),
])
def test_bad_options_are_one_line_errors(capsys, no_work, monkeypatch, module, args, says):
    monkeypatch.chdir(ROOT)
    # scripts that check their default --data first get a folder that exists (the shared data may not)
    data = (["--data", str(ROOT / "fer_export")] if module in ("pictures", "robustness", "accuracy")
            and "--data" not in args else [])
    assert says in refused(capsys, module, *args, *data)


def test_pipeline_takes_a_bundled_model_name(tmp_path, inputs, no_work, monkeypatch):
    import pipeline

    video, data, _ = inputs
    monkeypatch.setattr(pipeline, "CROPS", data)
    with pytest.raises(Started):
        pipeline.main(["--model", "fast", "--video", str(video), "--yunet-model", str(video),
                       "--json", str(tmp_path / "p.json")])


@pytest.mark.parametrize("module, args, sentence", [
    ("video_fps", ["--help"], "per detector: frames/s (or faces/s) as a user sees them."),
    ("peer_fer", ["--help"], "measured the way fer-export's own benchmarks measure fer-batch, for the ratios they "
                             "print. Run it with an interpreter that has fer"),
    ("run", ["--help"], "latency, throughput, memory, GFLOP/s and accuracy."),
])
def test_help_gives_the_whole_first_sentence(capsys, module, args, sentence):
    with pytest.raises(SystemExit) as exc:
        _main(module)(args)
    assert exc.value.code == 0
    assert sentence in " ".join(capsys.readouterr().out.split())


@pytest.mark.data
def test_run_counts_the_mirrored_share_of_an_uncertain_flip_graph(fer2013):
    """run.py's FLOPs for the bundled fast model (hflip-uncertain): its first pass, cut out of the graph,
    decides which faces get the second; the share is that of the faces below the threshold, and a graph
    without the flip has none."""
    import run

    from fer_export import EmotionClassifier
    from fer_export.runtime import BUNDLED_MODELS

    fast = EmotionClassifier("fast", "cpu")
    share = run.mirrored_share(BUNDLED_MODELS["fast"]["cpu"], fast.spec, fer2013 / "val", 5)
    assert share is not None and 0 < share < 1 and abs(share * 35 - round(share * 35)) < 1e-9  # of 35 faces
    accurate = EmotionClassifier("accurate", "cpu")
    assert run.mirrored_share(BUNDLED_MODELS["accurate"]["cpu"], accurate.spec, fer2013 / "val", 5) is None
    assert run.mirrored_share(BUNDLED_MODELS["fast"]["cpu"], fast.spec, None, 5) is None


def test_int8_schemes_compares_weights_that_can_and_cannot_saturate(tmp_path, exported, fer2013):
    """On the tiny model: each scheme's row, and which of them can saturate (a property of the file, on any CPU)."""
    import cv2

    from fer_export.probe import probe_faces

    calib = tmp_path / "calib"
    calib.mkdir()
    for i, face in enumerate(probe_faces()):
        cv2.imwrite(str(calib / f"f{i}.png"), face)
    out = tmp_path / "schemes.json"
    res = script("int8_schemes.py", "--model", exported["onnx"], "--data", fer2013 / "val", "--calib", calib,
                 "--limit-per-class", 2, "--json", out)
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(out.read_text())
    rows = {r["scheme"]: r for r in result["schemes"]}
    assert set(rows) == {"fp32", "7bit", "full", "u8u8"} and result["images"] == 14
    assert rows["7bit"]["saturating_tensors"] == rows["u8u8"]["saturating_tensors"] == 0
    assert rows["full"]["saturating_tensors"] > 0
    assert all(0 <= r["agreement_literal"] <= 1 and r["images_per_s_1"] > 0 for k, r in rows.items() if k != "fp32")
    assert len(table_lines(res.stdout)) == 2 + 4 and result["machine"]["cpu"] in res.stdout
    refused = script("int8_schemes.py", "--model", exported["onnx"], "--data", fer2013 / "val", "--calib", fer2013 / "val")
    assert refused.returncode == 2 and "--calib" in refused.stderr


def test_accuracy_evaluates_each_model_and_an_int8_file_against_its_literal_run(tmp_path, exported, fer2013):
    out = tmp_path / "accuracy.json"
    res = script("accuracy.py", "--model", exported["onnx"], "fast", "--data", fer2013 / "val",
                 "--limit-per-class", 1, "--json", out)
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(out.read_text())
    tiny, fast = result["models"]
    assert result["machine"]["cpu"] in res.stdout and result["command"].startswith("python benchmarks/accuracy.py")
    assert tiny["precision"] == "fp32" and "agreement_literal" not in tiny
    assert fast["precision"] == "int8" and fast["file"] == "fer2013_fast.int8.onnx"
    for m in (tiny, fast):
        assert m["images"] == 7 and m["correct"] == round(m["accuracy"] * 7) and len(m["sha256"]) == 64
        assert set(m["per_class"]) == set(m["labels"]) and "self-check" in m["self_check"]
    assert 0 <= fast["accuracy_literal"] <= 1 and fast["agreement_literal"] >= 6 / 7  # 7-bit weights: any CPU
    assert len(table_lines(res.stdout)) == 2 + 2


def test_peer_fer_writes_its_result_with_the_machine(tmp_path, monkeypatch):
    """The fer package is not installed here: its measurement is stood in for; what is written around it is real."""
    import peer_fer

    monkeypatch.setattr(peer_fer, "crops", lambda folder, limit, repeat: {"tool": "fer", "faces": 3, "faces_per_s": 9.0})
    folder, out = tmp_path / "crops", tmp_path / "peer.json"
    folder.mkdir()
    assert peer_fer.main(["crops", str(folder), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["faces"] == 3 and result["folder"] == str(folder) and result["machine"]["cpu"]
    assert result["command"] == f"python benchmarks/peer_fer.py crops {folder} --json {out}"
    with pytest.raises(SystemExit):  # an output inside the folder it reads is refused before any work
        peer_fer.main(["crops", str(folder), "--json", str(folder / "peer.json")])
    assert not (folder / "peer.json").exists()
