"""sensor_msgs Image / CompressedImage -> RGB uint8 arrays, through the cv_bridge API."""
from __future__ import annotations

import copy

import cv2
import numpy as np

RAW_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422_yuy2", "yuv422")
_YUV422 = {"yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2, "yuv422": cv2.COLOR_YUV2RGB_UYVY}  # YUYV, UYVY byte order


class ImageConversionError(ValueError):
    """The message cannot be turned into an RGB frame; the text says why."""


def _bridge():
    from cv_bridge import CvBridge

    return CvBridge()


def image_to_rgb(msg, bridge=None) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a sensor_msgs/Image."""
    encoding = msg.encoding.lower()
    if encoding not in RAW_ENCODINGS:
        raise ImageConversionError(f"unsupported encoding {msg.encoding!r}; supported: {', '.join(RAW_ENCODINGS)}")
    if msg.height == 0 or msg.width == 0:
        raise ImageConversionError(f"empty image ({msg.width}x{msg.height})")
    channels = {"mono8": 1, "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4}.get(encoding, 2)
    if msg.step < msg.width * channels or len(msg.data) < msg.step * msg.height:
        raise ImageConversionError(
            f"{encoding} image {msg.width}x{msg.height} with step {msg.step} needs {msg.step * msg.height} bytes, "
            f"got {len(msg.data)}")
    if encoding in _YUV422:  # packed 4:2:2; not every cv_bridge release knows both byte orders
        data = np.frombuffer(msg.data, np.uint8, msg.step * msg.height).reshape(msg.height, msg.step)
        packed = data[:, : msg.width * 2].reshape(msg.height, msg.width, 2)
        return cv2.cvtColor(packed, _YUV422[encoding])
    if msg.encoding != encoding:  # cv_bridge knows only the lower-case names
        msg = copy.copy(msg)
        msg.encoding = encoding
    try:
        return np.ascontiguousarray((bridge or _bridge()).imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    except Exception as exc:  # cv_bridge raises KeyError, its own CvBridgeError, or cv2 errors
        raise ImageConversionError(f"cv_bridge cannot convert {encoding}: {type(exc).__name__}: {exc}") from exc


def compressed_to_rgb(msg, bridge=None) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a JPEG or PNG sensor_msgs/CompressedImage, whatever its `format` says."""
    if len(msg.data) == 0:
        raise ImageConversionError("empty compressed image")
    try:
        bgr = (bridge or _bridge()).compressed_imgmsg_to_cv2(msg, desired_encoding="bgr8")
    except Exception as exc:  # cv_bridge raises its own error types, or cv2 errors on garbage
        raise ImageConversionError(f"cannot decode compressed image (format {msg.format!r}): {exc}") from exc
    if bgr is None or bgr.size == 0:
        raise ImageConversionError(f"cannot decode compressed image (format {msg.format!r})")
    if bgr.ndim == 2:
        return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
