"""Inputs whose headers lie: bombs in every image format, files larger than they can be read, video
containers that claim hours they do not hold; and inputs that are easy to get quietly wrong:
variable-frame-rate video, float images with outliers, multi-page TIFFs.

Every bomb is refused from its header, before decoding, with one line naming the file: decoding
any of them would take gigabytes (the tests would run out of memory, or take minutes, if one were
decoded). Videos and clips are written here: a Matroska muxer of a few lines gives each frame its
own time, which OpenCV's writer cannot.
"""
from __future__ import annotations

import os
import resource
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fer_export.batch.frames import FrameRange, FrameSampler, estimated_frames, frame_ranges, iter_frames
from fer_export.batch.results import read_results
from fer_export.batch.sources import Source, count_frames
from fer_export.cli.batch import main
from fer_export.errors import InputError
from fer_export.image_headers import stated
from fer_export.image_limits import ImageBudget, read_checked
from fer_export.preprocess import read_color, read_gray, read_pages
from fer_export.spec import FER2013_LABELS

BIG = 30000  # a side: 900 megapixels, 2.7 GB as BGR


def fer_batch(*args):
    return CliRunner().invoke(main, [str(a) for a in args] + ["--no-progress"])


def peak_rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


# ---- bombs, format by format ----------------------------------------------------------------------

def tiny_jpeg(progressive: bool = False, side: int = 16, full_color: bool = False) -> bytes:
    img = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if progressive else []
    if full_color:  # no chroma subsampling: three full-size components
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    return cv2.imencode(".jpg", img, params)[1].tobytes()


