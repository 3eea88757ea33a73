"""Settings of the ``secrets`` plugin (``[plugins.secrets.settings]``).

Checked by attrs validators while the kernel structures them, so a bad value
is reported at its path (``plugins.secrets.settings.master_key_env``) before
anything starts.  No setting holds key material: the master key comes from an
environment variable or a key file, never from config text.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KIND: Final = re.compile(r"[A-Za-z0-9_.:-]+")


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


def _env_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        raise ValueError(f"'{attribute.name}' must be an environment variable name (A-Z, 0-9, _), got {value!r}")


def _key_file(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise ValueError(f"'{attribute.name}' must be a path, got {value!r}")
    if "\x00" in value:
        raise ValueError(f"'{attribute.name}' contains a NUL byte")


def _log_n(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 14 <= value <= 22:
        raise ValueError(
            f"'{attribute.name}' must be between 14 and 22 (scrypt N = 2**{attribute.name}), got {value!r}"
        )


def _kinds(instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    for kind in value:
        if not _KIND.fullmatch(kind):
            raise ValueError(f"'{attribute.name}' entries must be principal kinds such as 'operator', got {kind!r}")


@attrs.frozen
class SecretsSettings:
    """The ``[plugins.secrets.settings]`` table."""

    master_key_env: str = attrs.field(
        default="ORION_SECRETS_KEY",
        validator=_env_name,
        metadata=_doc(
            "Environment variable holding the master key: a base64-encoded 32-byte key "
            "(`orion-kernel secrets keygen`) or a passphrase of at least 16 characters (stretched with scrypt)."
        ),
    )
    master_key_file: str = attrs.field(
        default="",
        validator=_key_file,
        metadata=_doc(
            "Path of a key file (base64 of 32 bytes, mode 0600) to use instead of the environment variable; "
            "a relative path is relative to the plugin's data directory. Empty: use master_key_env."
        ),
    )
    create_key_file: bool = attrs.field(
        default=False,
        metadata=_doc(
            "Generate master_key_file (0600) when it does not exist. For development and tests: "
            "a key kept next to the store protects nothing the store's directory does not."
        ),
    )
    scrypt_log_n: int = attrs.field(
        default=15,
        validator=_log_n,
        metadata=_doc(
            "scrypt cost for a passphrase master key, as log2(N) (r=8, p=1); applies when a store is created "
            "(the file header records the cost it was made with)."
        ),
    )
    admin_kinds: tuple[str, ...] = attrs.field(
        default=("operator",),
        validator=_kinds,
        metadata=_doc(
            "Principal kinds allowed to call the admin operations secrets.set/get/list/delete "
            "(the CLI calls them as 'operator')."
        ),
    )


attrs.resolve_types(SecretsSettings)
