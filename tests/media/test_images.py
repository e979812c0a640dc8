"""Loading input images: every accepted format, every source kind, and the inputs that must be refused."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from wanserve.errors import InvalidRequestError, PayloadTooLargeError
from wanserve.media import load_image

from .samples import image_bytes


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF"])
def test_load_image_reads_formats(fmt):
    image = load_image(image_bytes(fmt), "image")

    assert image.mode == "RGB"
    assert image.size == (40, 30)
    r, g, b = image.getpixel((20, 15))
    assert r > 150 and g < 90 and b < 110  # still the red it was saved with (JPEG/GIF shift it a little)


def test_load_image_from_path_and_data_url(tmp_path):
    data = image_bytes("PNG")
    path = tmp_path / "first.bin"  # the name says nothing; the bytes say PNG
    path.write_bytes(data)
    url = "data:image/png;base64," + base64.b64encode(data).decode()

    from_path = load_image(str(path), "image")
    from_url = load_image(url, "image")

    assert np.array_equal(np.asarray(from_path), np.asarray(from_url))
    assert from_path.getpixel((0, 0)) == (200, 30, 60)


def test_load_image_rgba_becomes_rgb():
    buf = io.BytesIO()
    Image.new("RGBA", (8, 6), (10, 20, 30, 128)).save(buf, format="PNG")

    image = load_image(buf.getvalue(), "last_image")

    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (10, 20, 30)


def test_load_image_applies_exif_orientation():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    buf = io.BytesIO()
    Image.new("RGB", (40, 20), (0, 0, 255)).save(buf, format="JPEG", exif=exif)

    assert load_image(buf.getvalue(), "image").size == (20, 40)


def test_load_image_text_file_names_field(tmp_path):
    path = tmp_path / "image.png"
    path.write_text("hello, I am a text file\n")

    with pytest.raises(InvalidRequestError) as err:
        load_image(str(path), "image")

    assert err.value.field == "image"
    assert str(err.value) == "`image` must be a PNG, JPEG, WebP, BMP or GIF image, got text, not an image or video"


def test_load_image_truncated_png_names_field():
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noisy.save(buf, format="PNG")
    data = buf.getvalue()

    with pytest.raises(InvalidRequestError) as err:
        load_image(data[: len(data) // 2], "reference_images[1]")

    assert err.value.field == "reference_images[1]"
    assert "`reference_images[1]` is a corrupt or truncated image/png image" in str(err.value)


def test_load_image_bad_data_url_names_field():
    with pytest.raises(InvalidRequestError) as err:
        load_image("data:image/png;base64,@@not base64@@", "image")

    assert err.value.field == "image"
    assert "invalid base64" in str(err.value)


def test_load_image_missing_path_names_field(tmp_path):
    missing = str(tmp_path / "nowhere.png")

    with pytest.raises(InvalidRequestError) as err:
        load_image(missing, "last_image")

    assert err.value.field == "last_image"
    assert str(err.value) == f"`last_image` file {missing!r} does not exist"


def test_load_image_directory_rejected(tmp_path):
    with pytest.raises(InvalidRequestError, match="is not a regular file"):
        load_image(str(tmp_path), "image")


def test_load_image_http_url_rejected():
    with pytest.raises(InvalidRequestError, match=r"https:// URLs are fetched by the service"):
        load_image("https://example.com/cat.png", "image")


def test_load_image_over_max_pixels_rejected():
    with pytest.raises(InvalidRequestError) as err:
        load_image(image_bytes("PNG", size=(40, 30)), "image", max_pixels=1000)

    assert str(err.value) == "`image` is 40x30 = 1200 pixels, more than the limit of 1000"


def test_load_image_over_max_bytes_is_payload_too_large():
    data = image_bytes("BMP")

    with pytest.raises(PayloadTooLargeError) as err:
        load_image(data, "image", max_bytes=100)

    assert err.value.field == "image"
    assert f"is {len(data)} bytes, more than the limit of 100 bytes" in str(err.value)


def test_load_image_empty_bytes_rejected():
    with pytest.raises(InvalidRequestError, match="`image` is empty"):
        load_image(b"", "image")


def test_load_image_non_media_type_rejected():
    with pytest.raises(InvalidRequestError, match="must be bytes, a local path or a `data:` URL, got int"):
        load_image(42, "image")  # type: ignore[arg-type]
