"""Encoded images decoded in a TensorFlow graph as `keras_segmenter.images` reads files.

    from keras_segmenter.image_decoding import decode_image

    image = decode_image(encoded_bytes)  # uint8 (H, W, 3), EXIF orientation applied

The SavedModel's `serving_bytes` signature decodes with this, so that a REST
client gets the class map that `predict` (Pillow) gives for the same file:

- JPEG with libjpeg's accurate integer DCT and fancy upsampling, Pillow's
  settings: TensorFlow's default (the fast integer DCT) gives other values
  on most pixels of a photo, by up to 20.
- The EXIF orientation of a JPEG, applied as `PIL.ImageOps.exif_transpose`
  applies it (all 8 values): the Orientation tag (0x0112) of IFD0 in the
  first APP1 "Exif" segment. Reading it is bounded (at most 64 segments
  before the image data, 4096 IFD entries, all reads inside the segment);
  a missing, malformed or out-of-range tag leaves the image as it is.
- 16-bit grayscale PNGs rounded to 8 bits (`v / 257`) as
  `images.to_rgb_array` does; TensorFlow keeps their high byte. Other
  16-bit PNGs keep their high byte in both.

Grayscale, palette and alpha images become RGB (alpha dropped); GIFs give
their first frame.
"""

import tensorflow as tf

ORIENTATION_TAG = 0x0112
MAX_SEGMENTS = 64
MAX_IFD_ENTRIES = 4096


def _bytes(data, start, count):
    """`count` bytes of `data` from `start` as int32, zero past its end (or before 0)."""
    length = tf.strings.length(data)
    start = tf.clip_by_value(tf.cast(start, tf.int32), 0, length)
    values = tf.io.decode_raw(tf.strings.substr(data, start, count), tf.uint8)
    values = tf.cast(values, tf.int32)
    return tf.ensure_shape(tf.pad(values, [[0, count - tf.size(values)]]), [count])


def _number(values, big_endian):
    """Unsigned integer from the int32 bytes `values` (last axis, at most 3 bytes)."""
    size = values.shape[-1]
    weights = [256 ** (size - 1 - i) for i in range(size)]
    weights = tf.where(big_endian, tf.constant(weights), tf.constant(weights[::-1]))
    return tf.reduce_sum(values * weights, -1)


def _exif_segment(data):
    """The TIFF part of a JPEG's first APP1 "Exif" segment, or "" if it has none.

    Walks the segments from the start of the image (Pillow reads them up to
    the image data), skipping fill bytes (0xFF) between them.
    """
    length = tf.strings.length(data)

    def step(position, _found, _segment):
        head = _bytes(data, position, 4)
        marker, size = head[1], head[2] * 256 + head[3]
        fill = tf.equal(marker, 0xFF)
        label = tf.strings.substr(data, tf.minimum(position + 4, length), 6)
        exif = tf.logical_and(tf.equal(marker, 0xE1), tf.equal(label, b"Exif\0\0"))
        segment = tf.strings.substr(
            data, tf.minimum(position + 10, length), tf.maximum(size - 8, 0)
        )
        # The image data, the end of the image, or no marker where one must be: stop.
        stop = tf.reduce_any(
            [tf.equal(marker, 0xDA), tf.equal(marker, 0xD9), tf.not_equal(head[0], 0xFF)]
        )
        stop = tf.logical_or(stop, tf.logical_and(size < 2, tf.logical_not(fill)))
        found = tf.where(exif, 1, tf.where(stop, -1, 0))
        return position + tf.where(fill, 1, 2 + size), found, segment

    _, found, segment = tf.while_loop(
        lambda _position, found, _segment: tf.equal(found, 0),
        step,
        (tf.constant(2), tf.constant(0), tf.constant(b"")),
        maximum_iterations=MAX_SEGMENTS,
    )
    return tf.where(found > 0, segment, b"")


