"""Names of vault resources (vaults, storage accounts, networks, subnets, plans)."""

from __future__ import annotations

import re

from asrerrors import InvalidName

_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def check_name(kind: str, name: str) -> str:
    if not _NAME.match(name or ""):
        raise InvalidName(
            f"{kind} name {name!r} is invalid",
            causes=("Names are 1-63 letters, digits and hyphens, with no hyphen first or last.",),
            action=f"Choose a {kind} name such as 'contoso-{kind.split()[0]}-1'.",
        )
    return name
