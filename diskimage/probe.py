"""Facts about a disk image, read from the image itself (never taken from the user)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import portablefile
from asrerrors import DiskImageError, NotFound

from .image import DiskImage, RawImage
from .vhd import DISK_TYPES, FOOTER_COOKIE, SECTOR, DynamicVhd, FixedVhd, read_vhd_meta
from .vhdx import SIGNATURE, VhdxImage, read_vhdx_meta


@dataclass(frozen=True)
class DiskFacts:
    format: str  # raw | vhd | vhdx
    subformat: str  # fixed | dynamic | differencing | "" (raw)
    virtual_size: int
    parent: str | None  # absolute path of a differencing disk's parent


def _detect(path: str) -> str:
    """'vhdx', 'vhd' or 'raw', from the signatures; a damaged VHD is still 'vhd'."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(SECTOR)
            size = os.fstat(fh.fileno()).st_size
            tail = b""
            if size >= SECTOR:
                fh.seek(size - SECTOR)
                tail = fh.read(SECTOR)
    except FileNotFoundError as exc:
        raise NotFound(f"disk image {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise DiskImageError(f"{path} is a directory, not a disk image") from exc
    except OSError as exc:
        raise DiskImageError(f"cannot read disk image {path}: {exc.strerror}") from exc
    if head[:8] == SIGNATURE:
        return "vhdx"
    if tail[:8] == FOOTER_COOKIE or head[:8] == FOOTER_COOKIE:
        # A footer copy at the start without one at the end is a truncated dynamic VHD:
        # report it as damaged rather than silently treating it as raw.
        return "vhd"
    return "raw"


def probe(path: str) -> DiskFacts:
    path = os.path.abspath(path)
    kind = _detect(path)
    if kind == "vhdx":
        meta = read_vhdx_meta(path)
        sub = "differencing" if meta.has_parent else "fixed" if meta.fixed else "dynamic"
        return DiskFacts("vhdx", sub, meta.virtual_size, meta.parent)
    if kind == "vhd":
        fd = portablefile.open_fd(path, os.O_RDONLY)
        try:
            footer, header = read_vhd_meta(fd, path)
        finally:
            os.close(fd)
        parent = None
        if footer.disk_type == 4 and header is not None and header.parent_name:
            parent = os.path.join(os.path.dirname(path), header.parent_name)
        return DiskFacts("vhd", DISK_TYPES[footer.disk_type], footer.current_size, parent)
    return DiskFacts("raw", "", os.path.getsize(path), None)


def open_disk(path: str, readonly: bool = False) -> DiskImage:
    """Open an image of any supported format for reading and (unless ``readonly``) writing."""
    facts = probe(path)
    if facts.format == "vhdx":
        return VhdxImage(path, readonly)
    if facts.format == "vhd":
        return FixedVhd(path, readonly) if facts.subformat == "fixed" else DynamicVhd(
            path, readonly
        )
    return RawImage(path, readonly)