def exif_orientation(data):
    """The EXIF orientation (1 to 8) of an encoded JPEG; 1 when it has none or another format.

    Args:
        data: scalar string tensor, an encoded image.

    Returns:
        int32 scalar.
    """
    data = tf.ensure_shape(data, ())
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 2), b"\xff\xd8")
    tiff = tf.where(is_jpeg, _exif_segment(data), b"")
    order = tf.strings.substr(tiff, 0, 4)
    big_endian = tf.equal(order, b"MM\0*")
    head = _bytes(tiff, 4, 4)  # IFD0's offset; a segment is shorter than 64 KB
    head = tf.where(big_endian, head, tf.reverse(head, [0]))  # most significant byte first
    high, low = head[:2], head[2:]
    valid = tf.logical_and(
        tf.logical_or(big_endian, tf.equal(order, b"II*\0")), tf.reduce_all(tf.equal(high, 0))
    )
    ifd = _number(low, True)
    count = tf.minimum(_number(_bytes(tiff, ifd, 2), big_endian), MAX_IFD_ENTRIES)
    entries = tf.reshape(_bytes(tiff, ifd + 2, MAX_IFD_ENTRIES * 12), [MAX_IFD_ENTRIES, 12])
    entries = entries[:count]
    tags = _number(entries[:, 0:2], big_endian)
    kinds = _number(entries[:, 2:4], big_endian)
    # The value field: a SHORT in its first two bytes, or a LONG in all four.
    value = entries[:, 8:12]
    as_long = tf.equal(kinds, 4)
    low_half = tf.where(
        tf.logical_and(big_endian, as_long)[..., None], value[:, 2:4], value[:, 0:2]
    )
    high_half = tf.where(big_endian, value[:, 0:2], value[:, 2:4])
    values = _number(low_half, big_endian)
    values = tf.where(tf.logical_and(as_long, tf.reduce_any(high_half > 0, -1)), 0, values)
    matches = tf.where(tf.logical_and(tf.equal(tags, ORIENTATION_TAG), valid))[:, 0]
    orientation = tf.cond(
        tf.size(matches) > 0, lambda: values[matches[0]], lambda: tf.constant(1, tf.int32)
    )
    return tf.where(tf.logical_and(orientation >= 1, orientation <= 8), orientation, 1)


def orient(image, orientation):
    """`image` `(H, W, C)` turned upright for its EXIF `orientation`, as Pillow's `exif_transpose`."""
    transposed = lambda: tf.transpose(image, [1, 0, 2])  # noqa: E731
    branches = [
        lambda: image,
        lambda: tf.reverse(image, [1]),  # 2: mirrored left to right
        lambda: tf.reverse(image, [0, 1]),  # 3: rotated 180
        lambda: tf.reverse(image, [0]),  # 4: mirrored top to bottom
        transposed,  # 5: mirrored along the main diagonal
        lambda: tf.reverse(transposed(), [1]),  # 6: Pillow's ROTATE_270 (clockwise)
        lambda: tf.reverse(transposed(), [0, 1]),  # 7: mirrored along the other diagonal
        lambda: tf.reverse(transposed(), [0]),  # 8: Pillow's ROTATE_90
    ]
    return tf.switch_case(orientation - 1, branches)


def _png_gray16(data):
    """Whether `data` is a PNG whose IHDR declares 16-bit grayscale (colour type 0)."""
    is_png = tf.equal(tf.strings.substr(data, 0, 8), b"\x89PNG\r\n\x1a\n")
    header = _bytes(data, 24, 2)  # bit depth, colour type
    return tf.logical_and(is_png, tf.logical_and(tf.equal(header[0], 16), tf.equal(header[1], 0)))


def decode_image(data):
    """Decodes one encoded JPEG/PNG/GIF/BMP/WebP image as `images.load_image` reads the file.

    Args:
        data: scalar string tensor.

    Returns:
        uint8 tensor `(height, width, 3)`, EXIF orientation applied.
    """
    data = tf.ensure_shape(data, ())
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 2), b"\xff\xd8")

    def jpeg():
        image = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
        return orient(image, exif_orientation(data))

    def gray16():
        wide = tf.cast(tf.io.decode_png(data, channels=3, dtype=tf.uint16), tf.float32)
        return tf.cast(tf.round(wide / 257.0), tf.uint8)

    def other():
        return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)

    image = tf.case([(is_jpeg, jpeg), (_png_gray16(data), gray16)], default=other)
    return tf.ensure_shape(image, (None, None, 3))
