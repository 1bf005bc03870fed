"""kinemate.io — images and videos as uint8 ``(H, W, 3)`` RGB frames.

The lowest layer: knows nothing of models. Reading streams frames (bounded memory), writing is
atomic (temporary name, renamed when complete), bad input raises :class:`kinemate.errors.InputError`
with a message that says what to do. See docs/io.md.
"""

from kinemate.io.framing import Framing, fit_image, resize, side_by_side
from kinemate.io.image import (
    IMAGE_SUFFIXES,
    MAX_IMAGE_PIXELS,
    read_image,
    to_rgb_array,
    write_image,
)
from kinemate.io.video import (
    DEFAULT_FOLDER_FPS,
    MAX_VIDEO_PIXELS,
    VIDEO_SUFFIXES,
    Marker,
    VideoInfo,
    VideoReader,
    VideoWriter,
    ffmpeg_exe,
    list_image_folder,
    open_video,
    probe_video,
    read_video,
    write_video,
)

__all__ = [
    "DEFAULT_FOLDER_FPS",
    "Framing",
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_PIXELS",
    "MAX_VIDEO_PIXELS",
    "Marker",
    "VIDEO_SUFFIXES",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "ffmpeg_exe",
    "fit_image",
    "list_image_folder",
    "open_video",
    "probe_video",
    "read_image",
    "read_video",
    "resize",
    "side_by_side",
    "to_rgb_array",
    "write_image",
    "write_video",
]
