"""Pictures of a batch run, drawn from its results CSV (torch-free).

``annotate_sources`` writes copies of images and videos with boxes and labels drawn (OpenCV);
``plot_videos`` writes an emotion-over-time PNG per video (matplotlib, an optional dependency,
imported only here).
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path, PurePath
from typing import Sequence

import cv2
import numpy as np

from ..errors import DependencyError, InputError, OutputError
from ..outputs import is_inside, temp_file_beside, write_file
from ..preprocess import read_color
from .results import labels_of, read_results
from .sources import Source, open_video

COLOR = (40, 220, 40)  # BGR


#: The longest file name written, in bytes (most file systems take 255): a longer one is shortened.
NAME_MAX = 255


def output_path(out_dir: str | Path, name: str) -> Path:
    """Where a source's picture goes: its name under ``out_dir``, without ``..`` or a root; a file name
    too long to write (an input's name at the limit plus ``.png``) is cut and given a hash of the whole
    name, so that it stays unique."""
    parts = [p for p in PurePath(name).parts if p not in ("..", ".") and not PurePath(p).anchor]
    path = Path(out_dir).joinpath(*parts)
    if len(os.fsencode(path.name)) <= NAME_MAX:
        return path
    tail = "~" + hashlib.sha256(os.fsencode(path.name)).hexdigest()[:12] + path.suffix
    head = os.fsencode(path.stem)[:NAME_MAX - len(tail.encode())].decode("utf-8", "ignore")
    return path.with_name(head + tail)


def new_file_in(out_dir: str | Path, name: str) -> Path:
    """:func:`output_path`, its folder made, refused (OutputError) when a symbolic link among the folders
    would take it outside ``out_dir``. The file is then written new (a temporary file renamed into place),
    so a link or a hard link already at that name is replaced, never written through."""
    out = output_path(out_dir, name)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    _check_inside(next(p for p in out.parents if p.exists()), out_dir)  # before a folder is made through a link
    out.parent.mkdir(parents=True, exist_ok=True)
    _check_inside(out.parent, out_dir)
    return out


def _check_inside(folder: Path, out_dir: str | Path) -> None:
    if not is_inside(folder, out_dir):
        raise OutputError(f"{folder} leads outside {out_dir} through a symbolic link; fer-batch writes its copies "
                          "only inside that folder: remove the link")


def draw_faces(image: np.ndarray, rows) -> np.ndarray:
    """Draw each face row's box and "emotion confidence" label on ``image`` (in place)."""
    scale = max(0.4, max(image.shape[:2]) / 1200)
    thick = max(1, round(2 * scale))
    for r in rows.itertuples():
        if r.status != "ok":
            continue
        x, y, w, h = int(r.x), int(r.y), int(r.w), int(r.h)
        cv2.rectangle(image, (x, y), (x + w, y + h), COLOR, thick)
        text = f"{r.emotion} {r.confidence:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, thick)
        top = max(th + base, y)
        cv2.rectangle(image, (x, top - th - base), (x + tw, top), COLOR, -1)
        cv2.putText(image, text, (x, top - base), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0), thick)
    return image


def annotate_sources(results: str | Path, sources: Sequence[Source], out_dir: str | Path) -> list[Path]:
    """Copies of ``sources`` with their faces from ``results`` drawn; unreadable inputs are skipped."""
    df = read_results(results)
    by_source = dict(tuple(df.groupby("source", sort=False)))
    written = []
    for src in sources:
        rows = by_source.get(src.name)
        if rows is None or (rows["status"] == "error").all():
            continue
        try:
            written.append(_annotate_video(src, rows, out_dir) if src.kind == "video"
                           else _annotate_image(src, rows, out_dir))
        except InputError:
            continue  # already reported as an error row
    return written


def _annotate_image(src: Source, rows, out_dir) -> Path:
    out = new_file_in(out_dir, src.out_name)
    ok, buf = cv2.imencode(out.suffix, draw_faces(read_color(src.path), rows))
    if not ok:
        out = out.with_suffix(".png")
        ok, buf = cv2.imencode(".png", draw_faces(read_color(src.path), rows))
    return write_file(out, buf.tobytes())


def _annotate_video(src: Source, rows, out_dir) -> Path:
    """Every frame, with the faces of the latest sampled frame drawn, as an MPEG-4 .mp4."""
    out = new_file_in(out_dir, src.annotated_name)
    tmp = temp_file_beside(out)  # ends in .mp4, as VideoWriter picks the container by the suffix
    cap, fps, _ = open_video(src.path)
    per_frame = dict(tuple(rows[rows["frame"].notna()].groupby("frame")))
    writer, current, i = None, rows.iloc[:0], 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if writer is None:
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps or 25.0,
                                         (frame.shape[1], frame.shape[0]))
            current = per_frame.get(float(i), current)
            writer.write(draw_faces(frame, current))
            i += 1
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if writer is None:  # no frame could be read: nothing to write
        tmp.unlink(missing_ok=True)
        return out
    os.replace(tmp, out)
    return out


def plot_videos(results: str | Path, out_dir: str | Path, sources: Sequence[Source] = ()) -> list[Path]:
    """One PNG per video: each emotion's probability (mean over the frame's faces) against time, named
    after the video's ``out_name`` (its name for sources not given)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise DependencyError("--plots needs matplotlib, which is not installed: pip install matplotlib") from exc
    df = read_results(results)
    labels = labels_of(df)
    out_names = {s.name: s.out_name for s in sources}
    written = []
    for name, g in df[df["kind"] == "video"].groupby("source", sort=False):
        g = g[g["frame"].notna()]
        if g.empty:
            continue
        per_frame = g.groupby("timestamp_s")[labels].mean()  # frames without a face stay NaN: gaps
        fig = Figure(figsize=(10, 4), dpi=100)
        ax = fig.add_subplot()
        for label in labels:
            ax.plot(per_frame.index, per_frame[label], label=label, lw=1.2)
        ax.set(xlabel="time (s)", ylabel="probability (gaps: no face)", ylim=(0, 1),
               xlim=(0, max(per_frame.index.max(), 1e-3)), title=name)
        ax.legend(loc="upper right", ncol=len(labels), fontsize=8)
        fig.tight_layout()
        out = new_file_in(out_dir, out_names.get(name, name) + ".png")
        png = io.BytesIO()
        FigureCanvasAgg(fig).print_png(png)
        write_file(out, png.getvalue())
        written.append(out)
    return written
