"""Photo I/O as a photo tool does it: upright by EXIF orientation, ICC profile, EXIF, alpha and 16-bit depth
carried to the output, every PIL mode converted, animations and elongated photos handled."""
import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps

from iqa_map.cli import main
from iqa_map.core.io import imageio as io_

ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
FAST = ["--prior", "brisque", "--steps", "2", "--strength", "0.3", "--iterations", "1", "--fidelity", "mse"]
RNG = np.random.default_rng(0)
ORIENTATION = 0x0112  # the EXIF tag


def _exif(orientation=6):
    ex = Image.Exif()
    ex[ORIENTATION] = orientation
    ex[0x010F] = "Acme"  # Make
    ex.get_ifd(0x8769)[0x9003] = "2021:06:01 12:00:00"  # DateTimeOriginal, in the Exif sub-IFD
    return ex


def _stored_rgb(w, h):
    """Distinct rows and columns, so any wrong rotation or flip shows."""
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([x * 255 // (w - 1), y * 255 // (h - 1), (x + 2 * y) % 256]).astype(np.uint8)


def _portrait_jpeg(path):
    """A phone portrait: stored 120x80 landscape, EXIF orientation 6 (rotate 90 degrees clockwise to view)."""
    Image.fromarray(_stored_rgb(120, 80)).save(path, quality=95, exif=_exif(6), icc_profile=ICC)
    return path


def _png16(path, arr):
    """A 16-bit RGB(A) PNG or TIFF, by the suffix (PIL cannot write one; OpenCV takes BGR(A))."""
    assert arr.dtype == np.uint16
    assert cv2.imwrite(str(path), arr[..., [2, 1, 0, 3][:arr.shape[2]]])
    return path


def _gradient16(h=48, w=64, alpha=False):
    y, x = np.mgrid[0:h, 0:w]
    a = np.dstack([x * 65535 // (w - 1), y * 65535 // (h - 1), (x * 997 + y * 131) % 65536]).astype(np.uint16)
    if alpha:
        a = np.dstack([a, ((x + y) * 65535 // (w + h - 2)).astype(np.uint16)])
    return a


def _read16(path):
    a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert a is not None and a.dtype == np.uint16
    return a[..., [2, 1, 0, 3][:a.shape[2]]]


def _ihdr(path):
    """(bit depth, colour type) from the PNG header: 6 = RGBA, 2 = RGB."""
    data = path.read_bytes()
    assert data[12:16] == b"IHDR"
    return data[24], data[25]


def test_exif_orientation_is_applied_on_load(tmp_path):
    src = _portrait_jpeg(tmp_path / "portrait.jpg")
    t = io_.load_image(src)
    assert t.shape == (1, 3, 120, 80)  # H=120, W=80: upright
    stored = np.asarray(Image.open(src).convert("RGB"), dtype=np.float32) / 255  # the decoder's pixels, as stored
    assert np.allclose(t[0].permute(1, 2, 0).numpy(), np.rot90(stored, -1), atol=1e-6)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_of_arrays_is_pils_exif_transpose(orientation):
    """16-bit colour is read with OpenCV and turned upright on the array: the same result as PIL's."""
    im = Image.fromarray(_stored_rgb(7, 5))
    im.info["exif"] = _exif(orientation).tobytes()
    want = np.asarray(ImageOps.exif_transpose(im))
    got = io_._ORIENT.get(orientation, lambda a: a)(np.asarray(im))
    assert np.array_equal(got, want)


def test_icc_exif_and_orientation_are_written_back(tmp_path):
    photo = io_.read_photo(_portrait_jpeg(tmp_path / "portrait.jpg"))
    assert photo.icc_profile == ICC and photo.bit_depth == 8 and photo.alpha is None
    out = io_.write_photo(photo.image, tmp_path / "out.png", like=photo)
    with Image.open(out) as im:
        assert im.size == (80, 120) and im.mode == "RGB"
        assert im.info["icc_profile"] == ICC
        ex = im.getexif()
        assert ex[ORIENTATION] == 1 and ex[0x010F] == "Acme"
        assert ex.get_ifd(0x8769)[0x9003] == "2021:06:01 12:00:00"
        assert np.array_equal(np.asarray(im), (photo.image[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
    plain = io_.save_image(photo.image, tmp_path / "map.png")  # maps and sheets: no photo metadata
    with Image.open(plain) as im:
        assert "icc_profile" not in im.info and not len(im.getexif())


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_colour_round_trips_at_16_bits(tmp_path, suffix):
    src = _png16(tmp_path / f"deep{suffix}", _gradient16())
    with Image.open(src) as im:
        assert im.mode == "RGB"  # what PIL alone makes of it: 8 bits
    photo = io_.read_photo(src)
    assert photo.bit_depth == 16 and photo.image.shape == (1, 3, 48, 64)
    assert len(np.unique(np.round(photo.image.numpy() * 65535))) > 256
    out = io_.write_photo(photo.image, tmp_path / "out.png", like=photo)
    assert _ihdr(out) == (16, 2)
    back = _read16(out)
    assert np.array_equal(back, _gradient16())
    assert len(np.unique(back)) > 256 and (back % 257 != 0).mean() > 0.9  # not 8-bit values scaled up
    with Image.open(out) as im:
        assert 273 not in im.getexif()  # a TIFF's layout tags (StripOffsets...) are not EXIF to carry over


def test_16_bit_alpha_icc_and_orientation(tmp_path):
    src = tmp_path / "deep_rgba.png"
    ex = _exif(6).tobytes()
    stored = _gradient16(alpha=True)
    # Written by write_photo itself, then checked with PIL (metadata) and OpenCV (pixels) independently.
    like = io_.Photo(image=torch.zeros(1, 3, 48, 64), alpha=torch.from_numpy(stored[..., 3] / 65535.0)[None, None]
                     .float(), icc_profile=ICC, exif=ex, bit_depth=16)
    io_.write_photo(torch.from_numpy(stored[..., :3] / 65535.0).permute(2, 0, 1).float(), src, like=like)
    with Image.open(src) as im:
        assert im.info["icc_profile"] == ICC and im.getexif()[ORIENTATION] == 6
    assert np.array_equal(_read16(src), stored)

    photo = io_.read_photo(src)
    upright = np.rot90(stored, -1)
    assert photo.image.shape == (1, 3, 64, 48) and photo.bit_depth == 16 and photo.icc_profile == ICC
    assert np.array_equal(np.round(photo.alpha[0, 0].numpy() * 65535).astype(np.uint16), upright[..., 3])
    out = io_.write_photo(photo.image, tmp_path / "out.png", like=photo)
    assert _ihdr(out) == (16, 6)
    assert np.array_equal(_read16(out)[..., 3], upright[..., 3])  # alpha unchanged, upright
    with Image.open(out) as im:
        assert im.info["icc_profile"] == ICC and im.getexif()[ORIENTATION] == 1


def test_alpha_is_composited_for_the_model_and_reattached_unchanged(tmp_path):
    rgb = RNG.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    alpha = RNG.integers(0, 256, (40, 50), dtype=np.uint8)
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "a.png")
    photo = io_.read_photo(tmp_path / "a.png")
    a = alpha[..., None] / 255.0
    assert np.allclose(photo.image[0].permute(1, 2, 0).numpy(), rgb / 255.0 * a + 1 - a, atol=1e-6)  # on white
    out = io_.write_photo(photo.image, tmp_path / "out.png", like=photo)
    with Image.open(out) as im:
        assert im.mode == "RGBA" and im.size == (50, 40)
        assert np.array_equal(np.asarray(im)[..., 3], alpha)
    with pytest.raises(ValueError, match="alpha channel"):
        io_.write_photo(photo.image[..., :20, :], tmp_path / "crop.png", like=photo)


def test_cmyk_palette_la_and_i16_are_converted(tmp_path):
    cmyk = np.zeros((32, 40, 4), np.uint8)
    cmyk[:, :20, 0] = 255  # cyan
    cmyk[:, 20:, 3] = 255  # black
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "cmyk.jpg", quality=100, icc_profile=ICC)
    p = io_.read_photo(tmp_path / "cmyk.jpg")
    assert p.mode == "CMYK" and p.image.shape == (1, 3, 32, 40)
    assert np.allclose(p.image[0, :, 16, 5].numpy(), [0, 1, 1], atol=0.03)
    assert np.allclose(p.image[0, :, 16, 30].numpy(), [0, 0, 0], atol=0.03)
    assert p.icc_profile is None  # an RGB profile on CMYK pixels describes neither them nor the RGB output

    pal = Image.new("P", (40, 32))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(1, (20, 0, 40, 32))
    pal.save(tmp_path / "p.png")
    pal.save(tmp_path / "pt.png", transparency=0)
    p = io_.read_photo(tmp_path / "p.png")
    assert p.alpha is None and np.allclose(p.image[0, :, 5, 5].numpy(), [1, 0, 0])
    assert np.allclose(p.image[0, :, 5, 30].numpy(), [0, 0, 1])
    p = io_.read_photo(tmp_path / "pt.png")
    assert p.alpha is not None and float(p.alpha[0, 0, 5, 5]) == 0 and float(p.alpha[0, 0, 5, 30]) == 1
    assert np.allclose(p.image[0, :, 5, 5].numpy(), [1, 1, 1])  # transparent: white, as alpha is composited
    with Image.open(io_.write_photo(p.image, tmp_path / "pt_out.png", like=p)) as im:
        assert im.mode == "RGBA" and np.array_equal(np.asarray(im)[..., 3],
                                                    np.asarray(Image.open(tmp_path / "pt.png").convert("RGBA"))[..., 3])

    grey = RNG.integers(0, 256, (32, 40), dtype=np.uint8)
    la_alpha = RNG.integers(0, 256, (32, 40), dtype=np.uint8)
    Image.merge("LA", [Image.fromarray(grey), Image.fromarray(la_alpha)]).save(tmp_path / "la.png")
    p = io_.read_photo(tmp_path / "la.png")
    assert p.mode == "LA" and np.array_equal(np.round(p.alpha[0, 0].numpy() * 255).astype(np.uint8), la_alpha)
    assert torch.equal(p.image[0, 0], p.image[0, 1]) and torch.equal(p.image[0, 1], p.image[0, 2])

    i16 = RNG.integers(0, 65536, (32, 40), dtype=np.uint16)
    Image.fromarray(i16).save(tmp_path / "i16.png")
    p = io_.read_photo(tmp_path / "i16.png")
    assert p.mode.startswith("I") and p.bit_depth == 16
    out = io_.write_photo(p.image, tmp_path / "i16_out.png", like=p)
    assert _ihdr(out) == (16, 2) and np.array_equal(_read16(out)[..., 1], i16)


def test_animation_uses_its_first_frame_and_says_so(tmp_path):
    frames = [Image.new("RGB", (40, 32), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.warns(io_.ImageWarning, match="uses frame 1 of 3"):
        p = io_.read_photo(tmp_path / "anim.gif")
    assert p.frames == 3 and np.allclose(p.image[0, :, 0, 0].numpy(), [1, 0, 0], atol=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        io_.read_photo(_portrait_jpeg(tmp_path / "still.jpg"))  # a still photo: no warning


def test_elongated_photos_load_and_tile(tmp_path):
    from iqa_map.core.models import load_builtin
    from iqa_map.core.map.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, tile_grid

    x = np.linspace(0, 255, 12000, dtype=np.float32)
    Image.fromarray(np.broadcast_to(x.astype(np.uint8)[None, :, None], (400, 12000, 3)).copy()).save(
        tmp_path / "pano.png")
    t = io_.load_image(tmp_path / "pano.png")
    assert t.shape == (1, 3, 400, 12000)
    grid = tile_grid(load_builtin(device="cpu"), None, 400, 12000, DEFAULT_TILE, DEFAULT_OVERLAP)
    assert grid.rows == [0] and len(grid) == len(grid.cols) > 12000 // DEFAULT_TILE
    covered = np.zeros((400, 12000), bool)
    for y, x0, h, w in grid.boxes():
        assert 0 <= y and y + h <= 400 and 0 <= x0 and x0 + w <= 12000 and w <= DEFAULT_TILE
        covered[y:y + h, x0:x0 + w] = True
    assert covered.all()


def test_writes_never_replace_an_input_and_leave_no_partial_file(tmp_path):
    src = _portrait_jpeg(tmp_path / "a.jpg")
    before = src.read_bytes()
    photo = io_.read_photo(src)
    with pytest.raises(io_.ImageError, match="refusing to overwrite"):
        io_.write_photo(photo.image, src, like=photo, protect=[src])
    assert src.read_bytes() == before
    io_.write_photo(photo.image, tmp_path / "o.png", like=photo)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.jpg", "o.png"]


def test_cli_enhance_keeps_orientation_icc_exif_alpha_and_depth(tmp_path, capsys):
    """End to end with the fastest settings: each output is upright, at its input's depth, with its metadata."""
    jpg = _portrait_jpeg(tmp_path / "portrait.jpg")
    deep = _png16(tmp_path / "deep.png", _gradient16(alpha=True))
    frames = [Image.new("RGB", (64, 48), c) for c in ((200, 40, 40), (40, 200, 40))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    out = tmp_path / "out"
    assert main(["enhance", str(jpg), str(deep), str(tmp_path / "anim.gif"), "-o", str(out), *FAST]) == 0
    err = capsys.readouterr().err

    with Image.open(out / "portrait_enhanced.png") as im:
        assert im.size == (80, 120) and im.mode == "RGB" and _ihdr(out / "portrait_enhanced.png") == (8, 2)
        assert im.info["icc_profile"] == ICC
        ex = im.getexif()
        assert ex[ORIENTATION] == 1 and ex[0x010F] == "Acme"
    res = _read16(out / "deep_enhanced.png")
    assert _ihdr(out / "deep_enhanced.png") == (16, 6) and res.shape == (48, 64, 4)
    assert np.array_equal(res[..., 3], _gradient16(alpha=True)[..., 3])
    assert (res[..., :3] % 257 != 0).mean() > 0.5  # 16-bit values, not 8-bit ones scaled up
    with Image.open(out / "deep_enhanced.png") as im:
        assert "icc_profile" not in im.info  # the input had none
    with Image.open(out / "anim_enhanced.png") as im:
        assert im.size == (64, 48) and im.mode == "RGB"
    assert err.count("note: anim.gif: GIF with 2 frames; uses frame 1 of 2") == 1  # said once, not per read


def test_cli_enhances_an_elongated_photo_in_tiles(tmp_path, capsys):
    """20:1, small enough for a test: the tiles run along the one row and the output has the input's size."""
    Image.fromarray(RNG.integers(0, 256, (32, 640, 3), dtype=np.uint8)).save(tmp_path / "strip.png")
    assert main(["enhance", str(tmp_path / "strip.png"), "-o", str(tmp_path / "out"), "--tile", "128",
                 "--tile-overlap", "16", *FAST]) == 0
    assert "640x32 is larger than --tile 128: 6 tiles" in capsys.readouterr().out
    with Image.open(tmp_path / "out" / "strip_enhanced.png") as im:
        assert im.size == (640, 32)
