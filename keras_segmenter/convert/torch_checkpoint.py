"""Reads PyTorch `.pth` checkpoints into NumPy without torch and without running code.

`torch.save` writes a zip archive: `<root>/data.pkl` is a pickle whose
tensors point, by persistent id, at raw little-endian storages
`<root>/data/<key>`. The unpickler here allows only the few globals a
checkpoint of tensors, dicts and numbers needs, so a file that tries to
import anything else (the classic `os.system` pickle) is refused.
"""

import collections
import pickle
import zipfile

import numpy as np

# torch storage class name -> NumPy dtype of its raw bytes.
STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",  # widened to float32 when read
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or does not fit the model."""


class _Storage:
    def __init__(self, name):
        self.name = name


def _rebuild_tensor(storage, offset, size, stride, *unused):
    if not size:
        return storage[offset : offset + 1].reshape(()).copy()
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * item for s in stride)
    )
    return np.array(view)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    return data


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, archive, root, path):
        super().__init__(file)
        self.archive, self.root, self.path = archive, root, path

    def find_class(self, module, name):
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _Storage(name)
        raise CheckpointError(
            f"{self.path}: refusing to load `{module}.{name}`: a checkpoint of tensors only "
            "needs OrderedDict, torch._utils._rebuild_tensor_v2 and torch storages."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise CheckpointError(f"{self.path}: unexpected persistent id {pid!r}")
        storage_type, key = pid[1], pid[2]
        if not isinstance(storage_type, _Storage):
            raise CheckpointError(f"{self.path}: unsupported storage type {storage_type!r}")
        member = f"{self.root}data/{key}"
        try:
            raw = self.archive.read(member)
        except KeyError:
            raise CheckpointError(f"{self.path}: storage `{member}` is missing") from None
        array = np.frombuffer(raw, STORAGE_DTYPES[storage_type.name])
        if storage_type.name == "BFloat16Storage":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def read_torch_checkpoint(path):
    """Loads a `torch.save` zip checkpoint as nested dicts of NumPy arrays.

    Works without torch. Tensors become NumPy arrays (bfloat16 widened to
    float32); dicts, lists and numbers stay as they are.

    Args:
        path: str or path-like, the `.pth` file.

    Raises:
        CheckpointError: the file is not a torch zip checkpoint, is truncated
            or corrupt, or its pickle asks for anything but tensors.
    """
    path = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(
            f"{path}: not a readable PyTorch zip checkpoint (truncated, corrupt, or saved "
            f"with the legacy pre-1.6 format): {error}"
        ) from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if not pickles:
            raise CheckpointError(f"{path}: no `data.pkl` inside: not a torch checkpoint")
        root = pickles[0][: -len("data.pkl")]
        try:
            with archive.open(pickles[0]) as file:
                return _RestrictedUnpickler(file, archive, root, path).load()
        except CheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError) as error:
            raise CheckpointError(f"{path}: corrupt checkpoint: {error}") from None
