"""16-bit colour PNG and TIFF without OpenCV: the depths PIL reads and writes at 8 bits only.

PIL holds 16-bit grey but truncates 16-bit colour to 8 bits, so these files are decoded here:
PNG fully (the five row filters undone along anti-diagonals, so numpy works on whole wavefronts
instead of single pixels), TIFF when uncompressed or deflate-compressed (with or without the
horizontal predictor), which is what photo tools write by default besides LZW. OpenCV, when some
other package already installed it, is used instead (it is faster and reads every TIFF); the pack
never requires it. Both paths give identical pixels (tests).
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel


class UnsupportedDeep(ValueError):
    """A 16-bit file this reader does not decode (the message says which feature and what to do)."""


def cv2_or_none():
    """OpenCV if it is importable (installed by something else), else None."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


# -- PNG -----------------------------------------------------------------------------------------------
def _chunks(data: bytes):
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        yield kind, data[pos + 8:pos + 8 + n]
        pos += 12 + n


def _unfilter(raw: np.ndarray, h: int, stride: int, bpp: int) -> np.ndarray:
    """Undo PNG row filters: ``raw`` is [h, 1 + stride] (filter byte first). Sub, Average and Paeth depend on the
    byte ``bpp`` to the left and Up on the one above, so all rows are reconstructed together, pixel column by
    pixel column, each row after its upper neighbour: the column index minus the row index runs as a wavefront."""
    ftype = raw[:, 0].astype(np.int16)
    filt = raw[:, 1:].astype(np.int16).reshape(h, stride // bpp, bpp)
    w = stride // bpp
    out = np.zeros((h + 1, w + 1, bpp), np.int16)  # one zero row above and one zero column on the left
    rows = np.arange(h)
    for d in range(h + w - 1):  # pixel (r, c) with c = d - r: its left, upper and upper-left are done
        r = rows[max(0, d - w + 1):min(h, d + 1)]
        c = d - r
        a, b, cc = out[r + 1, c], out[r, c + 1], out[r, c]
        x = filt[r, c]
        t = ftype[r][:, None]
        p = a + b - cc
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - cc)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, cc))
        pred = np.select([t == 1, t == 2, t == 3, t == 4], [a, b, (a + b) >> 1, paeth], 0)
        out[r + 1, c + 1] = (x + pred) & 0xFF
    return out[1:, 1:].astype(np.uint8).reshape(h, stride)


def read_png16(data: bytes) -> np.ndarray | None:
    """A 16-bit PNG as uint16 HxWxC (C = 1-4, RGB order), or None when it is not a 16-bit PNG."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    head, idat = None, []
    for kind, body in _chunks(data):
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    if head is None or head[2] != 16 or head[3] not in _PNG_CHANNELS:
        return None
    w, h, _, colour, _, _, interlace = head
    if interlace:
        raise UnsupportedDeep("interlaced (Adam7) 16-bit PNG: re-save it without interlacing")
    ch = _PNG_CHANNELS[colour]
    stride, bpp = w * ch * 2, ch * 2
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
    if raw.size < h * (stride + 1):
        raise UnsupportedDeep("the PNG's image data is truncated")
    rows = _unfilter(raw[: h * (stride + 1)].reshape(h, stride + 1), h, stride, bpp)
    return rows.view(">u2").reshape(h, w, ch).astype(np.uint16)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png16(q: np.ndarray, extra_chunks: bytes = b"") -> bytes:
    """uint16 HxWxC (C = 3 or 4, RGB(A)) as a PNG; ``extra_chunks`` (iCCP, eXIf) go right after IHDR.
    Rows use the Sub filter (a difference with the pixel to the left), which suits photos."""
    h, w, c = q.shape
    be = np.ascontiguousarray(q, dtype=">u2").view(np.uint8).reshape(h, w, 2 * c)
    sub = be.copy()
    sub[:, 1:] = be[:, 1:] - be[:, :-1]  # uint8 arithmetic wraps modulo 256, as the filter is defined
    raw = np.concatenate([np.ones((h, 1), np.uint8), sub.reshape(h, w * 2 * c)], axis=1)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 6 if c == 4 else 2, 0, 0, 0)
    return (PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + extra_chunks
            + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + _chunk(b"IEND", b""))


# -- TIFF ----------------------------------------------------------------------------------------------
def read_tiff16(path: Path) -> np.ndarray | None:
    """A 16-bit chunky RGB(A) or grey TIFF (uncompressed or deflate, horizontal predictor or none) as uint16
    HxWxC, or None when it is not 16 bits per sample."""
    from PIL import Image

    with Image.open(path) as im:
        tags = dict(im.tag_v2)
        endian = "<" if im.tag_v2._endian == "<" else ">"  # noqa: SLF001 - PIL keeps the byte order here
    bits = tags.get(258, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    if set(bits) != {16}:
        return None
    w, h, c = tags[256], tags[257], int(tags.get(277, 1))
    compression, predictor, planar = tags.get(259, 1), tags.get(317, 1), tags.get(284, 1)
    if compression not in (1, 8, 32946) or predictor not in (1, 2) or planar != 1 or 322 in tags:
        raise UnsupportedDeep(f"16-bit TIFF with compression {compression}, predictor {predictor}"
                              f"{', tiles' if 322 in tags else ''}{', planar' if planar != 1 else ''}: "
                              "re-save it uncompressed or with ZIP (deflate) compression, or as a 16-bit PNG, "
                              "or install OpenCV (pip install opencv-python-headless) to read it")
    offsets, counts = tags[273], tags[279]
    offsets = offsets if isinstance(offsets, tuple) else (offsets,)
    counts = counts if isinstance(counts, tuple) else (counts,)
    data = path.read_bytes()
    strips = [data[o:o + n] for o, n in zip(offsets, counts)]
    if compression != 1:
        strips = [zlib.decompress(s) for s in strips]
    a = np.frombuffer(b"".join(strips), endian + "u2")[: h * w * c].reshape(h, w, c)
    if predictor == 2:  # each sample stored as the difference with the one to its left, modulo 2^16
        a = np.cumsum(a, axis=1, dtype=np.uint16)
    return a.astype(np.uint16)


def read_deep(path: Path) -> np.ndarray | None:
    """uint16 HxWxC (RGB order) of a 16-bit PNG or TIFF, or None when the file is not 16-bit."""
    cv2 = cv2_or_none()
    if cv2 is not None:
        a = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
        if a is None or a.dtype != np.uint16:
            return None
        a = a[..., None] if a.ndim == 2 else a
        return a[..., [2, 1, 0, 3][:a.shape[2]]] if a.shape[2] >= 3 else a  # OpenCV's BGR(A)
    data = path.read_bytes()
    if data.startswith(PNG_SIGNATURE):
        return read_png16(data)
    if data[:4] in (b"II*\0", b"MM\0*"):
        return read_tiff16(path)
    return None


def encode_png16(q: np.ndarray, extra_chunks: bytes = b"") -> bytes:
    """uint16 HxWxC RGB(A) as a 16-bit PNG: OpenCV's encoder when it is importable, else :func:`write_png16`."""
    cv2 = cv2_or_none()
    if cv2 is None:
        return write_png16(q, extra_chunks)
    ok, enc = cv2.imencode(".png", q[..., [2, 1, 0, 3][:q.shape[2]]])
    if not ok:
        raise UnsupportedDeep("OpenCV could not encode the 16-bit PNG")
    png = enc.tobytes()
    end_of_ihdr = 8 + 12 + 13  # signature, IHDR's length + type + CRC, its 13 bytes
    return png[:end_of_ihdr] + extra_chunks + png[end_of_ihdr:]
