"""Settings of the ``crypto`` plugin (``[plugins.crypto.settings]``).

Checked by attrs validators while the kernel structures them, so a bad value
is reported at its path (``plugins.crypto.settings.keyring``) before start.
No setting holds key material: the keyring is generated on first start and
kept in the secret store (or a 0600 file).
"""

from __future__ import annotations

import math
import re
from typing import Final
from typing import Literal

import attrs

_KIND: Final = re.compile(r"[A-Za-z0-9_.:-]+")

KeyringStorage = Literal["auto", "secrets", "file"]


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


def _interval(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0 or math.isinf(value):  # also refuses NaN
        raise ValueError(f"'{attribute.name}' must be a finite number >= 0 (0: never), got {value!r}")


def _kinds(instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    for kind in value:
        if not _KIND.fullmatch(kind):
            raise ValueError(f"'{attribute.name}' entries must be principal kinds such as 'operator', got {kind!r}")


@attrs.frozen
class CryptoSettings:
    """The ``[plugins.crypto.settings]`` table."""

    keyring: KeyringStorage = attrs.field(
        default="auto",
        validator=attrs.validators.in_(("auto", "secrets", "file")),
        metadata=_doc(
            "Where the keyring lives: 'secrets' in the secret store as crypto.keyring (encrypted at rest; the "
            "plugin does not start without the secrets service); 'file' in a 0600 file keyring.json in the data "
            "directory (unencrypted); 'auto' the secret store when the secrets service runs, else the file."
        ),
    )
    refresh_interval: float = attrs.field(
        default=30.0,
        validator=_interval,
        metadata=_doc(
            "Seconds between re-reads of the stored keyring, to pick up rotations made by another process "
            "(`orion-kernel keys rotate`); 0: only at start."
        ),
    )
    admin_kinds: tuple[str, ...] = attrs.field(
        default=("operator",),
        validator=_kinds,
        metadata=_doc(
            "Principal kinds allowed to call the admin operations crypto.keys.rotate/list/retire and "
            "crypto.reencrypt (the CLI calls them as 'operator')."
        ),
    )


attrs.resolve_types(CryptoSettings)
