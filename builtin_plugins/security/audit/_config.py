"""Settings of the ``audit`` plugin (``[plugins.audit.settings]``).

Checked by attrs validators while the kernel structures them, so a bad value
is reported at its path (``plugins.audit.settings.fsync_interval``) before start.
"""

from __future__ import annotations

import math
import re
from typing import Literal

import attrs

FsyncPolicy = Literal["always", "interval", "never"]


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0 or math.isinf(value):  # also refuses NaN
        raise ValueError(f"'{attribute.name}' must be a finite number > 0, got {value!r}")


def _keep(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"'{attribute.name}' must be >= 0 (0: keep every rotated file), got {value!r}")


def _max_bytes(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value != 0 and value < 4096:
        raise ValueError(f"'{attribute.name}' must be 0 (never rotate) or at least 4096, got {value!r}")


def _globs(instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    for pattern in value:
        bare = pattern[1:] if pattern.startswith("!") else pattern
        if not bare.strip():
            raise ValueError(f"'{attribute.name}' has an empty pattern {pattern!r}")
        if bare.count("[") != bare.count("]"):
            raise ValueError(f"'{attribute.name}' has an unbalanced '[' in {pattern!r}")


_KIND = re.compile(r"^[A-Za-z0-9_.-]+$")


def _kinds(instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    for kind in value:
        if not _KIND.match(kind):
            raise ValueError(f"'{attribute.name}' has an invalid principal kind {kind!r}")


def _path(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if "\x00" in value:
        raise ValueError(f"'{attribute.name}' must not contain NUL")
    if value.endswith(("/", "\\")):
        raise ValueError(f"'{attribute.name}' must name a file, got the directory {value!r}")


@attrs.frozen
class AuditSettings:
    """The ``[plugins.audit.settings]`` table."""

    path: str = attrs.field(
        default="",
        validator=_path,
        metadata=_doc(
            "The log file; rotated files are PATH.1, PATH.2, ... and the anchor is PATH.anchor. "
            "Empty: audit.log in the plugin's data directory; a relative path is relative to it."
        ),
    )
    fsync: FsyncPolicy = attrs.field(
        default="interval",
        metadata=_doc(
            "When entries reach the disk: 'always' (fsync before record() returns), 'interval' "
            "(a background fsync every fsync_interval seconds) or 'never' (left to the OS). "
            "Every policy survives a crash of the process; only 'always' survives power loss."
        ),
    )
    fsync_interval: float = attrs.field(
        default=1.0,
        validator=_positive,
        metadata=_doc("Seconds between background fsyncs and anchor updates (policies 'interval' and 'never')."),
    )
    max_bytes: int = attrs.field(
        default=64 * 1024 * 1024,
        validator=_max_bytes,
        metadata=_doc("Rotate the log before it would exceed this many bytes (0: never rotate; else >= 4096)."),
    )
    keep: int = attrs.field(
        default=0,
        validator=_keep,
        metadata=_doc("Rotated files to keep; older ones are deleted (0: keep every file)."),
    )
    record_args: bool = attrs.field(
        default=False,
        metadata=_doc(
            "Record invoke argument values (keys that look like secrets are redacted). "
            "Off: only the operation, never its arguments. Credentials are never recorded."
        ),
    )
    operations: tuple[str, ...] = attrs.field(
        default=("*",),
        validator=_globs,
        metadata=_doc(
            "Which invoked operations are recorded: fnmatch globs; a pattern starting with '!' "
            "excludes. Recorded when some include matches and no exclude does."
        ),
    )
    admin_kinds: tuple[str, ...] = attrs.field(
        default=("operator",),
        validator=_kinds,
        metadata=_doc("Principal kinds allowed to call audit.verify and audit.tail."),
    )


attrs.resolve_types(AuditSettings)
