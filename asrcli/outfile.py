"""Files the operator tool writes (`vault key --out`, `point export --out`): the target is
checked before anything starts, and a failed write is a coded error, never a traceback.

The write itself goes through :mod:`durablefile` (temporary file in the target's directory,
fsync, rename, fsync of the directory), so a failure leaves the earlier file untouched.
"""

from __future__ import annotations

import errno
import os

from asrerrors import AsrError, DiskFull, StorageError, UsageError

_FULL = {errno.ENOSPC, errno.EDQUOT}


def checked_target(path: str, option: str = "--out") -> str:
    """The absolute path to write, or a UsageError naming the path: its directory must exist,
    be a directory and be writable; the path itself must not be a directory."""
    out = os.path.abspath(path)
    parent = os.path.dirname(out)
    if os.path.isdir(out):
        raise UsageError(f"{option} {out} is a directory", action=f"Name a file for {option}, e.g. {out}/NAME.")
    if not os.path.exists(parent):
        raise UsageError(f"{option} {out}: directory {parent} does not exist",
                         action="Create the directory first, or name a file in an existing one.")
    if not os.path.isdir(parent):
        raise UsageError(f"{option} {out}: {parent} is not a directory",
                         action="Name a file inside a directory.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {out}: directory {parent} is not writable by this user",
                         action="Choose a directory you can write to.")
    return out


def write_failed(exc: OSError, path: str, what: str, outcome: str) -> AsrError:
    """The coded error for a failed write of ``path``; ``outcome`` says what was (not) changed."""
    reason = exc.strerror or str(exc)
    if exc.errno in _FULL:
        return DiskFull(f"cannot write {what} {path}: {reason}", details=(outcome,),
                        causes=("The file system holding the file has no space left.",),
                        action="Free space or choose another --out, then run the command again.")
    return StorageError(f"cannot write {what} {path}: {reason}", details=(outcome,),
                        action="Fix the problem with the target file system, then run the command again.")


__all__ = ["checked_target", "write_failed"]
