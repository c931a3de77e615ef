"""Images: read any Pillow-readable file into uint8 (H, W, 3) or (H, W); write by the suffix."""
from __future__ import annotations

import os

import numpy as np

from ..errors import InvalidInputError
from .atomic import atomic_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".avif")
MAX_PIXELS = 1 << 28  # 268 megapixels: refuse decompression bombs before allocating


def _grey_to_uint8(im) -> np.ndarray:
    """A high-depth grey image (16-bit or 32-bit integers, floats) scaled to uint8.

    Pillow's own ``convert("L")`` clips these at 255 (a 16-bit photo comes out white), so the scale
    is explicit: integers by the depth their values need (16 bits unless a value exceeds 65535),
    floats as 0..1 when every value lies there and as 0..255 otherwise (both clipped).
    """
    a = np.asarray(im)
    if a.dtype.kind == "f":
        a = np.nan_to_num(a.astype(np.float64))
        top = 1.0 if a.size and a.min() >= 0 and a.max() <= 1 else 255.0
        return np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
    a = a.astype(np.int64)
    depth = 16 if not a.size or a.max() <= 0xFFFF else 32
    return (np.clip(a, 0, None) >> (depth - 8)).astype(np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """uint8 (H, W, 3) for colour images (alpha dropped onto white), (H, W) for grey ones.

    16-bit and other high-depth grey images are scaled to 8 bits (see ``_grey_to_uint8``).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)  # the picture as viewers show it (EXIF orientation)
            if im.mode in ("L", "1"):
                return np.asarray(im.convert("L"))
            if im.mode.startswith("I") or im.mode == "F":
                return _grey_to_uint8(im)
            grey = im.mode in ("LA", "PA") and (im.mode == "LA" or _grey_palette(im))
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im.convert("RGBA"))
            return np.asarray(im.convert("L" if grey else "RGB"))
    except FileNotFoundError:
        raise InvalidInputError(f"{path} does not exist") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise InvalidInputError(f"{path}: not a readable image ({str(exc).splitlines()[0]})") from None


def _grey_palette(im) -> bool:
    """Whether a palette image's colours are all greys."""
    pal = np.asarray(im.getpalette() or [], np.int64).reshape(-1, 3)
    return bool(len(pal)) and bool((pal == pal[:, :1]).all())


FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
           ".tiff": "TIFF", ".ppm": "PPM", ".pgm": "PPM", ".avif": "AVIF"}


def image_suffix(path: str | os.PathLike) -> str:
    """The output's suffix (lower case) if an image can be written under it, else an error."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix != ".npy" and suffix not in FORMATS:
        raise InvalidInputError(f"{path}: images are written as {', '.join(FORMATS)} or .npy; "
                                "name the output with one of them")
    return suffix


def write_image(a: np.ndarray, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write uint8 (H, W, 3), (H, W, 1) or (H, W) in the format the suffix names (.npy: the array
    itself); an unknown suffix is refused."""
    from PIL import Image

    suffix = image_suffix(path)
    if suffix == ".npy":
        from .array import write_npy

        write_npy(np.asarray(a), path, overwrite)
        return
    fmt = FORMATS[suffix]
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    im = Image.fromarray(np.ascontiguousarray(a))
    with atomic_file(path, overwrite) as f:
        im.save(f, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP", "AVIF") else {}))
