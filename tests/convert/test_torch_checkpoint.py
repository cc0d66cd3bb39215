"""Crafted `.pth` files: the tensor metadata of the pickle is never trusted.

Each checkpoint here is the real fixture's zip with its `data.pkl` replaced by
a pickle written opcode by opcode (torch is not needed), whose tensors point
at the fixture's own storages with offsets, sizes and strides that lie.
"""

import pickle
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from keras_segmenter.convert import CheckpointError, read_torch_checkpoint
from tests.testing import FIXTURES

TINY = FIXTURES / "tiny_mask"
KEY = "encoder.pos_embed"
# The fixture stores `encoder.pos_embed` (1, 17, 64) float32 in `data/1`: 1088 elements.
GOOD = dict(
    storage="FloatStorage", key="1", numel=1088, offset=0, size=(1, 17, 64), stride=(1088, 64, 1)
)


def _value(value):
    """One value's opcodes (protocol 2, without PROTO and STOP)."""
    return pickle.dumps(value, protocol=2)[2:-1]


def _global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tensor_pickle(tensors):
    """A `torch.save`-like pickle of `{"model": {key: tensor}}`; each tensor a dict as GOOD."""
    out = b"\x80\x02}(" + _value("model") + b"}("
    for key, t in tensors.items():
        storage_type = (
            t["storage"] if isinstance(t["storage"], bytes) else _global("torch", t["storage"])
        )
        pid = (
            b"("
            + _value("storage")
            + storage_type
            + _value(t["key"])
            + _value("cpu")
            + _value(t["numel"])
        )
        out += _value(key) + _global("torch._utils", "_rebuild_tensor_v2") + b"("
        out += pid + b"tQ"  # TUPLE, BINPERSID
        out += _value(t["offset"]) + _value(t["size"]) + _value(t["stride"]) + _value(False)
        out += _global("collections", "OrderedDict") + b")R"  # backward hooks
        out += b"tR"
    return out + b"uu."


def write_checkpoint(path, tensors, drop=()):
    """The fixture's zip with a crafted `data.pkl` (and without the storages in `drop`)."""
    with zipfile.ZipFile(TINY / "checkpoint.pth") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    root = next(n for n in members if n.endswith("data.pkl"))[: -len("data.pkl")]
    members[root + "data.pkl"] = tensor_pickle(tensors)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            if name[len(root) + len("data/") :] not in drop:
                archive.writestr(name, data)
    return path


def with_pickle(path, payload):
    """The fixture's zip with `payload` as its `data.pkl`."""
    with zipfile.ZipFile(TINY / "checkpoint.pth") as source, zipfile.ZipFile(path, "w") as target:
        for name in source.namelist():
            target.writestr(name, payload if name.endswith("data.pkl") else source.read(name))
    return path


def test_the_crafted_writer_reproduces_the_fixture(tmp_path):
    path = write_checkpoint(
        tmp_path / "c.pth", {KEY: GOOD, "scalar": dict(GOOD, size=(), stride=(), offset=5)}
    )
    state = read_torch_checkpoint(path)["model"]
    original = read_torch_checkpoint(TINY / "checkpoint.pth")["model"][KEY]
    np.testing.assert_array_equal(state[KEY], original)
    assert state["scalar"].shape == () and state["scalar"] == original.reshape(-1)[5]
    # A transposed view within bounds is read as torch would.
    view = read_torch_checkpoint(
        write_checkpoint(tmp_path / "t.pth", {KEY: dict(GOOD, size=(64, 17), stride=(1, 64))})
    )
    np.testing.assert_array_equal(view["model"][KEY], original[0].T)


