"""Sniffing media types from bytes and decoding `data:` URLs."""

from __future__ import annotations

import base64

import pytest

from wanserve.errors import InvalidRequestError, PayloadTooLargeError
from wanserve.media import IMAGE_MIME_TYPES, decode_data_url, sniff_media_type

from .samples import image_bytes


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("WEBP", "image/webp"),
        ("BMP", "image/bmp"),
        ("GIF", "image/gif"),
    ],
)
def test_sniff_media_type_images(fmt, mime):
    assert sniff_media_type(image_bytes(fmt)) == mime
    assert mime in IMAGE_MIME_TYPES


@pytest.mark.parametrize("data", [b"", b"plain text\n", b"%PDF-1.7\n", b"PK\x03\x04zipfile"])
def test_sniff_media_type_non_media_is_none(data):
    assert sniff_media_type(data) is None


def test_decode_data_url_base64():
    declared, data = decode_data_url("data:image/png;base64," + base64.b64encode(b"\x89PNG").decode(), "image")

    assert (declared, data) == ("image/png", b"\x89PNG")


def test_decode_data_url_percent_encoded():
    assert decode_data_url("data:,hello%20world", "prompt_file") == ("text/plain", b"hello world")


@pytest.mark.parametrize(
    ("url", "text"),
    [
        ("image/png;base64,AAAA", "is not a data URL"),
        ("data:image/png;base64", "has no `,`"),
        ("data:image/png;base64,!!!!", "invalid base64"),
        ("data:image/png;base64,", "empty payload"),
    ],
)
def test_decode_data_url_malformed_names_field(url, text):
    with pytest.raises(InvalidRequestError) as err:
        decode_data_url(url, "image")

    assert err.value.field == "image"
    assert text in str(err.value)
    assert str(err.value).startswith("`image`")


def test_decode_data_url_too_large_refused_before_decoding():
    url = "data:image/png;base64," + "A" * 4000

    with pytest.raises(PayloadTooLargeError, match="about 3000 bytes, more than the limit of 1000 bytes"):
        decode_data_url(url, "image", max_bytes=1000)
