"""zoo.io: every image file Pillow reads becomes a correct 3 x H x W uint8 RGB tensor, or InputError naming
the file; write_png writes atomically and refuses paths it cannot write."""
from __future__ import annotations

import io
import itertools
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from zoo.errors import InputError
from zoo.io import check_writable, read_image, write_png

SETTINGS = settings(max_examples=400, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MODES = ["1", "L", "LA", "P", "P+transparency", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I;16B", "I", "F"]
FORMATS = ["PNG", "TIFF", "BMP", "JPEG", "GIF", "WEBP", "PPM", "TGA", "PCX", "SGI", "SPIDER"]
_COUNTER = itertools.count()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("io")


def _expected(path: Path) -> torch.Tensor | None:
    """Pillow's own reading of ``path`` as 3 x H x W uint8; for 16-bit and float images (which Pillow's
    convert("RGB") clips to 0..255) round(v / 257) and round(v * 255), computed here with numpy, or None
    when their values are outside 0..65535 / [0, 1]."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("I", "F") or im.mode.startswith("I;16"):
            a = np.asarray(im).astype(np.float64)
            if not (np.isfinite(a).all() and a.min() >= (0 if im.mode != "F" else -1e-3)
                    and a.max() <= (65535 if im.mode != "F" else 1 + 1e-3)):
                return None
            grey = np.rint(a / 257) if im.mode != "F" else np.rint(np.clip(a, 0, 1) * 255)
            rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)
        else:
            rgb = np.asarray(im.convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


def _image(mode: str, w: int, h: int, rng: np.random.Generator, wide: bool) -> Image.Image:
    """A random ``mode`` image; ``wide`` puts I / F values outside 0..65535 / [0, 1]."""
    if mode in ("I;16", "I;16B"):
        a = rng.integers(0, 65536, (h, w), dtype=np.uint16)
        a.flat[0] = 65535
        return Image.frombytes(mode, (w, h), a.astype("<u2" if mode == "I;16" else ">u2").tobytes())
    if mode == "I":
        a = rng.integers(-70000 if wide else 0, 140000 if wide else 65536, (h, w), dtype=np.int32)
        return Image.frombytes("I", (w, h), a.tobytes())
    if mode == "F":
        a = rng.random((h, w), dtype=np.float32) * (255 if wide else 1)
        return Image.frombytes("F", (w, h), a.tobytes())
    base = mode.split("+")[0]
    if base == "1":
        return Image.frombytes("1", (w, h), rng.integers(0, 256, (h, (w + 7) // 8), dtype=np.uint8).tobytes())
    bands = len(Image.new(base, (1, 1)).getbands())
    im = Image.frombytes(base, (w, h), rng.integers(0, 256, (h, w, bands), dtype=np.uint8).tobytes())
    if base in ("P", "PA"):
        im.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
    if mode == "P+transparency":
        alpha = bytes(rng.integers(0, 256, 256, dtype=np.uint8))  # per palette entry (PNG tRNS) or one index
        im.info["transparency"] = int(rng.integers(0, 256)) if rng.random() < 0.5 else alpha
    return im


def _save(im: Image.Image, path: Path | io.BytesIO, fmt: str) -> bool:
    try:
        keep = "transparency" in im.info and fmt in ("PNG", "GIF")
        kwargs = {"transparency": im.info["transparency"]} if keep else {}
        im.save(path, fmt, **kwargs)
        return True
    except (OSError, ValueError, KeyError, TypeError):  # Pillow cannot write this mode in this format
        return False


def _writers(mode: str) -> list[str]:
    """The formats Pillow can write a ``mode`` image in (tried on a 2 x 2 image)."""
    im = _image(mode, 2, 2, np.random.default_rng(0), False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [fmt for fmt in FORMATS if _save(im, io.BytesIO(), fmt)]


MODE_AND_FORMAT = st.sampled_from([(m, f) for m in MODES for f in _writers(m)])


def _damage(data: bytes, how: str, at: float, rng: np.random.Generator) -> bytes:
    if how == "truncate":
        return data[:int(len(data) * at)]
    if how == "flip":
        b = bytearray(data)
        for i in rng.integers(0, len(b), 1 + int(at * 8)):
            b[i] ^= int(rng.integers(1, 256))
        return bytes(b)
    if how == "garbage":
        return data[:int(len(data) * at)] + rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    return data


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about some damaged TIFF tags and reads on
@SETTINGS
@given(mode_and_format=MODE_AND_FORMAT, w=st.integers(1, 12), h=st.integers(1, 12),
       seed=st.integers(0, 2**32 - 1), wide=st.booleans(),
       damage=st.sampled_from(["none", "none", "truncate", "flip", "garbage"]), at=st.floats(0, 1))
def test_every_file_reads_as_pillow_does_or_raises_input_error(folder, mode_and_format, w, h, seed, wide, damage, at):
    mode, fmt = mode_and_format
    rng = np.random.default_rng(seed)
    path = folder / f"{next(_COUNTER)}.img"
    assume(_save(_image(mode, w, h, rng, wide), path, fmt))
    path.write_bytes(_damage(path.read_bytes(), damage, at, rng))
    try:
        expected = _expected(path)
    except Exception:  # Pillow cannot read it either
        expected = None
    try:
        got = read_image(path)
    except InputError as exc:
        assert str(path) in str(exc)
        assert not (damage == "none" and expected is not None), f"{mode} {fmt}: {exc}"
        return
    assert expected is not None
    assert got.dtype == torch.uint8 and got.shape == expected.shape and got.shape[0] == 3 and got.is_contiguous()
    assert torch.equal(got, expected)


@pytest.mark.parametrize("fmt, mode", [("PNG", "I;16"), ("TIFF", "I;16"), ("TIFF", "I;16B"), ("PPM", "I")])
def test_16_bit_grey_scales_to_8_bit(tmp_path, fmt, mode):
    values = np.array([[0, 128, 129, 257, 32896, 65535]], dtype=np.uint16)
    if mode == "I":
        im = Image.frombytes("I", (6, 1), values.astype(np.int32).tobytes())
    else:
        im = Image.frombytes(mode, (6, 1), values.astype("<u2" if mode == "I;16" else ">u2").tobytes())
    im.save(tmp_path / "x", fmt)
    got = read_image(tmp_path / "x")
    assert got.shape == (3, 1, 6)
    assert got[0, 0].tolist() == [0, 0, 1, 1, 128, 255] and torch.equal(got[0], got[2])


def test_float_and_32_bit_images_in_range_or_input_error(tmp_path):
    Image.frombytes("F", (3, 1), np.array([0, 0.5, 1], np.float32).tobytes()).save(tmp_path / "f.tif")
    assert read_image(tmp_path / "f.tif")[:, 0].tolist() == [[0, 128, 255]] * 3
    Image.frombytes("F", (2, 1), np.array([0, 200], np.float32).tobytes()).save(tmp_path / "g.tif")
    with pytest.raises(InputError, match=r"g\.tif.*\[0, 1\], found values in \[0, 200\]"):
        read_image(tmp_path / "g.tif")
    Image.frombytes("F", (2, 1), np.array([0, np.nan], np.float32).tobytes()).save(tmp_path / "n.tif")
    with pytest.raises(InputError, match="NaN"):
        read_image(tmp_path / "n.tif")
    Image.frombytes("I", (2, 1), np.array([0, 70000], np.int32).tobytes()).save(tmp_path / "i.tif")
    with pytest.raises(InputError, match=r"i\.tif.*mode I.*70000"):
        read_image(tmp_path / "i.tif")


def test_palette_transparency_and_alpha_are_dropped_not_composited(tmp_path):
    p = Image.frombytes("P", (2, 1), bytes([0, 1]))
    p.putpalette([10, 20, 30, 200, 100, 50])
    p.save(tmp_path / "p.png", transparency=0)
    assert read_image(tmp_path / "p.png")[:, 0].T.tolist() == [[10, 20, 30], [200, 100, 50]]
    Image.new("RGBA", (1, 1), (5, 6, 7, 0)).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").flatten().tolist() == [5, 6, 7]
    Image.new("LA", (1, 1), (9, 0)).save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png").flatten().tolist() == [9, 9, 9]


def test_cmyk_and_ycbcr_use_pillows_conversion(tmp_path):
    for mode, colour in (("CMYK", (0, 255, 255, 0)), ("YCbCr", (76, 85, 255))):
        Image.new(mode, (2, 2), colour).save(tmp_path / f"{mode}.tif")
        pillow = Image.new(mode, (1, 1), colour).convert("RGB").getpixel((0, 0))
        assert read_image(tmp_path / f"{mode}.tif")[:, 0, 0].tolist() == list(pillow)


def test_unreadable_files_raise_input_error_naming_them(tmp_path):
    good = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(good, "JPEG")
    cases = {
        "missing.png": (None, "does not exist"),
        "empty.png": (b"", r"empty \(0 bytes\)"),
        "notes.png": (b"just some text\n", "not an image"),
        "truncated.jpg": (good.getvalue()[:200], "truncated or corrupt"),
        "header.jpg": (good.getvalue()[:10], "(truncated or corrupt|not an image)"),
    }
    for name, (data, reason) in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match=f"{name}.*{reason}"):
            read_image(tmp_path / name)
    with pytest.raises(InputError, match="is a directory"):
        read_image(tmp_path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_file_without_read_permission(tmp_path):
    path = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(path)
    path.chmod(0)
    with pytest.raises(InputError, match="secret.png.*permission denied"):
        read_image(path)


# ------------------------------------------------------------------------------------ writing
@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.sampled_from([(3,), (1,), ()]), h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 1000))
def test_write_png_round_trips(folder, shape, h, w, seed):
    image = torch.randint(0, 256, (*shape, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    path = folder / f"{next(_COUNTER)}.png"
    write_png(image, path)
    grey = image.reshape(1, h, w).expand(3, h, w) if shape != (3,) else image
    assert torch.equal(read_image(path), grey)


def test_write_png_replaces_atomically_and_honours_umask(tmp_path):
    path = tmp_path / "out.png"
    old = os.umask(0o022)
    try:
        write_png(torch.zeros(3, 2, 2, dtype=torch.uint8), path)
        write_png(torch.full((3, 2, 2), 7, dtype=torch.uint8), path)
    finally:
        os.umask(old)
    assert read_image(path).unique().tolist() == [7] and path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    write_png(torch.zeros(3, 2, 2, dtype=torch.uint8), path)
    before = path.read_bytes()

    def half_written(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", half_written)
    with pytest.raises(InputError, match="out.png.*No space left"):
        write_png(torch.ones(3, 2, 2, dtype=torch.uint8), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_write_png_refuses_bad_images_and_paths(tmp_path):
    image = torch.zeros(3, 2, 2, dtype=torch.uint8)
    (tmp_path / "file").write_bytes(b"x")
    for path, reason in ((tmp_path / "no" / "out.png", r"directory .*no does not exist"),
                         (tmp_path / "file" / "out.png", "is a file, not a directory"),
                         (tmp_path, "is a directory")):
        with pytest.raises(InputError, match=reason):
            write_png(image, path)
        with pytest.raises(InputError, match=reason):
            check_writable(path)
    assert not (tmp_path / "no").exists()
    for bad, reason in ((image.float(), "uint8"), (torch.zeros(4, 2, 2, dtype=torch.uint8), "shape"),
                        (torch.zeros(3, 0, 2, dtype=torch.uint8), "non-empty"), (image.numpy(), "tensor")):
        with pytest.raises(InputError, match=reason):
            write_png(bad, tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()


def test_check_writable_creates_nothing(tmp_path):
    check_writable(tmp_path / "new.png")
    check_writable(str(tmp_path / "new.png"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes whatever the mode")
def test_read_only_directory_and_file(tmp_path):
    (tmp_path / "ro.png").write_bytes(b"")
    (tmp_path / "ro.png").chmod(0o444)
    with pytest.raises(InputError, match="ro.png.*not writable"):
        check_writable(tmp_path / "ro.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(InputError, match="locked is not writable"):
            write_png(torch.zeros(3, 2, 2, dtype=torch.uint8), locked / "out.png")
    finally:
        locked.chmod(0o755)


# --- atomic output --------------------------------------------------------------------------------
def test_atomic_output_is_complete_or_untouched(tmp_path):
    from zoo.io import atomic_output, write_atomic

    target = tmp_path / "out.json"
    write_atomic(target, "old\n")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing-dir" / "x", "x")



def test_zoo_writes_files_only_through_temporary_paths():
    """Audit: every write of a file by zoo/ goes to a temporary path that is then renamed (atomic_output,
    or a `tmp` / `partial` name followed by os.replace), so no output is ever half-written."""
    import re
    from pathlib import Path

    writes = re.compile(r"(\.write_text\(|\.write_bytes\(|save_file\(|torch\.save\(|torch\.export\.save\()")
    allowed = {("benchmark.py", "/proc/self/clear_refs")}  # a kernel control file, not an output
    offenders = []
    root = Path(__file__).resolve().parents[1] / "zoo"
    for path in sorted(root.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not writes.search(line) or line.lstrip().startswith(("#", '"', "'")):
                continue
            if re.search(r"\b(tmp|partial|side)\b", line) or any(path.name == f and s in line for f, s in allowed):
                continue
            offenders.append(f"{path.relative_to(root.parent)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