BAD_TENSORS = {
    "larger_than_storage": (dict(size=(1, 18, 64)), "larger than its storage of 1088 elements"),
    "offset_past_the_end": (dict(offset=1088), "larger than its storage"),
    "offset_plus_size_past_the_end": (dict(offset=1), "up to index 1088, larger than its storage"),
    "huge_stride": (dict(stride=(1088, 2**40, 1)), "larger than its storage"),
    "stride_overflowing_int64": (dict(stride=(1088, 2**63 + 5, 1)), "larger than its storage"),
    "negative_stride": (
        dict(stride=(1088, -64, 1)),
        "non-negative offset and one non-negative stride",
    ),
    "negative_offset": (dict(offset=-64), "non-negative offset"),
    "negative_size": (dict(size=(1, -17, 64)), "non-negative"),
    "stride_rank_differs": (dict(stride=(64, 1)), "one non-negative stride per dimension"),
    "zero_stride_memory_bomb": (dict(size=(2**40,), stride=(0,)), "need 1099511627776 elements"),
    "float_size": (dict(size=(1, 17.0, 64)), "expected an int and two tuples of ints"),
    "storage_count_above_file": (
        dict(numel=5000),
        "declares 5000 elements of 4 bytes but its file holds 4352 bytes",
    ),
    "storage_count_below_file": (
        dict(numel=10, size=(10,), stride=(1,)),
        "its file holds 4352 bytes",
    ),
    "storage_file_wrong_dtype": (
        dict(storage="DoubleStorage"),
        "declares 1088 elements of 8 bytes",
    ),
    "unsupported_dtype": (
        dict(storage="ComplexFloatStorage"),
        "unsupported dtype `torch.ComplexFloatStorage`",
    ),
    "storage_type_not_a_class": (
        dict(storage=_value("float")),
        "'float' is not a torch storage class",
    ),
    "missing_storage_file": (dict(key="999"), "storage file `checkpoint/data/999` is missing"),
    "negative_storage_count": (dict(numel=-1), "element count -1"),
}


@pytest.mark.parametrize("case", sorted(BAD_TENSORS))
def test_crafted_tensor_is_a_clear_error_naming_file_and_key(tmp_path, case):
    change, message = BAD_TENSORS[case]
    path = write_checkpoint(
        tmp_path / "crafted.pth",
        {
            "encoder.cls_token": dict(GOOD, key="0", numel=64, size=(64,), stride=(1,)),
            KEY: dict(GOOD, **change),
        },
    )
    with pytest.raises(CheckpointError) as error:
        read_torch_checkpoint(path)
    assert str(error.value).startswith(f"{path}: tensor `model.{KEY}`: ")
    assert message in str(error.value)


def test_storage_deleted_from_the_zip_is_named(tmp_path):
    path = write_checkpoint(tmp_path / "c.pth", {KEY: GOOD}, drop=("1",))
    with pytest.raises(
        CheckpointError, match=rf"tensor `model.{KEY}`: storage file `checkpoint/data/1` is missing"
    ):
        read_torch_checkpoint(path)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x80\x02}("
        + _value("model")
        + _global("torch._utils", "_rebuild_tensor_v2")
        + b")Ru.",  # no arguments
        b"\x80\x02" + _value(("storage", "1")) + b"Q.",  # short persistent id
        b"\x80\x02K",  # truncated
    ],
)
def test_malformed_pickle_is_a_checkpoint_error(tmp_path, payload):
    rewritten = with_pickle(tmp_path / "bad.pth", payload)
    with pytest.raises(CheckpointError, match="^" + re.escape(f"{rewritten}: ")):
        read_torch_checkpoint(rewritten)


def test_convert_cli_reports_a_crafted_checkpoint_in_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "variant.yml").write_bytes((TINY / "variant.yml").read_bytes())
    write_checkpoint(run / "checkpoint.pth", {KEY: dict(GOOD, stride=(1088, 2**40, 1))})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_segmenter.convert",
            str(run),
            "--out",
            str(tmp_path / "m.keras"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and f"tensor `model.{KEY}`" in lines[0]
        and "larger than its storage" in lines[0]
    )
    assert not (tmp_path / "m.keras").exists()


def test_randomly_corrupted_pickles_read_or_raise_checkpoint_error(tmp_path):
    """Flipped bytes in the fixture's real pickle: never another exception, never a crash."""
    with zipfile.ZipFile(TINY / "checkpoint.pth") as archive:
        original = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    rng = np.random.default_rng(0)
    outcomes = set()
    for trial in range(200):
        data = bytearray(original)
        for i in rng.integers(0, len(data), size=rng.integers(1, 8)):
            data[i] = rng.choice([0, 0x7F, 0x80, 0xFF, int(rng.integers(256))])
        path = with_pickle(tmp_path / f"{trial}.pth", bytes(data))
        try:
            read_torch_checkpoint(path)
            outcomes.add("read")
        except CheckpointError as error:
            assert str(error).startswith(f"{path}: ")
            outcomes.add("error")
    assert outcomes == {"read", "error"}


def test_a_huge_memo_index_allocates_nothing(tmp_path):
    # LONG_BINPUT 2**31 - 1: the C unpickler would size its memo array to match (16 GiB).
    path = with_pickle(tmp_path / "memo.pth", b"\x80\x02K\x07r\xff\xff\xff\x7f.")
    assert read_torch_checkpoint(path) == 7
