"""What an image file's header states (no decoding): its format, and each page's width, height,
channels, bytes per sample, and what a decoder holds besides (a TIFF tile, a progressive JPEG's
coefficients). :mod:`.image_limits` checks these against a budget before a file is decoded.

Read here: the formats OpenCV decodes. PNG; JPEG, its markers found as libjpeg finds them (past
padding, stray bytes and any number of APPn segments, in any SOF: baseline, progressive, lossless,
arithmetic); TIFF and BigTIFF, every page, each directory read where it lies (often after the pixels);
WebP (lossy, lossless, extended); GIF (the screen grown to its first frame, as decoders grow it);
BMP; PBM/PGM/PPM/PAM/PFM; Sun raster; Radiance HDR.
"""
from __future__ import annotations

import os
import re
import struct
from typing import NamedTuple


class Page(NamedTuple):
    """What a header states of one page (a tuple: one is made for every face crop read)."""

    width: int
    height: int
    channels: int = 3  # of the array decoded
    sample_bytes: int = 1
    extra: int = 0  # bytes the decoder holds besides the array (a TIFF tile, JPEG coefficients)

    @property
    def bytes(self) -> int:
        return self.width * self.height * self.channels * self.sample_bytes + self.extra


class Stated(NamedTuple):
    """A file's format and its pages, as its header states them."""

    format: str
    pages: tuple[Page, ...]


class Reader:
    """A file's bytes as header parsers read them: from the bytes read so far (``head``), or where a
    header lies further on, from the file (``fd``) without reading what lies between."""

    __slots__ = ("head", "fd", "size")

    def __init__(self, head: bytes, fd: int | None, size: int):
        self.head, self.fd, self.size = head, fd, size

    def get(self, at: int, n: int) -> bytes:
        if at + n <= len(self.head) or self.fd is None:
            return self.head[at:at + n]
        return os.pread(self.fd, max(0, min(n, self.size - at)), at) if at < self.size else b""

    def find(self, byte: bytes, at: int) -> int:
        """Where ``byte`` next occurs at or after ``at``; -1 if nowhere."""
        if at < len(self.head):
            found = self.head.find(byte, at)
            if found >= 0 or self.fd is None:
                return found
            at = len(self.head)
        while self.fd is not None and at < self.size:
            chunk = self.get(at, 1 << 20)
            found = chunk.find(byte)
            if found >= 0:
                return at + found
            if not chunk:
                break
            at += len(chunk)
        return -1


def stated(data, max_pages: int = 1000) -> Stated | None:
    """The format and pages ``data`` (a file's bytes) states in its header (no page when the header is
    cut short or does not say), or None for a format not read here. TIFF pages are read up to one
    past ``max_pages``."""
    r = data if isinstance(data, Reader) else Reader(bytes(data), None, len(data))
    magic = r.get(0, 12)
    for start, parse in _MAGIC:
        if magic.startswith(start):
            return parse(r, max_pages) if parse is _tiff else parse(r)
    if magic[:4] == b"RIFF" and magic[8:12] == b"WEBP":
        return _webp(r)
    if re.match(rb"P[1-7Ff]\s", magic[:3]):
        return _pnm(r)
    return None


def _unpack(r: Reader, fmt: str | struct.Struct, at: int):
    """``struct.unpack`` of the bytes at ``at``, or None past the end of the file."""
    fmt = fmt if isinstance(fmt, struct.Struct) else struct.Struct(fmt)
    raw = r.get(at, fmt.size)
    return fmt.unpack(raw) if len(raw) == fmt.size else None


def _png(r: Reader) -> Stated:
    ihdr = _unpack(r, ">4sIIBB", 12)
    if ihdr is None or ihdr[0] != b"IHDR":
        return Stated("PNG", ())
    _, w, h, depth, kind = ihdr
    return Stated("PNG", (Page(w, h, 4 if kind in (4, 6) else 3, 2 if depth == 16 else 1),))


#: JPEG start-of-frame markers (the others of 0xC0-0xCF: DHT, JPG, DAC); the progressive ones.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
_SEGMENT = struct.Struct(">BBH")


