"""Media in and out: image and video decoding with validation, H.264 MP4 encoding, JPEG thumbnails."""

from wanserve.media.images import MAX_IMAGE_PIXELS, load_image, write_thumbnail
from wanserve.media.inputs import (
    IMAGE_MIME_TYPES,
    VIDEO_MIME_TYPES,
    decode_data_url,
    read_source_bytes,
    sniff_media_type,
)
from wanserve.media.video import VideoInfo, encode_mp4, load_video, probe_video

__all__ = [
    "IMAGE_MIME_TYPES",
    "MAX_IMAGE_PIXELS",
    "VIDEO_MIME_TYPES",
    "VideoInfo",
    "decode_data_url",
    "encode_mp4",
    "load_image",
    "load_video",
    "probe_video",
    "read_source_bytes",
    "sniff_media_type",
    "write_thumbnail",
]
