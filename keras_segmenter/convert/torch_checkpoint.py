"""Reads PyTorch `.pth` checkpoints into NumPy without torch and without running code.

`torch.save` writes a zip archive: `<root>/data.pkl` is a pickle whose
tensors point, by persistent id, at raw little-endian storages
`<root>/data/<key>`. The unpickler here allows only the few globals a
checkpoint of tensors, dicts and numbers needs, so a file that tries to
import anything else (the classic `os.system` pickle) is refused.

The pickle's tensor metadata is untrusted too: unpickling only records each
tensor's storage, offset, size and stride. Each storage's declared element
count is checked against its file's byte size, and each tensor's extent
against its storage, before any array view is made, so a crafted file can
neither read past a storage nor crash the reader. An object the pickle
refers to many times (its memo makes a graph, not a tree) is resolved once
and shared, an object that contains itself is refused, and the arrays made
may hold at most twice the bytes of the storages they come from, so that a small
pickle cannot expand into a large structure.
"""

import collections
import math
import pickle
import zipfile

import numpy as np

from keras_segmenter.errors import UserError

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
# data.pkl describes the tensors (about 100 bytes each); their values are in storages.
MAX_PICKLE_BYTES = 64 * 2**20
# Tensors may view their storages (a slice, a transpose) but, together, hold at most
# this many times the storages' bytes, plus the slack: the copies made are bounded.
VIEW_FACTOR, VIEW_SLACK = 2, 16 * 2**20


class CheckpointError(UserError):
    """A checkpoint file that cannot be read, or does not fit the model."""


class _StorageType:
    def __init__(self, name):
        self.name = name


class _StorageRef:
    """A persistent id as the pickle declares it: `(type, key, element count)`."""

    def __init__(self, storage_type, key, numel):
        self.storage_type, self.key, self.numel = storage_type, key, numel


