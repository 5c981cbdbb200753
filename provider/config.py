"""The provider's TOML configuration.

    state_dir = "/var/lib/asr-provider"
    listen = "127.0.0.1:7500"          # where this site's agents reach the provider
    proxy = "http://user:pass@proxy:3128"   # optional
    heartbeat_seconds = 30
    sync_seconds = 300                 # periodic full inventory sync
    metrics_listen = "127.0.0.1:9465"  # optional: Prometheus metrics (plain HTTP); off when absent

    [[clouds]]
    name = "gold"
    hosts = ["hv01", "hv02"]
    sync = true                        # false: not synced to the vault (initial sync choice)
    networks = ["corp", "dmz"]         # the cloud's VM networks (site to site maps them)

Relative paths are relative to the file's directory. The model is strict and closed
(``asrops.configfile``), inside ``[[clouds]]`` tables too; a cloud is named once and a host
belongs to one cloud. Anything wrong is one InvalidConfig (ASR-0014) naming the file and, for
each key, the value and what is allowed; a malformed proxy URL is InvalidProxy (ASR-0013).
Every key's default is in docs/operations.md (generated from here).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, ValidationError, field_validator
from pydantic_core import InitErrorDetails

from asrops import configfile
from asrops.configfile import Address, ConfigFile, ConfigPath, Kind, MetricsAddress, NonEmpty, Proxy, Seconds, Table


class CloudDef(Table):
    """One ``[[clouds]]`` table: a VMM cloud and the hosts in it."""

    name: Annotated[NonEmpty, Kind("string", "the VMM cloud's name (a non-empty string)")] = Field(
        description="the VMM cloud's name, as the vault shows it")
    hosts: Annotated[list[NonEmpty], Kind("array of strings", 'an array of host names (non-empty strings), '
                                                             'e.g. ["hv01", "hv02"]')] = Field(
        default_factory=list, description="the hosts (agents' `--host` names) in the cloud; each in one cloud only")
    sync: Annotated[bool, Kind("boolean", "true or false (without quotes)")] = Field(
        True, description="false: the cloud is not synced to the vault (neither it nor its hosts and VMs)")
    networks: Annotated[list[NonEmpty], Kind("array of strings", 'an array of VM network names (non-empty '
                                                                'strings), e.g. ["corp", "dmz"]')] = Field(
        default_factory=list, description="the cloud's VM networks, which NICs connect to; site to site maps "
                                          "them to a recovery cloud's networks")

    @field_validator("networks")
    @classmethod
    def _networks_once(cls, networks: list[str]) -> list[str]:
        seen = [n for i, n in enumerate(networks) if n in networks[:i]]
        if seen:
            raise configfile.refuse(f"names network {seen[0]!r} twice")
        return networks


class ProviderConfig(ConfigFile):
    state_dir: ConfigPath = Field(description="the provider's identity, keys and state")
    listen: Address = Field("127.0.0.1:7500", description="where this site's agents reach the provider (mTLS)")
    proxy: Proxy = Field(None, description="the HTTP CONNECT proxy to reach the cloud through; none: direct")
    heartbeat_seconds: Seconds = Field(30.0, description="how often the provider reports to the cloud")
    sync_seconds: Seconds = Field(300.0, description="a full inventory sync at least this often")
    metrics_listen: MetricsAddress = Field("", description="where to serve Prometheus metrics (plain HTTP); "
                                                           '"": not served')
    clouds: Annotated[list[CloudDef], Kind("array of tables", "an array of tables, each written [[clouds]] on a "
                                                              "line of its own")] = Field(
        default_factory=list, description="the VMM clouds this provider serves; a cloud left out keeps its "
                                          "protected VMs as SourceMissing")

    @field_validator("clouds")
    @classmethod
    def _each_once(cls, clouds: list[CloudDef]) -> list[CloudDef]:
        """A cloud is named once and a host is in one cloud: the provider routes a host's
        commands by its cloud, so a host in two would be served by whichever came first."""
        problems: list[InitErrorDetails] = []
        names: dict[str, int] = {}
        owner: dict[str, str] = {}
        for i, cloud in enumerate(clouds):
            if cloud.name in names:
                problems.append(InitErrorDetails(type=configfile.refuse(
                    f"names cloud {cloud.name!r} again (clouds[{names[cloud.name]}]); each [[clouds]] table "
                    "names another cloud"), loc=(i, "name"), input=cloud.name))
            names.setdefault(cloud.name, i)
            for h in cloud.hosts:
                if h in owner:
                    reason = (f"names host {h!r} twice" if owner[h] == cloud.name else
                              f"names host {h!r}, which is already in cloud {owner[h]!r}; a host belongs to one cloud")
                    problems.append(InitErrorDetails(type=configfile.refuse(reason), loc=(i, "hosts"),
                                                     input=cloud.hosts))
                    break
                owner[h] = cloud.name
        if problems:
            # raised from a validator, pydantic puts these under the clouds key (clouds[1].hosts)
            raise ValidationError.from_exception_data("clouds", problems)
        return clouds

    def cloud_of(self, host: str) -> CloudDef | None:
        for c in self.clouds:
            if host in c.hosts:
                return c
        return None


def load(path: str) -> ProviderConfig:
    return configfile.load(path, ProviderConfig)
