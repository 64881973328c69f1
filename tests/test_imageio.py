"""gpen_core.imageio: EXIF orientation, 8/16-bit, grey/RGBA layouts, formats, size limit, protected inputs."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from gpen_core.errors import ImageError
from gpen_core.imageio import (ImageMeta, apply_orientation, output_path, read_image, read_image_file,
                               write_image, written_by_gpen_core)

SAMPLE = Path(__file__).resolve().parents[1] / "gpen_core" / "samples" / "solvay_1927_crop.jpg"


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photo, (120, 160, 3) uint8 RGB, small enough for fast tests."""
    return np.asarray(Image.open(SAMPLE).convert("RGB"))[100:220, 200:360].copy()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, photo, orientation):
    im = Image.fromarray(photo)
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "oriented.jpg"
    im.save(path, exif=exif, quality=95)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    got = read_image(path)
    assert got.shape == expected.shape
    assert got.shape[:2] == ((160, 120) if orientation >= 5 else (120, 160))
    np.testing.assert_array_equal(got, expected)


def test_orientation_6_turns_clockwise():
    stored = np.arange(6).reshape(2, 3)
    # Orientation 6: the stored top row becomes the right column when displayed.
    np.testing.assert_array_equal(apply_orientation(stored, 6), [[3, 0], [4, 1], [5, 2]])


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("channels", [0, 3, 4])
def test_16bit_round_trip_keeps_depth_and_rgb_order(tmp_path, ext, channels):
    rng = np.random.default_rng(0)
    shape = (20, 30) if channels == 0 else (20, 30, channels)
    image = rng.integers(0, 65536, size=shape, dtype=np.uint16)
    if channels:
        image[..., 0] = 60000  # red high, blue low: a BGR mix-up would show
        image[..., 2] = 1000
    path = write_image(tmp_path / f"deep{ext}", image)
    back = read_image(path)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, image)


def test_layouts_are_kept(tmp_path, photo):
    grey = photo[..., 0]
    rgba = np.dstack([photo, np.full(photo.shape[:2], 77, np.uint8)])
    assert read_image(write_image(tmp_path / "g.png", grey)).shape == grey.shape
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "a.png", rgba)), rgba)
    Image.fromarray(grey).convert("LA").save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png").shape == (*grey.shape, 4)
    Image.fromarray(photo).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == photo.shape
    Image.fromarray(photo).convert("CMYK").save(tmp_path / "c.jpg")
    assert read_image(tmp_path / "c.jpg").shape == photo.shape


@pytest.mark.parametrize("ext, fmt", [(".png", "PNG"), (".jpg", "JPEG"), (".jpeg", "JPEG"),
                                      (".webp", "WEBP"), (".tiff", "TIFF"), (".bmp", "BMP")])
def test_format_follows_extension(tmp_path, photo, ext, fmt):
    path = write_image(tmp_path / f"out{ext.upper()}", photo)
    with Image.open(path) as im:
        assert im.format == fmt
    back = read_image(path)
    assert back.shape == photo.shape
    assert np.abs(back.astype(int) - photo).mean() < 3  # lossy formats at quality 95


def test_8bit_formats_get_rounded_16bit_and_jpeg_drops_alpha(tmp_path):
    image = np.full((8, 8, 4), 257 * 200, np.uint16)
    back = read_image(write_image(tmp_path / "x.jpg", image))
    assert back.dtype == np.uint8 and back.shape == (8, 8, 3)
    assert abs(int(back.mean()) - 200) <= 1


def test_unreadable_files_raise_image_error(tmp_path, photo):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageError, match="text.png"):
        read_image(tmp_path / "text.png")
    data = (write_image(tmp_path / "ok.png", photo)).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="cut.png"):
        read_image(tmp_path / "cut.png")


def test_pixel_limit_and_override(tmp_path, photo, monkeypatch):
    path = write_image(tmp_path / "p.png", photo)
    with pytest.raises(ImageError, match="--max-pixels"):
        read_image(path, max_pixels=1000)
    assert read_image(path, max_pixels=None).shape == photo.shape
    # Pillow's global bomb guard must not veto an image our limit allows, and is restored afterwards.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert read_image(path, max_pixels=None).shape == photo.shape
    assert read_image(path).shape == photo.shape
    assert Image.MAX_IMAGE_PIXELS == 1000
    with pytest.raises(ImageError, match="--max-pixels"):  # Pillow's refusal, explained our way
        read_image(path, max_pixels=1500)


def test_write_refuses_protected_input_and_leaves_no_temp_file(tmp_path, photo):
    source = write_image(tmp_path / "in.png", photo)
    before = source.read_bytes()
    with pytest.raises(ImageError, match="overwrite an input"):
        write_image(tmp_path / "." / "in.png", photo[::-1], protect=[source])
    assert source.read_bytes() == before
    with pytest.raises(ImageError, match="cannot write"):
        write_image(tmp_path / "out.xyz", photo)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_output_path_names(tmp_path):
    src = tmp_path / "a.jpg"
    assert output_path(src, tmp_path / "out") == tmp_path / "out" / "a.jpg"
    assert output_path(src, tmp_path, ext="png", suffix="_gpen") == tmp_path / "a_gpen.png"
    assert output_path(tmp_path / "anim.gif", tmp_path) == tmp_path / "anim.png"


