"""16-bit colour PNG/TIFF without OpenCV (core/io/deepio.py): identical pixels to OpenCV's, every PNG filter type,
the TIFF compressions the pure reader takes, and a clear message for the others."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from iqa_map.core.io import deepio
from iqa_map.core.io import imageio as io_


def gradient16(h=30, w=41, c=3, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.dstack([x * 65535 // (w - 1), y * 65535 // (h - 1), (x * 997 + y * 131) % 65536,
                      (x + y) * 65535 // (w + h - 2)][:c]).astype(np.int64)
    return np.clip(base + rng.integers(-300, 300, base.shape), 0, 65535).astype(np.uint16)


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def png_with_every_filter(q: np.ndarray) -> bytes:
    """A reference encoder written from the PNG specification, byte by byte: row r uses filter r mod 5."""
    h, w, c = q.shape
    rows = q.astype(">u2").view(np.uint8).reshape(h, w * 2 * c).astype(int)
    bpp, out = 2 * c, bytearray()
    for r in range(h):
        t = r % 5
        out.append(t)
        for i in range(rows.shape[1]):
            a = rows[r, i - bpp] if i >= bpp else 0
            b = rows[r - 1, i] if r else 0
            cc = rows[r - 1, i - bpp] if r and i >= bpp else 0
            pred = (0, a, b, (a + b) // 2, _paeth(a, b, cc))[t]
            out.append((rows[r, i] - pred) % 256)
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[c]

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (deepio.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_pure_png_reader_undoes_every_filter(channels):
    q = gradient16(c=channels)
    back = deepio.read_png16(png_with_every_filter(q))
    assert back.dtype == np.uint16 and np.array_equal(back, q)


@pytest.mark.parametrize("channels", [3, 4])
def test_pure_writer_and_reader_round_trip_and_agree_with_opencv(channels):
    q = gradient16(c=channels, seed=channels)
    png = deepio.write_png16(q)
    assert np.array_equal(deepio.read_png16(png), q)
    cv2 = pytest.importorskip("cv2")
    a = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)  # OpenCV reads our file...
    assert np.array_equal(a[..., [2, 1, 0, 3][:channels]], q)
    ok, enc = cv2.imencode(".png", q[..., [2, 1, 0, 3][:channels]])  # ...and we read OpenCV's
    assert ok and np.array_equal(deepio.read_png16(enc.tobytes()), q)


@pytest.mark.parametrize("compression", [1, 8])
def test_pure_tiff_reader_matches_opencv(tmp_path, compression):
    cv2 = pytest.importorskip("cv2")
    q = gradient16(h=37, w=29)
    path = tmp_path / f"deep{compression}.tif"
    assert cv2.imwrite(str(path), q[..., ::-1], [cv2.IMWRITE_TIFF_COMPRESSION, compression])
    assert np.array_equal(deepio.read_tiff16(path), q)


def test_unsupported_tiff_compression_says_what_to_do(tmp_path, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "lzw.tif"
    assert cv2.imwrite(str(path), gradient16()[..., ::-1], [cv2.IMWRITE_TIFF_COMPRESSION, 5])
    monkeypatch.setattr(deepio, "cv2_or_none", lambda: None)
    with pytest.raises(io_.ImageError, match="compression 5.*re-save it.*opencv"):
        io_.read_photo(path)


@pytest.mark.parametrize("alpha", [False, True])
def test_photo_io_gives_identical_pixels_with_and_without_opencv(tmp_path, monkeypatch, alpha):
    """read_photo/write_photo of 16-bit colour: the same pixels and bytes-on-read whichever codec runs."""
    c = 4 if alpha else 3
    q = gradient16(h=40, w=52, c=c, seed=7)
    src = tmp_path / "src.png"
    src.write_bytes(png_with_every_filter(q))
    results = {}
    for mode in ("pure", "opencv"):
        if mode == "opencv":
            monkeypatch.undo()
            if deepio.cv2_or_none() is None:
                pytest.skip("OpenCV not installed: only the pure path ran")
        else:
            monkeypatch.setattr(deepio, "cv2_or_none", lambda: None)
        photo = io_.read_photo(src)
        assert photo.bit_depth == 16
        out = io_.write_photo(photo.image, tmp_path / f"{mode}.png", like=photo)
        results[mode] = (photo.image.clone(), None if photo.alpha is None else photo.alpha.clone(),
                         deepio.read_png16(out.read_bytes()))
    (ia, aa, pa), (ib, ab, pb) = results["pure"], results["opencv"]
    assert torch.equal(ia, ib) and (aa is None and ab is None or torch.equal(aa, ab))
    assert np.array_equal(pa, pb)
    # without alpha the pixels come back exactly; with it, the colour is composited on white for the model
    # (test_imageio) and the alpha channel comes back exactly
    assert np.array_equal(pa[..., 3], q[..., 3]) if alpha else np.array_equal(pa, q)


def test_no_opencv_import_anywhere_in_the_photo_path(tmp_path):
    """With `import cv2` failing, a 16-bit photo is read and written (the pack does not need OpenCV)."""
    import subprocess
    import sys
    from pathlib import Path

    src = tmp_path / "deep.png"
    src.write_bytes(png_with_every_filter(gradient16(c=3)))
    code = ("import sys; sys.modules['cv2'] = None\n"
            "from iqa_map.core.io.imageio import read_photo, write_photo\n"
            f"p = read_photo({str(src)!r}); assert p.bit_depth == 16\n"
            f"write_photo(p.image, {str(tmp_path / 'out.png')!r}, like=p)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr
    assert np.array_equal(deepio.read_png16((tmp_path / "out.png").read_bytes()), gradient16(c=3))
