"""Image files as users' tools write them, read one way for training and for predict.

Any bit depth maps its full range onto 0..255 (16-bit scaled, never clipped); transparent
pixels are composited onto a background (content drawn in the alpha channel stays visible);
palette, CMYK and other modes become grayscale or RGB. A picture's "channels" are 1 when it
holds no colour (a grayscale mode, or RGB whose three channels are equal), 3 otherwise.
"""

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

BACKGROUNDS = {"black": 0, "white": 255}
# What reading a file that is not a whole, sane image raises (PIL's): a truncated or corrupt
# file, or a decompression bomb (a 30000x30000 PNG of a few KB).
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def why_unreadable(error: Exception) -> str:
    """PIL's reason in one line, without the in-memory file's repr it names the file by."""
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", " ".join(str(error).split()))
    return f"{type(error).__name__}: {text}"


@dataclass(frozen=True)
class Probe:
    """What one file holds, or why it cannot be read."""

    channels: int = 0  # 1 (grayscale) or 3 (colour); 0 when unreadable
    height: int = 0
    width: int = 0
    error: str | None = None
    sha256: str | None = None  # of the file's bytes: the data's fingerprint


def read(path: Path | BinaryIO, channels: int | None, background: str) -> np.ndarray:
    """The file's pixels as uint8 (H, W, C): C = `channels`, or the file's own (None).
    Raises OSError / ValueError (PIL's) for files that do not decode completely."""
    with Image.open(path) as im:
        im.load()  # decode everything now: a truncated file fails here, not in a worker
        im = ImageOps.exif_transpose(im)  # phones store rotation as a tag
        flat = _to_8bit(_flatten_alpha(im, BACKGROUNDS[background]))
    pixels = np.array(flat)  # (a writable copy: torch takes it as it is)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    elif channels is None and _colourless(pixels):  # RGB files of gray content are gray
        pixels = pixels[..., :1]
    want = pixels.shape[2] if channels is None else channels
    if want == 1 and pixels.shape[2] == 3:
        pixels = np.array(flat.convert("L"))[..., None]
    elif want == 3 and pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return pixels


def _colourless(rgb: np.ndarray) -> bool:
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def probe(path: Path, background: str = "white") -> Probe:
    """Decode `path` fully (a truncated or corrupt file is caught) and say what it holds."""
    try:
        raw = path.read_bytes()
        pixels = read(io.BytesIO(raw), None, background)
    except UNREADABLE as e:
        return Probe(error=why_unreadable(e))
    h, w, c = pixels.shape
    return Probe(channels=c, height=h, width=w, sha256=hashlib.sha256(raw).hexdigest())


def _flatten_alpha(im: Image.Image, background: int) -> Image.Image:
    """Transparent pixels composited onto a plain background, in the image's own colours."""
    gray = im.mode in ("LA", "La") or (im.mode == "L" and "transparency" in im.info)
    if im.mode in ("P", "PA", "L", "RGB") and "transparency" in im.info or im.mode == "PA":
        im = im.convert("RGBA")
    elif im.mode == "P":
        im = im.convert("RGB")
    if im.mode not in ("RGBA", "RGBa", "LA", "La"):
        return im
    canvas = Image.new("RGBA", im.size, (background, background, background, 255))
    flat = Image.alpha_composite(canvas, im.convert("RGBA")).convert("RGB")
    return flat.convert("L") if gray else flat


def _to_8bit(im: Image.Image) -> Image.Image:
    """L or RGB at 8 bits: 16-bit (and 32-bit integer) grayscale scaled by its bit depth."""
    if im.mode in ("L", "RGB"):
        return im
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() <= 65535 else float(2**31 - 1)
        return Image.fromarray(np.round(np.clip(a, 0, top) * (255.0 / top)).astype(np.uint8))
    if im.mode == "F":  # float TIFFs: 0..1 is the convention; anything larger is 0..255
        a = np.asarray(im, dtype=np.float64)
        a = a * 255.0 if np.nanmax(a) <= 1.0 else a
        return Image.fromarray(np.round(np.clip(np.nan_to_num(a), 0, 255)).astype(np.uint8))
    if im.mode == "1":
        return im.convert("L")
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
