"""The page (onnxruntime-web in headless Chromium) and Node.js (onnxruntime-node) beside fer-batch on
the same CPU: cost per face on crops, time per photo, frames/s on a shared video.

    python benchmarks/browser.py [--crops 128] [--seconds 15] [--json benchmarks/results/browser.json]

All three run the bundled model made embeddable (``fer-export embed``: raw gray crops in, one fp32
file) and the bundled YuNet. (1) Crops: FER2013 PublicTest crops (48 px), classified whole: the page
and Node.js time the model alone, 32 crops a call and one at a time, after a warm-up; fer-batch's
rate is its own run time (decoding, batching, the model, the CSV) over the faces. (2) Photos: every
shared photo through the whole picture path (YuNet at 640 px, three views per face): the page's
time per photo as it reports it, against fer-batch's run time per photo. (3) Video: the page's
camera mode on Chromium's fake camera playing a shared video (its first frames as a .y4m, looped),
frames/s as the page counts them, with detection at 640 px (as fer-batch's) and at 320 px (the
camera's default); fer-batch's frames/s on the whole video (one view per face, as in the page).

The page is served by ``examples/serve.mjs`` (cross-origin isolated: WebAssembly threads, as many as
the page takes, at most 4). Needs ``node``, ``npm ci --ignore-scripts`` in examples/, and Chromium
(``$CHROMIUM``, default /usr/bin/chromium). The machine is named in the output; on a machine with
other work running the numbers are noisy, and the output says so.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (SHARED_DATA, Parser, check_exists, check_output_file, description, machine_info, markdown_table,
                    positive_int, print_report, refuse)
from record import command_line, portable

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BUNDLED = ROOT / "fer_export" / "models" / "fer2013_resnet18.onnx"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CAMERA_FRAMES = 150  # the first 5 s of the video, looped by the fake camera
TIMEOUT = 900

NODE_CROPS = """
import { readFileSync } from 'node:fs';
import ort from 'onnxruntime-node';
import sharp from 'sharp';
import { grayOf } from './faces.mjs';
import { timeClassifier } from './pipeline.mjs';
const [model, reps, ...files] = process.argv.slice(1);
const session = await ort.InferenceSession.create(readFileSync(model));
const crops = [];
for (const f of files) {
  const { data, info } = await sharp(f, { ignoreIcc: true }).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const image = { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height,
    channels: info.channels };
  crops.push({ data: grayOf(image), width: info.width, height: info.height });
}
console.log(JSON.stringify(await timeClassifier(ort, session, crops, Number(reps))));
"""


def run(command: list, cwd: Path = ROOT) -> str:
    proc = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, command))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def fer_batch(inputs: Path, model: Path, out: Path, detector: str) -> dict:
    """fer-batch on ``inputs``: its run's seconds (from its report), the inputs and faces it wrote."""
    proc = subprocess.run([sys.executable, "-m", "fer_export.cli.batch", str(inputs), "--out", str(out), "--overwrite",
                           "--no-progress", "--detector", detector, "--model", str(model)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    if proc.returncode:
        raise SystemExit(f"fer-batch failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    found = re.search(r"(\d+) images/frames, (\d+) faces in ([0-9.]+) s \(([0-9.]+) frames/s\)", proc.stderr)
    if not found:
        raise SystemExit(f"no run time in fer-batch's output:\n{proc.stderr[-2000:]}")
    frames, faces, rate = int(found.group(1)), int(found.group(2)), float(found.group(4))
    return {"frames": frames, "faces": faces, "seconds": frames / rate if rate else float(found.group(3))}


def write_y4m(video: Path, path: Path, frames: int) -> list[int]:
    """The first ``frames`` frames of ``video`` as a .y4m (I420) for Chromium's fake camera; its [width, height]."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width % 2 or height % 2:
        refuse(f"--video {video}: {width}x{height}; the fake camera's 4:2:0 frames need even sides")
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            ok, frame = cap.read()
            if not ok:
                break
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    cap.release()
    return [width, height]


class Server:
    """``node examples/serve.mjs --port 0`` for the length of a ``with``; ``.url`` is the page's."""

    def __enter__(self):
        self.proc = subprocess.Popen(["node", "serve.mjs", "--port", "0"], cwd=EXAMPLES, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.proc.kill()
            raise SystemExit(f"examples/serve.mjs did not start: {self.proc.stderr.read()}")
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def page(url: str, model: Path, *args) -> dict:
    return json.loads(run(["node", "web/headless.mjs", "--url", url, "--chromium", CHROMIUM, "--model", model, *args],
                          cwd=EXAMPLES))


def main(argv=None) -> int:
    ap = Parser(description=description(__doc__))
    ap.add_argument("--crops", type=positive_int, default=128, help="FER2013 PublicTest crops (spread over the classes)")
    ap.add_argument("--reps", type=positive_int, default=3, help="timed passes over the crops")
    ap.add_argument("--photos", type=Path, default=SHARED_DATA / "photos")
    ap.add_argument("--video", type=Path, default=SHARED_DATA / "videos" / "fer_woman2.mp4")
    ap.add_argument("--seconds", type=positive_int, default=15, help="how long the camera mode runs, per detection size")
    ap.add_argument("--json", type=Path, help="also write the numbers, with the machine, here")
    args = ap.parse_args(argv)
    val = SHARED_DATA / "fer2013" / "val"
    check_exists("--photos", args.photos, folder=True)
    check_exists("--video", args.video, folder=False)
    check_exists("fer2013/val", val, folder=True)
    check_output_file("--json", args.json, [("--photos", args.photos), ("--video", args.video)])
    if not shutil.which("node") or not (EXAMPLES / "node_modules" / "onnxruntime-web").is_dir():
        refuse("needs Node.js and the examples' packages: cd examples && npm ci --ignore-scripts")
    if not CHROMIUM.is_file():
        refuse(f"no Chromium at {CHROMIUM}: apt-get install chromium, or set $CHROMIUM")
    machine = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="fer-browser-bench-"))
    model = tmp / "model.embed.onnx"
    from fer_export.export.embed import embed_onnx

    embed_onnx(BUNDLED, model)

    classes = sorted(p for p in val.iterdir() if p.is_dir())
    per_class = -(-args.crops // len(classes))
    crops = [f for c in classes for f in sorted(c.glob("*.jpg"))[:per_class]][:args.crops]
    crop_dir = tmp / "crops"
    crop_dir.mkdir()
    for f in crops:
        shutil.copy(f, crop_dir / f"{f.parent.name}_{f.name}")
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    y4m = tmp / "camera.y4m"
    video_size = write_y4m(args.video, y4m, CAMERA_FRAMES)

    t0 = time.perf_counter()
    node_crops = json.loads(run(["node", "--input-type=module", "-e", NODE_CROPS, model, args.reps, *crops], cwd=EXAMPLES))
    batch_crops = fer_batch(crop_dir, model, tmp / "crops.csv", "none")
    batch_photos = fer_batch(args.photos, model, tmp / "photos.csv", "yunet")
    batch_video = fer_batch(args.video, model, tmp / "video.csv", "yunet")
    with Server() as server:
        web_crops = page(server.url, model, "--bench-crops", args.reps, *crops)
        web_photos = page(server.url, model, *photos)
        cameras = {size: page(server.url, model, "--camera", y4m, "--seconds", args.seconds, "--camera-size", size)
                   for size in (640, 320)}
    backend = web_crops["backend"]
    photo_ms = [r["ms"] for r in web_photos["results"]]
    faces = sum(len(r["faces"]) for r in web_photos["results"])
    ms = lambda s, n: round(1000 * s / n, 1)  # noqa: E731
    rows = [
        ["crops: ms per face, 32 a call", round(web_crops["bench"]["ms_per_face_batch32"], 1),
         round(node_crops["ms_per_face_batch32"], 1), ms(batch_crops["seconds"], batch_crops["faces"])],
        ["crops: ms per face, one a call", round(web_crops["bench"]["ms_per_face_single"], 1),
         round(node_crops["ms_per_face_single"], 1), None],
        [f"photos: ms per photo ({len(photos)} photos, {faces} faces)", round(sum(photo_ms) / len(photo_ms)),
         None, ms(batch_photos["seconds"], batch_photos["frames"])],
        *[[f"video: frames/s, detection at {size} px", round(c["camera"]["frames_per_s"], 1), None,
           round(batch_video["frames"] / batch_video["seconds"], 1) if size == 640 else None]
          for size, c in cameras.items()],
    ]
    headers = ["measure", f"page ({backend['name']}, {backend['threads']} threads)", "Node.js", "fer-batch"]
    result = {
        "command": command_line("browser.py", argv),
        "machine": machine,
        "browser": f"Chromium {web_crops['browser']} (headless, --disable-gpu)",
        "backend": backend,
        "packages": {p: json.loads((EXAMPLES / "node_modules" / p / "package.json").read_text())["version"]
                     for p in ("onnxruntime-web", "onnxruntime-node", "playwright-core")},
        "node": run(["node", "--version"]).strip(),
        "model": "bundled accurate model (fer2013_resnet18.onnx, fp32) made embeddable by fer-export embed",
        "crops": {"files": len(crops), "reps": args.reps, "page": web_crops["bench"], "node": node_crops,
                  "fer_batch": batch_crops},
        "photos": {"folder": portable(str(args.photos)), "photos": len(photos), "faces": faces,
                   "page_ms_per_photo": photo_ms, "fer_batch": batch_photos},
        "video": {"file": portable(str(args.video)), "size": video_size, "camera_frames": CAMERA_FRAMES,
                  "seconds": args.seconds, "page": {str(k): v["camera"] for k, v in cameras.items()},
                  "fer_batch": batch_video},
        "wall_s": round(time.perf_counter() - t0, 1),
        "table": {"headers": headers, "rows": rows},
    }
    note = ("The page and Node.js time the model alone on crops; fer-batch's figures are its whole run (decode, "
            "batch, model, CSV) over the faces or frames.")
    print_report(machine, markdown_table(headers, rows), args.json, result, note)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
