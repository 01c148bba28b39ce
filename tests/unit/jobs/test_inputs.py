"""Input image checks (sdfleet.jobs.inputs.check_image): the real format, pixels read from the header before
anything is decoded (decompression bombs), frames, and a full decode that catches truncated or corrupt data."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image

from sdfleet.errors import LimitExceeded, ValidationError
from sdfleet.jobs.inputs import ImageLimits, check_image, decode_image

LIMITS = ImageLimits(max_bytes=8 * 1024 * 1024, max_pixels=4096 * 4096, max_frames=4)


def encoded(fmt: str, size: tuple[int, int] = (32, 24), **save: object) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 40, 90)).save(buf, format=fmt, **save)
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def crafted_png(width: int, height: int, idat: bytes) -> bytes:
    """A greyscale PNG whose header says width × height, with the given (compressed) pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def zero_rows(width: int, height: int) -> bytes:
    """The zlib stream of an all-black greyscale picture: tiny, but width × height bytes once inflated."""
    packer = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    return b"".join(packer.compress(row) for _ in range(height)) + packer.flush()


@pytest.mark.parametrize(
    ("fmt", "ext", "mime"),
    [("PNG", "png", "image/png"), ("JPEG", "jpg", "image/jpeg"), ("WEBP", "webp", "image/webp")],
)
def test_real_images_pass_with_their_format_and_size(fmt: str, ext: str, mime: str) -> None:
    image = check_image(encoded(fmt), "init_images.0", LIMITS)
    assert (image.ext, image.mime, image.width, image.height, image.frames) == (ext, mime, 32, 24, 1)
    assert image.key("t1").startswith("inputs/t1/") and image.key("t1").endswith("." + ext)
    via_b64 = decode_image("data:image/png;base64," + base64.b64encode(encoded(fmt)).decode(), "f", LIMITS)
    assert via_b64.ext == ext


def test_a_crafted_png_that_decodes_passes() -> None:
    image = check_image(crafted_png(64, 8, zero_rows(64, 8)), "f", LIMITS)
    assert (image.width, image.height) == (64, 8)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("magic bytes then garbage", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "must be a PNG, JPEG or WebP"),
        ("PNG header, garbage pixel data", crafted_png(64, 64, b"garbage, not zlib" * 4), "does not decode"),
        ("PNG cut in half", encoded("PNG", (256, 256))[:-200], "does not decode"),
        ("JPEG cut short", encoded("JPEG", (256, 256))[:400], "does not decode"),
        ("WebP magic then garbage", b"RIFF\x20\x00\x00\x00WEBPVP8 " + b"\x01" * 40, "decode|must be"),
        ("JPEG magic then garbage", b"\xff\xd8\xff\xe0" + b"\x13" * 100, "decode|must be"),
        ("a GIF", encoded("GIF"), "must be a PNG, JPEG or WebP"),
        ("a BMP", encoded("BMP"), "must be a PNG, JPEG or WebP"),
        ("text", b"hello world", "must be a PNG, JPEG or WebP"),
    ],
)
def test_broken_or_foreign_images_are_422(name: str, data: bytes, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        check_image(data, "params.init_images.0", LIMITS)
    assert caught.value.field == "params.init_images.0"
    assert not isinstance(caught.value, LimitExceeded)


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    bomb = crafted_png(6000, 6000, zero_rows(6000, 6000))  # 36 Mpx: ~36 MB decoded from ~40 kB
    assert len(bomb) < 100_000
    with pytest.raises(LimitExceeded, match="6000×6000 pixels, the limit is 16777216"):
        check_image(bomb, "mask", LIMITS)


def test_the_pixel_limit_comes_before_any_decoding() -> None:
    """Pixel data that would not even decode: the size in the header refuses it first."""
    with pytest.raises(LimitExceeded, match="9000×9000"):
        check_image(crafted_png(9000, 9000, b"not zlib at all"), "f", LIMITS)
    with pytest.raises(LimitExceeded):  # past Pillow's own bomb guard (2 × MAX_IMAGE_PIXELS)
        check_image(crafted_png(60000, 60000, b"x"), "f", LIMITS)


def test_frames_and_bytes_are_bounded() -> None:
    frames = [Image.new("RGB", (16, 16), (i * 40, 0, 0)) for i in range(5)]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    with pytest.raises(LimitExceeded, match="5 frames, the limit is 4"):
        check_image(buf.getvalue(), "f", LIMITS)
    assert check_image(buf.getvalue(), "f", ImageLimits(LIMITS.max_bytes, LIMITS.max_pixels, 5)).frames == 5
    with pytest.raises(LimitExceeded, match="larger than 20 bytes"):
        check_image(encoded("PNG"), "f", ImageLimits(20, LIMITS.max_pixels, 4))
    with pytest.raises(LimitExceeded):
        decode_image(base64.b64encode(encoded("PNG")).decode(), "f", ImageLimits(20, LIMITS.max_pixels, 4))
    with pytest.raises(ValidationError, match="base64"):
        decode_image("!!!", "f", LIMITS)
