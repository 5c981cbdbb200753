"""The cloud service's data directory and configuration.

    DATA_DIR/cloudsvc.toml      listen addresses, names, timeouts (written by init)
    DATA_DIR/pki/               service CA and server certificate (keys 0600)
    DATA_DIR/operator.json      operator credential for `asr` (0600)
    DATA_DIR/metadata.db        SQLite metadata store (WAL), unless database_url names PostgreSQL
    DATA_DIR/storage/           local-directory storage accounts

``cloudsvc.toml`` is checked like the other daemons' files (``asrops.configfile``): strict and
closed, anything wrong is one InvalidConfig (ASR-0014) naming the file and each key. ``asr-cloudsvc
init`` writes it with :meth:`CloudConfig.to_toml`, every key spelt out, and reading that back gives
an equal configuration. Every key's default is in docs/operations.md (generated from here).
"""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import Field, ValidationError

from asrerrors import InvalidConfig, UsageError
from asrops import configfile
from asrops.configfile import (
    Address,
    AddressOrOff,
    ConfigFile,
    DatabaseUrl,
    Kind,
    MetricsAddress,
    NonEmpty,
    Seconds,
)

FILE = "cloudsvc.toml"


class CloudConfig(ConfigFile):
    listen: Address = Field("127.0.0.1:7443", description="the API: operators, providers and agents (mTLS)")
    registration_listen: Address = Field(
        "127.0.0.1:7444", description="registration with a key file (TLS, server-authenticated); init: API port + 1")
    names: Annotated[list[NonEmpty], Kind("array of strings", 'an array of DNS names or IP addresses (non-empty '
                                                             'strings), e.g. ["dr.contoso.example", "10.0.0.5"]')] \
        = Field(default_factory=lambda: ["localhost", "127.0.0.1"],
                description="the names in the server certificate (init: the listen host, `--name`s and these)")
    # Several serve processes may serve the same vaults (any answers any call); the key files
    # they write list every one, and providers and agents move between them
    # (asrchannel.endpoints). Empty: just this process, as its listen addresses say.
    endpoints: Annotated[list[Address], Kind('array of "HOST:PORT"', 'an array of "HOST:PORT" strings with ports from '
                                                                    '1 to 65535, e.g. ["dr1.example:7443", '
                                                                    '"dr2.example:7443"]')] = Field(
        default_factory=list, description="every cloud service's public API address, in the order clients try them "
                                          "(key files carry them); []: this service's `listen`")
    registration_endpoints: Annotated[list[Address], Kind('array of "HOST:PORT"', 'an array of "HOST:PORT" strings '
                                                                                  'with ports from 1 to 65535, e.g. '
                                                                                  '["dr1.example:7444"]')] = Field(
        default_factory=list, description="every cloud service's public registration address, in the order clients "
                                          "try them; []: this service's `registration_listen`")
    heartbeat_timeout_seconds: Seconds = Field(
        60.0, description="a server whose last heartbeat is older than this shows as NotConnected")
    metrics_listen: MetricsAddress = Field("", description="where to serve Prometheus metrics (plain HTTP); "
                                                           '"": not served')
    portal_listen: AddressOrOff = Field("", description="where to serve the web portal (HTTPS with the server "
                                                          'certificate); "": not served')
    # gRPC's thread pool: each worker thread holds one call at a time; more than a thousand
    # is a typing error (64000), not a sizing decision
    workers: Annotated[int, Field(ge=1, le=1024), Kind("integer 1-1024", "an integer from 1 to 1024")] = Field(
        64, description="threads serving calls; up to 4 times as many calls are taken at once, more are refused "
                        "(RESOURCE_EXHAUSTED)")
    database_url: DatabaseUrl = Field(
        "", description='the metadata store: "" the SQLite file metadata.db in the data directory; a postgresql:// '
                        "URL a PostgreSQL database (see PostgreSQL below)")

    @classmethod
    def new(cls, data_dir: str, **keys: object) -> CloudConfig:
        """A configuration for ``data_dir`` (``init``'s options), checked like the file will be."""
        try:
            cfg = cls.model_validate(keys)
        except ValidationError as exc:
            raise UsageError("these options would make an invalid " + FILE,
                             details=[configfile.describe_error(cls, e) for e in exc.errors(include_url=False)],
                             action="Correct the options named and run init again.") from exc
        cfg._path = os.path.join(os.path.abspath(data_dir), FILE)
        return cfg

    @property
    def data_dir(self) -> str:
        return os.path.dirname(self.path)

    @property
    def pki_dir(self) -> str:
        return os.path.join(self.data_dir, "pki")

    @property
    def db_path(self) -> str:
        return os.path.join(self.data_dir, "metadata.db")

    @property
    def database(self) -> str:
        """What :func:`metastore.database.open_database` opens: the URL, else the SQLite file."""
        return self.database_url or self.db_path

    @property
    def operator_credentials(self) -> str:
        return os.path.join(self.data_dir, "operator.json")

    @property
    def storage_dir(self) -> str:
        return os.path.join(self.data_dir, "storage")

    def public_endpoints(self) -> dict[str, list[str]]:
        """What key files name: ``endpoints`` and ``registration_endpoints``, or this
        service's own listen addresses where they are empty."""
        return {"api": list(self.endpoints) or [self.listen],
                "registration": list(self.registration_endpoints) or [self.registration_listen]}

    def to_toml(self) -> str:
        return configfile.to_toml(self)


def load(data_dir: str) -> CloudConfig:
    data_dir = os.path.abspath(data_dir)
    path = os.path.join(data_dir, FILE)
    if not os.path.lexists(path):
        raise InvalidConfig(
            f"{data_dir} is not an initialised cloud service data directory (no {FILE})",
            action=f"Run 'asr-cloudsvc init --data-dir {data_dir}' first.",
        )
    return configfile.load(path, CloudConfig)
