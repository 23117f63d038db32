"""sensor_msgs Image / CompressedImage -> RGB uint8 arrays, through the cv_bridge API."""
from __future__ import annotations

import cv2
import numpy as np

RAW_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422_yuy2", "yuv422")


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
    if encoding == "yuv422_yuy2":  # YUYV byte order; not every cv_bridge release knows it
        data = np.frombuffer(msg.data, np.uint8, msg.step * msg.height).reshape(msg.height, msg.step)
        yuyv = data[:, : msg.width * 2].reshape(msg.height, msg.width, 2)
        return cv2.cvtColor(yuyv, cv2.COLOR_YUV2RGB_YUY2)
    return np.ascontiguousarray((bridge or _bridge()).imgmsg_to_cv2(msg, desired_encoding="rgb8"))


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