def test_lossless_webp_stays_lossless(tmp_path, photo):
    Image.fromarray(photo).save(tmp_path / "in.webp", lossless=True)
    file = read_image_file(tmp_path / "in.webp")
    assert file.meta.lossless
    back = read_image(write_image(tmp_path / "out.webp", file.frames, meta=file.meta))
    np.testing.assert_array_equal(back, photo)
    Image.fromarray(photo).save(tmp_path / "lossy.webp", quality=80)
    assert not read_image_file(tmp_path / "lossy.webp").meta.lossless


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp", ".tif"])
def test_icc_profile_and_exif_are_kept_with_orientation_reset(tmp_path, photo, ext):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()  # not sRGB: must not be dropped
    im = Image.fromarray(photo)
    exif = im.getexif()
    exif[0x0112], exif[0x010F] = 6, "Canon"
    exif.get_ifd(0x8769)[0x9003] = "2020:01:02 03:04:05"
    im.save(tmp_path / f"in{ext}", exif=exif, icc_profile=icc, **({"quality": 95} if ext != ".png" else {}))
    file = read_image_file(tmp_path / f"in{ext}")
    assert file.frames[0].shape == (160, 120, 3)  # turned upright
    out = write_image(tmp_path / f"out{ext}", file.frames, meta=file.meta)
    assert np.abs(read_image(out).astype(int) - np.rot90(photo, -1)).mean() < 3
    with Image.open(out) as back:
        assert back.info.get("icc_profile") == icc
        tags = back.getexif()
        assert tags[0x0112] == 1 and tags[0x010F] == "Canon"
        if ext != ".tif":  # Pillow writes TIFF's main tags only, not the Exif sub-IFD
            assert tags.get_ifd(0x8769)[0x9003] == "2020:01:02 03:04:05"
    assert written_by_gpen_core(out) and not written_by_gpen_core(tmp_path / f"in{ext}")


def test_16bit_colour_png_keeps_icc_exif_and_marker(tmp_path):
    image = np.random.default_rng(1).integers(0, 65536, size=(12, 10, 3), dtype=np.uint16)
    meta = ImageMeta(icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
                     exif=Image.Exif().tobytes())
    exif = Image.Exif()
    exif[0x010F] = "Nikon"
    meta.exif = exif.tobytes()
    path = write_image(tmp_path / "deep.png", image, meta=meta)
    np.testing.assert_array_equal(read_image(path), image)
    with Image.open(path) as im:
        assert im.info["icc_profile"] == meta.icc_profile and im.getexif()[0x010F] == "Nikon"
    assert written_by_gpen_core(path)


def test_animated_gif_and_multipage_tiff_keep_every_frame(tmp_path, photo):
    frames = [Image.fromarray(np.roll(photo, 20 * i, axis=1)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=[80, 120, 200], loop=0)
    file = read_image_file(tmp_path / "anim.gif")
    assert len(file.frames) == 3 and file.meta.durations == [80, 120, 200] and file.meta.loop == 0
    assert np.abs(file.frames[2].astype(int) - np.asarray(frames[2])).mean() < 12  # GIF palette
    out = write_image(tmp_path / "anim.png", file.frames, meta=file.meta)
    with Image.open(out) as apng:
        assert apng.n_frames == 3
        apng.seek(2)
        assert apng.info["duration"] == 200
        np.testing.assert_array_equal(np.asarray(apng.convert("RGB")), file.frames[2])
    with pytest.raises(ImageError, match="3 frames and .jpg holds one"):
        write_image(tmp_path / "anim.jpg", file.frames, meta=file.meta)
    assert read_image(tmp_path / "anim.gif").shape == photo.shape  # the first frame only
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:2])
    pages = read_image_file(tmp_path / "pages.tif")
    assert len(pages.frames) == 2 and pages.meta.durations is None
    back = read_image_file(write_image(tmp_path / "pages_out.tif", pages.frames, meta=pages.meta))
    for a, b in zip(back.frames, frames[:2]):
        np.testing.assert_array_equal(a, np.asarray(b))
    with pytest.raises(ImageError, match="3 frames is 0 megapixels, above the limit"):
        read_image_file(tmp_path / "anim.gif", max_pixels=2 * photo.shape[0] * photo.shape[1])


def test_interrupted_write_leaves_the_target_and_no_temp_file(tmp_path, photo, monkeypatch):
    target = write_image(tmp_path / "x.png", photo)
    before = target.read_bytes()

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_image(target, photo[::-1])
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


def test_empty_and_folder_inputs(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty.jpg is empty \(0 bytes\)"):
        read_image(tmp_path / "empty.jpg")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageError, match="dir.png is a folder, not a file"):
        read_image(tmp_path / "dir.png")
