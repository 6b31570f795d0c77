"""The file browser's listings (FILE_LIST_REQUEST, REGION_LIST_REQUEST) of real folders, as
the running unix user sees them, following carta_backend's FileListHandler.

Paths in requests and responses are relative to the top-level folder; ``$BASE`` stands for the
starting folder. Nothing outside the top-level folder (after normalising ``..``) is listed.
Symbolic links are followed, as carta_backend does.
"""

import os

from carta_standin.icd import FileListFilterMode, FileType

FITS_EXTENSIONS = (".fits", ".fit", ".fts")
HDF5_EXTENSIONS = (".hdf5", ".h5")
FITS_MAGIC, HDF5_MAGIC, GZIP_MAGIC = b"SIMPLE  =", b"\x89HDF\r\n\x1a\n", b"\x1f\x8b"


class ListingError(Exception):
    """The folder cannot be listed; the text is the response's message."""


def resolve(top, starting, directory):
    """``(relative, absolute)`` path of a requested folder; ListingError when outside ``top``."""
    if not directory or directory == ".":
        directory = top
    directory = directory.replace("$BASE", starting)
    absolute = os.path.normpath(os.path.join(top, directory))
    inside = absolute == top or absolute.startswith(top.rstrip("/") + "/")
    if not inside:
        raise ListingError("Forbidden path.")
    return os.path.relpath(absolute, top), absolute


def fill_listing(response, top, starting, directory, filter_mode, regions=False):
    """Fill a FileListResponse or RegionListResponse for ``directory``."""
    try:
        relative, path = resolve(top, starting, directory)
        if not os.path.exists(path):
            raise ListingError(f"File list failed: Directory {relative} does not exist.")
        if not os.path.isdir(path):
            raise ListingError(f"File list failed: requested path {directory} is not a directory.")
        try:
            entries = sorted(os.scandir(path), key=lambda entry: entry.name)
        except OSError:
            raise ListingError(f"File list failed: Directory {relative} is not readable.") from None
    except ListingError as e:
        response.success, response.message = False, str(e)
        return response
    if relative == ".":
        response.parent = "."
    else:
        response.directory, response.parent = relative, os.path.dirname(relative) or "."
    for entry in entries:
        if not entry.name.startswith(".") and os.access(entry.path, os.R_OK):
            _add_entry(response, entry, filter_mode, regions)
    response.success = True
    return response


def _add_entry(response, entry, filter_mode, regions):
    try:
        is_dir, stat = entry.is_dir(), entry.stat()
    except OSError:
        return  # broken link or vanished
    if is_dir:
        if not os.access(entry.path, os.X_OK):
            return
        folder_type = folder_image_type(entry.path)
        if folder_type == FileType.UNKNOWN or filter_mode == FileListFilterMode.AllFiles:
            response.subdirectories.add(
                name=entry.name, item_count=_item_count(entry.path), date=int(stat.st_mtime)
            )
        elif not regions:
            _add_file(response, entry.name, folder_type, _folder_size(entry.path), stat)
        return
    by_content = filter_mode != FileListFilterMode.Extension
    file_type = (region_type if regions else image_type)(entry.path, by_content)
    if file_type != FileType.UNKNOWN or filter_mode == FileListFilterMode.AllFiles:
        _add_file(response, entry.name, file_type, stat.st_size, stat)


def _add_file(response, name, file_type, size, stat):
    hdus = ["0"] if file_type in (FileType.FITS, FileType.HDF5) else [""]
    response.files.add(name=name, type=file_type, size=size, HDU_list=hdus, date=int(stat.st_mtime))


def image_type(path, by_content=True):
    """FITS or HDF5 by magic number (``by_content``) or by file name, else UNKNOWN."""
    name = path.lower().removesuffix(".gz")
    if by_content:
        magic = _head(path, 9)
        if magic.startswith(FITS_MAGIC) or (
            magic.startswith(GZIP_MAGIC) and name.endswith(FITS_EXTENSIONS)
        ):
            return FileType.FITS
        return FileType.HDF5 if magic.startswith(HDF5_MAGIC) else FileType.UNKNOWN
    if name.endswith(FITS_EXTENSIONS):
        return FileType.FITS
    return FileType.HDF5 if name.endswith(HDF5_EXTENSIONS) else FileType.UNKNOWN


def region_type(path, by_content=True):
    """CRTF or DS9 region file by its first line, falling back to the extension."""
    if by_content:
        head = _head(path, 200).lstrip()
        if head.startswith(b"#CRTF"):
            return FileType.CRTF
        if b"Region file format: DS9" in head:
            return FileType.DS9_REG
    name = path.lower()
    if name.endswith(".crtf"):
        return FileType.CRTF
    return FileType.DS9_REG if name.endswith(".reg") else FileType.UNKNOWN


def folder_image_type(path):
    """CASA (a casacore table) or MIRIAD image folder, else UNKNOWN (a plain folder)."""
    if os.path.isfile(os.path.join(path, "table.dat")):
        return FileType.CASA
    if all(os.path.isfile(os.path.join(path, f)) for f in ("header", "image")):
        return FileType.MIRIAD
    return FileType.UNKNOWN


def _head(path, size):
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return b""


def _item_count(path):
    try:
        return len(os.listdir(path))
    except OSError:
        return -1


def _folder_size(path):
    return sum(
        os.path.getsize(os.path.join(root, f))
        for root, _, names in os.walk(path)
        for f in names
        if os.path.isfile(os.path.join(root, f))
    )
