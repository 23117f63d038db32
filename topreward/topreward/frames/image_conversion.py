"""sensor_msgs Image / CompressedImage -> RGB uint8 arrays, for the node's cameras and for recorded bags.

Duck-typed on the messages' fields (rclpy's and rosbags' messages alike), so it imports no ROS.

Raw images are read as numpy views that honour `step` (drivers pad rows to aligned strides), so a
padded image is never sheared. Compressed images are decoded by OpenCV from their bytes (JPEG or PNG,
whatever `format` says). Every rejection carries a short reason code, counted in the node's diagnostics.

Asked for a size, the conversion resizes before it reorders or drops channels: those commute with a
per-channel resize, so the result is the same array as converting first, and the channel work runs on
the small frame. YUV 4:2:2 is the exception (pixel pairs share their chroma): converted, then resized.
"""
from __future__ import annotations

import cv2
import numpy as np

# Bytes per pixel of each raw encoding; 4:2:2 YUV packs two pixels in four bytes.
RAW_ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "yuv422_yuy2": 2, "yuv422": 2}
_YUV422 = {"yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2, "yuv422": cv2.COLOR_YUV2RGB_UYVY}  # YUYV, UYVY byte order
_TO_RGB = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB,
           "mono8": cv2.COLOR_GRAY2RGB}  # pure channel copies: exact
DEFAULT_MAX_PIXELS = 16_000_000  # a 4K frame is 8.3 MP; anything far larger is a corrupt header


class ImageConversionError(ValueError):
    """The message cannot be turned into an RGB frame; `reason` is a short code, the text says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if height == 0 or width == 0:
        raise ImageConversionError("empty", f"empty image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageConversionError("too_large", f"image {width}x{height} exceeds max_image_pixels ({max_pixels})")


def _raw_pixels(msg, max_pixels: int) -> tuple[str, np.ndarray]:
    """(encoding, (H, W, bytes per pixel) view of msg.data) after every check; no pixel is copied."""
    encoding = msg.encoding.lower()  # some drivers write RGB8
    channels = RAW_ENCODINGS.get(encoding)
    if channels is None:
        raise ImageConversionError("unsupported_encoding", f"unsupported encoding {msg.encoding!r}; supported: "
                                                           f"{', '.join(RAW_ENCODINGS)}")
    height, width, step = msg.height, msg.width, msg.step
    _check_size(width, height, max_pixels)
    if encoding in _YUV422 and width % 2:
        raise ImageConversionError("bad_layout", f"{encoding} needs an even width, got {width}")
    row = width * channels
    if step < row:
        raise ImageConversionError("bad_layout", f"{encoding} image {width}x{height} needs step >= {row}, got {step}")
    # The last row need not carry its padding.
    needed = step * (height - 1) + row
    if len(msg.data) < needed:
        raise ImageConversionError("truncated", f"{encoding} image {width}x{height} with step {step} needs "
                                                f"{needed} bytes, got {len(msg.data)}")
    flat = np.frombuffer(msg.data, np.uint8, count=needed)
    rows = np.lib.stride_tricks.as_strided(flat, shape=(height, row), strides=(step, 1))
    return encoding, rows.reshape(height, width, channels)


def check_rgb(frame: np.ndarray) -> np.ndarray:
    """`frame` if it is an RGB uint8 image of shape (H, W, 3); ValueError naming what it is otherwise."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 frame of shape (H, W, 3), got {frame.dtype} {frame.shape}")
    return frame


