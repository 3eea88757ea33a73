"""Audit: an append-only, hash-chained, HMAC'd log of what happened, and proof that it is intact.

Enable with ``[plugins.audit] enabled = true``.  Every invoke decision, every
plugin state change and every ``audit.record()`` by another plugin becomes one
JSON line; ``orion-kernel audit verify`` (the ``audit.verify`` operation) names
the first edited, deleted, reordered or truncated entry.  A second kernel on the
same log (a CLI command while the server runs) records into ``PATH.pending/``,
which the writer imports.  See docs/security/audit.md.
"""

from ._config import AuditSettings as AuditSettings
from ._format import GENESIS as GENESIS
from ._format import Anchor as Anchor
from ._format import Mac as Mac
from ._format import encode as encode_entry
from ._format import encode_pending as encode_pending
from ._format import key_from_text as key_from_text
from ._format import line_hash as line_hash
from ._log import Chain as Chain
from ._log import LogClosed as LogClosed
from ._log import ReadOnlyLog as ReadOnlyLog
from ._pending import Spool as Spool
from ._pending import pending_dir as pending_dir
from ._plugin import Audit as Audit
from ._plugin import redact as redact
from ._verify import Report as Report
from ._verify import anchor_path as anchor_path
from ._verify import chain_files as chain_files
from ._verify import verify_path as verify_path

__all__ = [
    "GENESIS",
    "Anchor",
    "Audit",
    "AuditSettings",
    "Chain",
    "LogClosed",
    "Mac",
    "ReadOnlyLog",
    "Report",
    "Spool",
    "anchor_path",
    "chain_files",
    "encode_entry",
    "encode_pending",
    "key_from_text",
    "line_hash",
    "pending_dir",
    "redact",
    "verify_path",
]
