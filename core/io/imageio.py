"""Reading and writing photos the way a photo tool does.

A photo is read upright (its EXIF orientation applied, as ComfyUI's Load Image
does), in any PIL mode, as a ``[1,3,H,W]`` tensor in [0, 1] for the models; what
the models do not see (the alpha channel, the ICC colour profile, the EXIF
block, a 16-bit depth) is kept in a :class:`Photo` so that an output derived
from that photo can be written with it (:func:`write_photo`). Errors are
:class:`ImageError` with a message that says what to do.
"""
from __future__ import annotations

import dataclasses
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from .files import write_bytes

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
MIN_SIDE = 16
ORIENTATION = 0x0112  # EXIF tag
# A TIFF's own tags (strip offsets, bits per sample...) describe its layout, not the photo: only these are EXIF
# worth carrying to another file (plus the Exif and GPS sub-IFDs).
_TIFF_EXIF_TAGS = {270, 271, 272, ORIENTATION, 282, 283, 296, 305, 306, 315, 33432, 0x8769, 0x8825}
# EXIF orientation -> the array operation PIL's ImageOps.exif_transpose does (for arrays PIL cannot hold).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


class ImageError(ValueError):
    """A file that cannot be used as an input photo; the message says why and what to do."""


class ImageWarning(UserWarning):
    """Something about an input the user should know that does not stop it (an animation's later frames unused)."""


@dataclasses.dataclass
class Photo:
    """A photo as read from a file: what the models see and what its output should carry back.

    ``image``: RGB ``[1,3,H,W]`` float32 in [0, 1], upright, alpha composited on white.
    ``alpha``: ``[1,1,H,W]`` float32 in [0, 1] (exact for 8 and 16 bits), or None.
    ``icc_profile``: an RGB ICC profile (a CMYK one has been applied to reach sRGB; a grey one does not
    describe RGB pixels), or None (sRGB). ``exif``: the EXIF block with Orientation reset to 1, since the
    pixels are upright, or None. ``bit_depth``: 8, or 16 for 16-bit and float sources, the output's depth.
    ``mode``: the source's PIL mode; ``frames``: how many frames the file has (the first is used).
    """
    image: torch.Tensor
    alpha: torch.Tensor | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None
    bit_depth: int = 8
    mode: str = "RGB"
    frames: int = 1
    path: Path | None = None


def load_image(path: str | os.PathLike, min_side: int = MIN_SIDE) -> torch.Tensor:
    """RGB float tensor [1,3,H,W] in [0, 1], upright; grayscale replicated, alpha composited on white,
    CMYK, palette, 16-bit and float images converted, so any ordinary photo file works."""
    return read_photo(path, min_side).image