def jpeg(w: int, h: int, before_frame: bytes = b"", progressive: bool = False, side: int = 16,
         full_color: bool = False) -> bytes:
    """A real JPEG whose frame header states ``w`` x ``h``, with ``before_frame`` inserted before it."""
    data = bytearray(tiny_jpeg(progressive, side, full_color))
    i = 2
    while data[i + 1] not in (0xC0, 0xC2):
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    data[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(data[:i]) + before_frame + bytes(data[i:])


def app_segments(total: int) -> bytes:
    """APP1 segments of about ``total`` bytes (EXIF, XMP and ICC data come so)."""
    one = b"\xff\xe1\xff\xff" + bytes(65533)
    return one * max(1, total // len(one))


def png(w: int, h: int, depth: int = 8, kind: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, depth, kind, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + bytes(64))


def tiff(pages: list[dict], big: bool = False, directories_last: bool = True) -> bytes:
    """A little-endian TIFF (or BigTIFF) of one strip of zeros per page (deflate, so that a bomb stays
    small); each page's tags given as ``{tag: value}`` over a gray 8-bit default. Directories go after
    the pixels, as most writers put them."""
    strips = [zlib.compress(bytes(min(p[256] * p[257], 1 << 16)), 9) for p in pages]
    ptr, head = ("<Q", b"II+\0" + struct.pack("<HHQ", 8, 0, 0)) if big else ("<I", b"II*\0" + struct.pack("<I", 0))
    out = bytearray(head)
    strip_at = []
    for s in strips:
        strip_at.append(len(out))
        out += s
    entry = struct.Struct("<HHQQ" if big else "<HHII")
    first_slot = len(head) - struct.calcsize(ptr)
    slot = first_slot
    for p, s, at in zip(pages, strips, strip_at):
        tags = {258: 8, 259: 8, 262: 1, 277: 1, 278: p[257], 273: at, 279: len(s), **p}
        ifd = len(out)
        struct.pack_into(ptr, out, slot, ifd)
        out += struct.pack("<Q" if big else "<H", len(tags))
        for tag in sorted(tags):
            out += entry.pack(tag, 4 if big or tag != 258 else 3, 1, tags[tag])
        slot = len(out)
        out += bytes(struct.calcsize(ptr))
    return bytes(out)


def gif(screen: tuple[int, int], frame: tuple[int, int]) -> bytes:
    return (b"GIF89a" + struct.pack("<HHBBB", *screen, 0, 0, 0) + b"\x21\xf9\x04\x00\x00\x00\x00\x00"
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, *frame, 0) + b"\x02\x02\x44\x01\x00\x3b")


def webp_vp8x(w: int, h: int) -> bytes:
    chunk = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


BOMBS = {
    "png": png(BIG, BIG),
    "png 16-bit rgba": png(12000, 12000, 16, 6),  # within the pixel limit, not the memory one (1.15 GB)
    "jpeg": jpeg(BIG, BIG),
    "jpeg, stray bytes before the frame": jpeg(BIG, BIG, b"\0\0junk\0"),
    "jpeg, 0xff padding": jpeg(BIG, BIG, b"\xff\xff\xff\xff"),
    "jpeg, comment and restart markers": jpeg(BIG, BIG, b"\xff\xfe\x00\x05abc\xff\xd0\xff\x01"),
    "jpeg, progressive": jpeg(BIG, BIG, progressive=True),
    "jpeg, progressive within the pixel limit": jpeg(12000, 12000, progressive=True, full_color=True),  # coefficients
    "jpeg, 400 kB of APP segments": jpeg(BIG, BIG, app_segments(400_000)),
    "tiff deflate": tiff([{256: BIG, 257: BIG}]),
    "tiff, a huge tile": tiff([{256: 64, 257: 64, 322: 32768, 323: 32768}]),
    "tiff, page 3 of 4": tiff([{256: 64, 257: 64}] * 3 + [{256: BIG, 257: BIG}]),
    "tiff, pages together": tiff([{256: 16000, 257: 10000}] * 14),
    "bigtiff": tiff([{256: BIG, 257: BIG}], big=True),
    "webp": webp_vp8x(BIG, BIG),
    "gif screen": gif((65535, 65535), (1, 1)),
    "gif frame past its screen": gif((1, 1), (60000, 60000)),
    "bmp": b"BM" + struct.pack("<IHHI", 0, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, BIG, -BIG, 1, 24, 0, 0, 0, 0, 0, 0),
    "pgm": b"P5\n# a comment\n30000 30000\n255\n" + bytes(64),
    "sun raster": b"\x59\xa6\x6a\x95" + struct.pack(">IIIIIII", BIG, BIG, 24, 0, 1, 0, 0),
    "radiance hdr": b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 30000 +X 30000\n" + bytes(64),
    "tga (Pillow's)": struct.pack("<BBBHHBHHHHBB", 0, 0, 3, 0, 0, 0, 0, 0, BIG, BIG, 8, 0) + bytes(64),
}


@pytest.mark.parametrize("name", BOMBS)
def test_a_bomb_is_refused_from_its_header_before_decoding(tmp_path, name):
    path = tmp_path / "bomb.img"
    path.write_bytes(BOMBS[name])
    before = peak_rss_mb()
    for read in (read_gray, read_color):
        with pytest.raises(InputError, match=r"bomb\.img: .*(more than the|pages of)") as info:
            read(path)
        assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="more than"):
        list(read_pages(path, color=True))
    assert peak_rss_mb() - before < 300  # nothing was decoded


@pytest.mark.parametrize("extra", [b"", app_segments(300_000), b"\0\0stray\0", b"\xff\xff\xff", b"\xff\xfe\x00\x04hi"],
                         ids=["plain", "300 kB of APP segments", "stray bytes", "padding", "comment"])
@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_an_unusual_jpeg_of_an_ordinary_size_still_reads(tmp_path, extra, progressive):
    """The header is found past what libjpeg skips, so such files are read, not refused."""
    data = tiny_jpeg(progressive, 40)
    (tmp_path / "a.jpg").write_bytes(data)
    (tmp_path / "b.jpg").write_bytes(jpeg(40, 40, extra, progressive, 40))
    assert stated((tmp_path / "b.jpg").read_bytes()).pages[0][:2] == (40, 40)
    np.testing.assert_array_equal(read_gray(tmp_path / "b.jpg"), read_gray(tmp_path / "a.jpg"))


