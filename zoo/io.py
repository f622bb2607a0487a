"""Image files <-> uint8 tensors (Pillow, which torchvision already depends on), and atomic file output
(:func:`atomic_output`: every file zoo writes is either complete or untouched)."""
from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import torch

from zoo.errors import InputError

_FLOAT_TOLERANCE = 1e-3  # F images: values this far outside [0, 1] are rounding, not a different scale


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as a 3 x H x W uint8 RGB tensor.

    Every mode Pillow reads becomes RGB: 1, L and I;16 (grey) are replicated to three channels; P uses its
    palette colours; LA, PA, RGBA keep their colours and drop the alpha channel (no compositing, as
    torchvision's ``ImageReadMode.RGB``); CMYK, YCbCr, LAB, HSV go through Pillow's conversion. 16-bit grey
    (I;16, I;16B, ..., and I, which Pillow uses for 16-bit PGM and 32-bit TIFF) maps 0..65535 to 0..255
    (``round(v / 257)``); float (F) images are read as intensities in [0, 1] (``round(v * 255)``).
    Multi-frame files give their first frame; EXIF orientation is not applied.

    Raises :class:`InputError` naming the file when it is missing, a directory, empty, not readable, not an
    image, truncated or corrupt, or an I / F image has values outside 0..65535 / [0, 1].
    """
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        raise InputError(f"cannot read the image {path}: it is a directory; give an image file")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"the image {path} does not exist; check the path") from None
    except OSError as exc:
        raise InputError(f"cannot read the image {path} ({exc.strerror or exc})") from None
    if size == 0:
        raise InputError(f"cannot read the image {path}: the file is empty (0 bytes)")
    try:
        im = Image.open(path)
    except Exception as exc:
        raise _unreadable(path, exc) from None
    with im:
        try:
            im.load()
        except Exception as exc:
            raise _unreadable(path, exc) from None
        if im.width == 0 or im.height == 0:
            raise InputError(f"cannot read the image {path}: it has no pixels ({im.width} x {im.height})")
        return _to_rgb(im, path)


def _unreadable(path: Path, exc: Exception) -> InputError:
    """The InputError for an exception Pillow raised opening or decoding ``path``."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(exc, PermissionError):
        return InputError(f"cannot read the image {path}: permission denied")
    if isinstance(exc, UnidentifiedImageError):
        return InputError(f"cannot read the image {path}: not an image file Pillow recognises, or its header is "
                          "truncated (give a PNG, JPEG, BMP, TIFF, WebP, ... file)")
    if isinstance(exc, Image.DecompressionBombError):
        return InputError(f"cannot read the image {path}: {exc}")
    # Pillow's decoders raise OSError, SyntaxError, ValueError, EOFError, struct.error, ... for broken files
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return InputError(f"cannot read the image {path}: the file is truncated or corrupt ({reason})")


def _to_rgb(im, path: Path) -> torch.Tensor:
    """A loaded Pillow image -> 3 x H x W uint8 RGB (see :func:`read_image`)."""
    h, w, mode = im.height, im.width, im.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        if mode == "F":
            values = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.float32).double()
            low, high = 0, 1
            ok = bool(((values >= -_FLOAT_TOLERANCE) & (values <= 1 + _FLOAT_TOLERANCE)).all())
        else:
            im = im if mode == "I" else _convert(im, "I", path)
            values = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.int32).long()
            low, high = 0, 65535
            ok = bool(((values >= low) & (values <= high)).all())
        if not ok:
            found = (f"values in [{values.min().item():.6g}, {values.max().item():.6g}]"
                     if values.isfinite().all() else "NaN or infinite values")
            raise InputError(f"cannot read the image {path}: a mode {mode} image must hold intensities in "
                             f"[{low}, {high}], found {found}; rescale it and save it as an 8-bit PNG")
        if mode == "F":
            grey = values.clamp(0, 1).mul(255).round().to(torch.uint8)
        else:
            grey = torch.div(values + 128, 257, rounding_mode="floor").to(torch.uint8)  # round(v / 257), no ties
        return grey.view(1, h, w).expand(3, h, w).contiguous()
    if mode in ("La", "RGBa"):  # premultiplied alpha: Pillow converts these to RGB only via LA / RGBA
        im = _convert(im, mode.upper(), path)
    rgb = _convert(im, "RGB", path)
    data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return data.view(h, w, 3).permute(2, 0, 1).contiguous()


def _convert(im, mode: str, path: Path):
    try:
        return im.convert(mode)
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read the image {path}: Pillow cannot convert mode {im.mode} to {mode} ({exc}); "
                         "save it as an RGB PNG") from None


def check_writable(path: str | Path) -> None:
    """Raise :class:`InputError` unless ``path`` can be written: its directory exists and is writable, and
    ``path`` is not a directory or a read-only file. Creates nothing (call it before running a model)."""
    path = Path(path)
    parent = path.parent
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a directory; give a file name, e.g. {path / 'out.png'}")
    if parent.exists() and not parent.is_dir():
        raise InputError(f"cannot write {path}: {parent} is a file, not a directory; choose another path")
    if not parent.is_dir():
        raise InputError(f"cannot write {path}: directory {parent} does not exist; create it (mkdir -p {parent}) "
                         "or choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: directory {parent} is not writable; choose another path")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"cannot write {path}: the file exists and is not writable; choose another path")


@contextlib.contextmanager
def atomic_output(path: str | Path, *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path`` (``.NAME.PID.RANDOM.tmp``, plus ``path``'s suffix with
    ``keep_suffix`` for writers that insist on one); when the block ends without an exception, the file
    written there is flushed to disk and renamed onto ``path`` (``os.replace``), else removed. ``path`` is
    therefore either untouched or complete, never half-written. The directory must exist."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix if keep_suffix else ''}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, as open() would
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through :func:`atomic_output`."""
    with atomic_output(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8", newline="")
        else:
            tmp.write_bytes(data)


def write_png(image: torch.Tensor, path: str | Path) -> None:
    """Write a 3 x H x W (RGB), 1 x H x W or H x W (grey) uint8 tensor as PNG.

    The PNG is written to a temporary file next to ``path`` and renamed into place, so ``path`` is either
    untouched or complete. Raises :class:`InputError` for a wrong shape or dtype, or when ``path`` cannot be
    written (see :func:`check_writable`); the directory is not created.
    """
    from PIL import Image

    if not isinstance(image, torch.Tensor):
        raise InputError(f"write_png needs a uint8 tensor, got {type(image).__name__}")
    if image.dim() == 3 and image.shape[0] == 1:
        image = image[0]
    if image.dim() not in (2, 3) or (image.dim() == 3 and image.shape[0] != 3) or image.numel() == 0:
        raise InputError(f"write_png needs a non-empty 3 x H x W, 1 x H x W or H x W image, got shape "
                         f"{tuple(image.shape)}")
    if image.dtype != torch.uint8:
        raise InputError(f"write_png needs a uint8 image, got {image.dtype}; convert float images in [0, 1] with "
                         "(x * 255).round().clamp(0, 255).to(torch.uint8)")
    path = Path(path)
    check_writable(path)
    image = image.detach().cpu()
    array = image.permute(1, 2, 0).contiguous() if image.dim() == 3 else image.contiguous()
    picture = Image.frombytes("RGB" if image.dim() == 3 else "L", (array.shape[1], array.shape[0]),
                              array.numpy().tobytes())
    try:
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            picture.save(f, format="PNG")
    except OSError as exc:
        raise InputError(f"cannot write {path} ({exc.strerror or exc}); choose another path") from None