def read_photo(path: str | os.PathLike, min_side: int = MIN_SIDE) -> Photo:
    """The first frame of an image file as a :class:`Photo` (an animation warns that later frames go unused)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if not path.is_file():
        raise ImageError(f"{path}: not a file")
    try:
        with Image.open(path) as im:
            frames = int(getattr(im, "n_frames", 1))
            photo = _decode(im, path)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file PIL can read (use PNG, JPEG, TIFF, BMP or WebP)") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: {e}; if the file is trusted, raise PIL.Image.MAX_IMAGE_PIXELS") from None
    except PermissionError as e:
        raise ImageError(f"{path}: cannot be read ({e.strerror}); check the file's permissions") from None
    except (OSError, SyntaxError) as e:
        raise ImageError(f"{path}: the image file is damaged or truncated ({e}); re-export it") from None
    h, w = photo.image.shape[-2:]
    if min(h, w) < min_side:
        raise ImageError(f"{path}: image is {w}x{h}; at least {min_side}x{min_side} pixels are needed")
    if frames > 1 and im.format != "MPO":  # MPO: a camera JPEG with a preview as its second frame
        warnings.warn(f"{path.name}: {im.format} with {frames} frames; uses frame 1 of {frames}", ImageWarning,
                      stacklevel=2)
    return dataclasses.replace(photo, frames=frames, path=path)


def _decode(im, path: Path) -> Photo:
    """Pixels and metadata of an open image's current frame."""
    from PIL import ImageOps

    mode, fmt = im.mode, im.format
    tile = im.tile[0][3] if im.tile else None  # the decoder's arguments: rawmode first
    rawmode = tile if isinstance(tile, str) else (tile[0] if tile else "")
    # PIL holds 16-bit grey exactly but truncates 16-bit colour to 8 bits: those are read by .deepio.
    deep = mode in ("RGB", "RGBA", "LA") and ";16" in str(rawmode)
    im.load()
    exif = im.getexif()
    orientation = int(exif.get(ORIENTATION, 1) or 1)
    icc = im.info.get("icc_profile") or None
    arr = _read_deep(path) if deep else None
    if arr is not None:
        arr, depth = _ORIENT.get(orientation, lambda a: a)(arr), 16
    else:
        im = ImageOps.exif_transpose(im)
        arr, depth, icc = _to_array(im, icc, path)
    rgb, alpha = arr[..., :3], (arr[..., 3:4] if arr.shape[2] == 4 else None)
    if alpha is not None:
        rgb = rgb * alpha + (1.0 - alpha)  # composite on white
    if icc is not None and icc[16:20] != b"RGB ":
        icc = None  # a grey or CMYK profile does not describe the RGB output
    return Photo(image=_tensor(rgb), alpha=None if alpha is None else _tensor(alpha), icc_profile=icc,
                 exif=_exif_bytes(exif, fmt), bit_depth=depth, mode=mode)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.clip(a, 0.0, 1.0).astype(np.float32).transpose(2, 0, 1)))[None]


def _to_array(im, icc, path):
    """float64 HxWx3 (RGB) or HxWx4 (RGBA) in [0, 1], the bit depth, and the profile still valid for it."""
    m = im.mode
    if m in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        a = a / (65535.0 if a.max() > 255 or m.startswith("I;16") else 255.0)
        return np.repeat(a[..., None], 3, axis=2), 16, icc
    if m == "F":
        a = np.asarray(im, dtype=np.float64)
        a = (a - a.min()) / max(a.max() - a.min(), 1e-12)
        return np.repeat(a[..., None], 3, axis=2), 16, icc
    if m == "CMYK":
        return np.asarray(_cmyk_to_rgb(im, icc), dtype=np.float64) / 255.0, 8, None
    if m in ("RGBA", "LA", "PA", "La", "RGBa") or (m == "P" and "transparency" in im.info) or \
            (m in ("L", "RGB") and "transparency" in im.info):
        return np.asarray(im.convert("RGBA"), dtype=np.float64) / 255.0, 8, icc
    try:
        return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0, 8, icc
    except ValueError:
        raise ImageError(f"{path}: {im.mode} images cannot be converted to RGB; re-export the file as RGB") \
            from None


def _cmyk_to_rgb(im, icc):
    """A CMYK image in sRGB: through its own CMYK profile when it has one (print files do), else PIL's formula."""
    if icc and icc[16:20] == b"CMYK":
        try:
            from PIL import ImageCms

            return ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                             ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:  # noqa: BLE001 - no littlecms, or a profile it rejects: the pixels still count
            warnings.warn("the CMYK profile could not be applied; colours are converted without it", ImageWarning)
    return im.convert("RGB")


def _read_deep(path: Path) -> np.ndarray | None:
    """16-bit colour (PNG, TIFF) as float64 HxWxC RGB(A) in [0, 1], or None to let PIL read it at 8 bits."""
    from .deepio import UnsupportedDeep, read_deep

    try:
        a = read_deep(path)
    except UnsupportedDeep as e:
        raise ImageError(f"{path}: {e}") from None
    except (zlib.error, KeyError, ValueError, struct.error) as e:
        raise ImageError(f"{path}: the 16-bit image data is damaged ({e}); re-export it") from None
    if a is None:
        return None
    if a.shape[2] <= 2:  # grey (+ alpha)
        a = np.concatenate([np.repeat(a[..., :1], 3, axis=2), a[..., 1:]], axis=2)
    return a.astype(np.float64) / 65535.0


