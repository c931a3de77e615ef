"""Images: read any Pillow-readable file into uint8 (H, W, 3) or (H, W); write by the suffix."""
from __future__ import annotations

import os

import numpy as np

from ..errors import InvalidInputError
from .atomic import atomic_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".avif")
MAX_PIXELS = 1 << 28  # 268 megapixels: refuse decompression bombs before allocating


def read_image(path: str | os.PathLike) -> np.ndarray:
    """uint8 (H, W, 3) for colour images (alpha dropped onto white), (H, W) for grey ones."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("L", "I;16", "I", "1"):
                return np.asarray(im.convert("L"))
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im.convert("RGBA"))
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise InvalidInputError(f"{path} does not exist") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise InvalidInputError(f"{path}: not a readable image ({str(exc).splitlines()[0]})") from None


def write_image(a: np.ndarray, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write uint8 (H, W, 3) or (H, W) in the format the suffix names (PNG for unknown suffixes)."""
    from PIL import Image

    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
           ".tiff": "TIFF", ".ppm": "PPM", ".pgm": "PPM", ".avif": "AVIF"}.get(
        os.path.splitext(os.fspath(path))[1].lower(), "PNG")
    im = Image.fromarray(np.ascontiguousarray(a))
    with atomic_file(path, overwrite) as f:
        im.save(f, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP", "AVIF") else {}))
