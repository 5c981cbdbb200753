"""The regions a vault can live in, with their geo-redundancy pairs (ASR's seed regions)."""

from __future__ import annotations

from dataclasses import dataclass

from asrerrors import UsageError


@dataclass(frozen=True)
class Region:
    name: str
    display_name: str
    pair: str


REGIONS: tuple[Region, ...] = (
    Region("japaneast", "Japan East", "japanwest"),
    Region("japanwest", "Japan West", "japaneast"),
    Region("eastus", "East US", "westus"),
    Region("westus", "West US", "eastus"),
    Region("northeurope", "North Europe", "westeurope"),
    Region("westeurope", "West Europe", "northeurope"),
    Region("southeastasia", "Southeast Asia", "eastasia"),
    Region("eastasia", "East Asia", "southeastasia"),
)


def region(name: str) -> Region:
    key = name.replace(" ", "").lower()
    for r in REGIONS:
        if r.name == key:
            return r
    raise UsageError(
        f"unknown region {name!r}",
        causes=("Allowed regions: " + ", ".join(r.name for r in REGIONS) + ".",),
        action="Pick one of the regions listed by 'asr region list'.",
    )