def _exif_bytes(exif, fmt) -> bytes | None:
    """The EXIF block to write with the output: Orientation 1 (the pixels are upright), a TIFF's layout
    tags left out (they describe the TIFF file, not the photo)."""
    if fmt == "TIFF":
        for tag in [t for t in exif if t not in _TIFF_EXIF_TAGS]:
            del exif[tag]
    if not len(exif):
        return None
    if ORIENTATION in exif:
        exif[ORIENTATION] = 1
    try:
        return exif.tobytes()
    except Exception:  # noqa: BLE001 - PIL raises assorted errors on odd vendor tags; the pixels still count
        warnings.warn("the EXIF block could not be re-encoded and is not copied to the output", ImageWarning)
        return None


def write_photo(img: torch.Tensor, path: str | os.PathLike, like: Photo | None = None,
                protect: tuple = ()) -> Path:
    """Write [1,C,H,W] (or [C,H,W], C = 1 or 3) in [0, 1] as a PNG, atomically, never over a path in
    ``protect``. With ``like`` (the photo it was derived from) the PNG gets that photo's alpha channel,
    ICC profile, EXIF and bit depth (16-bit in, 16-bit out), as a photo tool would."""
    path = Path(path)
    if any(path.resolve() == Path(p).resolve() for p in protect):
        raise ImageError(f"refusing to overwrite the input {path}; choose another output folder")
    t = img.detach().float().cpu()
    t = t[0] if t.ndim == 4 else t
    arr = t.clamp(0, 1).permute(1, 2, 0).numpy()
    arr = np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr
    depth, icc, exif = (like.bit_depth, like.icc_profile, like.exif) if like is not None else (8, None, None)
    if like is not None and like.alpha is not None:
        a = like.alpha.detach().float().cpu()[0].permute(1, 2, 0).numpy()
        if a.shape[:2] != arr.shape[:2]:
            raise ValueError(f"the image is {arr.shape[1]}x{arr.shape[0]} but the photo's alpha channel "
                             f"{a.shape[1]}x{a.shape[0]}; write it without like=")
        arr = np.concatenate([arr, a], axis=2)
    data = _png16(arr, icc, exif) if depth == 16 else _png8(arr, icc, exif)
    return write_bytes(path, data)  # atomic: an interrupted run never leaves a half-written output


def save_image(img: torch.Tensor, path: str | os.PathLike, protect: tuple = ()) -> Path:
    """Write [1,3,H,W] (or [3,H,W]) in [0, 1] as a plain 8-bit PNG (maps, sheets: no photo metadata)."""
    return write_photo(img, path, protect=protect)


def _png8(arr: np.ndarray, icc, exif) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    extra = {k: v for k, v in (("icc_profile", icc), ("exif", exif)) if v}
    Image.fromarray((arr * 255.0 + 0.5).astype(np.uint8)).save(buf, format="PNG", **extra)
    return buf.getvalue()


def _png16(arr: np.ndarray, icc, exif) -> bytes:
    """16-bit RGB(A) PNG, which PIL cannot write (:mod:`.deepio`), with the iCCP and eXIf chunks after IHDR."""
    from .deepio import encode_png16

    q = (arr * 65535.0 + 0.5).astype(np.uint16)
    chunks = b""
    if icc:
        chunks += _chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc))
    if exif:
        chunks += _chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif)
    return encode_png16(q, chunks)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def find_images(inputs) -> list[Path]:
    """Files given directly, plus the images inside given folders (sorted, not recursive)."""
    out = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        else:
            out.append(p)
    return out
