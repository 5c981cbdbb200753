"""Run one of our command lines as on a Windows host, as far as Linux can pretend (tests only):

    python tests/foundation/without_posix.py agent.cli run --config agent.toml
    python tests/foundation/without_posix.py agent.replication once VM_ID --config agent.toml

* the modules Windows does not have (``fcntl``, ``termios``, ``pwd``, ``grp``, ``resource``)
  cannot be imported: ``import fcntl`` raises ImportError as it does on Windows;
* ``os`` loses the POSIX-only calls (positioned and vectored I/O, ``statvfs``,
  ``posix_fadvise``, ``O_DIRECT``, ``killpg``, ``fdatasync``, ``sync``, uid and chown calls);
* ``msvcrt`` exists, with the byte-range ``locking`` Windows has: a lock held by one open
  file is refused to every other open file, of this process or another (modelled here on
  the ``flock`` of the real ``fcntl``, taken before the module is refused). The standard
  library modules that tell Windows by importing ``msvcrt`` are loaded before it exists.

Then the module runs as ``__main__`` (``python -m``) with the remaining arguments.
"""

from __future__ import annotations

import fcntl as _real_fcntl  # for the msvcrt stand-in only, before the module is refused
import importlib.abc
import os
import runpy
import sys
import types
from collections.abc import Sequence

REFUSED = ("fcntl", "termios", "pwd", "grp", "resource")
REMOVED = ("pread", "pwrite", "preadv", "pwritev", "readv", "writev", "statvfs", "fstatvfs", "posix_fadvise",
           "posix_fallocate", "O_DIRECT", "killpg", "fdatasync", "sync", "getuid", "geteuid", "chown", "fchown")


class RefusePosixModules(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None) -> None:
        if fullname in REFUSED:
            raise ImportError(f"No module named {fullname!r} (refused: this process pretends to be Windows)",
                              name=fullname)
        return None


def _msvcrt() -> types.ModuleType:
    mod = types.ModuleType("msvcrt", "stand-in for Windows' msvcrt: byte-range locking")
    lk_unlck, lk_lock, lk_nblck = 0, 1, 2

    def locking(fd: int, mode: int, nbytes: int) -> None:
        if nbytes != 1 or os.lseek(fd, 0, os.SEEK_CUR) != 0:
            raise AssertionError("the stand-in models the lock of byte 0 only")
        if mode == lk_unlck:
            _real_fcntl.flock(fd, _real_fcntl.LOCK_UN)
        elif mode == lk_nblck:
            try:
                _real_fcntl.flock(fd, _real_fcntl.LOCK_EX | _real_fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise PermissionError(13, "Permission denied") from exc  # what Windows raises
        else:
            raise AssertionError(f"locking mode {mode} is not modelled")

    mod.locking = locking  # type: ignore[attr-defined]
    mod.LK_UNLCK, mod.LK_LOCK, mod.LK_NBLCK = lk_unlck, lk_lock, lk_nblck  # type: ignore[attr-defined]
    return mod


def pretend_windows() -> None:
    # The standard library tells Windows by whether msvcrt imports: load the modules that
    # ask (and would then want _winapi) as the Linux modules they are, before it exists.
    import asyncio  # noqa: F401
    import getpass  # noqa: F401
    import subprocess  # noqa: F401

    for name in REFUSED:
        sys.modules.pop(name, None)
    sys.meta_path.insert(0, RefusePosixModules())
    for name in REMOVED:
        if hasattr(os, name):
            delattr(os, name)
    sys.modules["msvcrt"] = _msvcrt()


def main(argv: list[str]) -> None:
    pretend_windows()
    module, rest = argv[0], argv[1:]
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