def _jpeg(r: Reader) -> Stated:
    """The frame header, found as libjpeg finds markers: it skips any bytes that are not 0xFF before
    a marker (with a warning), 0xFF padding, and 0xFF 0x00; a header without one is no size at all."""
    i = 2
    while (seg := _unpack(r, _SEGMENT, i)) is not None:
        ff, marker, length = seg
        if ff != 0xFF or marker in (0xFF, 0x00):  # not where a marker should be: look on, as libjpeg does
            i = _next_marker(r, i)
            if i < 0:
                break
            continue
        if marker in _SOF:
            return Stated("JPEG", _jpeg_frame(r.get(i + 4, 6 + 3 * 255), marker))
        if marker in (0xD8, 0xD9, 0xDA):  # SOI again, EOI or a scan before any frame: libjpeg stops
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i += 2
        elif length < 2:
            break
        else:
            i += 2 + length
    return Stated("JPEG", ())


def _next_marker(r: Reader, i: int) -> int:
    """Where the next marker (0xFF, then neither 0xFF nor 0x00) starts at or after ``i``; -1 if none."""
    while (j := r.find(b"\xff", i)) >= 0:
        k = j + 1
        while (b := r.get(k, 1)) == b"\xff":
            k += 1
        if not b:
            return -1
        if b != b"\x00":
            return k - 1
        i = k + 1
    return -1


