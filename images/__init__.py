"""Image backends: the host-file (protocol) layer, the formats, probing by magic.

Each backend answers for its own layer only; a backing file is itself a backend.
`images.open_image` and `images.create_image` are the entry points.
"""

from images.probe import create_image, describe_create, detect_format, open_image

__all__ = ["create_image", "describe_create", "detect_format", "open_image"]