class _Tensor:
    """A tensor as the pickle declares it; becomes an array once its bounds are checked."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, _requires_grad, _backward_hooks, *unused):
    return data


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _int_tuple(value):
    return isinstance(value, (tuple, list)) and all(_is_int(v) for v in value)


# The pure-Python unpickler: its memo is a dict, where the C one allocates an
# array as long as the largest memo index, so that a crafted LONG_BINPUT index
# would ask for gigabytes.
class _RestrictedUnpickler(pickle._Unpickler):
    def __init__(self, file, path):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)  # an unsupported dtype is named with its tensor
        raise CheckpointError(
            f"{self.path}: refusing to load `{module}.{name}`: a checkpoint of tensors only "
            "needs OrderedDict, torch._utils._rebuild_tensor_v2 and torch storages."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(
                f"{self.path}: unexpected persistent id {pid!r}; expected "
                "('storage', type, key, location, element count)"
            )
        return _StorageRef(pid[1], pid[2], pid[4])


class _Arrays:
    """Turns the unpickled `_Tensor`s into arrays, checking each against its storage."""

    def __init__(self, archive, root, path):
        self.archive, self.root, self.path = archive, root, path
        self.storages = {}
        self.resolved = {}  # id(pickled object) -> its resolved value, made once
        self.resolving = set()  # ids of the containers being resolved, to find cycles
        self.storage_bytes = self.array_bytes = 0

    def resolve(self, value, key=""):
        if not isinstance(value, (_Tensor, dict, list, tuple)):
            return value
        if id(value) in self.resolved:  # shared by reference in the pickle: resolved once
            return self.resolved[id(value)]
        if id(value) in self.resolving:
            raise CheckpointError(
                f"{self.path}: `{key}` contains itself; expected a tree of tensors"
            )
        self.resolving.add(id(value))
        if isinstance(value, _Tensor):
            result = self.tensor(value, key)
        else:
            join = lambda k: f"{key}.{k}" if key else str(k)  # noqa: E731
            if isinstance(value, dict):
                items = ((k, self.resolve(v, join(k))) for k, v in value.items())
            else:
                items = (self.resolve(v, join(i)) for i, v in enumerate(value))
            result = type(value)(items)
        self.resolving.discard(id(value))
        self.resolved[id(value)] = result
        return result

    def storage(self, ref, where):
        storage_type = ref.storage_type
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(
                f"{where}: storage type {storage_type!r} is not a torch storage class"
            )
        if storage_type.name not in STORAGE_DTYPES:
            raise CheckpointError(
                f"{where}: unsupported dtype `torch.{storage_type.name}`; expected one of "
                f"{', '.join('torch.' + n for n in STORAGE_DTYPES)}"
            )
        if not isinstance(ref.key, str) or not _is_int(ref.numel) or ref.numel < 0:
            raise CheckpointError(
                f"{where}: storage key {ref.key!r} / element count {ref.numel!r}; "
                "expected a string key and a count >= 0"
            )
        member = f"{self.root}data/{ref.key}"
        cache_key = (member, storage_type.name, ref.numel)  # every declaration is checked
        if cache_key not in self.storages:
            try:
                info = self.archive.getinfo(member)
            except KeyError:
                raise CheckpointError(f"{where}: storage file `{member}` is missing") from None
            dtype = np.dtype(STORAGE_DTYPES[storage_type.name])
            if info.file_size != ref.numel * dtype.itemsize:
                raise CheckpointError(
                    f"{where}: storage `{member}` declares {ref.numel} elements of "
                    f"{dtype.itemsize} bytes but its file holds {info.file_size} bytes"
                )
            array = np.frombuffer(self.archive.read(member), dtype)
            if len(array) != ref.numel:  # the zip's directory lied about the size
                raise CheckpointError(f"{where}: storage `{member}` is shorter than declared")
            if storage_type.name == "BFloat16Storage":
                array = (array.astype(np.uint32) << 16).view(np.float32)
            self.storages[cache_key] = array
            self.storage_bytes += array.nbytes
        return self.storages[cache_key]

    def tensor(self, tensor, key):
        where = f"{self.path}: tensor `{key}`"
        if not isinstance(tensor.storage, _StorageRef):
            raise CheckpointError(f"{where}: is not backed by a storage")
        offset, size, stride = tensor.offset, tensor.size, tensor.stride
        if not (_is_int(offset) and _int_tuple(size) and _int_tuple(stride)):
            raise CheckpointError(
                f"{where}: offset {offset!r}, size {size!r}, stride {stride!r}; "
                "expected an int and two tuples of ints"
            )
        if len(size) != len(stride) or offset < 0 or min((*size, *stride, 0)) < 0:
            raise CheckpointError(
                f"{where}: offset {offset}, size {tuple(size)}, stride {tuple(stride)}; "
                "expected a non-negative offset and one non-negative stride per dimension"
            )
        storage = self.storage(tensor.storage, where)
        count = math.prod(size)
        if count == 0:
            return np.zeros(size, storage.dtype)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))  # Python ints: no overflow
        if count > len(storage) or last >= len(storage):
            raise CheckpointError(
                f"{where}: size {tuple(size)}, stride {tuple(stride)}, offset {offset} "
                f"need {count} elements up to index {last}, larger than its storage of "
                f"{len(storage)} elements"
            )
        self.array_bytes += count * storage.itemsize
        if self.array_bytes > VIEW_FACTOR * self.storage_bytes + VIEW_SLACK:
            raise CheckpointError(
                f"{where}: the tensors read so far hold {self.array_bytes} bytes, more than "
                f"{VIEW_FACTOR} x the {self.storage_bytes} bytes of their storages: a checkpoint "
                "holds its tensors' values, not many views of the same values"
            )
        item = storage.itemsize
        view = np.lib.stride_tricks.as_strided(
            storage[offset:], shape=tuple(size), strides=tuple(s * item for s in stride)
        )
        return np.array(view)


def read_torch_checkpoint(path):
    """Loads a `torch.save` zip checkpoint as nested dicts of NumPy arrays.

    Works without torch. Tensors become NumPy arrays (bfloat16 widened to
    float32); dicts, lists and numbers stay as they are.

    Args:
        path: str or path-like, the `.pth` file.

    Raises:
        CheckpointError: the file is not a torch zip checkpoint, is truncated
            or corrupt, its pickle asks for anything but tensors, or a
            tensor does not fit in its storage; the message names the file
            and the tensor's key.
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
        pickle_size = archive.getinfo(pickles[0]).file_size  # zipfile reads no more than this
        if pickle_size > MAX_PICKLE_BYTES:
            raise CheckpointError(
                f"{path}: `{pickles[0]}` is {pickle_size} bytes; a checkpoint's pickle only "
                f"describes its tensors and holds at most {MAX_PICKLE_BYTES} bytes"
            )
        try:
            with archive.open(pickles[0]) as file:
                state = _RestrictedUnpickler(file, path).load()
            return _Arrays(archive, root, path).resolve(state)
        except CheckpointError:
            raise
        except Exception as error:  # an untrusted pickle can fail in many ways
            raise CheckpointError(
                f"{path}: corrupt checkpoint: {type(error).__name__}: {error}"
            ) from None