def _jpeg_frame(seg: bytes, marker: int) -> tuple[Page, ...]:
    """A SOF segment's page; a progressive JPEG holds every component's coefficients (2 bytes each,
    at its sampling) while it decodes."""
    if len(seg) < 6:
        return ()
    h, w, nc = struct.unpack_from(">HHB", seg, 1)
    if marker not in _PROGRESSIVE:
        return (Page(w, h, 3, 1, 0),)
    comps = [(seg[7 + 3 * c] >> 4, seg[7 + 3 * c] & 15) for c in range(nc) if 8 + 3 * c <= len(seg)]
    hmax, vmax = max([c[0] for c in comps] or [1]) or 1, max([c[1] for c in comps] or [1]) or 1
    extra = sum(2 * -(-w * ch // hmax) * -(-h * cv // vmax) for ch, cv in comps)
    return (Page(w, h, 3, 1, extra),)


def _tiff(r: Reader, max_pages: int) -> Stated:
    """Every page (IFD) of a TIFF or BigTIFF, each with the tile the decoder holds; each directory is
    read where it lies (often after the pixels)."""
    e = "<" if r.get(0, 2) == b"II" else ">"
    big = r.get(2, 2) in (b"+\0", b"\0+")
    ptr, count_fmt, entry_fmt = (e + "Q", e + "Q", struct.Struct(e + "HHQ8s")) if big else (e + "I", e + "H", struct.Struct(e + "HHI4s"))
    count_size = struct.calcsize(count_fmt)
    offset = (_unpack(r, ptr, 8 if big else 4) or (0,))[0]
    pages, seen = [], set()
    while offset and offset not in seen and len(pages) <= max_pages:
        seen.add(offset)
        count = _unpack(r, count_fmt, offset)
        if count is None:
            break
        count = count[0]
        block = r.get(offset + count_size, min(count, 4096) * entry_fmt.size + struct.calcsize(ptr))
        tags = {}
        for tag, kind, n, value in entry_fmt.iter_unpack(block[:len(block) // entry_fmt.size * entry_fmt.size]):
            if tag in (256, 257, 258, 277, 322, 323):
                tags[tag] = _tiff_values(r, e, kind, n, value, ptr)
        w, h = (tags.get(t, [0])[0] for t in (256, 257))
        spp, bits = tags.get(277, [1])[0], max(tags.get(258, [1]) or [1])
        sample = max(1, -(-bits // 8))
        tile = tags.get(322, [0])[0] * tags.get(323, [0])[0] * spp * sample
        pages.append(Page(w, h, max(spp, 3), sample, tile))
        offset = (_unpack(r, ptr, offset + count_size + count * entry_fmt.size) or (0,))[0]
    return Stated("TIFF", tuple(pages))


_TIFF_TYPES = {1: "B", 3: "H", 4: "I", 16: "Q"}


def _tiff_values(r: Reader, e: str, kind: int, n: int, value: bytes, ptr: str) -> list[int]:
    """A tag's first values (at most 16): in its entry, or where the entry points."""
    fmt = _TIFF_TYPES.get(kind)
    if fmt is None or n < 1:
        return []
    fmt = struct.Struct(e + fmt * min(n, 16))
    raw = value[:fmt.size] if fmt.size <= len(value) else r.get(struct.unpack(ptr, value)[0], fmt.size)
    return list(fmt.unpack(raw)) if len(raw) == fmt.size else []


def _webp(r: Reader) -> Stated:
    d = r.get(0, 30)
    kind = d[12:16]
    if kind == b"VP8 " and len(d) >= 30:
        w, h = (v & 0x3FFF for v in struct.unpack("<HH", d[26:30]))
    elif kind == b"VP8L" and len(d) >= 25:
        bits = int.from_bytes(d[21:25], "little")
        w, h = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif kind == b"VP8X" and len(d) >= 30:
        w, h = int.from_bytes(d[24:27], "little") + 1, int.from_bytes(d[27:30], "little") + 1
    else:
        return Stated("WebP", ())
    return Stated("WebP", (Page(w, h, 4),))


def _gif(r: Reader) -> Stated:
    """The screen, grown to hold the first frame (as decoders do)."""
    screen = _unpack(r, "<HHB", 6)
    if screen is None:
        return Stated("GIF", ())
    w, h, flags = screen
    i = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while (kind := r.get(i, 1)) == b"\x21":  # extensions: a label, then blocks of data up to an empty one
        i += 2
        while (n := r.get(i, 1)) not in (b"", b"\0"):
            i += n[0] + 1
        i += 1
    if kind == b"\x2c" and (frame := _unpack(r, "<HHHH", i + 1)):  # the first image
        w, h = max(w, frame[0] + frame[2]), max(h, frame[1] + frame[3])
    return Stated("GIF", (Page(w, h, 4),))


def _bmp(r: Reader) -> Stated:
    header = _unpack(r, "<I", 14)
    size = _unpack(r, "<HHHH" if header == (12,) else "<iiHH", 18) if header else None
    if size is None:
        return Stated("BMP", ())
    w, h, _, bits = size
    return Stated("BMP", (Page(abs(w), abs(h), 4 if bits == 32 else 3),))


def _sun(r: Reader) -> Stated:
    size = _unpack(r, ">II", 4)
    return Stated("Sun raster", (Page(*size, 3),) if size else ())


def _hdr(r: Reader) -> Stated:
    found = re.search(rb"\n\n[-+]([YX]) (\d+) [-+][YX] (\d+)", r.get(0, 65536))
    if not found:
        return Stated("Radiance HDR", ())
    a, b = int(found.group(2)), int(found.group(3))
    w, h = (a, b) if found.group(1) == b"X" else (b, a)
    return Stated("Radiance HDR", (Page(w, h, 3, 4),))


def _pnm(r: Reader) -> Stated:
    """PBM, PGM, PPM (P1-P6), PAM (P7) and PFM (PF, Pf): numbers in text after the magic, # comments."""
    head = re.sub(rb"#[^\n]*", b" ", r.get(0, 4096))
    kind = head[1:2]
    if kind == b"7":
        fields = dict(re.findall(rb"(WIDTH|HEIGHT|DEPTH|MAXVAL)\s+(\d+)", head))
        nums = [int(fields.get(k, b"0")) for k in (b"WIDTH", b"HEIGHT", b"DEPTH", b"MAXVAL")]
        page = Page(nums[0], nums[1], max(nums[2], 3), 2 if nums[3] > 255 else 1)
    else:
        count = 2 if kind in b"14Ff" else 3
        nums = [int(t) for t in head[2:].split()[:count] if t.isdigit()]
        if len(nums) < count:
            return Stated("PNM", ())
        sample = 4 if kind in b"Ff" else 2 if count == 3 and nums[2] > 255 else 1
        page = Page(nums[0], nums[1], 3, sample)
    return Stated("PNM", (page,))


_MAGIC = ((b"\x89PNG\r\n\x1a\n", _png), (b"\xff\xd8", _jpeg), (b"II*\0", _tiff), (b"MM\0*", _tiff),
          (b"II+\0", _tiff), (b"MM\0+", _tiff), (b"GIF87a", _gif), (b"GIF89a", _gif), (b"BM", _bmp),
          (b"\x59\xa6\x6a\x95", _sun), (b"#?RADIANCE", _hdr), (b"#?RGBE", _hdr))
