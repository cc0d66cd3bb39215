"""Images decoded in the graph (the SavedModel's serving_bytes) equal Pillow's reading of the file."""

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_segmenter.image_decoding import decode_image, exif_orientation
from keras_segmenter.images import load_image
from tests.testing import ASSETS, PHOTOS

PHOTO = PHOTOS / "camvid_0016E5_07959.jpg"
JPEGS = sorted(ASSETS.rglob("*.jpg"))
ORIENTATION = 0x0112

decode = tf.function(decode_image, input_signature=[tf.TensorSpec((), tf.string)])
orientation_of = tf.function(exif_orientation, input_signature=[tf.TensorSpec((), tf.string)])


def pillow(data, tmp_path):
    """What `predict` reads from a file holding `data`."""
    path = tmp_path / "image"
    path.write_bytes(data)
    return load_image(path)


def encoded(image, format="JPEG", **options):
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def intel_exif(orientation, kind):
    """An Exif block in Intel byte order, orientation as SHORT (3) or LONG (4)."""
    value = struct.pack("<H2x" if kind == 3 else "<I", orientation)
    entries = struct.pack("<HHI4s", 0x010F, 2, 4, b"abc\0")  # Make, before Orientation
    entries += struct.pack("<HHI", ORIENTATION, kind, 1) + value
    return b"Exif\0\0II*\0" + struct.pack("<IH", 8, 2) + entries + b"\0" * 4


def png(height, width, colour_type, depth, pixels):
    """A PNG written byte by byte (Pillow writes no 16-bit RGB)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("path", JPEGS, ids=lambda p: p.name)
def test_jpeg_photos_decode_to_pillows_pixels(path):
    # TensorFlow's default (fast integer DCT) differed on up to 90 % of a photo's pixels.
    np.testing.assert_array_equal(decode(path.read_bytes()).numpy(), load_image(path))


@pytest.mark.parametrize(
    "mode, options",
    [
        ("RGB", {"progressive": True}),
        ("RGB", {"subsampling": 0}),  # 4:4:4
        ("RGB", {"subsampling": 1}),  # 4:2:2
        ("L", {}),
        ("CMYK", {}),
    ],
)
def test_jpeg_variants_decode_to_pillows_pixels(mode, options, tmp_path):
    data = encoded(Image.open(PHOTO).convert(mode), quality=85, **options)
    np.testing.assert_array_equal(decode(data).numpy(), pillow(data, tmp_path))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_as_pillow_does(orientation, tmp_path):
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    data = encoded(Image.open(PHOTO), exif=exif.tobytes())
    assert int(orientation_of(data)) == orientation
    expected = pillow(data, tmp_path)
    assert expected.shape[:2] == ((180, 240) if orientation < 5 else (240, 180))
    np.testing.assert_array_equal(decode(data).numpy(), expected)


@pytest.mark.parametrize("kind", [3, 4], ids=["short", "long"])
def test_intel_byte_order_exif_after_a_jfif_segment(kind, tmp_path):
    data = encoded(Image.open(PHOTO), exif=intel_exif(6, kind))
    assert data[2:4] == b"\xff\xe0"  # JFIF first, Exif second
    assert int(orientation_of(data)) == 6
    np.testing.assert_array_equal(decode(data).numpy(), pillow(data, tmp_path))


def test_malformed_exif_gives_pillows_orientation_or_none():
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    good = encoded(Image.open(PHOTO), exif=exif.tobytes())
    tiff = good.index(b"Exif") + 6
    entry = struct.pack(">HHI", ORIENTATION, 3, 1)  # Pillow writes Motorola byte order
    assert entry + b"\0\x06" in good
    cases = {
        "segment cut short": (good[: tiff + 2], 1),
        "unknown byte order": (good[:tiff] + b"XX" + good[tiff + 2 :], 1),
        "IFD offset past the segment": (good[: tiff + 4] + b"\xff" * 4 + good[tiff + 8 :], 1),
        "segment length 1": (good[: tiff - 8] + b"\0\1" + good[tiff - 6 :], 1),
        "65535 IFD entries declared": (good[: tiff + 8] + b"\xff\xff" + good[tiff + 10 :], 6),
        "orientation 9": (good.replace(entry + b"\0\x06", entry + b"\0\x09"), 1),
        "not an image": (b"\xff\xd8" + b"\xff" * 100, 1),
        "PNG": (encoded(Image.open(PHOTO), "PNG"), 1),
    }
    for name, (data, expected) in cases.items():
        assert int(orientation_of(data)) == expected, name
    # Pillow reads the same orientations where it reads the file at all.
    for name in ("unknown byte order", "IFD offset past the segment", "65535 IFD entries declared"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns of corrupt EXIF data
            found = Image.open(io.BytesIO(cases[name][0])).getexif().get(ORIENTATION, 1)
        assert found == cases[name][1], name


def test_png_modes_decode_to_pillows_pixels(tmp_path):
    rng = np.random.default_rng(0)
    photo = Image.open(PHOTO)
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 3
    cases = {
        "gray 16-bit (rounded v / 257)": png(
            20, 30, 0, 16, rng.integers(0, 2**16, (20, 30), dtype=np.uint16)
        ),
        "RGB 16-bit (high byte)": png(
            20, 30, 2, 16, rng.integers(0, 2**16, (20, 30 * 3), dtype=np.uint16)
        ),
        "palette with transparency": encoded(palette, "PNG"),
        "gray + alpha": encoded(photo.convert("LA"), "PNG"),
        "RGBA": encoded(photo.convert("RGBA"), "PNG"),
    }
    for name, data in cases.items():
        np.testing.assert_array_equal(decode(data).numpy(), pillow(data, tmp_path), err_msg=name)
