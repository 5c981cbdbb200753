"""docs/design.md quotes constants as `NAME = value`; they must equal the code's."""

from __future__ import annotations

import re

from certs import keyfile
from chunkfmt import ids
from cloudsvc import events
from cloudsvc.vaultstore import merkle
from tests.harness import REPO

CODE = {
    "DEFAULT_VALID_DAYS": keyfile.DEFAULT_VALID_DAYS,
    "MAX_VALID_DAYS": keyfile.MAX_VALID_DAYS,
    "BLOCK_SIZE": ids.BLOCK_SIZE,
    "DEFAULT_FANOUT": merkle.DEFAULT_FANOUT,
    "RETENTION_DAYS": events.RETENTION_DAYS,
    "MAX_PER_VAULT": events.MAX_PER_VAULT,
}


def test_documented_constants_match_the_code() -> None:
    text = (REPO / "docs" / "design.md").read_text()
    quoted = dict(re.findall(r"`([A-Z_]+) = (\d+)`", text))
    assert set(CODE) <= set(quoted), set(CODE) - set(quoted)
    for name, value in CODE.items():
        assert int(quoted[name]) == value, name


def test_every_error_code_is_in_the_tree_diagram() -> None:
    import asrerrors

    doc = asrerrors.__doc__ or ""
    for cls in asrerrors.all_errors():
        assert cls.code in doc
