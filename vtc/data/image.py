"""Reading images: RGB PIL images with one size limit for every front end (compare, eval, the demo)."""

from __future__ import annotations

from typing import Any

MAX_IMAGE_PIXELS = 20_000_000


def load_image(path: str, name: str | None = None) -> Any:
    """An RGB PIL image, with clear errors for missing, unreadable or oversized files.

    ``name``: how errors call the file (e.g. the name a user uploaded, not the server's copy); it replaces
    the path wherever the reader's own message repeats it.
    """
    from PIL import Image

    name = name or path
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise ValueError(f"image: {name} has {img.width}x{img.height} pixels, over the 20 MP limit")
            return img.convert("RGB")
    except FileNotFoundError:
        raise ValueError(f"image: no such file {name}") from None
    except OSError as err:
        raise ValueError(f"image: cannot read {name} ({str(err).replace(str(path), str(name))})") from None
