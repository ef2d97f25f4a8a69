"""Media decode/encode with the service's limits: images (Pillow), video and audio (PyAV).

Bytes are sniffed, never trusted by name. ``from app.media import decode_image`` keeps working: the image
names live in :mod:`app.media.image` and are re-exported here. Video and audio live in their own modules
(:mod:`app.media.video`, :mod:`app.media.audio`, :mod:`app.media.pipeline`, :mod:`app.media.mux`) so that
importing the image helpers never loads PyAV.
"""

from app.media.image import MEDIA_TYPES, DecodedImage, decode_image, encode_image, sniff_image

__all__ = ["MEDIA_TYPES", "DecodedImage", "decode_image", "encode_image", "sniff_image"]
