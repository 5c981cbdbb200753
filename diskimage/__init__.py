"""Disk images: facts read from the image itself, and reading and writing raw, VHD and VHDX.

``probe(path)`` says what an image is; ``open_disk(path)`` returns a :class:`DiskImage` to
read and write it at byte offsets; ``create_fixed_vhd`` makes an empty, sparse fixed VHD.
"""

from .image import DiskImage, RawImage
from .probe import DiskFacts, open_disk, probe
from .vhd import DynamicVhd, FixedVhd, create_fixed_vhd
from .vhdx import VhdxImage

__all__ = [
    "DiskFacts",
    "DiskImage",
    "DynamicVhd",
    "FixedVhd",
    "RawImage",
    "VhdxImage",
    "create_fixed_vhd",
    "open_disk",
    "probe",
]