def test_every_shared_photo_states_the_size_it_decodes_to(photos):
    for path in sorted(photos.iterdir()):
        data, found = read_checked(path)
        w, h = found.pages[0][:2]
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
        assert (w, h) == (decoded.shape[1], decoded.shape[0]), path


def test_pillows_own_limit_is_honoured_for_every_format(tmp_path, monkeypatch):
    """A program that lowers ``PIL.Image.MAX_IMAGE_PIXELS`` lowers the limit of OpenCV's formats too,
    and Pillow's own refusal (DecompressionBombError) is one line naming the file."""
    face = np.random.default_rng(1).integers(0, 256, (100, 100), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "face.png"), face)
    Image.fromarray(face).save(tmp_path / "face.tga")
    assert read_gray(tmp_path / "face.tga").shape == (100, 100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    with pytest.raises(InputError, match="face.png: 100x100 pixels, more than the 4,000"):
        read_gray(tmp_path / "face.png")
    with pytest.raises(InputError, match=r"face.tga: .*MAX_IMAGE_PIXELS") as info:
        read_gray(tmp_path / "face.tga")
    assert "\n" not in str(info.value)


def test_bombs_are_error_rows_and_the_run_goes_on(tmp_path, photos):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, data in (("a.png", BOMBS["png"]), ("b.jpg", BOMBS["jpeg, stray bytes before the frame"]),
                       ("c.tif", BOMBS["tiff deflate"]), ("d.webp", BOMBS["webp"])):
        (folder / name).write_bytes(data)
    crop = cv2.imread(str(photos / "fr_obama-480p.jpg"))[40:96, 360:416]
    cv2.imwrite(str(folder / "face.png"), crop)
    res = fer_batch(folder, "--out", tmp_path / "r.csv", "--model", "fast", "--detector", "none")
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output  # some inputs failed
    rows = read_results(tmp_path / "r.csv").set_index("source")
    for name in ("a.png", "b.jpg", "c.tif", "d.webp"):
        assert rows.loc[str(folder / name), "status"] == "error" and "more than the" in rows.loc[str(folder / name), "error"]
    assert rows.loc[str(folder / "face.png"), "status"] == "ok"


# ---- sizes that lie ---------------------------------------------------------------------------------

def sparse(path: Path, size: int, start: bytes) -> Path:
    with open(path, "wb") as f:
        f.write(start)
        f.truncate(size)
    return path


def test_a_file_larger_than_the_budget_is_refused_from_its_size(tmp_path):
    path = sparse(tmp_path / "huge.jpg", 2_000_000_000, b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")
    before = peak_rss_mb()
    with pytest.raises(InputError, match=r"huge\.jpg: 2,000,000,000 bytes, more than the"):
        read_gray(path)
    assert peak_rss_mb() - before < 50


def test_a_jpeg_without_a_frame_header_is_not_read_whole(tmp_path):
    """Zeros after the markers: the header is looked for in the file, not in a copy of all of it."""
    path = sparse(tmp_path / "empty.jpg", 200_000_000, b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    before = peak_rss_mb()
    with pytest.raises(InputError, match="header does not say its size"):
        read_gray(path)
    assert peak_rss_mb() - before < 50


def test_a_file_read_in_short_pieces_is_read_whole(tmp_path, monkeypatch):
    """Linux reads at most 2 GiB - 4 kiB a call: a read that returns less than was asked is the end
    only below that. Here every read stops at 1 MiB; the file must come back whole all the same."""
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (1200, 1200, 3), dtype=np.uint8)  # a noisy PNG of ~4 MB
    path = tmp_path / "noise.png"
    cv2.imwrite(str(path), image)
    real_read, real_readv = os.read, os.readv
    monkeypatch.setattr(os, "read", lambda fd, n: real_read(fd, min(n, 1 << 20)))
    monkeypatch.setattr(os, "readv", lambda fd, bufs: real_readv(fd, [memoryview(bufs[0])[:1 << 20]]))
    data, _ = read_checked(path)
    assert data == path.read_bytes()
    np.testing.assert_array_equal(read_color(path), image)


def test_a_budget_bounds_the_file_and_the_pages(tmp_path):
    pages = tiff([{256: 64, 257: 64}] * 5)
    (tmp_path / "five.tif").write_bytes(pages)
    assert len(read_checked(tmp_path / "five.tif")[1].pages) == 5
    with pytest.raises(InputError, match="more than 4 pages"):
        read_checked(tmp_path / "five.tif", ImageBudget(max_pages=4))
    with pytest.raises(InputError, match="bytes, more than the 100"):
        read_checked(tmp_path / "five.tif", ImageBudget(max_bytes=100))


# ---- video containers that claim what they do not hold ----------------------------------------------

def _element(eid: int, payload: bytes) -> bytes:
    return eid.to_bytes((eid.bit_length() + 7) // 8, "big") + (1 << 56 | len(payload)).to_bytes(8, "big") + payload


def _uint(eid: int, value: int) -> bytes:
    return _element(eid, value.to_bytes(8, "big"))


def write_mkv(path: Path, times_ms: list[int], duration_ms: float | None = None, size=(64, 48)) -> Path:
    """A Matroska file of MJPEG frames shown at ``times_ms``, each frame's pixels its index x 3; its
    stated duration ``duration_ms`` (default: to the last frame's end)."""
    w, h = size
    header = _element(0x1A45DFA3, _uint(0x4286, 1) + _uint(0x42F7, 1) + _uint(0x42F2, 4) + _uint(0x42F3, 8)
                      + _element(0x4282, b"matroska") + _uint(0x4287, 4) + _uint(0x4285, 2))
    duration = duration_ms if duration_ms is not None else times_ms[-1] + 33
    info = _element(0x1549A966, _uint(0x2AD7B1, 1_000_000) + _element(0x4489, struct.pack(">d", duration))
                    + _element(0x4D80, b"test") + _element(0x5741, b"test"))
    track = _element(0x1654AE6B, _element(0xAE, _uint(0xD7, 1) + _uint(0x73C5, 1) + _uint(0x83, 1)
                                           + _element(0x86, b"V_MJPEG") + _element(0xE0, _uint(0xB0, w) + _uint(0xBA, h))))
    clusters = b""
    for k, t in enumerate(times_ms):
        frame = cv2.imencode(".jpg", np.full((h, w, 3), 3 * k % 256, np.uint8))[1].tobytes()
        clusters += _element(0x1F43B675, _uint(0xE7, int(t)) + _element(0xA3, b"\x81\0\0\x80" + frame))
    path.write_bytes(header + _element(0x18538067, info + track + clusters))
    return path


#: 1 s at 30 fps, then 2 s at 3 fps: frame 32 is shown at 1.667 s, not at 32 / 30 s.
VFR_MS = [round(i * 1000 / 30) for i in range(30)] + [round(1000 + k * 1000 / 3) for k in range(6)]


@pytest.mark.parametrize("claim_ms", [10 * 3600 * 1000, 1e12], ids=["ten hours", "thirty years"])
def test_a_video_claiming_hours_it_does_not_hold_costs_only_what_it_holds(tmp_path, claim_ms):
    video = write_mkv(tmp_path / "liar.mkv", [round(i * 1000 / 30) for i in range(90)], duration_ms=claim_ms)
    source = Source(video, "liar.mkv", "video", str(video))
    assert count_frames(source, FrameSampler()) <= video.stat().st_size // 16  # bounded by what the file can hold
    starts = list(range(0, 90, 10))  # the ranges of the 90 frames there are, not of millions
    assert frame_ranges(video, FrameSampler(), per_task=10) == list(zip(starts, [*starts[1:], None]))
    got = []
    with pytest.raises(InputError, match="decoding stopped at frame 90 of"):  # the file is not what it says
        for i, _, _ in iter_frames(video):
            got.append(i)
    assert got == list(range(90))


def test_ranges_are_planned_from_the_frames_a_video_holds(videos, tmp_path):
    long = write_mkv(tmp_path / "long.mkv", [round(i * 1000 / 30) for i in range(300)], duration_ms=3600 * 1000)
    assert frame_ranges(long, FrameSampler(), per_task=20)[-2:] == [(260, 280), (280, None)]
    real = videos / "fer_woman2.mp4"
    ranges = frame_ranges(real, FrameSampler(every_n=2), per_task=10)
    assert ranges[:2] == [(0, 20), (20, 40)] and ranges[-1][1] is None
    assert estimated_frames(real, FrameSampler(every_n=2)) == len(range(0, 464, 2))


def test_fer_batch_on_a_lying_container_with_progress_finishes(tmp_path):
    video = write_mkv(tmp_path / "liar.mkv", [round(i * 1000 / 30) for i in range(90)], duration_ms=1e12)
    res = CliRunner().invoke(main, [str(video), "--out", str(tmp_path / "r.csv"), "--model", "fast", "--detector", "none",
                                    "--every-n", "30", "--progress"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    rows = read_results(tmp_path / "r.csv")
    assert list(rows.frame.dropna()) == [0, 30, 60] and "decoding stopped at frame 90" in rows.error.iloc[-1]


# ---- wrong answers given quietly ------------------------------------------------------------------------

def test_variable_frame_rate_times_are_the_decoders(tmp_path):
    video = write_mkv(tmp_path / "vfr.mkv", VFR_MS)
    got = [(i, t) for i, t, _ in iter_frames(video)]  # ends where its container says: no truncation error
    assert [i for i, _ in got] == list(range(36))
    assert [round(t * 1000) for _, t in got] == VFR_MS


def test_a_real_variable_frame_rate_clip_gets_its_decoders_times(videos):
    """pyfeat_face_noface.mov shows its frames 14 to 42 ms apart (26.4 fps on average)."""
    clip = videos / "pyfeat_face_noface.mov"
    got = [(i, round(t, 3)) for i, t, _ in iter_frames(clip, FrameSampler(every_n=40))]
    assert got == [(0, 0.0), (40, 1.333), (80, 2.694), (120, 4.36), (160, 6.027)]  # i / 26.4 is 3.03 s at 80
    shown = [t for _, t, _ in iter_frames(clip, FrameSampler(fps=2))]
    gaps = np.diff(shown)  # half a second apart, give or take the frame that falls on the tick
    assert len(shown) == 13 and gaps.min() > 0.5 - 0.043 and gaps.max() < 0.5 + 0.043, gaps


def test_video_fps_samples_real_time(tmp_path):
    video = write_mkv(tmp_path / "vfr.mkv", VFR_MS)
    half_seconds = [(i, round(t, 3)) for i, t, _ in iter_frames(video, FrameSampler(fps=2))]
    assert half_seconds == [(0, 0.0), (15, 0.5), (30, 1.0), (32, 1.667), (33, 2.0), (35, 2.667)]


@pytest.mark.parametrize("sampler", [FrameSampler(fps=7), FrameSampler(fps=2), FrameSampler(every_n=4)],
                         ids=["7 fps", "2 fps", "every 4th"])
@pytest.mark.parametrize("seek", [True, False])
def test_ranges_decoded_apart_sample_a_vfr_video_as_one_pass(tmp_path, sampler, seek):
    """Ranges sample as one pass does. Seeking by frame number in a variable-frame-rate video may land
    elsewhere: then the seams (the frame after one range against the next one's first) disagree, and
    the Dask runner decodes the ranges in sequence (``seek=False``) instead."""
    video = write_mkv(tmp_path / "vfr.mkv", VFR_MS)
    whole = [(i, t) for i, t, _ in iter_frames(video, sampler)]
    parts, seams = [], []
    for a, b in [(0, 5), (5, 17), (17, 31), (31, None)]:
        part = FrameRange(video, sampler, a, b, seek)
        parts += [(i, t) for i, t, _ in part]
        seams += [part.first, part.after]  # the seam check needs the first frame, used or not
    agree = all(np.array_equal(after, first) for after, first in zip(seams[1:-1:2], seams[2::2]))
    assert agree or seek
    if agree:
        assert parts == whole


@pytest.mark.parametrize("sampler, video_fps, expected", [
    (FrameSampler(fps=12), 30, [0, 3, 5, 8]), (FrameSampler(fps=10), 30, [0, 3, 6, 9]),
    (FrameSampler(every_n=4), 30, [0, 4, 8]), (FrameSampler(fps=60), 30, list(range(10))),
])
def test_the_plan_matches_what_the_decoders_times_sample_at_a_constant_rate(sampler, video_fps, expected):
    taken = [i for i in range(10) if sampler.wants(i, i / video_fps, (i - 1) / video_fps if i else None)]
    assert taken == expected == [sampler.nth(k, video_fps) for k in range(len(expected))]
    assert sampler.count(10, video_fps) == len(expected)


def test_fer_batch_writes_the_decoders_times(tmp_path):
    video = write_mkv(tmp_path / "vfr.mkv", VFR_MS)
    res = fer_batch(video, "--out", tmp_path / "r.csv", "--model", "fast", "--detector", "none", "--video-fps", "2")
    assert res.exit_code == 0, res.output
    rows = read_results(tmp_path / "r.csv")
    assert list(rows.frame) == [0, 15, 30, 32, 33, 35] and list(rows.timestamp_s) == [0.0, 0.5, 1.0, 1.667, 2.0, 2.667]


def test_a_float_image_in_0_1_with_an_outlier_is_not_black(tmp_path, photos):
    gray = cv2.imread(str(photos / "fr_obama-480p.jpg"), cv2.IMREAD_GRAYSCALE)[40:96, 360:416]
    floats = gray.astype(np.float32) / 255
    floats[0, 0] = 3.0  # one hot pixel
    Image.fromarray(floats).save(tmp_path / "face.tif")
    got = read_gray(tmp_path / "face.tif")
    expected = gray.copy()
    expected[0, 0] = 255  # the outlier is clipped
    np.testing.assert_array_equal(got, expected)
    scanner = gray.astype(np.float32)  # a float image holding 0-255 stays 0-255
    scanner[5, 5] = np.nan
    Image.fromarray(scanner).save(tmp_path / "scan.tif")
    expected = gray.copy()
    expected[5, 5] = 0
    np.testing.assert_array_equal(read_gray(tmp_path / "scan.tif"), expected)


def test_every_page_of_a_multi_page_tiff_is_read(tmp_path):
    pages = [Image.fromarray(np.full((20, 30), 40 * k, np.uint8)) for k in range(4)]
    pages[0].save(tmp_path / "scan.tif", save_all=True, append_images=pages[1:], compression="tiff_deflate")
    assert [int(p.mean()) for p in read_pages(tmp_path / "scan.tif")] == [0, 40, 80, 120]
    assert [p.shape for p in read_pages(tmp_path / "scan.tif", color=True)] == [(20, 30, 3)] * 4
    assert int(read_gray(tmp_path / "scan.tif").mean()) == 0  # read_gray reads the first page
    (tmp_path / "one.png").write_bytes(cv2.imencode(".png", np.full((8, 8), 7, np.uint8))[1].tobytes())
    assert [int(p.mean()) for p in read_pages(tmp_path / "one.png")] == [7]


# ---- multi-page TIFF: every page is read, as a frame of its input -----------------------------------

def multi_page_tiff(tmp_path: Path, photos: Path) -> tuple[Path, list[Path]]:
    """A 3-page TIFF: a face crop, a picture with a face, a blank picture; and each page alone as a PNG."""
    photo = cv2.imread(str(photos / "fr_obama-480p.jpg"))
    pages = [photo[40:96, 360:416], cv2.resize(photo, None, fx=0.5, fy=0.5), np.full((160, 200, 3), 128, np.uint8)]
    images = [Image.fromarray(cv2.cvtColor(p, cv2.COLOR_BGR2RGB)) for p in pages]
    images[0].save(tmp_path / "scan.tif", save_all=True, append_images=images[1:], compression="tiff_deflate")
    alone = []
    for k, p in enumerate(pages):
        cv2.imwrite(str(tmp_path / f"page{k}.png"), p)
        alone.append(tmp_path / f"page{k}.png")
    return tmp_path / "scan.tif", alone


def test_fer_batch_reads_every_page_as_a_frame(tmp_path, photos, exported, yunet_model):
    scan, alone = multi_page_tiff(tmp_path, photos)
    for detector in ("none", "yunet"):
        out, ref = tmp_path / f"{detector}.csv", tmp_path / f"{detector}-alone.csv"
        args = ["--model", exported["onnx"], "--detector", detector, "--yunet-model", yunet_model, "--batch-size", 2]
        assert fer_batch(scan, "--out", out, *args).exit_code == 0
        assert fer_batch(*alone, "--out", ref, *args).exit_code == 0
        df, pages = read_results(out), read_results(ref)
        assert list(df.frame.unique()) == [0, 1, 2] and pages.frame.isna().all()
        assert (df.status != "error").all() and (df.kind == "image").all()
        # each page's rows are those of the page alone, with its number as the frame; the probabilities
        # within the last gray level's worth (OpenCV's TIFF and PNG decoders turn colour to gray apart)
        probs = list(FER2013_LABELS) + ["confidence"]
        fixed = [c for c in df.columns if c not in probs and c not in ("source", "frame")]
        assert df[fixed].reset_index(drop=True).equals(pages[fixed].reset_index(drop=True)), (df, pages)
        np.testing.assert_allclose(df[probs].to_numpy(float), pages[probs].to_numpy(float), atol=2e-3)
        counts = df.groupby("frame").size().to_dict()
        assert counts == {0: 1, 1: len(pages[pages.source == str(alone[1])]), 2: 1}
    assert df[df.frame == 1].status.eq("ok").all() and df[df.frame == 2].status.tolist() == ["no_face"]
    one = read_results(tmp_path / "none.csv")
    assert one.status.tolist() == ["ok"] * 3  # without a detector, each page is classified whole


def test_a_page_that_fails_keeps_the_pages_before_it(tmp_path, photos, exported, monkeypatch):
    """A page that does not decode (read_pages raises after the pages before it) ends its input with
    an error row; the pages before it keep their rows, numbered as pages of several."""
    import fer_export.batch.per_input as per_input

    scan, _ = multi_page_tiff(tmp_path, photos)

    def two_then_broken(path, color=False):
        pages = read_pages(path, color)
        if path != scan:
            yield from pages
            return
        yield next(pages)
        yield next(pages)
        raise InputError(f"{path}: page 2 of 3 cannot be decoded (corrupt)")

    monkeypatch.setattr(per_input, "read_pages", two_then_broken)
    res = fer_batch(scan, photos / "fer_justin.jpg", "--out", tmp_path / "r.csv", "--model", exported["onnx"],
                    "--detector", "none")
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    df = read_results(tmp_path / "r.csv")
    assert df.status.tolist() == ["ok", "ok", "error", "ok"] and "page 2 of 3" in df.error.iloc[2], df
    assert df.frame.iloc[:2].tolist() == [0, 1] and df.source.iloc[-1] == str(photos / "fer_justin.jpg")


@pytest.fixture(scope="module")
def dask_threads():
    """An in-process Dask cluster of two one-thread workers (as tests/test_dask.py's)."""
    distributed = pytest.importorskip("distributed", reason="needs dask[distributed] (pip install 'fer-export[dask]')")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as c:
        yield c.scheduler_address


def test_pages_on_dask_as_in_local_mode(tmp_path, photos, exported, yunet_model, dask_threads):
    from test_dask import assert_same_rows, local_and_dask

    scan, alone = multi_page_tiff(tmp_path, photos)
    local, dask, a, b = local_and_dask(tmp_path, [alone[0], scan, photos / "fer_justin.jpg"], dask_threads,
                                       model=exported["onnx"], yunet_model=yunet_model)
    assert_same_rows(a, b)
    df = read_results(b)
    assert df[df.source == str(scan)].frame.unique().tolist() == [0, 1, 2] and dask.return_code == 0
    assert (dask.frames, dask.faces) == (local.frames, local.faces) and dask.frames == 5
