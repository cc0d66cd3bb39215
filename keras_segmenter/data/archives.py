"""Unpacking a zip or tar archive that may be hostile, into a folder that appears whole.

Only regular files and folders are written: a member that is a link or a
device, or whose name is absolute or climbs out with `..`, refuses the whole
archive, before anything is written. The members' declared sizes and count
are bounded before extraction (a zip's reader also stops at the declared size
and checks each member's CRC). The folder is built under a temporary name and
renamed into place (`files.atomic_write`), so it exists only when complete.
"""

import collections
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile

from keras_segmenter.errors import UserError
from keras_segmenter.files import atomic_write

MAX_MEMBERS = 200_000


# One member: its name, size, kind, and `open()` giving its bytes.
_Member = collections.namedtuple("_Member", "name size is_dir is_file open")


def _zip_members(archive):
    for info in archive.infolist():
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip was written without one
        yield _Member(
            info.filename,
            info.file_size,
            info.is_dir(),
            not info.is_dir() and kind in (0, stat.S_IFREG),
            lambda info=info: archive.open(info),
        )


def _tar_members(archive):
    for info in archive.getmembers():
        yield _Member(
            info.name,
            info.size,
            info.isdir(),
            info.isfile(),
            lambda info=info: archive.extractfile(info),
        )


def _open(path):
    """`(archive, members)`; raises `ValueError` naming `path` for an unreadable archive."""
    try:
        if zipfile.is_zipfile(path):
            archive = zipfile.ZipFile(path)
            return archive, list(_zip_members(archive))
        archive = tarfile.open(path)
        return archive, list(_tar_members(archive))
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise UserError(f"{path} is not a readable zip or tar archive ({e})") from None


def _relative(name, prefix, path):
    """The member's path below `prefix`, or None when it lies elsewhere; refuses escapes."""
    normal = posixpath.normpath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or normal == ".." or normal.startswith("../"):
        raise UserError(f"{path}: member {name!r} would be written outside the target folder")
    if not (normal + "/").startswith(prefix):
        return None
    return normal[len(prefix) :] or None


def extract(path, prefix, target, max_bytes):
    """Extracts the members of `path` under `prefix` into the new folder `target`.

    Args:
        path: str, a zip or tar archive (tar may be compressed).
        prefix: str, folder inside the archive whose contents become
            `target` (e.g. `"ADEChallengeData2016/"`); `""` for all.
        target: str, the folder to create; it must not exist or be empty.
        max_bytes: int, bound on the sum of the extracted members' sizes.

    Returns:
        The number of files written.

    Raises:
        ValueError: the archive is unreadable, corrupt (CRC), holds a link,
            device or escaping name under `prefix`, holds no member under
            it, or is larger than `max_bytes`; names `path`.
    """
    archive, members = _open(path)
    with archive:
        if len(members) > MAX_MEMBERS:
            raise UserError(f"{path} has {len(members)} members; expected at most {MAX_MEMBERS}")
        wanted = []
        for member in members:
            relative = _relative(member.name, prefix, path)
            if relative is None:
                continue
            if not (member.is_dir or member.is_file):
                raise UserError(
                    f"{path}: member {member.name!r} is a link or device; expected files and folders"
                )
            wanted.append((relative, member))
        total = sum(member.size for _, member in wanted if member.is_file)
        if total > max_bytes:
            raise UserError(f"{path}: {total} bytes under {prefix!r}; expected at most {max_bytes}")
        if not any(member.is_file for _, member in wanted):
            raise UserError(f"{path} holds no file under {prefix!r}; is it the right archive?")

        def write(folder):
            os.makedirs(folder)
            for relative, member in wanted:
                out = os.path.join(folder, *relative.split("/"))
                if member.is_dir:
                    os.makedirs(out, exist_ok=True)
                    continue
                os.makedirs(os.path.dirname(out), exist_ok=True)
                with member.open() as source, open(out, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)

        try:
            atomic_write(target, write)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
            raise UserError(f"{path} is corrupt ({e}); download it again") from None
    return sum(member.is_file for _, member in wanted)
