"""Pascal Context's 60-class masks from the `.pth` files the official Segmenter downloads.

PyTorch-Encoding converted Pascal Context with the Detail API once and
`torch.save`d each split as a dict `{image id: PIL mask}` (`train.pth`,
`val.pth`); the official Segmenter's `prepare_pcontext.py` writes them out
as `SegmentationClassContext/<id>.png` and the split lists. Here they are
read without torch and without running code: the unpickler allows only a
PIL image (recorded as its pickled state, not built by PIL), dicts and
latin-1 bytes; a file that names anything else, or holds tensors, is refused.
Each mask's declared size is bounded and its pixel bytes counted before an
array is made. Both of `torch.save`'s formats are read: the zip archive
(torch >= 1.6) and the older sequence of pickles.
"""

import collections
import os
import pickle
import re
import zipfile

import numpy as np
from PIL import Image

from keras_segmenter.errors import UserError
from keras_segmenter.files import atomic_write_text

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a pre-1.6 `torch.save` file
_MAX_SIDE = 4096  # VOC2010 images are at most 500 pixels a side
_MAX_MASKS = 20_000  # 4998 + 5105 in Pascal Context
_IMAGE_ID = re.compile(r"^(\d{4})_?(\d{6})$")  # 2008000002 or 2008_000002


class _PickledImage:
    """A PIL image as pickled: its `__getstate__` list `[info, mode, size, palette, bytes]`."""

    def __setstate__(self, state):
        self.state = state


def _reconstructor(cls, base, state):
    if cls is not _PickledImage or base is not object or state is not None:
        raise pickle.UnpicklingError(f"copyreg._reconstructor of {cls}, {base}, {state}")
    return _PickledImage()


def _latin1(text, encoding):
    """`_codecs.encode`, as protocol 2 pickles bytes under Python 3: latin-1 only."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode of {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


_ALLOWED = {
    ("_codecs", "encode"): _latin1,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("builtins", "object"): object,
}


class _Unpickler(pickle._Unpickler):  # the Python one: no C fast paths to audit
    def __init__(self, file):
        super().__init__(file, encoding="latin1")  # a Python 2 `str` of pixel bytes

    def find_class(self, module, name):
        if module.startswith("PIL.") and name.endswith(("Image", "ImageFile")):
            return _PickledImage
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"it names {module}.{name}; expected PIL images only")

    def persistent_load(self, _pid):
        raise pickle.UnpicklingError("it holds tensors; expected PIL images only")


def _load(path):
    """The object a `torch.save` file holds, unpickled as above."""
    with open(path, "rb") as f:
        if zipfile.is_zipfile(f):
            with zipfile.ZipFile(f) as archive:
                names = [n for n in archive.namelist() if n.endswith("/data.pkl")]
                if len(names) != 1:
                    raise pickle.UnpicklingError(f"the zip holds {names or 'no'} data.pkl")
                with archive.open(names[0]) as pickled:
                    return _Unpickler(pickled).load()
        f.seek(0)
        if _Unpickler(f).load() != _LEGACY_MAGIC:
            raise pickle.UnpicklingError("it is neither a zip nor a legacy torch.save file")
        _Unpickler(f).load()  # protocol version
        _Unpickler(f).load()  # sys info
        return _Unpickler(f).load()


def _mask(key, value):
    """`(file stem, uint8 array)` of one entry, checked before any allocation."""
    found = _IMAGE_ID.match(str(key))
    if not found:
        raise UserError(f"key {key!r} is not a VOC image id such as 2008000002")
    stem = f"{found.group(1)}_{found.group(2)}"
    state = getattr(value, "state", None)
    if not isinstance(state, (list, tuple)) or len(state) < 5:
        raise UserError(f"{stem} is not a pickled PIL image")
    _, mode, size, _, data = state[:5]
    if isinstance(data, str):  # pickled by Python 2
        data = data.encode("latin1")
    if mode not in ("L", "P") or not isinstance(data, bytes):
        raise UserError(f"{stem}: a mode {mode!r} image; expected an 8-bit mask (L or P)")
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(side, int) and 0 < side <= _MAX_SIDE for side in size)
        or len(data) != size[0] * size[1]
    ):
        raise UserError(
            f"{stem}: size {size!r} with {len(data)} bytes; expected sides up to {_MAX_SIDE} "
            "and one byte a pixel"
        )
    return stem, np.frombuffer(data, np.uint8).reshape(size[1], size[0])


def write_masks(path, mask_dir, list_path):
    """Writes the masks of one `.pth` split as PNGs, then the split's list.

    Args:
        path: str, `train.pth` or `val.pth`.
        mask_dir: str, `VOC2010/SegmentationClassContext` (created).
        list_path: str, `VOC2010/ImageSets/SegmentationContext/<split>.txt`,
            written last, so it exists only when every mask does.

    Returns:
        The number of masks.

    Raises:
        ValueError: naming `path` and what is wrong in it.
    """
    try:
        masks = _load(path)
        if not isinstance(masks, dict) or not 0 < len(masks) <= _MAX_MASKS:
            raise UserError(f"it holds {type(masks).__name__}; expected a dict of masks")
        checked = [_mask(key, value) for key, value in masks.items()]
    except (pickle.UnpicklingError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(
            f"{path} is not PyTorch-Encoding's Pascal Context masks ({e})".splitlines()[0]
        ) from None
    os.makedirs(mask_dir, exist_ok=True)
    for stem, mask in checked:
        Image.fromarray(mask, "L").save(os.path.join(mask_dir, f"{stem}.png"))
    os.makedirs(os.path.dirname(list_path), exist_ok=True)
    atomic_write_text(
        list_path, "".join(f"{stem}\n" for stem, _ in sorted(checked, key=lambda c: c[0]))
    )
    return len(checked)
