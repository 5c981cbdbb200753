"""The one error tree of Site Recovery.

Every error a user can see is an :class:`AsrError` subclass with a stable string code, a
process exit code, a message saying what happened, the possible causes and the recommended
action (the shape of Azure Site Recovery's health errors). The same error crosses the wire
as a gRPC status whose details carry an ``asr.v1.ErrorDetail`` (see ``asrchannel.status``),
and the CLIs exit with :attr:`AsrError.exit_code`.

Exit codes are published for scripts: 0 success, 1 unexpected failure, 2 usage error,
3-99 specific errors below. An unknown exit code must be treated as failure.

::

    AsrError                          ASR-0001 (1)
    ├── UsageError                    ASR-0002 (2)   bad command-line or configuration values
    │   ├── InvalidName               ASR-0010 (10)
    │   ├── InvalidPolicy             ASR-0011 (11)
    │   ├── InvalidNetwork            ASR-0012 (12)
    │   ├── InvalidProxy              ASR-0013 (13)
    │   └── InvalidConfig             ASR-0014 (14)
    ├── KeyFileError                  ASR-0020 (20)   registration key file problems
    │   ├── KeyFileUnreadable         ASR-0021 (21)
    │   ├── KeyFileExpired            ASR-0022 (22)
    │   ├── KeyFileSuperseded         ASR-0023 (23)
    │   └── KeyFileWrongVault         ASR-0024 (24)
    ├── AuthError                     ASR-0030 (30)
    │   ├── NotAuthenticated          ASR-0031 (31)
    │   ├── PermissionDenied          ASR-0032 (32)
    │   ├── CertificateRevoked        ASR-0033 (33)
    │   └── SignInLimited             ASR-0034 (34)   too many wrong portal passwords
    ├── NotFound                      ASR-0040 (40)
    ├── AlreadyExists                 ASR-0041 (41)
    ├── StateConflict                 ASR-0042 (42)   operation not allowed in the current state
    │   ├── Fenced                    ASR-0044 (44)   a stale primary: the VM failed over elsewhere
    │   ├── SourceMissing             ASR-0046 (46)   a protected VM's site no longer reports it
    │   └── ServerRemoved             ASR-0047 (47)   the server a command was addressed to is gone
    ├── ValidationFailed              ASR-0043 (43)   a VM or disk breaks the protection rules
    ├── QuiesceFailed                 ASR-0045 (45)   an app-consistent snapshot fell back to crash-consistent
    ├── Unreachable                   ASR-0050 (50)   a peer (cloud, provider, proxy) did not answer
    │   └── MetadataUnavailable       ASR-0051 (51)   the cloud service's PostgreSQL cannot be reached
    ├── StorageError                  ASR-0060 (60)
    │   ├── DiskFull                  ASR-0061 (61)
    │   └── DataCorrupt               ASR-0062 (62)
    ├── DiskImageError                ASR-0070 (70)   an image file is malformed or unsupported
    ├── EncryptionKeyError            ASR-0080 (80)   missing or wrong customer-managed key
    ├── JobFailed                     ASR-0090 (90)
    ├── PairingRefused                ASR-0091 (91)   site to site: the two clouds cannot be paired
    ├── NetworkNotMapped              ASR-0092 (92)   site to site: a NIC's network has no mapping
    └── NoRecoveryHost                ASR-0093 (93)   site to site: no recovery host can hold the VM
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar


class AsrError(Exception):
    """An unexpected internal error."""

    code: ClassVar[str] = "ASR-0001"
    exit_code: ClassVar[int] = 1
    default_causes: ClassVar[tuple[str, ...]] = ()
    default_action: ClassVar[str] = "Check the service log for details and report the problem."

    def __init__(
        self,
        message: str,
        *,
        causes: Iterable[str] | None = None,
        action: str | None = None,
        details: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.causes: tuple[str, ...] = tuple(causes) if causes is not None else self.default_causes
        self.action: str = action if action is not None else self.default_action
        self.details: tuple[str, ...] = tuple(details)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "exit_code": self.exit_code,
            "error": type(self).__name__,
            "message": self.message,
            "possible_causes": list(self.causes),
            "recommended_action": self.action,
            "details": list(self.details),
        }

    def render(self) -> str:
        lines = [f"error {self.code}: {self.message}"]
        lines += [f"  - {d}" for d in self.details]
        for cause in self.causes:
            lines.append(f"  possible cause: {cause}")
        if self.action:
            lines.append(f"  recommended action: {self.action}")
        return "\n".join(lines)

    def __str__(self) -> str:
        if self.details:
            return self.message + ": " + "; ".join(self.details)
        return self.message


class UsageError(AsrError):
    code = "ASR-0002"
    exit_code = 2
    default_action = "Correct the value named in the message and run the command again."


class InvalidName(UsageError):
    code = "ASR-0010"
    exit_code = 10
    default_causes = ("Names are 1-63 letters, digits and hyphens, with no hyphen first or last.",)


class InvalidPolicy(UsageError):
    code = "ASR-0011"
    exit_code = 11


class InvalidNetwork(UsageError):
    code = "ASR-0012"
    exit_code = 12


class InvalidProxy(UsageError):
    code = "ASR-0013"
    exit_code = 13
    default_causes = ("The proxy must be written http://[user:pass@]host:port.",)


class InvalidConfig(UsageError):
    code = "ASR-0014"
    exit_code = 14


class KeyFileError(AsrError):
    code = "ASR-0020"
    exit_code = 20
    default_action = (
        "Download a fresh registration key with 'asr vault key VAULT --out FILE' and register again."
    )


class KeyFileUnreadable(KeyFileError):
    code = "ASR-0021"
    exit_code = 21
    default_causes = (
        "The file is truncated, was edited, or is not a registration key file.",
        "The file is not readable by this user.",
    )


class KeyFileExpired(KeyFileError):
    code = "ASR-0022"
    exit_code = 22
    default_causes = ("Registration keys are valid for a limited number of days (default 5).",)


class KeyFileSuperseded(KeyFileError):
    code = "ASR-0023"
    exit_code = 23
    default_causes = ("A newer key was generated for the vault, which invalidates older keys.",)


class KeyFileWrongVault(KeyFileError):
    code = "ASR-0024"
    exit_code = 24
    default_causes = ("The key file belongs to a different vault than the one named.",)


class AuthError(AsrError):
    code = "ASR-0030"
    exit_code = 30


class NotAuthenticated(AuthError):
    code = "ASR-0031"
    exit_code = 31
    default_causes = ("The caller presented no client certificate issued by this service.",)
    default_action = "Register the server with a registration key file, or use operator credentials."


class PermissionDenied(AuthError):
    code = "ASR-0032"
    exit_code = 32
    default_causes = ("The caller's certificate does not allow this operation or vault.",)
    default_action = "Use credentials of the right role and vault."


class CertificateRevoked(AuthError):
    code = "ASR-0033"
    exit_code = 33
    default_causes = (
        "The server was removed from the vault, or re-registered with --force elsewhere.",
    )
    default_action = "Register the server again with a fresh registration key file."


class SignInLimited(AuthError):
    code = "ASR-0034"
    exit_code = 34
    default_causes = ("Five wrong passwords were given for this operator within 15 minutes.",)
    default_action = "Wait until the time named has passed, then sign in with the right password."


class NotFound(AsrError):
    code = "ASR-0040"
    exit_code = 40
    default_action = "Check the name with the matching 'list' command."


class AlreadyExists(AsrError):
    code = "ASR-0041"
    exit_code = 41
    default_action = "Choose another name, or pass --force where the command allows replacing."


class StateConflict(AsrError):
    code = "ASR-0042"
    exit_code = 42
    default_action = "Run one of the allowed operations named in the message."


class Fenced(StateConflict):
    code = "ASR-0044"
    exit_code = 44
    default_causes = (
        "The VM failed over to the recovery site; this copy is no longer the active side.",
    )
    default_action = ("Do not start or replicate this copy. Fail back (asr failover planned VM "
                      "--direction to-primary) to make it the active side again.")


class SourceMissing(StateConflict):
    code = "ASR-0046"
    exit_code = 46
    default_causes = (
        "The VM or its VMM cloud was removed from the provider's configuration, or its provider was removed.",
    )
    default_action = ("Restore the VM or cloud in the provider's configuration, fail the VM over, or disable "
                      "protection with 'asr vm unprotect VM --force'. Its recovery points are kept until then.")


class ServerRemoved(StateConflict):
    code = "ASR-0047"
    exit_code = 47
    default_causes = ("The provider or agent the command was addressed to was removed from the vault.",)
    default_action = "Register the server again, or run the operation for VMs of a registered server."


class ValidationFailed(AsrError):
    code = "ASR-0043"
    exit_code = 43
    default_action = "Fix every violation listed and try again."


class QuiesceFailed(AsrError):
    code = "ASR-0045"
    exit_code = 45
    default_causes = ("The VM's quiesce hook failed, timed out or could not be run.",)
    default_action = ("Fix the quiesce hook (its output is in the event); points stay crash-consistent and "
                      "app-consistency is tried again at the next app-consistent slot.")


class Unreachable(AsrError):
    code = "ASR-0050"
    exit_code = 50
    default_causes = (
        "The service is not running or not listening at that address.",
        "A firewall or the HTTP proxy blocks the connection, or the proxy is down.",
    )
    default_action = "Check the endpoint and proxy settings and that the peer is running."


class MetadataUnavailable(Unreachable):
    """The cloud service answered, but its metadata store (PostgreSQL) did not: nothing of the
    call was acknowledged; callers retry as for an unreachable peer."""

    code = "ASR-0051"
    exit_code = 51
    default_causes = (
        "The PostgreSQL server of the cloud service is stopped, restarting or unreachable.",
        "The connection to PostgreSQL was cut in the middle of a call.",
    )
    default_action = ("Start PostgreSQL (or restore the network to it); the cloud service reconnects by itself, "
                      "retry the command then. Nothing this call did was acknowledged.")


class StorageError(AsrError):
    code = "ASR-0060"
    exit_code = 60


class DiskFull(StorageError):
    code = "ASR-0061"
    exit_code = 61
    default_causes = ("The file system holding the data directory has no space left.",)
    default_action = "Free space or move the data directory; nothing was acknowledged that is lost."


class DataCorrupt(StorageError):
    code = "ASR-0062"
    exit_code = 62
    default_causes = ("Stored data was modified or damaged on disk.",)
    default_action = "Run 'asr point verify' and re-replicate from the source if damage is found."


class DiskImageError(AsrError):
    code = "ASR-0070"
    exit_code = 70
    default_causes = ("The file is not a valid raw, VHD or VHDX image, or uses an unsupported feature.",)
    default_action = "Check the image with 'qemu-img check' and use a supported format."


class EncryptionKeyError(AsrError):
    code = "ASR-0080"
    exit_code = 80
    default_causes = ("The encryption key file is missing, damaged, or belongs to another provider.",)
    default_action = "Supply the customer-managed key file generated at provider registration."


class JobFailed(AsrError):
    code = "ASR-0090"
    exit_code = 90
    default_action = "Show the job with 'asr job show ID' for the failing task and its error."


class PairingRefused(AsrError):
    code = "ASR-0091"
    exit_code = 91
    default_causes = ("Site to site pairs a VMM cloud with a cloud of another provider of the same vault, "
                      "with at least one host that holds replicas (its agent's replica_listen).",)
    default_action = "List the clouds with 'asr cloud list' and name a cloud of another provider."


class NetworkNotMapped(AsrError):
    code = "ASR-0092"
    exit_code = 92
    default_causes = ("A VM's NIC connects to a VM network of the primary cloud that no network mapping "
                      "sends to a network of the recovery cloud.",)
    default_action = ("Map the network first: asr network-mapping create --primary-cloud C --primary-network N "
                      "--recovery-cloud R --recovery-network M.")


class NoRecoveryHost(AsrError):
    code = "ASR-0093"
    exit_code = 93
    default_causes = ("No host of the recovery cloud that holds replicas has room for the VM's disks, or the "
                      "host named is not such a host.",)
    default_action = ("Free space in a recovery host's replica directory, add a host with replica_listen to the "
                      "recovery cloud, or name another with --recovery-host.")


def all_errors() -> list[type[AsrError]]:
    """Every error class, for docs generation and the wire mapping."""
    out: list[type[AsrError]] = []
    stack: list[type[AsrError]] = [AsrError]
    while stack:
        cls = stack.pop()
        out.append(cls)
        stack.extend(cls.__subclasses__())
    return sorted(out, key=lambda c: c.code)


def by_code(code: str) -> type[AsrError]:
    for cls in all_errors():
        if cls.code == code:
            return cls
    return AsrError


def storage_error(exc: OSError, what: str, where: str = "the file system") -> StorageError:
    """An ``OSError`` as this tree's error, so a full disk reaches the user as ASR-0061
    wherever it happens: ENOSPC/EDQUOT is :class:`DiskFull`, anything else :class:`StorageError`.
    ``what`` says what was being done, ``where`` which file system filled up."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"{what}: no space left on {where}")
    return StorageError(f"{what}: {exc.strerror or exc}")