def resize_image(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W[, C]) at exactly `size` = (height, width): area average to shrink, bicubic to enlarge.

    Channels are resized independently, so the result does not depend on how many there are.
    """
    height, width = size
    if pixels.shape[:2] == (height, width):
        return np.ascontiguousarray(pixels)
    shrink = pixels.shape[0] > height or pixels.shape[1] > width
    out = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return out.reshape(height, width, *pixels.shape[2:])  # OpenCV drops a single channel's axis


def image_to_rgb(msg, max_pixels: int = DEFAULT_MAX_PIXELS, size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a sensor_msgs/Image, at `size` = (height, width) if given.

    Rows are read `step` bytes apart.
    """
    encoding, pixels = _raw_pixels(msg, max_pixels)
    if encoding in _YUV422:  # chroma is shared by pixel pairs: convert before any resize
        rgb = cv2.cvtColor(np.ascontiguousarray(pixels), _YUV422[encoding])
        return rgb if size is None else resize_image(rgb, size)
    if size is not None:
        pixels = resize_image(pixels, size)
    if encoding == "rgb8":
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(np.ascontiguousarray(pixels), _TO_RGB[encoding])


def _check_compressed(msg, max_pixels: int) -> tuple[np.ndarray, tuple[int, int]]:
    data = np.frombuffer(msg.data, np.uint8)
    if data.size == 0:
        raise ImageConversionError("empty", "empty compressed image")
    # The header is read first, so a corrupt size field is rejected before any pixel memory is allocated.
    if data[:3].tobytes() == b"\xff\xd8\xff":
        size = _jpeg_size(data)
    elif data[:8].tobytes() == b"\x89PNG\r\n\x1a\n":
        size = (int.from_bytes(data[16:20].tobytes(), "big"), int.from_bytes(data[20:24].tobytes(), "big"))
    else:
        raise ImageConversionError("decode_failed", f"cannot decode compressed image (format {msg.format!r}): "
                                                    "the bytes are neither JPEG nor PNG")
    if size is None:  # fail closed: without a frame header the size cannot be checked before decoding
        raise ImageConversionError("decode_failed", f"cannot decode compressed image (format {msg.format!r}): no "
                                                    "JPEG frame header before the image data")
    _check_size(*size, max_pixels)
    return data, size


def check_message(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """The image's (width, height), read without decoding.

    Raises ImageConversionError for what can be found wrong without decoding (cheap: no pixel copied).
    """
    if hasattr(msg, "encoding"):
        _, pixels = _raw_pixels(msg, max_pixels)
        return pixels.shape[1], pixels.shape[0]
    _, size = _check_compressed(msg, max_pixels)
    return size


def to_rgb(msg, max_pixels: int = DEFAULT_MAX_PIXELS, size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a sensor_msgs/Image or CompressedImage, at `size` = (height, width) if given."""
    convert = image_to_rgb if hasattr(msg, "encoding") else compressed_to_rgb
    return convert(msg, max_pixels, size)


def compressed_to_rgb(msg, max_pixels: int = DEFAULT_MAX_PIXELS, size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a JPEG or PNG sensor_msgs/CompressedImage, whatever its `format` says.

    At `size` = (height, width) if given.
    """
    data, _ = _check_compressed(msg, max_pixels)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ImageConversionError("decode_failed", f"cannot decode compressed image (format {msg.format!r})")
    return cv2.cvtColor(bgr if size is None else resize_image(bgr, size), cv2.COLOR_BGR2RGB)


def _jpeg_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame marker, or None if there is none before the scan.

    Markers are found the way libjpeg finds them: any bytes before a 0xFF are skipped (libjpeg warns
    about "extraneous bytes" and goes on) and so are 0xFF fill bytes. Stopping at the first unexpected
    byte would let a header with a fill byte before its frame marker claim any size and be decoded anyway.
    """
    raw = data.tobytes()
    i = 2
    while i + 1 < len(raw):
        if raw[i] != 0xFF:  # not at a marker: libjpeg skips to the next 0xFF
            i += 1
            continue
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA) or i + 9 > len(raw):  # end of image or start of scan: no frame header
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            return int.from_bytes(raw[i + 7:i + 9], "big"), int.from_bytes(raw[i + 5:i + 7], "big")
        i += 2 + int.from_bytes(raw[i + 2:i + 4], "big")
    return None
