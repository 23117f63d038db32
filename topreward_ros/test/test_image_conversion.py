"""sensor_msgs images to RGB: every supported encoding, compressed formats, and clear errors."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from topreward.frames.image_conversion import (
    ImageConversionError,
    compressed_to_rgb,
    image_to_rgb,
    resize_image,
    to_rgb,
)
from topreward.frames.tiling import column_sizes

RGB = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)


def image(array: np.ndarray, encoding: str, pad: int = 0) -> Image:
    h, w = array.shape[:2]
    row = array.reshape(h, -1)
    row = np.concatenate([row, np.zeros((h, pad), np.uint8)], axis=1)  # step larger than the row
    return Image(height=h, width=w, encoding=encoding, step=row.shape[1], data=row.tobytes())


@pytest.mark.parametrize("encoding,array", [
    ("rgb8", RGB), ("bgr8", RGB[..., ::-1]),
    ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 255, np.uint8)])),
    ("bgra8", np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 7, np.uint8)])),
])
def test_colour_encodings_give_the_same_rgb(encoding, array):
    np.testing.assert_array_equal(image_to_rgb(image(np.ascontiguousarray(array), encoding)), RGB)


def test_mono8_becomes_grey_rgb():
    grey = RGB[..., 0]
    out = image_to_rgb(image(np.ascontiguousarray(grey), "mono8"))
    assert out.shape == (6, 8, 3) and (out == grey[..., None]).all()


def test_yuv422_yuy2_with_row_padding():
    # Pixel pairs share their chroma in YUYV: a picture whose pairs have one colour each survives it.
    smooth = np.repeat(RGB[:, ::2], 2, axis=1)
    yuv = cv2.cvtColor(smooth, cv2.COLOR_RGB2YUV)
    packed = np.zeros((6, 8, 2), np.uint8)
    packed[..., 0] = yuv[..., 0]
    packed[:, 0::2, 1] = yuv[:, 0::2, 1]  # U on even pixels
    packed[:, 1::2, 1] = yuv[:, 0::2, 2]  # V on odd pixels
    out = image_to_rgb(image(packed, "yuv422_yuy2", pad=4))
    np.testing.assert_array_equal(out, cv2.cvtColor(packed, cv2.COLOR_YUV2RGB_YUY2))
    assert np.abs(out.astype(int) - smooth.astype(int)).mean() < 20, "colours far from the original"


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_compressed(ext):
    ok, data = cv2.imencode(ext, cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    out = compressed_to_rgb(CompressedImage(format="rgb8; jpeg compressed bgr8", data=data.tobytes()))
    assert out.shape == RGB.shape
    if ext == ".png":  # lossless; also: the format string (which says jpeg) does not matter
        np.testing.assert_array_equal(out, RGB)


def test_errors_name_the_problem():
    with pytest.raises(ImageConversionError, match="unsupported encoding '32FC1'"):
        image_to_rgb(Image(height=2, width=2, encoding="32FC1", step=8, data=bytes(16)))
    with pytest.raises(ImageConversionError, match="needs 144 bytes, got 100"):
        image_to_rgb(Image(height=6, width=8, encoding="rgb8", step=24, data=bytes(100)))
    with pytest.raises(ImageConversionError, match="empty image"):
        image_to_rgb(Image(height=0, width=8, encoding="rgb8", step=24))
    with pytest.raises(ImageConversionError, match="cannot decode"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"not an image"))
    with pytest.raises(ImageConversionError, match="empty compressed"):
        compressed_to_rgb(CompressedImage(format="jpeg"))


def test_uyvy_and_upper_case_encodings():
    packed = np.random.default_rng(1).integers(0, 256, (6, 8, 2), dtype=np.uint8)
    np.testing.assert_array_equal(image_to_rgb(image(packed, "yuv422")), cv2.cvtColor(packed, cv2.COLOR_YUV2RGB_UYVY))
    np.testing.assert_array_equal(image_to_rgb(image(np.ascontiguousarray(RGB[..., ::-1]), "BGR8")), RGB)


PADDED = [("rgb8", RGB), ("bgr8", RGB[..., ::-1]),
          ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 255, np.uint8)])),
          ("bgra8", np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 9, np.uint8)])),
          ("mono8", np.repeat(RGB[..., :1], 3, axis=2))]


@pytest.mark.parametrize("encoding,array", PADDED)
@pytest.mark.parametrize("pad", [1, 8, 24])
def test_padded_rows_are_not_sheared(encoding, array, pad):
    """A step larger than width * channels: each row starts `step` bytes after the last, padding skipped."""
    source = array[..., :1] if encoding == "mono8" else np.ascontiguousarray(array)
    msg = image(np.ascontiguousarray(source), encoding, pad=pad)
    msg.data = bytes(msg.data)[:-pad]  # the last row need not carry its padding
    expected = RGB if encoding != "mono8" else np.repeat(RGB[..., :1], 3, axis=2)
    np.testing.assert_array_equal(image_to_rgb(msg), expected)


def test_ten_pixel_rgb8_with_step_32():
    wide = np.arange(2 * 10 * 3, dtype=np.uint8).reshape(2, 10, 3)
    data = np.zeros((2, 32), np.uint8)
    data[:, :30] = wide.reshape(2, 30)
    data[:, 30:] = 255  # padding bytes that must never show up in the picture
    out = image_to_rgb(Image(height=2, width=10, encoding="rgb8", step=32, data=data.tobytes()))
    np.testing.assert_array_equal(out, wide)


@pytest.mark.parametrize("encoding", ["yuv422_yuy2", "yuv422"])
def test_padded_yuv_rows(encoding):
    packed = np.random.default_rng(2).integers(0, 256, (6, 8, 2), dtype=np.uint8)
    code = cv2.COLOR_YUV2RGB_YUY2 if encoding == "yuv422_yuy2" else cv2.COLOR_YUV2RGB_UYVY
    np.testing.assert_array_equal(image_to_rgb(image(packed, encoding, pad=16)), cv2.cvtColor(packed, code))


def test_reason_codes_and_size_bound():
    cases = [
        (Image(height=2, width=2, encoding="32FC1", step=8, data=bytes(16)), "unsupported_encoding"),
        (Image(height=2, width=4, encoding="rgb8", step=8, data=bytes(64)), "bad_layout"),
        (Image(height=2, width=3, encoding="yuv422", step=6, data=bytes(12)), "bad_layout"),
        (Image(height=6, width=8, encoding="rgb8", step=24, data=bytes(10)), "truncated"),
        (Image(height=0, width=0, encoding="rgb8", step=0), "empty"),
        (Image(height=5000, width=5000, encoding="mono8", step=5000), "too_large"),
    ]
    for msg, reason in cases:
        with pytest.raises(ImageConversionError) as err:
            image_to_rgb(msg)
        assert err.value.reason == reason, (msg.encoding, str(err.value))
    with pytest.raises(ImageConversionError) as err:
        image_to_rgb(image(RGB, "rgb8"), max_pixels=47)
    assert err.value.reason == "too_large" and "max_image_pixels (47)" in str(err.value)


def test_compressed_size_is_checked_before_decoding():
    big = np.zeros((300, 400, 3), np.uint8)
    for ext in (".jpg", ".png"):
        data = cv2.imencode(ext, big)[1].tobytes()
        with pytest.raises(ImageConversionError) as err:
            compressed_to_rgb(CompressedImage(format="jpeg", data=data), max_pixels=400 * 299)
        assert err.value.reason == "too_large" and "400x300" in str(err.value)
        assert compressed_to_rgb(CompressedImage(format="jpeg", data=data), max_pixels=400 * 300).shape == big.shape
    truncated = cv2.imencode(".jpg", RGB)[1].tobytes()[:40]
    with pytest.raises(ImageConversionError) as err:
        compressed_to_rgb(CompressedImage(format="jpeg", data=truncated))
    assert err.value.reason == "decode_failed"


def _jpeg_with_byte_before_frame_header(size: tuple[int, int] | None, extra: bytes) -> bytes:
    """A JPEG of RGB with `extra` inserted before its start-of-frame marker, its size optionally rewritten."""
    data = bytearray(cv2.imencode(".jpg", RGB)[1].tobytes())
    sof = data.find(b"\xff\xc0")
    if size is not None:
        data[sof + 5:sof + 9] = size[1].to_bytes(2, "big") + size[0].to_bytes(2, "big")
    return bytes(data[:sof]) + extra + bytes(data[sof:])


@pytest.mark.parametrize("extra", [b"\xff", b"\xff\xff\xff", b"\x00", b"junk"])
def test_jpeg_size_found_past_fill_and_stray_bytes(extra):
    # libjpeg skips 0xFF fill bytes (legal) and stray bytes (with a warning) before a marker; the size
    # check must find the frame header the decoder will use, or a forged size is decoded unchecked.
    forged = _jpeg_with_byte_before_frame_header((400, 400), extra)
    with pytest.raises(ImageConversionError) as err:
        compressed_to_rgb(CompressedImage(format="jpeg", data=forged), max_pixels=100_000)
    assert err.value.reason == "too_large" and "400x400" in str(err.value)
    honest = _jpeg_with_byte_before_frame_header(None, extra)
    assert compressed_to_rgb(CompressedImage(format="jpeg", data=honest)).shape == RGB.shape


def test_jpeg_without_frame_header_is_not_decoded():
    data = cv2.imencode(".jpg", RGB)[1].tobytes()
    sof = data.find(b"\xff\xc0")
    length = int.from_bytes(data[sof + 2:sof + 4], "big")
    headless = data[:sof] + data[sof + 2 + length:]  # the frame header cut out
    with pytest.raises(ImageConversionError) as err:
        compressed_to_rgb(CompressedImage(format="jpeg", data=headless))
    assert err.value.reason == "decode_failed"


def _sized_cases() -> list[tuple[str, object]]:
    """Every encoding, rows padded, from a 37x50 picture with detail at every pixel."""
    rgb = np.random.default_rng(3).integers(0, 256, (37, 50, 3), dtype=np.uint8)
    alpha = np.full(rgb.shape[:2], 99, np.uint8)
    arrays = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "rgba8": np.dstack([rgb, alpha]),
              "bgra8": np.dstack([rgb[..., ::-1], alpha]), "mono8": rgb[..., :1]}
    cases = [(enc, image(np.ascontiguousarray(a), enc, pad=5)) for enc, a in arrays.items()]
    packed = np.random.default_rng(4).integers(0, 256, (37, 50, 2), dtype=np.uint8)
    cases += [(enc, image(packed, enc, pad=6)) for enc in ("yuv422_yuy2", "yuv422")]
    for ext in (".jpg", ".png"):
        data = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
        cases.append((ext, CompressedImage(format=ext[1:], data=data)))
    return cases


@pytest.mark.parametrize("encoding,msg", _sized_cases(), ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("size", [(16, 16), (20, 33), (37, 50), (64, 96), (48, 20), *column_sizes(3, (30, 64))])
def test_converting_at_a_size_equals_converting_then_resizing(encoding, msg, size):
    """Converting at a size gives exactly full-size conversion then resize_image.

    The node converts straight to the frame (or tile column) size; the offline path converts, then resizes.
    """
    out = to_rgb(msg, size=size)
    assert out.shape == (*size, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, resize_image(to_rgb(msg), size))
