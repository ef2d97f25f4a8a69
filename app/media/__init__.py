"""Media decode/encode with the service's limits: images (Pillow), video and audio (PyAV).

Bytes are sniffed, never trusted by name. ``from app.media import decode_image`` keeps working: the image
names live in :mod:`app.media.image` and are re-exported here. Video and audio live in their own modules, so
importing the image helpers never loads PyAV: :mod:`~app.media.sniff` (containers by their first bytes),
:mod:`~app.media.video` (probe, limits, upright frame reader), :mod:`~app.media.writer` (H.264 MP4 writer),
:mod:`~app.media.mux` (source audio copied or re-encoded into the output), :mod:`~app.media.audio` (audio to
float32 mono at any rate), :mod:`~app.media.pipeline` (decode → process → encode through bounded queues).
"""

from app.media.image import MEDIA_TYPES, DecodedImage, decode_image, encode_image, sniff_image

__all__ = ["MEDIA_TYPES", "DecodedImage", "decode_image", "encode_image", "sniff_image"]
