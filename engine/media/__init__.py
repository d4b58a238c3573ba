"""Media files below every other layer: which files are photos and videos (`files`), the image
reader (`images`) and the video reader (`video`, imported on demand: it pulls in PyAV/decord).
engine.data, video.io and multimodal all read through here."""

from engine.media.files import (
    IMAGE_EXTS,
    VIDEO_EXTS,
    is_frame_folder,
    is_image_file,
    is_video_file,
    list_frame_files,
    walk,
)
from engine.media.images import check_image, decode_image, load_images, read_rgb, square

__all__ = [
    "IMAGE_EXTS",
    "VIDEO_EXTS",
    "check_image",
    "decode_image",
    "is_frame_folder",
    "is_image_file",
    "is_video_file",
    "list_frame_files",
    "load_images",
    "read_rgb",
    "square",
    "walk",
]
